r"""The reproduction report: CASE's ablations (paper Tables 4–7, Fig. 3) and a σ sweep, over seeds.

``examples/wtal_case/ablate.py`` is the command line; this module holds the grid, the runner
that trains (or finds) every run, the test-time evaluations, and the report — its numbers
collected first (:func:`collect_results`), then drawn, serialised (:func:`results_json`) and
rendered (:func:`render_markdown`) by :func:`write_report`.

**Grid.** A *variant* is one training configuration: the base config (``configs/ablation.yaml``)
plus ``--set`` overrides (:data:`VARIANTS`). A *row* of a table is a variant evaluated with
one test-time foreground (P^A, P^T or P^M, :data:`FOREGROUND_LABELS`). Tables share runs: the
full model appears in every table, and Table 7 and the last two rows of Table 4 only
post-process its predictions differently, so they train nothing.

**Protocol** (fixed before any result was seen, and printed in the report):

* every variant is trained once per seed (``train.seed``; the data set is the same for all),
  from scratch, for the same number of steps, and its *final* weights are evaluated (no model
  selection, no early stopping);
* evaluation: every snippet of every test video, the default post-processing, mAP by the
  ActivityNet protocol at tIoU 0.1:0.1:0.7 and their average;
* a cell is the mean ± sample standard deviation (ddof = 1) over seeds;
* an ordering the paper reports (``a < b``) is judged on the average mAP: with the
  difference of means d = mean(b) − mean(a) and its standard error
  se = √(s_a²/n_a + s_b²/n_b), it *agrees* when d > 2·se, *disagrees* when d < −2·se, and is
  *unresolved* (within seed noise) otherwise;
* H(P̄^S) (Table 5) is the entropy of the clustering softmax averaged over a batch, as
  logged during training, averaged over the last 10% of the steps.

**Caching.** Each run lives in ``<out>/runs/<variant>-seed<seed>/`` (a train.py run folder);
a finished run (``final.pt`` and ``metrics.json``) is reused, an interrupted one is resumed
from its latest checkpoint (bit-identical on the CPU), and a folder trained with another
configuration is refused. Test-time evaluations are cached in ``ablation.json`` beside them.
A killed ablation therefore continues where it stopped when run again.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .atomic import atomic_write_json, atomic_write_text
from .config import Config, ConfigError, differences_from, load_config, parse_yaml
from .evaluation import evaluate_checkpoint
from .trainer import train
from .viz import save_figure

__all__ = [
    "AblationError",
    "Variant",
    "Row",
    "Table",
    "VARIANTS",
    "TABLES",
    "FOREGROUND_LABELS",
    "plan",
    "run_path",
    "run_finished",
    "ensure_trained",
    "ensure_evaluated",
    "summarize",
    "compare",
    "run_ablation",
    "RowResult",
    "Ordering",
    "TableResult",
    "AblationResults",
    "collect_results",
    "render_markdown",
    "results_json",
    "write_report",
]


class AblationError(RuntimeError):
    """The ablation cannot proceed (a run folder holds another configuration, a bad selection)."""


@dataclass(frozen=True)
class Variant:
    """One training configuration: ``--set`` overrides on top of the base config."""

    name: str
    overrides: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Row:
    """One row of a table: a variant, post-processed with one test-time foreground.

    ``x`` is the swept value of a sweep (K, σ), None otherwise.
    """

    label: str
    variant: str
    mode: str
    x: float | None = None


@dataclass(frozen=True)
class Table:
    """A table of the report.

    Attributes
    ----------
    key, title : str
        Identifier (``--tables``) and heading.
    paper : str
        What the paper reports for it (or why there is no paper counterpart).
    rows : tuple of Row
    expected : tuple of (str, str)
        Orderings the paper reports, as (lower row label, higher row label) on average mAP.
    entropy : bool
        Add the H(P̄^S) column (Table 5).
    sweep : str or None
        Name of the swept quantity: the report plots average mAP against ``Row.x``.
    """

    key: str
    title: str
    paper: str
    rows: tuple[Row, ...]
    expected: tuple[tuple[str, str], ...] = ()
    entropy: bool = False
    sweep: str | None = None


def _variants(*items: Variant) -> dict[str, Variant]:
    return {v.name: v for v in items}


#: Every training configuration of the report (overrides relative to ``configs/ablation.yaml``,
#: whose defaults are full CASE: SCC with the rank prior (Eq. 12), CCC with the estimated β
#: (Eq. 13), soft OT labels, K = 16, σ = 10).
VARIANTS: dict[str, Variant] = _variants(
    Variant("full", (), "CASE: SCC (Eq. 12) + CCC (Eq. 13), soft OT labels, K = 16, σ = 10"),
    Variant("baseline", ("labeling.scc.enabled=false", "labeling.ccc.enabled=false"), "no SCC, no CCC"),
    Variant("scc", ("labeling.ccc.enabled=false",), "SCC without CCC"),
    Variant("ot-hard", ("labeling.scc.form=hard", "labeling.ccc.form=hard"), "hard OT labels"),
    Variant("noot-soft", ("labeling.scc.method=argmax", "labeling.ccc.method=argmax"), "no OT, soft labels"),
    Variant(
        "noot-hard",
        (
            "labeling.scc.method=argmax",
            "labeling.ccc.method=argmax",
            "labeling.scc.form=hard",
            "labeling.ccc.form=hard",
        ),
        "no OT, hard labels",
    ),
    Variant("eq10", ("labeling.scc.prior=none",), "SCC without the rank prior (Eq. 10)"),
    Variant("eq9", ("labeling.ccc.marginal=uniform",), "CCC with a uniform β (Eq. 9)"),
    Variant("eq10-eq9", ("labeling.scc.prior=none", "labeling.ccc.marginal=uniform"), "Eq. 10 and Eq. 9"),
    Variant("k4", ("model.num_clusters=4",), "K = 4"),
    Variant("k8", ("model.num_clusters=8",), "K = 8"),
    Variant("k32", ("model.num_clusters=32",), "K = 32"),
    Variant("sigma0.1", ("labeling.scc.sigma=0.1",), "σ = 0.1"),
    Variant("sigma0.3", ("labeling.scc.sigma=0.3",), "σ = 0.3"),
    Variant("sigma1", ("labeling.scc.sigma=1.0",), "σ = 1"),
    # issue 12 (ours): Eq. 13's β smoothed over the steps, or relaxed into a KL penalty
    Variant(
        "beta-ema",
        ("labeling.ccc.marginal=ema", "labeling.ccc.marginal_momentum=0.9"),
        "CCC with a moving average of Eq. 13's β (m = 0.9)",
    ),
    Variant(
        "beta-relaxed",
        ("labeling.ccc.marginal=relaxed", "labeling.ccc.marginal_penalty=1.0"),
        "CCC with Eq. 13's β as a KL-penalised marginal (τ = 1)",
    ),
)

#: Test-time foreground modes and how the tables name them.
FOREGROUND_LABELS = {"attention": "P^A", "cluster": "P^T", "mixed": "P^M"}

_T4 = ("Baseline", "+ SCC", "+ SCC + CCC", "+ SCC + CCC + clustering-assisted testing")
_T5 = ("OT, soft (CASE)", "OT, hard", "without OT, soft", "without OT, hard")
_T6 = ("Eq. 12 + Eq. 13 (CASE)", "Eq. 10 + Eq. 13", "Eq. 12 + Eq. 9", "Eq. 10 + Eq. 9")
_T7 = ("P^A", "P^T", "P^M (CASE)")

#: The report's tables, in order.
TABLES: tuple[Table, ...] = (
    Table(
        "table4",
        "Table 4: contribution of each component",
        "Paper, THUMOS14: each component adds to the average mAP "
        "(baseline < + SCC < + SCC + CCC < + clustering-assisted testing).",
        (
            Row(_T4[0], "baseline", "attention"),
            Row(_T4[1], "scc", "attention"),
            Row(_T4[2], "full", "attention"),
            Row(_T4[3], "full", "mixed"),
        ),
        expected=((_T4[0], _T4[1]), (_T4[1], _T4[2]), (_T4[2], _T4[3])),
    ),
    Table(
        "table5",
        "Table 5: pseudo-labels with and without optimal transport, soft and hard",
        "Paper: CASE's choice — soft labels solved by OT — is the best of the four; the paper "
        "reports H(P̄^S) beside the mAP to show how evenly the clusters are used.",
        (
            Row(_T5[0], "full", "mixed"),
            Row(_T5[1], "ot-hard", "mixed"),
            Row(_T5[2], "noot-soft", "mixed"),
            Row(_T5[3], "noot-hard", "mixed"),
        ),
        expected=((_T5[1], _T5[0]), (_T5[2], _T5[0]), (_T5[3], _T5[0])),
        entropy=True,
    ),
    Table(
        "table6",
        "Table 6: the priors of the two labelling problems",
        "Paper: CASE's choice — the rank prior in SCC (Eq. 12 rather than Eq. 10) and the estimated "
        "foreground share in CCC (Eq. 13 rather than the uniform Eq. 9) — is the best.",
        (
            Row(_T6[0], "full", "mixed"),
            Row(_T6[1], "eq10", "mixed"),
            Row(_T6[2], "eq9", "mixed"),
            Row(_T6[3], "eq10-eq9", "mixed"),
        ),
        expected=((_T6[1], _T6[0]), (_T6[2], _T6[0]), (_T6[3], _T6[0])),
    ),
    Table(
        "table7",
        "Table 7: the foreground used at test time (same trained models)",
        "Paper: CASE's choice, the mixture P^M = ½P^A + ½P^T, is better than either alone.",
        (Row(_T7[0], "full", "attention"), Row(_T7[1], "full", "cluster"), Row(_T7[2], "full", "mixed")),
        expected=((_T7[0], _T7[2]), (_T7[1], _T7[2])),
    ),
    Table(
        "clusters",
        "Fig. 3: number of clusters K",
        "Paper: the default K = 16 on THUMOS14 (Fig. 3 sweeps K); no ordering is tested here.",
        (
            Row("K = 4", "k4", "mixed", 4),
            Row("K = 8", "k8", "mixed", 8),
            Row("K = 16 (CASE)", "full", "mixed", 16),
            Row("K = 32", "k32", "mixed", 32),
        ),
        sweep="K",
    ),
    Table(
        "sigma",
        "Width σ of the rank prior (ours)",
        "No paper counterpart: the paper and the official code use σ = 10, which makes the prior "
        "nearly flat (it varies by under 0.5% over ranks in (0, 1]); smaller σ make it bite.",
        (
            Row("σ = 0.1", "sigma0.1", "mixed", 0.1),
            Row("σ = 0.3", "sigma0.3", "mixed", 0.3),
            Row("σ = 1", "sigma1", "mixed", 1.0),
            Row("σ = 10 (CASE)", "full", "mixed", 10.0),
        ),
        sweep="σ",
    ),
    Table(
        "beta",
        "CCC's foreground share β: per batch, smoothed, relaxed (ours)",
        "No paper counterpart: the paper and the official code estimate β from each batch (Eq. 13); "
        "a moving average over the steps (m = 0.9) and a KL-relaxed marginal (τ = 1) are otlabel's "
        "alternatives (issue 12); no ordering is tested.",
        (
            Row("Eq. 13 per batch (CASE)", "full", "mixed"),
            Row("moving average, m = 0.9", "beta-ema", "mixed"),
            Row("relaxed, τ = 1", "beta-relaxed", "mixed"),
        ),
    ),
)

#: H(P̄^S) is averaged over this final fraction of the logged steps.
ENTROPY_TAIL = 0.1


# --------------------------------------------------------------------------- planning


def plan(
    tables: Sequence[str] | None = None, variants: Sequence[str] | None = None
) -> tuple[list[Table], list[str], dict[str, list[str]]]:
    """The tables, variants and test-time modes of a (possibly restricted) ablation.

    Parameters
    ----------
    tables : sequence of str, optional
        Table keys to produce (default: all of :data:`TABLES`).
    variants : sequence of str, optional
        Train only these variants; rows that need another one are left out.

    Returns
    -------
    (tables, variants, modes)
        The tables with at least one row left (rows restricted), the variants to train in
        run order, and for each variant the test-time modes its rows need.

    Raises
    ------
    AblationError
        An unknown table or variant name.
    """
    known_tables = {t.key: t for t in TABLES}
    for name in tables or ():
        if name not in known_tables:
            raise AblationError(f"unknown table {name!r}; choose from {', '.join(known_tables)}")
    for name in variants or ():
        if name not in VARIANTS:
            raise AblationError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    chosen = [t for t in TABLES if not tables or t.key in tables]
    allowed = set(variants) if variants else set(VARIANTS)
    kept: list[Table] = []
    modes: dict[str, list[str]] = {}
    for table in chosen:
        rows = tuple(r for r in table.rows if r.variant in allowed)
        if not rows:
            continue
        labels = {r.label for r in rows}
        expected = tuple(p for p in table.expected if p[0] in labels and p[1] in labels)
        kept.append(dataclasses.replace(table, rows=rows, expected=expected))
        for r in rows:
            modes.setdefault(r.variant, [])
            if r.mode not in modes[r.variant]:
                modes[r.variant].append(r.mode)
    order = [v for v in VARIANTS if v in modes]
    return kept, order, modes


def run_path(out: Path, variant: str, seed: int) -> Path:
    """The run folder of ``variant`` trained with ``seed``."""
    return Path(out) / "runs" / f"{variant}-seed{seed}"


def run_config(base: str | Path, overrides: Sequence[str], variant: str, seed: int) -> Config:
    """The resolved configuration of one run: base config, user overrides, the variant's, the seed."""
    items = [*overrides, *VARIANTS[variant].overrides, f"train.seed={seed}", "train.progress=false"]
    return load_config(base, items)


