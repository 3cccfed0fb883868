"""The one way in: (scores, prior, :class:`~otlabel._options.Options`) to a solved, wrapped answer.

Every entry point — :func:`~otlabel.sinkhorn`, :func:`~otlabel.sinkhorn_with_prior`,
:func:`~otlabel.sinkhorn_ragged`, :class:`~otlabel.OnlineLabeller` and the CUDA-graph cache of
:mod:`otlabel.graphs` — comes through here:

1. **check**: the scores, the prior and the options' data (marginals, bounds, warm start) against
   each other, value checks following the validation mode (:mod:`otlabel._checks`); with a
   ``process_group`` inside the ranks' agreement (:mod:`otlabel.distributed`);
2. **build** a :class:`~otlabel._problem.Problem` (*what*: scores, prior, masses, rules, layout)
   and its :class:`~otlabel._problem.Schedule` (*how*);
3. **solve** with the backend :func:`otlabel.backends.select` picks;
4. **finish**: warn on non-convergence, cast back to the caller's dtype and array type, and
   measure the diagnostics of ``return_info=True``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import torch

from . import backends, graphs
from ._checks import (
    _SCALED_SCORE_LIMIT,
    Array,
    check_bool,
    check_marginal,
    check_prior,
    check_ptr,
    check_scores,
    check_scores_finite,
    check_segments,
    compute_dtype,
    marginal_atol,
    normalise_marginal,
    prior_support,
    real_number,
    require_column_support,
    require_feasible_support,
    require_reachable_columns,
    require_reachable_rows,
    to_tensor,
    torch_scatter_module,
    vector_tensor,
)
from ._deferred import DeferredChecks, device_checks
from ._gradients import Spec, check_differentiable, differentiable_plan
from ._layout import Dense, Segmented, Segments, Single
from ._marginals import Resolved, Rules, Sizes, resolve, rules_in_masses
from ._numerics import StatusReader, relative_violation
from ._options import Options
from ._problem import Problem, Schedule, Solution
from ._reduce import SINGLE_PROCESS, Reducer
from ._results import RaggedSinkhornResult, SinkhornResult
from ._streamed import (
    Factored,
    HardLabels,
    Streamed,
    TopLabels,
    realise,
    round_to_quotas,
    rows_per_block,
    top_entries,
)
from .distributed import GroupReducer, gather_rows
from .errors import ArgumentTypeError, ConvergenceWarning, InvalidArgumentError
from .labels import hard_labels, integer_quotas

__all__ = ["autocast_off", "label", "label_ragged", "solve"]


def autocast_off(scores: Any) -> contextlib.AbstractContextManager:
    """A context in which autocast does not lower the solver's products to half precision."""
    # (``is_cpu`` first: reading ``device.type`` costs more than the rest of this check)
    device_type = "cpu" if not isinstance(scores, torch.Tensor) or scores.is_cpu else scores.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return _NO_CONTEXT


_NO_CONTEXT = contextlib.nullcontext()


class Call(NamedTuple):
    """A validated call: the problem, its options (the schedule among them), and how to hand the
    answer back."""

    problem: Problem
    options: Options
    batched: bool
    was_numpy: bool

    @property
    def schedule(self) -> Schedule:
        return self.options.schedule


# ---------------------------------------------------------------------------------------- dense


class _Local(NamedTuple):
    """One rank's part of a dense call after the checks that need no other rank."""

    scores: torch.Tensor  #: (B, N, K)
    batched: bool
    was_numpy: bool
    checks: DeferredChecks
    dtype: torch.dtype  #: the compute dtype
    score_range: tuple[float, float] | None
    prior: torch.Tensor | None  #: (B, N, K)
    prior_range: tuple[float, float] | None
    col: torch.Tensor | None  #: (B, K) proportions; None: equipartition
    row: torch.Tensor | None  #: (B, N) proportions; None: every row sums to 1
    constrained: bool  #: a prior with custom marginals: which rows and columns must be reached
    live_rows: torch.Tensor | None
    live_cols: torch.Tensor | None
    resolved: Resolved


def _require_prior_for_log_prior(prior: Any, options: Options) -> None:
    if options.log_prior and prior is None:
        raise InvalidArgumentError(
            "log_prior=True says that prior holds log Q-hat, but no prior was given (pass prior=..., or drop log_prior)"
        )


def _check_locally(scores: Any, prior: Any, options: Options, *, split: bool) -> _Local:
    """Every check one rank can make alone (``split``: its rows are a slice of a global batch)."""
    options.raise_error()
    _require_prior_for_log_prior(prior, options)
    scores3, batched, was_numpy = check_scores(scores, allow_no_rows=split)
    checks = DeferredChecks(device_checks(options.validate, scores3))
    dtype = compute_dtype(scores3.dtype)
    batch, n_rows, n_cols = scores3.shape
    check_top_k(options, n_cols)
    log_prior = options.log_prior
    score_range = check_scores_finite(scores3, options.epsilon, dtype, checks)
    prior3, prior_range = (
        (None, None)
        if prior is None
        else check_prior(prior, scores3, batched, checks, log=log_prior, check_columns=not split)
    )
    if options.col_marginal is not None:
        col = check_marginal(options.col_marginal, "col_marginal", n_cols, "K", batch, batched, scores3, dtype, checks)
    elif split:  # the ranks compare their marginals
        col = torch.full((batch, n_cols), 1.0 / n_cols, dtype=dtype, device=scores3.device)
    else:  # equipartition, built directly as masses later
        col = None
    row = (  # a slice of a global row marginal is normalised once every rank's sum is known
        None
        if options.row_marginal is None
        else check_marginal(
            options.row_marginal,
            "row_marginal",
            n_rows,
            "N",
            batch,
            batched,
            scores3,
            dtype,
            checks,
            check_sum=not split,
        )
    )
    constrained = prior3 is not None and (options.col_marginal is not None or options.row_marginal is not None)
    live_rows = live_cols = None
    if constrained:
        live_rows = torch.ones_like(scores3[..., 0], dtype=torch.bool) if row is None else row > 0
        live_cols = torch.ones((batch, n_cols), dtype=torch.bool, device=scores3.device) if col is None else col > 0
        support = prior_support(prior3, log_prior)
        # a side that may keep less than its mass (penalised, or partial transport) need not reach
        if options.mass is None and options.row_penalty is None:
            require_reachable_rows((support & live_cols.unsqueeze(-2)).any(-1), live_rows, checks)
        if not split and options.mass is None and options.col_penalty is None:
            require_reachable_columns((support & live_rows.unsqueeze(-1)).any(-2), live_cols, checks)
    resolved = resolve(options, Sizes(batch, n_rows, n_cols, batched), scores3, dtype, checks)
    return _Local(
        scores=scores3,
        batched=batched,
        was_numpy=was_numpy,
        checks=checks,
        dtype=dtype,
        score_range=score_range,
        prior=prior3,
        prior_range=prior_range,
        col=col,
        row=row,
        constrained=constrained,
        live_rows=live_rows,
        live_cols=live_cols,
        resolved=resolved,
    )


