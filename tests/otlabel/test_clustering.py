"""balanced_kmeans: Lloyd's algorithm with a streamed balanced optimal-transport assignment."""

from __future__ import annotations

import doctest
import math
import sys

import numpy as np
import pytest
import torch

import otlabel
from otlabel import (
    ArgumentTypeError,
    BalancedKMeans,
    InvalidArgumentError,
    balanced_kmeans,
    hard_labels,
    integer_quotas,
    sinkhorn,
    sinkhorn_features,
)
from otlabel import clustering as _clustering
from otlabel._streamed import round_to_quotas


def _blobs(
    n_clusters: int, per_cluster: int, dim: int, seed: int, spread: float = 6.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated isotropic Gaussian clusters of equal size (float64), and their true labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(n_clusters, dim, generator=generator, dtype=torch.float64)
    truth = torch.arange(n_clusters).repeat_interleave(per_cluster)
    features = centres[truth] + torch.randn(truth.numel(), dim, generator=generator, dtype=torch.float64)
    return features, truth


def _matched_accuracy(truth: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> float:
    """Accuracy after matching the clusters to the true classes (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    confusion = np.zeros((n_clusters, n_clusters), dtype=np.int64)
    np.add.at(confusion, (truth.numpy(), labels.numpy()), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return confusion[rows, cols].sum() / truth.numel()


@pytest.mark.parametrize("seed", range(3))
def test_recovers_balanced_clusters(seed: int) -> None:
    features, truth = _blobs(6, 100, 8, seed)
    result = balanced_kmeans(features, 6, generator=torch.Generator().manual_seed(seed))
    assert isinstance(result, BalancedKMeans)
    assert _matched_accuracy(truth, result.labels, 6) == 1.0
    assert result.sizes.tolist() == [100] * 6
    assert result.converged and result.n_iter <= 10
    assert result.centroids.shape == (6, 8) and result.centroids.dtype == torch.float64
    # the centroids are the means of the final clusters, and the inertia is theirs
    for k in range(6):
        torch.testing.assert_close(result.centroids[k], features[result.labels == k].mean(0))
    expected = float((features - result.centroids[result.labels]).pow(2).sum())
    assert result.inertia == pytest.approx(expected, rel=1e-12)


def test_sizes_are_the_integer_quotas() -> None:
    features, _ = _blobs(4, 101, 5, 0, spread=1.0)  # overlapping clusters, N = 404 not a multiple of 3
    result = balanced_kmeans(features, 3, generator=torch.Generator().manual_seed(0))
    assert result.sizes.tolist() == integer_quotas(torch.full((3,), 1 / 3), 404).tolist() == [135, 135, 134]
    marginal = [0.1, 0.2, 0.3, 0.4]
    result = balanced_kmeans(features, 4, col_marginal=marginal, generator=torch.Generator().manual_seed(0))
    assert result.sizes.tolist() == integer_quotas(torch.tensor(marginal, dtype=torch.float64), 404).tolist()
    assert torch.equal(result.sizes, torch.bincount(result.labels, minlength=4))


def test_argmax_sizes_are_within_a_few_percent() -> None:
    """exact=False: the labels are the plan's argmax; on uniform data (no clusters at all) the sizes
    stay within 5 % of N/K (sinkhorn_tol 1e-2 on the plan's column sums, plus the argmax's rounding)."""
    features = torch.rand(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = balanced_kmeans(features, 8, exact=False, generator=torch.Generator().manual_seed(0))
    assert (result.sizes - 250).abs().max().item() <= 0.05 * 250
    exact = balanced_kmeans(features, 8, generator=torch.Generator().manual_seed(0))
    assert exact.sizes.tolist() == [250] * 8


def test_deterministic_for_a_fixed_generator() -> None:
    features, _ = _blobs(5, 60, 4, 1, spread=1.5)
    for init in ("k-means++", "random"):
        first = balanced_kmeans(features, 5, init=init, generator=torch.Generator().manual_seed(7))
        second = balanced_kmeans(features, 5, init=init, generator=torch.Generator().manual_seed(7))
        assert torch.equal(first.labels, second.labels) and torch.equal(first.centroids, second.centroids)
    other = balanced_kmeans(features, 5, init="random", generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other.centroids, first.centroids)


def test_block_size_does_not_change_the_result() -> None:
    features, _ = _blobs(5, 60, 4, 2, spread=1.5)
    init = features[:5].clone()
    whole = balanced_kmeans(features, 5, init=init)
    blocks = balanced_kmeans(features, 5, init=init, chunk_rows=37)
    assert torch.equal(whole.labels, blocks.labels)
    torch.testing.assert_close(whole.centroids, blocks.centroids)


def test_dot_products_give_the_squared_distance_plan() -> None:
    """-|x - c|^2 = 2<x, c> - |c|^2 - |x|^2: with both marginals fixed, the per-row and per-column
    terms are absorbed by the scalings, so the solution for 2 X C^T is that for the negative squared
    distances. A fixed number of iterations absorbs the column term exactly, but not the row term
    (its first column step weighs the rows before any row scaling)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(300, 6, generator=generator, dtype=torch.float64) + 2.0
    centroids = 1.5 * torch.randn(7, 6, generator=generator, dtype=torch.float64)
    distances = -torch.cdist(features, centroids).pow(2)
    dots = 2 * features @ centroids.T
    plan_distances = sinkhorn(distances, 2.0, tol=1e-12, max_iter=10_000)
    plan_dots = sinkhorn(dots, 2.0, tol=1e-12, max_iter=10_000)
    torch.testing.assert_close(plan_dots, plan_distances, rtol=1e-8, atol=1e-10)
    assert torch.equal(plan_dots.argmax(1), plan_distances.argmax(1))
    streamed = sinkhorn_features(features, centroids, 2.0, scale=2.0, tol=1e-12, max_iter=10_000, output="hard")
    assert torch.equal(streamed.labels, plan_distances.argmax(1))
    # without the balance constraint the -|c|^2 term matters: nearest centroid != largest dot product
    assert not torch.equal(dots.argmax(1), distances.argmax(1))
    # fixed iterations: the column term is absorbed exactly, the row term is not
    column_term = dots - centroids.pow(2).sum(1)
    torch.testing.assert_close(sinkhorn(dots, 2.0, n_iter=5), sinkhorn(column_term, 2.0, n_iter=5))
    assert not torch.allclose(sinkhorn(dots, 2.0, n_iter=5), sinkhorn(distances, 2.0, n_iter=5), atol=1e-3)


def test_exact_rounding_is_hard_labels_of_the_plan() -> None:
    """The streamed rounding (plan entries recomputed from the potentials, block by block) gives the
    labels of hard_labels on the dense plan, with the same integer quotas."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(503, 5, generator=generator, dtype=torch.float64)
    centroids = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    marginal = torch.softmax(torch.randn(6, generator=generator, dtype=torch.float64), 0)
    epsilon = 0.5
    solved = sinkhorn_features(
        features, centroids, epsilon, scale=2.0, col_marginal=marginal, tol=1e-3, output="plan", return_info=True
    )
    quotas = integer_quotas(marginal, 503)
    labels, _ = round_to_quotas(
        features,
        centroids,
        2.0 / epsilon,
        solved.log_row_scaling.reshape(-1),
        solved.log_col_scaling.reshape(-1),
        quotas,
        50,
        False,
    )
    assert torch.equal(torch.bincount(labels, minlength=6), quotas)
    assert not torch.equal(labels, solved.labels.argmax(1))  # the rounding had work to do
    assert torch.equal(labels, hard_labels(solved.labels, marginal, one_hot=False))


def test_empty_cluster_keeps_its_centroid() -> None:
    features, _ = _blobs(3, 40, 4, 4)
    init = features[[0, 40, 80]].clone()
    result = balanced_kmeans(features, 3, init=init, col_marginal=[0.5, 0.5, 0.0])  # a quota of zero
    assert result.sizes.tolist() == [60, 60, 0]
    assert torch.equal(result.centroids[2], init[2])
    # the update itself: a cluster without rows keeps its centroid, the others move to their means
    labels = torch.zeros(120, dtype=torch.int64)
    labels[60:] = 1
    moved = _clustering._update(features, labels, init, 16, False)
    assert torch.equal(moved[2], init[2])
    torch.testing.assert_close(moved[0], features[:60].mean(0))


def test_spherical_kmeans() -> None:
    generator = torch.Generator().manual_seed(5)
    truth = torch.arange(4).repeat_interleave(50)
    directions = 4 * torch.eye(6, dtype=torch.float64)[:4]  # orthogonal cluster directions
    features = directions[truth] + torch.randn(200, 6, generator=generator, dtype=torch.float64)
    features *= torch.rand(200, 1, generator=generator, dtype=torch.float64) * 10 + 0.1  # norms play no part
    result = balanced_kmeans(features, 4, normalize=True, generator=torch.Generator().manual_seed(0))
    assert _matched_accuracy(truth, result.labels, 4) == 1.0
    torch.testing.assert_close(torch.linalg.vector_norm(result.centroids, dim=1), torch.ones(4, dtype=torch.float64))


def test_numpy_and_half_precision_inputs() -> None:
    features, truth = _blobs(3, 50, 4, 6)
    result = balanced_kmeans(features.numpy(), 3, generator=torch.Generator().manual_seed(0))
    assert isinstance(result.labels, np.ndarray) and isinstance(result.centroids, np.ndarray)
    assert result.sizes.tolist() == [50, 50, 50]
    half = balanced_kmeans(features.to(torch.bfloat16), 3, generator=torch.Generator().manual_seed(0))
    assert half.centroids.dtype == torch.float32 and half.sizes.tolist() == [50, 50, 50]
    assert _matched_accuracy(truth, half.labels, 3) == 1.0


def test_one_cluster_and_one_row_per_cluster() -> None:
    features = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    single = balanced_kmeans(features, 1)
    assert single.sizes.tolist() == [20]
    torch.testing.assert_close(single.centroids[0], features.mean(0))
    every = balanced_kmeans(features, 20)
    assert every.sizes.tolist() == [1] * 20 and every.inertia == pytest.approx(0.0, abs=1e-9)
    same = balanced_kmeans(torch.ones(12, 2), 3)  # identical rows: any balanced split
    assert same.sizes.tolist() == [4, 4, 4]


_FEATURES = torch.randn(10, 3)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"n_clusters": 0}, InvalidArgumentError, "n_clusters must be >= 1"),
        ({"n_clusters": 11}, InvalidArgumentError, "n_clusters must be at most the number of rows N = 10"),
        ({"n_clusters": 2.0}, ArgumentTypeError, "n_clusters must be an integer"),
        ({"n_clusters": True}, ArgumentTypeError, "n_clusters must be an integer"),
        ({"n_iter": 0}, InvalidArgumentError, "n_iter must be >= 1"),
        ({"n_iter": None}, ArgumentTypeError, "n_iter must be an integer"),
        ({"epsilon": 0.0}, InvalidArgumentError, "epsilon must be a positive finite number"),
        ({"epsilon": math.nan}, InvalidArgumentError, "epsilon must be a positive finite number"),
        ({"epsilon": "0.1"}, ArgumentTypeError, "epsilon must be a real number"),
        ({"features": torch.ones(10)}, InvalidArgumentError, "features must have shape \\(N, d\\)"),
        ({"features": torch.ones(0, 3)}, InvalidArgumentError, "features must have at least one row"),
        ({"features": torch.ones(10, 3, dtype=torch.int64)}, ArgumentTypeError, "features must be a floating"),
        ({"features": [[1.0, 2.0]]}, ArgumentTypeError, "features must be a torch.Tensor or a numpy.ndarray"),
        ({"features": _FEATURES.clone().index_fill_(0, torch.tensor([4]), math.nan)}, InvalidArgumentError, "NaN"),
        ({"features": _FEATURES.clone().index_fill_(0, torch.tensor([4]), math.inf)}, InvalidArgumentError, "NaN"),
        (
            {"features": _FEATURES.clone().index_fill_(0, torch.tensor([4]), 0.0), "normalize": True},
            InvalidArgumentError,
            "features row 4 is all zeros",
        ),
        ({"normalize": 1}, ArgumentTypeError, "normalize must be a bool"),
        ({"exact": "yes"}, ArgumentTypeError, "exact must be a bool"),
        ({"col_marginal": [0.5, 0.5]}, InvalidArgumentError, "col_marginal must have shape \\(n_clusters,\\)"),
        ({"col_marginal": [1.5, -0.5, 0.0]}, InvalidArgumentError, "col_marginal has negative entries"),
        ({"col_marginal": [0.5, 0.4, 0.0]}, InvalidArgumentError, "col_marginal"),
        ({"init": "kmeans"}, InvalidArgumentError, "init must be one of"),
        ({"init": torch.zeros(2, 3)}, InvalidArgumentError, "init centroids must have shape \\(n_clusters, d\\)"),
        ({"init": torch.full((3, 3), math.nan)}, InvalidArgumentError, "init contains NaN"),
        ({"init": [[0.0] * 3] * 3}, ArgumentTypeError, "init must be one of"),
        ({"init": torch.zeros(3, 3), "normalize": True}, InvalidArgumentError, "init has a row of zeros"),
        ({"generator": 0}, ArgumentTypeError, "generator must be a torch.Generator"),
        ({"sinkhorn_tol": 0.0}, InvalidArgumentError, "sinkhorn_tol must be a positive"),
        ({"sinkhorn_max_iter": 0}, InvalidArgumentError, "sinkhorn_max_iter must be >= 1"),
        ({"chunk_rows": 0}, InvalidArgumentError, "chunk_rows must be >= 1"),
        ({"chunk_memory": 0}, InvalidArgumentError, "chunk_memory must be >= 1"),
    ],
)
def test_bad_arguments_are_named(overrides: dict, error: type, match: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checks must run before any work")

    monkeypatch.setattr(_clustering, "_fit", no_work)
    arguments = {"features": _FEATURES, "n_clusters": 3, **overrides}
    with pytest.raises(error, match=match):
        balanced_kmeans(arguments.pop("features"), arguments.pop("n_clusters"), **arguments)


def test_docstring_example_runs() -> None:
    result = doctest.testmod(sys.modules["otlabel.clustering"], optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
    assert otlabel.balanced_kmeans is balanced_kmeans and "balanced_kmeans" in otlabel.__all__


def test_an_assignment_that_runs_out_warns_in_balanced_kmeans_terms() -> None:
    """The warning names balanced_kmeans' own settings (sinkhorn_tol, sinkhorn_max_iter), once per
    final assignment that ran out, and none for the epsilon schedule's preparatory stages."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(300, 4, generator=generator, dtype=torch.float64)
    with pytest.warns(otlabel.ConvergenceWarning, match=r"sinkhorn_tol=1e-12 within sinkhorn_max_iter=2") as caught:
        otlabel.balanced_kmeans(
            features, 5, n_iter=2, sinkhorn_tol=1e-12, sinkhorn_max_iter=2, generator=torch.Generator().manual_seed(1)
        )
    assert all("balanced_kmeans" in str(w.message) for w in caught if w.category is otlabel.ConvergenceWarning)