# --------------------------------------------------------------------------- running


def run_finished(run: Path) -> bool:
    """Whether ``run`` holds a finished train.py run (final checkpoint and metrics)."""
    return (run / "checkpoints" / "final.pt").is_file() and (run / "metrics.json").is_file()


def ensure_trained(cfg: Config, run: Path) -> bool:
    """Train ``cfg`` into ``run`` unless it is already there; resume an interrupted run.

    Returns
    -------
    bool
        True if training (or re-evaluation) ran, False if the finished run was reused.

    Raises
    ------
    AblationError
        ``run`` holds a run of another configuration.
    """
    config_file = run / "config.yaml"
    if config_file.is_file():
        try:
            differences = differences_from(parse_yaml(config_file.read_text(encoding="utf-8")), cfg)
        except (OSError, UnicodeDecodeError, ConfigError) as err:
            raise AblationError(
                f"{config_file} cannot be read ({err}); delete the folder or choose another --out"
            ) from None
        if differences:
            raise AblationError(
                f"{run} holds a run of another configuration ({'; '.join(differences[:5])}); delete the folder "
                "or choose another --out"
            )
    if run_finished(run):
        return False
    (run / "ablation_error.txt").unlink(missing_ok=True)  # a failure of an earlier attempt, retried now
    train(cfg, run, resume=run.is_dir() and any(run.iterdir()))
    return True


