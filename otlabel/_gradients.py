r"""Gradients through the labels (``differentiable=True``): one :class:`torch.autograd.Function`
whose forward is the solved plan and whose backward is written by hand, in two modes.

Both work on the log kernel :math:`L = S/\varepsilon + \log \hat Q` of a problem of B × N × K,
with the plan :math:`Q = \exp(L + f \mathbf{1}^\top + \mathbf{1} g^\top)` and the log masses
:math:`a = \log(N c)` (columns) and :math:`b = \log(N r)` (rows). A side held by a KL penalty
of strength τ takes the damped step :math:`\varphi = \tau / (\tau + \varepsilon)` (1 for a hard
side).

**Fixed-iteration mode** — the exact derivative of the ``n_iter``-iteration map

.. math::
    g_t = \varphi_c \bigl(a - \operatorname{LSE}_n(L + f_{t-1})\bigr), \qquad
    f_t = \varphi_r \bigl(b - \operatorname{LSE}_k(L + g_t)\bigr), \qquad f_0 = 0,

(what autograd through the same loop gives), by reverse-mode through the loop. The backward
recomputes the iterations keeping only the potentials and the log-sum-exps, O(n_iter·(N+K)),
and rebuilds each step's soft-max when it needs it: one N × K tensor at a time, never
``n_iter`` of them.

**Tolerance mode** — implicit differentiation at the converged plan. The optimality conditions,
each row and column equation multiplied by its sum (which leaves the derivative unchanged at a
root) are

.. math::
    R_n \bigl(\log R_n + \rho_r f_n - b_n\bigr) = 0, \qquad
    C_k \bigl(\log C_k + \rho_c g_k - a_k\bigr) = 0, \qquad \rho = \varepsilon / \tau

(:math:`\rho = 0` for a hard side), :math:`R = Q\mathbf{1}`, :math:`C = Q^\top\mathbf{1}`. With
:math:`\bar Z = \bar Q \odot Q`, the adjoint (λ, μ) solves

.. math::
    \begin{pmatrix} \operatorname{diag}(R (1 + \rho_r)) & Q \\
                    Q^\top & \operatorname{diag}(C (1 + \rho_c)) \end{pmatrix}
    \begin{pmatrix} \lambda \\ \mu \end{pmatrix} =
    \begin{pmatrix} \bar Z \mathbf{1} \\ \bar Z^\top \mathbf{1} \end{pmatrix},

and then :math:`\bar L = \bar Z - Q \odot (\lambda \mathbf{1}^\top + \mathbf{1} \mu^\top)`,
:math:`\bar a = C \odot \mu`, :math:`\bar b = R \odot \lambda`. The system is solved through its
Schur complement on the smaller side (min(N, K) × min(N, K), symmetric), directly, in float64.
With both sides hard it is singular along (1, −1) — the potentials' shift — and a rank-one term
fixes that shift without changing the answer. Only the plan is needed: no iterate is kept.

From :math:`\bar L`: :math:`\bar S = \bar L / \varepsilon`; a prior :math:`\hat Q` gets
:math:`\bar L / \hat Q`, computed without dividing (the backward forms every product with
:math:`\exp(S/\varepsilon + \dots)` in place of :math:`\exp(L + \dots)`), so that a zero of the
prior gets its derivative too; a log prior gets :math:`\bar L`. Marginals given as proportions
are renormalised by the forward, and their gradient is that of the renormalised marginal:
:math:`\partial \ell / \partial c_j = \bar a_j / c_j - \sum_k \bar a_k / \sum_k c_k`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from ._reduce import Reducer
from .errors import ArgumentTypeError, ConvergenceWarning, InvalidArgumentError

__all__ = [
    "Spec",
    "check_differentiable",
    "check_differentiable_options",
    "differentiable_plan",
]


class Spec(NamedTuple):
    """What the backward needs besides the tensors: the problem's constants."""

    epsilon: float
    n_iter: int | None  #: fixed-iteration mode's iterations; None: tolerance mode (implicit)
    row_step: float  #: φ_r (1: hard rows)
    col_step: float  #: φ_c (1: hard columns)
    log_prior: bool
    #: how the ranks of a process group combine sums over rows (the identity for one process)
    reducer: Reducer
    #: the tolerance the forward met (partial transport: a side within it of its mass is active)
    tol: float | None = None

    @classmethod
    def of(cls, problem: Any, schedule: Any, options: Any) -> Spec:
        """The spec of a built problem (:class:`~otlabel._problem.Problem`) and its schedule."""
        return cls(
            epsilon=options.epsilon,
            n_iter=schedule.n_iter if schedule.fixed else None,
            row_step=problem.row_rule.exponent,
            col_step=problem.col_rule.exponent,
            log_prior=options.log_prior,
            reducer=problem.reducer,
            tol=schedule.tol,
        )


