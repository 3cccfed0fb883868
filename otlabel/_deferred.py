"""Value checks that wait: for the solver's one read-back (host mode on an accelerator), or for
ever (device mode, where a failed check makes the labels NaN instead of raising).

See :mod:`otlabel._checks` for what is checked, and the conventions page ("Bad input without a
host synchronisation") for what a user sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .errors import InvalidArgumentError

__all__ = ["VALIDATE", "DeferredChecks", "device_checks", "in_graph_capture"]

VALIDATE = ("auto", "host", "device")


def in_graph_capture(tensor: torch.Tensor) -> bool:
    """Whether the current code is being traced by ``torch.compile`` or captured in a CUDA graph
    (judged for ``tensor``'s device), where nothing may be read back to the host."""
    if torch.compiler.is_compiling():
        return True
    return tensor.is_cuda and torch.cuda.is_current_stream_capturing()


def device_checks(validate: Any, like: torch.Tensor) -> bool:
    """Resolve ``validate`` ("auto", "host" or "device") to whether value checks stay on the device
    of the tensor ``like``."""
    if validate == "auto":
        return in_graph_capture(like)
    if validate == "host":
        return False
    if validate == "device":
        return True
    raise InvalidArgumentError(f"validate must be one of {VALIDATE}, got {validate!r}")


class DeferredChecks:
    """Value checks on tensors that cannot (or, in device mode, must not) be read back at once.

    ``device_mode``: never read a check back; the solver folds :meth:`all_passed` into its
    result. ``errors`` are factories, called only when their check failed (a message may read
    device values).
    """

    __slots__ = ("device_mode", "flags", "errors")

    def __init__(self, device_mode: bool = False):
        self.device_mode = device_mode
        self.flags: list[torch.Tensor] = []
        self.errors: list[Callable[[], Exception]] = []

    def require(self, ok: torch.Tensor, error: Callable[[], Exception]) -> None:
        """Require the 0-d boolean tensor ``ok`` to be true, else raise ``error()`` (when it is read)."""
        if not self.device_mode and ok.is_cpu:
            if not bool(ok):
                raise error()
            return
        self.flags.append(ok.reshape(()))
        self.errors.append(error)

    def all_passed(self) -> torch.Tensor:
        """Whether every pending check holds, as a 0-d bool tensor (no synchronisation)."""
        return torch.stack(self.flags).all()

    def as_tensor(self, device: torch.device) -> torch.Tensor:
        """The pending checks as a float vector (1.0 = failed), for one combined read-back."""
        if not self.flags:
            return torch.zeros(0, device=device)
        return (~torch.stack(self.flags)).to(torch.float32)

    def raise_from(self, failed: Sequence[float]) -> None:
        """Raise the first error whose flag (as returned by :meth:`as_tensor`) is set."""
        for value, error in zip(failed, self.errors, strict=True):
            if value > 0:
                raise error()
        self.flags.clear()
        self.errors.clear()

    def raise_now(self) -> None:
        """Synchronise and raise the first failed check (used where a sync happens anyway)."""
        if self.flags:
            self.raise_from(self.as_tensor(self.flags[0].device).tolist())
