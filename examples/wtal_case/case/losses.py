r"""CASE's losses (paper §3–4, suppl. F) and the joint objective of one training step (Eq. 14).

Notation: B videos of T snippets, G classes, K clusters, N = B·T snippets, two streams s
(RGB, flow) with T-CAS logits :math:`A^s` (B, T, G), attention :math:`P^{A,s}` (B, T),
clustering logits (B, T, K) and embeddings (B, T, H).

* **MIL top-k video loss** (Eq. 1; two streams: suppl. Eq. 15–16). The T-CAS probabilities
  are calibrated by the attention (:func:`calibrated_cas`), the top k = ⌊T / divisor⌋
  snippets of each class are selected on that score, and each stream's video logits are the
  mean of its T-CAS logits over them; the loss is the cross-entropy with the video label
  normalised to sum to 1, averaged over the streams.
* **Attention loss** (Eq. 2): the generalised binary cross-entropy (GBCE, q = 0.7) between
  each stream's attention and the foreground pseudo-labels "in the top-k of a ground-truth
  class", positives and negatives each averaged; summed over the streams.
* **SCC loss** (Eq. 3): cross-entropy between the clustering pseudo-labels Q^S and each
  stream's clustering softmax P^S, summed over the streams.
* **CCC loss** (Eq. 4–6): cluster prototypes (Q^S-weighted sums of the embeddings) and F&B
  prototypes (pseudo-label-weighted sums) are normalised; the cluster classifier's logits
  are τ·cos between them, trained toward Q^C; summed over the streams.
* **Joint objective** (Eq. 14): :math:`L = L_{cls} + L_{att} + \lambda_S L_S + \lambda_C L_C`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from otlabel import OnlineLabeller

from .distributed import global_sum
from .labeling import LabelingConfig, label_cluster_classes, label_snippet_clusters, usage_entropy
from .model import StreamOutput

__all__ = [
    "LossConfig",
    "topk_count",
    "calibrated_cas",
    "mil_video_logits",
    "mil_pooling",
    "video_loss",
    "topk_foreground_labels",
    "gbce",
    "soft_cross_entropy",
    "prototypes",
    "cluster_classifier_logits",
    "joint_objective",
    "StepOutput",
    "case_objective",
]


@dataclass
class LossConfig:
    """Weights and settings of the losses.

    Attributes
    ----------
    topk_divisor : int
        k = max(1, T // topk_divisor) snippets per class in the MIL pooling (THUMOS14: 8,
        ActivityNet: 2).
    calibration : {"code", "paper"}
        Score the top-k selection is made on: the official code's equal mean of the T-CAS
        probabilities and each stream's attention, or our reading of the paper,
        ω·T-CAS + (1 − ω)·mean attention.
    omega : float
        ω of the paper's calibration (0.25), in [0, 1].
    gbce_q : float
        Exponent q (the paper's γ) of the GBCE attention loss, in (0, 1] (0.7).
    lambda_scc, lambda_ccc : float
        λ_S and λ_C of Eq. 14 (1 and 0.3).
    """

    topk_divisor: int = 8
    calibration: Literal["code", "paper"] = "code"
    omega: float = 0.25
    gbce_q: float = 0.7
    lambda_scc: float = 1.0
    lambda_ccc: float = 0.3

    def __post_init__(self) -> None:
        if self.topk_divisor < 1:
            raise ValueError(f"loss.topk_divisor must be >= 1, got {self.topk_divisor}")
        if not 0 <= self.omega <= 1:
            raise ValueError(f"loss.omega must lie in [0, 1], got {self.omega}")
        if not 0 < self.gbce_q <= 1:
            raise ValueError(f"loss.gbce_q must lie in (0, 1], got {self.gbce_q}")
        for name in ("lambda_scc", "lambda_ccc"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"loss.{name} must be a finite number >= 0, got {value}")


def topk_count(num_snippets: int, divisor: int) -> int:
    """k of the MIL pooling: ⌊T / divisor⌋, at least 1."""
    return max(1, num_snippets // divisor)


def calibrated_cas(
    cas_probs: Tensor, actionness: Sequence[Tensor], calibration: str = "code", omega: float = 0.25
) -> Tensor:
    r"""T-CAS probabilities calibrated by class-agnostic foreground scores (suppl. Eq. 15).

    * ``"code"``: :math:`(\bar A + \sum_j a_j) / (1 + J)`, the official
      ``instance_selection_function`` (training: the two attentions; its test time adds each
      stream's clustering foreground P^T);
    * ``"paper"``: :math:`\omega \bar A + (1 - \omega)\, \mathrm{mean}_j a_j`.

    Parameters
    ----------
    cas_probs : Tensor (B, T, G)
        Softmax over classes of the T-CAS, averaged over the streams.
    actionness : sequence of Tensor (B, T)
        Foreground scores in [0, 1] (attentions, optionally P^T).

    Returns
    -------
    Tensor (B, T, G)

    Examples
    --------
    >>> import torch
    >>> cas = torch.tensor([[[0.2, 0.8]]])
    >>> calibrated_cas(cas, [torch.tensor([[0.5]]), torch.tensor([[0.8]])]).tolist()
    [[[0.5, 0.7000000476837158]]]
    """
    if len(actionness) == 0:
        raise ValueError("actionness must hold at least one foreground score")
    if calibration == "code":
        return (cas_probs + sum(a.unsqueeze(-1) for a in actionness)) / (1 + len(actionness))
    if calibration == "paper":
        mean = torch.stack(list(actionness)).mean(0)
        return omega * cas_probs + (1 - omega) * mean.unsqueeze(-1)
    raise ValueError(f"calibration must be 'code' or 'paper', got {calibration!r}")


def mil_video_logits(cas_logits: Sequence[Tensor], select: Tensor, k: int) -> tuple[list[Tensor], Tensor]:
    r"""Top-k MIL pooling (Eq. 1): per class, average each stream's logits over its k best snippets.

    Parameters
    ----------
    cas_logits : sequence of Tensor (B, T, G)
        Each stream's T-CAS logits.
    select : Tensor (B, T, G)
        The score the top-k snippets are chosen on (:func:`calibrated_cas`); no gradient
        flows through the selection.
    k : int

    Returns
    -------
    (list of Tensor (B, G), Tensor (B, k, G))
        Each stream's video logits and the selected snippet indices.
    """
    index = select.detach().topk(k, dim=1).indices
    return [torch.gather(cas, 1, index).mean(1) for cas in cas_logits], index


def mil_pooling(outputs: Sequence[Any], loss_cfg: LossConfig) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
    r"""The video-level MIL step shared by training and testing: stream-averaged T-CAS
    probabilities, calibrated by the attentions (:func:`calibrated_cas`), pooled over the
    top-k snippets (:func:`mil_video_logits`, k = ⌊T / ``topk_divisor``⌋).

    Parameters
    ----------
    outputs : sequence of stream outputs
        Each stream's model output (``cas`` logits (B, T, G), ``attention`` (B, T)).
    loss_cfg : LossConfig

    Returns
    -------
    (Tensor (B, T, G), list of Tensor (B, T), list of Tensor (B, G), Tensor (B, k, G))
        The averaged T-CAS probabilities, each stream's attention, each stream's video
        logits and the selected snippet indices.
    """
    cas_logits = [o.cas for o in outputs]
    attentions = [o.attention for o in outputs]
    cas_probs = torch.stack([F.softmax(a, dim=-1) for a in cas_logits]).mean(0)
    select = calibrated_cas(cas_probs, attentions, loss_cfg.calibration, loss_cfg.omega)
    k = topk_count(cas_probs.shape[1], loss_cfg.topk_divisor)
    video_logits, index = mil_video_logits(cas_logits, select, k)
    return cas_probs, attentions, video_logits, index


def video_loss(video_logits: Sequence[Tensor], labels: Tensor) -> Tensor:
    r"""Video classification loss (Eq. 1): :math:`-\sum_g \tilde y_g \log \mathrm{softmax}(p)_g`.

    :math:`\tilde y = y / \sum_g y_g` (a video with several classes spreads its mass over
    them); averaged over the batch and over the streams. A video without any class (a
    background-only video) contributes 0.

    Examples
    --------
    >>> import torch, math
    >>> loss = video_loss([torch.zeros(1, 4)], torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    >>> round(float(loss), 6) == round(math.log(4), 6)
    True
    """
    target = labels / labels.sum(-1, keepdim=True).clamp_min(1e-12)
    losses = [-(target * F.log_softmax(logits, dim=-1)).sum(-1).mean() for logits in video_logits]
    return torch.stack(losses).mean()


def topk_foreground_labels(index: Tensor, labels: Tensor, num_snippets: int) -> Tensor:
    """Foreground pseudo-labels: 1 for a snippet in the top-k of one of the video's classes.

    Parameters
    ----------
    index : Tensor (B, k, G)
        Selected snippets per class (:func:`mil_video_logits`).
    labels : Tensor (B, G)
        Multi-hot video labels.
    num_snippets : int
        T.

    Returns
    -------
    Tensor (B, T)
        Binary, in ``labels``' dtype.
    """
    batch, _, classes = index.shape
    hits = torch.zeros(batch, num_snippets, classes, dtype=labels.dtype, device=labels.device)
    hits.scatter_(1, index, 1.0)
    return (hits * (labels > 0).to(labels.dtype).unsqueeze(1)).amax(-1)


def gbce(attention: Tensor, target: Tensor, q: float = 0.7) -> Tensor:
    r"""Generalised binary cross-entropy (Eq. 2), per video then averaged over the batch.

    .. math::

        L = \frac{1}{|\mathcal P|}\sum_{t \in \mathcal P} \frac{1 - (p_t)^q}{q}
          + \frac{1}{|\mathcal N|}\sum_{t \in \mathcal N} \frac{1 - (1 - p_t)^q}{q}

    over the positive (target 1) and negative snippets of each video; q → 0 gives the BCE,
    q = 1 the mean absolute error. Small constants keep empty sets and p ∈ {0, 1} finite.

    Parameters
    ----------
    attention : Tensor (B, T)
        Foreground probabilities in [0, 1].
    target : Tensor (B, T)
        Binary pseudo-labels.
    q : float

    Examples
    --------
    >>> import torch
    >>> float(gbce(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), q=1.0)) < 1e-6
    True
    """
    tiny = 1e-7
    positive = ((1 - (attention + tiny) ** q) / q * target).sum(-1) / (target.sum(-1) + tiny)
    negative = ((1 - (1 - attention + tiny) ** q) / q * (1 - target)).sum(-1) / ((1 - target).sum(-1) + tiny)
    return positive.mean() + negative.mean()


def soft_cross_entropy(targets: Tensor, logits: Tensor) -> Tensor:
    r"""Mean over rows of :math:`-\sum_k Q_{nk} \log \mathrm{softmax}(\text{logits}_n)_k` (Eq. 3, 6)."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def prototypes(weights: Tensor, features: Tensor, scope: str = "global") -> Tensor:
    r"""Normalised weighted sums of features (Eq. 4–5): :math:`c_k = \mathrm{norm}(\sum_n w_{nk} x_n)`.

    Parameters
    ----------
    weights : Tensor (N, K)
        Assignment of the snippets (Q^S for clusters, [y, 1 − y] for foreground/background).
    features : Tensor (N, H)
        Snippet embeddings (gradients flow to them).
    scope : {"global", "local"}
        Under DDP with ``"global"`` the sums run over every rank's snippets.

    Returns
    -------
    Tensor (K, H)
        Unit-norm prototypes (a prototype with no mass stays zero).
    """
    return F.normalize(global_sum(weights.t().to(features.dtype) @ features, scope), dim=-1)


def cluster_classifier_logits(cluster_protos: Tensor, fb_protos: Tensor, temperature: float) -> Tensor:
    """Cluster classifier (Eq. 6): τ · cosine between cluster prototypes (K, H) and F&B prototypes (2, H)."""
    return temperature * cluster_protos @ fb_protos.t()


def joint_objective(parts: dict[str, Tensor] | dict[str, float], cfg: LossConfig) -> Tensor | float:
    r"""Eq. 14: :math:`L_{cls} + L_{att} + \lambda_S L_S + \lambda_C L_C` over the parts present.

    ``parts`` maps ``"video"``, ``"attention"``, ``"scc"``, ``"ccc"`` to tensors (the loss to
    back-propagate) or floats (the logged value).
    """
    weights = {"video": 1.0, "attention": 1.0, "scc": cfg.lambda_scc, "ccc": cfg.lambda_ccc}
    unknown = set(parts) - set(weights)
    if unknown:
        raise ValueError(f"unknown loss parts {sorted(unknown)}; expected a subset of {sorted(weights)}")
    return sum(weights[name] * value for name, value in parts.items())


class StepOutput(NamedTuple):
    """Everything one training step computes besides the gradient.

    Attributes
    ----------
    loss : Tensor
        Eq. 14, to back-propagate.
    parts : dict of str to float
        Each loss term (before its λ weight).
    diagnostics : dict of str to float or list
        OT diagnostics: entropies H(Q^S), H(Q^C), usage entropy H(P̄^S), marginal errors,
        β, Q^C[:, fg] (see :func:`case_objective`).
    cluster_fg : Tensor or None
        Q^C[:, fg] (K,) of this step's cluster classification, None without CCC.
    """

    loss: Tensor
    parts: dict[str, float]
    diagnostics: dict[str, float | list[float]]
    cluster_fg: Tensor | None


def case_objective(
    outputs: Sequence[StreamOutput],
    labels: Tensor,
    cluster_fg: Tensor,
    loss_cfg: LossConfig,
    label_cfg: LabelingConfig,
    marginal_state: OnlineLabeller | None = None,
) -> StepOutput:
    """One training step's objective (Eq. 14) with its two labelling problems.

    Parameters
    ----------
    outputs : sequence of StreamOutput
        The model's per-stream predictions for B videos of T snippets.
    labels : Tensor (B, G)
        Multi-hot video labels.
    cluster_fg : Tensor (K,)
        Q^C[:, fg] of the previous step (the prior's cluster levels).
    loss_cfg : LossConfig
    label_cfg : LabelingConfig
    marginal_state : otlabel.OnlineLabeller, optional
        CCC's moving average of β (``labeling.ccc.marginal="ema"``; updated in place).

    Returns
    -------
    StepOutput
        ``diagnostics`` holds ``H_QS``, ``H_QC`` (mean row entropies of the pseudo-labels),
        ``H_PS_usage`` (cluster-usage entropy of the clustering softmax), ``scc_row_error``,
        ``scc_col_error``, ``ccc_row_error``, ``ccc_col_error``, ``beta_fg`` and ``QC_fg``.
    """
    batch, snippets, _ = outputs[0].cas.shape
    _, attentions, video_logits, index = mil_pooling(outputs, loss_cfg)
    fg_target = topk_foreground_labels(index, labels, snippets)
    parts = {
        "video": video_loss(video_logits, labels),
        "attention": sum(gbce(a, fg_target, loss_cfg.gbce_q) for a in attentions),
    }
    diagnostics: dict[str, float | list[float]] = {}
    new_cluster_fg = None
    scc, ccc = label_cfg.scc, label_cfg.ccc
    if scc.enabled:
        n = batch * snippets
        cluster_logits = [o.cluster_logits.reshape(n, -1) for o in outputs]
        fg_scores = torch.stack(attentions).mean(0).reshape(n)
        q_s = label_snippet_clusters(cluster_logits, fg_scores, cluster_fg, scc, label_cfg.fusion, label_cfg.scope)
        parts["scc"] = sum(soft_cross_entropy(q_s.labels, logits) for logits in cluster_logits)
        probs = torch.stack([F.softmax(logits.detach(), dim=-1) for logits in cluster_logits]).mean(0)
        diagnostics.update(
            H_QS=q_s.entropy,
            H_PS_usage=usage_entropy(probs, label_cfg.scope),
            scc_row_error=q_s.row_error,
            scc_col_error=q_s.col_error,
        )
        if ccc.enabled:
            fg_flat = fg_target.reshape(n)
            fb_weights = torch.stack((fg_flat, 1 - fg_flat), dim=-1)
            class_logits = []
            for o in outputs:
                emb = o.embedding.reshape(n, -1)
                class_logits.append(
                    cluster_classifier_logits(
                        prototypes(q_s.labels, emb, label_cfg.scope),
                        prototypes(fb_weights, emb, label_cfg.scope),
                        ccc.temperature,
                    )
                )
            q_c, beta = label_cluster_classes(
                class_logits, fg_flat, ccc, label_cfg.fusion, label_cfg.scope, marginal_state=marginal_state
            )
            parts["ccc"] = sum(soft_cross_entropy(q_c.labels, logits) for logits in class_logits)
            new_cluster_fg = q_c.labels[:, 0].detach()
            diagnostics.update(
                H_QC=q_c.entropy,
                ccc_row_error=q_c.row_error,
                ccc_col_error=q_c.col_error,
                beta_fg=float(beta[0]),
                QC_fg=[round(v, 6) for v in new_cluster_fg.tolist()],  # one read-back, not K
            )
    loss = joint_objective(parts, loss_cfg)
    return StepOutput(loss, {k: float(v.detach()) for k, v in parts.items()}, diagnostics, new_cluster_fg)
