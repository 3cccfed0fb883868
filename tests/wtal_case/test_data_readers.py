"""The CASE/BaSNet and W-TALC readers, on generated files and the real W-TALC annotations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from case.data import DataConfig, DatasetError, DatasetFileNotFoundError, build_dataset
from case.data.annotations import decode, num_snippets
from case.data.errors import DatasetWarning

# name: (split, T, segments as written in gt.json)
VIDEOS = {
    "v_train_a": ("train", 7, [["0.5", "1.9", "Jump"], ["3.1", "4.0", "Run"]]),
    "v_train_b": ("train", 5, [[0.0, 1.2, "Run"]]),
    "v_test_a": ("test", 9, [["2.0", "5.5", "Swim"]]),
}


def _features(name: str, t: int, width: int, stream: int) -> np.ndarray:
    """Deterministic, distinguishable features: value = 1000*stream + row + column / 10^4."""
    rows = np.arange(t, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :] / 1e4
    return (1000.0 * stream + rows + cols + len(name)).astype(np.float32)


def make_basnet(root: Path, videos=VIDEOS, width: int = 1024, classes: list[str] | None = None) -> Path:
    database = {}
    for name, (split, t, segs) in videos.items():
        for k, stream in enumerate(("rgb", "flow")):
            folder = root / "features" / split / stream
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{name}.npy", _features(name, t, width, k))
        database[name] = {"subset": split, "annotations": [{"segment": s[:2], "label": s[2]} for s in segs]}
    (root / "gt.json").write_text(json.dumps({"database": database}))
    for split in ("train", "test"):
        (root / f"split_{split}.txt").write_text("".join(f"{n}\n" for n, v in videos.items() if v[0] == split))
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def basnet_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(source="basnet", root=str(root), num_segments=kw.pop("num_segments", 4), **kw)


# ---------------------------------------------------------------------------- CASE/BaSNet


def test_basnet_reader_reads_the_layout(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set")
    train = build_dataset(basnet_cfg(root), "train", "all")
    assert train.class_names == ["Jump", "Run", "Swim"]  # sorted labels of gt.json
    assert train.videos == ["v_train_a", "v_train_b"]
    item = train[0]
    assert item["video"] == "v_train_a" and item["num_snippets"] == 7
    assert item["features"].dtype == torch.float32 and item["features"].shape == (7, 2048)
    expected = np.concatenate([_features("v_train_a", 7, 1024, 0), _features("v_train_a", 7, 1024, 1)], axis=1)
    np.testing.assert_array_equal(item["features"].numpy(), expected)  # RGB first, then flow
    assert item["label"].tolist() == [1.0, 1.0, 0.0]
    assert item["index"].tolist() == list(range(7))
    assert item["duration"] == pytest.approx(7 * 0.64)  # gt.json has no duration: T * 0.64


def test_basnet_ground_truth_converts_string_segments(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set")
    gt = build_dataset(basnet_cfg(root), "test", "uniform").ground_truth()
    assert gt == {
        "database": {
            "v_test_a": {
                "subset": "test",
                "duration": pytest.approx(9 * 0.64),
                "annotations": [{"segment": [2.0, 5.5], "label": "Swim"}],
            }
        }
    }


def test_basnet_uses_durations_and_class_order_when_given(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set", classes=["Swim", "Run", "Jump", "Unused"])
    gt_path = root / "gt.json"
    payload = json.loads(gt_path.read_text())
    payload["database"]["v_train_b"]["duration"] = "3.3"
    gt_path.write_text(json.dumps(payload))
    train = build_dataset(basnet_cfg(root), "train", "all")
    assert train.class_names == ["Swim", "Run", "Jump", "Unused"]
    assert train[1]["label"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert train[1]["duration"] == 3.3


def test_basnet_unknown_class_label_names_the_file(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set", classes=["Jump", "Run"])  # "Swim" is not listed
    with pytest.raises(DatasetError, match=r"gt\.json.*v_test_a.*unknown class label 'Swim'"):
        build_dataset(basnet_cfg(root), "train", "all")


def test_basnet_unknown_video_in_split_names_the_split_file(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set")
    with (root / "split_train.txt").open("a") as fh:
        fh.write("v_ghost\n")
    with pytest.raises(DatasetError, match=r"split_train\.txt: video 'v_ghost' is not in .*gt\.json"):
        build_dataset(basnet_cfg(root), "train", "random")


def test_basnet_missing_feature_file(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set")
    missing = root / "features" / "train" / "flow" / "v_train_b.npy"
    missing.unlink()
    with pytest.raises(DatasetFileNotFoundError, match=str(missing)):
        build_dataset(basnet_cfg(root), "train", "random")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.write_bytes(b"this is not a numpy file"), "not a valid .npy array"),  # not allow_pickle advice
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "not a readable .npy array"),  # truncated data
        (lambda p: np.save(p, np.zeros((5, 512), np.float32)), r"shape \(5, 512\), expected \(T >= 1, 1024\)"),
        (lambda p: np.save(p, np.zeros(1024, np.float32)), r"shape \(1024,\)"),
        (lambda p: np.save(p, np.zeros((0, 1024), np.float32)), r"shape \(0, 1024\)"),
        (lambda p: np.save(p, np.zeros((5, 1024), np.int64)), "dtype int64"),
    ],
    ids=["garbage", "truncated", "width", "1-d", "empty", "integer"],
)
def test_basnet_bad_feature_file_names_the_file(tmp_path: Path, corrupt, message: str) -> None:
    root = make_basnet(tmp_path / "set")
    bad = root / "features" / "train" / "rgb" / "v_train_b.npy"
    corrupt(bad)
    with pytest.raises(DatasetError, match=message) as info:
        build_dataset(basnet_cfg(root), "train", "random")
    assert str(bad) in str(info.value)


def test_basnet_rgb_and_flow_lengths_must_agree(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set")
    np.save(root / "features" / "test" / "flow" / "v_test_a.npy", np.zeros((8, 1024), np.float32))
    with pytest.raises(DatasetError, match=r"v_test_a\.npy.*have 9 and 8 snippets"):
        build_dataset(basnet_cfg(root), "test", "uniform")


def test_basnet_file_corrupted_after_building_fails_on_read_naming_it(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set")
    train = build_dataset(basnet_cfg(root), "train", "random")
    bad = root / "features" / "train" / "rgb" / "v_train_a.npy"
    np.save(bad, np.zeros((7, 3), np.float32))
    with pytest.raises(DatasetError, match=str(bad)):
        train[0]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"videos": {}}', "top-level"),
        ('{"database": {"v_train_a": {"annotations": [{"segment": ["3", "1"], "label": "Run"}]}}}', "start <= end"),
        ('{"database": {"v_train_a": {"annotations": [{"segment": ["x", "1"], "label": "Run"}]}}}', "not a number"),
        ('{"database": {"v_train_a": {"annotations": [{"segment": [1], "label": "Run"}]}}}', "not a pair"),
        ('{"database": {"v_train_a": {"annotations": [{"label": "Run"}]}}}', "needs 'segment' and 'label'"),
    ],
    ids=["json", "database", "reversed", "nan-string", "short", "no-segment"],
)
def test_basnet_malformed_gt_names_the_file(tmp_path: Path, payload: str, message: str) -> None:
    root = make_basnet(tmp_path / "set")
    (root / "gt.json").write_text(payload)
    with pytest.raises(DatasetError, match=message) as info:
        build_dataset(basnet_cfg(root), "train", "all")
    assert "gt.json" in str(info.value)


@pytest.mark.parametrize("missing", ["gt.json", "split_test.txt", "."])
def test_basnet_missing_files(tmp_path: Path, missing: str) -> None:
    root = make_basnet(tmp_path / "set")
    target = root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetFileNotFoundError, match="not found"):
        build_dataset(basnet_cfg(root), "test", "all")


def test_config_and_argument_errors_name_the_field(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set")
    # config values: the section's own check (data.source, a choice, is the config loader's)
    with pytest.raises(ValueError, match="data.num_segments"):
        basnet_cfg(root, num_segments=0)
    with pytest.raises(ValueError, match="data.feature_dim"):
        basnet_cfg(root, feature_dim=2047)
    with pytest.raises(ValueError, match="data.feature_dim must be 2048 for the synthetic source"):
        DataConfig(feature_dim=1024)
    with pytest.raises(DatasetError, match="split"):
        build_dataset(basnet_cfg(root), "validation", "all")
    with pytest.raises(DatasetError, match="sampling"):
        build_dataset(basnet_cfg(root), "train", "dense")


# ---------------------------------------------------------------------------------- W-TALC


def _copy_real_annotations(thumos14_dir: Path, root: Path, name: str) -> Path:
    folder = root / f"{name}-Annotations"
    shutil.copytree(thumos14_dir / "wtalc-annotations", folder)  # a test-time copy, never in the repo
    return folder


def _wtalc_features(path: Path, lengths: list[int], width: int) -> list[np.ndarray]:
    arrays = [np.full((t, width), i, dtype=np.float32) for i, t in enumerate(lengths)]
    holder = np.empty(len(arrays), dtype=object)
    holder[:] = arrays
    np.save(path, holder, allow_pickle=True)
    return arrays


def test_wtalc_reader_on_the_real_thumos14_annotations(thumos14_dir: Path, tmp_path: Path) -> None:
    folder = _copy_real_annotations(thumos14_dir, tmp_path, "Thumos14reduced")
    names = [decode(v) for v in np.load(folder / "videoname.npy", allow_pickle=True)]
    durations = np.load(folder / "duration.npy", allow_pickle=True).reshape(-1)
    lengths = [num_snippets(d) for d in durations]  # what 25 fps, 16-frame features would have
    # A narrow feature width keeps the file small: the reader's logic does not depend on it.
    _wtalc_features(tmp_path / "Thumos14reduced-I3D-JOINTFeatures.npy", lengths, 16)
    cfg = DataConfig(source="wtalc", root=str(tmp_path), feature_dim=16, num_segments=50)
    # the real annotations run past their video's end in a few places: named, kept
    with pytest.warns(DatasetWarning, match="4 annotated segment.* of split 'train' end after their video"):
        train = build_dataset(cfg, "train", "random")
    with pytest.warns(DatasetWarning, match="26 annotated segment.* of split 'test'.*video_test_0000270"):
        test = build_dataset(cfg, "test", "uniform")
    assert (len(train), len(test)) == (200, 212)  # W-TALC keeps the 2 videos gt.json drops
    classlist = [decode(c) for c in np.load(folder / "classlist.npy", allow_pickle=True)]
    assert train.class_names == classlist and len(classlist) == 20
    labels_all = np.load(folder / "labels_all.npy", allow_pickle=True)
    segments = np.load(folder / "segments.npy", allow_pickle=True)
    position = {n: i for i, n in enumerate(names)}
    for ds in (train, test):
        for i in (0, len(ds) // 2, len(ds) - 1):
            item, k = ds[i], position[ds.videos[i]]
            assert item["num_snippets"] == lengths[k]
            assert item["features"][0, 0].item() == k  # the right array of the object file
            want = {classlist.index(decode(c)) for c in labels_all[k]}
            assert set(torch.nonzero(item["label"]).flatten().tolist()) == want
            assert item["duration"] == pytest.approx(float(durations[k]))
    assert train.videos[0].startswith("video_validation_") and test.videos[0].startswith("video_test_")
    gt = test.ground_truth()["database"]
    k = position[test.videos[3]]
    entry = gt[test.videos[3]]
    assert entry["subset"] == "test" and entry["duration"] == pytest.approx(float(durations[k]))
    assert [a["segment"] for a in entry["annotations"]] == [[float(s), float(e)] for s, e in segments[k]]
    assert test[3]["features"].shape == (min(50, lengths[k]), 16)
    batch = train.batch([4, 0, 7])  # a training batch, written straight from the held arrays
    for j, i in enumerate([4, 0, 7]):
        assert torch.equal(batch["features"][j], train[i]["features"]) and batch["video"][j] == train.videos[i]


def _small_wtalc(root: Path, name: str = "Small", as_bytes: bool = False) -> Path:
    folder = root / f"{name}-Annotations"
    folder.mkdir(parents=True)
    enc = (lambda s: s.encode()) if as_bytes else (lambda s: s)
    np.save(folder / "videoname.npy", np.array([enc(v) for v in ("a", "b", "c")], dtype=object))
    np.save(folder / "subset.npy", np.array([enc(s) for s in ("validation", "test", "validation")], dtype=object))
    np.save(folder / "duration.npy", np.array([[6.4], [3.2], [12.8]]))
    segs, labs = np.empty(3, dtype=object), np.empty(3, dtype=object)
    segs[:] = [[[0.5, 2.0]], [[1.0, 2.5], [2.6, 3.0]], []]
    labs[:] = [[enc("Jump")], [enc("Run"), enc("Jump")], []]
    np.save(folder / "segments.npy", segs, allow_pickle=True)
    np.save(folder / "labels.npy", labs, allow_pickle=True)
    np.save(folder / "classlist.npy", np.array([b"Jump", b"Run"]))
    _wtalc_features(root / f"{name}-I3D-JOINTFeatures.npy", [10, 5, 20], 2048)
    return folder


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_wtalc_reader_accepts_str_and_bytes_entries(tmp_path: Path, as_bytes: bool) -> None:
    _small_wtalc(tmp_path, as_bytes=as_bytes)
    cfg = DataConfig(source="wtalc", root=str(tmp_path), wtalc_name="Small", num_segments=8)
    train = build_dataset(cfg, "train", "random", seed=3)
    assert train.videos == ["a", "c"] and train.class_names == ["Jump", "Run"]
    assert train[0]["features"].shape == (8, 2048) and train[0]["label"].tolist() == [1.0, 0.0]
    assert train[1]["label"].tolist() == [0.0, 0.0]  # a video without instances is allowed
    test = build_dataset(cfg, "test", "all")
    assert test[0]["label"].tolist() == [1.0, 1.0] and test[0]["features"].shape == (5, 2048)


def test_wtalc_unknown_class_label_names_the_file(tmp_path: Path) -> None:
    folder = _small_wtalc(tmp_path)
    labs = np.load(folder / "labels.npy", allow_pickle=True)
    labs[1] = ["Run", "Dance"]
    np.save(folder / "labels.npy", labs, allow_pickle=True)
    cfg = DataConfig(source="wtalc", root=str(tmp_path), wtalc_name="Small")
    with pytest.raises(DatasetError, match=r"labels\.npy: video 'b' has unknown class label 'Dance'"):
        build_dataset(cfg, "train", "all")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ([np.zeros((10, 2048)), np.zeros((5, 2048))], "holds 2 videos, but the annotations list 3"),
        ([np.zeros((10, 2048)), np.zeros((5, 2048)), np.zeros((20, 1024))], r"video 'c'.*shape \(20, 1024\)"),
        ([np.zeros((10, 2048)), np.zeros((5, 2048)), np.zeros((0, 2048))], r"video 'c'.*shape \(0, 2048\)"),
    ],
    ids=["count", "width", "empty"],
)
def test_wtalc_bad_feature_file_names_the_file(tmp_path: Path, arrays, message: str) -> None:
    _small_wtalc(tmp_path)
    path = tmp_path / "Small-I3D-JOINTFeatures.npy"
    holder = np.empty(len(arrays), dtype=object)
    holder[:] = arrays
    np.save(path, holder, allow_pickle=True)
    cfg = DataConfig(source="wtalc", root=str(tmp_path), wtalc_name="Small")
    with pytest.raises(DatasetError, match=message) as info:
        build_dataset(cfg, "train", "all")
    assert str(path) in str(info.value)


def test_wtalc_missing_or_corrupt_files(tmp_path: Path) -> None:
    folder = _small_wtalc(tmp_path)
    cfg = DataConfig(source="wtalc", root=str(tmp_path), wtalc_name="Small")
    features = tmp_path / "Small-I3D-JOINTFeatures.npy"
    features.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match=f"{features} cannot be read"):
        build_dataset(cfg, "train", "all")
    features.unlink()
    with pytest.raises(DatasetFileNotFoundError, match=str(features)):
        build_dataset(cfg, "train", "all")
    (folder / "segments.npy").unlink()
    with pytest.raises(DatasetFileNotFoundError, match="segments.npy"):
        build_dataset(cfg, "train", "all")
    with pytest.raises(DatasetFileNotFoundError, match="Other-Annotations"):
        build_dataset(DataConfig(source="wtalc", root=str(tmp_path), wtalc_name="Other"), "train", "all")


def test_wtalc_unknown_subset_and_length_mismatch(tmp_path: Path) -> None:
    folder = _small_wtalc(tmp_path)
    cfg = DataConfig(source="wtalc", root=str(tmp_path), wtalc_name="Small")
    np.save(folder / "subset.npy", np.array(["validation", "testing", "test"], dtype=object))
    with pytest.raises(DatasetError, match=r"subset\.npy: video 'b' has subset 'testing'"):
        build_dataset(cfg, "train", "all")
    np.save(folder / "subset.npy", np.array(["validation", "test"], dtype=object))
    with pytest.raises(DatasetError, match=r"subset\.npy: 2 entries, but videoname\.npy has 3"):
        build_dataset(cfg, "train", "all")
