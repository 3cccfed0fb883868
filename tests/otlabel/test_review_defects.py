"""The defects a hostile review of the public API found (L1-L11), each reproduced first.

Every test here failed on the release before the solver core was rewritten; the docstrings say how.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from otlabel import (
    ArgumentTypeError,
    ConvergenceWarning,
    InfeasibleProblemError,
    InvalidArgumentError,
    foreground_marginal,
    gaussian_rank_prior,
    sinkhorn,
    sinkhorn_ragged,
    sinkhorn_with_prior,
)

from .helpers import cosine_scores

ROOT = Path(__file__).resolve().parents[2]


# L1 ----------------------------------------------------------------------------------------------


def test_l1_labels_of_rows_summing_to_one_never_exceed_one():
    """Was: about one draw in seven had entries of 1.0000001 (8 of these 20 draws)."""
    torch.manual_seed(3)
    for _ in range(20):
        labels = sinkhorn((torch.rand(16, 2) * 2 - 1) * 10, epsilon=0.5, col_marginal=[0.25, 0.75])
        assert labels.max() <= 1.0 and labels.min() >= 0.0
        # ... and the probabilities derived from them are accepted downstream
        gaussian_rank_prior(torch.rand(30), labels[:, 0], sigma=0.3)


def test_l1_entries_never_exceed_their_row_mass_in_either_path():
    generator = torch.Generator().manual_seed(0)
    rows = torch.rand(16, generator=generator) + 0.5
    rows /= rows.sum()
    for epsilon in (0.5, 1e-3):  # the scaling path, and the log-domain path (|scores / eps| ~ 1e4)
        for _ in range(10):
            scores = (torch.rand(16, 2, generator=generator) * 2 - 1) * 10
            res = sinkhorn(scores, epsilon, col_marginal=[0.25, 0.75], row_marginal=rows, return_info=True)
            assert (res.labels <= 16 * rows[:, None]).all()


def test_l1_probabilities_accept_rounding_and_clamp_it():
    just_above = torch.tensor([0.2, 1.0000001])  # one float32 ulp above 1
    torch.testing.assert_close(
        gaussian_rank_prior(torch.arange(10.0), just_above, 0.3),
        gaussian_rank_prior(torch.arange(10.0), torch.tensor([0.2, 1.0]), 0.3),
    )
    torch.testing.assert_close(foreground_marginal(torch.tensor([1.0000001, 1.0])), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(foreground_marginal(torch.tensor([-1e-8, 0.0])), torch.tensor([0.0, 1.0]))
    with pytest.raises(InvalidArgumentError, match=r"cluster_fg must lie in \[0, 1\]"):
        gaussian_rank_prior(torch.rand(10), torch.tensor([0.2, 1.001]), sigma=0.3)
    with pytest.raises(InvalidArgumentError, match=r"fg_labels must lie in \[0, 1\]"):
        foreground_marginal(torch.tensor([1.001, 0.0]))


# L2 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_l2_half_precision_marginals_are_judged_at_their_precision(dtype):
    """Was: "must sum to 1 ... 1.00048828125" for 25-30% of half-precision foreground marginals."""
    marginal = foreground_marginal(torch.tensor([1.0] + [0.0] * 49, dtype=dtype))
    labels = sinkhorn(torch.zeros(16, 2, dtype=dtype), col_marginal=marginal)
    assert labels.dtype == dtype and torch.isfinite(labels).all()
    third = torch.full((3,), 1 / 3, dtype=dtype)  # sums to 0.99976 in float16
    assert torch.isfinite(sinkhorn(torch.randn(9, 3).to(dtype), col_marginal=third)).all()
    for _ in range(50):  # random half-precision outputs of foreground_marginal
        beta = foreground_marginal(torch.rand(97).to(dtype))
        sinkhorn(torch.randn(8, 2).to(dtype), col_marginal=beta)
    with pytest.raises(InvalidArgumentError, match="col_marginal must sum to 1"):  # still judged
        sinkhorn(torch.zeros(16, 2, dtype=dtype), col_marginal=torch.tensor([0.6, 0.6], dtype=dtype))


# L3 ----------------------------------------------------------------------------------------------


def test_l3_autocast_does_not_lower_the_solver():
    """Was: rows off by up to 6.4e-3 in fixed mode, tol=1e-6 not converging, ragged raising."""
    scores = torch.from_numpy(cosine_scores(np.random.default_rng(0), 600, 12)).float()
    plain_fixed = sinkhorn(scores, 0.05)
    plain_tol = sinkhorn(scores, 0.05, tol=1e-6, max_iter=5000, return_info=True)
    plain_ragged = sinkhorn_ragged(scores, [0, 250, 600], 0.05, tol=1e-6, max_iter=5000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fixed = sinkhorn(scores, 0.05)
        tol = sinkhorn(scores, 0.05, tol=1e-6, max_iter=5000, return_info=True)
        ragged = sinkhorn_ragged(scores, [0, 250, 600], 0.05, tol=1e-6, max_iter=5000)
        prior = gaussian_rank_prior(torch.rand(600), torch.linspace(0, 1, 12), 0.2)
        with_prior = sinkhorn_with_prior(scores, prior, 0.05)
    assert fixed.dtype == torch.float32
    torch.testing.assert_close(fixed.sum(1), torch.ones(600), rtol=0, atol=1e-6)
    torch.testing.assert_close(fixed, plain_fixed, rtol=0, atol=1e-7)
    assert tol.converged and tol.n_iter == plain_tol.n_iter
    torch.testing.assert_close(tol.labels, plain_tol.labels, rtol=0, atol=1e-7)
    torch.testing.assert_close(ragged, plain_ragged, rtol=0, atol=1e-7)
    torch.testing.assert_close(with_prior, sinkhorn_with_prior(scores, prior, 0.05), rtol=0, atol=1e-7)


# L4 ----------------------------------------------------------------------------------------------

_PEAK_MEMORY = textwrap.dedent(
    """
    import resource, sys, torch
    sys.path.insert(0, {root!r})
    from otlabel import sinkhorn, sinkhorn_ragged
    torch.set_num_threads(1)
    scores = torch.randn(20000, 16, generator=torch.Generator().manual_seed(0))
    n_iter = int(sys.argv[1])
    if sys.argv[2] == "dense":
        sinkhorn(scores, 0.5, n_iter=n_iter)
    else:
        sinkhorn_ragged(scores, [0, 7000, 20000], 0.5, n_iter=n_iter)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB
    """
)


@pytest.mark.parametrize("kind", ["dense", "ragged"])
def test_l4_memory_does_not_grow_with_n_iter(kind):
    """Was: every iteration's sums were kept (N = 20000, n_iter = 4000 peaked 2-5x higher)."""
    script = _PEAK_MEMORY.format(root=str(ROOT))

    def peak(n_iter: int) -> int:
        out = subprocess.run([sys.executable, "-c", script, str(n_iter), kind], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    short, long = peak(10), peak(4000)
    # 4000 iterations' sums would be 4000 * (20000 + 16) * 4 bytes = 320 MB
    assert long - short < 40_000, (short, long)


def test_l4_long_healthy_runs_stay_on_the_scaling_path():
    scores = torch.from_numpy(cosine_scores(np.random.default_rng(1), 300, 8)).float()
    res = sinkhorn(scores, 0.05, n_iter=200, return_info=True)
    assert not res.log_domain  # the running health value folds correctly past 8 iterations
    torch.testing.assert_close(res.labels, sinkhorn(scores.double(), 0.05, n_iter=200).float(), rtol=0, atol=1e-5)


# L5 ----------------------------------------------------------------------------------------------


def test_l5_a_sharp_prior_labels_through_its_log():
    """Was: 35 all-zero rows (documented strictly positive), then refused by sinkhorn_with_prior."""
    torch.manual_seed(0)
    fg, levels = torch.rand(50), torch.tensor([0.0, 1.0])
    with pytest.raises(InvalidArgumentError, match=r"sigma = 0.01 is so small that \d+ row\(s\).*log=True"):
        gaussian_rank_prior(fg, levels, sigma=0.01)
    log_prior = gaussian_rank_prior(fg, levels, sigma=0.01, log=True)
    assert torch.isfinite(log_prior).all()
    labels = sinkhorn_with_prior(torch.zeros(50, 2), log_prior, 0.05, log_prior=True, n_iter=20)
    assert torch.isfinite(labels).all()
    # the sharp prior decides: snippets ranked in the lower half go to the level-0 cluster
    ranks = fg.argsort().argsort()
    assert (labels.argmax(1) == (ranks >= 25).long()).all()
    # where the plain prior is representable, its log labels identically
    soft = gaussian_rank_prior(fg, levels, sigma=0.3)
    log_soft = gaussian_rank_prior(fg, levels, sigma=0.3, log=True)
    torch.testing.assert_close(log_soft.exp(), soft)
    torch.testing.assert_close(
        sinkhorn_with_prior(torch.zeros(50, 2), log_soft, 0.05, log_prior=True),
        sinkhorn_with_prior(torch.zeros(50, 2), soft, 0.05),
    )


def test_l5_a_huge_sigma_is_a_flat_prior_not_nan():
    """Was: sigma=1e40 gave an all-NaN prior, silently."""
    prior = gaussian_rank_prior(torch.rand(50), torch.tensor([0.0, 1.0]), sigma=1e40)
    torch.testing.assert_close(prior, torch.full((50, 2), 1 / 100))


def test_l5_log_prior_zeros_are_hard_and_bad_entries_are_named():
    scores = torch.randn(6, 3)
    log_prior = torch.zeros(6, 3)
    log_prior[0, 1:] = -torch.inf
    labels = sinkhorn_with_prior(scores, log_prior, 0.5, log_prior=True, col_marginal=[0.5, 0.25, 0.25])
    assert (labels[0, 1:] == 0).all()
    with pytest.raises(InvalidArgumentError, match="log_prior contains NaN or \\+inf"):
        sinkhorn_with_prior(scores, torch.full((6, 3), torch.inf), 0.5, log_prior=True)
    with pytest.raises(InvalidArgumentError, match="log_prior has an all-zero row"):
        sinkhorn_with_prior(scores, torch.full((6, 3), -torch.inf), 0.5, log_prior=True)


# L6 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "epsilon"), [(1.0, 1e-40), (1e37, 0.05)])
def test_l6_overflowing_scores_over_epsilon_are_named_not_blamed_on_a_prior(scale, epsilon):
    """Was: InfeasibleProblemError "... within the prior's support" with no prior given."""
    with pytest.raises(InvalidArgumentError, match=r"scores / epsilon reaches .* raise epsilon or rescale") as info:
        sinkhorn(torch.randn(64, 4) * scale, epsilon=epsilon)
    assert not isinstance(info.value, InfeasibleProblemError)


def test_l6_large_but_representable_ranges_are_computed():
    scores = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 1e3
    labels = sinkhorn(scores, 1e-3, n_iter=20)  # |scores / epsilon| ~ 3e6
    assert torch.isfinite(labels).all()
    torch.testing.assert_close(labels.sum(1), torch.ones(64), rtol=0, atol=1e-5)
    # tolerance mode: a plan this close to a hard assignment balances its columns in millions of
    # iterations (as in float64): it says so, and what it returns is still a labelling
    with pytest.warns(ConvergenceWarning):
        res = sinkhorn(scores, 1e-3, tol=1e-4, max_iter=200, return_info=True)
    assert torch.isfinite(res.labels).all() and res.row_error < 1e-5


# L7 ----------------------------------------------------------------------------------------------


def _l7_prior() -> torch.Tensor:
    prior = torch.rand(6, 3, generator=torch.Generator().manual_seed(0)) + 0.1
    prior[:4, 1:] = 0  # rows 0-3 (4 units of mass) can only reach column 0 (2 units)
    return prior


@pytest.mark.parametrize("mode", [{}, {"tol": 1e-6}])
def test_l7_an_infeasible_support_is_decided_before_iterating(mode):
    """Was: 1,000 iterations to a 100% column error and a "raise max_iter" warning (tol mode), or
    column sums off by 2 of 2, silently (fixed mode)."""
    with pytest.raises(InfeasibleProblemError, match=r"rows \[0, 1, 2, 3\].*must send mass 4.*only on columns \[0\]"):
        sinkhorn_with_prior(torch.randn(6, 3), _l7_prior(), **mode)


def test_l7_the_decision_is_exact_at_the_boundary():
    prior = _l7_prior()
    # column 0 may take exactly the 4 units rows 0-3 must send: feasible (on the boundary)
    sinkhorn_with_prior(torch.randn(6, 3), prior, col_marginal=[4 / 6, 1 / 6, 1 / 6])
    # a hair less is not
    with pytest.raises(InfeasibleProblemError, match="columns \\[0\\]"):
        sinkhorn_with_prior(
            torch.randn(6, 3, dtype=torch.float64), prior.double(), col_marginal=[4 / 6 - 1e-9, 1 / 6 + 1e-9, 1 / 6]
        )


@pytest.mark.parametrize("seed", range(30))
def test_l7_random_supports_agree_with_a_brute_force_hall_check(seed):
    """Feasible exactly when every set of rows may send its mass to the columns it reaches."""
    import itertools

    rng = np.random.default_rng(seed)
    n_rows, n_cols = 6, 4
    support = rng.random((n_rows, n_cols)) < 0.45
    support[np.arange(n_rows), rng.integers(0, n_cols, n_rows)] = True
    support[rng.integers(0, n_rows, n_cols), np.arange(n_cols)] = True
    col = rng.dirichlet(np.ones(n_cols))
    feasible = all(
        len(rows) <= n_rows * col[support[list(rows)].any(0)].sum() + 1e-12
        for size in range(1, n_rows + 1)
        for rows in itertools.combinations(range(n_rows), size)
    )
    prior = torch.from_numpy(np.where(support, rng.uniform(0.1, 1, support.shape), 0.0))
    call = lambda: sinkhorn_with_prior(torch.zeros(n_rows, n_cols, dtype=torch.float64), prior, col_marginal=col)  # noqa: E731
    if feasible:
        assert torch.isfinite(call()).all()
    else:
        with pytest.raises(InfeasibleProblemError):
            call()


def test_l7_batched_and_ragged_name_their_problem():
    prior = torch.stack([torch.ones(6, 3), _l7_prior()])
    with pytest.raises(InfeasibleProblemError, match="in problem 1"):
        sinkhorn_with_prior(torch.randn(2, 6, 3), prior)
    packed = torch.cat([torch.ones(5, 3), _l7_prior()])
    with pytest.raises(InfeasibleProblemError, match=r"\(group 1\).*rows \[0, 1, 2, 3\]"):
        sinkhorn_ragged(torch.randn(11, 3), [0, 5, 11], prior=packed)


# L8 ----------------------------------------------------------------------------------------------


def test_l8_float16_labels_that_overflow_are_an_error():
    """Was: inf labels (one row carrying a mass of 70000 > 65504)."""
    rows = torch.zeros(70000)
    rows[0] = 1
    with pytest.raises(InvalidArgumentError, match="beyond float16's largest number 65504"):
        sinkhorn(torch.randn(70000, 1).half(), row_marginal=rows)
    labels = sinkhorn(torch.randn(70000, 1).bfloat16(), row_marginal=rows)  # bfloat16 holds it
    assert torch.isfinite(labels).all() and labels[0, 0] == 70000


# L9 ----------------------------------------------------------------------------------------------


def test_l9_big_endian_numpy_is_accepted():
    scores = np.random.default_rng(0).standard_normal((6, 3))
    labels = sinkhorn(scores.astype(">f8"), 0.5)
    np.testing.assert_array_equal(labels, sinkhorn(scores, 0.5))
    prior = sinkhorn_with_prior(scores, np.ones((6, 3)).astype(">f4"), 0.5)
    np.testing.assert_allclose(prior, labels)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"col_marginal": [[0.5, 0.5], [1.0]]}, ArgumentTypeError, "rectangular sequence.*rows of different lengths"),
        ({"ptr": [0, 2**70, 10]}, InvalidArgumentError, r"ptr entries must lie in \[0, N\] = \[0, 10\]"),
        ({"ptr": [0, -3, 10]}, InvalidArgumentError, r"ptr entries must lie in \[0, N\]"),
        ({"col_marginal": [[0.5, 0.5, 0.0]]}, InvalidArgumentError, r"col_marginal must have shape \(K,\)"),
    ],
)
def test_l9_ragged_arguments_get_our_errors(kwargs, error, match):
    """Was: errors from deep inside numpy and torch."""
    arguments = {"ptr": [0, 3, 10], **kwargs}
    with pytest.raises(error, match=match):
        sinkhorn_ragged(torch.randn(10, 3), **arguments)


