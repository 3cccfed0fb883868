"""``evaluate.py --checkpoint``: a trained model run on a data set, with and without ground truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from example_scripts import load_evaluate_py, smoke_run  # tests/wtal_case is on sys.path
from test_evaluate_cli import read_only

from case.checkpoint import load_checkpoint
from case.config import ConfigError, load_config
from case.inference import detect_dataset, inference_class_names, inference_config, load_for_inference, predict_dataset
from case.metrics import evaluate_detection

cli = load_evaluate_py()
pytestmark = pytest.mark.usefixtures("restore_thread_count")  # evaluate.py sets this process's threads


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke run of train.py (20 steps are enough to test the plumbing)."""
    return smoke_run(tmp_path_factory.mktemp("ckpt"), steps=20).folder


def evaluate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_checkpoint_reproduces_the_run_s_predictions_and_metrics(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    final = run / "checkpoints" / "final.pt"
    code, out, err = evaluate(capsys, "--checkpoint", str(final), "--json")
    assert code == 0, err
    assert json.loads(out) == json.loads((run / "metrics.json").read_text())
    folder = run / "eval-final-run-test"  # the default: beside the run, named after checkpoint, config, split
    assert f"{folder}/predictions.json" in err
    assert json.loads((folder / "predictions.json").read_text()) == json.loads((run / "predictions.json").read_text())
    assert json.loads((folder / "metrics.json").read_text()) == json.loads(out)
    # the checkpoint knows what its outputs mean
    from case.data import build_dataset

    trained = load_for_inference(final)
    assert trained.class_names == build_dataset(trained.config.data, "train", "all").class_names
    assert trained.num_classes == 20 and trained.step == 20 and trained.cluster_fg.shape == (8,)


def test_loading_a_checkpoint_skips_the_random_initialisation(run: Path) -> None:
    """load_for_inference built the model with its random initialisation, then replaced every weight by
    the checkpoint's: wasted work, and the global torch generator moved (a seeded caller's later draws
    changed with the loading)."""
    final = run / "checkpoints" / "final.pt"
    generator = torch.random.get_rng_state()
    trained = load_for_inference(final)
    assert torch.equal(torch.random.get_rng_state(), generator)
    saved = load_checkpoint(final)["model"]
    weights = dict(trained.model.named_parameters())
    assert list(weights) == list(saved) and set(trained.model.state_dict()) == set(saved)
    for name, tensor in saved.items():  # the checkpoint's, bit for bit, as ordinary CPU parameters
        assert weights[name].device.type == "cpu" and weights[name].requires_grad, name
        assert torch.equal(weights[name], tensor) and weights[name].dtype == tensor.dtype, name


def test_test_time_overrides_change_only_the_post_processing(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = run / "checkpoints" / "final.pt"
    out_dir = tmp_path / "attention"
    code, _, err = evaluate(
        capsys, "--checkpoint", str(final), "--set", "postprocess.foreground_mode=attention", "--eval-dir", str(out_dir)
    )
    assert code == 0, err
    # the same detections by the engine's own functions and an independently resolved config
    cfg = load_config(run / "config.yaml", ["postprocess.foreground_mode=attention"])
    trained = load_for_inference(final)
    from case.data import build_dataset

    dataset = build_dataset(cfg.data, "test", cfg.eval.sampling)
    expected = detect_dataset(predict_dataset(trained, dataset, cfg, torch.device("cpu")), dataset.class_names, cfg)
    assert json.loads((out_dir / "predictions.json").read_text()) == json.loads(json.dumps(expected))
    mixed = json.loads((run / "predictions.json").read_text())
    assert expected != mixed  # P^A instead of P^M: other detections (the CAS weight changes too)


def _dataset_without(run: Path, tmp_path: Path, keep: str) -> Path:
    """The smoke data set as a CASE/BaSNet folder whose gt.json keeps the annotations of ``keep`` videos."""
    cfg = load_config(run / "config.yaml")
    source = Path(cfg.data.root)
    root = tmp_path / f"data-{keep}"
    root.mkdir()
    for name in ("features", "split_train.txt", "split_test.txt"):
        (root / name).symlink_to(source / name)
    gt = json.loads((source / "gt.json").read_text())
    test_videos = sorted(v for v, e in gt["database"].items() if e["subset"] == "test")
    for video, entry in gt["database"].items():
        if keep == "none" or video in test_videos[::2]:
            entry["annotations"] = []
    (root / "gt.json").write_text(json.dumps(gt))
    return root


def _evaluate_on(
    capsys: pytest.CaptureFixture[str], run: Path, root: Path, out_dir: Path, *extra: str
) -> tuple[int, str, str]:
    """evaluate.py on the run's final checkpoint over the CASE/BaSNet folder ``root``, JSON to stdout."""
    checkpoint = str(run / "checkpoints" / "final.pt")
    return evaluate(
        capsys, "--checkpoint", checkpoint, "--set", "data.source=basnet", "--set", f"data.root={root}",
        "--eval-dir", str(out_dir), "--json", *extra,
    )  # fmt: skip


def test_videos_without_ground_truth_get_predictions_and_count_as_false_positives(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _dataset_without(run, tmp_path, "half")
    out_dir = tmp_path / "half"
    code, out, err = _evaluate_on(capsys, run, root, out_dir)
    assert code == 0, err
    predictions = json.loads((out_dir / "predictions.json").read_text())
    gt = json.loads((root / "gt.json").read_text())
    test_videos = {v for v, e in gt["database"].items() if e["subset"] == "test"}
    bare = {v for v in test_videos if not gt["database"][v]["annotations"]}
    assert set(predictions["results"]) == test_videos and bare  # every video, annotated or not
    assert f"({len(bare)} without ground truth)" in err
    assert any(predictions["results"][v] for v in bare)
    # scored by the protocol on the data set's own ground truth: detections in bare videos are false positives
    known = {a["label"] for e in gt["database"].values() for a in e["annotations"]}
    kept = {v: [d for d in dets if d["label"] in known] for v, dets in predictions["results"].items()}
    scored = json.loads(out)  # the configured mode's figures at the top, as in metrics.json
    assert {k: scored[k] for k in ("tiou", "mAP", "average")} == evaluate_detection(
        gt, {"results": kept}, subset="test"
    ).to_dict()


def test_a_data_set_without_any_annotation_only_gets_predictions(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _dataset_without(run, tmp_path, "none")
    out_dir = tmp_path / "none"
    code, out, err = _evaluate_on(capsys, run, root, out_dir)
    assert code == 0 and out == "" and "nothing to evaluate" in err
    assert not (out_dir / "metrics.json").exists()
    predictions = json.loads((out_dir / "predictions.json").read_text())
    # the data set knows no class at all: the labels are the checkpoint's
    trained = load_for_inference(run / "checkpoints" / "final.pt")
    labels = {d["label"] for dets in predictions["results"].values() for d in dets}
    assert labels and labels <= set(trained.class_names)
    # an explicit --gt is scored even so (here the run's own annotations)
    run_gt = Path(load_config(run / "config.yaml").data.root) / "gt.json"
    code, out, err = _evaluate_on(capsys, run, root, out_dir, "--gt", str(run_gt))
    assert code == 0, err
    assert json.loads(out) == json.loads((run / "metrics.json").read_text())


def test_bad_requests_fail_clearly(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    final = str(run / "checkpoints" / "final.pt")
    code, _, err = evaluate(capsys, "--checkpoint", final, "--set", "model.num_clusters=4")
    assert code == 2 and "'model' section is fixed by the checkpoint" in err
    code, _, err = evaluate(capsys, "--checkpoint", str(tmp_path / "missing.pt"))
    assert code == 2 and "missing.pt does not exist" in err
    code, _, err = evaluate(
        capsys, "--checkpoint", final, "--set", "data.source=basnet", "--set", "data.feature_dim=1024"
    )
    assert code == 2 and "trained on features of width 2048" in err
    code, _, err = evaluate(capsys, "--checkpoint", final, "--gt", str(tmp_path / "none.json"))
    assert code == 2 and "ground truth file not found" in err and "none.json" in err
    with pytest.raises(SystemExit):
        cli.main(["--pred", "p.json"])  # --pred needs --gt
    with pytest.raises(SystemExit):
        cli.main(["--gt", "g.json", "--pred", "p.json", "--config", "c.yaml"])  # --config goes with --checkpoint
    assert "only apply with --checkpoint" in capsys.readouterr().err


def test_class_names_of_the_data_set_must_be_known_to_the_model(run: Path) -> None:
    trained = load_for_inference(run / "checkpoints" / "final.pt")
    assert inference_class_names(trained, trained.class_names[:3]) == trained.class_names
    with pytest.raises(ValueError, match="not trained on: \\['Juggling'\\]"):
        inference_class_names(trained, [*trained.class_names[:3], "Juggling"])
    with pytest.raises(ConfigError, match="'labeling' section is fixed"):
        inference_config(trained.config, overrides=["labeling.scc.sigma=0.1"])


def test_the_data_set_s_files_are_inputs_too(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out (or --eval-dir) was checked against the flags' files only: with --checkpoint, `--out
    <data.root>/gt.json` replaced the data set's ground truth with a metrics object."""
    final = str(run / "checkpoints" / "final.pt")
    data = Path(load_config(run / "config.yaml").data.root)
    protected = {p: p.read_bytes() for p in (data / "gt.json", data / "split_test.txt")}
    feature = next((data / "features" / "test" / "rgb").iterdir())
    protected[feature] = feature.read_bytes()
    for target in [*protected, data / "features" / ".." / "gt.json"]:
        code, out, err = evaluate(capsys, "--checkpoint", final, "--out", str(target), "--eval-dir", str(tmp_path))
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert f"--out {target} is an input (the data set " in err
    assert {p: p.read_bytes() for p in protected} == protected
    # the metrics may not replace the predictions either, and a folder or a file in the wrong place is
    # refused before any work (they were errors only after the whole evaluation)
    code, _, err = evaluate(
        capsys, "--checkpoint", final, "--eval-dir", str(tmp_path), "--out", str(tmp_path / "predictions.json")
    )
    assert code == 2 and "is where the predictions go" in err
    (tmp_path / "file").write_text("")
    code, _, err = evaluate(capsys, "--checkpoint", final, "--eval-dir", str(tmp_path / "file"))
    assert code == 2 and err == f"evaluate.py: error: --eval-dir {tmp_path / 'file'} is a file, not a folder\n"
    code, _, err = evaluate(capsys, "--checkpoint", final, "--out", str(tmp_path))
    assert code == 2 and err == f"evaluate.py: error: --out {tmp_path} is a folder; name the JSON file to write\n"


class _Payload:
    """What a crafted pickle can carry: a call made while it is read."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_cannot_run_code(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checkpoints were read with torch.load(weights_only=False): a downloaded checkpoint given to
    evaluate.py, or one planted in a shared run folder before a --resume, ran any code it carried."""
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pt"
    state = torch.load(run / "checkpoints" / "final.pt", weights_only=False)
    state["config"] = {"data": _Payload(marker)}
    torch.save(state, crafted)
    code, out, err = evaluate(capsys, "--checkpoint", str(crafted))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "holds objects other than tensors and plain data" in err and "crafted.pt" in err
    assert not marker.exists()
    assert load_checkpoint(run / "checkpoints" / "final.pt")["step"] == 20  # train.py's own still load


def test_a_run_folder_s_own_outputs_are_not_replaced(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """C-new-1: ``--eval-dir <run>`` (or ``--out <run>/metrics.json``) silently replaced the training
    run's own predictions.json and metrics.json with the results of other settings."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval-*"))  # not what other tests evaluated
    final = str(copy / "checkpoints" / "final.pt")
    before = {p: p.read_bytes() for p in (copy / "predictions.json", copy / "metrics.json")}
    attention = ("--set", "postprocess.foreground_mode=attention")
    code, out, err = evaluate(capsys, "--checkpoint", final, *attention, "--eval-dir", str(copy))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"evaluate.py: error: --eval-dir {copy} is a run folder of train.py"), err
    code, out, err = evaluate(capsys, "--checkpoint", final, *attention, "--out", str(copy / "metrics.json"))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    own = copy / "metrics.json"
    assert err.startswith(f"evaluate.py: error: --out {own} is a file of the run folder {copy.resolve()}"), err
    # refused before any work: the default evaluation folder was not even made
    assert not any(p.name.startswith("eval-") for p in copy.iterdir())
    # with --pred too, and a run in progress (its lock, no config.yaml yet) is a run folder as well
    started = tmp_path / "started"
    started.mkdir()
    (started / "run.lock").write_text("{}")
    code, out, err = evaluate(
        capsys, "--gt", str(tmp_path / "g.json"), "--pred", str(copy / "predictions.json"),
        "--out", str(started / "metrics.json"),
    )  # fmt: skip
    assert code == 2 and f"--out {started / 'metrics.json'} is a file of the run folder {started.resolve()}" in err, err
    assert {p: p.read_bytes() for p in before} == before
    # a file of one's own naming in a run folder, and a folder inside one, are fine
    code, _, err = evaluate(capsys, "--checkpoint", final, "--out", str(copy / "metrics-again.json"))
    assert code == 0, err
    assert json.loads((copy / "metrics-again.json").read_text()) == json.loads(before[copy / "metrics.json"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("state_dict", "lacks model, config, class_names, cluster_fg, step (a bare state_dict?"),
        ("tensor", "holds a Tensor, not train.py's dictionary"),
        ("no-model", "lacks model"),
        ("no-config", "lacks config"),
        ("wrong-shapes", "its model weights do not fit its configuration"),
    ],
)
def test_a_checkpoint_that_is_not_train_py_s_is_one_line(
    run: Path, tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """C-new-6: a bare state_dict, a tensor or a dict without ``model`` or ``config`` ended in a
    traceback (KeyError, IndexError); --resume already said which file lacks what."""
    state = torch.load(run / "checkpoints" / "final.pt", weights_only=False)
    if content == "state_dict":
        saved = state["model"]
    elif content == "tensor":
        saved = torch.zeros(3)
    elif content == "wrong-shapes":
        saved = {**state, "model": {k: v.reshape(-1)[:1] for k, v in state["model"].items()}}
    else:
        saved = {k: v for k, v in state.items() if k != content.removeprefix("no-")}
    path = tmp_path / "other.pt"
    torch.save(saved, path)
    code, out, err = evaluate(capsys, "--checkpoint", str(path), "--eval-dir", str(tmp_path / "eval"))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"evaluate.py: error: checkpoint {path}") and message in err, err


def test_a_failed_write_of_the_predictions_names_the_flag_and_the_file(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """C-new-10: a read-only --eval-dir was reported by the temporary file beside predictions.json."""
    locked = tmp_path / "locked"
    read_only(locked, monkeypatch)
    code, out, err = evaluate(capsys, "--checkpoint", str(run / "checkpoints" / "final.pt"), "--eval-dir", str(locked))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    target = locked / "predictions.json"
    assert err == f"evaluate.py: error: --eval-dir {target}: cannot write it (Permission denied)\n", err
