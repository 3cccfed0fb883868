"""benchmarks/bench_marginals.py end to end on tiny sizes (its numbers mean nothing there), and
the code of the docs page it feeds ("Choosing a marginal")."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from otlabel import InvalidArgumentError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--classes", "6", "--samples", "240", "--dim", "16", "--seeds", "2", "--ema-batch", "60", "--ema-passes", "2"]


def _benchmark():
    spec = importlib.util.spec_from_file_location("bench_marginals", ROOT / "benchmarks" / "bench_marginals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_marginals_benchmark_runs_on_tiny_sizes(tmp_path, capsys):
    benchmark = _benchmark()
    out = tmp_path / "marginals.json"
    argv = [*TINY, "--sweep-tau-factors", "1", "--sweep-masses", "0.5", "--out", str(out)]
    assert benchmark.main(argv) == 0
    table = capsys.readouterr().out
    for option in ("argmax (no OT)", "equipartition", "oracle proportions", "relaxed", "partial", "bounded (SLA)"):
        assert f"| {option} |" in table
    assert "| EMA, relaxed tau=0.05, tol, argmax counts |" in table
    assert "unconverged" not in table
    payload = json.loads(out.read_text())
    main = {row["option"]: row for row in payload["results"] if row["seed"] == 0}
    assert len(main) == 8 and len(payload["sweep"]) == 2 * 9  # tau, mass, 7 EMA variants
    assert main["oracle proportions"]["tv_labels"] < 1e-5  # the hard marginal is met
    assert main["partial"]["rows_labelled"] < 1.0 <= main["equipartition"]["rows_labelled"]
    for row in payload["results"] + payload["sweep"]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["tv_labels"] <= 1
        assert abs(sum(row["estimate"]) - 1) < 1e-6


def test_marginals_benchmark_data_and_helpers():
    benchmark = _benchmark()
    args = benchmark.parse(TINY)
    first, again = benchmark.make_data(args, 0), benchmark.make_data(args, 0)
    assert torch.equal(first.scores, again.scores) and torch.equal(first.classes, again.classes)
    assert first.scores.dtype == torch.float32 and first.scores.shape == (240, 6)
    torch.testing.assert_close(first.proportions, benchmark.power_law(6, 1.0))
    assert first.proportions[0] / first.proportions[-1] == pytest.approx(6.0)
    lower, upper = benchmark.wilson_bounds(torch.tensor([10.0, 0.0, 30.0]))
    assert (lower >= 0).all() and (lower <= torch.tensor([0.25, 0.0, 0.75])).all()
    assert (upper >= torch.tensor([0.25, 0.0, 0.75])).all() and upper[1] > 0
    # the labeller's EMA moves off the uniform start toward the skewed classes; an EMA of the
    # labels' column means under a hard marginal (inert: they are the marginal) is refused
    marginal = benchmark.ema_marginal(first.scores, 0.05, batch=60, momentum=0.9, passes=2, seed=0)
    assert abs(float(marginal.sum()) - 1) < 1e-12 and marginal[0] > 1.5 / 6 > marginal[-1]
    with pytest.raises(InvalidArgumentError, match="estimate"):
        benchmark.ema_marginal(first.scores, 0.05, batch=60, momentum=0.9, passes=1, seed=0, estimate="labels")


def test_marginals_benchmark_plot(tmp_path):
    pytest.importorskip("matplotlib")
    benchmark = _benchmark()
    figure = tmp_path / "marginals.png"
    argv = [*TINY, "--no-sweep", "--out", str(tmp_path / "m.json"), "--plot", str(figure)]
    assert benchmark.main(argv) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_choosing_a_marginal_page_code_runs():
    """The page's POT correspondence holds (its python blocks run in one namespace)."""
    pytest.importorskip("ot")
    page = (ROOT / "docs" / "choosing_a_marginal.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert blocks
    namespace: dict = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"choosing_a_marginal.md block {number}", "exec"), namespace)
    assert (ROOT / "docs" / "_static" / "marginals.png").exists()