def check_differentiable(options: Any, scores: Any) -> None:
    """Refuse, before any work, what ``differentiable=True`` does not cover (naming the option)."""
    if not isinstance(scores, torch.Tensor):
        raise ArgumentTypeError(
            "differentiable=True needs scores as a torch tensor (gradients flow to tensors), "
            f"got {type(scores).__name__}"
        )
    check_differentiable_options(options, warm_start=options.init is not None)
    for name in ("col_marginal", "row_marginal"):
        given = getattr(options, name)
        # (read back only for a marginal that asks for a gradient)
        if isinstance(given, torch.Tensor) and given.requires_grad and bool((given == 0).any()):
            raise InvalidArgumentError(
                f"differentiable=True: {name} has zero entries and asks for a gradient; the derivative "
                "at a zero proportion is a one-sided limit that is not formed (detach it, or keep its "
                "entries positive)"
            )


def check_differentiable_options(options: Any, warm_start: bool) -> None:
    """The part of :func:`check_differentiable` that needs no scores (``warm_start``: an ``init``
    will be given)."""
    refused = [
        (
            "mass",
            options.mass is not None and options.schedule.fixed,
            "the fixed-iteration mode's Dykstra steps are not differentiated (the tolerance mode, tol=..., is)",
        ),
        (
            "col_bounds",
            options.col_bounds is not None,
            "bounded class sizes have no derivative where a bound turns active; pass col_marginal or col_penalty",
        ),
        (
            "a warm start",
            warm_start and options.schedule.fixed,
            "the fixed-iteration mode's warm start is not differentiated yet (the tolerance mode, tol=..., takes one)",
        ),
    ]
    for name, given, why in refused:
        if given:
            raise InvalidArgumentError(f"differentiable=True cannot be combined with {name}: {why}")


def differentiable_plan(
    plan: torch.Tensor,
    potentials: tuple[torch.Tensor, torch.Tensor] | None,
    masses: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None],
    spec: Spec,
    scores: torch.Tensor,
    prior: torch.Tensor | None,
    row_marginal: Any,
    col_marginal: Any,
    ptr: torch.Tensor | None = None,
) -> torch.Tensor:
    """``plan`` (B, N, K), the solved labels in the compute dtype, carrying gradients to the tensors
    among ``scores``, ``prior``, ``row_marginal`` and ``col_marginal`` (as the caller gave them;
    a prior that is not a tensor comes as the problem's own, a constant).
    ``potentials``: the solution's (f, g), (B, N) and (B, K) — needed by the tolerance mode with a
    prior that may be differentiated (else None); ``masses``: the problem's (row, column, total)
    masses, (B, N) (None: every row 1), (B, K) and (B,) (None: not partial transport).

    A ragged call passes its CSR offsets ``ptr`` (G + 1,): then ``plan`` is (N, K) packed, the
    potentials (N,) and (G, K), the masses (N,), (G, K) and (G,)."""
    row = row_marginal if isinstance(row_marginal, torch.Tensor) else None
    col = col_marginal if isinstance(col_marginal, torch.Tensor) else None
    f, g = (None, None) if potentials is None else potentials
    if ptr is None:
        return _Plan.apply(plan, f, g, *masses, spec, scores, prior, row, col)
    return _RaggedPlan.apply(plan, f, g, *masses, ptr, spec, scores, prior, row, col)


