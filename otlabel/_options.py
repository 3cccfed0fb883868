"""The settings of a labelling call, shared by every entry point: :class:`Options`.

Every public function (:func:`~otlabel.sinkhorn`, :func:`~otlabel.sinkhorn_with_prior`,
:func:`~otlabel.sinkhorn_ragged`, :class:`~otlabel.OnlineLabeller`) keeps its documented keyword
signature and turns its keywords into one :class:`Options` in one line; the front end
(:mod:`otlabel._front`) reads it by name. A new option is one field here, one keyword on the
public functions that take it, and the code that uses it.

Construction validates everything that needs no tensor values: the numbers, the mode, the names,
and which options combine. What needs the scores (shapes of marginals, bounds and warm starts,
their values) is checked by the front end when it builds the problem.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from ._checks import BACKENDS, OUTPUTS, check_bool, check_int, real_number
from ._deferred import VALIDATE
from ._problem import Schedule
from .distributed import check_process_group
from .errors import InvalidArgumentError, OTLabelError

__all__ = ["ACCELERATIONS", "DEFAULT_N_ITER", "Options", "check_mass", "check_penalty", "check_schedule"]

#: Fixed-iteration mode's default number of iterations (SwAV and CASE use 3).
DEFAULT_N_ITER = 3

ACCELERATIONS = ("anderson",)


def check_epsilon(epsilon: Any) -> float:
    if type(epsilon) is float and 0 < epsilon < math.inf:  # the common case, checked first
        return epsilon
    if isinstance(epsilon, torch.Tensor) and epsilon.numel() == 1 and not epsilon.requires_grad:
        epsilon = epsilon.item()
    elif isinstance(epsilon, np.ndarray) and epsilon.size == 1:
        epsilon = epsilon.item()
    epsilon = real_number(epsilon, f"epsilon must be a real number, got {type(epsilon).__name__}")
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise InvalidArgumentError(f"epsilon must be a finite number > 0, got {epsilon}")
    return epsilon


def check_tol(tol: Any) -> float | None:
    if tol is None:
        return None
    tol = real_number(tol, f"tol must be a real number or None, got {type(tol).__name__}")
    if not math.isfinite(tol) or tol <= 0:
        raise InvalidArgumentError(f"tol must be a finite number > 0, got {tol}")
    return tol


def check_schedule(n_iter: Any, tol: Any, max_iter: Any, check_every: Any) -> Schedule:
    """Validate the iteration settings of either mode."""
    tol = check_tol(tol)
    if tol is not None and n_iter is not None:
        raise InvalidArgumentError(
            "n_iter applies to the fixed-iteration mode only; with tol=... bound the work with max_iter"
        )
    n_iter = check_int(DEFAULT_N_ITER if n_iter is None else n_iter, "n_iter", 1)
    return Schedule(n_iter, tol, check_int(max_iter, "max_iter", 1), check_int(check_every, "check_every", 1))


def check_penalty(value: Any, name: str) -> float | None:
    """A KL penalty strength tau > 0 (None or inf: the hard constraint)."""
    if value is None:
        return None
    value = real_number(value, f"{name} must be a real number (the KL penalty's strength tau) or None, got {value!r}")
    if math.isnan(value) or value <= 0:
        raise InvalidArgumentError(f"{name} must be > 0 (tau; None or inf for the hard constraint), got {value}")
    return None if math.isinf(value) else value


def check_mass(value: Any) -> float | None:
    """The labelled fraction m in (0, 1] (None or 1: all of it)."""
    if value is None:
        return None
    value = real_number(value, f"mass must be a real number in (0, 1] or None, got {value!r}")
    if not 0 < value <= 1:
        raise InvalidArgumentError(f"mass must lie in (0, 1] (the fraction of the mass to label), got {value}")
    return None if value == 1 else value


def check_names(value: Any, name: str, allowed: tuple[str, ...]) -> None:
    """``value`` must be one of the strings ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgumentError(f"{name} must be one of {allowed}, got {value!r}")