def _has_zeros(
    prior3: torch.Tensor, prior_range: tuple[float, float] | None, log_prior: bool, reducer: Reducer
) -> bool:
    """Whether a prior has hard zeros anywhere (over all ranks); a host read unless known already."""
    if prior_range is not None and not reducer.distributed:
        return prior_range[0] <= (float("-inf") if log_prior else 0.0)
    local = (~prior_support(prior3, log_prior)).any() if prior3.numel() else torch.zeros((), dtype=torch.bool)
    return bool(reducer.max(local.to(torch.float32).reshape(1)).item() > 0)


def build_problem(scores: Any, prior: Any, options: Options) -> Call:
    """Validate a dense call (scores (N, K) or (B, N, K)) and build its problem.

    With a ``process_group``, ``scores`` (and ``prior``, ``row_marginal``) hold this rank's rows
    of a global batch: the local checks run first, then every rank learns whether all ranks
    passed them and agree on the settings (``backend`` and ``return_info`` included), and only
    then run the checks that need the other ranks' rows (see :mod:`otlabel.distributed`).
    """
    reducer = SINGLE_PROCESS if options.process_group is None else GroupReducer(options.process_group)
    split = reducer.distributed  # the rows are a slice of a global batch
    if split:
        with reducer.agreement() as agreement:
            local = _check_locally(scores, prior, options, split=True)
            agreement.settle(local.scores, local.prior, local.col, local.row, local.checks, local.resolved, options)
        n_total = agreement.total_rows
    else:  # (no context manager: torch.compile traces this path)
        local = _check_locally(scores, prior, options, split=False)
        n_total = local.scores.shape[1]
    scores3, checks, dtype, prior3, col, row = (
        local.scores,
        local.checks,
        local.dtype,
        local.prior,
        local.col,
        local.row,
    )
    log_prior = options.log_prior
    batch, n_rows, n_cols = scores3.shape
    # From here on every rank of a process group is known to take the same branches; what
    # follows up to the Problem only matters for a slice of a global batch (process_group).
    if row is None:  # every row sums to 1
        row_mass = None
    elif split:
        total = reducer.sum(row.sum(-1))
        row_mass = n_total * normalise_marginal(row, total, "row_marginal", checks, " over all ranks")
    else:
        row_mass = n_total * row
    if split and prior3 is not None:
        support = prior_support(prior3, log_prior)
        parts = [support.any(-2)] + ([(support & local.live_rows.unsqueeze(-1)).any(-2)] if local.constrained else [])
        reached = reducer.max(torch.stack(parts).to(torch.float32)) > 0
        require_column_support(reached[0], checks, " over all ranks", name="log_prior" if log_prior else "prior")
        if local.constrained:
            require_reachable_columns(reached[1], local.live_cols, checks)
    # zero masses need a tiny bias in every sum (0/0); without a prior or marginals there are none
    bias = (
        prior is not None or options.col_marginal is not None or options.row_marginal is not None or not options.plain
    )
    layout = _dense_layout(batch, n_rows, n_cols, dtype, scores3.device, reducer, bias)
    col_mass = layout.equipartition(n_total) if col is None else col * n_total
    rules = rules_in_masses(local.resolved, row_mass, (batch, n_rows), col_mass, n_total)
    balanced = rules.total_mass is None and rules.row.hard and rules.col.hard
    if (
        balanced
        and prior3 is not None
        and not checks.device_mode
        and _has_zeros(prior3, local.prior_range, log_prior, reducer)
    ):
        # zeros are hard constraints: decide exactly whether the marginals fit on the support
        checks.raise_now()  # a bad marginal gets its own message first
        rows = row_mass if row_mass is not None else torch.ones_like(scores3[..., 0], dtype=dtype)
        support = prior_support(prior3, log_prior)
        if split:
            support, rows = gather_rows(reducer.group, support, rows)
        require_feasible_support(support, rows, col_mass, dtype)
    masses, ranges = (row_mass, col_mass), (local.score_range, local.prior_range)
    problem = _problem(options, scores3, prior3, layout, checks, masses, ranges, rules, local.resolved.init)
    return Call(problem, options, local.batched, local.was_numpy)


