"""Data for the CASE example: one dataset interface over real and synthetic sources.

* :func:`build_dataset` / :class:`VideoDataset` / :func:`collate_videos` — what training and
  evaluation use;
* :class:`DataConfig` — the source (``"synthetic"``, ``"basnet"``, ``"wtalc"``), its folder,
  the number of snippets sampled per video; :class:`SyntheticConfig` — seed and size of the
  generated THUMOS14-like set;
* :mod:`case.data.constants` — snippet timing and the THUMOS14 statistics the generator uses.
"""

from .constants import FEATURE_FPS, FRAMES_PER_SNIPPET, SNIPPET_SECONDS
from .dataset import DataConfig, VideoDataset, build_dataset, collate_videos
from .errors import DatasetError, DatasetFileNotFoundError
from .sampling import sample_indices
from .synthetic import FeatureModel, SyntheticConfig, ensure_synthetic

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
    "collate_videos",
    "ensure_synthetic",
    "sample_indices",
]
