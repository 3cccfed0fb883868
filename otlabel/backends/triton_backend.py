"""Fused GPU backend in Triton: one read of the scores per Sinkhorn iteration.

The schedule is the torch backend's (column step, then row step, ``n`` times; rows last;
the first column step sees the unshifted rows, as the SwAV loop does), computed on log
scalings so that nothing overflows (see :mod:`otlabel.backends._triton_kernels`). Three
layouts of the work:

* **single**: a problem with ``N * K <= SMALL_PROBLEM`` runs entirely in one program, so the
  whole call is **one kernel launch** (tolerance mode included: the convergence checks happen
  in the kernel; in fixed-iteration mode a batch of them too, one program per problem);
* **rows**: a larger problem (K up to ``TILED_K``), a batch in tolerance mode (whose problems
  stop together, as on the torch backend), or a call over a process group, is split by rows
  over many programs. Every pass reads the scores once, does the row step of one iteration and
  accumulates the column sums for the next column step; the last program to finish does that
  column step, so an **iteration is one launch** (a separate column-step launch when the
  partials are too many for one program, and under a process group, whose column partials are
  all-reduced between passes);
* **tiled**: K above ``TILED_K`` (up to ``MAX_K`` = 262,144, DINO's prototype counts), where a
  row no longer fits one tile: a 2-D grid of (column chunk, row chunk) programs; each
  iteration reads the scores twice (row log-sum-exp over column tiles, then column partials).

Tolerance mode reads the violation back every ``check_every`` iterations. With device-side
validation (``Problem.device_checks``, fixed-iteration mode) nothing is read back: the last
program of the final pass folds the deferred input checks and the numerical flags into the
labels (NaN when anything failed), inside the same launch.

Rows are computed in the log domain with their maxima taken out, so ``|scores/epsilon|`` of 1e4
in float32 is safe. Column sums are plain sums on the fast path; when one leaves the safe float32
range (a column receiving less than ~1e-31 of mass, e.g. a class marginal of 1e-36) the problem is
rerun with log-sum-exp column sums, which are exact over the whole float32 range (device-side
validation uses them at once). float16/bfloat16 scores are read at their width, accumulated in
float32, and the labels are written in the input dtype (float32 with ``return_info``, whose
errors are measured before the cast).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType

import torch

from .._numerics import StatusReader, log_kernel, raise_infeasible, safe_range
from .._problem import Problem, Schedule, Solution

NAME = "triton"

#: Largest K (the tiled layout; the issue's target, DINO's 262,144 prototypes, is tested).
MAX_K = 1 << 18
#: K above this uses the tiled layout (a row no longer fits one tile: K is padded to a power of two).
TILED_K = 8192
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
#: ... but at least this many rows per program (row chunk of the tiled layout), so that the
#: per-program column partials (K floats, two with log-sum-exp sums) stay small next to the
#: program's rows (K floats each): at most ~6 % more traffic.
MIN_ROWS_PER_PROGRAM = 32
#: Column tile of the tiled layout (its row tile is TILE_MULTI // TILED_BLOCK_K rows), on a GPU
#: and in the interpreter.
TILED_BLOCK_K = 1024
TILED_BLOCK_K_INTERPRETED = 8192
#: Rows layout: the last program of a pass does the column step itself when the partials it
#: reduces (programs x K) are at most this many; else a column-step launch over many programs.
FUSED_COMBINE_MAX = 1 << 15
#: Columns per program of a column-step launch, and elements (partials x columns) per step.
COMBINE_BLOCK_K = 32
COMBINE_TILE = 4096

#: Compiler options of every launch: multiply-adds contracted to FMAs (one rounding instead of
#: two; triton's default so far, which triton 3.9 warns will change).
_OPTIONS = {"enable_fp_fusion": True}
#: Column sums below this leave the safe float32 range (the torch backend's criterion).
_LOWEST_SUM = safe_range(torch.float32)[0]
_HALF = (torch.float16, torch.bfloat16)

_kernels_module: ModuleType | None = None


def _kernels() -> ModuleType:
    """The kernel module (imported on first use: importing triton is slow and optional)."""
    global _kernels_module
    if _kernels_module is None:
        from . import _triton_kernels

        _kernels_module = _triton_kernels
    return _kernels_module


def _runs_here(
    kernels: ModuleType, interpreted: bool, device: torch.device, dtype: torch.dtype, what: str
) -> str | None:
    """Why kernels defined with ``interpreted`` cannot run on ``what`` (a phrase: "scores") of
    ``dtype`` on ``device`` in this process, or None if they can."""
    if kernels.interpreting() != interpreted:
        return (
            f"TRITON_INTERPRET was {'set' if interpreted else 'unset'} when otlabel's triton kernels were "
            "defined and has changed since; set it once, before the first use"
        )
    if device.type == "cpu":
        if not interpreted:
            return (
                f"{what} are on the CPU; the triton backend runs on CUDA tensors (or on the CPU in "
                "Triton's interpreter, with TRITON_INTERPRET=1 set before otlabel's triton backend is first used)"
            )
    elif device.type != "cuda":
        return f"{what} are on a {device.type!r} device; the triton backend runs on CUDA tensors"
    if dtype == torch.float64:
        return f"the triton backend computes in float32, got float64 {what} (use backend='torch')"
    return None


def unavailable_reason(problem: Problem, schedule: Schedule) -> str | None:
    """Why this backend cannot solve ``problem`` here, or None if it can."""
    try:
        kernels = _kernels()
    except ImportError as exc:
        return _not_installed(exc)
    reason = _runs_here(kernels, kernels.INTERPRETED, problem.scores.device, problem.scores.dtype, "scores")
    if reason is not None:
        return reason
    _, n_rows, n_cols = problem.scores.shape
    if n_cols > MAX_K:
        return f"K = {n_cols} columns exceed the triton backend's limit of {MAX_K} (use backend='torch')"
    if n_rows * n_cols >= 2**31:
        return f"N * K = {n_rows * n_cols} elements per problem exceed the triton backend's 32-bit indexing"
    if not problem.balanced or problem.init is not None or schedule.accelerate:
        return (
            "penalised, bounded or partial marginals, warm starts and acceleration run on the torch backend "
            "(backend='torch')"
        )
    return None


def features_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why :func:`~otlabel.sinkhorn_features`' fused pass cannot run in the Triton kernel of
    :mod:`otlabel.backends._triton_features` on features on ``device`` computed in ``dtype`` (the
    features' and prototypes' promoted dtype), or None if it can. Every marginal option runs
    there: only the fused pass is the kernel's, the rest of the call the solver core's."""
    try:
        kernels = _kernels()
        from . import _triton_features
    except ImportError as exc:
        return _not_installed(exc)
    return _runs_here(kernels, _triton_features.INTERPRETED, device, dtype, "features or prototypes")