def _usage_entropy(log_lines: Sequence[str]) -> tuple[float | None, list[tuple[int, float]]]:
    """Mean H(P̄^S) over the last :data:`ENTROPY_TAIL` of the logged steps, and the whole curve."""
    curve = []
    for line in log_lines:
        if not line.strip():
            continue
        record = json.loads(line)
        value = record.get("H_PS_usage")
        if isinstance(value, (int, float)) and math.isfinite(value):
            curve.append((int(record["step"]), float(value)))
    if not curve:
        return None, []
    tail = curve[-max(1, math.ceil(ENTROPY_TAIL * len(curve))) :]
    return float(np.mean([v for _, v in tail])), curve


def ensure_evaluated(cfg: Config, run: Path, modes: Sequence[str]) -> dict[str, Any]:
    """The test-time results of a finished run for ``modes``, computed once and cached.

    The training's own ``metrics.json`` is the result of its ``postprocess.foreground_mode``;
    other modes post-process the final checkpoint's test predictions again (one forward pass
    for all of them). Results are cached in ``<run>/ablation.json``.

    Returns
    -------
    dict
        ``{"modes": {mode: {"tiou", "mAP", "average"}}, "H_PS_usage": float or None,
        "H_PS_curve": [[step, value], ...], "train_seconds": float}``.
    """
    cache_path = run / "ablation.json"
    cached = json.loads(cache_path.read_text()) if cache_path.is_file() else None
    cache: dict[str, Any] = copy.deepcopy(cached) if cached is not None else {}
    results = dict(cache.get("modes", {}))
    missing = [m for m in modes if m not in results]
    if cfg.postprocess.foreground_mode in missing:
        results[cfg.postprocess.foreground_mode] = json.loads((run / "metrics.json").read_text())
        missing.remove(cfg.postprocess.foreground_mode)
    if missing:
        results.update(_evaluate_modes(run, missing))
    if "H_PS_usage" not in cache or "train_seconds" not in cache:
        log_lines = (run / "log.jsonl").read_text().splitlines()
        entropy, curve = _usage_entropy(log_lines)
        last = json.loads(log_lines[-1])
        cache.update(H_PS_usage=entropy, H_PS_curve=curve, train_seconds=float(last.get("seconds", float("nan"))))
    cache["modes"] = results
    if cache != cached:
        atomic_write_json(cache_path, cache)
    return cache


