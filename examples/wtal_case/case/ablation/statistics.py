"""The ablation's numbers: each row summarised over seeds, each ordering of the paper judged.

* a cell is the mean ± sample standard deviation (ddof = 1) over seeds (:func:`summarize`);
* an ordering the paper reports (``a < b``) is judged on the average mAP (:func:`compare`):
  with the difference of means d = mean(b) − mean(a) and its standard error
  se = √(s_a²/n_a + s_b²/n_b), it *agrees* when d > 2·se, *disagrees* when d < −2·se, and is
  *unresolved* (within seed noise) otherwise.

:func:`collect_results` gathers all of it before anything is drawn or written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .grid import Row, Table
from .runner import RunRecord

__all__ = [
    "Summary",
    "summarize",
    "compare",
    "RowResult",
    "Ordering",
    "TableResult",
    "AblationResults",
    "collect_results",
]


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
