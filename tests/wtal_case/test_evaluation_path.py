"""One evaluation path: ``train.py``, ``evaluate.py --checkpoint`` and the ablation each score a
checkpoint with one call of :func:`case.evaluation.evaluate_checkpoint` (load → build the data set
→ predict → detect → ground truth → score), and so cannot disagree.

Until this path existed the chain was written three times (``engine.evaluate_run``,
``ablation._evaluate_modes``, now in ``case.ablation.runner``, and ``evaluate.py``'s
``run_checkpoint``), each with its own ground truth and its own way to the device.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from example_scripts import load_evaluate_py  # tests/wtal_case is on sys.path
from test_data_readers import make_basnet  # tests/wtal_case is on sys.path

from case import evaluation
from case.ablation import runner
from case.config import CONFIG_DIR, load_config
from case.trainer import train

ROOT = Path(__file__).resolve().parents[2]
cli = load_evaluate_py()


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every evaluation that goes through evaluate_checkpoint (it calls valid_one_epoch once)."""
    seen: list[dict] = []
    real = evaluation.valid_one_epoch

    def spy(trained, dataset, cfg, device, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append({"checkpoint": trained.path, "split": dataset.split, "modes": kwargs.get("modes")})
        return real(trained, dataset, cfg, device, **kwargs)

    monkeypatch.setattr(evaluation, "valid_one_epoch", spy)
    return seen


@pytest.fixture()
def torch_state() -> object:
    """Training in this process sets threads, seeds and deterministic algorithms: put them back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_train_evaluate_and_the_ablation_share_one_evaluation(
    tmp_path: Path, calls: list[dict], torch_state: object, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_basnet(tmp_path / "data")
    cfg = load_config(
        CONFIG_DIR / "smoke.yaml",
        [f"data.root={data}", "data.source=basnet", "data.num_segments=4", "train.batch_size=2", "train.steps=4",
         "train.progress=false", "eval.plot_videos=0"],
    )  # fmt: skip
    run = tmp_path / "run"
    summary = train(cfg, run)
    final = run / "checkpoints" / "final.pt"
    # train.py's final evaluation: P^A, P^T and P^M in one call
    assert calls == [{"checkpoint": final, "split": "test", "modes": ("attention", "cluster", "mixed")}]
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["metrics"] == metrics

    assert cli.main(["--checkpoint", str(final), "--eval-dir", str(tmp_path / "eval"), "--json"]) == 0
    assert calls[1] == calls[0]  # evaluate.py: the same call
    assert json.loads(capsys.readouterr().out) == metrics
    assert (tmp_path / "eval" / "predictions.json").read_text() == (run / "predictions.json").read_text()

    modes = runner._evaluate_modes(run, ["attention", "mixed"])
    assert calls[2] == {"checkpoint": final, "split": "test", "modes": ("attention", "mixed")}  # the ablation
    assert modes == {mode: metrics["modes"][mode] for mode in ("attention", "mixed")}
    assert len(calls) == 3
