"""Score temporal action detections by the ActivityNet protocol (mAP at several tIoU thresholds).

Usage::

    python examples/wtal_case/evaluate.py --gt GT.json --pred PRED.json --subset test \\
        --tiou 0.1 0.2 0.3 0.4 0.5 0.6 0.7 --json

prints ``{"tiou": [...], "mAP": [...], "average": ...}`` (fractions). Without ``--json`` it
prints a table in percent (``--per-class`` adds one row per class). ``--out FILE`` also writes
the JSON object atomically. Exit status 2 on a malformed or missing file. The protocol and the
file formats are documented in ``case.metrics`` and docs/wtal_evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `case` package beside this file

from case.metrics import (  # noqa: E402
    DEFAULT_TIOU_THRESHOLDS,
    DetectionFileError,
    DetectionMetrics,
    evaluate_detection,
    format_metrics,
    write_metrics,
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        description="Detection mAP by the ActivityNet protocol (all-point interpolated AP).")
    parser.add_argument("--gt", required=True, metavar="GT.json",
                        help="ActivityNet-style ground truth: database -> video -> subset, "
                             "annotations [{segment: [start, end], label}]")
    # Where the predictions come from. A model-run source (--checkpoint with --config) belongs
    # in this group too, so that exactly one source is given.
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pred", metavar="PRED.json",
                        help='predictions: {"results": {video: [{label, score, segment}]}}')
    parser.add_argument("--subset", default="test",
                        help="ground-truth subset to evaluate on (default: test)")
    parser.add_argument("--tiou", type=float, nargs="+", default=list(DEFAULT_TIOU_THRESHOLDS),
                        metavar="T", help="tIoU thresholds (default: 0.1 0.2 ... 0.7)")
    parser.add_argument("--ambiguous", metavar="FILE", default=None,
                        help="drop predictions overlapping these ambiguous segments "
                             "(THUMOS14 Ambiguous_test.txt); off by default")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object {tiou, mAP, average} in fractions")
    parser.add_argument("--per-class", action="store_true",
                        help="also report the AP of every class")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="also write {tiou, mAP, average} to this JSON file (atomically)")
    return parser


def predictions_from_args(args: argparse.Namespace) -> str | Mapping[str, Any]:
    """The predictions to score: a file today; a model run on a data set later."""
    return args.pred


def report(metrics: DetectionMetrics, args: argparse.Namespace) -> str:
    """What to print: the JSON object, or a summary line and a table in percent."""
    if args.json:
        out: dict[str, Any] = metrics.to_dict()
        if args.per_class:
            out["per_class_ap"] = metrics.per_class_ap
        return json.dumps(out)
    summary = (f"subset {args.subset!r}: {metrics.num_ground_truth} ground-truth instances of "
               f"{len(metrics.per_class_ap)} classes, {metrics.num_predictions} predictions")
    notes = []
    if metrics.num_outside_subset:
        notes.append(f"{metrics.num_outside_subset} in videos outside the subset, counted as "
                     f"false positives")
    if metrics.num_ambiguous:
        notes.append(f"{metrics.num_ambiguous} removed as ambiguous")
    if notes:
        summary += " (" + "; ".join(notes) + ")"
    return summary + "\n" + format_metrics(metrics, per_class=args.per_class)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        metrics = evaluate_detection(args.gt, predictions_from_args(args), subset=args.subset,
                                     tiou_thresholds=args.tiou, ambiguous=args.ambiguous)
        if args.out:
            write_metrics(args.out, metrics)
    except (DetectionFileError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    print(report(metrics, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
