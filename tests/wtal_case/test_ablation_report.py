"""The reproduction report is built from its numbers first (``collect_results``), then rendered.

No training here: the runs' results come from the committed report's own ``results.json``, from
which the report must render again byte for byte (its numbers stay), and from hand-made records.
"""

from __future__ import annotations

import json
from pathlib import Path

from case import ablation
from case.ablation import Row, RunRecord, Table, collect_results, write_report
from case.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "_static" / "ablation"


def _records_of(results: dict) -> list[RunRecord]:
    records = []
    for key, run in results["runs"].items():
        variant, seed = key.rsplit("-seed", 1)
        kept = {k: run[k] for k in ("modes", "H_PS_usage", "train_seconds")}
        kept["H_PS_curve"] = [[1, 2.5], [2, 2.6]]  # not in results.json; only drawn, never printed
        records.append(RunRecord(variant, int(seed), Path(key), run["status"], kept, run["error"]))
    return records


def test_the_committed_report_renders_again_from_its_results(tmp_path: Path) -> None:
    results = json.loads((COMMITTED / "results.json").read_text())
    tables, _, _ = ablation.plan(tables=list(results["tables"]))  # the grid as it was (later tables: not run yet)
    report = write_report(
        tmp_path,
        tables,
        _records_of(results),
        base_config=CONFIG_DIR / "ablation.yaml",
        seeds=results["seeds"],
        command="python examples/wtal_case/ablate.py --report-dir docs/_static/ablation",
        wall_seconds=results["wall_seconds"],
        invocations=2,
    )
    assert report.read_text() == (COMMITTED / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text()) == results
    for name in ("table4.png", "table5.png", "table6.png", "table7.png", "clusters.png", "sigma.png", "entropy.png"):
        assert (tmp_path / name).stat().st_size > 1000, name


def _record(variant: str, seed: int, average: float) -> RunRecord:
    metrics = {"tiou": [0.5], "mAP": [average], "average": average}
    return RunRecord(variant, seed, Path(f"{variant}-{seed}"), "trained", {"modes": {"mixed": metrics}})


def test_verdicts_are_counted_from_the_results_not_from_the_text(tmp_path: Path) -> None:
    """The counts used to come from searching the formatted lines for **agrees**: a row label that
    holds those characters was counted as agreeing whatever its verdict."""
    table = Table(
        "t",
        "Table 9: labels that look like verdicts",
        "A row label may hold any text.",
        (Row("low **agrees**", "low", "mixed"), Row("high", "high", "mixed"), Row("same", "same", "mixed")),
        expected=(("low **agrees**", "high"), ("same", "high"), ("high", "same")),
    )
    records = [
        *(_record("low", s, a) for s, a in enumerate((0.10, 0.30, 0.20))),  # wide spread: unresolved against high
        *(_record("high", s, a) for s, a in enumerate((0.21, 0.22, 0.23))),
        *(_record("same", s, a) for s, a in enumerate((0.10, 0.11, 0.12))),
    ]
    results = collect_results([table], records, [0.5])
    verdicts = [(o.lower, o.higher, o.verdict) for t in results.tables for o in t.orderings]
    assert verdicts == [
        ("low **agrees**", "high", "unresolved"),
        ("same", "high", "agrees"),
        ("high", "same", "disagrees"),
    ]
    assert results.verdicts() == {"agrees": 1, "disagrees": 1, "unresolved": 1}
    text = write_report(
        tmp_path, [table], records, base_config=CONFIG_DIR / "ablation.yaml", seeds=[0, 1, 2], command="ablate.py"
    ).read_text()
    assert "1 agree, 1 disagree, 1 are unresolved (within seed noise):" in text
