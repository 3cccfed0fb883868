"""Data for the CASE example: one dataset interface over real and synthetic sources.

* :func:`build_dataset` / :class:`VideoDataset` / :func:`collate_videos` — what training and
  evaluation use;
* :class:`DataConfig` — the source (``"synthetic"``, ``"basnet"``, ``"wtalc"``), its folder,
  the number of snippets sampled per video; :class:`SyntheticConfig` — seed and size of the
  generated THUMOS14-like set;
* :mod:`case.data.constants` — snippet timing and the THUMOS14 statistics the generator uses.

:mod:`case.data.dataset` (and with it torch) is imported on first use of one of its names, so
that what needs only the constants or the errors — ``evaluate.py --pred``, the NumPy-only
scoring — never loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .constants import FEATURE_FPS, FRAMES_PER_SNIPPET, SNIPPET_SECONDS
from .errors import DatasetError, DatasetFileNotFoundError
from .sampling import sample_indices
from .synthetic import FeatureModel, SyntheticConfig, ensure_synthetic

if TYPE_CHECKING:
    from .dataset import DataConfig, VideoDataset, build_dataset, collate_items, collate_videos

#: Names served by :mod:`case.data.dataset`, imported when first asked for.
_LAZY = frozenset({"DataConfig", "VideoDataset", "build_dataset", "collate_items", "collate_videos"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(".dataset", __name__), name)
        globals()[name] = value  # once: later look-ups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FEATURE_FPS",
    "FRAMES_PER_SNIPPET",
    "SNIPPET_SECONDS",
    "DataConfig",
    "DatasetError",
    "DatasetFileNotFoundError",
    "FeatureModel",
    "SyntheticConfig",
    "VideoDataset",
    "build_dataset",
    "collate_items",
    "collate_videos",
    "ensure_synthetic",
    "sample_indices",
]
