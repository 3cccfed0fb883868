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

from ._options import Options

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
#: What the cache calls: the front end's ``label_now(scores, prior, options)``.
Solve = Callable[[torch.Tensor, Any, Options], Any]

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
    from .backends import triton_backend

    try:
        triton_backend._kernels()
    except ImportError:
        return False
    *_, n_rows, n_cols = scores.shape
    return n_cols <= triton_backend.MAX_K and n_rows * n_cols < 2**31


def _tensors(prior: Any, options: Options) -> tuple[Any, Any, Any]:
    """The tensor arguments of a call that a graph copies in: prior, col_marginal, row_marginal."""
    return prior, options.col_marginal, options.row_marginal


def eligible(scores: Any, prior: Any, options: Options) -> bool:
    """Whether a dense call (``scores``, ``prior``, ``options``) may be captured and replayed
    (cheap: checked on every call)."""
    if type(scores) is not torch.Tensor or not scores.is_cuda:  # (first: the CPU's calls stop here)
        return False
    if not ENABLED or torch.compiler.is_compiling() or scores.dtype not in _FLOATS:
        return False
    if not options.schedule.fixed or options.process_group is not None or options.return_info is not False:
        return False
    if options.differentiable:
        return False  # the plan carries an autograd graph
    if not options.plain:
        return False  # penalised, bounded or partial marginals, warm starts: the torch backend, eagerly
    if options.backend not in ("auto", "triton"):
        return False
    if not 0 < scores.numel() <= MAX_ELEMENTS or scores.dim() not in (2, 3):
        return False
    if torch.cuda.is_current_stream_capturing():
        return False
    if options.validate != "device" and prior is not None:
        return False  # host mode decides on the host whether a prior's zeros fit the marginals
    for value in _tensors(prior, options):
        if value is not None and (type(value) is not torch.Tensor or value.device != scores.device):
            return False
    return _triton_runs(scores)


def _key(scores: torch.Tensor, prior: Any, options: Options) -> tuple:
    described = [None if value is None else (tuple(value.shape), value.dtype) for value in _tensors(prior, options)]
    settings = (options.epsilon, options.schedule, options.backend, options.log_prior)
    host = options.validate != "device"
    return (scores.device, tuple(scores.shape), scores.dtype, *described, settings, host)


class _Graph:
    """One captured call: static inputs, the graph, its labels, and the event of its last use."""

    def __init__(self, solve: Solve, scores: torch.Tensor, prior: Any, options: Options):
        device = scores.device
        with torch.no_grad():
            static = [scores] + [value for value in _tensors(prior, options) if value is not None]
            self.inputs = [value.detach().clone(memory_format=torch.contiguous_format) for value in static]
        self.given = [value is not None for value in _tensors(prior, options)]
        self.prior, self.options = self._arguments(self.inputs[1:], options, "device")
        self.graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.device(device), torch.cuda.stream(stream):
            solve(self.inputs[0], self.prior, self.options)  # warm-up on the capture stream, as CUDA graphs want
            # (no torch.cuda.graph context: it synchronises the device, which device mode must not)
            self.graph.capture_begin(capture_error_mode="thread_local")
            try:
                self.labels = solve(self.inputs[0], self.prior, self.options)
            finally:
                self.graph.capture_end()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.done = torch.cuda.Event()
        self.lock = threading.Lock()

    def _arguments(self, static: list[torch.Tensor], options: Options, validate: str) -> tuple[Any, Options]:
        """The prior and options of the captured call: its static tensors in place of the caller's."""
        values = iter(static)
        prior, col, row = (next(values) if given else None for given in self.given)
        return prior, options.changed(col_marginal=col, row_marginal=row, validate=validate)

    def replay(self, scores: torch.Tensor, prior: Any, options: Options) -> torch.Tensor:
        stream = torch.cuda.current_stream(scores.device)
        with self.lock, torch.no_grad(), torch.cuda.device(scores.device):
            stream.wait_event(self.done)  # a previous replay on another stream has finished with the buffers
            given = [scores] + [value for value in _tensors(prior, options) if value is not None]
            for static, value in zip(self.inputs, given):
                static.copy_(value)
            self.graph.replay()
            labels = self.labels.clone()
            self.done.record(stream)
        return labels


def _device_mode(options: Options) -> Options:
    return options.changed(validate="device")


def _checked(labels: torch.Tensor, solve: Solve, scores: torch.Tensor, prior: Any, options: Options) -> Any:
    """Host mode: the labels if their first entry is a number (a failed call is NaN everywhere),
    else the call repeated eagerly in host mode (it raises, or computes the exact answer)."""
    if not math.isnan(labels.reshape(-1)[0].item()):
        return labels
    _stats["reruns"] += 1
    return solve(scores, prior, options)


def call(solve: Solve, scores: torch.Tensor, prior: Any, options: Options) -> Any:
    """``solve(scores, prior, options)``, replayed from a captured CUDA graph when one exists (see
    the module's docstring); ``eligible(scores, prior, options)`` must hold."""
    key = _key(scores, prior, options)
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
            return solve(scores, prior, options)
        return _checked(solve(scores, prior, _device_mode(options)), solve, scores, prior, options)
    if not isinstance(state, _Graph):
        try:
            state = _Graph(solve, scores, prior, options)
        except Exception:  # noqa: BLE001 - whatever made the capture fail, the eager call still works
            _stats["failed_captures"] += 1
            with _lock:
                _cache[key] = None
            return solve(scores, prior, options)
        _stats["captured"] += 1
        with _lock:
            _cache[key] = state
    _stats["replayed"] += 1
    labels = state.replay(scores, prior, options)
    return _checked(labels, solve, scores, prior, options) if host else labels
