"""CASE on CUDA against the CPU: the same train.py runs on both devices, losses compared step by step.

Usage (from the repository root; ``benchmarks/gpu_check.sh`` runs these steps)::

    python examples/wtal_case/tools/cuda_parity.py data --out DIR       # generate both data sets once
    python examples/wtal_case/tools/cuda_parity.py reference --out DIR  # the CPU runs (in the background)
    python examples/wtal_case/tools/cuda_parity.py device --out DIR     # the CUDA runs, then DDP on one GPU
    python examples/wtal_case/tools/cuda_parity.py compare --out DIR    # losses at matching steps
    python examples/wtal_case/tools/cuda_parity.py all --out DIR        # the four, in order

Runs (real ``train.py`` run folders under ``DIR/runs``):

* ``smoke-<device>``: ``configs/smoke.yaml`` for ``--smoke-steps`` steps (50), and its
  reference ``smoke-reference-<reference device>``;
* ``thumos-<device>``: ``configs/synthetic.yaml``, the THUMOS14-shaped synthetic set (200
  training videos, T = 256, batch 16, the paper's model), for ``--thumos-steps`` steps (300);
* ``ddp-<device>``: the smoke run as two processes on the one GPU (``torchrun``), with NCCL
  (``CASE_DIST_BACKEND=nccl``), or gloo on CUDA tensors if NCCL refuses two ranks on one GPU.

``compare`` (after waiting up to ``--wait`` seconds for ``reference`` and ``device``, which
may run in the background) reads every ``log.jsonl`` and checks the losses (``loss``, ``video``,
``attention``, ``scc``, ``ccc``) at every step both logs hold, to ``--rtol`` (1e-3) relative:
each device run against its CPU reference, and the DDP run against the single-process run on
its device. A reference run that was cut short (``reference`` runs in the background under a
deadline) is compared over the steps it logged, and says so. It writes ``DIR/parity.json`` and
a Markdown summary, and exits 1 if a comparison fails or a device run is missing.

On a machine without a GPU, ``--device cpu`` runs everything on the CPU (a dry run of this
script; the tests use it with a few steps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[1]
ROOT = EXAMPLE.parents[1]
sys.path.insert(0, str(EXAMPLE))  # the `case` package as a script

KEYS = ("loss", "video", "attention", "scc", "ccc")
CONFIGS = {"smoke": EXAMPLE / "configs" / "smoke.yaml", "thumos": EXAMPLE / "configs" / "synthetic.yaml"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def _data_root(out: Path, name: str) -> Path:
    return out / "data" / ("synthetic-smoke" if name == "smoke" else "synthetic-thumos14")


def _steps(args: argparse.Namespace, name: str) -> int:
    return args.smoke_steps if name == "smoke" else args.thumos_steps


def _train_args(args: argparse.Namespace, name: str, device: str, run: Path, threads: int) -> list[str]:
    overrides = {
        "data.root": _data_root(args.out, name),
        "train.steps": _steps(args, name),
        "train.device": device,
        "train.progress": "false",
        "train.checkpoint_every": 0,
        "train.keep_checkpoints": 0,
        "train.threads": threads,
    }
    sets = [item for key, value in overrides.items() for item in ("--set", f"{key}={value}")]
    return [str(EXAMPLE / "train.py"), "--config", str(CONFIGS[name]), *sets, "--out", str(run)]


def _run(command: list[str], log: Path, timeout: float, **env: str) -> dict[str, Any]:
    """Run ``command``, its output into ``log``; return its exit status and time (124: timed out,
    and then the command and every process it started are killed)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=_env(**env), start_new_session=True
        )
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too
            proc.wait()
            status = 124
    tail = log.read_text(errors="replace").splitlines()[-5:]
    return {"command": " ".join(command), "status": status, "seconds": time.perf_counter() - start, "tail": tail}


def _names(args: argparse.Namespace) -> list[str]:
    return [name for name in ("smoke", "thumos") if _steps(args, name) > 0]


