"""Temporal action detection mAP by the ActivityNet protocol: exact, vectorised, NumPy-2 safe.

This module re-states the detection metric of the official ActivityNet evaluator
(``compute_average_precision_detection`` in ``eval_detection.py``, which the CASE, BaSNet,
CO2-Net, ... code lines copy) and computes it without per-prediction Python loops. For every
input it gives the official numbers to float rounding (tested to 1e-9 against a loop
re-statement of the official code). The protocol, for each tIoU threshold :math:`\\theta`:

1. Per class, predictions are ranked by descending score. **Ties**: the official code ranks by
   ``scores.argsort()[::-1]``, whose order among equal scores depends on NumPy's (unstable,
   platform-dependent SIMD) default sort; we use the same expression with a *stable* sort,
   so among equal scores the prediction listed **later** (file order of videos, then list
   order) ranks first. The same rule orders ground-truth instances of equal tIoU.
2. Walking the ranking, each prediction is matched to the still-free ground-truth instance of
   its class in its video with the highest tIoU; it is a true positive when that tIoU
   :math:`\\ge \\theta` (that instance is then taken), a false positive otherwise. A prediction
   in a video without ground truth of its class (including a video outside the subset) is a
   false positive.
3. With :math:`\\mathrm{TP}_k, \\mathrm{FP}_k` the cumulative counts over the first :math:`k`
   predictions and :math:`N_{pos}` the class's ground-truth count, precision
   :math:`p_k = \\mathrm{TP}_k / k` and recall :math:`r_k = \\mathrm{TP}_k / N_{pos}`; the AP is
   the all-point interpolated area (VOC 2011)

   .. math:: \\mathrm{AP} = \\sum_k (r_k - r_{k-1}) \\max_{j \\ge k} p_j, \\qquad r_0 = 0.

4. A class without predictions scores 0; mAP averages the classes that have ground truth in
   the subset; ``average`` is the mean of mAP over the thresholds.

Where we deviate from the official code, it is to define what it leaves undefined: the tie
order above, and the tIoU of two zero-length segments (0/0, NaN in the official code, which
then counts as a hit at every threshold) is 0 here.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from .atomic import atomic_write_text
from .jsonfile import read_json
from .messages import shown

__all__ = [
    "DEFAULT_TIOU_THRESHOLDS",
    "DetectionFileError",
    "DetectionMetrics",
    "GroundTruth",
    "Predictions",
    "average_precision",
    "check_tiou_thresholds",
    "evaluate_detection",
    "filter_ambiguous",
    "format_metrics",
    "format_table",
    "load_ambiguous",
    "load_ground_truth",
    "load_predictions",
    "metrics_json",
    "segment_iou",
    "write_metrics",
]

#: THUMOS14's tIoU thresholds 0.1:0.1:0.7 (ActivityNet uses 0.5:0.05:0.95).
DEFAULT_TIOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[PathLike, Mapping[str, Any]]


class DetectionFileError(ValueError):
    """A ground-truth, prediction or ambiguous-segment file (or mapping) is malformed.

    The message names the file (or ``<mapping>``) and the offending entry.
    """


# --------------------------------------------------------------------------------------------
# Parsed inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth instances of one subset, as flat arrays (file order).

    Attributes
    ----------
    subset : str
        The subset these instances belong to (``"test"``, ``"validation"``, ...).
    videos : tuple of str
        Every video of the subset, in file order (with or without annotations).
    class_names : tuple of str
        Classes with at least one instance in the subset, in order of first appearance
        (the official evaluator's class order; mAP averages over exactly these).
    known_labels : frozenset of str
        Every label of the whole database (all subsets).
    video, label : ndarray of int64, shape (G,)
        Per instance: position in ``videos`` and in ``class_names``.
    start, end : ndarray of float64, shape (G,)
        Per instance: segment bounds in seconds.
    """

    subset: str
    videos: tuple[str, ...]
    class_names: tuple[str, ...]
    known_labels: frozenset[str]
    video: np.ndarray
    label: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return int(self.label.size)


