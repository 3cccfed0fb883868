"""Benchmark: labelling a whole data set from its embeddings (``sinkhorn_features``, issue 19).

Synthetic clustered embeddings (unit vectors scattered around K unit centres, the prototypes a
jittered copy of the centres: what a trained SwAV/SeLa head sees), float32, cosine scores at
epsilon 0.05 (SwAV's setting), the machine's threads (both, by default). Three parts, each
measured side by side in this run:

1. **N x K x d = 200,000 x 3,000 x 128, fixed 3 iterations, hard labels**: the streamed path
   against its floor, ``passes x`` one full-size ``X @ C.T`` (the matrix products it cannot
   avoid: ``n_iter + 1`` passes), and against the dense path (form the scores, ``sinkhorn``,
   argmax). Peak memory above the inputs: resident memory sampled every millisecond during the
   call, less the resident memory just before it. Medians of interleaved repeats after a warm-up.
2. **The SeLa size, 1,281,167 x 3,000 x 128** (656 MB of features), fixed 3 iterations, hard
   labels, streamed only (the dense scores alone would take 15.4 GB): time and peak memory.
3. **Tolerance mode at 200,000 x 3,000**: iterations and time to tol 1e-3 and 1e-6, with and
   without ``acceleration="anderson"`` (one run each; ``--max-iter`` caps a run).

Usage::

    python benchmarks/bench_features.py [--rows 200000] [--repeats 3] [--no-sela] [--no-tolerance]
        [--out benchmarks/results/features.json]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, markdown_table, median, write_json  # noqa: E402

from otlabel import ConvergenceWarning, sinkhorn, sinkhorn_features  # noqa: E402

EPSILON = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakMemory:
    """Resident memory sampled every millisecond in a thread while the block runs: its peak above
    the resident memory at the start (``extra``, bytes)."""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.start = self.peak = resident_bytes()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: Any) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def extra(self) -> int:
        return self.peak - self.start


def clustered_embeddings(n_rows: int, n_cols: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings around ``n_cols`` unit centres, made block by block (no full-size
    temporaries), and prototypes: the centres jittered and renormalised."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_cols, dim, generator=gen), dim=1)
    features = torch.empty(n_rows, dim)
    for start in range(0, n_rows, 65536):
        stop = min(start + 65536, n_rows)
        members = torch.randint(0, n_cols, (stop - start,), generator=gen)
        block = centres[members] + 0.7 * torch.randn(stop - start, dim, generator=gen) / dim**0.5
        features[start:stop] = torch.nn.functional.normalize(block, dim=1)
    jitter = 0.3 * torch.randn(n_cols, dim, generator=gen) / dim**0.5
    return features, torch.nn.functional.normalize(centres + jitter, dim=1)


def measured(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """(seconds, peak bytes above the start, result) of one call."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return seconds, memory.extra, result


def fixed_part(features: torch.Tensor, prototypes: torch.Tensor, repeats: int, n_iter: int = 3) -> dict[str, Any]:
    """Part 1: streamed hard labels against the matmul floor and the dense path, interleaved."""

    def matmul() -> torch.Tensor:
        return torch.matmul(features, prototypes.t())

    def streamed() -> Any:
        return sinkhorn_features(features, prototypes, EPSILON, n_iter=n_iter, output="hard")

    def dense() -> Any:
        plan = sinkhorn(torch.matmul(features, prototypes.t()), EPSILON, n_iter=n_iter)
        return plan.argmax(1)

    runs: dict[str, list[tuple[float, int]]] = {"matmul": [], "streamed": [], "dense": []}
    calls = {"matmul": matmul, "streamed": streamed, "dense": dense}
    results: dict[str, Any] = {}
    for fn in calls.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in calls.items():
            seconds, extra, result = measured(fn)
            runs[name].append((seconds, extra))
            results[name] = result
            del result
            gc.collect()
    agree = float((results["streamed"].labels == results["dense"]).double().mean())
    summary = {
        name: {"seconds": median([r[0] for r in rs]), "peak_bytes": max(r[1] for r in rs)} for name, rs in runs.items()
    }
    summary["passes"] = n_iter + 1
    summary["labels_agree"] = agree
    return summary


def sela_part(n_iter: int = 3) -> dict[str, Any]:
    features, prototypes = clustered_embeddings(1_281_167, 3000, 128, seed=1)
    gc.collect()
    before = resident_bytes()
    seconds, extra, result = measured(
        lambda: sinkhorn_features(features, prototypes, EPSILON, n_iter=n_iter, output="hard")
    )
    sizes = torch.bincount(result.labels, minlength=3000)
    return {
        "seconds": seconds,
        "peak_bytes_above_inputs": extra,
        "peak_resident_bytes": before + extra,
        "input_bytes": features.numel() * 4 + prototypes.numel() * 4,
        "cluster_sizes": [int(sizes.min()), int(sizes.median()), int(sizes.max())],
    }


