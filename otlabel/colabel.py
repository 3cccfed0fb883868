"""Co-labelling: fuse the predictions of several streams or views into one score matrix."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._checks import Array, check_scores, to_tensor
from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["colabel"]

SPACES = ("probs", "logits")


def _weights(weights: Any, count: int) -> list[float]:
    if weights is None:
        return [1.0 / count] * count
    if isinstance(weights, (torch.Tensor, np.ndarray)):
        weights = weights.tolist()
    if not isinstance(weights, Sequence) or isinstance(weights, (str, bytes)):
        raise ArgumentTypeError(f"weights must be a sequence of numbers, got {type(weights).__name__}")
    if len(weights) != count:
        raise InvalidArgumentError(f"weights has {len(weights)} entries but there are {count} predictions")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, numbers.Real):
            raise ArgumentTypeError(f"weights must hold real numbers, got {type(w).__name__}")
        if not math.isfinite(w) or w < 0:
            raise InvalidArgumentError(f"weights must be finite and non-negative, got {list(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise InvalidArgumentError("weights must not all be zero")
    return [float(w) / total for w in weights]


def colabel(predictions: Sequence[Array], weights: Sequence[float] | None = None, space: str = "probs") -> Array:
    r"""Fuse the logits of several streams into one score matrix to label (CASE suppl. F.2).

    Two-stream models (RGB and optical flow, or two augmented views) label both streams
    with *one* OT call on a fused prediction, so that both are trained toward the same
    pseudo-labels.

    * ``space="probs"`` (the CASE paper): average the streams' class probabilities,
      :math:`\log \sum_i w_i\, \mathrm{softmax}(x_i)`, returned as log-probabilities.
    * ``space="logits"`` (the official CASE code): average the logits, :math:`\sum_i w_i x_i`.

    For a single stream both return the input up to a per-row constant, which does not
    change the converged labels (tolerance mode); the fixed-iteration mode, like the SwAV
    loop it reproduces, is sensitive to it, so ``space="logits"`` is the one that leaves a
    single stream's three-iteration labels untouched. The result goes to :func:`sinkhorn` or :func:`sinkhorn_with_prior`
    with the same ``epsilon`` one would use for one stream.

    Parameters
    ----------
    predictions : sequence of Tensor or ndarray, each (N, K) or (B, N, K)
        Logits of each stream, all of one shape, dtype and array type.
    weights : sequence of float, optional
        Relative weight of each stream (non-negative, normalised to sum to 1); default equal.
    space : {"probs", "logits"}, default "probs"
        Where the streams are averaged.

    Returns
    -------
    Tensor or ndarray
        Fused scores of the common shape (no gradient is cut: fusing is differentiable).

    Examples
    --------
    >>> import torch
    >>> from otlabel import colabel, sinkhorn
    >>> rgb, flow = torch.randn(8, 4), torch.randn(8, 4)
    >>> Q = sinkhorn(colabel([rgb, flow]), epsilon=0.5)
    >>> Q.shape
    torch.Size([8, 4])
    """
    if isinstance(predictions, (torch.Tensor, np.ndarray)) or not isinstance(predictions, Sequence):
        raise ArgumentTypeError("predictions must be a list or tuple of score matrices, one per stream")
    if len(predictions) == 0:
        raise InvalidArgumentError("predictions is empty: give at least one stream")
    if space not in SPACES:
        raise InvalidArgumentError(f"space must be one of {SPACES}, got {space!r}")
    tensors = []
    numpy_flags = set()
    for i, prediction in enumerate(predictions):
        tensor, was_numpy = to_tensor(prediction, f"predictions[{i}]")
        check_scores(tensor, f"predictions[{i}]")
        tensors.append(tensor)
        numpy_flags.add(was_numpy)
    first = tensors[0]
    for i, tensor in enumerate(tensors[1:], start=1):
        if tensor.shape != first.shape:
            raise InvalidArgumentError(
                f"predictions[{i}] has shape {tuple(tensor.shape)} but predictions[0] has {tuple(first.shape)}"
            )
        if tensor.dtype != first.dtype or tensor.device != first.device:
            raise InvalidArgumentError(
                f"predictions[{i}] is {tensor.dtype} on {tensor.device} but predictions[0] is "
                f"{first.dtype} on {first.device}"
            )
    if len(numpy_flags) > 1:
        raise ArgumentTypeError("predictions mixes numpy arrays and torch tensors")
    w = _weights(weights, len(tensors))
    if space == "logits":
        fused = sum(wi * t for wi, t in zip(w, tensors, strict=True))
    else:
        terms = [torch.log_softmax(t, dim=-1) + math.log(wi) for wi, t in zip(w, tensors, strict=True) if wi > 0]
        fused = torch.logsumexp(torch.stack(terms), dim=0)
    return fused.numpy() if numpy_flags == {True} else fused
