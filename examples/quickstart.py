"""Quick-start demo: label generated data with otlabel and with the plain SwAV loop.

Prints a Markdown table: for two score distributions (cosine-like scores, and wide-range
scores where the plain loop overflows), whether each method's labels are finite, how far
their column sums are from equipartition, and the time it took.

    python examples/quickstart.py [--n 20000] [--k 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch

from otlabel import sinkhorn


def swav_loop(scores: torch.Tensor, epsilon: float, n_iter: int = 3) -> torch.Tensor:
    """The fifteen-line SwAV/CASE labelling loop, as usually copied."""
    q = torch.exp(scores / epsilon).t()
    n_cols, n_rows = q.shape
    q /= q.sum()
    for _ in range(n_iter):
        q /= q.sum(dim=1, keepdim=True)
        q /= n_cols
        q /= q.sum(dim=0, keepdim=True)
        q /= n_rows
    return (q * n_rows).t()


def column_error(labels: torch.Tensor) -> float:
    n_rows, n_cols = labels.shape
    target = n_rows / n_cols
    return ((labels.sum(0) - target).abs() / target).max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="samples (rows)")
    parser.add_argument("--k", type=int, default=64, help="clusters (columns)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    embeddings = torch.nn.functional.normalize(torch.randn(args.n, 128, generator=generator), dim=1)
    prototypes = torch.nn.functional.normalize(torch.randn(args.k, 128, generator=generator), dim=1)
    problems = {
        "cosine scores, epsilon 0.05": embeddings @ prototypes.t(),
        "wide-range scores (N(0,1) x 3), epsilon 0.05": 3 * torch.randn(args.n, args.k, generator=generator),
    }
    methods = {
        "SwAV loop (3 iterations)": lambda s: swav_loop(s, 0.05),
        "otlabel, 3 iterations": lambda s: sinkhorn(s, 0.05),
        "otlabel, tol 1e-4": lambda s: sinkhorn(s, 0.05, tol=1e-4, max_iter=5000),
    }
    print(f"Labelling N = {args.n} samples into K = {args.k} clusters (float32, CPU)\n")
    print("| scores | method | finite | column error | time (ms) |")
    print("|---|---|---|---|---|")
    for problem_name, scores in problems.items():
        for method_name, method in methods.items():
            start = time.perf_counter()
            labels = method(scores)
            elapsed = 1000 * (time.perf_counter() - start)
            finite = bool(torch.isfinite(labels).all())
            error = f"{column_error(labels):.2e}" if finite else "n/a"
            print(f"| {problem_name} | {method_name} | {'yes' if finite else 'NO'} | {error} | {elapsed:.1f} |")


if __name__ == "__main__":
    main()
