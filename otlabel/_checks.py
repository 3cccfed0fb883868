"""Input validation shared by every entry point.

Checks that only need shapes, types or Python numbers run at once, in every mode. Checks that
need the *values* of a tensor (finite scores, non-negative prior, marginals summing to one) follow
the call's validation mode (the ``validate=`` argument, see :func:`device_checks`):

* **host** (the default in eager code): on the CPU they run at once; for tensors on an
  accelerator they are collected in :class:`DeferredChecks` and read back together with the
  solver's own status at its first synchronisation point, so validation adds no host
  synchronisation of its own. A failed check raises, naming the argument.
* **device** (the default while ``torch.compile`` traces or a CUDA graph captures): the checks
  become 0-d boolean tensors that never leave the device; a fixed-iteration call folds them into
  its result, whose labels are NaN when one failed (see the conventions page).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch

from ._deferred import DeferredChecks
from ._flow import feasibility_rtol, find_hall_violation
from ._numerics import compute_dtype
from .errors import ArgumentTypeError, BackendUnavailableError, InfeasibleProblemError, InvalidArgumentError

#: What the public functions accept and return: a tensor, or a numpy array (returned as numpy).
Array = Union[torch.Tensor, np.ndarray]  # noqa: UP007 - a runtime alias, valid on Python 3.10

#: Marginals must sum to one within this absolute tolerance (or, for a float16/bfloat16 marginal,
#: within the machine epsilon of its dtype, the rounding of a probability vector stored in it);
#: they are then renormalised exactly, so the tolerance only decides what is accepted.
MARGINAL_SUM_ATOL = 1e-4

BACKENDS = ("auto", "torch", "triton")

#: What a labelling call returns (``output=``): the plan, hard labels (argmax, or with exact
#: integer column counts: "quotas"), or the top-k entries per row.
OUTPUTS = ("plan", "hard", "topk", "quotas")

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOAT_DTYPE_SET = frozenset(FLOAT_DTYPES)

__all__ = [
    "Array",
    "BACKENDS",
    "FLOAT_DTYPES",
    "MARGINAL_SUM_ATOL",
    "OUTPUTS",
    "check_bool",
    "check_int",
    "check_marginal",
    "check_prior",
    "check_ptr",
    "check_scores",
    "check_scores_finite",
    "check_segments",
    "compute_dtype",
    "marginal_atol",
    "normalise_marginal",
    "real_number",
    "require_column_support",
    "require_feasible_support",
    "require_reachable_columns",
    "require_reachable_rows",
    "to_tensor",
    "torch_scatter_module",
    "value_range",
    "vector_tensor",
]


def to_tensor(value: Any, name: str) -> tuple[torch.Tensor, bool]:
    """Return ``value`` as a tensor (sharing memory where possible) and whether it was numpy."""
    if isinstance(value, torch.Tensor):
        return value, False
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise ArgumentTypeError(f"{name} must hold real numbers, got a numpy array of dtype {value.dtype}")
        if not value.dtype.isnative:  # big-endian data (e.g. read from a file): torch takes native order only
            value = value.astype(value.dtype.newbyteorder("="))
        return torch.from_numpy(np.ascontiguousarray(value)), True
    raise ArgumentTypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(value).__name__}")


def check_scores(scores: Any, name: str = "scores", *, allow_no_rows: bool = False) -> tuple[torch.Tensor, bool, bool]:
    """Validate a score matrix; return it as a (B, N, K) tensor, whether it was batched and numpy.

    ``allow_no_rows`` accepts N = 0: a rank of a distributed job may hold no rows of the global batch.
    """
    tensor, was_numpy = to_tensor(scores, name)
    if tensor.dtype not in _FLOAT_DTYPE_SET:
        raise ArgumentTypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {tensor.dtype}"
        )
    dim = tensor.dim()
    if dim == 2:
        tensor3 = tensor.unsqueeze(0)
    elif dim == 3:
        tensor3 = tensor
    else:
        raise InvalidArgumentError(
            f"{name} must have shape (N, K) or (B, N, K), got {dim} dimension(s) {tuple(tensor.shape)}"
        )
    batch, n_rows, n_cols = tensor3.shape
    if batch == 0:
        raise InvalidArgumentError(f"{name} has an empty batch dimension (B = 0)")
    if n_rows == 0 and not allow_no_rows:
        raise InvalidArgumentError(f"{name} has no rows (N = 0): there is nothing to label")
    if n_cols == 0:
        raise InvalidArgumentError(f"{name} has no columns (K = 0): K must be at least 1")
    return tensor3, dim == 3, was_numpy


def value_range(
    tensor: torch.Tensor, checks: DeferredChecks
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float] | None]:
    """(min, max) of a non-empty tensor as 0-d tensors, and as Python numbers when known for free.

    One global min/max reduction (NaN propagates into both): on the CPU in host mode the extremes
    are read at once (the caller checks the numbers); otherwise they stay on the device (the caller
    makes deferred checks of them) and the numbers are None.
    """
    low, high = torch.aminmax(tensor)
    if checks.device_mode or not tensor.is_cpu:
        return low, high, None
    return low, high, (low.item(), high.item())


#: |scores| / epsilon must stay below this fraction of the compute dtype's largest number: the
#: potentials and the kernel's exponents add up to a few times that much.
SCALED_SCORE_HEADROOM = 8
_SCALED_SCORE_LIMIT = {
    dtype: torch.finfo(dtype).max / SCALED_SCORE_HEADROOM for dtype in (torch.float32, torch.float64)
}


def check_scores_finite(
    scores: torch.Tensor, epsilon: float, dtype: torch.dtype, checks: DeferredChecks, name: str = "scores"
) -> tuple[float, float] | None:
    """Require every score to be finite and ``scores / epsilon`` to fit the compute dtype; return
    (min, max) of the scores when it is known for free (the CPU in host mode).

    Backends use the range of ``scores / epsilon`` to skip per-row and per-column shifts.
    """
    if scores.numel() == 0:  # a rank of a distributed job may hold no rows
        return None
    low, high, known = value_range(scores, checks)
    if known is None:
        largest = torch.maximum(low.abs(), high.abs()).to(torch.float64) / epsilon
        checks.require(torch.isfinite(low) & torch.isfinite(high), lambda: _not_finite(name))
        checks.require(largest <= _SCALED_SCORE_LIMIT[dtype], lambda: _too_large(name, float(largest), epsilon, dtype))
        return None
    low_value, high_value = known
    # (one comparison chain for the common case; NaN fails it, as an infinity does)
    if -math.inf < low_value and high_value < math.inf:
        largest_value = max(-low_value, high_value) / epsilon
        if largest_value <= _SCALED_SCORE_LIMIT[dtype]:
            return known
        raise _too_large(name, largest_value, epsilon, dtype)
    raise _not_finite(name)


def _not_finite(name: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{name} contains NaN or infinite values; every score must be finite")


def _too_large(name: str, largest: float, epsilon: float, dtype: torch.dtype) -> InvalidArgumentError:
    limit = _SCALED_SCORE_LIMIT[dtype]
    return InvalidArgumentError(
        f"{name} / epsilon reaches {largest:.3g} in magnitude (epsilon = {epsilon:g}), beyond what "
        f"{str(dtype).removeprefix('torch.')} can iterate on (at most {limit:.3g}): raise epsilon or rescale "
        f"the {name}"
    )


def real_number(value: Any, type_error: str) -> float:
    """``value`` as a float when it is a real number (a bool is not), else ``ArgumentTypeError(type_error)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(type_error)
    return float(value)


