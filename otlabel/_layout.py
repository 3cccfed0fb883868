"""Layouts: how the rows of the problems in one call are stored, and the reductions over them.

The solver core (:mod:`otlabel._core`) is written once against this small interface, the way
ott-jax's ``Geometry`` lets one Sinkhorn loop serve every cost layout:

* :class:`Dense`: B problems of N rows each, a (B, N, K) tensor. Row vectors are (B, N, 1),
  column vectors (one per problem) (B, 1, K); they broadcast against the kernel as they are.
  With a process group the column reductions are all-reduced (:mod:`otlabel.distributed`).
* :class:`Segmented`: G problems of different sizes packed row-wise into an (N, K) tensor,
  problem g owning rows ``ptr[g]:ptr[g+1]`` (CSR offsets). Row vectors are (N, 1), column
  vectors (G, K); :meth:`Segmented.spread` repeats a problem's column vector on its rows.

Every layout supplies ``col_sums`` (column sums of diag(a) G per problem), ``row_sums`` (row
sums of G diag(b)), ``col_max`` and ``col_lse`` (per-problem column maximum and log-sum-exp),
``spread`` (a column vector made broadcastable against the rows) and a few shape helpers.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch

from ._problem import Rule
from ._reduce import Reducer

__all__ = ["COLUMN_BLOCK", "Dense", "Layout", "Segmented", "Segments", "Single"]

#: Rows per block of the float32 column sums (see :func:`_accurate_column_sums`).
COLUMN_BLOCK = 128

#: Most entries of the equipartition masses a kept layout keeps (see :meth:`Dense.equipartition`).
KEPT_MASSES = 1 << 16


@functools.cache
def _cached_tiny(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.full((1, 1, 1), torch.finfo(dtype).tiny, dtype=dtype, device=device)


def _accurate_vector_column_sums(a: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """:func:`_accurate_column_sums` for one problem: ``a`` (N,), ``kernel`` (N, K), sums (K,) —
    the same blocks summed in the same order, without the batch axis's views (tolerance mode
    computes it every iteration, and at SwAV's sizes the views cost as much as the sums)."""
    n_rows, n_cols = kernel.shape
    blocks = n_rows // COLUMN_BLOCK
    if kernel.dtype == torch.float64 or blocks < 2:
        return torch.addmv(bias.view(1).expand(n_cols), kernel.t(), a)
    split = blocks * COLUMN_BLOCK
    head = torch.matmul(a[:split].view(blocks, 1, COLUMN_BLOCK), kernel[:split].view(blocks, COLUMN_BLOCK, n_cols))
    total = head.sum(0, dtype=torch.float64).view(n_cols)
    if split == n_rows:
        total += bias.view(1)
    else:
        total += torch.addmv(bias.view(1).expand(n_cols), kernel[split:].t(), a[split:])
    return total.to(kernel.dtype)