# L10 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["no", 1, None, np.array(True)])
def test_l10_return_info_must_be_a_bool_everywhere(value):
    """Was: return_info="no" accepted without a process group (and rejected with one)."""
    for call in (
        lambda: sinkhorn(torch.randn(6, 3), return_info=value),
        lambda: sinkhorn_with_prior(torch.randn(6, 3), torch.ones(6, 3), return_info=value),
        lambda: sinkhorn_ragged(torch.randn(6, 3), [0, 6], return_info=value),
    ):
        with pytest.raises(ArgumentTypeError, match="return_info must be a bool"):
            call()


# L-new-6 -----------------------------------------------------------------------------------------
# With mass, col_bounds or a penalty, tolerance mode stops on stationarity (the largest relative
# change of a scaling in the last iteration), not on the column-marginal error, which such a
# problem need not drive to zero: the warning said "column-marginal error" for either number.

_STATIONARY = {
    "col_penalty": {"col_penalty": 0.5},
    "row_penalty": {"row_penalty": 0.5},
    "mass": {"mass": 0.6},
    "col_bounds": {"col_bounds": (torch.full((4,), 0.24, dtype=torch.float64), None)},
}


@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("option", list(_STATIONARY))
def test_l_new_6_the_warning_names_the_stopping_measure(option, ragged):
    scores = 4 * torch.randn(30, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kwargs = dict(tol=1e-12, max_iter=3, check_every=1, **_STATIONARY[option])
    with pytest.warns(ConvergenceWarning) as caught:
        if ragged:
            sinkhorn_ragged(scores, [0, 12, 30], 0.05, **kwargs)
        else:
            sinkhorn(scores, 0.05, **kwargs)
    message = str(caught[0].message)
    assert "stationarity" in message and "column-marginal error" not in message, message


@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
def test_l_new_6_the_balanced_problem_still_reports_its_column_error(ragged):
    scores = 4 * torch.randn(30, 4, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="column-marginal error"):
        if ragged:
            sinkhorn_ragged(scores, [0, 12, 30], 0.05, tol=1e-12, max_iter=3)
        else:
            sinkhorn(scores, 0.05, tol=1e-12, max_iter=3)


# L-new-4 -----------------------------------------------------------------------------------------


def _same_result(got, expected) -> None:
    assert torch.equal(got.labels, expected.labels)
    assert torch.equal(torch.as_tensor(got.n_iter), torch.as_tensor(expected.n_iter))
    assert torch.equal(got.log_col_scaling, expected.log_col_scaling)


@pytest.mark.parametrize("values", [[0.0, 0.1], [0.0, 0.1, 0.2]], ids=["K=2", "K=3"])
def test_l_new_4_a_list_of_numbers_is_the_column_potential(values):
    """Was: init=[0.0, 0.1, 0.2] refused as a malformed (log_row_scaling, log_col_scaling) pair,
    and init=[0.0, 0.1] read as that pair, f = 0.0 and g = 0.1 (refused with a confusing message)."""
    scores = torch.randn(7, len(values), dtype=torch.float64)
    g = torch.tensor(values, dtype=torch.float64)
    for mode in ({"tol": 1e-6}, {"n_iter": 2}):
        expected = sinkhorn(scores, 0.5, init=g, return_info=True, **mode)
        for init in (values, tuple(values), np.array(values), [np.float64(v) for v in values]):
            _same_result(sinkhorn(scores, 0.5, init=init, return_info=True, **mode), expected)
    cold = sinkhorn(scores, 0.5, n_iter=2)
    assert not torch.equal(sinkhorn(scores, 0.5, n_iter=2, init=values), cold)  # the start is used


@pytest.mark.parametrize("batch", [2, 3])
def test_l_new_4_batched_scores_take_rows_of_numbers(batch):
    """(B, K) nested lists are the batch's column potentials, as a (B, K) tensor is; with B = 2
    the two rows are not a pair (f, g), since f would need N = 5 numbers, not K = 3."""
    scores = torch.randn(batch, 5, 3, dtype=torch.float64)
    g = torch.linspace(-0.3, 0.3, batch * 3, dtype=torch.float64).reshape(batch, 3)
    for mode in ({"tol": 1e-6}, {"n_iter": 2}):
        expected = sinkhorn(scores, 0.5, init=g, return_info=True, **mode)
        for init in (g.tolist(), [tuple(row) for row in g.tolist()], g.numpy()):
            _same_result(sinkhorn(scores, 0.5, init=init, return_info=True, **mode), expected)


def test_l_new_4_the_pair_forms_still_work_and_ambiguity_is_refused():
    scores = torch.randn(6, 3, dtype=torch.float64)
    first = sinkhorn(scores, 0.5, tol=1e-6, return_info=True)
    f, g = first.log_row_scaling, first.log_col_scaling
    fixed = {"n_iter": 2, "return_info": True}
    expected = sinkhorn(scores, 0.5, init=(f, g), **fixed)
    _same_result(sinkhorn(scores, 0.5, init=first, **fixed), expected)
    for pair in ([f, g], (f.numpy(), g.numpy()), (f.tolist(), g.tolist())):
        _same_result(sinkhorn(scores, 0.5, init=pair, **fixed), expected)
    by_g = sinkhorn(scores, 0.5, init=g, **fixed)
    for pair in ((None, g), [None, g.tolist()], g.numpy()):
        _same_result(sinkhorn(scores, 0.5, init=pair, **fixed), by_g)
    # ragged: (log_row_scaling (N,), log_col_scaling (G, K)) of a previous call, and (G, K) lists alone
    ragged = sinkhorn_ragged(scores, [0, 2, 6], 0.5, tol=1e-6, return_info=True)
    expected = sinkhorn_ragged(scores, [0, 2, 6], 0.5, init=ragged, **fixed)
    pair = (ragged.log_row_scaling.tolist(), ragged.log_col_scaling.tolist())
    _same_result(sinkhorn_ragged(scores, [0, 2, 6], 0.5, init=pair, **fixed), expected)
    expected = sinkhorn_ragged(scores, [0, 2, 6], 0.5, init=ragged.log_col_scaling, **fixed)
    _same_result(sinkhorn_ragged(scores, [0, 2, 6], 0.5, init=ragged.log_col_scaling.tolist(), **fixed), expected)
    # two rows of K numbers for two problems of N = K rows: either reading fits, so neither is guessed
    with pytest.raises(ArgumentTypeError, match="two rows of 3 numbers"):
        sinkhorn(torch.randn(2, 3, 3), 0.5, init=[[0.0, 0.1, 0.2], [0.0, 0.1, 0.2]])
    for bad in ((f, g, g), [0.0, None], [0.0, g]):
        with pytest.raises(ArgumentTypeError, match="init must be a result"):
            sinkhorn(scores, 0.5, init=bad)
    with pytest.raises(ArgumentTypeError, match="rows of different lengths"):
        sinkhorn(torch.randn(3, 4, 2), 0.5, init=[[0.0, 0.1], [0.0], [0.0, 0.1]])


# L-new-1 -----------------------------------------------------------------------------------------


def _partial_reference(scores: np.ndarray, epsilon: float, mass: float) -> np.ndarray:
    """Entropic partial transport (rows and columns at most 1 and N/K, a total of mass * N) by a
    generic convex solver. POT's entropic_partial_wasserstein stops, as we did, when its plan
    stops moving, and stalls at the same wrong plans near mass 1."""
    minimize = pytest.importorskip("scipy.optimize").minimize
    n_rows, n_cols = scores.shape
    logits = scores / epsilon

    def objective(x):
        return np.sum(x * (np.log(x) - logits.ravel()) - x)

    def gradient(x):
        return np.log(x) - logits.ravel()

    constraints = [
        {"type": "ineq", "fun": lambda x: 1 - x.reshape(n_rows, n_cols).sum(1)},
        {"type": "ineq", "fun": lambda x: n_rows / n_cols - x.reshape(n_rows, n_cols).sum(0)},
        {"type": "eq", "fun": lambda x: x.sum() - mass * n_rows},
    ]
    start = np.full(n_rows * n_cols, mass / n_cols)
    bounds = [(1e-300, None)] * (n_rows * n_cols)
    result = minimize(
        objective, start, jac=gradient, constraints=constraints, bounds=bounds, method="SLSQP",
        options={"ftol": 1e-16, "maxiter": 10_000},
    )  # fmt: skip
    return result.x.reshape(n_rows, n_cols)


def test_l_new_1_partial_mass_close_to_one_is_not_called_converged_at_a_stall():
    """Was: the full transport (total 2.0, not 1.998) with converged=True after 160 iterations:
    rows held at their caps undo the total's step every iteration, so the scalings stood still
    while Dykstra's corrections still moved; the stopping test saw only the scalings."""
    scores = torch.tensor([[1.45, 4.80, -6.84, 0.78], [-3.30, 1.78, -3.94, -1.49]], dtype=torch.float64)
    res = sinkhorn(scores, 0.5, mass=0.999, tol=1e-9, return_info=True)
    assert res.converged
    assert abs(float(res.labels.sum()) - 1.998) < 1e-8
    torch.testing.assert_close(res.labels, sinkhorn(scores, 0.5, mass=0.999, n_iter=1500), rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.labels.numpy(), _partial_reference(scores.numpy(), 0.5, 0.999), atol=1e-7)


@pytest.mark.parametrize(
    ("scores", "mass"),
    [
        ([[-5.08, 0.25, 2.45, -0.78], [-3.38, -1.3, 7.35, 1.37]], 0.999),  # was: 2e-3 off, converged
        ([[-5.79, -0.83, 0.79], [-4.21, 5.21, 2.32]], 0.9999),  # was: all-zero labels, converged
    ],
)
def test_l_new_1_the_log_domain_stops_on_the_corrections_too(scores, mass):
    """float32 at epsilon 0.1: the log-domain path, whose stopping test had the same blind spot;
    the second problem also left the scaling path with an overflowed correction, which the
    health check did not see (the log domain then started from an infinite one)."""
    scores = torch.tensor(scores)
    expected = _partial_reference(scores.double().numpy(), 0.1, mass)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # slow near mass 1: not converged is honest
        res = sinkhorn(scores, 0.1, mass=mass, tol=1e-6, max_iter=2000, return_info=True)
    assert res.log_domain
    assert abs(float(res.labels.sum()) - mass * 2) < 1e-3  # not the all-zero labels
    if res.converged:
        np.testing.assert_allclose(res.labels.numpy(), expected, atol=5e-5)


def test_l_new_1_random_small_problems_near_full_mass_never_stop_early():
    """Was: 4 of these 80 problems off by up to 5e-4 with converged=True."""
    rng = np.random.default_rng(0)
    converged = 0
    for index in range(80):
        n_rows, n_cols = rng.integers(2, 6, size=2)
        scores = rng.normal(0, 3, (n_rows, n_cols))
        mass = (0.99, 0.999, 0.9999)[index % 3]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = sinkhorn(torch.from_numpy(scores), 0.5, mass=mass, tol=1e-9, max_iter=600, return_info=True)
        if res.converged:  # a slow problem may run out of iterations, but must then say so
            converged += 1
            np.testing.assert_allclose(res.labels.numpy(), _partial_reference(scores, 0.5, mass), atol=1e-6)
    assert converged >= 60


# L-new-2, L-new-3 --------------------------------------------------------------------------------

WARM_OPTIONS = {
    "mass": {"mass": 0.5},
    "lower": {"col_bounds": ([0.05] * 8, None)},
    "upper": {"col_bounds": (None, [0.2] * 8)},
}


def test_l_new_2_a_column_only_warm_start_with_mass_labels_the_mass():
    """Was: all-zero labels with converged=True (exp(-g0) overflowed in the first row step, which
    no health check saw, and the log domain restarted from inconsistent Dykstra corrections)."""
    torch.manual_seed(1)
    scores = torch.randn(64, 8) + torch.linspace(0, 3, 8)
    cold = sinkhorn(scores, 0.05, mass=0.5, tol=1e-5, return_info=True)
    warm = sinkhorn(scores, 0.05, mass=0.5, tol=1e-5, return_info=True, init=cold.log_col_scaling)
    assert warm.converged and abs(float(warm.labels.sum()) - 32.0) < 1e-3


@pytest.mark.parametrize(
    ("dtype", "epsilon", "option", "ragged"),
    [
        (dtype, epsilon, option, False)
        for dtype in (torch.float32, torch.float64)
        for epsilon in (0.05, 0.02)
        for option in WARM_OPTIONS
    ]
    + [(dtype, 0.05, option, True) for dtype in (torch.float32, torch.float64) for option in WARM_OPTIONS],
)
def test_l_new_2_and_3_every_warm_start_keeps_the_cold_answer(dtype, epsilon, option, ragged):
    """Was: all-zero labels (mass), InfeasibleProblemError "check the prior's zeros" with no prior
    (col_bounds), or wrong columns with a ConvergenceWarning (potentials of +-1000), from a
    column potential alone; 18 of the reviewer's 432 warm-start cases."""
    torch.manual_seed(1)
    scores = (torch.randn(64, 8) + torch.linspace(0, 3, 8)).to(dtype)
    tol, atol = (1e-5, 1e-3) if dtype == torch.float32 else (1e-7, 1e-5)
    n_problems = 2 if ragged else 1

    def label(init=None):
        common = {"tol": tol, "max_iter": 3000, "return_info": True, "init": init, **WARM_OPTIONS[option]}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            if ragged:
                return sinkhorn_ragged(scores, [0, 21, 64], epsilon, **common)
            return sinkhorn(scores, epsilon, **common)

    cold = label()
    generator = torch.Generator().manual_seed(0)
    starts = {
        "result": cold,
        "column": cold.log_col_scaling,
        "pair": (cold.log_row_scaling, cold.log_col_scaling),
        "random": 5 * torch.randn(n_problems, 8, generator=generator, dtype=dtype).squeeze(0),
    }
    if dtype == torch.float64:
        starts["spread"] = 1000 * (2 * torch.rand(n_problems, 8, generator=generator, dtype=dtype) - 1).squeeze(0)
    for name, init in starts.items():
        warm = label(init)
        assert bool(np.all(np.asarray(warm.converged))), name
        torch.testing.assert_close(warm.labels, cold.labels, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("option", WARM_OPTIONS)
def test_l_new_2_and_3_column_potentials_far_from_the_answer_keep_it(option):
    """Was: all-zero labels (mass) or InfeasibleProblemError (lower bounds) from [1e5, 0, ...]."""
    scores = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    common = {"tol": 1e-10, "max_iter": 100_000, **WARM_OPTIONS[option]}
    cold = sinkhorn(scores, 0.1, **common)
    for init in ([1e5] + [0.0] * 7, [80.0] + [0.0] * 7, [-math.inf] + [0.0] * 7):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warm = sinkhorn(scores, 0.1, init=torch.tensor(init, dtype=torch.float64), **common)
            warm32 = sinkhorn(
                scores.float(), 0.1, tol=1e-5, max_iter=5000, init=torch.tensor(init), **WARM_OPTIONS[option]
            )
        torch.testing.assert_close(warm, cold, rtol=0, atol=1e-8)
        torch.testing.assert_close(warm32.double(), cold, rtol=0, atol=1e-3)
