"""The solver core: one fixed-iteration loop and one tolerance loop, each on a scaling path and a
log-domain path, written once over a :mod:`layout <otlabel._layout>` that supplies the reductions.

Every schedule is the SwAV/CASE one: scale the columns to their mass, then the rows, ``n`` times
(rows last); the first column step sees the unshifted rows, as the plain loop does.

* The **scaling path** forms the kernel ``G = exp(scores/eps + log prior + f0 + g0)`` once,
  shifted so that no entry overflows (the shifts are absorbed by the scalings: they change nothing
  in exact arithmetic); an iteration is then two matrix-vector products and two divisions, the
  N x K matrix read twice and never written. It records the smallest and largest sum of every
  step (:class:`~otlabel._numerics.Extrema`).
* The **log-domain path** runs the same iterations on log-potentials with log-sum-exp. It is
  several times slower and runs only when a recorded sum left the safe floating-point range
  (|scores/eps| of thousands, near-infeasible marginals), restarting from the last state known to
  be good, so the answer is the same as if nothing had overflowed.

Both paths offer one interface — ``statistic()`` (what a step needs), ``step``, ``check`` (the
read-back: health, or infeasibility), ``measure`` (what ``tol`` is compared with), ``snapshot`` /
``change`` (stationarity), ``save``, ``plan``, ``potentials`` — so that each mode is one loop that
switches path instead of a loop per path. Beyond the classical problem (penalised, bounded or
partial marginals) a path carries its rules and Dykstra's corrections in an object of their own
(:class:`Corrections`, :class:`LogCorrections`; None for the balanced problem).

With ``Problem.device_checks`` the fixed-iteration mode makes no host synchronisation at all:
the shifts are per row and per column (no host-known score range), and a failed input check or an
unhealthy scaling path turns the labels into NaN rather than raising or replaying (a replay would
need to know, on the host, that it is needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._acceleration import Anderson
from ._layout import Layout
from ._numerics import (
    Extrema,
    StatusReader,
    healthy_tensor,
    log_kernel,
    raise_infeasible,
    relative_violation,
    scaled_scores,
)
from ._problem import HARD, Problem, Rule, Schedule, Solution

__all__ = ["GLOBAL_SHIFT_SPAN", "UNSHIFTED_BOUND", "solve"]

#: Anderson acceleration (``acceleration="anderson"``) starts at the first check where the error
#: fell by less than this factor since the previous one: problems that converge fast never pay for it.
SLOW = 0.1

#: Largest range of scores / epsilon (+ log prior), max - min, that a single global shift handles:
#: every kernel entry then stays a normal number with room to spare for the scalings.
GLOBAL_SHIFT_SPAN = {torch.float32: 60.0, torch.float64: 600.0}
#: Scores / epsilon inside [-bound, bound] need no shift at all (cosine scores at epsilon 0.05
#: lie in [-20, 20]): the kernel's entries and sums stay far inside the safe range.
UNSHIFTED_BOUND = {torch.float32: 30.0, torch.float64: 300.0}


def _global_shift(problem: Problem) -> float | None:
    """The shift of ``scores / epsilon`` that one global shift needs, when it keeps the kernel
    safely in range, else None (per-row and per-column shifts are then taken).

    Only known when the range of the scores (and of the prior) was read for free on the host.
    """
    score_range = problem.score_range
    if score_range is None or problem.layout.reducer.distributed:
        return None
    epsilon = problem.epsilon
    low, high = score_range[0] / epsilon, score_range[1] / epsilon
    span = high - low
    shift = -high
    if problem.prior is not None:
        if problem.prior_range is None:
            return None
        prior_low, prior_high = problem.prior_range
        if problem.log_prior:
            if not math.isfinite(prior_low):
                return None
            span += prior_high - prior_low
            shift -= prior_high
        else:
            if prior_low <= 0:  # a prior with zeros always takes the per-row/column shifts
                return None
            span += math.log(prior_high / prior_low)
    if span > GLOBAL_SHIFT_SPAN[problem.dtype]:
        return None
    if problem.prior is None and -UNSHIFTED_BOUND[problem.dtype] <= low and high <= UNSHIFTED_BOUND[problem.dtype]:
        return 0.0
    return shift


class Corrections:
    """How a scaling path holds the sides beyond the hard constraint: the rules (KL-penalised or
    bounded sides, partial transport's total), the penalised steps' offsets, and Dykstra's
    corrections (factors, None where neutral). Absent for the balanced problem."""

    def __init__(
        self,
        problem: Problem,
        f_start: torch.Tensor | float,
        g_start: torch.Tensor | float,
        f_shift: torch.Tensor | float,
        g_shift: torch.Tensor | float,
        column_only: bool,
    ):
        layout = problem.layout
        self.row_rule = _rule_in(problem.row_rule, layout.rows)
        self.col_rule = _rule_in(problem.col_rule, layout.cols)
        self.total = problem.total_mass
        # Dykstra's iterate must start at the plain kernel exp(L), so the offsets that the warm start
        # and the column shift put into the iterate (rows f_start; columns g_start + g_shift with
        # b = 1: the start undoes the row shift) start in a bounded side's correction.
        col_offset = g_start if column_only else g_start + _cols_tensor(problem, g_shift)  # b: see ScalingPath
        #: the corrections as logs until the first step (exact even where their exp overflows)
        self.log_start: tuple[torch.Tensor | None, ...] | None = _start_corrections(
            self.row_rule, self.col_rule, f_start, col_offset
        )
        self.rows, self.cols = (None if lq is None else torch.exp(lq) for lq in self.log_start[:2])
        self.total_correction: torch.Tensor | None = None
        # A penalised step is not invariant to the kernel's shifts (its exponent is < 1): in the
        # shifted variables it gains the factor exp((exponent - 1) * shift).
        self.row_offset = _penalty_offset(self.row_rule, f_start + f_shift)
        self.col_offset = _penalty_offset(self.col_rule, g_start + g_shift)

    def factors(self) -> tuple[torch.Tensor | None, ...]:
        """(rows, columns, total): Dykstra's corrections as factors."""
        return self.rows, self.cols, self.total_correction

    def logs(self) -> tuple[torch.Tensor | None, ...]:
        if self.log_start is not None:
            return self.log_start
        return tuple(None if q is None else torch.log(q) for q in self.factors())


class ScalingPath:
    """plan = a * G * b, G = exp(L + f_init + g_init + f0 + g0) with L = scores / epsilon + log prior.

    ``f_init``, ``g_init`` are a warm start's potentials (zero for a cold start), ``f0``, ``g0`` the
    shifts that keep the kernel in range. Every sum a step computes (and every correction) is
    recorded in ``extrema``; :meth:`check` reads whether they all stayed in the safe range.
    ``accurate``: column sums accumulated accurately (tolerance mode).
    """

    log_domain = False

    def __init__(self, problem: Problem, accurate: bool = False):
        self.problem = problem
        layout = self.layout = problem.layout
        shift = _global_shift(problem) if problem.init is None else None
        self.f_init: torch.Tensor | float = 0.0
        self.g_init: torch.Tensor | float = 0.0
        if shift is not None:
            # Well-scaled scores: one global shift keeps every entry in range, and the per-row and
            # per-column maxima (slow small-axis reductions on the CPU) are not needed; a prior
            # multiplies the kernel instead of adding its logarithm (one pass fewer).
            kernel = scaled_scores(problem)
            if shift != 0.0:
                kernel.add_(shift)
            if problem.prior is not None and problem.log_prior:
                kernel.add_(problem.prior.to(problem.dtype))
            kernel.exp_()
            if problem.prior is not None and not problem.log_prior:
                kernel.mul_(problem.prior)
            kernel = layout.view(kernel)
            # row shift 0 and column shift `shift`: scalars broadcast wherever the shifts are used
            self.f0: torch.Tensor | float = 0.0
            self.g0: torch.Tensor | float = shift
            self.a: torch.Tensor | None = None  # all ones until the first row step
        else:
            kernel = layout.view(log_kernel(problem))
            if problem.init is not None:  # a warm start: iterate on the kernel its potentials scale
                f_init, g_init = problem.init
                self.g_init = layout.cols(g_init)
                kernel.add_(layout.spread(self.g_init))
                if f_init is not None:
                    self.f_init = layout.rows(f_init)
                    kernel.add_(layout.on_kernel(self.f_init))
            # Shift columns, then rows, so that every row and every column has maximum exactly 1.
            g0 = -layout.col_max(kernel)
            kernel.add_(layout.spread(g0))
            f0 = -layout.row_max(kernel)  # >= 0
            kernel.add_(layout.on_kernel(f0)).exp_()
            self.f0, self.g0 = f0, g0
            # The first column step must see the unshifted rows (as the SwAV loop does): undo the
            # row shift in the starting row scaling. exp(-f0) lies in (0, 1], so nothing overflows,
            # and every column sum is at least 1 (the row holding a column's maximum has f0 = 0).
            self.a = torch.exp(-f0)
        self.kernel = kernel
        self.accurate = accurate
        if accurate and self.a is None:  # tolerance mode: accurate column sums from the start
            self.a = self._ones_rows()
        self.b: torch.Tensor | None = None  # all ones until the first column step
        self.row_mass = None if problem.row_mass is None else layout.rows(problem.row_mass)
        self.col_mass = layout.cols(problem.col_mass)
        self.balanced = problem.balanced
        self.extrema = Extrema()
        column_only = problem.init is not None and problem.init[0] is None  # a warm start's g alone
        self.corrections = (
            None if self.balanced else Corrections(problem, self.f_init, self.g_init, self.f0, self.g0, column_only)
        )
        if column_only:
            # only a column potential: the rows follow from it by a first row step, which must see
            # the columns unshifted (the kernel holds g_init + g0; b = exp(-g0) takes g0 back out)
            self.b = torch.exp(-_cols_tensor(problem, self.g0))
            row_sums = self.layout.row_sums(self.kernel, self.b)
            # exp(-g0) may leave the range however well the plan stays in it (potentials of
            # hundreds): an overflow, or a zero that Dykstra's multiplicative steps would keep for
            # good, sends the call to the log domain's start
            self.extrema.include(row_sums)
            if not self.balanced:
                self.extrema.include(self.b)
            self.row_step(row_sums)
        self._record_corrections()

    def _record_corrections(self) -> None:
        """Dykstra's corrections are read by the next steps as factors: one that overflowed, or
        underflowed to a zero that the multiplicative steps would keep for good, is as unhealthy
        as a sum out of range (the log domain holds them exactly)."""
        if self.corrections is not None:
            for correction in self.corrections.factors():
                if correction is not None:
                    self.extrema.include(correction)

    def _ones_rows(self) -> torch.Tensor:
        kernel = self.kernel
        return torch.ones(self.layout.row_shape(kernel), dtype=kernel.dtype, device=kernel.device)

    def _ones_cols(self) -> torch.Tensor:
        return torch.ones_like(self.col_mass)

    def statistic(self) -> torch.Tensor:
        """What a step needs: the column sums of diag(a) G per problem (over all ranks)."""
        return self.layout.col_sums(self.kernel, self.a, self.accurate)

    def step(self, col_sums: torch.Tensor, frozen: Frozen | None = None, accelerator: Anderson | None = None) -> None:
        """Scale columns using ``col_sums``, then rows (then the total mass, in partial transport);
        ``frozen`` problems keep their scalings; an ``accelerator`` replaces the column step's
        scalings by its proposal."""
        corrections = self.corrections
        if corrections is None and accelerator is None:  # the classical step, kept lean (SwAV's sizes)
            b = torch.div(self.col_mass, col_sums)
            self.b = b if frozen is None else torch.where(frozen.cols, self.b, b)
            row_sums = self.layout.row_sums(self.kernel, self.b)
            a = self.layout.row_scaling(row_sums, self.row_mass)
            self.a = a if frozen is None else torch.where(frozen.rows, self.a, a)
            self.extrema.add(col_sums, row_sums)
            return
        if corrections is None:
            b, _ = _scaling_step(HARD, self.col_mass, col_sums, self.b, None, None)
        else:
            b, q_cols = _scaling_step(
                corrections.col_rule, self.col_mass, col_sums, self.b, corrections.cols, corrections.col_offset
            )
        if accelerator is not None:
            old = torch.ones_like(b) if self.b is None else self.b
            log_ratio = torch.where(self.col_mass > 0, torch.log(b / old), -math.inf)
            b = torch.exp(accelerator.propose(torch.log(old), log_ratio))
        self.b = b if frozen is None else torch.where(frozen.cols, self.b, b)
        if corrections is not None:
            corrections.cols = q_cols
            corrections.log_start = None
        row_sums = self.layout.row_sums(self.kernel, self.b)
        self.row_step(row_sums, frozen)
        self.extrema.add(col_sums, row_sums)
        self._record_corrections()

    def row_step(self, row_sums: torch.Tensor, frozen: Frozen | None = None) -> None:
        """Scale rows using the row sums of G diag(b) (after fixing the total mass, if it is fixed:
        the rows' caps come last, so that no label exceeds its row's mass after any iteration)."""
        mass = 1.0 if self.row_mass is None else self.row_mass
        corrections = self.corrections
        if corrections is None:
            a = self.layout.row_scaling(row_sums, self.row_mass)
        else:
            old = self.a
            if corrections.total is not None:  # partial transport: the plan's total
                old = self._ones_rows() if old is None else old
                if corrections.total_correction is not None:
                    old = old * self.layout.problem_of_rows(corrections.total_correction)
                scale = corrections.total / self.layout.row_total(old * row_sums)
                old = old * self.layout.problem_of_rows(scale)
                corrections.total_correction = torch.reciprocal(scale)
            a, corrections.rows = _scaling_step(
                corrections.row_rule, mass, row_sums, old, corrections.rows, corrections.row_offset
            )
            corrections.log_start = None
        self.a = a if frozen is None else torch.where(frozen.rows, self.a, a)

    def check(self, status: StatusReader, *values: torch.Tensor) -> tuple[bool, list[float]]:
        """Whether every recorded sum and correction stayed in the safe range since the last
        check, and ``values``, in one read-back; the record starts afresh."""
        healthy, numbers = status.read_health(self.extrema, self.problem.dtype, *values)
        self.extrema = Extrema()
        return healthy, numbers

    @property
    def exact(self) -> bool:
        """Whether :meth:`measure`'s column violation is that of the plan returned (float64)."""
        return self.problem.dtype == torch.float64

    def measure(self, col_sums: torch.Tensor, before: tuple[torch.Tensor | None, ...] | None) -> torch.Tensor:
        """Per problem, what tolerance mode compares with ``tol``: the column violation of the plan
        a G b (from the column sums of diag(a) G), or stationarity since ``before``."""
        if self.balanced:
            return relative_violation(self.b * col_sums, self.col_mass).reshape(-1)
        return self.change(before)

    def exact_violation(self) -> torch.Tensor:
        """Per-problem column violation of the current plan, accumulated in float64."""
        col_sums = self.layout.exact_col_sums(self.kernel, self.a) * self.b
        return relative_violation(col_sums, self.col_mass).reshape(-1)

    def snapshot(self) -> tuple[torch.Tensor | None, ...]:
        # with check_every=1 the first snapshot comes before the first column step
        total = None if self.corrections is None else self.corrections.total_correction
        return self.a, self._ones_cols() if self.b is None else self.b, total

    def change(self, before: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """Per-problem stationarity: the largest relative change of a scaling, or of Dykstra's
        correction of the total, since ``before`` (the scalings alone may stand still while the
        corrections move: rows held at their caps undo a moving total every iteration)."""
        change = _largest_change(self.layout, self.a, before[0], self.b, before[1], logs=False)
        total = None if self.corrections is None else self.corrections.total_correction
        return _total_change(self.layout, change, total, before[2], self.a, logs=False)

    def save(self) -> tuple[torch.Tensor | None, ...]:
        """The state to come back to: (a, b, Dykstra's corrections as logs)."""
        logs = (None, None, None) if self.corrections is None else self.corrections.logs()
        return self.a, self.b, logs

    def restore(self, saved: tuple[torch.Tensor | None, ...]) -> None:
        """Back to the scalings of a :meth:`save` (acceleration alone moves them: no corrections)."""
        self.a, self.b, _ = saved
        self.extrema = Extrema()

    def to_log_domain(self, saved: tuple[torch.Tensor | None, ...], iteration: int) -> LogPath:
        """The log-domain path from the state of a :meth:`save` made at ``iteration``."""
        a, b, corrections = saved
        problem = self.problem
        if iteration == 0 and (problem.row_rule.bounded or problem.col_rule.bounded):
            # Dykstra's iterate and corrections must agree: from the log domain's own start, less a
            # column-only warm start's first row step (it may be what overflowed: potentials far from
            # the answer, whose rows the corrections would carry at that magnitude from then on)
            return _log_start(problem, self.kernel, rows_from_columns=False)
        # at the start a = exp(-f0) exactly, which float32 may round to 0 (f0 > 88): take f from its parts
        f = self.f_init + (torch.zeros_like(a) if iteration == 0 else self.f0 + torch.log(a))
        g = self.g_init + _cols_tensor(problem, self.g0) + (0.0 if b is None else torch.log(b))
        return LogPath(problem, f, g, corrections)

    def poison(self, ok: torch.Tensor) -> None:
        """Make the plan (and potentials) NaN unless the 0-d bool ``ok`` holds, without a sync."""
        self.b = torch.where(ok, self.b, math.nan)

    def healthy_on_device(self) -> torch.Tensor:
        """:meth:`check` on the device: a 0-d bool, never read back."""
        return healthy_tensor(*self.extrema.bounds(), self.problem.dtype)

    def log_scalings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, g) in the layout's row and column shapes: plan = exp(f + L + g)."""
        a = self._ones_rows() if self.a is None else self.a
        return self.f_init + self.f0 + torch.log(a), self.g_init + self.g0 + torch.log(self.b)

    def potentials(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.problem.return_potentials:
            return None, None
        f, g = self.log_scalings()
        return self.layout.row_output(f), self.layout.col_output(g)

    def plan(self) -> torch.Tensor:
        """The plan, in place of the kernel; entries never exceed their row's mass (rounding)."""
        return self.layout.scaling_plan(self.kernel, self.a, self.b, self.row_mass, self.problem.row_rule)


def _rule_in(rule: Rule, shape: Callable[[torch.Tensor], torch.Tensor]) -> Rule:
    """``rule`` with its bounds in the layout's vector shape."""
    if not rule.bounded:
        return rule
    return Rule(
        rule.exponent,
        None if rule.lower is None else shape(rule.lower),
        None if rule.upper is None else shape(rule.upper),
    )


def _start_corrections(
    row_rule: Rule, col_rule: Rule, row_offset: torch.Tensor | float, col_offset: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
    """Dykstra's log-corrections at the start of an iterate offset from exp(L) by ``row_offset``
    and ``col_offset`` (in the layout's row and column shapes): minus the offsets on the bounded
    sides; a hard or penalised side needs none (its step does not read its old scaling)."""
    rows = None
    if row_rule.bounded and isinstance(row_offset, torch.Tensor):
        rows = -row_offset
    cols = -col_offset if col_rule.bounded else None
    return rows, cols, None


def _penalty_offset(rule: Rule, shift: torch.Tensor | float) -> torch.Tensor | float | None:
    """(exponent - 1) * shift for a penalised side, else None (see :func:`_scaling_step`)."""
    return None if rule.exponent == 1.0 else (rule.exponent - 1.0) * shift


def _scaling_step(
    rule: Rule,
    mass: torch.Tensor | float,
    sums: torch.Tensor,
    old: torch.Tensor | None,
    correction: torch.Tensor | None,
    offset: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The new scaling of one side from ``sums`` (the other side's scaled kernel summed), and
    Dykstra's correction for a bounded side.

    Hard: mass / sums. KL-penalised: (mass / sums) ** exponent in the unshifted variables, that is
    exp(exponent * log(mass / sums) + ``offset``) with offset = (exponent - 1) * (the side's shift)
    in the kernel's shifted ones. Bounded: the plan's sums
    (``old * correction * sums``) are clipped into [lower, upper], and the correction remembers
    the factor (Dykstra's algorithm: Bregman projections onto convex, non-affine sets need it).
    """
    if rule.bounded:
        trial = torch.ones_like(sums) if old is None else old
        if correction is not None:
            trial = trial * correction
        plan_sums = trial * sums
        target = plan_sums
        if rule.lower is not None:
            target = torch.maximum(target, rule.lower)
        if rule.upper is not None:
            target = torch.minimum(target, rule.upper)
        factor = torch.where(plan_sums > 0, target / plan_sums, 1.0)
        # a side held at 0 stays at 0, with a neutral correction
        return trial * factor, torch.where(factor > 0, torch.reciprocal(factor), 1.0)
    new = mass / sums
    if rule.exponent != 1.0:
        new = torch.exp(rule.exponent * torch.log(new) + offset)
    return new, None


def _largest_change(
    layout: Layout,
    rows: torch.Tensor,
    rows_before: torch.Tensor,
    cols: torch.Tensor,
    cols_before: torch.Tensor,
    logs: bool,
) -> torch.Tensor:
    """Per problem, the largest relative change of a row or column scaling (``logs``: the scalings
    are log-potentials, and the change is their difference, a relative change to first order)."""

    col_change = _relative_change(cols, cols_before, logs).amax(-1).reshape(-1)
    row_change = layout.row_extreme(_relative_change(rows, rows_before, logs))
    return torch.maximum(col_change, row_change)


def _relative_change(now: torch.Tensor, before: torch.Tensor, logs: bool) -> torch.Tensor:
    if logs:
        moved = (now - before).abs()
        return torch.where(torch.isfinite(now) & torch.isfinite(before), moved, 0.0)
    return torch.where(before > 0, (now / before - 1).abs(), 0.0)


def _total_change(
    layout: Layout,
    change: torch.Tensor,
    total: torch.Tensor | None,
    total_before: torch.Tensor | None,
    rows: torch.Tensor,
    logs: bool,
) -> torch.Tensor:
    """``change`` raised to the relative change of Dykstra's correction of the total (partial
    transport; None: neutral) since ``total_before``.

    Every other correction follows from the scalings (a side's scaling times its correction is
    invariant under its steps), but the rows' caps and the total share the rows: their
    corrections can trade against each other while the row scalings stand still. In the log
    domain (``logs``; ``rows``: the row potentials) a change within the rounding of the
    potentials involved (float32: 1.5e-5 at 150) is no change: it cannot be resolved.
    """
    if total is None and total_before is None:
        return change
    if total is None or total_before is None:
        neutral = torch.zeros_like if logs else torch.ones_like
        total, total_before = (neutral(total_before), total_before) if total is None else (total, neutral(total))
    moved = _relative_change(total, total_before, logs).reshape(-1)
    if logs:
        magnitude = torch.maximum(total.abs(), total_before.abs()).reshape(-1)
        finite_rows = torch.where(torch.isfinite(rows), rows.abs(), 0.0)
        magnitude = torch.maximum(magnitude, layout.row_extreme(finite_rows).to(magnitude.dtype))
        moved = torch.where(moved > 8 * torch.finfo(moved.dtype).eps * magnitude, moved, 0.0)
    return torch.maximum(change, moved.to(change.dtype))


class LogCorrections:
    """:class:`Corrections` in the log domain: the rules with their bounds as logs, the log of the
    total, and Dykstra's corrections as logs (None where neutral)."""

    def __init__(self, problem: Problem, live_rows: torch.Tensor, logs: tuple[torch.Tensor | None, ...]):
        layout = problem.layout
        self.row_rule = _log_rule(_rule_in(problem.row_rule, layout.rows))
        self.col_rule = _log_rule(_rule_in(problem.col_rule, layout.cols))
        self.live_rows = live_rows
        self.log_total = None if problem.total_mass is None else torch.log(problem.total_mass)
        self.rows, self.cols, self.total = logs


class LogPath:
    """plan = exp(L + f + g), iterated with log-sum-exp."""

    log_domain = True
    exact = True  # its column violation is measured on the plan it returns

    def __init__(
        self,
        problem: Problem,
        f: torch.Tensor,
        g: torch.Tensor,
        corrections: tuple[torch.Tensor | None, ...] = (None, None, None),
    ):
        self.problem = problem
        layout = self.layout = problem.layout
        self.kernel = layout.view(log_kernel(problem))
        self.f, self.g = f, g  # the layout's row and column shapes
        self.row_mass = None if problem.row_mass is None else layout.rows(problem.row_mass)
        self.log_row_mass: torch.Tensor | float = 0.0 if self.row_mass is None else torch.log(self.row_mass)
        col_mass = layout.cols(problem.col_mass)
        self.log_col_mass = torch.log(col_mass)
        self.live_cols = col_mass > 0
        self.balanced = problem.balanced
        self.corrections = None
        if not self.balanced:
            live_rows = torch.ones_like(f, dtype=torch.bool) if self.row_mass is None else self.row_mass > 0
            self.corrections = LogCorrections(problem, live_rows, corrections)
        self._plan: torch.Tensor | None = None  # the plan a check measured, until the next step

    def statistic(self) -> torch.Tensor:
        """What a step needs: the log of the column sums of exp(L + f) per problem (over all ranks)."""
        return self.layout.col_lse(self.kernel + self.layout.on_kernel(self.f))

    def step(self, col_lse: torch.Tensor, frozen: Frozen | None = None, accelerator: Anderson | None = None) -> None:
        layout = self.layout
        self._plan = None
        corrections = self.corrections
        if corrections is None and accelerator is None:
            g = torch.where(self.live_cols, self.log_col_mass - col_lse, -math.inf)
            self.g = g if frozen is None else torch.where(frozen.cols, self.g, g)
            f = self.log_row_mass - layout.row_lse(self.kernel + layout.spread(self.g))
            self.f = f if frozen is None else torch.where(frozen.rows, self.f, f)
            return
        if corrections is None:
            g, _ = _log_step(HARD, self.log_col_mass, col_lse, self.g, None, self.live_cols)
        else:
            g, lq_cols = _log_step(
                corrections.col_rule, self.log_col_mass, col_lse, self.g, corrections.cols, self.live_cols
            )
        if accelerator is not None:
            g = accelerator.propose(self.g, torch.where(self.live_cols, g - self.g, -math.inf))
        self.g = g if frozen is None else torch.where(frozen.cols, self.g, g)
        if corrections is not None:
            corrections.cols = lq_cols
        self.row_step(frozen)

    def row_step(self, frozen: Frozen | None = None) -> None:
        """The row step from the current column potentials (after the total mass, if it is fixed:
        see :meth:`ScalingPath.row_step`)."""
        layout = self.layout
        row_lse = layout.row_lse(self.kernel + layout.spread(self.g))
        corrections = self.corrections
        if corrections is None:
            f, _ = _log_step(HARD, self.log_row_mass, row_lse, self.f, None, torch.ones_like(row_lse, dtype=torch.bool))
        else:
            old = self.f
            if corrections.log_total is not None:  # partial transport: the plan's total
                if corrections.total is not None:
                    old = old + layout.problem_of_rows(corrections.total)
                shift = corrections.log_total - layout.row_total_lse(old + row_lse)
                old = old + layout.problem_of_rows(shift)
                corrections.total = -shift
            f, corrections.rows = _log_step(
                corrections.row_rule, self.log_row_mass, row_lse, old, corrections.rows, corrections.live_rows
            )
        self.f = f if frozen is None else torch.where(frozen.rows, self.f, f)

    def infeasible(self) -> torch.Tensor:
        """1.0 where a row or column of positive mass got an infinite potential (no mass can reach it)."""
        # only a side that must carry its mass (or a lower bound) is infeasible without any; a
        # penalised side or partial transport may leave rows or columns empty
        problem = self.problem
        partial = problem.total_mass is not None
        live_rows = torch.ones_like(self.f, dtype=torch.bool) if self.row_mass is None else self.row_mass > 0
        bad_rows = (live_rows & ~torch.isfinite(self.f)).any()
        if partial or not problem.row_rule.hard:
            bad_rows = torch.zeros_like(bad_rows)
        live_cols = self.live_cols
        if partial or problem.col_rule.exponent != 1.0:
            live_cols = torch.zeros_like(live_cols)
        elif problem.col_rule.bounded:
            lower = problem.col_rule.lower
            live_cols = torch.zeros_like(live_cols) if lower is None else self.layout.cols(lower) > 0
        bad_cols = (live_cols & ~torch.isfinite(self.g)).any()
        return (bad_rows | bad_cols).reshape(1).to(torch.float32)

    def check(self, status: StatusReader, *values: torch.Tensor) -> tuple[bool, list[float]]:
        """``values`` read back with whether no mass can reach a row or column that needs some,
        which raises :class:`~otlabel.InfeasibleProblemError`; the log domain is always healthy."""
        infeasible, *numbers = status.read(self.infeasible(), *values)
        if infeasible:
            raise_infeasible(self.problem.prior is not None)
        return True, numbers

    def measure(self, col_lse: torch.Tensor, before: tuple[torch.Tensor | None, ...] | None) -> torch.Tensor:
        """:meth:`ScalingPath.measure`, the column violation measured on the plan that would be
        returned: with potentials in the thousands, float32 rounding of the exponents is itself
        ~1e-5, so only the returned plan's sums count."""
        if not self.balanced:
            return self.change(before)
        self._plan = plan = self.plan()
        col_sums = self.layout.col_sums(plan, None, accurate=False)
        return relative_violation(col_sums, self.layout.cols(self.problem.col_mass)).reshape(-1)

    def plan(self) -> torch.Tensor:
        """The current plan. With rows held at their mass, rows as a softmax: each row sums to its
        mass to rounding, however large the potentials (exp(L + f + g) would carry their rounding
        into the row sums)."""
        if self._plan is not None:
            return self._plan
        problem = self.problem
        softmax_rows = problem.row_rule.hard and problem.total_mass is None
        return self.layout.log_plan(self.kernel, self.f, self.g, self.row_mass, problem.row_rule, softmax_rows)

    def snapshot(self) -> tuple[torch.Tensor | None, ...]:
        return self.f, self.g, None if self.corrections is None else self.corrections.total

    def change(self, before: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """:meth:`ScalingPath.change` on log-potentials and the log-correction of the total."""
        change = _largest_change(self.layout, self.f, before[0], self.g, before[1], logs=True)
        total = None if self.corrections is None else self.corrections.total
        return _total_change(self.layout, change, total, before[2], self.f, logs=True)

    def save(self) -> None:
        """Nothing to come back to: the log domain never leaves its range."""

    def potentials(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.problem.return_potentials:
            return None, None
        return self.layout.row_output(self.f), self.layout.col_output(self.g)


def _log_rule(rule: Rule) -> Rule:
    """``rule`` with its bounds as logarithms (the log-domain path compares log sums)."""
    if not rule.bounded:
        return rule
    return Rule(
        rule.exponent,
        None if rule.lower is None else torch.log(rule.lower),
        None if rule.upper is None else torch.log(rule.upper),
    )


def _log_step(
    rule: Rule,
    log_mass: torch.Tensor | float,
    lse: torch.Tensor,
    old: torch.Tensor,
    correction: torch.Tensor | None,
    live: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_scaling_step` on log-potentials (``lse``: log of the sums; bounds as logs)."""
    if rule.bounded:
        trial = old if correction is None else old + correction
        plan_sums = trial + lse
        target = plan_sums
        if rule.lower is not None:
            target = torch.maximum(target, rule.lower)
        if rule.upper is not None:
            target = torch.minimum(target, rule.upper)
        step = torch.where(torch.isfinite(plan_sums), target - plan_sums, 0.0)
        new = torch.where(torch.isfinite(target), trial + step, -math.inf)
        return new, torch.where(torch.isfinite(step), -step, 0.0)
    new = torch.where(live, rule.exponent * (log_mass - lse), -math.inf)
    if rule.exponent != 1.0:  # a penalised side may stay empty: where nothing reaches, any potential does
        new = torch.where(torch.isposinf(new), 0.0, new)
    return new, None


class Frozen:
    """Which problems have stopped (tolerance mode, independent problems), on their columns and rows."""

    def __init__(self, stopped: torch.Tensor, problem: Problem):
        layout = problem.layout
        self.cols = layout.cols(stopped.unsqueeze(-1))  # (B, 1, 1) or (G, 1)
        self.rows = layout.problem_of_rows(stopped)


class _Stopping:
    """What both stopping states share: the tolerance-mode solution they end with."""

    def per_problem(self) -> dict[str, torch.Tensor]:
        """Each independent problem's stop, for the solution (none for a batch that stops whole)."""
        return {}

    def solution(
        self,
        plan: torch.Tensor,
        potentials: tuple[torch.Tensor | None, torch.Tensor | None],
        iteration: int,
        remaining: float,
        worst: float,
        log_domain: bool,
    ) -> Solution:
        return Solution(
            plan,
            *potentials,
            n_iter=iteration,
            converged=remaining == 0,
            log_domain=log_domain,
            backend="torch",
            unconverged=int(remaining),
            worst_error=worst,
            **self.per_problem(),
        )


class Progress(_Stopping):
    """Per-problem stopping state of the tolerance mode, for independent problems (a ragged call):
    each stops at the first check where it meets ``tol``, as it would if solved alone.

    ``update`` gives what to read back and the candidate next state; ``outcome`` turns the numbers
    read into (problems still iterating, the worst error among them, problems stopped now).
    """

    def __init__(self, problem: Problem, schedule: Schedule):
        n_problems = problem.layout.n_problems
        device = problem.scores.device
        self.problem, self.tol = problem, schedule.tol
        self.active = torch.ones(n_problems, dtype=torch.bool, device=device)
        self.stopped_at = torch.full((n_problems,), schedule.max_iter, dtype=torch.int64, device=device)
        self.error = torch.zeros(n_problems, dtype=problem.dtype, device=device)
        self.frozen: Frozen | None = None

    def update(self, violation: torch.Tensor, iteration: int) -> tuple[torch.Tensor, Progress]:
        met = (violation <= self.tol) & self.active
        new = Progress.__new__(Progress)
        new.problem, new.tol = self.problem, self.tol
        new.error = torch.where(self.active, violation.to(self.error.dtype), self.error)
        new.stopped_at = torch.where(met, iteration, self.stopped_at)
        new.active = self.active & ~met
        new.frozen = Frozen(~new.active, self.problem)
        worst = torch.where(new.active, new.error, torch.zeros_like(new.error)).amax()
        summary = torch.stack((new.active.sum().to(worst.dtype), worst, met.sum().to(worst.dtype)))
        return summary, new

    def outcome(self, numbers: list[float]) -> tuple[float, float, float]:
        remaining, worst, stopped = numbers
        return remaining, worst, stopped

    def per_problem(self) -> dict[str, torch.Tensor]:
        return {"problem_n_iter": self.stopped_at, "problem_converged": ~self.active}


class Together(_Stopping):
    """The stopping state of a dense batch, whose problems iterate and stop together: only the
    worst violation is read back (one number)."""

    frozen = None  # a batch stops as a whole, so it never freezes part of itself

    def __init__(self, problem: Problem, schedule: Schedule):
        self.tol, self.n_problems = schedule.tol, problem.layout.n_problems

    def update(self, violation: torch.Tensor, iteration: int) -> tuple[torch.Tensor, Together]:
        return violation.amax().reshape(1), self

    def outcome(self, numbers: list[float]) -> tuple[float, float, float]:
        (worst,) = numbers
        met = worst <= self.tol
        return (0 if met else self.n_problems), worst, (self.n_problems if met else 0)


def _status(problem: Problem) -> StatusReader:
    return StatusReader(problem.checks, problem.scores.device, problem.reducer)


def _cols_tensor(problem: Problem, value: torch.Tensor | float) -> torch.Tensor:
    """A column-shaped tensor holding ``value`` (a column shift may be a Python number)."""
    if isinstance(value, torch.Tensor):
        return value
    shape = problem.layout.cols(problem.col_mass).shape
    return torch.full(shape, value, dtype=problem.dtype, device=problem.scores.device)


def _log_start(problem: Problem, kernel: torch.Tensor, rows_from_columns: bool = True) -> LogPath:
    """The log-domain path at the start of the schedule: a warm start's potentials, or the
    unshifted start of the SwAV loop (the first column step sets g). A column potential alone
    gives the rows by a first row step (unless not ``rows_from_columns``: then f = 0, and with
    Dykstra's corrections the first column step starts as a cold start would)."""
    layout = problem.layout
    f = torch.zeros(layout.row_shape(kernel), dtype=kernel.dtype, device=kernel.device)
    g = _cols_tensor(problem, 0.0)
    if problem.init is None:
        return LogPath(problem, f, g)
    f_init, g_init = problem.init
    f = f if f_init is None else layout.rows(f_init)
    g = layout.cols(g_init)
    corrections = (None, None, None)
    if not problem.balanced:  # Dykstra's iterate starts at exp(L): see ScalingPath
        row_offset = f if f_init is not None else 0.0
        corrections = _start_corrections(problem.row_rule, problem.col_rule, row_offset, g)
    log_state = LogPath(problem, f, g, corrections)
    if f_init is None and rows_from_columns:  # only a column potential: the rows follow from it
        log_state.row_step()
    return log_state


Path = ScalingPath | LogPath


def _iterate(path: Path, n_iter: int) -> None:
    for _ in range(n_iter):
        path.step(path.statistic())


def fixed(problem: Problem, schedule: Schedule) -> Solution:
    """The fixed-iteration mode: ``schedule.n_iter`` iterations, rows last; replayed from the same
    start in the log domain when a sum of the scaling path left the safe range."""
    path: Path = ScalingPath(problem)
    _iterate(path, schedule.n_iter)
    if problem.device_checks:  # no read-back: failures poison the labels instead
        ok = path.healthy_on_device()
        if problem.checks.flags:
            ok = ok & problem.checks.all_passed()
        path.poison(ok)
    else:
        status = _status(problem)
        if not path.check(status)[0]:
            path = _log_start(problem, path.kernel)  # the same schedule from the same start
            _iterate(path, schedule.n_iter)
            path.check(status)  # raises where no mass can reach a row or column that needs some
    return Solution(
        path.plan(),
        *path.potentials(),
        n_iter=schedule.n_iter,
        converged=None,
        log_domain=path.log_domain,
        backend="torch",
    )


class _Acceleration:
    """When Anderson acceleration runs: from the first check where the error fell less than
    1/SLOW-fold since the previous one (plain iterations that converge fast never pay for it), for
    as long as it makes progress. ``STALLS`` checks in a row without a new smallest error, or
    extrapolated steps that leave the scaling path's safe range, hand over to the plain steps
    for the rest of the call: it never ends worse off than plain iterations by more than those
    few checks' worth of steps."""

    STALLS = 10

    def __init__(self, wanted: bool, shift_invariant: bool):
        self.shift_invariant = shift_invariant
        self.accelerator: Anderson | None = None
        self.given_up = not wanted
        self.previous = self.best = math.inf
        self.stalls = 0

    @property
    def active(self) -> bool:
        return self.accelerator is not None

    def checked(self, worst: float) -> None:
        """Take note of a check's error (read back already: no extra synchronisation)."""
        if self.accelerator is None:
            if not self.given_up and worst > SLOW * self.previous:
                self.accelerator = Anderson(self.shift_invariant)
                self.best = worst
        elif worst < self.best:
            self.best, self.stalls = worst, 0
        else:
            self.stalls += 1
            if self.stalls >= self.STALLS:
                self.give_up()
        self.previous = worst

    def give_up(self) -> None:
        self.accelerator = None
        self.given_up = True


def tolerance(problem: Problem, schedule: Schedule) -> Solution:
    """The tolerance mode: until every problem meets ``schedule.tol``.

    The balanced problem stops on the column-marginal violation; the others (KL-penalised,
    bounded or partial) on stationarity: the largest relative change of a scaling over the last
    iteration (POT's criterion for its unbalanced solver), and with partial transport of
    Dykstra's correction of the total (the scalings alone may stand still away from the answer).
    The scaling path hands over to the log domain, from its last healthy check, when a sum left
    the safe range.
    """
    status = _status(problem)
    path: Path = ScalingPath(problem, accurate=True)
    max_iter, every = schedule.max_iter, schedule.check_every
    progress: Progress | Together = (Progress if problem.layout.independent else Together)(problem, schedule)
    acceleration = _Acceleration(schedule.accelerate, problem.balanced)
    iteration = checked = 0
    saved = (path.save(), progress, 0)  # the last state known to be healthy
    before = None
    while True:
        statistic = path.statistic()
        if iteration > checked and (iteration % every == 0 or iteration == max_iter):
            checked = iteration
            summary, candidate = progress.update(path.measure(statistic, before), iteration)
            is_healthy, numbers = path.check(status, summary)
            if not is_healthy:
                if acceleration.active:
                    # Extrapolated steps left the safe range, not the problem: back to the last
                    # healthy state, and on with the plain steps (the log domain is far slower).
                    acceleration.give_up()
                else:
                    path = path.to_log_domain(saved[0], saved[2])
                    acceleration = _Acceleration(schedule.accelerate and not acceleration.given_up, problem.balanced)
                    before = None
                state, progress, iteration = saved
                if not path.log_domain:
                    path.restore(state)
                checked = iteration  # that check was made: the next one comes after a step
                continue
            remaining, worst, stopped = candidate.outcome(numbers)
            if stopped and problem.balanced and not path.exact:
                # The float32 measurement is good to ~1e-7; before calling a float32 problem
                # converged, measure the plan it would return exactly (one pass).
                summary, candidate = progress.update(path.exact_violation(), iteration)
                remaining, worst, _ = candidate.outcome(status.read(summary))
            progress = candidate
            if remaining == 0 or iteration == max_iter:
                plan = path.plan()
                return progress.solution(plan, path.potentials(), iteration, remaining, worst, path.log_domain)
            saved = (path.save(), progress, iteration)
            acceleration.checked(worst)
        if not problem.balanced and ((iteration + 1) % every == 0 or iteration + 1 == max_iter):
            before = path.snapshot()
        path.step(statistic, progress.frozen, acceleration.accelerator)
        iteration += 1


def solve(problem: Problem, schedule: Schedule) -> Solution:
    """Solve ``problem`` with plain PyTorch operations on its device.

    Every tensor of a Problem is detached (the entry points see to it), so nothing here is
    recorded for autograd without a ``no_grad`` context. The plan comes back in the layout's
    shape ((N, K) for a single problem).
    """
    return fixed(problem, schedule) if schedule.fixed else tolerance(problem, schedule)
