"""gaussian_rank_prior (CASE Eq. 11), fractional_ranks, foreground_marginal (CASE Eq. 13)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from otlabel import (
    ArgumentTypeError,
    InvalidArgumentError,
    foreground_marginal,
    fractional_ranks,
    gaussian_rank_prior,
    sinkhorn,
    sinkhorn_with_prior,
)


def test_fractional_ranks_by_hand():
    ranks = fractional_ranks(torch.tensor([0.3, 0.1, 0.3, 0.9, 0.3], dtype=torch.float64))
    # sorted: 0.1 (1), 0.3 0.3 0.3 (2, 3, 4 -> 3), 0.9 (5); divided by N = 5
    torch.testing.assert_close(ranks, torch.tensor([0.6, 0.2, 0.6, 1.0, 0.6], dtype=torch.float64))


def test_fractional_ranks_are_ranks_not_the_argsort_permutation():
    values = torch.tensor([0.5, 0.9, 0.1, 0.7])
    ranks = fractional_ranks(values)
    permutation = torch.argsort(values).float()  # what the official code uses
    torch.testing.assert_close(ranks, torch.tensor([2, 4, 1, 3]) / 4.0)
    assert not torch.allclose(ranks, (permutation + 1) / 4)


def test_fractional_ranks_batched_and_numpy():
    values = np.random.default_rng(0).random((3, 7))
    ranks = fractional_ranks(values)
    assert isinstance(ranks, np.ndarray)
    for row, rank in zip(values, ranks, strict=True):
        np.testing.assert_allclose(rank, (np.argsort(np.argsort(row)) + 1) / 7)


def test_gaussian_rank_prior_formula():
    fg = torch.tensor([0.8, 0.2, 0.5], dtype=torch.float64)
    levels = torch.tensor([0.1, 0.9], dtype=torch.float64)
    sigma = 0.4
    prior = gaussian_rank_prior(fg, levels, sigma)
    ranks = torch.tensor([3, 1, 2], dtype=torch.float64) / 3
    expected = torch.exp(-((ranks[:, None] - levels[None]) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    torch.testing.assert_close(prior, expected / expected.sum())


def test_paper_sigma_makes_the_prior_nearly_flat():
    prior = gaussian_rank_prior(torch.rand(500), torch.linspace(0, 1, 16), sigma=10.0)
    assert prior.max() / prior.min() < 1.006
    steep = gaussian_rank_prior(torch.rand(500), torch.linspace(0, 1, 16), sigma=0.1)
    assert steep.max() / steep.min() > 1e10


def test_prior_pulls_foreground_snippets_to_foreground_clusters():
    generator = torch.Generator().manual_seed(0)
    fg = torch.rand(400, generator=generator, dtype=torch.float64)
    prior = gaussian_rank_prior(fg, torch.tensor([0.0, 1.0], dtype=torch.float64), sigma=0.2)
    labels = sinkhorn_with_prior(torch.zeros(400, 2, dtype=torch.float64), prior, 0.05, tol=1e-10)
    top, bottom = fg > fg.median(), fg <= fg.median()
    assert labels[top, 1].mean() > 0.8 and labels[bottom, 0].mean() > 0.8


def test_prior_batched_with_per_problem_levels():
    fg = torch.rand(2, 10)
    levels = torch.rand(2, 4)
    batched = gaussian_rank_prior(fg, levels, 0.3)
    for b in range(2):
        torch.testing.assert_close(batched[b], gaussian_rank_prior(fg[b], levels[b], 0.3))


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.rand(5), torch.rand(3), 0.0), InvalidArgumentError, "sigma must be a finite number > 0"),
        ((torch.rand(5), torch.rand(3), "1"), ArgumentTypeError, "sigma must be a real number"),
        ((torch.rand(5), torch.tensor([0.5, 1.5]), 0.1), InvalidArgumentError, r"cluster_fg must lie in \[0, 1\]"),
        ((torch.rand(5, 2, 2), torch.rand(3), 0.1), InvalidArgumentError, "fg_scores must have shape"),
        ((torch.rand(5), torch.rand(0), 0.1), InvalidArgumentError, "cluster_fg must have shape"),
        ((torch.rand(5), torch.rand(2, 3), 0.1), InvalidArgumentError, r"cluster_fg of shape \(2, 3\) needs fg_scores"),
        ((torch.tensor([0.1, float("nan")]), torch.rand(3), 0.1), InvalidArgumentError, "fg_scores contains NaN"),
        (([0.1, 0.2], torch.rand(3), 0.1), ArgumentTypeError, "fg_scores must be a torch.Tensor"),
    ],
)
def test_gaussian_rank_prior_errors(args, error, match):
    with pytest.raises(error, match=match):
        gaussian_rank_prior(*args)


def test_foreground_marginal_eq13():
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        foreground_marginal(labels), torch.tensor([[0.5, 0.5], [0.25, 0.75]], dtype=torch.float64)
    )
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    torch.testing.assert_close(
        foreground_marginal(labels, valid), torch.tensor([[2 / 3, 1 / 3], [0.5, 0.5]], dtype=torch.float64)
    )


def test_foreground_marginal_feeds_cluster_classification():
    beta = foreground_marginal(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    scores = torch.randn(16, 2, dtype=torch.float64)  # 16 clusters x (foreground, background)
    labels = sinkhorn(scores, 0.05, col_marginal=beta, tol=1e-12)
    torch.testing.assert_close(labels.sum(0), 16 * beta)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.tensor([0.5, 2.0]),), r"fg_labels must lie in \[0, 1\]"),
        ((torch.ones(2, 2, 2),), "fg_labels must have shape"),
        ((torch.ones(3), torch.ones(3)), "valid must be a boolean mask"),
        ((torch.ones(3), torch.ones(2, dtype=torch.bool)), "valid must have the shape of fg_labels"),
        ((torch.ones(3), torch.zeros(3, dtype=torch.bool)), "valid selects no snippet"),
    ],
)
def test_foreground_marginal_errors(args, match):
    with pytest.raises((InvalidArgumentError, ArgumentTypeError), match=match):
        foreground_marginal(*args)
