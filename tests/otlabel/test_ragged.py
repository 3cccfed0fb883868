"""sinkhorn_ragged: G packed problems in one call equal a Python loop of sinkhorn over the groups."""

from __future__ import annotations

import doctest
import importlib.util
import sys
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import otlabel
from otlabel import (
    ArgumentTypeError,
    BackendUnavailableError,
    ConvergenceWarning,
    InvalidArgumentError,
    RaggedSinkhornResult,
    sinkhorn,
    sinkhorn_ragged,
    sinkhorn_with_prior,
)

HAS_TORCH_SCATTER = importlib.util.find_spec("torch_scatter") is not None
SEGMENTS = [
    "torch",
    pytest.param(
        "torch_scatter",
        marks=pytest.mark.skipif(not HAS_TORCH_SCATTER, reason="torch-scatter is not installed (CI installs it)"),
    ),
]
SIZES = [4, 1, 9, 2, 13, 6]  # size-1 groups included


def _ptr(sizes: list[int]) -> torch.Tensor:
    return torch.tensor([0, *np.cumsum(sizes)], dtype=torch.int64)


def _problem(
    seed: int, sizes: list[int] = SIZES, n_cols: int = 4, dtype: torch.dtype = torch.float64, zeros: bool = False
) -> dict[str, Any]:
    """Packed scores, a prior, per-group column marginals and a packed row marginal.

    With ``zeros`` the prior has exact zeros and each group's column marginal is the column
    sums of a random plan on the prior's support, so every group stays strictly feasible.
    """
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    ptr = _ptr(sizes)
    prior = torch.rand(n, n_cols, generator=gen, dtype=torch.float64) + 0.05
    col = torch.rand(len(sizes), n_cols, generator=gen, dtype=torch.float64) + 0.2
    if zeros:
        prior[torch.rand(n, n_cols, generator=gen) < 0.3] = 0.0
        prior[torch.arange(n), torch.arange(n) % n_cols] = 1.0  # no all-zero row
        for g, lo in enumerate(ptr[:-1].tolist()):
            prior[lo, :] = torch.where(prior[lo, :] > 0, prior[lo, :], 0.5)  # every column reachable
            plan = prior[lo : ptr[g + 1]] * (
                torch.rand(ptr[g + 1] - lo, n_cols, generator=gen, dtype=torch.float64) + 0.1
            )
            col[g] = (plan / plan.sum(1, keepdim=True)).sum(0)
    row = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    for lo, hi in zip(ptr[:-1].tolist(), ptr[1:].tolist()):
        row[lo:hi] /= row[lo:hi].sum()
    return {
        "scores": torch.randn(n, n_cols, generator=gen, dtype=torch.float64).to(dtype),
        "ptr": ptr,
        "prior": prior,
        "col_per_group": col / col.sum(1, keepdim=True),
        "row": row,
    }


def _loop(problem: dict[str, Any], epsilon: float, *, prior: bool, col: str, row: bool, **kwargs: Any) -> list[Any]:
    """The reference: one sinkhorn (or sinkhorn_with_prior) call per group."""
    ptr = problem["ptr"].tolist()
    results = []
    for g, (lo, hi) in enumerate(zip(ptr[:-1], ptr[1:])):
        options = dict(kwargs, return_info=True)
        if col == "shared":
            options["col_marginal"] = problem["col_per_group"][0]
        elif col == "per_group":
            options["col_marginal"] = problem["col_per_group"][g]
        if row:
            options["row_marginal"] = problem["row"][lo:hi]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if prior:
                results.append(
                    sinkhorn_with_prior(problem["scores"][lo:hi], problem["prior"][lo:hi], epsilon, **options)
                )
            else:
                results.append(sinkhorn(problem["scores"][lo:hi], epsilon, **options))
    return results


def _ragged(problem: dict[str, Any], epsilon: float, *, prior: bool, col: str, row: bool, **kwargs: Any) -> Any:
    options = dict(kwargs)
    if col == "shared":
        options["col_marginal"] = problem["col_per_group"][0]
    elif col == "per_group":
        options["col_marginal"] = problem["col_per_group"]
    if row:
        options["row_marginal"] = problem["row"]
    if prior:
        options["prior"] = problem["prior"]
    return sinkhorn_ragged(problem["scores"], problem["ptr"], epsilon, **options)


