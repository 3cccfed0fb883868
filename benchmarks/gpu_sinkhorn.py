"""GPU benchmark: otlabel's fused Triton backend against its torch backend, POT and the SwAV loop.

Peers, on the SwAV-like scores of ``bench_sinkhorn.py`` (clustered unit embeddings against
unit prototypes, ``epsilon = 0.05``), float32 on one CUDA device:

* ``sinkhorn(..., backend="triton")`` and ``sinkhorn(..., backend="torch")`` (end to end:
  validation, solve, status read-back);
* POT's solver on torch tensors: ``ot.sinkhorn(a, b, M, reg=1)`` with ``M = -scores/epsilon``
  (the same column-then-row schedule; ``numItermax=3`` in fixed-iteration mode) and, in
  tolerance mode, ``method="sinkhorn_log"`` with ``stopThr = tol / K`` (POT stops on the
  norm of the column-sum error of a plan whose columns sum to 1/K, so this bounds the relative
  column error by ``tol``, as in ``bench_sinkhorn.py``); the labels are POT's plan times N;
* the plain SwAV loop (``distributed_sinkhorn`` on one process; fixed-iteration mode only).

Fixed-iteration mode (3 iterations) at 12000x16, 800x64, 100000x64, 1000000x128 and
4096x3000; tolerance mode (``tol=1e-6``) at the same sizes. Every call is timed with CUDA
events after warm-up (a first call, which compiles, then up to ``--warmup`` calls within
~2 s); runs are interleaved (one call of each peer per round), and the table reports medians
over ``--repeats`` rounds (default 50), the ratio of each peer's median to Triton's, and the
largest label difference to the torch backend. A peer whose calls would take longer than
``--cell-seconds`` in a cell gets fewer rounds (at least 10; the count is in the JSON).

**Memory traffic model** (bytes per call of the Triton backend, fixed-iteration mode, n
iterations, float32 scores): the scores are read n + 1 times (one pass for the first column
step, then one fused pass per iteration, the last one also writing the labels) and the labels
are written once: ``(n + 2) * N * K * 4`` bytes; vectors of length N or K are ignored. The
achieved rate at the largest size is compared with the device's peak memory bandwidth, looked
up by device name (``--peak-gbps`` overrides it).

Targets: Triton >= 5x faster than the torch backend at 12000x16 (3 iterations), and >= 60% of
peak bandwidth at 1000000x128.

``--dry-run`` runs tiny sizes with a few rounds (on the CPU through Triton's interpreter when
there is no GPU): it checks the script end to end, its numbers mean nothing.
``--tune`` times the Triton backend alone over a small grid of its launch constants instead
(to choose the defaults in ``otlabel/backends/triton_backend.py`` on a new GPU).

Usage::

    python benchmarks/gpu_sinkhorn.py --out results.json [--repeats 50] [--peak-gbps 3350]
    python benchmarks/gpu_sinkhorn.py --dry-run --out /tmp/dry.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, markdown_table, median, time_call, write_json  # noqa: E402
from bench_sinkhorn import cosine_scores as cpu_cosine_scores  # noqa: E402
from bench_sinkhorn import swav_loop  # noqa: E402

import otlabel  # noqa: E402
from otlabel import ConvergenceWarning, sinkhorn  # noqa: E402

EPSILON = 0.05
N_ITER = 3
TOL = 1e-6
SIZES = [(12000, 16), (800, 64), (100000, 64), (1000000, 128), (4096, 3000)]
DRY_SIZES = [(300, 4), (12, 300)]
TUNE_SIZES = [(12000, 16), (1000000, 128), (4096, 3000)]
SPEED_TARGET = (12000, 16, 5.0)  # N, K, minimum torch/triton ratio (fixed-iteration mode)
BANDWIDTH_TARGET = (1000000, 128, 0.60)  # N, K, minimum fraction of peak (fixed-iteration mode)
PEERS = ["triton", "torch", "POT", "SwAV loop"]

#: Peak memory bandwidth in GB/s by device name (first match wins; vendor data sheets).
PEAK_GBPS = [
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # H100 SXM5 80GB HBM3
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40GB
]


def peak_gbps(device_name: str) -> float | None:
    for key, value in PEAK_GBPS:
        if key in device_name:
            return value
    return None


def traffic_bytes(n_rows: int, n_cols: int, n_iter: int = N_ITER, itemsize: int = 4) -> int:
    """Bytes one fixed-iteration Triton call moves: n + 1 reads of the scores, one write of the labels."""
    return (n_iter + 1) * n_rows * n_cols * itemsize + n_rows * n_cols * 4


class Timer:
    """Milliseconds of one call ``fn(*args, **kwargs)``: CUDA events on a GPU (idle before), else wall clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
        if not self.cuda:
            seconds, out = time_call(lambda: fn(*args, **kwargs))
            return seconds * 1e3, out
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        out = fn(*args, **kwargs)
        end.record()
        end.synchronize()
        return begin.elapsed_time(end), out


