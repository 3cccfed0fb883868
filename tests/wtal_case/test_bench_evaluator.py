"""``benchmarks/bench_evaluator.py``'s ``--official`` plumbing, with a stand-in for the official file.

The official ``eval_detection.py`` needs pandas and NumPy < 1.24, which the project does not
have: the stand-in has its class's interface (``ANETEval``: ``evaluate_detection()``, ``ap``,
``activity_index``) and computes with the loop re-statement, in this interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The official class's interface over the loop re-statement; ``SHIFT`` makes it disagree.
STAND_IN = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from anet_reference import reference_evaluate, rows_from_files
SHIFT = {shift!r}

class ANETEval:
    def __init__(self, gt_file, pred_file, proposal_file, tiou_thresholds, max_avg_nr_proposals, subset,
                 verbose, check_status, mode):
        self.files, self.thresholds, self.subset = (gt_file, pred_file), list(tiou_thresholds), subset

    def evaluate_detection(self):
        gt, pred = (json.load(open(path)) for path in self.files)
        per_class, m_ap = reference_evaluate(*rows_from_files(gt, pred, self.subset), self.thresholds)
        self.activity_index = {{name: i for i, name in enumerate(per_class)}}
        self.ap = np.stack(list(per_class.values()), axis=1) + SHIFT
        return float(self.ap.mean()), self.ap.mean(axis=1)
"""


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("bench_evaluator", ROOT / "benchmarks" / "bench_evaluator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _stand_in(tmp_path: Path, shift: float) -> Path:
    path = tmp_path / f"eval_detection_{shift}.py"
    path.write_text(STAND_IN.format(tests=str(ROOT / "tests" / "wtal_case"), shift=shift))
    return path


def test_the_official_process_is_timed_and_checked(
    bench, thumos14_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--gt", str(thumos14_dir / "gt.json"), "--predictions", "400", "--repeats", "1", "--distinct-scores"]
    code = bench.main([*argv, "--out", str(out), "--official", str(_stand_in(tmp_path, 0.0)),
                       "--official-python", sys.executable])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "| whole process: official eval_detection.py (pandas) |" in printed
    assert "evaluate.py --pred / official eval_detection.py:" in printed
    record = json.loads(out.read_text())
    official = record["official"]
    assert official["max_abs_ap_difference"] <= 1e-12 and official["pandas"] is None  # the stand-in has none
    assert official["whole_process_time_ratio"] > 0 and record["distinct_scores"] is True
    # an official file that disagrees with ours fails the benchmark (untied scores: no tie order excuses it)
    code = bench.main([*argv, "--out", str(out), "--official", str(_stand_in(tmp_path, 0.01)),
                       "--official-python", sys.executable])  # fmt: skip
    assert code == 1 and "--official disagrees: max |AP difference| 1.00e-02" in capsys.readouterr().err


def test_the_official_flags_go_together(bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--official", str(tmp_path / "eval_detection.py")])
    assert "--official and --official-python go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--official", str(tmp_path / "eval_detection.py"), "--official-python", sys.executable])
    assert f"--official {tmp_path / 'eval_detection.py'} is not a file" in capsys.readouterr().err


def test_distinct_scores_have_no_ties_and_the_default_keeps_its_predictions(bench, thumos14_dir: Path) -> None:
    gt = json.loads((thumos14_dir / "gt.json").read_text())
    distinct = bench.synthetic_predictions(gt, 2000, distinct_scores=True)
    scores = [d["score"] for items in distinct["results"].values() for d in items]
    assert len(scores) >= 2000 and len(set(scores)) == len(scores)
    tied = bench.synthetic_predictions(gt, 2000)
    scores = [d["score"] for items in tied["results"].values() for d in items]
    assert len(set(scores)) < len(scores) and all(0 <= s <= 1 and round(s, 3) == s for s in scores)
    # the top-level keys the official code writes (its reader refuses a file without "version")
    assert set(tied) == {"version", "results", "external_data"}
