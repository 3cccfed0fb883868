"""Input validation shared by every entry point.

Checks that only need shapes, types or Python numbers run at once. Checks that need the
*values* of a tensor (finite scores, non-negative prior, marginals summing to one) run at
once for CPU tensors; for tensors on an accelerator they are collected in
:class:`DeferredChecks` and read back together with the solver's own status at its first
synchronisation point, so validation never adds a host synchronisation of its own.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch

from .errors import ArgumentTypeError, InvalidArgumentError

#: What the public functions accept and return: a tensor, or a numpy array (returned as numpy).
Array = Union[torch.Tensor, np.ndarray]  # noqa: UP007 - a runtime alias, valid on Python 3.10

#: Marginals must sum to one within this absolute tolerance; they are then renormalised
#: exactly, so the tolerance only decides what is accepted, never the answer.
MARGINAL_SUM_ATOL = 1e-4

BACKENDS = ("auto", "torch", "triton")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solver works in: float64 stays float64, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass
class DeferredChecks:
    """Value checks on device tensors, read back in one transfer at the first sync point."""

    flags: list[torch.Tensor] = field(default_factory=list)
    #: error factories, called only when their check failed (a message may read device values)
    errors: list[Callable[[], Exception]] = field(default_factory=list)

    def require(self, ok: torch.Tensor, error: Callable[[], Exception]) -> None:
        """Require the 0-d boolean tensor ``ok`` to be true, else raise ``error()``."""
        if ok.device.type == "cpu":
            if not bool(ok):
                raise error()
            return
        self.flags.append(ok.reshape(()))
        self.errors.append(error)

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


def to_tensor(value: Any, name: str) -> tuple[torch.Tensor, bool]:
    """Return ``value`` as a tensor (sharing memory where possible) and whether it was numpy."""
    if isinstance(value, torch.Tensor):
        return value, False
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise ArgumentTypeError(f"{name} must hold real numbers, got a numpy array of dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value)), True
    raise ArgumentTypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(value).__name__}")


def check_scores(scores: Any, name: str = "scores", *, allow_no_rows: bool = False) -> tuple[torch.Tensor, bool, bool]:
    """Validate a score matrix; return it as a (B, N, K) tensor, whether it was batched and numpy.

    ``allow_no_rows`` accepts N = 0: a rank of a distributed job may hold no rows of the global batch.
    """
    tensor, was_numpy = to_tensor(scores, name)
    if tensor.dtype not in _FLOAT_DTYPES:
        raise ArgumentTypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {tensor.dtype}"
        )
    if tensor.dim() not in (2, 3):
        raise InvalidArgumentError(
            f"{name} must have shape (N, K) or (B, N, K), got {tensor.dim()} dimension(s) {tuple(tensor.shape)}"
        )
    batched = tensor.dim() == 3
    tensor3 = tensor if batched else tensor.unsqueeze(0)
    batch, n_rows, n_cols = tensor3.shape
    if batch == 0:
        raise InvalidArgumentError(f"{name} has an empty batch dimension (B = 0)")
    if n_rows == 0 and not allow_no_rows:
        raise InvalidArgumentError(f"{name} has no rows (N = 0): there is nothing to label")
    if n_cols == 0:
        raise InvalidArgumentError(f"{name} has no columns (K = 0): K must be at least 1")
    return tensor3, batched, was_numpy


def _finite_minimum(
    tensor: torch.Tensor, checks: DeferredChecks, not_finite: Callable[[], InvalidArgumentError]
) -> tuple[torch.Tensor, tuple[float, float] | None]:
    """Require every entry of a non-empty tensor to be finite; return (min as a 0-d tensor,
    (min, max) when it is known for free).

    One global min/max reduction does it (NaN propagates, so both are finite exactly when every
    entry is): on the CPU the extremes are read at once, the error raised here and the range
    returned; on an accelerator the check is deferred to the solver's first synchronisation and
    the range is None.
    """
    low, high = torch.aminmax(tensor.detach())
    if tensor.device.type == "cpu":
        low_value, high_value = float(low), float(high)
        if not (math.isfinite(low_value) and math.isfinite(high_value)):
            raise not_finite()
        return low, (low_value, high_value)
    checks.require(torch.isfinite(low) & torch.isfinite(high), not_finite)
    return low, None


def check_scores_finite(
    scores: torch.Tensor, checks: DeferredChecks, name: str = "scores"
) -> tuple[float, float] | None:
    """Require every score to be finite; return (min, max) of the scores when it is known for free.

    On the CPU backends use the range of ``scores / epsilon`` to skip per-row and per-column
    shifts (see :func:`_finite_minimum`).
    """
    if scores.numel() == 0:  # a rank of a distributed job may hold no rows
        return None

    def error() -> InvalidArgumentError:
        return InvalidArgumentError(f"{name} contains NaN or infinite values; every score must be finite")

    return _finite_minimum(scores, checks, error)[1]


def check_epsilon(epsilon: Any) -> float:
    if isinstance(epsilon, torch.Tensor) and epsilon.numel() == 1 and not epsilon.requires_grad:
        epsilon = epsilon.item()
    elif isinstance(epsilon, np.ndarray) and epsilon.size == 1:
        epsilon = epsilon.item()
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise ArgumentTypeError(f"epsilon must be a real number, got {type(epsilon).__name__}")
    epsilon = float(epsilon)
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise InvalidArgumentError(f"epsilon must be a finite number > 0, got {epsilon}")
    return epsilon


def check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_tol(tol: Any) -> float | None:
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise ArgumentTypeError(f"tol must be a real number or None, got {type(tol).__name__}")
    tol = float(tol)
    if not np.isfinite(tol) or tol <= 0:
        raise InvalidArgumentError(f"tol must be a finite number > 0, got {tol}")
    return tol


def check_backend(backend: Any) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _vector_tensor(value: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    """A marginal given as a tensor, numpy array or sequence of numbers, as a tensor."""
    if isinstance(value, torch.Tensor):
        if value.device != like.device:
            raise InvalidArgumentError(
                f"{name} is on device {value.device} but scores are on {like.device}; move it to the same device"
            )
        if not (value.dtype.is_floating_point or value.dtype in (torch.int32, torch.int64)):
            raise ArgumentTypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        return value
    if isinstance(value, np.ndarray):
        tensor, _ = to_tensor(value, name)
        return tensor.to(like.device)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ArgumentTypeError(f"{name} must be a sequence of real numbers ({exc})") from None
        return torch.from_numpy(array).to(like.device)
    raise ArgumentTypeError(
        f"{name} must be a torch.Tensor, a numpy.ndarray or a sequence of numbers, got {type(value).__name__}"
    )


def check_marginal(
    value: Any,
    name: str,
    length: int,
    length_name: str,
    batch: int,
    batched: bool,
    like: torch.Tensor,
    dtype: torch.dtype,
    checks: DeferredChecks,
    *,
    check_sum: bool = True,
) -> torch.Tensor:
    """Validate a marginal (a probability vector); return it as (B, length) in ``dtype``, summing to 1.

    A 1-D marginal is shared by every problem of a batch; a 2-D marginal (B, length) gives one
    per problem and is only accepted for batched scores. With ``check_sum=False`` the entries are
    validated but the sum is left to the caller (a slice of a larger marginal: see
    :func:`normalise_marginal`), and the tensor is returned as given.
    """
    tensor = _vector_tensor(value, name, like)
    if tensor.dim() == 1:
        if tensor.shape[0] != length:
            raise InvalidArgumentError(f"{name} has {tensor.shape[0]} entries but scores have {length_name} = {length}")
        tensor = tensor.unsqueeze(0).expand(batch, length)
    elif tensor.dim() == 2 and batched:
        if tuple(tensor.shape) != (batch, length):
            raise InvalidArgumentError(
                f"{name} must have shape ({length},) or ({batch}, {length}) for scores with B = {batch}, "
                f"{length_name} = {length}; got {tuple(tensor.shape)}"
            )
    else:
        expected = f"({length},) or (B, {length})" if batched else f"({length},)"
        raise InvalidArgumentError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")
    tensor = tensor.to(dtype)
    checks.require(
        torch.isfinite(tensor).all(), lambda: InvalidArgumentError(f"{name} contains NaN or infinite values")
    )
    checks.require((tensor >= 0).all(), lambda: InvalidArgumentError(f"{name} has negative entries"))
    if not check_sum:
        return tensor
    return normalise_marginal(tensor, tensor.sum(-1), name, checks)


def normalise_marginal(
    tensor: torch.Tensor, total: torch.Tensor, name: str, checks: DeferredChecks, what: str = ""
) -> torch.Tensor:
    """Require each ``total`` (the sums of the marginals, shape (B,)) to be 1 within
    :data:`MARGINAL_SUM_ATOL`; return ``tensor / total`` (exactly normalised).

    ``total`` is passed in so that a marginal split across processes or groups is judged by the
    sum of all its parts; ``what`` says what was summed, for the message.
    """
    checks.require(
        ((total - 1).abs() <= MARGINAL_SUM_ATOL).all(),
        lambda: InvalidArgumentError(
            f"{name} must sum to 1{what} (within {MARGINAL_SUM_ATOL}); its sums are {total.tolist()}"
        ),
    )
    return tensor / total.unsqueeze(-1)


def check_prior(
    prior: Any, scores: torch.Tensor, batched: bool, checks: DeferredChecks, *, check_columns: bool = True
) -> tuple[torch.Tensor, tuple[float, float] | None]:
    """Validate a prior of exactly the scores' shape; return it as (B, N, K) (not copied) and,
    when known for free (CPU), its (min, max).

    One min/max reduction proves it finite and non-negative; a strictly positive prior needs no
    support checks. ``check_columns=False`` leaves the all-zero-column check to the caller, for a
    prior whose columns continue beyond these rows (another rank's rows, see
    :func:`require_column_support`).
    """
    tensor, _ = to_tensor(prior, "prior")
    if isinstance(prior, torch.Tensor) and tensor.device != scores.device:
        raise InvalidArgumentError(
            f"prior is on device {tensor.device} but scores are on {scores.device}; move it to the same device"
        )
    tensor = tensor.to(scores.device)
    if not (tensor.dtype.is_floating_point or tensor.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise ArgumentTypeError(f"prior must hold real numbers, got dtype {tensor.dtype}")
    expected = tuple(scores.shape) if batched else tuple(scores.shape[1:])
    if tuple(tensor.shape) != expected:
        raise InvalidArgumentError(
            f"prior must have the shape of scores {expected}, got {tuple(tensor.shape)} (no broadcasting)"
        )
    tensor3 = tensor if batched else tensor.unsqueeze(0)
    if tensor3.numel() == 0:  # a rank of a distributed job may hold no rows
        return tensor3, None

    def not_finite() -> InvalidArgumentError:
        return InvalidArgumentError("prior contains NaN or infinite values")

    def negative() -> InvalidArgumentError:
        return InvalidArgumentError("prior has negative entries")

    low, value_range = _finite_minimum(tensor3, checks, not_finite)
    if value_range is not None:  # known at once (CPU)
        if value_range[0] < 0:
            raise negative()
        if value_range[0] > 0:  # strictly positive: every row and column has support
            return tensor3, value_range
    else:
        checks.require(low >= 0, negative)
    checks.require(
        (tensor3.sum(-1) > 0).all(),  # non-negative, so a zero sum is an all-zero row
        lambda: InvalidArgumentError("prior has an all-zero row: that row could receive no label"),
    )
    if check_columns:
        require_column_support(tensor3.sum(-2) > 0, checks)
    return tensor3, value_range


def require_column_support(column_support: torch.Tensor, checks: DeferredChecks, where: str = "") -> None:
    """Require every column of the prior to have a positive entry (``column_support``: (B, K) bool)."""
    checks.require(
        column_support.all(),
        lambda: InvalidArgumentError(f"prior has an all-zero column{where}: that column could receive no mass"),
    )


def require_reachable_rows(reached: torch.Tensor, live_rows: torch.Tensor, checks: DeferredChecks) -> None:
    """Require every row of positive mass to have prior support on some column of positive mass."""
    checks.require(
        (reached | ~live_rows).all(),
        lambda: InvalidArgumentError(
            "infeasible: a row with positive mass has prior support only on columns whose col_marginal is 0"
        ),
    )


def require_reachable_columns(reached: torch.Tensor, live_cols: torch.Tensor, checks: DeferredChecks) -> None:
    """Require every column of positive mass to have prior support on some row of positive mass."""
    checks.require(
        (reached | ~live_cols).all(),
        lambda: InvalidArgumentError(
            "infeasible: a column with positive col_marginal has prior support only on rows of zero row_marginal"
        ),
    )
