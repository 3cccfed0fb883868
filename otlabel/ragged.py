"""Many small labelling problems at once: :func:`sinkhorn_ragged`.

G independent problems (one per video, image or crop) with their own row counts are packed
into one (N, K) tensor, group g owning rows ``ptr[g]:ptr[g+1]`` (CSR offsets, as in
torch-scatter and PyTorch Geometric). One call labels them all with the same schedule and
the same numerical safeguards as :func:`~otlabel.sinkhorn`, but per group: per-group column
shifts, per-group column marginals, per-group convergence. Every per-group quantity is a
segment reduction over contiguous rows; :class:`_Segments` implements those reductions with
plain PyTorch (a sparse CSR product) or, on request, with torch-scatter's ``segment_csr``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from ._checks import (
    MARGINAL_SUM_ATOL,
    DeferredChecks,
    check_epsilon,
    check_marginal,
    check_prior,
    check_scores,
    check_scores_finite,
    compute_dtype,
    require_column_support,
    require_reachable_columns,
    require_reachable_rows,
    to_tensor,
)
from ._problem import Problem, Reducer, relative_violation
from .backends import torch_backend
from .backends.torch_backend import Extrema, _extremes, _healthy, _raise_infeasible, _Status, log_kernel
from .errors import ArgumentTypeError, BackendUnavailableError, ConvergenceWarning, InvalidArgumentError
from .sinkhorn import check_schedule

__all__ = ["RaggedSinkhornResult", "sinkhorn_ragged"]

Array = Union[torch.Tensor, np.ndarray]

#: Implementations of the segment reductions: ``"torch"`` needs nothing beyond PyTorch.
SEGMENTS = ("auto", "torch", "torch_scatter")


@dataclass(frozen=True)
class RaggedSinkhornResult:
    """Labels and per-group diagnostics of :func:`sinkhorn_ragged` (``return_info=True``).

    Array fields are tensors (numpy arrays for numpy input) on the scores' device.

    Attributes
    ----------
    labels : Tensor or ndarray, shape (N, K)
        The transport plans of all groups, packed like ``scores``.
    n_iter : Tensor or ndarray, shape (G,), int64
        Iterations each group ran. In tolerance mode a group stops (its scalings freeze) at
        the first check where it meets ``tol``, as it would if labelled on its own.
    converged : Tensor or ndarray, shape (G,), bool, or None
        Tolerance mode: whether each group met ``tol``. None in fixed-iteration mode.
    row_error, col_error : Tensor or ndarray, shape (G,)
        Scale-free marginal violations of each group's plan (as in
        :class:`~otlabel.SinkhornResult`).
    log_domain : bool
        Whether the log-domain path computed the answer (for all groups at once).
    segments : str
        What ran: ``"torch"`` or ``"torch_scatter"`` segment reductions, or ``"dense"`` (equal-size
        groups in fixed-iteration mode, labelled as one batched problem).
    log_row_scaling : Tensor or ndarray, shape (N,)
        Dual potential f of every row.
    log_col_scaling : Tensor or ndarray, shape (G, K)
        Dual potential g of every group's columns:
        ``labels[n] = exp(f[n] + scores[n] / epsilon + log prior[n] + g[group(n)])``.
    """

    labels: Array
    n_iter: Array
    converged: Array | None
    row_error: Array
    col_error: Array
    log_domain: bool
    segments: str
    log_row_scaling: Array
    log_col_scaling: Array


def _torch_scatter() -> Any:
    try:
        import torch_scatter
    except ImportError:
        return None
    return torch_scatter


class _Segments:
    """Row-to-group bookkeeping and the segment reductions over contiguous row groups.

    ``sum`` and ``max`` reduce an (N, K) tensor to (G, K) per group; ``expand`` repeats a
    per-group (G, K) tensor on the rows of each group. The plain-PyTorch sum is a product with
    the (G, N) CSR matrix whose row g holds ``weights`` on the columns of group g: one fused
    pass, several times faster on the CPU than multiplying first and then ``segment_csr``,
    ``segment_reduce`` or ``index_add_``.
    """

    def __init__(self, ptr: torch.Tensor, n_rows: int, implementation: str):
        self.name = implementation
        self.ptr = ptr
        self.n_groups = ptr.numel() - 1
        device = ptr.device
        rows = torch.arange(n_rows, device=device)
        # ptr is non-decreasing from 0 to N here (check_ptr sanitises it; a bad ptr is reported
        # by the checks), so the group sizes are valid repeat counts
        self.group = torch.repeat_interleave(torch.arange(self.n_groups, device=device), ptr.diff(), output_size=n_rows)
        self._scatter = _torch_scatter() if implementation == "torch_scatter" else None
        self._rows = rows
        self._csr: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None

    def sum(self, values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per-group sums of ``weights[:, None] * values`` (weights (N,) or (N, 1); default 1)."""
        if self._scatter is not None:
            return self._scatter.segment_csr(values if weights is None else values * weights.reshape(-1, 1), self.ptr)
        weights = torch.ones_like(values[:, 0]) if weights is None else weights.reshape(-1)
        if self._csr is None or self._csr.dtype != values.dtype:
            self._weights = torch.empty_like(weights)
            with warnings.catch_warnings():  # "sparse CSR support is in beta" (a one-time UserWarning)
                warnings.simplefilter("ignore", UserWarning)
                self._csr = torch.sparse_csr_tensor(
                    self.ptr,
                    self._rows,
                    self._weights,
                    (self.n_groups, values.shape[0]),
                    check_invariants=False,  # ptr is validated (and kept in range) by the caller
                )
        assert self._weights is not None
        self._weights.copy_(weights)  # the CSR matrix's values share this storage
        return torch.sparse.mm(self._csr, values)

    def max(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group column maxima of ``values`` (N, K)."""
        if self._scatter is not None:
            return self._scatter.segment_csr(values, self.ptr, reduce="max")
        out = torch.full((self.n_groups, values.shape[1]), -math.inf, dtype=values.dtype, device=values.device)
        return out.scatter_reduce_(0, self.group.unsqueeze(1).expand_as(values), values, "amax")

    def expand(self, per_group: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``per_group[group(n)]`` for every row n: (G, ...) -> (N, ...), into ``out`` if given."""
        if out is None:
            return per_group.index_select(0, self.group)
        return torch.index_select(per_group, 0, self.group, out=out)

    def logsumexp(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group column log-sum-exp of ``values`` (N, K); -inf for an all -inf column."""
        top = self.max(values)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        return top + torch.log(self.sum(torch.exp(values - self.expand(top))))


@dataclass
class _RaggedProblem:
    """A validated ragged problem; field names shared with :class:`~otlabel._problem.Problem`
    where the torch backend's helpers (``log_kernel``, ``_Status``) read them."""

    scores: torch.Tensor  # (N, K)
    prior: torch.Tensor | None  # (N, K)
    epsilon: float
    row_mass: torch.Tensor  # (N,)
    col_mass: torch.Tensor  # (G, K)
    dtype: torch.dtype
    n_iter: int
    tol: float | None
    max_iter: int
    check_every: int
    checks: DeferredChecks
    segments: _Segments
    reducer: Reducer  # one process: the status read-back combines nothing
    score_range: tuple[float, float] | None = None  # (min, max) of the scores, when known for free
    prior_range: tuple[float, float] | None = None  # (min, max) of the prior, when known for free


class _Scaling:
    """Scaling path: plan[n] = a[n] * G[n] * b[group(n)], G = exp(L0 + f0 + g0) shifted per group."""

    def __init__(self, problem: _RaggedProblem):
        self.problem = problem
        seg = problem.segments
        kernel = log_kernel(problem)  # (N, K)
        # one (N, K) scratch buffer for per-group values spread over the rows: a fresh tensor of
        # that size per iteration would cost more than the arithmetic (page faults on the CPU)
        self.work = torch.empty_like(kernel)
        # As in the torch backend, per group: every column, then every row, has maximum exactly 1.
        g0 = -seg.max(kernel)  # (G, K)
        kernel.add_(seg.expand(g0, out=self.work))
        f0 = -kernel.amax(-1, keepdim=True)  # (N, 1)
        kernel.add_(f0)
        self.kernel = kernel.exp_()
        self.f0, self.g0 = f0, g0
        self.tiny = torch.finfo(problem.dtype).tiny  # keeps 0/0 out of zero-mass rows and columns
        self.row_mass = problem.row_mass.unsqueeze(-1)  # (N, 1)
        self.ones = torch.ones(kernel.shape[1], dtype=kernel.dtype, device=kernel.device)
        self.a = torch.exp(-f0)  # the first column step sees the unshifted rows (the SwAV loop)
        self.b = torch.ones_like(g0)

    def column_sums(self) -> torch.Tensor:
        """Per-group column sums of diag(a) G, shape (G, K)."""
        return self.problem.segments.sum(self.kernel, self.a).add_(self.tiny)

    def row_step(self, col_sums: torch.Tensor, extrema: Extrema, active: _Active | None) -> None:
        """Scale columns to their mass, then rows; groups that have stopped keep their scalings."""
        b = self.problem.col_mass / col_sums
        self.b = b if active is None else torch.where(active.groups.unsqueeze(-1), b, self.b)
        spread = self.problem.segments.expand(self.b, out=self.work).mul_(self.kernel)
        row_sums = torch.mv(spread, self.ones).add_(self.tiny).unsqueeze(-1)  # (N, 1)
        a = self.row_mass / row_sums
        self.a = a if active is None else torch.where(active.rows.unsqueeze(-1), a, self.a)
        extrema.append(col_sums)
        extrema.append(row_sums)

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.f0 + torch.log(self.a)).squeeze(-1), self.g0 + torch.log(self.b)

    def plan(self) -> torch.Tensor:
        return self.kernel.mul_(self.a).mul_(self.problem.segments.expand(self.b, out=self.work))


class _LogDomain:
    """Log-domain path: plan[n] = exp(L0[n] + f[n] + g[group(n)])."""

    def __init__(self, problem: _RaggedProblem, f: torch.Tensor, g: torch.Tensor):
        self.problem = problem
        self.kernel = log_kernel(problem)
        self.f, self.g = f, g  # (N, 1), (G, K)
        self.log_row_mass = torch.log(problem.row_mass).unsqueeze(-1)
        self.log_col_mass = torch.log(problem.col_mass)
        self.live_cols = problem.col_mass > 0

    def column_lse(self) -> torch.Tensor:
        return self.problem.segments.logsumexp(self.kernel + self.f)

    def step(self, col_lse: torch.Tensor, active: _Active | None) -> None:
        g = torch.where(self.live_cols, self.log_col_mass - col_lse, -math.inf)
        self.g = g if active is None else torch.where(active.groups.unsqueeze(-1), g, self.g)
        f = self.log_row_mass - torch.logsumexp(self.kernel + self.problem.segments.expand(self.g), -1, keepdim=True)
        self.f = f if active is None else torch.where(active.rows.unsqueeze(-1), f, self.f)

    def infeasible(self) -> torch.Tensor:
        live_rows = self.problem.row_mass.unsqueeze(-1) > 0
        bad = (live_rows & ~torch.isfinite(self.f)).any() | (self.live_cols & ~torch.isfinite(self.g)).any()
        return bad.reshape(1).to(torch.float32)

    def plan(self) -> torch.Tensor:
        """Rows as a softmax: each row sums to its mass to rounding, however large the potentials."""
        plan = torch.softmax(self.kernel + self.problem.segments.expand(self.g), dim=-1)
        return plan.mul_(self.problem.row_mass.unsqueeze(-1))

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.f.squeeze(-1), self.g


class _Active:
    """Which groups still iterate (tolerance mode), per group and per row."""

    def __init__(self, groups: torch.Tensor, segments: _Segments):
        self.groups = groups  # (G,) bool
        self.rows = segments.expand(groups)  # (N,) bool


@dataclass
class _Outcome:
    plan: torch.Tensor
    f: torch.Tensor | None  # None when the dense path ran without return_info
    g: torch.Tensor | None
    n_iter: torch.Tensor  # (G,) int64
    converged: torch.Tensor | None  # (G,) bool
    log_domain: bool
    unconverged: int  # number of groups that missed tol
    worst_error: float  # largest column violation among them


def _equal_size(problem: _RaggedProblem) -> int | None:
    """The common group size when every group has the same number of rows, else None."""
    n_rows, n_groups = problem.scores.shape[0], problem.segments.n_groups
    if n_rows % n_groups:
        return None
    size = n_rows // n_groups
    equal = torch.arange(0, n_rows + 1, size, device=problem.segments.ptr.device)
    return size if torch.equal(problem.segments.ptr, equal) else None


def _dense(problem: _RaggedProblem, size: int, return_potentials: bool) -> _Outcome:
    """Equal-size groups, fixed-iteration mode: one batched (G, size, K) problem of the torch
    backend. The same schedule per group as the segment path (and as a loop of ``sinkhorn``),
    at the cost of two batched matrix products per iteration instead of segment reductions."""
    n_groups, n_cols = problem.col_mass.shape
    batched = Problem(
        scores=problem.scores.reshape(n_groups, size, n_cols),
        prior=None if problem.prior is None else problem.prior.reshape(n_groups, size, n_cols),
        epsilon=problem.epsilon,
        row_mass=problem.row_mass.reshape(n_groups, size),
        col_mass=problem.col_mass,
        dtype=problem.dtype,
        n_iter=problem.n_iter,
        tol=None,
        max_iter=problem.max_iter,
        check_every=problem.check_every,
        checks=problem.checks,
        score_range=problem.score_range,
        prior_range=problem.prior_range,
        return_potentials=return_potentials,
    )
    solution = torch_backend.solve(batched)
    iterations = torch.full((n_groups,), problem.n_iter, dtype=torch.int64, device=problem.col_mass.device)
    f, g = solution.log_row_scaling, solution.log_col_scaling
    return _Outcome(
        solution.plan.reshape(-1, n_cols),
        None if f is None else f.reshape(-1),
        g,
        iterations,
        None,
        solution.log_domain,
        0,
        0.0,
    )


def _fixed(problem: _RaggedProblem) -> _Outcome:
    status = _Status(problem)
    n_groups = problem.col_mass.shape[0]
    iterations = torch.full((n_groups,), problem.n_iter, dtype=torch.int64, device=problem.col_mass.device)
    state = _Scaling(problem)
    extrema: Extrema = []
    for _ in range(problem.n_iter):
        state.row_step(state.column_sums(), extrema, None)
    if _healthy(*status.read(_extremes(extrema)), problem.dtype):
        f, g = state.potentials()
        return _Outcome(state.plan(), f, g, iterations, None, False, 0, 0.0)
    # Replay the same schedule in the log domain from the same (unshifted) start.
    start_g = state.g0
    del state
    log_state = _LogDomain(problem, torch.zeros_like(problem.row_mass).unsqueeze(-1), start_g)
    for _ in range(problem.n_iter):
        log_state.step(log_state.column_lse(), None)
    (infeasible,) = status.read(log_state.infeasible())
    if infeasible:
        _raise_infeasible()
    f, g = log_state.potentials()
    return _Outcome(log_state.plan(), f, g, iterations, None, True, 0, 0.0)


class _Progress:
    """Per-group stopping state of the tolerance mode."""

    def __init__(self, problem: _RaggedProblem):
        n_groups = problem.col_mass.shape[0]
        device = problem.col_mass.device
        self.problem = problem
        self.active = _Active(torch.ones(n_groups, dtype=torch.bool, device=device), problem.segments)
        self.stopped_at = torch.full((n_groups,), problem.max_iter, dtype=torch.int64, device=device)
        self.error = torch.zeros(n_groups, dtype=problem.dtype, device=device)

    def update(self, violation: torch.Tensor, iteration: int) -> tuple[torch.Tensor, _Progress]:
        """Stop the groups that meet tol; return (status values to read, the new progress)."""
        active = self.active.groups
        met = active & (violation <= self.problem.tol)
        new = _Progress.__new__(_Progress)
        new.problem = self.problem
        new.error = torch.where(active, violation, self.error)
        new.stopped_at = torch.where(met, iteration, self.stopped_at)
        new.active = _Active(active & ~met, self.problem.segments)
        # read back: how many groups still iterate, and the worst error among them
        still = new.active.groups
        worst = torch.where(still, new.error, torch.zeros_like(new.error)).amax()
        return torch.stack((still.sum().to(worst.dtype), worst)), new

    def outcome(
        self, plan: torch.Tensor, f: torch.Tensor, g: torch.Tensor, log_domain: bool, numbers: list[float]
    ) -> _Outcome:
        return _Outcome(plan, f, g, self.stopped_at, ~self.active.groups, log_domain, int(numbers[0]), numbers[1])


def _tolerance(problem: _RaggedProblem) -> _Outcome:
    status = _Status(problem)
    seg = problem.segments
    max_iter, every = problem.max_iter, problem.check_every
    state = _Scaling(problem)
    progress = _Progress(problem)
    iteration = 0
    saved = (state.a, state.b, progress, 0)  # last state known to be healthy
    extrema: Extrema = []
    while True:
        col_sums = state.column_sums()
        if iteration > 0 and (iteration % every == 0 or iteration == max_iter):
            violation = relative_violation(state.b * col_sums, problem.col_mass)
            values, candidate = progress.update(violation, iteration)
            negative_low, high, remaining, worst = status.read(_extremes(extrema), values)
            if not _healthy(negative_low, high, problem.dtype):
                break
            progress = candidate
            if remaining == 0 or iteration == max_iter:
                f, g = state.potentials()
                return progress.outcome(state.plan(), f, g, False, [remaining, worst])
            saved = (state.a, state.b, progress, iteration)
            extrema = []
        state.row_step(col_sums, extrema, progress.active)
        iteration += 1

    # The scaling path left the safe range: restart from the last healthy state in the log domain.
    a, b, progress, iteration = saved
    f = state.f0 + torch.log(a)
    g = state.g0 + torch.log(b)
    del state, col_sums
    log_state = _LogDomain(problem, f, g)
    while True:
        if iteration > 0 and (iteration % every == 0 or iteration == max_iter):
            plan = log_state.plan()  # measure the plan that would be returned
            violation = relative_violation(seg.sum(plan), problem.col_mass)
            values, candidate = progress.update(violation, iteration)
            infeasible, remaining, worst = status.read(log_state.infeasible(), values)
            if infeasible:
                _raise_infeasible()
            progress = candidate
            if remaining == 0 or iteration == max_iter:
                f, g = log_state.potentials()
                return progress.outcome(plan, f, g, True, [remaining, worst])
            del plan
        log_state.step(log_state.column_lse(), progress.active)
        iteration += 1


def check_ptr(ptr: Any, n_rows: int, like: torch.Tensor, checks: DeferredChecks) -> torch.Tensor:
    """Validate CSR offsets ``ptr`` (G + 1 integers from 0 to N, strictly increasing); return int64.

    The returned offsets are always safe to index with (forced into [0, N] and non-decreasing)
    so that a bad ``ptr`` on an accelerator, whose check is deferred, cannot read out of bounds.
    """
    if isinstance(ptr, (torch.Tensor, np.ndarray)):
        tensor, _ = to_tensor(ptr, "ptr")
        if isinstance(ptr, torch.Tensor) and tensor.device != like.device:
            raise InvalidArgumentError(
                f"ptr is on device {tensor.device} but scores are on {like.device}; move it to the same device"
            )
    elif isinstance(ptr, (list, tuple)) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ptr
    ):
        tensor = torch.tensor([int(v) for v in ptr], dtype=torch.int64)
    else:
        raise ArgumentTypeError(
            f"ptr must be a 1-D integer tensor, numpy array or list of ints (CSR offsets), got {type(ptr).__name__}"
        )
    if tensor.dtype not in (torch.int32, torch.int64):
        raise ArgumentTypeError(f"ptr must hold int32 or int64 offsets, got dtype {tensor.dtype}")
    if tensor.dim() != 1 or tensor.numel() < 2:
        raise InvalidArgumentError(
            "ptr must be 1-D with G + 1 >= 2 entries (group g owns rows ptr[g]:ptr[g+1]), "
            f"got shape {tuple(tensor.shape)}"
        )
    tensor = tensor.to(like.device, torch.int64)
    checks.require(
        (tensor[0] == 0) & (tensor[-1] == n_rows),
        lambda: InvalidArgumentError(f"ptr must start at 0 and end at N = {n_rows} (the number of rows of scores)"),
    )
    sizes = tensor.diff()

    def empty_groups() -> InvalidArgumentError:
        where = ""
        if sizes.device.type == "cpu":
            bad = torch.nonzero(sizes <= 0).flatten()[:5].tolist()
            where = f" (first offending groups: {bad})"
        return InvalidArgumentError(
            "ptr must be strictly increasing: every group needs at least one row (empty groups are an error)" + where
        )

    checks.require((sizes > 0).all(), empty_groups)
    inner = torch.cummax(tensor[1:-1].clamp(0, n_rows), 0).values
    return torch.cat((tensor.new_zeros(1), inner, tensor.new_full((1,), n_rows)))


