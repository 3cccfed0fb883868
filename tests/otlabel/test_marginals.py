"""Marginals beyond the hard constraint, warm starts and acceleration, against POT and linear programs.

* ``col_penalty`` / ``row_penalty``: POT's ``ot.unbalanced.sinkhorn_unbalanced`` with ``M = -scores``,
  ``reg = epsilon``, ``reg_m = (row_penalty, col_penalty)``, ``c = prior``, ``a = N r``, ``b = N c``;
* ``mass``: POT's ``ot.partial.entropic_partial_wasserstein`` with ``M = -scores - epsilon log prior``,
  ``reg = epsilon``, ``m = mass * N``;
* ``col_bounds``: a linear program as epsilon -> 0, and a generic convex solver on small problems.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otlabel import (
    ArgumentTypeError,
    InfeasibleProblemError,
    InvalidArgumentError,
    sinkhorn,
    sinkhorn_ragged,
    sinkhorn_with_prior,
)

from .helpers import clustered_scores, cosine_scores, feasible_prior

ot = pytest.importorskip("ot")
INF = float("inf")


def pot_unbalanced(scores, epsilon, row_penalty, col_penalty, prior=None, row=None, col=None):
    n_rows, n_cols = scores.shape
    a = np.ones(n_rows) if row is None else n_rows * row
    b = np.full(n_cols, n_rows / n_cols) if col is None else n_rows * col
    reference = np.ones_like(scores) if prior is None else prior
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ot.unbalanced.sinkhorn_unbalanced(
            a,
            b,
            -scores,
            epsilon,
            (row_penalty or INF, col_penalty or INF),
            method="sinkhorn_stabilized",
            c=reference,
            numItermax=500_000,
            stopThr=1e-15,
        )


@settings(max_examples=25, deadline=None)
@given(
    n_rows=st.integers(1, 2000),
    n_cols=st.integers(1, 128),
    log_epsilon=st.floats(np.log10(1e-2), np.log10(1e2)),
    log_tau=st.floats(-2, 2),
    sides=st.sampled_from(["cols", "rows", "both"]),
    with_prior=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_penalised_marginals_match_pot(n_rows, n_cols, log_epsilon, log_tau, sides, with_prior, seed):
    rng = np.random.default_rng(seed)
    epsilon, tau = float(10**log_epsilon), float(10**log_tau)
    scores = cosine_scores(rng, n_rows, n_cols)
    col = rng.dirichlet(np.full(n_cols, 2.0))
    prior = rng.uniform(0.1, 1.0, (n_rows, n_cols)) if with_prior else None
    penalties = {
        "col_penalty": tau if sides in ("cols", "both") else None,
        "row_penalty": 2 * tau if sides in ("rows", "both") else None,
    }
    common = {"col_marginal": col, "tol": 1e-12, "max_iter": 500_000, "return_info": True, **penalties}
    if prior is None:
        res = sinkhorn(scores, epsilon, **common)
    else:
        res = sinkhorn_with_prior(scores, prior, epsilon, **common)
    assert res.converged
    expected = pot_unbalanced(scores, epsilon, penalties["row_penalty"], penalties["col_penalty"], prior, col=col)
    np.testing.assert_allclose(res.labels, expected, rtol=0, atol=1e-6)


def test_a_penalty_tends_to_the_hard_constraint_and_a_weak_one_to_the_scores():
    rng = np.random.default_rng(3)
    scores = cosine_scores(rng, 200, 6)
    hard = sinkhorn(scores, 0.1, tol=1e-12, max_iter=100_000)
    # (the total mass converges at rate about 1 - 2 epsilon / tau under a strong penalty: accelerated)
    strong = sinkhorn(scores, 0.1, col_penalty=1e4, tol=1e-9, max_iter=100_000, acceleration="anderson")
    np.testing.assert_allclose(strong, hard, atol=1e-4)
    weak = sinkhorn(scores, 0.1, col_penalty=1e-6, tol=1e-9, max_iter=100_000)
    softmax = torch.softmax(torch.from_numpy(scores) / 0.1, 1).numpy()  # rows only: each row's softmax
    np.testing.assert_allclose(weak, softmax, atol=1e-5)


def test_fixed_mode_follows_the_penalised_scaling_steps():
    """n_iter iterations of: columns to (N c / sums) ** (tau / (tau + eps)), rows to their mass."""
    rng = np.random.default_rng(4)
    scores = torch.from_numpy(cosine_scores(rng, 50, 7))
    epsilon, tau = 0.2, 0.5
    kernel = torch.exp(scores / epsilon)
    a, b = torch.ones(50, dtype=torch.float64), torch.ones(7, dtype=torch.float64)
    for _ in range(4):
        b = ((50 / 7) / (kernel.t() @ a)) ** (tau / (tau + epsilon))
        a = 1 / (kernel @ b)
    expected = a[:, None] * kernel * b[None, :]
    torch.testing.assert_close(sinkhorn(scores, epsilon, col_penalty=tau, n_iter=4), expected)


@pytest.mark.parametrize("sides", ["cols", "rows", "both"])
def test_penalties_batched_ragged_and_log_domain(sides):
    generator = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 40, 5, generator=generator, dtype=torch.float64)
    options = {
        "col_penalty": 0.3 if sides != "rows" else None,
        "row_penalty": 0.7 if sides != "cols" else None,
        "tol": 1e-11,
        "max_iter": 100_000,
    }
    batched = sinkhorn(scores, 0.5, **options)
    for b in range(3):
        torch.testing.assert_close(batched[b], sinkhorn(scores[b], 0.5, **options))
    packed = sinkhorn_ragged(scores[:2].reshape(80, 5), [0, 40, 80], 0.5, **options)
    torch.testing.assert_close(packed, batched[:2].reshape(80, 5))
    # float32 scores far too wide for the scaling path: the log domain gives the same answer
    wide = (scores[0] * 300).float()
    res = sinkhorn(wide, 0.5, col_penalty=50.0, tol=1e-5, max_iter=20_000, return_info=True)
    reference = sinkhorn(wide.double(), 0.5, col_penalty=50.0, tol=1e-9, max_iter=200_000)
    assert res.log_domain and res.converged
    torch.testing.assert_close(res.labels.double(), reference, rtol=0, atol=1e-4)


# partial transport --------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    n_rows=st.integers(2, 300),
    n_cols=st.integers(2, 40),
    log_epsilon=st.floats(np.log10(0.05), np.log10(5.0)),
    mass=st.floats(0.05, 0.95),
    with_prior=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_partial_mass_matches_pot(n_rows, n_cols, log_epsilon, mass, with_prior, seed):
    rng = np.random.default_rng(seed)
    epsilon = float(10**log_epsilon)
    scores = cosine_scores(rng, n_rows, n_cols)
    col = rng.dirichlet(np.full(n_cols, 2.0))
    prior = rng.uniform(0.1, 1.0, (n_rows, n_cols)) if with_prior else None
    common = {"col_marginal": col, "mass": mass, "tol": 1e-13, "max_iter": 1_000_000, "return_info": True}
    res = (
        sinkhorn(scores, epsilon, **common) if prior is None else sinkhorn_with_prior(scores, prior, epsilon, **common)
    )
    assert res.converged
    cost = -scores if prior is None else -scores - epsilon * np.log(prior)
    expected = ot.partial.entropic_partial_wasserstein(
        np.ones(n_rows), n_rows * col, cost, epsilon, m=mass * n_rows, numItermax=1_000_000, stopThr=1e-13
    )
    np.testing.assert_allclose(res.labels, expected, rtol=0, atol=1e-6)
    assert abs(res.labels.sum() - mass * n_rows) < 1e-9 * n_rows
    assert (res.labels.sum(1) <= 1 + 1e-9).all() and (res.labels.sum(0) <= n_rows * col + 1e-9).all()


def test_partial_mass_leaves_the_worst_fitting_rows_unlabelled():
    # two clear clusters and three outliers scoring low everywhere: a mass of 9 rows of 13 goes
    # to the clusters' rows, 0.9 each, and skips the outliers
    scores = np.array([[3.0, 0.0]] * 5 + [[0.0, 3.0]] * 5 + [[-3.0, -3.0]] * 3)
    labels = sinkhorn(scores, 0.3, mass=9 / 13, col_marginal=[0.5, 0.5], tol=1e-9, max_iter=100_000)
    assert labels[10:].sum() < 1e-6
    np.testing.assert_allclose(labels[:10].sum(1), 0.9, atol=1e-6)


# bounded class sizes -----------------------------------------------------------------------------


def _lp_bounded(scores, lower, upper):
    """max <Q, S> with rows summing to 1 and column sums in [N lower, N upper] (scipy's LP)."""
    from scipy.optimize import linprog

    n_rows, n_cols = scores.shape
    rows = np.kron(np.eye(n_rows), np.ones(n_cols))  # Q.sum(1) == 1
    cols = np.kron(np.ones(n_rows), np.eye(n_cols))  # Q.sum(0)
    result = linprog(
        -scores.reshape(-1),
        A_eq=rows,
        b_eq=np.ones(n_rows),
        A_ub=np.vstack([cols, -cols]),
        b_ub=np.concatenate([n_rows * upper, -n_rows * lower]),
        bounds=(0, None),
        method="highs",
    )
    assert result.success
    return result.x.reshape(n_rows, n_cols), -result.fun


@pytest.mark.parametrize("seed", range(4))
def test_bounded_columns_tend_to_the_linear_program(seed):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((30, 4))
    lower, upper = np.array([0.1, 0.2, 0.0, 0.15]), np.array([0.4, 0.35, 0.5, 0.3])
    _, optimum = _lp_bounded(scores, lower, upper)
    gaps = []
    for epsilon in (0.1, 0.05, 0.02):
        labels = sinkhorn(scores, epsilon, col_bounds=(lower, upper), tol=1e-10, max_iter=200_000)
        assert (labels.sum(0) >= 30 * lower - 1e-8).all() and (labels.sum(0) <= 30 * upper + 1e-8).all()
        np.testing.assert_allclose(labels.sum(1), 1, atol=1e-10)
        gap = optimum - (labels * scores).sum()
        # the entropic optimum is below the LP's by at most epsilon * N * log K
        assert -1e-8 <= gap <= epsilon * 30 * np.log(4)
        gaps.append(gap)
    assert gaps[0] > gaps[1] > gaps[2]  # and approaches it as epsilon -> 0


@pytest.mark.parametrize("seed", range(3))
def test_bounded_columns_match_a_generic_convex_solver(seed):
    from scipy.optimize import minimize

    rng = np.random.default_rng(10 + seed)
    n_rows, n_cols, epsilon = 6, 3, 0.3
    scores = rng.standard_normal((n_rows, n_cols))
    lower, upper = np.array([0.3, 0.0, 0.1]), np.array([0.6, 0.3, 0.5])
    labels = sinkhorn(scores, epsilon, col_bounds=(lower, upper), tol=1e-13, max_iter=1_000_000)

    def objective(q):
        q = q.reshape(n_rows, n_cols)
        return float((-q * scores).sum() + epsilon * (q * np.log(q) - q).sum())

    def gradient(q):
        return (-scores.reshape(-1) + epsilon * np.log(q)).reshape(-1)

    constraints = [
        {"type": "eq", "fun": lambda q: q.reshape(n_rows, n_cols).sum(1) - 1},
        {"type": "ineq", "fun": lambda q: q.reshape(n_rows, n_cols).sum(0) - n_rows * lower},
        {"type": "ineq", "fun": lambda q: n_rows * upper - q.reshape(n_rows, n_cols).sum(0)},
    ]
    start = np.full(n_rows * n_cols, 1 / n_cols)
    result = minimize(
        objective,
        start,
        jac=gradient,
        method="SLSQP",
        bounds=[(1e-12, 1)] * (n_rows * n_cols),
        constraints=constraints,
        options={"ftol": 1e-14, "maxiter": 2000},
    )
    assert result.success
    np.testing.assert_allclose(labels, result.x.reshape(n_rows, n_cols), atol=1e-5)


def test_bounds_that_hold_at_the_hard_solution_change_nothing():
    rng = np.random.default_rng(7)
    scores = cosine_scores(rng, 100, 5)
    hard = sinkhorn(scores, 0.1, tol=1e-12, max_iter=100_000)  # every column at 20
    loose = sinkhorn(scores, 0.1, col_bounds=([0.2] * 5, [0.2] * 5), tol=1e-12, max_iter=100_000)
    np.testing.assert_allclose(loose, hard, atol=1e-8)


# warm starts -------------------------------------------------------------------------------------

OPTIONS = {
    "hard": {},
    "penalty": {"col_penalty": 0.3},
    "partial": {"mass": 0.6},
    "bounds": {"col_bounds": ([0.05] * 6, [0.3] * 6)},
}


@pytest.mark.parametrize("option", OPTIONS)
def test_a_warm_start_never_changes_the_converged_answer(option):
    rng = np.random.default_rng(8)
    scores = torch.from_numpy(cosine_scores(rng, 300, 6))
    cold = sinkhorn(scores, 0.1, tol=1e-11, max_iter=200_000, return_info=True, **OPTIONS[option])
    # from the converged potentials, from the column potential alone, from another problem's
    other = sinkhorn(torch.from_numpy(cosine_scores(rng, 300, 6)), 0.1, tol=1e-6, return_info=True)
    for init in (
        cold,
        cold.log_col_scaling,
        (None, cold.log_col_scaling),
        other,
        50 * torch.randn(6, dtype=torch.float64),
    ):
        warm = sinkhorn(scores, 0.1, tol=1e-11, max_iter=200_000, return_info=True, init=init, **OPTIONS[option])
        assert warm.converged
        torch.testing.assert_close(warm.labels, cold.labels, rtol=0, atol=1e-8)
    again = sinkhorn(scores, 0.1, tol=1e-11, max_iter=200_000, return_info=True, init=cold, **OPTIONS[option])
    if option in ("hard", "penalty"):
        assert again.n_iter <= 10 < cold.n_iter  # converged at the first check
    else:  # Dykstra's corrections are not potentials: they restart (a few checks more at worst)
        assert again.n_iter <= 2 * cold.n_iter


def test_fixed_mode_starts_from_the_warm_start():
    rng = np.random.default_rng(9)
    scores = torch.from_numpy(cosine_scores(rng, 400, 8))
    converged = sinkhorn(scores, 0.05, tol=1e-12, max_iter=200_000, return_info=True)
    three = sinkhorn(scores, 0.05, n_iter=3, init=converged)
    torch.testing.assert_close(three, converged.labels, rtol=0, atol=1e-10)
    from_column = sinkhorn(scores, 0.05, n_iter=1, init=converged.log_col_scaling)
    torch.testing.assert_close(from_column, converged.labels, rtol=0, atol=1e-10)
    # a warm start is SwAV's loop continued: 3 iterations from 3 iterations' potentials == 6 iterations
    first = sinkhorn(scores, 0.05, n_iter=3, return_info=True)
    torch.testing.assert_close(sinkhorn(scores, 0.05, n_iter=3, init=first), sinkhorn(scores, 0.05, n_iter=6))


def test_warm_starts_ragged_batched_and_bad_shapes():
    generator = torch.Generator().manual_seed(11)
    scores = torch.randn(60, 4, generator=generator, dtype=torch.float64)
    ptr = [0, 25, 60]
    cold = sinkhorn_ragged(scores, ptr, 0.3, tol=1e-11, max_iter=100_000, return_info=True)
    warm = sinkhorn_ragged(scores, ptr, 0.3, tol=1e-11, max_iter=100_000, return_info=True, init=cold)
    torch.testing.assert_close(warm.labels, cold.labels, rtol=0, atol=1e-9)
    assert (warm.n_iter <= 10).all()
    batched = sinkhorn(scores.view(2, 30, 4), 0.3, tol=1e-11, max_iter=100_000, return_info=True)
    rewarm = sinkhorn(scores.view(2, 30, 4), 0.3, tol=1e-11, max_iter=100_000, return_info=True, init=batched)
    assert rewarm.n_iter <= 10
    with pytest.raises(InvalidArgumentError, match=r"init log_col_scaling must have shape \(4,\)"):
        sinkhorn(scores, 0.3, init=torch.zeros(5))
    with pytest.raises(InvalidArgumentError, match=r"init log_row_scaling must have shape \(60,\)"):
        sinkhorn_ragged(scores, ptr, 0.3, init=(torch.zeros(2, 60), torch.zeros(4)))
    with pytest.raises(InvalidArgumentError, match="init log_col_scaling contains NaN"):
        sinkhorn(scores, 0.3, init=torch.tensor([0.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(ArgumentTypeError, match="init needs the column potential"):
        sinkhorn(scores, 0.3, init=(torch.zeros(60), None))


# acceleration ------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["hard", "penalty"])
def test_anderson_acceleration_cuts_the_iterations_and_keeps_the_answer(option):
    scores = clustered_scores(torch.Generator().manual_seed(12), 2000, 16)
    extra = {"col_penalty": 5.0} if option == "penalty" else {}
    plain = sinkhorn(scores, 0.05, tol=1e-6, max_iter=100_000, return_info=True, **extra)
    fast = sinkhorn(scores, 0.05, tol=1e-6, max_iter=100_000, return_info=True, acceleration="anderson", **extra)
    assert fast.converged and fast.n_iter * 5 <= plain.n_iter  # about 1,000 plain iterations, ~10x fewer
    torch.testing.assert_close(fast.labels, plain.labels, rtol=0, atol=2e-5)
    torch.testing.assert_close(fast.labels.sum(1), torch.ones(2000), rtol=0, atol=1e-5)


def test_anderson_acceleration_is_safe_where_plain_iterations_are_fast_or_degenerate():
    generator = torch.Generator().manual_seed(13)
    cases = {
        "wide scores": (3 * torch.randn(500, 12, generator=generator), {}),
        "zero-mass column": (torch.randn(500, 4, generator=generator), {"col_marginal": [0.5, 0.0, 0.3, 0.2]}),
        "small epsilon": (torch.randn(300, 5, generator=generator), {}),
    }
    for name, (scores, extra) in cases.items():
        epsilon = 0.01 if name == "small epsilon" else 0.05
        plain = sinkhorn(scores, epsilon, tol=1e-5, max_iter=50_000, return_info=True, **extra)
        fast = sinkhorn(scores, epsilon, tol=1e-5, max_iter=50_000, return_info=True, acceleration="anderson", **extra)
        assert fast.converged == plain.converged, name
        # never condemned to the (slow) log domain by its own extrapolations, never many more steps
        assert fast.log_domain <= plain.log_domain and fast.n_iter <= 1.1 * plain.n_iter + 30, name
        # as close to the exact answer as the plain iterations (at tol 1e-5 both may be ~1e-4 off)
        exact = sinkhorn(scores.double(), epsilon, tol=1e-12, max_iter=200_000, **extra)
        plain_error = (plain.labels.double() - exact).abs().max()
        assert (fast.labels.double() - exact).abs().max() <= 2 * plain_error + 1e-5, name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"col_penalty": 0}, InvalidArgumentError, "col_penalty must be > 0"),
        ({"row_penalty": "strong"}, ArgumentTypeError, "row_penalty must be a real number"),
        ({"mass": 1.5}, InvalidArgumentError, r"mass must lie in \(0, 1\]"),
        ({"mass": 0.5, "col_penalty": 1.0}, InvalidArgumentError, "mass .* cannot be combined"),
        (
            {"col_bounds": ([0.1] * 3, [0.5] * 3), "col_marginal": [0.2, 0.3, 0.5]},
            InvalidArgumentError,
            "replaces col_marginal",
        ),
        ({"col_bounds": ([0.5] * 3, None)}, InvalidArgumentError, "lower bounds sum to more than 1"),
        ({"col_bounds": (None, [0.2] * 3)}, InvalidArgumentError, "upper bounds sum to less than 1"),
        ({"col_bounds": ([0.3, 0.0, 0.0], [0.2, 1.0, 1.0])}, InvalidArgumentError, "lower bound exceeds"),
        ({"col_bounds": [0.1, 0.2, 0.3]}, ArgumentTypeError, "col_bounds must be a pair"),
        ({"acceleration": "anderson"}, InvalidArgumentError, "applies to the tolerance mode"),
        ({"acceleration": "anderson", "tol": 1e-6, "mass": 0.5}, InvalidArgumentError, "does not apply to mass"),
        ({"acceleration": "momentum", "tol": 1e-6}, InvalidArgumentError, "acceleration must be None or one of"),
    ],
)
def test_bad_options_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        sinkhorn(torch.randn(20, 3), 0.1, **kwargs)


