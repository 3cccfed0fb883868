"""Time CASE training steps at THUMOS14 scale with each speed setting (issue 21): precision,
torch.compile, the fused Adam step.

The step is the example's own ``case.trainer.train_step`` (forward, losses, both labelling
problems, backward, update) on a THUMOS14-shaped batch (``configs/thumos14.yaml``: 16 videos x
750 snippets x 2048 features, K = 16, 20 classes) read from synthetic ``.npy`` files in the
CASE/BaSNet layout (``bench_case_step.write_layout``). Variants (each its own model and
optimiser, seeded alike):

* ``float32 (main)`` — today's main: float32, eager, the for-loop Adam update;
* ``float32 + fused`` — ``optim.fused=true``;
* ``bfloat16 + fused`` — ``train.precision=bfloat16``;
* ``compile + fused`` — ``train.compile=true``;
* ``bfloat16 + compile + fused`` — both.

Every round runs one step of every variant, in turn (interleaved, so that the load of a
shared machine falls on all of them alike); the first ``--warmup`` rounds are not counted
(the first one compiles). Per-step figures are medians over the rounds; the whole-run figure
of an N-step run (``--run-steps``, default 600) is *extrapolated*: the first step (with the
compilation) + (N - 1) x the median step + N x the median data loading.

    python benchmarks/bench_case_speed.py [--rounds 11] [--warmup 2] [--run-steps 600] [--threads 0] [--json out.json]

Prints a Markdown table with the ratios to ``float32`` and writes JSON (default
``benchmarks/results/bench_case_speed.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "wtal_case"))
sys.path.insert(0, str(ROOT / "tests" / "wtal_case"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _common import machine_info, median, time_call, write_json  # noqa: E402
from bench_case_step import BATCH, write_layout  # noqa: E402

from case.batching import load_batch  # noqa: E402
from case.config import load_config  # noqa: E402
from case.data import build_dataset  # noqa: E402
from case.trainer import _new_state, compiled, train_step  # noqa: E402

VARIANTS = {
    "float32 (main)": [],
    "float32 + fused": ["optim.fused=true"],
    "bfloat16 + fused": ["train.precision=bfloat16", "optim.fused=true"],
    "compile + fused": ["train.compile=true", "optim.fused=true"],
    "bfloat16 + compile + fused": ["train.precision=bfloat16", "train.compile=true", "optim.fused=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--run-steps", type=int, default=600, help="steps of the extrapolated whole run")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="names from the list above")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_case_speed.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        write_layout(Path(tmp), BATCH, seed=0)
        base = [f"data.root={tmp}", "data.source=basnet", f"train.batch_size={BATCH}"]
        configs = {
            name: load_config(ROOT / "examples" / "wtal_case" / "configs" / "thumos14.yaml", base + VARIANTS[name])
            for name in args.variants
        }
        first = next(iter(configs.values()))
        dataset = build_dataset(first.data, "train", "random", seed=0)
        device = torch.device("cpu")
        batch = load_batch(dataset, list(range(BATCH)), 0, device)
        runs = {}
        for name, cfg in configs.items():
            state = _new_state(cfg, len(dataset.class_names), device)
            runs[name] = (cfg, state, compiled(state.model, cfg))

        def step(name: str) -> float:
            cfg, state, net = runs[name]
            result = train_step(net, batch, state.cluster_fg, state.optimizer, cfg, device)
            state.cluster_fg = result.cluster_fg
            return float(result.loss.detach())

        times: dict[str, list[float]] = {name: [] for name in configs}
        first_step: dict[str, float] = {}
        first_loss: dict[str, float] = {}
        data_times: list[float] = []
        for round_ in range(args.warmup + args.rounds):
            elapsed, _ = time_call(lambda: load_batch(dataset, list(range(BATCH)), round_, device))
            data_times.append(elapsed)
            for name in configs:
                elapsed, loss = time_call(lambda name=name: step(name))
                if round_ == 0:
                    first_step[name], first_loss[name] = elapsed, loss
                elif round_ >= args.warmup:
                    times[name].append(elapsed)
            print(f"round {round_ + 1}/{args.warmup + args.rounds} done", file=sys.stderr, flush=True)

    load_after = os.getloadavg()
    per_step = {name: median(values) for name, values in times.items()}
    data = median(data_times)
    n = args.run_steps
    whole = {name: first_step[name] + (n - 1) * per_step[name] + n * data for name in configs}
    ref = next(iter(configs))
    print(
        f"CASE training step at THUMOS14 scale ({BATCH} x 750 x 2048, K = 16), CPU, {torch.get_num_threads()} "
        f"threads; medians of {args.rounds} interleaved rounds after {args.warmup} warm-up rounds; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n"
    )
    print(
        f"| variant | step (ms) | speed-up | first step (s) | {n}-step run (min, extrapolated) | speed-up | "
        "first loss |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for name in configs:
        print(
            f"| {name} | {1000 * per_step[name]:.0f} | {per_step[ref] / per_step[name]:.2f}x | "
            f"{first_step[name]:.1f} | {whole[name] / 60:.1f} | {whole[ref] / whole[name]:.2f}x | "
            f"{first_loss[name]:.5f} |"
        )
    print(f"\ndata loading (the same for all): {1000 * data:.0f} ms a step, counted in the whole run")
    record = {
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": load_after},
        "rounds": args.rounds,
        "warmup": args.warmup,
        "run_steps": n,
        "variants": {name: VARIANTS[name] for name in configs},
        "median_step_seconds": per_step,
        "first_step_seconds": first_step,
        "first_loss": first_loss,
        "data_seconds": data,
        "whole_run_seconds_extrapolated": whole,
        "all_step_seconds": times,
    }
    write_json(args.json, record)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
