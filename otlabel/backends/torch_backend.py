"""Reference backend in plain PyTorch (any device): the solver core of :mod:`otlabel._core`."""

from __future__ import annotations

from .._core import solve as _solve
from .._problem import Problem, Schedule, Solution

NAME = "torch"


def solve(problem: Problem, schedule: Schedule) -> Solution:
    """Solve ``problem`` with plain PyTorch operations on its device."""
    return _solve(problem, schedule)
