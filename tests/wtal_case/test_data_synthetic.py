"""The synthetic generator: THUMOS14-like statistics, feature structure, determinism, cache."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import case.data.synthetic as synthetic
from case.data import DataConfig, DatasetError, SyntheticConfig, build_dataset, ensure_synthetic
from case.data.annotations import foreground_mask, num_snippets, read_activitynet_gt
from case.data.constants import THUMOS14_CLASSES, THUMOS14_NUM_VIDEOS
from case.data.errors import ctrl_c_is_never_lost, raise_if_interrupted
from case.data.statistics import annotation_statistics
from case.data.synthetic import FEATURE_MODEL, parameter_hash, parameters, synthetic_records

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wtal_case"
# 12 train + 13 test videos of 3 classes: small enough to generate in about a second, with
# every class seen several times in each split (the feature probes below need that).
TINY = SyntheticConfig(seed=0, scale=0.06, max_snippets=160, num_classes=3)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(TINY, tmp_path_factory.mktemp("synthetic") / "tiny")


# ------------------------------------------------------------------------ annotations


@pytest.mark.parametrize("seed", [0, 1])
def test_full_size_annotations_are_thumos14_like(seed: int) -> None:
    records = synthetic_records(SyntheticConfig(seed=seed))
    stats = annotation_statistics(records, THUMOS14_CLASSES)
    assert stats["NUM_VIDEOS"] == THUMOS14_NUM_VIDEOS
    ipv = stats["INSTANCES_PER_VIDEO"]  # THUMOS14: mean 15.4, median 8, p90 36, max 218
    assert 11 <= ipv["mean"] <= 21 and 5 <= ipv["median"] <= 12
    assert ipv["p90"] >= 3 * ipv["median"] and ipv["max"] >= 80, "heavy tail"
    sec = stats["INSTANCE_SECONDS"]  # THUMOS14: median 3.0, mean 4.3, p10 1.0, p90 8.5
    assert 2.0 <= sec["median"] <= 4.0 and 3.0 <= sec["mean"] <= 5.5 and sec["p90"] > 2.5 * sec["p10"]
    vid = stats["VIDEO_SECONDS"]  # THUMOS14: median 155, mean 213
    assert 120 <= vid["median"] <= 190 and 170 <= vid["mean"] <= 260 and vid["max"] > 900
    fg = stats["FOREGROUND_FRACTION"]  # THUMOS14: 0.30 of snippets
    assert 0.22 <= fg["snippets"] <= 0.38
    single = stats["CLASSES_PER_VIDEO"][1] / len(records)  # THUMOS14: 349 / 410 = 0.85
    assert 0.78 <= single <= 0.92
    top_pairs = sorted(stats["CLASS_PAIR_VIDEOS"].items(), key=lambda kv: -kv[1])[:2]
    assert {pair for pair, _ in top_pairs} == {("CricketBowling", "CricketShot"), ("CliffDiving", "Diving")}
    for split in ("train", "test"):
        present = {s.label for r in records if r.subset == split for s in r.segments}
        assert present == set(THUMOS14_CLASSES)


def test_instances_lie_inside_the_video_and_do_not_overlap() -> None:
    for rec in synthetic_records(SyntheticConfig(seed=2, scale=0.5, max_snippets=300)):
        assert rec.duration is not None and num_snippets(rec.duration) <= 300
        assert rec.segments, rec.name
        spans = sorted((s.start, s.end) for s in rec.segments)
        assert spans[0][0] >= 0 and spans[-1][1] <= num_snippets(rec.duration) * 0.64 + 1e-9
        assert all(s < e for s, e in spans)
        assert all(e0 <= s1 + 1e-9 for (_, e0), (s1, _) in zip(spans, spans[1:]))
        assert foreground_mask(rec.segments, num_snippets(rec.duration)).any()


def test_smaller_scale_is_a_prefix_and_fewer_classes_keep_their_sets() -> None:
    big = synthetic_records(SyntheticConfig(seed=4, scale=0.5, max_snippets=256))
    small = synthetic_records(SyntheticConfig(seed=4, scale=0.2, max_snippets=256))
    for split in ("train", "test"):
        b = [r for r in big if r.subset == split]
        s = [r for r in small if r.subset == split]
        assert len(s) == round(0.2 * THUMOS14_NUM_VIDEOS[split]) and b[: len(s)] == s
    five = synthetic_records(SyntheticConfig(seed=4, num_classes=5))
    assert {s.label for r in five for s in r.segments} == set(THUMOS14_CLASSES[:5])  # CliffDiving too


def test_config_errors_name_the_field() -> None:
    for bad, field in [
        ({"scale": 0}, "data.synthetic.scale"),
        ({"scale": 1.5}, "data.synthetic.scale"),
        ({"max_snippets": -1}, "data.synthetic.max_snippets"),
        ({"num_classes": 21}, "data.synthetic.num_classes"),
        ({"seed": -3}, "data.synthetic.seed"),
    ]:
        with pytest.raises(ValueError, match=field):
            SyntheticConfig(**bad)


# --------------------------------------------------------------------------- features


def _load(root: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    gt = read_activitynet_gt(root / "gt.json")
    names = (root / f"split_{split}.txt").read_text().split()
    rgb = [np.load(root / "features" / split / "rgb" / f"{n}.npy") for n in names]
    flow = [np.load(root / "features" / split / "flow" / f"{n}.npy") for n in names]
    return rgb, flow, {n: gt[n] for n in names}


def test_layout_and_feature_format(tiny_root: Path) -> None:
    for split, count in (("train", 12), ("test", 13)):
        rgb, flow, gt = _load(tiny_root, split)
        assert len(rgb) == count == len(gt)
        for r, f, rec in zip(rgb, flow, gt.values()):
            assert r.dtype == np.float16 and r.shape == f.shape == (num_snippets(rec.duration), 1024)
            assert r.shape[0] <= 160
            assert np.isfinite(r).all() and (r >= 0).all() and (f >= 0).all()
    assert (tiny_root / "classes.txt").read_text().split() == list(THUMOS14_CLASSES[:3])
    ds = build_dataset(DataConfig(root=str(tiny_root), num_segments=64, synthetic=TINY), "train", "random")
    assert ds[0]["features"].shape == (64, 2048) and ds.num_classes == 3


def _fg_and_distance(root: Path, split: str = "train"):
    """Per snippet: foreground?, seconds to the nearest instance (0 inside one), video id."""
    rgb, flow, gt = _load(root, split)
    feats, fg, dist, vid = [], [], [], []
    for k, (r, f, rec) in enumerate(zip(rgb, flow, gt.values())):
        t = len(r)
        centres = (np.arange(t) + 0.5) * 0.64
        d = np.full(t, np.inf)
        for s in rec.segments:
            d = np.minimum(d, np.maximum(0.0, np.maximum(s.start - centres, centres - s.end)))
        feats.append(np.concatenate([r, f], 1).astype(np.float32))
        fg.append(foreground_mask(rec.segments, t))
        dist.append(d)
        vid.append(np.full(t, k))
    return np.concatenate(feats), np.concatenate(fg), np.concatenate(dist), np.concatenate(vid)


def _auc(score: np.ndarray, target: np.ndarray) -> float:
    ranks = np.empty(len(score))
    ranks[np.argsort(score)] = np.arange(1, len(score) + 1)
    pos, neg = target.sum(), (~target).sum()
    return float((ranks[target].sum() - pos * (pos + 1) / 2) / (pos * neg))


def test_foreground_is_learnable_but_not_trivial(tiny_root: Path) -> None:
    """A *supervised* linear probe (ridge LDA) fit on the training videos, scored on the test
    videos, separates foreground from background well but not perfectly."""
    x, fg, _, _ = _fg_and_distance(tiny_root, "train")
    x_test, fg_test, _, _ = _fg_and_distance(tiny_root, "test")
    cov = np.cov(x.T) + 10.0 * np.eye(x.shape[1])
    w = np.linalg.solve(cov, x[fg].mean(0) - x[~fg].mean(0))
    auc = _auc(x_test @ w, fg_test)
    assert 0.7 < auc < 0.99, auc


def test_context_next_to_actions_looks_more_like_actions(tiny_root: Path) -> None:
    x, fg, dist, _ = _fg_and_distance(tiny_root)
    centre = x[fg].mean(0)
    near = ~fg & (dist > 0) & (dist < 1.0)  # background within a second of an instance
    far = ~fg & (dist > 6.0)
    d_near = np.linalg.norm(x[near] - centre, axis=1).mean()
    d_far = np.linalg.norm(x[far] - centre, axis=1).mean()
    assert d_near < 0.97 * d_far, (d_near, d_far)


def test_features_are_smooth_in_time(tiny_root: Path) -> None:
    rgb, flow, _ = _load(tiny_root, "train")

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.astype(np.float32), b.astype(np.float32)
        return float((np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())

    for stream in (rgb, flow):
        long = [v for v in stream if len(v) > 60]
        adjacent = np.mean([cosine(v[:-1], v[1:]) for v in long])
        distant = np.mean([cosine(v[:-40], v[40:]) for v in long])
        assert adjacent > distant + 0.1, (adjacent, distant)


def test_each_video_has_its_own_appearance(tiny_root: Path) -> None:
    x, fg, _, vid = _fg_and_distance(tiny_root)
    rgb = x[:, :1024]
    means = np.stack([rgb[(vid == k) & ~fg].mean(0) for k in np.unique(vid)])
    # Background of a video is nearer its own video's mean than the other videos' means.
    hits = []
    for k in np.unique(vid):
        rows = rgb[(vid == k) & ~fg][::5]
        nearest = np.argmin(((rows[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        hits.append(np.mean(nearest == k))
    assert np.mean(hits) > 0.5


# ------------------------------------------------------------------ determinism, cache


def test_generation_is_deterministic(tmp_path: Path, tiny_root: Path) -> None:
    again = ensure_synthetic(TINY, tmp_path / "again")
    for path in sorted(tiny_root.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            assert path.read_bytes() == (again / path.relative_to(tiny_root)).read_bytes(), path
    _, _, first = next(synthetic.generate_videos(TINY))
    _, _, other = next(synthetic.generate_videos(dataclasses.replace(TINY, seed=1)))
    assert first["rgb"].shape != other["rgb"].shape or not np.array_equal(first["rgb"], other["rgb"])


def test_hash_covers_config_and_feature_model() -> None:
    base = parameter_hash(parameters(TINY))
    assert parameter_hash(parameters(dataclasses.replace(TINY, max_snippets=161))) != base
    assert parameter_hash(parameters(TINY, dataclasses.replace(FEATURE_MODEL, noise=0.9))) != base
    assert parameter_hash(parameters(SyntheticConfig(**dataclasses.asdict(TINY)))) == base


def test_cache_is_reused_and_regenerated_on_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "set"
    cfg = SyntheticConfig(scale=0.01, max_snippets=40)
    ensure_synthetic(cfg, root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["hash"] == parameter_hash(parameters(cfg)) and manifest["videos"] == {"train": 2, "test": 2}

    calls = []
    real = synthetic.write_synthetic
    monkeypatch.setattr(synthetic, "write_synthetic", lambda *a, **k: calls.append(1) or real(*a, **k))
    ensure_synthetic(cfg, root)
    assert calls == []  # same parameters: nothing regenerated
    ensure_synthetic(dataclasses.replace(cfg, seed=5), root)
    assert calls == [1]
    assert json.loads((root / "manifest.json").read_text())["parameters"]["config"]["seed"] == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".set.tmp")] == []


def test_failed_generation_leaves_no_half_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "set"
    cfg = SyntheticConfig(scale=0.02, max_snippets=40)
    saved = []
    real_save = np.save  # the patch below replaces numpy's own np.save too

    def failing_save(path, arr):
        if len(saved) == 5:
            raise OSError("disk full")
        saved.append(path)
        real_save(path, arr)

    monkeypatch.setattr(synthetic.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        ensure_synthetic(cfg, root)
    assert not root.exists()
    monkeypatch.undo()
    ensure_synthetic(cfg, root)
    good = sorted(p.relative_to(root) for p in root.rglob("*"))

    monkeypatch.setattr(synthetic.np, "save", failing_save)
    saved.clear()
    with pytest.raises(OSError, match="disk full"):
        ensure_synthetic(dataclasses.replace(cfg, seed=9), root)
    # The previous complete set is untouched and still valid.
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == good
    assert json.loads((root / "manifest.json").read_text())["hash"] == parameter_hash(parameters(cfg))
    assert {p.name for p in tmp_path.iterdir()} == {"set", ".set.lock"}  # no temporary folder left


@pytest.mark.parametrize("where", ["last video", "first video"])
def test_a_ctrl_c_that_code_swallows_still_stops_the_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A Ctrl-C that lands in code which drops it (the init of a lazily imported C extension,
    seen in CI: NumPy's ``numpy.random``) let the run generate, train and exit 0. Inside
    ``ctrl_c_is_never_lost`` it is remembered, and the set is neither finished nor committed."""
    root = tmp_path / "set"
    saved = []
    real_save = np.save  # the patch below replaces numpy's own np.save too

    def save_with_a_swallowed_ctrl_c(path, arr):
        saved.append(path)
        real_save(path, arr)
        if len(saved) == (1 if where == "first video" else 2 * 2 * 4):  # 2 streams; scale 0.02 = 4 + 4 videos
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the handler runs here, in the main thread
            except KeyboardInterrupt:
                pass  # what the extension's init does with it

    monkeypatch.setattr(synthetic.np, "save", save_with_a_swallowed_ctrl_c)
    with ctrl_c_is_never_lost(), pytest.raises(KeyboardInterrupt):
        ensure_synthetic(SyntheticConfig(scale=0.02, max_snippets=40), root)
    assert not root.exists() and [p.name for p in tmp_path.iterdir()] == [".set.lock"]
    if where == "first video":
        assert len(saved) == 2  # stopped at the next video, not at the end
    # Outside the guard nothing is remembered and the default handler is back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    ensure_synthetic(SyntheticConfig(scale=0.02, max_snippets=40), root)
    assert (root / "manifest.json").is_file()


