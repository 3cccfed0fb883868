"""Priors and marginals used by CASE: :func:`gaussian_rank_prior` (Eq. 11), :func:`foreground_marginal` (Eq. 13)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from ._checks import Array, to_tensor
from ._deferred import device_checks
from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["PROBABILITY_SLACK_ULPS", "gaussian_rank_prior", "foreground_marginal", "fractional_ranks"]

#: Probabilities (``cluster_fg``, ``fg_labels``) may leave [0, 1] by this many units of rounding
#: (machine epsilons of their dtype) — a label of 1.0000001 — and are then clamped into it.
PROBABILITY_SLACK_ULPS = 4


def _float_input(value: Any, name: str, on_device: bool | None = None) -> tuple[torch.Tensor, bool, bool]:
    """``value`` as a floating-point tensor, whether it was numpy, and whether checks stay on the
    device (``validate``'s answer; ``on_device=None``: decide for this tensor in "auto" mode).

    Host mode requires every value to be finite; device mode leaves that to the caller (NaN
    must then reach the result)."""
    tensor, was_numpy = to_tensor(value, name)
    if not tensor.dtype.is_floating_point:
        tensor = tensor.to(torch.float64 if was_numpy else torch.get_default_dtype())
    if on_device is None:
        on_device = device_checks("auto", tensor)
    if not on_device and not bool(torch.isfinite(tensor).all()):
        raise InvalidArgumentError(f"{name} contains NaN or infinite values")
    return tensor, was_numpy, on_device


def _probabilities(values: torch.Tensor, name: str, on_device: bool) -> torch.Tensor:
    """``values`` in [0, 1]: rounding-level excursions (see :data:`PROBABILITY_SLACK_ULPS`) are
    clamped; larger ones are an error (host mode) or NaN (device mode, never read back)."""
    slack = PROBABILITY_SLACK_ULPS * torch.finfo(values.dtype).eps
    inside = (values >= -slack) & (values <= 1 + slack)
    if on_device:
        return torch.where(inside, values.clamp(0, 1), math.nan)
    if not bool(inside.all()):
        worst = values[~inside].flatten()[0].item()
        raise InvalidArgumentError(f"{name} must lie in [0, 1] (up to rounding, {slack:.3g}); got {worst!r}")
    return values.clamp(0, 1)


def _ranks(tensor: torch.Tensor, on_device: bool) -> torch.Tensor:
    """Fractional ranks along the last axis; NaN where the input is not finite (device mode)."""
    ordered = tensor.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, tensor.contiguous(), right=False)  # count of smaller values
    up_to = torch.searchsorted(ordered, tensor.contiguous(), right=True)  # count of values <= this one
    ranks = (below + up_to + 1).to(tensor.dtype) / 2  # average of ranks below+1 .. up_to
    ranks = ranks / tensor.shape[-1]
    if on_device:  # a non-finite score has no rank: let it poison what is computed from it
        ranks = torch.where(torch.isfinite(tensor), ranks, math.nan)
    return ranks


def fractional_ranks(values: Array, *, validate: str = "auto") -> Array:
    """Ascending ranks in (0, 1] along the last axis, ties sharing their average rank.

    ``rank_n / N`` where ``rank_n`` is 1 for the smallest value and N for the largest; equal
    values get the mean of the ranks they span, so the result does not depend on the order
    of the snippets. Works on (N,) or (B, N). ``validate`` as in :func:`~otlabel.sinkhorn`:
    in device mode a non-finite value gets a NaN rank instead of an error.

    Examples
    --------
    >>> import torch
    >>> from otlabel import fractional_ranks
    >>> fractional_ranks(torch.tensor([0.3, 0.1, 0.3, 0.9])).tolist()
    [0.625, 0.25, 0.625, 1.0]
    """
    tensor, was_numpy, on_device = _float_input(values, "values", _device_mode(validate, values))
    if tensor.dim() not in (1, 2) or tensor.shape[-1] == 0:
        raise InvalidArgumentError(f"values must have shape (N,) or (B, N) with N >= 1, got {tuple(tensor.shape)}")
    result = _ranks(tensor, on_device)
    return result.numpy() if was_numpy else result


def _device_mode(validate: Any, value: Any) -> bool:
    return device_checks(validate, value if isinstance(value, torch.Tensor) else _CPU_TENSOR)


_CPU_TENSOR = torch.empty(0)


def gaussian_rank_prior(
    fg_scores: Array, cluster_fg: Array, sigma: float, *, log: bool = False, validate: str = "auto"
) -> Array:
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

    A sharp prior (a small ``sigma``) underflows: entries more than about
    :math:`13\sigma` (float32) from every level are 0, and a snippet whose rank is that far
    from every cluster level gets an all-zero row, which no labelling can use. ``log=True``
    returns :math:`\log \hat Q` instead, finite for any ``sigma``, for
    ``sinkhorn_with_prior(..., log_prior=True)``; in host mode an all-zero row is an error that
    says so.

    Parameters
    ----------
    fg_scores : Tensor or ndarray, shape (N,) or (B, N)
        Foreground score of each snippet (e.g. the attention); only the order matters.
    cluster_fg : Tensor or ndarray, shape (K,) or (B, K)
        Foreground level of each cluster in [0, 1] (CASE: the cluster classifier's
        foreground probability, Q^C[:, fg]); rounding-level excursions such as 1.0000001 are
        clamped (see :data:`PROBABILITY_SLACK_ULPS`).
    sigma : float
        Width of the Gaussian, > 0.
    log : bool, default False
        Return the logarithm of the (normalised) prior.
    validate : {"auto", "host", "device"}, default "auto"
        As in :func:`~otlabel.sinkhorn`: in device mode nothing is read back, and bad values
        (NaN scores, levels outside [0, 1]) give a NaN prior instead of an error.

    Returns
    -------
    Tensor or ndarray, shape (N, K) or (B, N, K)
        A prior for :func:`sinkhorn_with_prior`, in ``fg_scores``' dtype: non-negative
        (strictly positive unless it underflows), or its log with ``log=True``.

    Examples
    --------
    >>> import torch
    >>> from otlabel import gaussian_rank_prior
    >>> prior = gaussian_rank_prior(torch.tensor([0.9, 0.1, 0.6]), torch.tensor([0.0, 1.0]), sigma=0.5)
    >>> prior.argmax(1).tolist()
    [1, 0, 1]
    >>> log_prior = gaussian_rank_prior(torch.rand(50), torch.tensor([0.0, 1.0]), sigma=0.01, log=True)
    >>> bool(torch.isfinite(log_prior).all())
    True
    """
    if not isinstance(log, bool):
        raise ArgumentTypeError(f"log must be a bool, got {type(log).__name__}")
    on_device = _device_mode(validate, fg_scores)
    scores, was_numpy, _ = _float_input(fg_scores, "fg_scores", on_device)
    levels, _, _ = _float_input(cluster_fg, "cluster_fg", on_device)
    if scores.dim() not in (1, 2) or scores.shape[-1] == 0:
        raise InvalidArgumentError(f"fg_scores must have shape (N,) or (B, N) with N >= 1, got {tuple(scores.shape)}")
    if levels.dim() not in (1, 2) or levels.shape[-1] == 0:
        raise InvalidArgumentError(f"cluster_fg must have shape (K,) or (B, K) with K >= 1, got {tuple(levels.shape)}")
    if levels.device != scores.device:
        raise InvalidArgumentError(f"cluster_fg is on {levels.device} but fg_scores on {scores.device}")
    if levels.dim() == 2 and (scores.dim() != 2 or levels.shape[0] != scores.shape[0]):
        raise InvalidArgumentError(
            f"cluster_fg of shape {tuple(levels.shape)} needs fg_scores of shape ({levels.shape[0]}, N), "
            f"got {tuple(scores.shape)}"
        )
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ArgumentTypeError(f"sigma must be a real number, got {type(sigma).__name__}")
    if not math.isfinite(sigma) or sigma <= 0:
        raise InvalidArgumentError(f"sigma must be a finite number > 0, got {sigma}")
    levels = _probabilities(levels, "cluster_fg", on_device)
    ranks = _ranks(scores, on_device)
    # In the log domain, normalised by a log-sum-exp: the constant 1/(sigma sqrt(2 pi)) cancels, so
    # neither a huge sigma (whose constant underflows) nor a tiny one (whose terms do) breaks it.
    z = (ranks.unsqueeze(-1) - levels.to(ranks.dtype).unsqueeze(-2)) / sigma  # (…, N, K)
    log_prior = z.square().mul_(-0.5)
    log_prior -= torch.logsumexp(log_prior.flatten(-2), dim=-1)[..., None, None]
    if log:
        if not on_device and not bool(torch.isfinite(log_prior).any(-1).all()):
            raise InvalidArgumentError(
                f"sigma = {sigma:g} is too small for {str(scores.dtype).removeprefix('torch.')}: "
                "every entry of a row of the log prior overflows to -inf"
            )
        result = log_prior
    else:
        result = log_prior.exp_()
        if not on_device:
            empty = int((result.amax(-1) == 0).sum())
            if empty:
                raise InvalidArgumentError(
                    f"sigma = {sigma:g} is so small that {empty} row(s) of the prior underflow to 0 in "
                    f"{str(scores.dtype).removeprefix('torch.')} (no cluster level lies within reach of their "
                    "rank); pass log=True and label with sinkhorn_with_prior(..., log_prior=True)"
                )
    return result.numpy() if was_numpy else result


def foreground_marginal(fg_labels: Array, valid: Array | None = None, *, validate: str = "auto") -> Array:
    r"""The estimated foreground/background marginal of CASE's cluster classification (Eq. 13).

    .. math::

        \beta = \Bigl(\frac{1}{N}\sum_n y_n,\; 1 - \frac{1}{N}\sum_n y_n\Bigr)

    from binary (or soft, in [0, 1]) foreground pseudo-labels :math:`y_n` of the snippets,
    to be used as ``col_marginal`` when labelling clusters as (foreground, background).
    The uniform alternative (Eq. 9) is simply ``[0.5, 0.5]``.

    Parameters
    ----------
    fg_labels : Tensor or ndarray, shape (N,) or (B, N)
        Foreground pseudo-labels in [0, 1] (rounding-level excursions are clamped).
    valid : Tensor or ndarray of bool, same shape, optional
        Snippets to count (e.g. to ignore padding); default all.
    validate : {"auto", "host", "device"}, default "auto"
        As in :func:`~otlabel.sinkhorn`: in device mode nothing is read back, and bad labels
        (NaN, outside [0, 1], no valid snippet) give NaN shares instead of an error.

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
    on_device = _device_mode(validate, fg_labels)
    labels, was_numpy, _ = _float_input(fg_labels, "fg_labels", on_device)
    if labels.dim() not in (1, 2) or labels.shape[-1] == 0:
        raise InvalidArgumentError(f"fg_labels must have shape (N,) or (B, N) with N >= 1, got {tuple(labels.shape)}")
    labels = _probabilities(labels, "fg_labels", on_device)
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
        if not on_device and bool((count == 0).any()):
            raise InvalidArgumentError("valid selects no snippet for at least one problem")
        share = (labels * mask).sum(-1) / count  # 0 / 0 = NaN in device mode
    share = share.clamp(0, 1)  # a mean of values in [0, 1] stays there up to rounding
    result = torch.stack((share, 1 - share), dim=-1)
    return result.numpy() if was_numpy else result
