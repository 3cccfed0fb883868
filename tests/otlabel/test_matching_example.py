"""examples/matching_layer.py: otlabel's differentiable labels reproduce SuperGlue's optimal-transport
layer (plan and gradients), and the example's layer learns."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("matching_layer", ROOT / "examples" / "matching_layer.py")
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)  # type: ignore[union-attr]


def _superglue_layer(scores: torch.Tensor, dustbin: torch.Tensor, n_iter: int) -> torch.Tensor:
    """SuperGlue's ``log_optimal_transport``, re-stated from its definition (rows first, then
    columns; masses 1 per point and the other side's count per dustbin, over m + n)."""
    batch, m, n = scores.shape
    top = torch.cat([scores, dustbin.expand(batch, m, 1)], dim=2)
    couplings = torch.cat([top, dustbin.expand(batch, 1, n + 1)], dim=1)
    norm = -math.log(m + n)
    log_mu = torch.tensor([norm] * m + [math.log(n) + norm], dtype=scores.dtype)
    log_nu = torch.tensor([norm] * n + [math.log(m) + norm], dtype=scores.dtype)
    u = torch.zeros(batch, m + 1, dtype=scores.dtype)
    v = torch.zeros(batch, n + 1, dtype=scores.dtype)
    for _ in range(n_iter):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return torch.exp(couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm)


def test_the_layer_is_superglue_s_layer_with_its_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    for m, n, n_iter in [(5, 7, 100), (9, 4, 3)]:
        scores = torch.randn(2, m, n, generator=gen, dtype=torch.float64) * 2
        weights = torch.randn(2, m + 1, n + 1, generator=gen, dtype=torch.float64)
        grads = []
        plans = []
        for layer in (example.matching_plan, _superglue_layer):
            leaf = scores.clone().requires_grad_(True)
            dustbin = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
            plan = layer(leaf, dustbin, n_iter)
            plans.append(plan)
            grads.append(torch.autograd.grad((plan * weights).sum(), [leaf, dustbin]))
        assert torch.allclose(plans[0], plans[1], atol=1e-10, rtol=0)
        for ours, theirs in zip(*grads):
            assert torch.allclose(ours, theirs, atol=1e-10, rtol=0)
        # SuperGlue's loop ends on the columns: every point's column sums to 1
        assert torch.allclose(plans[0][:, :, :-1].sum(-2), torch.ones(2, n, dtype=torch.float64))


def test_the_matching_layer_learns() -> None:
    """A short run: the loss falls well below its start and most true matches are found."""
    losses = example.train(steps=80, n_iter=20, seed=0, log_every=1000)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)