def _check_segments(segments: Any) -> str:
    if not isinstance(segments, str) or segments not in SEGMENTS:
        raise InvalidArgumentError(f"segments must be one of {SEGMENTS}, got {segments!r}")
    if segments == "torch_scatter" and _torch_scatter() is None:
        raise BackendUnavailableError(
            "segments='torch_scatter' needs the torch-scatter package (pip install torch-scatter); "
            "segments='torch' needs nothing"
        )
    # the plain-PyTorch reductions measured faster (benchmarks/bench_ragged.py), so "auto" uses them
    return "torch" if segments == "auto" else segments


def _col_marginal(
    value: Any, n_groups: int, n_cols: int, scores: torch.Tensor, dtype: torch.dtype, checks: DeferredChecks
) -> torch.Tensor:
    if value is None:
        return torch.full((n_groups, n_cols), 1.0 / n_cols, dtype=dtype, device=scores.device)
    shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
    if len(shape) == 2 and shape != (n_groups, n_cols):
        raise InvalidArgumentError(
            f"col_marginal must have shape (K,) = ({n_cols},) or (G, K) = ({n_groups}, {n_cols}), got {shape}"
        )
    return check_marginal(value, "col_marginal", n_cols, "K", n_groups, True, scores.unsqueeze(0), dtype, checks)


