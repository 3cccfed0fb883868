"""The CUDA-graph cache of repeated calls (:mod:`otlabel.graphs`): which calls qualify, and
the bookkeeping of :func:`~otlabel.graphs.call` (counted, captured, replayed, evicted, a
failed capture, host mode's rerun) with a stand-in for the graph, so that it runs without a GPU.
The real capture and replay run in ``tests/otlabel/test_cuda.py``."""

from __future__ import annotations

import math

import pytest
import torch

from otlabel import graphs, sinkhorn
from otlabel._options import Options


def call_of(scores, prior=None, **options):
    """A dense call as the front end hands it to the cache: (scores, prior, options)."""
    return scores, prior, Options.make(**options)


def test_the_entry_points_hand_their_calls_over_by_name(monkeypatch):
    seen = []
    monkeypatch.setattr(graphs, "eligible", lambda scores, prior, options: seen.append((prior, options)) or False)
    scores = torch.zeros(4, 3)
    sinkhorn(scores, 0.05)
    assert seen == [(None, Options.make(epsilon=0.05))]
    sinkhorn(scores, 0.5, n_iter=4, validate="device", backend="torch", prior=torch.ones(4, 3))
    prior, options = seen[-1]
    assert torch.equal(prior, torch.ones(4, 3))
    assert options == Options.make(epsilon=0.5, n_iter=4, validate="device", backend="torch")


def test_calls_with_marginal_options_are_left_to_eager_runs(monkeypatch):
    seen = []
    monkeypatch.setattr(graphs, "eligible", lambda scores, prior, options: seen.append(options) or False)
    sinkhorn(torch.zeros(4, 3), 0.05, col_penalty=1.0)
    assert not seen[-1].plain
    monkeypatch.undo()
    monkeypatch.setattr(graphs, "_triton_runs", lambda scores: True)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert graphs.eligible(*call_of(torch.zeros(4, 3), validate="device"))  # the stand-in CUDA call qualifies
    assert not graphs.eligible(*call_of(torch.zeros(4, 3), validate="device", col_penalty=1.0))
    assert not graphs.eligible(*call_of(torch.zeros(4, 3), validate="device", mass=1.0))  # given counts
    assert not graphs.eligible(*call_of(torch.zeros(4, 3), validate="device", tol=1e-3))
    assert not graphs.eligible(*call_of(torch.zeros(4, 3), validate="device", return_info=True))
    assert not graphs.eligible(*call_of(torch.zeros(4, 3), prior=torch.ones(4, 3)))  # host mode with a prior
    assert graphs.eligible(*call_of(torch.zeros(4, 3), prior=torch.ones(4, 3), validate="device"))


def test_cpu_calls_are_never_captured():
    assert not graphs.eligible(*call_of(torch.zeros(4, 3), validate="device"))
    assert not graphs.eligible(*call_of(torch.zeros(4, 3).numpy()))


class FakeGraph:
    """Stands for a captured call: remembers what was solved, replays by solving again."""

    made: list = []
    fail = False

    def __init__(self, solve, scores, prior, options):
        if FakeGraph.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        FakeGraph.made.append(options)
        self.solve = solve

    def replay(self, scores, prior, options):
        return self.solve(scores, prior, graphs._device_mode(options))


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(graphs, "_Graph", FakeGraph)
    monkeypatch.setattr(graphs, "_stats", dict.fromkeys(graphs._stats, 0))
    FakeGraph.made, FakeGraph.fail = [], False
    graphs.clear()
    yield
    graphs.clear()


def test_the_second_call_of_a_kind_is_captured_then_replayed(fake):
    calls = []

    def solve(scores, prior, options):
        calls.append(options.validate)
        return scores + 1

    scores = torch.zeros(5, 2)
    for _ in range(4):
        assert torch.equal(graphs.call(solve, *call_of(scores, validate="device")), scores + 1)
    assert len(FakeGraph.made) == 1 and FakeGraph.made[0].validate == "device"
    assert graphs.stats() == {"eager": 1, "captured": 1, "replayed": 3, "reruns": 0, "failed_captures": 0}
    # another kind (epsilon, shape, mode): counted on its own
    graphs.call(solve, *call_of(scores, validate="device", epsilon=0.1))
    graphs.call(solve, *call_of(torch.zeros(6, 2), validate="device"))
    assert len(FakeGraph.made) == 1


def test_host_mode_computes_as_device_mode_and_reruns_a_failed_call(fake):
    modes = []

    def solve(scores, prior, options):
        modes.append(options.validate)
        if options.validate == "device":
            return torch.full_like(scores, math.nan) if scores.isnan().any() else scores * 2
        raise ValueError("scores contains NaN")  # what the host-mode call says

    good, bad = torch.ones(3, 2), torch.tensor([[1.0, math.nan]] * 3)
    for _ in range(3):
        assert torch.equal(graphs.call(solve, *call_of(good)), good * 2)
    assert modes == ["device"] * 3  # eager, captured (the stand-in solves at replay), replayed
    with pytest.raises(ValueError, match="NaN"):
        graphs.call(solve, *call_of(bad))
    assert modes[-2:] == ["device", "auto"] and graphs.stats()["reruns"] == 1


def test_a_failed_capture_leaves_the_kind_eager(fake):
    FakeGraph.fail = True
    scores = torch.zeros(2, 2)
    for _ in range(3):
        assert torch.equal(graphs.call(lambda s, p, o: s - 1, *call_of(scores, validate="device")), scores - 1)
    assert graphs.stats()["failed_captures"] == 1 and graphs.stats()["eager"] == 2


def test_least_recently_used_kinds_are_dropped(fake, monkeypatch):
    monkeypatch.setattr(graphs, "MAX_ENTRIES", 2)
    for n in (1, 2, 3):
        graphs.call(lambda s, p, o: s, *call_of(torch.zeros(n, 2), validate="device"))
    assert len(graphs._cache) == 2 and all(key[1] != (1, 2) for key in graphs._cache)