class _Plan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, plan, f, g, row_mass, col_mass, total_mass, spec: Spec, scores, prior, row, col):  # noqa: ANN001, ANN205
        ctx.spec = spec
        ctx.save_for_backward(plan, f, g, row_mass, col_mass, total_mass, scores, prior, row, col)
        return plan.view_as(plan)

    @staticmethod
    @once_differentiable  # (a hand-written backward: a second derivative through it is refused, not wrong)
    def backward(ctx: Any, plan_grad: torch.Tensor):  # noqa: ANN205
        plan, f, g, row_mass, col_mass, total_mass, scores, prior, row, col = ctx.saved_tensors
        spec: Spec = ctx.spec
        want_scores, want_prior, want_row, want_col = ctx.needs_input_grad[7:11]
        inputs = _Inputs.of(plan, plan_grad, scores, prior, row_mass, spec, want_prior)
        reduced_grad, log_row_grad, log_col_grad = _core(inputs, f, g, col_mass, total_mass, spec, None)
        grads = inputs.scores_and_prior_grads(reduced_grad, scores, prior, spec, want_scores, want_prior)
        row_grad = col_grad = None
        if want_row:  # this rank's slice of a marginal over all rows: its sums are over all ranks
            row_grad = _proportions_grad(log_row_grad, row, spec.reducer)
        if want_col:
            col_grad = _proportions_grad(log_col_grad, col, None)
        return None, None, None, None, None, None, None, *grads, row_grad, col_grad


class _RaggedPlan(torch.autograd.Function):
    """:class:`_Plan` for a ragged call: G problems packed row-wise (CSR offsets ``ptr``); the
    backward pads them into (G, max N_g, K), masks the padding, and packs the gradients back."""

    @staticmethod
    def forward(ctx: Any, plan, f, g, row_mass, col_mass, total_mass, ptr, spec: Spec, scores, prior, row, col):  # noqa: ANN001, ANN205
        ctx.spec = spec
        ctx.save_for_backward(plan, f, g, row_mass, col_mass, total_mass, ptr, scores, prior, row, col)
        return plan.view_as(plan)

    @staticmethod
    @once_differentiable  # (a hand-written backward: a second derivative through it is refused, not wrong)
    def backward(ctx: Any, plan_grad: torch.Tensor):  # noqa: ANN205
        plan, f, g, row_mass, col_mass, total_mass, ptr, scores, prior, row, col = ctx.saved_tensors
        spec: Spec = ctx.spec
        want_scores, want_prior, want_row, want_col = ctx.needs_input_grad[8:12]
        inputs = _Inputs.of(plan, plan_grad, scores, prior, row_mass, spec, want_prior)
        packing = _Packing(ptr, plan.shape[0])
        padded = inputs.padded(packing)
        f_padded = None if f is None else packing.pad(f, -math.inf)
        reduced, log_row_grad, log_col_grad = _core(padded, f_padded, g, col_mass, total_mass, spec, packing.valid)
        reduced_grad, log_row_grad = packing.unpad(reduced), packing.unpad(log_row_grad)
        grads = inputs.scores_and_prior_grads(reduced_grad, scores, prior, spec, want_scores, want_prior)
        row_grad = col_grad = None
        if want_row:  # proportions renormalised within each group
            values = row.detach().to(log_row_grad.dtype)
            per_group = packing.group_sum(log_row_grad) / packing.group_sum(values)
            row_grad = (log_row_grad / values - per_group[packing.group]).to(row.dtype)
        if want_col:
            col_grad = _proportions_grad(log_col_grad, col, None)
        return None, None, None, None, None, None, None, None, *grads, row_grad, col_grad


