"""The code passes the project's linter and formatter (settings in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


# top-level folders that hold environments, builds, runs or data sets, not the project's code
SKIP_DIRS = {".git", ".venv", "venv", ".ci-venv", "build", "dist", "runs", "data"}


@pytest.fixture(scope="module")
def python_files() -> list[str]:
    """The tracked Python files (git), or every project .py file outside build and data folders."""
    if shutil.which("git") is not None and (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
        files = listed.stdout.split()
    else:
        files = [
            str(path.relative_to(ROOT))
            for path in ROOT.rglob("*.py")
            if path.relative_to(ROOT).parts[0] not in SKIP_DIRS
        ]
    assert files, "found no Python files to lint"
    return files


def test_ruff_check(python_files: list[str]) -> None:
    result = _ruff("check", "--no-cache", *python_files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format(python_files: list[str]) -> None:
    result = _ruff("format", "--check", "--no-cache", *python_files)
    assert result.returncode == 0, result.stdout + result.stderr
