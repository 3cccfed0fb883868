"""Many small labelling problems at once: :func:`sinkhorn_ragged`.

G independent problems (one per video, image or crop) with their own row counts are packed
into one (N, K) tensor, group g owning rows ``ptr[g]:ptr[g+1]`` (CSR offsets, as in
torch-scatter and PyTorch Geometric). One call labels them all with the solver core of
:func:`~otlabel.sinkhorn` (same schedule, same numerical safeguards) over the segmented layout
of :mod:`otlabel._layout`: per-group column shifts, per-group column marginals, per-group
convergence, every per-group quantity a segment reduction over contiguous rows — with plain
PyTorch (a sparse CSR product) or, on request, torch-scatter's ``segment_csr``.
"""

from __future__ import annotations

from typing import Any

from ._checks import SEGMENTS, Array
from ._front import label_ragged
from ._options import Options
from ._results import RaggedSinkhornResult

__all__ = ["SEGMENTS", "RaggedSinkhornResult", "sinkhorn_ragged"]


def sinkhorn_ragged(
    scores: Array,
    ptr: Any,
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
    segments: str = "auto",
    return_info: bool = False,
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
) -> Array | RaggedSinkhornResult:
    r"""Label G independent problems of different sizes, packed row-wise, in one call.

    Group g owns rows ``ptr[g]:ptr[g+1]`` of ``scores`` (:math:`N_g` rows). Each group is the
    problem of :func:`~otlabel.sinkhorn` (or :func:`~otlabel.sinkhorn_with_prior` when a
    ``prior`` is given) on its own rows:

    .. math::

        Q_g = \operatorname{diag}(u_g)\, \bigl(\hat Q_g \odot \exp(S_g / \varepsilon)\bigr)\, \operatorname{diag}(v_g),
        \qquad Q_g \mathbf{1}_K = N_g\, r_g, \qquad Q_g^\top \mathbf{1}_{N_g} = N_g\, c_g,

    and the result equals a Python loop of those calls over the groups (same schedule, same
    stopping rule per group), in one pass over the packed tensor. Equal-size groups can also
    be labelled as a batch, ``sinkhorn(scores.view(G, n, K))``.

    Parameters
    ----------
    scores : Tensor or ndarray, shape (N, K)
        The rows of every group, one group after another (any float dtype).
    ptr : Tensor, ndarray or list of int, shape (G + 1,)
        CSR offsets: ``ptr[0] == 0``, ``ptr[G] == N``, strictly increasing (an empty group is
        an error). From group sizes: ``torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])``.
        A tensor must be int32/int64 and on the scores' device.
    epsilon : float, default 0.05
        Entropic regularisation, as in :func:`~otlabel.sinkhorn`.
    prior : Tensor or ndarray, shape (N, K), optional
        The prior :math:`\hat Q` of every group, packed like ``scores`` (non-negative; no
        all-zero row; within each group no all-zero column).
    col_marginal : array-like, shape (K,) or (G, K), optional
        Class proportions shared by all groups, or one row per group (each summing to 1).
        Default: uniform.
    row_marginal : array-like, shape (N,), optional
        Row weights, packed like the rows; each group's slice sums to 1. Default: uniform
        within each group (every row sums to 1).
    n_iter, tol, max_iter, check_every
        As in :func:`~otlabel.sinkhorn`. In tolerance mode every group stops at the first
        check where its own column violation is at most ``tol``; the call returns when all
        groups have stopped (or at ``max_iter``, with a
        :class:`~otlabel.ConvergenceWarning` counting the groups that missed ``tol``).
    segments : {"auto", "torch", "torch_scatter"}, default "auto"
        How per-group sums and maxima are computed: plain PyTorch (a sparse CSR product) or
        torch-scatter's ``segment_csr`` (optional dependency, ``pip install torch-scatter``).
        ``"auto"`` uses plain PyTorch, as it measured faster, except that equal-size groups in
        fixed-iteration mode are labelled as one batched ``(G, N/G, K)`` problem, which needs
        no segment reductions at all (the same result; ``RaggedSinkhornResult.segments`` then
        says ``"dense"``).
    return_info : bool, default False
        Return a :class:`RaggedSinkhornResult` with per-group diagnostics.
    log_prior : bool, default False
        ``prior`` holds the log of the prior (-inf for a hard zero), as in
        :func:`~otlabel.sinkhorn_with_prior`.
    validate : {"auto", "host", "device"}, default "auto"
        As in :func:`~otlabel.sinkhorn` (device checks turn every label NaN on failure;
        equal-size groups then take the segment path, whose check needs no read-back).
    col_penalty, row_penalty, mass, col_bounds, init, acceleration
        As in :func:`~otlabel.sinkhorn`, per group: ``col_bounds`` are proportions of each
        group's rows, ``mass`` a fraction of each group's mass; ``init`` takes the
        ``log_row_scaling`` (N,) and ``log_col_scaling`` (G, K) or (K,) of a previous call.
    differentiable : bool, default False
        As in :func:`~otlabel.sinkhorn`, per group (``row_marginal``'s gradient follows its
        renormalisation within each group). The backward pads the groups to the largest one.
    output, top_k
        As in :func:`~otlabel.sinkhorn`: the plan, or per row its hard label or top-k entries
        (``"quotas"``: call :func:`~otlabel.hard_labels` on each group's labels instead).

    Returns
    -------
    Tensor, ndarray or RaggedSinkhornResult
        The (N, K) labels with the type, dtype and device of ``scores`` (no gradient).

    Raises
    ------
    InvalidArgumentError, ArgumentTypeError
        On bad input, naming the argument (``ptr`` included).
    BackendUnavailableError
        ``segments="torch_scatter"`` without torch-scatter installed.

    Examples
    --------
    >>> import torch
    >>> from otlabel import sinkhorn, sinkhorn_ragged
    >>> scores = torch.randn(7, 3, dtype=torch.float64)
    >>> ptr = torch.tensor([0, 3, 7])                       # groups of 3 and 4 rows
    >>> Q = sinkhorn_ragged(scores, ptr, epsilon=0.5, tol=1e-9)
    >>> torch.allclose(Q[3:], sinkhorn(scores[3:], epsilon=0.5, tol=1e-9))
    True
    >>> torch.allclose(Q[:3].sum(0), torch.ones(3, dtype=torch.float64))  # 3 rows / K = 3 per column
    True
    """
    return label_ragged(scores, ptr, prior, Options.of_call(locals()), segments)