class _Inputs(NamedTuple):
    """What the backward works on, in the compute dtype: the plan and its gradient, S/ε, the log
    kernel L, the prior when its gradient comes back divided by it, and the log row masses."""

    plan: torch.Tensor
    grad: torch.Tensor
    scaled: torch.Tensor
    kernel: torch.Tensor
    prior_factor: torch.Tensor | None
    log_row: torch.Tensor

    @classmethod
    def of(cls, plan, plan_grad, scores, prior, row_mass, spec: Spec, want_prior: bool) -> _Inputs:  # noqa: ANN001
        dtype = plan.dtype
        scaled = scores.detach().to(dtype).reshape(plan.shape) / spec.epsilon
        kernel, prior_factor = scaled, None
        if prior is not None:
            prior_values = prior.detach().to(dtype).reshape(plan.shape)
            kernel = scaled + (prior_values if spec.log_prior else prior_values.log())
            if not spec.log_prior and want_prior:
                # A linear prior's gradient is bar-L / Q-hat: every product is formed with
                # exp(S/eps + ...) instead of exp(L + ...), and bar-L = Q-hat * that; a zero of
                # Q-hat gets its derivative too (no division).
                prior_factor = prior_values
        log_row = torch.zeros_like(plan[..., 0]) if row_mass is None else row_mass.to(dtype).log()
        return cls(plan, plan_grad.to(dtype), scaled, kernel, prior_factor, log_row)

    def padded(self, packing: _Packing) -> _Inputs:
        """These inputs of packed rows (N, ...) as (G, max N_g, ...); padded rows hold no mass."""
        factor = None if self.prior_factor is None else packing.pad(self.prior_factor, 0.0)
        return _Inputs(
            packing.pad(self.plan, 0.0),
            packing.pad(self.grad, 0.0),
            packing.pad(self.scaled, 0.0),
            packing.pad(self.kernel, 0.0),
            factor,
            packing.pad(self.log_row, -math.inf),
        )

    def scores_and_prior_grads(self, reduced_grad, scores, prior, spec: Spec, want_scores: bool, want_prior: bool):  # noqa: ANN001, ANN201
        """The gradients of ``scores`` and ``prior`` from bar-L (or bar-L / Q-hat)."""
        scores_grad = prior_grad = None
        if want_scores:
            kernel_grad = reduced_grad if self.prior_factor is None else reduced_grad * self.prior_factor
            scores_grad = (kernel_grad / spec.epsilon).reshape(scores.shape).to(scores.dtype)
        if want_prior:
            prior_grad = reduced_grad.reshape(prior.shape).to(prior.dtype)
        return scores_grad, prior_grad


class _Packing:
    """Rows of G groups packed one after another (CSR offsets ``ptr``) and their padded layout."""

    def __init__(self, ptr: torch.Tensor, n_rows: int):
        sizes = ptr.diff()
        n_groups = sizes.numel()
        self.width = int(sizes.max()) if n_groups else 0  # (the backward of a ragged call reads it back)
        self.group = torch.repeat_interleave(torch.arange(n_groups, device=ptr.device), sizes)
        self.position = torch.arange(n_rows, device=ptr.device) - ptr[:-1][self.group]
        self.n_groups = n_groups
        self.valid = self.pad(torch.ones(n_rows, dtype=torch.bool, device=ptr.device), False)

    def pad(self, packed: torch.Tensor, fill: float | bool) -> torch.Tensor:
        out = packed.new_full((self.n_groups, self.width, *packed.shape[1:]), fill)
        out[self.group, self.position] = packed
        return out

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        return padded[self.group, self.position]

    def group_sum(self, packed: torch.Tensor) -> torch.Tensor:
        return packed.new_zeros(self.n_groups).index_add_(0, self.group, packed)


def _core(inputs: _Inputs, f, g, col_mass, total_mass, spec: Spec, row_mask):  # noqa: ANN001, ANN202
    """bar-L (or bar-L / Q-hat), and the gradients of the log row and column masses, of either
    mode; ``row_mask``: which rows are real (padded ones hold no mass), or None; ``total_mass``:
    partial transport's total per problem, or None."""
    dtype = inputs.plan.dtype
    log_col = col_mass.to(dtype).log()
    if spec.n_iter is not None:
        return _unrolled(inputs, spec, log_col, row_mask)
    if inputs.prior_factor is None:
        plan_over_prior = inputs.plan
    else:  # Q / Q-hat = exp(f + S/eps + g)
        plan_over_prior = torch.exp(f.to(dtype).unsqueeze(-1) + inputs.scaled + g.to(dtype).unsqueeze(-2))
    if total_mass is not None:
        masses = (inputs.log_row.exp(), col_mass.to(dtype))
        return _implicit_partial(inputs.plan, plan_over_prior, inputs.grad, spec, row_mask, masses)
    return _implicit(inputs.plan, plan_over_prior, inputs.grad, spec, row_mask)


def _proportions_grad(log_mass_grad: torch.Tensor, given: torch.Tensor, reducer: Reducer | None) -> torch.Tensor:
    """The gradient of proportions ``given`` ((K,) or (B, K)) that the forward renormalised into
    masses N * given / given.sum(), from the gradient of the log masses (B, K). ``reducer``: the
    sums run over every rank's slice (a row marginal over a process group)."""
    values = given.detach().to(log_mass_grad.dtype)
    grad_total, value_total = log_mass_grad.sum(-1, keepdim=True), values.sum(-1, keepdim=True)
    if reducer is not None:
        grad_total, value_total = reducer.sum(grad_total), reducer.sum(value_total)
    per = log_mass_grad / values - grad_total / value_total
    if given.dim() == 1:
        per = per.sum(0)
    return per.reshape(given.shape).to(given.dtype)


