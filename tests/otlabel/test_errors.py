"""Every bad input of the contract raises the package's exception naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import otlabel
from otlabel import (
    ArgumentTypeError,
    BackendUnavailableError,
    InvalidArgumentError,
    OTLabelError,
    sinkhorn,
    sinkhorn_ragged,
    sinkhorn_with_prior,
)

SCORES = torch.randn(6, 3)


def raises(error, match):
    return pytest.raises(error, match=match)


def test_exception_classes_are_builtin_subclasses():
    assert issubclass(InvalidArgumentError, ValueError) and issubclass(InvalidArgumentError, OTLabelError)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, OTLabelError)
    assert issubclass(otlabel.InfeasibleProblemError, InvalidArgumentError)
    assert issubclass(otlabel.DistributedMismatchError, ValueError)
    assert issubclass(otlabel.ConvergenceWarning, otlabel.OTLabelWarning)
    assert issubclass(otlabel.OTLabelWarning, UserWarning)


@pytest.mark.parametrize(
    "scores, error, match",
    [
        ([[0.0, 1.0]], ArgumentTypeError, "scores must be a torch.Tensor or a numpy.ndarray"),
        (torch.ones(4, 2, dtype=torch.int64), ArgumentTypeError, "scores must be a floating-point"),
        (np.array([["a", "b"]]), ArgumentTypeError, "scores must hold real numbers"),
        (torch.randn(5), InvalidArgumentError, r"scores must have shape \(N, K\) or \(B, N, K\)"),
        (torch.randn(2, 2, 2, 2), InvalidArgumentError, r"scores must have shape"),
        (torch.randn(0, 3), InvalidArgumentError, r"scores has no rows \(N = 0\)"),
        (torch.randn(3, 0), InvalidArgumentError, r"scores has no columns \(K = 0\)"),
        (torch.randn(0, 3, 3), InvalidArgumentError, r"scores has an empty batch"),
        (torch.tensor([[0.0, float("nan")]]), InvalidArgumentError, "scores contains NaN or infinite"),
        (torch.tensor([[0.0, float("inf")]]), InvalidArgumentError, "scores contains NaN or infinite"),
        (torch.tensor([[0.0, -float("inf")]]), InvalidArgumentError, "scores contains NaN or infinite"),
    ],
)
def test_bad_scores(scores, error, match):
    with raises(error, match):
        sinkhorn(scores, 0.05)


@pytest.mark.parametrize(
    "epsilon, error",
    [
        (0.0, InvalidArgumentError),
        (-1.0, InvalidArgumentError),
        (float("nan"), InvalidArgumentError),
        (float("inf"), InvalidArgumentError),
        ("0.1", ArgumentTypeError),
        (True, ArgumentTypeError),
        (None, ArgumentTypeError),
    ],
)
def test_bad_epsilon(epsilon, error):
    with raises(error, "epsilon"):
        sinkhorn(SCORES, epsilon)


def test_epsilon_may_be_a_number_like():
    torch.testing.assert_close(sinkhorn(SCORES, torch.tensor(0.5)), sinkhorn(SCORES, 0.5))
    torch.testing.assert_close(sinkhorn(SCORES, np.float32(0.5)), sinkhorn(SCORES, 0.5))


@pytest.mark.parametrize("name", ["col_marginal", "row_marginal"])
def test_bad_marginals(name):
    length = 3 if name == "col_marginal" else 6
    good = np.full(length, 1.0 / length)
    cases = [
        (good[:-1] / good[:-1].sum(), InvalidArgumentError, f"{name} has {length - 1} entries"),
        (np.r_[-0.5, 1.5, np.zeros(length - 2)], InvalidArgumentError, f"{name} has negative entries"),
        (np.r_[np.nan, np.ones(length - 1)], InvalidArgumentError, f"{name} contains NaN"),
        (good * 2, InvalidArgumentError, f"{name} must sum to 1"),
        (np.stack([good, good]), InvalidArgumentError, f"{name} must have shape"),
        ("uniform", ArgumentTypeError, f"{name} must be"),
        (["a"] * length, ArgumentTypeError, f"{name} must be a sequence of real numbers"),
        (torch.tensor(good, dtype=torch.float64, device="meta"), InvalidArgumentError, f"{name} is on device meta"),
        (torch.ones(length, dtype=torch.bool), ArgumentTypeError, f"{name} must hold real numbers"),
    ]
    for value, error, match in cases:
        with raises(error, match):
            sinkhorn(SCORES, 0.05, **{name: value})


def test_batched_marginal_shapes():
    scores = torch.randn(2, 6, 3)
    with raises(InvalidArgumentError, r"col_marginal must have shape \(3,\) or \(2, 3\)"):
        sinkhorn(scores, 0.05, col_marginal=torch.full((3, 3), 1 / 3))
    with raises(InvalidArgumentError, "col_marginal must have shape"):
        sinkhorn(scores, 0.05, col_marginal=torch.full((1, 2, 3), 1 / 3))


def test_marginal_sum_tolerance_is_stated_and_applied():
    slightly_off = np.array([0.5, 0.25, 0.25 + 5e-5])
    sinkhorn(SCORES, 0.05, col_marginal=slightly_off)  # within 1e-4: accepted and renormalised
    with raises(InvalidArgumentError, r"col_marginal must sum to 1 \(within 0.0001\)"):
        sinkhorn(SCORES, 0.05, col_marginal=np.array([0.5, 0.25, 0.2502]))


def test_bad_priors():
    prior = torch.rand(6, 3) + 0.1
    cases = [
        (prior[:5], InvalidArgumentError, r"prior must have the shape of scores \(6, 3\)"),
        (prior[:, :1], InvalidArgumentError, "no broadcasting"),
        (prior - 1, InvalidArgumentError, "prior has negative entries"),
        (torch.where(prior > 0.5, float("nan"), prior), InvalidArgumentError, "prior contains NaN"),
        (torch.cat([torch.zeros(1, 3), prior[1:]]), InvalidArgumentError, "prior has an all-zero row"),
        (torch.cat([torch.zeros(6, 1), prior[:, 1:]], 1), InvalidArgumentError, "prior has an all-zero column"),
        (prior.tolist(), ArgumentTypeError, "prior must be a torch.Tensor or a numpy.ndarray"),
        (prior.to("meta"), InvalidArgumentError, "prior is on device meta"),
        (prior > 0.5, ArgumentTypeError, "prior must hold real numbers"),
    ]
    for value, error, match in cases:
        with raises(error, match):
            sinkhorn_with_prior(SCORES, value, 0.05)


def test_infeasible_prior_and_marginal():
    prior = torch.ones(6, 3)
    prior[0] = torch.tensor([1.0, 0.0, 0.0])
    with raises(InvalidArgumentError, "infeasible: a row with positive mass"):
        sinkhorn_with_prior(SCORES, prior, 0.05, col_marginal=[0.0, 0.5, 0.5])
    prior = torch.ones(6, 3)
    prior[:, 2] = torch.tensor([1.0, 0, 0, 0, 0, 0])
    rows = torch.full((6,), 0.2)
    rows[0] = 0
    with raises(InvalidArgumentError, "infeasible: a column with positive col_marginal"):
        sinkhorn_with_prior(SCORES, prior, 0.05, row_marginal=rows)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_iter": 0}, InvalidArgumentError, "n_iter must be >= 1"),
        ({"n_iter": 2.0}, ArgumentTypeError, "n_iter must be an integer"),
        ({"n_iter": True}, ArgumentTypeError, "n_iter must be an integer"),
        ({"tol": 0.0}, InvalidArgumentError, "tol must be a finite number > 0"),
        ({"tol": float("nan")}, InvalidArgumentError, "tol must be"),
        ({"tol": "1e-6"}, ArgumentTypeError, "tol must be a real number"),
        ({"tol": 1e-6, "n_iter": 5}, InvalidArgumentError, "n_iter applies to the fixed-iteration mode"),
        ({"tol": 1e-6, "max_iter": 0}, InvalidArgumentError, "max_iter must be >= 1"),
        ({"tol": 1e-6, "check_every": 0}, InvalidArgumentError, "check_every must be >= 1"),
        ({"backend": "cuda"}, InvalidArgumentError, "backend must be one of"),
        ({"backend": None}, InvalidArgumentError, "backend must be one of"),
    ],
)
def test_bad_options(kwargs, error, match):
    with raises(error, match):
        sinkhorn(SCORES, 0.05, **kwargs)


def test_triton_backend_on_a_cpu_tensor_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with raises(BackendUnavailableError, "backend='triton' cannot run here"):
        sinkhorn(SCORES, 0.05, backend="triton")


def test_log_prior_without_a_prior_is_refused():
    # sinkhorn(prior=...) took the prior from sinkhorn_with_prior; its log_prior flag alone means nothing
    scores = torch.randn(6, 3)
    with pytest.raises(InvalidArgumentError, match="log_prior=True .* no prior"):
        sinkhorn(scores, 0.5, log_prior=True)
    with pytest.raises(InvalidArgumentError, match="log_prior=True .* no prior"):
        sinkhorn_ragged(scores, [0, 2, 6], 0.5, log_prior=True)
    log_prior = torch.log(torch.rand(6, 3))
    assert torch.equal(
        sinkhorn(scores, 0.5, prior=log_prior, log_prior=True),
        sinkhorn_with_prior(scores, log_prior, 0.5, log_prior=True),
    )


def test_repeated_settings_are_checked_as_the_first_call_was():
    # An eager call reuses the options validated for the same settings (a training loop's every
    # step): a setting equal in value but not in type must still be refused, and data must be
    # read afresh on every call.
    scores = torch.randn(20, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sinkhorn(scores, 0.1, n_iter=1, return_info=True)
    with pytest.raises(ArgumentTypeError, match="n_iter"):
        sinkhorn(scores, 0.1, n_iter=True)  # True == 1
    with pytest.raises(ArgumentTypeError, match="return_info"):
        sinkhorn(scores, 0.1, n_iter=1, return_info=1)  # 1 == True
    epsilon = torch.tensor(0.1)
    first = sinkhorn(scores, epsilon)
    epsilon.fill_(0.5)  # the same tensor, another value
    assert torch.equal(sinkhorn(scores, epsilon), sinkhorn(scores, 0.5))
    assert not torch.equal(first, sinkhorn(scores, 0.5))
    marginal = [0.1, 0.2, 0.3, 0.4]
    before = sinkhorn(scores, 0.1, col_marginal=marginal)
    marginal.reverse()  # the same list, changed in place
    assert torch.equal(sinkhorn(scores, 0.1, col_marginal=marginal), sinkhorn(scores, 0.1, col_marginal=marginal[:]))
    assert not torch.equal(before, sinkhorn(scores, 0.1, col_marginal=marginal))
    # a prior's call and a plain one of the same shape do not share their layout's sums' bias
    prior = torch.ones(20, 4, dtype=torch.float64)
    assert torch.equal(sinkhorn(scores, 0.1, prior=prior), sinkhorn(scores, 0.1, prior=prior.clone()))
    assert torch.allclose(sinkhorn(scores, 0.1, prior=prior), sinkhorn(scores, 0.1), atol=1e-12)
