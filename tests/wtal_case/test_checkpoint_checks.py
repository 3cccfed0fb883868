"""Checkpoints that do not fit their run, or a run whose data changed: one line naming the file.

Hand-made or damaged checkpoints given to ``evaluate.py --checkpoint`` or ``train.py --resume``
(NaN weights, an invalid saved configuration, weights of other shapes) ended in a message naming
no file or in a state_dict dump; a ``--resume`` after the split files or the data files changed
continued silently on other data, or blamed the epochs. Each is now one line, exit status 2,
naming the file (issue 21: C-new-5, C-new-11, C-new-13). The runs are real ``train.py``
processes on a four-video CASE/BaSNet set.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from example_scripts import load_evaluate_py  # tests/wtal_case is on sys.path
from test_data_readers import VIDEOS, make_basnet  # tests/wtal_case is on sys.path
from test_train_checks import _train

ROOT = Path(__file__).resolve().parents[2]
cli = load_evaluate_py()

#: Three training videos: one can go from the split and leave a batch of two.
THREE_TRAIN = {**VIDEOS, "v_train_c": ("train", 6, [[1.0, 2.5, "Jump"]])}


@pytest.fixture(autouse=True)
def _keep_thread_count() -> object:
    """evaluate.py applies the run's ``train.threads`` to this process: restore it for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data set, finished run folder) of a six-step run with checkpoints at steps 2 and 4."""
    base = tmp_path_factory.mktemp("finished")
    data = make_basnet(base / "data", videos=THREE_TRAIN)
    out = base / "run"
    result = _train(data, out, "--set", "train.keep_checkpoints=0")
    assert result.returncode == 0, result.stderr[-3000:]
    return data, out


