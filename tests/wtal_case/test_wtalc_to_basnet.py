"""tools/wtalc_to_basnet.py: W-TALC files (ActivityNet subset names) to the CASE/BaSNet layout."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from case.data import DataConfig, build_dataset

TOOL = Path(__file__).resolve().parents[2] / "examples" / "wtal_case" / "tools" / "wtalc_to_basnet.py"
_spec = importlib.util.spec_from_file_location("wtalc_to_basnet", TOOL)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)  # type: ignore[union-attr]

# name: (subset, T, [(start, end, label)])
VIDEOS = {
    "v_a": ("training", 6, [(0.5, 1.9, "Surfing")]),
    "v_b": ("validation", 5, [(0.0, 1.2, "Archery"), (1.5, 3.0, "Surfing")]),
    "v_c": ("testing", 4, []),  # ActivityNet's unlabelled test subset: skipped
    "v_d": ("validation", 7, [(2.0, 4.4, "Archery")]),
}
CLASSES = ["Surfing", "Archery"]  # file order, not sorted: classes.txt must keep it


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def make_wtalc(root: Path, name: str = "ActivityNet1.2") -> dict[str, np.ndarray]:
    ann = root / f"{name}-Annotations"
    ann.mkdir(parents=True)
    rng = np.random.default_rng(0)
    feats = {v: rng.random((t, 2048)).astype(np.float32) for v, (_, t, _) in VIDEOS.items()}
    np.save(ann / "videoname.npy", np.array([v.encode() for v in VIDEOS]))
    np.save(ann / "subset.npy", np.array([s.encode() for s, _, _ in VIDEOS.values()]))
    np.save(ann / "duration.npy", np.array([[t * 0.64] for _, t, _ in VIDEOS.values()]))
    np.save(ann / "segments.npy", _object_array([[[s, e] for s, e, _ in segs] for _, _, segs in VIDEOS.values()]))
    np.save(ann / "labels.npy", _object_array([[lab.encode() for *_, lab in segs] for _, _, segs in VIDEOS.values()]))
    np.save(ann / "classlist.npy", np.array([c.encode() for c in CLASSES]))
    np.save(root / f"{name}-I3D-JOINTFeatures.npy", _object_array(list(feats.values())))
    return feats


def test_activitynet_subsets_become_a_basnet_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats = make_wtalc(tmp_path / "src")
    out = tmp_path / "ActivityNet1.2"
    argv = ["--src", str(tmp_path / "src"), "--name", "ActivityNet1.2", "--out", str(out),
            "--train-subset", "training", "--test-subset", "validation"]  # fmt: skip
    assert tool.main(argv) == 0
    assert "1 training and 2 test videos" in capsys.readouterr().out
    cfg = DataConfig(source="basnet", root=str(out), num_segments=4)
    test = build_dataset(cfg, "test", "all")
    assert test.videos == ["v_b", "v_d"] and test.class_names == CLASSES
    item = test[0]
    assert np.array_equal(item["features"].numpy(), feats["v_b"])  # RGB then flow, as joined by W-TALC
    assert item["label"].tolist() == [1.0, 1.0] and item["duration"] == pytest.approx(5 * 0.64)
    gt = test.ground_truth()["database"]
    assert gt["v_d"]["annotations"] == [{"segment": [2.0, 4.4], "label": "Archery"}]
    assert build_dataset(cfg, "train", "all").videos == ["v_a"]
    assert "v_c" not in json.loads((out / "gt.json").read_text())["database"]
    # an existing folder is never overwritten; a subset that does not exist is named
    assert tool.main(argv) == 2 and "already exists" in capsys.readouterr().err
    bad = [*argv[:5], str(tmp_path / "other"), "--train-subset", "train", "--test-subset", "validation"]
    assert tool.main(bad) == 2
    err = capsys.readouterr().err
    assert "subsets ['testing', 'training', 'validation']" in err and not (tmp_path / "other").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
