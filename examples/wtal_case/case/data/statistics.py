"""Summary statistics of a temporal-localisation data set's annotations.

One function, :func:`annotation_statistics`, computes every number the synthetic generator
is built from. It is applied to the real THUMOS14 annotations by
``examples/wtal_case/tools/thumos14_stats.py`` (which prints the values recorded in
:mod:`case.data.constants`), and to a generated synthetic set by the tests, so the real and
the synthetic numbers are measured the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .annotations import VideoRecord, foreground_mask, num_snippets
from .errors import DatasetError


def _summary(values: Sequence[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "p10": float(np.percentile(x, 10)),
        "p90": float(np.percentile(x, 90)),
        "min": float(x.min()),
        "max": float(x.max()),
    }


def annotation_statistics(records: Iterable[VideoRecord], class_names: Sequence[str]) -> dict[str, Any]:
    """Statistics of annotated videos (every record needs a duration).

    Parameters
    ----------
    records
        Videos with their segments (seconds) and durations (seconds).
    class_names
        The class vocabulary (its order is kept in ``"CLASSES"``).

    Returns
    -------
    dict
        Keys are the suffixes of the ``THUMOS14_*`` constants of :mod:`case.data.constants`:

        * ``CLASSES`` — tuple of names; ``NUM_VIDEOS`` — videos per split;
        * ``INSTANCES_PER_VIDEO``, ``INSTANCE_SECONDS``, ``VIDEO_SECONDS``,
          ``SNIPPETS_PER_VIDEO`` — summaries (mean, median, p10, p90, min, max);
          ``VIDEO_SECONDS`` also has ``log_mean`` and ``log_std`` of ln(duration);
        * ``FOREGROUND_FRACTION`` — ``snippets``: foreground snippets / all snippets pooled
          over videos (a snippet is foreground when its centre lies in an instance, T =
          ⌊duration · 25 / 16⌋); ``video_mean`` / ``video_median`` of the per-video fraction;
        * ``CLASSES_PER_VIDEO`` — {number of distinct classes: videos};
        * ``CLASS_VIDEOS`` — {class: videos containing it}; ``CLASS_PAIR_VIDEOS`` —
          {(a, b): videos containing both}, a < b, pairs that occur only;
        * ``CLASS_SET_VIDEOS`` — {sorted tuple of a video's classes: videos};
        * ``CLASS_INSTANCE_SECONDS_MEDIAN`` — {class: median instance length};
        * ``CLASS_LOG_SECONDS`` — {class: mean over the videos containing the class of the
          mean ln(seconds) of its instances there} (videos weigh equally);
        * ``INSTANCE_LOG_SECONDS_STD`` — spread of ln(length) minus its class's
          ``CLASS_LOG_SECONDS``: ``between_video`` (std over videos of their mean residual)
          and ``within_video`` (pooled std around each video's mean);
        * ``LOG_INSTANCES_MODEL`` and ``CLASS_LOG_INSTANCES_INTERCEPT`` — least squares
          ln(n) = a + slope_log_duration · (ln D − mean_log_duration) + slope_log_length ·
          (m − mean_log_length) + noise, with n instances, D the duration, m the mean
          ln(length) of a video and a the mean of its classes' intercepts (classes differ:
          BasketballDunk videos have many instances, GolfSwing few); ``residual_std``.

    Raises
    ------
    DatasetError
        A record without a duration, or no records.
    """
    records = list(records)
    if not records:
        raise DatasetError("annotation_statistics: no videos")
    for rec in records:
        if rec.duration is None:
            raise DatasetError(f"annotation_statistics: video {rec.name!r} has no duration")
    per_class_lengths: dict[str, list[float]] = {c: [] for c in class_names}
    for rec in records:
        for seg in rec.segments:
            per_class_lengths.setdefault(seg.label, []).append(seg.seconds)
    class_median = {c: float(np.median(v)) for c, v in per_class_lengths.items() if v}
    # Each class's typical ln-length *per video* (videos weigh equally, however many
    # instances they have): the location a generator draws a video's lengths around.
    per_class_video_means: dict[str, list[float]] = {c: [] for c in class_names}
    for rec in records:
        for label in set(rec.labels):
            log_len = np.log(np.maximum([s.seconds for s in rec.segments if s.label == label], 0.01))
            per_class_video_means.setdefault(label, []).append(float(log_len.mean()))
    class_log = {c: float(np.mean(v)) for c, v in per_class_video_means.items() if v}

    n_inst, lengths, durations, snippets, fg_video = [], [], [], [], []
    fg_total = 0
    classes_per_video: Counter[int] = Counter()
    class_videos: Counter[str] = Counter()
    pair_videos: Counter[tuple[str, str]] = Counter()
    set_videos: Counter[tuple[str, ...]] = Counter()
    video_resid, within_sq, within_dof = [], 0.0, 0
    rows_x, rows_w, rows_y = [], [], []
    class_index = {c: k for k, c in enumerate(class_names)}
    for rec in records:
        labels = sorted(set(rec.labels))
        classes_per_video[len(labels)] += 1
        class_videos.update(labels)
        set_videos[tuple(labels)] += 1
        pair_videos.update((a, b) for i, a in enumerate(labels) for b in labels[i + 1 :])
        t = num_snippets(rec.duration)
        mask = foreground_mask(rec.segments, t)
        snippets.append(t)
        fg_total += int(mask.sum())
        fg_video.append(float(mask.mean()))
        durations.append(rec.duration)
        n_inst.append(len(rec.segments))
        if not rec.segments:
            continue
        # Lengths below 10 ms are annotation noise; the floor keeps the logarithm finite.
        log_len = np.log(np.maximum([s.seconds for s in rec.segments], 0.01))
        lengths.extend(s.seconds for s in rec.segments)
        resid = log_len - np.array([class_log[s.label] for s in rec.segments])
        video_resid.append(float(resid.mean()))
        within_sq += float(((resid - resid.mean()) ** 2).sum())
        within_dof += len(resid) - 1
        weights = np.zeros(len(class_names))
        for label in set(rec.labels):
            weights[class_index[label]] = 1.0 / len(set(rec.labels))
        rows_x.append((np.log(rec.duration), float(log_len.mean())))
        rows_w.append(weights)
        rows_y.append(np.log(len(rec.segments)))

    x = np.asarray(rows_x)
    means = x.mean(axis=0)
    # Class intercepts replace a global one: each video's weights over its classes sum to 1.
    design = np.column_stack([x - means, np.asarray(rows_w)])
    coef, *_ = np.linalg.lstsq(design, np.asarray(rows_y), rcond=None)
    residual = np.asarray(rows_y) - design @ coef
    log_d = np.log(durations)
    splits = Counter(rec.subset for rec in records)
    return {
        "CLASSES": tuple(class_names),
        "NUM_VIDEOS": dict(sorted(splits.items())),
        "INSTANCES_PER_VIDEO": _summary(n_inst),
        "INSTANCE_SECONDS": _summary(lengths),
        "VIDEO_SECONDS": {**_summary(durations), "log_mean": float(log_d.mean()), "log_std": float(log_d.std())},
        "SNIPPETS_PER_VIDEO": _summary(snippets),
        "FOREGROUND_FRACTION": {
            "snippets": fg_total / float(sum(snippets)),
            "video_mean": float(np.mean(fg_video)),
            "video_median": float(np.median(fg_video)),
        },
        "CLASSES_PER_VIDEO": dict(sorted(classes_per_video.items())),
        "CLASS_VIDEOS": {c: class_videos[c] for c in class_names},
        "CLASS_PAIR_VIDEOS": dict(sorted(pair_videos.items())),
        "CLASS_SET_VIDEOS": dict(sorted(set_videos.items())),
        "CLASS_INSTANCE_SECONDS_MEDIAN": {c: class_median.get(c, float("nan")) for c in class_names},
        "CLASS_LOG_SECONDS": {c: class_log.get(c, float("nan")) for c in class_names},
        "INSTANCE_LOG_SECONDS_STD": {
            "between_video": float(np.std(video_resid)),
            "within_video": float(np.sqrt(within_sq / max(within_dof, 1))),
        },
        "LOG_INSTANCES_MODEL": {
            "slope_log_duration": float(coef[0]),
            "slope_log_length": float(coef[1]),
            "residual_std": float(residual.std()),
            "mean_log_duration": float(means[0]),
            "mean_log_length": float(means[1]),
        },
        "CLASS_LOG_INSTANCES_INTERCEPT": {c: float(coef[2 + k]) for k, c in enumerate(class_names)},
    }


def round_significant(value: Any, digits: int = 4) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits (recursively)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: round_significant(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(round_significant(v, digits) for v in value)
    return value
