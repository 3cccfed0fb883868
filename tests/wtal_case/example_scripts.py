"""The example's scripts as the tests use them: a smoke run of ``train.py``, ``evaluate.py`` as a module.

The smoke run is shared by the test files that evaluate a trained run
(``test_evaluate_checkpoint.py``, ``test_test_modes.py``), which differ only in how long their
run trains; ``evaluate.py`` is loaded here once for every test file that calls its ``main``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from case.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "wtal_case"


class SmokeRun(NamedTuple):
    """A finished run of ``train.py`` on ``smoke.yaml``: its run folder and what it printed."""

    folder: Path
    stdout: str


def smoke_run(base: Path, steps: int) -> SmokeRun:
    """Train ``smoke.yaml`` for ``steps`` steps in a process of its own, data in ``base/data``,
    run folder ``base/run``; fails the calling test (with train.py's stderr) unless it succeeds."""
    folder = base / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--config", str(CONFIG_DIR / "smoke.yaml"),
         "--set", f"data.root={base / 'data'}", "--set", f"train.steps={steps}", "--set", "train.progress=false",
         "--set", "eval.plot_videos=0", "--out", str(folder)],
        capture_output=True, text=True, env=env, cwd=base, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return SmokeRun(folder, result.stdout)


@functools.cache
def load_evaluate_py() -> ModuleType:
    """``examples/wtal_case/evaluate.py`` loaded as a module (once), to call its ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location("evaluate_cli_shared", EXAMPLE / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
