"""Running the ablation: every (variant, seed) run trained or found, resumed if interrupted, evaluated once.

Each run lives in ``<out>/runs/<variant>-seed<seed>/`` (a train.py run folder); a finished run
(``final.pt`` and ``metrics.json``) is reused, an interrupted one is resumed from its latest
checkpoint (bit-identical on the CPU), and a folder trained with another configuration (one
that ``--resume`` would not continue: :data:`case.runfolder.RESUME_MAY_CHANGE` may differ) is
refused. Test-time results are read from the run's ``metrics.json``, which scores P^A, P^T and
P^M from one forward pass (:mod:`case.scoring`), and cached with the training's H(P̄^S) in
``ablation.json`` beside it. A killed ablation therefore continues where it stopped when run again.
"""

from __future__ import annotations

import copy
import json
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..config import Config, ConfigError, load_config, parse_yaml
from ..evaluation import evaluate_checkpoint
from ..runfolder import run_differences
from ..trainer import train
from .grid import ENTROPY_TAIL, FOREGROUND_LABELS, VARIANTS, AblationError, Table, plan

__all__ = [
    "RunRecord",
    "run_path",
    "run_config",
    "run_finished",
    "ensure_trained",
    "ensure_evaluated",
    "run_ablation",
]


def run_path(out: Path, variant: str, seed: int) -> Path:
    """The run folder of ``variant`` trained with ``seed``."""
    return Path(out) / "runs" / f"{variant}-seed{seed}"


def run_config(base: str | Path, overrides: Sequence[str], variant: str, seed: int) -> Config:
    """The resolved configuration of one run: base config, user overrides, the variant's, the seed."""
    items = [*overrides, *VARIANTS[variant].overrides, f"train.seed={seed}", "train.progress=false"]
    return load_config(base, items)


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
        ``run`` holds a run of another configuration: one that ``train.py --resume`` would not
        continue (:func:`case.runfolder.run_differences`; a setting of
        :data:`~case.runfolder.RESUME_MAY_CHANGE` may differ).
    """
    config_file = run / "config.yaml"
    if config_file.is_file():
        try:
            differences = run_differences(parse_yaml(config_file.read_text(encoding="utf-8")), cfg)
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
    """The test-time results of a finished run for ``modes``, read once and cached.

    The training's own ``metrics.json`` holds every foreground mode's figures — P^A, P^T, P^M
    and the configured one, scored from one forward pass per video (``"modes"``, see
    :func:`case.scoring.metrics_record`): the rows of Table 7 and Table 4 are read from it, not
    evaluated again. Only a mode it lacks (a run trained before every evaluation scored the
    three) is scored from the final checkpoint (one forward pass for all such modes). Results
    are cached in ``<run>/ablation.json``.

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
    if missing:
        scored = _scored_modes(json.loads((run / "metrics.json").read_text()), cfg.postprocess.foreground_mode)
        results.update({m: scored[m] for m in missing if m in scored})
        missing = [m for m in missing if m not in results]
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


def _scored_modes(metrics: dict[str, Any], configured: str) -> dict[str, dict[str, Any]]:
    """Each foreground mode's figures in a run's ``metrics.json``; a file written before every
    evaluation scored P^A, P^T and P^M has only the configured mode's, at its top."""
    if "modes" in metrics:
        return dict(metrics["modes"])
    return {configured: {key: metrics[key] for key in ("tiou", "mAP", "average")}}


def _evaluate_modes(run: Path, modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The final checkpoint scored with each of ``modes`` (one forward pass; the run's own setup)."""
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
