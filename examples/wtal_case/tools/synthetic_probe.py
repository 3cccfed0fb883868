"""How hard is the synthetic set? Method-independent probes of its features.

Usage::

    python examples/wtal_case/tools/synthetic_probe.py [--root DIR] [--scale 0.5] [--max-snippets 512] [--seed 0]

Generates (or reuses) the synthetic set, then prints a Markdown table of *fully supervised*
linear probes, trained on the training split and scored on the test split:

* snippet foreground/background, per stream and both streams (ROC AUC, accuracy): the
  ceiling of what the features separate linearly — not what a weakly supervised method
  achieves;
* the video's classes from mean-pooled features (top-1 in the label set);
* the video classifier applied to each snippet, scored on the ground-truth class: how well
  video-level evidence alone localises (near 0.5: context and scene carry the class too).

These numbers describe the data; they were used once to fix :class:`FeatureModel`'s noise
and flow confusion (RGB ~0.8, flow ~0.9, both ~0.95 probe AUC) and are never used to tune
the data toward a localisation method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the `case` package as a script

from case.data import DataConfig, SyntheticConfig, build_dataset  # noqa: E402
from case.data.annotations import foreground_mask  # noqa: E402


def _split(cfg: DataConfig, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = build_dataset(cfg, split, "all")
    feats, fg, video = [], [], []
    for i in range(len(ds)):
        item = ds[i]
        feats.append(item["features"])
        fg.append(torch.from_numpy(foreground_mask(ds.records[i].segments, item["num_snippets"])))
        video.append(torch.full((item["num_snippets"],), i))
    labels = torch.stack([ds[i]["label"] for i in range(len(ds))])
    return torch.cat(feats), torch.cat(fg).float(), torch.cat(video), labels


def _auc(score: torch.Tensor, target: torch.Tensor) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula."""
    ranks = torch.empty_like(score)
    ranks[torch.argsort(score)] = torch.arange(1, len(score) + 1, dtype=score.dtype)
    pos = target.sum()
    neg = len(target) - pos
    return float((ranks[target > 0].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _fit(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 300) -> torch.Tensor:
    """Logistic regression weights (with bias as the last row) by Adam."""
    torch.manual_seed(0)
    xb = torch.cat([x, torch.ones(len(x), 1)], 1)
    w = torch.zeros(xb.shape[1], y.shape[1] if y.dim() == 2 else 1, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-2)
    target = y if y.dim() == 2 else y[:, None]
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xb @ w, target) + l2 * w.pow(2).sum()
        loss.backward()
        opt.step()
    return w.detach()


def probe(cfg: DataConfig) -> list[tuple[str, float, float | None]]:
    """(probe name, AUC or top-1, accuracy or None) rows; see the module docstring."""
    x_tr, y_tr, v_tr, l_tr = _split(cfg, "train")
    x_te, y_te, v_te, l_te = _split(cfg, "test")
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    half = x_tr.shape[1] // 2
    rows: list[tuple[str, float, float | None]] = []
    for name, cols in (("RGB", slice(0, half)), ("flow", slice(half, None)), ("RGB + flow", slice(None))):
        w = _fit(x_tr[:, cols], y_tr, 1e-4)
        xb = torch.cat([x_te[:, cols], torch.ones(len(x_te), 1)], 1)
        score = (xb @ w)[:, 0]
        rows.append((f"snippet fg/bg, {name}", _auc(score, y_te), float(((score > 0).float() == y_te).float().mean())))

    def pooled(x: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
        return torch.stack([x[v == i].mean(0) for i in range(n)])

    w = _fit(pooled(x_tr, v_tr, len(l_tr)), l_tr, 1e-3)
    xb = torch.cat([pooled(x_te, v_te, len(l_te)), torch.ones(len(l_te), 1)], 1)
    top1 = l_te[torch.arange(len(l_te)), (xb @ w).argmax(1)].mean()
    rows.append(("video classes from mean features (top-1)", float(top1), None))
    snippet = torch.cat([x_te, torch.ones(len(x_te), 1)], 1) @ w
    gt = l_te[v_te]
    score = (snippet * gt).sum(1) / gt.sum(1)
    rows.append(("video classifier per snippet, GT class (fg AUC)", _auc(score, y_te), None))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/synthetic-probe")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--max-snippets", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    synthetic = SyntheticConfig(seed=args.seed, scale=args.scale, max_snippets=args.max_snippets)
    cfg = DataConfig(root=args.root, synthetic=synthetic)
    np.set_printoptions(precision=3)
    print("| probe (supervised, linear; train → test) | AUC / top-1 | accuracy |\n|---|---|---|")
    for name, value, acc in probe(cfg):
        print(f"| {name} | {value:.3f} | {'' if acc is None else f'{acc:.3f}'} |")


if __name__ == "__main__":
    main()
