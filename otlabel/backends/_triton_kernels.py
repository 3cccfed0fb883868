"""Triton kernels of the fused Sinkhorn backend (needs ``triton``; imported lazily).

Notation (one problem of a batch; all in float32):

* ``L = x * inv_eps``: the log-kernel, ``x`` being the scores (``inv_eps = 1/epsilon``) or,
  with a prior, ``scores/epsilon + log(prior)`` computed beforehand (``inv_eps = 1``). Inputs
  of any float dtype (scores, log-kernel, masses) are loaded at their own width and converted
  to float32; the plan is written in the dtype of its buffer (float32, or the input's
  float16/bfloat16).
* ``g = g0 + h`` (K,): log column scaling, split into the value ``g0`` set by the first column
  step and the change ``h`` since then, which stays small. Updating ``h`` rather than ``g``
  keeps the column scalings at float32 resolution (a log scaling of magnitude 30 could only
  move in steps of 2e-6, a floor on the attainable marginal error).
* ``f`` (N,): log row scaling. The plan is ``Q = exp(L + f[:, None] + g[None, :])``.
* A **row step** gives, for every row, ``t = (u - max(u)) + h`` with ``u = L + g0``, its
  maximum ``m``, ``p = exp(t - m)`` and ``s = sum(p)``; the row of the new plan is
  ``Q = p * w`` with ``w = r / s`` (r: the row mass), and ``f = log(w) - m - max(u)``.
  Nothing overflows, however large ``|L|`` is, and ``h`` is added at the resolution of the
  row's largest entries.
* A **column step** turns the column sums ``S`` of the current plan into
  ``h <- h + log(c) - log(S)`` (c: the column mass).

The kinds of pass over the scores:

* ``COLSTATS``: column log-sum-exp of ``L`` (the first column step of the SwAV loop, which
  starts from the unshifted rows), with per-element online maxima.
* ``FAST``: row step, and the column sums of the new plan accumulated as plain sums of
  ``p * w`` (every term is at most the row mass, so nothing overflows; a column sum can
  underflow only when a column receives less than ~1e-31 of mass, which the column step flags
  as *unhealthy* so that the host reruns the problem with ``SAFE``).
* ``SAFE``: row step, and the column sums accumulated as log-sum-exp with online maxima
  (exact over the whole float32 range; one more exponential per element).
* ``FINAL``: row step, then the plan, ``f`` and ``g`` are written.

Three layouts of the work (chosen by the host, :mod:`otlabel.backends.triton_backend`):

* ``solve_kernel``: a whole problem in one program, a row tile holding whole rows; one launch
  for the whole call (tolerance mode included) and for a batch in fixed-iteration mode.
* ``pass_kernel`` (**rows** layout): rows split over many programs, each pass one launch
  that reads every row once, does the row step and accumulates per-program column partials.
  The *last program to finish* (an arrival counter, see :func:`_arrive`) reduces the partials
  and does the column step, so an iteration is **one launch** and never spins on a barrier
  (``combine_kernel`` does it in a launch of its own when the partials are too many for one
  program, or under a process group, where the partials are all-reduced in between).
* ``tiled_row_kernel`` / ``tiled_col_kernel`` (**tiled** layout, K beyond one row tile, up to
  262,144): a 2-D grid of (column chunk, row chunk) programs. The row kernel computes each
  row's log-sum-exp over its column chunk online; the last program of a row chunk merges the
  chunks' partials into the row step (``m``, ``w``, ``log w``). The column kernel then
  accumulates the column partials of its chunk, and the last program of a column chunk does
  the column step for those columns. Two reads of the scores per iteration, two launches.

With ``POISON`` (device-side validation, fixed-iteration mode) the last program of the final
pass reads the deferred input checks, the column flags and the row flags of the whole call and,
if anything failed, writes NaN over every label, ``f`` and ``g`` of the call: the whole call
stays one (or a few) launches and nothing is read back to the host.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl


def interpreting() -> bool:
    """Whether Triton is set to run kernels in its CPU interpreter (``TRITON_INTERPRET``), now."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4 reads the variable through its knobs
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


#: Whether these kernels run in the interpreter: ``triton.jit`` decides when they are defined,
#: i.e. when this module is first imported, and the setting must not change afterwards.
INTERPRETED = interpreting()

# Pass kinds (Python values for the host, constexpr for the kernels).
COLSTATS = 0
FAST = 1
SAFE = 2
FINAL = 3
_COLSTATS: tl.constexpr = tl.constexpr(COLSTATS)
_FAST: tl.constexpr = tl.constexpr(FAST)
_SAFE: tl.constexpr = tl.constexpr(SAFE)
_FINAL: tl.constexpr = tl.constexpr(FINAL)

