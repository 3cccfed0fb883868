"""GPU benchmark of the fused feature pass (:mod:`otlabel.backends._triton_features`) against dense matmuls.

One streamed Sinkhorn pass over features x prototypes (``feature_pass``) computes
``G = exp(coef * X C^T + offsets)`` tile by tile and never stores the scores; with the column
sums it runs the matmul twice (the row sums must be complete before a row's share of the column
sums is known), without them once. This script times the pass at the sizes it is for,

* (N, K, d) = (1,000,000, 65,536, 256) bfloat16 (DINO's prototype count),
* (1,281,167, 3,000, 128) bfloat16 and float32 (ImageNet, SwAV's prototype count),

as an iteration's pass (``col_sums=True``, two matmuls) and, at the ImageNet size in bfloat16,
as the labelling pass (``top_k=1`` without column sums, one matmul), and times, in the same run,
``torch.matmul`` of the same operands (``X C^T`` in the input dtype, over row chunks of at most
``CHUNK_ELEMENTS`` outputs written into one reused buffer, so that the product fits memory). The
**fraction of dense matmul throughput** is ``matmuls per pass x matmul time / pass time``: 1 would
mean that the exponentials, reductions and recomputation cost nothing beyond the matmuls that
cuBLAS does alone; it can exceed 1 only where the kernel's matmul beats cuBLAS's. float32 runs in
IEEE float32 on both sides (the pass's default; torch's unless TF32 is enabled).

Each timing is the median of ``--repeats`` calls after a first call (which compiles) and
``--warmup`` more, with CUDA events; a cell whose calls would take longer than ``--cell-seconds``
gets fewer repeats (at least 3). The pass is also checked: it is run on the first ``CHECK_ROWS``
rows and compared with a float64 torch reference (largest relative error over row sums, row
scalings, column partials and top-1 values; top-1 columns that differ).

Inputs: unit-norm random features and prototypes, ``coef = 20`` (epsilon 0.05), row offsets
``-coef`` (every exponent at most 0, as a stabilised Sinkhorn keeps them), column offsets 0,
column scaling 1, unit row masses.

``--dry-run`` runs tiny sizes on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``,
set here when there is no GPU): it checks the script end to end; its numbers mean nothing.

Usage::

    python benchmarks/gpu_features.py --out features.json [--repeats 10]
    python benchmarks/gpu_features.py --dry-run --out /tmp/features.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, markdown_table, median, time_call, write_json  # noqa: E402


class Cell(NamedTuple):
    n_rows: int
    n_cols: int
    dim: int
    dtype: str
    col_sums: bool
    top_k: int

    @property
    def kind(self) -> str:
        return "iteration" if self.col_sums else f"labels (top-{self.top_k})"

    @property
    def matmuls(self) -> int:
        """Matmuls of the scores' shape per pass: the column sums recompute the scores."""
        return 2 if self.col_sums else 1


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CELLS = [
    Cell(1_000_000, 65_536, 256, "bfloat16", True, 0),
    Cell(1_281_167, 3_000, 128, "bfloat16", True, 0),
    Cell(1_281_167, 3_000, 128, "float32", True, 0),
    Cell(1_281_167, 3_000, 128, "bfloat16", False, 1),
]
DRY_CELLS = [
    Cell(300, 70, 24, "bfloat16", True, 0),
    Cell(300, 70, 24, "float32", True, 0),
    Cell(300, 70, 24, "bfloat16", False, 1),
]
COEF = 20.0
CHECK_ROWS = 2048
#: Outputs per chunk of the torch matmul baseline (2**28: 512 MB in bfloat16, 1 GB in float32).
CHUNK_ELEMENTS = 1 << 28


class Timer:
    """Milliseconds of one call: CUDA events on a GPU, else wall clock."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if not self.cuda:
            seconds, out = time_call(fn)
            return seconds * 1e3, out
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        out = fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end), out


def repeated(timer: Timer, fn: Callable[[], Any], repeats: int, warmup: int, cell_seconds: float) -> dict[str, Any]:
    """Median (and range) of ``fn``'s time after a first call and ``warmup`` more; fewer repeats
    (at least 3) when they would take longer than ``cell_seconds``."""
    first, _ = timer(fn)
    last = first
    for _ in range(warmup):
        last, _ = timer(fn)
    count = max(min(3, repeats), min(repeats, int(cell_seconds * 1e3 / max(last, 1e-3))))
    times = sorted(timer(fn)[0] for _ in range(count))
    return {"first_ms": first, "median_ms": median(times), "min_ms": times[0], "max_ms": times[-1], "repeats": count}


def make_inputs(cell: Cell, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """The pass's arguments (see the module's docstring), generated on ``device``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    dtype = DTYPES[cell.dtype]

    def unit_rows(rows: int) -> torch.Tensor:
        out = torch.randn(rows, cell.dim, generator=generator, device=device)
        return torch.nn.functional.normalize(out, dim=1).to(dtype)

    features, prototypes = unit_rows(cell.n_rows), unit_rows(cell.n_cols)
    return {
        "features": features,
        "prototypes": prototypes,
        "coef": COEF,
        "row_offset": torch.full((cell.n_rows,), -COEF, device=device),
        "col_offset": torch.zeros(cell.n_cols, device=device),
        "col_scaling": torch.ones(cell.n_cols, device=device),
    }


