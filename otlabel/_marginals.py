"""Marginals beyond the hard constraint, warm starts and acceleration: validated into the solver
core's :class:`~otlabel._problem.Rule` objects, shared by every entry point.

* ``col_penalty`` / ``row_penalty`` (tau): the side's marginal becomes a KL penalty
  ``tau * KL(sums || N * marginal)``; tau -> inf is the hard constraint.
* ``mass`` (m in (0, 1]): partial transport; only a fraction m of the mass is labelled, rows and
  columns may receive at most their marginal's mass.
* ``col_bounds`` ((lower, upper) proportions): every column's mass between N * lower and
  N * upper (Sinkhorn Label Allocation), rows held at their mass.
* ``init``: a warm start, from the potentials a previous call returned.
* ``acceleration="anderson"``: Anderson acceleration of the tolerance mode.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ._checks import MARGINAL_SUM_ATOL, check_marginal, vector_tensor
from ._deferred import DeferredChecks
from ._problem import HARD, Rule
from .errors import ArgumentTypeError, InvalidArgumentError

if TYPE_CHECKING:
    from ._options import Options

__all__ = ["NOTHING", "Resolved", "resolve", "rules_in_masses"]


class Resolved(NamedTuple):
    """Validated options, in the shapes of the masses: rows (B, N), columns (B, K)."""

    row_rule: Rule = HARD
    col_rule: Rule = HARD
    total_fraction: float | None = None  #: partial transport: the fraction m of the mass
    init: tuple[torch.Tensor | None, torch.Tensor] | None = None
    accelerate: bool = False


NOTHING = Resolved()


def _bounds(
    value: Any, batch: int, n_cols: int, batched: bool, like: torch.Tensor, dtype: torch.dtype, checks: DeferredChecks
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ArgumentTypeError(
            "col_bounds must be a pair (lower, upper) of class proportions (each array-like of K entries, or None)"
        )
    parts = []
    for name, part in zip(("lower", "upper"), value):
        if part is None:
            parts.append(None)
            continue
        tensor = check_marginal(
            part, f"col_bounds {name}", n_cols, "K", batch, batched, like, dtype, checks, check_sum=False
        )
        parts.append(tensor)
    lower, upper = parts
    if lower is None and upper is None:
        raise InvalidArgumentError("col_bounds needs a lower or an upper bound (got (None, None))")
    if lower is not None:
        checks.require(
            (lower.sum(-1) <= 1 + MARGINAL_SUM_ATOL).all(),
            lambda: InvalidArgumentError("col_bounds: the lower bounds sum to more than 1 (no labelling fits)"),
        )
    if upper is not None:
        checks.require(
            (upper.sum(-1) >= 1 - MARGINAL_SUM_ATOL).all(),
            lambda: InvalidArgumentError("col_bounds: the upper bounds sum to less than 1 (no labelling fits)"),
        )
    if lower is not None and upper is not None:
        checks.require(
            (lower <= upper).all(), lambda: InvalidArgumentError("col_bounds: a lower bound exceeds its upper bound")
        )
    return lower, upper


def _init(
    value: Any,
    batch: int,
    n_rows: int,
    n_cols: int,
    batched: bool,
    like: torch.Tensor,
    dtype: torch.dtype,
    packed_rows: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A warm start: a result with potentials, (log_row_scaling, log_col_scaling), or the column
    potential alone; returned as (f (B, N) or None, g (B, K)) in ``dtype`` (``packed_rows``: the
    rows of every problem packed, f (N,), as in :func:`~otlabel.sinkhorn_ragged`)."""
    if hasattr(value, "log_row_scaling") and hasattr(value, "log_col_scaling"):
        value = (value.log_row_scaling, value.log_col_scaling)
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ArgumentTypeError("init must be (log_row_scaling, log_col_scaling), a result, or log_col_scaling")
        f, g = value
    else:
        f, g = None, value
    if g is None:
        raise ArgumentTypeError("init needs the column potential log_col_scaling (the row one may be None)")

    def tensor_of(part: Any, name: str, length: int, length_name: str, packed: bool = False) -> torch.Tensor:
        tensor = vector_tensor(part, f"init {name}", like).to(dtype)
        if packed:
            if tensor.dim() == 1 and tensor.shape[0] == length:
                return tensor
            raise InvalidArgumentError(
                f"init {name} must have shape ({length},) ({length_name} = {length}), got {tuple(tensor.shape)}"
            )
        if tensor.dim() == 1 and tensor.shape[0] == length:
            return tensor.unsqueeze(0).expand(batch, length)
        if tensor.dim() == 2 and batched and tuple(tensor.shape) == (batch, length):
            return tensor
        expected = f"({length},)" + (f" or ({batch}, {length})" if batched else "")
        raise InvalidArgumentError(
            f"init {name} must have shape {expected} ({length_name} = {length}), got {tuple(tensor.shape)}"
        )

    g_tensor = tensor_of(g, "log_col_scaling", n_cols, "K")
    f_tensor = None if f is None else tensor_of(f, "log_row_scaling", n_rows, "N", packed_rows)
    return f_tensor, g_tensor