@pytest.fixture()
def run(finished: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the finished run and of its data set, for a test to damage."""
    data, out = (tmp_path / "data", tmp_path / "run")
    shutil.copytree(finished[0], data)
    shutil.copytree(finished[1], out)
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace(str(finished[0]), str(data)))
    for path in (out / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=False)
        state["config"]["data"]["root"] = str(data)  # the fingerprint's paths are relative to it
        torch.save(state, path)
    return data, out


def _one_error(stderr: str, program: str) -> str:
    errors = [line for line in stderr.splitlines() if not line.startswith(f"{program}: warning:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert errors[0].startswith(f"{program}: error: "), errors[0]
    return errors[0]


def _edit_checkpoints(out: Path, edit) -> None:
    for path in (out / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=False)
        edit(state)
        torch.save(state, path)


def _nan_weights(state: dict) -> None:
    state["model"] = {k: torch.full_like(v, float("nan")) for k, v in state["model"].items()}


def _bigger_weights(state: dict) -> None:
    state["model"] = {k: torch.zeros([d + 1 for d in v.shape]) for k, v in state["model"].items()}


# --------------------------------------------------------------------------- C-new-11: inconsistent checkpoints

INCONSISTENT = [
    (_nan_weights, ["its model weights hold NaN or infinite values", "streams."]),
    (lambda s: s["config"]["model"].update(hidden_dim=-5), ["saved configuration is invalid", "hidden_dim"]),
    (lambda s: s["config"]["model"].update(bogus=1), ["saved configuration is invalid", "unknown key 'model.bogus'"]),
    (lambda s: s.update(config="lr: 0.1"), ["saved configuration is a str, not a mapping"]),
    (_bigger_weights, ["its model weights do not fit its configuration", "size mismatch"]),
    (lambda s: s.update(cluster_fg=torch.full((3,), float("nan"))), ["cluster_fg", "8 finite"]),
    (lambda s: s.update(class_names=[1, 2, 3]), ["class_names", "list of strings"]),
]
IDS = ["nan-weights", "bad-config", "unknown-key", "config-not-mapping", "shapes", "cluster_fg", "class-names"]


@pytest.mark.parametrize(("edit", "words"), INCONSISTENT, ids=IDS)
def test_evaluate_names_the_inconsistent_checkpoint(
    run: tuple[Path, Path], edit, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN weights were "attention contains non-finite values" (no file), a bad saved configuration
    named no file either."""
    _, out = run
    _edit_checkpoints(out, edit)
    final = out / "checkpoints" / "final.pt"
    code = cli.main(["--checkpoint", str(final), "--eval-dir", str(out.parent / "eval")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured.err
    line = _one_error(captured.err, "evaluate.py")
    assert line.startswith(f"evaluate.py: error: checkpoint {final}: "), line
    assert all(word in line for word in words), (words, line)
    assert len(line) < 400, line


@pytest.mark.parametrize(("edit", "words"), INCONSISTENT, ids=IDS)
def test_resume_names_the_inconsistent_checkpoint(run: tuple[Path, Path], edit, words: list[str]) -> None:
    """--resume from them was a traceback (NaN weights, through the evaluation), a 5-15 line
    state_dict dump (other shapes), or a 'configuration differs' that blamed the command line."""
    data, out = run
    _edit_checkpoints(out, edit)
    result = _train(data, out, "--resume", "--set", "train.keep_checkpoints=0")
    assert result.returncode == 2, result.stderr[-3000:]
    line = _one_error(result.stderr, "train.py")
    assert f"checkpoint {out / 'checkpoints' / 'final.pt'}: " in line and all(w in line for w in words), line


def test_nan_weights_in_a_periodic_checkpoint_are_not_blamed_on_the_learning_rate(run: tuple[Path, Path]) -> None:
    """Resumed from a NaN step_*.pt, the next step stopped with 'lower optim.lr' (exit status 1)."""
    data, out = run
    (out / "checkpoints" / "final.pt").unlink()
    _edit_checkpoints(out, _nan_weights)
    result = _train(data, out, "--resume", "--set", "train.keep_checkpoints=0")
    assert result.returncode == 2, result.stderr[-3000:]
    line = _one_error(result.stderr, "train.py")
    assert f"checkpoint {out / 'checkpoints' / 'step_000004.pt'}: its model weights hold NaN" in line, line


# --------------------------------------------------------------------------- C-new-13: evaluate.py's other inputs


def test_a_folder_given_as_the_checkpoint_is_named_as_such(tmp_path: Path, capsys) -> None:
    """It was "checkpoint <folder> does not exist"."""
    code = cli.main(["--checkpoint", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == f"evaluate.py: error: checkpoint {tmp_path} is a directory, not a file\n"


def test_tiou_and_a_400_digit_score_are_one_short_line(tmp_path: Path, capsys) -> None:
    gt = {"database": {"v": {"subset": "test", "annotations": [{"segment": [0, 1], "label": "A"}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    pred = tmp_path / "pred.json"
    for score in ("9" * 400, "-" + "9" * 400, "9" * 400 + ".5"):
        pred.write_text('{"results": {"v": [{"label": "A", "segment": [0, 1], "score": ' + score + "}]}}")
        assert cli.main(["--gt", str(tmp_path / "gt.json"), "--pred", str(pred)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'score' must be a finite number" in err and len(err) < 200, err
    pred.write_text('{"results": {"v": [{"label": "A", "segment": [0, ' + "9" * 400 + '], "score": 1}]}}')
    assert cli.main(["--gt", str(tmp_path / "gt.json"), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not re.search(r"\d{41}", err), err
    assert cli.main(["--gt", str(tmp_path / "gt.json"), "--pred", str(pred), "--tiou", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: error: --tiou must be") and "tiou_thresholds" not in err, err


# --------------------------------------------------------------------------- C-new-5: the data a run resumes on


def _refused_naming(result, path: Path, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    line = _one_error(result.stderr, "train.py")
    assert str(path) in line and all(word in line for word in words), line


def test_a_reordered_split_file_is_refused_on_resume(run: tuple[Path, Path]) -> None:
    """A reordered split_train.txt resumed silently, on another data order."""
    data, out = run
    split = data / "split_train.txt"
    split.write_text("v_train_b\nv_train_a\nv_train_c\n")
    _refused_naming(_train(data, out, "--resume", "--set", "train.keep_checkpoints=0"), split, "another order")


def test_a_video_removed_from_the_split_is_refused_naming_the_split(run: tuple[Path, Path]) -> None:
    """It was refused, but as "its data order {'epoch': ...} does not match": nothing about the split."""
    data, out = run
    split = data / "split_train.txt"
    split.write_text("v_train_a\nv_train_c\n")
    result = _train(data, out, "--resume", "--set", "train.keep_checkpoints=0")
    _refused_naming(result, split, "'v_train_b' is gone")
    assert "data order" not in result.stderr


@pytest.mark.parametrize("changed", ["features/train/rgb/v_train_a.npy", "features/test/flow/v_test_a.npy", "gt.json"])
def test_a_changed_data_file_is_refused_on_resume(run: tuple[Path, Path], changed: str) -> None:
    data, out = run
    path = data / changed
    if path.suffix == ".npy":
        np.save(path, np.load(path) + 1)  # the same shape, other values
    else:
        payload = json.loads(path.read_text())
        payload["database"]["v_train_a"]["annotations"][0]["segment"] = ["0.5", "2.5"]
        path.write_text(json.dumps(payload))
    result = _train(data, out, "--resume", "--set", "train.keep_checkpoints=0")
    _refused_naming(result, path, "changed since", "final.pt")


def test_what_does_not_change_the_data_does_not_refuse_a_resume(run: tuple[Path, Path]) -> None:
    """Blank lines in a split file, a file copied (new modification time): the same data."""
    data, out = run
    before = (out / "metrics.json").read_text()
    split = data / "split_train.txt"
    split.write_text("\n" + split.read_text() + "\n\n")
    feature = data / "features" / "train" / "flow" / "v_train_b.npy"
    feature.write_bytes(feature.read_bytes())
    (out / "metrics.json").unlink()
    result = _train(data, out, "--resume", "--set", "train.keep_checkpoints=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.json").read_text() == before


def test_a_checkpoint_without_a_fingerprint_still_resumes_saying_so(run: tuple[Path, Path]) -> None:
    data, out = run
    (out / "checkpoints" / "final.pt").unlink()
    _edit_checkpoints(out, lambda state: state.pop("data_fingerprint"))
    result = _train(data, out, "--resume", "--set", "train.keep_checkpoints=0")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    warning = [line for line in result.stderr.splitlines() if "fingerprint" in line]
    assert len(warning) == 1 and warning[0].startswith("train.py: warning: ") and "step_000004.pt" in warning[0]
    assert "data_fingerprint" in torch.load(out / "checkpoints" / "final.pt", weights_only=False)


# --------------------------------------------------------------------------- what --resume may change


def test_a_resume_may_change_how_often_checkpoints_are_kept_and_what_is_drawn(run: tuple[Path, Path]) -> None:
    """train.checkpoint_every, train.keep_checkpoints and eval.plot_videos cannot change the weights,
    the log or the metrics, but a --resume that changed them was refused ("configuration differs")."""
    data, out = run
    before = (out / "metrics.json").read_text()
    (out / "checkpoints" / "final.pt").unlink()
    (out / "metrics.json").unlink()
    changed = ["train.checkpoint_every=3", "train.keep_checkpoints=1", "eval.plot_videos=1"]
    result = _train(data, out, "--resume", *[arg for item in changed for arg in ("--set", item)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.json").read_text() == before and list(out.glob("foreground_*.png"))


def test_the_settings_a_resume_may_change_are_settings() -> None:
    from case.config import Config, to_dict
    from case.runfolder import RESUME_MAY_CHANGE

    plain = to_dict(Config())
    for key in RESUME_MAY_CHANGE:
        section, name = key.split(".")
        assert name in plain[section], key
    assert "train.threads" not in RESUME_MAY_CHANGE and "train.log_every" not in RESUME_MAY_CHANGE