def _dense_layout(
    batch: int, n_rows: int, n_cols: int, dtype: torch.dtype, device: torch.device, reducer: Reducer, bias: bool
) -> Dense:
    """The layout of B dense problems. One process's layouts are kept: they hold no state of a call,
    only its sizes and constants (the tiny ``bias``, equipartition's column masses), never written
    to (not while compiling, nor while capturing a CUDA graph, whose tensors must not outlive it)."""
    kind = Single if batch == 1 else Dense
    if (
        reducer is not SINGLE_PROCESS
        or torch.compiler.is_compiling()
        or (device.type == "cuda" and torch.cuda.is_current_stream_capturing())
    ):
        return kind(batch, n_rows, n_cols, dtype, device, reducer, bias)
    key = (batch, n_rows, n_cols, dtype, device, bias)
    layout = _LAYOUTS.get(key)
    if layout is None:
        if len(_LAYOUTS) >= _LAYOUTS_LIMIT:
            _LAYOUTS.clear()
        layout = _LAYOUTS[key] = kind(batch, n_rows, n_cols, dtype, device, reducer, bias)
        layout.kept = True
    return layout


_LAYOUTS: dict[tuple[Any, ...], Dense] = {}
_LAYOUTS_LIMIT = 64


def _problem(
    options: Options,
    scores: torch.Tensor,
    prior: torch.Tensor | None,
    layout: Dense | Segmented,
    checks: DeferredChecks,
    masses: tuple[torch.Tensor | None, torch.Tensor],
    ranges: tuple[tuple[float, float] | None, tuple[float, float] | None],
    rules: Rules,
    init: tuple[torch.Tensor | None, torch.Tensor] | None,
) -> Problem:
    """The problem of a checked call: (row, column) masses, (score, prior) ranges when known."""
    return Problem(
        scores=scores.detach() if scores.requires_grad else scores,  # (an op fewer per call)
        prior=None if prior is None else prior.detach(),
        log_prior=options.log_prior,
        epsilon=options.epsilon,
        row_mass=masses[0],
        col_mass=masses[1],
        dtype=masses[1].dtype,  # the column masses are in the compute dtype
        layout=layout,
        checks=checks,
        device_checks=checks.device_mode,
        score_range=ranges[0],
        prior_range=ranges[1],
        return_potentials=options.return_info,
        row_rule=rules.row,
        col_rule=rules.col,
        total_mass=rules.total_mass,
        init=init,
    )


def _output(tensor: torch.Tensor, batched: bool, was_numpy: bool, dtype: torch.dtype | None = None) -> Array:
    """A (B, ...) result in the caller's shape, dtype and array type."""
    return _in_callers_type(tensor if batched else tensor.squeeze(0), dtype, was_numpy)


def check_top_k(options: Options, n_cols: int) -> None:
    """``top_k`` (with ``output="topk"``) must not exceed K."""
    if options.output == "topk" and options.top_k > n_cols:
        raise InvalidArgumentError(f"top_k must be at most K = {n_cols} (the number of columns), got {options.top_k}")


def as_output(
    labels: torch.Tensor, options: Options, dtype: torch.dtype, was_numpy: bool, col_mass: torch.Tensor | None = None
) -> Any:
    """The plan ``labels`` (..., K) as ``options.output`` asks — the plan, :class:`~otlabel.HardLabels`
    (per row its largest entry's column, the lowest on a tie, and that entry; with "quotas" the
    columns of :func:`~otlabel.hard_labels` for the column masses ``col_mass``) or
    :class:`~otlabel.TopLabels` — in the caller's dtype and array type (indices int64)."""
    if options.output == "plan":
        return _in_callers_type(labels, dtype, was_numpy)
    lead = labels.shape[:-1]
    rows = labels.reshape(-1, labels.shape[-1])
    if options.output in ("hard", "quotas"):
        if options.output == "hard":
            best = rows.max(-1)
            chosen = (best.indices.view(lead), best.values.view(lead))
        elif not bool(torch.isfinite(labels).all()):  # a failed device check: no rounding of NaN
            chosen = (labels.new_zeros(lead, dtype=torch.int64), labels.new_full(lead, math.nan))
        else:
            assert col_mass is not None
            marginal = col_mass / col_mass.sum(-1, keepdim=True)
            columns = hard_labels(labels, marginal.reshape(lead[:-1] + labels.shape[-1:]), one_hot=False)
            chosen = (columns, labels.gather(-1, columns.unsqueeze(-1)).squeeze(-1))
        return delivered(HardLabels(*chosen), dtype, was_numpy)
    top = top_entries(rows, options.top_k)
    return delivered(TopLabels(top.values.view(*lead, -1), top.indices.view(*lead, -1)), dtype, was_numpy)