def sinkhorn_ragged(
    scores: Array,
    ptr: Any,
    epsilon: float = 0.05,
    *,
    prior: Array | None = None,
    col_marginal: Any = None,
    row_marginal: Any = None,
    n_iter: int | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    check_every: int = 10,
    segments: str = "auto",
    return_info: bool = False,
) -> Array | RaggedSinkhornResult:
    r"""Label G independent problems of different sizes, packed row-wise, in one call.

    Group g owns rows ``ptr[g]:ptr[g+1]`` of ``scores`` (:math:`N_g` rows). Each group is the
    problem of :func:`~otlabel.sinkhorn` (or :func:`~otlabel.sinkhorn_with_prior` when a
    ``prior`` is given) on its own rows:

    .. math::

        Q_g = \operatorname{diag}(u_g)\, \bigl(\hat Q_g \odot \exp(S_g / \varepsilon)\bigr)\, \operatorname{diag}(v_g),
        \qquad Q_g \mathbf{1}_K = N_g\, r_g, \qquad Q_g^\top \mathbf{1}_{N_g} = N_g\, c_g,

    and the result equals a Python loop of those calls over the groups (same schedule, same
    stopping rule per group), in one pass over the packed tensor. Equal-size groups can also
    be labelled as a batch, ``sinkhorn(scores.view(G, n, K))``.

    Parameters
    ----------
    scores : Tensor or ndarray, shape (N, K)
        The rows of every group, one group after another (any float dtype).
    ptr : Tensor, ndarray or list of int, shape (G + 1,)
        CSR offsets: ``ptr[0] == 0``, ``ptr[G] == N``, strictly increasing (an empty group is
        an error). From group sizes: ``torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])``.
        A tensor must be int32/int64 and on the scores' device.
    epsilon : float, default 0.05
        Entropic regularisation, as in :func:`~otlabel.sinkhorn`.
    prior : Tensor or ndarray, shape (N, K), optional
        The prior :math:`\hat Q` of every group, packed like ``scores`` (non-negative; no
        all-zero row; within each group no all-zero column).
    col_marginal : array-like, shape (K,) or (G, K), optional
        Class proportions shared by all groups, or one row per group (each summing to 1).
        Default: uniform.
    row_marginal : array-like, shape (N,), optional
        Row weights, packed like the rows; each group's slice sums to 1. Default: uniform
        within each group (every row sums to 1).
    n_iter, tol, max_iter, check_every
        As in :func:`~otlabel.sinkhorn`. In tolerance mode every group stops at the first
        check where its own column violation is at most ``tol``; the call returns when all
        groups have stopped (or at ``max_iter``, with a
        :class:`~otlabel.ConvergenceWarning` counting the groups that missed ``tol``).
    segments : {"auto", "torch", "torch_scatter"}, default "auto"
        How per-group sums and maxima are computed: plain PyTorch (a sparse CSR product) or
        torch-scatter's ``segment_csr`` (optional dependency, ``pip install torch-scatter``).
        ``"auto"`` uses plain PyTorch, as it measured faster, except that equal-size groups in
        fixed-iteration mode are labelled as one batched ``(G, N/G, K)`` problem, which needs
        no segment reductions at all (the same result; ``RaggedSinkhornResult.segments`` then
        says ``"dense"``).
    return_info : bool, default False
        Return a :class:`RaggedSinkhornResult` with per-group diagnostics.

    Returns
    -------
    Tensor, ndarray or RaggedSinkhornResult
        The (N, K) labels with the type, dtype and device of ``scores`` (no gradient).

    Raises
    ------
    InvalidArgumentError, ArgumentTypeError
        On bad input, naming the argument (``ptr`` included).
    BackendUnavailableError
        ``segments="torch_scatter"`` without torch-scatter installed.

    Examples
    --------
    >>> import torch
    >>> from otlabel import sinkhorn, sinkhorn_ragged
    >>> scores = torch.randn(7, 3, dtype=torch.float64)
    >>> ptr = torch.tensor([0, 3, 7])                       # groups of 3 and 4 rows
    >>> Q = sinkhorn_ragged(scores, ptr, epsilon=0.5, tol=1e-9)
    >>> torch.allclose(Q[3:], sinkhorn(scores[3:], epsilon=0.5, tol=1e-9))
    True
    >>> torch.allclose(Q[:3].sum(0), torch.ones(3, dtype=torch.float64))  # 3 rows / K = 3 per column
    True
    """
    tensor, was_numpy = to_tensor(scores, "scores")
    if tensor.dim() != 2:
        raise InvalidArgumentError(
            "scores must have shape (N, K): the rows of every group packed one after another; "
            f"got {tuple(tensor.shape)}"
        )
    scores2 = check_scores(tensor)[0][0]
    n_rows, n_cols = scores2.shape
    epsilon = check_epsilon(epsilon)
    n_iter, tol, max_iter, check_every = check_schedule(n_iter, tol, max_iter, check_every)
    implementation = _check_segments(segments)
    dtype = compute_dtype(scores2.dtype)
    checks = DeferredChecks()
    ptr64 = check_ptr(ptr, n_rows, scores2, checks)
    seg = _Segments(ptr64, n_rows, implementation)
    n_groups = seg.n_groups
    score_range = check_scores_finite(scores2, checks)
    prior2 = prior_range = None
    if prior is not None:
        prior3, prior_range = check_prior(prior, scores2.unsqueeze(0), False, checks, check_columns=False)
        prior2 = prior3[0]
        if prior_range is None or prior_range[0] <= 0:  # a strictly positive prior supports every column
            require_column_support(seg.max((prior2 > 0).to(dtype)) > 0, checks, " within a group")
    col = _col_marginal(col_marginal, n_groups, n_cols, scores2, dtype, checks)
    sizes = ptr64.diff().to(dtype)  # (G,)
    if row_marginal is None:  # every row sums to 1
        row = None
        row_mass = torch.ones(n_rows, dtype=dtype, device=scores2.device)
    else:
        row = check_marginal(
            row_marginal,
            "row_marginal",
            n_rows,
            "N",
            1,
            False,
            scores2.unsqueeze(0),
            dtype,
            checks,
            check_sum=False,
        )[0]
        totals = seg.sum(row.unsqueeze(-1)).squeeze(-1)
        checks.require(
            ((totals - 1).abs() <= MARGINAL_SUM_ATOL).all(),
            lambda: InvalidArgumentError(
                f"row_marginal must sum to 1 within each group (within {MARGINAL_SUM_ATOL}); "
                f"group sums range over [{totals.min().item():.6g}, {totals.max().item():.6g}]"
            ),
        )
        row = row / seg.expand(totals)
        row_mass = row * seg.expand(sizes)
    if prior2 is not None and (col_marginal is not None or row_marginal is not None):
        support, live_cols = prior2 > 0, col > 0
        live_rows = torch.ones(n_rows, dtype=torch.bool, device=scores2.device) if row is None else row > 0
        require_reachable_rows((support & seg.expand(live_cols)).any(-1), live_rows, checks)
        require_reachable_columns(seg.max((support & live_rows.unsqueeze(-1)).to(dtype)) > 0, live_cols, checks)
    problem = _RaggedProblem(
        scores=scores2.detach(),
        prior=None if prior2 is None else prior2.detach(),
        epsilon=epsilon,
        row_mass=row_mass,
        col_mass=col * sizes.unsqueeze(-1),
        dtype=dtype,
        n_iter=n_iter,
        tol=tol,
        max_iter=max_iter,
        check_every=check_every,
        checks=checks,
        segments=seg,
        reducer=Reducer(),
        score_range=score_range,
        prior_range=prior_range,
    )
    # "auto" labels equal-size groups in fixed-iteration mode as one batched dense problem
    size = _equal_size(problem) if segments == "auto" and tol is None else None
    with torch.no_grad():
        if size is not None:
            outcome = _dense(problem, size, return_info)
        else:
            outcome = _fixed(problem) if tol is None else _tolerance(problem)
    if outcome.unconverged:
        warnings.warn(
            f"Sinkhorn did not reach tol={tol:g} within max_iter={max_iter} iterations in {outcome.unconverged} "
            f"of {n_groups} groups (largest column-marginal error {outcome.worst_error:.3g}); raise max_iter "
            "or epsilon, or loosen tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    plan = outcome.plan

    def out(value: torch.Tensor, cast: torch.dtype | None = None) -> Array:
        if cast is not None and value.dtype != cast:
            value = value.to(cast)
        return value.cpu().numpy() if was_numpy else value

    labels = out(plan, scores2.dtype)
    if not return_info:
        return labels
    with torch.no_grad():
        row_sums = plan.sum(-1)
        scale = torch.where(problem.row_mass > 0, problem.row_mass, seg.expand(sizes))
        row_error = seg.max(((row_sums - problem.row_mass).abs() / scale).unsqueeze(-1)).squeeze(-1)
        col_error = relative_violation(seg.sum(plan), problem.col_mass)
    return RaggedSinkhornResult(
        labels=labels,
        n_iter=out(outcome.n_iter),
        converged=None if outcome.converged is None else out(outcome.converged),
        row_error=out(row_error),
        col_error=out(col_error),
        log_domain=outcome.log_domain,
        segments="dense" if size is not None else seg.name,
        log_row_scaling=out(outcome.f),
        log_col_scaling=out(outcome.g),
    )
