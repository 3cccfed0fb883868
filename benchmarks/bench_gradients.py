"""Benchmark: gradients through the labels (``differentiable=True``) against autograd through the
unrolled loop.

Two cases, float32, one thread:

* **fixed**: 100 iterations at B=8 x 512 x 512 (a matching layer's shape, SuperGlue's 100
  iterations): ``sinkhorn(..., n_iter=100, differentiable=True)`` against autograd through the
  plain log-domain loop of the same 100 iterations. Targets: peak memory of forward + backward
  at most 0.2x the unrolled loop's; forward + backward time at most 1.0x.
* **tolerance**: 4096 x 256 to ``tol=1e-6`` (implicit differentiation). Targets: backward time
  at most the forward's; peak memory of forward + backward at most 3x the forward's. The
  unrolled loop runs the iterations otlabel needed, for comparison.

Every measurement runs in a fresh process (peak memory is the process's peak resident size
above what it held before the measured call, ``ru_maxrss``, with glibc's mmap threshold fixed
so that freed tensors leave the resident size); methods alternate, each process
warms up once, and the table reports medians over ``--repeats`` processes.

    python benchmarks/bench_gradients.py [--repeats 3] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, markdown_table, median, write_json  # noqa: E402

#: name -> (batch, N, K, epsilon, settings)
CASES = {
    "fixed": (8, 512, 512, 0.05, {"n_iter": 100}),
    "tolerance": (1, 4096, 256, 0.05, {"tol": 1e-6, "max_iter": 10_000}),
}
QUICK = {
    "fixed": (2, 256, 256, 0.05, {"n_iter": 100}),
    "tolerance": (1, 1024, 128, 0.05, {"tol": 1e-6, "max_iter": 10_000}),
}


def unrolled(scores: Any, epsilon: float, n_iter: int) -> Any:
    """The plain log-domain loop (equipartition), differentiated by autograd through every iteration."""
    import torch

    n_rows, n_cols = scores.shape[-2:]
    kernel = scores / epsilon
    log_col = math.log(n_rows / n_cols)
    f = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    for _ in range(n_iter):
        g = log_col - torch.logsumexp(kernel + f.unsqueeze(-1), -2)
        f = -torch.logsumexp(kernel + g.unsqueeze(-2), -1)
    return torch.exp(kernel + f.unsqueeze(-1) + g.unsqueeze(-2))


def _resident_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def worker(case: str, method: str, quick: bool, n_iter: int | None) -> dict[str, Any]:
    """One measurement in this (fresh) process: peak memory of the first call, then times."""
    import torch
    from bench_sinkhorn import cosine_scores

    from otlabel import sinkhorn

    torch.set_num_threads(1)
    batch, n_rows, n_cols, epsilon, settings = (QUICK if quick else CASES)[case]
    gen = torch.Generator().manual_seed(0)
    scores = torch.stack([cosine_scores(n_rows, n_cols, gen) for _ in range(batch)])
    weights = torch.randn(scores.shape, generator=gen)
    iterations = settings.get("n_iter", n_iter)

    def forward(leaf: torch.Tensor) -> torch.Tensor:
        if method == "otlabel":
            return sinkhorn(leaf, epsilon, differentiable=True, **settings)
        return unrolled(leaf, epsilon, iterations)

    def run() -> tuple[float, float]:
        leaf = scores.clone().requires_grad_(True)
        started = time.perf_counter()
        loss = (forward(leaf) * weights).sum()
        middle = time.perf_counter()
        loss.backward()
        return middle - started, time.perf_counter() - middle

    before = _resident_kib()
    leaf = scores.clone().requires_grad_(True)
    loss = (forward(leaf) * weights).sum()
    forward_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    loss.backward()
    total_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    del loss, leaf
    forward_s, backward_s = run()
    result = {"forward_s": forward_s, "backward_s": backward_s}
    result.update(forward_peak_mib=forward_peak / 1024, total_peak_mib=total_peak / 1024)
    if method == "otlabel" and "tol" in settings:
        info = sinkhorn(scores, epsilon, return_info=True, **settings)
        result["n_iter"] = info.n_iter
    return result


def _measure(case: str, method: str, quick: bool, n_iter: int | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", case, method] + (["--quick"] if quick else [])
    command += ["--n-iter", str(n_iter)] if n_iter else []
    # glibc raises its mmap threshold after a large free and then keeps freed tensors in the heap,
    # which the resident size counts as used: fix the threshold so that freed memory goes back
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller shapes (a smoke run)")
    parser.add_argument("--out", help="also write the results as JSON")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--n-iter", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.quick, args.n_iter)))
        return
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    rows, results = [], {}
    for case in CASES:
        n_iter = None
        if case == "tolerance":  # the unrolled loop runs the iterations otlabel needed
            n_iter = _measure(case, "otlabel", args.quick, None)["n_iter"]
        runs: dict[str, list[dict[str, Any]]] = {"otlabel": [], "unrolled": []}
        for _ in range(args.repeats):  # interleaved
            for method in runs:
                runs[method].append(_measure(case, method, args.quick, n_iter))
        summary = {
            method: {key: median([run[key] for run in measured]) for key in measured[0]}
            for method, measured in runs.items()
        }
        results[case] = {"shape": (QUICK if args.quick else CASES)[case][:3], "n_iter": n_iter, **summary}
        ours, theirs = summary["otlabel"], summary["unrolled"]
        for method, values in summary.items():
            rows.append(
                [
                    case,
                    method,
                    f"{values['forward_s'] * 1e3:.1f}",
                    f"{values['backward_s'] * 1e3:.1f}",
                    f"{values['forward_peak_mib']:.0f}",
                    f"{values['total_peak_mib']:.0f}",
                ]
            )
        ours_total = ours["forward_s"] + ours["backward_s"]
        theirs_total = theirs["forward_s"] + theirs["backward_s"]
        results[case]["ratios"] = {
            "time_fwd_bwd_vs_unrolled": ours_total / theirs_total,
            "peak_vs_unrolled": ours["total_peak_mib"] / max(theirs["total_peak_mib"], 1e-9),
            "backward_vs_forward_time": ours["backward_s"] / ours["forward_s"],
            "peak_vs_forward_peak": ours["total_peak_mib"] / max(ours["forward_peak_mib"], 1e-9),
        }
    headers = ["case", "method", "forward ms", "backward ms", "forward peak MiB", "fwd+bwd peak MiB"]
    print(markdown_table(headers, rows))
    print()
    for case, values in results.items():
        ratios = ", ".join(f"{name} {value:.2f}" for name, value in values["ratios"].items())
        print(f"{case} {values['shape']} (n_iter {values['n_iter'] or CASES[case][4].get('n_iter')}): {ratios}")
    if args.out:
        write_json(args.out, {"machine": machine_info(), "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
