"""Numerics shared by the solver core and the backends (package-internal, imported by these names).

* the **safe range** of a sum: inside it the scaling updates ``mass / sum`` neither overflow nor
  lose precision to subnormal numbers, so the scaling path's answer is as good as the
  log-domain path's;
* :class:`Extrema`: the smallest and largest sum seen, in memory that does not grow with the
  number of iterations;
* :class:`StatusReader`: everything a solver must read back at one synchronisation point
  (deferred input checks, health, convergence), in one transfer;
* :func:`relative_violation`, the scale-free marginal error every mode reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .errors import InfeasibleProblemError

if TYPE_CHECKING:
    from ._deferred import DeferredChecks
    from ._problem import Problem
    from ._reduce import Reducer

__all__ = [
    "Extrema",
    "StatusReader",
    "compute_dtype",
    "healthy",
    "healthy_tensor",
    "log_kernel",
    "raise_infeasible",
    "relative_violation",
    "safe_range",
    "scaled_scores",
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solver works in: float64 stays float64, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def safe_range(dtype: torch.dtype) -> tuple[float, float]:
    """Sums inside [lo, hi] can neither underflow into lost precision nor overflow later."""
    return _SAFE_RANGE[dtype] if dtype in _SAFE_RANGE else _safe_range_of(dtype)


def _safe_range_of(dtype: torch.dtype) -> tuple[float, float]:
    info = torch.finfo(dtype)
    lo = info.tiny / info.eps
    return lo, 1.0 / lo


#: (computed once: torch.finfo costs more than the rest of a health check's host work)
_SAFE_RANGE = {dtype: _safe_range_of(dtype) for dtype in (torch.float32, torch.float64)}


def healthy(low: float, high: float, dtype: torch.dtype) -> bool:
    """Whether every recorded sum, from ``low`` to ``high``, stayed in the safe range (NaN is not)."""
    lo, hi = safe_range(dtype)
    return lo <= low and high <= hi


def healthy_tensor(low: torch.Tensor, high: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:func:`healthy` on the device: a 0-d bool tensor, never read back."""
    lo, hi = safe_range(dtype)
    return (low >= lo) & (high <= hi)


class Extrema:
    """The smallest and the largest of every sum a scaling path computed.

    Sums are collected as they come and folded into a running (min, max) pair every ``FOLD`` of
    them, so that memory does not depend on the number of iterations while a short schedule
    (SwAV's three iterations: six sums) still costs one concatenation and one reduction.
    """

    FOLD = 16

    def __init__(self) -> None:
        self._pending: list[torch.Tensor] = []
        self._folded: torch.Tensor | None = None  # (min, max) of the sums folded so far

    def add(self, col_sums: torch.Tensor, row_sums: torch.Tensor) -> None:
        pending = self._pending
        pending.append(col_sums if col_sums.dim() == 1 else col_sums.reshape(-1))
        pending.append(row_sums if row_sums.dim() == 1 else row_sums.reshape(-1))
        if len(pending) >= self.FOLD:
            self._folded = torch.stack(self.bounds())
            self._pending = []

    def include(self, values: torch.Tensor) -> None:
        """Record values that must stay in the safe range as the sums do (once, not per step)."""
        self._pending.append(values.reshape(-1))

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) over every sum added so far, as 0-d tensors on the sums' device."""
        parts = self._pending if self._folded is None else [*self._pending, self._folded]
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        if values.numel() == 0:  # no rows on this rank of a distributed job: nothing can be unhealthy
            one = values.new_ones(())
            return one, one
        return torch.aminmax(values)


class StatusReader:
    """Reads back, in one transfer, the deferred input checks and whatever a solver passes.

    With a process group the values are max-reduced over the ranks first, so that every rank
    takes every data-dependent branch the same way.
    """

    def __init__(self, checks: DeferredChecks, device: torch.device, reducer: Reducer):
        self.checks = checks
        self.device = device
        self.reducer = reducer

    def read(self, *values: torch.Tensor) -> list[float]:
        checks = self.checks
        if len(values) == 1 and not checks.flags and not self.reducer.distributed:
            value = values[0]
            return (value if value.dim() == 1 else value.reshape(-1)).tolist()
        parts = [v.reshape(-1) for v in values]
        if checks.flags:
            parts.insert(0, checks.as_tensor(self.device))
        # parts of different dtypes meet in float64, which holds float32 values and float64 sums
        # that float32 would flush to 0 or inf; a single part is read as it is
        status = parts[0] if len(parts) == 1 else torch.cat([part.to(torch.float64) for part in parts])
        numbers = self.reducer.max(status).tolist()
        n_checks = len(checks.flags)
        checks.raise_from(numbers[:n_checks])
        return numbers[n_checks:]

    def read_health(self, extrema: Extrema, dtype: torch.dtype, *values: torch.Tensor) -> tuple[bool, list[float]]:
        """Whether every sum of ``extrema`` stayed in the safe range, and ``values``, in one read-back."""
        low, high = extrema.bounds()
        if not values and not self.checks.flags and not self.reducer.distributed:  # the common case
            return healthy(low.item(), high.item(), dtype), []
        # (-min, max): both combine over ranks with a max
        numbers = self.read(torch.stack((-low, high)).to(torch.float64), *values)
        return healthy(-numbers[0], numbers[1], dtype), numbers[2:]


def scaled_scores(problem: Problem) -> torch.Tensor:
    """scores / epsilon, as a new tensor in the compute dtype (a lazy kernel for scores given as
    features and prototypes: :mod:`otlabel._streamed`)."""
    scores = problem.scores
    if not isinstance(scores, torch.Tensor):
        return scores.kernel(problem.epsilon)
    if scores.dtype != problem.dtype:
        scores = scores.to(problem.dtype)
    return torch.div(scores, problem.epsilon)


def log_kernel(problem: Problem) -> torch.Tensor:
    """scores / epsilon + log(prior), as a new tensor in the compute dtype."""
    kernel = scaled_scores(problem)
    if problem.prior is not None:  # (never for scores given as features: they take no prior)
        prior = problem.prior.to(problem.dtype)
        kernel.add_(prior if problem.log_prior else torch.log(prior))
    return kernel


def raise_infeasible(has_prior: bool) -> None:
    """Raise for a problem in which no mass can reach a row or column of positive mass."""
    where = "within the prior's support" if has_prior else "with these marginals"
    raise InfeasibleProblemError(
        f"no transport plan exists {where}: a row or column with positive mass can only reach rows or "
        "columns of zero mass (check the prior's zeros and the marginals' zeros against each other)"
    )


def relative_violation(sums: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Scale-free marginal violation per problem: max |sums - mass| / mass over the last axis.

    ``sums`` and ``mass`` are (..., L); the result drops the last axis. Entries with zero target
    mass are measured relative to the problem's total mass instead.
    """
    if mass.shape[-1] == 0:  # a rank that holds no rows of a global batch: the dtype the others
        # compute in (a float64 sum against float32 masses), for the all-reduce that follows
        return torch.zeros(mass.shape[:-1], dtype=torch.promote_types(sums.dtype, mass.dtype), device=mass.device)
    total = mass.sum(-1, keepdim=True)
    scale = torch.where(mass > 0, mass, total)
    return ((sums - mass).abs() / scale).amax(-1)
