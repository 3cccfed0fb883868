"""The CUDA-graph cache of repeated calls (:mod:`otlabel.backends.graphs`): which calls qualify, and
the bookkeeping of :func:`~otlabel.backends.graphs.call` (counted, captured, replayed, evicted, a
failed capture, host mode's rerun) with a stand-in for the graph, so that it runs without a GPU.
The real capture and replay run in ``tests/otlabel/test_cuda.py``."""

from __future__ import annotations

import math

import pytest
import torch

from otlabel import sinkhorn
from otlabel._marginals import NO_OPTIONS
from otlabel.backends import graphs

# scores excluded: prior, epsilon, col, row, n_iter, tol, max_iter, check_every, group, backend,
# return_info, validate, log_prior, options (the order of sinkhorn._label's arguments)
DEFAULTS = (None, 0.05, None, None, None, None, 1000, 10, None, "auto", False, "auto", False, NO_OPTIONS)


def arguments(**changes):
    names = (
        "prior epsilon col row n_iter tol max_iter check_every group backend return_info validate log_prior options"
    ).split()
    values = dict(zip(names, DEFAULTS, strict=True))
    values.update(changes)
    return tuple(values[name] for name in names)


def test_the_argument_order_is_the_entry_points(monkeypatch):
    seen = []
    monkeypatch.setattr(graphs, "eligible", lambda scores, args: seen.append(args) or False)
    scores = torch.zeros(4, 3)
    sinkhorn(scores, 0.05)
    assert seen == [arguments()]
    sinkhorn(scores, 0.5, n_iter=4, validate="device", backend="torch")
    assert seen[-1] == arguments(epsilon=0.5, n_iter=4, validate="device", backend="torch")


def test_calls_with_marginal_options_are_left_to_eager_runs(monkeypatch):
    seen = []
    monkeypatch.setattr(graphs, "eligible", lambda scores, args: seen.append(args) or False)
    sinkhorn(torch.zeros(4, 3), 0.05, col_penalty=1.0)
    assert seen[-1][-1] is not NO_OPTIONS
    monkeypatch.undo()
    monkeypatch.setattr(graphs, "_triton_runs", lambda scores: True)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert graphs.eligible(torch.zeros(4, 3), arguments(validate="device"))  # the stand-in CUDA call qualifies
    assert not graphs.eligible(torch.zeros(4, 3), seen[-1][:-1] + (seen[-1][-1],))


def test_cpu_calls_are_never_captured():
    assert not graphs.eligible(torch.zeros(4, 3), arguments(validate="device"))
    assert not graphs.eligible(torch.zeros(4, 3).numpy(), arguments())


class FakeGraph:
    """Stands for a captured call: remembers what was solved, replays by solving again."""

    made: list = []
    fail = False

    def __init__(self, solve, scores, args):
        if FakeGraph.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        FakeGraph.made.append(args)
        self.solve = solve

    def replay(self, scores, args):
        return self.solve(scores, *graphs._device_mode(args))


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

    def solve(scores, *args):
        calls.append(args[graphs._VALIDATE])
        return scores + 1

    scores = torch.zeros(5, 2)
    for _ in range(4):
        assert torch.equal(graphs.call(solve, scores, arguments(validate="device")), scores + 1)
    assert len(FakeGraph.made) == 1 and FakeGraph.made[0][graphs._VALIDATE] == "device"
    assert graphs.stats() == {"eager": 1, "captured": 1, "replayed": 3, "reruns": 0, "failed_captures": 0}
    # another kind (epsilon, shape, mode): counted on its own
    graphs.call(solve, scores, arguments(validate="device", epsilon=0.1))
    graphs.call(solve, torch.zeros(6, 2), arguments(validate="device"))
    assert len(FakeGraph.made) == 1


def test_host_mode_computes_as_device_mode_and_reruns_a_failed_call(fake):
    modes = []

    def solve(scores, *args):
        modes.append(args[graphs._VALIDATE])
        if args[graphs._VALIDATE] == "device":
            return torch.full_like(scores, math.nan) if scores.isnan().any() else scores * 2
        raise ValueError("scores contains NaN")  # what the host-mode call says

    good, bad = torch.ones(3, 2), torch.tensor([[1.0, math.nan]] * 3)
    for _ in range(3):
        assert torch.equal(graphs.call(solve, good, arguments()), good * 2)
    assert modes == ["device"] * 3  # eager, captured (the stand-in solves at replay), replayed
    with pytest.raises(ValueError, match="NaN"):
        graphs.call(solve, bad, arguments())
    assert modes[-2:] == ["device", "auto"] and graphs.stats()["reruns"] == 1


def test_a_failed_capture_leaves_the_kind_eager(fake):
    FakeGraph.fail = True
    scores = torch.zeros(2, 2)
    for _ in range(3):
        assert torch.equal(graphs.call(lambda s, *a: s - 1, scores, arguments(validate="device")), scores - 1)
    assert graphs.stats()["failed_captures"] == 1 and graphs.stats()["eager"] == 2


def test_least_recently_used_kinds_are_dropped(fake, monkeypatch):
    monkeypatch.setattr(graphs, "MAX_ENTRIES", 2)
    for n in (1, 2, 3):
        graphs.call(lambda s, *a: s, torch.zeros(n, 2), arguments(validate="device"))
    assert len(graphs._cache) == 2 and all(key[1] != (1, 2) for key in graphs._cache)
