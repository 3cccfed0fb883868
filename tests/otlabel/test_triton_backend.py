"""The fused Triton backend against the torch backend, the plain SwAV loop and POT.

Without a GPU the kernels run in Triton's CPU interpreter, which ``triton.jit`` selects when the
kernels are *defined*: this module sets ``TRITON_INTERPRET=1`` at import time, i.e. while pytest
collects, before any test imports the kernels. With a GPU the same tests run the compiled
kernels on CUDA (leave ``TRITON_INTERPRET`` unset). The interpreter pays per operation, about
a millisecond per tile and program, so the problems here are small and few-tiled, with
monkeypatched tile sizes where a test needs ragged tiles or many programs.
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

import numpy as np  # noqa: E402
import pytest  # noqa: E402

triton = pytest.importorskip("triton", reason="the triton backend needs triton (pip install 'otlabel[triton]')")

from otlabel import (  # noqa: E402
    BackendUnavailableError,
    InfeasibleProblemError,
    InvalidArgumentError,
    sinkhorn,
    sinkhorn_with_prior,
)
from otlabel._front import build_problem  # noqa: E402
from otlabel._options import Options  # noqa: E402
from otlabel.backends import triton_backend  # noqa: E402

from .helpers import cosine_scores, feasible_prior, pot_solution, swav_reference  # noqa: E402

INTERPRETED = triton_backend._kernels().INTERPRETED
DEVICE = "cpu" if INTERPRETED else "cuda"
if not INTERPRETED and not torch.cuda.is_available():  # pragma: no cover - a misconfigured run
    raise RuntimeError(
        "otlabel's triton kernels were imported before TRITON_INTERPRET=1 was set and there is no GPU: "
        "run this test module in a fresh process"
    )

FIXED = {}
TOLERANCE = {"tol": 1e-6, "max_iter": 2000}
MODES = {"fixed": FIXED, "tolerance": TOLERANCE}


def both(function, *args, **options):
    """Run ``function`` with the triton and torch backends; return both SinkhornResults."""
    ours = function(*args, backend="triton", return_info=True, **options)
    reference = function(*args, backend="torch", return_info=True, **options)
    assert ours.backend == "triton" and reference.backend == "torch"
    return ours, reference


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Labels are at most the row mass (1 by default): compare them absolutely."""
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=0, atol=atol)


