"""hard_labels: one-hot labels meeting integer column quotas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otlabel import InvalidArgumentError, hard_labels, integer_quotas, sinkhorn


def test_integer_quotas_largest_remainder():
    assert integer_quotas(torch.tensor([3.4, 3.3, 3.3]), 10).tolist() == [4, 3, 3]
    assert integer_quotas(torch.tensor([0.0, 1.0]), 7).tolist() == [0, 7]
    quotas = integer_quotas(torch.rand(13), 1000)
    assert quotas.sum().item() == 1000 and (quotas >= 0).all()


def test_argmax_is_kept_when_it_meets_the_quotas():
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert hard_labels(soft, one_hot=False).tolist() == soft.argmax(1).tolist()


def test_over_full_column_keeps_its_most_confident_rows():
    soft = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    assert hard_labels(soft, [0.5, 0.5], one_hot=False).tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("seed", range(5))
def test_counts_meet_the_quotas_exactly(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(997, 13, generator=generator) * 2
    marginal = torch.softmax(torch.randn(13, generator=generator), 0)
    soft = sinkhorn(scores, 0.05, col_marginal=marginal)
    hard = hard_labels(soft, marginal)
    assert hard.dtype == soft.dtype and hard.shape == soft.shape
    assert torch.equal(hard.sum(1), torch.ones(997))
    quotas = integer_quotas(marginal.double() * 997, 997)
    assert hard.sum(0).long().tolist() == quotas.tolist()
    # at least as close to the marginal as argmax, and mostly the same choices
    argmax_counts = torch.bincount(soft.argmax(1), minlength=13).double()
    target = 997 * marginal.double()
    assert (hard.sum(0).double() - target).abs().max() <= (argmax_counts - target).abs().max() + 1e-9
    # a row keeps its argmax unless that column is over-subscribed
    argmax = soft.argmax(1)
    keeps = (argmax_counts <= quotas.double())[argmax]
    assert keeps.any() and torch.equal(hard.argmax(1)[keeps], argmax[keeps])


def test_default_marginal_is_the_soft_labels_own_and_batched_numpy():
    soft = np.random.default_rng(1).dirichlet(np.ones(4), size=(3, 40))
    hard = hard_labels(soft, one_hot=False)
    assert isinstance(hard, np.ndarray) and hard.shape == (3, 40)
    for b in range(3):
        quotas = integer_quotas(torch.from_numpy(soft[b].sum(0)), 40)
        assert np.bincount(hard[b], minlength=4).tolist() == quotas.tolist()


def test_errors():
    with pytest.raises(InvalidArgumentError, match="labels contains NaN"):
        hard_labels(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(InvalidArgumentError, match="col_marginal has 3 entries"):
        hard_labels(torch.rand(4, 2), [0.2, 0.3, 0.5])
    with pytest.raises(InvalidArgumentError, match="labels must have non-negative column sums"):
        hard_labels(-torch.rand(4, 2))
