"""Benchmark: choosing a class marginal on long-tailed data (the "Choosing a marginal" docs page).

A synthetic long-tailed mixture, built once and not tuned toward any option:

* K classes (default 32) with proportions p_k ∝ k^-alpha (alpha 1: the head class holds about
  25 % of the samples, the tail class 0.8 %, an imbalance ratio of K);
* K prototypes drawn uniformly on the unit sphere in d dimensions (default 64); N samples
  (default 4096) drawn from p, each its class prototype plus Gaussian noise of norm about
  ``--noise`` (3.0), normalised;
* a "teacher" that knows the prototypes only noisily: unit prototypes plus noise of norm about
  ``--proto-noise`` (0.5); the scores are the cosine similarities of the samples to them.

The noise level was chosen once, on seed 0, looking at the teacher's argmax accuracy only (about
0.6: a moderately accurate teacher, as early in self-labelling training); nothing was tuned after
the options ran. Every option labels the same float32 scores with the same epsilon (0.05, the
library's default on cosine scores) in tolerance mode (``tol=1e-6``: the solutions of the
problems, not of three iterations), with one fixed setting chosen by a stated rule:

* argmax: the teacher's argmax, no transport (its one-hot labels);
* equipartition: the hard uniform column marginal (SwAV, SeLa);
* oracle: the hard marginal at the true proportions (an upper reference: unknown in practice);
* relaxed: ``col_penalty=tau`` toward the uniform marginal, tau = epsilon (the column step is
  then the square root of the hard one: halfway, in log, between no constraint and the hard one);
* partial: ``mass=0.5`` with the uniform marginal (P²OT-style: half the mass labelled);
* bounded [0, 2/K]: ``col_bounds`` capping every class at twice its equal share (no knowledge
  of the proportions);
* bounded (SLA): ``col_bounds`` from a small labelled sample, as in Sinkhorn Label Allocation:
  the Wilson intervals (z = 2) of the class frequencies of ``--labelled`` (256) extra samples
  drawn from the same mixture (information the other options do not have);
* EMA: the class marginal re-estimated online by :class:`otlabel.OnlineLabeller`
  (``marginal="ema"``, its defaults): start uniform, label each mini-batch of 256 with the
  current marginal (fixed mode, 3 iterations), move the estimate (momentum 0.9) toward the
  batch's own class distribution (the mean of the row-wise softmax of scores / epsilon), 10 passes
  over the data in a seeded random order; then label the whole set with the final marginal (hard,
  tolerance mode). The second table varies what the estimate follows (the labels' column means
  under a relaxed marginal, or the labels' argmax counts) and how each batch is labelled.

Metrics, mean ± standard deviation over the seeds (each seed draws new prototypes, samples and
teacher): accuracy (argmax of each row of the labels against the true class, over all rows);
balanced accuracy (the mean of the per-class recalls); the total variation
``0.5 * sum_k |p_hat_k - p_k|`` between the true proportions and (i) the labels' proportions
(column sums over the total labelled mass: for the partial option the labelled mass normalised)
and (ii) the hard labels' class histogram (argmax of each row); the fraction of rows holding at
least half a unit of mass and the accuracy on those rows (they differ from all rows only for the
partial option, whose other rows are unlabelled); the wall time of one labelling (for EMA, the
whole online loop and the final labelling). A second table sweeps tau, the partial mass and the
EMA's labelling variants (``--no-sweep`` skips it). JSON goes to ``--out``, the figure to
``--plot``.

    python benchmarks/bench_marginals.py [--seeds 5] [--threads 1] [--plot FILE.png] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, markdown_table, write_json  # noqa: E402

from otlabel import ConvergenceWarning, OnlineLabeller, sinkhorn  # noqa: E402

#: a row holding at least this much mass counts as labelled (partial transport leaves the rest)
LABELLED_ROW_MASS = 0.5


class Data(NamedTuple):
    scores: torch.Tensor  #: (N, K) float32 cosine scores of the teacher
    classes: torch.Tensor  #: (N,) true classes, 0 = the head class
    proportions: torch.Tensor  #: (K,) float64 true proportions p_k ∝ (k + 1)^-alpha
    labelled_counts: torch.Tensor  #: (K,) class counts of the extra labelled sample (SLA's bounds)


def power_law(n_classes: int, alpha: float) -> torch.Tensor:
    ranks = torch.arange(1, n_classes + 1, dtype=torch.float64)
    weights = ranks**-alpha
    return weights / weights.sum()


def make_data(args: argparse.Namespace, seed: int) -> Data:
    """The long-tailed mixture of the module docstring (everything drawn from one seeded generator)."""
    generator = torch.Generator().manual_seed(seed)
    n_classes, dim = args.classes, args.dim
    proportions = power_law(n_classes, args.alpha)
    classes = torch.multinomial(proportions, args.samples, replacement=True, generator=generator)
    prototypes = F.normalize(torch.randn(n_classes, dim, generator=generator, dtype=torch.float64), dim=1)
    noise = torch.randn(args.samples, dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)
    samples = F.normalize(prototypes[classes] + args.noise * noise, dim=1)
    jitter = torch.randn(n_classes, dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)
    teacher = F.normalize(prototypes + args.proto_noise * jitter, dim=1)
    scores = (samples @ teacher.t()).to(torch.float32)
    labelled = torch.multinomial(proportions, args.labelled, replacement=True, generator=generator)
    counts = torch.bincount(labelled, minlength=n_classes).to(torch.float64)
    return Data(scores.contiguous(), classes, proportions, counts)


def wilson_bounds(counts: torch.Tensor, z: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Wilson score intervals of class frequencies from their counts (never empty, even at 0)."""
    n = counts.sum()
    freq = counts / n
    centre = (freq + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * torch.sqrt(freq * (1 - freq) / n + z * z / (4 * n * n))
    lower = torch.where(counts > 0, centre - half, 0.0).clamp(min=0.0)  # exactly 0 at a zero count (rounding)
    return lower, (centre + half).clamp(max=1.0)


def ema_marginal(
    scores: torch.Tensor,
    epsilon: float,
    *,
    batch: int,
    momentum: float,
    passes: int,
    seed: int,
    estimate: str = "predictions",
    **solver_options: Any,
) -> torch.Tensor:
    """The class marginal that :class:`otlabel.OnlineLabeller` (``marginal="ema"``) estimates
    over ``passes`` shuffled passes of mini-batches: each batch is labelled with the current
    estimate, then the estimate moves toward the batch's ``estimate`` — ``"predictions"`` (the
    scores' own class distribution, SoLar-style; the labeller's default), ``"labels"`` (the labels'
    column means; needs a relaxed marginal to move), or ``"argmax"`` (the class frequencies of the
    labels' argmax, fed through ``update``). ``solver_options`` choose how each batch is labelled
    (default: fixed mode, 3 iterations)."""
    n_rows, n_cols = scores.shape
    generator = torch.Generator().manual_seed(seed)
    labeller = OnlineLabeller(
        n_cols,
        epsilon,
        marginal="ema",
        momentum=momentum,
        estimate="given" if estimate == "argmax" else estimate,
        **solver_options,
    )
    for _ in range(passes):
        order = torch.randperm(n_rows, generator=generator)
        for start in range(0, n_rows, batch):
            labels = labeller(scores[order[start : start + batch]])
            if estimate == "argmax":
                labeller.update(torch.bincount(labels.argmax(1), minlength=n_cols).to(torch.float64) / labels.shape[0])
    return labeller.marginal


class Outcome(NamedTuple):
    labels: torch.Tensor
    converged: bool | None  #: the last tolerance-mode solve's flag (None: no solve)


Option = Callable[[Data, int], Outcome]


def solve(scores: torch.Tensor, args: argparse.Namespace, **options: Any) -> Outcome:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in the table instead
        result = sinkhorn(scores, args.epsilon, tol=args.tol, max_iter=args.max_iter, return_info=True, **options)
    return Outcome(result.labels, result.converged)


def argmax_option(data: Data, seed: int) -> Outcome:
    return Outcome(F.one_hot(data.scores.argmax(1), data.scores.shape[1]).to(torch.float32), None)


def ema_option(args: argparse.Namespace, *, estimate: str = "predictions", **batch_options: Any) -> Option:
    def run(data: Data, seed: int) -> Outcome:
        options = batch_options
        if "tol" in options:
            options = {"max_iter": args.max_iter, **options}
        elif "n_iter" not in options:
            options = {"n_iter": 3, **options}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            marginal = ema_marginal(
                data.scores,
                args.epsilon,
                batch=args.ema_batch,
                momentum=args.ema_momentum,
                passes=args.ema_passes,
                seed=10_000 + seed,
                estimate=estimate,
                **options,
            )
        return solve(data.scores, args, col_marginal=marginal)

    return run


def main_options(args: argparse.Namespace) -> dict[str, tuple[str, Option]]:
    """The main table's options: name -> (setting, labelling function)."""
    k = args.classes
    tau = args.tau_factor * args.epsilon
    return {
        "argmax (no OT)": ("teacher's argmax", argmax_option),
        "equipartition": ("hard, uniform", lambda d, s: solve(d.scores, args)),
        "oracle proportions": (
            "hard, true p (reference)",
            lambda d, s: solve(d.scores, args, col_marginal=d.proportions),
        ),
        "relaxed": (
            f"col_penalty={tau:g} (tau = {args.tau_factor:g} eps)",
            lambda d, s: solve(d.scores, args, col_penalty=tau),
        ),
        "partial": (f"mass={args.mass:g}", lambda d, s: solve(d.scores, args, mass=args.mass)),
        "bounded": (
            f"col_bounds=(0, {args.upper_factor:g}/K)",
            lambda d, s: solve(
                d.scores, args, col_bounds=(None, torch.full((k,), args.upper_factor / k, dtype=torch.float64))
            ),
        ),
        "bounded (SLA)": (
            f"col_bounds=Wilson from {args.labelled} labelled",
            lambda d, s: solve(d.scores, args, col_bounds=wilson_bounds(d.labelled_counts)),
        ),
        "EMA": (
            f"batch {args.ema_batch}, momentum {args.ema_momentum:g}, {args.ema_passes} passes",
            ema_option(args),
        ),
    }


def sweep_options(args: argparse.Namespace) -> dict[str, tuple[str, Option]]:
    """The second table: tau, the partial mass, the EMA's variants."""
    table: dict[str, tuple[str, Option]] = {}
    for factor in args.sweep_tau_factors:
        tau = factor * args.epsilon
        table[f"relaxed tau={tau:g}"] = (
            f"tau = {factor:g} eps",
            lambda d, s, tau=tau: solve(d.scores, args, col_penalty=tau),
        )
    for mass in args.sweep_masses:
        table[f"partial mass={mass:g}"] = ("", lambda d, s, mass=mass: solve(d.scores, args, mass=mass))
    tau = args.tau_factor * args.epsilon
    batch_modes = {
        "fixed 3 it": {},
        "hard, tol": {"tol": args.tol},
        f"relaxed tau={tau:g}, tol": {"tol": args.tol, "col_penalty": tau},
    }
    updates = {"predictions": "scores' distribution", "labels": "column means", "argmax": "argmax counts"}
    for estimate, update in updates.items():
        for mode, options in batch_modes.items():
            if estimate == "labels" and "col_penalty" not in options:
                continue  # under a hard marginal the labels' column means are the marginal itself
            table[f"EMA, {mode}, {update}"] = (
                f"batches labelled {mode}; EMA of {update}",
                ema_option(args, estimate=estimate, **options),
            )
    return table


def evaluate(data: Data, outcome: Outcome, seconds: float) -> dict[str, Any]:
    labels = outcome.labels.to(torch.float64)
    n_cols = labels.shape[1]
    truth = data.proportions
    predicted = labels.argmax(1)
    correct = predicted == data.classes
    soft = labels.sum(0) / labels.sum()
    hard = torch.bincount(predicted, minlength=n_cols).to(torch.float64) / labels.shape[0]
    recall = torch.full((n_cols,), float("nan"), dtype=torch.float64)
    for k in range(n_cols):
        members = data.classes == k
        if members.any():
            recall[k] = correct[members].to(torch.float64).mean()
    labelled = labels.sum(1) >= LABELLED_ROW_MASS
    return {
        "accuracy": correct.to(torch.float64).mean().item(),
        "balanced_accuracy": recall[~recall.isnan()].mean().item(),
        "tv_labels": 0.5 * (soft - truth).abs().sum().item(),
        "tv_hard": 0.5 * (hard - truth).abs().sum().item(),
        "rows_labelled": labelled.to(torch.float64).mean().item(),
        "accuracy_labelled": correct[labelled].to(torch.float64).mean().item() if labelled.any() else float("nan"),
        "seconds": seconds,
        "converged": outcome.converged,
        "estimate": soft.tolist(),
        "recall": recall.tolist(),
    }


def run_options(
    options: dict[str, tuple[str, Option]], datasets: list[Data], seeds: list[int], table: str
) -> list[dict[str, Any]]:
    rows = []
    for name, (setting, option) in options.items():
        for seed, data in zip(seeds, datasets):
            start = time.perf_counter()
            outcome = option(data, seed)
            seconds = time.perf_counter() - start
            row = {"table": table, "option": name, "setting": setting, "seed": seed, **evaluate(data, outcome, seconds)}
            rows.append(row)
            print(
                f"{table:5s} {name:42s} seed {seed}: acc {row['accuracy']:.3f} tv {row['tv_labels']:.3f} "
                f"({1000 * seconds:.1f} ms)",
                file=sys.stderr,
                flush=True,
            )
    return rows


def mean_std(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise(rows: list[dict[str, Any]], with_setting: bool = True) -> tuple[list[str], list[list[str]]]:
    headers = ["option"] + (["setting"] if with_setting else [])
    headers += [
        "accuracy",
        "balanced accuracy",
        "TV, labels' proportions",
        "TV, hard labels",
        "rows labelled",
        "accuracy, labelled rows",
        "median ms",
    ]
    table = []
    for name in dict.fromkeys(r["option"] for r in rows):
        mine = [r for r in rows if r["option"] == name]
        times = sorted(r["seconds"] for r in mine)
        unconverged = sum(r["converged"] is False for r in mine)
        label = name + (f" ({unconverged} unconverged)" if unconverged else "")
        cells = [label] + ([mine[0]["setting"]] if with_setting else [])
        cells += [mean_std([r[key] for r in mine]) for key in ("accuracy", "balanced_accuracy", "tv_labels", "tv_hard")]
        cells += [mean_std([r[key] for r in mine], 2) for key in ("rows_labelled", "accuracy_labelled")]
        cells.append(f"{1000 * times[len(times) // 2]:.1f}")
        table.append(cells)
    return headers, table


def plot(rows: list[dict[str, Any]], proportions: torch.Tensor, path: str, title: str) -> None:
    """True against estimated proportions (left, log scale) and per-class recall (right), means over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = list(range(1, len(proportions) + 1))
    names = list(dict.fromkeys(r["option"] for r in rows))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    left.plot(ranks, proportions.tolist(), "k-", linewidth=3, alpha=0.35, label="true proportions")
    styles = ["o-", "s--", "^-", "v-", "D-", "P--", "X-", "*-", "h-", "<-"]
    for index, name in enumerate(names):
        mine = [r for r in rows if r["option"] == name]
        estimate = torch.tensor([r["estimate"] for r in mine]).mean(0)
        recall = torch.tensor([r["recall"] for r in mine]).nanmean(0)
        look = {"color": f"C{index % 10}", "markersize": 3.5, "linewidth": 1, "label": name}
        style = styles[index % len(styles)]
        if name != "oracle proportions":  # its estimate is the truth
            left.plot(ranks, estimate.tolist(), style, **look)
        right.plot(ranks, recall.tolist(), style, **look)
    ticks = [rank for rank in (1, 2, 4, 8, 16, 32, 64, 128) if rank <= len(ranks)]
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_xticks(ticks, [str(rank) for rank in ticks])
        axes.minorticks_off()
    left.set_yscale("log")
    left.set_xlabel("class rank (1 = head)")
    left.set_ylabel("proportion (labels' column sums / total)")
    left.set_title("estimated class proportions")
    left.legend(fontsize=7.5)
    right.set_xlabel("class rank (1 = head)")
    right.set_ylabel("recall (argmax of the labels)")
    right.set_title("per-class recall")
    right.set_ylim(0, 1)
    right.legend(fontsize=7.5)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=32, help="K")
    parser.add_argument("--samples", type=int, default=4096, help="N")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension d")
    parser.add_argument("--alpha", type=float, default=1.0, help="power-law exponent: p_k ∝ k^-alpha")
    parser.add_argument("--noise", type=float, default=3.0, help="norm of the samples' noise (prototypes: 1)")
    parser.add_argument("--proto-noise", type=float, default=0.5, help="norm of the teacher's prototype noise")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. SEEDS-1")
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=100_000)
    parser.add_argument("--tau-factor", type=float, default=1.0, help="relaxed: tau = FACTOR * epsilon")
    parser.add_argument("--mass", type=float, default=0.5, help="partial: the labelled fraction m")
    parser.add_argument("--upper-factor", type=float, default=2.0, help="bounded: upper bound FACTOR / K")
    parser.add_argument("--labelled", type=int, default=256, help="bounded (SLA): size of the labelled sample")
    parser.add_argument("--ema-batch", type=int, default=256)
    parser.add_argument("--ema-momentum", type=float, default=0.9)
    parser.add_argument("--ema-passes", type=int, default=10)
    parser.add_argument("--sweep-tau-factors", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0, 100.0])
    parser.add_argument("--sweep-masses", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--no-sweep", action="store_true", help="skip the second table")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--plot", default=None, help="write the figure (PNG) here (needs matplotlib)")
    parser.add_argument("--out", default="benchmarks/results/bench_marginals.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    started = time.perf_counter()
    datasets = [make_data(args, seed) for seed in seeds]
    rows = run_options(main_options(args), datasets, seeds, "main")
    sweep = [] if args.no_sweep else run_options(sweep_options(args), datasets, seeds, "sweep")
    elapsed = time.perf_counter() - started

    teacher = mean_std([r["accuracy"] for r in rows if r["option"] == "argmax (no OT)"])
    head, tail = datasets[0].proportions[0].item(), datasets[0].proportions[-1].item()
    print(
        f"# Choosing a marginal: K={args.classes}, N={args.samples}, p_k ∝ k^-{args.alpha:g} "
        f"(head {head:.3f}, tail {tail:.4f}), d={args.dim}, noise {args.noise:g}, teacher noise {args.proto_noise:g}, "
        f"epsilon {args.epsilon:g}, tol {args.tol:g}, float32, {len(seeds)} seeds, "
        f"{torch.get_num_threads()} threads\n"
    )
    print(f"Teacher's argmax accuracy: {teacher}. Mean ± std over seeds {seeds[0]}..{seeds[-1]}.\n")
    print(markdown_table(*summarise(rows)))
    if sweep:
        print("\n## Sensitivity: tau, the partial mass, the EMA's variants\n")
        print(markdown_table(*summarise(sweep, with_setting=False)))
    print(f"\n(total {elapsed:.1f} s)")

    settings = {key: value for key, value in vars(args).items() if key not in ("plot", "out")}
    payload = {
        "machine": machine_info(),
        "settings": settings,
        "proportions": datasets[0].proportions.tolist(),
        "results": rows,
        "sweep": sweep,
        "seconds": elapsed,
    }
    write_json(args.out, payload)
    if args.plot:
        title = (
            f"K={args.classes}, N={args.samples}, p_k ∝ k^-{args.alpha:g}, teacher accuracy {teacher}; "
            f"epsilon {args.epsilon:g}; means over {len(seeds)} seeds"
        )
        plot(rows, datasets[0].proportions, args.plot, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
