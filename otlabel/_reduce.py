"""How the ranks of a labelling call combine their partial sums, and agree on its arguments.

The base classes here are a single process's (identity reductions, nothing to agree on);
:mod:`otlabel.distributed` substitutes all-reduces over a process group. Every module that
reduces (layouts, numerics, the front end) imports them from here, below all of them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

__all__ = ["SINGLE_PROCESS", "Agreement", "Reducer"]


class Reducer:
    """How per-process partial column quantities combine; the default is a single process.

    The distributed front end substitutes a reducer that all-reduces over a process group
    (:class:`otlabel.distributed.GroupReducer`), so that every backend labels the *global*
    batch without knowing about ranks.
    """

    #: Whether the rows are a slice of a batch spread over several processes.
    distributed = False

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all participants (identity for one process)."""
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``tensor`` over all participants (identity for one process)."""
        return tensor

    def agreement(self) -> Agreement:
        """A context in which the arguments are validated; see :class:`Agreement`."""
        return _NOTHING_TO_AGREE


class Agreement(AbstractContextManager):
    """Validation of the arguments of one call; a single process has nothing to agree on.

    Over a process group, leaving the context makes every rank learn whether every rank's
    arguments passed the local checks and whether they agree (``settle`` records what must
    agree), before any rank starts a collective that the others might not join.
    """

    def settle(self, *description: Any) -> None:
        """Record what the participants must agree on (nothing to do for one process)."""

    def __exit__(self, *exc_info: Any) -> None:
        return None


#: A single process's agreement holds no state: one instance serves every call.
_NOTHING_TO_AGREE = Agreement()
#: The reducer of every single-process call.
SINGLE_PROCESS = Reducer()
