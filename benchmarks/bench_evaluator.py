"""Benchmark: the CASE example's detection evaluator against the official loop.

Peers, on the real THUMOS14 ground truth (``../shared/data/thumos14/gt.json``, subset
``test``) and synthetic detector-like predictions (jittered copies of every instance with
decreasing scores, wrong-class and background false positives; 20k+ by default):

* ``case.metrics.evaluate_detection`` end to end, from the in-memory JSON objects (parsing and
  validation included);
* ``case.metrics.average_precision`` on already parsed arrays (the metric alone);
* the loop re-statement of the official ``compute_average_precision_detection``
  (``tests/wtal_case/anet_reference.py``, one prediction at a time, as the official code; given
  pre-flattened rows, so its parsing is not timed). The official file itself is not run: it
  needs pandas and fails on NumPy >= 1.24 (``np.float``);
* whole processes, files in and numbers out, start-up included: ``evaluate.py --gt --pred
  --json`` (which never imports torch) against a process that reads the same files and runs the
  loop re-statement (Python, json and NumPy: the official file's work without pandas).

Runs are interleaved, after one warm-up run of each; the table reports medians and the ratio
to the reference. The numbers must agree (max |difference| of per-class AP is printed).

Usage::

    python benchmarks/bench_evaluator.py [--predictions 24000] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "wtal_case"))
sys.path.insert(0, str(ROOT / "tests" / "wtal_case"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import median, time_call, write_json  # noqa: E402
from anet_reference import reference_evaluate, rows_from_files  # noqa: E402

from case.metrics import (  # noqa: E402
    DEFAULT_TIOU_THRESHOLDS,
    average_precision,
    evaluate_detection,
    load_ground_truth,
    load_predictions,
)

DEFAULT_GT = ROOT.parent / "shared" / "data" / "thumos14" / "gt.json"
EVALUATE = ROOT / "examples" / "wtal_case" / "evaluate.py"

#: A whole process that reads the files and runs the official loop (its re-statement).
REFERENCE_PROCESS = """
import json, sys
sys.path.insert(0, {tests!r})
from anet_reference import reference_evaluate, rows_from_files
gt, pred = (json.load(open(path)) for path in ({gt!r}, {pred!r}))
gt_rows, pred_rows = rows_from_files(gt, pred, "test")
per_class, m_ap = reference_evaluate(gt_rows, pred_rows, {tiou!r})
print(json.dumps([float(v) for v in m_ap]))
"""


def _process(argv: list[str]) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    return run


def synthetic_predictions(gt: dict, n_predictions: int, seed: int = 0, subset: str = "test") -> dict:
    """Detector-like predictions: per instance a few jittered proposals, plus false positives.

    Scores are rounded to 3 decimals, so ties occur as in real outputs.
    """
    rng = np.random.default_rng(seed)
    videos = {v: e for v, e in gt["database"].items() if e["subset"] == subset}
    instances = [
        (v, a["label"], float(a["segment"][0]), float(a["segment"][1]))
        for v, e in videos.items()
        for a in e["annotations"]
    ]
    classes = sorted({lab for _, lab, _, _ in instances})
    per_instance = max(1, int(0.7 * n_predictions / len(instances)))
    results: dict[str, list] = {v: [] for v in videos}
    for v, lab, s, e in instances:
        length = e - s
        for k in range(per_instance):
            js, je = rng.normal(0, 0.15 * length + 0.2, size=2) * (1 + k / 2)
            start, end = sorted((max(0.0, s + js), max(0.0, e + je)))
            label = lab if rng.random() < 0.85 else classes[rng.integers(len(classes))]
            score = round(float(np.clip(rng.normal(0.8 - 0.1 * k, 0.15), 0, 1)), 3)
            results[v].append({"label": label, "score": score, "segment": [start, end]})
    names = list(videos)
    while sum(len(r) for r in results.values()) < n_predictions:
        v = names[rng.integers(len(names))]
        start = float(rng.uniform(0, 600))
        results[v].append(
            {
                "label": classes[rng.integers(len(classes))],
                "score": round(float(rng.uniform(0, 0.6)), 3),
                "segment": [start, start + float(rng.exponential(4.0))],
            }
        )
    return {"results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT)
    parser.add_argument("--predictions", type=int, default=24000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiou", type=float, nargs="+", default=list(DEFAULT_TIOU_THRESHOLDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_evaluator.json")
    args = parser.parse_args(argv)
    if not args.gt.exists():
        print(f"ground truth not found: {args.gt}", file=sys.stderr)
        return 2

    gt = json.loads(args.gt.read_text())
    pred = synthetic_predictions(gt, args.predictions, args.seed)
    n_pred = sum(len(r) for r in pred["results"].values())
    gt_rows, pred_rows = rows_from_files(gt, pred, "test")
    parsed_gt = load_ground_truth(gt, "test")
    parsed_pred = load_predictions(pred, parsed_gt)
    thr = args.tiou

    folder = tempfile.TemporaryDirectory(prefix="bench_evaluator-")
    pred_file = Path(folder.name) / "pred.json"
    pred_file.write_text(json.dumps(pred))
    ours_process = [sys.executable, str(EVALUATE), "--gt", str(args.gt), "--pred", str(pred_file), "--json"]
    ours_process += ["--tiou", *map(str, thr)]
    tests = str(ROOT / "tests" / "wtal_case")
    script = REFERENCE_PROCESS.format(tests=tests, gt=str(args.gt), pred=str(pred_file), tiou=list(thr))
    peers: dict[str, Callable[[], object]] = {
        "case.metrics.evaluate_detection (end to end)": lambda: evaluate_detection(gt, pred, tiou_thresholds=thr),
        "case.metrics.average_precision (metric only)": lambda: average_precision(parsed_gt, parsed_pred, thr),
        "official loop re-statement (reference)": lambda: reference_evaluate(gt_rows, pred_rows, thr),
        "whole process: evaluate.py --pred --json": _process(ours_process),
        "whole process: files + official loop re-statement": _process([sys.executable, "-c", script]),
    }
    # Agreement first (it is also the warm-up).
    ours = evaluate_detection(gt, pred, tiou_thresholds=thr)
    ref_per_class, ref_map = reference_evaluate(gt_rows, pred_rows, thr)
    max_diff = max(float(np.max(np.abs(np.asarray(ours.per_class_ap[c]) - ap))) for c, ap in ref_per_class.items())
    processes = (json.loads(peers["whole process: evaluate.py --pred --json"]())["mAP"],
                 json.loads(peers["whole process: files + official loop re-statement"]()))  # fmt: skip
    max_diff = max(max_diff, float(np.max(np.abs(np.subtract(*processes)))))
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(args.repeats):  # interleaved
        for name, fn in peers.items():
            times[name].append(time_call(fn)[0])

    folder.cleanup()
    reference = median(times["official loop re-statement (reference)"])
    whole_reference = median(times["whole process: files + official loop re-statement"])
    print(
        f"THUMOS14 test: {len(parsed_gt)} instances, {n_pred} predictions, "
        f"tIoU {thr}; max |AP difference| vs reference = {max_diff:.2e}; "
        f"mAP average = {ours.average:.4f}\n"
    )
    print("| evaluator | median (s) | min (s) | speed-up vs reference |")
    print("|---|---:|---:|---:|")
    rows = []
    for name, ts in times.items():
        med = median(ts)
        # a whole process is compared with the reference's whole process, a call with its call
        base = whole_reference if name.startswith("whole process") else reference
        rows.append(
            {
                "evaluator": name,
                "median_s": med,
                "min_s": min(ts),
                "speedup_vs_reference": base / med,
                "times_s": ts,
            }
        )
        print(f"| {name} | {med:.4f} | {min(ts):.4f} | {base / med:.1f}x |")
    whole_ratio = median(times["whole process: evaluate.py --pred --json"]) / whole_reference
    print(f"\nwhole process, evaluate.py --pred / files + official loop: {whole_ratio:.3f}x the time")

    record = {
        "benchmark": "bench_evaluator",
        "ground_truth": str(args.gt),
        "num_ground_truth": len(parsed_gt),
        "num_predictions": n_pred,
        "tiou": thr,
        "repeats": args.repeats,
        "max_abs_ap_difference": max_diff,
        "mAP": ours.mAP,
        "average": ours.average,
        "reference_mAP": list(map(float, ref_map)),
        "results": rows,
        "whole_process_time_ratio": whole_ratio,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    write_json(args.out, record)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
