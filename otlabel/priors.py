"""Priors and marginals used by CASE: :func:`gaussian_rank_prior` (Eq. 11), :func:`foreground_marginal` (Eq. 13)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from ._checks import Array, to_tensor
from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["gaussian_rank_prior", "foreground_marginal", "fractional_ranks"]


def _float_input(value: Any, name: str) -> tuple[torch.Tensor, bool]:
    tensor, was_numpy = to_tensor(value, name)
    if not tensor.dtype.is_floating_point:
        tensor = tensor.to(torch.float64 if was_numpy else torch.get_default_dtype())
    if not bool(torch.isfinite(tensor).all()):
        raise InvalidArgumentError(f"{name} contains NaN or infinite values")
    return tensor, was_numpy


def fractional_ranks(values: Array) -> Array:
    """Ascending ranks in (0, 1] along the last axis, ties sharing their average rank.

    ``rank_n / N`` where ``rank_n`` is 1 for the smallest value and N for the largest; equal
    values get the mean of the ranks they span, so the result does not depend on the order
    of the snippets. Works on (N,) or (B, N).

    Examples
    --------
    >>> import torch
    >>> from otlabel import fractional_ranks
    >>> fractional_ranks(torch.tensor([0.3, 0.1, 0.3, 0.9])).tolist()
    [0.625, 0.25, 0.625, 1.0]
    """
    tensor, was_numpy = _float_input(values, "values")
    if tensor.dim() not in (1, 2) or tensor.shape[-1] == 0:
        raise InvalidArgumentError(f"values must have shape (N,) or (B, N) with N >= 1, got {tuple(tensor.shape)}")
    ordered = tensor.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, tensor.contiguous(), right=False)  # count of smaller values
    up_to = torch.searchsorted(ordered, tensor.contiguous(), right=True)  # count of values <= this one
    ranks = (below + up_to + 1).to(tensor.dtype) / 2  # average of ranks below+1 .. up_to
    result = ranks / tensor.shape[-1]
    return result.numpy() if was_numpy else result


def gaussian_rank_prior(fg_scores: Array, cluster_fg: Array, sigma: float) -> Array:
    r"""The dynamic prior of CASE's snippet clustering (Eq. 11).

    Snippets are ranked by their foreground score (ascending, ties averaged), giving
    :math:`\rho_n = \mathrm{rank}_n / N \in (0, 1]`; cluster k has a foreground level
    :math:`\phi_k \in [0, 1]`. The prior is a Gaussian in their distance:

    .. math::

        \hat Q_{nk} = \frac{1}{\sigma\sqrt{2\pi}} \exp\!\Bigl(-\frac{(\rho_n - \phi_k)^2}{2\sigma^2}\Bigr),

    normalised to sum to 1 over each problem (normalisation does not change the labels:
    row and column factors are absorbed by the Sinkhorn scalings). Snippets that look like
    foreground are pulled to foreground clusters. With the paper's :math:`\sigma = 10` the
    prior is almost flat (it varies by at most 0.5%); the official code ranks with the
    argsort *permutation* instead of ranks, which we do not reproduce.

    Parameters
    ----------
    fg_scores : Tensor or ndarray, shape (N,) or (B, N)
        Foreground score of each snippet (e.g. the attention); only the order matters.
    cluster_fg : Tensor or ndarray, shape (K,) or (B, K)
        Foreground level of each cluster in [0, 1] (CASE: the cluster classifier's
        foreground probability, Q^C[:, fg]).
    sigma : float
        Width of the Gaussian, > 0.

    Returns
    -------
    Tensor or ndarray, shape (N, K) or (B, N, K)
        A prior for :func:`sinkhorn_with_prior`, strictly positive, in ``fg_scores``' dtype.

    Examples
    --------
    >>> import torch
    >>> from otlabel import gaussian_rank_prior
    >>> prior = gaussian_rank_prior(torch.tensor([0.9, 0.1, 0.6]), torch.tensor([0.0, 1.0]), sigma=0.5)
    >>> prior.argmax(1).tolist()
    [1, 0, 1]
    """
    ranks_in, was_numpy = _float_input(fg_scores, "fg_scores")
    levels, _ = _float_input(cluster_fg, "cluster_fg")
    if ranks_in.dim() not in (1, 2) or ranks_in.shape[-1] == 0:
        raise InvalidArgumentError(f"fg_scores must have shape (N,) or (B, N) with N >= 1, got {tuple(ranks_in.shape)}")
    if levels.dim() not in (1, 2) or levels.shape[-1] == 0:
        raise InvalidArgumentError(f"cluster_fg must have shape (K,) or (B, K) with K >= 1, got {tuple(levels.shape)}")
    if levels.device != ranks_in.device:
        raise InvalidArgumentError(f"cluster_fg is on {levels.device} but fg_scores on {ranks_in.device}")
    if levels.dim() == 2 and (ranks_in.dim() != 2 or levels.shape[0] != ranks_in.shape[0]):
        raise InvalidArgumentError(
            f"cluster_fg of shape {tuple(levels.shape)} needs fg_scores of shape ({levels.shape[0]}, N), "
            f"got {tuple(ranks_in.shape)}"
        )
    if bool(((levels < 0) | (levels > 1)).any()):
        raise InvalidArgumentError("cluster_fg must lie in [0, 1]")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ArgumentTypeError(f"sigma must be a real number, got {type(sigma).__name__}")
    if not math.isfinite(sigma) or sigma <= 0:
        raise InvalidArgumentError(f"sigma must be a finite number > 0, got {sigma}")
    ranks = fractional_ranks(ranks_in)
    levels = levels.to(ranks.dtype)
    distance = ranks.unsqueeze(-1) - levels.unsqueeze(-2)  # (…, N, K)
    prior = torch.exp(-(distance**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    prior = prior / prior.sum(dim=(-2, -1), keepdim=True)
    return prior.numpy() if was_numpy else prior


def foreground_marginal(fg_labels: Array, valid: Array | None = None) -> Array:
    r"""The estimated foreground/background marginal of CASE's cluster classification (Eq. 13).

    .. math::

        \beta = \Bigl(\frac{1}{N}\sum_n y_n,\; 1 - \frac{1}{N}\sum_n y_n\Bigr)

    from binary (or soft, in [0, 1]) foreground pseudo-labels :math:`y_n` of the snippets,
    to be used as ``col_marginal`` when labelling clusters as (foreground, background).
    The uniform alternative (Eq. 9) is simply ``[0.5, 0.5]``.

    Parameters
    ----------
    fg_labels : Tensor or ndarray, shape (N,) or (B, N)
        Foreground pseudo-labels in [0, 1].
    valid : Tensor or ndarray of bool, same shape, optional
        Snippets to count (e.g. to ignore padding); default all.

    Returns
    -------
    Tensor or ndarray, shape (2,) or (B, 2)
        (foreground share, background share), summing to 1.

    Examples
    --------
    >>> import torch
    >>> from otlabel import foreground_marginal
    >>> foreground_marginal(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64)).tolist()
    [0.6, 0.4]
    """
    labels, was_numpy = _float_input(fg_labels, "fg_labels")
    if labels.dim() not in (1, 2) or labels.shape[-1] == 0:
        raise InvalidArgumentError(f"fg_labels must have shape (N,) or (B, N) with N >= 1, got {tuple(labels.shape)}")
    if bool(((labels < 0) | (labels > 1)).any()):
        raise InvalidArgumentError("fg_labels must lie in [0, 1]")
    if valid is None:
        share = labels.mean(-1)
    else:
        mask, _ = to_tensor(valid, "valid")
        if mask.dtype != torch.bool:
            raise ArgumentTypeError(f"valid must be a boolean mask, got dtype {mask.dtype}")
        if mask.shape != labels.shape:
            raise InvalidArgumentError(
                f"valid must have the shape of fg_labels {tuple(labels.shape)}, got {tuple(mask.shape)}"
            )
        mask = mask.to(labels.device)
        count = mask.sum(-1)
        if bool((count == 0).any()):
            raise InvalidArgumentError("valid selects no snippet for at least one problem")
        share = (labels * mask).sum(-1) / count
    result = torch.stack((share, 1 - share), dim=-1)
    return result.numpy() if was_numpy else result