def _without_minus_infinity(potential: torch.Tensor) -> torch.Tensor:
    """A warm start's -inf entries (a zero-mass column's potential in the result it came from)
    replaced by the smallest finite entry of their problem: a start, not a verdict that no mass
    can go there (where no mass may go, the first step sets -inf again). On the device."""
    finite = torch.isfinite(potential)
    floor = torch.where(finite, potential, math.inf).amin(-1, keepdim=True)
    floor = torch.where(torch.isfinite(floor), floor, 0.0)
    return torch.where(potential == -math.inf, floor, potential)


def resolve(
    options: Options,
    *,
    batch: int,
    n_rows: int,
    n_cols: int,
    batched: bool,
    like: torch.Tensor,
    dtype: torch.dtype,
    checks: DeferredChecks,
    packed_rows: bool = False,
) -> Resolved:
    """The options' bounds and warm start checked against the scores (shapes at once, values as
    ``checks``), and every option as the solver's rules."""
    if options.plain:
        return NOTHING
    bounds = (
        None if options.col_bounds is None else _bounds(options.col_bounds, batch, n_cols, batched, like, dtype, checks)
    )
    init = (
        None if options.init is None else _init(options.init, batch, n_rows, n_cols, batched, like, dtype, packed_rows)
    )
    if init is not None:
        for part, name in ((init[0], "log_row_scaling"), (init[1], "log_col_scaling")):
            if part is not None:
                checks.require(
                    (~torch.isnan(part)).all() & (part < math.inf).all(),
                    lambda name=name: InvalidArgumentError(f"init {name} contains NaN or +inf"),
                )
        init = tuple(None if part is None else _without_minus_infinity(part) for part in init)
    epsilon, row_tau, col_tau = options.epsilon, options.row_penalty, options.col_penalty
    row_rule = HARD if row_tau is None else Rule(row_tau / (row_tau + epsilon))
    col_rule = HARD if col_tau is None else Rule(col_tau / (col_tau + epsilon))
    if bounds is not None:
        col_rule = Rule(1.0, bounds[0], bounds[1])  # proportions; scaled to masses by the entry point
    return Resolved(row_rule, col_rule, options.mass, init, options.schedule.accelerate)


def rules_in_masses(
    resolved: Resolved,
    row_mass: torch.Tensor | None,
    row_shape: tuple[int, ...],
    col_mass: torch.Tensor,
    counts: torch.Tensor | float,
) -> tuple[Rule, Rule, torch.Tensor | None]:
    """The problem's rules with proportions turned into masses, and the total mass of partial
    transport (per problem, or None). ``counts``: each problem's number of rows, (P,) or one
    number for all; ``row_shape``: the shape of the row masses (all ones when ``row_mass`` is None);
    ``col_mass``: (P, K)."""
    row_rule, col_rule = resolved.row_rule, resolved.col_rule
    if resolved.total_fraction is not None:  # partial transport: at most each marginal, m of it in all
        rows = row_mass if row_mass is not None else col_mass.new_ones(row_shape)
        total = resolved.total_fraction * counts * col_mass.new_ones(col_mass.shape[0])
        return Rule(1.0, None, rows), Rule(1.0, None, col_mass), total
    if col_rule.bounded:
        per_problem = counts.unsqueeze(-1) if isinstance(counts, torch.Tensor) else counts
        lower = None if col_rule.lower is None else col_rule.lower * per_problem
        upper = None if col_rule.upper is None else col_rule.upper * per_problem
        col_rule = Rule(1.0, lower, upper)
    return row_rule, col_rule, None
