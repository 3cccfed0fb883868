"""Fused GPU backend in Triton: one read of the scores per Sinkhorn iteration.

The schedule is the torch backend's (column step, then row step, ``n`` times; rows last;
the first column step sees the unshifted rows as the SwAV loop does), computed on log
scalings so that nothing overflows (see :mod:`otlabel.backends._triton_kernels`):

* every pass over the N x K scores does the row step of one iteration *and* accumulates the
  column sums for the next column step, so ``n`` iterations read the scores ``n + 1`` times
  and write the plan once (the torch backend forms an exponentiated copy of the matrix and
  reads it twice per iteration);
* a problem with ``N * K <= SMALL_PROBLEM`` runs entirely in one program, so it is **one
  kernel launch** (tolerance mode included: the convergence checks happen in the kernel), and
  so is a batch of them in fixed-iteration mode;
* a larger problem, or a batch in tolerance mode (whose problems must stop together, as in the
  torch backend), is split over many programs, with one pass launch and one small column-step
  launch per iteration; tolerance mode reads the violation back every ``check_every`` iterations.

Rows are computed in the log domain with their maxima taken out, so ``|scores/epsilon|`` of 1e4
in float32 is safe. Column sums are plain sums on the fast path; when one leaves the safe float32
range (a column receiving less than ~1e-31 of mass, e.g. a class marginal of 1e-36) the problem is
rerun with log-sum-exp column sums, which are exact over the whole float32 range.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType

import torch

from .._numerics import StatusReader, log_kernel, raise_infeasible, safe_range
from .._problem import Problem, Schedule, Solution

NAME = "triton"

#: Largest K: one row must fit in one program's registers (K is padded to a power of two).
MAX_K = 8192
#: Problems with N * K up to this run in a single program (one launch for the whole batch).
SMALL_PROBLEM = 1 << 18
#: Elements per tile (BLOCK_N x BLOCK_K) on a GPU: a row tile of a single-program problem,
#: resp. of one of the many programs of a large problem. The interpreter, which pays per
#: operation rather than per element, uses larger tiles.
TILE_SINGLE = 8192
TILE_MULTI = 4096
TILE_INTERPRETED = 1 << 16
#: Large problems: programs per streaming multiprocessor (enough loads in flight to saturate
#: memory bandwidth), and programs per problem under the interpreter.
PROGRAMS_PER_SM = 8
PROGRAMS_INTERPRETED = 4
#: ... but at least this many rows per program, so that the per-program column partials
#: (2 K floats) stay small next to the program's rows (K floats each): at most ~6 % more traffic.
MIN_ROWS_PER_PROGRAM = 32
#: Columns per program of the column-step kernel of large problems.
COMBINE_BLOCK_K = 32

#: Compiler options of every launch: multiply-adds contracted to FMAs (one rounding instead of
#: two; triton's default so far, which triton 3.9 warns will change).
_OPTIONS = {"enable_fp_fusion": True}
#: Column sums below this leave the safe float32 range (the torch backend's criterion).
_LOWEST_SUM = safe_range(torch.float32)[0]

_kernels_module: ModuleType | None = None


def _kernels() -> ModuleType:
    """The kernel module (imported on first use: importing triton is slow and optional)."""
    global _kernels_module
    if _kernels_module is None:
        from . import _triton_kernels

        _kernels_module = _triton_kernels
    return _kernels_module


def unavailable_reason(problem: Problem, schedule: Schedule) -> str | None:
    """Why this backend cannot solve ``problem`` here, or None if it can."""
    try:
        kernels = _kernels()
    except ImportError as exc:
        return f"triton is not installed ({exc}); install it with pip install 'otlabel[triton]'"
    device = problem.scores.device
    if kernels.interpreting() != kernels.INTERPRETED:
        return (
            f"TRITON_INTERPRET was {'set' if kernels.INTERPRETED else 'unset'} when otlabel's triton kernels were "
            "defined and has changed since; set it once, before the first use"
        )
    if device.type == "cpu":
        if not kernels.INTERPRETED:
            return (
                "scores are on the CPU; the triton backend runs on CUDA tensors (or on the CPU in "
                "Triton's interpreter, with TRITON_INTERPRET=1 set before otlabel's triton backend is first used)"
            )
    elif device.type != "cuda":
        return f"scores are on a {device.type!r} device; the triton backend runs on CUDA tensors"
    if problem.scores.dtype == torch.float64:
        return "the triton backend computes in float32, got float64 scores (use backend='torch')"
    _, n_rows, n_cols = problem.scores.shape
    if n_cols > MAX_K:
        return f"K = {n_cols} columns exceed the triton backend's limit of {MAX_K} (use backend='torch')"
    if n_rows * n_cols >= 2**31:
        return f"N * K = {n_rows * n_cols} elements per problem exceed the triton backend's 32-bit indexing"
    if problem.reducer.distributed:
        return "labelling over a process group needs all-reduced column sums between passes (use backend='torch')"
    if not problem.balanced or problem.init is not None or schedule.accelerate:
        return (
            "penalised, bounded or partial marginals, warm starts and acceleration run on the torch backend "
            "(backend='torch')"
        )
    return None


def _next_power_of_2(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _num_warps(tile: int) -> int:
    # about 16 tile elements per thread: vectorised loads, no register spills (checked with ptxas)
    return max(4, min(16, tile // 512))


class _Launch:
    """Tile sizes and grid for one problem shape."""

    def __init__(self, problem: Problem, schedule: Schedule, interpreted: bool):
        batch, n_rows, n_cols = problem.scores.shape
        self.single = n_rows * n_cols <= SMALL_PROBLEM and (schedule.fixed or batch == 1)
        tile = TILE_INTERPRETED if interpreted else TILE_SINGLE if self.single else TILE_MULTI
        self.block_k = max(2, _next_power_of_2(n_cols))
        self.block_n = max(1, min(tile // self.block_k, _next_power_of_2(n_rows)))
        self.num_warps = _num_warps(self.block_n * self.block_k)
        row_tiles = -(-n_rows // self.block_n)
        if interpreted:
            target = PROGRAMS_INTERPRETED
        else:
            target = max(1, _multiprocessors(problem.scores.device) * PROGRAMS_PER_SM // batch)
            target = min(target, max(1, n_rows // MIN_ROWS_PER_PROGRAM))
        tiles_per_program = -(-row_tiles // min(row_tiles, target))
        self.rows_per_program = tiles_per_program * self.block_n
        self.programs = -(-n_rows // self.rows_per_program)


@dataclass
class _Inputs:
    """What every launch of one solve shares (the kernels load any float dtype as float32)."""

    kernels: ModuleType
    launch: _Launch
    scores: torch.Tensor  #: (B, N, K) contiguous: the scores, or the log-kernel with a prior
    inv_eps: float  #: what the kernels multiply ``scores`` by
    row_mass: torch.Tensor  #: (B, N) contiguous
    col_mass: torch.Tensor  #: (B, K) contiguous


def solve(problem: Problem, schedule: Schedule) -> Solution:
    """Solve ``problem`` with the fused Triton kernels on its device.

    With device-side validation (no host synchronisation) the fixed-iteration mode runs the
    log-sum-exp column sums at once (they cannot leave the safe range, so no rerun can be needed)
    and a failed check turns the labels into NaN, as on the torch backend.
    """
    kernels = _kernels()
    if problem.prior is not None:
        # log(prior) is folded in once (in the problem's compute dtype); every pass then reads
        # one matrix
        scores, inv_eps = log_kernel(problem), 1.0
    else:
        scores, inv_eps = problem.scores.contiguous(), 1.0 / problem.epsilon
    inputs = _Inputs(
        kernels,
        _Launch(problem, schedule, kernels.INTERPRETED),
        scores,
        inv_eps,
        problem.rows_mass().contiguous(),
        problem.col_mass.contiguous(),
    )
    run = _solve_single if inputs.launch.single else _solve_multi
    if problem.device_checks and schedule.fixed:
        return run(problem, schedule, inputs, kernels.SAFE)
    solution = run(problem, schedule, inputs, kernels.FAST)
    if solution is None:  # a column sum left the safe range: redo it all with log-sum-exp sums
        solution = run(problem, schedule, inputs, kernels.SAFE)
        assert solution is not None, "log-sum-exp column sums cannot leave the safe range"
    return solution


def _outputs(problem: Problem, extra: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plan (B, N, K), f (B, N), g (B, K) and ``extra`` floats per problem (two allocations)."""
    batch, n_rows, n_cols = problem.scores.shape
    device = problem.scores.device
    plan = torch.empty((batch, n_rows, n_cols), dtype=torch.float32, device=device)
    small = torch.empty(batch * (n_rows + n_cols + extra), dtype=torch.float32, device=device)
    f, g, rest = small.split((batch * n_rows, batch * n_cols, batch * extra))
    return plan, f.view(batch, n_rows), g.view(batch, n_cols), rest.view(batch, extra)