def check_output(values: dict[str, Any]) -> None:
    """``output`` and ``top_k`` (read only with ``output="topk"``; checked against K later)."""
    check_names(values["output"], "output", OUTPUTS)
    if values["output"] == "topk":
        values["top_k"] = check_int(values["top_k"], "top_k", 1)
    if values["differentiable"]:
        raise InvalidArgumentError(
            f"differentiable=True needs output='plan' (got output={values['output']!r}): hard and top-k labels "
            "carry no gradient; take them from the differentiable plan instead"
        )
    if values["output"] == "quotas" and values["process_group"] is not None:
        raise InvalidArgumentError(
            "output='quotas' needs every row in one process (exact column counts rank all rows of a column "
            "together); gather the labels' plan, or use output='hard' with process_group"
        )


def check_acceleration(acceleration: Any, fixed: bool, partial: bool, bounded: bool) -> bool:
    """Whether the tolerance mode takes Anderson-accelerated steps."""
    if acceleration is None:
        return False
    if acceleration not in ACCELERATIONS:
        raise InvalidArgumentError(f"acceleration must be None or one of {ACCELERATIONS}, got {acceleration!r}")
    if fixed:
        raise InvalidArgumentError("acceleration applies to the tolerance mode (tol=...), not to n_iter iterations")
    if partial or bounded:
        raise InvalidArgumentError(
            "acceleration='anderson' does not apply to mass or col_bounds (Dykstra's projections)"
        )
    return True


class Options(NamedTuple):
    """The keyword settings of one labelling call, as every entry point shares them; read by name.

    Build it with :meth:`of_call` (an entry point's ``locals()``) or :meth:`make` (keywords), which
    validate and normalise the Python values: ``epsilon`` a float, ``schedule`` the iteration
    settings of either mode (``n_iter``, ``tol``, ``max_iter``, ``check_every`` as given stay
    readable), penalties and ``mass`` floats or None (None: the hard constraint, all of the mass).
    ``col_marginal``, ``row_marginal``, ``col_bounds`` and ``init`` are data, kept as given: the
    front end checks them against the scores. (A NamedTuple rather than a frozen dataclass: it is
    built on every call, and a tuple is built several microseconds faster.)

    A bad setting raises at construction, except with a ``process_group``: then the error waits in
    ``error`` for the front end to raise inside the ranks' agreement, so that the other ranks learn
    of it instead of waiting in a collective.
    """

    epsilon: Any = 0.05
    col_marginal: Any = None
    row_marginal: Any = None
    log_prior: Any = False
    n_iter: Any = None
    tol: Any = None
    max_iter: Any = 1000
    check_every: Any = 10
    backend: Any = "auto"
    return_info: Any = False
    process_group: Any = None
    validate: Any = "auto"
    col_penalty: Any = None
    row_penalty: Any = None
    mass: Any = None
    col_bounds: Any = None
    init: Any = None
    acceleration: Any = None
    differentiable: Any = False
    output: Any = "plan"
    top_k: Any = 1
    #: the validated iteration settings
    schedule: Schedule = Schedule(DEFAULT_N_ITER, None, 1000, 10)
    #: a validation error kept for the agreement of a process group's ranks (see above)
    error: OTLabelError | None = None
    #: no option beyond the classical problem was given (penalties, partial mass, bounds, warm
    #: start, acceleration), judged from the values as given: ``mass=1`` counts
    plain: bool = True

    @classmethod
    def of_call(cls, arguments: dict[str, Any]) -> Options:
        """The options among an entry point's arguments (its ``locals()`` before anything else is
        assigned): every field whose name it has. One expression in every entry point, so that a
        new option is a new field and a new keyword, nothing in between."""
        if torch.compiler.is_compiling():
            values = dict(_DEFAULTS)  # (a copy: inside torch.compile a comprehension over it guards every entry)
            for name in arguments.keys() & values.keys():
                values[name] = arguments[name]
            return cls._checked(values)
        # Eagerly, a call repeated with the same settings (every training step's) reuses the
        # options validated the first time: validating is most of a small call's front end.
        given = tuple(map(arguments.get, _SETTINGS, _DEFAULT_VALUES))
        types = tuple(map(type, given))
        if not _CACHEABLE.issuperset(types):  # data (a tensor, a list, a group): validated every time
            return cls._checked(dict(zip(_SETTINGS, given)))
        key = (given, types)  # with the types: True == 1 and 1 == 1.0, which the checks tell apart
        options = _VALIDATED.get(key)
        if options is None:
            options = cls._checked(dict(zip(_SETTINGS, given)))
            if len(_VALIDATED) >= _VALIDATED_LIMIT:
                _VALIDATED.clear()
            _VALIDATED[key] = options
        return options

    @classmethod
    def make(cls, **given: Any) -> Options:
        """Validated options from keywords (the defaults for the others)."""
        unknown = set(given) - _DEFAULTS.keys()
        if unknown:  # only settings, and never a derived field
            raise TypeError(f"Options.make() got unexpected settings {sorted(unknown)}")
        return cls._checked({**_DEFAULTS, **given})

    @classmethod
    def _checked(cls, values: dict[str, Any]) -> Options:
        """``values``: every setting, in field order (a fresh dict: it is normalised in place)."""
        # judged before normalising: mass=1 is given, even if it means all of the mass
        plain = (
            values["col_penalty"] is None
            and values["row_penalty"] is None
            and values["mass"] is None
            and values["col_bounds"] is None
            and values["init"] is None
            and values["acceleration"] is None
        )
        error = None
        if values["process_group"] is not None:  # raised at once: without a usable group no rank can tell the others
            check_process_group(values["process_group"])
        try:
            schedule = _normalise(values, plain)
        except OTLabelError as caught:
            if values["process_group"] is None:
                raise
            schedule, error = cls._field_defaults["schedule"], caught
        return cls._make((*values.values(), schedule, error, plain))

    def changed(self, **changes: Any) -> Options:
        """These options with some settings changed, validated again (derived fields follow)."""
        return Options.make(**{**{name: getattr(self, name) for name in _SETTINGS}, **changes})

    def raise_error(self) -> None:
        """Raise the validation error kept for a process group's agreement, if any."""
        if self.error is not None:
            raise self.error


