"""``ablate.py`` on a tiny grid (smoke scale, one seed, two training configurations), and its parts."""

from __future__ import annotations

import doctest
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from example_scripts import load_evaluate_py  # tests/wtal_case is on sys.path

from case import ablation
from case.ablation import AblationError, compare, plan, runner, summarize
from case.config import CONFIG_DIR, Config, dump_config, load_config, parse_yaml
from case.errors import RunFolderError
from case.runfolder import RESUME_MAY_CHANGE, RunFolder

ROOT = Path(__file__).resolve().parents[2]
ABLATE = ROOT / "examples" / "wtal_case" / "ablate.py"


def _ablate(base: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, str(ABLATE), "--config", str(CONFIG_DIR / "smoke.yaml"), "--seeds", "0",
        "--variants", "baseline", "full", "--out", str(base / "abl"), "--report-dir", str(base / "report"),
        "--set", f"data.root={base / 'data'}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=base, check=False)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ablate")
    result = _ablate(base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count(": trained in") == 2
    return base


def test_tiny_grid_writes_the_report(grid: Path) -> None:
    report = (grid / "report" / "report.md").read_text()
    results = json.loads((grid / "report" / "results.json").read_text())
    runs = grid / "abl" / "runs"
    # the rows that the two trained configurations can fill, and no others
    for label in ("| Baseline |", "| + SCC + CCC |", "| + SCC + CCC + clustering-assisted testing |", "| P^T |"):
        assert label in report, label
    assert "| + SCC |" not in report and "OT, hard" not in report
    assert "## Protocol" in report and "## Orderings of the paper, checked" in report
    assert set(results["runs"]) == {"baseline-seed0", "full-seed0"}
    # the numbers are the runs' own: P^M is train.py's metrics.json, P^A a re-post-processing of the checkpoint
    table4 = {row["label"]: row for row in results["tables"]["table4"]}
    metrics = json.loads((runs / "full-seed0" / "metrics.json").read_text())
    assert table4["+ SCC + CCC + clustering-assisted testing"]["mAP_mean"] == metrics["mAP"]
    cached = json.loads((runs / "full-seed0" / "ablation.json").read_text())
    assert table4["+ SCC + CCC"]["average_mean"] == cached["modes"]["attention"]["average"]
    assert table4["Baseline"]["n"] == 1 and table4["Baseline"]["average_std"] == 0
    assert results["tables"]["table5"][0]["H_PS_usage_mean"] == cached["H_PS_usage"] > 0
    for name in ("table4.png", "table7.png", "entropy.png"):
        assert (grid / "report" / name).stat().st_size > 1000, name
    assert not (grid / "report" / "clusters.png").exists()  # a sweep needs two points


def test_attention_mode_matches_evaluate_py(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:

    import torch

    cli = load_evaluate_py()
    run = grid / "abl" / "runs" / "full-seed0"
    threads = torch.get_num_threads()
    try:
        code = cli.main([
            "--checkpoint", str(run / "checkpoints" / "final.pt"), "--set", "postprocess.foreground_mode=attention",
            "--eval-dir", str(grid / "attention"), "--json",
        ])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    cached = json.loads((run / "ablation.json").read_text())
    scored = json.loads(capsys.readouterr().out)  # attention configured: its figures at the top
    assert {k: scored[k] for k in ("tiou", "mAP", "average")} == cached["modes"]["attention"]
    assert scored["modes"] == json.loads((run / "metrics.json").read_text())["modes"]  # one forward, all modes


def test_a_second_invocation_reuses_finished_runs_and_resumes_a_broken_one(grid: Path) -> None:
    run = grid / "abl" / "runs" / "full-seed0"
    final = run / "checkpoints" / "final.pt"
    stamp = final.stat().st_mtime_ns
    again = _ablate(grid)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": cached in") == 2 and final.stat().st_mtime_ns == stamp
    # a run killed before its end: only periodic checkpoints, no metrics, no cached evaluation
    before = json.loads((run / "metrics.json").read_text())
    for name in ("checkpoints/final.pt", "metrics.json", "ablation.json"):
        (run / name).unlink()
    resumed = _ablate(grid)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "full seed 0: trained" in resumed.stdout and "baseline seed 0: cached" in resumed.stdout
    assert json.loads((run / "metrics.json").read_text()) == before  # resumed from step 50: the same run
    # wall time: the invocations that trained something (the first and the resuming one), not the cached one
    invocations = json.loads((grid / "abl" / "timing.json").read_text())["invocations"]
    assert [i["trained"] for i in invocations] == [2, 1] and all(i["seconds"] > 0 for i in invocations)
    assert "Wall time (2 invocations)" in (grid / "report" / "report.md").read_text()


def test_a_run_of_another_configuration_is_refused(grid: Path) -> None:
    result = _ablate(grid, "--set", "train.steps=30")
    assert result.returncode == 2 and "holds a run of another configuration" in result.stderr


def _ablation_config(key: str, value: object | None = None) -> Config:
    """configs/ablation.yaml, with ``key`` set to ``value`` (None: as it is)."""
    return load_config(CONFIG_DIR / "ablation.yaml", [] if value is None else [f"{key}={json.dumps(value)}"])


@pytest.mark.parametrize("key", [*RESUME_MAY_CHANGE, "train.threads", "optim.lr"])
def test_a_cached_run_is_reused_as_a_resume_would_continue_it(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ablation's check of a finished run compared every key: a run that differed only in a setting
    that ``--resume`` may change (``case.runfolder.RESUME_MAY_CHANGE``: train.num_workers, the
    checkpoint cadence, ...) was refused as "a run of another configuration". Reused now; any other
    difference is still refused, exactly where train.py's --resume refuses it."""
    trainings: list[Path] = []
    monkeypatch.setattr(runner, "train", lambda cfg, run, resume=False: trainings.append(run))
    now = _ablation_config(key)
    section, name = key.split(".")
    value = getattr(getattr(now, section), name)
    before = _ablation_config(key, (not value) if isinstance(value, bool) else value + 1)
    run = tmp_path / "run"  # a finished run (final.pt and metrics.json) trained with `before`
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "final.pt").write_bytes(b"")
    (run / "metrics.json").write_text("{}")
    (run / "config.yaml").write_text(dump_config(before))
    saved = parse_yaml((run / "config.yaml").read_text())
    if key in RESUME_MAY_CHANGE:
        assert runner.ensure_trained(now, run) is False  # reused
        RunFolder.check_same_config(saved, now, "config.yaml")  # as train.py's --resume continues it
    else:
        with pytest.raises(AblationError, match=rf"holds a run of another configuration \({re.escape(key)}: "):
            runner.ensure_trained(now, run)
        with pytest.raises(RunFolderError, match=re.escape(key)):
            RunFolder.check_same_config(saved, now, "config.yaml")
    assert trainings == []


def test_plan_restricts_rows_and_shares_runs() -> None:
    tables, variants, modes = plan()
    assert len(variants) == 17 and variants[0] == "full"
    beta = next(t for t in tables if t.key == "beta")
    assert [r.variant for r in beta.rows] == ["full", "beta-ema", "beta-relaxed"] and not beta.expected
    for name in ("beta-ema", "beta-relaxed"):  # each variant's overrides load (and name a real setting)
        cfg = ablation.run_config(CONFIG_DIR / "ablation.yaml", [], name, 0)
        assert cfg.labeling.ccc.marginal == name.removeprefix("beta-")
    assert modes["full"] == ["attention", "mixed", "cluster"]  # Tables 4 and 7 post-process the full model three ways
    assert sum(len(t.rows) for t in tables) > len(variants)  # rows share runs
    tables, variants, _ = plan(tables=["table7"])
    assert variants == ["full"] and [t.key for t in tables] == ["table7"]
    tables, _, _ = plan(variants=["full", "scc"])
    table4 = next(t for t in tables if t.key == "table4")
    assert [r.label for r in table4.rows] == ["+ SCC", "+ SCC + CCC", "+ SCC + CCC + clustering-assisted testing"]
    assert all(lower != "Baseline" for lower, _ in table4.expected)  # orderings only between rows that remain
    with pytest.raises(AblationError, match="unknown variant 'k64'"):
        plan(variants=["k64"])
    with pytest.raises(AblationError, match="unknown table 'table9'"):
        plan(tables=["table9"])


def test_orderings_are_judged_against_seed_noise() -> None:
    def rows(*averages: float) -> ablation.Summary:
        return summarize([{"mAP": [a], "average": a} for a in averages])

    low, high = rows(0.10, 0.12, 0.11), rows(0.20, 0.21, 0.19)
    verdict, d, se = compare(low, high)
    assert verdict == "agrees" and d == pytest.approx(0.09) and se == pytest.approx((0.01**2 / 3 * 2) ** 0.5)
    assert compare(high, low)[0] == "disagrees"
    assert compare(rows(0.10, 0.20, 0.15), rows(0.12, 0.22, 0.17))[0] == "unresolved"  # d = 0.02 < 2 se
    assert compare(rows(0.1), rows(0.3))[0] == "unresolved"  # one seed: no spread to judge by
    result = doctest.testmod(ablation.statistics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("seeds", "message"),
    [(["-1"], "train.seed must be an integer in [0, 2**32 - 1], got -1"), (["0", "1", "0"], "--seeds lists 0 twice")],
)
def test_seeds_every_run_would_fail_on_are_refused_even_for_list(
    seeds: list[str], message: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, str(ABLATE), "--seeds", *seeds, "--list", "--out", str(tmp_path / "abl")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "" and not (tmp_path / "abl").exists()


@pytest.mark.parametrize("flag", ["--report-dir", "--out"])
def test_a_report_or_run_folder_that_cannot_be_made_is_refused_before_training(flag: str, tmp_path: Path) -> None:
    """The report folder was first written after the whole grid (about an hour): a file in its place
    ended the ablation with a traceback and no report; an --out under a file, with a traceback from the
    first failed run's error file."""
    (tmp_path / "taken").write_text("a file")
    result = _ablate(tmp_path, flag, str(tmp_path / "taken" / "sub"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (
        result.stderr
        == f"ablate.py: error: {flag} {tmp_path / 'taken' / 'sub'}: {tmp_path / 'taken'} is a file, not a folder\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing trained, no data generated