def _solution(
    problem: Problem,
    schedule: Schedule,
    inputs: _Inputs,
    kind: int,
    flags: tuple[float, float],
    arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    n_iter: int,
    error: float | None,
) -> Solution | None:
    """The Solution, given the largest column and row flags read back; None to rerun with SAFE."""
    col_flag, row_flag = flags
    if col_flag >= inputs.kernels.INFEASIBLE or row_flag > 0:
        raise_infeasible(problem.prior is not None)
    if col_flag >= inputs.kernels.UNHEALTHY:
        return None
    plan, f, g = arrays
    log_domain = kind == inputs.kernels.SAFE
    if schedule.fixed:
        return Solution(plan, f, g, schedule.n_iter, None, log_domain, NAME)
    assert error is not None
    converged = error <= schedule.tol
    return Solution(plan, f, g, n_iter, converged, log_domain, NAME, unconverged=int(not converged), worst_error=error)


def _poisoned(
    problem: Problem,
    schedule: Schedule,
    failed: torch.Tensor,
    arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    log_domain: bool,
) -> Solution:
    """Device-side validation: the Solution with NaN labels where ``failed`` (a 0-d bool tensor,
    never read back) or a deferred input check says so."""
    ok = ~failed
    if problem.checks.flags:
        ok = ok & problem.checks.all_passed()
    plan, f, g = (torch.where(ok, array, float("nan")) for array in arrays)
    return Solution(plan, f, g, schedule.n_iter, None, log_domain, NAME)


