"""The fused feature-pass kernel (:mod:`otlabel.backends._triton_features`) against a float64 torch
reference of the same formulas.

Without a GPU the kernel runs in Triton's CPU interpreter, which ``triton.jit`` selects when the
kernel is *defined*: this module sets ``TRITON_INTERPRET=1`` at import time, i.e. while pytest
collects, before any test imports the kernel (as ``test_triton_backend.py`` does). With a GPU the
same tests run the compiled kernel on CUDA (leave ``TRITON_INTERPRET`` unset). The interpreter
pays per operation and per program, so the problems are small; the ``tiles`` fixture shrinks the
tiles where a test needs many, ragged row, column and d tiles and several row blocks per program.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="the feature kernel needs triton (pip install 'otlabel[triton]')")

from otlabel.backends import _triton_features as kernel  # noqa: E402
from otlabel.backends._triton_features import FeaturePass, feature_pass  # noqa: E402

INTERPRETED = kernel.INTERPRETED
DEVICE = "cpu" if INTERPRETED else "cuda"
if not INTERPRETED and not torch.cuda.is_available():  # pragma: no cover - a misconfigured run
    raise RuntimeError(
        "otlabel's feature kernel was imported before TRITON_INTERPRET=1 was set and there is no GPU: "
        "run this test module in a fresh process"
    )

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
#: Relative tolerances of every float output. The reference takes the very same (rounded) inputs
#: in float64, so what is left is float32 arithmetic: the dot product's rounding, amplified by
#: ``coef`` into the exponent (|coef * <x, c>| <= 10 here), and the exponential's. Half-precision
#: operands have exact float32 products, but on a GPU tensor cores add them inside each MMA with
#: truncated, not rounded, alignment of the addends (Fasi et al. 2021, "Numerical behavior of
#: NVIDIA tensor cores"), a few times float32's error per addition: 1e-4 covers it.
RTOL = {torch.float32: 1e-5, torch.bfloat16: 1e-4, torch.float16: 1e-4}


@pytest.fixture
def tiles(monkeypatch):
    """Set the tiles (rows, columns, d; the d loop instead of a resident row block) and the number
    of programs, on the interpreter's constants and on the GPU's alike."""

    def set_tiles(block_m: int, block_k: int, block_d: int, programs: int) -> None:
        for suffix in ("", "_FMA", "_INTERPRETED"):
            monkeypatch.setattr(kernel, "BLOCK_M" + suffix, block_m)
            monkeypatch.setattr(kernel, "BLOCK_K" + suffix, block_k)
            monkeypatch.setattr(kernel, "BLOCK_D" + suffix, block_d)
        monkeypatch.setattr(kernel, "RESIDENT_BYTES", 0)
        monkeypatch.setattr(kernel, "RESIDENT_BYTES_INTERPRETED", 0)
        monkeypatch.setattr(kernel, "PROGRAMS_INTERPRETED", programs)
        monkeypatch.setattr(kernel, "PROGRAMS_PER_SM", programs)
        monkeypatch.setattr(kernel, "_multiprocessors", lambda device: 1)

    return set_tiles


def make_inputs(n: int, K: int, d: int, dtype: torch.dtype, row_mass: bool = True, seed: int = 0) -> dict:
    """Unit features and prototypes (SwAV's), coef 10, offsets and scalings of a mid-run Sinkhorn
    iteration: the arguments of :func:`feature_pass`, on the test device."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=1)
    c = torch.nn.functional.normalize(torch.randn(K, d, generator=generator, dtype=torch.float64), dim=1)
    inputs = {
        "features": x.to(dtype),
        "prototypes": c.to(dtype),
        "coef": 10.0,
        "row_offset": torch.randn(n, generator=generator) - 2.0,
        "col_offset": torch.randn(K, generator=generator) * 0.5,
        "col_scaling": torch.rand(K, generator=generator) + 0.5,
        "row_mass": torch.rand(n, generator=generator) + 0.5 if row_mass else None,
    }
    return to_device(inputs)


def to_device(inputs: dict) -> dict:
    return {key: value.to(DEVICE) if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}


def reference(inputs: dict, col_sums: bool, top_k: int, tie_to_highest: bool = False) -> FeaturePass:
    """The pass in float64 on the CPU, from the kernel's (rounded) inputs. Ties of the plan's row
    entries go to the lowest column (a stable descending sort); ``tie_to_highest`` breaks them the
    other way, a wrong reference for the tests that must catch it."""
    x, c = inputs["features"].cpu().double(), inputs["prototypes"].cpu().double()
    row_offset, col_offset = inputs["row_offset"].cpu().double(), inputs["col_offset"].cpu().double()
    b = inputs["col_scaling"].cpu().double()
    dots = x @ c.T
    if inputs.get("row_scale") is not None:
        dots = dots * inputs["row_scale"].cpu().double()[:, None]
    kernel_entries = torch.exp(inputs["coef"] * dots + row_offset[:, None] + col_offset[None, :])
    row_sums = kernel_entries @ b
    if inputs.get("row_bias") is not None:
        row_sums = row_sums + inputs["row_bias"].cpu().double()
    mass = torch.ones_like(row_sums) if inputs["row_mass"] is None else inputs["row_mass"].cpu().double()
    a = mass / row_sums
    col_partial = (a[:, None] * kernel_entries).sum(0) if col_sums else None
    top_values = top_indices = None
    if top_k:
        plan = a[:, None] * kernel_entries * b[None, :]
        if tie_to_highest:
            values, order = torch.sort(plan.flip(1), dim=1, descending=True, stable=True)
            order = plan.shape[1] - 1 - order
        else:
            values, order = torch.sort(plan, dim=1, descending=True, stable=True)
        top_values, top_indices = values[:, :top_k], order[:, :top_k]
    return FeaturePass(row_sums, a, col_partial, top_values, top_indices)


def assert_matches(out: FeaturePass, expected: FeaturePass, rtol: float) -> None:
    """Every output within ``rtol`` (relative: all are positive), the top-k columns exactly, and
    the dtypes, shapes and presence of the outputs."""
    for name in FeaturePass._fields:
        actual, wanted = getattr(out, name), getattr(expected, name)
        assert (actual is None) == (wanted is None), f"{name}: {actual} against {wanted}"
        if actual is None:
            continue
        assert actual.shape == wanted.shape, f"{name}: shape {tuple(actual.shape)}, expected {tuple(wanted.shape)}"
        assert actual.device.type == DEVICE, f"{name} is on {actual.device}"
        if name == "top_indices":
            assert actual.dtype == torch.int64
            assert torch.equal(actual.cpu(), wanted), f"top_indices differ in rows {_rows(actual.cpu() != wanted)}"
        else:
            assert actual.dtype == torch.float32, f"{name} is {actual.dtype}"
            torch.testing.assert_close(actual.cpu().double(), wanted, rtol=rtol, atol=0, msg=lambda m: f"{name}: {m}")


def _rows(differ: torch.Tensor) -> list[int]:
    return differ.any(1).nonzero().flatten()[:10].tolist()


@pytest.mark.parametrize("top_k", [0, 1, 3])
@pytest.mark.parametrize("col_sums", [False, True], ids=["rows", "col_sums"])
@pytest.mark.parametrize("row_mass", [False, True], ids=["unit_mass", "row_mass"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(dtype, row_mass, col_sums, top_k):
    """Default tiles: n = 300 rows in two programs, the second's block ragged (interpreter: row
    blocks of 256), K = 70 columns in one ragged tile, d = 24 in one resident tile."""
    inputs = make_inputs(300, 70, 24, dtype, row_mass)
    out = feature_pass(**inputs, col_sums=col_sums, top_k=top_k)
    assert_matches(out, reference(inputs, col_sums, top_k), RTOL[dtype])


RAGGED = [  # (dtype, row_mass, col_sums, top_k)
    (torch.float32, True, True, 3),
    (torch.bfloat16, True, True, 3),
    (torch.float16, True, True, 3),
    (torch.float32, False, False, 1),
]


@pytest.mark.parametrize(("dtype", "row_mass", "col_sums", "top_k"), RAGGED, ids=str)
def test_ragged_tiles(tiles, dtype, row_mass, col_sums, top_k):
    """Tiles of 16 rows, 32 columns and 16 dimensions: n = 90 rows in 6 blocks over 3 programs of 2
    blocks (the column partials are accumulated over blocks; the last block holds 10 rows), K = 70
    in 3 column tiles (the last one of 6 columns), d = 40 in 3 tiles of the d loop (the last of 8)."""
    tiles(16, 32, 16, programs=3)
    inputs = make_inputs(90, 70, 40, dtype, row_mass, seed=1)
    launch = kernel.launch_config(90, 70, 40, dtype, torch.device(DEVICE), fma=dtype == torch.float32)
    assert (launch.programs, launch.rows_per_program, launch.block_k, launch.resident) == (3, 32, 32, False)
    out = feature_pass(**inputs, col_sums=col_sums, top_k=top_k)
    assert_matches(out, reference(inputs, col_sums, top_k), RTOL[dtype])


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # 0 / 0, on purpose
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_scale_and_bias(tiles, dtype):
    """``row_scale`` (the features' inverse norms: raw features of norms 0.5 to 4.5 scored as unit
    rows) multiplies each row's dot products before the offsets, and ``row_bias`` is added to every
    row sum before the scaling is taken: against the float64 reference with both, over ragged
    tiles and several blocks per program; the same rows pre-normalised (in float64, then rounded)
    give the same pass to the dtype's rounding of the features; and a zero-mass row whose sum
    underflows to 0 gets a = 0 with the bias, where 0 / 0 would poison the column partials."""
    tiles(16, 32, 16, programs=3)
    inputs = make_inputs(90, 70, 40, dtype, row_mass=True, seed=6)
    generator = torch.Generator().manual_seed(7)
    norms = torch.rand(90, generator=generator, dtype=torch.float64) * 4 + 0.5
    unit = inputs["features"].cpu().double()
    inputs["features"] = (unit * norms[:, None]).to(dtype).to(DEVICE)
    inputs["row_scale"] = torch.reciprocal(inputs["features"].cpu().double().norm(dim=1)).float().to(DEVICE)
    inputs["row_bias"] = torch.full((1,), 1e-3, device=DEVICE)
    out = feature_pass(**inputs, col_sums=True, top_k=3)
    assert_matches(out, reference(inputs, True, 3), RTOL[dtype])
    with pytest.raises(AssertionError):  # the bias is not negligible here
        assert_matches(out, reference({**inputs, "row_bias": None}, True, 3), RTOL[dtype])
    # unit rows, rounded: as the scaled raw ones to the rounding of the features (2**-8 in bfloat16)
    normalised = torch.nn.functional.normalize(inputs["features"].cpu().double(), dim=1).to(dtype).to(DEVICE)
    plain = feature_pass(**{**inputs, "features": normalised, "row_scale": None}, col_sums=True, top_k=3)
    rounding = {torch.float32: 1e-5, torch.bfloat16: 0.1, torch.float16: 1e-2}[dtype]
    torch.testing.assert_close(plain.row_sums, out.row_sums, rtol=rounding, atol=0)
    # a zero-mass row out of reach (row offset -1e4): its sum is the bias alone, its scaling 0
    inputs["row_offset"][5] = -1e4
    inputs["row_mass"][5] = 0.0
    inputs["row_bias"] = torch.full((1,), torch.finfo(torch.float32).tiny, device=DEVICE)
    out = feature_pass(**inputs, col_sums=True, top_k=1)
    assert out.row_sums[5] == torch.finfo(torch.float32).tiny and out.row_scaling[5] == 0
    assert torch.isfinite(out.col_partial).all()
    without = feature_pass(**{**inputs, "row_bias": None}, col_sums=True)
    assert without.row_sums[5] == 0 and without.row_scaling[5].isnan() and without.col_partial.isnan().all()


def test_dino_prototype_count(monkeypatch):
    """K = 262,144 columns (DINO's prototypes; interpreter: 8 column tiles of 32,768 instead of 256
    of 1,024, for time), bfloat16, column sums and top-3."""
    monkeypatch.setattr(kernel, "BLOCK_K_INTERPRETED", 1 << 15)
    inputs = make_inputs(20, 1 << 18, 16, torch.bfloat16, row_mass=True, seed=4)
    out = feature_pass(**inputs, col_sums=True, top_k=3)
    assert_matches(out, reference(inputs, True, 3), RTOL[torch.bfloat16])


def test_wide_features(tiles):
    """d = 1024 in the d loop (4 tiles of 256), float16, over 3 column tiles."""
    tiles(16, 32, 256, programs=2)
    inputs = make_inputs(40, 70, 1024, torch.float16, row_mass=False, seed=5)
    out = feature_pass(**inputs, col_sums=True, top_k=1)
    assert_matches(out, reference(inputs, True, 1), RTOL[torch.float16])


def tied_inputs(dtype: torch.dtype) -> dict:
    """Exact ties: features and prototypes with entries in multiples of 1/4 (every dot product,
    in any summation order, exact in float32), prototypes 3, 5, 20 and 37 equal, with the same
    column offset (+6, which makes them each row's largest entries) and column scaling."""
    generator = torch.Generator().manual_seed(2)
    n, K, d = 50, 40, 8
    x = torch.randint(-2, 3, (n, d), generator=generator) / 4
    c = torch.randint(-2, 3, (K, d), generator=generator) / 4
    tied = [3, 5, 20, 37]
    c[tied] = c[3].clone()
    col_offset = torch.randn(K, generator=generator) * 0.1
    col_offset[tied] = 6.0
    col_scaling = torch.rand(K, generator=generator) + 0.5
    col_scaling[tied] = 0.75
    inputs = {
        "features": x.to(dtype),
        "prototypes": c.to(dtype),
        "coef": 0.5,
        "row_offset": torch.randn(n, generator=generator),
        "col_offset": col_offset,
        "col_scaling": col_scaling,
        "row_mass": None,
    }
    return to_device(inputs)


@pytest.mark.parametrize("top_k", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ties_go_to_the_lowest_column(tiles, dtype, top_k):
    """Four tied columns, two in the first tile of 16 and one in each of the next two: the top 3
    of every row are columns 3, 5 and 20 (within a tile, the lowest column; across tiles, the one
    seen first), never 37."""
    tiles(16, 16, 16, programs=2)
    inputs = tied_inputs(dtype)
    out = feature_pass(**inputs, col_sums=True, top_k=top_k)
    assert_matches(out, reference(inputs, True, top_k), RTOL[dtype])
    assert (out.top_indices.cpu() == torch.tensor([3, 5, 20][:top_k])).all()
    assert (out.top_values == out.top_values[:, :1]).all()  # tied exactly


def test_all_entries_tied():
    """A row whose entries are all equal (zero features and offsets, unit scaling): the first
    columns in order, each with the mass 1/K."""
    n, K, d = 20, 30, 16
    inputs = {
        "features": torch.zeros(n, d),
        "prototypes": torch.randn(K, d),
        "coef": 3.0,
        "row_offset": torch.zeros(n),
        "col_offset": torch.zeros(K),
        "col_scaling": torch.ones(K),
        "row_mass": None,
    }
    out = feature_pass(**to_device(inputs), top_k=3)
    assert (out.top_indices.cpu() == torch.tensor([0, 1, 2])).all()
    torch.testing.assert_close(out.top_values.cpu(), torch.full((n, 3), 1.0 / K))


def test_wrong_references_are_caught():
    """The comparison is not vacuous: a reference with the other tie rule, without the row masses,
    with the column scaling in the column partials, or 3 tolerances off, fails it."""
    inputs = tied_inputs(torch.float32)
    inputs["row_mass"] = (torch.rand(50, generator=torch.Generator().manual_seed(3)) + 0.5).to(DEVICE)
    out = feature_pass(**inputs, col_sums=True, top_k=3)
    right = reference(inputs, True, 3)
    assert_matches(out, right, RTOL[torch.float32])
    wrong = {
        "ties to the highest column": reference(inputs, True, 3, tie_to_highest=True),
        "row masses ignored": reference({**inputs, "row_mass": None}, True, 3),
        "column scaling in the partials": right._replace(col_partial=right.col_partial * inputs["col_scaling"].cpu()),
        "row sums 3 tolerances off": right._replace(row_sums=right.row_sums * (1 + 3 * RTOL[torch.float32])),
    }
    for what, expected in wrong.items():
        with pytest.raises(AssertionError):
            assert_matches(out, expected, RTOL[torch.float32])
            pytest.fail(f"a reference with {what} passed")


@pytest.mark.parametrize("top_k", [0, 2])
def test_no_rows(monkeypatch, top_k):
    """An empty shard: empty row outputs, zero column partials, and no launch."""

    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError(f"launched a grid of {grid} for n = 0")

    monkeypatch.setattr(kernel, "feature_pass_kernel", NoLaunch())
    inputs = make_inputs(0, 70, 24, torch.bfloat16)
    out = feature_pass(**inputs, col_sums=True, top_k=top_k)
    assert out.row_sums.shape == out.row_scaling.shape == (0,)
    assert torch.equal(out.col_partial.cpu(), torch.zeros(70))
    if top_k:
        assert out.top_values.shape == out.top_indices.shape == (0, top_k)
        assert out.top_indices.dtype == torch.int64
    else:
        assert out.top_values is None and out.top_indices is None
    without = feature_pass(**inputs)
    assert without.col_partial is None


def test_deterministic(tiles):
    """Column partials summed per program then over programs, in a fixed order: bit-identical
    runs (on a GPU too, where atomics would not be)."""
    tiles(16, 32, 16, programs=3)
    inputs = make_inputs(90, 70, 40, torch.float32)
    first = feature_pass(**inputs, col_sums=True, top_k=1)
    second = feature_pass(**inputs, col_sums=True, top_k=1)
    for name in FeaturePass._fields:
        assert torch.equal(getattr(first, name), getattr(second, name)), name


def test_checks_shapes_and_dtypes():
    """Cheap checks with messages that name the argument."""
    inputs = make_inputs(10, 20, 16, torch.float32)
    cases = [
        ({"prototypes": inputs["prototypes"].half()}, "share one of"),
        ({"prototypes": inputs["prototypes"][:, :8].contiguous()}, "features have d = 16, prototypes 8"),
        ({"col_offset": inputs["col_offset"][:5]}, "col_offset must be a contiguous float32 vector of length 20"),
        ({"row_mass": inputs["row_mass"].double()}, "row_mass must be"),
        ({"row_scale": inputs["row_offset"][:5]}, "row_scale must be a contiguous float32 vector of length 10"),
        ({"row_bias": torch.zeros((), device=DEVICE)}, "row_bias must be a contiguous float32 vector of length 1"),
        ({"features": inputs["features"].T.contiguous().T}, "contiguous"),
    ]
    for change, message in cases:
        with pytest.raises(AssertionError, match=message):
            feature_pass(**{**inputs, **change})
    with pytest.raises(AssertionError, match="top_k must be in"):
        feature_pass(**inputs, top_k=21)


def test_compiles_for_sm90(tmp_path):
    """The real compiler (not the interpreter) accepts the kernel's GPU variants, bfloat16 through
    tl.dot included (which the interpreter cannot run): cubins for an H100, no GPU needed."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compilation, not a cache hit
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.otlabel.compile_features"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_benchmark_dry_run(tmp_path, capsys):
    """benchmarks/gpu_features.py end to end on tiny sizes (its timings mean nothing here): every
    cell measured, checked against its float64 reference, and in the table."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_features.py"
    spec = importlib.util.spec_from_file_location("gpu_features", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "features.json"
    assert benchmark.main(["--dry-run", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [result["kind"] for result in results] == [cell.kind for cell in benchmark.DRY_CELLS]
    for result in results:
        assert result["check"]["max_rel_error"] < 1e-4, result
        assert result["check"]["top1_mismatches"] in (None, 0), result
        assert result["pass"]["median_ms"] > 0 and result["matmul"]["median_ms"] > 0
        assert result["fraction_of_matmul"] == pytest.approx(
            result["matmuls_per_pass"] * result["matmul"]["median_ms"] / result["pass"]["median_ms"]
        )
    assert "| 300 x 70 x 24 | bfloat16 | labels (top-1) | 1 |" in capsys.readouterr().out