def test_with_priors_with_zeros_the_options_keep_the_support():
    rng = np.random.default_rng(14)
    scores = cosine_scores(rng, 120, 6)
    prior, marginal = feasible_prior(rng, 120, 6, 0.4)
    for option in ({"col_penalty": 0.5}, {"mass": 0.7}, {"col_bounds": ([0.0] * 6, [0.5] * 6)}):
        labels = sinkhorn_with_prior(
            scores,
            prior,
            0.1,
            col_marginal=None if "col_bounds" in option else marginal,
            tol=1e-10,
            max_iter=200_000,
            **option,
        )
        assert (labels[prior == 0] == 0).all(), option


# defects of a hostile review ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [{"col_penalty": 1.0}, {"row_penalty": 1.0}, {"mass": 0.5}, {"col_bounds": (None, [0.5] * 3)}],
    ids=["col_penalty", "row_penalty", "mass", "col_bounds"],
)
def test_a_check_after_every_iteration_works_with_every_option(option):
    scores = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    every_one = sinkhorn(scores, 0.3, tol=1e-10, check_every=1, max_iter=100_000, **option)
    every_ten = sinkhorn(scores, 0.3, tol=1e-10, max_iter=100_000, **option)
    torch.testing.assert_close(every_one, every_ten, rtol=0, atol=1e-8)


