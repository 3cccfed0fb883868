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

With ``Problem.device_checks`` the fixed-iteration mode makes no host synchronisation at all:
the shifts are per row and per column (no host-known score range), and a failed input check or an
unhealthy scaling path turns the labels into NaN rather than raising or replaying (a replay would
need to know, on the host, that it is needed).
"""

from __future__ import annotations

import math

import torch

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
from ._problem import Problem, Schedule, Solution

__all__ = ["GLOBAL_SHIFT_SPAN", "UNSHIFTED_BOUND", "solve"]

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
    if problem.score_range is None or problem.reducer.distributed:
        return None
    low, high = (value / problem.epsilon for value in problem.score_range)
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


class ScalingPath:
    """plan = a * G * b, G = exp(L + f0 + g0) with L = scores / epsilon + log prior."""

    def __init__(self, problem: Problem, materialise: bool = False):
        self.problem = problem
        layout = self.layout = problem.layout
        shift = _global_shift(problem)
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
            # Shift columns, then rows, so that every row and every column has maximum exactly 1.
            kernel = layout.view(log_kernel(problem))
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
        if materialise and self.a is None:  # tolerance mode: accurate column sums from the start
            self.a = self._ones_rows()
        self.b: torch.Tensor | None = None  # all ones until the first column step
        self.row_mass = None if problem.row_mass is None else layout.rows(problem.row_mass)
        self.col_mass = layout.cols(problem.col_mass)

    def _ones_rows(self) -> torch.Tensor:
        kernel = self.kernel
        return torch.ones(self.layout.row_shape(kernel), dtype=kernel.dtype, device=kernel.device)

    def col_sums(self, accurate: bool) -> torch.Tensor:
        """Column sums of diag(a) G per problem (over all ranks)."""
        return self.layout.col_sums(self.kernel, self.a, accurate)

    def step(self, col_sums: torch.Tensor, extrema: Extrema, frozen: Frozen | None = None) -> None:
        """Scale columns to their mass using ``col_sums``, then rows to theirs; ``frozen`` problems
        keep their scalings."""
        b = torch.div(self.col_mass, col_sums)
        self.b = b if frozen is None else torch.where(frozen.cols, self.b, b)
        row_sums = self.layout.row_sums(self.kernel, self.b)
        a = torch.reciprocal(row_sums) if self.row_mass is None else torch.div(self.row_mass, row_sums)
        self.a = a if frozen is None else torch.where(frozen.rows, self.a, a)
        extrema.add(col_sums, row_sums)

    def col_violation(self, col_sums: torch.Tensor) -> torch.Tensor:
        """Per-problem column violation of the plan a G b, from the column sums of diag(a) G."""
        return relative_violation(self.b * col_sums, self.col_mass).reshape(-1)

    def exact_violation(self) -> torch.Tensor:
        """Per-problem column violation of the current plan, accumulated in float64."""
        col_sums = self.layout.exact_col_sums(self.kernel, self.a) * self.b
        return relative_violation(col_sums, self.col_mass).reshape(-1)

    def poison(self, ok: torch.Tensor) -> None:
        """Make the plan (and potentials) NaN unless the 0-d bool ``ok`` holds, without a sync."""
        self.b = torch.where(ok, self.b, math.nan)

    def log_scalings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, g) in the layout's row and column shapes: plan = exp(f + L + g)."""
        a = self._ones_rows() if self.a is None else self.a
        return self.f0 + torch.log(a), self.g0 + torch.log(self.b)

    def potentials(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.problem.return_potentials:
            return None, None
        f, g = self.log_scalings()
        return self.layout.row_output(f), self.layout.col_output(g)

    def plan(self) -> torch.Tensor:
        """The plan, in place of the kernel; entries never exceed their row's mass (rounding)."""
        layout = self.layout
        plan = self.kernel if self.a is None else self.kernel.mul_(layout.on_kernel(self.a))
        plan.mul_(layout.spread(self.b))
        return _clamp_to_row_mass(plan, self.row_mass, layout)


def _clamp_to_row_mass(plan: torch.Tensor, row_mass: torch.Tensor | None, layout: Layout) -> torch.Tensor:
    """An entry of a plan whose row sums to m lies in [0, m]; rounding can overshoot by an ulp
    (a label of 1.0000001), which probabilities downstream must not see."""
    if row_mass is None:
        return plan.clamp_(max=1.0)
    return torch.minimum(plan, layout.on_kernel(row_mass), out=plan)


class LogPath:
    """plan = exp(L + f + g), iterated with log-sum-exp."""

    def __init__(self, problem: Problem, f: torch.Tensor, g: torch.Tensor):
        self.problem = problem
        layout = self.layout = problem.layout
        self.kernel = layout.view(log_kernel(problem))
        self.f, self.g = f, g  # the layout's row and column shapes
        self.row_mass = None if problem.row_mass is None else layout.rows(problem.row_mass)
        self.log_row_mass: torch.Tensor | float = 0.0 if self.row_mass is None else torch.log(self.row_mass)
        col_mass = layout.cols(problem.col_mass)
        self.log_col_mass = torch.log(col_mass)
        self.live_cols = col_mass > 0

    def col_lse(self) -> torch.Tensor:
        """log of the column sums of exp(L + f) per problem (over all ranks)."""
        return self.layout.col_lse(self.kernel + self.layout.on_kernel(self.f))

    def step(self, col_lse: torch.Tensor, frozen: Frozen | None = None) -> None:
        g = torch.where(self.live_cols, self.log_col_mass - col_lse, -math.inf)
        self.g = g if frozen is None else torch.where(frozen.cols, self.g, g)
        f = self.log_row_mass - self.layout.row_lse(self.kernel + self.layout.spread(self.g))
        self.f = f if frozen is None else torch.where(frozen.rows, self.f, f)

    def infeasible(self) -> torch.Tensor:
        """1.0 where a row or column of positive mass got an infinite potential (no mass can reach it)."""
        live_rows = torch.ones_like(self.f, dtype=torch.bool) if self.row_mass is None else self.row_mass > 0
        bad_rows = (live_rows & ~torch.isfinite(self.f)).any()
        bad_cols = (self.live_cols & ~torch.isfinite(self.g)).any()
        return (bad_rows | bad_cols).reshape(1).to(torch.float32)

    def plan(self) -> torch.Tensor:
        """The current plan, rows as a softmax: each row sums to its mass to rounding, however large
        the potentials (exp(L + f + g) would carry their rounding into the row sums)."""
        layout = self.layout
        plan = torch.softmax(self.kernel + layout.spread(self.g), dim=-1)
        if self.row_mass is not None:
            plan.mul_(layout.on_kernel(self.row_mass))
        return _clamp_to_row_mass(plan, self.row_mass, layout)

    def col_violation(self, plan: torch.Tensor) -> torch.Tensor:
        """Per-problem column violation of ``plan`` (the plan this path would return)."""
        col_sums = self.layout.col_sums(plan, None, accurate=False)
        return relative_violation(col_sums, self.layout.cols(self.problem.col_mass)).reshape(-1)

    def potentials(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.problem.return_potentials:
            return None, None
        return self.layout.row_output(self.f), self.layout.col_output(self.g)


class Frozen:
    """Which problems have stopped (tolerance mode, independent problems), on their columns and rows."""

    def __init__(self, stopped: torch.Tensor, problem: Problem):
        layout = problem.layout
        self.cols = layout.cols(stopped.unsqueeze(-1))  # (B, 1, 1) or (G, 1)
        self.rows = layout.problem_of_rows(stopped)


class Progress:
    """Per-problem stopping state of the tolerance mode.

    Independent problems (a ragged call) stop one by one, each at the first check where it meets
    ``tol``, as it would if solved alone; the problems of a dense batch stop together, when all
    of them meet it.
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
        """Stop the problems that meet tol; return (what to read back, the candidate new progress).

        Read back: how many problems still iterate, the worst error among them, and how many
        stopped at this check.
        """
        met = violation <= self.tol
        if not self.problem.layout.independent:
            met = met.all().expand_as(met)
        met = met & self.active
        new = Progress.__new__(Progress)
        new.problem, new.tol = self.problem, self.tol
        new.error = torch.where(self.active, violation.to(self.error.dtype), self.error)
        new.stopped_at = torch.where(met, iteration, self.stopped_at)
        new.active = self.active & ~met
        # a dense batch stops as a whole, so it never freezes part of itself
        new.frozen = Frozen(~new.active, self.problem) if self.problem.layout.independent else None
        worst = torch.where(new.active, new.error, torch.zeros_like(new.error)).amax()
        summary = torch.stack((new.active.sum().to(worst.dtype), worst, met.sum().to(worst.dtype)))
        return summary, new

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
            problem_n_iter=self.stopped_at,
            problem_converged=~self.active,
        )


def _status(problem: Problem) -> StatusReader:
    return StatusReader(problem.checks, problem.scores.device, problem.reducer)


def _cols_tensor(problem: Problem, value: torch.Tensor | float) -> torch.Tensor:
    """A column-shaped tensor holding ``value`` (a column shift may be a Python number)."""
    if isinstance(value, torch.Tensor):
        return value
    shape = problem.layout.cols(problem.col_mass).shape
    return torch.full(shape, value, dtype=problem.dtype, device=problem.scores.device)


def fixed(problem: Problem, schedule: Schedule) -> Solution:
    """The fixed-iteration mode: ``schedule.n_iter`` iterations, rows last."""
    state = ScalingPath(problem)
    extrema = Extrema()
    for _ in range(schedule.n_iter):
        state.step(state.col_sums(accurate=False), extrema)
    if problem.device_checks:  # no read-back: failures poison the labels instead
        ok = healthy_tensor(*extrema.bounds(), problem.dtype)
        if problem.checks.flags:
            ok = ok & problem.checks.all_passed()
        state.poison(ok)
        potentials = state.potentials()
        return Solution(
            state.plan(), *potentials, n_iter=schedule.n_iter, converged=None, log_domain=False, backend="torch"
        )
    status = _status(problem)
    if status.read_health(extrema, problem.dtype)[0]:
        potentials = state.potentials()
        return Solution(
            state.plan(), *potentials, n_iter=schedule.n_iter, converged=None, log_domain=False, backend="torch"
        )
    # Replay the same schedule in the log domain from the same (unshifted) start; the first column
    # step sets g.
    kernel = state.kernel
    f = torch.zeros(problem.layout.row_shape(kernel), dtype=kernel.dtype, device=kernel.device)
    g = _cols_tensor(problem, 0.0)
    del state, kernel
    log_state = LogPath(problem, f, g)
    for _ in range(schedule.n_iter):
        log_state.step(log_state.col_lse())
    (infeasible,) = status.read(log_state.infeasible())
    if infeasible:
        raise_infeasible(problem.prior is not None)
    return Solution(
        log_state.plan(),
        *log_state.potentials(),
        n_iter=schedule.n_iter,
        converged=None,
        log_domain=True,
        backend="torch",
    )


def tolerance(problem: Problem, schedule: Schedule) -> Solution:
    """The tolerance mode: until every problem's column violation is at most ``schedule.tol``."""
    status = _status(problem)
    state = ScalingPath(problem, materialise=True)
    max_iter, every = schedule.max_iter, schedule.check_every
    progress = Progress(problem, schedule)
    iteration = 0
    saved = (state.a, state.b, progress, 0)  # last state known to be healthy
    extrema = Extrema()
    while True:
        col_sums = state.col_sums(accurate=True)
        if iteration > 0 and (iteration % every == 0 or iteration == max_iter):
            summary, candidate = progress.update(state.col_violation(col_sums), iteration)
            is_healthy, (remaining, worst, stopped) = status.read_health(extrema, problem.dtype, summary)
            if not is_healthy:
                break
            if stopped and problem.dtype != torch.float64:
                # The float32 measurement is good to ~1e-7; before calling a float32 problem
                # converged, measure the plan it would return exactly (one pass).
                summary, candidate = progress.update(state.exact_violation(), iteration)
                remaining, worst, _ = status.read(summary)
            progress = candidate
            if remaining == 0 or iteration == max_iter:
                return progress.solution(state.plan(), state.potentials(), iteration, remaining, worst, False)
            saved = (state.a, state.b, progress, iteration)
            extrema = Extrema()
        state.step(col_sums, extrema, progress.frozen)
        iteration += 1

    # The scaling path left the safe range: restart from the last healthy state in the log domain.
    a, b, progress, iteration = saved
    f = state.f0 + torch.log(a)
    g = _cols_tensor(problem, state.g0) + (0.0 if b is None else torch.log(b))
    del state, col_sums
    log_state = LogPath(problem, f, g)
    while True:
        if iteration > 0 and (iteration % every == 0 or iteration == max_iter):
            # Measure the plan that would be returned: with potentials in the thousands, float32
            # rounding of the exponents is itself ~1e-5, so only the returned plan's sums count.
            plan = log_state.plan()
            summary, candidate = progress.update(log_state.col_violation(plan), iteration)
            infeasible, remaining, worst, _ = status.read(log_state.infeasible(), summary)
            if infeasible:
                raise_infeasible(problem.prior is not None)
            progress = candidate
            if remaining == 0 or iteration == max_iter:
                return progress.solution(plan, log_state.potentials(), iteration, remaining, worst, True)
            del plan
        log_state.step(log_state.col_lse(), progress.frozen)
        iteration += 1


def solve(problem: Problem, schedule: Schedule) -> Solution:
    """Solve ``problem`` with plain PyTorch operations on its device.

    Every tensor of a Problem is detached (the entry points see to it), so nothing here is
    recorded for autograd without a ``no_grad`` context. The plan comes back in the layout's
    shape ((N, K) for a single problem).
    """
    return fixed(problem, schedule) if schedule.fixed else tolerance(problem, schedule)
