"""Entropic optimal-transport labelling: :func:`sinkhorn`, :func:`sinkhorn_with_prior`.

Each entry point validates its arguments, builds a :class:`~otlabel._problem.Problem` (what is
solved) and a :class:`~otlabel._problem.Schedule` (how), has a backend solve it, and wraps the
:class:`~otlabel._problem.Solution` into what the caller asked for.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from . import backends
from ._checks import (
    Array,
    DeferredChecks,
    check_backend,
    check_bool,
    check_epsilon,
    check_int,
    check_marginal,
    check_prior,
    check_scores,
    check_scores_finite,
    check_tol,
    compute_dtype,
    device_checks,
    normalise_marginal,
    prior_support,
    require_column_support,
    require_feasible_support,
    require_reachable_columns,
    require_reachable_rows,
)
from ._layout import Dense, Single
from ._marginals import NO_OPTIONS, Options, Resolved, resolve, rules_in_masses
from ._numerics import relative_violation
from ._problem import SINGLE_PROCESS, Problem, Reducer, Schedule, Solution
from .backends import graphs
from .distributed import GroupReducer, gather_rows
from .errors import ConvergenceWarning, InvalidArgumentError

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_with_prior"]

#: Fixed-iteration mode's default number of iterations (SwAV and CASE use 3).
DEFAULT_N_ITER = 3


@dataclass(frozen=True)
class SinkhornResult:
    """Labels and diagnostics of one labelling call (``return_info=True``).

    Attributes
    ----------
    labels : Tensor or ndarray, shape (N, K) or (B, N, K)
        The transport plan Q, in the input's type, dtype and device.
    n_iter : int
        Iterations run (one iteration = one column step and one row step).
    converged : bool or None
        Tolerance mode: whether the column-marginal violation fell below ``tol`` — with
        ``col_penalty``, ``row_penalty``, ``mass`` or ``col_bounds``, whether no scaling (nor,
        with ``mass``, Dykstra's correction of the total) changed by more than ``tol``
        (relatively) in the iteration before a check (stationarity: the column sums
        need not meet the marginal then). Fixed-iteration mode has no criterion and reports ``None``.
    row_error, col_error : float
        Scale-free marginal violations of ``labels`` (computed in the compute dtype before
        any cast back to float16/bfloat16): max over rows (columns) and over the batch of
        ``|Q.sum(-1) - N * row_marginal| / (N * row_marginal)`` (likewise for columns).
        ``row_error`` is at rounding level for the classical problem: every schedule ends with
        a row step. With the marginal options they measure the distance to the nominal marginals
        (``col_marginal``, uniform under ``col_bounds``), which a relaxed, partial or bounded
        problem need not meet: not a violation then.
    backend : str
        The backend that ran (``"torch"`` or ``"triton"``).
    log_domain : bool
        True when the scaling path left the safe floating-point range and the log-domain
        path computed the answer (it is then slower, not less accurate).
    log_row_scaling, log_col_scaling : Tensor or ndarray, shapes (…, N) and (…, K)
        Dual potentials f, g with ``Q = exp(f[:, None] + scores / epsilon + log(prior) + g[None, :])``.
    """

    labels: Array
    n_iter: int
    converged: bool | None
    row_error: float
    col_error: float
    backend: str
    log_domain: bool
    log_row_scaling: Array
    log_col_scaling: Array


def check_schedule(n_iter: Any, tol: Any, max_iter: Any, check_every: Any) -> Schedule:
    """Validate the iteration settings of either mode."""
    tol = check_tol(tol)
    if tol is not None and n_iter is not None:
        raise InvalidArgumentError(
            "n_iter applies to the fixed-iteration mode only; with tol=... bound the work with max_iter"
        )
    n_iter = check_int(DEFAULT_N_ITER if n_iter is None else n_iter, "n_iter", 1)
    return Schedule(n_iter, tol, check_int(max_iter, "max_iter", 1), check_int(check_every, "check_every", 1))


def check_settings(
    epsilon: Any, n_iter: Any, tol: Any, max_iter: Any, check_every: Any, return_info: Any, log_prior: Any
) -> tuple[float, Schedule, bool, bool]:
    """Validate the settings every labelling entry point shares."""
    return (
        check_epsilon(epsilon),
        check_schedule(n_iter, tol, max_iter, check_every),
        check_bool(return_info, "return_info"),
        check_bool(log_prior, "log_prior"),
    )


def autocast_off(scores: Any) -> contextlib.AbstractContextManager:
    """A context in which autocast does not lower the solver's products to half precision."""
    device_type = scores.device.type if isinstance(scores, torch.Tensor) else "cpu"
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return _NO_CONTEXT


_NO_CONTEXT = contextlib.nullcontext()


def _has_zeros(
    prior3: torch.Tensor, prior_range: tuple[float, float] | None, log_prior: bool, reducer: Reducer
) -> bool:
    """Whether a prior has hard zeros anywhere (over all ranks); a host read unless known already."""
    if prior_range is not None and not reducer.distributed:
        return prior_range[0] <= (float("-inf") if log_prior else 0.0)
    local = (~prior_support(prior3, log_prior)).any() if prior3.numel() else torch.zeros((), dtype=torch.bool)
    return bool(reducer.max(local.to(torch.float32).reshape(1)).item() > 0)


class Call(NamedTuple):
    """A validated call: the problem, its schedule, and how to hand the answer back."""

    problem: Problem
    schedule: Schedule
    batched: bool
    was_numpy: bool
    return_info: bool
    backend: str


class _Local(NamedTuple):
    """The arguments of one call (one rank's part of it) after the checks that need no other rank."""

    scores: torch.Tensor
    batched: bool
    was_numpy: bool
    epsilon: float
    schedule: Schedule
    return_info: bool
    log_prior: bool
    backend: str
    checks: DeferredChecks
    dtype: torch.dtype
    score_range: tuple[float, float] | None
    prior: torch.Tensor | None
    prior_range: tuple[float, float] | None
    col: torch.Tensor | None
    row: torch.Tensor | None
    constrained: bool
    live_rows: torch.Tensor | None
    live_cols: torch.Tensor | None
    resolved: Resolved

    def fingerprint(self, validate: str) -> tuple[Any, ...]:
        """What the ranks of a process group must agree on (see ``GroupAgreement.settle``)."""
        return (
            self.scores,
            self.prior,
            self.epsilon,
            self.schedule,
            self.col,
            self.row,
            self.checks,
            self.backend,
            self.return_info,
            self.log_prior,
            validate,
            self.resolved,
        )


def _check_locally(
    scores: Any,
    prior: Any,
    epsilon: Any,
    col_marginal: Any,
    row_marginal: Any,
    n_iter: Any,
    tol: Any,
    max_iter: Any,
    check_every: Any,
    backend: Any,
    return_info: Any,
    validate: Any,
    log_prior: Any,
    options: Options,
    *,
    split: bool,
) -> _Local:
    """Every check one rank can make alone (``split``: its rows are a slice of a global batch)."""
    scores3, batched, was_numpy = check_scores(scores, allow_no_rows=split)
    epsilon, schedule, return_info, log_prior = check_settings(
        epsilon, n_iter, tol, max_iter, check_every, return_info, log_prior
    )
    backend = check_backend(backend)
    checks = DeferredChecks(device_checks(validate, scores3))
    dtype = compute_dtype(scores3.dtype)
    batch, n_rows, n_cols = scores3.shape
    score_range = check_scores_finite(scores3, epsilon, dtype, checks)
    prior3, prior_range = (
        (None, None)
        if prior is None
        else check_prior(prior, scores3, batched, checks, log=log_prior, check_columns=not split)
    )
    if col_marginal is not None:
        col = check_marginal(col_marginal, "col_marginal", n_cols, "K", batch, batched, scores3, dtype, checks)
    elif split:  # the ranks compare their marginals
        col = torch.full((batch, n_cols), 1.0 / n_cols, dtype=dtype, device=scores3.device)
    else:  # equipartition, built directly as masses later
        col = None
    row = (  # a slice of a global row marginal is normalised once every rank's sum is known
        None
        if row_marginal is None
        else check_marginal(
            row_marginal, "row_marginal", n_rows, "N", batch, batched, scores3, dtype, checks, check_sum=not split
        )
    )
    constrained = prior3 is not None and (col_marginal is not None or row_marginal is not None)
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
    resolved = resolve(
        options,
        fixed=schedule.fixed,
        epsilon=epsilon,
        batch=batch,
        n_rows=n_rows,
        n_cols=n_cols,
        batched=batched,
        like=scores3,
        dtype=dtype,
        checks=checks,
        col_marginal_given=col_marginal is not None,
    )
    return _Local(
        scores3,
        batched,
        was_numpy,
        epsilon,
        schedule,
        return_info,
        log_prior,
        backend,
        checks,
        dtype,
        score_range,
        prior3,
        prior_range,
        col,
        row,
        constrained,
        live_rows,
        live_cols,
        resolved,
    )


def build_problem(
    scores: Any,
    prior: Any,
    epsilon: Any,
    col_marginal: Any,
    row_marginal: Any,
    n_iter: Any,
    tol: Any,
    max_iter: Any,
    check_every: Any,
    process_group: Any = None,
    backend: Any = "auto",
    return_info: Any = False,
    validate: Any = "auto",
    log_prior: Any = False,
    options: Options = NO_OPTIONS,
) -> Call:
    """Validate the arguments shared by every dense entry point.

    With a ``process_group``, ``scores`` (and ``prior``, ``row_marginal``) hold this rank's rows
    of a global batch: the local checks run first, then every rank learns whether all ranks
    passed them and agree on the settings (``backend`` and ``return_info`` included), and only
    then run the checks that need the other ranks' rows (see :mod:`otlabel.distributed`).
    """
    reducer = SINGLE_PROCESS if process_group is None else GroupReducer(process_group)
    split = reducer.distributed  # the rows are a slice of a global batch
    arguments = (scores, prior, epsilon, col_marginal, row_marginal, n_iter, tol, max_iter, check_every)
    if split:
        with reducer.agreement() as agreement:
            local = _check_locally(*arguments, backend, return_info, validate, log_prior, options, split=True)
            agreement.settle(*local.fingerprint(validate))
        n_total = agreement.total_rows
    else:  # (no context manager: torch.compile traces this path)
        local = _check_locally(*arguments, backend, return_info, validate, log_prior, options, split=False)
        n_total = local.scores.shape[1]
    scores3, batched, was_numpy, epsilon, schedule, return_info, log_prior, backend, checks = local[:9]
    dtype, score_range, prior3, prior_range, col, row, constrained, live_rows, live_cols, resolved = local[9:]
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
        parts = [support.any(-2)] + ([(support & live_rows.unsqueeze(-1)).any(-2)] if constrained else [])
        reached = reducer.max(torch.stack(parts).to(torch.float32)) > 0
        require_column_support(reached[0], checks, " over all ranks", name="log_prior" if log_prior else "prior")
        if constrained:
            require_reachable_columns(reached[1], live_cols, checks)
    col_mass = (
        torch.full((batch, n_cols), n_total / n_cols, dtype=dtype, device=scores3.device)
        if col is None
        else col * n_total
    )
    row_rule, col_rule, total_mass = rules_in_masses(resolved, row_mass, (batch, n_rows), col_mass, n_total)
    balanced = total_mass is None and row_rule.hard and col_rule.hard
    if (
        balanced
        and prior3 is not None
        and not checks.device_mode
        and _has_zeros(prior3, prior_range, log_prior, reducer)
    ):
        # zeros are hard constraints: decide exactly whether the marginals fit on the support
        checks.raise_now()  # a bad marginal gets its own message first
        rows = row_mass if row_mass is not None else torch.ones_like(scores3[..., 0], dtype=dtype)
        support = prior_support(prior3, log_prior)
        if split:
            support, rows = gather_rows(reducer.group, support, rows)
        require_feasible_support(support, rows, col_mass, dtype)
    # zero masses need a tiny bias in every sum (0/0); without a prior or marginals there are none
    bias = prior is not None or col_marginal is not None or row_marginal is not None or options is not NO_OPTIONS
    if batch == 1:
        layout = Single(n_rows, n_cols, dtype, scores3.device, reducer, bias)
    else:
        layout = Dense(batch, n_rows, n_cols, dtype, scores3.device, reducer, bias)
    problem = Problem(
        scores=scores3.detach(),
        prior=None if prior3 is None else prior3.detach(),
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
    return Call(problem, schedule, batched, was_numpy, return_info, backend)


def _output(tensor: torch.Tensor, batched: bool, was_numpy: bool, dtype: torch.dtype | None = None) -> Array:
    """A (B, ...) result in the caller's shape, dtype and array type."""
    if not batched:
        tensor = tensor.squeeze(0)
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor.numpy() if was_numpy else tensor


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


def _error_name(problem: Problem) -> str:
    """What the tolerance mode measured against ``tol``: the column violation, or stationarity."""
    return "column-marginal error" if problem.balanced else "largest relative change of a scaling or correction"


def finish(problem: Problem, schedule: Schedule, solution: Solution, call: Call) -> Array | SinkhornResult:
    """Turn a backend's solution into what the user asked for; warn on non-convergence."""
    if solution.converged is False:
        warnings.warn(
            f"Sinkhorn did not reach tol={schedule.tol:g} within max_iter={schedule.max_iter} iterations "
            f"({_error_name(problem)} {solution.worst_error:.3g}); raise max_iter or epsilon, or loosen tol",
            ConvergenceWarning,
            stacklevel=4,
        )
    plan = solution.plan
    dtype = problem.scores.dtype
    if dtype == torch.float16:
        check_representable(plan, problem)
    if plan.dim() == 2:  # a single problem's layout, (N, K)
        plan = plan.unsqueeze(0)
    labels = _output(plan, call.batched, call.was_numpy, dtype)
    if not call.return_info:
        return labels
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


def _options(*values: Any) -> Options:
    """The options beyond the classical problem; the shared empty one when none is given."""
    return NO_OPTIONS if all(value is None for value in values) else Options(*values)


def _label(scores: Any, *arguments: Any) -> Array | SinkhornResult:
    """Validate, build, solve, wrap: the body of both dense entry points (a repeated fixed-iteration
    call on CUDA is captured once and replayed as one CUDA graph: :mod:`otlabel.backends.graphs`)."""
    if graphs.eligible(scores, arguments):
        return graphs.call(_label_now, scores, arguments)
    return _label_now(scores, *arguments)


def _label_now(scores: Any, *arguments: Any) -> Array | SinkhornResult:
    with autocast_off(scores):
        call = build_problem(scores, *arguments)
        problem, schedule = call.problem, call.schedule
        solution = backends.select(call.backend, problem, schedule)(problem, schedule)
        return finish(problem, schedule, solution, call)


def sinkhorn(
    scores: Array,
    epsilon: float = 0.05,
    *,
    col_marginal: Any = None,
    row_marginal: Any = None,
    n_iter: int | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    check_every: int = 10,
    backend: str = "auto",
    return_info: bool = False,
    process_group: Any = None,
    validate: str = "auto",
    col_penalty: float | None = None,
    row_penalty: float | None = None,
    mass: float | None = None,
    col_bounds: Any = None,
    init: Any = None,
    acceleration: str | None = None,
) -> Array | SinkhornResult:
    r"""Soft pseudo-labels with prescribed class proportions (entropic optimal transport).

    Returns the transport plan

    .. math::

        Q = \operatorname{diag}(u)\, \exp(S / \varepsilon)\, \operatorname{diag}(v),
        \qquad Q \mathbf{1}_K = N r, \qquad Q^\top \mathbf{1}_N = N c,

    the minimiser of :math:`\langle Q, -S\rangle + \varepsilon\, \mathrm{KL}(Q \,\|\, \mathbf{1})`
    over that transport polytope (the SeLa/SwAV self-labelling problem). With the default
    marginals every row of Q sums to 1 (a soft label) and every column to N/K (equipartition).

    Parameters
    ----------
    scores : Tensor or ndarray, shape (N, K) or (B, N, K)
        Logits or log-probabilities of N samples over K classes or clusters (any float
        dtype; float16/bfloat16 are computed in float32). A per-row constant never changes
        the converged answer (tolerance mode); the fixed-iteration mode reproduces the SwAV
        loop, whose first column step weighs rows by exp(scores / epsilon), so its three-
        iteration labels do depend on it. A numpy input gives a numpy output.
    epsilon : float, default 0.05
        Entropic regularisation (POT's ``reg``, SwAV's ``epsilon``); must be > 0.
        Smaller is sharper. The CASE paper's "ε = 20" is ``epsilon=0.05`` on cosine scores.
    col_marginal : array-like, shape (K,) or (B, K), optional
        Class proportions c (non-negative, summing to 1 within 1e-4 — within the machine
        epsilon of its dtype for a float16/bfloat16 tensor — then renormalised).
        Default: uniform 1/K.
    row_marginal : array-like, shape (N,) or (B, N), optional
        Sample weights r (same rules). Default: uniform 1/N, i.e. rows sum to 1.
    n_iter : int, optional
        Fixed-iteration mode (``tol=None``): number of iterations, default 3. Each iteration
        scales the columns to their marginal, then the rows (the SwAV/CASE schedule), so the
        rows are always exact.
    tol : float, optional
        Tolerance mode: iterate until the column-marginal violation
        ``max_k |Q.sum(0)_k - N c_k| / (N c_k)`` is at most ``tol``.
    max_iter : int, default 1000
        Tolerance mode's budget; running out warns with
        :class:`~otlabel.ConvergenceWarning` and reports ``converged=False``.
    check_every : int, default 10
        Tolerance mode measures the violation every ``check_every`` iterations (the
        measurement is free, but reading it back synchronises with an accelerator).
    backend : {"auto", "torch", "triton"}, default "auto"
        ``"auto"`` uses Triton for CUDA tensors when available, else torch.
    return_info : bool, default False
        Return a :class:`SinkhornResult` instead of the bare labels.
    process_group : torch.distributed.ProcessGroup, optional
        Label the *global* batch of a distributed job: each rank passes its own rows (any
        number, zero included) and gets the labels of those rows, equal to its slice of one
        process labelling the concatenated rows; ``N`` is then the global row count and a
        ``row_marginal`` is this rank's slice of a marginal over all rows (the slices sum to
        1 together). Every rank of the group must make the call, with the same settings
        (checked). Pass ``torch.distributed.group.WORLD`` for all ranks. See
        :mod:`otlabel.distributed` and the guide page "Labelling a global batch across GPUs".
    validate : {"auto", "host", "device"}, default "auto"
        How bad values are reported. ``"host"``: checked on the host, raising a clear error
        (on a GPU read back with the solver's one status read-back). ``"device"``: no host
        synchronisation in the fixed-iteration mode — a failed check, or a scaling path that
        left the safe range, makes every label NaN instead. ``"auto"``: ``"device"`` while
        ``torch.compile`` traces or a CUDA graph captures the call, else ``"host"``. See the
        conventions page, "Bad input without a host synchronisation".
    col_penalty, row_penalty : float, optional
        Relax that side's marginal into a KL penalty of strength tau:
        :math:`\tau\, \mathrm{KL}(Q^\top \mathbf{1} \,\|\, N c)` (resp. for the rows) replaces
        the constraint; tau -> inf (or None, the default) is the hard constraint. POT's
        ``ot.unbalanced.sinkhorn_unbalanced`` with ``M = -scores``, ``reg = epsilon``,
        ``reg_m = (row_penalty, col_penalty)``, ``a = N r``, ``b = N c`` and the reference
        measure ``c = ones`` (POT's default, ``a b^T``, is another problem unless both
        marginals are uniform; with a prior, ``c = prior``) solves the same problem. See the
        guide page "Choosing a marginal".
    mass : float in (0, 1], optional
        Partial transport: label only the fraction m of the mass — rows and columns receive at
        most their marginal's mass, m N in all (POT's ``ot.partial.entropic_partial_wasserstein``
        with ``m = mass * N``). Default: all of it.
    col_bounds : (lower, upper), optional
        Class proportions each column's mass must stay between (times N; either may be None),
        instead of a ``col_marginal`` (Sinkhorn Label Allocation); rows keep their mass.
    init : SinkhornResult, (log_row_scaling, log_col_scaling) or log_col_scaling, optional
        Warm start from the potentials of a previous call (e.g. the previous training step's);
        with the column potential alone the rows follow from it. Never changes the converged
        answer (tolerance mode); in fixed-iteration mode the iterations start from it. With
        ``mass`` or ``col_bounds`` Dykstra's corrections restart from the potentials, so a warm
        start saves fewer iterations there.
    acceleration : {None, "anderson"}, default None
        Tolerance mode: Anderson-accelerated column steps (a small least-squares problem per
        iteration, on the device; restarts when the residual grows), engaged once the plain
        iterations prove slow: about 10x fewer iterations on slowly converging problems
        (``benchmarks/bench_acceleration.py``); plain steps take over for good where it stops
        making progress. Not with ``mass`` or ``col_bounds``. See the guide page "Choosing a
        marginal", "Faster convergence".

    Returns
    -------
    Tensor, ndarray or SinkhornResult
        Q with the shape, dtype, device and array type of ``scores`` (no gradient). Every
        entry lies in [0, its row's mass]: [0, 1] with the default marginals (with
        ``row_penalty`` a row may receive more than its mass, and so may an entry).

    Raises
    ------
    InvalidArgumentError, ArgumentTypeError
        On bad input; the message names the argument (``scores / epsilon`` beyond the compute
        dtype's range included; float16 labels that would overflow 65504).

    Examples
    --------
    >>> import torch
    >>> from otlabel import sinkhorn
    >>> scores = torch.randn(6, 3, dtype=torch.float64)
    >>> Q = sinkhorn(scores, epsilon=0.5, tol=1e-9)
    >>> torch.allclose(Q.sum(1), torch.ones(6, dtype=torch.float64))
    True
    >>> torch.allclose(Q.sum(0), torch.full((3,), 2.0, dtype=torch.float64))
    True
    """
    return _label(
        scores,
        None,
        epsilon,
        col_marginal,
        row_marginal,
        n_iter,
        tol,
        max_iter,
        check_every,
        process_group,
        backend,
        return_info,
        validate,
        False,
        _options(col_penalty, row_penalty, mass, col_bounds, init, acceleration),
    )


def sinkhorn_with_prior(
    scores: Array,
    prior: Array,
    epsilon: float = 0.05,
    *,
    log_prior: bool = False,
    col_marginal: Any = None,
    row_marginal: Any = None,
    n_iter: int | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    check_every: int = 10,
    backend: str = "auto",
    return_info: bool = False,
    process_group: Any = None,
    validate: str = "auto",
    col_penalty: float | None = None,
    row_penalty: float | None = None,
    mass: float | None = None,
    col_bounds: Any = None,
    init: Any = None,
    acceleration: str | None = None,
) -> Array | SinkhornResult:
    r"""Pseudo-labels pulled toward a prior :math:`\hat Q` (CASE Eq. 12).

    Returns

    .. math::

        Q = \operatorname{diag}(u)\, \bigl(\hat Q \odot \exp(S / \varepsilon)\bigr)\, \operatorname{diag}(v),

    the minimiser of :math:`\langle Q, -S\rangle + \varepsilon\, \mathrm{KL}(Q \,\|\, \hat Q)` over
    the transport polytope with rows summing to :math:`N r` and columns to :math:`N c`
    (derivation: CASE appendix G). Zeros in the prior are hard constraints: Q is zero there.
    Only the prior's shape matters up to per-row and per-column factors, so it need not be
    normalised. A uniform prior gives exactly :func:`sinkhorn`.

    Parameters
    ----------
    scores : Tensor or ndarray, shape (N, K) or (B, N, K)
        As in :func:`sinkhorn`.
    prior : Tensor or ndarray, same shape as ``scores``
        Non-negative and finite, with no all-zero row or column (no broadcasting). Its zeros
        must admit the marginals (decided exactly by a maximum flow before iterating; an
        infeasible support raises :class:`~otlabel.InfeasibleProblemError` naming the rows and
        columns).
    log_prior : bool, default False
        ``prior`` holds :math:`\log \hat Q` instead: finite, or -inf for a hard zero. For
        priors too sharp for their dtype (see :func:`gaussian_rank_prior` with ``log=True``).
    epsilon, col_marginal, row_marginal, n_iter, tol, max_iter, check_every, backend, return_info
        As in :func:`sinkhorn`.
    process_group, validate, col_penalty, row_penalty, mass, col_bounds, init, acceleration
        As in :func:`sinkhorn` (with ``process_group``, ``prior`` holds this rank's rows too).

    Returns
    -------
    Tensor, ndarray or SinkhornResult
        As in :func:`sinkhorn`.

    Examples
    --------
    >>> import torch
    >>> from otlabel import gaussian_rank_prior, sinkhorn_with_prior
    >>> fg = torch.tensor([0.9, 0.1, 0.4, 0.7])               # foreground score per snippet
    >>> prior = gaussian_rank_prior(fg, torch.tensor([0.2, 0.8]), sigma=0.3)
    >>> Q = sinkhorn_with_prior(torch.zeros(4, 2), prior, epsilon=0.05, tol=1e-6)
    >>> Q.argmax(1).tolist()                                   # foreground-like snippets -> cluster 1
    [1, 0, 0, 1]
    """
    return _label(
        scores,
        prior,
        epsilon,
        col_marginal,
        row_marginal,
        n_iter,
        tol,
        max_iter,
        check_every,
        process_group,
        backend,
        return_info,
        validate,
        log_prior,
        _options(col_penalty, row_penalty, mass, col_bounds, init, acceleration),
    )
