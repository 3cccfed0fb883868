"""Fixtures for the CASE example's tests: its package on sys.path, the shared annotations, the thread count."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "wtal_case"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

#: Real THUMOS14 annotations beside the project (read-only; never copied into it).
THUMOS14 = ROOT.parent / "shared" / "data" / "thumos14"


@pytest.fixture(scope="session")
def thumos14_dir() -> Path:
    """The shared THUMOS14 annotation folder; tests that need it skip on machines without it."""
    if not (THUMOS14 / "gt.json").exists():
        pytest.skip(f"THUMOS14 annotations not found at {THUMOS14} (CI always has them)")
    return THUMOS14


@pytest.fixture()
def restore_thread_count() -> object:
    """An evaluation applies the run's ``train.threads`` to this process (evaluate.py, the
    evaluation path): put the thread count back for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
