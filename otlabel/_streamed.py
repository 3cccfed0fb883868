"""Scores given as features x prototypes, streamed: the layout that never holds the N x K matrix.

:func:`~otlabel.sinkhorn_features` labels ``S = scale * X C^T`` (X: N x d features, C: K x d
prototypes, rows optionally L2-normalised) with the same solver core as every other call: this
module supplies

* :class:`Factored`, the scores of such a call (what :class:`~otlabel._problem.Problem` holds in
  place of a tensor), which makes a lazy kernel;
* :class:`StreamedKernel`, the solver's kernel ``exp(S / epsilon + f0 + g0)`` (or its log) as a
  recipe: the offsets the paths add to the kernel are recorded, and a **block** of rows is
  computed when a reduction needs it (one matrix product ``X_chunk C^T`` per block);
* :class:`Streamed`, the layout: a single problem's row and column vectors, as
  :class:`~otlabel._layout.Single` holds them, and every reduction as one **pass** over row
  blocks. The scaling path's row step and the next iteration's column sums share a pass: the
  row sums of a block give its row scalings at once (rows held at their mass), and the block's
  column sums weighted by them are accumulated before the block is dropped;
* :class:`StreamedPlan`, the solution as a recipe, realised by :func:`realise` as the plan
  (N x K), hard labels (argmax per row and its mass) or the top-k entries per row.

On the Triton backend (``Streamed(..., triton=True)``, CUDA by default) the fused pass is one
launch of :func:`otlabel.backends._triton_features.feature_pass` over all of the rank's rows
instead of the loop over blocks: the kernel recomputes the scores tile by tile and keeps no
block. Every other reduction (maxima, log-sum-exps, the first and the exact column sums, the
output) stays on the blocks.

Memory: the inputs, a few vectors of N and K entries, and one block of ``chunk_rows x K`` entries
in the compute dtype (with its temporaries, about three such blocks at a time).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from ._checks import check_int
from ._layout import COLUMN_BLOCK, Single
from ._problem import Rule
from ._reduce import Reducer

__all__ = [
    "Factored",
    "HardLabels",
    "Streamed",
    "StreamedKernel",
    "StreamedPlan",
    "TopLabels",
    "realise",
    "round_to_quotas",
    "rows_per_block",
]

#: Bytes of the compute dtype one block may take by default (``chunk_memory``): a block and its
#: temporaries then stay within a few tens of MB and the cache holds a block between its matrix
#: product and its reductions (a block of 1,000 x 3,000 float32 entries, 12 MB: on this 2-core
#: machine ~1.1x the bare matrix products per pass, against ~2x for blocks of 4,096 rows).
DEFAULT_CHUNK_MEMORY = 8 * 2**20


def rows_per_block(width: int, dtype: torch.dtype, chunk_rows: Any, chunk_memory: Any) -> int:
    """Rows of a block: ``chunk_rows`` when given, else as many rows of ``width`` entries of
    ``dtype`` as fit in ``chunk_memory`` bytes (at least one); each checked as a positive integer."""
    if chunk_rows is not None:
        return check_int(chunk_rows, "chunk_rows", 1)
    memory = check_int(chunk_memory, "chunk_memory", 1)
    return max(1, memory // (width * (torch.finfo(dtype).bits // 8)))


class HardLabels(NamedTuple):
    """Hard labels (``output="hard"``): per row, the column of its largest plan entry (the lowest
    such column on a tie) and that entry (the row's mass on it)."""

    labels: Any  #: (N,) int64
    mass: Any  #: (N,) in the input's dtype


class TopLabels(NamedTuple):
    """The ``k`` largest plan entries of every row (``output="topk"``), largest first; among equal
    entries the lower column comes first, and a tie at the k-th entry keeps the lower columns."""

    values: Any  #: (N, k) in the input's dtype
    indices: Any  #: (N, k) int64


class Factored:
    """The scores ``scale * X C^T`` of a :func:`~otlabel.sinkhorn_features` call, never formed.

    ``features`` (n, d) stay as given (any float dtype; blocks are cast to the compute dtype when
    used), ``prototypes`` (K, d) are held in the compute dtype, already normalised when
    ``inverse_norms`` is given (the features' inverse row norms, (n,)). ``dtype`` and ``device``
    are the features', as a score tensor's would be; ``shape`` is (n, K).

    ``fused_prototypes``: the prototypes in the features' dtype, for the Triton kernel's fused
    pass (which multiplies operands of one dtype), or None where the fused pass runs on torch.
    """

    def __init__(
        self,
        features: torch.Tensor,
        prototypes: torch.Tensor,
        scale: float,
        inverse_norms: torch.Tensor | None,
        chunk_rows: int,
        fused_prototypes: torch.Tensor | None = None,
    ):
        self.features, self.prototypes, self.scale = features, prototypes, scale
        self.inverse_norms = inverse_norms
        self.chunk_rows = chunk_rows
        self.fused_prototypes = fused_prototypes
        self.dtype, self.device = features.dtype, features.device
        self.shape = (features.shape[0], prototypes.shape[0])

        self._augmented: torch.Tensor | None = None  # the workspaces of the blocks, made once
        self._block: torch.Tensor | None = None

    @property
    def requires_grad(self) -> bool:
        return False

    def workspace(self, n_rows: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(features block with the offsets' columns, kernel block) buffers for ``n_rows`` rows,
        made once per call and reused by every block of every pass: a fresh block per step would
        cost page faults, and fragment the heap that much that a pass over 200,000 rows grew the
        process by hundreds of MB (glibc keeps such freed blocks)."""
        if self._block is None:
            rows = min(self.chunk_rows, self.shape[0])
            self._augmented = torch.empty((rows, self.features.shape[1] + 2), dtype=dtype, device=self.device)
            self._block = torch.empty((rows, self.shape[1]), dtype=dtype, device=self.device)
        assert self._augmented is not None
        return self._augmented[:n_rows], self._block[:n_rows]

    def kernel(self, epsilon: float) -> StreamedKernel:
        """``scores / epsilon`` as a lazy kernel (the log-kernel, before any offset)."""
        coef = self.scale / epsilon
        return StreamedKernel(self, self.prototypes * coef, coef=coef)


class StreamedKernel:
    """``coef * X C^T + row_offset + col_offset`` (exponentiated when ``exponentiated``), made one
    block of rows at a time; ``coef`` is folded into ``weights`` (``scale / epsilon * C``), and
    kept apart for the Triton kernel (which scales the dot products of ``C`` itself).

    The in-place operations the solver paths apply to a kernel (adding a row or column vector or
    a number, ``exp_``) are recorded, not applied; ``+`` gives a new recipe.
    """

    def __init__(
        self,
        scores: Factored,
        weights: torch.Tensor,
        row_offset: torch.Tensor | None = None,
        col_offset: torch.Tensor | float = 0.0,
        exponentiated: bool = False,
        coef: float = 1.0,
    ):
        self.scores, self.weights, self.coef = scores, weights, coef
        self.row_offset, self.col_offset = row_offset, col_offset
        self.exponentiated = exponentiated
        self._weights: torch.Tensor | None = None  # the augmented weights, once needed
        self.shape = scores.shape
        self.dtype, self.device = weights.dtype, weights.device

    def _offset(self, value: torch.Tensor | float) -> None:
        if isinstance(value, torch.Tensor) and value.dim() == 2:  # a row vector on the kernel: (n, 1)
            rows = value.reshape(-1)
            self.row_offset = rows if self.row_offset is None else self.row_offset + rows
        else:  # a number or a column vector (K,)
            self.col_offset = self.col_offset + value

    def add_(self, value: torch.Tensor | float) -> StreamedKernel:
        assert not self.exponentiated, "offsets are added to the log-kernel"
        self._offset(value)
        self._weights = None
        return self

    def __add__(self, value: torch.Tensor | float) -> StreamedKernel:
        new = StreamedKernel(self.scores, self.weights, self.row_offset, self.col_offset, self.exponentiated, self.coef)
        return new.add_(value)

    def exp_(self) -> StreamedKernel:
        self.exponentiated = True
        return self

    def _augmented_weights(self) -> torch.Tensor:
        """The weights with a row per offset, transposed: ``[coef C, col_offset, 1]^T`` (d + 2, K),
        made once per recipe, so that one matrix product gives ``coef X C^T + col_offset +
        row_offset`` (the offsets ride on the product instead of costing two more passes)."""
        if self._weights is None:
            ones = torch.ones_like(self.weights[:, :1])
            col = ones * self.col_offset if not isinstance(self.col_offset, torch.Tensor) else self.col_offset
            weights = torch.cat((self.weights, col.reshape(-1, 1).to(self.dtype), ones), dim=1)
            self._weights = weights.t().contiguous()
        return self._weights

    def block(self, rows: slice) -> torch.Tensor:
        """Rows ``rows`` of the kernel, (rows, K), in the compute dtype, in the call's block
        workspace (valid until the next block is made: every pass makes a block of rows in the
        same memory, so that every pass computes the same numbers)."""
        scores = self.scores
        features = scores.features[rows]
        n_rows, dim = features.shape
        # [x (normalised), 1, row_offset]: the features' block with the offsets' columns
        augmented, workspace = scores.workspace(n_rows, self.dtype)
        if scores.inverse_norms is not None:
            torch.mul(features, scores.inverse_norms[rows].unsqueeze(-1), out=augmented[:, :dim])
        else:
            augmented[:, :dim] = features
        augmented[:, dim] = 1.0
        if self.row_offset is None:
            augmented[:, dim + 1] = 0.0
        else:
            augmented[:, dim + 1] = self.row_offset[rows]
        block = torch.matmul(augmented, self._augmented_weights(), out=workspace)
        return block.exp_() if self.exponentiated else block

    def slices(self) -> Iterator[slice]:
        n_rows, step = self.shape[0], self.scores.chunk_rows
        return (slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step))

    def blocks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        return ((rows, self.block(rows)) for rows in self.slices())


class StreamedPlan:
    """A solution as a recipe: ``a * G * b`` on the scaling path's kernel (``row_factor``,
    ``col_factor``), ``exp(L + f + g)`` on a log-kernel (factors None: the offsets are in the
    kernel), or with ``softmax_rows`` each row of ``exp(L + g)`` normalised to its mass; entries
    are clamped to ``cap`` (the row masses, 1.0 for every row, or None: a KL-penalised row may
    exceed its mass)."""

    def __init__(
        self,
        kernel: StreamedKernel,
        row_factor: torch.Tensor | None,
        col_factor: torch.Tensor | None,
        cap: torch.Tensor | float | None,
        softmax_rows: torch.Tensor | float | None = None,
    ):
        self.kernel, self.row_factor, self.col_factor = kernel, row_factor, col_factor
        self.cap, self.softmax_rows = cap, softmax_rows
        self.shape, self.dtype, self.device = kernel.shape, kernel.dtype, kernel.device

    def block(self, rows: slice) -> torch.Tensor:
        block = self.kernel.block(rows)
        if self.softmax_rows is not None:
            block.copy_(torch.softmax(block, dim=-1))
            if isinstance(self.softmax_rows, torch.Tensor):
                block.mul_(self.softmax_rows[rows].unsqueeze(-1))
        elif not self.kernel.exponentiated:
            block.exp_()
        if self.row_factor is not None:
            block.mul_(self.row_factor[rows].unsqueeze(-1))
        if self.col_factor is not None:
            block.mul_(self.col_factor)
        return self._clamp(block, rows)

    def _clamp(self, values: torch.Tensor, rows: slice) -> torch.Tensor:
        cap = self.cap
        if cap is None:
            return values
        if isinstance(cap, torch.Tensor):
            return torch.minimum(values, cap[rows].unsqueeze(-1), out=values)
        return values.clamp_(max=cap)

    def blocks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        return ((rows, self.block(rows)) for rows in self.kernel.slices())


class _Pass(NamedTuple):
    """What the last fused pass computed: for the column scaling ``b``, the row sums of G b, the
    row scalings they give, the column sums of diag(a) G (this rank's, float64), and optionally
    each row's largest plan entry (of diag(a) G diag(b)) with its column."""

    b: torch.Tensor
    row_sums: torch.Tensor
    a: torch.Tensor
    col_sums: torch.Tensor | None
    best: tuple[torch.Tensor, torch.Tensor] | None


class Streamed(Single):
    """One problem whose kernel is a :class:`StreamedKernel`: vectors as :class:`Single` holds them
    ((n,) rows, (K,) columns), every reduction one pass over row blocks, column sums accumulated
    in float64 across blocks and all-reduced over a process group.

    ``row_mass`` (n,) or None: the rows' masses, for the fused row step (rows held at their mass).
    ``accurate``: column sums accurate to ~1e-7 in float32 (tolerance mode; see
    :func:`_weighted_col_sums`). ``final_pass``: the number of the fused row pass that ends the
    schedule (fixed-iteration mode), which computes no column sums, and with ``speculate_hard``
    keeps each row's largest plan entry (of diag(a) G diag(b)) and its column instead, so that
    hard labels cost no extra pass.
    ``fused_columns``: whether the fused pass computes the next column step's sums at all (only
    the balanced problem's steps use them; the others' row steps make other row scalings).
    ``triton``: the fused pass runs in the Triton kernel (see the module's docstring), which
    needs the scores' ``fused_prototypes``.
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        dtype: torch.dtype,
        device: torch.device,
        reducer: Reducer,
        bias: bool,
        row_mass: torch.Tensor | None,
        accurate: bool,
        final_pass: int | None = None,
        speculate_hard: bool = False,
        fused_columns: bool = True,
        triton: bool = False,
    ):
        super().__init__(1, n_rows, n_cols, dtype, device, reducer, bias)
        self.row_mass, self.accurate = row_mass, accurate
        self.final_pass, self.speculate_hard = final_pass, speculate_hard
        self.fused_columns, self.triton = fused_columns, triton
        self.last: _Pass | None = None
        self.passes = 0  #: passes over the rows so far (for tests and benchmarks)
        self.row_passes = 0  #: fused row passes so far
        self.triton_passes = 0  #: fused row passes run by the Triton kernel

    def view(self, tensor: Any) -> Any:
        return tensor

    def row_shape(self, kernel: Any) -> tuple[int, ...]:
        return (self.n_rows,)

    def _blocks(self, kernel: StreamedKernel | StreamedPlan) -> Iterator[tuple[slice, torch.Tensor]]:
        self.passes += 1
        return kernel.blocks()

    # reductions over the rows, one pass each ----------------------------------------------------
    def _row_vector(self) -> torch.Tensor:
        return torch.empty(self.n_rows, dtype=self._dtype, device=self._device)

    def row_max(self, kernel: StreamedKernel) -> torch.Tensor:
        result = self._row_vector()
        for rows, block in self._blocks(kernel):
            torch.amax(block, -1, out=result[rows])
        return result

    def row_lse(self, kernel: StreamedKernel) -> torch.Tensor:
        result = self._row_vector()
        for rows, block in self._blocks(kernel):
            torch.logsumexp(block, -1, out=result[rows])
        return result

    def col_max(self, kernel: StreamedKernel) -> torch.Tensor:
        top = torch.full((self.n_cols,), -math.inf, dtype=self._dtype, device=self._device)
        for _, block in self._blocks(kernel):
            torch.maximum(top, block.amax(0), out=top)
        return self.reducer.max(top)

    def col_lse(self, kernel: StreamedKernel) -> torch.Tensor:
        """log of the column sums of exp(kernel): per block its maximum and the sum below it,
        merged as they come (an online log-sum-exp), then over the ranks."""
        top = torch.full((self.n_cols,), -math.inf, dtype=self._dtype, device=self._device)
        total = torch.zeros(self.n_cols, dtype=self._dtype, device=self._device)
        for _, block in self._blocks(kernel):
            new_top = torch.maximum(top, block.amax(0))
            safe = torch.where(torch.isfinite(new_top), new_top, 0.0)
            total.mul_(torch.exp(top - safe)).add_(block.sub_(safe).exp_().sum(0))  # (the block in place)
            top = new_top
        safe = torch.where(torch.isfinite(top), top, 0.0)
        return self._combine_lse(safe + torch.log(total))

    def _col_sums_of(self, kernel: StreamedKernel | StreamedPlan, a: torch.Tensor | None, exact: bool) -> torch.Tensor:
        """Column sums of diag(a) G over this rank's blocks, accumulated in float64."""
        total = torch.zeros(self.n_cols, dtype=torch.float64, device=self._device)
        for rows, block in self._blocks(kernel):
            total += _weighted_col_sums(block, None if a is None else a[rows], self.accurate, exact)
        return total

    def col_sums(self, kernel: StreamedKernel | StreamedPlan, a: torch.Tensor | None, accurate: bool) -> torch.Tensor:
        last = self.last
        if last is not None and a is last.a and last.col_sums is not None and isinstance(kernel, StreamedKernel):
            sums = last.col_sums  # the fused pass that made these row scalings summed them
        else:
            sums = self._col_sums_of(kernel, a, exact=False)
        sums = sums.to(self._dtype)
        if self._bias is not None:
            sums += self._tiny.reshape(1)
        return self.reducer.sum(sums) if self._distributed else sums

    def exact_col_sums(self, kernel: StreamedKernel, a: torch.Tensor) -> torch.Tensor:
        return self.reducer.sum(self._col_sums_of(kernel, a, exact=True))

    def row_sums(self, kernel: StreamedKernel, b: torch.Tensor) -> torch.Tensor:
        """Row sums of G diag(b): the fused pass, which also gives the row scalings of rows held at
        their mass and the column sums that the next column step needs (none after the last
        scheduled pass, which keeps each row's largest entry of G b instead when hard labels are
        wanted)."""
        self.row_passes += 1
        last = self.row_passes == self.final_pass
        speculate = self.speculate_hard and last
        want_cols = self.fused_columns and not speculate
        # The schedule's last row step runs on the blocks unless it gives hard labels itself: the
        # plan (or top-k) is made from the blocks, and its rows must sum to what that row step
        # normalised, to the bit (the kernel rounds its exponents otherwise)
        if self.triton and kernel.exponentiated and (speculate or not last):
            self.last = self._triton_pass(kernel, b, want_cols, speculate)
            return self.last.row_sums
        row_mass, bias = self.row_mass, self._bias
        row_sums, scalings = self._row_vector(), self._row_vector()
        best = (
            (self._row_vector(), torch.empty(self.n_rows, dtype=torch.int64, device=self._device))
            if speculate
            else None
        )
        col_sums = torch.zeros(self.n_cols, dtype=torch.float64, device=self._device)
        for rows, block in self._blocks(kernel):
            row, a = row_sums[rows], scalings[rows]
            if bias is None:
                torch.mv(block, b, out=row)
            else:
                torch.addmv(bias.reshape(1), block, b, out=row)
            if row_mass is None:
                torch.reciprocal(row, out=a)
            else:
                torch.div(row_mass[rows], row, out=a)
            if want_cols:
                col_sums += _weighted_col_sums(block, a, self.accurate)
            if best is not None:
                values = best[0][rows]
                torch.max(block.mul_(b), -1, out=(values, best[1][rows]))
                values.mul_(a)  # the plan's entry: a G b
        self.last = _Pass(b, row_sums, scalings, col_sums if want_cols else None, best)
        return row_sums

    def _triton_pass(self, kernel: StreamedKernel, b: torch.Tensor, want_cols: bool, speculate: bool) -> _Pass:
        """The fused pass as one launch of the Triton kernel over this rank's rows: the kernel's
        ``coef * s_i * <x_i, c_k> + row_offset_i + col_offset_k`` is the recipe's with the scores'
        ``fused_prototypes`` as C, ``kernel.coef`` as coef and the features' inverse norms (or
        none) as the row scale ``s``; the tiny bias is added to the row sums inside the kernel,
        before the scalings and the column partials are taken from them (as ``addmv`` does on the
        blocks). The column partials come back in float32 (per program, then over the programs),
        and are held in float64 as the blocks' are."""
        from .backends._triton_features import feature_pass  # (imports triton: only when used)

        self.passes += 1
        self.triton_passes += 1
        scores = kernel.scores
        assert scores.fused_prototypes is not None, "the scores hold no prototypes for the Triton kernel"
        n_rows, n_cols, dtype, device = self.n_rows, self.n_cols, self._dtype, self._device
        row_offset = kernel.row_offset
        if row_offset is None:
            row_offset = torch.zeros(n_rows, dtype=dtype, device=device)
        col_offset = kernel.col_offset
        if isinstance(col_offset, torch.Tensor):
            col_offset = col_offset.to(dtype).reshape(-1).expand(n_cols)
        else:
            col_offset = torch.full((n_cols,), col_offset, dtype=dtype, device=device)
        row_mass = self.row_mass
        out = feature_pass(
            scores.features,
            scores.fused_prototypes,
            kernel.coef,
            row_offset.contiguous(),
            col_offset.contiguous(),
            b.contiguous(),
            None if row_mass is None else row_mass.contiguous(),
            row_scale=scores.inverse_norms,
            row_bias=self._bias_vector,
            col_sums=want_cols,
            top_k=1 if speculate else 0,
        )
        col_sums = out.col_partial.to(torch.float64) if want_cols else None
        best = (out.top_values[:, 0], out.top_indices[:, 0]) if speculate else None
        return _Pass(b, out.row_sums, out.row_scaling, col_sums, best)

    def row_scaling(self, row_sums: torch.Tensor, row_mass: torch.Tensor | None) -> torch.Tensor:
        last = self.last
        if last is not None and row_sums is last.row_sums:
            return last.a
        return super().row_scaling(row_sums, row_mass)

    # plans ------------------------------------------------------------------------------------
    def scaling_plan(
        self, kernel: StreamedKernel, a: torch.Tensor | None, b: torch.Tensor, row_mass: torch.Tensor | None, rule: Rule
    ) -> StreamedPlan:
        return StreamedPlan(kernel, a, b, _cap(row_mass, rule))

    def log_plan(
        self,
        kernel: StreamedKernel,
        f: torch.Tensor,
        g: torch.Tensor,
        row_mass: torch.Tensor | None,
        rule: Rule,
        softmax_rows: bool,
    ) -> StreamedPlan:
        if softmax_rows:
            mass = 1.0 if row_mass is None else row_mass
            return StreamedPlan(kernel + g, None, None, _cap(row_mass, rule), softmax_rows=mass)
        return StreamedPlan(kernel + f.unsqueeze(-1) + g, None, None, _cap(row_mass, rule))


def _cap(row_mass: torch.Tensor | None, rule: Rule) -> torch.Tensor | float | None:
    if rule.exponent != 1.0:
        return None
    return 1.0 if row_mass is None else row_mass


def _weighted_col_sums(
    block: torch.Tensor, a: torch.Tensor | None, accurate: bool, exact: bool = False
) -> torch.Tensor:
    """Column sums of diag(a) block, in float64: exactly (``exact``: every product summed in
    float64), as float32 matrix-vector products over COLUMN_BLOCK rows at a time whose sums are
    added in float64 (``accurate``: rounding ~1e-7, not growing with the rows; as the dense
    layouts' accurate sums), or as one product per block."""
    if exact or block.dtype == torch.float64:
        values = block if a is None else block * a.unsqueeze(-1)
        return values.sum(0, dtype=torch.float64)
    weights = torch.ones(block.shape[0], dtype=block.dtype, device=block.device) if a is None else a
    if not accurate or block.shape[0] <= COLUMN_BLOCK:
        return torch.mv(block.t(), weights).to(torch.float64)
    total = torch.zeros(block.shape[1], dtype=torch.float64, device=block.device)
    for start in range(0, block.shape[0], COLUMN_BLOCK):
        total += torch.mv(block[start : start + COLUMN_BLOCK].t(), weights[start : start + COLUMN_BLOCK])
    return total


def realise(plan: StreamedPlan, output: str, top_k: int, layout: Streamed) -> Any:
    """The solution of a streamed call as ``output`` asks: the plan (N, K), :class:`HardLabels` or
    :class:`TopLabels`, in the compute dtype; one pass over the rows, none for hard labels that
    the last fused pass already found."""
    if output == "plan":
        # (blocks are made in the workspace and copied: a product written elsewhere may round
        # otherwise — MKL's kernels depend on alignment — and the plan must be the one the last
        # row step normalised, to the bit)
        result = torch.empty(plan.shape, dtype=plan.dtype, device=plan.device)
        for rows, block in layout._blocks(plan):
            result[rows] = block
        return result
    if output == "hard":
        speculated = _speculated_hard(plan, layout)
        if speculated is not None:
            return speculated
        mass = layout._row_vector()
        labels = torch.empty(layout.n_rows, dtype=torch.int64, device=plan.device)
        for rows, block in layout._blocks(plan):
            torch.max(block, -1, out=(mass[rows], labels[rows]))
        return HardLabels(labels, mass)
    values = torch.empty((layout.n_rows, top_k), dtype=plan.dtype, device=plan.device)
    columns = torch.empty((layout.n_rows, top_k), dtype=torch.int64, device=plan.device)
    for rows, block in layout._blocks(plan):
        top = top_entries(block, top_k)
        values[rows], columns[rows] = top.values, top.indices
    return TopLabels(values, columns)


def _speculated_hard(plan: StreamedPlan, layout: Streamed) -> HardLabels | None:
    """Hard labels from the last fused pass, when the plan is the one it made (same a and b)."""
    last = layout.last
    if last is None or last.best is None or plan.row_factor is not last.a or plan.col_factor is not last.b:
        return None
    mass, best_columns = last.best
    cap = plan.cap
    if isinstance(cap, torch.Tensor):
        mass = torch.minimum(mass, cap)
    elif cap is not None:
        mass = mass.clamp(max=cap)
    return HardLabels(best_columns, mass)


def top_entries(values: torch.Tensor, k: int) -> TopLabels:
    """The ``k`` largest entries of every row of ``values`` (n, K), largest first, the lower column
    first among equal entries (also at the k-th entry: ``torch.topk`` does not promise which of
    equal entries it keeps, so the k-th value is found first and ties at it are filled from the
    left)."""
    n_rows, n_cols = values.shape
    ranked = torch.nan_to_num(values, nan=-math.inf)  # (labels poisoned by a failed device check)
    if k == n_cols or n_rows == 0:
        order = torch.sort(ranked, dim=-1, descending=True, stable=True)
        return TopLabels(values.gather(-1, order.indices[:, :k]), order.indices[:, :k])
    kth = torch.topk(ranked, k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    above = ranked > kth
    tied = ranked == kth
    room = k - above.sum(-1, keepdim=True)
    keep = above | (tied & (torch.cumsum(tied, dim=-1) <= room))
    columns = keep.nonzero()[:, 1].view(n_rows, k)  # ascending columns, k per row
    order = torch.sort(ranked.gather(-1, columns), dim=-1, descending=True, stable=True)
    columns = columns.gather(-1, order.indices)
    return TopLabels(values.gather(-1, columns), columns)


def round_to_quotas(
    x: torch.Tensor,
    centroids: torch.Tensor,
    coef: float,
    row_potential: torch.Tensor,
    col_potential: torch.Tensor,
    quotas: torch.Tensor,
    rows: int,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with exactly ``quotas[k]`` rows in cluster k, and each row's log plan entry there: the
    greedy rule of :func:`~otlabel.hard_labels` on the plan ``exp(f_i + coef <x_i, c_k> + g_k)``
    (rows and ``centroids`` L2-normalised first with ``normalize``), recomputed by blocks of
    ``rows`` rows, compared as logarithms (nothing underflows): O(N + K) memory, at most K + 1
    passes over the unplaced rows.

    Every round, each unplaced row proposes its largest log-entry among the clusters with room,
    and each cluster accepts its most confident proposers up to its room (ties to the lower row).
    """
    n_rows, k = x.shape[0], centroids.shape[0]
    device, dtype = x.device, centroids.dtype
    prototypes = torch.nn.functional.normalize(centroids, dim=1) if normalize else centroids
    f = row_potential.to(dtype)
    g = col_potential.to(dtype)
    labels = torch.full((n_rows,), -1, dtype=torch.int64, device=device)
    log_entries = torch.empty(n_rows, dtype=dtype, device=device)
    room = quotas.clone()
    pending = torch.arange(n_rows, device=device)
    while pending.numel() > 0:
        full = room <= 0
        best = torch.empty(pending.numel(), dtype=dtype, device=device)
        choice = torch.empty(pending.numel(), dtype=torch.int64, device=device)
        everyone = pending.numel() == n_rows
        for start in range(0, pending.numel(), rows):
            index = pending[start : start + rows]
            block = x[start : start + rows] if everyone else x[index]
            block = block.to(dtype)
            if normalize:
                block = torch.nn.functional.normalize(block, dim=1)
            logits = torch.addmm(g, block, prototypes.T, alpha=coef) + f[index].unsqueeze(1)
            logits.masked_fill_(full, -torch.inf)
            best[start : start + rows], choice[start : start + rows] = logits.max(dim=1)
        # rank the proposers within each cluster by confidence (descending), ties by row order
        by_value = torch.sort(-best, stable=True).indices
        by_cluster = by_value[torch.sort(choice[by_value], stable=True).indices]
        sorted_choice = choice[by_cluster]
        counts = torch.bincount(sorted_choice, minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(by_cluster.numel(), device=device) - starts[sorted_choice]
        accepted = by_cluster[rank < room[sorted_choice]]
        labels[pending[accepted]] = choice[accepted]
        log_entries[pending[accepted]] = best[accepted]
        room -= torch.bincount(choice[accepted], minlength=k)
        keep = torch.ones(pending.numel(), dtype=torch.bool, device=device)
        keep[accepted] = False
        pending = pending[keep]
    return labels, log_entries
