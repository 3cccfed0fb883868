"""The example's configuration: YAML files mapped onto nested dataclasses.

A config file holds any subset of the sections of :class:`Config` (missing keys keep their
defaults); ``--set section.key=value`` overrides (values parsed as YAML) are applied on top.
The resolved configuration is written to the run folder (``config.yaml``) and reloads to the
same object.

One validation convention, for every section:

* **types and choices** are checked here, by the loader, from each field's annotation:
  ``int``, ``float`` (an integer is accepted, and so is a numeric string such as ``1e-4``,
  which YAML 1.1 reads as a string), ``bool``, ``str``, ``Literal[...]`` choices, optional
  values, lists and tuples; an unknown key is an error naming the key and the keys that exist;
* **values** (ranges, and rules between fields) are checked by the section's
  ``__post_init__``, which raises :class:`ValueError` naming the full key
  (``postprocess.nms_iou must lie in [0, 1], got 2.0``);
* either way the caller gets one :class:`ConfigError` naming the source (file or defaults),
  on one line (a YAML syntax error is told by its problem and position).

YAML is read strictly: a key written twice in one mapping is an error (YAML's loaders let the
later one win silently), and an integer must fit in 64 bits (a float setting: in the float
range), so that no absurd value reaches training.

What depends on the machine or the data (a GPU for ``train.device=cuda``, the data set's files,
``eval.ambiguous``) is checked before training starts (:mod:`case.trainer`), not here, so that
a run folder's ``config.yaml`` always reloads.

Examples
--------
>>> from case.config import load_config
>>> cfg = load_config(None, ["train.steps=10", "labeling.scc.sigma=0.2"])
>>> cfg.train.steps, cfg.labeling.scc.sigma
(10, 0.2)
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .data import DataConfig
from .errors import ConfigError
from .labeling import LabelingConfig
from .losses import LossConfig
from .metrics import DEFAULT_TIOU_THRESHOLDS, check_tiou_thresholds
from .model import ModelConfig
from .postprocess import PostprocessConfig

__all__ = [
    "ConfigError",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "Config",
    "load_config",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "config_differences",
    "differences_from",
    "dump_config",
    "parse_yaml",
    "CONFIG_DIR",
]

#: The example's shipped configurations (``synthetic.yaml`` is the default).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

#: The largest ``train.seed``: NumPy seeds are 32-bit.
MAX_SEED = 2**32 - 1

#: Integer settings are 64-bit: beyond that, a value is a typo (and would overflow in NumPy or torch).
INT_RANGE = (-(2**63), 2**63 - 1)

#: The most worker processes or threads a run may ask for (``train.num_workers``, ``train.threads``).
MAX_PARALLEL = 1024

#: Adam's learning rate: above this a step moves every weight by more than the features' own
#: scale (the paper uses 1e-4), and from about 1e38 Adam's step no longer fits in a float.
MAX_LR = 10.0

#: A run of digits longer than this in an error is a pasted or mistyped value: shown by its size.
MAX_DIGITS_SHOWN = 40

#: A decimal number as a user writes it: 1e-4, 5E+3, .5, -2.5e-3 (YAML 1.1 reads some as strings).
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass
class OptimConfig:
    """Adam (the paper's optimiser; learning rate 1e-4, weight decay 5e-4, β = (0.9, 0.999)).

    ``lr`` lies in (0, 10] (:data:`MAX_LR`).
    """

    lr: float = 1e-4
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if not 0 < self.lr <= MAX_LR:  # NaN fails both comparisons
            raise ValueError(f"optim.lr must lie in (0, {MAX_LR:g}] (the paper uses 1e-4), got {self.lr:g}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"optim.weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1), got {list(self.betas)}")


@dataclass
class TrainConfig:
    """Training loop.

    Attributes
    ----------
    steps : int
        Optimiser steps (iterations); the paper trains THUMOS14 for about 3,600.
    batch_size : int
        Videos per step over all processes (paper: 16); under DDP each of W ranks takes
        ``batch_size / W`` of them.
    seed : int
        Seeds the model's initialisation and the data order and sampling; in [0, 2**32 - 1]
        (NumPy's seed range).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"`` (``train.py --device``).
    checkpoint_every : int
        Steps between periodic checkpoints (0: only the final one).
    keep_checkpoints : int
        Periodic checkpoints kept on disk (the oldest are deleted; the final one is kept).
    log_every : int
        Steps between ``log.jsonl`` records (1: every step).
    select : {"final", "heldout"}
        Model selection: the final weights (default), or the best mAP on a held-out slice of
        the *training* videos (never the test set).
    heldout_fraction : float
        Fraction of training videos held out when ``select="heldout"``.
    eval_every : int
        Steps between held-out evaluations when ``select="heldout"``.
    num_workers : int
        DataLoader worker processes (0: load in the training process).
    threads : int
        ``torch.set_num_threads`` for the run (0: leave PyTorch's default).
    progress : bool
        Show a tqdm progress bar.
    """

    steps: int = 3600
    batch_size: int = 16
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 1
    select: Literal["final", "heldout"] = "final"
    heldout_fraction: float = 0.0
    eval_every: int = 500
    num_workers: int = 0
    threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "keep_checkpoints", "num_workers", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("log_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "threads"):
            if getattr(self, name) > MAX_PARALLEL:
                raise ValueError(f"train.{name} must be <= {MAX_PARALLEL}, got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"train.seed must be an integer in [0, 2**32 - 1], got {self.seed}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"train.device must be 'cpu', 'cuda' or 'cuda:<index>', got {_shown(self.device)}")
        if self.select == "heldout" and not 0 < self.heldout_fraction < 1:
            raise ValueError(
                f"train.select='heldout' needs 0 < train.heldout_fraction < 1, got {self.heldout_fraction}"
            )
        if self.select == "final" and self.heldout_fraction != 0:
            raise ValueError("train.heldout_fraction is only used with train.select='heldout'")


@dataclass
class EvalConfig:
    """Test-time inference and scoring.

    Attributes
    ----------
    split : {"test", "train"}
        Split evaluated at the end of training.
    sampling : {"uniform", "all"}
        Snippets fed to the model per test video: ``data.num_segments`` uniformly spaced
        ones (the official code; shorter videos keep all theirs) or every snippet.
    tiou : list of float
        tIoU thresholds (THUMOS14: 0.1:0.1:0.7; ActivityNet: 0.5:0.05:0.95).
    ambiguous : str or None
        THUMOS14 ``Ambiguous_test.txt`` to ignore ambiguous segments (off by default).
    plot_videos : int
        Test videos drawn in the run folder's foreground plots.
    """

    split: Literal["test", "train"] = "test"
    sampling: Literal["uniform", "all"] = "uniform"
    tiou: list[float] = field(default_factory=lambda: list(DEFAULT_TIOU_THRESHOLDS))
    ambiguous: str | None = None
    plot_videos: int = 2

    def __post_init__(self) -> None:
        check_tiou_thresholds(self.tiou, "eval.tiou")  # the rule of --tiou and of the evaluator
        if self.plot_videos < 0:
            raise ValueError(f"eval.plot_videos must be >= 0, got {self.plot_videos}")


@dataclass
class Config:
    """The whole configuration of a run (one section per part of the example)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


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


def _clip(text: str, limit: int = 60) -> str:
    """``text`` for a one-line message: its start and length when it is long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _shown(value: Any) -> str:
    """``value`` as an error shows it: an integer of hundreds of digits by its size, a long
    text or list by its start and length, so that the message stays one readable line."""
    if type(value) is int:
        return _describe_int(value)
    return _clip(repr(value))


def _shorten_numbers(message: str) -> str:
    """``message`` with every run of more than :data:`MAX_DIGITS_SHOWN` digits replaced by its size.

    For the sections' own checks, which print the value they refuse (``train.seed must be an
    integer in [0, 2**32 - 1], got 1111...``), whatever its length.

    Examples
    --------
    >>> _shorten_numbers("train.seed must be an integer in [0, 2**32 - 1], got " + "1" * 400)
    'train.seed must be an integer in [0, 2**32 - 1], got an integer of 400 digits'
    """
    long_number = rf"-?\d{{{MAX_DIGITS_SHOWN + 1},}}"
    return re.sub(long_number, lambda run: f"an integer of {len(run[0].lstrip('-'))} digits", message)


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
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {_shown(value)}")
        return from_dict(tp, value, key)
    if tp is Any:
        return value
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {_shown(value)}")
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
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {_shown(value)}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {_shown(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must be a list of {len(args)} items, got {_shown(list(value))}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {_shown(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {_shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {_shown(value)}")
        return value  # its range: from_dict, after the section's own checks (which say more)
    if tp is float:
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {_shown(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ConfigError(f"{key} must be a number within the float range, got {_describe_int(value)}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {_shown(value)}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: cannot check a value against type {tp!r}")


def _describe_int(value: int) -> str:
    """An integer for a message: itself, or its size when it is too long to print."""
    if value.bit_length() <= 64:
        return str(value)
    return f"an integer of {int(value.bit_length() * math.log10(2)) + 1} digits"


def from_dict(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types (missing keys: defaults).

    Raises
    ------
    ConfigError
        For an unknown key (listing the valid ones), a value of the wrong type, or a value
        the dataclass itself rejects.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown key {_clip(path)!r}; valid keys{' of ' + prefix if prefix else ''}: {', '.join(names)}"
            )
        kwargs[key] = _convert(value, hints[key], path)
    try:
        made = cls(**kwargs)  # __post_init__ checks the values
    except (ValueError, TypeError) as err:  # a ConfigError too: its value may be hundreds of digits long
        raise ConfigError(_shorten_numbers(str(err))) from err
    for key, value in kwargs.items():
        if type(value) is int and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            path = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{path} must be an integer within ±2**63, got {_describe_int(value)}")
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


def differences_from(saved: Any, cfg: Config) -> list[str]:
    """How ``cfg`` differs from a saved configuration (plain data, as a run folder's
    ``config.yaml`` or a checkpoint holds it): :func:`config_differences`, empty when the same."""
    if not isinstance(saved, Mapping):
        return [f"(the saved configuration is a {type(saved).__name__}, not a mapping)"]
    return config_differences(saved, parse_yaml(dump_config(cfg)))  # the plain data a saved one reads back as


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a raw config mapping.

    Keys are checked against :class:`Config` so that a typo fails here, naming the key.
    """
    result = dict(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {_clip(item)!r}")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(f"--set key {_clip(dotted)!r} is malformed")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except ConfigError as err:
            raise ConfigError(f"--set {_clip(dotted)}: cannot parse value {_clip(raw)!r}: {err}") from None
        cls: Any = Config
        node = result
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
            here = ".".join(parts[: depth + 1])
            if part not in names:
                where = ".".join(parts[:depth]) or "the top level"
                raise ConfigError(
                    f"--set {_clip(dotted)}: unknown key {_clip(here)!r}; valid keys of {where}: {', '.join(names)}"
                )
            hint = typing.get_type_hints(cls)[part]
            if depth == len(parts) - 1:
                node[part] = value
                break
            if not dataclasses.is_dataclass(hint):
                raise ConfigError(f"--set {_clip(dotted)}: {here!r} is a value, not a section")
            child = node.get(part, {})
            if not isinstance(child, Mapping):  # `train: 5` in the file: an error, not a section to replace
                raise ConfigError(f"{here} must be a mapping of {hint.__name__} fields, got {_shown(child)}")
            child = dict(child)
            node[part] = child
            node, cls = child, hint
    return result


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None: all defaults), apply ``--set`` overrides, check everything.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file with any subset of :class:`Config`'s sections.
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
        return from_dict(Config, apply_overrides(values, overrides))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def dump_config(cfg: Config) -> str:
    """The resolved configuration as YAML text (reloads with :func:`load_config` to ``cfg``)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