def _logsumexp_over_rows(values: torch.Tensor, reducer: Reducer) -> torch.Tensor:
    """log Σ_n exp(values) over the rows of every rank (dim -2)."""
    if not reducer.distributed:
        return torch.logsumexp(values, dim=-2)
    top = values.amax(-2) if values.shape[-2] else values.new_full(values.shape[:-2] + values.shape[-1:], -math.inf)
    top = reducer.max(top)
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return safe + reducer.sum(torch.exp(values - safe.unsqueeze(-2)).sum(-2)).log()


def _unrolled(inputs: _Inputs, spec: Spec, log_col, row_mask):  # noqa: ANN001, ANN202
    """Fixed-iteration mode: reverse-mode through the loop, recomputed with its potentials only.
    With a ``prior_factor`` (Q-hat), the kernel's gradient comes back divided by it. Padded rows
    (``row_mask`` false) start at f = -inf and have no mass: they stay at -inf and add nothing."""
    grad, kernel, scaled, prior_factor, log_row = (
        inputs.grad,
        inputs.kernel,
        inputs.scaled,
        inputs.prior_factor,
        inputs.log_row,
    )
    batch, n_rows, n_cols = kernel.shape
    reducer = spec.reducer
    # forward again, keeping f_{t-1}, g_t and both log-sum-exps of every iteration: O(T (N + K))
    f = torch.zeros(batch, n_rows, dtype=kernel.dtype, device=kernel.device)
    if row_mask is not None:
        f = f.masked_fill(~row_mask, -math.inf)
    tape = []
    for _ in range(spec.n_iter):
        col_lse = _logsumexp_over_rows(kernel + f.unsqueeze(-1), reducer)
        g = spec.col_step * (log_col - col_lse)
        row_lse = torch.logsumexp(kernel + g.unsqueeze(-2), dim=-1)
        tape.append((f, g, col_lse, row_lse))
        f = spec.row_step * (log_row - row_lse)
    numerator = kernel if prior_factor is None else scaled
    # bar-Z = bar-Q ⊙ Q, the plan's direct contribution
    reduced_grad = grad * torch.exp(numerator + f.unsqueeze(-1) + g.unsqueeze(-2))
    z_grad = reduced_grad if prior_factor is None else reduced_grad * prior_factor
    f_grad, g_grad = z_grad.sum(-1), reducer.sum(z_grad.sum(-2))
    log_row_grad = torch.zeros_like(log_row)
    log_col_grad = torch.zeros_like(log_col)
    for f_before, g, col_lse, row_lse in reversed(tape):
        # row step f_t = φ_r (b - LSE_k(L + g_t)): its soft-max over k, times the step's adjoint
        step = spec.row_step * f_grad
        log_row_grad += step
        weighted = torch.exp(numerator + g.unsqueeze(-2) - row_lse.unsqueeze(-1)) * step.unsqueeze(-1)
        reduced_grad -= weighted
        g_grad = g_grad - reducer.sum((weighted if prior_factor is None else weighted * prior_factor).sum(-2))
        # column step g_t = φ_c (a - LSE_n(L + f_{t-1})): its soft-max over n (every rank's rows)
        step = spec.col_step * g_grad
        log_col_grad += step
        weighted = torch.exp(numerator + f_before.unsqueeze(-1) - col_lse.unsqueeze(-2)) * step.unsqueeze(-2)
        reduced_grad -= weighted
        f_grad = -(weighted if prior_factor is None else weighted * prior_factor).sum(-1)
        g_grad = torch.zeros_like(g_grad)
    return reduced_grad, log_row_grad, log_col_grad


