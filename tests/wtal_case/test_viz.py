"""PNG figures: foreground curves (Fig. 5) and entropy curves (Fig. 4)."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

from case import viz
from case.viz import plot_entropy_curves, plot_foreground

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temporary file was moved into place


def test_plot_foreground_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    att, p_t = rng.random(120), rng.random(120)
    gt = [{"segment": ["3.2", "9.6"], "label": "Jump"}, {"segment": [40.0, 52.5], "label": "Jump"}]
    out = plot_foreground(tmp_path / "fg.png", att, p_t, ground_truth=gt, title="video_test_1")
    assert out == tmp_path / "fg.png"
    assert_png(out)
    # Sampled rows, explicit P^M, plain pairs.
    out = plot_foreground(
        tmp_path / "fg2.png",
        att[:30],
        p_t[:30],
        (att[:30] + p_t[:30]) / 2,
        index=np.arange(0, 120, 4),
        ground_truth=[(3.2, 9.6)],
    )
    assert_png(out)
    assert_png(plot_foreground(tmp_path / "fg3.png", att))  # the baseline: P^A only


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attention": np.ones((3, 2))}, "attention must be a non-empty 1-D array"),
        ({"attention": []}, "attention must be a non-empty 1-D array"),
        ({"attention": np.ones(4), "cluster": np.ones(3)}, "cluster has 3 values, expected 4"),
        ({"attention": np.ones(4), "mixed": np.array([0, 1, np.nan, 0])}, "mixed contains non-finite"),
        ({"attention": np.ones(4), "index": np.arange(5)}, "index has 5 values"),
        ({"attention": np.ones(4), "ground_truth": [(5.0, 1.0)]}, r"ground_truth\[0\]"),
        ({"attention": np.ones(4), "ground_truth": [{"label": "A"}]}, r"ground_truth\[0\]"),
        ({"attention": np.ones(4), "snippet_seconds": 0.0}, "snippet_seconds"),
    ],
)
def test_plot_foreground_rejects_bad_input(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plot_foreground(tmp_path / "x.png", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_plot_entropy_curves_from_log_jsonl(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    lines = [
        json.dumps({"step": s, "loss": 1.0, "H_QS": 2.7 - s / 50, "H_QC": 0.69, "H_PS_usage": 2.77})
        for s in range(0, 100, 5)
    ]
    lines.insert(3, json.dumps({"step": 10, "mAP": [0.1], "average": 0.1}))  # eval record
    lines.insert(5, "")
    log.write_text("\n".join(lines) + "\n")
    assert_png(plot_entropy_curves(tmp_path / "entropy.png", log, title="run"))


def test_plot_entropy_curves_key_mapping(tmp_path: Path) -> None:
    records = [{"iteration": i, "ent_snippet": 1.0 / (i + 1)} for i in range(20)]
    out = plot_entropy_curves(tmp_path / "e.png", records, {"H(Q^S)": "ent_snippet"}, x_key="iteration")
    assert_png(out)
    assert_png(plot_entropy_curves(tmp_path / "e2.png", records, ["ent_snippet", "absent"], x_key="iteration"))


def test_plot_entropy_curves_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no record has 'step' and any of"):
        plot_entropy_curves(tmp_path / "e.png", [{"step": 1, "loss": 2.0}])
    with pytest.raises(ValueError, match="no record"):
        plot_entropy_curves(tmp_path / "e.png", [{"step": 1, "H_QS": float("nan")}])
    with pytest.raises(ValueError, match=r"records\[1\] must be a mapping"):
        plot_entropy_curves(tmp_path / "e.png", [{"step": 1, "H_QS": 1.0}, [1, 2]])
    with pytest.raises(ValueError, match="keys must name"):
        plot_entropy_curves(tmp_path / "e.png", [{"step": 1, "H_QS": 1.0}], {})
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "H_QS": 1.0}\n{oops\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2: not a JSON record"):
        plot_entropy_curves(tmp_path / "e.png", log)
    log.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"log\.jsonl:1: expected a JSON object"):
        plot_entropy_curves(tmp_path / "e.png", log)
    assert not (tmp_path / "e.png").exists()


def test_docstring_examples_run() -> None:
    result = doctest.testmod(viz)
    assert result.attempted > 0 and result.failed == 0


def test_a_foreground_plot_name_stays_a_plain_file_name_in_the_run_folder() -> None:
    """The video's name went into the file name as it was: a '/' put the plot in another folder and
    a long name exceeded the file system's limit once the atomic write's suffix was added."""
    assert viz.foreground_plot_name("video_test_0000004") == "foreground_video_test_0000004.png"
    for video in ("a/b", "../../../etc/x", "v" * 250, "naïve video", "a_b"):
        name = viz.foreground_plot_name(video)
        assert "/" not in name and len(f".{name}.abcdefgh.tmp") < 255, name
    assert viz.foreground_plot_name("a/b") != viz.foreground_plot_name("a_b")  # told apart by the hash
    assert viz.foreground_plot_name("v" * 250) != viz.foreground_plot_name("v" * 251)