def check_int(value: Any, name: str, minimum: int) -> int:
    if type(value) is int and value >= minimum:  # the common case, checked first
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    if value is True or value is False:
        return value
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def vector_tensor(value: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    """A marginal given as a tensor, numpy array or sequence of numbers, as a tensor."""
    if isinstance(value, torch.Tensor):
        if value.device != like.device:
            raise InvalidArgumentError(
                f"{name} is on device {value.device} but scores are on {like.device}; move it to the same device"
            )
        if not (value.dtype.is_floating_point or value.dtype in (torch.int32, torch.int64)):
            raise ArgumentTypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        return value.detach()
    if isinstance(value, np.ndarray):
        tensor, _ = to_tensor(value, name)
        return tensor.to(like.device)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            reason = "rows of different lengths" if "inhomogeneous" in str(exc) else str(exc)
            raise ArgumentTypeError(
                f"{name} must be a sequence of real numbers, or a rectangular sequence of such rows ({reason})"
            ) from None
        return torch.from_numpy(array).to(like.device)
    raise ArgumentTypeError(
        f"{name} must be a torch.Tensor, a numpy.ndarray or a sequence of numbers, got {type(value).__name__}"
    )


def marginal_atol(dtype: torch.dtype) -> float:
    """The tolerance on the sum of a marginal given in ``dtype`` (see :data:`MARGINAL_SUM_ATOL`)."""
    if dtype in (torch.float16, torch.bfloat16):
        return max(MARGINAL_SUM_ATOL, torch.finfo(dtype).eps)
    return MARGINAL_SUM_ATOL


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
    tensor = vector_tensor(value, name, like)
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
    atol = marginal_atol(tensor.dtype)
    tensor = tensor.to(dtype)
    checks.require(
        torch.isfinite(tensor).all(), lambda: InvalidArgumentError(f"{name} contains NaN or infinite values")
    )
    checks.require((tensor >= 0).all(), lambda: InvalidArgumentError(f"{name} has negative entries"))
    if not check_sum:
        return tensor
    return normalise_marginal(tensor, tensor.sum(-1), name, checks, atol=atol)


def normalise_marginal(
    tensor: torch.Tensor,
    total: torch.Tensor,
    name: str,
    checks: DeferredChecks,
    what: str = "",
    atol: float = MARGINAL_SUM_ATOL,
) -> torch.Tensor:
    """Require each ``total`` (the sums of the marginals, shape (B,)) to be 1 within ``atol``;
    return ``tensor / total`` (exactly normalised).

    ``total`` is passed in so that a marginal split across processes or groups is judged by the
    sum of all its parts; ``what`` says what was summed, for the message.
    """
    checks.require(
        ((total - 1).abs() <= atol).all(),
        lambda: InvalidArgumentError(f"{name} must sum to 1{what} (within {atol:g}); its sums are {total.tolist()}"),
    )
    return tensor / total.unsqueeze(-1)


def check_prior(
    prior: Any,
    scores: torch.Tensor,
    batched: bool,
    checks: DeferredChecks,
    *,
    log: bool = False,
    check_columns: bool = True,
) -> tuple[torch.Tensor, tuple[float, float] | None]:
    """Validate a prior of exactly the scores' shape; return it as (B, N, K) (not copied) and,
    when known for free (the CPU in host mode), its (min, max).

    A prior is non-negative and finite; a log prior (``log=True``) is finite or -inf (a hard
    zero). One min/max reduction proves that; a prior without zeros needs no support checks.
    ``check_columns=False`` leaves the all-zero-column check to the caller, for a prior whose
    columns continue beyond these rows (another rank's rows, see :func:`require_column_support`).
    """
    name = "log_prior" if log else "prior"
    tensor, _ = to_tensor(prior, name)
    if isinstance(prior, torch.Tensor) and tensor.device != scores.device:
        raise InvalidArgumentError(
            f"{name} is on device {tensor.device} but scores are on {scores.device}; move it to the same device"
        )
    tensor = tensor.to(scores.device)
    allowed = tensor.dtype.is_floating_point or (not log and tensor.dtype in (torch.int32, torch.int64, torch.uint8))
    if not allowed:
        kind = "floating-point numbers" if log else "real numbers"
        raise ArgumentTypeError(f"{name} must hold {kind}, got dtype {tensor.dtype}")
    expected = tuple(scores.shape) if batched else tuple(scores.shape[1:])
    if tuple(tensor.shape) != expected:
        raise InvalidArgumentError(
            f"{name} must have the shape of scores {expected}, got {tuple(tensor.shape)} (no broadcasting)"
        )
    tensor3 = tensor if batched else tensor.unsqueeze(0)
    if tensor3.numel() == 0:  # a rank of a distributed job may hold no rows
        return tensor3, None

    if log:
        bad_values = "log_prior contains NaN or +inf (a hard zero of the prior is -inf in its log)"
        zero_below = -math.inf  # support: entries above -inf
    else:
        bad_values = "prior contains NaN or infinite values"
        zero_below = 0.0

    def invalid() -> InvalidArgumentError:
        return InvalidArgumentError(bad_values)

    def negative() -> InvalidArgumentError:
        return InvalidArgumentError("prior has negative entries")

    low, high, known = value_range(tensor3, checks)
    if known is None:
        if log:  # NaN reaches both extremes; -inf is allowed (a hard zero), +inf is not
            checks.require(~torch.isnan(low) & (high < math.inf), invalid)
        else:
            checks.require(torch.isfinite(low) & torch.isfinite(high), invalid)
            checks.require(low >= 0, negative)
    else:
        if log:
            bad = math.isnan(known[0]) or math.isnan(known[1]) or known[1] == math.inf
        else:
            bad = not (math.isfinite(known[0]) and math.isfinite(known[1]))
        if bad:
            raise invalid()
        if not log and known[0] < 0:
            raise negative()
        if known[0] > zero_below:  # no zeros: every row and column has support
            return tensor3, known
    support = tensor3 > zero_below
    checks.require(
        support.any(-1).all(),
        lambda: InvalidArgumentError(f"{name} has an all-zero row: that row could receive no label"),
    )
    if check_columns:
        require_column_support(support.any(-2), checks, name=name)
    return tensor3, known


def prior_support(prior: torch.Tensor, log: bool) -> torch.Tensor:
    """Where a (log) prior allows mass."""
    return prior > (-math.inf if log else 0)


def require_column_support(
    column_support: torch.Tensor, checks: DeferredChecks, where: str = "", name: str = "prior"
) -> None:
    """Require every column of the prior to have a positive entry (``column_support``: (B, K) bool)."""
    checks.require(
        column_support.all(),
        lambda: InvalidArgumentError(f"{name} has an all-zero column{where}: that column could receive no mass"),
    )


def require_reachable_rows(reached: torch.Tensor, live_rows: torch.Tensor, checks: DeferredChecks) -> None:
    """Require every row of positive mass to have prior support on some column of positive mass."""
    checks.require(
        (reached | ~live_rows).all(),
        lambda: InfeasibleProblemError(
            "infeasible: a row with positive mass has prior support only on columns whose col_marginal is 0"
        ),
    )


def require_reachable_columns(reached: torch.Tensor, live_cols: torch.Tensor, checks: DeferredChecks) -> None:
    """Require every column of positive mass to have prior support on some row of positive mass."""
    checks.require(
        (reached | ~live_cols).all(),
        lambda: InfeasibleProblemError(
            "infeasible: a column with positive col_marginal has prior support only on rows of zero row_marginal"
        ),
    )


def require_feasible_support(
    support: torch.Tensor, row_mass: torch.Tensor, col_mass: torch.Tensor, dtype: torch.dtype, what: str = ""
) -> None:
    """Raise :class:`InfeasibleProblemError`, naming rows and columns, when no plan with these row
    and column masses lives on ``support``: (P, N, K) bool, (P, N), (P, K) for P problems.

    A host computation (see :mod:`otlabel._flow`): only for priors with zeros, in host mode.
    """
    support_np = support.cpu().numpy()
    rows_np = row_mass.to(torch.float64).cpu().numpy()
    cols_np = col_mass.to(torch.float64).cpu().numpy()
    rtol = feasibility_rtol(dtype)
    for problem in range(support_np.shape[0]):
        violation = find_hall_violation(support_np[problem], rows_np[problem], cols_np[problem], rtol)
        if violation is not None:
            where = f" in problem {problem}" if support_np.shape[0] > 1 else ""
            raise InfeasibleProblemError(
                f"infeasible{where}{what}: no transport plan with these marginals lives on the prior's support: "
                + violation.describe()
                + " (a zero of the prior is a hard constraint)"
            )


#: Implementations of the segment reductions of a ragged call: ``"torch"`` needs nothing beyond PyTorch.
SEGMENTS = ("auto", "torch", "torch_scatter")


def torch_scatter_module() -> Any:
    try:
        import torch_scatter
    except ImportError:
        return None
    return torch_scatter


def check_ptr(ptr: Any, n_rows: int, like: torch.Tensor, checks: DeferredChecks) -> torch.Tensor:
    """Validate CSR offsets ``ptr`` (G + 1 integers from 0 to N, strictly increasing); return int64.

    The returned offsets are always safe to index with (forced into [0, N] and non-decreasing)
    so that a bad ``ptr`` on an accelerator, whose check is deferred, cannot read out of bounds.
    """
    if isinstance(ptr, (torch.Tensor, np.ndarray)):
        tensor, _ = to_tensor(ptr, "ptr")
        if isinstance(ptr, torch.Tensor) and tensor.device != like.device:
            raise InvalidArgumentError(
                f"ptr is on device {tensor.device} but scores are on {like.device}; move it to the same device"
            )
    elif isinstance(ptr, (list, tuple)) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in ptr
    ):
        outside = [int(v) for v in ptr if not 0 <= int(v) <= n_rows]
        if outside:  # also keeps integers beyond int64 out of torch.tensor
            raise InvalidArgumentError(
                f"ptr entries must lie in [0, N] = [0, {n_rows}] (row offsets into scores); got {outside[:3]}"
            )
        tensor = torch.tensor([int(v) for v in ptr], dtype=torch.int64)
    else:
        raise ArgumentTypeError(
            f"ptr must be a 1-D integer tensor, numpy array or list of ints (CSR offsets), got {type(ptr).__name__}"
        )
    if tensor.dtype not in (torch.int32, torch.int64):
        raise ArgumentTypeError(f"ptr must hold int32 or int64 offsets, got dtype {tensor.dtype}")
    if tensor.dim() != 1 or tensor.numel() < 2:
        raise InvalidArgumentError(
            "ptr must be 1-D with G + 1 >= 2 entries (group g owns rows ptr[g]:ptr[g+1]), "
            f"got shape {tuple(tensor.shape)}"
        )
    tensor = tensor.to(like.device, torch.int64)
    checks.require(
        (tensor[0] == 0) & (tensor[-1] == n_rows),
        lambda: InvalidArgumentError(f"ptr must start at 0 and end at N = {n_rows} (the number of rows of scores)"),
    )
    sizes = tensor.diff()

    def empty_groups() -> InvalidArgumentError:
        where = ""
        if sizes.device.type == "cpu":
            bad = torch.nonzero(sizes <= 0).flatten()[:5].tolist()
            where = f" (first offending groups: {bad})"
        return InvalidArgumentError(
            "ptr must be strictly increasing: every group needs at least one row (empty groups are an error)" + where
        )

    checks.require((sizes > 0).all(), empty_groups)
    inner = torch.cummax(tensor[1:-1].clamp(0, n_rows), 0).values
    return torch.cat((tensor.new_zeros(1), inner, tensor.new_full((1,), n_rows)))


def check_segments(segments: Any) -> str:
    if not isinstance(segments, str) or segments not in SEGMENTS:
        raise InvalidArgumentError(f"segments must be one of {SEGMENTS}, got {segments!r}")
    if segments == "torch_scatter" and torch_scatter_module() is None:
        raise BackendUnavailableError(
            "segments='torch_scatter' needs the torch-scatter package (pip install torch-scatter); "
            "segments='torch' needs nothing"
        )
    # the plain-PyTorch reductions measured faster (benchmarks/bench_ragged.py), so "auto" uses them
    return "torch" if segments == "auto" else segments
