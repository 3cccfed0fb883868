"""A straightforward loop re-statement of the official ActivityNet detection metric.

Written from the logic of ``compute_average_precision_detection`` and ``interpolated_prec_rec``
(ActivityNet's ``eval_detection.py``, as copied by the CASE code), one prediction at a time,
without pandas (and without ``np.float``, which NumPy >= 1.24 removed and which breaks the
official file). It is the yardstick for ``case.metrics`` in the tests and the peer in
``benchmarks/bench_evaluator.py``; it is deliberately slow and simple.

Two things the official code leaves undefined are pinned down here exactly as ``case.metrics``
documents them: ``sort_kind`` (default ``"stable"``) is the sort behind the official
``argsort()[::-1]`` rankings (NumPy's default quicksort orders ties arbitrarily), and the tIoU
of an empty union is 0 (0/0 = NaN in the official code).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GtRow = tuple[str, str, float, float]  # video, label, start, end
PredRow = tuple[str, str, float, float, float]  # video, label, start, end, score


def reference_segment_iou(target: tuple[float, float], candidates: np.ndarray) -> np.ndarray:
    """tIoU of one segment against rows of ``candidates`` (n, 2), the official formula."""
    tt1 = np.maximum(target[0], candidates[:, 0])
    tt2 = np.minimum(target[1], candidates[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    out = np.zeros(len(candidates))
    nonzero = union > 0
    out[nonzero] = inter[nonzero] / union[nonzero]
    return out


def reference_interpolated_ap(prec: np.ndarray, rec: np.ndarray) -> float:
    """VOC 2011 all-point interpolated AP, the official loop."""
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def reference_class_ap(
    gt: Sequence[tuple[str, float, float]],
    pred: Sequence[tuple[str, float, float, float]],
    thresholds: Sequence[float],
    sort_kind: str = "stable",
) -> np.ndarray:
    """AP of one class from ``gt`` rows (video, start, end) and ``pred`` rows (+ score)."""
    ap = np.zeros(len(thresholds))
    if len(pred) == 0:
        return ap
    npos = float(len(gt))
    lock_gt = np.ones((len(thresholds), len(gt))) * -1
    scores = np.array([p[3] for p in pred], dtype=np.float64)
    sort_idx = np.argsort(scores, kind=sort_kind)[::-1]
    pred = [pred[i] for i in sort_idx]
    tp = np.zeros((len(thresholds), len(pred)))
    fp = np.zeros((len(thresholds), len(pred)))
    by_video: dict[str, list[int]] = {}
    for j, g in enumerate(gt):
        by_video.setdefault(g[0], []).append(j)
    for idx, p in enumerate(pred):
        if p[0] not in by_video:
            fp[:, idx] = 1
            continue
        rows = by_video[p[0]]
        segs = np.array([[gt[j][1], gt[j][2]] for j in rows], dtype=np.float64)
        tiou_arr = reference_segment_iou((p[1], p[2]), segs)
        tiou_sorted_idx = np.argsort(tiou_arr, kind=sort_kind)[::-1]
        for tidx, thr in enumerate(thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, rows[jdx]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, rows[jdx]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_cumsum = np.cumsum(tp, axis=1).astype(np.float64)
    fp_cumsum = np.cumsum(fp, axis=1).astype(np.float64)
    recall = tp_cumsum / npos
    precision = tp_cumsum / (tp_cumsum + fp_cumsum)
    for tidx in range(len(thresholds)):
        ap[tidx] = reference_interpolated_ap(precision[tidx, :], recall[tidx, :])
    return ap


def reference_evaluate(
    gt_rows: Sequence[GtRow], pred_rows: Sequence[PredRow], thresholds: Sequence[float], sort_kind: str = "stable"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-class AP (dict in first-appearance order) and mAP per threshold.

    ``gt_rows`` are the subset's instances in file order; ``pred_rows`` the predictions in file
    order. Predictions of labels without ground truth are ignored (they cannot change an AP).
    """
    classes: dict[str, None] = {}
    for row in gt_rows:
        classes.setdefault(row[1], None)
    per_class = {}
    for c in classes:
        gt_c = [(v, s, e) for v, lab, s, e in gt_rows if lab == c]
        pred_c = [(v, s, e, sc) for v, lab, s, e, sc in pred_rows if lab == c]
        per_class[c] = reference_class_ap(gt_c, pred_c, thresholds, sort_kind)
    ap = np.stack(list(per_class.values()), axis=1)
    return per_class, ap.mean(axis=1)


def rows_from_files(gt: dict, pred: dict, subset: str) -> tuple[list[GtRow], list[PredRow]]:
    """Flatten ActivityNet-style ground truth (one subset) and predictions to rows."""
    gt_rows = [
        (v, a["label"], float(a["segment"][0]), float(a["segment"][1]))
        for v, entry in gt["database"].items()
        if entry["subset"] == subset
        for a in entry["annotations"]
    ]
    pred_rows = [
        (v, p["label"], float(p["segment"][0]), float(p["segment"][1]), float(p["score"]))
        for v, items in pred["results"].items()
        for p in items
    ]
    return gt_rows, pred_rows
