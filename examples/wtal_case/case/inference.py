"""A trained model on videos: its checkpoint, its test-time configuration, its outputs, detections.

A checkpoint fixes what was *trained* — the model, the losses that defined its video scores
and its labelling (config sections ``model``, ``loss``, ``labeling``) — while the data set it
runs on and the test-time settings (``data``, ``eval``, ``postprocess``, ``train.device``)
may come from another configuration file or from ``--set`` overrides
(:func:`inference_config`). Scoring the detections is :mod:`case.evaluation`'s job.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import checkpoint as ckpt
from .config import Config, ConfigError, apply_overrides, from_dict, load_config, to_dict
from .losses import mil_pooling
from .model import CASEModel
from .postprocess import detect_video, foreground_for_testing

__all__ = [
    "TRAINED_SECTIONS",
    "TrainedModel",
    "load_for_inference",
    "inference_config",
    "inference_class_names",
    "predict_video",
    "predict_dataset",
    "detect_dataset",
]

#: Config sections that a checkpoint fixes: they describe the trained model and how its
#: outputs are read (``loss.topk_divisor`` and ``loss.calibration`` set the video scores).
TRAINED_SECTIONS = ("model", "loss", "labeling")


@dataclass
class TrainedModel:
    """A model ready for inference, with what its outputs mean.

    Attributes
    ----------
    model : CASEModel
        In eval mode, on the requested device.
    cluster_fg : Tensor (K,)
        Q^C[:, fg] of the last cluster classification (clustering-assisted testing).
    config : Config
        The configuration the model was trained with.
    class_names : list of str
        The class of each classifier output, in order.
    step : int
        Training steps behind the weights.
    path : Path or None
        The checkpoint file (None for a model still in training).
    """

    model: CASEModel
    cluster_fg: Tensor
    config: Config
    class_names: list[str]
    step: int
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        """C, the number of classifier outputs."""
        return self.model.num_classes


def load_for_inference(checkpoint: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The model, Q^C[:, fg], configuration and class names saved in a checkpoint.

    Raises
    ------
    FileNotFoundError, RuntimeError
        Naming the file: missing, unreadable, lacking what inference needs
        (:data:`case.checkpoint.INFERENCE_KEYS`: a bare ``state_dict`` lacks all but the
        weights), an invalid saved configuration, or weights that do not fit it or are not
        finite (:func:`case.checkpoint.load_weights`).

    Examples
    --------
    >>> trained = load_for_inference("runs/synthetic-seed0/checkpoints/final.pt")  # doctest: +SKIP
    >>> trained.class_names[:2], trained.cluster_fg.shape  # doctest: +SKIP
    (['BaseballPitch', 'BasketballDunk'], torch.Size([16]))
    """
    state = ckpt.load_trained(checkpoint, map_location=device)
    cfg = ckpt.saved_config(checkpoint, state)
    names = ckpt.saved_class_names(checkpoint, state)
    # Built without its random initialisation (which the checkpoint's weights replace, and which would
    # move the global generator): shapes only, then uninitialised memory that load_weights fills in
    # full (a strict load_state_dict: every parameter, each copied as it was saved; no buffers).
    with torch.device("meta"):
        model = CASEModel(cfg.data.feature_dim, len(names), cfg.model)
    model = model.to_empty(device=device)
    cluster_fg = ckpt.load_weights(checkpoint, state, model)  # shapes, finite values: one line naming the file
    model.eval()
    return TrainedModel(model, cluster_fg.to(device), cfg, names, int(state["step"]), Path(checkpoint))


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
    class the model was not trained on.

    Raises
    ------
    ValueError
        The data set has classes the model does not.
    """
    unknown = sorted(set(dataset_classes) - set(trained.class_names))
    if unknown:
        raise ValueError(
            f"the data set has classes the model in {trained.path} was not trained on: {unknown} "
            f"(its classes: {trained.class_names})"
        )
    return list(trained.class_names)


@torch.no_grad()
def predict_video(model: CASEModel, features: Tensor, cluster_fg: Tensor, cfg: Config) -> dict[str, np.ndarray]:
    """What the model says about one video, in the form post-processing takes.

    Parameters
    ----------
    model : CASEModel
        In eval mode.
    features : Tensor (T, D)
    cluster_fg : Tensor (K,)
        Q^C[:, fg] saved with the checkpoint.
    cfg : Config

    Returns
    -------
    dict of ndarray
        ``cas`` (T, C): softmax over classes, streams averaged; ``attention`` (T,): P^A,
        streams averaged; ``cluster_probs`` (T, K): P^S, streams averaged; ``cluster_fg``
        (K,); ``video_scores`` (C,): each stream's softmax of its top-k pooled logits
        (k = ⌊T / loss.topk_divisor⌋, chosen on the training calibration), averaged.
    """
    outputs = model(features.unsqueeze(0))
    cas_probs, attentions, video_logits, _ = mil_pooling(outputs, cfg.loss)
    video_scores = torch.stack([F.softmax(v, dim=-1) for v in video_logits]).mean(0)
    cluster_probs = torch.stack([F.softmax(o.cluster_logits, dim=-1) for o in outputs]).mean(0)
    return {
        "cas": cas_probs[0].float().cpu().numpy(),
        "attention": torch.stack(attentions).mean(0)[0].float().cpu().numpy(),
        "cluster_probs": cluster_probs[0].float().cpu().numpy(),
        "cluster_fg": cluster_fg.float().cpu().numpy(),
        "video_scores": video_scores[0].float().cpu().numpy(),
    }


def predict_dataset(
    trained: TrainedModel,
    dataset: Any,
    cfg: Config,
    device: torch.device,
    indices: Sequence[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`predict_video` for each video of ``dataset`` (or of ``indices``), with its metadata."""
    trained.model.eval()
    cluster_fg = trained.cluster_fg.to(device)
    for i in range(len(dataset)) if indices is None else indices:
        item = dataset[i]
        out = predict_video(trained.model, item["features"].to(device), cluster_fg, cfg)
        index = item["index"]
        out.update(
            video=item["video"],
            index=index.numpy() if isinstance(index, Tensor) else np.asarray(index),
            num_snippets=int(item["num_snippets"]),
            duration=float(item["duration"]),
        )
        yield out


def detect_dataset(
    outputs: Iterable[Mapping[str, Any]], class_names: Sequence[str], cfg: Config, foreground_mode: str | None = None
) -> dict[str, Any]:
    """Detections of every video (ActivityNet results format) from :func:`predict_dataset`'s outputs.

    ``foreground_mode`` replaces ``cfg.postprocess.foreground_mode`` (``"attention"``: P^A,
    ``"cluster"``: P^T, ``"mixed"``: P^M, ``"official"``), for the paper's Table 7; the CAS
    weight that follows the mode (``postprocess.cas_weight`` unset) follows it too.
    """
    post = cfg.postprocess
    if foreground_mode is not None:
        post = dataclasses.replace(post, foreground_mode=foreground_mode)
    results = {}
    for p in outputs:
        foreground = foreground_for_testing(
            p["attention"], p["cluster_probs"], p["cluster_fg"], mode=post.foreground_mode
        )
        results[p["video"]] = detect_video(
            p["cas"],
            foreground,
            p["video_scores"],
            p["index"],
            p["num_snippets"],
            p["duration"],
            list(class_names),
            post,
        )
    return {"results": results}
