"""One dataset interface over three sources: CASE/BaSNet folders, W-TALC files, synthetic.

:func:`build_dataset` reads a :class:`DataConfig` and returns a :class:`VideoDataset` whose
items are a video's sampled snippet features (RGB then flow), its multi-hot video label and
where its rows come from. All files are checked when the dataset is built (existence,
readable ``.npy`` header, shape, RGB/flow agreement, known videos and labels, a split file
listing each video once, ``classes.txt`` each class once), so a broken data set fails at once
with the file's name instead of in the middle of training; :meth:`VideoDataset.verify` also
reads every feature value (finite, within :data:`~case.data.constants.MAX_FEATURE_MAGNITUDE`),
and every item read is checked the same way. Annotations that run past their video's end,
as a few of THUMOS14's do, are kept and named in a :class:`~case.data.errors.DatasetWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from .annotations import (
    VideoRecord,
    activitynet_entry,
    check_labels,
    check_split_subsets,
    check_unique,
    load_pickled_npy,
    read_activitynet_gt,
    read_wtalc_annotations,
)
from .constants import MAX_FEATURE_MAGNITUDE, SNIPPET_SECONDS, STREAM_DIM
from .errors import DatasetError, DatasetWarning, Interrupted, require_file, require_folder
from .sampling import SAMPLING_MODES, sample_indices
from .synthetic import SyntheticConfig, ensure_synthetic

Source = Literal["synthetic", "basnet", "wtalc"]
SOURCES: tuple[str, ...] = get_args(Source)
SPLITS = ("train", "test")


@dataclass
class DataConfig:
    """Where the data comes from and how many snippets a training item has.

    Attributes
    ----------
    source
        ``"synthetic"`` (generated into ``root`` on first use), ``"basnet"`` (the CASE/BaSNet
        folder layout) or ``"wtalc"`` (W-TALC's joint feature file + annotation folder).
    root
        The data set folder (for ``"synthetic"``: where it is generated and cached).
    num_segments
        T, the snippets sampled per video by ``"random"`` and ``"uniform"`` sampling.
    feature_dim
        Width of a snippet's feature: RGB and flow concatenated (2 × 1024 for I3D).
    wtalc_name
        W-TALC file prefix: ``<root>/<name>-I3D-JOINTFeatures.npy`` and
        ``<root>/<name>-Annotations/``.
    synthetic
        Seed and size of the synthetic set.
    """

    source: Source = "synthetic"
    root: str = "data/synthetic-thumos14"
    num_segments: int = 750
    feature_dim: int = 2048
    wtalc_name: str = "Thumos14reduced"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        if self.num_segments < 1:
            raise ValueError(f"data.num_segments must be >= 1, got {self.num_segments}")
        if self.feature_dim < 2 or self.feature_dim % 2:
            raise ValueError(f"data.feature_dim must be a positive even number (RGB + flow), got {self.feature_dim}")
        if self.source == "synthetic" and self.feature_dim != 2 * STREAM_DIM:
            raise ValueError(
                f"data.feature_dim must be {2 * STREAM_DIM} for the synthetic source, got {self.feature_dim}"
            )


class FeatureLoader(Protocol):
    """Reads a video's features as column blocks ((T, D) whole, or RGB and flow), and names the file."""

    def parts(self, i: int) -> list[np.ndarray]: ...

    def describe(self, i: int, stream: int) -> str: ...


class VideoDataset(Dataset):
    """Videos of one split; item ``i`` is video ``i`` sampled as the dataset's ``sampling``.

    Build with :func:`build_dataset`. Items are dictionaries:

    * ``"features"`` — FloatTensor (T, D): ``[:, :D/2]`` RGB, ``[:, D/2:]`` flow;
    * ``"label"`` — FloatTensor (C,), multi-hot over :attr:`class_names`;
    * ``"video"`` — the video's name; ``"index"`` — LongTensor (T,), the original snippet
      index of each row;
    * ``"num_snippets"`` — the video's length L in snippets; ``"duration"`` — seconds.

    ``"random"`` sampling is reproducible: item ``i`` in epoch ``e`` draws from
    ``numpy.random.default_rng([seed, e, i])`` — never from global state — whatever the
    order, worker or process it is read in. Call :meth:`set_epoch` at the start of each
    epoch (as with ``DistributedSampler``) to get new draws; with ``DataLoader`` workers,
    do so before creating the epoch's iterator and without ``persistent_workers``.

    Attributes
    ----------
    class_names
        The C class names; label index = position.
    videos
        The split's video names, in split-file order.
    files
        Every file the data set was built from and reads (annotations, split and class lists,
        features): what a command writing files must not replace (``evaluate.py --out``).
    listing
        The file of :attr:`files` that lists the split's videos in order (``split_<split>.txt``,
        W-TALC's ``videoname.npy``), or None.
    class_file
        The file of :attr:`files` that lists the classes (``classes.txt``, W-TALC's
        ``classlist.npy``), or None.
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        records: Sequence[VideoRecord],
        lengths: Sequence[int],
        load: FeatureLoader,
        split: str,
        sampling: str,
        num_segments: int,
        seed: int = 0,
        files: Sequence[Path] = (),
        listing: Path | None = None,
        class_file: Path | None = None,
    ) -> None:
        if sampling not in SAMPLING_MODES:
            raise DatasetError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        self.class_names = list(class_names)
        self.records = list(records)
        self.videos = [r.name for r in self.records]
        self.lengths = [int(n) for n in lengths]
        self.split = split
        self.sampling = sampling
        self.num_segments = int(num_segments)
        self.seed = int(seed)
        self.files = list(files)
        self.listing, self.class_file = listing, class_file
        self.epoch = 0
        self._load = load
        index = {name: k for k, name in enumerate(self.class_names)}
        self._labels = torch.zeros(len(self.records), len(self.class_names))
        for i, rec in enumerate(self.records):
            for label in rec.labels:
                self._labels[i, index[label]] = 1.0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        """C, the number of classes."""
        return len(self.class_names)

    def with_sampling(self, sampling: str) -> VideoDataset:
        """The same videos (records, lengths, feature loader: nothing is read again) sampled as
        ``sampling``."""
        return VideoDataset(
            class_names=self.class_names,
            records=self.records,
            lengths=self.lengths,
            load=self._load,
            split=self.split,
            sampling=sampling,
            num_segments=self.num_segments,
            seed=self.seed,
            files=self.files,
            listing=self.listing,
            class_file=self.class_file,
        )

    def set_epoch(self, epoch: int) -> None:
        """Use the random draws of ``epoch`` (only ``"random"`` sampling draws)."""
        self.epoch = int(epoch)

    def duration(self, i: int) -> float:
        """Seconds of video ``i``: from the annotations, else L × 0.64."""
        rec = self.records[i]
        return float(rec.duration) if rec.duration is not None else self.lengths[i] * SNIPPET_SECONDS

    def ground_truth(self) -> dict[str, Any]:
        """The split's annotations, ActivityNet style, numbers in seconds.

        Returns
        -------
        dict
            ``{"database": {video: {"subset": "train"|"test", "duration": float,
            "annotations": [{"segment": [start, end], "label": name}]}}}``.
        """
        return {
            "database": {
                rec.name: activitynet_entry(self.split, self.duration(i), rec.segments)
                for i, rec in enumerate(self.records)
            }
        }

    def verify(self) -> None:
        """Read every video's features once and check each value: finite, and at most
        :data:`~case.data.constants.MAX_FEATURE_MAGNITUDE` in magnitude.

        Raises
        ------
        DatasetError
            Naming the file, the snippet and the column of the first bad value.
        """
        for i in range(len(self)):
            parts = self._load.parts(i)
            features = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
            self._check_values(i, features.astype(np.float32, copy=False), None)

    def _check_values(self, i: int, features: np.ndarray, index: np.ndarray | None) -> None:
        """Raise :class:`DatasetError` at the first NaN, infinity or absurd magnitude of video ``i``'s rows."""
        if features.max(initial=0.0) <= MAX_FEATURE_MAGNITUDE and -features.min(initial=0.0) <= MAX_FEATURE_MAGNITUDE:
            return  # the common case, in two fast reductions (a NaN fails both comparisons)
        row, col = np.argwhere(~(np.abs(features) <= MAX_FEATURE_MAGNITUDE))[0]
        value = features[row, col]
        width = features.shape[1] // 2
        what = "NaN" if np.isnan(value) else "an infinity" if np.isinf(value) else f"the value {value:.3g}"
        snippet = int(row if index is None else index[row])
        raise DatasetError(
            f"{self._load.describe(i, col // width)}: {what} at snippet {snippet}, column {col % width} "
            f"(features must be finite and within ±{MAX_FEATURE_MAGNITUDE:g}); re-extract or fix that file"
        )

    def __getitem__(self, i: int) -> dict[str, Any]:
        parts, index = self._sampled(i)
        rows = torch.empty((len(index), sum(part.shape[1] for part in parts)), dtype=torch.float32)
        self._gather(i, parts, index, rows)
        return self._item(i, rows, index, len(parts[0]))

    def batch(self, indices: Iterable[int], dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """The batch of items ``indices``: what :func:`collate_videos` makes of them, with the
        features written straight into one (B, T, D) tensor of ``dtype`` (float32 or bfloat16).

        Each video's sampled rows are gathered from its files into the batch (no per-item copy,
        no stacking: a training batch of THUMOS14's shapes is 98 MB in float32), and ``dtype``
        lets a bfloat16 forward pass receive its input in bfloat16 (half the memory; the same
        values as float32 features cast by autocast). Raises as :func:`collate_videos` does.
        """
        if dtype not in BATCH_DTYPES:
            raise DatasetError(f"batch dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        indices = list(indices)
        if not indices:
            raise DatasetError("collate_videos: no items")
        items: list[dict[str, Any]] = []
        features: torch.Tensor | None = None
        for j, i in enumerate(indices):
            parts, index = self._sampled(i)
            if features is None:
                width = sum(part.shape[1] for part in parts)
                features = torch.empty((len(indices), len(index), width), dtype=dtype)
            elif len(index) != features.shape[1]:  # "uniform" or "all" sampling: lengths differ
                return collate_items([self[k] for k in indices], dtype)  # raises, naming every length
            self._gather(i, parts, index, features[j])
            items.append(self._item(i, features[j], index, len(parts[0])))
        assert features is not None
        return _collated(items, features)

    def _sampled(self, i: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Video ``i``'s feature blocks (columns: RGB, flow) and the snippets its item keeps."""
        if not 0 <= i < len(self):
            raise IndexError(f"video index {i} out of range for {len(self)} videos")
        parts = self._load.parts(i)
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.sampling == "random" else None
        return parts, sample_indices(len(parts[0]), self.num_segments, self.sampling, rng)

    def _gather(self, i: int, parts: list[np.ndarray], index: np.ndarray, out: torch.Tensor) -> None:
        """Write rows ``index`` of ``parts`` side by side into ``out`` (rows, D): the float32 rows
        :meth:`__getitem__` has always given (float64 files round to float32), in ``out``'s dtype.
        The rows are checked first (:meth:`_check_values`: a file changed since :meth:`verify`
        is named, not trained on)."""
        rows = torch.from_numpy(index)
        blocks = [_sampled_rows(part, index, rows) for part in parts]
        bound = MAX_FEATURE_MAGNITUDE
        extrema = [torch.aminmax(block) for block in blocks]  # per block: a NaN shows in both
        if not all(float(high) <= bound and -float(low) <= bound for low, high in extrema):
            self._check_values(i, torch.cat([block.float() for block in blocks], 1).numpy(), index)
        start = 0
        for block in blocks:
            if block.dtype == torch.float64:  # rounded to float32 first, as it always was
                block = block.float()  # (float16 converts exactly, to float32 or to bfloat16)
            out[:, start : start + block.shape[1]] = block
            start += block.shape[1]

    def _item(self, i: int, features: torch.Tensor, index: np.ndarray, num_snippets: int) -> dict[str, Any]:
        return {
            "features": features,
            "label": self._labels[i].clone(),
            "video": self.videos[i],
            "index": torch.from_numpy(index),
            "num_snippets": num_snippets,
            "duration": self.duration(i),
        }


def _sampled_rows(part: np.ndarray, index: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of ``part`` as a tensor: gathered by torch from the array itself when torch
    can read it (native float16/32/64, writable, no negative stride: every file ``np.load``
    reads), else by NumPy (a longer float as the float32 it is trained on)."""
    dtype = part.dtype
    if dtype.kind == "f" and dtype.itemsize <= 8 and dtype.isnative and part.flags.writeable and min(part.strides) >= 0:
        return torch.from_numpy(part)[rows]
    target = np.float32 if dtype.kind != "f" or dtype.itemsize > 8 else dtype.newbyteorder("=")
    return torch.from_numpy(np.ascontiguousarray(part[index], dtype=target))


def collate_items(items: Sequence[dict[str, Any]], dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """:func:`collate_videos` with the features in ``dtype``."""
    batch = collate_videos(items)
    batch["features"] = batch["features"].to(dtype)
    return batch


#: The dtypes a training batch's features may be loaded in (:meth:`VideoDataset.batch`).
BATCH_DTYPES = (torch.float32, torch.bfloat16)


def collate_videos(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items of equal length T into a batch.

    Returns
    -------
    dict
        ``"features"`` (B, T, D), ``"label"`` (B, C), ``"index"`` (B, T) LongTensor,
        ``"video"`` list of B names, ``"num_snippets"`` (B,) LongTensor, ``"duration"`` (B,)
        float64 tensor.

    Raises
    ------
    DatasetError
        No items, or items of different lengths (``"uniform"``/``"all"`` sampling keeps each
        video's own length: use batch size 1 there).

    Examples
    --------
    >>> item = {"features": torch.zeros(4, 6), "label": torch.ones(2), "video": "v",
    ...         "index": torch.arange(4), "num_snippets": 4, "duration": 2.56}
    >>> collate_videos([item, item])["features"].shape
    torch.Size([2, 4, 6])
    """
    if not items:
        raise DatasetError("collate_videos: no items")
    lengths = {len(it["features"]) for it in items}
    if len(lengths) > 1:
        raise DatasetError(
            f"collate_videos: items have different numbers of snippets {sorted(lengths)} "
            "(videos: " + ", ".join(it["video"] for it in items) + "); batch them one at a time"
        )
    return _collated(items, torch.stack([it["features"] for it in items]))


def _collated(items: Sequence[dict[str, Any]], features: torch.Tensor) -> dict[str, Any]:
    """The batch of ``items`` whose features, stacked, are ``features``."""
    return {
        "features": features,
        "label": torch.stack([it["label"] for it in items]),
        "index": torch.stack([it["index"] for it in items]),
        "video": [it["video"] for it in items],
        "num_snippets": torch.tensor([it["num_snippets"] for it in items], dtype=torch.long),
        "duration": torch.tensor([it["duration"] for it in items], dtype=torch.float64),
    }


# --------------------------------------------------------------------------------------
# Sources


def _npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, without reading the data."""
    require_file(path, "feature file")
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as exc:  # truncated header, not a .npy file, pickled object array...
        raise _not_npy(path, exc) from None
    return arr.shape, arr.dtype


def _not_npy(path: Path, exc: Exception) -> DatasetError:
    """The error for a feature file NumPy cannot load, naming the file.

    A file without the ``.npy`` header is taken by NumPy for a pickle, and its message then
    advises ``allow_pickle=True``: advice to load untrusted bytes as code, and not the problem.
    """
    if "allow_pickle" in str(exc):
        return DatasetError(f"feature file {path} is not a valid .npy array (it lacks the .npy header)")
    return DatasetError(f"feature file {path} is not a readable .npy array ({exc})")


def _check_feature(shape: tuple[int, ...], dtype: np.dtype, width: int, path: Path | str) -> None:
    if len(shape) != 2 or shape[0] < 1 or shape[1] != width:
        raise DatasetError(f"feature file {path} has shape {shape}, expected (T >= 1, {width})")
    if not np.issubdtype(dtype, np.floating):
        raise DatasetError(f"feature file {path} has dtype {dtype}, expected floating point")


def _load_npy(path: Path, width: int) -> np.ndarray:
    try:
        arr = np.load(path)
    except Exception as exc:  # truncated data, disk errors
        if "allow_pickle" in str(exc):  # a file replaced after verify() read its header
            raise _not_npy(path, exc) from None
        raise DatasetError(f"feature file {path} cannot be read ({exc})") from None
    _check_feature(arr.shape, arr.dtype, width, path)
    return arr


def _read_names(path: Path, item: str) -> list[str]:
    """The ``item`` names of a split file or ``classes.txt``, one per non-empty line: at least one, each once."""
    require_file(path, f"{item} list")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not names:
        raise DatasetError(f"{path} is empty: it must list at least one {item}")
    check_unique(names, item, path)
    return names


class _StreamPairLoader:
    """Reads video i's RGB and flow files and joins them; a class, not a closure, so that a
    dataset pickles (DataLoader workers started with ``spawn``)."""

    def __init__(self, paths: list[list[Path]], width: int) -> None:
        self.paths = paths
        self.width = width

    def parts(self, i: int) -> list[np.ndarray]:
        """Video i's (T, D/2) RGB and flow arrays."""
        rgb_path, flow_path = self.paths[i]
        rgb, flow = _load_npy(rgb_path, self.width), _load_npy(flow_path, self.width)
        if len(rgb) != len(flow):
            raise DatasetError(f"feature files {rgb_path} and {flow_path} have {len(rgb)} and {len(flow)} snippets")
        return [rgb, flow]

    def describe(self, i: int, stream: int) -> str:
        """The file that holds column block ``stream`` (0: RGB, 1: flow) of video ``i``."""
        return f"feature file {self.paths[i][stream]}"


class _ArrayLoader:
    """Video i's (T, D) array, held in memory (W-TALC's joint feature file)."""

    def __init__(self, arrays: list[np.ndarray], path: Path, videos: list[str]) -> None:
        self.arrays, self.path, self.videos = arrays, path, videos

    def parts(self, i: int) -> list[np.ndarray]:
        return [self.arrays[i]]

    def describe(self, i: int, stream: int) -> str:
        return f"feature file {self.path} (video {self.videos[i]!r}, {('RGB', 'flow')[stream]} half)"


def _check_no_video_in_both_splits(root: Path, split: str, names: Sequence[str]) -> None:
    """Raise :class:`DatasetError` naming a video of ``names`` (split ``split``'s list) that the other
    split's file lists too: it would be trained on and scored (leakage).

    The other file is read only when it is there, and loosely (its own load checks it): a folder
    made for testing alone may have no training list, or an empty one.
    """
    other = next(s for s in SPLITS if s != split)
    other_path = root / f"split_{other}.txt"
    if not other_path.is_file():
        return
    listed = {line.strip() for line in other_path.read_text(encoding="utf-8", errors="replace").splitlines()}
    both = next((name for name in names if name in listed), None)
    if both is not None:
        train_path, test_path = (root / "split_train.txt", root / "split_test.txt")
        raise DatasetError(
            f"video {both!r} is listed in both {train_path} and {test_path}: a video in both splits leaks "
            "between training and testing; remove it from one"
        )


def _basnet(cfg: DataConfig, root: Path, split: str, sampling: str, seed: int) -> VideoDataset:
    """CASE/BaSNet layout: ``features/<split>/{rgb,flow}/<video>.npy``, split files, gt.json.

    Class names come from ``classes.txt`` (one per line) when present, otherwise they are
    the sorted labels of ``gt.json`` (THUMOS14: the official CASE code's order).
    """
    require_folder(root, "data set folder")
    gt_path = root / "gt.json"
    gt = read_activitynet_gt(gt_path)
    classes_path = root / "classes.txt"
    has_classes = classes_path.exists() or classes_path.is_symlink()  # a folder or a dangling link is named
    if has_classes:
        class_names = _read_names(classes_path, "class")
        check_labels(gt.values(), class_names, gt_path)
    else:
        class_names = sorted({s.label for rec in gt.values() for s in rec.segments})
    split_path = root / f"split_{split}.txt"
    names = _read_names(split_path, "video")
    _check_no_video_in_both_splits(root, split, names)
    width = cfg.feature_dim // 2
    records, lengths, paths = [], [], []
    for name in names:
        if name not in gt:
            raise DatasetError(f"{split_path}: video {name!r} is not in {gt_path}")
        streams = [root / "features" / split / stream / f"{name}.npy" for stream in ("rgb", "flow")]
        shapes = []
        for path in streams:
            shape, dtype = _npy_shape(path)
            _check_feature(shape, dtype, width, path)
            shapes.append(shape)
        if shapes[0][0] != shapes[1][0]:
            raise DatasetError(
                f"feature files {streams[0]} and {streams[1]} have {shapes[0][0]} and {shapes[1][0]} snippets"
            )
        records.append(gt[name])
        lengths.append(shapes[0][0])
        paths.append(streams)

    check_split_subsets(records, split, split_path, gt_path)
    listed = [gt_path, split_path] + ([classes_path] if has_classes else [])
    return VideoDataset(
        class_names=class_names,
        records=records,
        lengths=lengths,
        load=_StreamPairLoader(paths, width),
        split=split,
        sampling=sampling,
        num_segments=cfg.num_segments,
        seed=seed,
        files=listed + [path for pair in paths for path in pair],
        listing=split_path,
        class_file=classes_path if has_classes else None,
    )


def _wtalc(cfg: DataConfig, root: Path, split: str, sampling: str, seed: int) -> VideoDataset:
    """W-TALC layout: ``<name>-I3D-JOINTFeatures.npy`` + ``<name>-Annotations/``.

    The feature file is a pickled object array (one (T, 2048) array per video, in the order
    of ``videoname.npy``); it cannot be memory-mapped, so the split's arrays are held in
    memory (THUMOS14: about 1 GB for both splits in float32).
    """
    annotations = root / f"{cfg.wtalc_name}-Annotations"
    class_names, all_records = read_wtalc_annotations(annotations)
    path = root / f"{cfg.wtalc_name}-I3D-JOINTFeatures.npy"
    feats = load_pickled_npy(path, "feature file")
    if feats.ndim == 0 or len(feats) != len(all_records):
        raise DatasetError(
            f"feature file {path} holds {1 if feats.ndim == 0 else len(feats)} videos, "
            f"but the annotations list {len(all_records)}"
        )
    records, arrays = [], []
    for rec, arr in zip(all_records, feats):
        if rec.subset != split:
            continue
        arr = np.asarray(arr)
        _check_feature(arr.shape, arr.dtype, cfg.feature_dim, f"{path} (video {rec.name!r})")
        records.append(rec)
        arrays.append(arr)
    if not records:
        raise DatasetError(f"{annotations}: no video of split {split!r}")
    return VideoDataset(
        class_names=class_names,
        records=records,
        lengths=[len(a) for a in arrays],
        load=_ArrayLoader(arrays, path, [r.name for r in records]),
        split=split,
        sampling=sampling,
        num_segments=cfg.num_segments,
        seed=seed,
        files=[path, *sorted(annotations.glob("*.npy"))],
        listing=annotations / "videoname.npy",
        class_file=annotations / "classlist.npy",
    )


def build_dataset(cfg: DataConfig, split: str, sampling: str, seed: int = 0) -> VideoDataset:
    """The dataset of ``split`` from the source ``cfg`` describes.

    Parameters
    ----------
    cfg
        Source, folder and sampling size.
    split
        ``"train"`` or ``"test"``.
    sampling
        ``"random"`` (training: random perturbation to ``cfg.num_segments`` snippets),
        ``"uniform"`` (``cfg.num_segments`` evenly spaced; shorter videos keep all) or
        ``"all"`` (see :mod:`case.data.sampling`).
    seed
        Seed of the random sampling (with the epoch and item index).

    Returns
    -------
    VideoDataset

    Raises
    ------
    DatasetError
        Invalid arguments, a malformed data set, or a file or folder that cannot be read (or,
        for the synthetic source, written); the message names the file.
    DatasetFileNotFoundError
        A missing file or folder.

    Examples
    --------
    >>> import tempfile
    >>> cfg = DataConfig(root=tempfile.mkdtemp() + "/synthetic", num_segments=32,
    ...                  synthetic=SyntheticConfig(scale=0.02, max_snippets=64))
    >>> train = build_dataset(cfg, "train", "random", seed=0)
    >>> item = train[0]
    >>> item["features"].shape, item["label"].shape
    (torch.Size([32, 2048]), torch.Size([20]))
    """
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if sampling not in SAMPLING_MODES:
        raise DatasetError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    root = Path(cfg.root)
    try:
        if cfg.source == "synthetic":
            try:
                ensure_synthetic(cfg.synthetic, root)
            except KeyboardInterrupt:  # the half-written set is gone (ensure_synthetic writes it aside)
                raise Interrupted(
                    f"interrupted while generating the synthetic data set {root}; the next run generates it again"
                ) from None
        dataset = (_wtalc if cfg.source == "wtalc" else _basnet)(cfg, root, split, sampling, seed)
    except DatasetError:
        raise
    except OSError as err:  # no permission on a file or folder, a read-only root for the synthetic set
        raise DatasetError(f"data set {root}: {err.filename or root}: {err.strerror or err}") from None
    _warn_segments_past_the_end(dataset, root)
    return dataset


def _warn_segments_past_the_end(dataset: VideoDataset, root: Path) -> None:
    """A :class:`DatasetWarning` naming the annotations that end after their video does.

    THUMOS14 has a few (video_test_0000814's last three start 50 s after its end); they are
    kept, as the official evaluation keeps them. Ends within one snippet of the video's end
    are not reported: features drop a trailing partial snippet.
    """
    past = [
        (rec.name, seg, dataset.duration(i))
        for i, rec in enumerate(dataset.records)
        for seg in rec.segments
        if seg.end > dataset.duration(i) + SNIPPET_SECONDS
    ]
    if past:
        worst = max(seg.end - duration for _, seg, duration in past)
        examples = ", ".join(f"{v} [{seg.start:g}, {seg.end:g}] > {d:.1f} s" for v, seg, d in past[:3])
        warnings.warn(
            DatasetWarning(
                f"{root}: {len(past)} annotated segment(s) of split {dataset.split!r} end after their video "
                f"(by up to {worst:.1f} s), kept as annotated: {examples}{', ...' if len(past) > 3 else ''}"
            ),
            stacklevel=3,
        )