def _not_installed(exc: ImportError) -> str:
    return f"triton is not installed ({exc}); install it with pip install 'otlabel[triton]'"


def _next_power_of_2(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _num_warps(tile: int) -> int:
    # about 16 tile elements per thread: vectorised loads, no register spills (checked with ptxas)
    return max(4, min(16, tile // 512))


def _combine_blocks(parts: int, columns: int, widest: int, interpreted: bool) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_KC) of a column step over ``parts`` partials of ``columns`` columns (the
    interpreter, which pays per operation, takes the widest blocks it can)."""
    tile = TILE_INTERPRETED if interpreted else COMBINE_TILE
    block_kc = max(2, min(_next_power_of_2(max(columns, 1)), tile if interpreted else widest))
    return max(1, min(_next_power_of_2(max(parts, 1)), tile // block_kc)), block_kc


class _Launch:
    """The layout ("single", "rows" or "tiled"), tile sizes and grid for one problem shape."""

    def __init__(self, problem: Problem, schedule: Schedule, interpreted: bool):
        batch, n_rows, n_cols = problem.scores.shape
        distributed = problem.reducer.distributed
        if n_cols > TILED_K:
            self.layout = "tiled"
        elif not distributed and n_rows * n_cols <= SMALL_PROBLEM and (schedule.fixed or batch == 1):
            self.layout = "single"
        else:
            self.layout = "rows"
        if interpreted:
            target = PROGRAMS_INTERPRETED
        else:
            target = max(1, _multiprocessors(problem.scores.device) * PROGRAMS_PER_SM // batch)
        tile = TILE_INTERPRETED if interpreted else TILE_SINGLE if self.layout == "single" else TILE_MULTI
        if self.layout == "tiled":
            widest = TILED_BLOCK_K_INTERPRETED if interpreted else TILED_BLOCK_K
            self.block_k = max(2, min(_next_power_of_2(n_cols), widest))
            self.block_n = max(1, min(tile // self.block_k, _next_power_of_2(max(n_rows, 1))))
            row_tiles, col_tiles = _cdiv(n_rows, self.block_n), _cdiv(n_cols, self.block_k)
            row_chunks = max(1, min(row_tiles, n_rows // MIN_ROWS_PER_PROGRAM))
            col_chunks = max(1, min(col_tiles, target // row_chunks))
            if row_chunks * col_chunks < target:  # columns exhausted: more, shorter row chunks
                row_chunks = max(row_chunks, min(row_tiles, target // col_chunks))
            self.rows_per_program = max(1, _cdiv(row_tiles, row_chunks)) * self.block_n
            self.cols_per_program = _cdiv(col_tiles, col_chunks) * self.block_k
            self.programs = _cdiv(n_rows, self.rows_per_program)  # row chunks R (0 without rows)
            self.col_programs = _cdiv(n_cols, self.cols_per_program)  # column chunks C
            self.fused = not distributed
            self.combine = _combine_blocks(self.programs, self.cols_per_program, 128, interpreted)
        else:
            self.block_k = max(2, _next_power_of_2(n_cols))
            self.block_n = max(1, min(tile // self.block_k, _next_power_of_2(max(n_rows, 1))))
            row_tiles = _cdiv(n_rows, self.block_n)
            if not interpreted:
                target = min(target, max(1, n_rows // MIN_ROWS_PER_PROGRAM))
            tiles_per_program = _cdiv(row_tiles, max(1, min(row_tiles, target)))
            self.rows_per_program = max(1, tiles_per_program) * self.block_n
            self.programs = _cdiv(n_rows, self.rows_per_program)
            self.col_programs = 1
            self.fused = not distributed and self.programs * n_cols <= FUSED_COMBINE_MAX
            self.combine = _combine_blocks(self.programs, n_cols, 128, interpreted)
        self.num_warps = _num_warps(self.block_n * self.block_k)


@dataclass
class _Inputs:
    """What every launch of one solve shares (the kernels load any float dtype as float32)."""

    kernels: ModuleType
    launch: _Launch
    scores: torch.Tensor  #: (B, N, K) contiguous: the scores, or the log-kernel with a prior
    inv_eps: float  #: what the kernels multiply ``scores`` by
    row_mass: torch.Tensor | None  #: (B, N) contiguous; None: every row has mass 1
    col_mass: torch.Tensor  #: (B, K) contiguous


def solve(problem: Problem, schedule: Schedule) -> Solution:
    """Solve ``problem`` with the fused Triton kernels on its device.

    With device-side validation (no host synchronisation) the fixed-iteration mode runs the
    log-sum-exp column sums at once (they cannot leave the safe range, so no rerun can be needed)
    and a failed check turns the labels into NaN, as on the torch backend, inside the last launch.
    """
    kernels = _kernels()
    if problem.prior is not None:
        # log(prior) is folded in once (in the problem's compute dtype); every pass then reads
        # one matrix
        scores, inv_eps = log_kernel(problem), 1.0
    else:
        scores, inv_eps = problem.scores.contiguous(), 1.0 / problem.epsilon
    launch = _Launch(problem, schedule, kernels.INTERPRETED)
    row_mass = None if problem.row_mass is None else problem.row_mass.contiguous()
    inputs = _Inputs(kernels, launch, scores, inv_eps, row_mass, problem.col_mass.contiguous())
    run = _solve_single if launch.layout == "single" else _solve_many
    if problem.device_checks and schedule.fixed:
        return run(problem, schedule, inputs, kernels.SAFE)
    solution = run(problem, schedule, inputs, kernels.FAST)
    if solution is None:  # a column sum left the safe range: redo it all with log-sum-exp sums
        solution = run(problem, schedule, inputs, kernels.SAFE)
        assert solution is not None, "log-sum-exp column sums cannot leave the safe range"
    return solution


def _outputs(problem: Problem, extra: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plan (B, N, K), f (B, N), g (B, K) and ``extra`` floats per problem (two allocations).

    The plan is written in the input's float16/bfloat16 dtype directly, unless the caller wants
    ``return_info`` (its errors are measured on the float32 plan, before the cast)."""
    batch, n_rows, n_cols = problem.scores.shape
    device = problem.scores.device
    dtype = problem.scores.dtype
    plan_dtype = dtype if dtype in _HALF and not problem.return_potentials else torch.float32
    plan = torch.empty((batch, n_rows, n_cols), dtype=plan_dtype, device=device)
    small = torch.empty(batch * (n_rows + n_cols + extra), dtype=torch.float32, device=device)
    f, g, rest = small.split((batch * n_rows, batch * n_cols, batch * extra))
    return plan, f.view(batch, n_rows), g.view(batch, n_cols), rest.view(batch, extra)


def _checks_ok(problem: Problem, like: torch.Tensor, poison: bool) -> tuple[torch.Tensor, int]:
    """The deferred input checks as bytes (1 = passed) for the kernels to fold into the labels,
    and their number (0, and any pointer, when there are none or nothing is poisoned)."""
    flags = problem.checks.flags
    if not poison or not flags:
        return like, 0
    return torch.stack(flags).view(torch.uint8), len(flags)


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


def _status(problem: Problem) -> StatusReader:
    return StatusReader(problem.checks, problem.scores.device, problem.reducer)


def _solve_single(problem: Problem, schedule: Schedule, inputs: _Inputs, kind: int) -> Solution | None:
    """One program per problem, one launch (tolerance mode: one problem)."""
    batch, n_rows, n_cols = problem.scores.shape
    plan, f, g, info = _outputs(problem, 4)
    tol_mode = not schedule.fixed
    poison = problem.device_checks and not tol_mode
    launch = inputs.launch
    ok, n_checks = _checks_ok(problem, info, poison)
    counter = torch.zeros(1, dtype=torch.int32, device=plan.device) if poison else info
    inputs.kernels.solve_kernel[(batch,)](
        inputs.scores,
        info if inputs.row_mass is None else inputs.row_mass,
        inputs.col_mass,
        plan,
        f,
        g,
        info,
        counter,
        ok,
        n_checks,
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
        HAS_ROW_MASS=inputs.row_mass is not None,
        POISON=poison,
        BLOCK_N=launch.block_n,
        BLOCK_K=launch.block_k,
        num_warps=launch.num_warps,
        **_OPTIONS,
    )
    if poison:
        return Solution(plan, f, g, schedule.n_iter, None, kind == inputs.kernels.SAFE, NAME)
    numbers = _status(problem).read(info)  # per problem: column flag, row flag, iterations, error
    flags = (max(numbers[0::4]), max(numbers[1::4]))
    return _solution(problem, schedule, inputs, kind, flags, (plan, f, g), int(numbers[2]), numbers[3])


class _Many:
    """The rows and tiled layouts: buffers and launches of one solve with many programs."""

    def __init__(self, problem: Problem, inputs: _Inputs, kind: int, poison: bool):
        batch, n_rows, n_cols = problem.scores.shape
        self.problem, self.inputs, self.kind, self.poison = problem, inputs, kind, poison
        self.kernels = inputs.kernels
        launch = self.launch = inputs.launch
        self.shape = batch, n_rows, n_cols
        device = inputs.scores.device
        self.plan, self.f, self.g, _ = _outputs(problem, 0)
        parts = launch.programs  # row chunks: one column partial each (0 on a rank without rows)
        self.part_m = torch.empty((batch, max(parts, 1), n_cols), dtype=torch.float32, device=device)
        self.part_s = torch.empty_like(self.part_m)
        self.g0, self.h, self.h_next = torch.zeros((3, batch, n_cols), dtype=torch.float32, device=device)
        self.violation = torch.empty((batch, n_cols), dtype=torch.float32, device=device)
        self.col_flag = torch.zeros((batch, n_cols), dtype=torch.float32, device=device)
        self.row_flag = torch.zeros((batch, max(parts, 1)), dtype=torch.float32, device=device)
        self.total = inputs.col_mass.sum(-1)
        tiled = launch.layout == "tiled"
        counters = batch * (launch.programs + launch.col_programs) + 1 if tiled else batch + 1
        arrivals = tiled or launch.fused or poison
        self.counter = torch.zeros(counters, dtype=torch.int32, device=device) if arrivals else self.row_flag
        if tiled:
            chunks = launch.col_programs
            self.row_part = torch.empty((2, batch, chunks, n_rows), dtype=torch.float32, device=device)
            self.row_stat = torch.empty((4, batch, n_rows), dtype=torch.float32, device=device)
            self.first = True
        self.ok, self.n_checks = _checks_ok(problem, self.row_flag, poison)
        self.distributed = problem.reducer.distributed
        if self.distributed:
            self.reduced = torch.empty((2, batch, n_cols), dtype=torch.float32, device=device)

    @property
    def row_mass(self) -> torch.Tensor:
        return self.f if self.inputs.row_mass is None else self.inputs.row_mass

    def sweep(self, kind: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        """One pass of ``kind`` (not FINAL) and the column step it feeds: ``h_in`` -> ``h_out``
        (COLSTATS: ``g0`` into ``h_out``)."""
        if self.launch.layout == "tiled":
            self._tiled(kind, h_in, h_out)
        else:
            self._rows(kind, h_in, h_out)
        if not self.launch.fused:
            self._column_step(kind, h_in, h_out)

    def final(self, h: torch.Tensor) -> None:
        """The last pass: plan, f, g and the row flags (and, with ``poison``, NaN on failure)."""
        if self.launch.layout == "tiled":
            self._tiled(self.kernels.FINAL, h, h)
        else:
            self._rows(self.kernels.FINAL, h, h)
        if self.launch.programs == 0:  # no rows here (a rank of a process group): g alone
            torch.add(self.g0, h, out=self.g)

    def _rows(self, kind: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        launch, (batch, n_rows, n_cols) = self.launch, self.shape
        if launch.programs == 0:
            return
        block_p, block_kc = launch.combine
        self.kernels.pass_kernel[(launch.programs, batch)](
            self.inputs.scores,
            self.row_mass,
            self.g0,
            h_in,
            h_out,
            self.part_m,
            self.part_s,
            self.plan,
            self.f,
            self.g,
            self.row_flag,
            self.inputs.col_mass,
            self.total,
            self.violation,
            self.col_flag,
            self.counter,
            self.ok,
            self.n_checks,
            n_rows,
            n_cols,
            self.inputs.inv_eps,
            launch.rows_per_program,
            _LOWEST_SUM,
            KIND=kind,
            HAS_ROW_MASS=self.inputs.row_mass is not None,
            FUSED=launch.fused,
            POISON=self.poison and kind == self.kernels.FINAL,
            BLOCK_N=launch.block_n,
            BLOCK_K=launch.block_k,
            BLOCK_P=block_p,
            BLOCK_KC=block_kc,
            num_warps=launch.num_warps,
            **_OPTIONS,
        )

    def _tiled(self, kind: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        launch, (batch, n_rows, n_cols) = self.launch, self.shape
        if launch.programs == 0:
            return
        grid = (launch.col_programs, launch.programs, batch)
        kernels = self.kernels
        if kind != kernels.COLSTATS:
            kernels.tiled_row_kernel[grid](
                self.inputs.scores,
                self.row_mass,
                self.g0,
                h_in,
                self.row_part,
                self.row_stat,
                self.row_flag,
                self.counter,
                n_rows,
                n_cols,
                self.inputs.inv_eps,
                launch.rows_per_program,
                launch.cols_per_program,
                FIRST=self.first,
                HAS_ROW_MASS=self.inputs.row_mass is not None,
                BLOCK_N=launch.block_n,
                BLOCK_K=launch.block_k,
                num_warps=launch.num_warps,
                **_OPTIONS,
            )
            self.first = False
        block_p, block_kc = launch.combine
        kernels.tiled_col_kernel[grid](
            self.inputs.scores,
            self.g0,
            h_in,
            h_out,
            self.row_stat,
            self.part_m,
            self.part_s,
            self.plan,
            self.f,
            self.g,
            self.row_flag,
            self.inputs.col_mass,
            self.total,
            self.violation,
            self.col_flag,
            self.counter,
            self.ok,
            self.n_checks,
            n_rows,
            n_cols,
            self.inputs.inv_eps,
            launch.rows_per_program,
            launch.cols_per_program,
            _LOWEST_SUM,
            KIND=kind,
            FUSED=launch.fused,
            POISON=self.poison and kind == kernels.FINAL,
            BLOCK_N=launch.block_n,
            BLOCK_K=launch.block_k,
            BLOCK_P=block_p,
            BLOCK_KC=block_kc,
            num_warps=launch.num_warps,
            **_OPTIONS,
        )

    def _column_step(self, kind: int, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        """The column step in launches of its own; over a process group the column partials are
        reduced locally, all-reduced, then the step is taken on the global sums."""
        batch, _, n_cols = self.shape
        parts = self.launch.programs
        if not self.distributed:
            self._combine(self.part_m, self.part_s, parts, kind, h_in, h_out, update=True)
            return
        col_m, col_s = self.reduced
        self._combine(self.part_m, self.part_s, parts, kind, col_m, col_m, update=False, out_s=col_s)
        reducer = self.problem.reducer
        if kind == self.kernels.FAST:
            col_s = reducer.sum(col_s)
        else:  # log-sum-exp pairs: the global maximum, then the sums rescaled to it
            top = reducer.max(col_m)
            shift = torch.where(top > float("-inf"), top, torch.zeros_like(top))
            col_s = reducer.sum(col_s * torch.exp(col_m - shift))
            col_m = top
        self._combine(col_m.contiguous(), col_s.contiguous(), 1, kind, h_in, h_out, update=True)

    def _combine(
        self,
        part_m: torch.Tensor,
        part_s: torch.Tensor,
        parts: int,
        kind: int,
        h_in: torch.Tensor,
        h_out: torch.Tensor,
        update: bool,
        out_s: torch.Tensor | None = None,
    ) -> None:
        batch, _, n_cols = self.shape
        block_p, block_kc = _combine_blocks(parts, n_cols, COMBINE_BLOCK_K, self.kernels.INTERPRETED)
        self.kernels.combine_kernel[(_cdiv(n_cols, block_kc), batch)](
            part_m,
            part_s,
            h_in,
            h_out,
            self.inputs.col_mass,
            self.total,
            self.violation if update else out_s,
            self.col_flag,
            parts,
            n_cols,
            _LOWEST_SUM,
            KIND=kind,
            UPDATE=update,
            BLOCK_P=block_p,
            BLOCK_KC=block_kc,
            num_warps=4,
            **_OPTIONS,
        )


def _solve_many(problem: Problem, schedule: Schedule, inputs: _Inputs, kind: int) -> Solution | None:
    """Many programs per problem: one or two launches per iteration (see the module's docstring)."""
    tol_mode = not schedule.fixed
    poison = problem.device_checks and not tol_mode
    run = _Many(problem, inputs, kind, poison)
    kernels = inputs.kernels
    status = _status(problem)
    h, h_next = run.h, run.h_next
    run.sweep(kernels.COLSTATS, h, run.g0)  # h stays 0
    iteration, error = 0, None
    every, max_iter = schedule.check_every, schedule.max_iter
    while tol_mode or iteration < schedule.n_iter - 1:
        run.sweep(kind, h, h_next)
        iteration += 1
        if tol_mode and (iteration % every == 0 or iteration == max_iter):
            flag, error = status.read(run.col_flag.amax(), run.violation.amax())
            if flag > 0:
                arrays = (run.plan, run.f, run.g)
                return _solution(problem, schedule, inputs, kind, (flag, 0.0), arrays, iteration, error)
            if error <= schedule.tol or iteration == max_iter:
                break  # the answer is the plan just measured: keep its scaling h
        h, h_next = h_next, h
    run.final(h)
    arrays = (run.plan, run.f, run.g)
    if poison:
        return Solution(*arrays, schedule.n_iter, None, kind == kernels.SAFE, NAME)
    flags = status.read(run.col_flag.amax(), run.row_flag.amax())
    return _solution(problem, schedule, inputs, kind, (flags[0], flags[1]), arrays, iteration, error)