@dataclass(frozen=True)
class Predictions:
    """Predicted segments coded against a :class:`GroundTruth`, as flat arrays (file order).

    Attributes
    ----------
    video : ndarray of int64, shape (N,)
        Position of the prediction's video in ``GroundTruth.videos``; -1 for a video outside
        the subset (such predictions are false positives, as in the official code).
    label : ndarray of int64, shape (N,)
        Position of the label in ``GroundTruth.class_names``.
    start, end, score : ndarray of float64, shape (N,)
        Segment bounds in seconds and confidence.
    num_other_classes : int
        Predictions dropped because their label (known to the database) has no instance in
        the subset: they cannot change any class's AP.
    num_unknown_labels : int
        Predictions dropped because the whole database does not know their label (only with
        ``unknown_labels="drop"``, see :func:`load_predictions`).
    """

    video: np.ndarray
    label: np.ndarray
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    num_other_classes: int = 0
    num_unknown_labels: int = 0

    def __len__(self) -> int:
        return int(self.label.size)

    def subset(self, keep: np.ndarray) -> Predictions:
        """The predictions where the boolean mask ``keep`` is true (order kept)."""
        return Predictions(
            self.video[keep],
            self.label[keep],
            self.start[keep],
            self.end[keep],
            self.score[keep],
            self.num_other_classes,
            self.num_unknown_labels,
        )


@dataclass(frozen=True)
class DetectionMetrics:
    """Detection mAP at several tIoU thresholds (fractions in [0, 1], not percent).

    Attributes
    ----------
    tiou : list of float
        The tIoU thresholds.
    mAP : list of float
        Mean AP over the subset's classes, one per threshold.
    average : float
        Mean of ``mAP`` over the thresholds (e.g. THUMOS14's "average 0.1:0.7").
    per_class_ap : dict of str to list of float
        AP of each class at each threshold.
    num_ground_truth : int
        Ground-truth instances in the subset.
    num_predictions : int
        Predictions evaluated (after ambiguous-segment filtering, without those of classes
        absent from the subset).
    num_outside_subset : int
        Evaluated predictions in videos outside the subset (all false positives).
    num_ambiguous : int
        Predictions removed by ambiguous-segment filtering.
    num_unknown_labels : int
        Predictions dropped because the ground truth does not know their label
        (``unknown_labels="drop"``).
    """

    tiou: list[float]
    mAP: list[float]
    average: float
    per_class_ap: dict[str, list[float]] = field(default_factory=dict)
    num_ground_truth: int = 0
    num_predictions: int = 0
    num_outside_subset: int = 0
    num_ambiguous: int = 0
    num_unknown_labels: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The run-folder ``metrics.json`` object: ``{"tiou", "mAP", "average"}``."""
        return {"tiou": list(self.tiou), "mAP": list(self.mAP), "average": self.average}


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def _read_json(source: Source, what: str) -> tuple[Mapping[str, Any], str]:
    """Return the decoded object and a name for messages ('<what mapping>' or the path)."""
    if isinstance(source, Mapping):
        return source, f"<{what} mapping>"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path or a mapping, got {type(source).__name__}")
    name = os.fspath(source)
    try:
        data = read_json(name, f"a {what} file", DetectionFileError)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {name}") from None
    if not isinstance(data, Mapping):
        raise DetectionFileError(f"{name}: expected a JSON object at the top level, got {type(data).__name__}")
    return data, name


def _is_real_type(kind: type) -> bool:
    """Python and NumPy reals, booleans excluded."""
    return issubclass(kind, numbers.Real) and not issubclass(kind, (bool, np.bool_))


def _to_float(value: Any) -> float:
    """``float(value)``, with ±inf for an integer beyond the float range (JSON allows 400 digits)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _bound(value: Any) -> float:
    """A segment bound: a real number or a numeric string (gt.json stores strings)."""
    if isinstance(value, str) or _is_real_type(type(value)):
        return _to_float(value)
    raise ValueError(f"expected a number or a numeric string, got {value!r}")


def _score(value: Any, where: str) -> float:
    if not _is_real_type(type(value)) or not math.isfinite(_to_float(value)):
        raise DetectionFileError(f"{where}: 'score' must be a finite number, got {shown(value)}")
    return _to_float(value)


def _segment(seg: Any, where: str) -> tuple[float, float]:
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise DetectionFileError(f"{where}: 'segment' must be [start, end], got {shown(seg)}")
    try:
        start, end = _bound(seg[0]), _bound(seg[1])
    except ValueError as exc:
        raise DetectionFileError(f"{where}: bad segment {shown(seg)}: {exc}") from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise DetectionFileError(f"{where}: segment bounds must be finite, got {shown(seg)}")
    if end < start:
        raise DetectionFileError(f"{where}: segment end {end} < start {start}")
    return start, end


