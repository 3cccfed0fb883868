"""Run a trained checkpoint on a data set: its configuration there, detections, and their scores.

``evaluate.py --checkpoint`` and the reproduction report (:mod:`case.ablation`) use this module.
A checkpoint fixes what was *trained* — the model, the losses that defined its video scores
and its labelling (config sections ``model``, ``loss``, ``labeling``) — while the data set it
runs on and the test-time settings (``data``, ``eval``, ``postprocess``, ``train.device``)
may come from another configuration file or from ``--set`` overrides.

Examples
--------
>>> from case.inference import inference_config
>>> from case.config import Config
>>> cfg = inference_config(Config(), overrides=["postprocess.foreground_mode=attention"])
>>> cfg.postprocess.foreground_mode
'attention'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .config import Config, ConfigError, apply_overrides, from_dict, load_config, to_dict
from .engine import TrainedModel, detect_dataset, predict_dataset

__all__ = [
    "TRAINED_SECTIONS",
    "inference_config",
    "inference_class_names",
    "predict_outputs",
    "detections",
]

#: Config sections that a checkpoint fixes: they describe the trained model and how its
#: outputs are read (``loss.topk_divisor`` and ``loss.calibration`` set the video scores).
TRAINED_SECTIONS = ("model", "loss", "labeling")


def inference_config(trained: Config, config: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """The configuration to run a trained model with: test-time settings, trained model.

    Parameters
    ----------
    trained : Config
        The configuration saved in the checkpoint.
    config : path, optional
        A YAML configuration whose ``data``, ``eval``, ``postprocess`` and ``train`` sections
        describe the data set to run on (e.g. ``configs/thumos14.yaml``); by default the
        checkpoint's own (its training run's test split).
    overrides : sequence of str
        ``section.key=value`` items applied on top (``eval.split=train``,
        ``postprocess.foreground_mode=attention``).

    Returns
    -------
    Config
        ``model``, ``loss`` and ``labeling`` are the checkpoint's; the rest as requested.

    Raises
    ------
    ConfigError
        An override of a trained section, a malformed file or override, or a feature width
        (``data.feature_dim``) other than the one the model was trained on.
    """
    for item in overrides:
        section = item.split("=", 1)[0].strip().split(".", 1)[0]
        if section in TRAINED_SECTIONS:
            free = ", ".join(f.name for f in dataclasses.fields(Config) if f.name not in TRAINED_SECTIONS)
            raise ConfigError(
                f"--set {item}: the {section!r} section is fixed by the checkpoint (it describes the trained "
                f"model); only {free} can change at test time"
            )
    if config is None:
        cfg = from_dict(Config, apply_overrides(to_dict(trained), overrides))
    else:
        cfg = load_config(config, overrides)
    if cfg.data.feature_dim != trained.data.feature_dim:
        raise ConfigError(
            f"data.feature_dim is {cfg.data.feature_dim} but the model was trained on features of width "
            f"{trained.data.feature_dim}"
        )
    return dataclasses.replace(cfg, model=trained.model, loss=trained.loss, labeling=trained.labeling)


def inference_class_names(trained: TrainedModel, dataset_classes: Sequence[str]) -> list[str]:
    """The class name of each classifier output, checked against the data set's classes.

    A data set may know fewer classes than the model (a test set without some class, or
    videos without annotations: their classes come from the annotations); it may not know a
    class the model was not trained on. Checkpoints written before class names were saved
    fall back to the data set's list, which must then have one name per output.

    Raises
    ------
    ValueError
        The data set has classes the model does not, or (old checkpoints) a different count.
    """
    if trained.class_names is None:
        if len(dataset_classes) != trained.num_classes:
            raise ValueError(
                f"{trained.path} has no class names and the data set has {len(dataset_classes)} classes, but the "
                f"model has {trained.num_classes} outputs"
            )
        return list(dataset_classes)
    unknown = sorted(set(dataset_classes) - set(trained.class_names))
    if unknown:
        raise ValueError(
            f"the data set has classes the model in {trained.path} was not trained on: {unknown} "
            f"(its classes: {trained.class_names})"
        )
    return list(trained.class_names)


def predict_outputs(trained: TrainedModel, dataset: Any, cfg: Config, device: torch.device) -> list[dict[str, Any]]:
    """The model's outputs on every video of ``dataset`` (:func:`case.engine.predict_dataset`), kept in memory.

    Post-processing them several times (:func:`detections` with different foreground modes)
    costs one forward pass per video in all.
    """
    return list(predict_dataset(trained.model, dataset, trained.cluster_fg, cfg, device))


def detections(
    outputs: Iterable[Mapping[str, Any]], class_names: Sequence[str], cfg: Config, foreground_mode: str | None = None
) -> dict[str, Any]:
    """Detections (ActivityNet results format) from :func:`predict_outputs`.

    ``foreground_mode`` replaces ``cfg.postprocess.foreground_mode`` (``"attention"``: P^A,
    ``"cluster"``: P^T, ``"mixed"``: P^M, ``"official"``), for the paper's Table 7.
    """
    if foreground_mode is not None:
        cfg = dataclasses.replace(
            cfg, postprocess=dataclasses.replace(cfg.postprocess, foreground_mode=foreground_mode)
        )
    return detect_dataset(iter(outputs), class_names, cfg)
