"""Measure whole CASE training runs at THUMOS14 shapes with each speed setting (issue 21).

:mod:`bench_case_speed` times single steps and *extrapolates* a run; this runs it. Each variant
is one ``examples/wtal_case/train.py`` process: ``configs/thumos14.yaml`` (T = 750 snippets of
2,048 features, batch 16, K = 16, 20 classes, hidden 512) on the example's synthetic
THUMOS14-sized set (200 training and 210 test videos, at most ``--max-snippets`` snippets each),
``--steps`` steps (default 600), then the run's own evaluation of every test video (P^A, P^T
and P^M from one forward pass). The data set is generated once before the first run and not
timed. Variants:

* ``float32`` — the default settings;
* ``bfloat16 + fused`` — ``train.precision=bfloat16 optim.fused=true``.

With ``--baseline DIR`` (a checkout of another revision, e.g. ``git worktree add DIR REV``) the
``float32`` run of that checkout's ``train.py`` comes first and the speed-ups are relative to it:
"faster than main was" measured in the same session.

The runs go one after another (whole runs cannot be interleaved); with ``--repeats 2`` or more
the order alternates (A B, B A, ...) so that a drift in the machine's load falls on both, and
the figures are medians. Reported per variant: the whole process's wall time, the training
part (the log's last ``seconds``: steps, data loading, checkpoints), the rest (start-up and
evaluation), and the test mAP averaged over tIoU 0.1:0.7 with the configured P^M.

    python benchmarks/bench_case_run.py [--steps 600] [--repeats 1] [--threads 0] [--data DIR]
                                        [--baseline DIR] [--set KEY=VALUE] [--json out.json]

Prints a Markdown table with the ratios to ``float32`` and writes JSON (default
``benchmarks/results/bench_case_run.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "wtal_case"
sys.path.insert(0, str(EXAMPLE))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine_info, markdown_table, median, write_json  # noqa: E402

VARIANTS = {
    "float32": [],
    "bfloat16 + fused": ["train.precision=bfloat16", "optim.fused=true"],
}


def _overrides(args: argparse.Namespace) -> list[str]:
    """The thumos14.yaml run on the synthetic set: only the data source and the run's length change."""
    return [
        "data.source=synthetic",
        f"data.root={args.data}",
        f"data.synthetic.max_snippets={args.max_snippets}",
        f"train.steps={args.steps}",
        "train.checkpoint_every=0",
        "train.keep_checkpoints=0",
        "train.progress=false",
        f"train.threads={args.threads}",
        f"train.seed={args.seed}",
        *args.set,
    ]


def _generate(args: argparse.Namespace) -> float:
    from case.config import load_config
    from case.data.synthetic import ensure_synthetic

    cfg = load_config(EXAMPLE / "configs" / "thumos14.yaml", _overrides(args))
    start = time.perf_counter()
    ensure_synthetic(cfg.data.synthetic, cfg.data.root)
    return time.perf_counter() - start


BASELINE = "float32 (baseline)"


def _run(args: argparse.Namespace, name: str, out: Path) -> dict:
    root = ROOT if name != BASELINE else args.baseline
    example = root / "examples" / "wtal_case"
    command = [sys.executable, str(example / "train.py"), "--config", str(example / "configs" / "thumos14.yaml")]
    for item in _overrides(args) + VARIANTS.get(name, []):
        command += ["--set", item]
    command += ["--out", str(out)]
    paths = [str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # (no empty entry: it would mean the cwd)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: train.py exited {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    training = float(log[-1]["seconds"])
    return {
        "wall_s": wall,
        "training_s": training,
        "rest_s": wall - training,
        "avg_map": float(metrics["average"]),
        "final_loss": float(log[-1]["loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=0, help="train.threads (0: PyTorch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides, every variant")
    parser.add_argument("--max-snippets", type=int, default=1000, help="cap on a synthetic video's snippets")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic-thumos14-full")
    parser.add_argument("--baseline", type=Path, help="a checkout of the revision to compare with (its float32 run)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_case_run.json")
    args = parser.parse_args()
    args.data = args.data.resolve()
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "examples" / "wtal_case" / "train.py").is_file():
            parser.error(f"--baseline {args.baseline}: no examples/wtal_case/train.py there")
        args.variants = [BASELINE, *args.variants]
    load_before = os.getloadavg()
    generation = _generate(args)
    print(f"data set ready in {generation:.0f} s: {args.data}", flush=True)

    results: dict[str, list[dict]] = {name: [] for name in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = args.variants if repeat % 2 == 0 else args.variants[::-1]
            for name in order:
                found = _run(args, name, Path(tmp) / f"{repeat}-{name.replace(' ', '')}")
                results[name].append(found)
                print(
                    f"{name}: {found['wall_s']:.0f} s (training {found['training_s']:.0f} s), "
                    f"mAP {100 * found['avg_map']:.2f}%",
                    flush=True,
                )

    base = median([r["wall_s"] for r in results[args.variants[0]]])
    base_training = median([r["training_s"] for r in results[args.variants[0]]])
    rows = []
    for name, runs in results.items():
        wall, training = median([r["wall_s"] for r in runs]), median([r["training_s"] for r in runs])
        rows.append(
            [
                name,
                f"{wall / 60:.1f}",
                f"{base / wall:.2f}x",
                f"{training / 60:.1f}",
                f"{base_training / training:.2f}x",
                f"{median([r['rest_s'] for r in runs]):.0f}",
                ", ".join(f"{100 * r['avg_map']:.2f}" for r in runs),
            ]
        )
    header = ["variant", "whole run (min)", "speed-up", "training (min)", "speed-up", "rest (s)", "test avg mAP (%)"]
    print(markdown_table(header, rows))
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}; data generation {generation:.0f} s")
    write_json(
        args.json,
        {
            "machine": machine_info(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "results": results,
            "load_average": [load_before, load_after],
        },
    )


if __name__ == "__main__":
    main()
