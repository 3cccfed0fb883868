"""Invariants of the labelling problem, in both modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otlabel import sinkhorn, sinkhorn_with_prior

from .helpers import cosine_scores, feasible_prior

MODES = {"fixed": {"n_iter": 3}, "tolerance": {"tol": 1e-12, "max_iter": 100_000}}


def problem(seed: int = 0, n_rows: int = 200, n_cols: int = 9):
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(cosine_scores(rng, n_rows, n_cols))
    prior, marginal = feasible_prior(rng, n_rows, n_cols, zero_fraction=0.3)
    return scores, torch.from_numpy(prior), torch.from_numpy(marginal)


def test_row_constant_changes_nothing_at_convergence():
    scores, prior, marginal = problem()
    shift = torch.randn(scores.shape[0], 1, dtype=torch.float64) * 5
    base = sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginal, **MODES["tolerance"])
    shifted = sinkhorn_with_prior(scores + shift, prior, 0.05, col_marginal=marginal, **MODES["tolerance"])
    torch.testing.assert_close(shifted, base, rtol=0, atol=1e-9)


def test_row_constant_in_fixed_mode_behaves_like_the_swav_loop():
    # The SwAV schedule starts with a column step, which weighs rows by exp(score / eps):
    # before convergence a per-row constant does change the iterates (as in SwAV itself).
    scores, _, _ = problem()
    shift = torch.linspace(-1, 1, scores.shape[0], dtype=torch.float64).unsqueeze(1)
    assert not torch.allclose(sinkhorn(scores + shift, 0.05), sinkhorn(scores, 0.05), atol=1e-6)


def test_column_constant_changes_nothing_in_either_mode():
    scores, prior, marginal = problem(1)
    shift = torch.randn(1, scores.shape[1], dtype=torch.float64) * 5
    for mode in MODES.values():
        base = sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginal, **mode)
        shifted = sinkhorn_with_prior(scores + shift, prior, 0.05, col_marginal=marginal, **mode)
        torch.testing.assert_close(shifted, base, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_permutations_permute_the_labels(mode):
    scores, prior, marginal = problem(2)
    rows = torch.randperm(scores.shape[0])
    cols = torch.randperm(scores.shape[1])
    base = sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginal, **MODES[mode])
    permuted = sinkhorn_with_prior(
        scores[rows][:, cols], prior[rows][:, cols], 0.05, col_marginal=marginal[cols], **MODES[mode]
    )
    torch.testing.assert_close(permuted, base[rows][:, cols], rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_marginals_are_met(mode):
    scores, prior, marginal = problem(3)
    n_rows = scores.shape[0]
    row_marginal = torch.rand(n_rows, dtype=torch.float64) + 0.5
    row_marginal /= row_marginal.sum()
    res = sinkhorn_with_prior(
        scores, prior, 0.05, col_marginal=marginal, row_marginal=row_marginal, return_info=True, **MODES[mode]
    )
    torch.testing.assert_close(res.labels.sum(1), n_rows * row_marginal, rtol=0, atol=1e-12)
    assert res.row_error <= 1e-12
    col_error = ((res.labels.sum(0) - n_rows * marginal).abs() / (n_rows * marginal)).max().item()
    assert res.col_error == pytest.approx(col_error, rel=1e-9, abs=1e-15)
    if mode == "tolerance":
        assert res.converged and res.col_error <= 1e-12
    else:
        assert res.converged is None and res.n_iter == 3


@pytest.mark.parametrize("mode", MODES)
def test_uniform_prior_equals_no_prior(mode):
    scores, _, marginal = problem(4)
    uniform = torch.full_like(scores, 0.37)
    with_prior = sinkhorn_with_prior(scores, uniform, 0.05, col_marginal=marginal, **MODES[mode])
    without = sinkhorn(scores, 0.05, col_marginal=marginal, **MODES[mode])
    torch.testing.assert_close(with_prior, without, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_single_column_gives_all_ones(mode):
    scores = torch.randn(50, 1, dtype=torch.float64)
    labels = sinkhorn(scores, 0.05, **MODES[mode])
    torch.testing.assert_close(labels, torch.ones(50, 1, dtype=torch.float64), rtol=0, atol=1e-14)


def test_single_row_gets_the_column_marginal():
    marginal = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    labels = sinkhorn(torch.randn(1, 3, dtype=torch.float64), 0.05, col_marginal=marginal, tol=1e-12)
    torch.testing.assert_close(labels[0], marginal, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_batched_equals_a_loop(mode):
    rng = np.random.default_rng(5)
    batch = [problem(10 + b, n_rows=80, n_cols=6) for b in range(3)]
    scores = torch.stack([p[0] for p in batch])
    prior = torch.stack([p[1] for p in batch])
    marginals = torch.stack([p[2] for p in batch])
    res = sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginals, return_info=True, **MODES[mode])
    for b in range(3):
        single = sinkhorn_with_prior(scores[b], prior[b], 0.05, col_marginal=marginals[b], **MODES[mode])
        torch.testing.assert_close(res.labels[b], single, rtol=0, atol=1e-10)
    # one marginal shared by the whole batch
    shared = sinkhorn(scores, 0.05, col_marginal=marginals[0], **MODES[mode])
    for b in range(3):
        torch.testing.assert_close(shared[b], sinkhorn(scores[b], 0.05, col_marginal=marginals[0], **MODES[mode]))
    assert rng is not None


def test_potentials_reconstruct_the_labels():
    scores, prior, marginal = problem(6)
    for mode in MODES.values():
        res = sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginal, return_info=True, **mode)
        rebuilt = torch.exp(
            res.log_row_scaling[:, None] + scores / 0.05 + torch.log(prior) + res.log_col_scaling[None, :]
        )
        torch.testing.assert_close(rebuilt, res.labels, rtol=1e-9, atol=1e-14)


def test_numpy_in_numpy_out_and_inputs_untouched():
    scores, prior, marginal = problem(7)
    scores_np, prior_np = scores.numpy().copy(), prior.numpy().copy()
    out = sinkhorn_with_prior(scores_np, prior_np, 0.05, col_marginal=marginal.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == scores_np.shape
    np.testing.assert_array_equal(scores_np, scores.numpy())
    np.testing.assert_array_equal(prior_np, prior.numpy())
    np.testing.assert_allclose(out, sinkhorn_with_prior(scores, prior, 0.05, col_marginal=marginal).numpy())


def test_labels_carry_no_gradient_and_inputs_are_not_modified():
    scores = torch.randn(40, 4, requires_grad=True)
    before = scores.detach().clone()
    labels = sinkhorn(scores, 0.05)
    assert not labels.requires_grad and labels.grad_fn is None
    torch.testing.assert_close(scores.detach(), before, rtol=0, atol=0)


# Calls of the same sizes share the layout's kept constants (equipartition's column masses):
# sizes no other test uses make the first call of each test below the one that makes them.


@pytest.mark.parametrize("batch", [None, 3], ids=["single", "batched"])
def test_a_first_call_in_inference_mode_leaves_later_differentiable_calls_working(batch):
    shape = (37, 5) if batch is None else (batch, 37, 5)
    scores = torch.randn(shape, dtype=torch.float64)
    with torch.inference_mode():
        expected = sinkhorn(scores, 0.5)
    trainable = scores.clone().requires_grad_(True)
    labels = sinkhorn(trainable, 0.5, differentiable=True)
    (labels * torch.randn(shape, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(labels.detach(), expected, rtol=0, atol=0)
    assert trainable.grad is not None and torch.isfinite(trainable.grad).all()


def test_column_masses_written_to_are_made_afresh_for_the_next_call():
    from otlabel._front import build_problem
    from otlabel._options import Options

    scores = torch.randn(41, 6, dtype=torch.float64)
    expected = sinkhorn(scores, 0.5)
    call = build_problem(scores, None, Options.make(epsilon=0.5))
    call.problem.col_mass.fill_(1.0)  # a caller that writes into what it was handed
    torch.testing.assert_close(sinkhorn(scores, 0.5), expected, rtol=0, atol=0)


def test_only_small_column_masses_are_kept_between_calls():
    from otlabel._front import build_problem
    from otlabel._layout import KEPT_MASSES
    from otlabel._options import Options

    def kept(shape):
        scores = torch.zeros(shape)
        first, second = (build_problem(scores, None, Options.make()).problem.col_mass for _ in range(2))
        return first is second

    assert kept((3, 2, 7))
    assert not kept((KEPT_MASSES // 7 + 1, 2, 7))  # a big batch's masses are not held on to


def test_tolerance_mode_is_at_least_as_balanced_as_three_iterations():
    scores, _, _ = problem(8)
    fixed = sinkhorn(scores, 0.05, return_info=True)
    tol = sinkhorn(scores, 0.05, tol=1e-9, return_info=True)
    assert tol.col_error <= 1e-9 < fixed.col_error
