"""Self-labelling on real data: SwAV-style clustering of scikit-learn's handwritten digits.

A small encoder with 10 prototypes learns to cluster the 8x8 digits of
``sklearn.datasets.load_digits`` by swapped prediction: two augmented views of each image, the
labels of one view (from ``otlabel.OnlineLabeller``, with a queue and warm starts) are the
targets of the other view's prediction. The labels never see the true digit classes; those only
score the clusters at the end (clustering accuracy after Hungarian matching, NMI, ARI), beside
k-means on the raw pixels run in the same script.

It runs every class-marginal option of otlabel (equipartition, the moving-average estimate,
relaxed, partial and bounded marginals) on the balanced digits and on a long-tailed subset
(imbalance ratio 10), over several seeds, and writes a table (JSON and Markdown) and a plot.

    python examples/selfsup_digits/train.py                       # everything (10-15 minutes, 2 cores)
    python examples/selfsup_digits/train.py --dataset balanced --option equipartition --seeds 0
    python examples/selfsup_digits/train.py --help

Needs scikit-learn (with scipy) and matplotlib: ``python -m pip install -e ".[examples]"``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from otlabel import OnlineLabeller

# ---------------------------------------------------------------------------------------------
# 0. Settings. One set for every option and both data sets: chosen on the balanced digits with
#    equipartition (seeds 100 and 101, not the reported ones), then frozen. Nothing here is tuned
#    per option or on the long-tailed set.
# ---------------------------------------------------------------------------------------------

N_CLUSTERS = 10
EMBED_DIM = 64
HIDDEN = 256
BATCH_SIZE = 256
QUEUE_SIZE = 1024  # rows of past scores that fill each labelling problem (both views of 2 batches)
EPSILON = 0.05  # the labeller's entropic regularisation, on cosine scores (SwAV's default)
TEMPERATURE = 0.1  # the softmax temperature of the predictions (SwAV's)
LEARNING_RATE = 1e-3
FREEZE_PROTOTYPES_STEPS = 50  # SwAV keeps the prototypes fixed at first, while the encoder settles
DEFAULT_STEPS = 1000
IMBALANCE_RATIO = 10  # long-tailed: class k keeps IMBALANCE_RATIO ** (-k / 9) of its samples
SUBSET_SEED = 0  # the long-tailed subset is the same for every run
N_LABELLED = 100  # the labelled sample that the SLA bounds are estimated from
WILSON_Z = 2.0

# ---------------------------------------------------------------------------------------------
# 1. Data
# ---------------------------------------------------------------------------------------------

DATASETS = ("balanced", "long-tailed")


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The digits as (N, 8, 8) float32 images in [0, 1] and their classes (N,).

    "balanced": all 1,797 images. "long-tailed": class k keeps floor(n_k * 0.1 ** (k / 9)) of
    its n_k images (178 of the zeros ... 18 of the nines, 730 in all), drawn with a fixed seed.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    classes = digits.target.astype(np.int64)
    if name == "balanced":
        return images, classes
    if name != "long-tailed":
        raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")
    rng = np.random.default_rng(SUBSET_SEED)
    kept = []
    for k in range(N_CLUSTERS):
        members = np.flatnonzero(classes == k)
        n_keep = int(len(members) * IMBALANCE_RATIO ** (-k / (N_CLUSTERS - 1)))
        kept.append(rng.choice(members, size=n_keep, replace=False))
    kept = np.sort(np.concatenate(kept))
    return images[kept], classes[kept]


# ---------------------------------------------------------------------------------------------
# 2. Augmentations: what keeps an 8x8 digit the same digit
# ---------------------------------------------------------------------------------------------


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view of each (B, 8, 8) image: a small rotation, scaling and shift (one affine warp,
    bilinear), then pixel noise and a cut-out square. At 8x8 a pixel is an eighth of the digit, so
    shifts stay within one pixel and the cut-out is 3x3 at most."""
    n = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-15, 15) * math.pi / 180
    scale = uniform(0.9, 1.1)
    shift = uniform(-0.25, 0.25), uniform(-0.25, 0.25)  # grid units: 2 / 8 per pixel, so +-1 pixel
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack((torch.stack((cos, -sin, shift[0]), 1), torch.stack((sin, cos, shift[1]), 1)), 1)
    grid = F.affine_grid(theta, (n, 1, 8, 8), align_corners=False)
    views = F.grid_sample(images[:, None], grid, align_corners=False, padding_mode="zeros")[:, 0]
    views = views + 0.1 * torch.randn(views.shape, generator=generator)
    # cut-out: a 3x3 square at a random place, on half of the views
    top = torch.randint(0, 6, (n, 1, 1), generator=generator)
    left = torch.randint(0, 6, (n, 1, 1), generator=generator)
    pixel = torch.arange(8)
    in_rows = (pixel[:, None] >= top) & (pixel[:, None] < top + 3)
    in_cols = (pixel[None, :] >= left) & (pixel[None, :] < left + 3)
    inside = in_rows & in_cols & (torch.rand(n, 1, 1, generator=generator) < 0.5)
    return views.masked_fill(inside, 0.0).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# 3. Model: an MLP encoder onto the unit sphere, and K prototypes (cosine scores)
