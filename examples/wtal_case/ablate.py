#!/usr/bin/env python
"""Reproduce CASE's ablations (paper Tables 4-7, Fig. 3) and a sigma sweep on the synthetic set, over seeds.

    python examples/wtal_case/ablate.py                      # the whole grid, 3 seeds (about an hour, 2 cores)
    python examples/wtal_case/ablate.py --report-dir docs/_static/ablation   # the committed report
    python examples/wtal_case/ablate.py --tables table4 table7 --seeds 0 1 2
    python examples/wtal_case/ablate.py --list               # the plan: runs, done or not
    python examples/wtal_case/ablate.py --report-only        # report from the finished runs

Every run is a train.py run folder under ``--out`` (default ``runs/ablation``): finished runs
are reused, interrupted ones resumed, so a killed ablation continues when started again with
the same arguments. The report (``report.md``, ``results.json``, PNG figures) goes to
``--report-dir`` (default ``<out>/report``). The grid, the protocol and the caching are
documented in ``case.ablation`` and docs/wtal_ablation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from case.ablation import (  # noqa: E402
    TABLES,
    VARIANTS,
    AblationError,
    RunRecord,
    plan,
    run_ablation,
    run_finished,
    run_path,
    write_report,
)
from case.atomic import atomic_write_json  # noqa: E402
from case.config import CONFIG_DIR, load_config  # noqa: E402
from case.errors import SETUP_ERRORS, ConfigError, one_line_warnings  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default=str(CONFIG_DIR / "ablation.yaml"), help="base configuration (default: ablation.yaml)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--out", default="runs/ablation", help="folder of the run folders (default: runs/ablation)")
    parser.add_argument("--report-dir", default=None, help="where the report goes (default: <out>/report)")
    parser.add_argument(
        "--tables", nargs="+", default=None, metavar="TABLE", help=f"only these ({', '.join(t.key for t in TABLES)})"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help=f"train only these configurations ({', '.join(VARIANTS)}); rows needing others are left out",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a value of every run (repeatable)"
    )
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the finished runs")
    parser.add_argument("--list", action="store_true", help="print the runs of the grid and whether each is done")
    return parser.parse_args(argv)


def check_seeds(config: str, seeds: list[int], overrides: list[str]) -> None:
    """Every seed is one ``train.seed`` can take, and none is listed twice (it would count twice)."""
    for position, seed in enumerate(seeds):
        if seed in seeds[:position]:
            raise ConfigError(f"--seeds lists {seed} twice")
        load_config(config, [*overrides, f"train.seed={seed}"])


def check_folder(path: Path, flag: str) -> None:
    """``path`` is a folder this process can create or write in: checked before an hour of training,
    not when the report (or the first run's error file) is written."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot write in {existing}")


def _command(argv: list[str]) -> str:
    return "python examples/wtal_case/ablate.py" + "".join(f" {shlex.quote(a)}" for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    report_dir = Path(args.report_dir) if args.report_dir else out / "report"
    try:
        tables, variants, modes = plan(args.tables, args.variants)
        check_seeds(args.config, args.seeds, args.set)
        if not args.list:
            check_folder(out, "--out")
            check_folder(report_dir, "--report-dir")
    except (AblationError, ConfigError) as err:
        print(f"ablate.py: error: {err}", file=sys.stderr)
        return 2
    if args.list:
        for seed in args.seeds:
            for v in variants:
                run = run_path(out, v, seed)
                state = "done" if run_finished(run) else ("partial" if run.is_dir() else "to do")
                print(f"{v:10s} seed {seed}  {state:7s}  modes {','.join(modes[v])}  {run}")
        return 0

    started = time.time()
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"invocations": []}
    # an invocation is recorded when it starts and after every run it trains, so that one
    # killed part-way still counts toward the grid's wall time when a later one finishes it
    invocation = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": 0.0,
        "trained": 0,
        "command": _command(argv),
    }

    def record_training(record: RunRecord) -> None:
        if record.status != "trained":
            return
        if invocation["trained"] == 0:
            timing["invocations"].append(invocation)
        invocation["trained"] += 1
        invocation["seconds"] = round(time.time() - started, 1)
        atomic_write_json(timing_path, timing)

    print(
        f"ablation: {len(variants)} configurations x {len(args.seeds)} seeds = {len(variants) * len(args.seeds)} runs "
        f"into {out}; tables {', '.join(t.key for t in tables)}",
        flush=True,
    )
    try:
        with one_line_warnings("ablate.py"):
            tables, records = run_ablation(
                args.config,
                out,
                args.seeds,
                tables=args.tables,
                variants=args.variants,
                overrides=args.set,
                train_missing=not args.report_only,
                log=lambda line: print(line, flush=True),
                on_run=record_training,
            )
    except (AblationError, *SETUP_ERRORS) as err:
        print(f"ablate.py: error: {err}", file=sys.stderr)
        return 2
    seconds = time.time() - started
    if invocation["trained"]:
        invocation["seconds"] = round(seconds, 1)
        atomic_write_json(timing_path, timing)
    wall = sum(i["seconds"] for i in timing["invocations"]) or None
    commands = [i["command"] for i in timing["invocations"]]
    report = write_report(
        report_dir,
        tables,
        records,
        base_config=args.config,
        seeds=args.seeds,
        command=commands[0] if commands else _command(argv),  # the command that trained the runs
        overrides=args.set,
        wall_seconds=wall,
        invocations=len(commands),
    )
    failed = [r for r in records if r.status == "failed"]
    print(f"report: {report} ({seconds:.0f} s this invocation; {len(failed)} failed runs)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