def _entry(item: Any, where: str, keys: tuple[str, ...]) -> None:
    if not isinstance(item, Mapping):
        raise DetectionFileError(f"{where}: expected an object, got {type(item).__name__}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise DetectionFileError(f"{where}: missing key(s) {missing}")
    if not isinstance(item["label"], str):
        raise DetectionFileError(f"{where}: 'label' must be a string, got {item['label']!r}")


def load_ground_truth(source: Source, subset: str = "test") -> GroundTruth:
    """Read ActivityNet-style ground truth and keep one subset.

    Parameters
    ----------
    source : path or mapping
        ``{"database": {video: {"subset": str, "annotations": [{"segment": [start, end],
        "label": str}, ...]}, ...}}``. Bounds are seconds, as numbers or numeric strings.
        Other keys (``"duration"``, ``"taxonomy"``, ``"version"``, ...) are ignored.
    subset : str
        The subset to keep (THUMOS14: ``"test"``; ActivityNet: ``"validation"``).

    Returns
    -------
    GroundTruth

    Raises
    ------
    DetectionFileError
        Malformed file, a segment with ``end < start`` or a non-finite bound, or a subset
        without any annotated instance.

    Examples
    --------
    >>> gt = load_ground_truth({"database": {"v1": {"subset": "test", "annotations": [
    ...     {"segment": ["1.5", "4.0"], "label": "Jump"}]}}})
    >>> gt.class_names, gt.start.tolist(), gt.end.tolist()
    (('Jump',), [1.5], [4.0])
    """
    data, name = _read_json(source, "ground truth")
    database = data.get("database")
    if not isinstance(database, Mapping):
        raise DetectionFileError(f"{name}: expected a 'database' object mapping video names to their entries")
    videos: list[str] = []
    class_index: dict[str, int] = {}
    known: set[str] = set()
    video, label, start, end = [], [], [], []
    for vid, entry in database.items():
        where = f"{name}: database[{vid!r}]"
        if not isinstance(entry, Mapping) or "subset" not in entry:
            raise DetectionFileError(f"{where}: expected an object with a 'subset' key")
        anns = entry.get("annotations", [])
        if not isinstance(anns, list):
            raise DetectionFileError(f"{where}: 'annotations' must be a list")
        in_subset = entry["subset"] == subset
        if in_subset:
            videos.append(vid)
        for j, ann in enumerate(anns):
            here = f"{where}['annotations'][{j}]"
            _entry(ann, here, ("segment", "label"))
            s, e = _segment(ann["segment"], here)
            known.add(ann["label"])
            if in_subset:
                video.append(len(videos) - 1)
                label.append(class_index.setdefault(ann["label"], len(class_index)))
                start.append(s)
                end.append(e)
    if not label:
        subsets = sorted({str(e.get("subset")) for e in database.values()})
        raise DetectionFileError(f"{name}: no annotated instance in subset {subset!r} (subsets present: {subsets})")
    return GroundTruth(
        subset=subset,
        videos=tuple(videos),
        class_names=tuple(class_index),
        known_labels=frozenset(known),
        video=np.asarray(video, np.int64),
        label=np.asarray(label, np.int64),
        start=np.asarray(start, np.float64),
        end=np.asarray(end, np.float64),
    )


def load_predictions(source: Source, ground_truth: GroundTruth, unknown_labels: str = "error") -> Predictions:
    """Read ``{"results": {video: [{"label", "score", "segment"}, ...]}}`` predictions.

    Parameters
    ----------
    source : path or mapping
        The predictions; other top-level keys (``"version"``, ``"external_data"``) are
        ignored. Scores are real numbers; segment bounds are seconds (numbers or numeric
        strings).
    ground_truth : GroundTruth
        Codes videos and labels. A video outside the subset is kept (its predictions are
        false positives, as in the official code). A label of the database without an
        instance in the subset is dropped (it cannot change any AP; the official code
        raises ``KeyError`` on it).
    unknown_labels : {"error", "drop"}
        A label that the whole database does not know: an error naming the entry (the
        default), or dropped and counted (``Predictions.num_unknown_labels``), as the
        evaluation path does (:func:`case.scoring.evaluate_predictions`): a model may know
        classes that a test set lacks. A dropped detection is still checked.

    Returns
    -------
    Predictions

    Raises
    ------
    DetectionFileError
        Malformed file, a label unknown to the ground truth (``unknown_labels="error"``), a
        segment with ``end < start`` or a non-finite bound, a non-numeric or non-finite score.
    """
    if unknown_labels not in ("error", "drop"):
        raise ValueError(f"unknown_labels must be 'error' or 'drop', got {unknown_labels!r}")
    data, name = _read_json(source, "predictions")
    results = data.get("results")
    if not isinstance(results, Mapping):
        raise DetectionFileError(f"{name}: expected a 'results' object mapping video names to lists of detections")
    video_code = {v: i for i, v in enumerate(ground_truth.videos)}
    class_code = {c: i for i, c in enumerate(ground_truth.class_names)}
    drop = unknown_labels == "drop"
    parsed = _predictions_fast(results, video_code, class_code, ground_truth.known_labels, drop)
    if parsed is None:  # something is wrong: the careful pass names the first bad entry
        parsed = _predictions_checked(results, name, video_code, class_code, ground_truth.known_labels, drop)
    return parsed


def _predictions_fast(
    results: Mapping[str, Any],
    video_code: dict[str, int],
    class_code: dict[str, int],
    known: frozenset[str],
    drop_unknown: bool,
) -> Predictions | None:
    """Vectorised parse of well-formed predictions; ``None`` at the first sign of trouble."""
    codes, labels, scores, segments = [], [], [], []
    try:
        for vid, items in results.items():
            if type(items) is not list:
                return None
            codes.append((video_code.get(vid, -1), len(items)))
            for item in items:
                labels.append(item["label"])
                scores.append(item["score"])
                segments.append(item["segment"])
    except (KeyError, TypeError):
        return None
    if not (
        all(_is_real_type(t) for t in {type(x) for x in scores})
        and {type(x) for x in labels} <= {str}
        and {type(x) for x in segments} <= {list, tuple}
        and all(t is str or _is_real_type(t) for t in {type(x) for s in segments for x in s})
    ):
        return None
    try:
        seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
        score = np.asarray(scores, dtype=np.float64)
    except (ValueError, OverflowError):
        return None
    label = np.asarray([class_code.get(x, -1) for x in labels], dtype=np.int64)
    outside = np.flatnonzero(label < 0)
    unknown = [i for i in outside if labels[i] not in known]
    if (
        seg.shape[0] != len(segments)
        or not np.isfinite(seg).all()
        or not np.isfinite(score).all()
        or (seg[:, 1] < seg[:, 0]).any()
        or (unknown and not drop_unknown)
    ):
        return None
    video = np.repeat(np.asarray([c for c, _ in codes], np.int64), np.asarray([n for _, n in codes], np.int64))
    keep = label >= 0
    return Predictions(
        video=video[keep],
        label=label[keep],
        start=seg[keep, 0].copy(),
        end=seg[keep, 1].copy(),
        score=score[keep],
        num_other_classes=int(outside.size) - len(unknown),
        num_unknown_labels=len(unknown),
    )


def _predictions_checked(
    results: Mapping[str, Any],
    name: str,
    video_code: dict[str, int],
    class_code: dict[str, int],
    known: frozenset[str],
    drop_unknown: bool,
) -> Predictions:
    """Entry-by-entry parse that raises :class:`DetectionFileError` naming the bad entry."""
    video, label, start, end, score = [], [], [], [], []
    other = unknown = 0
    for vid, items in results.items():
        if not isinstance(items, list):
            raise DetectionFileError(f"{name}: results[{vid!r}] must be a list of detections")
        code = video_code.get(vid, -1)
        for j, item in enumerate(items):
            where = f"{name}: results[{vid!r}][{j}]"
            _entry(item, where, ("label", "score", "segment"))
            lab = item["label"]
            # every detection is validated, also one that is dropped below for its label
            sc = _score(item["score"], where)
            s, e = _segment(item["segment"], where)
            if lab not in class_code:
                if lab in known:
                    other += 1
                    continue
                if drop_unknown:
                    unknown += 1
                    continue
                raise DetectionFileError(
                    f"{where}: label {lab!r} is unknown to the ground truth (classes: {sorted(known)})"
                )
            video.append(code)
            label.append(class_code[lab])
            start.append(s)
            end.append(e)
            score.append(sc)
    return Predictions(
        video=np.asarray(video, np.int64),
        label=np.asarray(label, np.int64),
        start=np.asarray(start, np.float64),
        end=np.asarray(end, np.float64),
        score=np.asarray(score, np.float64),
        num_other_classes=other,
        num_unknown_labels=unknown,
    )


def load_ambiguous(source: PathLike | Mapping[str, Iterable[Sequence[float]]]) -> dict[str, np.ndarray]:
    """Read ambiguous segments (THUMOS14 ``Ambiguous_test.txt``).

    Parameters
    ----------
    source : path or mapping
        A text file with one ``video start end`` line per segment (whitespace separated,
        seconds; a line with more fields takes the first as the video and the last two as
        the bounds), or a mapping ``{video: [[start, end], ...]}``.

    Returns
    -------
    dict of str to ndarray, shape (n, 2)

    Raises
    ------
    FileNotFoundError
        No such file.
    DetectionFileError
        A file that cannot be read (a folder, no permission, not UTF-8) or a malformed line.
    """
    pairs: dict[str, list[tuple[float, float]]] = {}
    if isinstance(source, Mapping):
        for vid, segs in source.items():
            for j, seg in enumerate(segs):
                pairs.setdefault(vid, []).append(_segment(list(seg), f"<ambiguous>[{vid!r}][{j}]"))
    else:
        name = os.fspath(source)
        try:
            lines = Path(name).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"ambiguous-segment file not found: {name}") from None
        except UnicodeDecodeError as exc:
            raise DetectionFileError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:  # a folder, an unreadable file
            raise DetectionFileError(f"ambiguous-segment file {name} cannot be read: {exc.strerror or exc}") from None
        for n, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 3:
                raise DetectionFileError(f"{name}:{n}: expected 'video start end', got {line!r}")
            pairs.setdefault(parts[0], []).append(_segment(parts[-2:], f"{name}:{n}"))
    return {vid: np.asarray(segs, np.float64).reshape(-1, 2) for vid, segs in pairs.items()}


