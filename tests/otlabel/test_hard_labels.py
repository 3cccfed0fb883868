"""hard_labels: one-hot labels meeting integer column quotas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otlabel import (
    ArgumentTypeError,
    InfeasibleProblemError,
    InvalidArgumentError,
    hard_labels,
    integer_quotas,
    sinkhorn,
)


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
    soft = sinkhorn(scores, 0.5, col_marginal=marginal)
    assert (soft > 0).all()  # no zeros: every column is open to every row (zeros: see below)
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
    with pytest.raises(InvalidArgumentError, match="labels must be non-negative soft labels"):
        hard_labels(-torch.rand(4, 2))


def test_rows_only_go_where_their_soft_label_is_positive():
    # argmax-greedy alone sends rows 1 and 2 to column 1, where their soft label is 0
    soft = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])
    with pytest.raises(InfeasibleProblemError, match=r"quotas cannot be met within the labels' support.*columns \[0\]"):
        hard_labels(soft, [0.25, 0.75], one_hot=False)
    # feasible, but only by moving row 0 (confident in column 0) to column 1 to make room
    soft = torch.tensor([[0.9, 0.1], [1, 0], [1, 0], [0, 1]])
    assert hard_labels(soft, [0.5, 0.5], one_hot=False).tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize("seed", range(20))
def test_sparse_supports_are_respected_or_refused(seed):
    """Random sparse soft labels: a hard labelling within the support meeting the quotas is found
    exactly when one exists (decided by brute force on small problems)."""
    import itertools

    generator = torch.Generator().manual_seed(seed)
    soft = torch.rand(6, 3, generator=generator) * (torch.rand(6, 3, generator=generator) < 0.5)
    soft[torch.arange(6), torch.randint(0, 3, (6,), generator=generator)] += 0.1  # no empty row
    marginal = torch.softmax(torch.randn(3, generator=generator), 0)
    quotas = integer_quotas(marginal.double() * 6, 6).tolist()
    choices = [torch.nonzero(row > 0).flatten().tolist() for row in soft]
    feasible = any(
        [assignment.count(k) for k in range(3)] == quotas for assignment in map(list, itertools.product(*choices))
    )
    if feasible:
        hard = hard_labels(soft, marginal, one_hot=False)
        assert torch.bincount(hard, minlength=3).tolist() == quotas
        assert bool((soft[torch.arange(6), hard] > 0).all())
    else:
        with pytest.raises(InfeasibleProblemError):
            hard_labels(soft, marginal, one_hot=False)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.zeros(3), 5), InvalidArgumentError, "col_mass must have a positive sum"),
        ((torch.tensor([0.5, float("nan")]), 5), InvalidArgumentError, "col_mass must be finite and non-negative"),
        ((torch.tensor([0.5, -0.5]), 5), InvalidArgumentError, "col_mass must be finite and non-negative"),
        ((torch.tensor([0.5, 0.5]), -3), InvalidArgumentError, "total must be >= 0"),
        ((torch.tensor([0.5, 0.5]), 2.0), ArgumentTypeError, "total must be an integer"),
        (([0.5, 0.5], 2), ArgumentTypeError, "col_mass must be a torch.Tensor"),
    ],
)
def test_integer_quotas_rejects_what_it_cannot_round(args, error, match):
    with pytest.raises(error, match=match):
        integer_quotas(*args)
