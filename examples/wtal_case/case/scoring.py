"""Scoring detections: the step every evaluation shares, and the test modes side by side. NumPy only.

:mod:`case.evaluation` runs a checkpoint (torch) and hands its detections here;
``evaluate.py --pred`` scores a predictions file here directly, without importing torch.
Both go through :func:`read_references` and :func:`evaluate_predictions`, so they apply the
same checks and the same unknown-label rule.

An evaluation of a checkpoint scores the three foregrounds of clustering-assisted testing
(:data:`case.postprocess.TEST_MODES`: P^A, P^T, P^M) from one forward pass per video; its
record (``metrics.json``, :func:`metrics_record`) keeps the configured mode's figures at the
top, as before, and adds every mode's figures under ``"modes"``.

Examples
--------
>>> from case.metrics import DetectionMetrics
>>> figures = {m: DetectionMetrics([0.5], [v], v) for m, v in (("attention", 0.25), ("cluster", 0.125), ("mixed", 0.5))}
>>> record = metrics_record(figures, "mixed")
>>> record["average"], record["foreground_mode"], sorted(record["modes"])
(0.5, 'mixed', ['attention', 'cluster', 'mixed'])
>>> print(format_modes(figures, "mixed"))
tIoU                0.50    avg
P^A attention (%)  25.00  25.00
P^T cluster (%)    12.50  12.50
P^M mixed (%) *    50.00  50.00
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import (
    DetectionMetrics,
    GroundTruth,
    Source,
    evaluate_detection,
    format_table,
    load_ambiguous,
    load_ground_truth,
)
from .postprocess import MODE_LABELS, TEST_MODES

__all__ = [
    "has_annotations",
    "read_references",
    "evaluate_predictions",
    "reported_modes",
    "metrics_record",
    "format_modes",
]


def has_annotations(ground_truth: Mapping[str, Any]) -> bool:
    """Whether an ActivityNet-style ground truth holds at least one annotated instance."""
    return any(entry.get("annotations") for entry in ground_truth["database"].values())


def read_references(
    ground_truth: Source | GroundTruth, subset: str, ambiguous: str | Path | Mapping[str, Any] | None = None
) -> tuple[GroundTruth, dict[str, Any] | None]:
    """The ground truth of ``subset`` and the ambiguous segments (None when not asked for), read
    and checked once, before any prediction is scored."""
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth, subset)
    return gt, (load_ambiguous(ambiguous) if ambiguous else None)


def evaluate_predictions(
    ground_truth: GroundTruth,
    predictions: Source,
    tiou: Sequence[float],
    ambiguous: Mapping[str, Any] | None = None,
) -> DetectionMetrics:
    """mAP of ``predictions`` (a mapping or a file) by the ActivityNet protocol at ``tiou``,
    optionally without ``ambiguous`` segments.

    Detections of labels that the whole database does not know are dropped (and counted,
    ``DetectionMetrics.num_unknown_labels``): a class without any instance has no AP, so they
    change no score, and a model may know classes that a test set lacks. Each is still
    checked like any other detection.
    """
    return evaluate_detection(
        ground_truth, predictions, tiou_thresholds=tuple(tiou), ambiguous=ambiguous, unknown_labels="drop"
    )


def reported_modes(configured: str) -> tuple[str, ...]:
    """The foreground modes an evaluation scores: :data:`~case.postprocess.TEST_MODES`, and the
    configured one if it is another (``official``).

    >>> reported_modes("mixed"), reported_modes("official")
    (('attention', 'cluster', 'mixed'), ('attention', 'cluster', 'mixed', 'official'))
    """
    return TEST_MODES if configured in TEST_MODES else (*TEST_MODES, configured)


def metrics_record(metrics: Mapping[str, DetectionMetrics], configured: str) -> dict[str, Any]:
    """The ``metrics.json`` object of an evaluation: the configured mode's ``{"tiou", "mAP",
    "average"}`` at the top (where they always were), ``"foreground_mode"``, and each scored
    mode's figures under ``"modes"``."""
    return {
        **metrics[configured].to_dict(),
        "foreground_mode": configured,
        "modes": {mode: figures.to_dict() for mode, figures in metrics.items()},
    }


def format_modes(metrics: Mapping[str, DetectionMetrics], configured: str, per_class: bool = False) -> str:
    """One row per scored mode (percent), the configured one marked ``*``; ``per_class`` adds
    the configured mode's per-class AP."""
    rows = [
        (f"{MODE_LABELS.get(mode, mode)} {mode} (%)" + (" *" if mode == configured else ""), figures.mAP)
        for mode, figures in metrics.items()
    ]
    if per_class:
        rows += list(metrics[configured].per_class_ap.items())
    return format_table(metrics[configured].tiou, rows)
