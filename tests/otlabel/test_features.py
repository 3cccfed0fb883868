"""``sinkhorn_features``: labels of scores ``scale * X C^T`` streamed by row blocks, never formed.

Every option against :func:`~otlabel.sinkhorn` on the formed scores (1e-10 in float64, 1e-5 in
float32), block sizes from one row to more than N; the outputs (plan, hard, top-k) against the
dense plan's argmax and top-k on every entry point; passes counted; process groups of 2 and 3
gloo ranks against one process; bad input refused by name before any work.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from otlabel import (
    ArgumentTypeError,
    ConvergenceWarning,
    HardLabels,
    InvalidArgumentError,
    SinkhornResult,
    TopLabels,
    hard_labels,
    integer_quotas,
    sinkhorn,
    sinkhorn_features,
    sinkhorn_ragged,
    sinkhorn_with_prior,
)
from otlabel._front import Streaming, as_output, build_features, finish_features
from otlabel._options import Options
from otlabel._streamed import top_entries
from otlabel.backends import select

from .distributed_cases import offsets, run_world
from .distributed_features import CASES, SPLITS, global_inputs, label, worker

N, K, D = 203, 7, 12


def _inputs(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=gen, dtype=dtype), torch.randn(K, D, generator=gen, dtype=dtype)


def _scores(features: torch.Tensor, prototypes: torch.Tensor, scale: float, normalize: bool) -> torch.Tensor:
    if normalize:
        features = torch.nn.functional.normalize(features, dim=1)
        prototypes = torch.nn.functional.normalize(prototypes, dim=1)
    return scale * features @ prototypes.T


def _col(dtype: torch.dtype) -> torch.Tensor:
    col = torch.linspace(1.0, 3.0, K, dtype=dtype)
    return col / col.sum()


def _row(dtype: torch.dtype) -> torch.Tensor:
    row = torch.rand(N, generator=torch.Generator().manual_seed(5), dtype=dtype) + 0.2
    return row / row.sum()


#: name -> keywords (a callable value is made for the dtype)
OPTIONS: dict[str, dict[str, Any]] = {
    "fixed": {},
    "fixed/n_iter=7": {"n_iter": 7},
    "tolerance": {"tol": "tol"},
    "acceleration": {"tol": "tol", "acceleration": "anderson"},
    "col_marginal": {"tol": "tol", "col_marginal": _col},
    "row_marginal/fixed": {"n_iter": 4, "row_marginal": _row},
    "col_penalty": {"tol": "tol", "col_penalty": 0.7, "col_marginal": _col},
    "row_penalty": {"tol": "tol", "row_penalty": 0.7},
    "mass": {"tol": "tol", "mass": 0.6},
    "col_bounds": {"tol": "tol", "col_bounds": (torch.full((K,), 0.12), torch.full((K,), 0.16))},
    "init/fixed": {"n_iter": 3, "init": "init"},
    "init/column-only": {"tol": "tol", "init": "init_col"},
}
TOL = {torch.float64: 1e-11, torch.float32: 1e-6}
MATCH = {torch.float64: 1e-10, torch.float32: 1e-5}


def _keywords(name: str, dtype: torch.dtype, scores: torch.Tensor) -> dict[str, Any]:
    given: dict[str, Any] = {}
    for key, value in OPTIONS[name].items():
        if value == "tol":
            value = TOL[dtype]
        elif value in ("init", "init_col"):
            start = sinkhorn(scores * 0.9, 0.5, n_iter=2, return_info=True)
            value = start if value == "init" else start.log_col_scaling
        elif callable(value):
            value = value(dtype)
        given[key] = value
    if "tol" in given:
        given["max_iter"] = 100_000
    if dtype == torch.float32 and name in ("row_penalty", "mass"):
        # stationarity at 1e-6 leaves float32 plans ~1e-5 from the fixed point, wherever two
        # solvers' roundings stop them: iterate both to float32's fixed point (a fixed budget)
        given.update(tol=1e-9, max_iter=3000)
    return given


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("normalize", [False, True])
def test_equal_to_sinkhorn_on_the_formed_scores(dtype: torch.dtype, name: str, normalize: bool) -> None:
    features, prototypes = _inputs(dtype)
    scores = _scores(features, prototypes, 2.0, normalize)
    given = _keywords(name, dtype, scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = sinkhorn(scores, 0.5, return_info=True, **given)
    for chunk in (1, 50, 64, N + 100) if name == "fixed" else (50,):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            streamed = sinkhorn_features(
                features, prototypes, 0.5, scale=2.0, normalize=normalize, chunk_rows=chunk, return_info=True, **given
            )
        assert streamed.labels.dtype == dtype and streamed.labels.shape == (N, K)
        # (float32: relative too, for the entries above 1 of a row_penalty plan)
        rtol = 0 if dtype == torch.float64 else MATCH[dtype]
        torch.testing.assert_close(streamed.labels, dense.labels, rtol=rtol, atol=MATCH[dtype])
        if given.get("tol") != 1e-9:  # (float32 at 1e-9: two roundings' luck, not a criterion)
            assert streamed.n_iter == dense.n_iter or dtype == torch.float32
            assert streamed.converged == dense.converged
        torch.testing.assert_close(streamed.log_col_scaling, dense.log_col_scaling, rtol=0, atol=MATCH[dtype] * 100)
        assert streamed.col_error == pytest.approx(dense.col_error, abs=MATCH[dtype])


def test_outputs_match_the_dense_plan_and_every_entry_point_takes_them() -> None:
    features, prototypes = _inputs(torch.float64, seed=3)
    scores = _scores(features, prototypes, 1.0, True)
    plan = sinkhorn(scores, 0.2, tol=1e-12)
    for chunk in (1, 60, 1000):
        hard = sinkhorn_features(features, prototypes, 0.2, normalize=True, tol=1e-12, output="hard", chunk_rows=chunk)
        assert isinstance(hard, HardLabels) and hard.labels.dtype == torch.int64
        assert torch.equal(hard.labels, plan.argmax(1))
        torch.testing.assert_close(hard.mass, plan.max(1).values, rtol=0, atol=1e-10)
        top = sinkhorn_features(
            features, prototypes, 0.2, normalize=True, tol=1e-12, output="topk", top_k=3, chunk_rows=chunk
        )
        expected = torch.sort(plan, dim=1, descending=True, stable=True)
        assert isinstance(top, TopLabels)
        assert torch.equal(top.indices, expected.indices[:, :3])
        torch.testing.assert_close(top.values, expected.values[:, :3], rtol=0, atol=1e-10)
    # the dense entry points return the same types from the plan they hold
    assert torch.equal(sinkhorn(scores, 0.2, tol=1e-12, output="hard").labels, plan.argmax(1))
    prior = torch.ones_like(scores)
    topk = sinkhorn_with_prior(scores, prior, 0.2, tol=1e-12, output="topk", top_k=2)
    assert torch.equal(topk.indices, plan.topk(2, dim=1).indices)
    ragged = sinkhorn_ragged(scores, [0, 100, N], 0.2, output="hard")
    assert ragged.labels.shape == (N,)
    batched = sinkhorn(torch.stack([scores, -scores]), 0.2, output="topk", top_k=2, return_info=True)
    assert batched.labels.values.shape == (2, N, 2) and batched.labels.indices.shape == (2, N, 2)


def test_ties_go_to_the_lowest_column() -> None:
    """Exact ties (a plan's equal entries) go to the lower column, for hard labels and at every
    rank of the top-k, the k-th included; NaN rows (a failed device check) rank last."""
    plan = torch.tensor(
        [[0.2, 0.3, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25], [0.1, 0.4, 0.1, 0.4], [0.5, float("nan"), 0.5, 0.0]],
        dtype=torch.float64,
    )
    options = Options.make(output="hard")
    hard = as_output(plan, options, torch.float64, False)
    assert hard.labels.tolist()[:3] == [1, 0, 1]
    for k, expected in ((1, [[1], [0], [1]]), (2, [[1, 2], [0, 1], [1, 3]]), (3, [[1, 2, 0], [0, 1, 2], [1, 3, 0]])):
        top = as_output(plan, Options.make(output="topk", top_k=k), torch.float64, False)
        assert top.indices.tolist()[:3] == expected, k
        assert top.indices[3, 0].item() in (0, 2)  # NaN never ranks first
    streamed = top_entries(plan[:3], 3)
    assert streamed.indices.tolist() == [[1, 2, 0], [0, 1, 2], [1, 3, 0]]
    torch.testing.assert_close(streamed.values, plan[:3].gather(1, streamed.indices))


def test_differentiable_needs_the_plan() -> None:
    with pytest.raises(InvalidArgumentError, match="differentiable=True needs output='plan'"):
        sinkhorn(torch.randn(5, 3, requires_grad=True), output="hard", differentiable=True)


def test_half_precision_features_compute_in_float32() -> None:
    features, prototypes = _inputs(torch.float32)
    for dtype in (torch.bfloat16, torch.float16):
        x, c = features.to(dtype), prototypes.to(dtype)
        dense = sinkhorn(_scores(x.float(), c.float(), 2.0, True), 0.5, tol=1e-6)
        labels = sinkhorn_features(x, c, 0.5, scale=2.0, normalize=True, tol=1e-6)
        assert labels.dtype == dtype
        torch.testing.assert_close(labels.float(), dense, rtol=0, atol=torch.finfo(dtype).eps)
        hard = sinkhorn_features(x, c, 0.5, scale=2.0, normalize=True, tol=1e-6, output="hard")
        assert torch.equal(hard.labels, dense.argmax(1)) and hard.mass.dtype == dtype


def test_numpy_in_numpy_out_and_autocast() -> None:
    features, prototypes = _inputs(torch.float32)
    expected = sinkhorn_features(features, prototypes, 0.5, n_iter=3)
    labels = sinkhorn_features(features.numpy(), prototypes.numpy(), 0.5, n_iter=3)
    assert isinstance(labels, np.ndarray)
    np.testing.assert_allclose(labels, expected.numpy(), atol=1e-6)
    hard = sinkhorn_features(features.numpy(), prototypes.numpy(), 0.5, n_iter=3, output="hard")
    assert isinstance(hard.labels, np.ndarray) and hard.labels.dtype == np.int64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(sinkhorn_features(features, prototypes, 0.5, n_iter=3), expected)


def test_wide_scores_take_the_log_domain_and_stay_finite() -> None:
    features, prototypes = _inputs(torch.float32)
    scores = _scores(features, prototypes, 40.0, False)
    dense = sinkhorn(scores, 0.01, n_iter=3, return_info=True)
    streamed = sinkhorn_features(features, prototypes, 0.01, scale=40.0, n_iter=3, return_info=True, chunk_rows=37)
    assert torch.isfinite(streamed.labels).all()
    torch.testing.assert_close(streamed.labels, dense.labels, rtol=0, atol=1e-5)


def _passes(features: torch.Tensor, prototypes: torch.Tensor, **given: Any) -> int:
    options = Options.make(epsilon=0.5, **given)
    call = build_features(features, prototypes, options, Streaming(1.0, True, 50, 1))
    finish_features(call, select("torch", call.problem, call.schedule)(call.problem, call.schedule))
    return call.problem.layout.passes


def test_a_fixed_schedule_makes_n_iter_plus_one_passes_and_hard_labels_no_more() -> None:
    features, prototypes = _inputs(torch.float32)
    for n_iter in (1, 3, 6):
        assert _passes(features, prototypes, n_iter=n_iter, output="hard") == n_iter + 1
        assert _passes(features, prototypes, n_iter=n_iter, output="topk", top_k=2) == n_iter + 2
        assert _passes(features, prototypes, n_iter=n_iter) == n_iter + 2  # the plan: one more pass


def test_memory_stays_a_block_not_the_scores() -> None:
    """The largest tensor made while labelling is a block, never N x K (counted by a wrapper on
    the blocks the kernel makes: every N x K intermediate would go through it)."""
    features = torch.randn(5000, 8)
    prototypes = torch.randn(300, 8)
    from otlabel import _streamed

    seen: list[int] = []
    original = _streamed.StreamedKernel.block

    def block(self: Any, rows: slice) -> torch.Tensor:
        result = original(self, rows)
        seen.append(result.numel())
        return result

    _streamed.StreamedKernel.block = block  # type: ignore[method-assign]
    try:
        sinkhorn_features(features, prototypes, 0.5, n_iter=3, output="hard", chunk_memory=300 * 4 * 100)
        # |x| |c| / epsilon beyond one global shift: two more passes, for the row and column maxima
        assert len(seen) == 6 * 50
        seen.clear()
        sinkhorn_features(features, prototypes, 0.5, normalize=True, output="hard", chunk_memory=300 * 4 * 100)
    finally:
        _streamed.StreamedKernel.block = original  # type: ignore[method-assign]
    assert max(seen) == 100 * 300  # chunk_memory / (K * 4 bytes) rows per block
    assert len(seen) == 4 * 50


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"prototypes": torch.randn(K, D + 1)}, "features have d = 12 entries per row but prototypes have d = 13"),
        ({"features": torch.randn(N)}, "features must have shape (N, d)"),
        ({"prototypes": torch.randn(0, D)}, "prototypes must have K >= 1"),
        ({"features": torch.randn(0, D)}, "features has no rows"),
        ({"features": torch.full((N, D), float("nan"))}, "features contains NaN or infinite values"),
        ({"prototypes": torch.full((K, D), float("inf"))}, "prototypes contains NaN or infinite values"),
        ({"normalize": True, "features": torch.zeros(N, D)}, "features row 0 is all zeros"),
        ({"normalize": True, "prototypes": torch.zeros(K, D)}, "prototypes row 0 is all zeros"),
        ({"chunk_rows": 0}, "chunk_rows must be >= 1"),
        ({"chunk_memory": 0}, "chunk_memory must be >= 1"),
        ({"output": "topk", "top_k": K + 1}, "top_k must be at most K = 7"),
        ({"output": "soft"}, "output must be one of"),
        ({"scale": float("inf")}, "scale must be finite"),
        ({"scale": 1e38}, "scale * |features| * |prototypes| / epsilon reaches"),
        ({"col_marginal": torch.ones(K + 1) / (K + 1)}, "col_marginal has 8 entries but scores have K = 7"),
    ],
)
def test_bad_input_is_refused_by_name_before_any_work(change: dict[str, Any], fragment: str) -> None:
    features, prototypes = _inputs(torch.float32)
    arguments = {"features": features, "prototypes": prototypes, **change}
    with pytest.raises((InvalidArgumentError, ArgumentTypeError)) as raised:
        sinkhorn_features(arguments.pop("features"), arguments.pop("prototypes"), 0.5, **arguments)
    assert fragment in str(raised.value)


def test_integer_features_and_topk_on_the_dense_side_are_refused() -> None:
    with pytest.raises(ArgumentTypeError, match="features must hold floating-point numbers"):
        sinkhorn_features(torch.ones(4, 2, dtype=torch.int64), torch.ones(2, 2), 0.5)
    with pytest.raises(InvalidArgumentError, match="top_k must be at most K = 3"):
        sinkhorn(torch.randn(5, 3), output="topk", top_k=4)


def test_return_info_reports_the_plan_s_errors() -> None:
    features, prototypes = _inputs(torch.float64)
    for output in ("plan", "hard", "topk"):
        result = sinkhorn_features(features, prototypes, 0.5, n_iter=2, output=output, return_info=True)
        assert isinstance(result, SinkhornResult)
        assert result.row_error < 1e-12 and result.col_error > 1e-6  # two iterations: columns not yet met
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            converged = sinkhorn_features(features, prototypes, 0.5, tol=1e-9, output=output, return_info=True)
        assert converged.converged and converged.col_error <= 1e-9


# -------------------------------------------------------------------------------- process groups


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache: dict[int, list[dict[str, Any]]] = {}

    def get(world: int) -> list[dict[str, Any]]:
        if world not in cache:
            cache[world] = run_world(world, Path(tmp_path_factory.mktemp(f"features{world}")), target=worker)
        return cache[world]

    return get


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("split", ["uneven", "empty"])
@pytest.mark.parametrize("case", list(CASES))
def test_sharded_features_equal_one_process(outcomes: Any, world: int, split: str, case: str) -> None:
    splits = SPLITS[world][split]
    expected = label(global_inputs(sum(splits)), case)
    bounds = offsets(splits)
    for rank, outcome in enumerate(outcomes(world)):
        got = outcome[f"{split}/{case}"]
        assert "error" not in got, f"rank {rank}: {got['error']}"
        lo, hi = bounds[rank : rank + 2]
        for key, value in expected.items():
            want = value[lo:hi] if key.startswith("rows.") else value
            assert got[key].shape == want.shape, (rank, key)
            if want.dtype == torch.int64:
                assert torch.equal(got[key], want), (rank, key)
            else:
                torch.testing.assert_close(got[key], want, rtol=0, atol=1e-9, msg=f"rank {rank}, {key}")


@pytest.mark.parametrize("world", [2, 3])
def test_different_prototypes_on_one_rank_are_refused_everywhere(outcomes: Any, world: int) -> None:
    for rank, outcome in enumerate(outcomes(world)):
        assert "ranks hold different prototypes" in outcome["different_prototypes"].get("raised", ""), rank


@pytest.mark.parametrize("world", [2, 3])
def test_quotas_over_ranks_are_refused_everywhere(outcomes: Any, world: int) -> None:
    for rank, outcome in enumerate(outcomes(world)):
        assert "output='quotas' needs every row in one process" in outcome["quotas"].get("raised", ""), rank


@pytest.mark.parametrize("normalize", [False, True])
def test_quotas_give_exact_column_counts_streamed_as_hard_labels_on_the_plan(normalize: bool) -> None:
    """``output="quotas"``: exactly ``integer_quotas`` rows per column, the columns of
    :func:`hard_labels` on the dense plan, from the potentials alone (no N x K)."""
    features, prototypes = _inputs(torch.float64, seed=7)
    col = _col(torch.float64)
    scores = _scores(features, prototypes, 1.5, normalize)
    plan = sinkhorn(scores, 0.3, col_marginal=col, tol=1e-10)
    expected = hard_labels(plan, col, one_hot=False)
    assert not torch.equal(expected, plan.argmax(1))  # the rounding has work to do
    for chunk in (1, 37, 1000):
        got = sinkhorn_features(
            features,
            prototypes,
            0.3,
            scale=1.5,
            normalize=normalize,
            col_marginal=col,
            tol=1e-10,
            output="quotas",
            chunk_rows=chunk,
        )
        assert torch.equal(got.labels, expected)
        assert torch.equal(torch.bincount(got.labels, minlength=K), integer_quotas(col, N))
        torch.testing.assert_close(got.mass, plan.gather(1, expected[:, None])[:, 0], rtol=1e-9, atol=1e-12)
    dense = sinkhorn(scores, 0.3, col_marginal=col, tol=1e-10, output="quotas")
    assert torch.equal(dense.labels, expected)


def test_quotas_are_refused_where_rows_are_apart() -> None:
    features, prototypes = _inputs(torch.float32)
    with pytest.raises(InvalidArgumentError, match="output='quotas' is not available for sinkhorn_ragged"):
        sinkhorn_ragged(torch.randn(6, 3), [0, 3, 6], output="quotas")


def test_a_non_finite_value_in_any_chunk_is_found() -> None:
    """Finiteness is checked chunk by chunk (a whole-matrix check made 1.7x the features in
    temporaries): a NaN or inf in the last chunk, past the first 4,096 rows, is still refused."""
    prototypes = torch.randn(3, 4)
    for bad in (float("nan"), float("inf")):
        features = torch.randn(9000, 4)
        features[8999, 2] = bad
        with pytest.raises(InvalidArgumentError, match="features contains NaN or infinite values"):
            sinkhorn_features(features, prototypes, 0.5, chunk_rows=10)


@pytest.mark.parametrize("output", ["hard", "topk", "quotas"])
def test_a_failed_device_check_gives_minus_one_columns_not_labels_that_look_valid(output: str) -> None:
    """validate="device" turns a failed check into a NaN plan; integer columns cannot hold NaN, so
    hard, top-k and quota labels are -1 there (dense and streamed alike), their entries NaN."""
    features, prototypes = _inputs(torch.float32)
    features[3, 1] = float("nan")
    for result in (
        sinkhorn_features(features, prototypes, 0.5, validate="device", n_iter=3, output=output, top_k=2),
        sinkhorn(features @ prototypes.T, 0.5, validate="device", n_iter=3, output=output, top_k=2),
    ):
        columns, values = (result.labels, result.mass) if output != "topk" else (result.indices, result.values)
        assert (columns == -1).all() and torch.isnan(values).all()
