"""``torch.compile(..., fullgraph=True)`` of a training step that labels with otlabel (CPU).

A graph break anywhere in the fixed-iteration path (a host read-back, a data-dependent Python
branch) makes ``fullgraph=True`` raise, so compiling at all is the check that the path has no
host synchronisation; the labels must equal the eager ones and stay finite where the plain
loop overflows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otlabel import colabel, foreground_marginal, gaussian_rank_prior, sinkhorn, sinkhorn_with_prior

from .helpers import cosine_scores

N, K = 96, 12


def step(rgb: torch.Tensor, flow: torch.Tensor, fg: torch.Tensor, fg_labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A CASE-like labelling step: co-labelled streams, SCC with the rank prior, CCC with beta."""
    scores = colabel([rgb, flow])  # (N, K)
    equipartition = sinkhorn(scores, 0.05)
    levels = torch.linspace(0, 1, K, dtype=scores.dtype)
    prior = gaussian_rank_prior(fg, levels, sigma=0.2)
    clustered = sinkhorn_with_prior(scores, prior, 0.05, n_iter=5)
    beta = foreground_marginal(fg_labels)  # (2,)
    two_way = torch.stack((scores.mean(1), scores[:, 0]), dim=1)  # (N, 2)
    classified = sinkhorn(two_way, 0.05, col_marginal=beta)
    return equipartition, clustered, classified


def _inputs(kind: str) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(1)
    if kind == "cosine":
        rgb = torch.from_numpy(cosine_scores(rng, N, K)).float()
        flow = torch.from_numpy(cosine_scores(rng, N, K)).float()
    else:  # wide logits: exp(scores / epsilon) overflows float32 in the plain loop
        rgb = 3 * torch.randn(N, K, generator=generator)
        flow = 3 * torch.randn(N, K, generator=generator)
    fg = torch.rand(N, generator=generator)
    fg_labels = (torch.rand(N, generator=generator) > 0.6).float()
    return rgb, flow, fg, fg_labels


def _calls(inputs: tuple[torch.Tensor, ...]) -> dict[str, tuple[object, tuple[torch.Tensor, ...]]]:
    """Each library call of the step on its own, with its inputs."""
    rgb, flow, fg, fg_labels = inputs
    scores = colabel([rgb, flow])
    levels = torch.linspace(0, 1, K)
    return {
        "colabel": (lambda r, f: colabel([r, f]), (rgb, flow)),
        "sinkhorn": (lambda s: sinkhorn(s, 0.05), (scores,)),
        "sinkhorn col_marginal": (
            lambda s, y: sinkhorn(s[:, :2], 0.05, col_marginal=foreground_marginal(y)),
            (scores, fg_labels),
        ),
        "sinkhorn_with_prior": (
            lambda s, f: sinkhorn_with_prior(s, gaussian_rank_prior(f, levels, sigma=0.2), 0.05, n_iter=5),
            (scores, fg),
        ),
        "foreground_marginal": (foreground_marginal, (fg_labels,)),
    }


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_the_fixed_iteration_path_compiles_without_graph_breaks(backend):
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    for kind in ("cosine", "wide"):
        inputs = _inputs(kind)
        eager = step(*inputs)
        got = compiled(*inputs)
        for g, e in zip(got, eager, strict=True):
            assert torch.isfinite(g).all(), kind
            # the fused co-labelling may differ from eager by an ulp of the scores, which the
            # labels amplify by 1 / epsilon = 20; each call alone is held to 1e-6 below
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        # every otlabel call on its own returns the eager labels to 1e-6
        for name, (function, arguments) in _calls(inputs).items():
            torch._dynamo.reset()
            alone = torch.compile(function, fullgraph=True, backend=backend)(*arguments)
            torch.testing.assert_close(alone, function(*arguments), rtol=1e-6, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_inside_a_compiled_step_bad_input_gives_nan_labels_not_an_exception():
    """Nothing may be read back inside the graph: checks ride on the device and poison the result."""
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    rgb, flow, fg, fg_labels = _inputs("cosine")
    rgb = rgb.clone()
    rgb[3, 2] = float("nan")
    for labels in compiled(rgb, flow, fg, fg_labels):
        assert torch.isnan(labels).all()
    wrong_beta = fg_labels.clone()
    wrong_beta[0] = 7.0  # not a probability
    _, _, classified = compiled(*_inputs("cosine")[:3], wrong_beta)
    assert torch.isnan(classified).all()
