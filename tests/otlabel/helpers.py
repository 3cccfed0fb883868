"""Reference implementations and problem generators shared by the otlabel tests."""

from __future__ import annotations

import numpy as np
import torch


def swav_reference(
    scores: torch.Tensor,
    epsilon: float,
    n_iter: int = 3,
    prior: torch.Tensor | None = None,
    col_marginal: torch.Tensor | None = None,
) -> torch.Tensor:
    """The plain SwAV/CASE loop (columns, then rows, rows last), written out as those repos do."""
    q = torch.exp(scores / epsilon)
    if prior is not None:
        q = q * prior
    q = q.t().clone()  # K x N, as in SwAV
    n_cols, n_rows = q.shape
    q /= q.sum()
    target = torch.full((n_cols,), 1.0 / n_cols, dtype=q.dtype) if col_marginal is None else col_marginal
    for _ in range(n_iter):
        q /= q.sum(dim=1, keepdim=True)
        q *= target.unsqueeze(1)
        q /= q.sum(dim=0, keepdim=True)
        q /= n_rows
    return (q * n_rows).t()


def cosine_scores(rng: np.random.Generator, n_rows: int, n_cols: int, dim: int = 32) -> np.ndarray:
    """Cosine similarities between random unit embeddings and prototypes (SwAV-like scores)."""
    x = rng.standard_normal((n_rows, dim))
    y = rng.standard_normal((n_cols, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x @ y.T


def clustered_scores(generator: torch.Generator, n_rows: int, n_cols: int, dim: int = 128) -> torch.Tensor:
    """Clustered unit embeddings against jittered unit prototypes: the cosine-like scores of
    ``benchmarks/bench_sinkhorn.py``, on which plain tolerance-mode iterations are slow."""
    centres = torch.nn.functional.normalize(torch.randn(n_cols, dim, generator=generator), dim=1)
    members = torch.randint(0, n_cols, (n_rows,), generator=generator)
    embeddings = centres[members] + 0.7 * torch.randn(n_rows, dim, generator=generator) / dim**0.5
    embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    jitter = 0.3 * torch.randn(n_cols, dim, generator=generator) / dim**0.5
    return embeddings @ torch.nn.functional.normalize(centres + jitter, dim=1).t()


def feasible_prior(
    rng: np.random.Generator, n_rows: int, n_cols: int, zero_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """A random prior with exact zeros and a column marginal that keeps the problem strictly feasible.

    A random positive plan W is drawn on the prior's support (every row and column
    non-empty) with rows summing to 1; its column sums define the marginal, so a plan with
    exactly the prior's support exists and Sinkhorn converges linearly.
    """
    support = rng.random((n_rows, n_cols)) >= zero_fraction
    support[np.arange(n_rows), rng.integers(0, n_cols, n_rows)] = True
    support[rng.integers(0, n_rows, n_cols), np.arange(n_cols)] = True
    prior = np.where(support, rng.uniform(0.05, 1.0, (n_rows, n_cols)), 0.0)
    plan = np.where(support, rng.uniform(0.1, 1.0, (n_rows, n_cols)), 0.0)
    plan /= plan.sum(1, keepdims=True)
    col_marginal = plan.sum(0) / n_rows
    return prior, col_marginal / col_marginal.sum()


def pot_solution(
    scores: np.ndarray, epsilon: float, prior: np.ndarray | None, col_marginal: np.ndarray | None
) -> np.ndarray:
    """The converged plan from POT: ot.sinkhorn with M = -(scores/eps + log prior), reg = 1, times N."""
    import ot

    n_rows, n_cols = scores.shape
    log_kernel = scores / epsilon
    if prior is not None:
        with np.errstate(divide="ignore"):
            log_kernel = log_kernel + np.log(prior)
    cost = -log_kernel
    cost = cost - cost[np.isfinite(cost)].min()  # a constant shift changes nothing; keeps exp in range
    a = np.full(n_rows, 1.0 / n_rows)
    b = np.full(n_cols, 1.0 / n_cols) if col_marginal is None else col_marginal
    plan = ot.sinkhorn(a, b, cost, 1.0, method="sinkhorn_log", stopThr=1e-13, numItermax=200_000)
    return plan * n_rows