def tiny_bias(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The smallest normal number as a (1, 1, 1) tensor: a bias for ``baddbmm`` that keeps 0/0 out
    of zero-mass rows and columns at no extra kernel launch. Made once per device (it is only ever
    read); a compiled graph makes its own constant."""
    if torch.compiler.is_compiling():
        return torch.full((1, 1, 1), torch.finfo(dtype).tiny, dtype=dtype, device=device)
    return _cached_tiny(dtype, device)


def _accurate_column_sums(a: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """bias + a^T kernel, shape (B, 1, K) (bias broadcasts), accurate to ~1e-7 relative even in float32.

    A float32 matrix-vector product over N rows accumulates rounding like sqrt(N) * 6e-8
    (4e-6 at N = 12000, 4e-7 already at N = 100), which would stall tolerance mode above
    1e-6. Summing blocks of COLUMN_BLOCK rows in float32 and the block sums in float64
    removes that floor for the cost of one small extra reduction.
    """
    batch, n_rows, n_cols = kernel.shape
    blocks = n_rows // COLUMN_BLOCK
    if kernel.dtype == torch.float64 or blocks < 2:
        return torch.baddbmm(bias, a.mT, kernel)
    split = blocks * COLUMN_BLOCK
    if batch > 1 and split != n_rows:
        # (B, C, R, K) views cannot be flattened to one bmm batch without a copy: go per problem
        return torch.cat([_accurate_column_sums(a[i : i + 1], kernel[i : i + 1], bias) for i in range(batch)])
    head = torch.matmul(
        a[:, :split, 0].reshape(batch, blocks, 1, COLUMN_BLOCK),
        kernel[:, :split].reshape(batch, blocks, COLUMN_BLOCK, n_cols),
    )  # (B, C, 1, K)
    total = head.sum(1, dtype=torch.float64)
    if split == n_rows:
        total += bias
    else:
        total += torch.baddbmm(bias, a[:, split:].mT, kernel[:, split:])
    return total.to(kernel.dtype)


class _Layout:
    """What every layout shares: tensors kept as given, row vectors with a trailing axis of 1
    ((B, N, 1) or (N, 1)), which broadcast against the kernel as they are."""

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """A (B, N, K) tensor (or a segmented (N, K) one) in the layout's own shape: as it is."""
        return tensor

    def on_kernel(self, rows: torch.Tensor) -> torch.Tensor:
        """A row vector made broadcastable against the kernel: it already is."""
        return rows

    def row_shape(self, kernel: torch.Tensor) -> tuple[int, ...]:
        return kernel.shape[:-1] + (1,)

    def row_max(self, values: torch.Tensor) -> torch.Tensor:
        """Row maxima of a kernel-shaped tensor, as a row vector."""
        return values.amax(-1, keepdim=True)

    def row_lse(self, values: torch.Tensor) -> torch.Tensor:
        """Row log-sum-exp of a kernel-shaped tensor, as a row vector."""
        return torch.logsumexp(values, dim=-1, keepdim=True)

    def row_scaling(self, row_sums: torch.Tensor, row_mass: torch.Tensor | None) -> torch.Tensor:
        """The row scalings of rows held at their mass: mass / (row sums of G diag(b))."""
        return torch.reciprocal(row_sums) if row_mass is None else torch.div(row_mass, row_sums)

    def scaling_plan(
        self, kernel: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor, row_mass: torch.Tensor | None, rule: Rule
    ) -> torch.Tensor:
        """The plan diag(a) G diag(b), in place of the kernel, clamped to the row masses."""
        plan = kernel if a is None else kernel.mul_(self.on_kernel(a))
        plan.mul_(self.spread(b))
        return clamp_to_row_mass(plan, row_mass, rule, self)

    def log_plan(
        self,
        kernel: torch.Tensor,
        f: torch.Tensor,
        g: torch.Tensor,
        row_mass: torch.Tensor | None,
        rule: Rule,
        softmax_rows: bool,
    ) -> torch.Tensor:
        """The plan exp(L + f + g) of log-potentials, clamped to the row masses; with
        ``softmax_rows`` each row of exp(L + g) normalised to its mass instead (rows held at their
        mass then sum to it to rounding, however large the potentials)."""
        if not softmax_rows:
            plan = torch.exp(kernel + self.on_kernel(f) + self.spread(g))
            return clamp_to_row_mass(plan, row_mass, rule, self)
        plan = torch.softmax(kernel + self.spread(g), dim=-1)
        if row_mass is not None:
            plan.mul_(self.on_kernel(row_mass))
        return clamp_to_row_mass(plan, row_mass, rule, self)


def clamp_to_row_mass(plan: torch.Tensor, row_mass: torch.Tensor | None, rule: Rule, layout: _Layout) -> torch.Tensor:
    """An entry of a plan whose row sums to m lies in [0, m]; rounding can overshoot by an ulp
    (a label of 1.0000001), which probabilities downstream must not see. (A KL-penalised row may
    sum to more than its mass: nothing to clamp.)"""
    if rule.exponent != 1.0:
        return plan
    if row_mass is None:
        return plan.clamp_(max=1.0)
    return torch.minimum(plan, layout.on_kernel(row_mass), out=plan)


class Dense(_Layout):
    """B problems of N rows each, stored as (B, N, K); the problems of a batch iterate together.

    ``bias=True`` adds the smallest normal number to every sum (a tiny bias that keeps 0/0 out of
    rows and columns of zero mass); without zero masses (default marginals, no prior) no sum can
    be 0 short of an overflow, which the health check catches, and the bias is left out.
    """

    #: whether each problem stops on its own in tolerance mode (a batch stops together)
    independent = False

    def __init__(
        self,
        batch: int,
        n_rows: int,
        n_cols: int,
        dtype: torch.dtype,
        device: torch.device,
        reducer: Reducer | None = None,
        bias: bool = True,
    ):
        self.batch, self.n_rows, self.n_cols = batch, n_rows, n_cols
        self.reducer = Reducer() if reducer is None else reducer
        self._distributed = self.reducer.distributed
        self._dtype, self._device = dtype, device
        self._bias = tiny_bias(dtype, device) if bias else None
        self._equipartition: tuple[float, torch.Tensor, int] | None = None
        #: whether this layout serves later calls too (set by the front end for the layouts it keeps)
        self.kept = False

    def equipartition(self, n_total: float) -> torch.Tensor:
        """Equipartition's column masses for ``n_total`` rows in all, (B, K), each ``n_total / K``.

        A layout that is ``kept`` keeps small ones (at most ``KEPT_MASSES`` entries: making them
        matters only where a call is a few dozen microseconds) for its later calls: the solver
        only reads them, a tensor written to since (its version moved) is made afresh, and they
        are made outside inference mode, whose tensors could not serve a later call that records
        gradients."""
        kept = self._equipartition
        if kept is not None and kept[0] == n_total and kept[1]._version == kept[2]:
            return kept[1]
        if not self.kept or self.batch * self.n_cols > KEPT_MASSES:
            return self._uniform(n_total)
        with torch.inference_mode(False):
            masses = self._uniform(n_total)
        self._equipartition = (n_total, masses, masses._version)
        return masses

    def _uniform(self, n_total: float) -> torch.Tensor:
        return torch.full((self.batch, self.n_cols), n_total / self.n_cols, dtype=self._dtype, device=self._device)

    @property
    def _tiny(self) -> torch.Tensor:
        """The tiny bias, also where sums need none (the accurate column sums add it anyway)."""
        return self._bias if self._bias is not None else tiny_bias(self._dtype, self._device)

    @property
    def n_problems(self) -> int:
        return self.batch

    def rows(self, values: torch.Tensor) -> torch.Tensor:
        """(B, N) -> the row-vector shape (B, N, 1)."""
        return values.unsqueeze(-1)

    def cols(self, values: torch.Tensor) -> torch.Tensor:
        """(B, K) -> the column-vector shape (B, 1, K)."""
        return values.unsqueeze(-2)

    def row_output(self, values: torch.Tensor) -> torch.Tensor:
        """A row vector (B, N, 1) as returned to the caller: (B, N)."""
        return values.squeeze(-1)

    def col_output(self, values: torch.Tensor) -> torch.Tensor:
        """A column vector (B, 1, K) as returned to the caller: (B, K)."""
        return values.squeeze(-2)

    def spread(self, cols: torch.Tensor) -> torch.Tensor:
        """A column vector made broadcastable against the (B, N, K) kernel: it already is."""
        return cols

    def problem_of_rows(self, per_problem: torch.Tensor) -> torch.Tensor:
        """A per-problem (B,) vector on the rows: (B, 1, 1) broadcasts."""
        return per_problem.reshape(-1, 1, 1)

    def cols_of_problem(self, per_problem: torch.Tensor) -> torch.Tensor:
        """A per-problem (B,) vector on the column vectors: (B, 1, 1)."""
        return per_problem.reshape(-1, 1, 1)

    def row_total(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-problem sums of a row vector, (B,), over all ranks."""
        total = rows.sum((-2, -1))
        return self.reducer.sum(total) if self._distributed else total

    def row_total_lse(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-problem log-sum-exp of a row vector of logs, (B,), over all ranks."""
        local = (
            torch.logsumexp(rows.flatten(-2), dim=-1) if rows.shape[-2] else rows.new_full(rows.shape[:1], -math.inf)
        )
        return self._combine_lse(local)

    def row_extreme(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-problem maximum of a row vector, (B,), over all ranks (0 for no rows)."""
        local = rows.flatten(-2).amax(-1) if rows.shape[-2] else rows.new_zeros(rows.shape[:1])
        return self.reducer.max(local) if self._distributed else local

    def _combine_lse(self, local: torch.Tensor) -> torch.Tensor:
        if not self._distributed:
            return local
        top = self.reducer.max(local)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        return top + torch.log(self.reducer.sum(torch.exp(local - top)))

    # reductions ---------------------------------------------------------------------------
    def col_sums(self, kernel: torch.Tensor, a: torch.Tensor | None, accurate: bool) -> torch.Tensor:
        """Column sums of diag(a) G per problem, (B, 1, K), over all ranks (``a=None``: all ones)."""
        if a is None:  # every kernel entry is positive: no bias needed
            sums = kernel.sum(-2, keepdim=True)
        elif accurate:
            sums = _accurate_column_sums(a, kernel, self._tiny)
        elif self._bias is None:
            sums = torch.bmm(a.mT, kernel)
        else:
            sums = torch.baddbmm(self._bias, a.mT, kernel)
        return self.reducer.sum(sums) if self._distributed else sums

    def exact_col_sums(self, kernel: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Column sums of diag(a) G accumulated in float64, (B, 1, K), over all ranks."""
        return self.reducer.sum((kernel * a).sum(-2, keepdim=True, dtype=torch.float64))

    def row_sums(self, kernel: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row sums of G diag(b), (B, N, 1)."""
        if self._bias is None:
            return torch.bmm(kernel, b.mT)
        return torch.baddbmm(self._bias, kernel, b.mT)

    def col_max(self, values: torch.Tensor) -> torch.Tensor:
        """Column maxima per problem (B, 1, K) over all ranks; -inf where a rank holds no rows."""
        if values.shape[-2] == 0:
            local = values.new_full((values.shape[0], 1, values.shape[-1]), -math.inf)
        else:
            local = values.amax(-2, keepdim=True)
        return self.reducer.max(local)

    def col_lse(self, values: torch.Tensor) -> torch.Tensor:
        """log of the column sums of exp(values) per problem, (B, 1, K), over all ranks."""
        return self._combine_lse(torch.logsumexp(values, dim=-2, keepdim=True))


class Single(Dense):
    """One dense problem (B = 1) held as (N, K): row vectors (N,), column vectors (K,).

    Matrix-vector products cost a fraction of batched ones per call, which is most of the time
    of a small problem (SwAV's and CASE's sizes on the CPU).
    """

    def __init__(self, *args: Any, **kwargs: Any):  # Dense's arguments, with batch 1
        super().__init__(*args, **kwargs)
        assert self.batch == 1, "Single holds one problem"
        bias, n_cols = self._bias is not None, self.n_cols
        self._bias_vector = self._bias.reshape(1) if bias else None
        # addmv over an empty inner dimension (a rank without rows) returns its input unbroadcast
        self._col_bias = self._bias.reshape(1).expand(n_cols) if bias else None

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[0]

    def rows(self, values: torch.Tensor) -> torch.Tensor:
        """(1, N) -> (N,)."""
        return values.view(-1)

    def on_kernel(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.unsqueeze(-1)

    def row_shape(self, kernel: torch.Tensor) -> tuple[int, ...]:
        return kernel.shape[:1]

    def row_max(self, values: torch.Tensor) -> torch.Tensor:
        return values.amax(-1)

    def row_lse(self, values: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(values, dim=-1)

    def cols(self, values: torch.Tensor) -> torch.Tensor:
        """(1, K) -> (K,)."""
        return values.view(-1)

    def row_output(self, values: torch.Tensor) -> torch.Tensor:
        return values.view(1, -1)

    def col_output(self, values: torch.Tensor) -> torch.Tensor:
        return values.view(1, -1)

    def problem_of_rows(self, per_problem: torch.Tensor) -> torch.Tensor:
        return per_problem.view(1)

    def cols_of_problem(self, per_problem: torch.Tensor) -> torch.Tensor:
        return per_problem.view(1)

    def row_total(self, rows: torch.Tensor) -> torch.Tensor:
        total = rows.sum().reshape(1)
        return self.reducer.sum(total) if self._distributed else total

    def row_total_lse(self, rows: torch.Tensor) -> torch.Tensor:
        local = torch.logsumexp(rows, dim=0).reshape(1) if rows.shape[0] else rows.new_full((1,), -math.inf)
        return self._combine_lse(local)

    def row_extreme(self, rows: torch.Tensor) -> torch.Tensor:
        local = rows.amax().reshape(1) if rows.shape[0] else rows.new_zeros(1)
        return self.reducer.max(local) if self._distributed else local

    def col_sums(self, kernel: torch.Tensor, a: torch.Tensor | None, accurate: bool) -> torch.Tensor:
        if a is None:
            sums = kernel.sum(0)
        elif accurate:
            sums = _accurate_vector_column_sums(a, kernel, self._tiny)
        elif self._bias is None:
            sums = torch.mv(kernel.t(), a)
        else:
            sums = torch.addmv(self._col_bias, kernel.t(), a)
        return self.reducer.sum(sums) if self._distributed else sums

    def exact_col_sums(self, kernel: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.reducer.sum((kernel * a.unsqueeze(-1)).sum(0, dtype=torch.float64))

    def row_sums(self, kernel: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self._bias is None or kernel.shape[0] == 0:  # (addmv broadcasts its bias over no rows to one)
            return torch.mv(kernel, b)
        return torch.addmv(self._bias_vector, kernel, b)

    def col_max(self, values: torch.Tensor) -> torch.Tensor:
        local = values.amax(0) if values.shape[0] else values.new_full((values.shape[1],), -math.inf)
        return self.reducer.max(local)

    def col_lse(self, values: torch.Tensor) -> torch.Tensor:
        return self._combine_lse(torch.logsumexp(values, dim=0))


class Segments:
    """Row-to-group bookkeeping and the segment reductions over contiguous row groups.

    ``sum`` and ``max`` reduce an (N, K) tensor to (G, K) per group; ``expand`` repeats a
    per-group (G, K) tensor on the rows of each group. The plain-PyTorch sum is a product with
    the (G, N) CSR matrix whose row g holds ``weights`` on the columns of group g: one fused
    pass, several times faster on the CPU than multiplying first and then ``segment_csr``,
    ``segment_reduce`` or ``index_add_``. ``implementation="torch_scatter"`` uses
    torch-scatter's ``segment_csr`` instead.
    """

    def __init__(self, ptr: torch.Tensor, n_rows: int, implementation: str, scatter: Any = None):
        self.name = implementation
        self.ptr = ptr
        self.n_groups = ptr.numel() - 1
        device = ptr.device
        # ptr is non-decreasing from 0 to N here (the entry point sanitises it; a bad ptr is
        # reported by the checks), so the group sizes are valid repeat counts
        self.group = torch.repeat_interleave(torch.arange(self.n_groups, device=device), ptr.diff(), output_size=n_rows)
        self._scatter = scatter
        self._rows = torch.arange(n_rows, device=device)
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


class Segmented(_Layout):
    """G problems of different sizes packed row-wise, (N, K); each problem stops on its own."""

    independent = True

    def __init__(self, segments: Segments, n_rows: int, n_cols: int, dtype: torch.dtype, device: torch.device):
        self.segments = segments
        self.n_rows, self.n_cols = n_rows, n_cols
        self.reducer = Reducer()
        self.tiny = torch.finfo(dtype).tiny  # keeps 0/0 out of zero-mass rows and columns
        # one (N, K) scratch buffer for per-group values spread over the rows: a fresh tensor of
        # that size per iteration would cost more than the arithmetic (page faults on the CPU)
        self._work = torch.empty((n_rows, n_cols), dtype=dtype, device=device)
        self._ones = torch.ones(n_cols, dtype=dtype, device=device)

    @property
    def n_problems(self) -> int:
        return self.segments.n_groups

    def rows(self, values: torch.Tensor) -> torch.Tensor:
        """(N,) -> the row-vector shape (N, 1)."""
        return values.unsqueeze(-1)

    def cols(self, values: torch.Tensor) -> torch.Tensor:
        """(G, K): already the column-vector shape."""
        return values

    def row_output(self, values: torch.Tensor) -> torch.Tensor:
        return values.squeeze(-1)

    def col_output(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def spread(self, cols: torch.Tensor, scratch: bool = True) -> torch.Tensor:
        """A (G, K) column vector on the rows of each group, (N, K) (into the scratch buffer,
        valid until the next call, unless ``scratch=False``)."""
        return self.segments.expand(cols, out=self._work if scratch else None)

    def problem_of_rows(self, per_problem: torch.Tensor) -> torch.Tensor:
        """A per-group (G,) vector on the rows: (N, 1)."""
        return self.segments.expand(per_problem).unsqueeze(-1)

    def cols_of_problem(self, per_problem: torch.Tensor) -> torch.Tensor:
        """A per-group (G,) vector on the column vectors: (G, 1)."""
        return per_problem.unsqueeze(-1)

    def row_total(self, rows: torch.Tensor) -> torch.Tensor:
        return self.segments.sum(rows).squeeze(-1)

    def row_total_lse(self, rows: torch.Tensor) -> torch.Tensor:
        return self.col_lse(rows).squeeze(-1)

    def row_extreme(self, rows: torch.Tensor) -> torch.Tensor:
        return self.segments.max(rows).squeeze(-1)

    def col_sums(self, kernel: torch.Tensor, a: torch.Tensor | None, accurate: bool) -> torch.Tensor:
        return self.segments.sum(kernel, a).add_(self.tiny)

    def exact_col_sums(self, kernel: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.segments.sum((kernel * a).to(torch.float64))

    def row_sums(self, kernel: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        spread = self.spread(b).mul_(kernel)
        return torch.mv(spread, self._ones).add_(self.tiny).unsqueeze(-1)

    def col_max(self, values: torch.Tensor) -> torch.Tensor:
        return self.segments.max(values)

    def col_lse(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group column log-sum-exp of ``values`` (N, K); -inf for an all -inf column."""
        top = self.segments.max(values)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        scratch = values.shape[-1] == self._work.shape[-1]  # row totals come as (N, 1)
        return top + torch.log(self.segments.sum(torch.exp(values - self.spread(top, scratch))))


Layout = Dense | Single | Segmented
