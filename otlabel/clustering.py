"""Balanced k-means: :func:`balanced_kmeans`, Lloyd's algorithm with an optimal-transport assignment.

Every step streams blocks of rows: the assignment through :func:`~otlabel.sinkhorn_features`, the
rounding to exact cluster sizes, the centroid update (``index_add_``) and the k-means++ seeding,
so that nothing of size N x K or a second copy of the features is ever held.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._checks import FLOAT_DTYPES, Array, check_bool, check_int, check_marginal, real_number, to_tensor
from ._deferred import DeferredChecks
from ._numerics import compute_dtype
from ._streamed import DEFAULT_CHUNK_MEMORY, round_to_quotas, rows_per_block
from .errors import ArgumentTypeError, ConvergenceWarning, InvalidArgumentError
from .features import sinkhorn_features
from .labels import integer_quotas

__all__ = ["BalancedKMeans", "balanced_kmeans"]

INITS = ("k-means++", "random")

#: The first assignment solves a sequence of problems from this epsilon (relative) down to ``epsilon``.
FIRST_EPSILON = 1.0


@dataclass(frozen=True)
class BalancedKMeans:
    r"""The result of :func:`balanced_kmeans`.

    Tensors are on the features' device (numpy arrays for a numpy input).

    Attributes
    ----------
    centroids : Tensor or ndarray, shape (K, d)
        The cluster means of the final labels (unit vectors with ``normalize=True``), float64 for
        float64 features and float32 otherwise. An empty cluster keeps its previous centroid.
    labels : Tensor or ndarray, shape (N,), int64
        Each row's cluster.
    sizes : Tensor or ndarray, shape (K,), int64
        Rows per cluster (``bincount(labels)``); with ``exact=True`` exactly the quotas
        ``integer_quotas(col_marginal, N)``.
    inertia : float
        :math:`\sum_i \lVert x_i - c_{l_i} \rVert^2` for the final labels and centroids (of the
        normalised features with ``normalize=True``), the k-means objective.
    n_iter : int
        Assignments made (Lloyd iterations).
    converged : bool
        Whether an assignment repeated the previous one (the centroids are then a fixed point);
        False when ``n_iter`` ran out first.
    sinkhorn_iter : int
        Sinkhorn iterations over all the assignments (each is one pass over the features).
    """

    centroids: Array
    labels: Array
    sizes: Array
    inertia: float
    n_iter: int
    converged: bool
    sinkhorn_iter: int


def balanced_kmeans(
    features: Array,
    n_clusters: int,
    *,
    n_iter: int = 100,
    epsilon: float = 0.1,
    normalize: bool = False,
    col_marginal: Any = None,
    exact: bool = True,
    init: Any = "k-means++",
    generator: torch.Generator | None = None,
    sinkhorn_tol: float = 1e-2,
    sinkhorn_max_iter: int = 1000,
    chunk_rows: int | None = None,
    chunk_memory: int = DEFAULT_CHUNK_MEMORY,
) -> BalancedKMeans:
    r"""k-means whose clusters have prescribed sizes: Lloyd's algorithm with a balanced OT assignment.

    Plain k-means (Lloyd's algorithm) alternates assigning every sample to its nearest centroid
    and moving every centroid to the mean of its samples; nothing stops a cluster from growing at
    the expense of its neighbours. Here the assignment step is the entropic optimal-transport
    problem of :func:`~otlabel.sinkhorn` on the squared distances, with the cluster sizes as
    its column marginal (default: equal sizes, N/K each),

    .. math::

        Q = \operatorname*{arg\,min}_{Q \ge 0,\; Q \mathbf 1 = \mathbf 1,\; Q^\top \mathbf 1 = N c}
            \sum_{i,k} Q_{ik} \lVert x_i - c_k \rVert^2 + \varepsilon \sum_{i,k} Q_{ik} \log Q_{ik},

    solved by :func:`~otlabel.sinkhorn_features` without forming the N x K distances, then made
    hard: with ``exact=True`` every row goes to one cluster and cluster k receives exactly
    ``integer_quotas(col_marginal, N)[k]`` rows (below); with ``exact=False`` each row takes its
    largest entry (sizes close to, not equal to, the quotas). The update step is the mean of
    each cluster's rows, as in k-means. Iterations stop when an assignment repeats the previous
    one.

    **Dot products instead of distances.** Since
    :math:`-\lVert x - c\rVert^2 = 2\langle x, c\rangle - \lVert c\rVert^2 - \lVert x\rVert^2`,
    the negative squared distances are the scores :math:`2 X C^\top` plus a constant per row and a
    constant per column. A per-row constant multiplies a row of :math:`\exp(S/\varepsilon)` by a
    factor that the row scaling absorbs, and a per-column constant one that the column scaling
    absorbs: with both marginals fixed, the solution — and every label — is the same for
    :math:`S = 2 X C^\top` as for the distances. The assignment is therefore
    ``sinkhorn_features(features, centroids, epsilon, scale=2.0)`` in tolerance mode, one matrix
    product per block. (Only the solution of the balanced problem is blind to both terms: plain
    k-means' argmax and a relaxed column marginal see :math:`-\lVert c\rVert^2`, and a fixed
    number of iterations, whose first column step weighs the rows before any row scaling, sees
    :math:`-\lVert x\rVert^2`.) The scores are computed in float32 for float32 or half-precision
    features: data far from the origin compared to its spread loses digits to the cancellation
    in :math:`2\langle x, c\rangle - \lVert c\rVert^2`; centre such features first.

    **Exact sizes, streamed.** The rounding is :func:`~otlabel.hard_labels`' greedy rule on the
    plan :math:`Q_{ik} = \exp(f_i + 2\langle x_i, c_k\rangle/\varepsilon + g_k)`,
    recomputed block by block from the two potentials f (N) and g (K) instead of being held:
    every unplaced row proposes to its largest entry among the clusters with room left, and a
    cluster keeps its most confident proposers (largest :math:`Q_{ik}`) up to its room; the
    others propose again. Each round places at least one row and fills a cluster or places
    everyone, so there are at most K + 1 rounds (one or two in practice: the balanced plan's
    argmax is already nearly balanced), each a pass over the rows still unplaced. As every
    entry of an entropic plan is positive (the comparison is made on log-entries, which do not
    underflow), every row may go to every cluster and no row is ever left over; on a plan
    without underflowed zeros the labels are those of ``hard_labels(plan, col_marginal)``.

    **Empty clusters** (possible with ``exact=False``, or for a quota of zero) keep their previous
    centroid.

    **Units of epsilon.** ``epsilon`` is relative: the problem is solved with
    :math:`\varepsilon \sigma^2`, where :math:`\sigma^2 = \frac1N \sum_i \lVert x_i -
    \bar x\rVert^2` is the features' total variance, so that the labels do not change when the
    features are scaled. Smaller is sharper (closer to the unregularised balanced assignment),
    slower (Sinkhorn needs more iterations as epsilon shrinks) and was not measurably better
    at 0.03 on the data sets of ``benchmarks/bench_balanced_kmeans.py``; 0.3 already blurs the
    boundaries between overlapping clusters there.

    **The Sinkhorn solves.** Each assignment runs :func:`~otlabel.sinkhorn_features` in tolerance
    mode (``sinkhorn_tol``, loose by default: the rounding makes the sizes exact anyway) with
    Anderson acceleration. The first starts from nothing and solves a short sequence of problems,
    epsilon = 1, 1/3, 1/9, ... (relative) down to ``epsilon``, each started from the previous one's
    potentials (epsilon scaling: a problem with a small epsilon is slow to converge from a cold
    start when the centroids are far from the data's clusters). Every later one starts from the
    previous column potential g, shifted by the change of :math:`-\lVert c_k\rVert^2/\varepsilon`
    (the part of g that the dot-product scores move into it), which keeps the potential of the
    distances where it was; once the centroids settle it needs a few iterations.

    Memory: the features, O(N + K d) for the labels, potentials, centroids and their sums, and
    one block of ``chunk_rows`` rows at a time (``chunk_rows x max(K, d)`` entries).

    Parameters
    ----------
    features : Tensor or ndarray, shape (N, d)
        One row per sample (float16/bfloat16/float32/float64; half precision is read block by
        block and computed in float32). A numpy input gives numpy outputs.
    n_clusters : int
        K, between 1 and N.
    n_iter : int, default 100
        The most assignments (Lloyd iterations) to make.
    epsilon : float, default 0.1
        Entropic regularisation, relative to the features' total variance (above); > 0.
    normalize : bool, default False
        Spherical k-means: L2-normalise the rows of ``features`` (block by block, never stored)
        and keep the centroids unit vectors (the normalised means); the cost is then
        :math:`\lVert \hat x - \hat c \rVert^2 = 2 - 2 \cos(x, c)`. A row of zeros is an error.
    col_marginal : array-like, shape (K,), optional
        The cluster proportions c: non-negative, summing to 1. Default: uniform.
    exact : bool, default True
        Give cluster k exactly ``integer_quotas(col_marginal, N)[k]`` rows (above); False: each
        row takes its largest plan entry.
    init : {"k-means++", "random"} or Tensor or ndarray, shape (K, d), default "k-means++"
        The first centroids: k-means++ seeding (each new centroid a row drawn with probability
        proportional to its squared distance to the nearest centroid so far, one candidate per
        draw), K distinct rows drawn uniformly, or the centroids themselves.
    generator : torch.Generator, optional
        The random draws of the seeding (on the generator's device); default: torch's global
        generator. The same generator state gives the same result.
    sinkhorn_tol : float, default 1e-2
        Each assignment's tolerance on the column marginal (``tol`` of
        :func:`~otlabel.sinkhorn_features`): its relative error on the cluster sizes with
        ``exact=False``; ``exact=True`` makes the sizes exact anyway.
    sinkhorn_max_iter : int, default 1000
        Each assignment's Sinkhorn budget (``max_iter``); running out warns with
        :class:`~otlabel.ConvergenceWarning` and the assignment goes on with the plan reached.
    chunk_rows : int, optional
        Rows per block; by default as many as fit ``chunk_memory``.
    chunk_memory : int, default 8 MiB
        Bytes of one block (``chunk_rows x max(K, d)`` entries of the compute dtype), when
        ``chunk_rows`` is not given.

    Returns
    -------
    BalancedKMeans
        The centroids, labels, cluster sizes, inertia and iteration counts.

    Raises
    ------
    InvalidArgumentError, ArgumentTypeError
        Before any work, naming the argument: ``features`` not a 2-D floating-point array, with
        no rows or columns, NaN or infinite values, or a zero row with ``normalize=True``;
        ``n_clusters`` outside 1..N; ``n_iter``, ``sinkhorn_max_iter``, ``chunk_rows`` or
        ``chunk_memory`` below 1; ``epsilon`` or ``sinkhorn_tol`` not a positive number; a
        ``col_marginal`` of the wrong length, with negative entries or not summing to 1; an
        unknown ``init`` string or ``init`` centroids of the wrong shape or with bad values.

    Examples
    --------
    >>> import torch
    >>> from otlabel import balanced_kmeans
    >>> g = torch.Generator().manual_seed(0)
    >>> centres = 10 * torch.randn(4, 8, generator=g)
    >>> features = centres.repeat_interleave(250, dim=0) + torch.randn(1000, 8, generator=g)
    >>> result = balanced_kmeans(features, 4, generator=g)
    >>> result.sizes.tolist()
    [250, 250, 250, 250]
    >>> result.converged
    True
    """
    x, was_numpy = to_tensor(features, "features")
    setup = _check(x, n_clusters, n_iter, epsilon, normalize, col_marginal, exact, init, generator)
    tol = real_number(sinkhorn_tol, f"sinkhorn_tol must be a real number, got {type(sinkhorn_tol).__name__}")
    if not (math.isfinite(tol) and tol > 0):
        raise InvalidArgumentError(f"sinkhorn_tol must be a positive finite number, got {sinkhorn_tol!r}")
    max_iter = check_int(sinkhorn_max_iter, "sinkhorn_max_iter", 1)
    rows = rows_per_block(max(n_clusters, x.shape[1]), compute_dtype(x.dtype), chunk_rows, chunk_memory)
    _check_values(x, setup, rows)
    result = _fit(x, setup, tol, max_iter, rows, chunk_memory)
    if was_numpy:
        result = BalancedKMeans(
            result.centroids.numpy(),
            result.labels.numpy(),
            result.sizes.numpy(),
            result.inertia,
            result.n_iter,
            result.converged,
            result.sinkhorn_iter,
        )
    return result


@dataclass
class _Setup:
    """The checked arguments of one call."""

    n_clusters: int
    n_iter: int
    epsilon: float
    normalize: bool
    col_marginal: torch.Tensor | None  # (K,) float64, summing to 1
    exact: bool
    init: Any  # an INITS string or a (K, d) tensor
    generator: torch.Generator | None
    dtype: torch.dtype  # centroids and scores


def _check(
    x: torch.Tensor,
    n_clusters: Any,
    n_iter: Any,
    epsilon: Any,
    normalize: Any,
    col_marginal: Any,
    exact: Any,
    init: Any,
    generator: Any,
) -> _Setup:
    """The checks that need no pass over the features."""
    if x.dtype not in FLOAT_DTYPES:
        raise ArgumentTypeError(
            f"features must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}"
        )
    if x.dim() != 2:
        raise InvalidArgumentError(f"features must have shape (N, d), got {x.dim()} dimension(s) {tuple(x.shape)}")
    n_rows, dim = x.shape
    if n_rows == 0 or dim == 0:
        raise InvalidArgumentError(f"features must have at least one row and one column, got shape {tuple(x.shape)}")
    k = check_int(n_clusters, "n_clusters", 1)
    if k > n_rows:
        raise InvalidArgumentError(f"n_clusters must be at most the number of rows N = {n_rows}, got {k}")
    iterations = check_int(n_iter, "n_iter", 1)
    eps = real_number(epsilon, f"epsilon must be a real number, got {type(epsilon).__name__}")
    if not (math.isfinite(eps) and eps > 0):
        raise InvalidArgumentError(f"epsilon must be a positive finite number, got {epsilon!r}")
    spherical = check_bool(normalize, "normalize")
    exact_sizes = check_bool(exact, "exact")
    marginal = None
    if col_marginal is not None:
        checks = DeferredChecks()
        shape = tuple(col_marginal.shape) if isinstance(col_marginal, torch.Tensor) else np.shape(col_marginal)
        if shape != (k,):
            raise InvalidArgumentError(f"col_marginal must have shape (n_clusters,) = ({k},), got {shape}")
        marginal = check_marginal(col_marginal, "col_marginal", k, "n_clusters", 1, False, x, torch.float64, checks)[0]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if isinstance(init, str):
        if init not in INITS:
            raise InvalidArgumentError(f"init must be one of {INITS} or a (K, d) array of centroids, got {init!r}")
    elif isinstance(init, (torch.Tensor, np.ndarray)):
        centroids, _ = to_tensor(init, "init")
        if tuple(centroids.shape) != (k, dim):
            raise InvalidArgumentError(
                f"init centroids must have shape (n_clusters, d) = ({k}, {dim}), got {tuple(centroids.shape)}"
            )
        if isinstance(init, torch.Tensor) and init.device != x.device:
            raise InvalidArgumentError(f"init is on device {init.device} but features are on {x.device}")
        centroids = centroids.detach().to(device=x.device, dtype=dtype).clone()
        if not bool(torch.isfinite(centroids).all()):
            raise InvalidArgumentError("init contains NaN or infinite values")
        if spherical and bool((torch.linalg.vector_norm(centroids, dim=1) == 0).any()):
            raise InvalidArgumentError("init has a row of zeros, which normalize=True cannot normalise")
        init = centroids
    else:
        raise ArgumentTypeError(
            f"init must be one of {INITS} or a (K, d) torch.Tensor or numpy.ndarray, got {type(init).__name__}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return _Setup(k, iterations, eps, spherical, marginal, exact_sizes, init, generator, dtype)


def _blocks(x: torch.Tensor, rows: int, dtype: torch.dtype, normalize: bool) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, block) over the rows of ``x``, each block in ``dtype`` (normalised rows with ``normalize``)."""
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows].to(dtype)
        yield start, torch.nn.functional.normalize(block, dim=1) if normalize else block


def _check_values(x: torch.Tensor, setup: _Setup, rows: int) -> None:
    """Finite features (and no zero row with ``normalize``), by blocks."""
    for start, block in _blocks(x, rows, setup.dtype, False):
        if not bool(torch.isfinite(block).all()):
            raise InvalidArgumentError("features contains NaN or infinite values")
        if setup.normalize:
            zero = torch.linalg.vector_norm(block, dim=1) == 0
            if bool(zero.any()):
                row = start + int(zero.nonzero()[0, 0])
                raise InvalidArgumentError(f"features row {row} is all zeros, which normalize=True cannot normalise")


def _fit(
    x: torch.Tensor,
    setup: _Setup,
    tol: float,
    max_iter: int,
    rows: int,
    chunk_memory: int,
    *,
    warm_start: bool = True,
    acceleration: str | None = "anderson",
    first_epsilon: float = FIRST_EPSILON,
) -> BalancedKMeans:
    """Lloyd's iterations with a balanced assignment (the body of :func:`balanced_kmeans`)."""
    k, dtype, normalize = setup.n_clusters, setup.dtype, setup.normalize
    with torch.no_grad():
        variance = _total_variance(x, rows, dtype, normalize)
        epsilon = setup.epsilon * variance
        centroids = setup.init if isinstance(setup.init, torch.Tensor) else _seed(x, setup, rows)
        if normalize:
            centroids = torch.nn.functional.normalize(centroids, dim=1)
        marginal = setup.col_marginal
        uniform = torch.full((k,), 1.0 / k, dtype=torch.float64, device=x.device)
        quotas = integer_quotas(uniform if marginal is None else marginal, x.shape[0]).to(x.device)

        def solve(eps: float, init: torch.Tensor | None, final: bool) -> Any:
            # a stage of the epsilon schedule only prepares the next one's start: no warning; a
            # final assignment that runs out warns in this function's own terms
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                solved = sinkhorn_features(
                    x,
                    centroids,
                    eps,
                    scale=2.0,
                    normalize=normalize,
                    col_marginal=marginal,
                    tol=tol,
                    max_iter=max_iter,
                    output="hard",
                    return_info=True,
                    init=init,
                    acceleration=acceleration,
                    chunk_rows=rows,
                    chunk_memory=chunk_memory,
                )
            if final and solved.converged is False:
                warnings.warn(
                    f"balanced_kmeans: an assignment's Sinkhorn iterations did not reach sinkhorn_tol={tol:g} within "
                    f"sinkhorn_max_iter={max_iter} (column error {solved.col_error:.3g}); it goes on with the plan "
                    "reached: raise sinkhorn_max_iter or epsilon, or loosen sinkhorn_tol",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            return solved

        col_potential = None
        previous = None
        converged = False
        sinkhorn_iter = 0
        assignments = 0
        while assignments < setup.n_iter:
            assignments += 1
            if col_potential is None:  # from scratch: epsilon scaling, from first_epsilon down by 3 per stage
                stage = max(epsilon, first_epsilon * variance)
                while stage > epsilon:
                    solved = solve(stage, col_potential, False)
                    sinkhorn_iter += solved.n_iter
                    nxt = max(epsilon, stage / 3)
                    col_potential = solved.log_col_scaling.reshape(-1) * (stage / nxt)
                    stage = nxt
            solved = solve(epsilon, col_potential, True)
            sinkhorn_iter += solved.n_iter
            col_potential = solved.log_col_scaling.reshape(-1)
            if setup.exact:
                coef = 2.0 / epsilon
                labels, _ = round_to_quotas(
                    x, centroids, coef, solved.log_row_scaling.reshape(-1), col_potential, quotas, rows, normalize
                )
            else:
                labels = solved.labels.labels
            if previous is not None and torch.equal(labels, previous):
                converged = True
                break
            moved = _update(x, labels, centroids, rows, normalize)
            if warm_start:
                # g_k = phi_k - |c_k|^2 / eps: keep the potential phi of the distances as the centroids move
                col_potential = (
                    col_potential
                    + (_squared_norms(centroids) - _squared_norms(moved)).to(col_potential.dtype) / epsilon
                )
            else:
                col_potential = None
            centroids = moved
            previous = labels
        sizes = torch.bincount(labels, minlength=k)
        inertia = _inertia(x, labels, centroids, rows, normalize)
    return BalancedKMeans(centroids, labels, sizes, inertia, assignments, converged, sinkhorn_iter)


def _squared_norms(centroids: torch.Tensor) -> torch.Tensor:
    return centroids.to(torch.float64 if centroids.dtype == torch.float64 else torch.float32).pow(2).sum(1)


def _accumulator(device: torch.device) -> torch.dtype:
    """float64 sums, except on devices without float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _total_variance(x: torch.Tensor, rows: int, dtype: torch.dtype, normalize: bool) -> float:
    """(1/N) sum_i |x_i - mean|^2, by blocks (two passes: the mean, then the deviations)."""
    acc = _accumulator(x.device)
    total = torch.zeros(x.shape[1], dtype=acc, device=x.device)
    for _, block in _blocks(x, rows, dtype, normalize):
        total += block.to(acc).sum(0)
    mean = total / x.shape[0]
    spread = torch.zeros((), dtype=acc, device=x.device)
    for _, block in _blocks(x, rows, dtype, normalize):
        spread += (block.to(acc) - mean).pow(2).sum()
    variance = float(spread) / x.shape[0]
    return variance if variance > 0 else 1.0  # identical rows: every assignment costs the same


def _draw(generator: torch.Generator | None) -> float:
    """A uniform number in [0, 1) from ``generator`` (or torch's global generator)."""
    device = generator.device if generator is not None else "cpu"
    return float(torch.rand((), generator=generator, dtype=torch.float64, device=device))


def _seed(x: torch.Tensor, setup: _Setup, rows: int) -> torch.Tensor:
    """The first centroids: k-means++ or distinct uniformly drawn rows."""
    n_rows, k, generator = x.shape[0], setup.n_clusters, setup.generator
    device = generator.device if generator is not None else "cpu"
    if setup.init == "random":
        chosen = torch.randperm(n_rows, generator=generator, device=device)[:k].to(x.device)
        picked = x[chosen].to(setup.dtype)
        return torch.nn.functional.normalize(picked, dim=1) if setup.normalize else picked
    acc = _accumulator(x.device)
    centroids = torch.empty(k, x.shape[1], dtype=setup.dtype, device=x.device)
    first = min(int(_draw(generator) * n_rows), n_rows - 1)
    centroids[0] = _row(x, first, setup)
    nearest = torch.empty(n_rows, dtype=acc, device=x.device)  # squared distance to the nearest centroid
    for start, block in _blocks(x, rows, setup.dtype, setup.normalize):
        nearest[start : start + block.shape[0]] = (block - centroids[0]).pow(2).sum(1).to(acc)
    for j in range(1, k):
        cumulative = torch.cumsum(nearest, 0)
        total = float(cumulative[-1])
        if total > 0:
            target = torch.tensor(_draw(generator) * total, dtype=acc, device=x.device)
            index = min(int(torch.searchsorted(cumulative, target, right=True)), n_rows - 1)
        else:  # every row sits on a centroid already (fewer distinct rows than clusters)
            index = min(int(_draw(generator) * n_rows), n_rows - 1)
        centroids[j] = _row(x, index, setup)
        if j < k - 1:
            for start, block in _blocks(x, rows, setup.dtype, setup.normalize):
                part = nearest[start : start + block.shape[0]]
                torch.minimum(part, (block - centroids[j]).pow(2).sum(1).to(acc), out=part)
    return centroids


def _row(x: torch.Tensor, index: int, setup: _Setup) -> torch.Tensor:
    row = x[index].to(setup.dtype)
    return torch.nn.functional.normalize(row, dim=0) if setup.normalize else row


def _update(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, rows: int, normalize: bool) -> torch.Tensor:
    """The mean of each cluster's rows (normalised with ``normalize``); an empty cluster keeps its centroid."""
    acc = _accumulator(x.device)
    sums = torch.zeros(centroids.shape, dtype=acc, device=x.device)
    for start, block in _blocks(x, rows, centroids.dtype, normalize):
        sums.index_add_(0, labels[start : start + block.shape[0]], block.to(acc))
    counts = torch.bincount(labels, minlength=centroids.shape[0]).unsqueeze(1)
    means = (sums / counts.clamp(min=1)).to(centroids.dtype)
    if normalize:
        norms = torch.linalg.vector_norm(means, dim=1, keepdim=True)
        keep = (counts == 0) | (norms == 0)  # rows that cancel out keep their centroid too
        return torch.where(keep, centroids, means / norms.clamp(min=torch.finfo(means.dtype).tiny))
    return torch.where(counts == 0, centroids, means)


def _inertia(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, rows: int, normalize: bool) -> float:
    acc = _accumulator(x.device)
    total = torch.zeros((), dtype=acc, device=x.device)
    for start, block in _blocks(x, rows, centroids.dtype, normalize):
        total += (block - centroids[labels[start : start + block.shape[0]]]).pow(2).sum().to(acc)
    return float(total)
