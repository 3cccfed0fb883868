"""The example's configuration: its sections, their rules, and the YAML files that set them.

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

The loader is generic and lives in :mod:`case.typed_yaml` (strict YAML, typed mapping onto
dataclasses, ``--set`` overrides); this module only gathers the sections of this example
(:class:`Config`) and their own checks.

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

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .data import DataConfig
from .errors import ConfigError
from .labeling import LabelingConfig
from .losses import LossConfig
from .messages import shown
from .metrics import DEFAULT_TIOU_THRESHOLDS, check_tiou_thresholds
from .model import ModelConfig
from .postprocess import PostprocessConfig
from .typed_yaml import apply_overrides as _apply_overrides
from .typed_yaml import config_differences, from_dict, load_typed, parse_yaml, to_dict

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
    "ADDED_SETTINGS",
    "dump_config",
    "parse_yaml",
    "CONFIG_DIR",
]

#: The example's shipped configurations (``synthetic.yaml`` is the default).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

#: The largest ``train.seed``: NumPy seeds are 32-bit.
MAX_SEED = 2**32 - 1

#: The most worker processes or threads a run may ask for (``train.num_workers``, ``train.threads``).
MAX_PARALLEL = 1024

#: Adam's learning rate: above this a step moves every weight by more than the features' own
#: scale (the paper uses 1e-4), and from about 1e38 Adam's step no longer fits in a float.
MAX_LR = 10.0


@dataclass
class OptimConfig:
    """Adam (the paper's optimiser; learning rate 1e-4, weight decay 5e-4, β = (0.9, 0.999)).

    ``lr`` lies in (0, 10] (:data:`MAX_LR`). ``fused`` takes PyTorch's fused Adam kernel
    (``torch.optim.Adam(fused=True)``): one pass over all parameters instead of a dozen
    operations per parameter (at THUMOS14 scale on a 2-core CPU, the update alone takes 7 ms
    instead of 51 ms, within the noise of a whole step).
    It is not bit-identical with the default for-loop update (its arithmetic is ordered
    differently: weights differ in the last bit after a step), so it is a setting: part of a
    run's configuration, which ``--resume`` keeps.
    """

    lr: float = 1e-4
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    fused: bool = False

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
    precision : {"float32", "bfloat16"}
        Arithmetic of the model's four encoders in training: float32, or bfloat16 under
        ``torch.autocast`` (CPU and CUDA alike). The heads, the losses, the labelling (otlabel)
        and the weights stay float32 either way, and evaluation runs in float32.
    compile : bool
        Train through ``torch.compile(model)`` (inductor; on the CPU it needs a C++ compiler).
        The first step compiles (tens of seconds on a small CPU); the kernels it generates
        round differently from eager ones, so a run's ``compile`` is part of its configuration.
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
    precision: Literal["float32", "bfloat16"] = "float32"
    compile: bool = False

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
            raise ValueError(f"train.device must be 'cpu', 'cuda' or 'cuda:<index>', got {shown(self.device)}")
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


# --------------------------------------------------------------------------- the example's configuration files


#: Settings added after runs had been saved, with the value that a run saved before them used:
#: :func:`differences_from` reads a saved configuration without the key as having this value
#: (so such a run resumes, and an ablation reuses it).
ADDED_SETTINGS = {"train.precision": "float32", "train.compile": False, "optim.fused": False}


def differences_from(saved: Any, cfg: Config) -> list[str]:
    """How ``cfg`` differs from a saved configuration (plain data, as a run folder's
    ``config.yaml`` or a checkpoint holds it): :func:`config_differences`, empty when the same.
    A key of :data:`ADDED_SETTINGS` missing from ``saved`` has the value runs had before it."""
    if not isinstance(saved, Mapping):
        return [f"(the saved configuration is a {type(saved).__name__}, not a mapping)"]
    saved = dict(saved)
    for key, before in ADDED_SETTINGS.items():
        section, name = key.split(".")
        if isinstance(saved.get(section), Mapping) and name not in saved[section]:
            saved[section] = {**saved[section], name: before}
    return config_differences(saved, parse_yaml(dump_config(cfg)))  # the plain data a saved one reads back as


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a raw config mapping.

    Keys are checked against :class:`Config` so that a typo fails here, naming the key
    (:func:`case.typed_yaml.apply_overrides`).
    """
    return _apply_overrides(values, overrides, Config)


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
    return load_typed(Config, path, overrides)


def dump_config(cfg: Config) -> str:
    """The resolved configuration as YAML text (reloads with :func:`load_config` to ``cfg``)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
