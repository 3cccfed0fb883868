"""Backend registry and the ``"auto"`` dispatch rule.

A backend is a module with ``NAME`` and ``solve(problem, schedule) -> Solution``; an optional
``unavailable_reason(problem, schedule) -> str | None`` says why it cannot run a given problem.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType

import torch

from .._problem import Problem, Schedule, Solution
from ..errors import BackendUnavailableError
from . import torch_backend

_MODULES = {"torch": ".torch_backend", "triton": ".triton_backend"}


@functools.cache  # a failed import (no triton) is remembered too
def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(_MODULES[name], __name__)
    except ImportError:
        return None


def _reason(name: str, problem: Problem, schedule: Schedule) -> str | None:
    module = _load(name)
    if module is None:
        return f"the {name} backend is not available in this installation"
    check = getattr(module, "unavailable_reason", None)
    return check(problem, schedule) if check is not None else None


def select(backend: str, problem: Problem, schedule: Schedule) -> Callable[[Problem, Schedule], Solution]:
    """Return the ``solve`` function for ``backend`` ("auto", "torch" or "triton").

    ``"auto"`` picks Triton for CUDA tensors when it can run the problem, else torch.
    """
    if backend == "auto":
        backend = "torch"
        if problem.scores.is_cuda and _reason("triton", problem, schedule) is None:
            backend = "triton"
    else:
        reason = _reason(backend, problem, schedule)
        if reason is not None:
            raise BackendUnavailableError(f"backend={backend!r} cannot run here: {reason}")
    if backend == "torch":  # imported above: nothing to look up (and nothing for torch.compile to trace)
        return torch_backend.solve
    module = _load(backend)
    assert module is not None
    return module.solve


def select_features(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Where the fused pass of a :func:`~otlabel.sinkhorn_features` call runs: ``"triton"`` (the
    kernel of :mod:`otlabel.backends._triton_features`) or ``"torch"`` (the streamed blocks), for
    features on ``device`` computed in ``dtype``. ``"auto"`` picks Triton on CUDA where it can run,
    as :func:`select` does; ``"triton"`` raises :class:`~otlabel.BackendUnavailableError` where it
    cannot."""
    if backend == "torch":
        return backend
    module = _load("triton")
    reason = (
        "the triton backend is not available in this installation"
        if module is None
        else module.features_unavailable_reason(device, dtype)
    )
    if backend == "auto":
        return "triton" if device.type == "cuda" and reason is None else "torch"
    if reason is not None:
        raise BackendUnavailableError(f"backend={backend!r} cannot run here: {reason}")
    return backend
