"""The fixed-iteration mode reproduces the plain SwAV/CASE loop; tolerance mode matches POT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otlabel import sinkhorn, sinkhorn_with_prior

from .helpers import cosine_scores, feasible_prior, pot_solution, swav_reference


@pytest.mark.parametrize("epsilon", [0.02, 0.05, 0.5, 5.0])
@pytest.mark.parametrize("n_iter", [1, 3, 10])
@pytest.mark.parametrize("with_prior", [False, True])
@pytest.mark.parametrize("with_marginal", [False, True])
def test_fixed_iterations_match_swav_loop(epsilon, n_iter, with_prior, with_marginal):
    rng = np.random.default_rng(7)
    scores = torch.from_numpy(cosine_scores(rng, 300, 12))
    prior = marginal = None
    if with_prior or with_marginal:
        prior_np, marginal_np = feasible_prior(rng, 300, 12, zero_fraction=0.3)
        if with_prior:
            prior = torch.from_numpy(prior_np)
        if with_marginal:
            marginal = torch.from_numpy(marginal_np)
    expected = swav_reference(scores, epsilon, n_iter, prior, marginal)
    if prior is None:
        labels = sinkhorn(scores, epsilon, col_marginal=marginal, n_iter=n_iter)
    else:
        labels = sinkhorn_with_prior(scores, prior, epsilon, col_marginal=marginal, n_iter=n_iter)
    torch.testing.assert_close(labels, expected, rtol=0, atol=1e-10)


def test_fixed_iterations_match_swav_loop_batched():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(np.stack([cosine_scores(rng, 64, 5) for _ in range(4)]))
    labels = sinkhorn(scores, 0.05)
    for b in range(4):
        torch.testing.assert_close(labels[b], swav_reference(scores[b], 0.05), rtol=0, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(
    n_rows=st.integers(1, 2000),
    n_cols=st.integers(1, 128),
    log_epsilon=st.floats(np.log10(1e-2), np.log10(1e2)),
    zero_fraction=st.sampled_from([0.0, 0.0, 0.2, 0.5]),
    custom_marginal=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_tolerance_mode_matches_pot(n_rows, n_cols, log_epsilon, zero_fraction, custom_marginal, seed):
    rng = np.random.default_rng(seed)
    epsilon = float(10**log_epsilon)
    scores = cosine_scores(rng, n_rows, n_cols)
    prior = marginal = None
    if zero_fraction > 0:
        prior, marginal = feasible_prior(rng, n_rows, n_cols, zero_fraction)
    elif custom_marginal:
        marginal = rng.dirichlet(np.full(n_cols, 2.0))
        prior = rng.uniform(0.1, 1.0, (n_rows, n_cols))
    if prior is None:
        res = sinkhorn(scores, epsilon, col_marginal=marginal, tol=1e-11, max_iter=200_000, return_info=True)
    else:
        res = sinkhorn_with_prior(
            scores, prior, epsilon, col_marginal=marginal, tol=1e-11, max_iter=200_000, return_info=True
        )
    assert isinstance(res.labels, np.ndarray) and res.labels.dtype == np.float64
    assert res.converged and res.col_error <= 1e-11 and res.row_error <= 1e-12
    expected = pot_solution(scores, epsilon, prior, marginal)
    np.testing.assert_allclose(res.labels, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "n_rows, n_cols, epsilon, zero_fraction",
    [
        (2000, 128, 1e-2, 0.3),
        (2000, 128, 1e2, 0.0),
        (1, 1, 1e-2, 0.0),
        (1, 128, 0.05, 0.0),
        (2000, 1, 0.05, 0.0),
        (1999, 127, 0.02, 0.5),
    ],
)
def test_tolerance_mode_matches_pot_at_the_corners(n_rows, n_cols, epsilon, zero_fraction):
    rng = np.random.default_rng(n_rows * 1000 + n_cols)
    scores = cosine_scores(rng, n_rows, n_cols)
    prior, marginal = feasible_prior(rng, n_rows, n_cols, zero_fraction) if zero_fraction else (None, None)
    if prior is None:
        marginal = rng.dirichlet(np.full(n_cols, 2.0))
        labels = sinkhorn(scores, epsilon, col_marginal=marginal, tol=1e-11, max_iter=200_000)
    else:
        labels = sinkhorn_with_prior(scores, prior, epsilon, col_marginal=marginal, tol=1e-11, max_iter=200_000)
    np.testing.assert_allclose(labels, pot_solution(scores, epsilon, prior, marginal), rtol=0, atol=1e-6)
