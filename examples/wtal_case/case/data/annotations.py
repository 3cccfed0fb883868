"""Temporal annotations: the two on-disk formats, and the snippet timeline they map onto.

Both readers return the same record type, :class:`VideoRecord` (segments in seconds, class
names as ``str``), so everything downstream (datasets, statistics, the synthetic generator's
checks) handles one representation.

* ActivityNet style (CASE/BaSNet code line): ``gt.json`` =
  ``{"database": {video: {"subset": ..., ["duration": seconds,] "annotations":
  [{"segment": [start, end], "label": name}]}}}``; segment bounds may be strings (THUMOS14's
  file stores ``["18.6", "24.8"]``).
* W-TALC: a folder ``<Name>-Annotations/`` of ``.npy`` files, one entry per video:
  ``videoname``, ``subset`` (``validation`` = training videos, ``test``), ``duration``
  (seconds, shape (N, 1) or (N,)), ``segments`` (list of ``[s, e]``), ``labels`` (one name
  per segment), ``classlist``; strings may be ``bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonfile import read_json
from ..messages import shown
from .constants import FEATURE_FPS, FRAMES_PER_SNIPPET, SNIPPET_SECONDS
from .errors import DatasetError, DatasetFileNotFoundError, require_file, require_folder

#: W-TALC subset names → this package's split names.
WTALC_SUBSETS = {"validation": "train", "test": "test"}


@dataclass(frozen=True)
class Segment:
    """One action instance: ``[start, end]`` in seconds and its class name."""

    start: float
    end: float
    label: str

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class VideoRecord:
    """A video's annotations: split (``"train"``/``"test"``), duration (seconds or None)."""

    name: str
    subset: str
    duration: float | None
    segments: list[Segment] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Distinct class names present in the video, in order of first appearance."""
        return list(dict.fromkeys(s.label for s in self.segments))


def num_snippets(duration: float) -> int:
    """Number of whole 16-frame snippets in a video of ``duration`` seconds at 25 fps.

    ``T = max(1, floor(duration * 25 / 16))``: I3D features are extracted on consecutive,
    non-overlapping 16-frame windows and a trailing partial window is dropped.

    Examples
    --------
    >>> num_snippets(0.64), num_snippets(1.0), num_snippets(154.6)
    (1, 1, 241)
    """
    # The 1e-9 keeps T * 0.64 (a float product) from rounding down to T - 1.
    return max(1, int(math.floor(duration * FEATURE_FPS / FRAMES_PER_SNIPPET + 1e-9)))


def foreground_mask(segments: Iterable[Segment | Sequence[float]], length: int) -> np.ndarray:
    """Boolean (T,) mask: snippet i is foreground when its centre lies in some segment.

    Snippet i covers ``[0.64 i, 0.64 (i + 1))`` seconds; its centre is ``0.64 (i + 0.5)``.

    Examples
    --------
    >>> foreground_mask([(0.7, 2.0)], 4).tolist()
    [False, True, True, False]
    """
    centres = (np.arange(length) + 0.5) * SNIPPET_SECONDS
    mask = np.zeros(length, dtype=bool)
    for seg in segments:
        start, end = (seg.start, seg.end) if isinstance(seg, Segment) else (seg[0], seg[1])
        mask |= (centres >= start) & (centres <= end)
    return mask


def decode(value: Any) -> str:
    """A ``str`` from a ``str``, ``bytes`` or numpy string scalar (W-TALC stores bytes)."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8")
    return str(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, (bool, np.bool_)):  # float(True) is 1.0: a flag where a number goes is a mistake
        raise DatasetError(f"{where}: {value!r} is not a number")
    try:
        out = float(decode(value) if isinstance(value, (bytes, np.bytes_)) else value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {shown(value)} is not a number") from None
    except OverflowError:  # an integer of hundreds of digits
        out = math.inf
    if not math.isfinite(out):
        raise DatasetError(f"{where}: {shown(value)} is not finite")
    return out


def _duration(value: Any, where: str) -> float:
    seconds = _number(value, where)
    if seconds <= 0:
        raise DatasetError(f"{where}: duration {seconds} s must be > 0")
    return seconds


def check_unique(names: Sequence[str], what: str, source: str | Path) -> None:
    """Raise :class:`DatasetError` naming ``source`` if a name appears twice (classes, a split's videos)."""
    seen: dict[str, int] = {}
    for position, name in enumerate(names, 1):
        if name in seen:
            raise DatasetError(f"{source}: {what} {name!r} is listed twice (entries {seen[name]} and {position})")
        seen[name] = position


def parse_segment(bounds: Any, label: Any, where: str) -> Segment:
    """A :class:`Segment` from ``[start, end]`` (numbers or numeric strings); validated."""
    if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__") or len(bounds) != 2:
        raise DatasetError(f"{where}: segment {bounds!r} is not a pair [start, end]")
    start, end = _number(bounds[0], where), _number(bounds[1], where)
    if start < 0 or end < start:
        raise DatasetError(f"{where}: segment [{start}, {end}] needs 0 <= start <= end")
    if not isinstance(label, (str, bytes)):  # str() would make a class of 5, None or ["A"]
        raise DatasetError(f"{where}: label {label!r} is not a string")
    return Segment(start, end, decode(label))


def activitynet_entry(subset: str, duration: float | None, segments: Sequence[Segment]) -> dict[str, Any]:
    """One video's entry of an ActivityNet-style ``gt.json`` (the inverse of
    :func:`read_activitynet_gt` for that video)."""
    return {
        "subset": subset,
        "duration": duration,
        "annotations": [{"segment": [s.start, s.end], "label": s.label} for s in segments],
    }


def read_activitynet_gt(path: str | Path) -> dict[str, VideoRecord]:
    """Read an ActivityNet-style ``gt.json`` into ``{video: VideoRecord}``.

    Parameters
    ----------
    path
        The JSON file. ``subset`` is kept as written (THUMOS14's CASE/BaSNet file says
        ``"train"``/``"test"``); ``duration`` is optional (THUMOS14's file has none).

    Raises
    ------
    DatasetFileNotFoundError
        The file does not exist.
    DatasetError
        A folder where the file goes; not JSON (or not readable, or a key written twice:
        :func:`case.jsonfile.read_json`), no ``database`` mapping, or a malformed entry (the
        message names the file and the video).
    """
    path = Path(path)
    require_file(path, "annotation file")
    try:
        payload = read_json(path, "an annotation file", DatasetError)
    except FileNotFoundError:
        raise DatasetFileNotFoundError(f"annotation file {path} not found") from None
    database = payload.get("database") if isinstance(payload, dict) else None
    if not isinstance(database, dict):
        raise DatasetError(f"{path}: expected a top-level {{'database': {{video: ...}}}} mapping")
    records: dict[str, VideoRecord] = {}
    for video, entry in database.items():
        where = f"{path} (video {video!r})"
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations", []), list):
            raise DatasetError(f"{where}: entry must be a mapping with an 'annotations' list")
        segments = []
        for i, ann in enumerate(entry.get("annotations", [])):
            if not isinstance(ann, dict) or "segment" not in ann or "label" not in ann:
                raise DatasetError(f"{where}: annotation {i} needs 'segment' and 'label'")
            segments.append(parse_segment(ann["segment"], ann["label"], f"{where} annotation {i}"))
        duration = entry.get("duration")
        records[video] = VideoRecord(
            name=video,
            subset=str(entry.get("subset", "")),
            duration=None if duration is None else _duration(duration, where),
            segments=segments,
        )
    return records


def load_pickled_npy(path: Path, what: str = "annotation file") -> np.ndarray:
    """Load one of W-TALC's pickled ``.npy`` files (annotations or the joint features);
    errors name ``what`` and the file."""
    require_file(path, what)
    try:
        # W-TALC's files are Python 2 pickles: latin1 is the encoding numpy documents for them.
        return np.load(path, allow_pickle=True, encoding="latin1")
    except Exception as exc:  # numpy raises ValueError, OSError, UnpicklingError, EOFError...
        raise DatasetError(f"{what} {path} cannot be read as a .npy file ({exc})") from None


def read_wtalc_annotations(
    folder: str | Path, subsets: Mapping[str, str] | None = WTALC_SUBSETS
) -> tuple[list[str], list[VideoRecord]]:
    """Read a W-TALC ``<Name>-Annotations`` folder.

    Parameters
    ----------
    folder
        The annotation folder.
    subsets
        W-TALC subset name -> the record's ``subset``; a video of a subset not in it is an
        error. The default reads THUMOS14's naming (``validation`` -> ``"train"``, ``test`` ->
        ``"test"``); None keeps ``subset.npy``'s names as they are (any subset).

    Returns
    -------
    class_names
        ``classlist.npy`` decoded, in file order (label index = position).
    records
        One :class:`VideoRecord` per entry of ``videoname.npy``, in file order (the order of
        the feature file), with ``subset`` mapped by ``subsets``.

    Raises
    ------
    DatasetFileNotFoundError, DatasetError
        A missing or unreadable file, per-video arrays of different lengths, an unknown
        subset, a segment label not in ``classlist.npy`` (named with its file and video).
    """
    folder = Path(folder)
    require_folder(folder, "W-TALC annotation folder")
    arrays = {
        key: load_pickled_npy(folder / f"{key}.npy")
        for key in ("videoname", "subset", "duration", "segments", "labels", "classlist")
    }
    class_names = [decode(c) for c in np.ravel(arrays["classlist"])]
    check_unique(class_names, "class", folder / "classlist.npy")
    known = set(class_names)
    names = [decode(v) for v in np.ravel(arrays["videoname"])]
    check_unique(names, "video", folder / "videoname.npy")
    durations = np.reshape(arrays["duration"], (len(arrays["duration"]), -1))
    for key in ("subset", "segments", "labels"):
        if len(arrays[key]) != len(names):
            raise DatasetError(
                f"{folder / (key + '.npy')}: {len(arrays[key])} entries, but videoname.npy has {len(names)}"
            )
    if durations.shape != (len(names), 1):
        raise DatasetError(f"{folder / 'duration.npy'}: shape {arrays['duration'].shape}, expected ({len(names)}, 1)")
    records = []
    for i, name in enumerate(names):
        subset = decode(arrays["subset"][i])
        if subsets is not None and subset not in subsets:
            raise DatasetError(
                f"{folder / 'subset.npy'}: video {name!r} has subset {subset!r}, expected one of {sorted(subsets)}"
            )
        bounds, labels = list(arrays["segments"][i]), list(arrays["labels"][i])
        if len(bounds) != len(labels):
            raise DatasetError(
                f"{folder / 'labels.npy'}: video {name!r} has {len(labels)} labels for {len(bounds)} segments"
            )
        segments = []
        for j, (b, lab) in enumerate(zip(bounds, labels)):
            seg = parse_segment(b, lab, f"{folder / 'segments.npy'} (video {name!r}, segment {j})")
            if seg.label not in known:
                raise DatasetError(
                    f"{folder / 'labels.npy'}: video {name!r} has unknown class label {seg.label!r} "
                    f"(not in {folder / 'classlist.npy'})"
                )
            segments.append(seg)
        duration = _duration(durations[i, 0], f"{folder / 'duration.npy'} (video {name!r})")
        records.append(VideoRecord(name, subset if subsets is None else subsets[subset], duration, segments))
    return class_names, records


#: The subsets a CASE/BaSNet ``gt.json`` names its splits by: a video of one in the other split leaks.
SPLIT_SUBSETS = ("train", "test")


def check_split_subsets(
    records: Iterable[VideoRecord], split: str, split_file: str | Path, gt_file: str | Path
) -> None:
    """Raise :class:`DatasetError` naming ``split_file`` if one of its videos is in the other
    split's subset of ``gt_file`` (a test video trained on, or a training video scored: leakage).

    Only :data:`SPLIT_SUBSETS` are judged: other names (ActivityNet's ``training`` and
    ``validation``, none) say nothing about this layout's splits. The real THUMOS14 files
    (CASE/BaSNet's ``gt.json`` and split files) have no such video, so this is an error, not
    a warning.
    """
    for rec in records:
        if rec.subset in SPLIT_SUBSETS and rec.subset != split:
            raise DatasetError(
                f"{split_file}: video {rec.name!r} is in {Path(gt_file).name}'s subset {rec.subset!r}, not "
                f"{split!r}: a video of one subset in the other split leaks between training and testing; "
                f"fix {Path(split_file).name} or {gt_file}"
            )


def check_labels(records: Iterable[VideoRecord], class_names: Sequence[str], source: str | Path) -> None:
    """Raise :class:`DatasetError` naming ``source`` if a segment label is not a known class."""
    known = set(class_names)
    for rec in records:
        for seg in rec.segments:
            if seg.label not in known:
                raise DatasetError(
                    f"{source}: video {rec.name!r} has unknown class label {seg.label!r}; known: {sorted(known)}"
                )


def attach_durations(records: Mapping[str, VideoRecord], durations: Mapping[str, float]) -> None:
    """Fill in missing durations in place from ``durations`` (e.g. W-TALC's ``duration.npy``)."""
    for name, rec in records.items():
        if rec.duration is None and name in durations:
            rec.duration = float(durations[name])
