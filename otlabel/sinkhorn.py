"""Entropic optimal-transport labelling: :func:`sinkhorn`, :func:`sinkhorn_with_prior`.

Each entry point gathers its keywords into one :class:`~otlabel._options.Options` and hands the
call to the front end (:func:`otlabel._front.label`), which validates it, builds the
:class:`~otlabel._problem.Problem` (what is solved) and :class:`~otlabel._problem.Schedule` (how),
has a backend solve it, and wraps the :class:`~otlabel._problem.Solution` into what the caller
asked for.
"""

from __future__ import annotations

from typing import Any

from ._checks import Array
from ._front import label
from ._options import Options
from ._results import SinkhornResult

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_with_prior"]


def sinkhorn(
    scores: Array,
    epsilon: float = 0.05,
    *,
    prior: Array | None = None,
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
    differentiable: bool = False,
    output: str = "plan",
    top_k: int = 1,
) -> Array | SinkhornResult:
    r"""Soft pseudo-labels with prescribed class proportions (entropic optimal transport).

    Returns the transport plan

    .. math::

        Q = \operatorname{diag}(u)\, \bigl(\hat Q \odot \exp(S / \varepsilon)\bigr)\, \operatorname{diag}(v),
        \qquad Q \mathbf{1}_K = N r, \qquad Q^\top \mathbf{1}_N = N c,

    the minimiser of :math:`\langle Q, -S\rangle + \varepsilon\, \mathrm{KL}(Q \,\|\, \hat Q)`
    over that transport polytope: with no ``prior`` (:math:`\hat Q = \mathbf{1}`) the SeLa/SwAV
    self-labelling problem, with one CASE's Eq. 12 (see :func:`sinkhorn_with_prior`). With the
    default marginals every row of Q sums to 1 (a soft label) and every column to N/K
    (equipartition).

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
    prior : Tensor or ndarray, same shape as ``scores``, optional
        The prior :math:`\hat Q`: non-negative and finite, with no all-zero row or column (no
        broadcasting). Zeros are hard constraints (Q is zero there) and must admit the marginals
        (decided exactly by a maximum flow before iterating; an infeasible support raises
        :class:`~otlabel.InfeasibleProblemError` naming the rows and columns). Only its shape
        matters up to per-row and per-column factors, so it need not be normalised; a uniform
        prior gives exactly the answer without one. Default: none.
    log_prior : bool, default False
        ``prior`` holds :math:`\log \hat Q` instead: finite, or -inf for a hard zero. For
        priors too sharp for their dtype (see :func:`gaussian_rank_prior` with ``log=True``).
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
        (checked); ``prior`` then holds this rank's rows too. Pass ``torch.distributed.group.WORLD``
        for all ranks. See :mod:`otlabel.distributed` and the guide page "Labelling a global
        batch across GPUs".
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
    differentiable : bool, default False
        Labels that carry gradients to ``scores``, ``prior``, ``col_marginal`` and
        ``row_marginal`` (the tensors among them). Fixed-iteration mode: the exact derivative
        of the ``n_iter`` iterations, in O(N K + n_iter (N + K)) memory; tolerance mode: the
        implicit derivative of the converged plan (one solve on the smaller side). The forward
        is unchanged. With a ``process_group`` the backward all-reduces like the forward (every
        rank must call it) and each rank gets its slice of one process's gradient. Not with
        ``col_bounds``, nor ``mass`` or ``init`` in fixed-iteration mode. See the guide page
        "Differentiating through the labels".

    output : {"plan", "hard", "topk", "quotas"}, default "plan"
        What to return: the plan Q; ``"hard"``: :class:`~otlabel.HardLabels` (per row, the column
        of its largest entry as int64 — the lowest such column on a tie — and that entry, the
        row's mass on it); ``"quotas"``: :class:`~otlabel.HardLabels` whose columns receive
        exactly :func:`integer_quotas` of their masses (the labels of :func:`hard_labels` for the
        call's column marginal, uniform when none is given; not with ``process_group``);
        ``"topk"``: :class:`~otlabel.TopLabels` (the ``top_k`` largest entries of every row,
        largest first, and their columns). :func:`sinkhorn_features` takes the same and never
        holds the plan. Not with ``differentiable=True``. Where a
        ``validate="device"`` check failed (the plan is NaN), the columns are -1 and the entries
        NaN.
    top_k : int, default 1
        How many entries per row ``output="topk"`` keeps (at most K).

    Returns
    -------
    Tensor, ndarray or SinkhornResult
        Q with the shape, dtype, device and array type of ``scores`` (no gradient unless
        ``differentiable=True``). Every
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
    return label(scores, prior, Options.of_call(locals()))


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
    differentiable: bool = False,
    output: str = "plan",
    top_k: int = 1,
) -> Array | SinkhornResult:
    r"""Pseudo-labels pulled toward a prior :math:`\hat Q` (CASE Eq. 12): :func:`sinkhorn` with ``prior=``.

    The name the CASE paper's users import, kept as an alias of :func:`sinkhorn` with the prior
    as its second argument. Returns

    .. math::

        Q = \operatorname{diag}(u)\, \bigl(\hat Q \odot \exp(S / \varepsilon)\bigr)\, \operatorname{diag}(v),

    the minimiser of :math:`\langle Q, -S\rangle + \varepsilon\, \mathrm{KL}(Q \,\|\, \hat Q)` over
    the transport polytope with rows summing to :math:`N r` and columns to :math:`N c`
    (derivation: CASE appendix G). Zeros in the prior are hard constraints: Q is zero there.

    Parameters
    ----------
    scores, prior, log_prior
        As in :func:`sinkhorn` (``prior`` is required here).
    epsilon, col_marginal, row_marginal, n_iter, tol, max_iter, check_every, backend, return_info
        As in :func:`sinkhorn`.
    process_group, validate, col_penalty, row_penalty, mass, col_bounds, init, acceleration, differentiable
        As in :func:`sinkhorn`.
    output, top_k
        As in :func:`sinkhorn`.

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
    return label(scores, prior, Options.of_call(locals()))
