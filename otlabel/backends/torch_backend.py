"""Reference backend in plain PyTorch (any device).

Two paths share one schedule (column step, then row step, ``n`` times; rows last):

* the **scaling path**: the kernel ``G = exp(scores/eps + log prior + f0 + g0)`` is formed
  once, shifted so that every row and every column has maximum exactly 1 (the shifts are
  absorbed by the scalings, so they change nothing in exact arithmetic); each iteration is
  then two matrix-vector products and two divisions, with the N x K matrix read twice and
  never written. This is cheaper than the SwAV loop, which rescales the matrix in place.
* the **log-domain path**: the same iterations on log-potentials with log-sum-exp. It is
  several times slower and runs only when the scaling path reports that a sum left the
  safe floating-point range (|scores/eps| of thousands in float32, near-infeasible
  marginals). The switch is decided on cheap per-iteration minima/maxima of the sums, read
  back at the existing synchronisation points, and the log-domain path restarts from the
  last state that was known to be good, so the result is the same as if no overflow had
  happened.
"""

from __future__ import annotations

import functools
import math

import torch

from .._problem import Problem, Solution, relative_violation
from ..errors import InfeasibleProblemError

NAME = "torch"


def _safe_range(dtype: torch.dtype) -> tuple[float, float]:
    """Sums inside [lo, hi] can neither underflow into lost precision nor overflow later."""
    info = torch.finfo(dtype)
    lo = info.tiny / info.eps
    return lo, 1.0 / lo


def _scaled_scores(problem: Problem) -> torch.Tensor:
    """scores / epsilon, as a new (B, N, K) tensor in the compute dtype."""
    scores = problem.scores
    if scores.dtype != problem.dtype:
        scores = scores.to(problem.dtype)
    return torch.div(scores, problem.epsilon)


def log_kernel(problem: Problem) -> torch.Tensor:
    """scores / epsilon + log(prior), as a new (B, N, K) tensor in the compute dtype."""
    kernel = _scaled_scores(problem)
    if problem.prior is not None:
        kernel.add_(torch.log(problem.prior.to(problem.dtype)))
    return kernel


class _Status:
    """Collects what must be read back at a synchronisation point, in one transfer."""

    def __init__(self, problem: Problem):
        self.problem = problem

    def read(self, *values: torch.Tensor) -> list[float]:
        checks = self.problem.checks
        parts = [v.reshape(-1) for v in values]
        if checks.flags:
            parts.insert(0, checks.as_tensor(self.problem.scores.device))
        # parts of different dtypes meet in float64, which holds float32 values and float64 sums
        # that float32 would flush to 0 or inf; a single part is read as it is
        status = parts[0] if len(parts) == 1 else torch.cat([part.to(torch.float64) for part in parts])
        numbers = self.problem.reducer.max(status).tolist()
        n_checks = len(checks.flags)
        checks.raise_from(numbers[:n_checks])
        return numbers[n_checks:]


Extrema = list[torch.Tensor]  # every row and column sum of a block of steps, checked at its end


def _extremes(sums: Extrema) -> torch.Tensor:
    """(-min, max) over every recorded sum, for one read-back (a max-reduction across ranks)."""
    values = torch.cat([values.reshape(-1) for values in sums])
    if values.numel() == 0:  # no rows on this rank of a distributed job: nothing can be unhealthy
        return values.new_full((2,), -math.inf)
    low, high = torch.aminmax(values)
    return torch.stack((-low, high))


def _column_max(kernel: torch.Tensor) -> torch.Tensor:
    """Column maxima (B, 1, K); -inf where this rank of a distributed job holds no rows."""
    if kernel.shape[-2] == 0:
        return kernel.new_full((kernel.shape[0], 1, kernel.shape[-1]), -math.inf)
    return kernel.amax(-2, keepdim=True)


def _healthy(negative_low: float, high: float, dtype: torch.dtype) -> bool:
    """Whether every recorded sum stayed in the safe range (NaN is not)."""
    lo, hi = _safe_range(dtype)
    return -negative_low >= lo and high <= hi


#: Largest range of scores / epsilon (max - min) that a single global shift handles: every
#: kernel entry then stays a normal number with room to spare for the scalings.
GLOBAL_SHIFT_SPAN = {torch.float32: 60.0, torch.float64: 600.0}