# Column flags written by the column step (the host reads their maximum).
UNHEALTHY = 1.0  # a FAST column sum left the safe range: rerun with SAFE
INFEASIBLE = 2.0  # a column with mass has no support: no plan exists
_UNHEALTHY: tl.constexpr = tl.constexpr(UNHEALTHY)
_INFEASIBLE: tl.constexpr = tl.constexpr(INFEASIBLE)

#: Elements per step of the loops that one program runs alone (reductions of flags, poisoning).
_SCAN: tl.constexpr = tl.constexpr(1024)


@triton.jit
def _online_lse(acc_m, acc_s, v):
    """Fold ``v`` into element-wise running (max, sum of exp(. - max)): one exp per element."""
    hi = tl.maximum(acc_m, v)
    lo = tl.minimum(acc_m, v)
    # exp(lo - hi) without -inf - (-inf); when hi = -inf, lo = -inf too and e = 0
    e = tl.exp(lo - tl.where(hi > float("-inf"), hi, 0.0))
    acc_s = tl.where(v > acc_m, acc_s * e + 1.0, acc_s + e)
    return hi, acc_s


@triton.jit
def _merge_lse(acc_m, acc_s, part_m, part_s):
    """Merge two (max, sum of exp(. - max)) accumulators, guarding -inf - (-inf)."""
    hi = tl.maximum(acc_m, part_m)
    shift = tl.where(hi > float("-inf"), hi, 0.0)
    return hi, acc_s * tl.exp(acc_m - shift) + part_s * tl.exp(part_m - shift)


@triton.jit
def _reduce_lse(acc_m, acc_s, AXIS: tl.constexpr):
    """Reduce element-wise (max, sum) accumulators along ``AXIS`` to one (max, sum) each."""
    m = tl.max(acc_m, AXIS)
    shift = tl.where(m > float("-inf"), m, 0.0)
    return m, tl.sum(acc_s * tl.exp(acc_m - tl.expand_dims(shift, AXIS)), AXIS)


@triton.jit
def _load_tile(x_ptr, rows, row_end, cols, col_ok, K):
    """The (rows, cols) tile of a row-major (N, K) matrix, in its own dtype; 0 outside."""
    mask = (rows < row_end)[:, None] & col_ok[None, :]
    return tl.load(x_ptr + (rows[:, None] * K + cols[None, :]), mask=mask, other=0.0)