def filter_ambiguous(
    predictions: Predictions, ground_truth: GroundTruth, ambiguous: Mapping[str, np.ndarray]
) -> tuple[Predictions, int]:
    """Drop predictions that overlap an ambiguous segment of their video.

    W-TALC semantics (``filter_segments`` of its ``detectionMAP.py``, copied by CO2-Net and
    others): a prediction of *any* class is removed when its segment and an ambiguous segment
    of the same video overlap by a positive length. W-TALC measures that overlap on snippet
    indices (rounded ambiguous bounds ``* 25 / 16``); here it is measured in seconds, so the
    two can differ by a fraction of a snippet at the edges. Ground truth is never changed.

    Returns
    -------
    (Predictions, int)
        The kept predictions and how many were removed.
    """
    keep = np.ones(len(predictions), bool)
    for code, vid in enumerate(ground_truth.videos):
        segs = ambiguous.get(vid)
        if segs is None or segs.size == 0:
            continue
        rows = np.flatnonzero(predictions.video == code)
        if rows.size == 0:
            continue
        overlap = np.minimum(predictions.end[rows, None], segs[None, :, 1]) - np.maximum(
            predictions.start[rows, None], segs[None, :, 0]
        )
        keep[rows[(overlap > 0).any(axis=1)]] = False
    return predictions.subset(keep), int((~keep).sum())