def test_partial_mass_in_float32_on_wide_logits_is_not_called_infeasible():
    # float32 takes the log domain here; its start must not lose the rows whose shift exceeds 88
    for shape, seed in (((8, 2), 0), ((32, 4), 1), ((256, 16), 1)):
        scores = 5 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
        single = sinkhorn(scores, 0.05, mass=0.5, tol=1e-6, max_iter=100_000)
        double = sinkhorn(scores.double(), 0.05, mass=0.5, tol=1e-9, max_iter=100_000)
        torch.testing.assert_close(single.double(), double, rtol=0, atol=1e-3)
        assert abs(float(single.sum()) - 0.5 * shape[0]) < 1e-3 * shape[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fixed_mode_partial_labels_never_exceed_their_row_mass(dtype):
    # the rows' caps are the last projection of every iteration: labels stay probabilities
    scores = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    for epsilon, n_iter in ((0.02, 3), (0.05, 3), (0.05, 1), (0.3, 10)):
        labels = sinkhorn(scores, epsilon, mass=0.3, n_iter=n_iter)
        assert labels.sum(1).max() <= 1 + 1e-6 and labels.max() <= 1
    float32 = sinkhorn(scores.float(), 0.02, mass=0.3)
    float64 = sinkhorn(scores.double(), 0.02, mass=0.3)
    torch.testing.assert_close(float32.double(), float64, rtol=0, atol=1e-5)


def test_sides_that_may_keep_less_than_their_mass_need_not_reach_the_prior():
    generator = torch.Generator().manual_seed(0)
    scores, prior = torch.randn(16, 4, generator=generator), torch.rand(16, 4, generator=generator)
    prior[:8, 1:] = 0  # rows 0-7 can only go to column 0, whose marginal is 0
    col = [0.0, 0.4, 0.3, 0.3]
    with pytest.raises(InfeasibleProblemError):
        sinkhorn_with_prior(scores, prior, 0.1, col_marginal=col, tol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the ragged log path resized its scratch buffer here
        for label in (
            lambda: sinkhorn_with_prior(scores, prior, 0.1, col_marginal=col, mass=0.4, tol=1e-9),
            lambda: sinkhorn_ragged(scores, [0, 16], 0.1, prior=prior, col_marginal=col, mass=0.4, tol=1e-9),
        ):
            labels = label()
            assert labels[:8].sum() < 1e-6 and abs(float(labels.sum()) - 6.4) < 1e-4
        relaxed = sinkhorn_with_prior(scores, prior, 0.1, col_marginal=col, row_penalty=1.0, tol=1e-9)
        assert relaxed[:8].sum() < 1e-6


def test_warm_starts_far_from_the_answer_or_with_minus_infinity_keep_the_answer():
    scores = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cold = sinkhorn(scores, 0.1, tol=1e-10)
    for init in ([-math.inf, 0, 0, 0], [1e5, 0, 0, 0], [80.0, 0, 0, 0]):
        warm = sinkhorn(scores, 0.1, tol=1e-10, init=torch.tensor(init, dtype=torch.float64))
        torch.testing.assert_close(warm, cold, rtol=0, atol=1e-8)
        warm32 = sinkhorn(scores.float(), 0.1, tol=1e-5, init=torch.tensor(init))
        torch.testing.assert_close(warm32.double(), cold, rtol=0, atol=1e-4)
    # a result with a zero-mass column (potential -inf) warm-starts its own problem
    zero = sinkhorn(scores, 0.1, tol=1e-10, col_marginal=[0, 0.5, 0.25, 0.25], return_info=True)
    again = sinkhorn(scores, 0.1, tol=1e-10, col_marginal=[0, 0.5, 0.25, 0.25], init=zero)
    torch.testing.assert_close(again, zero.labels, rtol=0, atol=1e-9)
