"""Checkpoints of a run folder: written atomically, found, pruned, and read back for a resume.

Checkpoints live in ``<run>/checkpoints/``: periodic ones ``step_000500.pt`` (the oldest
pruned beyond ``keep``), the final one ``final.pt``, and ``best.pt`` when a held-out slice
selects the model. Each holds the model and optimiser states, the step, the cluster
classification result Q^C[:, fg] (needed to resume SCC's prior and for clustering-assisted
testing), the RNG states, the data-order state, the resolved configuration, the class names
and the held-out selection so far (:data:`REQUIRED_KEYS`). They are written through
:func:`case.atomic.atomic_write_bytes`, so a run killed at any instant leaves either the
previous version of a file or the new one, never half of it; a file damaged otherwise (a
disk error, a copy cut short) is skipped by :func:`load_latest` in favour of the one before.
"""

from __future__ import annotations

import io
import pickle
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .config import Config, ConfigError, from_dict

__all__ = [
    "REQUIRED_KEYS",
    "INFERENCE_KEYS",
    "save_checkpoint",
    "load_checkpoint",
    "load_whole",
    "load_trained",
    "saved_config",
    "saved_class_names",
    "load_weights",
    "periodic_checkpoints",
    "resume_candidates",
    "load_latest",
    "prune_checkpoints",
    "rng_state",
    "set_rng_state",
]

_PERIODIC = re.compile(r"^step_(\d+)\.pt$")

#: What every checkpoint of a run holds (a file without one of them cannot resume a run).
REQUIRED_KEYS = ("step", "model", "optimizer", "cluster_fg", "rng", "data_order", "config", "class_names", "best")

#: What running a trained model needs of a checkpoint (:func:`load_trained`): the weights, the
#: configuration that reads them, the class of each output, Q^C[:, fg] and the step.
INFERENCE_KEYS = ("model", "config", "class_names", "cluster_fg", "step")

#: The only objects besides tensors and plain containers that a checkpoint holds: NumPy's RNG
#: state (an array of uint32). :func:`torch.load` with ``weights_only=True`` refuses every
#: other global, so reading a checkpoint (a downloaded one, or one planted in a shared run
#: folder) cannot run code, as a full unpickling of a crafted file would.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array unpickler, wherever this NumPy keeps it
_SAFE_GLOBALS = [
    _RECONSTRUCT,
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),  # how NumPy 1.x names it in a pickle
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


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
    if path.is_dir():
        raise RuntimeError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt (or crafted) file
        text = str(err)
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
            if "GLOBAL" in text:  # an object torch's allow-list (and ours) does not know
                raise RuntimeError(
                    f"checkpoint {path} holds objects other than tensors and plain data, which train.py never "
                    "writes; refused, since reading them could run code"
                ) from err
            text = text.split("WeightsUnpickler error:")[-1]  # torch's advice before it is not for a corrupt file
        first_line = (text.strip().splitlines() or [""])[0]  # some run over many lines
        raise RuntimeError(f"checkpoint {path} is unreadable ({type(err).__name__}: {first_line})") from err


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


def resume_candidates(folder: str | Path, before: int | None = None) -> list[Path]:
    """The checkpoints a run can resume from, latest first: ``final.pt``, then ``step_*.pt`` by decreasing step.

    With ``before``, only the periodic checkpoints of steps before it.
    """
    folder = Path(folder)
    final = [folder / "final.pt"] if before is None and (folder / "final.pt").is_file() else []
    periodic = [path for step, path in reversed(periodic_checkpoints(folder)) if before is None or step < before]
    return final + periodic


def _require(path: str | Path, state: Any, keys: tuple[str, ...]) -> None:
    """Raise a :class:`RuntimeError` naming the file and what it lacks, unless ``state`` holds ``keys``."""
    if not isinstance(state, dict):
        raise RuntimeError(
            f"checkpoint {path} holds a {type(state).__name__}, not train.py's dictionary of {', '.join(keys)}"
        )
    missing = [key for key in keys if key not in state]
    if missing:
        # the commonest mistake: torch.save(model.state_dict()), weights without the configuration that reads them
        bare = bool(state) and all(isinstance(value, torch.Tensor) for value in state.values())
        hint = " (a bare state_dict? train.py's checkpoints hold the weights with their configuration)" if bare else ""
        raise RuntimeError(f"checkpoint {path} lacks {', '.join(missing)}{hint}")