def _implicit(plan, plan_over_prior, grad, spec: Spec, row_mask):  # noqa: ANN001, ANN202
    """Tolerance mode: the adjoint of the optimality conditions at the converged plan.
    ``plan_over_prior``: the plan, or Q / Q-hat (then the kernel's gradient comes back divided by Q-hat).
    Over a process group the column side is eliminated on every rank from all-reduced sums (the
    K × K Schur complement), and each rank's λ follows from its own rows. ``row_mask``: which rows
    are real (padded rows of a ragged call are not)."""
    solve_dtype = torch.float64
    reducer = spec.reducer
    q = plan
    z_grad = grad * q
    row_sums, col_sums = q.sum(-1), reducer.sum(q.sum(-2))
    row_rho = 1.0 / spec.row_step - 1.0  # ε/τ: 0 for a hard side
    col_rho = 1.0 / spec.col_step - 1.0
    # A row or column without mass (a zero marginal entry, padding) is empty: an identity block
    # with a zero right-hand side (no coupling), so that nothing divides by its zero sum.
    row_diag = (row_sums * (1.0 + row_rho)).to(solve_dtype)
    row_diag = torch.where(row_diag > 0, row_diag, torch.ones_like(row_diag))
    col_diag = (col_sums * (1.0 + col_rho)).to(solve_dtype)
    col_diag = torch.where(col_diag > 0, col_diag, torch.ones_like(col_diag))
    row_rhs = z_grad.sum(-1).to(solve_dtype)
    col_rhs = reducer.sum(z_grad.sum(-2).to(solve_dtype))
    q64 = q.to(solve_dtype)
    both_hard = row_rho == 0.0 and col_rho == 0.0
    if q.shape[-1] <= q.shape[-2] or reducer.distributed:
        col_adj = _schur_solve(q64, row_diag, col_diag, row_rhs, col_rhs, both_hard, reducer)
        row_adj = (row_rhs - (q64 @ col_adj.unsqueeze(-1)).squeeze(-1)) / row_diag
    else:
        t = q64.transpose(-1, -2)
        row_adj = _schur_solve(t, col_diag, row_diag, col_rhs, row_rhs, both_hard, reducer)
        col_adj = (col_rhs - (t @ row_adj.unsqueeze(-1)).squeeze(-1)) / col_diag
    row_adj, col_adj = row_adj.to(q.dtype), col_adj.to(q.dtype)
    # bar-L = bar-Z - Q ⊙ (λ 1ᵀ + 1 μᵀ) = Q ⊙ (bar-Q - λ 1ᵀ - 1 μᵀ)
    reduced_grad = (grad - row_adj.unsqueeze(-1) - col_adj.unsqueeze(-2)) * plan_over_prior
    return reduced_grad, row_adj * row_sums, col_adj * col_sums


def _schur_solve(q, row_diag, col_diag, row_rhs, col_rhs, both_hard: bool, reducer: Reducer) -> torch.Tensor:  # noqa: ANN001
    """μ of [[diag(row_diag), q], [qᵀ, diag(col_diag)]] (λ; μ) = (row_rhs; col_rhs), through the
    Schur complement diag(col_diag) - qᵀ diag(1/row_diag) q (symmetric); the products over rows
    are summed over the ranks of a process group (``col_diag`` and ``col_rhs`` already are)."""
    size = col_diag.shape[-1]
    scale = col_diag.mean(-1, keepdim=True)
    # With both sides hard the complement is singular along 1 (the potentials' shift) while the
    # right-hand side is ⟂ 1: a rank-one term pins the shift to 0 without changing the answer.
    pin = scale / size if both_hard else torch.zeros_like(scale)

    def own_dense() -> torch.Tensor:
        return torch.diag_embed(col_diag) + pin.unsqueeze(-1)

    def own_times(vector: torch.Tensor) -> torch.Tensor:
        return col_diag * vector + pin * vector.sum(-1, keepdim=True)

    return _solve_schur(own_dense, own_times, col_diag + pin, q, row_diag, col_rhs, row_rhs, scale, reducer)