def failed_as_minus_one(columns: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns -1 where the plan's value is NaN: labels of a call whose device-side check failed
    (``validate="device"`` makes the plan NaN) must not look like labels; no read-back."""
    return torch.where(torch.isnan(values), -1, columns), values


def delivered(chosen: Any, dtype: torch.dtype, was_numpy: bool) -> Any:
    """Chosen labels — the plan, :class:`~otlabel.HardLabels` or :class:`~otlabel.TopLabels` — in the
    caller's dtype and array type (columns int64, -1 where a device check failed)."""
    if isinstance(chosen, HardLabels):
        columns, mass = failed_as_minus_one(chosen.labels, chosen.mass)
        return HardLabels(_in_callers_type(columns, None, was_numpy), _in_callers_type(mass, dtype, was_numpy))
    if isinstance(chosen, TopLabels):
        columns, values = failed_as_minus_one(chosen.indices, chosen.values)
        return TopLabels(_in_callers_type(values, dtype, was_numpy), _in_callers_type(columns, None, was_numpy))
    return _in_callers_type(chosen, dtype, was_numpy)


def _in_callers_type(tensor: torch.Tensor, dtype: torch.dtype | None, was_numpy: bool) -> Array:
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor.cpu().numpy() if was_numpy else tensor


def check_representable(plan: torch.Tensor, problem: Problem) -> None:
    """Raise when float16 labels would overflow (float16 holds up to 65504; an entry never exceeds
    its row's mass, so only a custom row marginal over more than 65504 rows can get there)."""
    if problem.row_mass is None or problem.device_checks:
        return
    largest_mass = problem.row_mass.shape[-1] if not problem.reducer.distributed else float("inf")
    limit = torch.finfo(torch.float16).max
    if largest_mass <= limit:
        return
    largest = float(problem.reducer.max(plan.amax().reshape(1) if plan.numel() else plan.new_zeros(1)).item())
    if largest > limit:
        raise InvalidArgumentError(
            f"labels reach {largest:.6g}, beyond float16's largest number {limit:g} (a row_marginal entry times "
            "N rows): pass float32 or bfloat16 scores to get labels that hold it"
        )


def warn_unconverged(call: Call | RaggedCall, solution: Solution, stacklevel: int) -> None:
    """The :class:`~otlabel.ConvergenceWarning` of a tolerance-mode call that ran out of iterations,
    naming what it measured: the column-marginal error of the balanced problem, the stationarity
    of the others (relaxed, partial or bounded marginals need not meet the column marginal)."""
    problem, schedule = call.problem, call.schedule
    error, groups = f"{solution.worst_error:.3g}", ""
    if problem.layout.independent:  # a ragged call's groups stop one by one
        groups = f" in {solution.unconverged} of {problem.layout.n_problems} groups"
    if problem.balanced:
        measure = f"{'largest ' if groups else ''}column-marginal error {error}"
    else:
        measure = f"stationarity not reached: a scaling or correction still changed by {'up to ' if groups else ''}"
        measure += f"{error} (relatively) in its last iteration"
    warnings.warn(
        f"Sinkhorn did not reach tol={schedule.tol:g} within max_iter={schedule.max_iter} iterations{groups} "
        f"({measure}); raise max_iter or epsilon, or loosen tol",
        ConvergenceWarning,
        stacklevel=stacklevel + 1,
    )


def raise_failed_checks(problem: Problem) -> None:
    """Device mode's pending checks, read back where a result's diagnostics are read back anyway
    (``return_info``'s errors): the first failed one raises, on every rank alike (the flags are
    max-reduced over a process group first), instead of NaN labels with NaN errors."""
    if problem.checks.flags:
        StatusReader(problem.checks, problem.col_mass.device, problem.reducer).read()


def finish(call: Call, solution: Solution) -> Array | SinkhornResult:
    """Turn a backend's solution into what the user asked for; warn on non-convergence."""
    problem = call.problem
    if solution.converged is False:
        warn_unconverged(call, solution, stacklevel=5)
    plan = solution.plan
    dtype = problem.scores.dtype
    if dtype == torch.float16:
        check_representable(plan, problem)
    # the torch backend gives a single problem as (N, K), the Triton backend as (1, N, K)
    labels = plan
    if call.batched and plan.dim() == 2:
        labels = plan.unsqueeze(0)
    elif not call.batched and plan.dim() == 3:
        labels = plan.squeeze(0)
    labels = as_output(labels, call.options, dtype, call.was_numpy, problem.col_mass)
    if not call.options.return_info:
        return labels
    raise_failed_checks(problem)
    if plan.dim() == 2:
        plan = plan.unsqueeze(0)
    # accumulate in float64 so that the reported errors are those of the returned plan,
    # not of a float32 summation
    reducer = problem.reducer
    row_error = reducer.max(relative_violation(plan.sum(-1, dtype=torch.float64), problem.rows_mass()))
    row_error = row_error.amax().item()
    col_sums = reducer.sum(plan.sum(-2, dtype=torch.float64))
    col_error = relative_violation(col_sums, problem.col_mass).amax().item()
    return SinkhornResult(
        labels=labels,
        n_iter=solution.n_iter,
        converged=solution.converged,
        row_error=row_error,
        col_error=col_error,
        backend=solution.backend,
        log_domain=solution.log_domain,
        log_row_scaling=_output(solution.log_row_scaling, call.batched, call.was_numpy),
        log_col_scaling=_output(solution.log_col_scaling, call.batched, call.was_numpy),
    )


def solve(call: Call) -> Solution:
    """Solve a built call with the backend its options ask for (see :func:`otlabel.backends.select`)."""
    problem, options = call.problem, call.options
    return backends.select(options.backend, problem, options.schedule)(problem, options.schedule)


def label(scores: Any, prior: Any, options: Options) -> Array | SinkhornResult:
    """Check, build, solve, finish: the body of every dense entry point (a repeated fixed-iteration
    call on CUDA is captured once and replayed as one CUDA graph: :mod:`otlabel.graphs`)."""
    if graphs.eligible(scores, prior, options):
        return graphs.call(label_now, scores, prior, options)
    return label_now(scores, prior, options)


def label_now(scores: Any, prior: Any, options: Options) -> Array | SinkhornResult:
    """:func:`label` without the CUDA-graph cache."""
    if options.differentiable:
        return _label_differentiably(scores, prior, options)
    with autocast_off(scores):
        call = build_problem(scores, prior, options)
        return finish(call, solve(call))


def _label_differentiably(scores: Any, prior: Any, options: Options, with_potential: bool = False) -> Any:
    """:func:`label_now` with labels that carry gradients (``differentiable=True``): the same
    forward, then the plan wrapped by :func:`otlabel._gradients.differentiable_plan`
    (``with_potential``: also the column potential, as :func:`label_with_potentials` returns it)."""
    check_differentiable(options, scores)
    with autocast_off(scores):
        call = build_problem(scores, prior, options)
        problem = call.problem
        implicit = not call.schedule.fixed
        wants_potentials = implicit and prior is not None and not options.log_prior
        if wants_potentials or with_potential:
            problem.return_potentials = True
        solution = solve(call)
        plan = solution.plan
        batched_plan = plan if plan.dim() == 3 else plan.unsqueeze(0)
        potentials = None
        if wants_potentials:
            potentials = (
                solution.log_row_scaling.reshape(batched_plan.shape[:-1]),
                solution.log_col_scaling.reshape(batched_plan.shape[:-2] + batched_plan.shape[-1:]),
            )
        spec = Spec.of(problem, call.schedule, options)
        masses = (problem.row_mass, problem.col_mass, problem.total_mass)
        constant_prior = problem.prior if prior is not None and not isinstance(prior, torch.Tensor) else prior
        differentiable = differentiable_plan(
            batched_plan, potentials, masses, spec, scores, constant_prior, options.row_marginal, options.col_marginal
        )
        solution.plan = differentiable if plan.dim() == 3 else differentiable.squeeze(0)
        if with_potential:
            return finish(call, solution), solution.log_col_scaling
        return finish(call, solution)


def label_with_potentials(scores: torch.Tensor, options: Options) -> tuple[torch.Tensor, torch.Tensor]:
    """The labels of a dense call and its column potential, without the diagnostics' read-back
    (what a warm-starting labeller carries to its next call)."""
    if options.differentiable:
        return _label_differentiably(scores, None, options, with_potential=True)
    with autocast_off(scores):
        call = build_problem(scores, None, options)
        problem = call.problem
        problem.return_potentials = True
        solution = solve(call)
        return finish(call, solution), solution.log_col_scaling


# ---------------------------------------------------------------------------------------- ragged


class RaggedCall(NamedTuple):
    """A validated ragged call; ``dense_size``: equal-size groups labelled as one batched problem."""

    problem: Problem
    options: Options
    was_numpy: bool
    dense_size: int | None

    @property
    def schedule(self) -> Schedule:
        return self.options.schedule


def _group_col_marginal(
    value: Any, n_groups: int, n_cols: int, scores: torch.Tensor, dtype: torch.dtype, checks: DeferredChecks
) -> torch.Tensor:
    """A ragged call's column marginal, (K,) shared or (G, K), as (G, K) proportions."""
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


def build_ragged(scores: Any, ptr: Any, prior: Any, options: Options, segments: Any) -> RaggedCall:
    """Validate a ragged call (groups of rows packed in (N, K), CSR offsets ``ptr``) and build its problem."""
    tensor, was_numpy = to_tensor(scores, "scores")
    if tensor.dim() != 2:
        raise InvalidArgumentError(
            "scores must have shape (N, K): the rows of every group packed one after another; "
            f"got {tuple(tensor.shape)}"
        )
    scores2 = check_scores(tensor)[0][0]
    n_rows, n_cols = scores2.shape
    check_top_k(options, n_cols)
    if options.output == "quotas":
        raise InvalidArgumentError(
            "output='quotas' is not available for sinkhorn_ragged: take the labels and call hard_labels per group"
        )
    epsilon, log_prior, col_marginal, row_marginal = (
        options.epsilon,
        options.log_prior,
        options.col_marginal,
        options.row_marginal,
    )
    _require_prior_for_log_prior(prior, options)
    implementation = check_segments(segments)
    checks = DeferredChecks(device_checks(options.validate, scores2))
    dtype = compute_dtype(scores2.dtype)
    ptr64 = check_ptr(ptr, n_rows, scores2, checks)
    scatter = torch_scatter_module() if implementation == "torch_scatter" else None
    seg = Segments(ptr64, n_rows, implementation, scatter)
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
    col = _group_col_marginal(col_marginal, n_groups, n_cols, scores2, dtype, checks)
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
    sizes_of_groups = Sizes(n_groups, n_rows, n_cols, batched=True, packed_rows=True)
    resolved = resolve(options, sizes_of_groups, scores2.unsqueeze(0), dtype, checks)
    rules = rules_in_masses(resolved, row_mass, (n_rows,), col_mass, sizes)
    balanced = rules.total_mass is None and rules.row.hard and rules.col.hard
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
    masses, ranges = (row_mass, col_mass), (score_range, prior_range)
    problem = _problem(options, scores2, prior2, layout, checks, masses, ranges, rules, resolved.init)
    # "auto" labels equal-size groups in fixed-iteration mode as one batched dense problem
    dense_size = None
    if segments == "auto" and options.schedule.fixed and not checks.device_mode and options.plain:
        dense_size = _equal_size(ptr64, n_rows)
    return RaggedCall(problem, options, was_numpy, dense_size)


def _solve_equal_groups(call: RaggedCall) -> Solution:
    """Equal-size groups, fixed-iteration mode: one batched (G, size, K) problem. The same schedule
    per group as the segment path (and as a loop of ``sinkhorn``), at the cost of two batched
    matrix products per iteration instead of segment reductions."""
    problem, size = call.problem, call.dense_size
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
    solution = backends.select("torch", dense, call.schedule)(dense, call.schedule)
    solution.plan = solution.plan.reshape(-1, n_cols)
    if solution.log_row_scaling is not None:
        solution.log_row_scaling = solution.log_row_scaling.reshape(-1)
    return solution


def finish_ragged(call: RaggedCall, solution: Solution) -> Array | RaggedSinkhornResult:
    """:func:`finish` for a ragged call: per-group diagnostics."""
    problem, schedule = call.problem, call.schedule
    layout = problem.layout
    assert isinstance(layout, Segmented)
    seg = layout.segments
    if solution.unconverged:
        warn_unconverged(call, solution, stacklevel=4)
    plan = solution.plan

    def out(value: torch.Tensor, cast: torch.dtype | None = None) -> Array:
        if cast is not None and value.dtype != cast:
            value = value.to(cast)
        return value.cpu().numpy() if call.was_numpy else value

    labels = as_output(plan, call.options, problem.scores.dtype, call.was_numpy)
    if not call.options.return_info:
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
        segments="dense" if call.dense_size else seg.name,
        log_row_scaling=out(solution.log_row_scaling),
        log_col_scaling=out(solution.log_col_scaling),
    )