def load_whole(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint that reads back with every one of :data:`REQUIRED_KEYS`.

    Raises
    ------
    FileNotFoundError, RuntimeError
        Naming the file: missing, unreadable, or lacking a key.
    """
    state = load_checkpoint(path, map_location)
    _require(path, state, REQUIRED_KEYS)
    return state


def load_trained(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint that holds what running its model needs (:data:`INFERENCE_KEYS`).

    Raises
    ------
    FileNotFoundError, RuntimeError
        Naming the file: missing, unreadable, not a dictionary, or lacking a key.
    """
    state = load_checkpoint(path, map_location)
    _require(path, state, INFERENCE_KEYS)
    return state


def saved_config(path: str | Path, state: Mapping[str, Any]) -> Config:
    """The configuration saved in checkpoint ``path`` (its ``state``), checked as a config file is.

    Raises
    ------
    RuntimeError
        Naming the file: the saved configuration is not a mapping, or is not a valid one.
    """
    saved = state["config"]
    if not isinstance(saved, Mapping):
        raise RuntimeError(f"checkpoint {path}: its saved configuration is a {type(saved).__name__}, not a mapping")
    try:
        return from_dict(Config, saved)
    except ConfigError as err:
        raise RuntimeError(f"checkpoint {path}: its saved configuration is invalid ({err})") from None


def saved_class_names(path: str | Path, state: Mapping[str, Any]) -> list[str]:
    """The class of each classifier output, as checkpoint ``path`` saved them (a list of strings).

    Raises
    ------
    RuntimeError
        Naming the file, when ``class_names`` is not a list of strings.
    """
    names = state["class_names"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise RuntimeError(f"checkpoint {path}: its class_names are not a list of strings ({type(names).__name__})")
    return list(names)


def load_weights(path: str | Path, state: Mapping[str, Any], model: torch.nn.Module) -> torch.Tensor:
    """Load checkpoint ``path``'s weights into ``model`` and return its Q^C[:, fg], both checked.

    ``model`` is built from the checkpoint's configuration (or one found equal to it): weights
    of other shapes, NaN or infinite weights, and a Q^C[:, fg] that is not one finite number per
    cluster are what no run of train.py writes (a step whose loss is not finite stops the run
    before the optimiser moves), so each is one error naming the file — not a state_dict dump of
    every mismatch, nor "attention contains non-finite values" once the model has run.

    Raises
    ------
    RuntimeError
        Naming the file and the first offending tensor.
    """
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError, ValueError) as err:
        # torch lists every mismatch, one per line: the first says enough
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
        detail = detail if len(detail) <= 300 else detail[:300] + "..."
        raise RuntimeError(f"checkpoint {path}: its model weights do not fit its configuration ({detail})") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RuntimeError(
                f"checkpoint {path}: its model weights hold NaN or infinite values (first: {name}), which no "
                "run of train.py saves"
            )
    cluster_fg = state["cluster_fg"]
    clusters = getattr(model, "num_clusters", None)
    if (
        not isinstance(cluster_fg, torch.Tensor)
        or not cluster_fg.is_floating_point()
        or tuple(cluster_fg.shape) != (clusters,)
        or not bool(torch.isfinite(cluster_fg).all())
    ):
        shape = tuple(cluster_fg.shape) if isinstance(cluster_fg, torch.Tensor) else type(cluster_fg).__name__
        raise RuntimeError(
            f"checkpoint {path}: its cluster_fg (Q^C[:, fg]) must be {clusters} finite numbers, one per cluster "
            f"(model.num_clusters), got {shape}"
            + (" holding NaN or infinite values" if isinstance(cluster_fg, torch.Tensor) else "")
        )
    return cluster_fg


def load_latest(
    folder: str | Path,
    map_location: str | torch.device = "cpu",
    skipped: Callable[[str], None] | None = None,
    before: int | None = None,
) -> tuple[Path, dict[str, Any]] | None:
    """The latest checkpoint of ``folder`` that reads back whole, with its path; None if there is none.

    A checkpoint that cannot be read, or lacks one of :data:`REQUIRED_KEYS`, is passed over
    for the one before it, and ``skipped`` receives a line saying so. With ``before``, only
    periodic checkpoints of earlier steps are candidates (:func:`resume_candidates`).
    """
    for path in resume_candidates(folder, before):
        try:
            state = load_whole(path, map_location)
        except RuntimeError as err:
            if skipped is not None:
                skipped(f"{err}; passing over it for the checkpoint before it")
            continue
        return path, state
    return None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent periodic checkpoints (``keep=0`` keeps all)."""
    if keep <= 0:
        return
    for _, path in periodic_checkpoints(folder)[:-keep]:
        path.unlink(missing_ok=True)
