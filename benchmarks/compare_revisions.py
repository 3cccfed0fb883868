"""Time one benchmark script on two revisions of otlabel, interleaved, and compare them.

"Before and after measured in one run": the benchmark script of the working tree (so both sides
run the same measurement code) is run alternately against the library of a base revision
(exported with ``git archive`` into a temporary folder) and against the working tree's, ``--runs``
times each. Per measured case (every string field of a result record identifies it), the
median over the runs of each run's median time is compared: the table gives base, head and
head / base. CPU time is compared where the script records it (``median_cpu_s``), which a busy
machine disturbs less than wall time.

    python benchmarks/compare_revisions.py --base c95ef4e --runs 3 bench_sinkhorn.py -- --threads 1 --sizes 12000x16
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, median, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def export(revision: str, target: Path) -> None:
    """The tree of ``revision``, with the working tree's benchmarks/ folder over its own."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    shutil.rmtree(target / "benchmarks", ignore_errors=True)
    shutil.copytree(ROOT / "benchmarks", target / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))


def run(root: Path, script: str, arguments: list[str], out: Path) -> list[dict[str, Any]]:
    command = [sys.executable, str(root / "benchmarks" / script), *arguments, "--out", str(out)]
    subprocess.run(command, check=True, cwd=root, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["results"]


def identity(record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in record.items() if isinstance(v, str))


def seconds(record: dict[str, Any]) -> float:
    for key in ("median_cpu_s", "median_s", "median_wall_s"):
        if key in record:
            return float(record[key])
    raise KeyError("no median time in a result record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision of the 'before' library (e.g. a commit)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("script", help="benchmark script in benchmarks/, e.g. bench_sinkhorn.py")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="arguments of the script (after --)")
    parser.add_argument("--out", default="benchmarks/results/compare_revisions.json")
    args = parser.parse_args()
    script_arguments = [a for a in args.arguments if a != "--"]
    per_side: dict[str, dict[tuple, list[float]]] = {"base": {}, "head": {}}
    with tempfile.TemporaryDirectory() as folder:
        base_root = Path(folder) / "base"
        base_root.mkdir()
        export(args.base, base_root)
        for index in range(args.runs):
            for side, root in (("base", base_root), ("head", ROOT)):
                records = run(root, args.script, script_arguments, Path(folder) / f"{side}-{index}.json")
                for record in records:
                    per_side[side].setdefault(identity(record), []).append(seconds(record))
                print(f"run {index + 1}/{args.runs} {side} done", file=sys.stderr, flush=True)
    rows, summary = [], []
    for key, base_times in per_side["base"].items():
        head_times = per_side["head"].get(key)
        if not head_times:
            continue
        base, head = median(base_times), median(head_times)
        summary.append({"case": dict(key), "base_s": base, "head_s": head, "ratio": head / base})
        rows.append([" / ".join(v for _, v in key), f"{1000 * base:.3f}", f"{1000 * head:.3f}", f"{head / base:.3f}"])
    print(f"# {args.script}: base {args.base} against the working tree ({args.runs} interleaved runs each)\n")
    print(markdown_table(["case", "base ms", "head ms", "head / base"], rows))
    write_json(args.out, {"base": args.base, "script": args.script, "arguments": script_arguments, "cases": summary})


if __name__ == "__main__":
    main()