def label_ragged(scores: Any, ptr: Any, prior: Any, options: Options, segments: Any) -> Array | RaggedSinkhornResult:
    """Check, build, solve, finish: the body of :func:`~otlabel.sinkhorn_ragged`."""
    if options.differentiable:
        check_differentiable(options, scores)
    with autocast_off(scores):
        call = build_ragged(scores, ptr, prior, options, segments)
        problem = call.problem
        implicit = options.differentiable and not call.schedule.fixed
        wants_potentials = implicit and prior is not None and not options.log_prior
        if wants_potentials:
            problem.return_potentials = True
        if call.dense_size is not None:  # equal-size groups, fixed mode: one batched dense problem
            solution = _solve_equal_groups(call)
        else:
            solution = backends.select("torch", problem, call.schedule)(problem, call.schedule)
        if options.differentiable:
            spec = Spec.of(problem, call.schedule, options)
            potentials = (solution.log_row_scaling, solution.log_col_scaling) if wants_potentials else None
            solution.plan = differentiable_plan(
                solution.plan,
                potentials,
                (problem.row_mass, problem.col_mass, problem.total_mass),
                spec,
                scores,
                problem.prior if prior is not None and not isinstance(prior, torch.Tensor) else prior,
                options.row_marginal,
                options.col_marginal,
                ptr=problem.layout.segments.ptr,
            )
        return finish_ragged(call, solution)