def chunked_matmul(features: torch.Tensor, prototypes: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``features @ prototypes.T`` over row chunks of at most CHUNK_ELEMENTS outputs, each written
    into one reused buffer (the whole product may not fit memory)."""
    n_rows, n_cols = features.shape[0], prototypes.shape[0]
    rows = max(1, min(n_rows, CHUNK_ELEMENTS // n_cols))
    buffer = torch.empty((rows, n_cols), dtype=features.dtype, device=features.device)
    weights = prototypes.T

    def run() -> torch.Tensor:
        for start in range(0, n_rows, rows):
            chunk = features[start : start + rows]
            torch.matmul(chunk, weights, out=buffer[: chunk.shape[0]])
        return buffer

    return run


def check(feature_pass: Callable[..., Any], inputs: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """The cell's pass on the first CHECK_ROWS rows against a float64 reference of the same
    formulas: the largest relative error of its float outputs, and the top-1 columns that differ."""
    rows = min(CHECK_ROWS, cell.n_rows)
    part = {**inputs, "features": inputs["features"][:rows], "row_offset": inputs["row_offset"][:rows]}
    out = feature_pass(**part, col_sums=cell.col_sums, top_k=cell.top_k)
    x, c = part["features"].double(), part["prototypes"].double()
    kernel = torch.exp(part["coef"] * (x @ c.T) + part["row_offset"].double()[:, None] + part["col_offset"].double())
    b = part["col_scaling"].double()
    scaling = 1.0 / (kernel @ b)
    pairs = [(out.row_sums, 1.0 / scaling), (out.row_scaling, scaling)]
    if cell.col_sums:
        pairs.append((out.col_partial, (scaling[:, None] * kernel).sum(0)))
    mismatches = 0
    if cell.top_k:
        top = (scaling[:, None] * kernel * b).max(1)
        pairs.append((out.top_values[:, 0], top.values))
        mismatches = int((out.top_indices[:, 0] != top.indices).sum())
    error = max(float(((actual.double() - expected) / expected).abs().max()) for actual, expected in pairs)
    return {"rows": rows, "max_rel_error": error, "top1_mismatches": mismatches if cell.top_k else None}


def run_cell(feature_pass: Callable[..., Any], timer: Timer, cell: Cell, device: torch.device, args) -> dict[str, Any]:
    """Time the pass and the chunked matmul of one cell; the fraction of dense matmul throughput."""
    inputs = make_inputs(cell, device)
    result: dict[str, Any] = {**cell._asdict(), "kind": cell.kind, "matmuls_per_pass": cell.matmuls}
    result["check"] = check(feature_pass, inputs, cell)

    def one_pass() -> Any:
        return feature_pass(**inputs, col_sums=cell.col_sums, top_k=cell.top_k)

    result["pass"] = repeated(timer, one_pass, args.repeats, args.warmup, args.cell_seconds)
    matmul = chunked_matmul(inputs["features"], inputs["prototypes"])
    result["matmul"] = repeated(timer, matmul, args.repeats, args.warmup, args.cell_seconds)
    pass_ms, matmul_ms = result["pass"]["median_ms"], result["matmul"]["median_ms"]
    result["fraction_of_matmul"] = cell.matmuls * matmul_ms / pass_ms
    flops = 2.0 * cell.n_rows * cell.n_cols * cell.dim
    result["pass_tflops"] = cell.matmuls * flops / (pass_ms * 1e-3) / 1e12
    result["matmul_tflops"] = flops / (matmul_ms * 1e-3) / 1e12
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    head = [
        "N x K x d",
        "dtype",
        "pass",
        "matmuls",
        "pass ms",
        "matmul ms",
        "fraction of matmul",
        "pass TFLOP/s",
        "matmul TFLOP/s",
        "check: max rel error",
        "top-1 mismatches",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                f"{r['n_rows']} x {r['n_cols']} x {r['dim']}",
                r["dtype"],
                r["kind"],
                str(r["matmuls_per_pass"]),
                f"{r['pass']['median_ms']:.3f}",
                f"{r['matmul']['median_ms']:.3f}",
                f"{r['fraction_of_matmul']:.2f}",
                f"{r['pass_tflops']:.1f}",
                f"{r['matmul_tflops']:.1f}",
                f"{r['check']['max_rel_error']:.1e}",
                "n/a"
                if r["check"]["top1_mismatches"] is None
                else f"{r['check']['top1_mismatches']} / {r['check']['rows']}",
            ]
        )
    return markdown_table(head, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (atomically, after every cell)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first (default 2)")
    parser.add_argument(
        "--cell-seconds", type=float, default=5.0, help="fewer repeats (>= 3) when they would take longer than this"
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU in Triton's interpreter")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    if not cuda:
        if not args.dry_run:
            parser.error("no CUDA device: this benchmark needs a GPU (use --dry-run to check it on the CPU)")
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel is first imported
    if args.dry_run:
        args.repeats, args.warmup = 2, 1
    import triton

    from otlabel.backends._triton_features import feature_pass

    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    payload: dict[str, Any] = {
        "device": name,
        "dry_run": args.dry_run,
        "machine": machine_info(),
        "versions": {"triton": triton.__version__, "cuda": torch.version.cuda},
        "coef": COEF,
        "results": [],
    }
    clock = "CUDA events" if cuda else "wall clock, Triton interpreter: meaningless numbers"
    print(f"\n{name}: fused feature pass against chunked torch.matmul, medians ({clock})\n", flush=True)
    timer = Timer(cuda)
    failed = 0
    for cell in DRY_CELLS if args.dry_run else CELLS:
        print(f"{cell.n_rows} x {cell.n_cols} x {cell.dim} {cell.dtype} {cell.kind} ...", file=sys.stderr, flush=True)
        try:
            payload["results"].append(run_cell(feature_pass, timer, cell, device, args))
        except Exception as exc:  # noqa: BLE001 - reported, and the later cells still run
            failed += 1
            payload.setdefault("errors", []).append({**cell._asdict(), "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(f"  failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        write_json(args.out, payload)  # a run cut short keeps what it measured
        if cuda:
            torch.cuda.empty_cache()
    print(markdown(payload["results"]))
    print(f"\nwrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
