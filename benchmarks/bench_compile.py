"""Benchmark: otlabel's fixed-iteration call, eager and under ``torch.compile``, against the SwAV loop.

At SwAV's and CASE's sizes a labelling call is a few dozen small operations, so what it costs
per call (validation, Python, kernel launches) decides. This times, per call, on the CPU
(float32, cosine-like scores, epsilon 0.05, 3 iterations):

* ``otlabel eager``: ``sinkhorn(scores, 0.05)`` as users call it (host checks);
* ``otlabel compiled``: the same call inside ``torch.compile(fullgraph=True)`` (device-side
  checks, chosen automatically while tracing);
* ``SwAV loop eager`` and ``SwAV loop compiled``: SwAV's ``distributed_sinkhorn``, single
  process, as published, eager and under ``torch.compile(fullgraph=True)``;
* ``checks and loop, no structure (eager)``: what an otlabel call computes for one plain float32
  problem, written out in one function — the same input checks, kernel, iterations, health
  check of every sum and clamped plan, with none of the options, problem, layout and path
  objects around them (not a solver: no batches, options, shifts or log-domain replay). Its
  labels must equal otlabel's exactly; its time is the floor under otlabel's eager call;
* ``... compiled, tensor guards only``: both compiled calls again with
  ``guard_filter_fn=torch.compiler.keep_tensor_guards_unsafe`` — not a setting to recommend (a
  changed Python argument, epsilon say, would no longer recompile), but it splits a compiled
  call's time into the guards Dynamo evaluates before every call and the rest: a library call
  that validates its options reads many more globals, and pays for a guard on each, than a
  fifteen-line loop does.

Medians of interleaved repetitions after a warm-up (which also compiles); a repetition times a
burst of calls lasting about 20 ms. Targets (issue "otlabel core"): compiled otlabel at most
1.1x the compiled loop, eager otlabel at most 1.2x the eager loop, at every size. Prints a
Markdown table and the ratios; JSON goes to ``--out``.

    python benchmarks/bench_compile.py [--sizes 256x16 800x64 ...] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, markdown_table, median, write_json  # noqa: E402
from bench_sinkhorn import EPSILON, cosine_scores, swav_loop  # noqa: E402

from otlabel import sinkhorn  # noqa: E402

DEFAULT_SIZES = ["256x16", "800x64", "12000x16", "4096x3000"]
TARGETS = {"compiled": 1.1, "eager": 1.2}
GUARD_FREE = ", tensor guards only"
UNSTRUCTURED = "checks and loop, no structure (eager)"


def otlabel_call(scores: torch.Tensor) -> torch.Tensor:
    return sinkhorn(scores, EPSILON)


def loop_call(scores: torch.Tensor) -> torch.Tensor:
    return swav_loop(scores, EPSILON)


_SAFE_LOW = torch.finfo(torch.float32).tiny / torch.finfo(torch.float32).eps  # as otlabel's health check
_SAFE_HIGH = 1.0 / _SAFE_LOW


@functools.cache
def _equipartition(n_rows: int, n_cols: int) -> torch.Tensor:
    return torch.full((n_cols,), n_rows / n_cols)


def unstructured_call(scores: torch.Tensor, epsilon: float = EPSILON, n_iter: int = 3) -> torch.Tensor:
    """otlabel's plain fixed-iteration call on float32 (N, K) scores, written out (see the module's
    docstring): the floor under its eager time."""
    if type(scores) is not torch.Tensor or scores.dtype != torch.float32 or scores.dim() != 2:
        raise TypeError("float32 (N, K) scores only")
    n_rows, n_cols = scores.shape
    low, high = torch.aminmax(scores)
    low, high = low.item(), high.item()
    if not (-math.inf < low and high < math.inf) or max(-low, high) / epsilon > torch.finfo(torch.float32).max / 8:
        raise ValueError("scores are not finite, or scores / epsilon overflows")
    if not (-30.0 <= low / epsilon and high / epsilon <= 30.0):
        raise NotImplementedError("scores that need shifting are not written out here")
    kernel = torch.div(scores, epsilon).exp_()
    kernel_t, col_mass = kernel.t(), _equipartition(n_rows, n_cols)
    a, sums = None, []
    for _ in range(n_iter):
        col_sums = kernel.sum(0) if a is None else torch.mv(kernel_t, a)
        b = torch.div(col_mass, col_sums)
        row_sums = torch.mv(kernel, b)
        a = torch.reciprocal(row_sums)
        sums += (col_sums, row_sums)
    low_sum, high_sum = torch.aminmax(torch.cat(sums))
    if not (_SAFE_LOW <= low_sum.item() and high_sum.item() <= _SAFE_HIGH):
        raise NotImplementedError("the log-domain replay is not written out here")
    kernel_t.mul_(a)
    return kernel.mul_(b).clamp_(max=1.0)


# The same calls as functions of their own: Dynamo keeps its compiled entries on the code object,
# so compiling one function twice would check the first entry's guards on every call of the second.
def otlabel_call_tensor_guards(scores: torch.Tensor) -> torch.Tensor:
    return sinkhorn(scores, EPSILON)


def loop_call_tensor_guards(scores: torch.Tensor) -> torch.Tensor:
    return swav_loop(scores, EPSILON)


def methods() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    table = {
        "otlabel eager": otlabel_call,
        "otlabel compiled": torch.compile(otlabel_call, fullgraph=True, dynamic=False),
        "SwAV loop eager": loop_call,
        "SwAV loop compiled": torch.compile(loop_call, fullgraph=True, dynamic=False),
        UNSTRUCTURED: unstructured_call,
    }
    tensor_guards = getattr(torch.compiler, "keep_tensor_guards_unsafe", None)  # (torch >= 2.8)
    if tensor_guards is not None:
        for name, fn in (("otlabel", otlabel_call_tensor_guards), ("SwAV loop", loop_call_tensor_guards)):
            table[f"{name} compiled{GUARD_FREE}"] = torch.compile(
                fn, fullgraph=True, dynamic=False, options={"guard_filter_fn": tensor_guards}
            )
    return table


def per_call(fn: Callable[[], Any], burst: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call over a burst."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(burst):
        fn()
    return (time.perf_counter() - wall) / burst, (time.process_time() - cpu) / burst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="NxK sizes")
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per method")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier)")
    parser.add_argument("--out", default="benchmarks/results/bench_compile.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # inductor's deprecation notices

    results: list[dict[str, Any]] = []
    for size in args.sizes:
        n_rows, n_cols = (int(v) for v in size.lower().split("x"))
        scores = cosine_scores(n_rows, n_cols, torch.Generator().manual_seed(0)).contiguous()
        table = methods()
        outputs, bursts = {}, {}
        for name, fn in table.items():  # warm-up: compiles, and the outputs compared below
            for _ in range(3):
                outputs[name] = fn(scores)
            first, _ = per_call(lambda: fn(scores), 1)
            bursts[name] = max(1, min(2000, int(0.02 / max(first, 1e-7))))
        wall: dict[str, list[float]] = {name: [] for name in table}
        cpu: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(args.repeats):
            for name, fn in table.items():  # interleaved: drifts hit every method alike
                w, c = per_call(lambda: fn(scores), bursts[name])
                wall[name].append(w)
                cpu[name].append(c)
        reference = outputs["otlabel eager"]
        for name in table:
            results.append(
                {
                    "size": size,
                    "method": name,
                    "median_wall_s": median(wall[name]),
                    "median_cpu_s": median(cpu[name]),
                    "wall_s": wall[name],
                    "cpu_s": cpu[name],
                    "max_abs_diff_to_otlabel_eager": float((outputs[name] - reference).abs().max()),
                    "finite": bool(torch.isfinite(outputs[name]).all()),
                }
            )
            print(
                f"{size:>10s} {name:20s} {1e6 * median(wall[name]):10.1f} us (cpu {1e6 * median(cpu[name]):.1f})",
                file=sys.stderr,
                flush=True,
            )

    def lookup(size: str, method: str) -> dict[str, Any]:
        return next(r for r in results if r["size"] == size and r["method"] == method)

    print(
        f"# otlabel vs the SwAV loop per call, eager and compiled "
        f"(float32, CPU, {torch.get_num_threads()} thread(s), epsilon {EPSILON}, 3 iterations)\n"
    )
    rows = [
        [
            r["size"],
            r["method"],
            f"{1e6 * r['median_wall_s']:.1f}",
            f"{1e6 * r['median_cpu_s']:.1f}",
            f"{r['max_abs_diff_to_otlabel_eager']:.1e}",
        ]
        for r in results
    ]
    print(markdown_table(["N x K", "method", "median µs", "median CPU µs", "max abs diff to otlabel eager"], rows))
    ratio_rows, ratios = [], []
    for size in args.sizes:
        for kind in ("compiled", "eager"):
            ours, loop = lookup(size, f"otlabel {kind}"), lookup(size, f"SwAV loop {kind}")
            ratio = ours["median_wall_s"] / loop["median_wall_s"]
            ratio_cpu = ours["median_cpu_s"] / loop["median_cpu_s"]
            met = ratio <= TARGETS[kind]
            ratios.append({"size": size, "kind": kind, "ratio": ratio, "ratio_cpu": ratio_cpu, "target": TARGETS[kind]})
            ratio_rows.append(
                [
                    size,
                    f"otlabel {kind} / SwAV loop {kind} (target <= {TARGETS[kind]})",
                    f"{ratio:.2f}",
                    f"{ratio_cpu:.2f}",
                    "met" if met else "**missed**",
                ]
            )
        floor, loop = lookup(size, UNSTRUCTURED), lookup(size, "SwAV loop eager")
        ratio_rows.append(
            [
                size,
                f"{UNSTRUCTURED} / SwAV loop eager (no target: otlabel's floor)",
                f"{floor['median_wall_s'] / loop['median_wall_s']:.2f}",
                f"{floor['median_cpu_s'] / loop['median_cpu_s']:.2f}",
                "-",
            ]
        )
        if any(r["size"] == size and r["method"] == f"otlabel compiled{GUARD_FREE}" for r in results):
            ours = lookup(size, f"otlabel compiled{GUARD_FREE}")
            loop = lookup(size, f"SwAV loop compiled{GUARD_FREE}")
            ratio_rows.append(
                [
                    size,
                    f"otlabel compiled / SwAV loop compiled, both{GUARD_FREE} (no target: the guards' share)",
                    f"{ours['median_wall_s'] / loop['median_wall_s']:.2f}",
                    f"{ours['median_cpu_s'] / loop['median_cpu_s']:.2f}",
                    "-",
                ]
            )
    print("\n## Ratios\n")
    print(markdown_table(["N x K", "ratio", "wall", "CPU time", "target"], ratio_rows))
    write_json(args.out, {"machine": machine_info(), "epsilon": EPSILON, "results": results, "ratios": ratios})


if __name__ == "__main__":
    main()
