"""Hard (one-hot) labels that keep the column proportions of a soft labelling."""

from __future__ import annotations

import numbers
from collections import deque
from typing import Any

import numpy as np
import torch

from ._checks import Array, check_marginal, check_scores
from ._deferred import DeferredChecks
from .errors import ArgumentTypeError, InfeasibleProblemError, InvalidArgumentError

__all__ = ["hard_labels", "integer_quotas"]


def integer_quotas(col_mass: torch.Tensor, total: int) -> torch.Tensor:
    """Round non-negative masses to integers summing to ``total``, in proportion to the masses.

    Largest-remainder (Hamilton) rounding of ``total * col_mass / col_mass.sum()``: floor
    everything, then give the missing units to the largest fractional parts (ties to the lower
    index).

    Examples
    --------
    >>> import torch
    >>> from otlabel import integer_quotas
    >>> integer_quotas(torch.tensor([2.5, 2.5, 5.0]), 10).tolist()
    [3, 2, 5]
    """
    if not isinstance(col_mass, torch.Tensor):
        raise ArgumentTypeError(f"col_mass must be a torch.Tensor, got {type(col_mass).__name__}")
    if col_mass.dim() != 1 or col_mass.numel() == 0:
        raise InvalidArgumentError(f"col_mass must have shape (K,) with K >= 1, got {tuple(col_mass.shape)}")
    if isinstance(total, bool) or not isinstance(total, numbers.Integral):
        raise ArgumentTypeError(f"total must be an integer, got {type(total).__name__}")
    if total < 0:
        raise InvalidArgumentError(f"total must be >= 0, got {total}")
    mass = col_mass.to(torch.float64)
    if not bool(torch.isfinite(mass).all()) or bool((mass < 0).any()):
        raise InvalidArgumentError("col_mass must be finite and non-negative")
    mass_sum = mass.sum()
    if not bool(mass_sum > 0):
        raise InvalidArgumentError("col_mass must have a positive sum (there is nothing to share out)")
    scaled = mass * (int(total) / mass_sum)
    base = scaled.floor()
    missing = int(total - base.sum().round().item())
    remainder = scaled - base
    order = torch.sort(-remainder, stable=True).indices
    quotas = base.to(torch.int64)
    if missing > 0:
        quotas[order[:missing]] += 1
    return quotas


def _greedy_assignment(plan: torch.Tensor, quotas: torch.Tensor) -> torch.Tensor:
    """Assign rows to columns of their support (``plan > 0``), column k taking at most quotas[k].

    Greedy by confidence: every unassigned row proposes its best column of its support that
    still has room; an over-subscribed column keeps its most confident proposers. Each round
    fills at least one column or assigns every remaining row, so there are at most K + 1
    rounds. Rows left without a column (their support is full) are -1.
    """
    n_rows, n_cols = plan.shape
    assignment = torch.full((n_rows,), -1, dtype=torch.int64, device=plan.device)
    room = quotas.clone().to(plan.device)
    pending = torch.arange(n_rows, device=plan.device)
    while pending.numel() > 0:
        values = plan[pending].masked_fill((room.unsqueeze(0) <= 0) | (plan[pending] <= 0), -torch.inf)
        best_value, choice = values.max(dim=1)
        placeable = best_value > -torch.inf
        if not bool(placeable.any()):
            break  # what is left needs the augmenting paths of _complete
        pending, best_value, choice = pending[placeable], best_value[placeable], choice[placeable]
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


