"""OnlineLabeller: the queue, the moving-average marginal, warm starts, exact resumes, process groups."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import pytest
import torch

from otlabel import ArgumentTypeError, InvalidArgumentError, OnlineLabeller, sinkhorn

from .distributed_cases import join_world, leave_world, run_world

K = 4


def _batches(count: int, rows: int = 5, k: int = K, seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, k, generator=generator, dtype=dtype) for _ in range(count)]


def _predicted_shares(scores: torch.Tensor, epsilon: float) -> torch.Tensor:
    return torch.softmax(scores / epsilon, dim=-1).sum(0) / scores.shape[0]


def test_without_options_it_is_sinkhorn():
    labeller = OnlineLabeller(K, epsilon=0.5)
    for scores in _batches(3):
        assert torch.equal(labeller(scores), sinkhorn(scores, 0.5))


def test_fixed_proportions_are_the_col_marginal():
    beta = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    labeller = OnlineLabeller(K, epsilon=0.5, marginal=beta.tolist())
    torch.testing.assert_close(labeller.marginal, beta, rtol=0, atol=1e-15)  # renormalised
    for scores in _batches(2):
        torch.testing.assert_close(labeller(scores), sinkhorn(scores, 0.5, col_marginal=beta), rtol=0, atol=1e-14)


def test_the_queue_fills_the_problem_and_its_labels_are_dropped():
    batches = _batches(4, rows=4)
    labeller = OnlineLabeller(K, epsilon=0.5, queue_size=6)
    seen: list[torch.Tensor] = []
    for scores in batches:
        queue = torch.cat(seen)[-6:] if seen else scores[:0]
        expected = sinkhorn(torch.cat((queue, scores)), 0.5)[queue.shape[0] :]
        assert torch.equal(labeller(scores), expected)
        seen.append(scores)
    state = labeller.state_dict()
    assert int(state["queue_filled"]) == 6 and torch.equal(state["queue"], torch.cat(seen)[-6:])
    # a batch larger than the queue keeps its last rows
    big = _batches(1, rows=9, seed=1)[0]
    labeller(big)
    assert torch.equal(labeller.state_dict()["queue"], big[-6:])


def test_the_moving_average_matches_a_hand_computation():
    epsilon, momentum, floor = 0.5, 0.8, 0.05
    labeller = OnlineLabeller(K, epsilon, marginal="ema", momentum=momentum, floor=floor)
    uniform = torch.full((K,), 1.0 / K, dtype=torch.float64)
    assert torch.equal(labeller.marginal, uniform)  # before any estimate
    ema = None
    for t, scores in enumerate(_batches(5)):
        used = uniform if ema is None else (1 - floor) * ema + floor / K
        torch.testing.assert_close(labeller.marginal, used, rtol=0, atol=1e-15)
        expected = sinkhorn(scores, epsilon, col_marginal=used)
        torch.testing.assert_close(labeller(scores), expected, rtol=0, atol=1e-14)
        estimate = _predicted_shares(scores, epsilon)
        ema = estimate if t == 0 else momentum * ema + (1 - momentum) * estimate  # the first one replaces the start
    torch.testing.assert_close(labeller.state_dict()["marginal_ema"], ema, rtol=0, atol=1e-15)
    assert int(labeller.state_dict()["ema_updates"]) == 5
    assert labeller.marginal.min() >= floor / K and abs(float(labeller.marginal.sum()) - 1) < 1e-12


def test_given_estimates_and_the_labels_estimate():
    scores = _batches(1)[0]
    beta = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    given = OnlineLabeller(K, 0.5, marginal="ema", estimate="given", momentum=0.0, floor=0.0)
    given.update(beta * 3)  # normalised
    torch.testing.assert_close(given(scores), sinkhorn(scores, 0.5, col_marginal=beta), rtol=0, atol=1e-14)
    torch.testing.assert_close(given.marginal, beta, rtol=0, atol=1e-15)  # the call itself does not move it
    with pytest.raises(InvalidArgumentError, match="finite and non-negative"):
        given.update(torch.tensor([1.0, -1.0, 0.5, 0.5], dtype=torch.float64))
    with pytest.raises(InvalidArgumentError, match="shape \\(4,\\)"):
        given.update(torch.ones(3))
    # with a relaxed column marginal the labels' shares move toward the scores
    relaxed = OnlineLabeller(K, 0.5, marginal="ema", estimate="labels", col_penalty=0.5, momentum=0.0, floor=0.0)
    labels = relaxed(scores + torch.tensor([3.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(relaxed.marginal, labels.sum(0) / labels.sum(), rtol=0, atol=1e-14)
    assert relaxed.marginal[0] > 0.4


def test_warm_starts_keep_converged_answers_and_continue_fixed_iterations():
    batches = _batches(4, rows=30, seed=3)
    cold = OnlineLabeller(K, 0.2, tol=1e-11, max_iter=20_000, queue_size=20)
    warm = OnlineLabeller(K, 0.2, tol=1e-11, max_iter=20_000, queue_size=20, warm_start=True)
    for scores in batches:
        torch.testing.assert_close(warm(scores), cold(scores), rtol=0, atol=1e-9)
    assert bool(warm.state_dict()["has_potential"]) and torch.isfinite(warm.state_dict()["log_col_scaling"]).all()
    # fixed mode: one iteration per call on the same problem, continued from the last potential, converges
    scores = batches[0]
    stepper = OnlineLabeller(K, 0.2, n_iter=1, warm_start=True)
    errors = []
    for _ in range(60):
        labels = stepper(scores)
        errors.append(float((labels.sum(0) - scores.shape[0] / K).abs().max()))
    assert errors[-1] < 1e-6 < errors[0]
    torch.testing.assert_close(labels, sinkhorn(scores, 0.2, tol=1e-12, max_iter=10_000), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "settings",
    [
        {"queue_size": 7, "marginal": "ema", "momentum": 0.7, "warm_start": True},
        {"queue_size": 3, "marginal": "ema", "estimate": "labels", "col_penalty": 1.0, "tol": 1e-9},
    ],
    ids=["fixed", "tol-relaxed"],
)
def test_a_resumed_run_continues_bit_exactly(tmp_path: Path, settings):
    batches = _batches(6, rows=5, seed=4, dtype=torch.float32)
    straight = OnlineLabeller(K, 0.3, **settings)
    expected = [straight(scores) for scores in batches]
    first = OnlineLabeller(K, 0.3, **settings)
    got = [first(scores) for scores in batches[:3]]
    torch.save(first.state_dict(), tmp_path / "labeller.pt")
    resumed = OnlineLabeller(K, 0.3, **settings)
    resumed.load_state_dict(torch.load(tmp_path / "labeller.pt", weights_only=True))
    got += [resumed(scores) for scores in batches[3:]]
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_load_state_dict_names_what_is_wrong():
    labeller = OnlineLabeller(K, queue_size=4, marginal="ema")
    labeller(_batches(1)[0])
    state = labeller.state_dict()
    other = OnlineLabeller(K + 1, queue_size=4)
    with pytest.raises(InvalidArgumentError, match="state is for 4 classes but this labeller has n_classes = 5"):
        other.load_state_dict(state)
    with pytest.raises(InvalidArgumentError, match="queue of 4 rows but this labeller's queue_size = 2"):
        OnlineLabeller(K, queue_size=2).load_state_dict(state)
    with pytest.raises(InvalidArgumentError, match="missing ema_updates; unexpected step"):
        bad = dict(state)
        bad["step"] = bad.pop("ema_updates")
        labeller.load_state_dict(bad)
    with pytest.raises(ArgumentTypeError, match="must be a mapping"):
        labeller.load_state_dict([1, 2])
    with pytest.raises(ArgumentTypeError, match="state\\['queue'\\] must be a torch.Tensor"):
        labeller.load_state_dict({**state, "queue": [0.0]})
    with pytest.raises(InvalidArgumentError, match="queue_filled'\\] must lie in \\[0, 4\\]"):
        labeller.load_state_dict({**state, "queue_filled": torch.tensor(9)})
    with pytest.raises(InvalidArgumentError, match="probability vector"):
        labeller.load_state_dict({**state, "marginal_ema": torch.ones(K, dtype=torch.float64)})
    before = labeller.state_dict()
    labeller.load_state_dict(state)  # a good state loads (and a failed load changed nothing)
    for key, value in before.items():
        assert torch.equal(labeller.state_dict()[key], value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_classes": 0}, InvalidArgumentError, "n_classes must be >= 1"),
        ({"n_classes": 2.0}, ArgumentTypeError, "n_classes must be an integer"),
        ({"epsilon": -1.0}, InvalidArgumentError, "epsilon must be a finite number > 0"),
        ({"n_iter": 3, "tol": 1e-6}, InvalidArgumentError, "n_iter applies to the fixed-iteration mode"),
        ({"queue_size": -1}, InvalidArgumentError, "queue_size must be >= 0"),
        ({"marginal": "equal"}, InvalidArgumentError, "marginal must be one of"),
        ({"marginal": [0.5, 0.5]}, InvalidArgumentError, "marginal has 2 entries"),
        ({"marginal": [0.5, 0.5, 0.5, 0.5]}, InvalidArgumentError, "marginal must sum to 1"),
        ({"marginal": "ema", "momentum": 1.0}, InvalidArgumentError, "momentum must lie in \\[0, 1\\)"),
        ({"marginal": "ema", "floor": -0.1}, InvalidArgumentError, "floor must lie in"),
        ({"marginal": "ema", "estimate": "guess"}, InvalidArgumentError, "estimate must be one of"),
        ({"marginal": "ema", "estimate": "labels"}, InvalidArgumentError, "needs col_penalty or mass"),
        ({"estimate": "given"}, InvalidArgumentError, "applies to marginal='ema' only"),
        ({"warm_start": "yes"}, ArgumentTypeError, "warm_start must be a bool"),
        ({"col_penalty": 0.0}, InvalidArgumentError, "col_penalty must be > 0"),
        ({"mass": 2.0}, InvalidArgumentError, "mass must lie in \\(0, 1\\]"),
        ({"acceleration": "anderson"}, InvalidArgumentError, "applies to the tolerance mode"),
        ({"marginal": "ema", "col_bounds": (None, [0.5] * 4)}, InvalidArgumentError, "col_bounds replaces"),
        ({"col_bounds": (None, [0.5] * 3)}, InvalidArgumentError, "col_bounds upper has 3 entries"),
        ({"backend": "cuda"}, InvalidArgumentError, "backend"),
        ({"validate": "never"}, InvalidArgumentError, "validate must be one of"),
        ({"process_group": object()}, InvalidArgumentError, "init_process_group"),
    ],
)
def test_bad_settings_are_named_at_construction(kwargs, error, match):
    kwargs = {"n_classes": K, **kwargs}
    with pytest.raises(error, match=match):
        OnlineLabeller(**kwargs)


def test_bad_scores_are_named():
    labeller = OnlineLabeller(K)
    with pytest.raises(ArgumentTypeError, match="scores must be a torch.Tensor"):
        labeller([[0.0] * K])
    with pytest.raises(InvalidArgumentError, match="scores must have shape \\(B, 4\\)"):
        labeller(torch.zeros(3, K + 1))
    with pytest.raises(InvalidArgumentError, match="scores contains NaN"):
        labeller(torch.full((3, K), float("nan")))
    assert int(labeller.state_dict()["ema_updates"]) == 0


def test_in_device_mode_a_failed_call_is_nan_and_leaves_the_estimate_alone():
    labeller = OnlineLabeller(K, 0.5, marginal="ema", warm_start=True, validate="device")
    labeller(_batches(1)[0])
    before = {key: value.clone() for key, value in labeller.state_dict().items()}
    bad = _batches(1, seed=2)[0]
    bad[1, 2] = float("nan")
    assert torch.isnan(labeller(bad)).all()
    for key in ("marginal_ema", "ema_updates", "log_col_scaling"):
        assert torch.equal(labeller.state_dict()[key], before[key]), key


def test_the_docstring_example_runs():
    import otlabel.labeller

    assert doctest.testmod(otlabel.labeller, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


def test_a_moving_average_recovers_imbalanced_class_proportions():
    """Classes in proportions 0.55/0.25/0.15/0.05: equipartition mislabels the big class's rows."""
    proportions = torch.tensor([0.55, 0.25, 0.15, 0.05], dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    runs = {
        "uniform": OnlineLabeller(K, 0.5, queue_size=128),
        "ema": OnlineLabeller(K, 0.5, queue_size=128, marginal="ema", momentum=0.9),
    }
    correct = dict.fromkeys(runs, 0)
    shares = {name: torch.zeros(K, dtype=torch.float64) for name in runs}
    for step in range(40):
        truth = torch.multinomial(proportions, 64, replacement=True, generator=generator)
        scores = 3.0 * torch.nn.functional.one_hot(truth, K).double() + torch.randn(64, K, generator=generator)
        for name, labeller in runs.items():
            labels = labeller(scores)
            if step >= 20:
                correct[name] += int((labels.argmax(1) == truth).sum())
                shares[name] += labels.mean(0) / 20
    estimate_error = float((runs["ema"].marginal - proportions).abs().sum())
    uniform_error = float((runs["uniform"].marginal - proportions).abs().sum())
    assert estimate_error < 0.25 * uniform_error
    assert float((shares["ema"] - proportions).abs().sum()) < 0.5 * float((shares["uniform"] - proportions).abs().sum())
    assert correct["ema"] > correct["uniform"]


def _step(labeller: OnlineLabeller, scores: torch.Tensor) -> torch.Tensor:
    return labeller(scores)


@pytest.mark.parametrize("warm_start", [False, True])
def test_a_fixed_iteration_call_compiles_without_graph_breaks(warm_start):
    torch._dynamo.reset()
    settings = {"queue_size": 6, "marginal": "ema", "warm_start": warm_start}
    eager, traced = OnlineLabeller(K, 0.5, **settings), OnlineLabeller(K, 0.5, **settings)
    compiled = torch.compile(_step, fullgraph=True, backend="aot_eager")
    for scores in _batches(4, rows=4, seed=6, dtype=torch.float32):
        torch.testing.assert_close(compiled(traced, scores), eager(scores), rtol=1e-6, atol=1e-6)
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(traced.state_dict()[key], value, rtol=1e-6, atol=1e-6, msg=key)


# --------------------------------------------------------------------------- process groups

SPLITS = (3, 5)  # rows per rank and step
STEPS = 4


def _global_batches() -> list[torch.Tensor]:
    return _batches(STEPS, rows=sum(SPLITS), seed=7)


def labeller_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Rank ``rank`` labels its rows of every step with an EMA labeller over the world group."""
    import torch.distributed as dist

    join_world(rank, world, init_file)
    labeller = OnlineLabeller(K, 0.5, queue_size=4, marginal="ema", momentum=0.6, process_group=dist.group.WORLD)
    lo, hi = sum(SPLITS[:rank]), sum(SPLITS[: rank + 1])
    outcome: dict[str, list[torch.Tensor]] = {"labels": [], "marginal": [], "queue": []}
    for scores in _global_batches():
        outcome["queue"].append(labeller.state_dict()["queue"][4 - labeller.state_dict()["queue_filled"] :])
        outcome["marginal"].append(labeller.marginal)
        outcome["labels"].append(labeller(scores[lo:hi]))
    outcome["marginal"].append(labeller.marginal)
    labeller.update(torch.tensor([0.7, 0.1, 0.1, 0.1] if rank == 0 else [0.1, 0.1, 0.1, 0.7], dtype=torch.float64))
    outcome["marginal"].append(labeller.marginal)
    leave_world(outcome, rank, out_dir)


def test_under_a_process_group_the_estimate_is_global_and_the_same_on_every_rank(tmp_path: Path):
    ranks = run_world(2, tmp_path, timeout_s=120, target=labeller_worker)
    for a, b in zip(ranks[0]["marginal"], ranks[1]["marginal"], strict=True):
        assert torch.equal(a, b)  # bit-identical on both ranks
    # the estimate is the one a single process would make from the global batches
    single = OnlineLabeller(K, 0.5, marginal="ema", momentum=0.6)
    for step, scores in enumerate(_global_batches()):
        torch.testing.assert_close(ranks[0]["marginal"][step], single.marginal, rtol=0, atol=1e-14)
        # the labels: one process labelling every rank's queue and batch, concatenated
        parts, lo = [], 0
        for rank, rows in enumerate(SPLITS):
            parts += [ranks[rank]["queue"][step], scores[lo : lo + rows]]
            lo += rows
        expected = sinkhorn(torch.cat(parts), 0.5, col_marginal=ranks[0]["marginal"][step])
        start = 0
        for rank, rows in enumerate(SPLITS):
            queued = ranks[rank]["queue"][step].shape[0]
            torch.testing.assert_close(
                ranks[rank]["labels"][step], expected[start + queued : start + queued + rows], rtol=0, atol=1e-12
            )
            start += queued + rows
        single(scores)
    # update() averages the ranks' estimates
    last = ranks[0]["marginal"][-2]
    ema = 0.6 * ((last - 0.01 / K) / 0.99) + 0.4 * torch.tensor([0.4, 0.1, 0.1, 0.4], dtype=torch.float64)
    torch.testing.assert_close(ranks[0]["marginal"][-1], 0.99 * ema + 0.01 / K, rtol=0, atol=1e-12)


def test_a_failed_device_mode_batch_does_not_poison_the_calls_after_it():
    generator = torch.Generator().manual_seed(0)
    labeller = OnlineLabeller(3, 0.5, queue_size=8, marginal="ema", validate="device")
    labeller(torch.randn(4, 3, generator=generator))
    bad = labeller(torch.tensor([[math.nan, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.isnan(bad).all()
    for _ in range(2):
        assert torch.isfinite(labeller(torch.randn(4, 3, generator=generator))).all()
    assert torch.isfinite(labeller.state_dict()["queue"]).all()


def test_whole_valued_counters_of_any_dtype_load_exactly():
    """L-new-5: valid counters still load, as int64, float or bool tensors, and round-trip exactly."""
    labeller = OnlineLabeller(3, 0.5, queue_size=4, marginal="ema", warm_start=True, tol=1e-6)
    labeller(torch.randn(4, 3, generator=torch.Generator().manual_seed(1)))
    state = labeller.state_dict()
    assert int(state["ema_updates"]) == 1
    for updates in (torch.tensor(7), torch.tensor(7.0), torch.tensor([7.0], dtype=torch.float64)):
        resumed = OnlineLabeller(3, 0.5, queue_size=4, marginal="ema", warm_start=True, tol=1e-6)
        resumed.load_state_dict({**state, "ema_updates": updates, "queue_filled": torch.tensor(4.0)})
        assert resumed.state_dict()["ema_updates"].dtype == torch.int64
        assert int(resumed.state_dict()["ema_updates"]) == 7
        assert resumed.state_dict()["queue_filled"] == 4
    largest = torch.tensor(2**63 - 1)  # int64's largest, exact (a float would round it to 2**63)
    resumed.load_state_dict({**state, "ema_updates": largest, "has_potential": torch.tensor(1.0)})
    assert torch.equal(resumed.state_dict()["ema_updates"], largest)
    resumed.load_state_dict(state)
    for key, value in state.items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("log_col_scaling", torch.tensor([0.0, math.nan, 0.0], dtype=torch.float64), "NaN or infinite"),
        ("log_col_scaling", torch.tensor([0.0, -math.inf, 0.0], dtype=torch.float64), "NaN or infinite"),
        ("queue", torch.full((4, 3), math.nan), "NaN or infinite"),
        ("ema_updates", torch.tensor(2.7), "whole number"),
        ("queue_filled", torch.tensor(3.9), "whole number"),
        ("has_potential", torch.tensor(5), "0 or 1"),
        # L-new-5: a float counter out of int64's range was cast (1e30 stored as -2**63); refused first
        ("ema_updates", torch.tensor(1e30), r"ema_updates'\] must lie in \[0, 9223372036854775807\], got 1000"),
        ("ema_updates", torch.tensor(2.0**63, dtype=torch.float64), "must lie in"),
        ("ema_updates", torch.tensor(-1.0), r"ema_updates'\] must lie in \[0, .*got -1$"),
        ("ema_updates", torch.tensor(math.nan), r"ema_updates'\] must be a whole number, got nan"),
        ("ema_updates", torch.tensor(math.inf), "whole number, got inf"),
        ("ema_updates", torch.tensor(2.5), r"ema_updates'\] must be a whole number, got 2.5"),
        ("queue_filled", torch.tensor(1e30), r"queue_filled'\] must lie in \[0, 4\]"),
        ("queue_filled", torch.tensor(-1.0), r"queue_filled'\] must lie in \[0, 4\]"),
        ("queue_filled", torch.tensor(math.nan), "whole number"),
        ("has_potential", torch.tensor(1e30), "0 or 1"),
        ("has_potential", torch.tensor(-1.0), "0 or 1"),
        ("has_potential", torch.tensor(0.5), "whole number"),
    ],
)
def test_a_state_with_values_out_of_range_is_refused_and_changes_nothing(key, value, match):
    labeller = OnlineLabeller(3, 0.5, queue_size=4, marginal="ema", warm_start=True, tol=1e-6)
    labeller(torch.randn(4, 3, generator=torch.Generator().manual_seed(1)))
    before = {name: tensor.clone() for name, tensor in labeller.state_dict().items()}
    state = {**labeller.state_dict(), key: value}
    with pytest.raises(InvalidArgumentError, match=match):
        labeller.load_state_dict(state)
    for name, tensor in labeller.state_dict().items():
        assert torch.equal(tensor, before[name]), name