def _solve_single(problem: Problem, schedule: Schedule, inputs: _Inputs, kind: int) -> Solution | None:
    """One program per problem, one launch (tolerance mode: one problem)."""
    batch, n_rows, n_cols = problem.scores.shape
    plan, f, g, info = _outputs(problem, 4)
    tol_mode = not schedule.fixed
    launch = inputs.launch
    inputs.kernels.solve_kernel[(batch,)](
        inputs.scores,
        inputs.row_mass,
        inputs.col_mass,
        plan,
        f,
        g,
        info,
        n_rows,
        n_cols,
        inputs.inv_eps,
        schedule.n_iter,
        schedule.tol if tol_mode else 0.0,
        schedule.max_iter,
        schedule.check_every,
        _LOWEST_SUM,
        TOL_MODE=tol_mode,
        KIND=kind,
        BLOCK_N=launch.block_n,
        BLOCK_K=launch.block_k,
        num_warps=launch.num_warps,
        **_OPTIONS,
    )
    if problem.device_checks and not tol_mode:
        failed = (info[:, 0] >= inputs.kernels.INFEASIBLE).any() | (info[:, 1] > 0).any()
        return _poisoned(problem, schedule, failed, (plan, f, g), kind == inputs.kernels.SAFE)
    numbers = _status(problem).read(info)  # per problem: column flag, row flag, iterations, error
    flags = (max(numbers[0::4]), max(numbers[1::4]))
    return _solution(problem, schedule, inputs, kind, flags, (plan, f, g), int(numbers[2]), numbers[3])


