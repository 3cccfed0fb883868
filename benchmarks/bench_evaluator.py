"""Benchmark: the CASE example's detection evaluator against the official loop.

Peers, on the real THUMOS14 ground truth (``../shared/data/thumos14/gt.json``, subset
``test``) and synthetic detector-like predictions (jittered copies of every instance with
decreasing scores, wrong-class and background false positives; 20k+ by default):

* ``case.metrics.evaluate_detection`` end to end, from the in-memory JSON objects (parsing and
  validation included);
* ``case.metrics.average_precision`` on already parsed arrays (the metric alone);
* the loop re-statement of the official ``compute_average_precision_detection``
  (``tests/wtal_case/anet_reference.py``, one prediction at a time, as the official code; given
  pre-flattened rows, so its parsing is not timed). The official file itself needs pandas and
  fails on NumPy >= 1.24 (``np.float``): it runs only on request (below);
* whole processes, files in and numbers out, start-up included: ``evaluate.py --gt --pred
  --json`` (which never imports torch) against a process that reads the same files and runs the
  loop re-statement (Python, json and NumPy: the official file's work without pandas);
* optionally (``--official PATH --official-python PATH``) the official evaluator itself as a whole
  process: the official CASE code's ``eval/eval_detection.py`` (its ``ANETEval`` class, called as
  ``inference_case.py`` calls it through ``run_eval.evaluate``: subset ``test``, no server check,
  predictions only; pandas, a joblib worker per class) run by another interpreter on the same
  files, its per-class APs and mAP checked against ours. It needs ``numpy<1.24`` and ``pandas<2``
  (and matplotlib, tqdm, joblib, which it imports), so it runs in a throwaway environment, never
  in the project's: neither the file nor pandas is part of the project, and CI runs without them.

Runs are interleaved, after one warm-up run of each; the table reports medians and the ratio
to the reference. The numbers must agree (max |difference| of per-class AP is printed). With
``--official`` the official file's are printed too: with ``--distinct-scores`` (no tied scores)
they must equal ours to rounding, or the benchmark fails; with the default tied scores they
differ where NumPy's unstable sort, in the official file, orders equal scores otherwise than the
stable order we use (docs/wtal_evaluation.md, "Ties").

Usage::

    python benchmarks/bench_evaluator.py [--predictions 24000] [--repeats 5] [--out FILE]
        [--official eval_detection.py --official-python PYTHON]

The official file, outside the project (Python 3.11 has wheels of both pins)::

    git clone https://github.com/Qinying-Liu/CASE /tmp/case-official
    python3.11 -m venv /tmp/official-venv
    /tmp/official-venv/bin/pip install "numpy<1.24" "pandas<2" "matplotlib<3.8" tqdm joblib
    python benchmarks/bench_evaluator.py --predictions 29700 --repeats 3 \\
        --official /tmp/case-official/eval/eval_detection.py --official-python /tmp/official-venv/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
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

#: A whole process of the official evaluator (--official), as the official CASE code calls it
#: (inference_case.py -> run_eval.evaluate): its per-class APs and mAP, and its interpreter's versions.
OFFICIAL_PROCESS = """
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("eval_detection", {official!r})
official = importlib.util.module_from_spec(spec)
spec.loader.exec_module(official)
evaluation = official.ANETEval({gt!r}, {pred!r}, None, tiou_thresholds=np.array({tiou!r}), max_avg_nr_proposals=100,
                               subset="test", verbose=False, check_status=False, mode=["prediction"])
average_map, m_ap = evaluation.evaluate_detection()
per_class = {{name: evaluation.ap[:, index].tolist() for name, index in evaluation.activity_index.items()}}
pandas = getattr(sys.modules.get("pandas"), "__version__", None)  # what the official file imported
print(json.dumps({{"mAP": m_ap.tolist(), "per_class_ap": per_class, "numpy": np.__version__,
                  "pandas": pandas, "python": sys.version.split()[0]}}))
