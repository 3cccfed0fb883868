"""Scoring a trained model: one path for ``train.py``, ``evaluate.py`` and the ablation.

load → build the data set → predict → detect → ground truth → score:

* :func:`evaluate_checkpoint` does it all for a checkpoint file: ``train.py``'s final
  evaluation (``predictions.json``, ``metrics.json``), ``evaluate.py --checkpoint`` and the
  ablation's re-scored foreground modes are each one call, so they cannot disagree;
* :func:`valid_one_epoch` is its second half for a model in memory (predict → detect →
  score), which the held-out model selection calls during training;
* :func:`evaluate_predictions` is the scoring step alone (:mod:`case.scoring`, NumPy only,
  which ``evaluate.py --pred`` calls without importing this module and torch).

An evaluation of a checkpoint detects and scores every foreground mode of clustering-assisted
testing — P^A, P^T and P^M (:func:`case.scoring.reported_modes`) — from one forward pass per
video; :meth:`Evaluation.record` is its ``metrics.json``.

Examples
--------
>>> from case.evaluation import evaluate_checkpoint
>>> result = evaluate_checkpoint("runs/synthetic-seed0/checkpoints/final.pt")  # doctest: +SKIP
>>> result.metrics["mixed"].average, len(result.predictions["mixed"]["results"])  # doctest: +SKIP
(0.251..., 210)
>>> sorted(result.metrics), result.record()["modes"]["attention"]["average"]  # doctest: +SKIP
(['attention', 'cluster', 'mixed'], 0.236...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .data import build_dataset
from .distributed import setup_runtime
from .inference import (
    TrainedModel,
    detect_dataset,
    inference_class_names,
    inference_config,
    load_for_inference,
    predict_dataset,
)
from .metrics import DetectionMetrics
from .scoring import evaluate_predictions, has_annotations, metrics_record, read_references, reported_modes

__all__ = ["Evaluation", "evaluate_checkpoint", "valid_one_epoch", "evaluate_predictions", "has_annotations"]


@dataclass
class Evaluation:
    """What one evaluation produced.

    Attributes
    ----------
    config : Config
        The configuration it ran with (test-time settings, trained model).
    dataset
        The data set it ran on.
    predictions : dict of str to dict
        Per foreground mode, the detections (``{"results": {video: [...]}}``) of every video.
    metrics : dict of str to DetectionMetrics
        Per foreground mode, the scores; empty when there was no ground truth to score against.
    """

    config: Config
    dataset: Any
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, DetectionMetrics] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """The configured foreground mode (``postprocess.foreground_mode``)."""
        return self.config.postprocess.foreground_mode

    def record(self) -> dict[str, Any]:
        """``metrics.json``: the configured mode's figures, and every scored mode's under ``"modes"``
        (:func:`case.scoring.metrics_record`)."""
        return metrics_record(self.metrics, self.mode)


def _observed(outputs: Iterable[dict[str, Any]], observe: Callable[[dict[str, Any]], None]) -> Iterator[dict[str, Any]]:
    for output in outputs:
        observe(output)
        yield output


def valid_one_epoch(
    trained: TrainedModel,
    dataset: Any,
    cfg: Config,
    device: torch.device,
    *,
    ground_truth: Mapping[str, Any] | str | Path | None,
    subset: str,
    modes: Sequence[str] | None = None,
    indices: Sequence[int] | None = None,
    observe: Callable[[dict[str, Any]], None] | None = None,
) -> Evaluation:
    """Predict on ``dataset``, detect with each foreground mode, score against ``ground_truth``.

    Parameters
    ----------
    trained : TrainedModel
    dataset : VideoDataset
    cfg : Config
        Test-time settings (``eval``, ``postprocess``) and the trained sections.
    device : torch.device
    ground_truth : mapping, path or None
        ActivityNet-style ground truth (read and checked before any prediction); None to
        predict only.
    subset : str
        The ground truth's subset to score.
    modes : sequence of str, optional
        Foreground modes to detect with (default: ``postprocess.foreground_mode`` alone, as
        the held-out model selection needs); one forward pass serves them all.
    indices : sequence of int, optional
        Only these videos of ``dataset``.
    observe : callable, optional
        Called with each video's model outputs as they come (e.g. to draw a few).
    """
    modes = tuple(modes or (cfg.postprocess.foreground_mode,))
    class_names = inference_class_names(trained, dataset.class_names)
    gt, ambiguous = (None, None) if ground_truth is None else read_references(ground_truth, subset, cfg.eval.ambiguous)
    outputs: Iterable[dict[str, Any]] = predict_dataset(trained, dataset, cfg, device, indices)
    if observe is not None:
        outputs = _observed(outputs, observe)
    if len(modes) > 1:  # several post-processings of the same outputs: keep them
        outputs = list(outputs)
    result = Evaluation(cfg, dataset)
    for mode in modes:
        result.predictions[mode] = detect_dataset(outputs, class_names, cfg, mode)
        if gt is not None:
            result.metrics[mode] = evaluate_predictions(gt, result.predictions[mode], cfg.eval.tiou, ambiguous)
    return result


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    device: torch.device | None = None,
    dataset: Any = None,
    ground_truth: Mapping[str, Any] | str | Path | None = None,
    subset: str | None = None,
    modes: Sequence[str] | None = None,
    observe: Callable[[dict[str, Any]], None] | None = None,
) -> Evaluation:
    """Load a checkpoint, build its data set, predict, detect and score: the one evaluation path.

    Parameters
    ----------
    checkpoint : path
        A checkpoint of ``train.py`` (``final.pt``, ``best.pt``, ``step_*.pt``).
    config, overrides
        Test-time configuration (:func:`case.inference.inference_config`): by default the
        checkpoint's own, i.e. its run's ``eval.split``.
    device : torch.device, optional
        Default: ``train.device`` with ``train.threads`` (:func:`case.distributed.setup_runtime`).
    dataset : VideoDataset, optional
        The ``eval.split`` data set when the caller has already built (and checked) it.
    ground_truth : mapping or path, optional
        Default: the data set's own annotations, or none when it has none (predictions only).
    subset : str, optional
        The ground truth's subset to score (default ``eval.split``).
    modes : sequence of str, optional
        Foreground modes to detect with and score; default: P^A, P^T and P^M and the
        configured one (:func:`case.scoring.reported_modes`), all from one forward pass.
    observe : callable, optional
        As in :func:`valid_one_epoch`.
    """
    trained = load_for_inference(checkpoint, "cpu")
    cfg = inference_config(trained.config, config, overrides)
    device = device if device is not None else setup_runtime(cfg.train.device, cfg.train.threads)
    trained.model.to(device)
    trained.cluster_fg = trained.cluster_fg.to(device)
    if dataset is None:
        dataset = build_dataset(cfg.data, cfg.eval.split, cfg.eval.sampling, seed=cfg.train.seed)
    if ground_truth is None:
        own = dataset.ground_truth()
        ground_truth = own if has_annotations(own) else None
    return valid_one_epoch(
        trained,
        dataset,
        cfg,
        device,
        ground_truth=ground_truth,
        subset=subset or cfg.eval.split,
        modes=tuple(modes) if modes else reported_modes(cfg.postprocess.foreground_mode),
        observe=observe,
    )
