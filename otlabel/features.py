"""Labelling a whole data set from its embeddings: :func:`sinkhorn_features`.

The scores ``S = scale * X C^T`` of N features against K prototypes are never formed: every
iteration streams blocks of rows through the solver core's :class:`~otlabel._streamed.Streamed`
layout, and the answer comes back as the plan, hard labels or the top-k entries per row.
"""

from __future__ import annotations

from typing import Any

from ._checks import Array
from ._front import Streaming, label_features
from ._options import Options
from ._results import SinkhornResult
from ._streamed import DEFAULT_CHUNK_MEMORY, HardLabels, TopLabels

__all__ = ["HardLabels", "TopLabels", "sinkhorn_features"]


def sinkhorn_features(
    features: Array,
    prototypes: Array,
    epsilon: float = 0.05,
    *,
    scale: float = 1.0,
    normalize: bool = False,
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
    output: str = "plan",
    top_k: int = 1,
    chunk_rows: int | None = None,
    chunk_memory: int = DEFAULT_CHUNK_MEMORY,
) -> Array | HardLabels | TopLabels | SinkhornResult:
    r""":func:`~otlabel.sinkhorn` on the scores :math:`S = s\, X C^\top`, without ever holding them.

    The labels of N samples with features X (N x d) against K prototypes C (K x d) — SeLa's
    whole-data-set relabelling, balanced k-means, a DINO-size prototype layer — are the plan

    .. math::

        Q = \operatorname{diag}(u)\, \exp\!\bigl(s\, X C^\top / \varepsilon\bigr)\, \operatorname{diag}(v),

    exactly as :func:`~otlabel.sinkhorn` computes it from ``scale * X @ C.T`` (rows of X and C
    L2-normalised first with ``normalize=True``, as SwAV's and DINO's heads do), with every
    marginal option. The N x K scores are never formed: each iteration is one **pass** over
    blocks of ``chunk_rows`` rows that computes a block of scores (one matrix product), the row
    step, and the next column step's sums, then drops the block. The fixed-iteration mode makes
    ``n_iter + 1`` passes (plus one for the output, except hard labels); with a score range
    beyond a single shift (``|scale| |x| |c| / epsilon`` above ~30 in float32), two more for the
    per-row and per-column maxima; ``row_penalty`` and ``mass`` two passes per iteration.

    Memory: the inputs, O(N + K) vectors, and one block (``chunk_rows x K`` entries of the
    compute dtype, about three such blocks with temporaries) — with ``output="hard"`` or
    ``"topk"`` the answer is O(N) too. The plan (``output="plan"``) is N x K: ask for it only
    when it fits.

    Parameters
    ----------
    features : Tensor or ndarray, shape (N, d)
        One row per sample (float16/bfloat16/float32/float64; half precision is read block by
        block and computed in float32). A numpy input gives numpy outputs.
    prototypes : Tensor or ndarray, shape (K, d)
        One row per cluster or class, on the features' device. With a ``process_group`` the same
        on every rank (checked).
    epsilon : float, default 0.05
        As in :func:`~otlabel.sinkhorn`, for the scores ``scale * X C^T``.
    scale : float, default 1.0
        The scores' factor s (a cosine head's temperature: ``scale=1 / 0.1`` for SwAV's 0.1).
    normalize : bool, default False
        L2-normalise the rows of ``features`` and ``prototypes`` first (cosine scores); a row of
        zeros is then an error.
    col_marginal, row_marginal, n_iter, tol, max_iter, check_every, return_info, validate
        As in :func:`~otlabel.sinkhorn`.
    process_group : torch.distributed.ProcessGroup, optional
        Features sharded by rows over the ranks (any number per rank, zero included), prototypes
        replicated: equal to one process on all the rows; each pass all-reduces K column sums.
    col_penalty, row_penalty, mass, col_bounds, init, acceleration
        As in :func:`~otlabel.sinkhorn`.
    backend : {"auto", "torch", "triton"}, default "auto"
        Where each iteration's fused pass (row sums, row scalings and the next column sums) runs:
        ``"triton"``, one launch of a Triton kernel over all the rows that recomputes the scores
        tile by tile (float32 arithmetic; needs ``triton`` and CUDA tensors, else
        :class:`~otlabel.BackendUnavailableError`; float64 is refused); ``"torch"``, the loop over
        blocks; ``"auto"``, Triton for float32/float16/bfloat16 features on CUDA when triton is
        installed, else torch. Every other pass (maxima, the first and the exact column sums, the
        output) runs on the torch blocks either way, and the result's ``backend`` reads
        ``"triton"`` when the fused passes ran in the kernel. On Triton, half-precision features
        are multiplied on tensor cores with the prototypes (normalised first) rounded to the
        features' dtype, and every pass of the call uses those rounded prototypes: the labels are
        the torch path's for prototypes rounded to the features' precision (2**-9 relative per
        entry in bfloat16, 2**-12 in float16). The kernel and the blocks round float32 sums
        differently: a ``tol`` near float32's resolution may be met on one and not the other.
    output : {"plan", "hard", "topk", "quotas"}, default "plan"
        As in :func:`~otlabel.sinkhorn`: the plan (N, K), :class:`~otlabel.HardLabels` (per row
        the column of its largest entry, int64, and that entry), :class:`~otlabel.TopLabels`, or
        hard labels with exactly :func:`~otlabel.integer_quotas` rows per column (``"quotas"``:
        :func:`~otlabel.hard_labels`' greedy rule on the plan's log-entries, recomputed from the
        potentials block by block in O(N + K) memory, at most K + 1 passes over the rows not yet
        placed; not with ``process_group``).
    top_k : int, default 1
        Entries per row for ``output="topk"``.
    chunk_rows : int, optional
        Rows per block; by default as many as fit ``chunk_memory``.
    chunk_memory : int, default 8 MiB
        Bytes of one block of scores in the compute dtype, when ``chunk_rows`` is not given.

    Returns
    -------
    Tensor, ndarray, HardLabels, TopLabels or SinkhornResult
        As ``output`` asks, in the promoted dtype of the inputs (indices int64); with
        ``return_info`` a :class:`~otlabel.SinkhornResult` whose ``labels`` hold it and whose
        errors are those of the plan.

    Raises
    ------
    InvalidArgumentError, ArgumentTypeError
        On bad input, naming the argument: shapes (d must match), non-finite values, a zero row
        with ``normalize=True``, ``chunk_rows`` or ``chunk_memory`` below 1, ``top_k`` above K.

    Examples
    --------
    >>> import torch
    >>> from otlabel import sinkhorn, sinkhorn_features
    >>> features, prototypes = torch.randn(1000, 16, dtype=torch.float64), torch.randn(10, 16, dtype=torch.float64)
    >>> hard = sinkhorn_features(features, prototypes, 0.5, normalize=True, tol=1e-9, output="hard")
    >>> torch.bincount(hard.labels, minlength=10).tolist()  # about N/K = 100 each # doctest: +SKIP
    >>> scores = torch.nn.functional.normalize(features, dim=1) @ torch.nn.functional.normalize(prototypes, dim=1).T
    >>> plan = sinkhorn(scores, 0.5, tol=1e-9)
    >>> torch.equal(hard.labels, plan.argmax(1))
    True
    """
    options = Options.of_call(locals())
    return label_features(features, prototypes, options, Streaming(scale, normalize, chunk_rows, chunk_memory))
