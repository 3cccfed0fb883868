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
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from ._checks import MARGINAL_SUM_ATOL, check_marginal, vector_tensor
from ._deferred import DeferredChecks
from ._problem import HARD, Rule
from .errors import ArgumentTypeError, InvalidArgumentError

if TYPE_CHECKING:
    from ._options import Options

__all__ = ["NOTHING", "Resolved", "Rules", "Sizes", "resolve", "rules_in_masses"]


class Resolved(NamedTuple):
    """Validated options, in the shapes of the masses: rows (B, N), columns (B, K)."""

    row_rule: Rule = HARD
    col_rule: Rule = HARD
    total_fraction: float | None = None  #: partial transport: the fraction m of the mass
    init: tuple[torch.Tensor | None, torch.Tensor] | None = None
    accelerate: bool = False


NOTHING = Resolved()


class Sizes(NamedTuple):
    """The sizes a call's options are checked against: B problems (G groups) of N rows in all and
    K columns; ``batched``: the scores had a batch axis (a (B, K) option is accepted);
    ``packed_rows``: the rows of every problem packed in one axis (a ragged call)."""

    batch: int
    n_rows: int
    n_cols: int
    batched: bool
    packed_rows: bool = False


def _bounds(
    value: Any, sizes: Sizes, like: torch.Tensor, dtype: torch.dtype, checks: DeferredChecks
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
            part,
            f"col_bounds {name}",
            sizes.n_cols,
            "K",
            sizes.batch,
            sizes.batched,
            like,
            dtype,
            checks,
            check_sum=False,
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


def _array_like(value: Any) -> bool:
    """A tensor or numpy array with at least one dimension, or a sequence (not a string): what can
    be one part of an (f, g) pair; numbers (0-d tensors and arrays included) cannot."""
    if isinstance(value, torch.Tensor):
        return value.dim() > 0
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _plain_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a rectangular nest of sequences of plain numbers, or None for anything else
    (tensors or arrays inside, rows of different lengths)."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        return None
    if all(isinstance(item, numbers.Real) for item in value):
        return (len(value),)
    shapes = {_plain_shape(item) for item in value}
    if len(shapes) != 1 or None in shapes:
        return None
    return (len(value), *shapes.pop())


_INIT_FORMS = "init must be a result, (log_row_scaling, log_col_scaling), or log_col_scaling"


def _init_parts(value: Any, sizes: Sizes) -> tuple[Any, Any]:
    """``init`` split into (f or None, g), not yet checked. A list or tuple is the pair (f, g) only
    when it has two parts, each None or itself array-like; otherwise it is the column potential,
    numbers (K,) or rows of numbers (B, K), as marginals are. Two rows of K numbers for a batch of
    two problems are the column potential where N != K (they cannot be f (N,) and g), and refused
    as ambiguous where N = K."""
    batch, n_rows, n_cols, batched, _ = sizes
    if not isinstance(value, (tuple, list)):
        return None, value
    if len(value) == 2 and all(part is None or _array_like(part) for part in value):
        if batched and _plain_shape(value) == (batch, n_cols):  # two rows of K numbers
            if n_rows != n_cols:
                return None, value  # f would need N numbers: the rows are the column potential
            raise ArgumentTypeError(
                f"init is two rows of {n_cols} numbers, which could be log_col_scaling for both "
                f"problems or (log_row_scaling, log_col_scaling) (N = K = {n_cols}); pass "
                "log_col_scaling as a tensor, or the pair as a tuple of tensors"
            )
        return value[0], value[1]
    if any(part is None or (isinstance(part, (torch.Tensor, np.ndarray)) and _array_like(part)) for part in value):
        raise ArgumentTypeError(f"{_INIT_FORMS}; got a {type(value).__name__} of {len(value)} parts")
    return None, value


def _init(value: Any, sizes: Sizes, like: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A warm start: a result with potentials, (log_row_scaling, log_col_scaling), or the column
    potential alone; returned as (f (B, N) or None, g (B, K)) in ``dtype`` (``packed_rows``: the
    rows of every problem packed, f (N,), as in :func:`~otlabel.sinkhorn_ragged`)."""
    if hasattr(value, "log_row_scaling") and hasattr(value, "log_col_scaling"):
        value = (value.log_row_scaling, value.log_col_scaling)
    f, g = _init_parts(value, sizes)
    batch, n_rows, n_cols, batched, packed_rows = sizes
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


def resolve(options: Options, sizes: Sizes, like: torch.Tensor, dtype: torch.dtype, checks: DeferredChecks) -> Resolved:
    """The options' bounds and warm start checked against the scores (shapes at once, values as
    ``checks``), and every option as the solver's rules."""
    if options.plain:
        return NOTHING
    bounds = None if options.col_bounds is None else _bounds(options.col_bounds, sizes, like, dtype, checks)
    init = None if options.init is None else _init(options.init, sizes, like, dtype)
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


class Rules(NamedTuple):
    """How a problem's rows and columns are held, in masses, and the total mass of partial transport."""

    row: Rule
    col: Rule
    total_mass: torch.Tensor | None  #: per problem, (P,); None: not fixed


#: The classical problem's rules: both sides held at their masses, no fixed total.
_HARD_RULES = Rules(HARD, HARD, None)


def rules_in_masses(
    resolved: Resolved,
    row_mass: torch.Tensor | None,
    row_shape: tuple[int, ...],
    col_mass: torch.Tensor,
    counts: torch.Tensor | float,
) -> Rules:
    """The problem's rules with proportions turned into masses, and the total mass of partial
    transport (per problem, or None). ``counts``: each problem's number of rows, (P,) or one
    number for all; ``row_shape``: the shape of the row masses (all ones when ``row_mass`` is None);
    ``col_mass``: (P, K)."""
    if resolved is NOTHING:
        return _HARD_RULES
    row_rule, col_rule = resolved.row_rule, resolved.col_rule
    if resolved.total_fraction is not None:  # partial transport: at most each marginal, m of it in all
        rows = row_mass if row_mass is not None else col_mass.new_ones(row_shape)
        total = resolved.total_fraction * counts * col_mass.new_ones(col_mass.shape[0])
        return Rules(Rule(1.0, None, rows), Rule(1.0, None, col_mass), total)
    if col_rule.bounded:
        per_problem = counts.unsqueeze(-1) if isinstance(counts, torch.Tensor) else counts
        lower = None if col_rule.lower is None else col_rule.lower * per_problem
        upper = None if col_rule.upper is None else col_rule.upper * per_problem
        col_rule = Rule(1.0, lower, upper)
    return Rules(row_rule, col_rule, None)