# --------------------------------------------------------------------------------------------
# The metric
# --------------------------------------------------------------------------------------------


def segment_iou(start_a: np.ndarray, end_a: np.ndarray, start_b: np.ndarray, end_b: np.ndarray) -> np.ndarray:
    """Temporal IoU of segments ``[start_a, end_a]`` and ``[start_b, end_b]`` (broadcasting).

    .. math:: \\mathrm{tIoU} = \\frac{\\max(0, \\min(e_a, e_b) - \\max(s_a, s_b))}
              {(e_a - s_a) + (e_b - s_b) - \\max(0, \\min(e_a, e_b) - \\max(s_a, s_b))}

    computed with the official evaluator's float operations; 0 where the union is empty.

    Examples
    --------
    >>> segment_iou(np.array([0.0]), np.array([4.0]), np.array([2.0]), np.array([6.0]))
    array([0.33333333])
    """
    inter = np.clip(np.minimum(end_a, end_b) - np.maximum(start_a, start_b), 0.0, None)
    union = (end_b - start_b) + (end_a - start_a) - inter
    return np.divide(inter, union, out=np.zeros(np.broadcast(inter, union).shape), where=union > 0)


def check_tiou_thresholds(tiou_thresholds: Iterable[float], name: str = "tiou_thresholds") -> np.ndarray:
    """The thresholds as an array, or a :class:`ValueError` naming ``name`` (the flag, key or parameter).

    The one rule for ``--tiou``, ``eval.tiou`` and the Python API: a non-empty list of
    thresholds in (0, 1]. A threshold of 0 is refused because a match needs tIoU >= threshold:
    a detection that does not overlap its instance at all would count as a hit.
    """
    values = list(tiou_thresholds) if isinstance(tiou_thresholds, Iterable) else tiou_thresholds
    try:
        thr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):  # not numbers, or ragged
        thr = None
    if thr is None or thr.ndim != 1 or thr.size == 0 or not ((thr > 0) & (thr <= 1)).all():  # NaN fails both
        raise ValueError(f"{name} must be a non-empty list of thresholds in (0, 1], got {values}")
    return thr