def cosine_scores(n_rows: int, n_cols: int, device: torch.device) -> torch.Tensor:
    """bench_sinkhorn's SwAV-like scores, generated on the CPU (same numbers everywhere), on ``device``."""
    return cpu_cosine_scores(n_rows, n_cols, torch.Generator().manual_seed(0)).to(device).contiguous()


def peers(ot: Any, mode: str, epsilon: float, tol: float) -> dict[str, Callable[[torch.Tensor], Any]]:
    """name -> function(scores) returning (labels, iterations)."""
    options: dict[str, Any] = {"n_iter": N_ITER} if mode == "fixed" else {"tol": tol}

    def otlabel_peer(backend: str) -> Callable[[torch.Tensor], Any]:
        iterations: dict[tuple[int, ...], int] = {}

        def run(scores: torch.Tensor) -> Any:
            # the iteration count comes from one return_info call per shape; timed calls ask for
            # the labels only, as training code does (return_info adds float64 error reductions)
            key = tuple(scores.shape)
            if key not in iterations:
                iterations[key] = sinkhorn(scores, epsilon, backend=backend, return_info=True, **options).n_iter
            return sinkhorn(scores, epsilon, backend=backend, **options), iterations[key]

        return run

    found = {"triton": otlabel_peer("triton"), "torch": otlabel_peer("torch")}
    if ot is not None:

        def pot(scores: torch.Tensor) -> Any:
            n_rows, n_cols = scores.shape
            a = torch.full((n_rows,), 1.0 / n_rows, device=scores.device)
            b = torch.full((n_cols,), 1.0 / n_cols, device=scores.device)
            cost = scores / -epsilon
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "did not converge" after the fixed 3 iterations
                if mode == "fixed":
                    plan, log = ot.sinkhorn(a, b, cost, 1.0, numItermax=N_ITER, stopThr=0.0, log=True)
                else:
                    plan, log = ot.sinkhorn(
                        a, b, cost, 1.0, method="sinkhorn_log", numItermax=1000, stopThr=tol / n_cols, log=True
                    )
            return plan * n_rows, int(log["niter"]) + 1

        found["POT"] = pot
    if mode == "fixed":
        found["SwAV loop"] = lambda scores: (swav_loop(scores, epsilon, N_ITER), N_ITER)
    return found


