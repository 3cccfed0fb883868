"""Reference backend in plain PyTorch (any device): the solver core of :mod:`otlabel._core`,
whose ``solve(problem, schedule)`` is this backend's (no wrapper: a call at SwAV's sizes costs
a few dozen microseconds, and every layer of Python is a measurable part of it)."""

from __future__ import annotations

from .._core import solve

__all__ = ["NAME", "solve"]

NAME = "torch"
