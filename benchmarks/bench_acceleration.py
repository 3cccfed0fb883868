"""Benchmark: tolerance mode with and without Anderson acceleration (``acceleration="anderson"``).

Time and iterations to ``tol`` (default 1e-6) of ``sinkhorn(scores, 0.05, tol=...)`` in float32,
one thread, against the same call with ``acceleration="anderson"``:

* the cases the acceleration is for: ``bench_sinkhorn.py``'s cosine-like scores (clustered unit
  embeddings against unit prototypes) at 12000x16 and 100000x64, where plain iterations need
  thousands of steps, and a KL-relaxed column marginal (``col_penalty``) on them;
* cases where plain iterations are already fast or the problem is harsh (wide-range scores
  ``3 * randn``, 800x64, a small epsilon), where it must not cost more than about 10%.

Each row runs plain and accelerated calls interleaved, after one warm-up of each, and reports
medians of CPU time (``time.process_time``: the machine may be shared), the iterations, the
ratios, and the largest difference between the two answers. Targets (issue "marginals"): at
12000x16 and 100000x64, at most 1/5 of the plain time and iterations; nowhere more than 1.1x the
plain time.

    python benchmarks/bench_acceleration.py [--repeats 3] [--threads 1] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, markdown_table, median, write_json  # noqa: E402
from bench_sinkhorn import EPSILON, cosine_scores, wide_scores  # noqa: E402

from otlabel import ConvergenceWarning, sinkhorn  # noqa: E402

#: (name, scores maker, N, K, epsilon, extra options)
CASES = [
    ("cosine-like", cosine_scores, 12000, 16, EPSILON, {}),
    ("cosine-like", cosine_scores, 100000, 64, EPSILON, {}),
    ("cosine-like, col_penalty=5", cosine_scores, 12000, 16, EPSILON, {"col_penalty": 5.0}),
    ("cosine-like", cosine_scores, 800, 64, EPSILON, {}),
    ("wide N(0,1)x3", wide_scores, 12000, 16, EPSILON, {}),
    ("cosine-like, epsilon 0.01", cosine_scores, 4096, 32, 0.01, {}),
]
QUICK = {(12000, 16), (800, 64)}


def run(scores: torch.Tensor, epsilon: float, tol: float, options: dict[str, Any]) -> tuple[float, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.process_time()
        result = sinkhorn(scores, epsilon, tol=tol, max_iter=100_000, return_info=True, **options)
        return time.process_time() - start, result


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--quick", action="store_true", help="only the 12000x16 and 800x64 rows")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    rows, results = [], []
    for name, make, n_rows, n_cols, epsilon, extra in CASES:
        if args.quick and (n_rows, n_cols) not in QUICK:
            continue
        scores = make(n_rows, n_cols, torch.Generator().manual_seed(0)).float().contiguous()
        accelerated = {**extra, "acceleration": "anderson"}
        run(scores, epsilon, args.tol, extra)  # warm-ups
        run(scores, epsilon, args.tol, accelerated)
        plain_times, fast_times = [], []
        for _ in range(args.repeats):  # interleaved
            seconds, plain = run(scores, epsilon, args.tol, extra)
            plain_times.append(seconds)
            seconds, fast = run(scores, epsilon, args.tol, accelerated)
            fast_times.append(seconds)
        plain_s, fast_s = median(plain_times), median(fast_times)
        difference = (plain.labels - fast.labels).abs().max().item()
        result = {
            "case": name,
            "size": f"{n_rows}x{n_cols}",
            "epsilon": epsilon,
            "plain_s": plain_s,
            "anderson_s": fast_s,
            "plain_iterations": plain.n_iter,
            "anderson_iterations": fast.n_iter,
            "plain_converged": plain.converged,
            "anderson_converged": fast.converged,
            "max_label_difference": difference,
        }
        results.append(result)
        rows.append(
            [
                name,
                result["size"],
                f"{epsilon:g}",
                f"{plain.n_iter}{'' if plain.converged else ' (unconverged)'}",
                f"{fast.n_iter}{'' if fast.converged else ' (unconverged)'}",
                f"{fast.n_iter / plain.n_iter:.2f}",
                f"{plain_s:.3f}",
                f"{fast_s:.3f}",
                f"{fast_s / plain_s:.2f}",
                f"{difference:.1e}",
            ]
        )
        print(f"{name} {result['size']}: {plain_s:.3f} s -> {fast_s:.3f} s", file=sys.stderr, flush=True)
    headers = [
        "scores",
        "N x K",
        "epsilon",
        "plain iterations",
        "Anderson iterations",
        "iterations ratio",
        "plain s",
        "Anderson s",
        "time ratio",
        "max label difference",
    ]
    print(
        f"# Tolerance mode to tol={args.tol:g}, float32, {args.threads} thread(s): plain against "
        f'acceleration="anderson" (CPU-time medians of {args.repeats} interleaved runs)\n'
    )
    print(markdown_table(headers, rows))
    if args.out is not None:
        write_json(args.out, {"machine": machine_info(), "tol": args.tol, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