def _candidate_ranges(
    gkey: np.ndarray,
    gstart: np.ndarray,
    gend: np.ndarray,
    pkey: np.ndarray,
    pstart: np.ndarray,
    pend: np.ndarray,
    overlapping_only: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """For each prediction, the range [lo, hi) of sorted ground truth it must be compared with.

    Ground truth is sorted by (group, start). Without ``overlapping_only`` the range is the
    prediction's whole group. With it (every threshold > 0, so only a positive overlap can
    match), it is narrowed to the instances starting in [start - longest, end] of the group:
    a superset of those overlapping the prediction, found with one ``searchsorted`` on a
    composite (group, start) key. Rounding in that key is covered by a margin; the exact tIoU
    filter that follows makes any extra candidate harmless.
    """
    valid = pkey >= 0
    lo = np.searchsorted(gkey, pkey, side="left")
    hi = np.where(valid, np.searchsorted(gkey, pkey, side="right"), lo)
    if not overlapping_only or not valid.any():
        return lo, hi
    groups, first = np.unique(gkey, return_index=True)
    longest = np.maximum.reduceat(gend - gstart, first)
    in_group = valid & (hi > lo)
    rank = np.minimum(np.searchsorted(groups, pkey), groups.size - 1)
    origin = min(gstart.min(), pstart[in_group].min(initial=np.inf)) - longest.max() - 1.0
    width = max(gend.max(), pend[in_group].max(initial=-np.inf)) - origin + 1.0
    composite = np.repeat(np.arange(groups.size), np.diff(np.r_[first, gkey.size])) * width
    composite += gstart - origin
    margin = 1e-9 * width * groups.size
    q_lo = rank * width + (pstart - longest[rank] - origin) - margin
    q_hi = rank * width + (pend - origin) + margin
    lo_w = np.clip(np.searchsorted(composite, q_lo, side="left"), lo, hi)
    hi_w = np.clip(np.searchsorted(composite, q_hi, side="right"), lo_w, hi)
    return np.where(in_group, lo_w, lo), np.where(in_group, hi_w, lo)


def _match(
    gt: GroundTruth,
    pr_video: np.ndarray,
    pr_label: np.ndarray,
    pr_start: np.ndarray,
    pr_end: np.ndarray,
    thr: np.ndarray,
) -> np.ndarray:
    """True-positive flags (R, N) of predictions already in rank order.

    The official matching is sequential, but only within one (class, video) group: ground
    truth of different groups never competes. So the r-th ranked prediction of every group is
    matched in one vectorised step ("round"), and the number of rounds is the largest number
    of predictions one group has — not the number of predictions.
    """
    n, n_thr, n_videos = pr_label.size, thr.size, max(len(gt.videos), 1)
    tp = np.zeros((n_thr, n), bool)
    # Ground truth sorted by group (class, video), then start.
    gkey = gt.label * n_videos + gt.video
    gorder = np.lexsort((gt.start, gkey))
    gkey, gstart, gend = gkey[gorder], gt.start[gorder], gt.end[gorder]
    pkey = np.where(pr_video >= 0, pr_label * n_videos + pr_video, -1)
    lo, hi = _candidate_ranges(gkey, gstart, gend, pkey, pr_start, pr_end, thr.min() > 0)
    count = hi - lo
    if count.sum() == 0:
        return tp
    # Every candidate (prediction, ground truth of its group) pair, with its tIoU.
    pair_pred = np.repeat(np.arange(n), count)
    first_pair = np.cumsum(count) - count
    pair_gt = np.arange(pair_pred.size) - np.repeat(first_pair - lo, count)
    iou = segment_iou(pr_start[pair_pred], pr_end[pair_pred], gstart[pair_gt], gend[pair_gt])
    useful = iou >= thr.min()  # a pair below every threshold can never match
    pair_pred, pair_gt, iou = pair_pred[useful], pair_gt[useful], iou[useful]
    if pair_pred.size == 0:
        return tp
    # Round of each prediction = its rank among the predictions of its group that have pairs.
    preds = np.unique(pair_pred)  # ascending = rank order
    by_group = np.argsort(pkey[preds], kind="stable")
    keys = pkey[preds][by_group]
    group_first = np.searchsorted(keys, keys, side="left")
    rank = np.empty(n, np.int64)
    rank[preds[by_group]] = np.arange(preds.size) - group_first
    pair_round = rank[pair_pred]
    # Pairs by round, then prediction, then preference: higher tIoU first and, among equal
    # tIoU, the ground truth listed later in the file first (official argsort()[::-1], stable).
    order = np.lexsort((-gorder[pair_gt], -iou, pair_pred, pair_round))
    pair_pred, pair_gt, pair_round = pair_pred[order], pair_gt[order], pair_round[order]
    above = iou[order][None, :] >= thr[:, None]  # (R, P)
    block_start = np.flatnonzero(np.r_[True, pair_pred[1:] != pair_pred[:-1]])
    round_bounds = np.searchsorted(pair_round, np.arange(pair_round[-1] + 2))
    round_blocks = np.split(block_start, np.searchsorted(block_start, round_bounds[1:-1]))
    positions = np.arange(int(np.diff(round_bounds).max()))
    locked = np.zeros((n_thr, gkey.size), bool)  # by sorted ground-truth position
    for r, blocks in enumerate(round_blocks):
        a, b = round_bounds[r], round_bounds[r + 1]
        g = pair_gt[a:b]
        eligible = above[:, a:b] & ~locked[:, g]
        # First eligible pair of each prediction (block), per threshold; b - a if none.
        first = np.minimum.reduceat(np.where(eligible, positions[: b - a], b - a), blocks - a, axis=1)
        t_idx, blk = np.nonzero(first < b - a)
        locked[t_idx, g[first[t_idx, blk]]] = True
        tp[t_idx, pair_pred[blocks[blk]]] = True
    return tp


def _interpolated_ap(tp: np.ndarray, num_positive: int) -> np.ndarray:
    """All-point interpolated AP (VOC 2011) of ranked TP flags (R, n), one value per row."""
    n_thr, n = tp.shape
    tp_cum = np.cumsum(tp, axis=1, dtype=np.int64)
    ranks = np.arange(1, n + 1)
    # Integer counts, so these are the very floats the official cumsum-of-floats gives.
    precision = tp_cum / (tp_cum + (ranks - tp_cum))
    recall = tp_cum / float(num_positive)
    zeros, ones = np.zeros((n_thr, 1)), np.ones((n_thr, 1))
    mprec = np.hstack([zeros, precision, zeros])
    mrec = np.hstack([zeros, recall, ones])
    envelope = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    # Steps where recall does not change contribute exactly 0.
    return np.sum((mrec[:, 1:] - mrec[:, :-1]) * envelope[:, 1:], axis=1)


def average_precision(
    ground_truth: GroundTruth, predictions: Predictions, tiou_thresholds: Iterable[float] = DEFAULT_TIOU_THRESHOLDS
) -> np.ndarray:
    """AP of every class of the subset at every tIoU threshold (the module's protocol).

    Parameters
    ----------
    ground_truth : GroundTruth
    predictions : Predictions
        Coded against ``ground_truth``.
    tiou_thresholds : iterable of float
        Thresholds in (0, 1] (:func:`check_tiou_thresholds`); a match needs tIoU >= threshold.

    Returns
    -------
    ndarray, shape (R, C)
        ``ap[r, c]`` for threshold ``r`` and class ``ground_truth.class_names[c]``.

    Examples
    --------
    >>> gt = load_ground_truth({"database": {"v": {"subset": "test", "annotations": [
    ...     {"segment": [0, 10], "label": "A"}, {"segment": [20, 30], "label": "A"}]}}})
    >>> pr = load_predictions({"results": {"v": [
    ...     {"label": "A", "score": 0.9, "segment": [0, 9]},
    ...     {"label": "A", "score": 0.8, "segment": [40, 50]},
    ...     {"label": "A", "score": 0.7, "segment": [21, 30]}]}}, gt)
    >>> average_precision(gt, pr, [0.5]).round(4).tolist()  # 0.5 * 1 + 0.5 * 2/3
    [[0.8333]]
    """
    thr = check_tiou_thresholds(tiou_thresholds)
    n_classes = len(ground_truth.class_names)
    ap = np.zeros((thr.size, n_classes))
    if len(predictions) == 0:
        return ap
    # Rank: class, then descending score, then later-listed first (see the module notes).
    n = len(predictions)
    order = np.lexsort((-np.arange(n), -predictions.score, predictions.label))
    label = predictions.label[order]
    tp = _match(ground_truth, predictions.video[order], label, predictions.start[order], predictions.end[order], thr)
    bounds = np.searchsorted(label, np.arange(n_classes + 1))
    num_positive = np.bincount(ground_truth.label, minlength=n_classes)
    for c in range(n_classes):
        if bounds[c + 1] > bounds[c]:
            ap[:, c] = _interpolated_ap(tp[:, bounds[c] : bounds[c + 1]], int(num_positive[c]))
    return ap


def evaluate_detection(
    ground_truth: Source | GroundTruth,
    predictions: Source,
    subset: str = "test",
    tiou_thresholds: Iterable[float] = DEFAULT_TIOU_THRESHOLDS,
    ambiguous: PathLike | Mapping[str, Any] | None = None,
    unknown_labels: str = "error",
) -> DetectionMetrics:
    """Detection mAP of predictions against ground truth (ActivityNet protocol).

    Parameters
    ----------
    ground_truth : path, mapping or GroundTruth
        ActivityNet-style ground truth (see :func:`load_ground_truth`).
    predictions : path or mapping
        ``{"results": {video: [{"label", "score", "segment"}, ...]}}``.
    subset : str
        Subset of the ground truth to evaluate on (ignored for a :class:`GroundTruth`).
    tiou_thresholds : iterable of float
        tIoU thresholds (THUMOS14: 0.1:0.1:0.7, the default).
    ambiguous : path or mapping, optional
        Ambiguous segments (THUMOS14 ``Ambiguous_test.txt``); predictions overlapping one are
        removed first (:func:`filter_ambiguous`). Off by default, as in the official CASE code.
    unknown_labels : {"error", "drop"}
        What a label unknown to the whole ground truth is (:func:`load_predictions`).

    Returns
    -------
    DetectionMetrics

    Examples
    --------
    >>> gt = {"database": {"v": {"subset": "test", "annotations": [
    ...     {"segment": ["0", "10"], "label": "A"}]}}}
    >>> m = evaluate_detection(gt, {"results": {"v": [
    ...     {"label": "A", "score": 1.0, "segment": [0, 6]}]}}, tiou_thresholds=[0.5, 0.7])
    >>> m.mAP, m.average
    ([1.0, 0.0], 0.5)
    """
    thr = check_tiou_thresholds(tiou_thresholds)
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth, subset)
    pred = load_predictions(predictions, gt, unknown_labels)
    removed = 0
    if ambiguous is not None:
        pred, removed = filter_ambiguous(pred, gt, load_ambiguous(ambiguous))
    ap = average_precision(gt, pred, thr)
    m_ap = ap.mean(axis=1)
    return DetectionMetrics(
        tiou=[float(t) for t in thr],
        mAP=[float(v) for v in m_ap],
        average=float(m_ap.mean()),
        per_class_ap={c: [float(v) for v in ap[:, i]] for i, c in enumerate(gt.class_names)},
        num_ground_truth=len(gt),
        num_predictions=len(pred),
        num_outside_subset=int((pred.video < 0).sum()),
        num_ambiguous=removed,
        num_unknown_labels=pred.num_unknown_labels,
    )


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def metrics_json(metrics: DetectionMetrics | Mapping[str, Any]) -> str:
    """``{"tiou": [...], "mAP": [...], "average": ...}`` (fractions) as the JSON text of ``metrics.json``.

    A mapping is written as it is: the record of an evaluation, which adds every test mode's
    figures to these (:func:`case.scoring.metrics_record`).
    """
    record = metrics.to_dict() if isinstance(metrics, DetectionMetrics) else dict(metrics)
    return json.dumps(record, indent=2) + "\n"