# ---------------------------------------------------------------------------------------- features


class FeaturesCall(NamedTuple):
    """A validated :func:`~otlabel.sinkhorn_features` call: the problem over a streamed layout."""

    problem: Problem
    options: Options
    was_numpy: bool
    output_dtype: torch.dtype  #: the features' and prototypes' promoted dtype

    @property
    def schedule(self) -> Schedule:
        return self.options.schedule


def _feature_matrix(value: Any, name: str, what: str) -> tuple[torch.Tensor, bool]:
    tensor, was_numpy = to_tensor(value, name)
    if tensor.dim() != 2:
        raise InvalidArgumentError(f"{name} must have shape {what}, got {tuple(tensor.shape)}")
    if not tensor.dtype.is_floating_point:
        raise ArgumentTypeError(f"{name} must hold floating-point numbers, got dtype {tensor.dtype}")
    return tensor.detach(), was_numpy


def _all_finite(matrix: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """Whether every entry is finite, as a 0-d bool tensor (no read-back), checked by chunks:
    ``torch.isfinite`` of the whole matrix makes temporaries of 1.7x its size (1.1 GB for SeLa's
    656 MB of features)."""
    rows = max(chunk_rows, 4096)
    finite = torch.ones((), dtype=torch.bool, device=matrix.device)
    for start in range(0, matrix.shape[0], rows):
        finite &= torch.isfinite(matrix[start : start + rows]).all()
    return finite


def _row_norms(matrix: torch.Tensor, dtype: torch.dtype, chunk_rows: int) -> torch.Tensor:
    """The row norms of ``matrix`` in ``dtype``, computed by chunks (no full-size copy)."""
    if matrix.shape[0] == 0:
        return matrix.new_zeros(0, dtype=dtype)
    parts = [
        torch.linalg.vector_norm(matrix[start : start + chunk_rows].to(dtype), dim=-1)
        for start in range(0, matrix.shape[0], chunk_rows)
    ]
    return torch.cat(parts)


def _inverse_norms(
    matrix: torch.Tensor, name: str, dtype: torch.dtype, chunk_rows: int, checks: DeferredChecks
) -> torch.Tensor:
    """The inverse row norms of ``matrix`` (a zero row cannot be normalised)."""
    norms = _row_norms(matrix, dtype, chunk_rows)
    checks.require(
        (norms > 0).all(),
        lambda: InvalidArgumentError(
            f"{name} row {int((norms == 0).nonzero()[0, 0])} is all zeros: it has no direction to normalise "
            "(normalize=True); drop it or pass normalize=False"
        ),
    )
    return torch.reciprocal(norms)


class Streaming(NamedTuple):
    """The settings of :func:`~otlabel.sinkhorn_features` beyond the shared options, as given."""

    scale: Any = 1.0
    normalize: Any = False
    chunk_rows: Any = None
    chunk_memory: Any = None


def build_features(features: Any, prototypes: Any, options: Options, streaming: Streaming) -> FeaturesCall:
    """Validate a call on scores ``scale * X C^T`` (never formed) and build its problem over the
    :class:`~otlabel._streamed.Streamed` layout."""
    options.raise_error()
    if options.differentiable:
        raise InvalidArgumentError(
            "differentiable=True is not available for sinkhorn_features: form the scores and call sinkhorn"
        )
    reducer = SINGLE_PROCESS if options.process_group is None else GroupReducer(options.process_group)
    split = reducer.distributed
    x, was_numpy = _feature_matrix(features, "features", "(N, d): one row per sample")
    c, _ = _feature_matrix(prototypes, "prototypes", "(K, d): one row per cluster or class")
    n_rows, dim = x.shape
    n_cols = c.shape[0]
    if c.shape[1] != dim:
        raise InvalidArgumentError(
            f"features have d = {dim} entries per row but prototypes have d = {c.shape[1]}; they must match"
        )
    if c.device != x.device:
        raise InvalidArgumentError(
            f"prototypes are on device {c.device} but features are on {x.device}; move them to the same device"
        )
    if n_cols == 0 or dim == 0:
        raise InvalidArgumentError(f"prototypes must have K >= 1 rows and d >= 1 columns, got {tuple(c.shape)}")
    if n_rows == 0 and not split:
        raise InvalidArgumentError("features has no rows (N = 0): nothing to label")
    check_top_k(options, n_cols)
    scale, normalize, chunk_rows, chunk_memory = streaming
    scale = real_number(scale, f"scale must be a real number, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise InvalidArgumentError(f"scale must be finite, got {scale}")
    normalize = check_bool(normalize, "normalize")
    output_dtype = torch.promote_types(x.dtype, c.dtype)
    dtype = compute_dtype(output_dtype)
    # where the fused pass runs (the rest of the call runs on the torch blocks either way)
    triton = backends.select_features(options.backend, x.device, dtype) == "triton"
    if triton and not x.is_contiguous():
        x = x.contiguous()  # (the kernel reads rows of d contiguous entries)
    chunk_rows = rows_per_block(n_cols, dtype, chunk_rows, chunk_memory)
    checks = DeferredChecks(device_checks(options.validate, x))
    # the scores of a call, as far as the checks of marginals, bounds and warm starts see them:
    # their shape, device and dtype (an expanded view: no memory)
    like = x.new_zeros(()).expand(1, n_rows, n_cols)
    for matrix, name in ((x, "features"), (c, "prototypes")):
        checks.require(
            _all_finite(matrix, chunk_rows),
            lambda name=name: InvalidArgumentError(f"{name} contains NaN or infinite values"),
        )
    inverse_norms = None
    c_compute = c.to(dtype)
    if normalize:
        c_compute = c_compute * _inverse_norms(c, "prototypes", dtype, n_cols, checks).unsqueeze(-1)
        inverse_norms = _inverse_norms(x, "features", dtype, chunk_rows, checks)
    fused_prototypes = None
    if triton:
        fused_prototypes, c_compute = _fused_prototypes(c_compute, x.dtype, checks)
    score_range = None
    if not checks.device_mode:
        # |S| <= |scale| |x| |c|: a bound on the score range, read on the host (one number), lets
        # the scaling path take a single global shift instead of two extra passes for per-row and
        # per-column maxima
        checks.raise_now()
        if normalize and fused_prototypes is None:
            bound = abs(scale)
        elif normalize:  # unit rows, rounded to the features' dtype: norms 1 to ~2**-8
            bound = abs(scale) * float(torch.linalg.vector_norm(c_compute, dim=-1).amax())
        else:
            norm_x = float(_row_norms(x, dtype, chunk_rows).amax()) if n_rows else 0.0
            bound = abs(scale) * norm_x * float(torch.linalg.vector_norm(c_compute, dim=-1).amax())
        if split:
            bound = float(reducer.max(torch.tensor([bound], dtype=torch.float64, device=x.device)).item())
        limit = _SCALED_SCORE_LIMIT[dtype]
        if not bound / options.epsilon <= limit:
            raise InvalidArgumentError(
                f"scale * |features| * |prototypes| / epsilon reaches {bound / options.epsilon:.3g} "
                f"(epsilon = {options.epsilon:g}), beyond what {str(dtype).removeprefix('torch.')} can iterate on "
                f"(at most {limit:.3g}): raise epsilon, lower scale or normalize the rows"
            )
        score_range = (-bound, bound)

    def local_marginals() -> tuple[torch.Tensor | None, torch.Tensor | None, Resolved]:
        if options.col_marginal is not None:
            col = check_marginal(options.col_marginal, "col_marginal", n_cols, "K", 1, False, like, dtype, checks)
        else:
            col = torch.full((1, n_cols), 1.0 / n_cols, dtype=dtype, device=x.device) if split else None
        row = None
        if options.row_marginal is not None:
            row = check_marginal(
                options.row_marginal, "row_marginal", n_rows, "N", 1, False, like, dtype, checks, check_sum=not split
            )
        resolved = resolve(options, Sizes(1, n_rows, n_cols, False), like, dtype, checks)
        return col, row, resolved

    if split:
        with reducer.agreement() as agreement:
            col, row, resolved = local_marginals()
            agreement.settle(like, None, col, row, checks, resolved, options)
        n_total = agreement.total_rows
        _require_replicated(c_compute, reducer)
    else:
        col, row, resolved = local_marginals()
        n_total = n_rows
    if row is None:
        row_mass = None
    elif split:
        row_mass = n_total * normalise_marginal(
            row, reducer.sum(row.sum(-1)), "row_marginal", checks, " over all ranks"
        )
    else:
        row_mass = n_total * row
    col_mass = torch.full((1, n_cols), n_total / n_cols, dtype=dtype, device=x.device) if col is None else col * n_total
    rules = rules_in_masses(resolved, row_mass, (1, n_rows), col_mass, n_total)
    bias = options.col_marginal is not None or options.row_marginal is not None or not options.plain
    schedule = options.schedule
    # the fused row pass that ends a fixed schedule (a column-only warm start takes one more first)
    final_pass = None
    if schedule.fixed:
        final_pass = schedule.n_iter + (1 if resolved.init is not None and resolved.init[0] is None else 0)
    layout = Streamed(
        n_rows,
        n_cols,
        dtype,
        x.device,
        reducer,
        bias,
        None if row_mass is None else row_mass.view(-1),
        accurate=not schedule.fixed,
        final_pass=final_pass,
        speculate_hard=options.output == "hard",
        fused_columns=rules.total_mass is None and rules.row.hard and rules.col.hard,
        triton=triton,
    )
    scores = Factored(x, c_compute, scale, inverse_norms, chunk_rows, fused_prototypes)
    problem = _problem(
        options, scores, None, layout, checks, (row_mass, col_mass), (score_range, None), rules, resolved.init
    )
    problem.return_potentials = options.return_info or options.output == "quotas"  # (quotas rank log entries)
    return FeaturesCall(problem, options, was_numpy, output_dtype)


def _fused_prototypes(
    prototypes: torch.Tensor, features_dtype: torch.dtype, checks: DeferredChecks
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prototypes for the Triton kernel's fused pass, which multiplies operands of one dtype,
    and the prototypes of every other pass, in the compute dtype.

    float32 features: the prototypes as they are (float32), multiplied in IEEE float32. Half
    precision features (float16, bfloat16): the prototypes (normalised first with
    ``normalize=True``) **rounded to the features' dtype**, so that the kernel multiplies on
    tensor cores (exact products, float32 sums); the other passes then take the rounded
    prototypes too, so that the whole call solves one problem, the torch path's for prototypes
    rounded to the features' precision (relative rounding 2**-9 in bfloat16, 2**-12 in float16
    per entry: what the features' own rounding already costs). A prototype beyond float16's range
    is an error.
    """
    if features_dtype == prototypes.dtype:
        return prototypes.contiguous(), prototypes
    fused = prototypes.to(features_dtype).contiguous()
    name = str(features_dtype).removeprefix("torch.")
    checks.require(
        torch.isfinite(fused).all(),
        lambda: InvalidArgumentError(
            f"prototypes have entries beyond {name}'s range: the Triton pass multiplies them in the features' "
            f"dtype ({name}); pass float32 features or backend='torch'"
        ),
    )
    return fused, fused.to(prototypes.dtype)


def _require_replicated(prototypes: torch.Tensor, reducer: Reducer) -> None:
    """Every rank must hold the same prototypes (they are replicated, not sharded): compare two
    checksums over the ranks (a plain and a position-weighted sum)."""
    flat = prototypes.reshape(-1).to(torch.float64)
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    sums = torch.stack((flat.sum(), (flat * weights).sum()))
    spread = reducer.max(torch.cat((sums, -sums)))
    if not torch.equal(spread[:2], -spread[2:]):
        raise InvalidArgumentError(
            "process_group: the ranks hold different prototypes; sinkhorn_features shards the features by rows "
            "and needs the same prototypes (K, d) on every rank"
        )


def finish_features(call: FeaturesCall, solution: Solution) -> Any:
    """The solution of a features call as its ``output`` asks, in the caller's dtype and array type."""
    problem, options = call.problem, call.options
    layout = problem.layout
    assert isinstance(layout, Streamed)
    if solution.converged is False:
        warn_unconverged(call, solution, stacklevel=4)
    if options.output == "quotas":
        chosen = _quota_labels(problem, solution)
    else:
        chosen = realise(solution.plan, options.output, options.top_k, layout)
    labels = delivered(chosen, call.output_dtype, call.was_numpy)
    if not options.return_info:
        return labels
    raise_failed_checks(problem)
    # the returned plan's marginal errors, accumulated in float64 (one more pass unless it is held)
    if options.output == "plan":
        row_sums, col_sums = chosen.sum(-1, dtype=torch.float64), chosen.sum(-2, dtype=torch.float64)
    else:
        device = problem.col_mass.device
        # (written in place: block-sized temporaries between small kept tensors fragment the heap,
        # which grew the process by 400 MB at 20,000 x 3,000 when the row sums were a list)
        row_sums = torch.empty(layout.n_rows, dtype=torch.float64, device=device)
        col_sums = torch.zeros(layout.n_cols, dtype=torch.float64, device=device)
        for rows, block in layout._blocks(solution.plan):
            torch.sum(block, -1, dtype=torch.float64, out=row_sums[rows])
            col_sums += block.sum(0, dtype=torch.float64)
    reducer = problem.reducer
    row_error = reducer.max(relative_violation(row_sums.unsqueeze(0), problem.rows_mass().reshape(1, -1)))
    col_error = relative_violation(reducer.sum(col_sums).unsqueeze(0), problem.col_mass)
    return SinkhornResult(
        labels=labels,
        n_iter=solution.n_iter,
        converged=solution.converged,
        row_error=row_error.amax().item(),
        col_error=col_error.amax().item(),
        backend=solution.backend,
        log_domain=solution.log_domain,
        log_row_scaling=_in_callers_type(solution.log_row_scaling.reshape(-1), None, call.was_numpy),
        log_col_scaling=_in_callers_type(solution.log_col_scaling.reshape(-1), None, call.was_numpy),
    )


def _quota_labels(problem: Problem, solution: Solution) -> HardLabels:
    """Hard labels with exactly ``integer_quotas`` of the column masses per column, streamed:
    :func:`~otlabel._streamed.round_to_quotas` on the solution's potentials."""
    scores = problem.scores
    assert isinstance(scores, Factored)
    f, g = solution.log_row_scaling.reshape(-1), solution.log_col_scaling.reshape(-1)
    if bool(torch.isnan(f).any() | torch.isnan(g).any()):  # a failed device check: no rounding of NaN
        n_rows = scores.shape[0]
        return HardLabels(torch.full((n_rows,), -1, device=f.device), torch.full((n_rows,), math.nan, device=f.device))
    quotas = integer_quotas(problem.col_mass.reshape(-1), scores.shape[0])
    normalize = scores.inverse_norms is not None
    columns, log_entries = round_to_quotas(
        scores.features, scores.prototypes, scores.scale / problem.epsilon, f, g, quotas, scores.chunk_rows, normalize
    )
    mass = torch.exp(log_entries)
    cap = problem.row_mass.reshape(-1) if problem.row_mass is not None else 1.0
    if problem.row_rule.exponent == 1.0:
        mass = torch.minimum(mass, cap) if isinstance(cap, torch.Tensor) else mass.clamp(max=cap)
    return HardLabels(columns, mass)


def label_features(features: Any, prototypes: Any, options: Options, streaming: Streaming) -> Any:
    """Check, build, solve, finish: the body of :func:`~otlabel.sinkhorn_features`."""
    with autocast_off(features), torch.no_grad():
        call = build_features(features, prototypes, options, streaming)
        problem = call.problem
        solution = backends.select("torch", problem, call.schedule)(problem, call.schedule)
        layout = problem.layout
        assert isinstance(layout, Streamed)
        if layout.triton_passes:  # the solver core ran on torch, its fused passes in the Triton kernel
            solution.backend = "triton"
        return finish_features(call, solution)
