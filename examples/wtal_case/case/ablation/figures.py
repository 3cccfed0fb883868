"""The ablation's figures: mAP against tIoU or against a swept value, and H(P̄^S) over training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..viz import save_figure
from .grid import Table
from .runner import RunRecord
from .statistics import Summary

__all__ = ["table_figure", "entropy_figure"]


def _figure(width: float = 5.0, height: float = 3.2) -> Figure:
    return Figure(figsize=(width, height))


def table_figure(folder: Path, table: Table, summaries: Mapping[str, Summary], tiou: Sequence[float]) -> Path | None:
    """A sweep: average mAP against the swept value; otherwise mAP against tIoU, one line per row."""
    rows = [r for r in table.rows if r.label in summaries]
    if not rows or (table.sweep and len(rows) < 2):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    if table.sweep:
        xs = np.asarray([r.x for r in rows], dtype=np.float64)
        means = np.asarray([100 * summaries[r.label].avg_mean for r in rows])
        stds = np.asarray([100 * summaries[r.label].avg_std for r in rows])
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3)
        ax.set_xscale("log", base=2 if table.sweep == "K" else 10)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(table.sweep)
        ax.set_ylabel("average mAP (%), mean ± std")
    else:
        for r in rows:
            s = summaries[r.label]
            mean, std = 100 * np.asarray(s.mean), 100 * np.asarray(s.std)
            (line,) = ax.plot(tiou, mean, marker="o", markersize=3, label=r.label)
            ax.fill_between(tiou, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("tIoU")
        ax.set_ylabel("mAP (%), mean ± std")
        ax.legend(fontsize=7)
    ax.set_title(table.title, fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(fig, folder / f"{table.key}.png")


def entropy_figure(folder: Path, table: Table, records: Sequence[RunRecord]) -> Path | None:
    """H(P̄^S) over training for each row of ``table`` (mean over seeds)."""
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for row in table.rows:
        curves = [
            r.result.get("H_PS_curve") for r in records if r.variant == row.variant and r.result.get("H_PS_curve")
        ]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        steps = np.asarray([s for s, _ in curves[0][:length]])
        values = np.mean([[v for _, v in c[:length]] for c in curves], axis=0)
        ax.plot(steps, values, label=row.label)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(r"$H(\bar P^S)$ (nats), mean over seeds")
    ax.set_title("Cluster usage during training", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, folder / "entropy.png")