def _global_shift(problem: Problem) -> float | None:
    """-max(scores) / epsilon when one global shift keeps the kernel safely in range, else None.

    The kernel's entries then lie in [exp(-span), max(prior)] with span the range of
    scores / epsilon + log(prior); a prior with zeros always takes the per-row/column shifts.
    """
    if problem.score_range is None or problem.reducer.distributed:
        return None
    low, high = (value / problem.epsilon for value in problem.score_range)
    span = high - low
    if problem.prior is not None:
        if problem.prior_range is None or problem.prior_range[0] <= 0:
            return None
        span += math.log(problem.prior_range[1] / problem.prior_range[0])
    return -high if span <= GLOBAL_SHIFT_SPAN[problem.dtype] else None


#: Rows per block of the float32 column sums (see _accurate_column_sums).
COLUMN_BLOCK = 128


def _accurate_column_sums(a: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """bias + a^T kernel, shape (B, 1, K) (bias broadcasts), accurate to ~1e-7 relative even in float32.

    A float32 matrix-vector product over N rows accumulates rounding like sqrt(N) * 6e-8
    (4e-6 at N = 12000, 4e-7 already at N = 100), which would stall tolerance mode above
    1e-6. Summing blocks of COLUMN_BLOCK rows in float32 and the block sums in float64
    removes that floor for the cost of one small extra reduction.
    """
    batch, n_rows, n_cols = kernel.shape
    blocks = n_rows // COLUMN_BLOCK
    if kernel.dtype == torch.float64 or blocks < 2:
        return torch.baddbmm(bias, a.mT, kernel)
    split = blocks * COLUMN_BLOCK
    if batch > 1 and split != n_rows:
        # (B, C, R, K) views cannot be flattened to one bmm batch without a copy: go per problem
        return torch.cat([_accurate_column_sums(a[i : i + 1], kernel[i : i + 1], bias) for i in range(batch)])
    head = torch.matmul(
        a[:, :split, 0].reshape(batch, blocks, 1, COLUMN_BLOCK),
        kernel[:, :split].reshape(batch, blocks, COLUMN_BLOCK, n_cols),
    )  # (B, C, 1, K)
    total = head.sum(1, dtype=torch.float64)
    if split == n_rows:
        total += bias
    else:
        total += torch.baddbmm(bias, a[:, split:].mT, kernel[:, split:])
    return total.to(kernel.dtype)


@functools.cache
def _tiny(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The smallest normal number as a (1, 1, 1) tensor (a bias for baddbmm), made once per device.

    Only ever read (never written in place), so one tensor serves every call.
    """
    return torch.full((1, 1, 1), torch.finfo(dtype).tiny, dtype=dtype, device=device)


class _Scaling:
    """State of the scaling path: plan = a * G * b with G = exp(L0 + f0 + g0)."""

    def __init__(self, problem: Problem):
        self.problem = problem
        dtype = problem.dtype
        shift = _global_shift(problem)
        if shift is not None:
            # Well-scaled scores: one global shift keeps every entry in range, and the per-row
            # and per-column maxima (slow small-axis reductions on the CPU) are not needed; a
            # prior multiplies the kernel instead of adding its logarithm (one pass fewer).
            kernel = _scaled_scores(problem).add_(shift).exp_()
            if problem.prior is not None:
                kernel.mul_(problem.prior)
            # row shift 0 and column shift `shift`: scalars broadcast wherever the shifts are used
            self.f0: torch.Tensor | float = 0.0
            self.g0: torch.Tensor | float = shift
            self._a: torch.Tensor | None = None  # all ones until the first row step
        else:
            # Shift columns, then rows, so that every row and every column has maximum exactly 1.
            kernel = log_kernel(problem)
            g0 = -problem.reducer.max(_column_max(kernel))  # (B, 1, K)
            kernel.add_(g0)
            f0 = -kernel.amax(-1, keepdim=True)  # (B, N, 1), >= 0
            kernel.add_(f0).exp_()
            self.f0, self.g0 = f0, g0  # (B, N, 1) and (B, 1, K): G = exp(L0 + f0 + g0)
            # The first column step must see the unshifted rows (as the SwAV loop does): undo
            # the row shift in the starting row scaling. exp(-f0) lies in (0, 1], so nothing
            # overflows, and every column sum is at least 1 (the row holding a column's maximum
            # has f0 = 0).
            self._a = torch.exp(-f0)
        self.kernel = kernel
        self.row_mass = problem.row_mass.unsqueeze(-1)  # (B, N, 1)
        self.col_mass = problem.col_mass.unsqueeze(-2)  # (B, 1, K)
        # a tiny bias keeps 0/0 out of zero-mass rows and columns at no extra kernel launch
        self.bias = _tiny(dtype, kernel.device)
        self._b: torch.Tensor | None = None  # all ones until the first column step

    @property
    def a(self) -> torch.Tensor:
        """Row scaling (B, N, 1)."""
        if self._a is None:
            self._a = torch.ones(self.kernel.shape[:-1] + (1,), dtype=self.kernel.dtype, device=self.kernel.device)
        return self._a

    @property
    def b(self) -> torch.Tensor:
        """Column scaling (B, 1, K)."""
        if self._b is None:
            shape = self.kernel.shape[:-2] + (1, self.kernel.shape[-1])
            self._b = torch.ones(shape, dtype=self.kernel.dtype, device=self.kernel.device)
        return self._b

    def column_sums(self) -> torch.Tensor:
        """Column sums of diag(a) G, shape (B, 1, K) (all-reduced in a distributed job)."""
        if self.problem.tol is None:  # three iterations do not need sums exact beyond float32
            if self._a is None:  # a = 1: plain column sums (every kernel entry is positive here)
                return self.problem.reducer.sum(self.kernel.sum(-2, keepdim=True))
            return self.problem.reducer.sum(torch.baddbmm(self.bias, self._a.mT, self.kernel))
        return self.problem.reducer.sum(_accurate_column_sums(self.a, self.kernel, self.bias))

    def row_step(self, col_sums: torch.Tensor, extrema: Extrema) -> None:
        """Scale columns to their mass using ``col_sums``, then rows to theirs."""
        self._b = self.col_mass / col_sums
        row_sums = torch.baddbmm(self.bias, self.kernel, self._b.mT)
        self._a = self.row_mass / row_sums
        extrema.append(col_sums)
        extrema.append(row_sums)

    def exact_violation(self) -> torch.Tensor:
        """The column violation of the current plan a * G * b, accumulated in float64."""
        col_sums = (self.kernel * self.a).sum(-2, dtype=torch.float64) * self.b.squeeze(-2)
        return relative_violation(self.problem.reducer.sum(col_sums), self.problem.col_mass).amax()

    def potentials(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.problem.return_potentials:
            return None, None
        return (self.f0 + torch.log(self.a)).squeeze(-1), (self.g0 + torch.log(self.b)).squeeze(-2)

    def plan(self) -> torch.Tensor:
        return self.kernel.mul_(self.a).mul_(self.b)


class _LogDomain:
    """State of the log-domain path: plan = exp(L0 + f + g)."""

    def __init__(self, problem: Problem, f: torch.Tensor, g: torch.Tensor | float):
        self.problem = problem
        self.kernel = log_kernel(problem)
        self.f, self.g = f, g  # (B, N, 1), (B, 1, K) or a scalar shared by every column
        self.log_row_mass = torch.log(problem.row_mass).unsqueeze(-1)
        self.log_col_mass = torch.log(problem.col_mass).unsqueeze(-2)
        self.live_cols = problem.col_mass.unsqueeze(-2) > 0

    def column_lse(self) -> torch.Tensor:
        """log of the column sums of exp(L0 + f), shape (B, 1, K), over all processes."""
        local = torch.logsumexp(self.kernel + self.f, dim=-2, keepdim=True)
        reducer = self.problem.reducer
        top = reducer.max(local)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        return top + torch.log(reducer.sum(torch.exp(local - top)))

    def step(self, col_lse: torch.Tensor) -> None:
        self.g = torch.where(self.live_cols, self.log_col_mass - col_lse, -math.inf)
        self.f = self.log_row_mass - torch.logsumexp(self.kernel + self.g, dim=-1, keepdim=True)

    def infeasible(self) -> torch.Tensor:
        live_rows = self.problem.row_mass.unsqueeze(-1) > 0
        bad_rows = (live_rows & ~torch.isfinite(self.f)).any()
        bad_cols = (self.live_cols & ~torch.isfinite(self.g)).any()
        return (bad_rows | bad_cols).reshape(1).to(torch.float32)

    def plan(self) -> torch.Tensor:
        """The current plan, rows as a softmax: each row sums to its mass to rounding, however
        large the potentials (exp(L0 + f + g) would carry their rounding into the row sums)."""
        plan = torch.softmax(self.kernel + self.g, dim=-1)
        return plan.mul_(self.problem.row_mass.unsqueeze(-1))

    def potentials(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.problem.return_potentials:
            return None, None
        return self.f.squeeze(-1), self.g.squeeze(-2)


def _raise_infeasible() -> None:
    raise InfeasibleProblemError(
        "no transport plan has these marginals within the prior's support: a row or column with positive "
        "mass can only reach rows or columns of zero mass (check prior zeros against the marginals)"
    )


def _fixed(problem: Problem) -> Solution:
    status = _Status(problem)
    state = _Scaling(problem)
    extrema: Extrema = []
    for _ in range(problem.n_iter):
        state.row_step(state.column_sums(), extrema)
    if _healthy(*status.read(_extremes(extrema)), problem.dtype):
        f, g = state.potentials()
        return Solution(state.plan(), f, g, problem.n_iter, None, None, False, NAME)
    # Replay the same schedule in the log domain from the same start.
    start_f, start_g = torch.zeros_like(state.row_mass), state.g0  # the unshifted start of the SwAV loop
    del state
    log_state = _LogDomain(problem, start_f, start_g)
    for _ in range(problem.n_iter):
        log_state.step(log_state.column_lse())
    (infeasible,) = status.read(log_state.infeasible())
    if infeasible:
        _raise_infeasible()
    f, g = log_state.potentials()
    return Solution(log_state.plan(), f, g, problem.n_iter, None, None, True, NAME)


def _tolerance(problem: Problem) -> Solution:
    status = _Status(problem)
    state = _Scaling(problem)
    tol, max_iter, every = problem.tol, problem.max_iter, problem.check_every
    iteration = 0
    saved = (state.a, state.b, 0)  # last state known to be healthy
    extrema: Extrema = []
    while True:
        col_sums = state.column_sums()
        if iteration > 0 and (iteration % every == 0 or iteration == max_iter):
            violation = relative_violation((state.b * col_sums).squeeze(-2), problem.col_mass).amax()
            negative_low, high, error = status.read(_extremes(extrema), violation)
            if not _healthy(negative_low, high, problem.dtype):
                break
            if error <= tol and problem.dtype != torch.float64:
                # The float32 measurement is good to ~1e-7; before calling a float32 run
                # converged, measure the plan it would return exactly (one pass, once).
                error = status.read(state.exact_violation())[0]
            if error <= tol or iteration == max_iter:
                converged = error <= tol
                f, g = state.potentials()
                return Solution(state.plan(), f, g, iteration, converged, error, False, NAME)
            saved = (state.a, state.b, iteration)
            extrema = []
        state.row_step(col_sums, extrema)
        iteration += 1

    # The scaling path left the safe range: restart from the last healthy state in the log domain.
    a, b, iteration = saved
    f = state.f0 + torch.log(a)
    g = state.g0 + torch.log(b)
    del state, col_sums
    log_state = _LogDomain(problem, f, g)
    while True:
        if iteration > 0 and (iteration % every == 0 or iteration == max_iter):
            # Measure the plan that would be returned: with potentials in the thousands, float32
            # rounding of the exponents is itself ~1e-5, so only the returned plan's sums count.
            plan = log_state.plan()
            violation = relative_violation(problem.reducer.sum(plan.sum(-2)), problem.col_mass).amax()
            infeasible, error = status.read(log_state.infeasible(), violation)
            if infeasible:
                _raise_infeasible()
            if error <= tol or iteration == max_iter:
                f, g = log_state.potentials()
                return Solution(plan, f, g, iteration, error <= tol, error, True, NAME)
            del plan
        log_state.step(log_state.column_lse())
        iteration += 1


def solve(problem: Problem) -> Solution:
    """Solve ``problem`` with plain PyTorch operations on its device."""
    if problem.tol is None:
        return _fixed(problem)
    return _tolerance(problem)
