"""Snippet sampling (the paper's random perturbation, uniform, all), determinism, batching."""

from __future__ import annotations

import pickle
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_readers import VIDEOS, make_basnet  # tests/wtal_case is on sys.path (rootdir import)
from torch.utils.data import DataLoader

from case.batching import load_batch
from case.data import DataConfig, DatasetError, build_dataset, collate_videos, sample_indices
from case.data.dataset import _sampled_rows


def _official_bins(length: int, t: int) -> list[tuple[int, int]]:
    """The inclusive ranges of the official ``random_perturb``, from its float arithmetic."""
    if length == t:  # the official code returns every snippet in order
        return [(i, i) for i in range(t)]
    samples = np.arange(t) * length / t
    ranges = []
    for i in range(t):
        lo = int(samples[i])
        if i < t - 1:
            hi = int(samples[i + 1]) if int(samples[i]) != int(samples[i + 1]) else lo
        else:
            hi = length - 1 if lo < length - 1 else lo
        ranges.append((lo, hi))
    return ranges


@pytest.mark.parametrize(("length", "t"), [(10, 4), (7, 7), (3, 8), (750, 750), (2613, 750), (1, 5), (123, 50)])
def test_random_perturbation_draws_inside_the_official_bins(length: int, t: int) -> None:
    rng = np.random.default_rng(0)
    bins = np.array(_official_bins(length, t))
    draws = np.stack([sample_indices(length, t, "random", rng) for _ in range(300)])
    assert draws.shape == (300, t) and draws.dtype == np.int64
    assert (draws >= bins[:, 0]).all() and (draws <= bins[:, 1]).all()
    assert (np.diff(draws, axis=1) >= 0).all()
    # Every value of every bin is reached (the bound is inclusive, as in the official code).
    for i in range(0, t, max(1, t // 20)):
        assert set(draws[:, i]) == set(range(bins[i, 0], bins[i, 1] + 1))


def test_random_perturbation_is_uniform_within_a_bin() -> None:
    rng = np.random.default_rng(1)
    draws = np.stack([sample_indices(10, 4, "random", rng) for _ in range(6000)])
    counts = Counter(draws[:, 1])  # bin [2, 5] inclusive: four values, 1500 expected each
    assert sorted(counts) == [2, 3, 4, 5]
    assert all(abs(c - 1500) < 150 for c in counts.values()), counts


def test_uniform_and_all() -> None:
    for length, t in [(2613, 750), (751, 750), (100, 7)]:
        official = np.floor(np.arange(t) * length / t).astype(int)
        np.testing.assert_array_equal(sample_indices(length, t, "uniform"), official)
    # A video no longer than T keeps all its snippets (the interface's choice; the official
    # code would repeat rows up to T).
    np.testing.assert_array_equal(sample_indices(5, 8, "uniform"), np.arange(5))
    np.testing.assert_array_equal(sample_indices(8, 8, "uniform"), np.arange(8))
    np.testing.assert_array_equal(sample_indices(9, 4, "all"), np.arange(9))


def test_sampling_errors() -> None:
    with pytest.raises(DatasetError, match="numpy Generator"):
        sample_indices(10, 4, "random")
    with pytest.raises(DatasetError, match="sampling must be one of"):
        sample_indices(10, 4, "dense")
    with pytest.raises(DatasetError, match="length"):
        sample_indices(0, 4, "uniform")
    with pytest.raises(DatasetError, match="num_segments"):
        sample_indices(10, 0, "uniform")


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    videos = dict(VIDEOS)
    videos.update({f"v_extra_{k}": ("train", 30 + 7 * k, [[1.0, 2.0, "Run"]]) for k in range(4)})
    return make_basnet(tmp_path / "set", videos=videos, width=8)


def _train(root: Path, seed: int = 0):
    cfg = DataConfig(source="basnet", root=str(root), num_segments=6, feature_dim=16)
    return build_dataset(cfg, "train", "random", seed=seed)


def test_items_are_deterministic_and_ignore_global_rng(root: Path) -> None:
    a, b = _train(root), _train(root)
    first = [a[i]["index"] for i in range(len(a))]
    np.random.seed(123)
    torch.manual_seed(123)
    # Reading in another order, after touching the global generators, gives the same rows.
    second = [b[i]["index"] for i in reversed(range(len(b)))][::-1]
    for x, y in zip(first, second):
        assert torch.equal(x, y)
    assert torch.equal(a[2]["features"], b[2]["features"])


def test_epoch_and_seed_change_the_draws(root: Path) -> None:
    ds = _train(root)
    epoch0 = [ds[i]["index"] for i in range(2, len(ds))]
    ds.set_epoch(1)
    epoch1 = [ds[i]["index"] for i in range(2, len(ds))]
    other = _train(root, seed=1)
    seed1 = [other[i]["index"] for i in range(2, len(other))]
    assert any(not torch.equal(x, y) for x, y in zip(epoch0, epoch1))
    assert any(not torch.equal(x, y) for x, y in zip(epoch0, seed1))
    ds.set_epoch(0)
    assert all(torch.equal(x, ds[i + 2]["index"]) for i, x in enumerate(epoch0))


def test_item_rows_are_the_indexed_snippets(root: Path) -> None:
    ds = _train(root)
    full = build_dataset(DataConfig(source="basnet", root=str(root), feature_dim=16), "train", "all")
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["features"], full[i]["features"][item["index"]])
        assert item["num_snippets"] == full[i]["num_snippets"]


def test_collate_with_a_dataloader(root: Path) -> None:
    ds = _train(root)
    batches = list(DataLoader(ds, batch_size=3, collate_fn=collate_videos, shuffle=False))
    batch = batches[0]
    assert batch["features"].shape == (3, 6, 16) and batch["label"].shape == (3, 3)
    assert batch["index"].shape == (3, 6) and batch["index"].dtype == torch.long
    assert batch["video"] == ds.videos[:3]
    assert batch["num_snippets"].tolist() == [ds[i]["num_snippets"] for i in range(3)]
    assert batch["duration"].dtype == torch.float64
    assert torch.equal(batch["features"][1], ds[1]["features"])


def test_dataset_pickles_for_spawned_workers(root: Path) -> None:
    ds = _train(root)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1]["features"], ds[1]["features"]) and torch.equal(clone[1]["index"], ds[1]["index"])