def _complete(support: np.ndarray, assignment: np.ndarray, quotas: np.ndarray, problem: str) -> None:
    """Place the unassigned rows (-1) by augmenting paths, in place; raise when impossible.

    For an unassigned row, search (breadth first over columns) for a chain row -> full column
    -> a row of that column that may move -> ... -> a column with room, and shift every row of
    the chain one step. When none exists, the columns reached and the rows in them have support
    only among those columns, whose quotas they already fill: the quotas cannot be met.
    """
    n_cols = support.shape[1]
    room = quotas - np.bincount(assignment[assignment >= 0], minlength=n_cols)
    for row in np.flatnonzero(assignment < 0):
        parent: dict[int, tuple[int, int]] = {}  # column -> (previous column or -1, row that moves in)
        queue = deque()
        for col in np.flatnonzero(support[row]):
            parent[int(col)] = (-1, int(row))
            queue.append(int(col))
        found = -1
        while queue:
            col = queue.popleft()
            if room[col] > 0:
                found = col
                break
            for member in np.flatnonzero(assignment == col):
                for nxt in np.flatnonzero(support[member]):
                    if int(nxt) not in parent:
                        parent[int(nxt)] = (col, int(member))
                        queue.append(int(nxt))
        if found < 0:
            cols = np.array(sorted(parent), dtype=np.int64)
            members = np.flatnonzero(np.isin(assignment, cols))
            raise InfeasibleProblemError(
                f"hard_labels{problem}: the quotas cannot be met within the labels' support (rows may only take "
                f"columns where their soft label is > 0): row {int(row)} and the {members.size} rows now in columns "
                f"{cols.tolist()[:8]}{' ...' if cols.size > 8 else ''} can only go to those columns, whose quotas "
                f"{quotas[cols].tolist()[:8]} hold {int(quotas[cols].sum())} rows"
            )
        room[found] -= 1
        col = found
        while col >= 0:  # shift the chain back to the unassigned row
            previous, mover = parent[col]
            assignment[mover] = col
            col = previous


def hard_labels(labels: Array, col_marginal: Any = None, *, one_hot: bool = True) -> Array:
    """Turn soft labels into hard ones whose column counts follow the marginal exactly.

    ``argmax`` of a balanced soft labelling is only roughly balanced; this rounds the
    target column masses ``N * col_marginal`` (default: the soft labels' own column sums)
    to integers by largest remainder and assigns each row to one column so that column k
    receives exactly that many rows. Rows are only sent where their soft label is positive
    (a zero is a hard constraint, as in :func:`~otlabel.sinkhorn_with_prior`). Rows are served
    greedily by confidence: a row keeps its argmax unless that column is full with more
    confident rows; rows whose support is full are then placed by moving other rows along
    their own supports (augmenting paths), and when no such moves exist the quotas cannot be
    met and :class:`~otlabel.InfeasibleProblemError` says which rows and columns conflict.
    When argmax already meets the quotas, the result *is* argmax.

    This is a host algorithm with data-dependent rounds: it synchronises with an accelerator.

    Parameters
    ----------
    labels : Tensor or ndarray, shape (N, K) or (B, N, K)
        Soft labels (non-negative, e.g. the output of :func:`sinkhorn`).
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
    if bool((tensor3 < 0).any()):
        raise InvalidArgumentError("labels must be non-negative soft labels (e.g. the output of sinkhorn)")
    batch, n_rows, n_cols = tensor3.shape
    plan = tensor3.detach().to(torch.float64)
    if col_marginal is None:
        masses = plan.sum(-2)
        if bool((masses.sum(-1) <= 0).any()):
            raise InvalidArgumentError("labels must have non-negative column sums with a positive total")
    else:
        masses = check_marginal(
            col_marginal, "col_marginal", n_cols, "K", batch, batched, tensor3, torch.float64, DeferredChecks()
        )
    rows = []
    for i in range(batch):
        quotas = integer_quotas(masses[i], n_rows)
        assignment = _greedy_assignment(plan[i], quotas)
        if bool((assignment < 0).any()):
            placed = assignment.cpu().numpy()
            _complete((plan[i] > 0).cpu().numpy(), placed, quotas.cpu().numpy(), f" (problem {i})" if batched else "")
            assignment = torch.from_numpy(placed).to(assignment.device)
        rows.append(assignment)
    indices = torch.stack(rows)
    if one_hot:
        result = torch.nn.functional.one_hot(indices, n_cols).to(tensor3.dtype)
    else:
        result = indices
    if not batched:
        result = result.squeeze(0)
    return result.numpy() if was_numpy else result
