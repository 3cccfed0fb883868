"""Time one CASE training step at THUMOS14 scale on the CPU, split into its parts.

One step = 16 videos x 750 snippets x 2048 features (paper settings), K = 16 clusters,
20 classes. Parts, each timed on its own inside every round (rounds interleave the parts,
medians over the rounds after warm-up):

* ``data``: reading and sampling the batch from .npy files in the CASE/BaSNet layout
  (random perturbation to T = 750, as in training) and collating it;
* ``step``: forward, losses, both labelling problems, backward and the Adam update;
* ``labelling``: the two OT labelling problems alone (SCC: 12,000 snippets x 16 clusters with
  the Gaussian rank prior and co-labelling; CCC: 16 clusters x 2), on the step's tensors;
* ``forward/backward`` = ``step`` - ``labelling``;
* peer: the official CASE ``OT`` loop on the same SCC problem (what otlabel replaces).

    python benchmarks/bench_case_step.py [--rounds 7] [--warmup 2] [--threads 0] [--json out.json]

Prints a Markdown table and writes JSON (default ``benchmarks/results/bench_case_step.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "wtal_case"))
sys.path.insert(0, str(ROOT / "tests" / "wtal_case"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _common import median, time_call, write_json  # noqa: E402
from case_reference import official_ot  # noqa: E402

from case.batching import load_batch  # noqa: E402
from case.config import load_config  # noqa: E402
from case.labeling import label_cluster_classes, label_snippet_clusters  # noqa: E402
from case.losses import (  # noqa: E402
    calibrated_cas,
    case_objective,
    cluster_classifier_logits,
    mil_video_logits,
    prototypes,
    topk_count,
    topk_foreground_labels,
)
from case.model import CASEModel  # noqa: E402

BATCH, SNIPPETS, FEATURES, CLASSES, CLUSTERS = 16, 750, 2048, 20, 16


def write_layout(root: Path, videos: int, seed: int) -> None:
    """A CASE/BaSNet-layout folder of ``videos`` training videos with THUMOS14-like lengths."""
    rng = np.random.default_rng(seed)
    classes = [f"Class{i:02d}" for i in range(CLASSES)]
    database = {}
    for split in ("train",):
        for kind in ("rgb", "flow"):
            (root / "features" / split / kind).mkdir(parents=True, exist_ok=True)
    names = [f"video_validation_{i:07d}" for i in range(videos)]
    for name in names:
        length = int(rng.integers(400, 2000))  # THUMOS14 videos: ~330 snippets on average, up to ~2,600
        for kind in ("rgb", "flow"):
            np.save(
                root / "features" / "train" / kind / f"{name}.npy",
                rng.random((length, FEATURES // 2), dtype=np.float32),
            )
        label = classes[int(rng.integers(CLASSES))]
        start = float(rng.uniform(0, length * 0.64 / 2))
        database[name] = {
            "subset": "train",
            "duration": length * 0.64,
            "annotations": [{"segment": [f"{start:.2f}", f"{start + 5:.2f}"], "label": label}],
        }
    (root / "gt.json").write_text(json.dumps({"database": database}))
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    (root / "split_train.txt").write_text("\n".join(names) + "\n")
    (root / "split_test.txt").write_text("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_case_step.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        write_layout(Path(tmp), BATCH, seed=0)
        cfg = load_config(
            ROOT / "examples" / "wtal_case" / "configs" / "thumos14.yaml",
            [f"data.root={tmp}", "data.source=basnet", f"train.batch_size={BATCH}"],
        )
        from case.data import build_dataset

        dataset = build_dataset(cfg.data, "train", "random", seed=0)
        model = CASEModel(cfg.data.feature_dim, len(dataset.class_names), cfg.model)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        cluster_fg = torch.linspace(0.05, 0.95, cfg.model.num_clusters)
        device = torch.device("cpu")
        indices = list(range(BATCH))

        def data_part() -> dict:
            return load_batch(dataset, indices, 0, device)

        batch = data_part()

        def step_part() -> None:
            outputs = model(batch["features"])
            result = case_objective(outputs, batch["label"], cluster_fg, cfg.loss, cfg.labeling)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            optimizer.step()

        # the labelling calls' inputs, exactly as one step builds them
        with torch.no_grad():
            outputs = model(batch["features"])
        n = BATCH * SNIPPETS
        cluster_logits = [o.cluster_logits.reshape(n, -1) for o in outputs]
        attentions = [o.attention for o in outputs]
        cas_probs = torch.stack([torch.softmax(o.cas, -1) for o in outputs]).mean(0)
        _, index = mil_video_logits(
            [o.cas for o in outputs], calibrated_cas(cas_probs, attentions), topk_count(SNIPPETS, 8)
        )
        fg = topk_foreground_labels(index, batch["label"], SNIPPETS).reshape(n)
        fg_scores = torch.stack(attentions).mean(0).reshape(n)

        def labelling_part() -> None:
            q_s = label_snippet_clusters(cluster_logits, fg_scores, cluster_fg, cfg.labeling.scc, cfg.labeling.fusion)
            weights = torch.stack((fg, 1 - fg), -1)
            logits = [
                cluster_classifier_logits(
                    prototypes(q_s.labels, o.embedding.reshape(n, -1)),
                    prototypes(weights, o.embedding.reshape(n, -1)),
                    10.0,
                )
                for o in outputs
            ]
            label_cluster_classes(logits, fg, cfg.labeling.ccc, cfg.labeling.fusion)

        fused = (cluster_logits[0] + cluster_logits[1]) / 2
        from otlabel import gaussian_rank_prior, sinkhorn_with_prior

        prior = gaussian_rank_prior(fg_scores, cluster_fg, cfg.labeling.scc.sigma)

        def otlabel_scc() -> None:
            sinkhorn_with_prior(fused, prior, cfg.labeling.scc.epsilon)

        def official_scc() -> None:
            official_ot(fused, prior)

        parts = {
            "data": data_part,
            "step": step_part,
            "labelling": labelling_part,
            "scc: otlabel": otlabel_scc,
            "scc: official loop": official_scc,
        }
        times: dict[str, list[float]] = {name: [] for name in parts}
        for round_ in range(args.warmup + args.rounds):
            for name, fn in parts.items():
                elapsed, _ = time_call(fn)
                if round_ >= args.warmup:
                    times[name].append(elapsed)

    med = {name: median(values) for name, values in times.items()}
    total = med["data"] + med["step"]
    rows = [
        ("data loading", med["data"]),
        ("forward/backward (step - labelling)", med["step"] - med["labelling"]),
        ("OT labelling (SCC + CCC)", med["labelling"]),
        ("whole step (data + step)", total),
    ]
    print(
        f"CASE training step at THUMOS14 scale ({BATCH} x {SNIPPETS} x {FEATURES}, K = {CLUSTERS}), "
        f"CPU, {torch.get_num_threads()} threads, median of {args.rounds} rounds\n"
    )
    print("| part | median (ms) | share of step |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {1000 * seconds:.1f} | {100 * seconds / total:.1f}% |")
    ratio = med["scc: official loop"] / med["scc: otlabel"]
    print(f"\n| SCC labelling, {n} x {CLUSTERS} | median (ms) |\n|---|---:|")
    print(f"| otlabel sinkhorn_with_prior | {1000 * med['scc: otlabel']:.2f} |")
    print(f"| official CASE loop | {1000 * med['scc: official loop']:.2f} |")
    print(
        f"\nlabelling share of the step: {100 * med['labelling'] / total:.1f}%; official loop / otlabel = {ratio:.2f}x"
    )
    record = {
        "shape": {"batch": BATCH, "snippets": SNIPPETS, "features": FEATURES, "classes": CLASSES, "clusters": CLUSTERS},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rounds": args.rounds,
        "median_seconds": med,
        "labelling_share": med["labelling"] / total,
        "official_over_otlabel": ratio,
        "all_seconds": times,
    }
    assert all(math.isfinite(v) for v in med.values())
    write_json(args.json, record)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
