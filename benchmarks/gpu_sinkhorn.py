"""GPU benchmark: otlabel's fused Triton backend against its torch backend, POT and the SwAV loop.

Peers, on the SwAV-like scores of ``bench_sinkhorn.py`` (clustered unit embeddings against
unit prototypes, ``epsilon = 0.05``), float32 and bfloat16 on one CUDA device:

* ``triton``: ``sinkhorn(..., backend="triton")`` as training code calls it (eager, the default
  validation: a repeated call of a kind replays one captured CUDA graph, see
  :mod:`otlabel.graphs`) and ``torch``: ``backend="torch"``;
* ``triton captured``: the same call captured by the caller in a CUDA graph (device-side checks),
  timed as ``graph.replay()``;
* POT's solver on torch tensors (float32 only): ``ot.sinkhorn(a, b, M, reg=1)`` with
  ``M = -scores/epsilon`` (the same column-then-row schedule; ``numItermax=3`` in
  fixed-iteration mode) and, in tolerance mode, ``method="sinkhorn_log"`` with
  ``stopThr = tol / K``; the labels are POT's plan times N;
* the plain SwAV loop (``distributed_sinkhorn`` on one process; fixed-iteration mode): eager,
  under ``torch.compile(dynamic=True)`` (``SwAV compiled``; ``--no-compile`` leaves it out), and
  captured in a CUDA graph (``SwAV captured``).

Fixed-iteration mode (3 iterations) at 12000x16, 800x64, 100000x64, 1000000x128, 4096x3000 and
the DINO prototype counts 1024x65536, 512x131072, 256x262144, in float32 and bfloat16;
tolerance mode (``tol=1e-6``, 1000 iterations at most) at 12000x16 and 4096x3000 in float32.
Every call is timed with CUDA events after warm-up (a first call, which compiles or captures,
then up to ``--warmup`` calls within ~2 s); runs are interleaved (one call of each peer per
round), and the table reports medians over ``--repeats`` rounds (default 50), the ratios, and
the largest label difference to the torch backend. A peer whose calls would take longer than
``--cell-seconds`` in a cell gets fewer rounds (at least 10; the count is in the JSON); a peer
that fails (a missing package, a compile error) is reported as n/a with its error.

**Memory traffic model** (bytes per call of the Triton backend, fixed-iteration mode, n
iterations): the scores are read n + 1 times (one pass for the first column step, then one
fused pass per iteration, the last one also writing the labels) and the labels are written
once, in the input dtype: ``(n + 2) * N * K * itemsize``; vectors of length N or K, and the
front end's one validation read of the scores, are not counted. The achieved rate at
1000000x128 is compared with the device's peak memory bandwidth, looked up by device name
(``--peak-gbps`` overrides it).

Targets (issue 13): fixed mode, 3 iterations, otlabel at most 0.8x the SwAV loop's time at
every size but 1000000x128 (eager against eager, captured against captured, float32 and
bfloat16); at least 60 % of peak bandwidth at 1000000x128 (float32); tolerance mode at 12000x16
and 4096x3000 at least 5x the torch backend per iteration.

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
SIZES = [
    (12000, 16),
    (800, 64),
    (100000, 64),
    (1000000, 128),
    (4096, 3000),
    (1024, 65536),
    (512, 131072),
    (256, 262144),
]
TOLERANCE_SIZES = [(12000, 16), (4096, 3000)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DRY_SIZES = [(300, 4), (12, 300)]
DRY_TOLERANCE_SIZES = [(12, 300)]
TUNE_SIZES = [(12000, 16), (1000000, 128), (4096, 3000), (256, 262144)]
SWAV_TARGET = 0.8  # otlabel's time at most this fraction of the SwAV loop's (fixed mode)
SWAV_TARGET_EXCLUDES = {(1000000, 128)}  # the bandwidth target's size
BANDWIDTH_TARGET = (1000000, 128, 0.60)  # N, K, minimum fraction of peak (fixed mode, float32)
TOLERANCE_TARGET = 5.0  # torch / triton time per iteration, at TOLERANCE_SIZES
PEERS = ["triton", "triton captured", "torch", "POT", "SwAV loop", "SwAV compiled", "SwAV captured"]

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
    """Bytes one fixed-iteration Triton call moves: n + 1 reads of the scores, one write of the
    labels (both at the input's width)."""
    return (n_iter + 2) * n_rows * n_cols * itemsize


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


def cosine_scores(n_rows: int, n_cols: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """bench_sinkhorn's SwAV-like scores, generated on the CPU (same numbers everywhere), on ``device``."""
    scores = cpu_cosine_scores(n_rows, n_cols, torch.Generator().manual_seed(0))
    return scores.to(device=device, dtype=dtype).contiguous()


class Captured:
    """``fn(scores)`` captured in a CUDA graph on its first call (after a warm-up on a side stream,
    as CUDA graphs want); every call replays it and returns the graph's output tensor."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.key: tuple | None = None

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        key = (scores.data_ptr(), tuple(scores.shape), scores.dtype)
        if key != self.key:
            self.graph = self.out = None  # one graph at a time: release the last one's memory
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.fn(scores)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.fn(scores)
            self.key = key
        self.graph.replay()
        return self.out


_COMPILED_SWAV: Callable[..., torch.Tensor] | None = None


def compiled_swav_loop(scores: torch.Tensor, epsilon: float, n_iter: int) -> torch.Tensor:
    """The SwAV loop under ``torch.compile`` with dynamic shapes (one compilation per dtype)."""
    global _COMPILED_SWAV
    if _COMPILED_SWAV is None:
        _COMPILED_SWAV = torch.compile(swav_loop, dynamic=True)
    return _COMPILED_SWAV(scores, epsilon, n_iter)


def peers(
    ot: Any, mode: str, epsilon: float, tol: float, dtype: torch.dtype, cuda: bool, compile_swav: bool
) -> dict[str, Callable[[torch.Tensor], Any]]:
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

    found: dict[str, Callable[[torch.Tensor], Any]] = {"triton": otlabel_peer("triton")}
    if mode == "fixed" and cuda:
        captured = Captured(lambda scores: sinkhorn(scores, epsilon, backend="triton", n_iter=N_ITER))
        found["triton captured"] = lambda scores: (captured(scores), N_ITER)
    found["torch"] = otlabel_peer("torch")
    if ot is not None and dtype == torch.float32:

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
        if compile_swav:
            found["SwAV compiled"] = lambda scores: (compiled_swav_loop(scores, epsilon, N_ITER), N_ITER)
        if cuda:
            swav_captured = Captured(lambda scores: swav_loop(scores, epsilon, N_ITER))
            found["SwAV captured"] = lambda scores: (swav_captured(scores), N_ITER)
    return found


def run_cell(
    timer: Timer,
    functions: dict[str, Callable[[torch.Tensor], Any]],
    scores: torch.Tensor,
    repeats: int,
    warmup: int,
    cell_seconds: float,
) -> dict[str, dict[str, Any]]:
    """Warm up, then interleave ``repeats`` rounds of one call per peer; medians and agreement.

    A peer that raises while warming up (a missing package, a compile error) is left out of the
    rounds and reported with its error."""
    results: dict[str, dict[str, Any]] = {}
    last: dict[str, float] = {}
    labels: dict[str, torch.Tensor] = {}
    working: dict[str, Callable[[torch.Tensor], Any]] = {}
    for name, fn in functions.items():
        # the first call compiles (or captures); then up to ``warmup`` more, but no more than ~2 s of them
        spent, calls = 0.0, 0
        try:
            while calls <= warmup and (calls < 2 or spent < 2e3):
                last[name], (out, iterations) = timer(fn, scores)
                spent, calls = spent + (last[name] if calls else 0.0), calls + 1
        except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(f"  {name}: {results[name]['error']}", file=sys.stderr, flush=True)
            continue
        labels[name] = out.clone() if name.endswith("captured") else out  # a graph's output is overwritten
        results[name] = {"iterations": iterations, "times_ms": []}
        working[name] = fn
    rounds = {
        name: max(min(10, repeats), min(repeats, int(cell_seconds * 1e3 / max(last[name], 1e-3)))) for name in working
    }
    for index in range(max(rounds.values(), default=0)):
        for name, fn in working.items():  # interleaved: drifts hit every peer alike
            if index < rounds[name]:
                results[name]["times_ms"].append(timer(fn, scores)[0])
    reference = labels["torch"].double() if "torch" in labels else None
    for name in working:
        result = results[name]
        times = sorted(result.pop("times_ms"))
        diff = float((labels[name].double() - reference).abs().max()) if reference is not None else float("nan")
        result.update(
            repeats=len(times),
            median_ms=median(times),
            p10_ms=times[len(times) // 10],
            p90_ms=times[(9 * len(times)) // 10],
            max_abs_diff_vs_torch=diff,
            finite=bool(torch.isfinite(labels[name]).all()),
        )
    if "triton" in working:
        for name in working:
            results[name]["ratio_to_triton"] = results[name]["median_ms"] / results["triton"]["median_ms"]
    return results


def _ms(found: dict[str, Any], name: str, repeats: int) -> str:
    peer = found.get(name)
    if peer is None or "median_ms" not in peer:
        return "n/a"
    rounds = f" ({peer['repeats']} rounds)" if peer["repeats"] < repeats else ""
    return f"{peer['median_ms']:.3f}{rounds}"


def _ratio(found: dict[str, Any], numerator: str, denominator: str) -> float | None:
    a, b = found.get(numerator, {}), found.get(denominator, {})
    if "median_ms" not in a or "median_ms" not in b:
        return None
    return a["median_ms"] / b["median_ms"]


RATIOS = [
    ("triton / SwAV loop", "triton", "SwAV loop"),
    ("triton captured / SwAV captured", "triton captured", "SwAV captured"),
    ("torch / triton", "torch", "triton"),
]


def markdown(rows: list[dict[str, Any]], repeats: int) -> str:
    """The peers' table; a median over fewer than ``repeats`` rounds shows its count."""
    head = [
        "mode",
        "dtype",
        "N x K",
        *(f"{n} ms" for n in PEERS),
        *(label for label, _, _ in RATIOS),
        "iterations",
        "max abs diff to torch: triton",
        "POT",
    ]
    body = []
    for row in rows:
        found = row["peers"]
        cells = [row["mode"], row["dtype"], f"{row['n_rows']} x {row['n_cols']}"]
        cells += [_ms(found, n, repeats) for n in PEERS]
        for _, numerator, denominator in RATIOS:
            ratio = _ratio(found, numerator, denominator)
            cells.append("n/a" if ratio is None else f"{ratio:.2f}x")
        cells.append(", ".join(f"{n} {p['iterations']}" for n, p in found.items() if "iterations" in p))
        cells += [
            f"{found[n]['max_abs_diff_vs_torch']:.1e}" if "median_ms" in found.get(n, {}) else "n/a"
            for n in ("triton", "POT")
        ]
        body.append(cells)
    return markdown_table(head, body)


def tune_grid(n_rows: int, n_cols: int, small_problem: int, tiled_k: int = 8192) -> list[dict[str, int]]:
    """Launch constants to try: tile sizes of the single-program path (and the many-programs path
    instead) for a small problem; tile sizes x programs per SM for a large one (and the column
    tile for the tiled layout, the fused column step's limit for the rows layout)."""
    if n_rows * n_cols <= small_problem:
        return [{"TILE_SINGLE": t} for t in (2048, 4096, 8192, 16384)] + [{"SMALL_PROBLEM": 0}]
    grid = [{"TILE_MULTI": t, "PROGRAMS_PER_SM": p} for t in (2048, 4096, 8192) for p in (4, 8, 16)]
    if n_cols > tiled_k:
        return grid + [{"TILED_BLOCK_K": b} for b in (256, 512, 2048)]
    return grid + [{"FUSED_COMBINE_MAX": f} for f in (0, 1 << 17)]


def tune(
    timer: Timer, device: torch.device, sizes: Sequence[tuple[int, int]], repeats: int, warmup: int
) -> list[dict[str, Any]]:
    """Median ms of the Triton backend (fixed-iteration mode) per launch configuration."""
    from otlabel import graphs
    from otlabel.backends import triton_backend as tb

    names = ("TILE_SINGLE", "TILE_MULTI", "PROGRAMS_PER_SM", "SMALL_PROBLEM", "TILED_BLOCK_K", "FUSED_COMBINE_MAX")
    defaults = {name: getattr(tb, name) for name in names}
    out = []
    try:
        for n_rows, n_cols in sizes:
            scores = cosine_scores(n_rows, n_cols, device)
            for config in tune_grid(n_rows, n_cols, defaults["SMALL_PROBLEM"], tb.TILED_K):
                for name, value in {**defaults, **config}.items():
                    setattr(tb, name, value)
                graphs.clear()  # a captured call keeps the launch constants it was captured with
                for _ in range(warmup):
                    timer(sinkhorn, scores, EPSILON, backend="triton")
                times = [timer(sinkhorn, scores, EPSILON, backend="triton")[0] for _ in range(repeats)]
                out.append({"n_rows": n_rows, "n_cols": n_cols, "config": config, "median_ms": median(times)})
                print(f"{n_rows} x {n_cols} {config}: {out[-1]['median_ms']:.3f} ms", file=sys.stderr, flush=True)
    finally:
        for name, value in defaults.items():
            setattr(tb, name, value)
        graphs.clear()
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


def _targets(rows: list[dict[str, Any]], bandwidth: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Issue 13's targets, as far as the rows measure them."""
    targets: dict[str, dict[str, Any]] = {}
    for row in rows:
        size = (row["n_rows"], row["n_cols"])
        where = f"{row['n_rows']}x{row['n_cols']} {row['dtype']}"
        found = row["peers"]
        if row["mode"] == "fixed" and size not in SWAV_TARGET_EXCLUDES:
            for label, numerator, denominator in RATIOS[:2]:
                ratio = _ratio(found, numerator, denominator)
                if ratio is not None:
                    kind = "eager" if numerator == "triton" else "captured"
                    targets[f"swav_ratio_{kind} {where}"] = {
                        "value": ratio,
                        "target": SWAV_TARGET,
                        "met": ratio <= SWAV_TARGET,
                        "what": f"{label} (at most)",
                    }
        if row["mode"] == "tolerance" and size in TOLERANCE_SIZES:
            triton, torch_peer = found.get("triton", {}), found.get("torch", {})
            if "median_ms" in triton and "median_ms" in torch_peer:
                per_iteration = (torch_peer["median_ms"] / torch_peer["iterations"]) / (
                    triton["median_ms"] / triton["iterations"]
                )
                targets[f"tolerance_per_iteration {where}"] = {
                    "value": per_iteration,
                    "target": TOLERANCE_TARGET,
                    "met": per_iteration >= TOLERANCE_TARGET,
                    "what": "torch / triton time per iteration (at least)",
                }
    if bandwidth is not None and bandwidth["fraction_of_peak"] is not None:
        if (bandwidth["n_rows"], bandwidth["n_cols"]) == BANDWIDTH_TARGET[:2]:
            fraction = bandwidth["fraction_of_peak"]
            targets["bandwidth 1000000x128 float32"] = {
                "value": fraction,
                "target": BANDWIDTH_TARGET[2],
                "met": fraction >= BANDWIDTH_TARGET[2],
                "what": "fraction of peak memory bandwidth (at least)",
            }
    return targets


def compare(
    args: argparse.Namespace, ot: Any, timer: Timer, device: torch.device, peak: float | None
) -> dict[str, Any]:
    """The peers' table, the achieved bandwidth and the targets; printed, and returned for the JSON."""
    dry = args.dry_run
    cuda = timer.cuda
    sizes, tolerance_sizes = (DRY_SIZES, DRY_TOLERANCE_SIZES) if dry else (SIZES, TOLERANCE_SIZES)
    repeats, warmup = (2, 1) if dry else (args.repeats, args.warmup)
    epsilon, tol = (0.2, 1e-4) if dry else (EPSILON, TOL)
    compile_swav = args.compile and cuda
    # float32 first, then tolerance mode, then the other dtypes: a run cut short loses the least
    first, *others = args.dtypes
    cells = [("fixed", first, size) for size in sizes]
    cells += [("tolerance", "float32", size) for size in tolerance_sizes]
    cells += [("fixed", name, size) for name in others for size in sizes]
    rows = []
    for mode, dtype_name, (n_rows, n_cols) in cells:
        dtype = DTYPES[dtype_name]
        scores = cosine_scores(n_rows, n_cols, device, dtype)
        print(f"{mode} {dtype_name} {n_rows} x {n_cols} ...", file=sys.stderr, flush=True)
        functions = peers(ot, mode, epsilon, tol, dtype, cuda, compile_swav)
        result = run_cell(timer, functions, scores, repeats, warmup, args.cell_seconds)
        rows.append({"mode": mode, "dtype": dtype_name, "n_rows": n_rows, "n_cols": n_cols, "peers": result})
        write_json(args.out, {"partial": True, "rows": rows})  # a run cut short keeps what it measured
        del scores, functions
        if cuda:
            torch.cuda.empty_cache()

    bandwidths = []
    for row in rows:
        if row["mode"] != "fixed" or "median_ms" not in row["peers"].get("triton", {}):
            continue
        itemsize = DTYPES[row["dtype"]].itemsize
        moved = traffic_bytes(row["n_rows"], row["n_cols"], itemsize=itemsize)
        achieved = moved / (row["peers"]["triton"]["median_ms"] * 1e-3) / 1e9
        bandwidths.append(
            {
                "n_rows": row["n_rows"],
                "n_cols": row["n_cols"],
                "dtype": row["dtype"],
                "bytes_per_call": moved,
                "model": f"({N_ITER} + 2) * N * K * {itemsize}: {N_ITER + 1} reads of the scores, one write of labels",
                "achieved_gbps": achieved,
                "peak_gbps": peak,
                "fraction_of_peak": achieved / peak if peak else None,
            }
        )
    float32 = [b for b in bandwidths if b["dtype"] == "float32"]
    target_size = [b for b in float32 if (b["n_rows"], b["n_cols"]) == BANDWIDTH_TARGET[:2]]
    bandwidth = (target_size or sorted(float32, key=lambda b: b["n_rows"] * b["n_cols"])[-1:] or [None])[0]
    targets = _targets(rows, bandwidth)

    clock = "CUDA events" if cuda else "wall clock, Triton interpreter: meaningless numbers"
    print(
        f"epsilon = {epsilon}; fixed mode {N_ITER} iterations, tolerance mode tol = {tol}; "
        f"medians over {repeats} interleaved rounds ({clock})\n"
    )
    print(markdown(rows, repeats))
    for b in bandwidths:
        peak_text = f"{100 * b['fraction_of_peak']:.0f}% of {peak:.0f} GB/s" if peak else "peak unknown (--peak-gbps)"
        print(
            f"Triton at {b['n_rows']} x {b['n_cols']} {b['dtype']}: {b['bytes_per_call'] / 1e9:.3f} GB per call "
            f"-> {b['achieved_gbps']:.0f} GB/s ({peak_text})"
        )
    print()
    for key, target in targets.items():
        verdict = "met" if target["met"] else "NOT met"
        print(f"target {key}: {target['what']} {target['target']}: {target['value']:.2f} {verdict}")
    failed = {
        row["mode"] + " " + row["dtype"] + f" {row['n_rows']}x{row['n_cols']}": name
        for row in rows
        for name, peer in row["peers"].items()
        if "error" in peer
    }
    for where, name in failed.items():
        print(f"peer {name} failed at {where} (see the JSON)")
    return {
        "epsilon": epsilon,
        "n_iter": N_ITER,
        "tol": tol,
        "repeats": repeats,
        "rows": rows,
        "bandwidth": bandwidth,
        "bandwidths": bandwidths,
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
        "--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES), help="fixed-mode dtypes (default both)"
    )
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave out the compiled SwAV loop")
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