def _solve_schur(own_dense, own_times, own_diagonal, coupling, row_diag, rhs, row_rhs, scale, reducer: Reducer):  # noqa: ANN001, ANN202
    """y of (Own - Cᵀ diag(1/row_diag) C) y = rhs - Cᵀ diag(1/row_diag) row_rhs, C = ``coupling``
    (B, N, M): directly for M up to :data:`DIRECT_SOLVE_LIMIT`, else by conjugate gradients.

    A sharp plan may fall apart into blocks (entries that underflowed to 0), each with a shift of
    its own: a ridge of 1e-12 times the diagonal's mean picks one. Such a shift moves μ on a
    block's columns and λ on its rows oppositely, so bar-L (which needs λ_n + μ_k where Q is not
    0) does not see it."""
    size = coupling.shape[-1]
    scaled = coupling / row_diag.unsqueeze(-1)
    moved = (scaled.transpose(-1, -2) @ row_rhs.unsqueeze(-1)).squeeze(-1)
    if reducer.distributed:
        moved = reducer.sum(moved)
    rhs = rhs - moved
    ridge = _RIDGE * scale
    if size <= DIRECT_SOLVE_LIMIT:
        over_rows = coupling.transpose(-1, -2) @ scaled
        if reducer.distributed:
            over_rows = reducer.sum(over_rows)
        eye = torch.eye(size, dtype=rhs.dtype, device=rhs.device)
        matrix = own_dense() - over_rows + ridge.unsqueeze(-1) * eye
        return torch.linalg.solve(matrix, rhs.unsqueeze(-1)).squeeze(-1)

    def times(vector: torch.Tensor) -> torch.Tensor:
        through_rows = (scaled.transpose(-1, -2) @ (coupling @ vector.unsqueeze(-1))).squeeze(-1)
        return own_times(vector) - reducer.sum(through_rows) + ridge * vector

    diagonal = own_diagonal - reducer.sum((coupling * scaled).sum(-2)) + ridge
    return _conjugate_gradients(times, rhs, diagonal.clamp_min(1e-300))


#: The ridge of the Schur complement, relative to its diagonal's mean (float64).
_RIDGE = 1e-12
#: The largest Schur complement (min(N, K) on one process, K over a process group; K + 1 with
#: ``mass``) solved directly; beyond it, conjugate gradients (no M × M matrix is formed).
DIRECT_SOLVE_LIMIT = 2048
#: Conjugate gradients: relative residual to reach, the most iterations, how often to look.
CG_TOL, CG_MAX_ITER, CG_CHECK_EVERY = 1e-10, 2000, 10