@pytest.mark.parametrize("segments", SEGMENTS)
@pytest.mark.parametrize("mode", [{}, {"n_iter": 7}, {"tol": 1e-9}, {"tol": 1e-3, "check_every": 3}])
@pytest.mark.parametrize(
    ("prior", "col", "row"),
    [
        (False, "uniform", False),
        (True, "uniform", False),
        (False, "per_group", True),
        (True, "shared", True),
        (True, "per_group", False),
    ],
)
def test_equals_a_loop_over_the_groups(segments: str, mode: dict[str, Any], prior: bool, col: str, row: bool) -> None:
    problem = _problem(1)
    expected = _loop(problem, 0.4, prior=prior, col=col, row=row, **mode)
    got = _ragged(problem, 0.4, prior=prior, col=col, row=row, segments=segments, return_info=True, **mode)
    assert isinstance(got, RaggedSinkhornResult) and got.segments == segments
    ptr = problem["ptr"].tolist()
    for g, (lo, hi) in enumerate(zip(ptr[:-1], ptr[1:])):
        torch.testing.assert_close(got.labels[lo:hi], expected[g].labels, rtol=0, atol=1e-9, msg=f"group {g}")
        torch.testing.assert_close(got.log_row_scaling[lo:hi], expected[g].log_row_scaling, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got.log_col_scaling[g], expected[g].log_col_scaling, rtol=1e-9, atol=1e-9)
    # per-group diagnostics: a group stops where it would on its own
    assert got.n_iter.tolist() == [r.n_iter for r in expected]
    if "tol" in mode:
        assert got.converged.tolist() == [r.converged for r in expected]
    else:
        assert got.converged is None
    torch.testing.assert_close(
        got.col_error, torch.tensor([r.col_error for r in expected], dtype=torch.float64), rtol=1e-6, atol=1e-12
    )
    assert float(got.row_error.max()) <= 1e-12
    assert got.log_domain is False


def test_auto_uses_the_plain_torch_reductions() -> None:
    problem = _problem(2)
    got = sinkhorn_ragged(problem["scores"], problem["ptr"], 0.5, return_info=True)
    assert got.segments == "torch"


