"""Benchmark: sinkhorn_ragged against a Python loop of sinkhorn over the groups (CPU, float32).

Workloads (K = 16, cosine-like scores — unit embeddings against unit prototypes — epsilon
0.05, as in SwAV):

* 1000 groups of 50 rows, and 100 groups of 750 rows (the brief's two sizes);
* 1000 groups of 10 to 90 rows (truly ragged; same total as the first).

Methods, in both modes (fixed-iteration: 3 iterations; tolerance: tol 1e-4):

* ``loop``: ``[sinkhorn(scores[ptr[g]:ptr[g+1]]) for g in range(G)]``, the reference;
* ``ragged (auto)``: ``sinkhorn_ragged(...)`` as users call it (``segments="auto"``: the
  segment path below, or, for equal-size groups in fixed-iteration mode, one batched dense
  problem);
* ``ragged (torch)``: ``sinkhorn_ragged(..., segments="torch")`` (the segment path: a sparse
  CSR product for the per-group sums);
* ``ragged (torch_scatter)``: ``segments="torch_scatter"`` (``segment_csr``), if installed;
* ``batched sinkhorn``: ``sinkhorn(scores.view(G, n, K))`` where all groups have one size,
  as the dense peer (tolerance mode there runs until *every* problem meets tol).

Times are medians of repetitions after a warm-up, methods interleaved within each repetition
so that drifts hit every method alike: wall-clock time, and this process's CPU time, which
other jobs on a shared machine disturb much less (with ``--threads 1`` the two agree on an
idle machine). Each output's largest deviation from the loop is checked. Prints a Markdown
table and the ratios (of CPU times with ``--cpu-time``, the default, else of wall times);
JSON goes to ``--out``.

    python benchmarks/bench_ragged.py [--repeats 7] [--threads 1] [--wall-time] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, markdown_table, median, time_call, write_json  # noqa: E402

from otlabel import sinkhorn, sinkhorn_ragged  # noqa: E402

EPSILON = 0.05
TOL = 1e-4
N_COLS = 16


def cosine_scores(n_rows: int, gen: torch.Generator, dim: int = 32) -> torch.Tensor:
    x = torch.nn.functional.normalize(torch.randn(n_rows, dim, generator=gen), dim=1)
    y = torch.nn.functional.normalize(torch.randn(N_COLS, dim, generator=gen), dim=1)
    return (x @ y.T).contiguous()


def workloads(gen: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    """(name, group sizes)."""
    return [
        ("1000 x 50", torch.full((1000,), 50)),
        ("100 x 750", torch.full((100,), 750)),
        ("1000 x 10..90", torch.randint(10, 91, (1000,), generator=gen)),
    ]


def has_torch_scatter() -> bool:
    try:
        import torch_scatter  # noqa: F401
    except ImportError:
        return False
    return True


def methods(
    sizes: torch.Tensor, mode: dict[str, Any]
) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    bounds = [0, *torch.cumsum(sizes, 0).tolist()]
    table: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "loop": lambda s, p: torch.cat(
            [sinkhorn(s[lo:hi], EPSILON, **mode) for lo, hi in zip(bounds[:-1], bounds[1:])]
        ),
        "ragged (auto)": lambda s, p: sinkhorn_ragged(s, p, EPSILON, **mode),
        "ragged (torch)": lambda s, p: sinkhorn_ragged(s, p, EPSILON, segments="torch", **mode),
    }
    if has_torch_scatter():
        table["ragged (torch_scatter)"] = lambda s, p: sinkhorn_ragged(s, p, EPSILON, segments="torch_scatter", **mode)
    if bool((sizes == sizes[0]).all()):
        n = int(sizes[0])
        table["batched sinkhorn"] = lambda s, p: sinkhorn(s.view(-1, n, N_COLS), EPSILON, **mode).reshape(-1, N_COLS)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per method")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--wall-time", action="store_true", help="rank by wall-clock instead of CPU time")
    parser.add_argument("--out", default="benchmarks/results/bench_ragged.json")
    args = parser.parse_args()
    key = "median_wall_s" if args.wall_time else "median_cpu_s"
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # no ConvergenceWarning expected; deviations are reported instead

    gen = torch.Generator().manual_seed(0)
    results: list[dict[str, Any]] = []
    for workload, sizes in workloads(gen):
        scores = cosine_scores(int(sizes.sum()), gen)
        ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(sizes, 0)])
        for mode_name, mode in (("fixed (3 it)", {}), (f"tol {TOL:g}", {"tol": TOL})):
            table = methods(sizes, mode)
            wall: dict[str, list[float]] = {name: [] for name in table}
            cpu: dict[str, list[float]] = {name: [] for name in table}
            outputs = {name: fn(scores, ptr) for name, fn in table.items()}  # warm-up
            for _ in range(args.repeats):
                for name, fn in table.items():  # interleaved
                    start_cpu = time.process_time()
                    elapsed, _ = time_call(lambda: fn(scores, ptr))
                    cpu[name].append(time.process_time() - start_cpu)
                    wall[name].append(elapsed)
            for name in table:
                deviation = (outputs[name] - outputs["loop"]).abs().max().item()
                results.append(
                    {
                        "workload": workload,
                        "mode": mode_name,
                        "method": name,
                        "median_wall_s": median(wall[name]),
                        "median_cpu_s": median(cpu[name]),
                        "wall_s": wall[name],
                        "cpu_s": cpu[name],
                        "max_abs_diff_vs_loop": deviation,
                    }
                )
                print(
                    f"{workload:14s} {mode_name:13s} {name:24s} wall {1000 * median(wall[name]):9.2f} ms  "
                    f"cpu {1000 * median(cpu[name]):9.2f} ms  |diff| {deviation:.1e}",
                    file=sys.stderr,
                    flush=True,
                )

    def time_of(workload: str, mode: str, method: str) -> float | None:
        found = (r[key] for r in results if (r["workload"], r["mode"], r["method"]) == (workload, mode, method))
        return next(found, None)

    print(
        f"# sinkhorn_ragged vs a loop of sinkhorn (float32, CPU, {torch.get_num_threads()} threads, "
        f"K = {N_COLS}, epsilon {EPSILON}; ratios of {'wall' if args.wall_time else 'CPU'} times)\n"
    )
    rows = []
    for r in results:
        loop = time_of(r["workload"], r["mode"], "loop")
        rows.append(
            [
                r["workload"],
                r["mode"],
                r["method"],
                f"{1000 * r['median_cpu_s']:.2f}",
                f"{1000 * r['median_wall_s']:.2f}",
                f"{loop / r[key]:.1f}x" if loop else "",
                f"{r['max_abs_diff_vs_loop']:.1e}",
            ]
        )
    headers = [
        "groups x rows",
        "mode",
        "method",
        "CPU (ms)",
        "wall (ms)",
        "speed-up vs loop",
        "max |diff| vs loop",
    ]
    print(markdown_table(headers, rows))
    print()
    ratios = []
    ratio_rows = []
    for workload in dict.fromkeys(r["workload"] for r in results):
        for mode in dict.fromkeys(r["mode"] for r in results):
            loop, ours = time_of(workload, mode, "loop"), time_of(workload, mode, "ragged (auto)")
            segment = time_of(workload, mode, "ragged (torch)")
            scatter = time_of(workload, mode, "ragged (torch_scatter)")
            entry = {"workload": workload, "mode": mode, "loop_over_ragged": loop / ours}
            row = [workload, mode, f"{loop / ours:.1f}x", ""]
            if scatter:
                entry["torch_scatter_over_torch"] = scatter / segment
                row[3] = f"{scatter / segment:.2f}"
            ratios.append(entry)
            ratio_rows.append(row)
    print("## Ratios\n")
    print(
        markdown_table(
            ["groups x rows", "mode", "loop / ragged default (target >= 10x)", "torch_scatter / torch time"], ratio_rows
        )
    )
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "epsilon": EPSILON,
            "tol": TOL,
            "k": N_COLS,
            "results": results,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    main()
