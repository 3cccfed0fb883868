"""Typed YAML: YAML text read strictly and mapped onto nested dataclasses, every value checked.

The generic half of the example's configuration (:mod:`case.config` gathers the sections and
their rules); nothing here knows a section of this example.

* :func:`parse_yaml` reads YAML strictly: a key written twice in one mapping is an error (YAML's
  loaders let the later one win silently), and any problem is one line naming its place;
* :func:`from_dict` builds a dataclass from a mapping, checking **types and choices** from each
  field's annotation: ``int``, ``float`` (an integer is accepted, and so is a numeric string such
  as ``1e-4``, which YAML 1.1 reads as a string), ``bool``, ``str``, ``Literal[...]`` choices,
  optional values, lists, tuples and nested dataclasses; an unknown key is an error naming the
  key and the keys that exist; an integer must fit in 64 bits (a float: in the float range); the
  dataclass's own ``__post_init__`` checks values, its :class:`ValueError` becoming a
  :class:`~case.errors.ConfigError`;
* :func:`apply_overrides` applies ``section.key=value`` overrides (values parsed as YAML),
  checking each key against the dataclasses before any value is;
* :func:`load_typed` does all three for a file; :func:`to_dict` and :func:`config_differences`
  go back to plain data and compare two of it.

Examples
--------
>>> from case.config import OptimConfig
>>> load_typed(OptimConfig, None, ["lr=1e-3", "betas=[0.8, 0.9]"])
OptimConfig(lr=0.001, weight_decay=0.0005, betas=(0.8, 0.9), fused=False)
>>> load_typed(OptimConfig, None, ["lrr=2"])
Traceback (most recent call last):
    ...
case.errors.ConfigError: defaults: --set lrr: unknown key 'lrr'; valid keys of the top level: lr, weight_decay, ...
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .messages import clip, describe_int, shorten_numbers, shown

__all__ = [
    "INT_RANGE",
    "parse_yaml",
    "from_dict",
    "to_dict",
    "config_differences",
    "apply_overrides",
    "load_typed",
]

#: Integer settings are 64-bit: beyond that, a value is a typo (and would overflow in NumPy or torch).
INT_RANGE = (-(2**63), 2**63 - 1)

#: A decimal number as a user writes it: 1e-4, 5E+3, .5, -2.5e-3 (YAML 1.1 reads some as strings).
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


# --------------------------------------------------------------------------- strict YAML


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping."""


def _unique_keys_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *defaults' keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            repeated = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: the base constructor names it
            continue
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is written twice in one mapping", key_node.start_mark
            )
    yield from loader.construct_yaml_map(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys_mapping)


def parse_yaml(text: str) -> Any:
    """Parse YAML text strictly (no repeated key); any problem is one :class:`ConfigError` line.

    The message is the problem and where it is (``found character '\\t' that cannot start any
    token (line 2, column 1)``), not PyYAML's several lines with a caret.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a safe loader (see above)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{err.problem or err.context}{where}") from None
    except (yaml.YAMLError, ValueError) as err:  # ValueError: a date like 2020-13-45, a 5000-digit integer
        problem = " ".join(str(err).split())
        if "integer string conversion" in problem:  # Python's advice (set_int_max_str_digits) is not the user's
            problem = "an integer of more than 4300 digits"
        raise ConfigError(problem) from None


# --------------------------------------------------------------------------- typed mapping


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and return it in that type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {shown(value)}")
        return from_dict(tp, value, key)
    if tp is Any:
        return value
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {shown(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {shown(value)}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {shown(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must be a list of {len(args)} items, got {shown(list(value))}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {shown(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {shown(value)}")
        return value  # its range: from_dict, after the section's own checks (which say more)
    if tp is float:
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {shown(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ConfigError(f"{key} must be a number within the float range, got {describe_int(value)}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {shown(value)}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: cannot check a value against type {tp!r}")


@functools.cache
def _field_hints(cls: type) -> Mapping[str, Any]:
    """The resolved type hints of dataclass ``cls``, computed once: :func:`typing.get_type_hints`
    evaluates every string annotation anew on each call (some 220 calls per evaluation of a checkpoint)."""
    return types.MappingProxyType(typing.get_type_hints(cls))  # shared: read-only


def from_dict(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types (missing keys: defaults).

    Raises
    ------
    ConfigError
        For an unknown key (listing the valid ones), a value of the wrong type, or a value
        the dataclass itself rejects.
    """
    hints = _field_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown key {clip(path)!r}; valid keys{' of ' + prefix if prefix else ''}: {', '.join(names)}"
            )
        kwargs[key] = _convert(value, hints[key], path)
    try:
        made = cls(**kwargs)  # __post_init__ checks the values
    except (ValueError, TypeError) as err:  # a ConfigError too: its value may be hundreds of digits long
        raise ConfigError(shorten_numbers(str(err))) from err
    for key, value in kwargs.items():
        if type(value) is int and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            path = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{path} must be an integer within ±2**63, got {describe_int(value)}")
    return made


def to_dict(obj: Any) -> Any:
    """A dataclass as plain YAML-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every value that differs between two configurations as plain data.

    Examples
    --------
    >>> config_differences({"optim": {"lr": 0.1, "betas": [0.9, 0.99]}}, {"optim": {"lr": 0.5, "betas": [0.9, 0.99]}})
    ['optim.lr: 0.1 -> 0.5']
    """
    found = []
    for key in list(old) + [k for k in new if k not in old]:
        path = f"{prefix}.{key}" if prefix else str(key)
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += config_differences(a, b, path)
        elif a != b:
            found.append(f"{path}: {a!r} -> {b!r}")
    return found


def apply_overrides(values: dict[str, Any], overrides: Sequence[str], root: type) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a raw config mapping.

    Keys are checked against the dataclass ``root`` (and the sections it nests) so that a typo
    fails here, naming the key.
    """
    result = dict(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {clip(item)!r}")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(f"--set key {clip(dotted)!r} is malformed")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except ConfigError as err:
            raise ConfigError(f"--set {clip(dotted)}: cannot parse value {clip(raw)!r}: {err}") from None
        cls: Any = root
        node = result
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
            here = ".".join(parts[: depth + 1])
            if part not in names:
                where = ".".join(parts[:depth]) or "the top level"
                raise ConfigError(
                    f"--set {clip(dotted)}: unknown key {clip(here)!r}; valid keys of {where}: {', '.join(names)}"
                )
            hint = _field_hints(cls)[part]
            if depth == len(parts) - 1:
                node[part] = value
                break
            if not dataclasses.is_dataclass(hint):
                raise ConfigError(f"--set {clip(dotted)}: {here!r} is a value, not a section")
            child = node.get(part, {})
            if not isinstance(child, Mapping):  # `train: 5` in the file: an error, not a section to replace
                raise ConfigError(f"{here} must be a mapping of {hint.__name__} fields, got {shown(child)}")
            child = dict(child)
            node[part] = child
            node, cls = child, hint
    return result


def load_typed(root: type, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
    """Read a YAML file onto the dataclass ``root`` (None: all defaults), apply ``--set`` overrides, check everything.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file with any subset of ``root``'s fields.
    overrides : sequence of str
        ``section.key=value`` items (``labeling.scc.sigma=0.2``, ``train.steps=100``).

    Raises
    ------
    ConfigError
        Naming the file and the key for a missing or unparsable file, an unknown key, a value
        of the wrong type or out of range.
    """
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        try:
            loaded = parse_yaml(text)
        except ConfigError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        values = dict(loaded)
    try:
        return from_dict(root, apply_overrides(values, overrides, root))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
