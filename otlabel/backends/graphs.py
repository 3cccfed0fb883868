"""Repeated fixed-iteration calls on CUDA replayed as one captured CUDA graph each.

A training loop labels a batch of the same shape at every step. On a GPU such a call costs
far more in fixed per-call work (the Python front end, a dozen small validation kernels, the
solver's launches) than in arithmetic below a few million scores. So the entry points hand a
repeated, eligible call to :func:`call`, which captures the **whole call** — the front end's
device-side checks, the fused Triton kernels and the poisoning of failed calls — in a CUDA graph
the ``CAPTURE_AFTER``-th time it sees a call of that kind, and from then on replays it: one copy
of each input tensor into the graph's static inputs, one graph launch, one copy of the labels
out (the caller gets a tensor of its own; the next call never overwrites it).

Eligible: CUDA float32/float16/bfloat16 scores with at most ``MAX_ELEMENTS`` entries, the
fixed-iteration mode, no ``process_group``, no ``return_info``, ``backend`` "auto" or "triton"
with the Triton backend available for the shape, tensor arguments on the scores' device, and
neither ``torch.compile`` tracing nor a CUDA graph capturing the call (the caller's own graph
then records the call as it is). A call of the same kind is one with the same shapes, dtypes,
device, Python settings (epsilon, n_iter, ...) and validation mode.

* ``validate="device"``: nothing is read back (a failed check gives NaN labels, as always).
* ``validate="host"`` (and "auto" in eager code), without a prior: the call computes as in device
  mode and reads back one label; if it is NaN (bad input, or a problem that needs the exact
  host-side answer), the call is repeated eagerly in host mode, which raises the clear error or
  computes what device mode cannot (so host mode keeps every guarantee, with one read-back). With
  a prior, host mode decides on the host whether the prior's zeros admit the marginals: not
  eligible.

``ENABLED = False`` (or ``OTLABEL_CUDA_GRAPHS=0`` in the environment) turns this off;
:func:`clear` drops every captured graph and its memory.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from .._marginals import NO_OPTIONS

__all__ = ["CAPTURE_AFTER", "ENABLED", "MAX_ELEMENTS", "MAX_ENTRIES", "call", "clear", "eligible", "stats"]

#: Whether repeated calls are captured and replayed (``OTLABEL_CUDA_GRAPHS=0`` turns it off).
ENABLED = os.environ.get("OTLABEL_CUDA_GRAPHS", "1").lower() not in ("0", "false", "off", "no")
#: Largest N * K (all problems of a batch) captured: beyond it the copies in and out cost more
#: than the launches they save (the fixed costs are ~0.3 ms; a copy of 16M floats ~30 us).
MAX_ELEMENTS = 1 << 24
#: Graphs kept (least recently used dropped first): each holds its inputs, labels and scratch.
MAX_ENTRIES = 4
#: The call of a kind that is captured: the first ones run eagerly (they compile the kernels).
CAPTURE_AFTER = 2

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
# positions in the entry points' argument tuple (scores excluded): see sinkhorn._label
_PRIOR, _EPSILON, _COL, _ROW, _N_ITER, _TOL, _MAX_ITER, _CHECK_EVERY = range(8)
_GROUP, _BACKEND, _RETURN_INFO, _VALIDATE, _LOG_PRIOR, _OPTIONS = range(8, 14)
_TENSORS = (_PRIOR, _COL, _ROW)

_lock = threading.Lock()
#: key -> a count of eager calls so far, a captured _Graph, or None (capture failed: eager from now on)
_cache: OrderedDict[tuple, Any] = OrderedDict()
_stats = {"eager": 0, "captured": 0, "replayed": 0, "reruns": 0, "failed_captures": 0}


def stats() -> dict[str, int]:
    """Counts of calls run eagerly, captured, replayed and repeated in host mode, and of failed captures."""
    return dict(_stats)


def clear() -> None:
    """Drop every captured graph (its memory returns to PyTorch's allocator) and every count."""
    with _lock:
        _cache.clear()


def _triton_runs(scores: torch.Tensor) -> bool:
    from . import triton_backend

    try:
        triton_backend._kernels()
    except ImportError:
        return False
    *_, n_rows, n_cols = scores.shape
    return n_cols <= triton_backend.MAX_K and n_rows * n_cols < 2**31


def eligible(scores: Any, arguments: tuple) -> bool:
    """Whether a call of an entry point (``scores`` and its other positional arguments) may be
    captured and replayed (cheap: checked on every call)."""
    if not ENABLED or torch.compiler.is_compiling():
        return False
    if type(scores) is not torch.Tensor or not scores.is_cuda or scores.dtype not in _FLOATS:
        return False
    if arguments[_TOL] is not None or arguments[_GROUP] is not None or arguments[_RETURN_INFO] is not False:
        return False
    if arguments[_OPTIONS] is not NO_OPTIONS:
        return False  # penalised, bounded or partial marginals, warm starts: the torch backend, eagerly
    if arguments[_BACKEND] not in ("auto", "triton") or arguments[_VALIDATE] not in ("auto", "host", "device"):
        return False
    if not 0 < scores.numel() <= MAX_ELEMENTS or scores.dim() not in (2, 3):
        return False
    if torch.cuda.is_current_stream_capturing():
        return False
    if arguments[_VALIDATE] != "device" and arguments[_PRIOR] is not None:
        return False  # host mode decides on the host whether a prior's zeros fit the marginals
    for index in _TENSORS:
        value = arguments[index]
        if value is not None and (type(value) is not torch.Tensor or value.device != scores.device):
            return False
    settings = (arguments[_EPSILON], arguments[_N_ITER], arguments[_MAX_ITER], arguments[_CHECK_EVERY])
    if not all(value is None or type(value) in (int, float) for value in settings):
        return False
    return type(arguments[_LOG_PRIOR]) is bool and _triton_runs(scores)


def _key(scores: torch.Tensor, arguments: tuple) -> tuple:
    described = [None if arguments[i] is None else (tuple(arguments[i].shape), arguments[i].dtype) for i in _TENSORS]
    settings = tuple(arguments[i] for i in (_EPSILON, _N_ITER, _MAX_ITER, _CHECK_EVERY, _BACKEND, _LOG_PRIOR))
    host = arguments[_VALIDATE] != "device"
    return (scores.device, tuple(scores.shape), scores.dtype, *described, settings, host)


class _Graph:
    """One captured call: static inputs, the graph, its labels, and the event of its last use."""

    def __init__(self, solve: Callable[..., Any], scores: torch.Tensor, arguments: tuple):
        device = scores.device
        with torch.no_grad():
            self.inputs = [scores.detach().clone(memory_format=torch.contiguous_format)]
            self.positions = [i for i in _TENSORS if arguments[i] is not None]
            for i in self.positions:
                self.inputs.append(arguments[i].detach().clone(memory_format=torch.contiguous_format))
        captured = list(arguments)
        for i, tensor in zip(self.positions, self.inputs[1:]):
            captured[i] = tensor
        captured[_VALIDATE] = "device"
        self.graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.device(device), torch.cuda.stream(stream):
            solve(self.inputs[0], *captured)  # warm-up on the capture stream, as CUDA graphs want
            # (no torch.cuda.graph context: it synchronises the device, which device mode must not)
            self.graph.capture_begin(capture_error_mode="thread_local")
            try:
                self.labels = solve(self.inputs[0], *captured)
            finally:
                self.graph.capture_end()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.done = torch.cuda.Event()
        self.lock = threading.Lock()

    def replay(self, scores: torch.Tensor, arguments: tuple) -> torch.Tensor:
        stream = torch.cuda.current_stream(scores.device)
        with self.lock, torch.no_grad(), torch.cuda.device(scores.device):
            stream.wait_event(self.done)  # a previous replay on another stream has finished with the buffers
            self.inputs[0].copy_(scores)
            for i, tensor in zip(self.positions, self.inputs[1:]):
                tensor.copy_(arguments[i])
            self.graph.replay()
            labels = self.labels.clone()
            self.done.record(stream)
        return labels


def _device_mode(arguments: tuple) -> tuple:
    changed = list(arguments)
    changed[_VALIDATE] = "device"
    return tuple(changed)


def _checked(labels: torch.Tensor, solve: Callable[..., Any], scores: torch.Tensor, arguments: tuple) -> Any:
    """Host mode: the labels if their first entry is a number (a failed call is NaN everywhere),
    else the call repeated eagerly in host mode (it raises, or computes the exact answer)."""
    if not math.isnan(labels.reshape(-1)[0].item()):
        return labels
    _stats["reruns"] += 1
    return solve(scores, *arguments)


def call(solve: Callable[..., Any], scores: torch.Tensor, arguments: tuple) -> Any:
    """``solve(scores, *arguments)``, replayed from a captured CUDA graph when one exists (see the
    module's docstring); ``eligible(scores, arguments)`` must hold."""
    key = _key(scores, arguments)
    host = key[-1]
    with _lock:
        state = _cache.get(key, 0)
        if state is not None and not isinstance(state, _Graph):
            _cache[key] = state + 1
        if key in _cache:
            _cache.move_to_end(key)
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    if state is None or (isinstance(state, int) and state + 1 < CAPTURE_AFTER):
        _stats["eager"] += 1
        if state is None or not host:
            return solve(scores, *arguments)
        return _checked(solve(scores, *_device_mode(arguments)), solve, scores, arguments)
    if not isinstance(state, _Graph):
        try:
            state = _Graph(solve, scores, arguments)
        except Exception:  # noqa: BLE001 - whatever made the capture fail, the eager call still works
            _stats["failed_captures"] += 1
            with _lock:
                _cache[key] = None
            return solve(scores, *arguments)
        _stats["captured"] += 1
        with _lock:
            _cache[key] = state
    _stats["replayed"] += 1
    labels = state.replay(scores, arguments)
    return _checked(labels, solve, scores, arguments) if host else labels