#: The settings an entry point passes; the derived fields (schedule, error, plain) follow from them.
_SETTINGS = Options._fields[: Options._fields.index("schedule")]
_DEFAULTS = {name: Options._field_defaults[name] for name in _SETTINGS}
_DEFAULT_VALUES = tuple(_DEFAULTS.values())

#: Options validated by :meth:`Options.of_call`, by their settings (and the settings' types) as
#: given; only settings that are plain Python values are kept (a tensor, an array, a list or a
#: process group is data that may change between calls, and holding it would keep it alive).
_VALIDATED: dict[tuple[tuple[Any, ...], tuple[type, ...]], Options] = {}
_VALIDATED_LIMIT = 256
_CACHEABLE = frozenset({type(None), bool, int, float, str})


def _normalise(values: dict[str, Any], plain: bool) -> Schedule:
    """Validate the settings in ``values``, put the normalised ones back, and return the schedule."""
    values["epsilon"] = check_epsilon(values["epsilon"])
    schedule = check_schedule(values["n_iter"], values["tol"], values["max_iter"], values["check_every"])
    values["return_info"] = check_bool(values["return_info"], "return_info")
    values["log_prior"] = check_bool(values["log_prior"], "log_prior")
    values["differentiable"] = check_bool(values["differentiable"], "differentiable")
    check_names(values["backend"], "backend", BACKENDS)
    if values["output"] != "plan":
        check_output(values)
    check_names(values["validate"], "validate", VALIDATE)
    if plain:  # the classical problem: nothing more to check
        return schedule
    col_tau = check_penalty(values["col_penalty"], "col_penalty")
    row_tau = check_penalty(values["row_penalty"], "row_penalty")
    fraction = check_mass(values["mass"])
    bounded = values["col_bounds"] is not None
    if fraction is not None and (col_tau is not None or row_tau is not None or bounded):
        raise InvalidArgumentError(
            "mass (partial transport) cannot be combined with col_penalty, row_penalty or col_bounds"
        )
    if bounded and (col_tau is not None or row_tau is not None or values["col_marginal"] is not None):
        raise InvalidArgumentError(
            "col_bounds replaces col_marginal and cannot be combined with it, nor with col_penalty or row_penalty"
        )
    accelerate = check_acceleration(values["acceleration"], schedule.fixed, fraction is not None, bounded)
    values.update(col_penalty=col_tau, row_penalty=row_tau, mass=fraction)
    return schedule._replace(accelerate=True) if accelerate else schedule