def run_cell(
    timer: Timer,
    functions: dict[str, Callable[[torch.Tensor], Any]],
    scores: torch.Tensor,
    repeats: int,
    warmup: int,
    cell_seconds: float,
) -> dict[str, dict[str, Any]]:
    """Warm up, then interleave ``repeats`` rounds of one call per peer; medians and agreement."""
    results: dict[str, dict[str, Any]] = {}
    last: dict[str, float] = {}
    labels: dict[str, torch.Tensor] = {}
    for name, fn in functions.items():
        # the first call compiles; then up to ``warmup`` more, but no more than ~2 s of them
        spent, calls = 0.0, 0
        while calls <= warmup and (calls < 2 or spent < 2e3):
            last[name], (labels[name], iterations) = timer(fn, scores)
            spent, calls = spent + (last[name] if calls else 0.0), calls + 1
        results[name] = {"iterations": iterations, "times_ms": []}
    rounds = {
        name: max(min(10, repeats), min(repeats, int(cell_seconds * 1e3 / max(ms, 1e-3)))) for name, ms in last.items()
    }
    for index in range(max(rounds.values())):
        for name, fn in functions.items():  # interleaved: drifts hit every peer alike
            if index < rounds[name]:
                results[name]["times_ms"].append(timer(fn, scores)[0])
    reference = labels["torch"].double()
    for name, result in results.items():
        times = sorted(result.pop("times_ms"))
        result.update(
            repeats=len(times),
            median_ms=median(times),
            p10_ms=times[len(times) // 10],
            p90_ms=times[(9 * len(times)) // 10],
            max_abs_diff_vs_torch=float((labels[name].double() - reference).abs().max()),
            finite=bool(torch.isfinite(labels[name]).all()),
        )
    for result in results.values():
        result["ratio_to_triton"] = result["median_ms"] / results["triton"]["median_ms"]
    return results


def markdown(rows: list[dict[str, Any]], repeats: int) -> str:
    """The peers' table; a median over fewer than ``repeats`` rounds shows its count."""
    others = PEERS[1:]
    head = [
        "mode",
        "N x K",
        *(f"{n} ms" for n in PEERS),
        *(f"{n} / triton" for n in others),
        "iterations",
        "max abs diff to torch: triton",
        "POT",
    ]
    body = []
    for row in rows:
        found = row["peers"]
        cells = [row["mode"], f"{row['n_rows']} x {row['n_cols']}"]
        cells += [
            f"{found[n]['median_ms']:.3f}"
            + (f" ({found[n]['repeats']} rounds)" if found[n]["repeats"] < repeats else "")
            if n in found
            else "n/a"
            for n in PEERS
        ]
        cells += [f"{found[n]['ratio_to_triton']:.2f}x" if n in found else "n/a" for n in others]
        cells.append(", ".join(f"{n} {p['iterations']}" for n, p in found.items()))
        cells += [f"{found[n]['max_abs_diff_vs_torch']:.1e}" if n in found else "n/a" for n in ("triton", "POT")]
        body.append(cells)
    return markdown_table(head, body)


def tune_grid(n_rows: int, n_cols: int, small_problem: int) -> list[dict[str, int]]:
    """Launch constants to try: tile sizes of the single-program path (and the many-programs path
    instead) for a small problem; tile sizes x programs per SM for a large one."""
    if n_rows * n_cols <= small_problem:
        return [{"TILE_SINGLE": t} for t in (2048, 4096, 8192, 16384)] + [{"SMALL_PROBLEM": 0}]
    return [{"TILE_MULTI": t, "PROGRAMS_PER_SM": p} for t in (2048, 4096, 8192) for p in (4, 8, 16)]


def tune(
    timer: Timer, device: torch.device, sizes: Sequence[tuple[int, int]], repeats: int, warmup: int
) -> list[dict[str, Any]]:
    """Median ms of the Triton backend (fixed-iteration mode) per launch configuration."""
    from otlabel.backends import triton_backend as tb

    names = ("TILE_SINGLE", "TILE_MULTI", "PROGRAMS_PER_SM", "SMALL_PROBLEM")
    defaults = {name: getattr(tb, name) for name in names}
    out = []
    try:
        for n_rows, n_cols in sizes:
            scores = cosine_scores(n_rows, n_cols, device)
            for config in tune_grid(n_rows, n_cols, defaults["SMALL_PROBLEM"]):
                for name, value in {**defaults, **config}.items():
                    setattr(tb, name, value)
                for _ in range(warmup):
                    timer(sinkhorn, scores, EPSILON, backend="triton")
                times = [timer(sinkhorn, scores, EPSILON, backend="triton")[0] for _ in range(repeats)]
                out.append({"n_rows": n_rows, "n_cols": n_cols, "config": config, "median_ms": median(times)})
                print(f"{n_rows} x {n_cols} {config}: {out[-1]['median_ms']:.3f} ms", file=sys.stderr, flush=True)
    finally:
        for name, value in defaults.items():
            setattr(tb, name, value)
    return out


def tune_markdown(results: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"{r['n_rows']} x {r['n_cols']}",
            ", ".join(f"{k}={v}" for k, v in r["config"].items()),
            f"{r['median_ms']:.3f}",
        ]
        for r in results
    ]
    return markdown_table(["N x K", "configuration", "triton ms"], rows)


def compare(
    args: argparse.Namespace, ot: Any, timer: Timer, device: torch.device, peak: float | None
) -> dict[str, Any]:
    """The peers' table, the achieved bandwidth and the targets; printed, and returned for the JSON."""
    dry = args.dry_run
    sizes, repeats, warmup = (DRY_SIZES, 2, 1) if dry else (SIZES, args.repeats, args.warmup)
    epsilon, tol = (0.2, 1e-4) if dry else (EPSILON, TOL)
    rows = []
    for n_rows, n_cols in sizes:
        scores = cosine_scores(n_rows, n_cols, device)
        for mode in ("fixed", "tolerance"):
            print(f"{mode} {n_rows} x {n_cols} ...", file=sys.stderr, flush=True)
            result = run_cell(timer, peers(ot, mode, epsilon, tol), scores, repeats, warmup, args.cell_seconds)
            rows.append({"mode": mode, "n_rows": n_rows, "n_cols": n_cols, "peers": result})
            if timer.cuda:
                torch.cuda.empty_cache()
        del scores
    rows.sort(key=lambda row: row["mode"] == "tolerance")  # fixed-iteration rows first, sizes in order

    largest = max((r for r in rows if r["mode"] == "fixed"), key=lambda r: r["n_rows"] * r["n_cols"])
    moved = traffic_bytes(largest["n_rows"], largest["n_cols"])
    achieved = moved / (largest["peers"]["triton"]["median_ms"] * 1e-3) / 1e9
    bandwidth = {
        "n_rows": largest["n_rows"],
        "n_cols": largest["n_cols"],
        "bytes_per_call": moved,
        "model": f"({N_ITER} + 2) * N * K * 4: {N_ITER + 1} reads of the float32 scores, one write of the labels",
        "achieved_gbps": achieved,
        "peak_gbps": peak,
        "fraction_of_peak": achieved / peak if peak else None,
    }
    targets = {}
    for row in rows:
        if row["mode"] == "fixed" and (row["n_rows"], row["n_cols"]) == SPEED_TARGET[:2]:
            ratio = row["peers"]["torch"]["ratio_to_triton"]
            targets["speedup_vs_torch_12000x16"] = {
                "value": ratio,
                "target": SPEED_TARGET[2],
                "met": ratio >= SPEED_TARGET[2],
            }
    if (largest["n_rows"], largest["n_cols"]) == BANDWIDTH_TARGET[:2] and peak:
        fraction = bandwidth["fraction_of_peak"]
        targets["bandwidth_1000000x128"] = {
            "value": fraction,
            "target": BANDWIDTH_TARGET[2],
            "met": fraction >= BANDWIDTH_TARGET[2],
        }

    clock = "CUDA events" if timer.cuda else "wall clock, Triton interpreter: meaningless numbers"
    print(
        f"float32, epsilon = {epsilon}; fixed mode {N_ITER} iterations, tolerance mode tol = {tol}; "
        f"medians over {repeats} interleaved rounds ({clock})\n"
    )
    print(markdown(rows, repeats))
    peak_text = f"{peak:.0f} GB/s peak, {100 * achieved / peak:.0f}%" if peak else "peak unknown (--peak-gbps)"
    print(
        f"\nTriton at {largest['n_rows']} x {largest['n_cols']}: {moved / 1e9:.3f} GB per call "
        f"({bandwidth['model']}) -> {achieved:.0f} GB/s ({peak_text})"
    )
    for key, target in targets.items():
        print(f"target {key}: {target['value']:.2f} (>= {target['target']}) {'met' if target['met'] else 'NOT met'}")
    return {
        "epsilon": epsilon,
        "n_iter": N_ITER,
        "tol": tol,
        "repeats": repeats,
        "rows": rows,
        "bandwidth": bandwidth,
        "targets": targets,
    }


def main(argv: Sequence[str] | None = None) -> int:
    # tolerance rows run a fixed budget of 1000 iterations for every peer; the table reports
    # the iterations, so the per-call warning would only repeat it
    warnings.simplefilter("ignore", ConvergenceWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (atomically)")
    parser.add_argument("--repeats", type=int, default=50, help="timed rounds per cell (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per peer first (default 5)")
    parser.add_argument(
        "--cell-seconds",
        type=float,
        default=30.0,
        help="fewer rounds (>= 10) for a peer whose calls would take longer than this per cell",
    )
    parser.add_argument("--peak-gbps", type=float, default=None, help="device peak memory bandwidth, GB/s")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, few rounds; CPU interpreter without a GPU")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="time the Triton backend alone over its launch constants instead of the comparison",
    )
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    if not cuda:
        if not args.dry_run:
            parser.error("no CUDA device: this benchmark needs a GPU (use --dry-run to check it on the CPU)")
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before otlabel's kernels are first used
    try:
        import ot
    except ImportError:
        ot = None
        print("POT is not installed: its column is n/a", file=sys.stderr)
    import triton

    device = torch.device("cuda" if cuda else "cpu")
    timer = Timer(device)
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    peak = args.peak_gbps if args.peak_gbps is not None else (peak_gbps(name) if cuda else None)
    payload: dict[str, Any] = {
        "device": name,
        "dry_run": args.dry_run,
        "machine": machine_info(),
        "versions": {
            "triton": triton.__version__,
            "otlabel": otlabel.__version__,
            "pot": getattr(ot, "__version__", None),
            "cuda": torch.version.cuda,
        },
    }
    print(f"\n{name}\n")
    if args.tune:
        repeats, warmup = (2, 1) if args.dry_run else (args.repeats, args.warmup)
        results = tune(timer, device, DRY_SIZES[:1] if args.dry_run else TUNE_SIZES, repeats, warmup)
        print(f"Triton backend, float32, epsilon = {EPSILON}, {N_ITER} iterations; medians over {repeats} calls\n")
        print(tune_markdown(results))
        payload["tune"] = results
    else:
        payload.update(compare(args, ot, timer, device, peak))
    write_json(args.out, payload)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
