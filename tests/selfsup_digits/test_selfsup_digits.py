"""The self-labelling digits example (examples/selfsup_digits/train.py): its data, metrics,
training loop and command line, on short runs (seconds, not the example's minutes)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "selfsup_digits" / "train.py"

# loaded under its own name: the CASE example's tests put another train.py on sys.path
_spec = importlib.util.spec_from_file_location("selfsup_digits_train", SCRIPT)
digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(digits)


@pytest.fixture(scope="module")
def balanced() -> tuple[np.ndarray, np.ndarray]:
    return digits.load_dataset("balanced")


# ------------------------------------------------------------------ data


def test_the_long_tailed_subset_keeps_a_tenth_of_the_last_class_and_is_fixed(balanced) -> None:
    images, classes = digits.load_dataset("long-tailed")
    all_images, all_classes = balanced
    full = np.bincount(all_classes, minlength=10)
    kept = np.bincount(classes, minlength=10)
    assert kept.tolist() == [int(n * 0.1 ** (k / 9)) for k, n in enumerate(full)]
    assert kept.sum() == len(images) == 730
    assert kept[0] == full[0] and kept[9] / full[9] == pytest.approx(0.1, abs=0.01)
    # the same images on every call, each one of the balanced set's with its own class
    again_images, again_classes = digits.load_dataset("long-tailed")
    assert np.array_equal(again_images, images) and np.array_equal(again_classes, classes)
    match = (images.reshape(len(images), 1, 64) == all_images.reshape(1, -1, 64)).all(-1)
    assert match.any(1).all()
    assert all(classes[i] in all_classes[match[i]] for i in range(0, len(images), 37))
    assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1


def test_augment_keeps_shape_and_range_and_changes_the_image(balanced) -> None:
    images = torch.from_numpy(balanced[0][:64])
    views = digits.augment(images, torch.Generator().manual_seed(0))
    again = digits.augment(images, torch.Generator().manual_seed(0))
    assert views.shape == images.shape and torch.equal(views, again)
    assert views.min() >= 0 and views.max() <= 1
    assert (views - images).abs().mean() > 0.02  # a view, not a copy
    other = digits.augment(images, torch.Generator().manual_seed(1))
    assert not torch.equal(views, other)


# ------------------------------------------------------------------ metrics


def test_accuracy_of_a_renamed_labelling_is_one_and_of_a_hand_made_case_is_known() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 10, size=500)
    renamed = rng.permutation(10)[true]
    assert digits.cluster_accuracy(true, renamed) == 1.0
    scores = digits.scores_of(true, renamed)
    assert scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    assert scores["size_tv"] == pytest.approx(0.0) and scores["clusters_used"] == 10
    # clusters 1 -> class 0 (2 right), 0 -> class 1 (1 right), the third sample of cluster 1 is wrong
    assert digits.cluster_accuracy(np.array([0, 0, 1, 1]), np.array([1, 1, 1, 0])) == 0.75
    # one cluster for everything: the largest class's share
    assert digits.cluster_accuracy(np.array([0, 0, 0, 1, 2]), np.zeros(5, dtype=int)) == 0.6
    merged = digits.scores_of(np.array([0, 0, 0, 1, 2]), np.zeros(5, dtype=int))
    assert merged["nmi"] == pytest.approx(0.0) and merged["clusters_used"] == 1


def test_accuracy_refuses_vectors_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="one length"):
        digits.cluster_accuracy(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="non-empty"):
        digits.cluster_accuracy(np.array([], dtype=int), np.array([], dtype=int))


def test_summary_means_sds_and_the_one_sd_rule() -> None:
    def run(option: str, seed: int, accuracy: float) -> dict:
        return {"dataset": "d", "option": option, "seed": seed, "accuracy": accuracy, "nmi": 0.5, "ari": 0.4}

    runs = [run("equipartition", s, a) for s, a in enumerate((0.60, 0.62, 0.64))]
    runs += [run("better", s, a) for s, a in enumerate((0.70, 0.72, 0.74))]
    runs += [run("close", s, a) for s, a in enumerate((0.60, 0.63, 0.66))]
    for r in runs:
        r.update(size_tv=0.1, clusters_used=2, shares=[0.5, 0.5])
    rows = {row["option"]: row for row in digits.summarise(runs)}
    assert rows["equipartition"]["accuracy"] == pytest.approx(0.62)
    assert rows["equipartition"]["accuracy_sd"] == pytest.approx(0.02)  # ddof = 1
    assert rows["better"]["beats_equipartition"] is True  # +0.10 > 0.02
    assert rows["close"]["beats_equipartition"] is False  # +0.01 < 0.03
    assert rows["equipartition"]["beats_equipartition"] is None


def test_write_atomically_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "results.md"
    target.write_text("old")
    digits.write_atomically(target, b"new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]


# ------------------------------------------------------------------ the training loop


@pytest.mark.parametrize("option", list(digits.OPTIONS))
def test_every_option_trains_a_few_steps(option: str) -> None:
    images, classes = digits.load_dataset("long-tailed")
    result = digits.train(images, option, seed=0, steps=12, classes=classes)
    assert len(result["losses"]) == 12 and np.isfinite(result["losses"]).all()
    assert result["clusters"].shape == (len(images),)
    assert 0 <= result["clusters"].min() and result["clusters"].max() < 10


def test_the_loop_lowers_the_loss_and_moves_the_labels(balanced) -> None:
    images, classes = balanced
    result = digits.train(images, "equipartition", seed=0, steps=101, classes=classes)
    losses = np.array(result["losses"])
    assert losses[-10:].mean() < losses[:10].mean() - 0.3
    assert max(result["changed"]) > 0.05  # the probe images' clusters changed between checks


def test_a_short_real_run_clusters_far_above_chance(balanced) -> None:
    """300 steps (a few seconds) on all 1,797 digits: chance is 0.1, k-means on pixels about 0.79."""
    images, classes = balanced
    result = digits.train(images, "equipartition", seed=0, steps=300)
    scores = digits.scores_of(classes, result["clusters"])
    assert scores["accuracy"] > 0.5 and scores["nmi"] > 0.4


# ------------------------------------------------------------------ the command line


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--steps", "many"], "invalid int value"),
        (["--option", "sinkhorn-magic"], "unknown --option 'sinkhorn-magic'"),
        (["--option", "bounded", "--option", "bounded"], "twice"),
        (["--dataset", "mnist"], "invalid choice"),
        (["--seeds", "-1"], "non-negative"),
        (["--seeds", "0", "0"], "repeats"),
        (["--threads", "0"], "--threads"),
        (["--out", "FILE"], "is not a folder"),
        (["--out", "FILE/sub"], "cannot create --out"),
    ],
)
def test_bad_arguments_get_one_line_before_any_work(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "FILE").write_text("not a folder")
    args = [str(tmp_path / a) if a.startswith("FILE") else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stop:
        digits.parse_arguments(args)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert says in error and len(error.strip().splitlines()) == 1, error
    assert (tmp_path / "FILE").read_text() == "not a folder"


def test_the_script_refuses_in_one_line(tmp_path: Path) -> None:
    """The script itself (not only parse_arguments): an output folder that is a file."""
    (tmp_path / "FILE").write_text("x")
    result = _run("--out", str(tmp_path / "FILE"), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("train.py: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]  # nothing written


def test_a_tiny_run_writes_its_reports(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    result = _run(
        "--dataset", "long-tailed", "--option", "equipartition", "--option", "bounded-sla",
        "--seeds", "0", "1", "--steps", "3", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "results.png"]
    record = json.loads((out / "results.json").read_text())
    assert {(r["option"], r["seed"]) for r in record["runs"]} == {
        (o, s) for o in ("k-means", "equipartition", "bounded-sla") for s in (0, 1)
    }
    assert all(0 <= r["accuracy"] <= 1 for r in record["runs"])
    table = (out / "results.md").read_text()
    assert "| long-tailed | bounded-sla |" in table and "± " in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
