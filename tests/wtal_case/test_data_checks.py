"""What the data readers refuse (errors naming the file) and what they only report (real data has it).

Each case here used to be accepted silently, or to fail deep inside training: an empty or
repeated split entry, a class listed twice, a non-positive duration, a number of 400 digits,
a file nested 100,000 deep, features holding NaN, infinities or 1e30. Annotations that end
after their video are in the real THUMOS14 files, so they are a warning naming them.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_readers import basnet_cfg, make_basnet  # tests/wtal_case is on sys.path

from case.data import DataConfig, DatasetError, build_dataset
from case.data.annotations import decode, num_snippets
from case.data.errors import DatasetWarning


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_basnet(tmp_path / "set")


def test_an_empty_split_file_is_an_error(root: Path) -> None:
    (root / "split_test.txt").write_text("\n  \n")
    with pytest.raises(DatasetError, match=r"split_test\.txt is empty: it must list at least one video"):
        build_dataset(basnet_cfg(root), "test", "all")


def test_a_video_listed_twice_in_a_split_is_an_error(root: Path) -> None:
    with (root / "split_train.txt").open("a") as fh:
        fh.write("v_train_a\n")  # it would be trained on twice as often, and scored twice
    with pytest.raises(DatasetError, match=r"split_train\.txt: video 'v_train_a' is listed twice \(entries 1 and 3\)"):
        build_dataset(basnet_cfg(root), "train", "random")


def test_a_class_listed_twice_is_an_error(tmp_path: Path) -> None:
    root = make_basnet(tmp_path / "set", classes=["Jump", "Run", "Swim", "Run"])
    with pytest.raises(DatasetError, match=r"classes\.txt: class 'Run' is listed twice \(entries 2 and 4\)"):
        build_dataset(basnet_cfg(root), "train", "all")


@pytest.mark.parametrize(
    ("duration", "message"),
    [("-3.2", "duration -3.2 s must be > 0"), (0, "duration 0.0 s must be > 0"), (10**400, "is not finite")],
    ids=["negative", "zero", "400-digit"],
)
def test_gt_durations_must_be_positive_numbers(root: Path, duration: object, message: str) -> None:
    payload = json.loads((root / "gt.json").read_text())
    payload["database"]["v_train_b"]["duration"] = duration
    (root / "gt.json").write_text(json.dumps(payload))
    with pytest.raises(DatasetError, match=message) as info:
        build_dataset(basnet_cfg(root), "train", "all")
    assert "gt.json" in str(info.value) and "v_train_b" in str(info.value)
    assert not re.search(r"\d{41}", str(info.value)), str(info.value)  # C-new-13: 400 digits printed whole


def test_a_400_digit_bound_and_a_deep_file_are_named(root: Path) -> None:
    payload = json.loads((root / "gt.json").read_text())
    payload["database"]["v_train_b"]["annotations"][0]["segment"] = [0, 10**400]
    (root / "gt.json").write_text(json.dumps(payload))
    with pytest.raises(DatasetError, match=r"gt\.json.*is not finite") as info:
        build_dataset(basnet_cfg(root), "train", "all")
    assert "an integer of 401 digits" in str(info.value) and not re.search(r"\d{41}", str(info.value))
    (root / "gt.json").write_text('{"database": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DatasetError, match=r"gt\.json: nested too deeply"):
        build_dataset(basnet_cfg(root), "train", "all")


@pytest.mark.parametrize(
    ("value", "what"), [(np.nan, "NaN"), (np.inf, "an infinity"), (-np.inf, "an infinity"), (1e30, "the value 1e")]
)
@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_bad_feature_values_are_named_with_their_file(root: Path, value: float, what: str, stream: str) -> None:
    path = root / "features" / "test" / stream / "v_test_a.npy"
    features = np.load(path)
    features[6, 3] = value
    np.save(path, features)
    test = build_dataset(basnet_cfg(root), "test", "all")  # headers are fine: building passes
    with pytest.raises(DatasetError, match=f"{path}: {what}.* at snippet 6, column 3") as info:
        test.verify()
    assert "within ±10000" in str(info.value)
    with pytest.raises(DatasetError, match=f"{path}: {what}.* at snippet 6, column 3"):
        test[0]  # a read is checked too (a file changed after verify() is named, not trained on)
    with pytest.raises(DatasetError, match=f"{path}: {what}.* at snippet 6, column 3"):
        test.batch([0])  # and a training batch, in either dtype
    with pytest.raises(DatasetError, match=f"{path}: {what}.* at snippet 6, column 3"):
        test.batch([0], torch.bfloat16)
    assert build_dataset(basnet_cfg(root), "train", "all").verify() is None  # the other split is fine


def test_values_at_the_magnitude_bound_are_accepted(root: Path) -> None:
    path = root / "features" / "train" / "rgb" / "v_train_b.npy"
    features = np.load(path)
    features[0, 0], features[1, 1] = 1e4, -1e4
    np.save(path, features)
    train = build_dataset(basnet_cfg(root), "train", "all")
    train.verify()
    assert train[1]["features"][0, 0].item() == 1e4
    assert train.batch([1])["features"][0, 1, 1].item() == -1e4


def test_float64_values_that_round_to_the_bound_are_accepted_as_they_always_were(root: Path) -> None:
    # 10000.0000001 is above the bound in float64 but 1e4 in float32, the dtype items hold
    path = root / "features" / "train" / "rgb" / "v_train_b.npy"
    features = np.load(path).astype(np.float64)
    features[0, 0] = 1e4 + 1e-7
    np.save(path, features)
    train = build_dataset(basnet_cfg(root), "train", "all")
    assert train[1]["features"][0, 0].item() == 1e4
    assert train.batch([1])["features"][0, 0, 0].item() == 1e4


def _basnet_on_real_thumos14(thumos14_dir: Path, root: Path, videos: list[str]) -> Path:
    """A CASE/BaSNet folder over the real gt.json (linked, never copied) with zero features of the
    real lengths (from W-TALC's durations) for ``videos``, all in the training split."""
    wtalc = thumos14_dir / "wtalc-annotations"
    names = [decode(v) for v in np.load(wtalc / "videoname.npy", allow_pickle=True)]
    durations = dict(zip(names, np.load(wtalc / "duration.npy", allow_pickle=True).reshape(-1), strict=True))
    for name in videos:
        for stream in ("rgb", "flow"):
            folder = root / "features" / "train" / stream
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{name}.npy", np.zeros((num_snippets(durations[name]), 1024), np.float16))
    os.symlink(thumos14_dir / "gt.json", root / "gt.json")
    (root / "split_train.txt").write_text("".join(f"{v}\n" for v in videos))
    return root


def test_thumos14_segments_past_the_video_end_are_a_warning(thumos14_dir: Path, tmp_path: Path) -> None:
    odd = ["video_validation_0000364", "video_validation_0000856"]  # annotations run up to 14 s past the end
    root = _basnet_on_real_thumos14(thumos14_dir, tmp_path / "set", [*odd, "video_validation_0000051"])
    with pytest.warns(DatasetWarning) as caught:
        train = build_dataset(basnet_cfg(root), "train", "random")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "4 annotated segment(s) of split 'train' end after their video" in message
    assert "video_validation_0000364 [113.6, 117.3] > 112.0 s" in message and "kept as annotated" in message
    assert len(train) == 3 and sum(len(r.segments) for r in train.records) > 4  # nothing dropped


def test_a_thumos14_split_without_odd_segments_is_silent(thumos14_dir: Path, tmp_path: Path, recwarn) -> None:
    root = _basnet_on_real_thumos14(thumos14_dir, tmp_path / "set", ["video_validation_0000051"])
    build_dataset(basnet_cfg(root), "train", "random")
    assert not [w for w in recwarn if issubclass(w.category, DatasetWarning)]


def test_wtalc_durations_and_class_list_are_checked(thumos14_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "Thumos14reduced-Annotations"
    shutil.copytree(thumos14_dir / "wtalc-annotations", folder)  # a test-time copy, never in the repo
    np.save(tmp_path / "Thumos14reduced-I3D-JOINTFeatures.npy", np.empty(0, dtype=object), allow_pickle=True)
    cfg = DataConfig(source="wtalc", root=str(tmp_path), feature_dim=16)
    durations = np.load(folder / "duration.npy", allow_pickle=True)
    durations[5, 0] = -durations[5, 0]
    np.save(folder / "duration.npy", durations, allow_pickle=True)
    with pytest.raises(DatasetError, match=r"duration\.npy \(video '.*'\): duration -.* s must be > 0"):
        build_dataset(cfg, "train", "all")
    np.save(folder / "duration.npy", np.abs(durations), allow_pickle=True)
    classes = np.load(folder / "classlist.npy", allow_pickle=True)
    classes[3] = classes[0]
    np.save(folder / "classlist.npy", classes, allow_pickle=True)
    with pytest.raises(DatasetError, match=r"classlist\.npy: class 'BaseballPitch' is listed twice"):
        build_dataset(cfg, "train", "all")


def _edit_gt(root: Path, edit) -> None:
    payload = json.loads((root / "gt.json").read_text())
    edit(payload["database"])
    (root / "gt.json").write_text(json.dumps(payload))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # str() made classes named "5", "None" and "['Run']" out of these, and trained on them
        (lambda db: db["v_train_a"]["annotations"][0].update(label=5), "annotation 0: label 5 is not a string"),
        (lambda db: db["v_train_a"]["annotations"][0].update(label=None), "label None is not a string"),
        (lambda db: db["v_train_a"]["annotations"][0].update(label=["Run"]), "label ['Run'] is not a string"),
        # float(True) == 1.0: a flag where a number goes
        (lambda db: db["v_train_b"].update(duration=True), "(video 'v_train_b'): True is not a number"),
        (lambda db: db["v_train_a"]["annotations"][0].update(segment=[False, 1]), "False is not a number"),
    ],
    ids=["int-label", "null-label", "list-label", "bool-duration", "bool-bound"],
)
def test_gt_labels_are_strings_and_numbers_are_not_flags(root: Path, edit, message: str) -> None:
    _edit_gt(root, edit)
    with pytest.raises(DatasetError, match=re.escape(message)) as info:
        build_dataset(basnet_cfg(root), "train", "all")
    assert str(info.value).startswith(str(root / "gt.json"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Python's json keeps the last of two equal keys: v_train_a's annotations silently vanished
        ('{"database": {"v_train_a": {"subset": "train", "annotations": []}, "v_train_a": {"subset": "train"}}}',
         "the key 'v_train_a' is written twice in one object"),
        ('{"database": {"v_train_a": {"subset": "train", "duration": ' + "9" * 5000 + "}}}",
         "holds an integer of more than 4300 digits"),  # was a ValueError traceback naming no file
    ],
    ids=["repeated-video", "5000-digits"],
)  # fmt: skip
def test_a_gt_json_the_json_reader_would_misread_is_named(root: Path, text: str, message: str) -> None:
    (root / "gt.json").write_text(text)
    with pytest.raises(DatasetError, match=re.escape(f"{root / 'gt.json'}: {message}")):
        build_dataset(basnet_cfg(root), "train", "all")


