"""Many small labelling problems at once: :func:`sinkhorn_ragged`.

G independent problems (one per video, image or crop) with their own row counts are packed
into one (N, K) tensor, group g owning rows ``ptr[g]:ptr[g+1]`` (CSR offsets, as in
torch-scatter and PyTorch Geometric). One call labels them all with the solver core of
:func:`~otlabel.sinkhorn` (same schedule, same numerical safeguards) over the segmented layout
of :mod:`otlabel._layout`: per-group column shifts, per-group column marginals, per-group
convergence, every per-group quantity a segment reduction over contiguous rows — with plain
PyTorch (a sparse CSR product) or, on request, torch-scatter's ``segment_csr``.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _core
from ._checks import (
    Array,
    DeferredChecks,
    check_marginal,
    check_prior,
    check_scores,
    check_scores_finite,
    compute_dtype,
    device_checks,
    marginal_atol,
    prior_support,
    require_column_support,
    require_feasible_support,
    require_reachable_columns,
    require_reachable_rows,
    to_tensor,
    vector_tensor,
)
from ._layout import Dense, Segmented, Segments
from ._marginals import NO_OPTIONS, Options, resolve, rules_in_masses
from ._numerics import relative_violation
from ._problem import Problem, Schedule, Solution
from .errors import ArgumentTypeError, BackendUnavailableError, ConvergenceWarning, InvalidArgumentError
from .sinkhorn import _error_name, _options, autocast_off, check_settings

__all__ = ["RaggedSinkhornResult", "sinkhorn_ragged"]

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
        isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in ptr
    ):
        outside = [int(v) for v in ptr if not 0 <= int(v) <= n_rows]
        if outside:  # also keeps integers beyond int64 out of torch.tensor
            raise InvalidArgumentError(
                f"ptr entries must lie in [0, N] = [0, {n_rows}] (row offsets into scores); got {outside[:3]}"
            )
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
    if isinstance(value, (list, tuple)):  # a (nested) sequence: its shape is known once it is an array
        value = vector_tensor(value, "col_marginal", scores)
    shape = tuple(value.shape) if hasattr(value, "shape") else None
    if shape is not None and len(shape) == 2 and shape != (n_groups, n_cols):
        raise InvalidArgumentError(
            f"col_marginal must have shape (K,) = ({n_cols},) or (G, K) = ({n_groups}, {n_cols}), got {shape}"
        )
    marginal = check_marginal(value, "col_marginal", n_cols, "K", n_groups, True, scores.unsqueeze(0), dtype, checks)
    if marginal.shape != (n_groups, n_cols):  # a nested sequence of another shape
        raise InvalidArgumentError(
            f"col_marginal must have shape (K,) = ({n_cols},) or (G, K) = ({n_groups}, {n_cols}), "
            f"got {tuple(marginal.shape)}"
        )
    return marginal


def _equal_size(ptr: torch.Tensor, n_rows: int) -> int | None:
    """The common group size when every group has the same number of rows, else None."""
    n_groups = ptr.numel() - 1
    if n_rows % n_groups:
        return None
    size = n_rows // n_groups
    equal = torch.arange(0, n_rows + 1, size, device=ptr.device)
    return size if torch.equal(ptr, equal) else None


def sinkhorn_ragged(
    scores: Array,
    ptr: Any,
    epsilon: float = 0.05,
    *,
    prior: Array | None = None,
    log_prior: bool = False,
    col_marginal: Any = None,
    row_marginal: Any = None,
    n_iter: int | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    check_every: int = 10,
    segments: str = "auto",
    return_info: bool = False,
    validate: str = "auto",
    col_penalty: float | None = None,
    row_penalty: float | None = None,
    mass: float | None = None,
    col_bounds: Any = None,
    init: Any = None,
    acceleration: str | None = None,
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
    log_prior : bool, default False
        ``prior`` holds the log of the prior (-inf for a hard zero), as in
        :func:`~otlabel.sinkhorn_with_prior`.
    validate : {"auto", "host", "device"}, default "auto"
        As in :func:`~otlabel.sinkhorn` (device checks turn every label NaN on failure;
        equal-size groups then take the segment path, whose check needs no read-back).
    col_penalty, row_penalty, mass, col_bounds, init, acceleration
        As in :func:`~otlabel.sinkhorn`, per group: ``col_bounds`` are proportions of each
        group's rows, ``mass`` a fraction of each group's mass; ``init`` takes the
        ``log_row_scaling`` (N,) and ``log_col_scaling`` (G, K) or (K,) of a previous call.

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
    with autocast_off(scores):
        problem, schedule, was_numpy, dense_size = _build(
            scores,
            ptr,
            epsilon,
            prior,
            log_prior,
            col_marginal,
            row_marginal,
            n_iter,
            tol,
            max_iter,
            check_every,
            segments,
            return_info,
            validate,
            _options(col_penalty, row_penalty, mass, col_bounds, init, acceleration),
        )
        if dense_size is not None:  # equal-size groups, fixed mode: one batched dense problem
            solution = _solve_dense(problem, schedule, dense_size)
        else:
            solution = _core.solve(problem, schedule)
        return _finish(problem, schedule, solution, was_numpy, return_info, "dense" if dense_size else None)


def _build(
    scores: Any,
    ptr: Any,
    epsilon: Any,
    prior: Any,
    log_prior: Any,
    col_marginal: Any,
    row_marginal: Any,
    n_iter: Any,
    tol: Any,
    max_iter: Any,
    check_every: Any,
    segments: Any,
    return_info: Any,
    validate: Any,
    options: Options = NO_OPTIONS,
) -> tuple[Problem, Schedule, bool, int | None]:
    """Validate a ragged call; return (problem, schedule, was_numpy, dense size or None)."""
    tensor, was_numpy = to_tensor(scores, "scores")
    if tensor.dim() != 2:
        raise InvalidArgumentError(
            "scores must have shape (N, K): the rows of every group packed one after another; "
            f"got {tuple(tensor.shape)}"
        )
    scores2 = check_scores(tensor)[0][0]
    n_rows, n_cols = scores2.shape
    epsilon, schedule, return_info, log_prior = check_settings(
        epsilon, n_iter, tol, max_iter, check_every, return_info, log_prior
    )
    implementation = _check_segments(segments)
    checks = DeferredChecks(device_checks(validate, scores2))
    dtype = compute_dtype(scores2.dtype)
    ptr64 = check_ptr(ptr, n_rows, scores2, checks)
    seg = Segments(ptr64, n_rows, implementation, _torch_scatter() if implementation == "torch_scatter" else None)
    n_groups = seg.n_groups
    score_range = check_scores_finite(scores2, epsilon, dtype, checks)
    prior2 = prior_range = None
    if prior is not None:
        prior3, prior_range = check_prior(
            prior, scores2.unsqueeze(0), False, checks, log=log_prior, check_columns=False
        )
        prior2 = prior3[0]
        if prior_range is None or prior_range[0] <= (-np.inf if log_prior else 0):  # zeros: check every group
            require_column_support(
                seg.max(prior_support(prior2, log_prior).to(dtype)) > 0,
                checks,
                " within a group",
                name="log_prior" if log_prior else "prior",
            )
    col = _col_marginal(col_marginal, n_groups, n_cols, scores2, dtype, checks)
    sizes = ptr64.diff().to(dtype)  # (G,)
    if row_marginal is None:  # every row sums to 1
        row = row_mass = None
    else:
        row_tensor = check_marginal(
            row_marginal, "row_marginal", n_rows, "N", 1, False, scores2.unsqueeze(0), dtype, checks, check_sum=False
        )[0]
        totals = seg.sum(row_tensor.unsqueeze(-1)).squeeze(-1)
        atol = marginal_atol(row_marginal.dtype if isinstance(row_marginal, torch.Tensor) else torch.float64)
        checks.require(
            ((totals - 1).abs() <= atol).all(),
            lambda: InvalidArgumentError(
                f"row_marginal must sum to 1 within each group (within {atol:g}); "
                f"group sums range over [{totals.min().item():.6g}, {totals.max().item():.6g}]"
            ),
        )
        row = row_tensor / seg.expand(totals)
        row_mass = row * seg.expand(sizes)
    col_mass = col * sizes.unsqueeze(-1)
    resolved = resolve(
        options,
        fixed=schedule.fixed,
        epsilon=epsilon,
        batch=n_groups,
        n_rows=n_rows,
        n_cols=n_cols,
        batched=True,
        like=scores2.unsqueeze(0),
        dtype=dtype,
        checks=checks,
        col_marginal_given=col_marginal is not None,
        packed_rows=True,
    )
    row_rule, col_rule, total_mass = rules_in_masses(resolved, row_mass, (n_rows,), col_mass, sizes)
    balanced = total_mass is None and row_rule.hard and col_rule.hard
    if prior2 is not None:
        support = prior_support(prior2, log_prior)
        if col_marginal is not None or row_marginal is not None:
            live_cols = col > 0
            live_rows = torch.ones(n_rows, dtype=torch.bool, device=scores2.device) if row is None else row > 0
            # a side that may keep less than its mass (penalised, or partial transport) need not reach
            if options.mass is None and options.row_penalty is None:
                require_reachable_rows((support & seg.expand(live_cols)).any(-1), live_rows, checks)
            if options.mass is None and options.col_penalty is None:
                reached = seg.max((support & live_rows.unsqueeze(-1)).to(dtype)) > 0
                require_reachable_columns(reached, live_cols, checks)
        zeros_possible = prior_range is None or prior_range[0] <= (-np.inf if log_prior else 0)
        if balanced and not checks.device_mode and zeros_possible:
            if prior_range is not None or bool((~support).any()):
                checks.raise_now()
                _require_feasible_groups(support, row_mass, col_mass, ptr64, dtype)
    layout = Segmented(seg, n_rows, n_cols, dtype, scores2.device)
    problem = Problem(
        scores=scores2.detach(),
        prior=None if prior2 is None else prior2.detach(),
        log_prior=log_prior,
        epsilon=epsilon,
        row_mass=row_mass,
        col_mass=col_mass,
        dtype=dtype,
        layout=layout,
        checks=checks,
        device_checks=checks.device_mode,
        score_range=score_range,
        prior_range=prior_range,
        return_potentials=return_info,
        row_rule=row_rule,
        col_rule=col_rule,
        total_mass=total_mass,
        init=resolved.init,
    )
    if resolved.accelerate:
        schedule = schedule._replace(accelerate=True)
    # "auto" labels equal-size groups in fixed-iteration mode as one batched dense problem
    dense_size = None
    if segments == "auto" and schedule.fixed and not checks.device_mode and options is NO_OPTIONS:
        dense_size = _equal_size(ptr64, n_rows)
    return problem, schedule, was_numpy, dense_size


def _require_feasible_groups(
    support: torch.Tensor, row_mass: torch.Tensor | None, col_mass: torch.Tensor, ptr: torch.Tensor, dtype: torch.dtype
) -> None:
    """The exact support check of :func:`~otlabel._checks.require_feasible_support`, group by group."""
    bounds = ptr.tolist()
    for group, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows = torch.ones(end - begin, dtype=dtype, device=support.device) if row_mass is None else row_mass[begin:end]
        require_feasible_support(
            support[None, begin:end], rows[None], col_mass[group : group + 1], dtype, f" (group {group})"
        )


def _solve_dense(problem: Problem, schedule: Schedule, size: int) -> Solution:
    """Equal-size groups, fixed-iteration mode: one batched (G, size, K) problem. The same schedule
    per group as the segment path (and as a loop of ``sinkhorn``), at the cost of two batched
    matrix products per iteration instead of segment reductions."""
    n_groups, n_cols = problem.col_mass.shape

    def batched(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.reshape(n_groups, size, *tensor.shape[1:])

    dense = Problem(
        scores=batched(problem.scores),
        prior=batched(problem.prior),
        log_prior=problem.log_prior,
        epsilon=problem.epsilon,
        row_mass=batched(problem.row_mass),
        col_mass=problem.col_mass,
        dtype=problem.dtype,
        layout=Dense(n_groups, size, n_cols, problem.dtype, problem.scores.device),
        checks=problem.checks,
        device_checks=problem.device_checks,
        score_range=problem.score_range,
        prior_range=problem.prior_range,
        return_potentials=problem.return_potentials,
    )
    solution = _core.solve(dense, schedule)
    solution.plan = solution.plan.reshape(-1, n_cols)
    if solution.log_row_scaling is not None:
        solution.log_row_scaling = solution.log_row_scaling.reshape(-1)
    return solution


def _finish(
    problem: Problem,
    schedule: Schedule,
    solution: Solution,
    was_numpy: bool,
    return_info: bool,
    ran: str | None,
) -> Array | RaggedSinkhornResult:
    layout = problem.layout
    assert isinstance(layout, Segmented)
    seg = layout.segments
    if solution.unconverged:
        warnings.warn(
            f"Sinkhorn did not reach tol={schedule.tol:g} within max_iter={schedule.max_iter} iterations in "
            f"{solution.unconverged} of {seg.n_groups} groups (largest {_error_name(problem).removeprefix('largest ')} "
            f"{solution.worst_error:.3g}); raise max_iter or epsilon, or loosen tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    plan = solution.plan

    def out(value: torch.Tensor, cast: torch.dtype | None = None) -> Array:
        if cast is not None and value.dtype != cast:
            value = value.to(cast)
        return value.cpu().numpy() if was_numpy else value

    labels = out(plan, problem.scores.dtype)
    if not return_info:
        return labels
    with torch.no_grad():
        sizes = seg.ptr.diff().to(problem.dtype)
        row_mass = problem.rows_mass()
        scale = torch.where(row_mass > 0, row_mass, seg.expand(sizes))
        row_error = seg.max(((plan.sum(-1) - row_mass).abs() / scale).unsqueeze(-1)).squeeze(-1)
        col_error = relative_violation(seg.sum(plan), problem.col_mass)
    n_iter = solution.problem_n_iter
    if n_iter is None:
        n_iter = torch.full((seg.n_groups,), schedule.n_iter, dtype=torch.int64, device=plan.device)
    return RaggedSinkhornResult(
        labels=labels,
        n_iter=out(n_iter),
        converged=None if solution.problem_converged is None else out(solution.problem_converged),
        row_error=out(row_error),
        col_error=out(col_error),
        log_domain=solution.log_domain,
        segments=ran or seg.name,
        log_row_scaling=out(solution.log_row_scaling),
        log_col_scaling=out(solution.log_col_scaling),
    )