def test_equal_size_groups_equal_the_batched_call() -> None:
    scores = torch.randn(5 * 8, 3, dtype=torch.float64)
    ptr = torch.arange(0, 41, 8)
    batched = sinkhorn(scores.view(5, 8, 3), 0.3, n_iter=4)
    torch.testing.assert_close(sinkhorn_ragged(scores, ptr, 0.3, n_iter=4), batched.reshape(40, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("prior", "col", "row"),
    [(False, "uniform", False), (True, "per_group", True), (True, "shared", False), (False, "per_group", True)],
)
def test_auto_labels_equal_size_groups_as_one_dense_batch(prior: bool, col: str, row: bool) -> None:
    """Fixed-iteration mode, equal sizes: "auto" runs the batched dense problem, with the
    loop's answer and the segment path's diagnostics."""
    problem = _problem(4, sizes=[6] * 7)
    expected = _loop(problem, 0.4, prior=prior, col=col, row=row, n_iter=5)
    dense = _ragged(problem, 0.4, prior=prior, col=col, row=row, n_iter=5, return_info=True)
    segment = _ragged(problem, 0.4, prior=prior, col=col, row=row, n_iter=5, return_info=True, segments="torch")
    assert dense.segments == "dense" and segment.segments == "torch"
    for g in range(7):
        rows = slice(6 * g, 6 * g + 6)
        torch.testing.assert_close(dense.labels[rows], expected[g].labels, rtol=0, atol=1e-10, msg=f"group {g}")
        torch.testing.assert_close(dense.log_row_scaling[rows], expected[g].log_row_scaling, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(dense.log_col_scaling[g], expected[g].log_col_scaling, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dense.labels, segment.labels, rtol=0, atol=1e-10)
    assert dense.n_iter.tolist() == [5] * 7 and dense.converged is None and dense.log_domain is False
    torch.testing.assert_close(dense.col_error, segment.col_error, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(dense.row_error, segment.row_error, rtol=0, atol=1e-12)
    # labels alone (no potentials asked for) are the same
    torch.testing.assert_close(_ragged(problem, 0.4, prior=prior, col=col, row=row, n_iter=5), dense.labels)


def test_dense_path_is_only_for_equal_sizes_in_fixed_mode() -> None:
    problem = _problem(5, sizes=[6] * 4)
    assert sinkhorn_ragged(problem["scores"], problem["ptr"], 0.5, tol=1e-6, return_info=True).segments == "torch"
    uneven = _problem(5, sizes=[5, 7, 6, 6])  # N = 24 = 4 * 6, but not equal sizes
    assert sinkhorn_ragged(uneven["scores"], uneven["ptr"], 0.5, return_info=True).segments == "torch"


def test_dense_path_stays_finite_and_validates() -> None:
    """Wide float32 scores take the log-domain replay on the dense path too; bad input still
    gets the ragged errors (checked before any path is chosen)."""
    gen = torch.Generator().manual_seed(8)
    scores = 10 * torch.randn(4 * 25, 4, generator=gen)
    scores[25:50] += 5000
    ptr = torch.arange(0, 101, 25)
    got = sinkhorn_ragged(scores, ptr, 1e-3, return_info=True)
    assert got.segments == "dense" and torch.isfinite(got.labels).all()
    torch.testing.assert_close(got.labels.sum(1), torch.ones(100), rtol=0, atol=1e-5)
    segment = sinkhorn_ragged(scores, ptr, 1e-3, segments="torch")
    torch.testing.assert_close(got.labels, segment, rtol=0, atol=1e-5)
    bad = scores.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(InvalidArgumentError, match="scores"):
        sinkhorn_ragged(bad, ptr, 0.5)
    with pytest.raises(InvalidArgumentError, match="prior"):
        sinkhorn_ragged(scores, ptr, 0.5, prior=-torch.ones(100, 4))


@pytest.mark.parametrize("segments", SEGMENTS)
def test_prior_zeros_are_hard_constraints_per_group(segments: str) -> None:
    problem = _problem(3, zeros=True)
    got = _ragged(problem, 0.5, prior=True, col="per_group", row=False, tol=1e-10, segments=segments)
    expected = _loop(problem, 0.5, prior=True, col="per_group", row=False, tol=1e-10)
    ptr = problem["ptr"].tolist()
    assert torch.all(got[problem["prior"] == 0] == 0)
    for g, (lo, hi) in enumerate(zip(ptr[:-1], ptr[1:])):
        torch.testing.assert_close(got[lo:hi], expected[g].labels, rtol=0, atol=1e-9)
        torch.testing.assert_close(got[lo:hi].sum(0), problem["col_per_group"][g] * (hi - lo), rtol=1e-8, atol=1e-12)


def test_marginals_hold_per_group() -> None:
    problem = _problem(3)
    got = _ragged(problem, 0.5, prior=True, col="per_group", row=True, tol=1e-10)
    ptr = problem["ptr"].tolist()
    for g, (lo, hi) in enumerate(zip(ptr[:-1], ptr[1:])):
        n = hi - lo
        torch.testing.assert_close(got[lo:hi].sum(1), problem["row"][lo:hi] * n, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got[lo:hi].sum(0), problem["col_per_group"][g] * n, rtol=1e-8, atol=1e-12)


def test_numpy_in_numpy_out_and_half_precision() -> None:
    problem = _problem(4)
    scores, ptr = problem["scores"].numpy(), problem["ptr"].numpy()
    out = sinkhorn_ragged(scores, ptr, 0.5, return_info=True)
    assert isinstance(out.labels, np.ndarray) and isinstance(out.n_iter, np.ndarray)
    np.testing.assert_allclose(out.labels, sinkhorn_ragged(problem["scores"], problem["ptr"], 0.5).numpy(), atol=1e-12)
    half = sinkhorn_ragged(problem["scores"].half(), list(problem["ptr"].tolist()), 0.5)
    assert half.dtype == torch.float16
    torch.testing.assert_close(
        half.float(), sinkhorn_ragged(problem["scores"].float(), problem["ptr"], 0.5), atol=2e-3, rtol=0
    )


def test_inputs_are_read_never_modified_and_labels_carry_no_gradient() -> None:
    problem = _problem(5, dtype=torch.float32)
    scores = problem["scores"].clone().requires_grad_()
    prior = problem["prior"].float()
    before = (scores.detach().clone(), prior.clone())
    labels = sinkhorn_ragged(scores, problem["ptr"], 0.5, prior=prior, tol=1e-5)
    assert not labels.requires_grad
    assert torch.equal(scores.detach(), before[0]) and torch.equal(prior, before[1])


@pytest.mark.parametrize("segments", SEGMENTS)
def test_extreme_float32_scores_stay_finite(segments: str) -> None:
    """|scores / epsilon| ~ 1e4 and groups 1e6/epsilon apart: per-group shifts and the log domain."""
    gen = torch.Generator().manual_seed(6)
    sizes = [30, 7, 1, 12, 50]
    ptr = _ptr(sizes)
    scores = 10 * torch.randn(sum(sizes), 4, generator=gen)
    scores[ptr[1] : ptr[2]] += 5000  # one group far above the others
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        got = sinkhorn_ragged(scores, ptr, 1e-3, tol=1e-6, max_iter=100, segments=segments, return_info=True)
        expected = [
            sinkhorn(scores[lo:hi], 1e-3, tol=1e-6, max_iter=100, return_info=True) for lo, hi in zip(ptr[:-1], ptr[1:])
        ]
    assert torch.isfinite(got.labels).all() and got.log_domain
    torch.testing.assert_close(got.labels.sum(1), torch.ones(sum(sizes)), rtol=0, atol=1e-5)
    for g, (lo, hi) in enumerate(zip(ptr[:-1].tolist(), ptr[1:].tolist())):
        if expected[g].log_domain:  # the same path as the loop: the same answer
            torch.testing.assert_close(got.labels[lo:hi], expected[g].labels, rtol=0, atol=1e-5)
        assert got.n_iter[g] == expected[g].n_iter and got.converged[g] == expected[g].converged


def test_warns_once_counting_the_groups_that_missed_tol() -> None:
    problem = _problem(7)
    with pytest.warns(ConvergenceWarning, match=r"in \d+ of 6 groups"):
        got = sinkhorn_ragged(problem["scores"], problem["ptr"], 0.05, tol=1e-12, max_iter=3, return_info=True)
    assert not got.converged.all() and (got.n_iter == 3).all()


def _error(match: str, **overrides: Any) -> None:
    problem = _problem(8)
    kwargs = {"scores": problem["scores"], "ptr": problem["ptr"], "epsilon": 0.5, **overrides}
    with pytest.raises((InvalidArgumentError, ArgumentTypeError, BackendUnavailableError), match=match):
        sinkhorn_ragged(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"ptr": torch.tensor([1, 4, 35])}, "ptr must start at 0 and end at N = 35"),
        ({"ptr": torch.tensor([0, 4, 30])}, "ptr must start at 0 and end at N = 35"),
        ({"ptr": torch.tensor([0, 4, 4, 35])}, r"empty groups are an error\) \(first offending groups: \[1\]\)"),
        ({"ptr": torch.tensor([0, 20, 10, 35])}, "ptr must be strictly increasing"),
        ({"ptr": torch.tensor([0.0, 35.0])}, "ptr must hold int32 or int64"),
        ({"ptr": torch.tensor([[0, 35]])}, "ptr must be 1-D"),
        ({"ptr": torch.tensor([0])}, "G \\+ 1 >= 2 entries"),
        ({"ptr": "0,35"}, "ptr must be a 1-D integer tensor"),
        ({"ptr": torch.tensor([0, 35], device="meta")}, "ptr is on device meta"),
        ({"scores": torch.zeros(2, 35, 4)}, r"scores must have shape \(N, K\)"),
        (
            {"col_marginal": torch.full((7, 4), 0.25)},
            r"col_marginal must have shape \(K,\) = \(4,\) or \(G, K\) = \(6, 4\)",
        ),
        ({"col_marginal": torch.full((5,), 0.2)}, "col_marginal has 5 entries"),
        ({"row_marginal": torch.full((35,), 1 / 35)}, "row_marginal must sum to 1 within each group"),
        ({"prior": torch.ones(35, 3)}, "prior must have the shape"),
        ({"segments": "cuda"}, "segments must be one of"),
        ({"n_iter": 2, "tol": 1e-3}, "n_iter applies to the fixed-iteration mode only"),
        ({"epsilon": 0.0}, "epsilon must be a finite number > 0"),
    ],
)
def test_bad_input_names_the_argument(overrides: dict[str, Any], match: str) -> None:
    assert sum(SIZES) == 35 and len(SIZES) == 6  # the shapes the messages above quote
    _error(match, **overrides)


def test_a_prior_column_empty_within_one_group_is_an_error() -> None:
    problem = _problem(9)
    prior = problem["prior"].clone()
    prior[0:4, 2] = 0.0  # group 0 can never fill column 2 (other groups can)
    with pytest.raises(InvalidArgumentError, match="prior has an all-zero column within a group"):
        sinkhorn_ragged(problem["scores"], problem["ptr"], 0.5, prior=prior)


def test_torch_scatter_missing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_scatter", None)  # an import of it now fails
    _error("needs the torch-scatter package", segments="torch_scatter")


def test_docstring_examples_run() -> None:
    for name in ("otlabel.ragged", "otlabel.distributed"):
        result = doctest.testmod(sys.modules[name], optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, name
    assert otlabel.sinkhorn_ragged is sinkhorn_ragged
