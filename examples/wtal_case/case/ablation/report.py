"""The ablation's report: ``report.md``, ``results.json`` and the figures, from collected results."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text
from ..config import Config, load_config
from .figures import entropy_figure, table_figure
from .grid import ENTROPY_TAIL, Table
from .runner import RunRecord
from .statistics import AblationResults, TableResult, collect_results

__all__ = ["render_markdown", "results_json", "write_report"]


def _pm(mean: float, std: float, n: int, scale: float = 100.0, digits: int = 1) -> str:
    if n < 2:
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _protocol(cfg: Config, base_config: Path, seeds: Sequence[int], overrides: Sequence[str]) -> list[str]:
    d, s = cfg.data, cfg.data.synthetic
    extra = (" with " + ", ".join(f"`{o}`" for o in overrides)) if overrides else ""
    data = (
        f"synthetic THUMOS14-like set (generator seed {s.seed}, scale {s.scale}, videos capped at "
        f"{s.max_snippets} snippets, {s.num_classes} classes)"
        if d.source == "synthetic"
        else f"`{d.source}` data in `{d.root}`"
    )
    return [
        "## Protocol",
        "",
        "Fixed before any result was seen; nothing was tuned afterwards.",
        "",
        f"* **Data**: {data}; the training split trains, the test split scores.",
        f"* **Base configuration**: `{base_config.name}`{extra} — T = {d.num_segments}, batch {cfg.train.batch_size}, "
        f"{cfg.train.steps} steps, Adam lr {cfg.optim.lr:g}, hidden width {cfg.model.hidden_dim}, "
        f"K = {cfg.model.num_clusters}, σ = {cfg.labeling.scc.sigma:g}, λ_S = {cfg.loss.lambda_scc:g}, "
        f"λ_C = {cfg.loss.lambda_ccc:g}, ε = {cfg.labeling.scc.epsilon:g} (the paper's ε = 20), 3 Sinkhorn iterations. "
        "Each variant changes only the settings named in its row.",
        f"* **Seeds**: {', '.join(map(str, seeds))} (`train.seed`: initialisation, batch order and snippet "
        "sampling; the data set is the same for every run). Every run is trained from scratch and its final "
        "weights are evaluated: no model selection, no early stopping.",
        f"* **Evaluation**: every snippet of every test video (`eval.sampling={cfg.eval.sampling}`), the default "
        "post-processing (class threshold 0.25, 9 proposal thresholds, upsampling 24, OIC λ = 0.15, γ = 0.2, "
        "the official soft NMS), the foreground named by the row (P^A attention, P^T cluster, P^M mixture), "
        "mAP by the ActivityNet protocol at tIoU "
        f"{', '.join(f'{t:g}' for t in cfg.eval.tiou)} and their average.",
        "* **Cells**: mAP in percent, mean ± sample standard deviation (ddof = 1) over the seeds.",
        "* **Orderings**: an ordering the paper reports (a < b) is judged on the average mAP with "
        "d = mean(b) − mean(a) and se = √(s_a²/n_a + s_b²/n_b): *agrees* when d > 2·se, *disagrees* when "
        "d < −2·se, *unresolved* (within seed noise) otherwise.",
        f"* **H(P̄^S)** (Table 5): entropy (nats) of the clustering softmax averaged over a batch, as logged "
        f"during training, averaged over the last {ENTROPY_TAIL:.0%} of the steps; its maximum is log K.",
        "",
    ]


def _format_seconds(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {sec:02d} s" if hours else f"{minutes} min {sec:02d} s"


def _table_lines(result: TableResult, tiou: Sequence[float], cfg: Config, figure: Path | None) -> list[str]:
    table = result.table
    lines = [f"## {table.title}", "", table.paper, ""]
    header = "| | " + " | ".join(f"{t:g}" for t in tiou) + " | avg |" + (" H(P̄^S) |" if table.entropy else "")
    lines += [header, "|---" * (len(tiou) + 2 + int(table.entropy)) + "|"]
    for r in result.rows:
        s = r.summary
        cells = [_pm(m, sd, s.n) for m, sd in zip(s.mean, s.std, strict=True)]
        cells.append(f"**{_pm(s.avg_mean, s.avg_std, s.n)}**")
        if table.entropy:
            cells.append("–" if r.entropy is None else _pm(*r.entropy, scale=1.0, digits=2))
        lines.append(f"| {r.row.label} | " + " | ".join(cells) + " |")
    lines.append("")
    if table.entropy:
        lines += [f"H(P̄^S) is at most log K = {math.log(cfg.model.num_clusters):.2f} nats here.", ""]
    lines += [f"* {o.sentence()}" for o in result.orderings]
    if table.expected:
        lines.append("")
    if figure is not None:
        lines += [f"![{table.title}]({figure.name})", ""]
    return lines


def render_markdown(
    results: AblationResults,
    figures: Mapping[str, Path],
    cfg: Config,
    *,
    base_config: Path,
    seeds: Sequence[int],
    command: str,
    overrides: Sequence[str] = (),
    wall_seconds: float | None = None,
    invocations: int = 1,
) -> str:
    """The report as Markdown; ``figures`` maps a table key (and ``"entropy"``) to its PNG."""
    done = results.done
    where = "the synthetic THUMOS14-like set" if cfg.data.source == "synthetic" else f"`{cfg.data.root}`"
    lines = [f"# CASE ablations on {where}", ""]
    lines += [
        f"{len(done)} runs ({len({r.variant for r in done})} training configurations × {len(seeds)} seeds), trained by",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    if wall_seconds is not None:
        train_total = sum(r.result.get("train_seconds", 0.0) for r in done)
        spread = f" ({invocations} invocations)" if invocations > 1 else ""
        lines += [
            f"Wall time{spread}: {_format_seconds(wall_seconds)}; training alone, summed over the runs: "
            f"{_format_seconds(train_total)}.",
            "",
        ]
    if results.problems:
        details = "; ".join(f"{r.variant} seed {r.seed}: {r.error or r.status}" for r in results.problems)
        lines += ["**Incomplete**: " + details, ""]
    lines += _protocol(cfg, base_config, seeds, overrides)
    for result in results.tables:
        lines += _table_lines(result, results.tiou, cfg, figures.get(result.table.key))
    if "entropy" in figures:
        lines += [
            "## Cluster usage during training (Table 5 variants)",
            "",
            f"![H(P̄^S) over training]({figures['entropy'].name})",
            "",
        ]
    judged = [(r.table, o) for r in results.tables for o in r.orderings]
    if judged:
        counts = results.verdicts()
        lines += [
            "## Orderings of the paper, checked",
            "",
            f"{counts['agrees']} agree, {counts['disagrees']} disagree, {counts['unresolved']} are unresolved "
            "(within seed noise):",
            "",
            *[f"* {table.title.split(':')[0]}: {o.sentence()}" for table, o in judged],
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def results_json(results: AblationResults, seeds: Sequence[int], wall_seconds: float | None) -> dict[str, Any]:
    """``results.json``: every table's rows and every run's results."""
    runs = {
        f"{r.variant}-seed{r.seed}": {
            "status": r.status,
            "error": r.error,
            "modes": r.result.get("modes"),
            "H_PS_usage": r.result.get("H_PS_usage"),
            "train_seconds": r.result.get("train_seconds"),
        }
        for r in results.records
    }
    return {
        "seeds": list(seeds),
        "tiou": results.tiou,
        "tables": {t.table.key: [r.to_json() for r in t.rows] for t in results.tables},
        "runs": runs,
        "wall_seconds": wall_seconds,
    }


def write_report(
    folder: str | Path,
    tables: Sequence[Table],
    records: Sequence[RunRecord],
    *,
    base_config: str | Path,
    seeds: Sequence[int],
    command: str,
    overrides: Sequence[str] = (),
    wall_seconds: float | None = None,
    invocations: int = 1,
) -> Path:
    """Write ``report.md``, ``results.json`` and the PNG figures into ``folder``.

    The numbers are collected first (:func:`collect_results`), then drawn (figures),
    serialised (:func:`results_json`) and rendered (:func:`render_markdown`).

    Parameters
    ----------
    folder : path
        Created if missing; existing files of the same names are replaced (atomically).
    tables, records : as returned by :func:`run_ablation`
    base_config : path
        The base configuration (described in the report's protocol, with ``overrides``).
    seeds : sequence of int
    command : str
        The command that trained the runs, quoted in the report.
    overrides : sequence of str
        The ``--set`` items every run received.
    wall_seconds : float, optional
        Wall time of the invocations that trained the runs, and their number.
    invocations : int

    Returns
    -------
    Path
        The report file.
    """
    folder = Path(folder)
    base_config = Path(base_config)
    cfg = load_config(base_config, overrides)
    results = collect_results(tables, records, cfg.eval.tiou)
    figures = {
        r.table.key: figure
        for r in results.tables
        if (figure := table_figure(folder, r.table, r.summaries, results.tiou)) is not None
    }
    entropy_tables = [t for t in tables if t.entropy]
    if entropy_tables and (figure := entropy_figure(folder, entropy_tables[0], records)) is not None:
        figures["entropy"] = figure
    atomic_write_json(folder / "results.json", results_json(results, seeds, wall_seconds))
    markdown = render_markdown(
        results,
        figures,
        cfg,
        base_config=base_config,
        seeds=seeds,
        command=command,
        overrides=overrides,
        wall_seconds=wall_seconds,
        invocations=invocations,
    )
    report = folder / "report.md"
    atomic_write_text(report, markdown)
    return report