@triton.jit
def _row_mass(rm_ptr, rows, row_ok, HAS_ROW_MASS: tl.constexpr):
    """The rows' masses (1 for every row unless ``HAS_ROW_MASS``; 0 past the end)."""
    if HAS_ROW_MASS:
        mass = tl.load(rm_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    else:
        mass = tl.where(row_ok, 1.0, 0.0)
    return mass


@triton.jit
def _row_weights(m, s, mass):
    """Row step from a row's maximum ``m`` and sum ``s`` of exp(t - m): (m, w, log w, bad), with
    ``m`` 0 for a row without support, ``w = mass / s``, ``log w = log(mass) - m - log(s)`` (the
    log of the plan is ``t + log w``) and ``bad`` 1 for a row with mass but no support."""
    has = m > float("-inf")
    live = mass > 0
    ok = has & live
    m = tl.where(has, m, 0.0)
    s = tl.where(has, s, 1.0)  # >= 1 for a row with support
    w = tl.where(ok, mass / s, 0.0)
    log_w = tl.where(ok, tl.log(tl.where(ok, mass, 1.0)) - m - tl.log(s), float("-inf"))
    return m, w, log_w, (live & ~has).to(tl.int32)


@triton.jit
def _arrive(counter_ptr, expected):
    """Whether this program is the last of ``expected`` programs to call this on ``counter_ptr``.

    The last one resets the counter to 0 (for the next launch) and then sees every store the
    others made before arriving: a CTA barrier orders this program's threads' stores before one
    thread's acquire-release atomic at GPU scope (the pattern of CUDA's threadfence reduction and
    of cooperative groups' grid sync, without the spinning: nobody waits for anybody, so the
    interpreter, which runs programs one after another, computes the same). Loads of what other
    programs wrote must bypass L1 (``cache_modifier=".cg"``).
    """
    tl.debug_barrier()
    arrived = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
    last = arrived == expected - 1
    tl.atomic_xchg(counter_ptr, 0, mask=last, sem="relaxed", scope="gpu")
    tl.debug_barrier()
    return last


@triton.jit
def _sweep(
    x_ptr,
    rm_ptr,
    g0,
    h,
    plan_ptr,
    f_ptr,
    row_begin,
    row_end,
    K,
    inv_eps,
    KIND: tl.constexpr,
    HAS_ROW_MASS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One pass over rows [row_begin, row_end) of one problem, whole rows in a tile (pointers
    at the problem's start).

    Returns the column accumulators over these rows as a (max, sum) pair of (BLOCK_K,)
    vectors (column sum = exp(max) * sum; FAST: max = 0) and 1 if a row with mass had no
    support (all of its ``t`` are -inf), else 0.
    """
    cols = tl.arange(0, BLOCK_K)
    col_ok = cols < K
    # Element-wise accumulators: rows are folded into them tile by tile, and reduced over the
    # tile's rows once at the end, so the loop has no cross-warp reduction over rows.
    acc_m = tl.full((BLOCK_N, BLOCK_K), float("-inf"), tl.float32)
    acc_s = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    bad = tl.zeros((BLOCK_N,), tl.int32)
    x_next = _load_tile(x_ptr, row_begin + tl.arange(0, BLOCK_N), row_end, cols, col_ok, K)
    for start in range(row_begin, row_end, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        row_ok = rows < row_end
        mask = row_ok[:, None] & col_ok[None, :]
        offsets = rows[:, None] * K + cols[None, :]  # int32: the host ensures N * K < 2**31
        x = x_next.to(tl.float32)
        # Issue the next tile's load now (masked out past the end): it is in flight while this
        # tile is computed, instead of stalling the next iteration.
        x_next = _load_tile(x_ptr, rows + BLOCK_N, row_end, cols, col_ok, K)
        log_kernel = tl.where(mask, x * inv_eps, float("-inf"))
        if KIND == _COLSTATS:
            acc_m, acc_s = _online_lse(acc_m, acc_s, log_kernel)
        else:
            mass = _row_mass(rm_ptr, rows, row_ok, HAS_ROW_MASS)
            # The fixed kernel u = L + g0 is shifted by its row maxima before h is added, so
            # that h is added at the resolution of the row's largest entries, not at that of
            # |u| (which a per-row offset of the scores can make 1e4).
            u = log_kernel + g0[None, :]
            u_max = tl.max(u, 1)
            u_max = tl.where(u_max > float("-inf"), u_max, 0.0)
            t = (u - u_max[:, None]) + h[None, :]
            m = tl.max(t, 1)
            p = tl.exp(t - tl.where(m > float("-inf"), m, 0.0)[:, None])
            m, w, log_w, bad_rows = _row_weights(m, tl.sum(p, 1), mass)
            bad = tl.maximum(bad, bad_rows)
            if KIND == _FAST:
                acc_s += p * w[:, None]
            elif KIND == _SAFE:
                acc_m, acc_s = _online_lse(acc_m, acc_s, t + log_w[:, None])  # log of p * w
            else:
                tl.store(plan_ptr + offsets, (p * w[:, None]).to(plan_ptr.dtype.element_ty), mask=mask)
                tl.store(f_ptr + rows, log_w - u_max, mask=row_ok)
    if KIND == _FAST:
        col_m = tl.zeros((BLOCK_K,), tl.float32)
        col_s = tl.sum(acc_s, 0)
    else:
        col_m, col_s = _reduce_lse(acc_m, acc_s, 0)
    return col_m, col_s, tl.max(bad, 0)


@triton.jit
def _column_update(h, col_m, col_s, mass, lo, KIND: tl.constexpr):
    """Column step, column by column, from the column sums exp(col_m) * col_s of the current plan.

    Returns the new ``h``, the plan's column sums and the column flags (0, UNHEALTHY or
    INFEASIBLE, as floats). With COLSTATS (``h`` = 0) the new ``h`` is the first ``g0``.
    """
    live = mass > 0
    if KIND == _FAST:
        sums = col_s
        ok = sums >= lo  # also False for NaN
        log_sums = tl.log(tl.where(ok, sums, 1.0))
        flag = tl.where(live & ~ok, _UNHEALTHY, 0.0)
    else:
        finite = col_m > float("-inf")
        log_sums = tl.where(finite, col_m + tl.log(tl.where(finite, col_s, 1.0)), float("-inf"))
        if KIND == _COLSTATS:
            sums = mass  # sums of exp(L) may overflow and measure nothing useful
        else:
            sums = tl.exp(log_sums)
        flag = tl.where(live & ~finite, _INFEASIBLE, 0.0)
    good = live & (log_sums > float("-inf"))
    # operands masked first: a dead column has h = log_sums = -inf
    step = tl.log(tl.where(good, mass, 1.0)) - tl.where(good, log_sums, 0.0)
    h_new = tl.where(good, tl.where(good, h, 0.0) + step, float("-inf"))
    return h_new, sums, flag


@triton.jit
def _violation(sums, mass, total):
    """Scale-free violation |S - c| / c per column (zero-mass columns relative to ``total``)."""
    return tl.abs(sums - mass) / tl.where(mass > 0, mass, total)


@triton.jit
def _combine_columns(
    part_m_ptr,
    part_s_ptr,
    b,
    P,
    col_begin,
    col_end,
    K,
    h_ptr,
    h_out_ptr,
    cm_ptr,
    total_ptr,
    violation_ptr,
    flag_ptr,
    lo,
    KIND: tl.constexpr,
    UPDATE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_KC: tl.constexpr,
):
    """Reduce the P column partials (B, P, K) of problem ``b`` over columns [col_begin, col_end).

    ``UPDATE``: do the column step (write the new ``h`` to ``h_out_ptr`` (COLSTATS: ``g0``), the
    per-column violation, and max-accumulate the per-column flag). Otherwise write the reduced
    (max, sum) pairs to ``h_out_ptr`` and ``violation_ptr`` (B, K) (to be all-reduced over a
    process group, then updated with P = 1).
    """
    total = tl.load(total_ptr + b).to(tl.float32)
    for col_start in range(col_begin, col_end, BLOCK_KC):
        cols = col_start + tl.arange(0, BLOCK_KC)
        col_ok = cols < col_end
        acc_m = tl.full((BLOCK_P, BLOCK_KC), float("-inf"), tl.float32)
        acc_s = tl.zeros((BLOCK_P, BLOCK_KC), tl.float32)
        for start in range(0, P, BLOCK_P):
            parts = start + tl.arange(0, BLOCK_P)
            mask = (parts < P)[:, None] & col_ok[None, :]
            offsets = (b * P + parts)[:, None] * K + cols[None, :]
            part_s = tl.load(part_s_ptr + offsets, mask=mask, other=0.0, cache_modifier=".cg")
            if KIND == _FAST:
                acc_s += part_s
            else:
                part_m = tl.load(part_m_ptr + offsets, mask=mask, other=float("-inf"), cache_modifier=".cg")
                acc_m, acc_s = _merge_lse(acc_m, acc_s, part_m, part_s)
        if KIND == _FAST:
            col_m = tl.zeros((BLOCK_KC,), tl.float32)
            col_s = tl.sum(acc_s, 0)
        else:
            col_m, col_s = _reduce_lse(acc_m, acc_s, 0)
        vec = b * K + cols
        if UPDATE:
            mass = tl.load(cm_ptr + vec, mask=col_ok, other=0.0).to(tl.float32)
            if KIND == _COLSTATS:
                h = tl.zeros((BLOCK_KC,), tl.float32)
            else:
                h = tl.load(h_ptr + vec, mask=col_ok, other=float("-inf"))
            h_new, sums, flag = _column_update(h, col_m, col_s, mass, lo, KIND)
            tl.store(h_out_ptr + vec, h_new, mask=col_ok)
            tl.store(violation_ptr + vec, _violation(sums, mass, total), mask=col_ok)
            old = tl.load(flag_ptr + vec, mask=col_ok, other=0.0)
            tl.store(flag_ptr + vec, tl.maximum(old, flag), mask=col_ok)
        else:
            tl.store(h_out_ptr + vec, col_m, mask=col_ok)
            tl.store(violation_ptr + vec, col_s, mask=col_ok)


@triton.jit
def _any_failed(ok_ptr, n_checks, row_flag_ptr, n_row_flags, col_flag_ptr, n_col_flags, STRIDE: tl.constexpr):
    """Whether a deferred input check (``ok_ptr``: n_checks bytes, 1 = passed), a row flag or an
    INFEASIBLE column flag of the call (flags ``STRIDE`` floats apart) says that its labels must
    be NaN (device validation)."""
    failed = tl.zeros((_SCAN,), tl.int32)
    for start in range(0, n_checks, _SCAN):
        i = start + tl.arange(0, _SCAN)
        ok = tl.load(ok_ptr + i, mask=i < n_checks, other=1, cache_modifier=".cg")
        failed = tl.maximum(failed, (ok == 0).to(tl.int32))
    for start in range(0, n_row_flags, _SCAN):
        i = start + tl.arange(0, _SCAN)
        flag = tl.load(row_flag_ptr + i * STRIDE, mask=i < n_row_flags, other=0.0, cache_modifier=".cg")
        failed = tl.maximum(failed, (flag > 0).to(tl.int32))
    for start in range(0, n_col_flags, _SCAN):
        i = start + tl.arange(0, _SCAN)
        flag = tl.load(col_flag_ptr + i * STRIDE, mask=i < n_col_flags, other=0.0, cache_modifier=".cg")
        failed = tl.maximum(failed, (flag >= _INFEASIBLE).to(tl.int32))
    return tl.max(failed, 0) > 0


@triton.jit
def _fill_nan(ptr, count):
    """Write NaN over ``count`` entries (in the pointer's dtype)."""
    nan = tl.full((_SCAN,), float("nan"), ptr.dtype.element_ty)
    for start in range(0, count, _SCAN):
        i = start + tl.arange(0, _SCAN)
        tl.store(ptr + i, nan, mask=i < count)


@triton.jit
def _poison_if_failed(
    ok_ptr,
    n_checks,
    row_flag_ptr,
    n_row_flags,
    col_flag_ptr,
    n_col_flags,
    plan_ptr,
    f_ptr,
    g_ptr,
    B,
    N,
    K,
    STRIDE: tl.constexpr,
):
    """Device validation, by the last program of the final pass: NaN over the whole call's
    labels and potentials if anything failed (slow, one program: only on failure)."""
    if _any_failed(ok_ptr, n_checks, row_flag_ptr, n_row_flags, col_flag_ptr, n_col_flags, STRIDE):
        _fill_nan(plan_ptr, B.to(tl.int64) * N * K)
        _fill_nan(f_ptr, B * N)
        _fill_nan(g_ptr, B * K)


@triton.jit(do_not_specialize=["n_iter", "max_iter", "check_every", "n_checks"])
def solve_kernel(
    x_ptr,
    rm_ptr,
    cm_ptr,
    plan_ptr,
    f_ptr,
    g_ptr,
    info_ptr,
    counter_ptr,
    ok_ptr,
    n_checks,
    N,
    K,
    inv_eps,
    n_iter,
    tol,
    max_iter,
    check_every,
    lo,
    TOL_MODE: tl.constexpr,
    KIND: tl.constexpr,
    HAS_ROW_MASS: tl.constexpr,
    POISON: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """A whole problem in one program (grid = (B,)); writes plan, f, g and
    info = (column flag, row flag, iterations, violation at the last check)."""
    b = tl.program_id(0).to(tl.int64)
    x_ptr += b * N * K
    rm_ptr += b * N
    cols = tl.arange(0, BLOCK_K)
    col_ok = cols < K
    mass = tl.load(cm_ptr + b * K + cols, mask=col_ok, other=0.0).to(tl.float32)
    total = tl.sum(mass, 0)

    zero = tl.zeros((BLOCK_K,), tl.float32)
    col_m, col_s, bad = _sweep(
        x_ptr, rm_ptr, zero, zero, plan_ptr, f_ptr, 0, N, K, inv_eps, _COLSTATS, HAS_ROW_MASS, BLOCK_N, BLOCK_K
    )
    g0, sums, flags = _column_update(zero, col_m, col_s, mass, lo, _COLSTATS)
    flag = tl.max(flags, 0)
    violation = tl.max(_violation(sums, mass, total), 0)
    h = zero

    iteration = tl.full((), 0, tl.int32)
    keep = flag == 0
    if not TOL_MODE:
        keep = keep & (n_iter > 1)
    while keep:
        col_m, col_s, bad_now = _sweep(
            x_ptr, rm_ptr, g0, h, plan_ptr, f_ptr, 0, N, K, inv_eps, KIND, HAS_ROW_MASS, BLOCK_N, BLOCK_K
        )
        bad = tl.maximum(bad, bad_now)
        iteration += 1
        h_next, sums, flags = _column_update(h, col_m, col_s, mass, lo, KIND)
        flag = tl.maximum(flag, tl.max(flags, 0))
        violation = tl.max(_violation(sums, mass, total), 0)
        if TOL_MODE:
            checked = (iteration % check_every == 0) | (iteration >= max_iter)
            stop = checked & ((violation <= tol) | (iteration >= max_iter))
            # the answer is the plan just measured: keep its scaling
            h = tl.where(stop, h, h_next)
        else:
            stop = iteration >= n_iter - 1
            h = h_next
        keep = ~stop & (flag == 0)

    col_m, col_s, bad_now = _sweep(
        x_ptr,
        rm_ptr,
        g0,
        h,
        plan_ptr + b * N * K,
        f_ptr + b * N,
        0,
        N,
        K,
        inv_eps,
        _FINAL,
        HAS_ROW_MASS,
        BLOCK_N,
        BLOCK_K,
    )
    bad = tl.maximum(bad, bad_now)
    tl.store(g_ptr + b * K + cols, g0 + h, mask=col_ok)
    tl.store(info_ptr + b * 4 + 0, flag)
    tl.store(info_ptr + b * 4 + 1, bad.to(tl.float32))
    tl.store(info_ptr + b * 4 + 2, iteration.to(tl.float32))
    tl.store(info_ptr + b * 4 + 3, violation)
    if POISON:
        n_problems = tl.num_programs(0)
        if _arrive(counter_ptr, n_problems):
            # info holds (column flag, row flag, iterations, violation) per problem
            _poison_if_failed(
                ok_ptr,
                n_checks,
                info_ptr + 1,
                n_problems,
                info_ptr,
                n_problems,
                plan_ptr,
                f_ptr,
                g_ptr,
                n_problems,
                N,
                K,
                4,
            )


@triton.jit(do_not_specialize=["n_checks"])
def pass_kernel(
    x_ptr,
    rm_ptr,
    g0_ptr,
    h_ptr,
    h_out_ptr,
    part_m_ptr,
    part_s_ptr,
    plan_ptr,
    f_ptr,
    g_ptr,
    row_flag_ptr,
    cm_ptr,
    total_ptr,
    violation_ptr,
    col_flag_ptr,
    counter_ptr,
    ok_ptr,
    n_checks,
    N,
    K,
    inv_eps,
    rows_per_program,
    lo,
    KIND: tl.constexpr,
    HAS_ROW_MASS: tl.constexpr,
    FUSED: tl.constexpr,
    POISON: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_KC: tl.constexpr,
):
    """One pass over a chunk of rows (grid = (P, B)), whole rows per tile.

    Writes the chunk's column partials (B, P, K); with ``FUSED`` the last program of a problem
    then does its column step (``h_ptr`` -> ``h_out_ptr``; COLSTATS: ``g0`` into ``h_out_ptr``).
    FINAL writes the plan rows, ``f``, the row flag (B, P) and ``g``; with ``POISON`` the last
    program of the whole launch poisons the call if anything failed.
    """
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    b = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    col_ok = cols < K
    row_begin = pid * rows_per_program
    row_end = tl.minimum(row_begin + rows_per_program, N)
    if KIND == _COLSTATS:
        g0 = tl.zeros((BLOCK_K,), tl.float32)
        h = g0
    else:
        g0 = tl.load(g0_ptr + b * K + cols, mask=col_ok, other=float("-inf"))
        h = tl.load(h_ptr + b * K + cols, mask=col_ok, other=float("-inf"))
    col_m, col_s, bad = _sweep(
        x_ptr + b * N * K,
        rm_ptr + b * N,
        g0,
        h,
        plan_ptr + b * N * K,
        f_ptr + b * N,
        row_begin,
        row_end,
        K,
        inv_eps,
        KIND,
        HAS_ROW_MASS,
        BLOCK_N,
        BLOCK_K,
    )
    slot = b * n_programs + pid
    if KIND == _FINAL:
        tl.store(row_flag_ptr + slot, bad.to(tl.float32))
        if pid == 0:
            tl.store(g_ptr + b * K + cols, g0 + h, mask=col_ok)
        if POISON:
            n_problems = tl.num_programs(1)
            if _arrive(counter_ptr + n_problems, n_programs * n_problems):
                _poison_if_failed(
                    ok_ptr,
                    n_checks,
                    row_flag_ptr,
                    n_programs * n_problems,
                    col_flag_ptr,
                    n_problems * K,
                    plan_ptr,
                    f_ptr,
                    g_ptr,
                    n_problems,
                    N,
                    K,
                    1,
                )
    else:
        tl.store(part_m_ptr + slot * K + cols, col_m, mask=col_ok)
        tl.store(part_s_ptr + slot * K + cols, col_s, mask=col_ok)
        if FUSED:
            if _arrive(counter_ptr + b, n_programs):
                _combine_columns(
                    part_m_ptr,
                    part_s_ptr,
                    b,
                    n_programs,
                    0,
                    K,
                    K,
                    h_ptr,
                    h_out_ptr,
                    cm_ptr,
                    total_ptr,
                    violation_ptr,
                    col_flag_ptr,
                    lo,
                    KIND,
                    True,
                    BLOCK_P,
                    BLOCK_KC,
                )


@triton.jit
def combine_kernel(
    part_m_ptr,
    part_s_ptr,
    h_ptr,
    h_out_ptr,
    cm_ptr,
    total_ptr,
    violation_ptr,
    flag_ptr,
    P,
    K,
    lo,
    KIND: tl.constexpr,
    UPDATE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_KC: tl.constexpr,
):
    """Column step in a launch of its own (grid = (cdiv(K, BLOCK_KC), B)): see
    :func:`_combine_columns` (``UPDATE=False``: only reduce the partials, for an all-reduce)."""
    b = tl.program_id(1).to(tl.int64)
    col_begin = tl.program_id(0) * BLOCK_KC
    col_end = tl.minimum(col_begin + BLOCK_KC, K)
    _combine_columns(
        part_m_ptr,
        part_s_ptr,
        b,
        P,
        col_begin,
        col_end,
        K,
        h_ptr,
        h_out_ptr,
        cm_ptr,
        total_ptr,
        violation_ptr,
        flag_ptr,
        lo,
        KIND,
        UPDATE,
        BLOCK_P,
        BLOCK_KC,
    )


@triton.jit
def tiled_row_kernel(
    x_ptr,
    rm_ptr,
    g0_ptr,
    h_ptr,
    row_part_ptr,
    row_stat_ptr,
    row_flag_ptr,
    counter_ptr,
    N,
    K,
    inv_eps,
    rows_per_program,
    cols_per_program,
    FIRST: tl.constexpr,
    HAS_ROW_MASS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Row step of the tiled layout (grid = (C, R, B): column chunks, row chunks, problems).

    Each program computes, for each row of its row chunk, the log-sum-exp of ``t`` over its
    column chunk online (FIRST: of ``u = L + g0``, whose maximum is not known yet; ``h`` is
    0 then), into ``row_part`` (2, B, C, N). The last program of a row chunk merges the C
    partials of each row into the row step: ``row_stat`` (4, B, N) = (max u, m, w, log w), and
    max-accumulates the row flag (B, R).
    """
    c = tl.program_id(0)
    r = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n_col_chunks = tl.num_programs(0)
    n_row_chunks = tl.num_programs(1)
    n_problems = tl.num_programs(2)
    row_begin = r * rows_per_program
    row_end = tl.minimum(row_begin + rows_per_program, N)
    col_begin = c * cols_per_program
    col_end = tl.minimum(col_begin + cols_per_program, K)
    x_ptr += b * N * K
    stride = n_problems * N  # between the planes of row_stat
    part_stride = n_problems * n_col_chunks * N  # between the planes of row_part
    for start in range(row_begin, row_end, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        row_ok = rows < row_end
        if not FIRST:
            u_max = tl.load(row_stat_ptr + b * N + rows, mask=row_ok, other=0.0)
        acc_m = tl.full((BLOCK_N, BLOCK_K), float("-inf"), tl.float32)
        acc_s = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
        for col_start in range(col_begin, col_end, BLOCK_K):
            cols = col_start + tl.arange(0, BLOCK_K)
            col_ok = cols < col_end
            mask = row_ok[:, None] & col_ok[None, :]
            x = _load_tile(x_ptr, rows, row_end, cols, col_ok, K).to(tl.float32)
            g0 = tl.load(g0_ptr + b * K + cols, mask=col_ok, other=float("-inf"))
            u = tl.where(mask, x * inv_eps, float("-inf")) + g0[None, :]
            if FIRST:
                v = u
            else:
                h = tl.load(h_ptr + b * K + cols, mask=col_ok, other=float("-inf"))
                v = (u - u_max[:, None]) + h[None, :]
            acc_m, acc_s = _online_lse(acc_m, acc_s, v)
        m, s = _reduce_lse(acc_m, acc_s, 1)
        slot = (b * n_col_chunks + c) * N + rows
        tl.store(row_part_ptr + slot, m, mask=row_ok)
        tl.store(row_part_ptr + part_stride + slot, s, mask=row_ok)
    if _arrive(counter_ptr + b * n_row_chunks + r, n_col_chunks):
        bad = tl.zeros((BLOCK_N,), tl.int32)
        for start in range(row_begin, row_end, BLOCK_N):
            rows = start + tl.arange(0, BLOCK_N)
            row_ok = rows < row_end
            m = tl.full((BLOCK_N,), float("-inf"), tl.float32)
            s = tl.zeros((BLOCK_N,), tl.float32)
            for chunk in range(0, n_col_chunks):
                slot = (b * n_col_chunks + chunk) * N + rows
                part_m = tl.load(row_part_ptr + slot, mask=row_ok, other=float("-inf"), cache_modifier=".cg")
                part_s = tl.load(row_part_ptr + part_stride + slot, mask=row_ok, other=0.0, cache_modifier=".cg")
                m, s = _merge_lse(m, s, part_m, part_s)
            vec = b * N + rows
            if FIRST:
                # (m, s) is the log-sum-exp of u: max u becomes the shift, and t = u - max u
                # has maximum 0 where the row has support
                has = m > float("-inf")
                tl.store(row_stat_ptr + vec, tl.where(has, m, 0.0), mask=row_ok)
                m = tl.where(has, 0.0, float("-inf"))
            mass = _row_mass(rm_ptr + b * N, rows, row_ok, HAS_ROW_MASS)
            m, w, log_w, bad_rows = _row_weights(m, s, mass)
            bad = tl.maximum(bad, bad_rows)
            tl.store(row_stat_ptr + stride + vec, m, mask=row_ok)
            tl.store(row_stat_ptr + 2 * stride + vec, w, mask=row_ok)
            tl.store(row_stat_ptr + 3 * stride + vec, log_w, mask=row_ok)
        flag_slot = b * n_row_chunks + r
        old = tl.load(row_flag_ptr + flag_slot)
        tl.store(row_flag_ptr + flag_slot, tl.maximum(old, tl.max(bad, 0).to(tl.float32)))


@triton.jit(do_not_specialize=["n_checks"])
def tiled_col_kernel(
    x_ptr,
    g0_ptr,
    h_ptr,
    h_out_ptr,
    row_stat_ptr,
    part_m_ptr,
    part_s_ptr,
    plan_ptr,
    f_ptr,
    g_ptr,
    row_flag_ptr,
    cm_ptr,
    total_ptr,
    violation_ptr,
    col_flag_ptr,
    counter_ptr,
    ok_ptr,
    n_checks,
    N,
    K,
    inv_eps,
    rows_per_program,
    cols_per_program,
    lo,
    KIND: tl.constexpr,
    FUSED: tl.constexpr,
    POISON: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_KC: tl.constexpr,
):
    """Column sums of the tiled layout (grid = (C, R, B)), given the row step in ``row_stat``.

    Writes the column partials (B, R, K) of the program's chunk; with ``FUSED`` the last program
    of a column chunk does the column step of those columns. FINAL writes the plan, ``f`` (by
    the programs of the first column chunk) and ``g`` (of the first row chunk); with ``POISON``
    the last program of the launch poisons the call if anything failed.
    """
    c = tl.program_id(0)
    r = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n_col_chunks = tl.num_programs(0)
    n_row_chunks = tl.num_programs(1)
    n_problems = tl.num_programs(2)
    row_begin = r * rows_per_program
    row_end = tl.minimum(row_begin + rows_per_program, N)
    col_begin = c * cols_per_program
    col_end = tl.minimum(col_begin + cols_per_program, K)
    stride = n_problems * N
    for col_start in range(col_begin, col_end, BLOCK_K):
        cols = col_start + tl.arange(0, BLOCK_K)
        col_ok = cols < col_end
        if KIND != _COLSTATS:
            g0 = tl.load(g0_ptr + b * K + cols, mask=col_ok, other=float("-inf"))
            h = tl.load(h_ptr + b * K + cols, mask=col_ok, other=float("-inf"))
        acc_m = tl.full((BLOCK_N, BLOCK_K), float("-inf"), tl.float32)
        acc_s = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
        for start in range(row_begin, row_end, BLOCK_N):
            rows = start + tl.arange(0, BLOCK_N)
            row_ok = rows < row_end
            mask = row_ok[:, None] & col_ok[None, :]
            x = _load_tile(x_ptr + b * N * K, rows, row_end, cols, col_ok, K).to(tl.float32)
            log_kernel = tl.where(mask, x * inv_eps, float("-inf"))
            if KIND == _COLSTATS:
                acc_m, acc_s = _online_lse(acc_m, acc_s, log_kernel)
            else:
                vec = b * N + rows
                u_max = tl.load(row_stat_ptr + vec, mask=row_ok, other=0.0)
                m = tl.load(row_stat_ptr + stride + vec, mask=row_ok, other=0.0)
                t = ((log_kernel + g0[None, :]) - u_max[:, None]) + h[None, :]
                if KIND == _SAFE:
                    log_w = tl.load(row_stat_ptr + 3 * stride + vec, mask=row_ok, other=float("-inf"))
                    acc_m, acc_s = _online_lse(acc_m, acc_s, t + log_w[:, None])
                else:
                    w = tl.load(row_stat_ptr + 2 * stride + vec, mask=row_ok, other=0.0)
                    q = tl.exp(t - m[:, None]) * w[:, None]
                    if KIND == _FAST:
                        acc_s += q
                    else:
                        offsets = (b * N + rows)[:, None] * K + cols[None, :]
                        tl.store(plan_ptr + offsets, q.to(plan_ptr.dtype.element_ty), mask=mask)
        if KIND != _FINAL:
            if KIND == _FAST:
                col_m = tl.zeros((BLOCK_K,), tl.float32)
                col_s = tl.sum(acc_s, 0)
            else:
                col_m, col_s = _reduce_lse(acc_m, acc_s, 0)
            slot = (b * n_row_chunks + r) * K + cols
            tl.store(part_m_ptr + slot, col_m, mask=col_ok)
            tl.store(part_s_ptr + slot, col_s, mask=col_ok)
        elif r == 0:
            tl.store(g_ptr + b * K + cols, g0 + h, mask=col_ok)
    if KIND == _FINAL:
        if c == 0:
            for start in range(row_begin, row_end, BLOCK_N):
                rows = start + tl.arange(0, BLOCK_N)
                row_ok = rows < row_end
                vec = b * N + rows
                u_max = tl.load(row_stat_ptr + vec, mask=row_ok, other=0.0)
                log_w = tl.load(row_stat_ptr + 3 * stride + vec, mask=row_ok, other=0.0)
                tl.store(f_ptr + vec, log_w - u_max, mask=row_ok)
        if POISON:
            programs = n_col_chunks * n_row_chunks * n_problems
            if _arrive(counter_ptr + n_problems * (n_row_chunks + n_col_chunks), programs):
                _poison_if_failed(
                    ok_ptr,
                    n_checks,
                    row_flag_ptr,
                    n_problems * n_row_chunks,
                    col_flag_ptr,
                    n_problems * K,
                    plan_ptr,
                    f_ptr,
                    g_ptr,
                    n_problems,
                    N,
                    K,
                    1,
                )
    elif FUSED:
        if _arrive(counter_ptr + n_problems * n_row_chunks + b * n_col_chunks + c, n_row_chunks):
            _combine_columns(
                part_m_ptr,
                part_s_ptr,
                b,
                n_row_chunks,
                col_begin,
                col_end,
                K,
                h_ptr,
                h_out_ptr,
                cm_ptr,
                total_ptr,
                violation_ptr,
                col_flag_ptr,
                lo,
                KIND,
                True,
                BLOCK_P,
                BLOCK_KC,
            )
