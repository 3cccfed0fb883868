"""``sinkhorn_features`` with its fused pass in the Triton kernel against the torch blocks.

On the Triton backend the fused pass of every iteration (row sums, row scalings, the next column
step's sums, and on the last pass the speculative hard labels) is one launch of
:func:`otlabel.backends._triton_features.feature_pass`; everything else stays on the torch
blocks. Without a GPU the kernel runs in Triton's CPU interpreter on CPU tensors, which
``backend="triton"`` asks for (``"auto"`` picks Triton on CUDA only): this module sets
``TRITON_INTERPRET=1`` at import time, before any test imports the kernel, as
``test_triton_features.py`` does. With a GPU the same tests run the compiled kernel on CUDA.

The interpreter pays about 2 ms per program and per operation, not per element: a few hundred
rows, coefficients ``scale / epsilon`` of about 10 (float32 rounds the exponent to ~1e-6 then,
and both paths agree to 1e-5).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton", reason="the Triton feature pass needs triton (pip install 'otlabel[triton]')")

from otlabel import BackendUnavailableError, HardLabels, TopLabels, _front, sinkhorn_features  # noqa: E402
from otlabel.backends import _triton_features, triton_backend  # noqa: E402

INTERPRETED = _triton_features.INTERPRETED
DEVICE = "cpu" if INTERPRETED else "cuda"
if not INTERPRETED and not torch.cuda.is_available():  # pragma: no cover - a misconfigured run
    raise RuntimeError(
        "otlabel's feature kernel was imported before TRITON_INTERPRET=1 was set and there is no GPU: "
        "run this test module in a fresh process"
    )

MODES = {"fixed": {"n_iter": 12}, "tolerance": {"tol": 1e-5, "max_iter": 200}}
RTOL = 1e-5


def data(n: int = 500, K: int = 12, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=generator) * (torch.rand(n, 1, generator=generator) + 0.5)
    prototypes = torch.randn(K, d, generator=generator)
    return features.to(DEVICE), prototypes.to(DEVICE)


#: normalize, scale, epsilon: coefficients scale / epsilon * |x| |c| of about 10
SCORES = {"normalize": (True, 1.0, 0.1), "raw": (False, 0.03, 0.1)}


def both(monkeypatch, features, prototypes, epsilon, **options):
    """The call on the Triton pass and on the torch blocks (``return_info``), checked to make the
    same passes, with every fused pass in the kernel on one side and none on the other, and to
    stop at the same iteration; returns both results."""
    layouts = []
    finish = _front.finish_features

    def record(call, solution):
        layouts.append(call.problem.layout)
        return finish(call, solution)

    monkeypatch.setattr(_front, "finish_features", record)
    ours = sinkhorn_features(features, prototypes, epsilon, backend="triton", return_info=True, **options)
    reference = sinkhorn_features(features, prototypes, epsilon, backend="torch", return_info=True, **options)
    fused, blocks = layouts
    assert (ours.backend, reference.backend) == ("triton", "torch")
    # a fixed schedule's last row step runs on the blocks unless it gives the hard labels itself
    on_blocks = int("n_iter" in options and options.get("output", "plan") != "hard")
    assert fused.triton_passes == fused.row_passes - on_blocks > 0 and blocks.triton_passes == 0
    assert (fused.passes, fused.row_passes) == (blocks.passes, blocks.row_passes)
    assert (ours.n_iter, ours.converged, ours.log_domain) == (reference.n_iter, reference.converged, False)
    return ours, reference


def assert_same_labels(ours, reference, rtol: float = RTOL) -> None:
    """Plans, hard labels or top-k entries within ``rtol`` (relative: every entry is positive),
    the chosen columns exactly; the scalings within ``rtol`` too."""
    got, expected = ours.labels, reference.labels
    if isinstance(expected, HardLabels):
        assert isinstance(got, HardLabels)
        assert torch.equal(got.labels, expected.labels)
        torch.testing.assert_close(got.mass, expected.mass, rtol=rtol, atol=0)
    elif isinstance(expected, TopLabels):
        assert isinstance(got, TopLabels)
        assert torch.equal(got.indices, expected.indices)
        torch.testing.assert_close(got.values, expected.values, rtol=rtol, atol=0)
    else:
        torch.testing.assert_close(got, expected, rtol=rtol, atol=1e-12)
    for name in ("log_row_scaling", "log_col_scaling"):
        torch.testing.assert_close(getattr(ours, name), getattr(reference, name), rtol=0, atol=rtol)
    for name in ("row_error", "col_error"):  # the returned plans' (fixed mode: not converged)
        assert getattr(ours, name) == pytest.approx(getattr(reference, name), rel=1e-2, abs=1e-5), name


@pytest.mark.parametrize("output", ["plan", "hard", "topk"])
@pytest.mark.parametrize("scores", SCORES)
@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_blocks(monkeypatch, mode, scores, output):
    """Fixed and tolerance mode, normalised (the kernel's row scale) and raw features, each
    output: the same passes, iterations and labels (hard labels from the last pass's top-1)."""
    normalize, scale, epsilon = SCORES[scores]
    features, prototypes = data()
    options = {"normalize": normalize, "scale": scale, "output": output, "top_k": 3, **MODES[mode]}
    ours, reference = both(monkeypatch, features, prototypes, epsilon, **options)
    assert_same_labels(ours, reference)


MARGINALS = {
    "col_marginal": ("fixed", "plan"),
    "row_marginal": ("tolerance", "hard"),  # zero-mass rows: the tiny bias in the kernel's row sums
    "both": ("fixed", "topk"),
}


@pytest.mark.parametrize("marginals", MARGINALS)
def test_marginals(monkeypatch, marginals):
    """Column and row marginals (rows of zero mass among them: the kernel adds the tiny bias to
    their row sums, a = 0 / tiny = 0, as ``addmv`` does on the blocks)."""
    mode, output = MARGINALS[marginals]
    features, prototypes = data(seed=1)
    generator = torch.Generator().manual_seed(2)
    options = {"normalize": True, "scale": 1.0, "output": output, "top_k": 2, **MODES[mode]}
    if marginals != "row_marginal":
        col = torch.rand(12, generator=generator, dtype=torch.float64) + 0.3
        options["col_marginal"] = (col / col.sum()).float().to(DEVICE)
    if marginals != "col_marginal":
        row = torch.rand(500, generator=generator, dtype=torch.float64)
        row[::9] = 0.0
        options["row_marginal"] = (row / row.sum()).float().to(DEVICE)
    ours, reference = both(monkeypatch, features, prototypes, 0.1, **options)
    assert_same_labels(ours, reference)
    if marginals != "col_marginal" and output == "hard":
        assert (ours.labels.mass[::9] == 0).all()


def test_penalised_columns(monkeypatch):
    """An unbalanced problem (a KL-penalised column marginal): its row steps make their own row
    scalings, so the fused pass computes no column sums (one matmul in the kernel)."""
    features, prototypes = data(seed=3)
    options = {"normalize": True, "scale": 1.0, "col_penalty": 0.5, "n_iter": 10}
    ours, reference = both(monkeypatch, features, prototypes, 0.1, **options)
    assert_same_labels(ours, reference)


def test_half_features_use_rounded_prototypes(monkeypatch):
    """bfloat16 features: the kernel multiplies the prototypes rounded to bfloat16, and so do the
    passes on the blocks (one problem throughout: the plan's rows hold their masses to float32's
    rounding). Prototypes that bfloat16 holds exactly: as the torch path; normalised ones (not
    exact in bfloat16): within bfloat16's rounding of the torch path's."""
    features, prototypes = data(seed=4)
    features = features.bfloat16()
    exact = prototypes.bfloat16().float()
    ours, reference = both(monkeypatch, features, exact, 0.1, scale=0.03, n_iter=12)
    assert_same_labels(ours, reference)
    options = {"normalize": True, "n_iter": 12, "return_info": True}
    ours = sinkhorn_features(features, prototypes, 0.1, backend="triton", **options)
    reference = sinkhorn_features(features, prototypes, 0.1, backend="torch", **options)
    assert ours.row_error < 1e-5  # every pass on the same (rounded) prototypes
    difference = ((ours.labels - reference.labels).abs() / reference.labels).amax().item()
    # bfloat16's relative rounding (2**-9) of unit prototypes, times scale / epsilon = 10: every kernel
    # entry off by up to e**(10 * 2**-9) - 1 = 2 %, and the scalings' adjustments as much again
    assert 1e-5 < difference < 0.06


def test_non_contiguous_features(monkeypatch):
    """Features as a transposed view: copied once for the kernel, which reads contiguous rows."""
    features, prototypes = data(seed=5)
    features = features.T.contiguous().T
    assert not features.is_contiguous()
    ours, reference = both(monkeypatch, features, prototypes, 0.1, normalize=True, n_iter=5)
    assert_same_labels(ours, reference)


def test_backend_choice():
    """``"auto"`` takes the Triton pass on CUDA only; ``"torch"`` never; float64 (the kernel
    computes in float32) runs on the blocks under ``"auto"`` and is refused by ``"triton"``."""
    features, prototypes = data(n=50, seed=6)
    auto = sinkhorn_features(features, prototypes, 0.1, n_iter=2, return_info=True).backend
    assert auto == ("triton" if DEVICE == "cuda" else "torch")
    assert sinkhorn_features(features, prototypes, 0.1, n_iter=2, backend="torch", return_info=True).backend == "torch"
    double = features.double(), prototypes
    assert sinkhorn_features(*double, 0.1, n_iter=2, return_info=True).backend == "torch"
    with pytest.raises(BackendUnavailableError, match="backend='triton' cannot run here: .*float64 features"):
        sinkhorn_features(*double, 0.1, n_iter=2, backend="triton")


def test_unavailable_reasons(monkeypatch):
    """As the dense path's: no triton, the interpreter's setting changed, CPU tensors without the
    interpreter; ``"auto"`` falls back to the blocks."""
    features, prototypes = data(n=50, seed=7)
    kernels = triton_backend._kernels()
    with monkeypatch.context() as patch:  # the setting flipped after the kernels were defined
        patch.setattr(kernels, "interpreting", lambda: not _triton_features.INTERPRETED)
        with pytest.raises(BackendUnavailableError, match="has changed since"):
            sinkhorn_features(features, prototypes, 0.1, backend="triton")
    with monkeypatch.context() as patch:  # as if compiled kernels and no interpreter
        patch.setattr(_triton_features, "INTERPRETED", False)
        patch.setattr(kernels, "interpreting", lambda: False)
        with pytest.raises(BackendUnavailableError, match="features or prototypes are on the CPU"):
            sinkhorn_features(features.cpu(), prototypes.cpu(), 0.1, backend="triton")

    def missing() -> None:
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(triton_backend, "_kernels", missing)
    with pytest.raises(BackendUnavailableError, match="triton is not installed"):
        sinkhorn_features(features, prototypes, 0.1, backend="triton")
    assert sinkhorn_features(features, prototypes, 0.1, n_iter=2, return_info=True).backend == "torch"