"""
OFFICIAL_NAME = "whole process: official eval_detection.py (pandas)"


def _process(argv: list[str]) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    return run


def synthetic_predictions(
    gt: dict, n_predictions: int, seed: int = 0, subset: str = "test", distinct_scores: bool = False
) -> dict:
    """Detector-like predictions: per instance a few jittered proposals, plus false positives.

    Scores are clipped to [0, 1] and rounded to 3 decimals, so ties occur as in real outputs;
    ``distinct_scores`` keeps them as drawn (no ties), so that no sort order of equal scores can
    change an AP.
    """

    def scored(score: float) -> float:
        return score if distinct_scores else round(float(np.clip(score, 0, 1)), 3)

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
            score = scored(float(rng.normal(0.8 - 0.1 * k, 0.15)))
            results[v].append({"label": label, "score": score, "segment": [start, end]})
    names = list(videos)
    while sum(len(r) for r in results.values()) < n_predictions:
        v = names[rng.integers(len(names))]
        start = float(rng.uniform(0, 600))
        results[v].append(
            {
                "label": classes[rng.integers(len(classes))],
                "score": scored(float(rng.uniform(0, 0.6))),
                "segment": [start, start + float(rng.exponential(4.0))],
            }
        )
    # the top-level keys the official code writes; its reader refuses a file without "version"
    return {"version": "VERSION 1.3", "results": results, "external_data": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT)
    parser.add_argument("--predictions", type=int, default=24000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiou", type=float, nargs="+", default=list(DEFAULT_TIOU_THRESHOLDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--distinct-scores",
        action="store_true",
        help="unrounded scores (no ties): the official file's APs must then equal ours to rounding",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_evaluator.json")
    parser.add_argument(
        "--official",
        type=Path,
        metavar="PATH",
        help="the official CASE eval/eval_detection.py (outside the project) to time as a whole process too",
    )
    parser.add_argument(
        "--official-python",
        type=Path,
        metavar="PATH",
        help="the interpreter that runs --official (numpy<1.24, pandas<2, matplotlib, tqdm, joblib)",
    )
    args = parser.parse_args(argv)
    if (args.official is None) != (args.official_python is None):
        parser.error("--official and --official-python go together")
    for flag, path in (("--official", args.official), ("--official-python", args.official_python)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path} is not a file")
    if not args.gt.exists():
        print(f"ground truth not found: {args.gt}", file=sys.stderr)
        return 2

    gt = json.loads(args.gt.read_text())
    pred = synthetic_predictions(gt, args.predictions, args.seed, distinct_scores=args.distinct_scores)
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
    if args.official is not None:
        official_script = OFFICIAL_PROCESS.format(
            official=str(args.official.resolve()), gt=str(args.gt), pred=str(pred_file), tiou=list(thr)
        )
        peers[OFFICIAL_NAME] = _process([str(args.official_python), "-c", official_script])
    # Agreement first (it is also the warm-up).
    ours = evaluate_detection(gt, pred, tiou_thresholds=thr)
    ref_per_class, ref_map = reference_evaluate(gt_rows, pred_rows, thr)
    max_diff = max(float(np.max(np.abs(np.asarray(ours.per_class_ap[c]) - ap))) for c, ap in ref_per_class.items())
    processes = (json.loads(peers["whole process: evaluate.py --pred --json"]())["mAP"],
                 json.loads(peers["whole process: files + official loop re-statement"]()))  # fmt: skip
    max_diff = max(max_diff, float(np.max(np.abs(np.subtract(*processes)))))
    official: dict | None = None
    if args.official is not None:
        official = json.loads(peers[OFFICIAL_NAME]())
        if set(official["per_class_ap"]) != set(ours.per_class_ap):
            print(f"--official scored other classes: {sorted(official['per_class_ap'])}", file=sys.stderr)
            return 1
        official["max_abs_ap_difference"] = max(
            float(np.max(np.abs(np.asarray(ours.per_class_ap[c]) - ap))) for c, ap in official["per_class_ap"].items()
        )
        official["max_abs_map_difference"] = float(np.max(np.abs(np.subtract(ours.mAP, official["mAP"]))))
        # with ties, the official order of equal scores is NumPy's unstable sort's (docs/wtal_evaluation.md)
        if args.distinct_scores and official["max_abs_ap_difference"] > 1e-9:
            print(f"--official disagrees: max |AP difference| {official['max_abs_ap_difference']:.2e}", file=sys.stderr)
            return 1
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
        f"mAP average = {ours.average:.4f}"
    )
    if official is not None:
        print(
            f"official eval_detection.py (Python {official['python']}, NumPy {official['numpy']}, pandas "
            f"{official['pandas']}): max |AP difference| = {official['max_abs_ap_difference']:.2e}, "
            f"max |mAP difference| = {official['max_abs_map_difference']:.2e}"
        )
    print()
    print("| evaluator | median (s) | min (s) | speed-up vs reference |")
    print("|---|---:|---:|---:|")
    rows = []
    for name, ts in times.items():
        med = median(ts)
        # a whole process is compared with the reference's whole process, a call with its call
        base = whole_reference if name.startswith("whole process") else reference  # the official's too
        rows.append(
            {
                "evaluator": name,
                "median_s": med,
                "min_s": min(ts),
                "speedup_vs_reference": base / med,
                "times_s": ts,
            }
        )
        print(f"| {name} | {med:.4f} | {min(ts):.4f} | {base / med:.3g}x |")
    whole_ratio = median(times["whole process: evaluate.py --pred --json"]) / whole_reference
    print(f"\nwhole process, evaluate.py --pred / files + official loop: {whole_ratio:.3f}x the time")
    official_ratio = None
    if official is not None:
        official_ratio = median(times["whole process: evaluate.py --pred --json"]) / median(times[OFFICIAL_NAME])
        print(f"whole process, evaluate.py --pred / official eval_detection.py: {official_ratio:.3f}x the time")

    record = {
        "benchmark": "bench_evaluator",
        "ground_truth": str(args.gt),
        "num_ground_truth": len(parsed_gt),
        "num_predictions": n_pred,
        "tiou": thr,
        "repeats": args.repeats,
        "distinct_scores": args.distinct_scores,
        "max_abs_ap_difference": max_diff,
        "mAP": ours.mAP,
        "average": ours.average,
        "reference_mAP": list(map(float, ref_map)),
        "results": rows,
        "whole_process_time_ratio": whole_ratio,
        "official": None
        if official is None
        else {
            "file": str(args.official),
            "sha256": hashlib.sha256(args.official.read_bytes()).hexdigest(),
            "python": official["python"],
            "numpy": official["numpy"],
            "pandas": official["pandas"],
            "mAP": official["mAP"],
            "max_abs_ap_difference": official["max_abs_ap_difference"],
            "max_abs_map_difference": official["max_abs_map_difference"],
            "whole_process_time_ratio": official_ratio,
        },
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