# ---------------------------------------------------------------------------------------------


class Clusterer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(64, HIDDEN),
            torch.nn.BatchNorm1d(HIDDEN),
            torch.nn.ReLU(),
            torch.nn.Linear(HIDDEN, HIDDEN),
            torch.nn.BatchNorm1d(HIDDEN),
            torch.nn.ReLU(),
            torch.nn.Linear(HIDDEN, EMBED_DIM),
        )
        self.prototypes = torch.nn.Linear(EMBED_DIM, N_CLUSTERS, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Cosine similarities (B, K) between each image's embedding and the prototypes."""
        embedding = F.normalize(self.encoder(images), dim=1)
        return embedding @ F.normalize(self.prototypes.weight, dim=1).t()


# ---------------------------------------------------------------------------------------------
# 4. The class-marginal options: each is an OnlineLabeller with the same queue, epsilon and
#    schedule (SwAV's three iterations, warm-started), and only its marginal changed.
# ---------------------------------------------------------------------------------------------

OPTIONS = {
    "equipartition": {},
    "ema-predictions": {"marginal": "ema", "estimate": "predictions"},
    "ema-labels": {"marginal": "ema", "estimate": "labels", "col_penalty": EPSILON},
    # added after the first full run, where both estimates above collapsed from a cold start: the
    # same estimate as "ema-predictions", but folded in (update()) only in the second half of
    # training, after equipartition has shaped the clusters (SoLar's warm-up). Exploratory.
    "ema-warmup": {"marginal": "ema", "estimate": "given"},
    "relaxed-0.01": {"col_penalty": 0.01},
    "relaxed-0.05": {"col_penalty": 0.05},
    "relaxed-0.25": {"col_penalty": 0.25},
    "partial-0.5": {"mass": 0.5},
    "bounded": {"col_bounds": (None, [2 / N_CLUSTERS] * N_CLUSTERS)},
    "bounded-sla": "Wilson intervals from a labelled sample, matched to the clusters by size",
}

OPTION_SETTINGS = {
    "equipartition": "hard uniform marginal (SwAV)",
    "ema-predictions": 'marginal="ema", estimate="predictions" (momentum 0.9)',
    "ema-labels": f'marginal="ema", estimate="labels", col_penalty={EPSILON}',
    "ema-warmup": 'marginal="ema", estimate="given": predictions, from half-way',
    "relaxed-0.01": "col_penalty=0.01 (tau = 0.2 eps)",
    "relaxed-0.05": "col_penalty=0.05 (tau = eps)",
    "relaxed-0.25": "col_penalty=0.25 (tau = 5 eps)",
    "partial-0.5": "mass=0.5",
    "bounded": "col_bounds=(None, 2/K)",
    "bounded-sla": f"col_bounds: Wilson (z={WILSON_Z:g}) from {N_LABELLED} labelled, matched by size",
}


def make_labeller(option: str, col_bounds=None) -> OnlineLabeller:
    settings = dict(OPTIONS[option]) if option != "bounded-sla" else {"col_bounds": col_bounds}
    return OnlineLabeller(N_CLUSTERS, EPSILON, queue_size=QUEUE_SIZE, warm_start=True, **settings)


def wilson_bounds(classes: np.ndarray, n_labelled: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sinkhorn Label Allocation's bounds: Wilson score intervals (z = 2) of the class frequencies
    in a random labelled sample, largest class first. Clusters have no names, so only the sizes
    are used: the bounds go to the clusters in the order of their current sizes (SizeMatchedBounds)."""
    rng = np.random.default_rng(seed)
    sample = classes[rng.choice(len(classes), size=min(n_labelled, len(classes)), replace=False)]
    n = len(sample)
    freq = np.sort(np.bincount(sample, minlength=N_CLUSTERS) / n)[::-1]
    z2 = WILSON_Z**2
    centre = (freq + z2 / (2 * n)) / (1 + z2 / n)
    half = WILSON_Z * np.sqrt(freq * (1 - freq) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lower, upper = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    # the labeller needs bounds that admit a labelling (sum(lower) <= 1 <= sum(upper)): Wilson's do
    return lower, upper


class SizeMatchedBounds:
    """An OnlineLabeller with SLA bounds given largest first: the largest interval goes to the
    cluster that is currently largest (a running mean of the batches' argmax shares), and so on.
    When that order changes, a new labeller with the bounds re-assigned takes over the old one's
    state (queue, potential)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray) -> None:
        self.lower, self.upper = lower, upper
        self.sizes = torch.full((N_CLUSTERS,), 1.0 / N_CLUSTERS)
        self.order: torch.Tensor | None = None
        self.labeller: OnlineLabeller | None = None

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        shares = torch.bincount(scores.argmax(1), minlength=N_CLUSTERS).float() / len(scores)
        self.sizes = 0.9 * self.sizes + 0.1 * shares
        order = torch.argsort(self.sizes, descending=True, stable=True)
        if self.order is None or not torch.equal(order, self.order):
            lower, upper = np.empty(N_CLUSTERS), np.empty(N_CLUSTERS)
            lower[order.numpy()], upper[order.numpy()] = self.lower, self.upper
            state = None if self.labeller is None else self.labeller.state_dict()
            self.labeller = make_labeller("bounded-sla", (lower.tolist(), upper.tolist()))
            if state is not None:
                self.labeller.load_state_dict(state)
            self.order = order
        return self.labeller(scores)


# ---------------------------------------------------------------------------------------------
# 5. Training: swapped prediction with the labeller in the loop
# ---------------------------------------------------------------------------------------------


def swapped_prediction_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SwAV's loss: each view predicts the other view's labels. ``scores`` and ``labels`` are the
    two views' rows stacked, (2B, K). Rows a partial labelling left (almost) empty weigh less."""
    half = scores.shape[0] // 2
    log_p = F.log_softmax(scores / TEMPERATURE, dim=1)
    swapped = torch.cat((labels[half:], labels[:half]))
    return -(swapped * log_p).sum(1).mean()


def train(
    images: np.ndarray,
    option: str,
    seed: int,
    steps: int = DEFAULT_STEPS,
    classes: np.ndarray | None = None,
) -> dict:
    """Train a Clusterer on ``images`` with the given marginal option; return its cluster of every
    image and the loss and label history. ``classes`` is used only by "bounded-sla", for the
    labelled sample its bounds come from."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(images)
    model = Clusterer()
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    if option == "bounded-sla":
        if classes is None:
            raise ValueError("bounded-sla needs the classes of the labelled sample")
        labeller = SizeMatchedBounds(*wilson_bounds(classes, N_LABELLED, seed))
    else:
        labeller = make_labeller(option)
    losses, changed = [], []
    previous = None
    probe = data[:256]  # a fixed set whose clusters we follow, to see that the labels move
    batch = min(BATCH_SIZE, len(data))
    for step in range(steps):
        index = torch.randperm(len(data), generator=generator)[:batch]
        views = torch.cat((augment(data[index], generator), augment(data[index], generator)))
        with torch.no_grad():  # SwAV keeps the prototypes on the unit sphere
            model.prototypes.weight.copy_(F.normalize(model.prototypes.weight, dim=1))
        scores = model(views)
        if option == "ema-warmup" and step >= steps // 2:
            # the batch's predicted class distribution, as estimate="predictions" computes it
            labeller.update(torch.softmax(scores.detach() / EPSILON, dim=1).mean(0))
        labels = labeller(scores.detach())
        loss = swapped_prediction_loss(scores, labels)
        optimiser.zero_grad()
        loss.backward()
        if step < FREEZE_PROTOTYPES_STEPS:
            model.prototypes.weight.grad = None
        optimiser.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            current = predict(model, probe)
            if previous is not None:
                changed.append(float((current != previous).float().mean()))
            previous = current
            model.train()
    return {"clusters": predict(model, data).numpy(), "losses": losses, "changed": changed}


def predict(model: Clusterer, images: torch.Tensor) -> torch.Tensor:
    """Each image's cluster: its nearest prototype, on the un-augmented image."""
    model.eval()
    with torch.no_grad():
        return model(images).argmax(1)


# ---------------------------------------------------------------------------------------------
# 6. Metrics: the clusters against the true classes
# ---------------------------------------------------------------------------------------------


def cluster_accuracy(true: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy after the best one-to-one matching of clusters to classes (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    true, clusters = np.asarray(true), np.asarray(clusters)
    if true.shape != clusters.shape or true.ndim != 1 or len(true) == 0:
        raise ValueError(f"need two non-empty label vectors of one length, got {true.shape} and {clusters.shape}")
    size = int(max(true.max(), clusters.max())) + 1
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (clusters, true), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(true))


def sorted_shares(labels: np.ndarray) -> np.ndarray:
    """The share of each cluster (or class), largest first, K entries."""
    return np.sort(np.bincount(labels, minlength=N_CLUSTERS) / len(labels))[::-1]


def scores_of(true: np.ndarray, clusters: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "accuracy": cluster_accuracy(true, clusters),
        "nmi": float(normalized_mutual_info_score(true, clusters)),
        "ari": float(adjusted_rand_score(true, clusters)),
        # total variation between the cluster sizes and the class sizes, each sorted
        "size_tv": float(0.5 * np.abs(sorted_shares(clusters) - sorted_shares(true)).sum()),
        # clusters that received at least one image: fewer than 10 means classes were merged
        "clusters_used": int(len(np.unique(clusters))),
        "shares": sorted_shares(clusters).tolist(),
    }


def kmeans_clusters(images: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(N_CLUSTERS, n_init=10, random_state=seed).fit_predict(images.reshape(len(images), -1))


# ---------------------------------------------------------------------------------------------
# 7. The experiment: every option on every data set and seed, k-means beside them
# ---------------------------------------------------------------------------------------------


def run_experiment(datasets: list[str], options: list[str], seeds: list[int], steps: int) -> dict:
    """Train every (data set, option, seed) and score it; k-means on the pixels for each seed."""
    runs, started = [], time.perf_counter()
    true_shares = {}
    for dataset in datasets:
        images, classes = load_dataset(dataset)
        true_shares[dataset] = sorted_shares(classes).tolist()
        for seed in seeds:
            start = time.perf_counter()
            clusters = kmeans_clusters(images, seed)
            runs.append(
                {"dataset": dataset, "option": "k-means", "seed": seed, "seconds": time.perf_counter() - start}
                | scores_of(classes, clusters)
            )
            report_progress(runs[-1])
        for option in options:
            for seed in seeds:
                start = time.perf_counter()
                result = train(images, option, seed, steps, classes)
                runs.append(
                    {
                        "dataset": dataset,
                        "option": option,
                        "seed": seed,
                        "seconds": time.perf_counter() - start,
                        "first_loss": result["losses"][0],
                        "last_loss": result["losses"][-1],
                    }
                    | scores_of(classes, result["clusters"])
                )
                report_progress(runs[-1])
    return {
        "settings": settings_record(steps, seeds),
        "true_shares": true_shares,
        "runs": runs,
        "summary": summarise(runs),
        "wall_seconds": time.perf_counter() - started,
    }


def report_progress(run: dict) -> None:
    print(
        f"{run['dataset']:>11}  {run['option']:<15}  seed {run['seed']}  accuracy {run['accuracy']:.3f}  "
        f"NMI {run['nmi']:.3f}  ARI {run['ari']:.3f}  ({run['seconds']:.1f} s)",
        flush=True,
    )


def settings_record(steps: int, seeds: list[int]) -> dict:
    return {
        "steps": steps,
        "seeds": seeds,
        "batch_size": BATCH_SIZE,
        "queue_size": QUEUE_SIZE,
        "epsilon": EPSILON,
        "temperature": TEMPERATURE,
        "learning_rate": LEARNING_RATE,
        "imbalance_ratio": IMBALANCE_RATIO,
        "n_labelled": N_LABELLED,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


METRICS = ("accuracy", "nmi", "ari", "size_tv", "clusters_used")


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and sample standard deviation (ddof = 1; 0 for one seed) of each metric per (data set,
    option), and whether the option's mean accuracy beats equipartition's by more than one
    standard deviation (the larger of the two)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["option"]), []).append(run)
    rows = []
    for (dataset, option), members in groups.items():
        row = {"dataset": dataset, "option": option, "n_seeds": len(members)}
        for metric in METRICS:
            values = np.array([member[metric] for member in members])
            row[metric] = float(values.mean())
            row[metric + "_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        row["shares"] = np.mean([member["shares"] for member in members], axis=0).tolist()
        rows.append(row)
    for row in rows:
        reference = next((r for r in rows if r["dataset"] == row["dataset"] and r["option"] == "equipartition"), None)
        if reference is None or row["option"] in ("equipartition", "k-means"):
            row["beats_equipartition"] = None
        else:
            margin = max(row["accuracy_sd"], reference["accuracy_sd"])
            row["beats_equipartition"] = bool(row["accuracy"] - reference["accuracy"] > margin)
    return rows


# ---------------------------------------------------------------------------------------------
# 8. Reports: a Markdown table, the JSON record and one plot, each written atomically
# ---------------------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``: a reader (or a
    run killed half-way) never sees a half-written file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a report is for everyone to read
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def markdown_table(summary: list[dict]) -> str:
    lines = [
        "| data set | option | setting | accuracy | NMI | ARI | size TV | clusters used | > equipartition + 1 sd |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        cells = []
        for metric in METRICS:
            digits = 1 if metric == "clusters_used" else 3
            cells.append(f"{row[metric]:.{digits}f} ± {row[metric + '_sd']:.{digits}f}")
        verdict = {None: "", True: "yes", False: "no"}[row["beats_equipartition"]]
        setting = OPTION_SETTINGS.get(row["option"], "pixels, 10 inits (scikit-learn)")
        lines.append(f"| {row['dataset']} | {row['option']} | {setting} | {' | '.join(cells)} | {verdict} |")
    return "\n".join(lines) + "\n"


def plot(record: dict) -> bytes:
    """Accuracy per option on both data sets (k-means dashed), and the learned cluster sizes
    against the true class sizes, largest first, per data set."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, datasets = record["summary"], list(record["true_shares"])
    options = [row["option"] for row in summary if row["dataset"] == datasets[0] and row["option"] != "k-means"]
    figure, axes = plt.subplots(1, 1 + len(datasets), figsize=(5 + 4 * len(datasets), 4.2))
    positions = np.arange(len(options))
    for offset, dataset in zip((-0.15, 0.15), datasets):
        rows = {row["option"]: row for row in summary if row["dataset"] == dataset}
        bars = axes[0].errorbar(
            positions + offset,
            [rows[o]["accuracy"] for o in options],
            yerr=[rows[o]["accuracy_sd"] for o in options],
            fmt="o",
            capsize=3,
            label=dataset,
        )
        axes[0].axhline(
            rows["k-means"]["accuracy"],
            color=bars[0].get_color(),
            linestyle="--",
            linewidth=1,
            label=f"k-means, {dataset}",
        )
    axes[0].set_xticks(positions, options, rotation=45, ha="right")
    axes[0].set_ylabel("clustering accuracy (mean ± sd)")
    axes[0].set_title("accuracy per option (dashed: k-means)")
    axes[0].legend(fontsize=7)
    ranks = np.arange(1, N_CLUSTERS + 1)
    empty = 1e-3  # a log scale cannot show an empty cluster: drawn at 0.001
    for axis, dataset in zip(axes[1:], datasets):
        for row in summary:
            if row["dataset"] == dataset:
                style = {"color": "grey", "linestyle": "--"} if row["option"] == "k-means" else {}
                shares = np.maximum(row["shares"], empty)
                axis.plot(ranks, shares, marker=".", linewidth=1, label=row["option"], **style)
        axis.plot(ranks, record["true_shares"][dataset], color="black", linewidth=2.5, label="true classes")
        axis.set_yscale("log")
        axis.set_xlabel("rank (largest first)")
        axis.set_ylabel("share of the samples (empty: 0.001)")
        axis.set_ylim(empty / 1.5, 1.2)
        axis.set_title(f"{dataset}: cluster sizes vs class sizes")
    axes[-1].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def write_reports(record: dict, out: Path) -> None:
    write_atomically(out / "results.json", json.dumps(record, indent=1).encode())
    header = (
        f"Self-labelling on scikit-learn's digits: {record['settings']['steps']} steps, seeds "
        f"{record['settings']['seeds']}, mean ± sd over seeds; {record['wall_seconds']:.0f} s in all.\n\n"
    )
    write_atomically(out / "results.md", (header + markdown_table(record["summary"])).encode())
    write_atomically(out / "results.png", plot(record))


# ---------------------------------------------------------------------------------------------
# 9. Command line: every argument checked, with a one-line error, before any work
# ---------------------------------------------------------------------------------------------


class OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrors(prog="train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=(*DATASETS, "both"), default="both", help="default: both")
    parser.add_argument(
        "--option",
        action="append",
        metavar="NAME",
        help=f"a marginal option, repeatable (default: all of {', '.join(OPTIONS)})",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED", help="default: 0 1 2")
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help=f"training steps per run (default {DEFAULT_STEPS})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/selfsup_digits"),
        help="folder for the reports (default runs/selfsup_digits)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.option or [] if name not in OPTIONS]
    if unknown:
        parser.error(f"unknown --option {unknown[0]!r}; choose from {', '.join(OPTIONS)}")
    if len(set(args.option or [])) != len(args.option or []):
        parser.error("--option names an option twice")
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds must be non-negative, got {args.seeds}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    for module, package in (("sklearn", "scikit-learn"), ("scipy", "scipy"), ("matplotlib", "matplotlib")):
        try:
            __import__(module)
        except ImportError:
            parser.error(f"this example needs {package}: python -m pip install -e '.[examples]'")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"cannot create --out {args.out}: {error.strerror or error}")
    if not os.access(args.out, os.W_OK):
        parser.error(f"--out {args.out} is not writable")
    args.option = args.option or list(OPTIONS)
    args.dataset = list(DATASETS) if args.dataset == "both" else [args.dataset]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    record = run_experiment(args.dataset, args.option, args.seeds, args.steps)
    write_reports(record, args.out)
    print()
    print(markdown_table(record["summary"]))
    print(f"{len(record['runs'])} runs in {record['wall_seconds']:.0f} s; reports in {args.out}/")


if __name__ == "__main__":
    main()