def cmd_data(args: argparse.Namespace) -> int:
    """Generate the data sets of every run (once; later runs reuse them)."""
    from case.config import load_config
    from case.data.synthetic import ensure_synthetic

    for name in _names(args):
        cfg = load_config(CONFIGS[name], [f"data.root={_data_root(args.out, name)}"])
        start = time.perf_counter()
        ensure_synthetic(cfg.data.synthetic, cfg.data.root)
        print(f"data {name}: {cfg.data.root} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    """The runs on the reference device (the CPU), all at once; ``reference.done`` when finished."""
    runs = args.out / "runs"
    done = args.out / "reference.done"
    done.unlink(missing_ok=True)
    procs = []
    for name in _names(args):
        run = runs / f"{name}-reference-{args.reference_device}"
        log = args.out / "logs" / f"{run.name}.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, *_train_args(args, name, args.reference_device, run, args.threads)]
        procs.append((name, subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=_env())))
    statuses = {name: proc.wait() for name, proc in procs}
    done.write_text(json.dumps(statuses))
    print(f"reference runs finished: {statuses}", flush=True)
    return 0 if all(code == 0 for code in statuses.values()) else 1


def cmd_device(args: argparse.Namespace) -> int:
    """The runs on ``--device``, one after another, then the DDP run (NCCL, else gloo)."""
    runs, logs = args.out / "runs", args.out / "logs"
    (args.out / "device.done").unlink(missing_ok=True)
    results: dict[str, Any] = {}
    for name in _names(args):
        run = runs / f"{name}-{args.device}"
        command = [sys.executable, *_train_args(args, name, args.device, run, args.threads)]
        results[run.name] = _run(command, logs / f"{run.name}.txt", args.timeout)
        print(f"{run.name}: exit {results[run.name]['status']} ({results[run.name]['seconds']:.0f} s)", flush=True)
    if args.ddp and args.smoke_steps > 0:
        for backend in ("nccl", "gloo"):
            run = runs / f"ddp-{args.device}-{backend}"
            launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
            command = [*launch, *_train_args(args, "smoke", args.device, run, max(1, args.threads // 2))]
            # NCCL may refuse two ranks on one GPU, or hang at its first collective: a short limit
            limit = min(args.timeout, args.nccl_timeout) if backend == "nccl" else args.timeout
            result = _run(command, logs / f"{run.name}.txt", limit, CASE_DIST_BACKEND=backend)
            results[run.name] = result
            print(f"{run.name}: exit {result['status']} ({result['seconds']:.0f} s)", flush=True)
            if result["status"] == 0:
                break
    (args.out / "device.json").write_text(json.dumps(results, indent=2))
    (args.out / "device.done").write_text("")
    return 0 if all(r["status"] == 0 for k, r in results.items() if not k.endswith("-nccl")) else 1


def _log(run: Path) -> dict[int, dict[str, Any]]:
    path = run / "log.jsonl"
    if not path.exists():
        return {}
    records = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed run
            continue
        records[record["step"]] = record
    return records


def compare_logs(
    test: dict[int, dict[str, Any]], reference: dict[int, dict[str, Any]], rtol: float, atol: float = 1e-6
) -> dict[str, Any]:
    """The largest relative difference of the losses over the steps both logs hold."""
    steps = sorted(set(test) & set(reference))
    worst = {"rel": 0.0, "step": None, "key": None, "test": None, "reference": None}
    for step in steps:
        for key in KEYS:
            a, b = test[step].get(key), reference[step].get(key)
            if a is None or b is None:
                continue
            if not (math.isfinite(a) and math.isfinite(b)):
                rel = math.inf
            else:
                rel = abs(a - b) / max(abs(b), atol / rtol)
            if rel > worst["rel"] or worst["step"] is None:
                worst = {"rel": rel, "step": step, "key": key, "test": a, "reference": b}
    return {
        "steps": len(steps),
        "last_step": steps[-1] if steps else 0,
        "worst": worst,
        "ok": bool(steps) and worst["rel"] <= rtol,
    }


def cmd_compare(args: argparse.Namespace) -> int:
    """Wait up to ``--wait`` seconds for the device and reference runs (when they run in the
    background), then compare every pair."""
    deadline = time.monotonic() + args.wait
    markers = [args.out / "reference.done", args.out / "device.done"]
    while not all(marker.exists() for marker in markers) and time.monotonic() < deadline:
        time.sleep(2)
    finished = markers[0].exists()
    runs = args.out / "runs"
    pairs = [
        (f"{name}-{args.device}", f"{name}-reference-{args.reference_device}", _steps(args, name))
        for name in _names(args)
    ]
    ddp = sorted(runs.glob(f"ddp-{args.device}-*"))
    ddp_ok = [run for run in ddp if (run / "metrics.json").exists()]
    if ddp_ok:
        pairs.append((ddp_ok[0].name, f"smoke-{args.device}", args.smoke_steps))
    report: dict[str, Any] = {"rtol": args.rtol, "reference_finished": finished, "comparisons": {}}
    failed = False
    for test, reference, expected in pairs:
        found = compare_logs(_log(runs / test), _log(runs / reference), args.rtol)
        found["expected_steps"] = expected
        found["test_complete"] = len(_log(runs / test)) == expected
        failed |= not found["ok"] or not found["test_complete"]
        report["comparisons"][f"{test} vs {reference}"] = found
    if args.ddp and args.smoke_steps > 0 and not ddp_ok:
        failed = True
        report["comparisons"]["ddp"] = {"ok": False, "error": "no DDP run finished"}
    report["ddp_backend"] = ddp_ok[0].name.rsplit("-", 1)[-1] if ddp_ok else None
    (args.out / "parity.json").write_text(json.dumps(report, indent=2))
    lines = ["| runs | steps compared | worst relative difference | at | verdict |", "|---|---|---|---|---|"]
    for label, found in report["comparisons"].items():
        if "worst" not in found:
            lines.append(f"| {label} | 0 | n/a | n/a | FAILED: {found['error']} |")
            continue
        worst = found["worst"]
        where = f"step {worst['step']}, {worst['key']}" if worst["step"] is not None else "n/a"
        partial = "" if found["steps"] >= found["expected_steps"] else f" (of {found['expected_steps']})"
        verdict = "ok" if found["ok"] and found["test_complete"] else "FAILED"
        lines.append(f"| {label} | {found['steps']}{partial} | {worst['rel']:.2e} | {where} | {verdict} |")
    summary = "\n".join(lines)
    summary += f"\n\nrtol {args.rtol}; reference runs {'finished' if finished else 'cut short'}"
    summary += f"; DDP over {report['ddp_backend'] or 'no backend'}"
    (args.out / "parity.md").write_text(summary + "\n")
    print(summary)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["data", "reference", "device", "compare", "all"])
    parser.add_argument("--out", type=Path, required=True, help="folder of the data, runs and reports")
    parser.add_argument("--device", default="cuda", help="the device under test (default cuda)")
    parser.add_argument("--reference-device", default="cpu", help="the reference device (default cpu)")
    parser.add_argument("--smoke-steps", type=int, default=50, help="steps of the smoke run (0: skip it)")
    parser.add_argument("--thumos-steps", type=int, default=300, help="steps of the THUMOS-shaped run (0: skip it)")
    parser.add_argument("--no-ddp", dest="ddp", action="store_false", help="skip the two-process DDP run")
    parser.add_argument("--threads", type=int, default=4, help="CPU threads per run (train.threads)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance on the losses")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per device run")
    parser.add_argument("--nccl-timeout", type=float, default=90.0, help="seconds for the NCCL attempt of DDP")
    parser.add_argument("--wait", type=float, default=0.0, help="compare: seconds to wait for the reference runs")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {"data": [cmd_data], "reference": [cmd_reference], "device": [cmd_device], "compare": [cmd_compare]}
    steps["all"] = [cmd_data, cmd_reference, cmd_device, cmd_compare]
    return max(step(args) for step in steps[args.step])


if __name__ == "__main__":
    sys.exit(main())
