"""benchmarks/bench_compile.py's written-out floor ("checks and loop, no structure") must compute
exactly otlabel's labels, or its time would not be the floor under otlabel's eager call."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from otlabel import sinkhorn

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("bench_compile", ROOT / "benchmarks" / "bench_compile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("n_rows", "n_cols"), [(256, 16), (37, 5), (1000, 3)])
def test_the_written_out_floor_gives_otlabel_s_labels_exactly(n_rows, n_cols):
    benchmark = _benchmark()
    scores = benchmark.cosine_scores(n_rows, n_cols, torch.Generator().manual_seed(n_rows))
    floor = benchmark.unstructured_call(scores)
    assert torch.equal(floor, sinkhorn(scores, benchmark.EPSILON))
    with pytest.raises(ValueError, match="not finite"):
        benchmark.unstructured_call(torch.full((4, 2), float("nan")))
