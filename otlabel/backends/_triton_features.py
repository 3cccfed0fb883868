"""One streamed Sinkhorn pass over features x prototypes, fused in a Triton kernel (needs ``triton``;
its caller imports this module lazily, as :mod:`otlabel.backends.triton_backend` imports its kernels).

The scores ``S = coef * X C^T`` (``X``: n x d features, ``C``: K x d prototypes) are never
materialised: a pass recomputes them tile by tile with ``tl.dot`` (float32 accumulator) and reduces
the kernel entries, all in float32,

    G[i, k] = exp(coef * s_i * <x_i, c_k> + row_offset[i] + col_offset[k]),

(``s``: an optional per-row scale of the dot products, such as the features' inverse norms, so
that rows are normalised without a normalised copy of X; 1 by default) into (:func:`feature_pass`):

* ``row_sums``: ``r_i = t + sum_k G[i, k] b_k`` (``b``: the column scaling; ``t``: an optional
  tiny bias, 0 by default, that keeps ``0 / 0`` out of the scalings of zero-mass rows);
* ``row_scaling``: ``a_i = m_i / r_i`` (``m``: the row mass, 1 by default);
* ``col_partial`` (optional): ``sum_i a_i G[i, k]`` over the pass's rows (a shard's share of
  the column sums, to be all-reduced by the caller);
* ``top_values`` / ``top_indices`` (optional): the ``top_k`` largest entries of each row of the
  plan ``Q[i, k] = a_i G[i, k] b_k``, sorted descending, **ties broken by the lowest column index
  first**. Rows are ranked by the float32 ``G[i, k] b_k`` (``a_i`` is a positive factor common to
  the row), so two entries tie when those products are equal.

Nothing here guards the exponentials: the caller picks the log offsets so that every ``r_i`` is
positive and finite (a row whose sum underflows to 0 gets ``a_i = inf``, as the formula says).

**Layout.** The grid is one dimension of programs over rows (a few per streaming multiprocessor);
each program owns a contiguous chunk of row blocks of ``BLOCK_M`` rows and, for each block:

1. sweeps the K column tiles once: ``X_block C_tile^T`` (looping over d in tiles of ``BLOCK_D``
   unless the block's d fits one tile, when ``X_block`` is loaded once and stays on chip while the
   prototypes stream past), the exponential, the row sums and the running top-k;
2. writes ``r``, ``a`` (and the top-k, scaled by ``a``), since ``a_i`` needs the whole row's sum and
   a row of up to 262,144 floats does not fit on chip;
3. only with ``col_sums``: sweeps the K tiles again, **recomputing** ``X_block C_tile^T`` and the
   exponential, and adds ``sum_i a_i G[i, k]`` into the program's own row of a (programs x K)
   buffer of column partials.

A pass therefore costs **one matmul** of the scores' shape (n x d by d x K) without ``col_sums``
and **two** with it (and as many exponentials). The column partials are **deterministic**: no
atomics; each program accumulates its row blocks in order into its own partial row, and
``torch.sum`` over the programs (a fixed reduction order for a given shape) finishes the sum. The
programs' number depends on the device's multiprocessor count, so two GPU models may differ in
the last bits, but repeated runs on one device are bit-identical. The partials cost 8 bytes of
traffic (a read and a write) per row block and column, next to the ``d x itemsize`` bytes of the
prototype read for it (1.6 % at d = 256 in bfloat16): a small price for run-to-run reproducibility,
which atomics would not give.

Parallelism is over row blocks only (a row's sum needs every column), so a pass saturates a GPU
only with some ``BLOCK_M x multiprocessors`` rows (about 17,000 on an H100); the launch constants
below are reasonable first choices, not measured on a GPU (see ``benchmarks/gpu_features.py``).
float16/bfloat16 features are multiplied on tensor cores (exact products, float32 accumulation);
float32 features in IEEE float32 on the CUDA cores, with smaller tiles and the d loop
(``*_FMA``), unless ``tf32=True``. In the interpreter, which multiplies bfloat16's raw bits as
integers, bfloat16 operands are converted to float32 (exactly) before the dot.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._triton_kernels import interpreting

#: Whether these kernels run in the interpreter: ``triton.jit`` decides when they are defined,
#: i.e. when this module is first imported, and the setting must not change afterwards.
INTERPRETED = interpreting()

#: Tiles on a GPU: rows per block, columns per tile, and the d tile when d is larger than
#: RESIDENT_BYTES allow to keep a row block on chip (an X block of BLOCK_M x d elements).
BLOCK_M = 128
BLOCK_K = 64
BLOCK_D = 64
RESIDENT_BYTES = 64 * 1024
NUM_WARPS = 8
NUM_STAGES = 2
#: float32 multiplied in IEEE float32 runs tl.dot on the CUDA cores (FMA), operands in registers:
#: smaller tiles and always the d loop (a resident 128 x 128 float32 block spills kilobytes of
#: registers; 64 x 64 x 32 spills none, or a few bytes with top-k: ptxas for sm_90).
BLOCK_M_FMA = 64
BLOCK_K_FMA = 64
BLOCK_D_FMA = 32
#: Programs per streaming multiprocessor (each owns a contiguous chunk of row blocks).
PROGRAMS_PER_SM = 2
#: The interpreter pays per operation and about 2 ms per program, not per element: few, wide tiles.
BLOCK_M_INTERPRETED = 256
BLOCK_K_INTERPRETED = 1024
BLOCK_D_INTERPRETED = 1024
RESIDENT_BYTES_INTERPRETED = 1 << 30
PROGRAMS_INTERPRETED = 2
#: Largest ``top_k``: the running top-k of a row block lives in registers (BLOCK_M x top_k) and
#: each column tile that can change it costs top_k selection steps.
MAX_TOP_K = 64

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: tl.dot needs every dimension of a tile to be at least 16.
_MIN_DOT = 16


class FeaturePass(NamedTuple):
    """What one pass returns (float32 unless said otherwise; see the module's docstring)."""

    row_sums: torch.Tensor  #: (n,) r_i = sum_k G[i, k] b_k
    row_scaling: torch.Tensor  #: (n,) a_i = row_mass_i / r_i
    col_partial: torch.Tensor | None  #: (K,) sum_i a_i G[i, k], or None without ``col_sums``
    top_values: torch.Tensor | None  #: (n, top_k) largest Q[i, k], descending; None if top_k = 0
    top_indices: torch.Tensor | None  #: (n, top_k) int64 their columns (ties: lowest index first)


@triton.jit
def _scores(
    x_ptr,
    c_ptr,
    x_block,
    rows,
    row_ok,
    cols,
    col_ok,
    d,
    RESIDENT: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``<x_i, c_k>`` of a (rows, cols) tile in float32: one dot against the resident ``x_block``
    (``RESIDENT``: d fits one tile), else a loop over d tiles reloading both operands.

    ``UPCAST`` (bfloat16 in the interpreter, which multiplies bfloat16's raw bits as integers):
    the operands are converted to float32 first, exactly, and multiplied in IEEE float32.
    """
    # int64 element offsets: n * d can pass 2**31 (a million rows of 4096 floats)
    col_base = cols.to(tl.int64) * d
    if RESIDENT:
        dims = tl.arange(0, BLOCK_D)
        # loaded transposed (d along the tile's rows), as tl.dot wants its right operand
        c_t = tl.load(
            c_ptr + (col_base[None, :] + dims[:, None]), mask=col_ok[None, :] & (dims < d)[:, None], other=0.0
        )
        if UPCAST:
            c_t = c_t.to(tl.float32)
        acc = tl.dot(x_block, c_t, input_precision=PRECISION, out_dtype=tl.float32)
    else:
        row_base = rows.to(tl.int64) * d
        acc = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
        for start in range(0, d, BLOCK_D):
            dims = start + tl.arange(0, BLOCK_D)
            dim_ok = dims < d
            x = tl.load(x_ptr + (row_base[:, None] + dims[None, :]), mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
            c_t = tl.load(
                c_ptr + (col_base[None, :] + dims[:, None]), mask=col_ok[None, :] & dim_ok[:, None], other=0.0
            )
            if UPCAST:
                x = x.to(tl.float32)
                c_t = c_t.to(tl.float32)
            acc = tl.dot(x, c_t, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _kernel_tile(
    x_ptr,
    c_ptr,
    x_block,
    co_ptr,
    row_coef,
    row_offset,
    rows,
    row_ok,
    cols,
    col_ok,
    d,
    RESIDENT: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """The tile of ``G = exp(row_coef_i * <x_i, c_k> + row_offset_i + col_offset_k)`` (``row_coef``:
    ``coef`` times the row scale); 0 in columns past K and rows past n (their offsets load as -inf)."""
    dots = _scores(
        x_ptr, c_ptr, x_block, rows, row_ok, cols, col_ok, d, RESIDENT, PRECISION, UPCAST, BLOCK_M, BLOCK_K, BLOCK_D
    )
    col_offset = tl.load(co_ptr + cols, mask=col_ok, other=float("-inf"))
    return tl.exp(dots * row_coef[:, None] + row_offset[:, None] + col_offset[None, :])


@triton.jit
def _merge_top(best_v, best_i, w, cols, TOP_K: tl.constexpr, TOP_PAD: tl.constexpr):
    """Merge a tile's entries ``w`` (BLOCK_M, BLOCK_K; -inf where masked) into each row's running
    top-k (``best_v`` descending, ``best_i`` their columns; slots from TOP_K on stay -inf).

    The tile's columns all come after the running ones (tiles are visited in column order), so a
    tie between a running entry and a tile entry keeps the running one, and within the tile the
    lowest column wins: ties go to the lowest column index overall. Skipped (one reduction) when
    no row's tile maximum beats its k-th value, which is the common case once the sweep is past
    its first tiles.
    """
    slots = tl.arange(0, TOP_PAD)[None, :]
    kth = tl.min(tl.where(slots < TOP_K, best_v, float("inf")), 1)
    if tl.max((tl.max(w, 1) > kth).to(tl.int32), 0) > 0:
        no_col = 2147483647
        new_v = tl.full(best_v.shape, float("-inf"), tl.float32)
        new_i = tl.zeros(best_i.shape, tl.int32)
        run_v = best_v
        cand = w
        for slot in range(TOP_K):
            tile_v = tl.max(cand, 1)
            tile_i = tl.min(tl.where(cand == tile_v[:, None], cols[None, :], no_col), 1)
            run_top = tl.max(run_v, 1)  # the running list is sorted: its first entry not taken yet
            run_i = tl.min(tl.where(run_v == run_top[:, None], best_i, no_col), 1)
            take_tile = tile_v > run_top
            value = tl.where(take_tile, tile_v, run_top)
            index = tl.where(take_tile, tile_i, run_i)
            new_v = tl.where(slots == slot, value[:, None], new_v)
            new_i = tl.where(slots == slot, index[:, None], new_i)
            cand = tl.where(take_tile[:, None] & (cols[None, :] == tile_i[:, None]), float("-inf"), cand)
            run_v = tl.where(~take_tile[:, None] & (best_i == run_i[:, None]), float("-inf"), run_v)
        best_v = new_v
        best_i = new_i
    return best_v, best_i


@triton.jit(do_not_specialize=["n"])
def feature_pass_kernel(
    x_ptr,
    c_ptr,
    rs_ptr,
    ro_ptr,
    co_ptr,
    b_ptr,
    rm_ptr,
    bias_ptr,
    row_sums_ptr,
    row_scaling_ptr,
    part_ptr,
    top_v_ptr,
    top_i_ptr,
    n,
    K,
    d,
    coef,
    rows_per_program,
    HAS_ROW_SCALE: tl.constexpr,
    HAS_ROW_MASS: tl.constexpr,
    HAS_ROW_BIAS: tl.constexpr,
    COL_SUMS: tl.constexpr,
    TOP_K: tl.constexpr,
    TOP_PAD: tl.constexpr,
    RESIDENT: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One pass over the row blocks of rows [pid * rows_per_program, ...) (grid = (programs,)):
    row sums, row scalings and top-k; with ``COL_SUMS`` a second sweep into ``part_ptr``
    (programs, K) row ``pid``. See the module's docstring."""
    pid = tl.program_id(0)
    row_begin = pid * rows_per_program
    row_end = tl.minimum(row_begin + rows_per_program, n)
    part_row = part_ptr + pid.to(tl.int64) * K
    for start in range(row_begin, row_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < row_end
        if RESIDENT:
            dims = tl.arange(0, BLOCK_D)
            x_mask = row_ok[:, None] & (dims < d)[None, :]
            x_block = tl.load(x_ptr + (rows.to(tl.int64)[:, None] * d + dims[None, :]), mask=x_mask, other=0.0)
            if UPCAST:
                x_block = x_block.to(tl.float32)
        else:
            x_block = tl.zeros((1,), tl.float32)  # unused: _scores reloads X for every d tile
        # -inf past n: those rows' kernel entries are 0 (finite, whatever the column offsets), so
        # that their zero scaling cannot meet an overflowed entry (0 * inf) in the column sums
        row_offset = tl.load(ro_ptr + rows, mask=row_ok, other=float("-inf"))
        # the dot products' factor per row: coef, times the row's scale (the features' inverse norm)
        if HAS_ROW_SCALE:
            row_coef = tl.load(rs_ptr + rows, mask=row_ok, other=0.0) * coef
        else:
            row_coef = tl.zeros((BLOCK_M,), tl.float32) + coef
        row_sum = tl.zeros((BLOCK_M,), tl.float32)
        if TOP_K > 0:
            best_v = tl.full((BLOCK_M, TOP_PAD), float("-inf"), tl.float32)
            best_i = tl.zeros((BLOCK_M, TOP_PAD), tl.int32)
        for col_start in range(0, K, BLOCK_K):
            cols = col_start + tl.arange(0, BLOCK_K)
            col_ok = cols < K
            g = _kernel_tile(
                x_ptr,
                c_ptr,
                x_block,
                co_ptr,
                row_coef,
                row_offset,
                rows,
                row_ok,
                cols,
                col_ok,
                d,
                RESIDENT,
                PRECISION,
                UPCAST,
                BLOCK_M,
                BLOCK_K,
                BLOCK_D,
            )
            b = tl.load(b_ptr + cols, mask=col_ok, other=0.0)
            gb = g * b[None, :]
            row_sum += tl.sum(gb, 1)
            if TOP_K > 0:
                # -inf past K: a real entry (>= 0) always ranks above a padding column
                w = tl.where(col_ok[None, :], gb, float("-inf"))
                best_v, best_i = _merge_top(best_v, best_i, w, cols, TOP_K, TOP_PAD)
        if HAS_ROW_BIAS:
            row_sum += tl.load(bias_ptr)
        if HAS_ROW_MASS:
            mass = tl.load(rm_ptr + rows, mask=row_ok, other=0.0)
        else:
            mass = tl.full((BLOCK_M,), 1.0, tl.float32)
        # rows past n (sum 0) get a = 0 rather than 0 / 0
        scaling = tl.where(row_ok, mass / tl.where(row_ok, row_sum, 1.0), 0.0)
        tl.store(row_sums_ptr + rows, row_sum, mask=row_ok)
        tl.store(row_scaling_ptr + rows, scaling, mask=row_ok)
        if TOP_K > 0:
            slots = tl.arange(0, TOP_PAD)[None, :]
            top_offsets = rows.to(tl.int64)[:, None] * TOP_K + slots
            top_mask = row_ok[:, None] & (slots < TOP_K)
            # (the padding slots' -inf are kept out of the product: -inf * 0 is NaN)
            top_values = tl.where(top_mask, best_v, 0.0) * scaling[:, None]
            tl.store(top_v_ptr + top_offsets, top_values, mask=top_mask)
            tl.store(top_i_ptr + top_offsets, best_i.to(tl.int64), mask=top_mask)
        if COL_SUMS:
            # the first block stores, the later ones add (a bound, not a scalar-and-vector mask,
            # which the interpreter mistypes)
            added_end = tl.where(start > row_begin, K, 0)
            for col_start in range(0, K, BLOCK_K):
                cols = col_start + tl.arange(0, BLOCK_K)
                col_ok = cols < K
                g = _kernel_tile(
                    x_ptr,
                    c_ptr,
                    x_block,
                    co_ptr,
                    row_coef,
                    row_offset,
                    rows,
                    row_ok,
                    cols,
                    col_ok,
                    d,
                    RESIDENT,
                    PRECISION,
                    UPCAST,
                    BLOCK_M,
                    BLOCK_K,
                    BLOCK_D,
                )
                partial = tl.sum(g * scaling[:, None], 0)
                # the previous block's store of these columns may come from other threads: a CTA
                # barrier makes it visible before it is read back (no-op in the interpreter)
                tl.debug_barrier()
                previous = tl.load(part_row + cols, mask=cols < added_end, other=0.0)
                tl.store(part_row + cols, previous + partial, mask=col_ok)


def _next_power_of_2(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


class Launch(NamedTuple):
    """Tile sizes and grid of one pass (see :func:`launch_config`)."""

    block_m: int
    block_k: int
    block_d: int
    resident: bool  #: the row block's d fits one tile and stays on chip over the column sweep
    rows_per_program: int
    programs: int


def launch_config(n: int, K: int, d: int, dtype: torch.dtype, device: torch.device, fma: bool = False) -> Launch:
    """Tiles and grid for ``n`` rows (``programs`` = 0 when n = 0; ``fma``: a float32 dot in IEEE
    float32); the module's constants are read at every call, so that tests and benchmarks can
    change them."""
    if INTERPRETED:
        block_m, block_k, block_d, resident_bytes = (
            BLOCK_M_INTERPRETED,
            BLOCK_K_INTERPRETED,
            BLOCK_D_INTERPRETED,
            RESIDENT_BYTES_INTERPRETED,
        )
        target = PROGRAMS_INTERPRETED
    elif fma:
        block_m, block_k, block_d, resident_bytes = BLOCK_M_FMA, BLOCK_K_FMA, BLOCK_D_FMA, 0
        target = _multiprocessors(device) * PROGRAMS_PER_SM
    else:
        block_m, block_k, block_d, resident_bytes = BLOCK_M, BLOCK_K, BLOCK_D, RESIDENT_BYTES
        target = _multiprocessors(device) * PROGRAMS_PER_SM
    # no tile wider than the problem needs (but at least tl.dot's 16)
    block_m = max(_MIN_DOT, min(block_m, _next_power_of_2(max(n, 1))))
    block_k = max(_MIN_DOT, min(block_k, _next_power_of_2(K)))
    whole_d = max(_MIN_DOT, _next_power_of_2(d))
    resident = block_m * whole_d * dtype.itemsize <= resident_bytes
    block_d = whole_d if resident else max(_MIN_DOT, min(block_d, whole_d))
    row_blocks = _cdiv(n, block_m)
    blocks_per_program = _cdiv(row_blocks, max(1, min(row_blocks, target))) if n else 1
    rows_per_program = blocks_per_program * block_m
    return Launch(block_m, block_k, block_d, resident, rows_per_program, _cdiv(n, rows_per_program))


def feature_pass(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    coef: float,
    row_offset: torch.Tensor,
    col_offset: torch.Tensor,
    col_scaling: torch.Tensor,
    row_mass: torch.Tensor | None = None,
    *,
    row_scale: torch.Tensor | None = None,
    row_bias: torch.Tensor | None = None,
    col_sums: bool = False,
    top_k: int = 0,
    tf32: bool = False,
) -> FeaturePass:
    """One streamed Sinkhorn pass over
    ``G = exp(coef * row_scale[:, None] * X C^T + row_offset[:, None] + col_offset)``.

    Parameters
    ----------
    features : torch.Tensor
        (n, d) contiguous, float32, bfloat16 or float16; n may be 0 (an empty shard).
    prototypes : torch.Tensor
        (K, d) contiguous, the dtype and device of ``features``.
    coef : float
        Scale of the dot products (``scale / epsilon``).
    row_offset, col_offset : torch.Tensor
        (n,) and (K,) float32: log offsets of the rows and of the columns.
    col_scaling : torch.Tensor
        (K,) float32: the column scaling ``b``.
    row_mass : torch.Tensor or None
        (n,) float32 row masses; None: every row has mass 1.
    row_scale : torch.Tensor or None
        (n,) float32 factors of each row's dot products, applied (with ``coef``) before the
        offsets are added: the features' inverse L2 norms label the normalised rows
        ``x_i / |x_i|`` without a normalised copy of X. None: 1 for every row.
    row_bias : torch.Tensor or None
        (1,) float32: a number added to every row sum before the row scaling is taken (a tensor,
        so that it is read on the device); None: no bias. The row sums returned include it.
    col_sums : bool
        Also return ``sum_i a_i G[i, k]`` (a second matmul: the kernel entries are recomputed).
    top_k : int
        0 (no top-k), or the number of largest plan entries to return per row (at most K and
        ``MAX_TOP_K``).
    tf32 : bool
        Multiply float32 features in TF32 on tensor cores (about 1e-3 relative error in the dot
        products) instead of IEEE float32. Ignored for half-precision features.

    Returns
    -------
    FeaturePass
        ``row_sums``, ``row_scaling``, ``col_partial`` (None without ``col_sums``), ``top_values``
        and ``top_indices`` (None when ``top_k`` is 0; ties broken by the lowest column index).

    Notes
    -----
    Only shapes, dtypes and devices are checked (cheaply); values are the caller's business. The
    tensors must be on a CUDA device, or on the CPU with ``TRITON_INTERPRET=1`` set before this
    module was first imported.
    """
    _check(features, prototypes, row_offset, col_offset, col_scaling, row_mass, top_k, row_scale, row_bias)
    n, d = features.shape
    K = prototypes.shape[0]
    device = features.device
    row_sums = torch.empty(n, dtype=torch.float32, device=device)
    row_scaling = torch.empty(n, dtype=torch.float32, device=device)
    top_values = top_indices = None
    if top_k:
        top_values = torch.empty((n, top_k), dtype=torch.float32, device=device)
        top_indices = torch.empty((n, top_k), dtype=torch.int64, device=device)
    upcast = INTERPRETED and features.dtype == torch.bfloat16
    # the precision only matters for float32 operands ("tf32", tl.dot's default, for half ones)
    precision = "ieee" if (features.dtype == torch.float32 and not tf32) or upcast else "tf32"
    launch = launch_config(n, K, d, features.dtype, device, fma=precision == "ieee")
    if launch.programs == 0:  # no rows: no launch (a grid of 0 programs is an error)
        col_partial = torch.zeros(K, dtype=torch.float32, device=device) if col_sums else None
        return FeaturePass(row_sums, row_scaling, col_partial, top_values, top_indices)
    partials = torch.empty((launch.programs, K), dtype=torch.float32, device=device) if col_sums else row_sums
    options = {} if INTERPRETED else {"num_warps": NUM_WARPS, "num_stages": NUM_STAGES}
    feature_pass_kernel[(launch.programs,)](
        features,
        prototypes,
        row_sums if row_scale is None else row_scale,  # (any float32 pointer where not read)
        row_offset,
        col_offset,
        col_scaling,
        row_sums if row_mass is None else row_mass,
        row_sums if row_bias is None else row_bias,
        row_sums,
        row_scaling,
        partials,
        row_sums if top_values is None else top_values,
        row_sums if top_indices is None else top_indices,
        n,
        K,
        d,
        float(coef),
        launch.rows_per_program,
        HAS_ROW_SCALE=row_scale is not None,
        HAS_ROW_MASS=row_mass is not None,
        HAS_ROW_BIAS=row_bias is not None,
        COL_SUMS=col_sums,
        TOP_K=top_k,
        TOP_PAD=_next_power_of_2(max(top_k, 1)),
        RESIDENT=launch.resident,
        PRECISION=precision,
        UPCAST=upcast,
        BLOCK_M=launch.block_m,
        BLOCK_K=launch.block_k,
        BLOCK_D=launch.block_d,
        enable_fp_fusion=True,  # as the Sinkhorn kernels: FMAs, triton's default so far
        **options,
    )
    # programs' partials summed in a fixed order: deterministic, unlike atomics
    col_partial = partials.sum(0) if col_sums else None
    return FeaturePass(row_sums, row_scaling, col_partial, top_values, top_indices)


def _check(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    row_offset: torch.Tensor,
    col_offset: torch.Tensor,
    col_scaling: torch.Tensor,
    row_mass: torch.Tensor | None,
    top_k: int,
    row_scale: torch.Tensor | None = None,
    row_bias: torch.Tensor | None = None,
) -> None:
    """Shapes, dtypes, devices and layouts (no values: nothing is read back from the device)."""
    assert features.dim() == 2 and prototypes.dim() == 2, (
        f"features (n, d) and prototypes (K, d) must be matrices, got shapes {tuple(features.shape)} "
        f"and {tuple(prototypes.shape)}"
    )
    n, d = features.shape
    K = prototypes.shape[0]
    assert prototypes.shape[1] == d, f"features have d = {d}, prototypes {prototypes.shape[1]}"
    assert K >= 1 and d >= 1, f"need K >= 1 prototypes of d >= 1 dimensions, got K = {K}, d = {d}"
    assert features.dtype in _DTYPES and prototypes.dtype == features.dtype, (
        f"features and prototypes must share one of {_DTYPES}, got {features.dtype} and {prototypes.dtype}"
    )
    assert features.is_contiguous() and prototypes.is_contiguous(), "features and prototypes must be contiguous"
    vectors = {"row_offset": (row_offset, n), "col_offset": (col_offset, K), "col_scaling": (col_scaling, K)}
    for name, vector, length in (("row_mass", row_mass, n), ("row_scale", row_scale, n), ("row_bias", row_bias, 1)):
        if vector is not None:
            vectors[name] = (vector, length)
    for name, (vector, length) in vectors.items():
        assert vector.shape == (length,) and vector.dtype == torch.float32 and vector.is_contiguous(), (
            f"{name} must be a contiguous float32 vector of length {length}, got {vector.dtype} {tuple(vector.shape)}"
        )
        assert vector.device == features.device, f"{name} is on {vector.device}, features on {features.device}"
    assert prototypes.device == features.device, f"prototypes are on {prototypes.device}, features on {features.device}"
    assert 0 <= top_k <= min(K, MAX_TOP_K), f"top_k must be in [0, min(K, {MAX_TOP_K})] = [0, {min(K, MAX_TOP_K)}]"
    assert interpreting() == INTERPRETED, (
        f"TRITON_INTERPRET was {'set' if INTERPRETED else 'unset'} when otlabel's feature kernel was defined and "
        "has changed since; set it once, before the first use"
    )
    device = features.device.type
    assert device == "cuda" or (device == "cpu" and INTERPRETED), (
        f"features are on a {device!r} device: the feature kernel runs on CUDA tensors (or on the CPU in "
        "Triton's interpreter, with TRITON_INTERPRET=1 set before it is first imported)"
    )
