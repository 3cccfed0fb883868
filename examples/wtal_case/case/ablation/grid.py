"""The ablation grid: training configurations (variants), the report's tables and their rows, the plan.

A *variant* is one training configuration: the base config (``configs/ablation.yaml``) plus
``--set`` overrides (:data:`VARIANTS`). A *row* of a table is a variant evaluated with one
test-time foreground (P^A, P^T or P^M, :data:`FOREGROUND_LABELS`). Tables share runs: the full
model appears in every table, and Table 7 and the last two rows of Table 4 only read other
foreground modes of its evaluation, so they train nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ..postprocess import MODE_LABELS

__all__ = [
    "AblationError",
    "Variant",
    "Row",
    "Table",
    "VARIANTS",
    "TABLES",
    "FOREGROUND_LABELS",
    "ENTROPY_TAIL",
    "plan",
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

#: Test-time foreground modes and how the tables name them (the paper's names).
FOREGROUND_LABELS = MODE_LABELS

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
