"""Exception and warning classes raised by otlabel.

Every error the package raises on bad input is an :class:`OTLabelError` and also a
built-in :class:`ValueError` or :class:`TypeError`, so ``except ValueError`` keeps working
in code that does not know about otlabel.
"""

from __future__ import annotations

__all__ = [
    "OTLabelError",
    "InvalidArgumentError",
    "ArgumentTypeError",
    "InfeasibleProblemError",
    "BackendUnavailableError",
    "DistributedMismatchError",
    "OTLabelWarning",
    "ConvergenceWarning",
]


class OTLabelError(Exception):
    """Base class of every exception raised by otlabel."""


class InvalidArgumentError(OTLabelError, ValueError):
    """An argument has a valid type but a wrong value or shape.

    The message always names the argument, e.g. ``"epsilon must be > 0, got -1.0"``.
    """


class ArgumentTypeError(OTLabelError, TypeError):
    """An argument has the wrong type (a list where a tensor is expected, integer scores...)."""


class InfeasibleProblemError(InvalidArgumentError):
    """No transport plan has the requested marginals inside the prior's support.

    Raised, for instance, when a row with positive mass has prior support only on columns
    whose marginal is zero.
    """


class BackendUnavailableError(OTLabelError, RuntimeError):
    """The requested backend cannot run here (not installed, wrong device or dtype)."""


class DistributedMismatchError(InvalidArgumentError):
    """Ranks of a process group disagree on something that must be identical (K, epsilon...)."""


class OTLabelWarning(UserWarning):
    """Base class of every warning emitted by otlabel."""


class ConvergenceWarning(OTLabelWarning):
    """Tolerance mode spent ``max_iter`` iterations without reaching ``tol``."""