@pytest.mark.parametrize("name", ["gt.json", "split_train.txt", "features/train/flow/v_train_b.npy"])
def test_a_file_that_cannot_be_read_is_named(root: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No permission on a data file (or its folder) was a PermissionError traceback: stat() and open()
    raise it as they do for a user other than root (the suite may run as root, which no mode stops)."""
    denied = str(root / name)
    real_open, real_stat = builtins.open, Path.stat

    def refuse() -> None:
        raise PermissionError(13, "Permission denied", denied)

    monkeypatch.setattr(
        builtins, "open", lambda f, *a, **k: refuse() if os.fspath(f) == denied else real_open(f, *a, **k)
    )
    monkeypatch.setattr(Path, "stat", lambda p, *a, **k: refuse() if str(p) == denied else real_stat(p, *a, **k))
    with pytest.raises(DatasetError, match=re.escape(denied) + ".*Permission denied"):
        build_dataset(basnet_cfg(root), "train", "all")


# --------------------------------------------------------------------------- issue 21 (part)


@pytest.mark.parametrize(
    ("video", "split", "subset"), [("v_test_a", "test", "train"), ("v_train_b", "train", "test")], ids=["test", "train"]
)
def test_a_video_that_gt_json_puts_in_the_other_subset_is_refused(
    root: Path, video: str, split: str, subset: str
) -> None:
    """C-new-2: a test-split video whose gt.json subset is `train` (or the reverse: train/test
    leakage) was accepted silently, and its ground truth relabelled with the split's name."""
    _edit_gt(root, lambda db: db[video].update(subset=subset))
    message = f"{root / f'split_{split}.txt'}: video {video!r} is in gt.json's subset {subset!r}"
    with pytest.raises(DatasetError, match=re.escape(message)) as info:
        build_dataset(basnet_cfg(root), split, "all")
    assert "\n" not in str(info.value) and "leak" in str(info.value)
    other = "test" if split == "train" else "train"
    assert len(build_dataset(basnet_cfg(root), other, "all")) > 0  # the other split is not concerned


@pytest.mark.parametrize("subset", ["validation", "training", ""])
def test_subsets_of_other_names_are_not_judged(root: Path, subset: str) -> None:
    """Only `train` and `test`, this layout's names, can contradict a split file: ActivityNet's own
    files say `training` / `validation`, and `validation` trains on THUMOS14 but tests on ActivityNet."""
    _edit_gt(root, lambda db: db["v_test_a"].update(subset=subset))
    assert build_dataset(basnet_cfg(root), "test", "all").videos == ["v_test_a"]


def list_in_both_splits(root: Path, video: str = "v_test_a") -> None:
    """List the test video ``video`` in ``split_train.txt`` too, its features copied where training reads them."""
    for stream in ("rgb", "flow"):
        shutil.copy(root / "features" / "test" / stream / f"{video}.npy", root / "features" / "train" / stream)
    with (root / "split_train.txt").open("a") as handle:
        handle.write(f"{video}\n")


@pytest.mark.parametrize("subset", ["test", "validation", None])
@pytest.mark.parametrize("split", ["train", "test"])
def test_a_video_listed_in_both_split_files_is_refused(root: Path, split: str, subset: str | None) -> None:
    """A video in split_train.txt and split_test.txt (trained on and scored: leakage) was refused only
    by accident: for want of its features in the other split's folder, or by gt.json's subset, naming
    one split file; with features in both folders and a subset of another name it trained and tested."""
    list_in_both_splits(root)
    _edit_gt(root, lambda db: db["v_test_a"].pop("subset") if subset is None else db["v_test_a"].update(subset=subset))
    message = (
        f"video 'v_test_a' is listed in both {root / 'split_train.txt'} and {root / 'split_test.txt'}: a video "
        "in both splits leaks between training and testing; remove it from one"
    )
    with pytest.raises(DatasetError, match=re.escape(message)) as info:
        build_dataset(basnet_cfg(root), split, "all")
    assert "\n" not in str(info.value)


def test_a_split_file_may_be_missing_or_empty_when_the_other_is_read(root: Path) -> None:
    """The check reads the other split file only when it is there (a test-only folder has no training list)."""
    (root / "split_train.txt").unlink()
    assert build_dataset(basnet_cfg(root), "test", "all").videos == ["v_test_a"]
    (root / "split_train.txt").write_text("\n")
    assert build_dataset(basnet_cfg(root), "test", "all").videos == ["v_test_a"]


def test_the_real_thumos14_splits_agree_with_their_subsets(thumos14_dir: Path) -> None:
    """Why a contradiction is refused, not warned about: the real THUMOS14 files have none."""
    from case.data.annotations import check_split_subsets, read_activitynet_gt

    gt = read_activitynet_gt(thumos14_dir / "gt.json")
    for split in ("train", "test"):
        path = thumos14_dir / f"split_{split}.txt"
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        check_split_subsets([gt[name] for name in names], split, path, thumos14_dir / "gt.json")
        assert {gt[name].subset for name in names} == {split}


@pytest.mark.parametrize("name", ["classes.txt", "gt.json", "split_test.txt"])
def test_a_folder_where_a_data_file_goes_is_named_as_such(root: Path, name: str) -> None:
    """C-new-13: `classes.txt` as a folder was silently ignored (the classes came from gt.json), and
    `gt.json` as a folder was "cannot be read: Is a directory"; every data file says the same."""
    path = root / name
    if path.exists():
        path.unlink()
    path.mkdir()
    with pytest.raises(DatasetError, match=re.escape(f"{path} is a directory, not a file")):
        build_dataset(basnet_cfg(root), "test", "all")


def test_a_file_where_a_data_folder_goes_is_named_as_such(tmp_path: Path) -> None:
    """The data set's root, or W-TALC's annotation folder, given as a file was "not found"."""
    root = tmp_path / "root"
    root.write_text("")
    with pytest.raises(DatasetError, match=re.escape(f"data set folder {root} is a file, not a folder")):
        build_dataset(basnet_cfg(root), "test", "all")
    (tmp_path / "Thumos14reduced-Annotations").write_text("")
    cfg = DataConfig(source="wtalc", root=str(tmp_path), feature_dim=16)
    with pytest.raises(DatasetError, match="Thumos14reduced-Annotations is a file, not a folder"):
        build_dataset(cfg, "test", "all")


def test_random_bytes_in_a_wtalc_file_get_no_pickle_advice(thumos14_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "Thumos14reduced-Annotations"
    shutil.copytree(thumos14_dir / "wtalc-annotations", folder)  # a test-time copy, never in the repo
    (folder / "labels.npy").write_bytes(np.random.default_rng(0).bytes(4096))
    cfg = DataConfig(source="wtalc", root=str(tmp_path), feature_dim=16)
    with pytest.raises(DatasetError, match=re.escape(str(folder / "labels.npy"))) as info:
        build_dataset(cfg, "test", "all")
    assert "allow_pickle" not in str(info.value) and "\n" not in str(info.value)