def test_ctrl_c_guard_leaves_an_ignored_ctrl_c_ignored() -> None:
    """A job started with Ctrl-C ignored (``nohup``, ``&`` in a script) keeps ignoring it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ctrl_c_is_never_lost():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            raise_if_interrupted()  # nothing was remembered
    finally:
        signal.signal(signal.SIGINT, previous)


def test_killed_generation_is_cleaned_up(tmp_path: Path) -> None:
    """SIGKILL a real generation mid-way: no set appears, the next call generates it."""
    root = tmp_path / "set"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from case.data import SyntheticConfig, ensure_synthetic;"
        "ensure_synthetic(SyntheticConfig(scale=0.3, max_snippets=400, dtype='float32'), sys.argv[2])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(EXAMPLE), str(root)])
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".set.tmp") and (p / "features").exists() for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "generation finished before it was killed"
        time.sleep(0.02)
    time.sleep(0.3)  # let it write some files
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not root.exists()
    assert any(p.name.startswith(".set.tmp") for p in tmp_path.iterdir())  # the half set is aside
    ensure_synthetic(SyntheticConfig(scale=0.01, max_snippets=40), root)
    assert (root / "manifest.json").exists()
    assert not any(p.name.startswith(".set.tmp") for p in tmp_path.iterdir())


def test_refuses_to_overwrite_a_folder_it_did_not_generate(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("precious")
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        ensure_synthetic(SyntheticConfig(scale=0.01, max_snippets=40), root)
    assert (root / "notes.txt").read_text() == "precious"
