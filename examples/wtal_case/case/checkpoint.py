"""Atomic files and checkpoints of a run folder.

Everything the engine writes goes through :func:`atomic_write_bytes` (a temporary file in
the same folder, flushed and fsynced, then :func:`os.replace`), so a run killed at any
instant leaves either the previous version of a file or the new one, never half of it.

Checkpoints live in ``<run>/checkpoints/``: periodic ones ``step_000500.pt`` (the oldest
pruned beyond ``keep``), the final one ``final.pt``, and ``best.pt`` when a held-out slice
selects the model. Each holds the model and optimiser states, the step, the cluster
classification result Q^C[:, fg] (needed to resume SCC's prior and for clustering-assisted
testing), the RNG states, the data-order state and the resolved configuration.
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "save_checkpoint",
    "load_checkpoint",
    "periodic_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "rng_state",
    "set_rng_state",
]

_PERIODIC = re.compile(r"^step_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """The global RNG states of Python, NumPy, torch (CPU and every CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` with :func:`torch.save` and write it atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; a missing or unreadable file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # our own files: optimiser and RNG states are plain containers, but numpy's RNG
        # state is not on torch's weights-only allow-list
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for a corrupt file
        raise RuntimeError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})") from err


def periodic_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """The ``step_*.pt`` files of a checkpoint folder as (step, path), by increasing step."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _PERIODIC.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """``final.pt`` if present, else the periodic checkpoint of the highest step, else None."""
    folder = Path(folder)
    if (folder / "final.pt").is_file():
        return folder / "final.pt"
    found = periodic_checkpoints(folder)
    return found[-1][1] if found else None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent periodic checkpoints (``keep=0`` keeps all)."""
    if keep <= 0:
        return
    for _, path in periodic_checkpoints(folder)[:-keep]:
        path.unlink(missing_ok=True)