def _evaluate_modes(run: Path, modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The final checkpoint scored with each foreground mode (one forward pass; the run's own setup)."""
    scored = evaluate_checkpoint(run / "checkpoints" / "final.pt", modes=modes)
    return {mode: metrics.to_dict() for mode, metrics in scored.metrics.items()}


@dataclass
class RunRecord:
    """What the report needs of one (variant, seed) run."""

    variant: str
    seed: int
    path: Path
    status: str  # "trained", "cached", "failed", "missing"
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def run_ablation(
    base_config: str | Path,
    out: str | Path,
    seeds: Sequence[int],
    *,
    tables: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    train_missing: bool = True,
    log: Callable[[str], None] = print,
    on_run: Callable[[RunRecord], None] | None = None,
) -> tuple[list[Table], list[RunRecord]]:
    """Train (or find) every run of the grid and evaluate it; a failed run is recorded, not fatal.

    Parameters
    ----------
    base_config : path
        The configuration every variant starts from (``configs/ablation.yaml``).
    out : path
        Folder of the run folders (``<out>/runs/<variant>-seed<seed>``).
    seeds : sequence of int
        ``train.seed`` of the repetitions.
    tables, variants : sequence of str, optional
        Restrict the grid (:func:`plan`).
    overrides : sequence of str
        ``--set`` items applied to every run (before the variant's own).
    train_missing : bool
        False: only collect finished runs (``--report-only``); unfinished ones are "missing".
    log : callable
        Receives one progress line per run.
    on_run : callable, optional
        Receives each run's :class:`RunRecord` as soon as it is done (``ablate.py`` records
        the wall time of the runs it trains with it).

    Returns
    -------
    (tables, records)
    """
    chosen, order, modes = plan(tables, variants)
    out = Path(out)
    jobs = [(seed, v) for seed in seeds for v in order]  # seed-major: every row gets a first seed early
    configs = {(seed, v): run_config(base_config, overrides, v, seed) for seed, v in jobs}
    records: list[RunRecord] = []
    trained_seconds: list[float] = []
    for n, (seed, variant) in enumerate(jobs, 1):
        path = run_path(out, variant, seed)
        cfg = configs[(seed, variant)]
        record = RunRecord(variant, seed, path, "cached")
        started = time.perf_counter()
        try:
            if not run_finished(path) and not train_missing:
                record.status = "missing"
            else:
                if ensure_trained(cfg, path):
                    record.status = "trained"
                record.result = ensure_evaluated(cfg, path, modes[variant])
        except AblationError:
            raise
        except Exception as err:  # a diverged or broken run must not lose the others
            record.status, record.error = "failed", f"{type(err).__name__}: {err}"
            atomic_write_text(path / "ablation_error.txt", traceback.format_exc())
        seconds = time.perf_counter() - started
        if record.status == "trained":
            trained_seconds.append(seconds)
        eta = ""
        if trained_seconds:
            left = sum(1 for s, v in jobs[n:] if not run_finished(run_path(out, v, s)))
            eta = f"; about {left * float(np.mean(trained_seconds)) / 60:.0f} min left for {left} runs"
        detail = record.error or ", ".join(
            f"{FOREGROUND_LABELS.get(m, m)} {100 * record.result['modes'][m]['average']:.1f}"
            for m in modes[variant]
            if m in record.result.get("modes", {})
        )
        log(f"[{n:3d}/{len(jobs)}] {variant} seed {seed}: {record.status} in {seconds:.0f} s ({detail}){eta}")
        records.append(record)
        if on_run is not None:
            on_run(record)
    return chosen, records


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation over seeds of one table row."""

    n: int
    mean: list[float]  # per tIoU
    std: list[float]
    avg_mean: float
    avg_std: float


def summarize(results: Sequence[Mapping[str, Any]]) -> Summary:
    """Mean ± sample std (ddof = 1; 0 for a single run) of mAP per tIoU and of the average.

    Examples
    --------
    >>> s = summarize([{"mAP": [0.5, 0.3], "average": 0.4}, {"mAP": [0.7, 0.1], "average": 0.4}])
    >>> [round(v, 6) for v in s.mean], round(s.std[0], 6), s.avg_std
    ([0.6, 0.2], 0.141421, 0.0)
    """
    if not results:
        raise ValueError("summarize needs at least one result")
    maps = np.asarray([r["mAP"] for r in results], dtype=np.float64)
    avgs = np.asarray([r["average"] for r in results], dtype=np.float64)
    ddof = 1 if len(results) > 1 else 0
    return Summary(
        len(results),
        maps.mean(0).tolist(),
        maps.std(0, ddof=ddof).tolist(),
        float(avgs.mean()),
        float(avgs.std(ddof=ddof)),
    )


def compare(lower: Summary, higher: Summary) -> tuple[str, float, float]:
    """Judge the expected ordering ``lower < higher`` on average mAP (see the protocol).

    Returns
    -------
    (verdict, d, se)
        ``"agrees"`` if d > 2·se, ``"disagrees"`` if d < −2·se, else ``"unresolved"``;
        d = mean(higher) − mean(lower) and se its standard error. With a single seed on
        either side se is undefined (0 spread): the verdict is then ``"unresolved"``.

    Examples
    --------
    >>> a = summarize([{"mAP": [0.1], "average": 0.1}, {"mAP": [0.12], "average": 0.12}])
    >>> b = summarize([{"mAP": [0.3], "average": 0.3}, {"mAP": [0.32], "average": 0.32}])
    >>> compare(a, b)[0], compare(b, a)[0]
    ('agrees', 'disagrees')
    """
    d = higher.avg_mean - lower.avg_mean
    if lower.n < 2 or higher.n < 2:
        return "unresolved", d, float("nan")
    se = math.sqrt(lower.avg_std**2 / lower.n + higher.avg_std**2 / higher.n)
    if d > 2 * se:
        return "agrees", d, se
    if d < -2 * se:
        return "disagrees", d, se
    return "unresolved", d, se


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RowResult:
    """One row of a table over seeds: its mAP summary and, where the table reports it, H(P̄^S).

    ``entropy`` is (mean, sample std, number of runs) of the runs' H(P̄^S), or None.
    """

    row: Row
    summary: Summary
    entropy: tuple[float, float, int] | None = None

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        entry: dict[str, Any] = {
            "label": self.row.label,
            "variant": self.row.variant,
            "mode": self.row.mode,
            "x": self.row.x,
            "n": s.n,
            "mAP_mean": s.mean,
            "mAP_std": s.std,
            "average_mean": s.avg_mean,
            "average_std": s.avg_std,
        }
        if self.entropy is not None:
            entry.update(H_PS_usage_mean=self.entropy[0], H_PS_usage_std=self.entropy[1])
        return entry


@dataclass(frozen=True)
class Ordering:
    """An ordering the paper reports (``lower`` < ``higher`` on average mAP), judged by :func:`compare`."""

    lower: str
    higher: str
    verdict: str
    d: float
    se: float

    def sentence(self) -> str:
        return (
            f"paper: “{self.lower}” < “{self.higher}”; here the difference is {100 * self.d:+.1f} points "
            f"(2·se = {200 * self.se:.1f}): **{self.verdict}**"
        )


@dataclass(frozen=True)
class TableResult:
    """A table's rows that have results, and its orderings between them."""

    table: Table
    rows: tuple[RowResult, ...]
    orderings: tuple[Ordering, ...]

    @property
    def summaries(self) -> dict[str, Summary]:
        return {r.row.label: r.summary for r in self.rows}


@dataclass(frozen=True)
class AblationResults:
    """Every number of the report, before any of it is written down (:func:`collect_results`)."""

    tiou: list[float]
    tables: tuple[TableResult, ...]
    records: tuple[RunRecord, ...]

    @property
    def done(self) -> list[RunRecord]:
        """The runs with results."""
        return [r for r in self.records if r.result.get("modes")]

    @property
    def problems(self) -> list[RunRecord]:
        """The runs that failed or are missing."""
        return [r for r in self.records if r.status in ("failed", "missing")]

    def verdicts(self) -> dict[str, int]:
        """How many orderings agree, disagree and are unresolved."""
        counts = {"agrees": 0, "disagrees": 0, "unresolved": 0}
        for table in self.tables:
            for ordering in table.orderings:
                counts[ordering.verdict] += 1
        return counts


def _row_results(row: Row, records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    return [
        r.result["modes"][row.mode]
        for r in records
        if r.variant == row.variant and row.mode in r.result.get("modes", {})
    ]


def _row_entropy(row: Row, records: Iterable[RunRecord]) -> tuple[float, float, int] | None:
    values = [
        r.result["H_PS_usage"] for r in records if r.variant == row.variant and r.result.get("H_PS_usage") is not None
    ]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1 if len(values) > 1 else 0)), len(values)


def collect_results(tables: Sequence[Table], records: Sequence[RunRecord], tiou: Sequence[float]) -> AblationResults:
    """Summarise every row over seeds and judge every ordering: the report's numbers, not yet rendered.

    ``tiou`` is used when no run has results (the runs' own thresholds otherwise).
    """
    done = [r for r in records if r.result.get("modes")]
    if done:
        tiou = next(iter(done[0].result["modes"].values()))["tiou"]
    results = []
    for table in tables:
        rows = tuple(
            RowResult(row, summarize(found), _row_entropy(row, records) if table.entropy else None)
            for row in table.rows
            if (found := _row_results(row, records))
        )
        summaries = {r.row.label: r.summary for r in rows}
        orderings = tuple(
            Ordering(lower, higher, *compare(summaries[lower], summaries[higher]))
            for lower, higher in table.expected
            if lower in summaries and higher in summaries
        )
        results.append(TableResult(table, rows, orderings))
    return AblationResults(list(tiou), tuple(results), tuple(records))


# --------------------------------------------------------------------------- rendering


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
        if (figure := _table_figure(folder, r.table, r.summaries, results.tiou)) is not None
    }
    entropy_tables = [t for t in tables if t.entropy]
    if entropy_tables and (figure := _entropy_figure(folder, entropy_tables[0], records)) is not None:
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


# --------------------------------------------------------------------------- figures


def _figure(width: float = 5.0, height: float = 3.2) -> Figure:
    return Figure(figsize=(width, height))


def _table_figure(folder: Path, table: Table, summaries: Mapping[str, Summary], tiou: Sequence[float]) -> Path | None:
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


def _entropy_figure(folder: Path, table: Table, records: Sequence[RunRecord]) -> Path | None:
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
