"""Every evaluation of a checkpoint reports P^A, P^T and P^M side by side (issue 21).

One forward pass per video serves the three foregrounds of clustering-assisted testing;
``metrics.json`` keeps the configured mode's figures at its top, as before, and adds each
mode's under ``"modes"``; the ablation's Table 7 reads them from there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from example_scripts import load_evaluate_py, smoke_run  # tests/wtal_case is on sys.path

from case import inference
from case.ablation import runner
from case.config import load_config
from case.data import build_dataset
from case.evaluation import evaluate_checkpoint
from case.metrics import evaluate_detection
from case.model import CASEModel
from case.postprocess import TEST_MODES

cli = load_evaluate_py()
pytestmark = pytest.mark.usefixtures("restore_thread_count")  # an evaluation sets this process's threads

TOP = ("tiou", "mAP", "average")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run of train.py long enough (400 steps) that the three modes score differently."""
    out, stdout = smoke_run(tmp_path_factory.mktemp("modes"), steps=400)
    # train.py's table: one row per mode, the configured one named
    assert "| P^A (attention) |" in stdout and "| P^T (cluster) |" in stdout
    assert "| P^M (mixed, configured) |" in stdout
    assert json.loads(stdout.splitlines()[-1]) == json.loads((out / "metrics.json").read_text())
    return out


def test_metrics_json_holds_the_three_modes_and_the_configured_one_at_its_top(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["foreground_mode"] == "mixed" and list(metrics["modes"]) == list(TEST_MODES)
    assert metrics["modes"]["mixed"] == {key: metrics[key] for key in TOP}
    # not three copies of one number: the modes detect differently on this run
    assert len({json.dumps(figures["mAP"]) for figures in metrics["modes"].values()}) == 3


@pytest.mark.parametrize("mode", TEST_MODES)
def test_each_mode_scores_what_evaluating_with_it_alone_scores(run: Path, mode: str) -> None:
    """Independently of the evaluation path: that mode's detections by the inference steps,
    scored by the evaluator, with the run's configuration and that foreground."""
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = load_config(run / "config.yaml", [f"postprocess.foreground_mode={mode}"])
    trained = inference.load_for_inference(run / "checkpoints" / "final.pt")
    dataset = build_dataset(cfg.data, "test", cfg.eval.sampling)
    outputs = inference.predict_dataset(trained, dataset, cfg, torch.device("cpu"))
    detections = inference.detect_dataset(outputs, trained.class_names, cfg)
    alone = evaluate_detection(
        dataset.ground_truth(), detections, "test", cfg.eval.tiou, unknown_labels="drop"
    ).to_dict()
    assert metrics["modes"][mode] == alone


def test_one_forward_pass_per_video_serves_every_mode(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forwards: list[int] = []
    real = CASEModel.forward

    def counting(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        forwards.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CASEModel, "forward", counting)
    result = evaluate_checkpoint(run / "checkpoints" / "final.pt")
    assert len(forwards) == len(result.dataset) == len(result.predictions["mixed"]["results"])
    assert list(result.metrics) == list(TEST_MODES)
    assert result.record() == json.loads((run / "metrics.json").read_text())  # train.py's evaluation, again


def test_evaluate_py_prints_a_row_per_mode_and_writes_the_block(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = str(run / "checkpoints" / "final.pt")
    assert cli.main(["--checkpoint", final, "--eval-dir", str(tmp_path / "e"), "--out", str(tmp_path / "o.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in table if line.startswith("P^")]
    assert rows == ["P^A", "P^T", "P^M"] and any(line.startswith("P^M mixed (%) *") for line in table)
    saved = json.loads((run / "metrics.json").read_text())
    assert json.loads((tmp_path / "e" / "metrics.json").read_text()) == saved
    assert json.loads((tmp_path / "o.json").read_text()) == saved
    # another configured mode: its figures move to the top, the block stays the same
    code = cli.main(
        ["--checkpoint", final, "--set", "postprocess.foreground_mode=attention", "--eval-dir", str(tmp_path / "a"),
         "--json"]
    )  # fmt: skip
    assert code == 0
    attention = json.loads(capsys.readouterr().out)
    assert attention["foreground_mode"] == "attention" and attention["modes"] == saved["modes"]
    assert {key: attention[key] for key in TOP} == saved["modes"]["attention"]


def test_pred_scores_the_run_s_predictions_as_the_checkpoint_path_did(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's predictions.json, plus a detection of a label the ground truth does not know,
    scored by --pred: the run's own figures (the unknown label dropped, as the checkpoint path does)."""
    cfg = load_config(run / "config.yaml")
    predictions = json.loads((run / "predictions.json").read_text())
    video = next(iter(predictions["results"]))
    predictions["results"][video].insert(0, {"label": "NotAClass", "score": 2.0, "segment": [0.0, 5.0]})
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(predictions))
    gt = Path(cfg.data.root) / "gt.json"
    assert cli.main(["--gt", str(gt), "--pred", str(pred), "--json"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out) == {key: metrics[key] for key in TOP}


def test_the_ablation_reads_the_modes_from_metrics_json(run: Path, tmp_path: Path, monkeypatch) -> None:
    """Table 7 and Table 4 read each mode from the run's metrics.json: nothing is evaluated again,
    but for a mode that a run written before the block lacks."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config(copy / "config.yaml")
    metrics = json.loads((copy / "metrics.json").read_text())
    asked: list[list[str]] = []

    def evaluate_modes(path: Path, modes: list[str]) -> dict:
        asked.append(list(modes))
        return {mode: {"tiou": [], "mAP": [], "average": float(len(asked))} for mode in modes}

    monkeypatch.setattr(runner, "_evaluate_modes", evaluate_modes)
    result = runner.ensure_evaluated(cfg, copy, ["attention", "cluster", "mixed"])
    assert asked == [] and result["modes"] == metrics["modes"]
    # a metrics.json of before: the configured mode from its top, the others scored once
    (copy / "ablation.json").unlink()
    (copy / "metrics.json").write_text(json.dumps({key: metrics[key] for key in TOP}))
    result = runner.ensure_evaluated(cfg, copy, ["attention", "mixed"])
    assert asked == [["attention"]] and result["modes"]["mixed"] == metrics["modes"]["mixed"]