def test_collate_refuses_unequal_lengths(root: Path) -> None:
    cfg = DataConfig(source="basnet", root=str(root), num_segments=6, feature_dim=16)
    ds = build_dataset(cfg, "train", "all")
    with pytest.raises(DatasetError, match="different numbers of snippets"):
        collate_videos([ds[0], ds[1]])
    with pytest.raises(DatasetError, match="no items"):
        collate_videos([])


def _rewrite_features(root: Path, dtype: str, shift: float = 1 / 3) -> None:
    """Every feature file of ``root`` stored as ``dtype`` (with a fraction float32 must round)."""
    for path in (root / "features").rglob("*.npy"):
        np.save(path, (np.load(path).astype(np.float64) + shift).astype(dtype))


def _same_batch(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("stored", ["<f2", "<f4", ">f4", "<f8", ">f8", "g"], ids=str)
def test_a_batch_is_its_items_stacked_whatever_the_files_dtype(root: Path, stored: str) -> None:
    _rewrite_features(root, stored)
    ds = _train(root)
    ds.set_epoch(3)
    order = [5, 0, 2, 1]
    batch = ds.batch(order)
    _same_batch(batch, collate_videos([ds[i] for i in order]))
    assert batch["features"].dtype == torch.float32 and batch["features"].is_contiguous()
    # the rows are the file's, rounded once to float32 as an item's always were
    full = build_dataset(DataConfig(source="basnet", root=str(root), feature_dim=16), "train", "all")
    for j, i in enumerate(order):
        rgb, flow = (np.load(p) for p in full._load.paths[i])
        want = np.concatenate([rgb, flow], axis=1)[batch["index"][j].numpy()].astype(np.float32)
        np.testing.assert_array_equal(batch["features"][j].numpy(), want)
    # bfloat16 batches hold those float32 values as autocast casts them
    half = ds.batch(order, torch.bfloat16)
    assert half["features"].dtype == torch.bfloat16
    assert torch.equal(half["features"].view(torch.int16), batch["features"].to(torch.bfloat16).view(torch.int16))
    _same_batch({k: v for k, v in half.items() if k != "features"}, {k: v for k, v in batch.items() if k != "features"})


def test_bfloat16_batches_of_float16_files_round_every_value_as_float32_would(tmp_path: Path) -> None:
    # every finite float16 within the magnitude bound, subnormals and both zeros included
    bits = np.arange(-(2**15), 2**15, dtype=np.int32).astype(np.int16).view(np.float16)
    values = bits[np.isfinite(bits) & (np.abs(bits.astype(np.float32)) <= 1e4)]
    rows = -(-len(values) // 2048)
    features = np.zeros(rows * 2048, dtype=np.float16)
    features[: len(values)] = values
    root = make_basnet(tmp_path / "set", videos={"v": ("train", rows, [[0.0, 1.0, "Run"]])}, width=1024)
    for k, stream in enumerate(("rgb", "flow")):
        columns = features.reshape(rows, 2048)[:, 1024 * k : 1024 * (k + 1)]
        np.save(root / "features" / "train" / stream / "v.npy", columns)
    ds = build_dataset(DataConfig(source="basnet", root=str(root), num_segments=rows), "train", "all")
    single, half = ds.batch([0])["features"], ds.batch([0], torch.bfloat16)["features"]
    np.testing.assert_array_equal(single.numpy().reshape(-1), features.astype(np.float32))
    assert torch.equal(half.view(torch.int16), single.to(torch.bfloat16).view(torch.int16))


def test_a_batch_refuses_what_collating_its_items_refuses(root: Path) -> None:
    ds = build_dataset(DataConfig(source="basnet", root=str(root), num_segments=6, feature_dim=16), "train", "all")
    with pytest.raises(DatasetError, match=r"different numbers of snippets \[5, 7\] \(videos: v_train_a, v_train_b\)"):
        ds.batch([0, 1])
    with pytest.raises(DatasetError, match="no items"):
        ds.batch([])
    with pytest.raises(IndexError, match="video index 9 out of range"):
        ds.batch([0, 9])


def test_a_batch_takes_any_iterable_of_indices_and_refuses_other_dtypes(root: Path) -> None:
    ds = _train(root)
    want = ds.batch([2, 0])
    _same_batch(ds.batch(np.array([2, 0])), want)  # a hostile pass: numpy arrays and generators
    _same_batch(ds.batch(i for i in (2, 0)), want)  # were read by the items' path, not by batch()
    _same_batch(load_batch(ds, range(2, -1, -2), 0), want)
    for dtype in (torch.int64, torch.bool, torch.float16):
        with pytest.raises(DatasetError, match=r"batch dtype must be torch.float32 or torch.bfloat16, got torch\."):
            load_batch(ds, [0], 0, dtype=dtype)


def test_load_batch_collates_the_items_of_a_data_set_without_batch(root: Path) -> None:
    ds = _train(root)

    class Wrapper(torch.utils.data.Dataset):  # a user's own map-style wrapper of the same items
        def __len__(self) -> int:
            return len(ds)

        def __getitem__(self, i: int) -> dict:
            return ds[i]

        def set_epoch(self, epoch: int) -> None:
            ds.set_epoch(epoch)

    for dtype in (torch.float32, torch.bfloat16):
        _same_batch(load_batch(Wrapper(), [3, 1], 2, dtype=dtype), load_batch(ds, [3, 1], 2, dtype=dtype))


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[::-1].copy()[::-1],  # a negative stride
        lambda a: np.lib.stride_tricks.as_strided(a, writeable=False),  # read-only (a memory map)
        lambda a: np.asfortranarray(a),
        lambda a: a.astype(">f8"),
        lambda a: a.astype(np.longdouble),
    ],
    ids=["negative-stride", "read-only", "fortran", "big-endian", "longdouble"],
)
def test_sampled_rows_of_any_array_a_loader_may_hold(make) -> None:
    features = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32) / 3
    part = make(features.astype(np.float64) + 1 / 3)
    index = np.array([0, 0, 5, 39, 17])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "array is not writable" warning from torch either
        rows = _sampled_rows(part, index, torch.from_numpy(index))
    np.testing.assert_array_equal(rows.float().numpy(), np.asarray(part[index], dtype=np.float32))
