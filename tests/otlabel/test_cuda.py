"""The library on CUDA tensors: torch backend, deferred validation, auto dispatch, ragged, and the
path with no host synchronisation (``validate="device"``: sync debug mode, CUDA graph capture).

Runs only where a GPU is present (the GPU check script, ``benchmarks/gpu_check.sh``); the
same behaviour on CPU tensors is covered by the rest of the suite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otlabel import (
    InvalidArgumentError,
    colabel,
    foreground_marginal,
    gaussian_rank_prior,
    sinkhorn,
    sinkhorn_features,
    sinkhorn_ragged,
    sinkhorn_with_prior,
)

from .helpers import cosine_scores, feasible_prior

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MODES = {"fixed": {}, "tolerance": {"tol": 1e-10, "max_iter": 20_000}}


@pytest.mark.parametrize("mode", MODES)
def test_torch_backend_on_cuda_equals_cpu(mode):
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(cosine_scores(rng, 3000, 24))
    prior, marginal = (torch.from_numpy(x) for x in feasible_prior(rng, 3000, 24, 0.3))
    cpu = sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginal, backend="torch", **MODES[mode])
    gpu = sinkhorn_with_prior(
        scores.cuda(), prior.cuda(), 0.05, col_marginal=marginal.cuda(), backend="torch", **MODES[mode]
    )
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-9)


def test_float32_log_domain_path_on_cuda():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(15000, 1, generator=generator) * 0.2
    scores = -((x - torch.linspace(0, 1, 20)) ** 2)
    res = sinkhorn(scores.cuda(), 1e-3, tol=1e-4, max_iter=5000, backend="torch", return_info=True)
    reference = sinkhorn(scores.double(), 1e-3, tol=1e-4, max_iter=5000)
    assert res.log_domain and res.converged
    torch.testing.assert_close(res.labels.cpu().double(), reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_deferred_checks_raise_on_cuda(backend):
    scores = torch.randn(64, 4, device="cuda")
    bad = scores.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(InvalidArgumentError, match="scores contains NaN"):
        sinkhorn(bad, 0.05, backend=backend)
    with pytest.raises(InvalidArgumentError, match="col_marginal must sum to 1"):
        sinkhorn(scores, 0.05, col_marginal=torch.tensor([0.5, 0.5, 0.5, 0.5], device="cuda"), backend=backend)
    with pytest.raises(InvalidArgumentError, match="prior has negative entries"):
        sinkhorn_with_prior(scores, -torch.ones_like(scores), 0.05, backend=backend)
    # a valid call after failed ones still works (no stale checks)
    assert torch.isfinite(sinkhorn(scores, 0.05, backend=backend)).all()


def test_auto_picks_triton_for_cuda_float32_and_torch_for_float64():
    pytest.importorskip("triton")
    scores = torch.randn(500, 8, device="cuda")
    assert sinkhorn(scores, 0.05, return_info=True).backend == "triton"
    assert sinkhorn(scores.double(), 0.05, return_info=True).backend == "torch"


@pytest.mark.parametrize(
    ("mode", "dtype", "output"),
    [("fixed", torch.float32, "hard"), ("tolerance", torch.float32, "plan"), ("fixed", torch.bfloat16, "plan")],
    ids=str,
)
def test_features_on_cuda_take_the_triton_pass_and_equal_cpu(mode, dtype, output):
    """sinkhorn_features on CUDA (backend="auto"): the fused pass in the Triton kernel (float32 on
    the CUDA cores with normalised rows; bfloat16 on tensor cores, with prototypes that bfloat16
    holds exactly, as the kernel takes them) against the torch blocks on the CPU."""
    pytest.importorskip("triton")
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(20000, 64, generator=generator).to(dtype)
    prototypes = torch.randn(300, 64, generator=generator).to(dtype).float()
    schedule = {"n_iter": 20} if mode == "fixed" else {"tol": 1e-5, "max_iter": 500}
    scores = {"normalize": True, "scale": 1.0} if dtype == torch.float32 else {"scale": 0.01}
    options = {**scores, **schedule, "output": output, "return_info": True}
    cpu = sinkhorn_features(features, prototypes, 0.1, backend="torch", **options)
    gpu = sinkhorn_features(features.cuda(), prototypes.cuda(), 0.1, **options)
    assert (gpu.backend, cpu.backend) == ("triton", "torch")
    assert (gpu.n_iter, gpu.converged) == (cpu.n_iter, cpu.converged)
    rtol = 1e-5 if dtype == torch.float32 else 1e-4  # tensor cores' truncated alignment of addends
    if output == "hard":
        assert torch.equal(gpu.labels.labels.cpu(), cpu.labels.labels)
        torch.testing.assert_close(gpu.labels.mass.cpu(), cpu.labels.mass, rtol=rtol, atol=0)
    else:
        torch.testing.assert_close(gpu.labels.cpu(), cpu.labels, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_ragged_on_cuda_equals_cpu(mode):
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(900, 6, generator=generator, dtype=torch.float64)
    ptr = torch.tensor([0, 100, 350, 351, 900])
    cpu = sinkhorn_ragged(scores, ptr, 0.5, **MODES[mode])
    gpu = sinkhorn_ragged(scores.cuda(), ptr.cuda(), 0.5, **MODES[mode])
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-9)


def _labelling_calls(backend: str) -> list:
    """Fixed-iteration calls of every public labelling function, validate="device", on CUDA tensors."""
    generator = torch.Generator(device="cuda").manual_seed(3)
    scores = torch.randn(4096, 64, device="cuda", generator=generator)
    fg = torch.rand(4096, device="cuda", generator=generator)
    levels = torch.linspace(0, 1, 64, device="cuda")
    fg_labels = (fg > 0.7).float()
    two_way = torch.stack((scores[:, 0], scores[:, 1]), 1)
    return [
        lambda: sinkhorn(scores, 0.05, backend=backend, validate="device"),
        lambda: sinkhorn(
            two_way,
            0.05,
            col_marginal=foreground_marginal(fg_labels, validate="device"),
            backend=backend,
            validate="device",
        ),
        lambda: sinkhorn_with_prior(
            colabel([scores, scores.flip(0)]),
            gaussian_rank_prior(fg, levels, 0.2, validate="device"),
            0.05,
            backend=backend,
            validate="device",
        ),
        lambda: sinkhorn(scores.view(4, 1024, 64), 0.05, n_iter=5, backend=backend, validate="device"),
    ]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_device_mode_never_synchronises(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    calls = _labelling_calls(backend)
    for call in calls:  # warm-up: kernels compiled, caches filled (these may synchronise)
        call()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = [call() for call in calls]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for labels in results:
        assert torch.isfinite(labels).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_call_is_captured_in_a_cuda_graph_and_replays_new_inputs(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    generator = torch.Generator(device="cuda").manual_seed(4)
    static_scores = torch.randn(12000, 16, device="cuda", generator=generator)
    static_prior = torch.rand(12000, 16, device="cuda", generator=generator) + 0.1
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as CUDA graphs require
        for validate in ("host", "device"):  # (device mode runs other kernel variants: compile them now)
            sinkhorn_with_prior(static_scores, static_prior, 0.05, backend=backend, validate=validate)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # validate="auto" turns to device checks while capturing
        static_labels = sinkhorn_with_prior(static_scores, static_prior, 0.05, backend=backend)
    for seed in (5, 6):
        fresh = torch.randn(12000, 16, device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed))
        static_scores.copy_(fresh)
        graph.replay()
        torch.testing.assert_close(
            static_labels, sinkhorn_with_prior(fresh, static_prior, 0.05, backend=backend), rtol=1e-5, atol=1e-6
        )
    static_scores[0, 0] = float("nan")  # bad input inside a graph: NaN labels, never a silent answer
    graph.replay()
    assert torch.isnan(static_labels).all()


@pytest.fixture
def graph_cache():
    """A clean cache of captured calls (and its counts) for one test."""
    from otlabel import graphs

    pytest.importorskip("triton")
    graphs.clear()
    before = graphs.stats()
    yield lambda: {k: v - before[k] for k, v in graphs.stats().items()}
    graphs.clear()


@pytest.mark.parametrize("validate", ["device", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_repeated_calls_replay_one_captured_graph(graph_cache, validate, dtype):
    """From the second call of a kind on, a call is one captured CUDA graph: the same labels as an
    uncaptured call, in a tensor of its own, for new values each time."""
    from otlabel import graphs

    generator = torch.Generator(device="cuda").manual_seed(7)
    batches = [torch.randn(3000, 24, device="cuda", generator=generator).to(dtype) for _ in range(4)]
    marginal = torch.softmax(torch.randn(24, device="cuda", generator=generator), 0)
    results = [sinkhorn(x, 0.05, col_marginal=marginal, validate=validate) for x in batches]
    assert graph_cache() == {"eager": 1, "captured": 1, "replayed": 3, "reruns": 0, "failed_captures": 0}
    graphs.ENABLED = False
    try:
        expected = [sinkhorn(x, 0.05, col_marginal=marginal, validate=validate) for x in batches]
    finally:
        graphs.ENABLED = True
    assert len({r.data_ptr() for r in results}) == len(results)  # never overwritten by the next call
    for got, want in zip(results, expected):
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-6)
    non_contiguous = batches[0].t().contiguous().t()
    torch.testing.assert_close(sinkhorn(non_contiguous, 0.05, col_marginal=marginal, validate=validate), results[0])


def test_a_replayed_call_reports_bad_input_as_its_mode_says(graph_cache):
    scores = torch.randn(500, 8, device="cuda")
    for _ in range(3):
        sinkhorn(scores, 0.05, validate="device")
        sinkhorn(scores, 0.05)
    bad = scores.clone()
    bad[7, 3] = float("nan")
    assert torch.isnan(sinkhorn(bad, 0.05, validate="device")).all()
    with pytest.raises(InvalidArgumentError, match="scores contains NaN"):
        sinkhorn(bad, 0.05)  # host mode: the replay's NaN is repeated eagerly, which raises
    assert graph_cache()["reruns"] == 1 and graph_cache()["captured"] == 2


def test_replayed_device_mode_calls_never_synchronise(graph_cache):
    scores = torch.randn(12000, 16, device="cuda")
    prior = torch.rand(12000, 16, device="cuda") + 0.1
    calls = [
        lambda: sinkhorn(scores, 0.05, validate="device"),
        lambda: sinkhorn_with_prior(scores, prior, 0.05, validate="device"),
    ]
    for call in calls:
        call()  # first call: eager, compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = [call() for call in calls for _ in range(3)]  # capture, then replays
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert graph_cache()["captured"] == 2 and graph_cache()["replayed"] == 6
    assert all(torch.isfinite(labels).all() for labels in results)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("mode", MODES)
def test_differentiable_labels_on_cuda_equal_cpu(mode, backend):
    """differentiable=True on CUDA (the Triton forward with "auto", then the torch backward): the
    gradient of scores and prior equals the CPU's."""
    rng = np.random.default_rng(2)
    scores = torch.from_numpy(cosine_scores(rng, 512, 16))
    prior, _ = (torch.from_numpy(x) for x in feasible_prior(rng, 512, 16, 0.3))
    weights = torch.from_numpy(rng.standard_normal((512, 16)))
    grads = []
    for device in ("cpu", "cuda"):
        leaves = [scores.to(device).requires_grad_(True), prior.to(device).requires_grad_(True)]
        labels = sinkhorn_with_prior(*leaves, 0.05, differentiable=True, backend=backend, **MODES[mode])
        grads.append(torch.autograd.grad((labels * weights.to(device)).sum(), leaves))
    for cpu, gpu in zip(*grads):
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-8)