def _status(problem: Problem) -> StatusReader:
    return StatusReader(problem.checks, problem.scores.device, problem.reducer)


def _solve_multi(problem: Problem, schedule: Schedule, inputs: _Inputs, kind: int) -> Solution | None:
    """Many programs per problem; one pass launch and one column-step launch per iteration."""
    batch, n_rows, n_cols = problem.scores.shape
    kernels, launch = inputs.kernels, inputs.launch
    device = inputs.scores.device
    plan, f, _, _ = _outputs(problem, 0)
    programs = launch.programs
    part_m = torch.empty((batch, programs, n_cols), dtype=torch.float32, device=device)
    part_s = torch.empty_like(part_m)
    g0, h, h_next = torch.zeros((3, batch, n_cols), dtype=torch.float32, device=device)
    violation = torch.empty((batch, n_cols), dtype=torch.float32, device=device)
    col_flag = torch.zeros((batch, n_cols), dtype=torch.float32, device=device)
    row_flag = torch.empty((batch, programs), dtype=torch.float32, device=device)
    total = inputs.col_mass.sum(-1)
    block_kc = min(launch.block_k, COMBINE_BLOCK_K)
    block_p = max(1, min(_next_power_of_2(programs), 4096 // block_kc))

    def sweep(pass_kind: int, h_in: torch.Tensor) -> None:
        kernels.pass_kernel[(programs, batch)](
            inputs.scores,
            inputs.row_mass,
            g0,
            h_in,
            part_m,
            part_s,
            plan,
            f,
            row_flag,
            n_rows,
            n_cols,
            inputs.inv_eps,
            launch.rows_per_program,
            KIND=pass_kind,
            BLOCK_N=launch.block_n,
            BLOCK_K=launch.block_k,
            num_warps=launch.num_warps,
            **_OPTIONS,
        )

    def column_step(pass_kind: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        kernels.combine_kernel[(-(-n_cols // block_kc), batch)](
            part_m,
            part_s,
            h_in,
            h_out,
            inputs.col_mass,
            total,
            violation,
            col_flag,
            programs,
            n_cols,
            _LOWEST_SUM,
            KIND=pass_kind,
            BLOCK_P=block_p,
            BLOCK_K=block_kc,
            num_warps=4,
            **_OPTIONS,
        )

    status = _status(problem)
    sweep(kernels.COLSTATS, h)
    column_step(kernels.COLSTATS, h, g0)  # h stays 0
    tol_mode = not schedule.fixed
    iteration, error = 0, None
    every, max_iter = schedule.check_every, schedule.max_iter
    while tol_mode or iteration < schedule.n_iter - 1:
        sweep(kind, h)
        column_step(kind, h, h_next)
        iteration += 1
        if tol_mode and (iteration % every == 0 or iteration == max_iter):
            flag, error = status.read(col_flag.amax(), violation.amax())
            if flag > 0:
                return _solution(problem, schedule, inputs, kind, (flag, 0.0), (plan, f, h), iteration, error)
            if error <= schedule.tol or iteration == max_iter:
                break  # the answer is the plan just measured: keep its scaling h
        h, h_next = h_next, h
    sweep(kernels.FINAL, h)
    if problem.device_checks and not tol_mode:
        failed = (col_flag.amax() >= kernels.INFEASIBLE) | (row_flag.amax() > 0)
        return _poisoned(problem, schedule, failed, (plan, f, h.add_(g0)), kind == kernels.SAFE)
    flags = status.read(col_flag.amax(), row_flag.amax())
    return _solution(problem, schedule, inputs, kind, (flags[0], flags[1]), (plan, f, h.add_(g0)), iteration, error)
