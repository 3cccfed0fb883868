"""Triton kernels of the fused Sinkhorn backend (needs ``triton``; imported lazily).

Notation (one problem of a batch; all in float32):

* ``L = x * inv_eps``: the log-kernel, ``x`` being the scores (``inv_eps = 1/epsilon``) or,
  with a prior, ``scores/epsilon + log(prior)`` computed beforehand (``inv_eps = 1``). Inputs
  of any float dtype (scores, log-kernel, masses) are loaded and converted to float32.
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

Every pass reads the scores once. The kinds of pass:

* ``COLSTATS``: column log-sum-exp of ``L`` (the first column step of the SwAV loop, which
  starts from the unshifted rows), with per-element online maxima.
* ``FAST``: row step, and the column sums of the new plan accumulated as plain sums of
  ``p * w`` (every term is at most the row mass, so nothing overflows; a column sum can
  underflow only when a column receives less than ~1e-31 of mass, which the column step flags
  as *unhealthy* so that the host reruns the problem with ``SAFE``).
* ``SAFE``: row step, and the column sums accumulated as log-sum-exp with online maxima
  (exact over the whole float32 range; one more exponential per element).
* ``FINAL``: row step, then the plan and ``f`` are written.

So one iteration (column step, then row step) is one pass: the column sums for the column
step of iteration ``t + 1`` are accumulated in the pass of iteration ``t``. ``solve_kernel``
runs a whole problem in one program (one launch for a batch); ``pass_kernel`` and
``combine_kernel`` split a large problem over many programs, with one launch of each per
iteration.
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
def _reduce_rows(acc_m, acc_s):
    """Reduce element-wise (max, sum) accumulators over rows to one (max, sum) per column."""
    m = tl.max(acc_m, 0)
    shift = tl.where(m > float("-inf"), m, 0.0)
    return m, tl.sum(acc_s * tl.exp(acc_m - shift[None, :]), 0)


@triton.jit
def _load_tile(x_ptr, rows, row_end, cols, col_ok, K):
    """The (rows, cols) tile of a row-major (N, K) matrix, in its own dtype; 0 outside."""
    mask = (rows < row_end)[:, None] & col_ok[None, :]
    return tl.load(x_ptr + (rows[:, None] * K + cols[None, :]), mask=mask, other=0.0)


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
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One pass over rows [row_begin, row_end) of one problem (pointers at the problem's start).

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
            mass = tl.load(rm_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
            # The fixed kernel u = L + g0 is shifted by its row maxima before h is added, so
            # that h is added at the resolution of the row's largest entries, not at that of
            # |u| (which a per-row offset of the scores can make 1e4).
            u = log_kernel + g0[None, :]
            u_max = tl.max(u, 1)
            u_max = tl.where(u_max > float("-inf"), u_max, 0.0)
            t = (u - u_max[:, None]) + h[None, :]
            m = tl.max(t, 1)
            has = m > float("-inf")
            live = mass > 0
            ok = has & live
            m = tl.where(has, m, 0.0)
            p = tl.exp(t - m[:, None])
            s = tl.where(has, tl.sum(p, 1), 1.0)  # >= 1 for a row with support
            w = tl.where(ok, mass / s, 0.0)
            bad = tl.maximum(bad, (live & ~has).to(tl.int32))
            if KIND == _FAST:
                acc_s += p * w[:, None]
            else:
                log_w = tl.where(ok, tl.log(tl.where(ok, mass, 1.0)) - m - tl.log(s), float("-inf"))
                if KIND == _SAFE:
                    acc_m, acc_s = _online_lse(acc_m, acc_s, t + log_w[:, None])  # log of p * w
                else:
                    tl.store(plan_ptr + offsets, p * w[:, None], mask=mask)
                    tl.store(f_ptr + rows, log_w - u_max, mask=row_ok)
    if KIND == _FAST:
        col_m = tl.zeros((BLOCK_K,), tl.float32)
        col_s = tl.sum(acc_s, 0)
    else:
        col_m, col_s = _reduce_rows(acc_m, acc_s)
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


@triton.jit(do_not_specialize=["n_iter", "max_iter", "check_every"])
def solve_kernel(
    x_ptr,
    rm_ptr,
    cm_ptr,
    plan_ptr,
    f_ptr,
    g_ptr,
    info_ptr,
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
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """A whole problem in one program (grid = (B,)); writes plan, f, g and
    info = (column flag, row flag, iterations, violation at the last check)."""
    b = tl.program_id(0).to(tl.int64)
    x_ptr += b * N * K
    plan_ptr += b * N * K
    rm_ptr += b * N
    f_ptr += b * N
    cols = tl.arange(0, BLOCK_K)
    col_ok = cols < K
    mass = tl.load(cm_ptr + b * K + cols, mask=col_ok, other=0.0).to(tl.float32)
    total = tl.sum(mass, 0)

    zero = tl.zeros((BLOCK_K,), tl.float32)
    col_m, col_s, bad = _sweep(
        x_ptr, rm_ptr, zero, zero, plan_ptr, f_ptr, 0, N, K, inv_eps, _COLSTATS, BLOCK_N, BLOCK_K
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
        col_m, col_s, bad_now = _sweep(x_ptr, rm_ptr, g0, h, plan_ptr, f_ptr, 0, N, K, inv_eps, KIND, BLOCK_N, BLOCK_K)
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

    col_m, col_s, bad_now = _sweep(x_ptr, rm_ptr, g0, h, plan_ptr, f_ptr, 0, N, K, inv_eps, _FINAL, BLOCK_N, BLOCK_K)
    bad = tl.maximum(bad, bad_now)
    tl.store(g_ptr + b * K + cols, g0 + h, mask=col_ok)
    tl.store(info_ptr + b * 4 + 0, flag)
    tl.store(info_ptr + b * 4 + 1, bad.to(tl.float32))
    tl.store(info_ptr + b * 4 + 2, iteration.to(tl.float32))
    tl.store(info_ptr + b * 4 + 3, violation)


@triton.jit
def pass_kernel(
    x_ptr,
    rm_ptr,
    g0_ptr,
    h_ptr,
    part_m_ptr,
    part_s_ptr,
    plan_ptr,
    f_ptr,
    row_flag_ptr,
    N,
    K,
    inv_eps,
    rows_per_program,
    KIND: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One pass over a chunk of rows (grid = (P, B)); writes the chunk's column partials
    (B, P, K), or with FINAL its plan rows, f and row flag (B, P)."""
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
        BLOCK_N,
        BLOCK_K,
    )
    slot = b * n_programs + pid
    if KIND == _FINAL:
        tl.store(row_flag_ptr + slot, bad.to(tl.float32))
    else:
        tl.store(part_m_ptr + slot * K + cols, col_m, mask=col_ok)
        tl.store(part_s_ptr + slot * K + cols, col_s, mask=col_ok)


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
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Column step of a large problem (grid = (cdiv(K, BLOCK_K), B)): reduce the P partials of
    a block of columns, write the new ``h`` (COLSTATS: ``g0``), the per-column violation, and
    max-accumulate the per-column flag."""
    b = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < K
    acc_m = tl.full((BLOCK_P, BLOCK_K), float("-inf"), tl.float32)
    acc_s = tl.zeros((BLOCK_P, BLOCK_K), tl.float32)
    for start in range(0, P, BLOCK_P):
        parts = start + tl.arange(0, BLOCK_P)
        mask = (parts < P)[:, None] & col_ok[None, :]
        offsets = (b * P + parts)[:, None] * K + cols[None, :]
        part_s = tl.load(part_s_ptr + offsets, mask=mask, other=0.0)
        if KIND == _FAST:
            acc_s += part_s
        else:
            part_m = tl.load(part_m_ptr + offsets, mask=mask, other=float("-inf"))
            # merge (acc_m, acc_s) with (part_m, part_s), guarding -inf - (-inf)
            hi = tl.maximum(acc_m, part_m)
            shift = tl.where(hi > float("-inf"), hi, 0.0)
            acc_s = acc_s * tl.exp(acc_m - shift) + part_s * tl.exp(part_m - shift)
            acc_m = hi
    if KIND == _FAST:
        col_m = tl.zeros((BLOCK_K,), tl.float32)
        col_s = tl.sum(acc_s, 0)
    else:
        col_m, col_s = _reduce_rows(acc_m, acc_s)
    mass = tl.load(cm_ptr + b * K + cols, mask=col_ok, other=0.0).to(tl.float32)
    total = tl.load(total_ptr + b).to(tl.float32)
    if KIND == _COLSTATS:
        h = tl.zeros((BLOCK_K,), tl.float32)
    else:
        h = tl.load(h_ptr + b * K + cols, mask=col_ok, other=float("-inf"))
    h_new, sums, flag = _column_update(h, col_m, col_s, mass, lo, KIND)
    tl.store(h_out_ptr + b * K + cols, h_new, mask=col_ok)
    tl.store(violation_ptr + b * K + cols, _violation(sums, mass, total), mask=col_ok)
    old = tl.load(flag_ptr + b * K + cols, mask=col_ok, other=0.0)
    tl.store(flag_ptr + b * K + cols, tl.maximum(old, flag), mask=col_ok)