def _conjugate_gradients(times, rhs: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Diagonally preconditioned conjugate gradients for the symmetric positive semi-definite
    systems ``times(y) = rhs`` of a batch (B, M), to a relative residual of :data:`CG_TOL`; warns
    with :class:`~otlabel.ConvergenceWarning` if :data:`CG_MAX_ITER` iterations do not reach it."""
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    preconditioned = residual / diagonal
    direction = preconditioned.clone()
    product = (residual * preconditioned).sum(-1, keepdim=True)
    target = CG_TOL * rhs.norm(dim=-1, keepdim=True)
    tiny = torch.finfo(rhs.dtype).tiny
    for step in range(1, CG_MAX_ITER + 1):
        image = times(direction)
        alpha = product / (direction * image).sum(-1, keepdim=True).clamp_min(tiny)
        solution = solution + alpha * direction
        residual = residual - alpha * image
        if step % CG_CHECK_EVERY == 0 and bool((residual.norm(dim=-1, keepdim=True) <= target).all()):
            return solution
        preconditioned = residual / diagonal
        new_product = (residual * preconditioned).sum(-1, keepdim=True)
        direction = preconditioned + new_product / product.clamp_min(tiny) * direction
        product = new_product
    worst = (residual.norm(dim=-1) / rhs.norm(dim=-1).clamp_min(tiny)).max().item()
    warnings.warn(
        f"the implicit gradient's conjugate gradients reached a relative residual of {worst:.3g}, not "
        f"{CG_TOL:g}, within {CG_MAX_ITER} iterations (an ill-conditioned plan: a larger epsilon helps)",
        ConvergenceWarning,
        stacklevel=2,
    )
    return solution


def _implicit_partial(plan, plan_over_prior, grad, spec: Spec, row_mask, masses):  # noqa: ANN001, ANN202
    r"""Tolerance mode with partial transport (``mass``): the adjoint of the active constraints.

    At the solution :math:`Q = \exp(L + f + g + h)` a row is *active* when it holds its mass
    (:math:`f_n < 0`) and free otherwise (:math:`f_n = 0`, fixed), columns likewise, and the
    total :math:`T = m N` is always held (its multiplier h is free). The derivative is that of the
    active equations — each multiplied by its sum, as in :func:`_implicit` — whose adjoint
    (λ on active rows, μ on active columns, ν on the total) solves

    .. math::
        \begin{pmatrix} \operatorname{diag}(R_A) & Q_{AB} & R_A \\ Q_{AB}^\top & \operatorname{diag}(C_B) & C_B \\
        R_A^\top & C_B^\top & T \end{pmatrix} \begin{pmatrix} \lambda \\ \mu \\ \nu \end{pmatrix}
        = \begin{pmatrix} (\bar Z \mathbf 1)_A \\ (\bar Z^\top \mathbf 1)_B \\
          \mathbf 1^\top \bar Z \mathbf 1 \end{pmatrix}

    (eliminating the rows: a (K + 1) × (K + 1) system), and
    :math:`\bar L = Q \odot (\bar Q - \lambda \mathbf 1^\top - \mathbf 1 \mu^\top - \nu)`. A side is
    taken as active within ``tol`` (at least 1e-9) of its mass, relatively: a loose ``tol`` can
    misjudge a side that is near its mass (use tol <= 1e-4 for gradients); at a side exactly on
    the boundary the derivative has a kink, and this is one of its one-sided values.
    """
    solve_dtype = torch.float64
    reducer = spec.reducer
    row_mass, col_mass = masses
    q = plan
    z_grad = grad * q
    row_sums, col_sums = q.sum(-1), reducer.sum(q.sum(-2))
    total = reducer.sum(row_sums.sum(-1))
    slack = max(spec.tol or 0.0, 1e-9)
    # a side without mass (a zero marginal entry, padding) is empty, never active
    active_rows = (row_sums >= row_mass * (1 - slack)) & (row_sums > 0)
    if row_mask is not None:
        active_rows = active_rows & row_mask
    active_cols = (col_sums >= col_mass * (1 - slack)) & (col_sums > 0)
    rows_on, cols_on = active_rows.to(solve_dtype), active_cols.to(solve_dtype)
    q64 = q.to(solve_dtype)
    row_diag = torch.where(active_rows, row_sums.to(solve_dtype), torch.ones_like(rows_on))
    row_rhs = z_grad.sum(-1).to(solve_dtype) * rows_on
    col_rhs = reducer.sum(z_grad.sum(-2).to(solve_dtype)) * cols_on
    total_rhs = reducer.sum(z_grad.sum((-2, -1)).to(solve_dtype))
    # the rows' coupling to the columns' and the total's unknowns: [Q_AB, R_A] (B, N, K + 1)
    coupling = torch.cat(
        (q64 * rows_on.unsqueeze(-1) * cols_on.unsqueeze(-2), (row_sums.to(solve_dtype) * rows_on).unsqueeze(-1)), -1
    )
    col64 = col_sums.to(solve_dtype)
    n_cols = col64.shape[-1]
    col_own = torch.where(active_cols, col64, torch.ones_like(col64))  # a free column: μ = 0
    col_link, total64 = col64 * cols_on, total.to(solve_dtype).unsqueeze(-1)

    def own_dense() -> torch.Tensor:  # [[diag(C_B), C_B], [C_Bᵀ, T]]
        own = torch.zeros(*col64.shape[:-1], n_cols + 1, n_cols + 1, dtype=solve_dtype, device=q.device)
        own[..., :n_cols, :n_cols] = torch.diag_embed(col_own)
        own[..., :n_cols, n_cols] = col_link
        own[..., n_cols, :n_cols] = col_link
        own[..., n_cols, n_cols] = total64.squeeze(-1)
        return own

    def own_times(vector: torch.Tensor) -> torch.Tensor:
        cols, last = vector[..., :n_cols], vector[..., n_cols:]
        return torch.cat(
            (col_own * cols + col_link * last, (col_link * cols).sum(-1, keepdim=True) + total64 * last), -1
        )

    own_diagonal = torch.cat((col_own, total64), -1)
    rhs = torch.cat((col_rhs, total_rhs.unsqueeze(-1)), -1)
    scale = own_diagonal.mean(-1, keepdim=True)
    unknowns = _solve_schur(own_dense, own_times, own_diagonal, coupling, row_diag, rhs, row_rhs, scale, reducer)
    col_adj, total_adj = unknowns[..., :n_cols] * cols_on, unknowns[..., n_cols]
    row_adj = (row_rhs - (coupling @ unknowns.unsqueeze(-1)).squeeze(-1)) / row_diag * rows_on
    row_adj, col_adj, total_adj = row_adj.to(q.dtype), col_adj.to(q.dtype), total_adj.to(q.dtype)
    shift = row_adj.unsqueeze(-1) + col_adj.unsqueeze(-2) + total_adj.reshape(*total_adj.shape, 1, 1)
    reduced_grad = (grad - shift) * plan_over_prior
    return reduced_grad, row_adj * row_sums, col_adj * col_sums.to(q.dtype)