def assert_labels(labels: torch.Tensor, row_mass: float | torch.Tensor = 1.0) -> None:
    assert torch.isfinite(labels).all() and (labels >= 0).all()
    sums = labels.double().sum(-1).cpu()
    expected = torch.as_tensor(row_mass, dtype=torch.float64).cpu().expand_as(sums)
    torch.testing.assert_close(sums, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(autouse=True)
def _no_graph_cache(monkeypatch):
    """On a GPU, repeated calls would replay a graph captured with another test's launch constants
    (and not call the functions some tests spy on): these tests run every call eagerly."""
    from otlabel import graphs

    monkeypatch.setattr(graphs, "ENABLED", False)


@pytest.fixture
def tile(monkeypatch):
    """Set the tile size (elements) of every path, to get several, ragged row tiles."""

    def set_tile(elements: int) -> None:
        for name in ("TILE_SINGLE", "TILE_MULTI", "TILE_INTERPRETED"):
            monkeypatch.setattr(triton_backend, name, elements)

    return set_tile


@pytest.fixture
def multi_program(monkeypatch, tile):
    """Force the many-programs (rows) layout with small tiles, so that a small problem spans several
    programs; the last program of each pass does the column step (fused)."""
    monkeypatch.setattr(triton_backend, "SMALL_PROBLEM", 0)
    tile(512)


@pytest.fixture
def separate_combine(monkeypatch, multi_program):
    """The rows layout with the column step in launches of its own (too many partials to fuse)."""
    monkeypatch.setattr(triton_backend, "FUSED_COMBINE_MAX", 0)


@pytest.fixture
def tiled(monkeypatch, tile):
    """Force the tiled layout (K beyond one row tile) on a small K: several column chunks and
    several row chunks, ragged tiles."""
    monkeypatch.setattr(triton_backend, "TILED_K", 2)
    monkeypatch.setattr(triton_backend, "MIN_ROWS_PER_PROGRAM", 60)
    monkeypatch.setattr(triton_backend, "PROGRAMS_INTERPRETED", 8)
    monkeypatch.setattr(triton_backend, "TILED_BLOCK_K", 4)
    monkeypatch.setattr(triton_backend, "TILED_BLOCK_K_INTERPRETED", 4)
    tile(1024)  # 4 columns by 256 rows: the interpreter pays per tile


#: The layouts of the work, and the fixture that forces each on a small problem.
PATHS = {"single": None, "rows": "multi_program", "rows, separate column step": "separate_combine", "tiled": "tiled"}


def use_path(request, path: str) -> None:
    if PATHS[path] is not None:
        request.getfixturevalue(PATHS[path])


def scores_of(batch: int, n_rows: int, n_cols: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    scores = np.stack([cosine_scores(rng, n_rows, n_cols) for _ in range(batch)]).astype(np.float32)
    return torch.from_numpy(scores).to(DEVICE)


# (B, N, K, epsilon, tile elements or None): N is never a multiple of the row tile
SHAPES = {
    "1000x16 ragged tiles": (1, 1000, 16, 0.05, 512),
    "37x1": (1, 37, 1, 0.05, None),
    "50x2": (1, 50, 2, 0.05, None),
    "45x3000": (1, 45, 3000, 0.05, None),
    "batched 3x333x7": (3, 333, 7, 0.05, 256),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_fixed_iterations_match_torch_backend_and_swav_loop(shape, tile):
    batch, n_rows, n_cols, epsilon, elements = SHAPES[shape]
    if elements is not None:
        tile(elements)
    scores = scores_of(batch, n_rows, n_cols).squeeze(0)
    ours, reference = both(sinkhorn, scores, epsilon)
    assert ours.n_iter == 3 and ours.converged is None and not ours.log_domain
    assert_labels(ours.labels)
    assert_close(ours.labels, reference.labels)
    for b, problem in enumerate(scores.reshape(batch, n_rows, n_cols)):
        swav = swav_reference(problem.double().cpu(), epsilon, n_iter=3)
        assert_close(ours.labels.reshape(batch, n_rows, n_cols)[b], swav)


@pytest.mark.parametrize("shape", ["1000x16 ragged tiles", "37x1", "50x2", "45x3000"])
def test_tolerance_mode_matches_torch_backend_and_pot(shape, tile):
    pytest.importorskip("ot", reason="POT is the oracle of the converged answer")
    _, n_rows, n_cols, _, elements = SHAPES[shape]
    if elements is not None:
        tile(elements)
    scores = scores_of(1, n_rows, n_cols)[0]
    epsilon = 0.2  # converges in tens of iterations: the interpreter pays per pass
    ours, reference = both(sinkhorn, scores, epsilon, **TOLERANCE)
    assert ours.converged and ours.col_error <= 2e-6
    assert abs(ours.n_iter - reference.n_iter) <= 10  # one check apart at most (rounding)
    assert_labels(ours.labels)
    assert_close(ours.labels, reference.labels)
    pot = pot_solution(scores.double().cpu().numpy(), epsilon, None, None)
    assert_close(ours.labels, torch.from_numpy(pot))


@pytest.mark.parametrize("mode", MODES)
def test_prior_with_zeros(mode):
    rng = np.random.default_rng(3)
    prior, col_marginal = feasible_prior(rng, 200, 9, zero_fraction=0.4)
    scores = torch.from_numpy(cosine_scores(rng, 200, 9).astype(np.float32)).to(DEVICE)
    prior_t = torch.from_numpy(prior.astype(np.float32)).to(DEVICE)
    marginal = torch.from_numpy(col_marginal).to(DEVICE)
    options = {"col_marginal": marginal, **MODES[mode]}
    if mode == "tolerance":
        options["tol"] = 1e-5  # the zeros slow convergence down
    ours, reference = both(sinkhorn_with_prior, scores, prior_t, 0.1, **options)
    assert_labels(ours.labels)
    assert (ours.labels[prior_t == 0] == 0).all()
    assert_close(ours.labels, reference.labels)
    if mode == "tolerance":
        pytest.importorskip("ot")
        pot = pot_solution(scores.double().cpu().numpy(), 0.1, prior, col_marginal)
        assert_close(ours.labels, torch.from_numpy(pot), atol=5e-5)  # tol=1e-5 bounds the distance


@pytest.mark.parametrize("mode", MODES)
def test_batched_custom_marginals_with_zeros(mode):
    batch, n_rows, n_cols = 3, 120, 6
    scores = scores_of(batch, n_rows, n_cols, seed=4)
    generator = torch.Generator().manual_seed(4)
    col = torch.rand(batch, n_cols, generator=generator) + 0.1
    col[:, 2] = 0.0  # a class with no mass
    row = torch.rand(batch, n_rows, generator=generator) + 0.1
    row[:, :7] = 0.0  # samples with no weight
    col, row = (col / col.sum(-1, keepdim=True)).to(DEVICE), (row / row.sum(-1, keepdim=True)).to(DEVICE)
    options = dict(MODES[mode], tol=1e-5) if mode == "tolerance" else {}
    ours, reference = both(sinkhorn, scores, 0.1, col_marginal=col, row_marginal=row, **options)
    assert_labels(ours.labels, row * n_rows)
    assert (ours.labels[..., 2] == 0).all() and (ours.labels[:, :7] == 0).all()
    assert ours.n_iter == reference.n_iter  # a batch stops together, as with the torch backend
    assert_close(ours.labels, reference.labels)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["rows", "rows, separate column step", "tiled"])
def test_many_programs_paths(mode, path, request):
    use_path(request, path)
    rng = np.random.default_rng(5)
    prior, col_marginal = feasible_prior(rng, 300, 16, zero_fraction=0.3)
    scores = torch.from_numpy(np.stack([cosine_scores(rng, 300, 16) for _ in range(2)]).astype(np.float32))
    prior_t = torch.from_numpy(np.stack([prior, prior]).astype(np.float32))
    options = dict(MODES[mode], tol=1e-5) if mode == "tolerance" else {}
    args = (scores.to(DEVICE), prior_t.to(DEVICE), 0.1)
    ours, reference = both(sinkhorn_with_prior, *args, col_marginal=col_marginal, **options)
    assert_labels(ours.labels)
    assert ours.n_iter == reference.n_iter
    assert_close(ours.labels, reference.labels)


@pytest.mark.parametrize(
    "mode, path", [("fixed", "single"), ("tolerance", "single"), ("fixed", "rows"), ("fixed", "tiled")]
)
def test_float32_rows_offset_by_1e4(mode, path, request):
    """|scores/epsilon| up to 1e4 through per-row offsets: finite labels, and as close to the
    float64 answer as the torch backend's (the inputs themselves round to ~1e-3 there)."""
    use_path(request, path)
    epsilon = 0.01
    scores = scores_of(1, 300, 12, seed=6)[0]
    scores = scores + torch.linspace(-1e4, 1e4, 300, device=DEVICE).unsqueeze(1) * epsilon
    options = {"tol": 1e-5, "max_iter": 1000} if mode == "tolerance" else {}
    ours, reference = both(sinkhorn, scores, epsilon, **options)
    exact = sinkhorn(scores.double(), epsilon, backend="torch", **options)
    assert_labels(ours.labels)
    assert ours.n_iter == reference.n_iter  # tolerance mode: the offsets do not stall convergence
    assert_close(ours.labels, exact, atol=1e-3)
    assert_close(reference.labels, exact, atol=1e-3)


@pytest.mark.parametrize("path", ["single", "rows", "tiled"])
def test_float32_scores_spread_over_1e4(path, request):
    use_path(request, path)
    epsilon = 0.01
    uniform = torch.rand(300, 12, generator=torch.Generator().manual_seed(6)) * 2 - 1
    scores = (uniform * (1e4 * epsilon)).to(DEVICE)  # |scores/eps| up to 1e4
    ours, reference = both(sinkhorn, scores, epsilon)
    assert_labels(ours.labels)
    assert_close(ours.labels, reference.labels)
    assert_close(ours.labels, sinkhorn(scores.double(), epsilon, backend="torch"))


def test_transport_like_scores_match_float64():
    # Equipartition forces column potentials in the thousands (in float32, the torch backend's
    # scaling path leaves the floating-point range there and falls back to its log domain).
    x = torch.rand(500, 1, generator=torch.Generator().manual_seed(1)) * 0.2
    scores = -((x - torch.linspace(0, 1, 20)) ** 2)
    ours = sinkhorn(scores.to(DEVICE), 1e-3, tol=1e-4, max_iter=5000, backend="triton", return_info=True)
    exact = sinkhorn(scores.double(), 1e-3, tol=1e-4, max_iter=5000, backend="torch")
    assert ours.converged and ours.col_error <= 2e-4
    assert_labels(ours.labels)
    assert_close(ours.labels, exact, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["single", "rows", "rows, separate column step", "tiled"])
def test_log_sum_exp_rerun_when_a_column_sum_underflows(mode, path, request):
    # A class of proportion 1e-36 receives less mass than float32's safe range in a column sum:
    # the fast pass flags it and the problem reruns with log-sum-exp column sums.
    use_path(request, path)
    col = torch.tensor([1e-36, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    scores = scores_of(1, 200, 5, seed=7)[0]
    options = {"tol": 1e-4} if mode == "tolerance" else {}
    ours = sinkhorn(scores, 0.1, col_marginal=col.to(DEVICE), backend="triton", return_info=True, **options)
    exact = sinkhorn(scores.double().cpu(), 0.1, col_marginal=col, backend="torch", **options)
    assert ours.log_domain
    assert_labels(ours.labels)
    assert_close(ours.labels, exact)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("path", ["single", "rows", "tiled"])
def test_low_precision_inputs(dtype, path, request, monkeypatch):
    """float16/bfloat16 end to end: the kernels read the scores at their width (no float32 copy
    is made), accumulate in float32 and write the labels in the input dtype."""
    use_path(request, path)
    scores = scores_of(1, 100, 8, seed=8)[0].to(dtype)
    seen = []
    solve = triton_backend._solve_single if path == "single" else triton_backend._solve_many

    def spy(problem, schedule, inputs, kind):
        seen.append(inputs.scores.dtype)
        return solve(problem, schedule, inputs, kind)

    monkeypatch.setattr(triton_backend, "_solve_single" if path == "single" else "_solve_many", spy)
    labels = sinkhorn(scores, 0.1, backend="triton")  # written in the input dtype by the kernel
    assert seen == [dtype] and labels.dtype == dtype
    ours, reference = both(sinkhorn, scores, 0.1)  # return_info: a float32 plan, cast afterwards
    assert ours.labels.dtype == dtype
    torch.testing.assert_close(ours.labels, reference.labels)  # to the dtype's resolution
    torch.testing.assert_close(labels, ours.labels, rtol=torch.finfo(dtype).eps, atol=0)  # one rounding
    assert (labels >= 0).all() and (labels <= 1).all()
    sums = labels.double().sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=8 * 8 * torch.finfo(dtype).eps)


def test_potentials_reproduce_the_labels():
    rng = np.random.default_rng(9)
    prior, _ = feasible_prior(rng, 64, 5, zero_fraction=0.2)
    scores = torch.from_numpy(cosine_scores(rng, 64, 5).astype(np.float32)).to(DEVICE)
    prior_t = torch.from_numpy(prior.astype(np.float32)).to(DEVICE)
    res = sinkhorn_with_prior(scores, prior_t, 0.1, tol=1e-6, backend="triton", return_info=True)
    f, g = res.log_row_scaling.double(), res.log_col_scaling.double()
    rebuilt = torch.exp(f[:, None] + scores.double() / 0.1 + torch.log(prior_t.double()) + g[None, :])
    assert_close(rebuilt, res.labels)


def test_numpy_and_non_contiguous_inputs():
    scores = scores_of(1, 16, 40, seed=10)[0]
    transposed = scores.t()  # (40, 16), not contiguous
    ours, reference = both(sinkhorn, transposed, 0.1)
    assert_close(ours.labels, reference.labels)
    if DEVICE == "cpu":
        labels = sinkhorn(transposed.numpy(), 0.1, backend="triton")
        assert isinstance(labels, np.ndarray)
        assert_close(torch.from_numpy(labels), reference.labels)


def test_invalid_scores_are_reported_through_the_backend():
    scores = scores_of(1, 20, 3)[0]
    scores[3, 1] = float("nan")
    with pytest.raises(InvalidArgumentError, match="NaN"):
        sinkhorn(scores, 0.1, backend="triton")


@pytest.mark.parametrize("validate", ["host", "device"])
@pytest.mark.parametrize("path", ["single", "rows", "tiled"])
def test_infeasible_support_raises_or_poisons(path, validate, request):
    # Reachable only past the front end's checks: row 0's prior support is column 0 alone,
    # whose mass is then set to zero behind the validation's back. Device-side validation
    # makes every label NaN instead of raising.
    use_path(request, path)
    scores = scores_of(1, 30, 4, seed=11)[0]
    prior = torch.ones(30, 4, device=DEVICE)
    prior[0, 1:] = 0
    call = build_problem(scores, prior, Options.make(epsilon=0.1, validate=validate))
    call.problem.col_mass[:, 0] = 0
    call.problem.col_mass[:, 1:] = 30 / 3
    if validate == "host":
        with pytest.raises(InfeasibleProblemError):
            triton_backend.solve(call.problem, call.schedule)
    else:
        solution = triton_backend.solve(call.problem, call.schedule)
        for array in (solution.plan, solution.log_row_scaling, solution.log_col_scaling):
            assert torch.isnan(array).all()


def test_auto_picks_triton_on_cuda_only():
    scores = scores_of(1, 50, 4)[0]
    picked = sinkhorn(scores, 0.1, return_info=True).backend
    assert picked == ("triton" if DEVICE == "cuda" else "torch")
    # float64 is the torch backend's, on any device
    assert sinkhorn(scores.double(), 0.1, return_info=True).backend == "torch"


def test_unavailable_reasons(monkeypatch):
    scores = scores_of(1, 10, 3)[0]
    with pytest.raises(BackendUnavailableError, match="float32"):
        sinkhorn(scores.double(), 0.1, backend="triton")
    with pytest.raises(BackendUnavailableError, match="262144"):
        sinkhorn(torch.zeros(2, triton_backend.MAX_K + 1, device=DEVICE), 0.1, backend="triton")
    kernels = triton_backend._kernels()
    with monkeypatch.context() as patch:  # as if compiled kernels and no interpreter
        patch.setattr(kernels, "INTERPRETED", False)
        patch.setattr(kernels, "interpreting", lambda: False)
        with pytest.raises(BackendUnavailableError, match="on the CPU.*TRITON_INTERPRET=1"):
            sinkhorn(scores.cpu(), 0.1, backend="triton")
    with monkeypatch.context() as patch:  # the setting flipped after the kernels were defined
        patch.setattr(kernels, "interpreting", lambda: not kernels.INTERPRETED)
        with pytest.raises(BackendUnavailableError, match="has changed since"):
            sinkhorn(scores, 0.1, backend="triton")

    def missing() -> None:
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(triton_backend, "_kernels", missing)
    with pytest.raises(BackendUnavailableError, match="triton is not installed"):
        sinkhorn(scores, 0.1, backend="triton")
    assert sinkhorn(scores, 0.1, return_info=True).backend == "torch"  # auto falls back


def test_kernels_compile_for_sm90(tmp_path):
    """The real compiler (not the interpreter) accepts the kernels: cubins for an H100, no GPU needed."""
    if tuple(int(part) for part in triton.__version__.split(".")[:2]) < (3, 2):
        pytest.skip("compiling without a GPU uses triton.compiler.ASTSource as of triton 3.2")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compilation, not a cache hit
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.otlabel.compile_kernels"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def _benchmark():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_sinkhorn.py"
    spec = importlib.util.spec_from_file_location("gpu_sinkhorn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("with_pot", [True, False])
def test_gpu_benchmark_dry_run(with_pot, tmp_path, monkeypatch, capsys):
    """The GPU benchmark end to end on tiny sizes (its timings mean nothing here), with and
    without POT installed; both dtypes in fixed mode, float32 in tolerance mode."""
    if with_pot:
        pytest.importorskip("ot")
    else:
        monkeypatch.setitem(sys.modules, "ot", None)  # import ot raises ImportError
    benchmark = _benchmark()
    out = tmp_path / "gpu.json"
    assert benchmark.main(["--dry-run", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "| fixed | float32 | 300 x 4 |" in table and "| fixed | bfloat16 | 12 x 300 |" in table
    assert "| tolerance | float32 | 12 x 300 |" in table
    fixed = [row for row in payload["rows"] if row["mode"] == "fixed"]
    assert len(fixed) == 2 * len(benchmark.DRY_SIZES)
    on_gpu = {"triton captured", "SwAV captured", "SwAV compiled"} if DEVICE == "cuda" else set()
    for row in fixed:
        pot = {"POT"} if with_pot and row["dtype"] == "float32" else set()
        assert set(row["peers"]) == {"triton", "torch", "SwAV loop"} | pot | on_gpu
    for row in payload["rows"]:
        for name, peer in row["peers"].items():
            assert "error" not in peer, (name, peer)
            assert peer["finite"] and peer["repeats"] == 2
            limit = 1e-4 if row["dtype"] == "float32" else 2e-2  # bfloat16 labels: 3 significant digits
            if name != "SwAV loop" or row["dtype"] == "float32":  # the bfloat16 SwAV loop sums in bfloat16
                assert peer["max_abs_diff_vs_torch"] < limit, (row["mode"], row["dtype"], name)
    assert payload["bandwidth"]["bytes_per_call"] == 5 * 12 * 300 * 4
    assert {b["dtype"] for b in payload["bandwidths"]} == {"float32", "bfloat16"}


def test_gpu_benchmark_tune_dry_run(tmp_path, capsys):
    benchmark = _benchmark()
    out = tmp_path / "tune.json"
    assert benchmark.main(["--dry-run", "--tune", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["tune"]
    assert len(results) == len(benchmark.tune_grid(*benchmark.DRY_SIZES[0], triton_backend.SMALL_PROBLEM))
    assert {"TILED_BLOCK_K": 512} in benchmark.tune_grid(256, 262144, triton_backend.SMALL_PROBLEM)
    assert all(row["median_ms"] > 0 for row in results)
    assert "| 300 x 4 | TILE_SINGLE=2048 |" in capsys.readouterr().out


def test_gpu_check_script_parses():
    """benchmarks/gpu_check.sh (run whole with DRY_RUN=1 on the CPU in ~1 minute) is valid bash."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_peak_bandwidth_lookup():
    benchmark = _benchmark()
    assert benchmark.peak_gbps("NVIDIA H100 80GB HBM3") == 3350.0
    assert benchmark.peak_gbps("NVIDIA H100 PCIe") == 2000.0
    assert benchmark.peak_gbps("NVIDIA H200") == 4800.0
    assert benchmark.peak_gbps("Some future GPU") is None


@pytest.mark.parametrize("path", list(PATHS))
def test_device_checks_poison_the_labels_instead_of_reading_back(path, request):
    use_path(request, path)
    scores = scores_of(1, 300, 7)[0]
    host = sinkhorn(scores, 0.05, backend="triton")
    device = sinkhorn(scores, 0.05, backend="triton", validate="device")
    assert_close(device, host)  # log-sum-exp column sums at once: the same labels
    bad = scores.clone()
    bad[5, 2] = float("nan")
    assert torch.isnan(sinkhorn(bad, 0.05, backend="triton", validate="device")).all()
    with pytest.raises(InvalidArgumentError, match="scores contains NaN"):
        sinkhorn(bad, 0.05, backend="triton")


@pytest.mark.parametrize("path", ["single", "rows", "tiled"])
def test_device_checks_poison_every_problem_of_a_batch(path, request):
    """A failed check anywhere in a batch turns every label of the call into NaN (inside the
    kernels: the last program of the final pass), as on the torch backend."""
    use_path(request, path)
    scores = scores_of(3, 90, 5, seed=12)
    marginal = torch.full((3, 5), 0.2, device=DEVICE)
    assert torch.isfinite(sinkhorn(scores, 0.1, col_marginal=marginal, backend="triton", validate="device")).all()
    marginal[2] = torch.tensor([0.5, 0.5, 0.5, 0.0, 0.0])  # the last problem's sums to 1.5
    labels = sinkhorn(scores, 0.1, col_marginal=marginal, backend="triton", validate="device")
    assert labels.shape == scores.shape and torch.isnan(labels).all()
    bad = scores.clone()
    bad[1, 4, 2] = float("inf")
    assert torch.isnan(sinkhorn(bad, 0.1, n_iter=1, backend="triton", validate="device")).all()


TILED_SHAPES = {"16x20000": (16, 20000), "8x65536": (8, 65536)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", TILED_SHAPES)
def test_tiled_columns_beyond_one_tile(shape, mode):
    """DINO-like K (here up to 65,536 prototypes) runs in Triton, in tiles of columns: against the
    exact (float64) answer to 1e-5 relative on every label, and against the torch backend's
    float32 answer to its own float32 error (its float32 sums over 65,536 columns are off by up
    to 2e-5 relative where the tiled kernel's are off by 4e-6)."""
    n_rows, n_cols = TILED_SHAPES[shape]
    assert n_cols > triton_backend.TILED_K
    scores = scores_of(1, n_rows, n_cols, seed=13)[0]
    options = {"tol": 1e-5, "max_iter": 200} if mode == "tolerance" else {}
    ours, reference = both(sinkhorn, scores, 0.05, **options)
    exact = sinkhorn(scores.double().cpu(), 0.05, backend="torch", **options)
    assert ours.n_iter == reference.n_iter and (mode == "fixed" or ours.converged)
    assert_labels(ours.labels)
    torch.testing.assert_close(ours.labels.double().cpu(), exact, rtol=1e-5, atol=0)
    torch.testing.assert_close(ours.labels.double().cpu(), reference.labels.double().cpu(), rtol=4e-5, atol=0)
