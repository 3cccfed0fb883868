"""Hard (one-hot) labels that keep the column proportions of a soft labelling."""

from __future__ import annotations

from typing import Any

import torch

from ._checks import Array, DeferredChecks, check_marginal, check_scores
from .errors import InvalidArgumentError

__all__ = ["hard_labels", "integer_quotas"]


def integer_quotas(col_mass: torch.Tensor, total: int) -> torch.Tensor:
    """Round non-negative masses summing to ``total`` to integers summing to ``total``.

    Largest-remainder (Hamilton) rounding: floor everything, then give the missing units to
    the largest fractional parts (ties to the lower index).

    Examples
    --------
    >>> import torch
    >>> from otlabel import integer_quotas
    >>> integer_quotas(torch.tensor([2.5, 2.5, 5.0]), 10).tolist()
    [3, 2, 5]
    """
    scaled = col_mass.to(torch.float64) * (total / col_mass.to(torch.float64).sum())
    base = scaled.floor()
    missing = int(total - base.sum().round().item())
    remainder = scaled - base
    order = torch.sort(-remainder, stable=True).indices
    quotas = base.to(torch.int64)
    if missing > 0:
        quotas[order[:missing]] += 1
    return quotas


def _balanced_assignment(plan: torch.Tensor, quotas: torch.Tensor) -> torch.Tensor:
    """Assign each row to one column, column k receiving exactly quotas[k] rows.

    Greedy by confidence: every unassigned row proposes its best column that still has room;
    an over-subscribed column keeps its most confident proposers. Each round fills at
    least one column or assigns every remaining row, so there are at most K + 1 rounds.
    """
    n_rows, n_cols = plan.shape
    assignment = torch.full((n_rows,), -1, dtype=torch.int64, device=plan.device)
    room = quotas.clone().to(plan.device)
    pending = torch.arange(n_rows, device=plan.device)
    while pending.numel() > 0:
        values = plan[pending].masked_fill(room.unsqueeze(0) <= 0, -torch.inf)
        best_value, choice = values.max(dim=1)
        # rank proposers within their column by confidence (descending), ties by row order
        by_value = torch.sort(-best_value, stable=True).indices
        by_column = by_value[torch.sort(choice[by_value], stable=True).indices]
        sorted_choice = choice[by_column]
        counts = torch.bincount(sorted_choice, minlength=n_cols)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(by_column.numel(), device=plan.device) - starts[sorted_choice]
        accepted = by_column[rank < room[sorted_choice]]
        assignment[pending[accepted]] = choice[accepted]
        room -= torch.bincount(choice[accepted], minlength=n_cols)
        keep = torch.ones(pending.numel(), dtype=torch.bool, device=plan.device)
        keep[accepted] = False
        pending = pending[keep]
    return assignment


def hard_labels(labels: Array, col_marginal: Any = None, *, one_hot: bool = True) -> Array:
    """Turn soft labels into hard ones whose column counts follow the marginal exactly.

    ``argmax`` of a balanced soft labelling is only roughly balanced; this rounds the
    target column masses ``N * col_marginal`` (default: the soft labels' own column sums)
    to integers by largest remainder and assigns each row to one column so that column k
    receives exactly that many rows. Rows are served greedily by confidence: a row keeps
    its argmax unless that column is full with more confident rows. When argmax already
    meets the quotas, the result *is* argmax.

    Parameters
    ----------
    labels : Tensor or ndarray, shape (N, K) or (B, N, K)
        Soft labels (e.g. the output of :func:`sinkhorn`).
    col_marginal : array-like, shape (K,) or (B, K), optional
        Target proportions; default ``labels.sum(-2) / N``.
    one_hot : bool, default True
        Return one-hot labels in ``labels``' dtype; ``False`` returns int64 column indices
        of shape (N,) or (B, N).

    Examples
    --------
    >>> import torch
    >>> from otlabel import hard_labels
    >>> soft = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    >>> hard_labels(soft, [0.5, 0.5], one_hot=False).tolist()   # argmax would be [0, 0, 0, 1]
    [0, 0, 1, 1]
    """
    tensor3, batched, was_numpy = check_scores(labels, "labels")
    if not bool(torch.isfinite(tensor3).all()):
        raise InvalidArgumentError("labels contains NaN or infinite values")
    batch, n_rows, n_cols = tensor3.shape
    plan = tensor3.detach().to(torch.float64)
    if col_marginal is None:
        masses = plan.sum(-2)
        if bool((masses < 0).any()) or bool((masses.sum(-1) <= 0).any()):
            raise InvalidArgumentError("labels must have non-negative column sums with a positive total")
    else:
        masses = check_marginal(
            col_marginal, "col_marginal", n_cols, "K", batch, batched, tensor3, torch.float64, DeferredChecks()
        )
    indices = torch.stack([_balanced_assignment(plan[i], integer_quotas(masses[i], n_rows)) for i in range(batch)])
    if one_hot:
        result = torch.nn.functional.one_hot(indices, n_cols).to(tensor3.dtype)
    else:
        result = indices
    if not batched:
        result = result.squeeze(0)
    return result.numpy() if was_numpy else result