def write_metrics(path: PathLike, metrics: DetectionMetrics | Mapping[str, Any]) -> None:
    """Atomically write :func:`metrics_json`.

    The file is written to a temporary file in the same folder and moved into place, so a
    reader never sees a partial file.
    """
    atomic_write_text(path, metrics_json(metrics))


def format_metrics(metrics: DetectionMetrics, per_class: bool = False) -> str:
    """A plain-text table of the metrics in percent (one column per tIoU, then the average).

    Examples
    --------
    >>> print(format_metrics(DetectionMetrics([0.5], [0.25], 0.25, {"A": [0.25]})))
    tIoU      0.50    avg
    mAP (%)  25.00  25.00
    """
    rows = [("mAP (%)", metrics.mAP)] + (list(metrics.per_class_ap.items()) if per_class else [])
    return format_table(metrics.tiou, rows)


def format_table(tiou: Sequence[float], rows: Sequence[tuple[str, Sequence[float]]]) -> str:
    """Named rows of fractions at ``tiou`` as a plain-text table in percent, with their mean.

    Examples
    --------
    >>> print(format_table([0.5, 0.7], [("a", [0.5, 0.25]), ("bb", [1.0, 0.0])]))
    tIoU   0.50   0.70    avg
    a     50.00  25.00  37.50
    bb   100.00   0.00  50.00
    """
    width = max(len(name) for name, _ in [*rows, ("tIoU", ())])
    lines = ["tIoU".ljust(width) + "".join(f"{t:7.2f}" for t in tiou) + "    avg"]
    for name, values in rows:
        cells = "".join(f"{100 * v:7.2f}" for v in values)
        lines.append(name.ljust(width) + cells + f"{100 * float(np.mean(values)):7.2f}")
    return "\n".join(lines)