def tolerance_part(features: torch.Tensor, prototypes: torch.Tensor, max_iter: int) -> list[dict[str, Any]]:
    rows = []
    for tol in (1e-3, 1e-6):
        for acceleration in (None, "anderson"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                seconds, extra, result = measured(
                    lambda: sinkhorn_features(
                        features,
                        prototypes,
                        EPSILON,
                        tol=tol,
                        max_iter=max_iter,
                        acceleration=acceleration,
                        output="hard",
                        return_info=True,
                    )
                )
            rows.append(
                {
                    "tol": tol,
                    "acceleration": acceleration,
                    "n_iter": result.n_iter,
                    "converged": result.converged,
                    "col_error": result.col_error,
                    "seconds": seconds,
                    "peak_bytes": extra,
                }
            )
            print(rows[-1], flush=True)
    return rows


def megabytes(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def print_fixed(payload: dict[str, Any], fixed: dict[str, Any], dense_bytes: int) -> None:
    payload["fixed"] = fixed
    floor = fixed["passes"] * fixed["matmul"]["seconds"]
    print("## Fixed 3 iterations, hard labels\n")
    print(
        markdown_table(
            ["path", "seconds (median)", "ratio to floor", "peak MB above inputs", "ratio to the scores' size"],
            [
                [
                    "streamed (sinkhorn_features)",
                    f"{fixed['streamed']['seconds']:.2f}",
                    f"{fixed['streamed']['seconds'] / floor:.2f}",
                    megabytes(fixed["streamed"]["peak_bytes"]),
                    f"{fixed['streamed']['peak_bytes'] / dense_bytes:.3f}",
                ],
                [
                    "dense (X @ C.T, sinkhorn, argmax)",
                    f"{fixed['dense']['seconds']:.2f}",
                    f"{fixed['dense']['seconds'] / floor:.2f}",
                    megabytes(fixed["dense"]["peak_bytes"]),
                    f"{fixed['dense']['peak_bytes'] / dense_bytes:.3f}",
                ],
                [
                    f"floor: {fixed['passes']} x one X @ C.T",
                    f"{floor:.2f}",
                    "1.00",
                    megabytes(fixed["matmul"]["peak_bytes"]) + " (one)",
                    f"{fixed['matmul']['peak_bytes'] / dense_bytes:.3f}",
                ],
            ],
        )
    )
    print(
        f"\nhard labels equal to the dense path's argmax on {100 * fixed['labels_agree']:.3f} % of rows\n", flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--cols", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument("--no-sela", action="store_true")
    parser.add_argument("--no-tolerance", action="store_true")
    parser.add_argument("--no-fixed", action="store_true", help="skip part 1")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the machine's)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    payload: dict[str, Any] = {"machine": machine_info(), "epsilon": EPSILON}
    features, prototypes = clustered_embeddings(args.rows, args.cols, args.dim, seed=0)
    dense_bytes = args.rows * args.cols * 4
    print(f"# {args.rows:,} x {args.cols:,} x {args.dim}, float32, {torch.get_num_threads()} threads\n", flush=True)

    if not args.no_fixed:
        print_fixed(payload, fixed_part(features, prototypes, args.repeats), dense_bytes)
    if not args.no_tolerance:
        rows = tolerance_part(features, prototypes, args.max_iter)
        payload["tolerance"] = rows
        print("\n## Tolerance mode, hard labels\n")
        print(
            markdown_table(
                ["tol", "acceleration", "iterations", "converged", "column error", "seconds", "s / iteration"],
                [
                    [
                        f"{row['tol']:g}",
                        str(row["acceleration"]),
                        str(row["n_iter"]),
                        str(row["converged"]),
                        f"{row['col_error']:.2e}",
                        f"{row['seconds']:.1f}",
                        f"{row['seconds'] / max(row['n_iter'], 1):.2f}",
                    ]
                    for row in rows
                ],
            )
        )
    del features, prototypes
    gc.collect()
    if not args.no_sela:
        sela = sela_part()
        payload["sela"] = sela
        print("\n## SeLa size: 1,281,167 x 3,000 x 128, fixed 3 iterations, hard labels\n")
        print(
            markdown_table(
                [
                    "seconds",
                    "peak MB above inputs",
                    "peak resident MB (process)",
                    "inputs MB",
                    "cluster sizes min/median/max",
                ],
                [
                    [
                        f"{sela['seconds']:.1f}",
                        megabytes(sela["peak_bytes_above_inputs"]),
                        megabytes(sela["peak_resident_bytes"]),
                        megabytes(sela["input_bytes"]),
                        "/".join(str(v) for v in sela["cluster_sizes"]),
                    ]
                ],
            )
        )
    if args.out:
        write_json(args.out, payload)


if __name__ == "__main__":
    main()
