r"""CASE's self-labelling steps, every optimal-transport call through otlabel's public API.

Two labelling problems are solved at every training step (paper §3.2–3.3):

* **snippet clustering (SCC)** — the N snippets of the batch over K clusters, with a uniform
  column marginal (equipartition) and the Gaussian rank prior Q̂ (Eq. 11) that pulls
  foreground-looking snippets toward foreground clusters:
  ``sinkhorn_with_prior(scores, gaussian_rank_prior(...))`` (Eq. 12), or plain
  ``sinkhorn(scores)`` (Eq. 10, the ablation of Table 6);
* **cluster classification (CCC)** — the K clusters over {foreground, background}, with the
  column marginal β estimated from the snippets' foreground pseudo-labels
  (``foreground_marginal``, Eq. 13) or uniform (Eq. 9); or (ours) Eq. 13's β smoothed over the
  steps by :class:`otlabel.OnlineLabeller`, or relaxed into a KL penalty.

Both streams are labelled *together* (co-labelling, suppl. F.2): their predictions are fused
by :func:`otlabel.colabel` — averaged probabilities (the paper) or averaged logits (the
official code) — and one label matrix trains both.

ε convention. The paper writes the Sinkhorn kernel as exp(ε · cos) with ε = 20. otlabel's
``epsilon`` is the regularisation strength dividing the scores, so the paper's ε = 20 is
``epsilon = 1/20 = 0.05`` on cosine scores, or ``epsilon = 0.5`` on the clustering head's
logits (cosine × temperature 10) — which is what this module labels. The default
``n_iter = 3`` is the paper's and the code's fixed schedule (columns, then rows, three times).

Ablations (paper Table 5): ``method="ot"`` solves the transport problem; ``method="argmax"``
drops the column constraint, which leaves the row-wise softmax of ``scores / epsilon (+ log
prior)`` — the same objective without the transport polytope. ``form="hard"`` turns the soft
labels into one-hot ones: with OT through :func:`otlabel.hard_labels` (exact column quotas),
without OT by argmax.

Distributed training. With ``scope="global"`` and an initialised process group the labels are
those of the *global* batch. Soft OT labels come from otlabel's ``process_group=``: each rank
passes only its own rows and the solver all-reduces the column sums, so no rank holds the
global score matrix. Hard OT labels (exact column quotas over the global batch) gather the
rows; the row-wise "without OT" labels need no communication. The rank prior ranks the
snippets of the global batch, so the foreground scores are gathered (N numbers per rank).
Diagnostics are reduced over the ranks. :func:`solve_labels` is the one place that does this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from otlabel import (
    OnlineLabeller,
    colabel,
    foreground_marginal,
    gaussian_rank_prior,
    hard_labels,
    sinkhorn,
)

from .distributed import gather_rows, world

__all__ = [
    "SCCConfig",
    "CCCConfig",
    "LabelingConfig",
    "Labels",
    "solve_labels",
    "label_snippet_clusters",
    "label_cluster_classes",
    "ccc_marginal_state",
    "row_entropy",
    "usage_entropy",
]

Method = Literal["ot", "argmax"]
Form = Literal["soft", "hard"]


def _check_solver(section: str, epsilon: float, n_iter: int) -> None:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"{section}.epsilon must be a finite number > 0, got {epsilon}")
    if n_iter < 1:
        raise ValueError(f"{section}.n_iter must be >= 1, got {n_iter}")


@dataclass
class SCCConfig:
    """Snippet clustering component (paper §3.2; Eq. 3, 10–12).

    Attributes
    ----------
    enabled : bool
        Train the clustering head with the SCC loss (Table 4: "+SCC").
    method : {"ot", "argmax"}
        Pseudo-labels by optimal transport, or by the unconstrained row-wise assignment (Table 5).
    form : {"soft", "hard"}
        Soft labels, or one-hot ones (Table 5).
    prior : {"gaussian", "none"}
        The Gaussian rank prior of Eq. 11 inside the OT problem (Eq. 12), or none (Eq. 10; Table 6).
    ranking : {"rank", "argsort"}
        Position of a snippet in the prior: its fractional rank by attention (the paper), or
        the official code's ``argsort`` permutation value (a bug: it is the index of the n-th
        snippet, not the rank of snippet n; reproduced up to a shift of 1/N).
    sigma : float
        Width σ of the prior's Gaussian on ranks in (0, 1] (paper and code: 10, which makes the
        prior almost flat — see the σ sweep of the reproduction report).
    epsilon : float
        otlabel's regularisation on the clustering logits (cosine × 10): 0.5 is the paper's ε = 20.
    n_iter : int
        Sinkhorn iterations (paper and code: 3).
    """

    enabled: bool = True
    method: Method = "ot"
    form: Form = "soft"
    prior: Literal["gaussian", "none"] = "gaussian"
    ranking: Literal["rank", "argsort"] = "rank"
    sigma: float = 10.0
    epsilon: float = 0.5
    n_iter: int = 3

    def __post_init__(self) -> None:
        _check_solver("labeling.scc", self.epsilon, self.n_iter)
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"labeling.scc.sigma must be a finite number > 0, got {self.sigma}")


@dataclass
class CCCConfig:
    """Cluster classification component (paper §3.3; Eq. 4–6, 9, 13).

    Attributes
    ----------
    enabled : bool
        Classify the clusters as foreground/background (Table 4: "+CCC"); needs SCC.
    method, form : as in :class:`SCCConfig` (Table 5).
    marginal : {"estimated", "uniform", "ema", "relaxed"}
        Column marginal β of the OT problem: estimated from the batch's snippets' foreground
        pseudo-labels (Eq. 13; the paper and the official code, default), or (½, ½) (Eq. 9;
        Table 6). Two variants of Eq. 13 (ours, not in the paper): ``"ema"`` labels with an
        exponential moving average of the batches' β (:class:`otlabel.OnlineLabeller`'s
        estimate, saved in the checkpoints), ``"relaxed"`` with the batch's β as a KL-penalised
        marginal (otlabel's ``col_penalty``) that the labels may depart from.
    marginal_momentum : float
        ``marginal="ema"``: the moving average's momentum m in [0, 1) (β_t = m β_{t-1} + (1 − m) β̂_t).
    marginal_penalty : float
        ``marginal="relaxed"``: the penalty's strength τ > 0 (τ → ∞ is Eq. 13).
    temperature : float
        τ multiplying the cosine similarities between cluster and F&B prototypes (Eq. 6; 10).
    epsilon : float
        otlabel's regularisation on those logits: 0.5 is the paper's ε = 20 at τ = 10.
    n_iter : int
        Sinkhorn iterations (3).
    """

    enabled: bool = True
    method: Method = "ot"
    form: Form = "soft"
    marginal: Literal["estimated", "uniform", "ema", "relaxed"] = "estimated"
    marginal_momentum: float = 0.9
    marginal_penalty: float = 1.0
    temperature: float = 10.0
    epsilon: float = 0.5
    n_iter: int = 3

    def __post_init__(self) -> None:
        _check_solver("labeling.ccc", self.epsilon, self.n_iter)
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"labeling.ccc.temperature must be a finite number > 0, got {self.temperature}")
        if not 0 <= self.marginal_momentum < 1:
            raise ValueError(f"labeling.ccc.marginal_momentum must lie in [0, 1), got {self.marginal_momentum}")
        if not (self.marginal_penalty > 0 and math.isfinite(self.marginal_penalty)):
            raise ValueError(f"labeling.ccc.marginal_penalty must be a finite number > 0, got {self.marginal_penalty}")
        if self.marginal == "relaxed" and (self.method, self.form) != ("ot", "soft"):
            raise ValueError(
                "labeling.ccc.marginal='relaxed' needs labeling.ccc.method='ot' and form='soft' (a penalised "
                f"marginal is a property of the soft transport plan), got method={self.method!r}, form={self.form!r}"
            )


@dataclass
class LabelingConfig:
    """How the two labelling problems are posed and solved.

    Attributes
    ----------
    fusion : {"logits", "probs"}
        Co-labelling of the two streams: average their logits (the official code, our
        default because it produced the published numbers) or their probabilities (the
        paper, suppl. F.2).
    scope : {"global", "local"}
        Under DDP, label the global batch on every rank (identical to one process on the
        whole batch) or each rank's own rows. Without a process group both are the same.
    scc, ccc : SCCConfig, CCCConfig
    """

    fusion: Literal["logits", "probs"] = "logits"
    scope: Literal["global", "local"] = "global"
    scc: SCCConfig = field(default_factory=SCCConfig)
    ccc: CCCConfig = field(default_factory=CCCConfig)

    def __post_init__(self) -> None:
        if self.ccc.enabled and not self.scc.enabled:
            raise ValueError(
                "labeling.ccc.enabled needs labeling.scc.enabled: clusters are classified from SCC's labels"
            )


@dataclass
class Labels:
    """Pseudo-labels of one labelling problem and their diagnostics.

    Attributes
    ----------
    labels : Tensor (N, K)
        This rank's rows of the label matrix (rows sum to 1), no gradient.
    entropy : float
        Mean row entropy H(Q) in nats (0 for hard labels, log K for uniform rows).
    row_error, col_error : float
        Scale-free marginal violations of the labels over the rows that were labelled
        together: max |Q·1 − 1| and max_k |Qᵀ1_k − N c_k| / (N c_k).
    """

    labels: Tensor
    entropy: float
    row_error: float
    col_error: float


# --------------------------------------------------------------------------- solving


def _entropy_sum(q: Tensor) -> Tensor:
    """Σ −q log q over every entry (nats; negative rounding noise clamped to 0)."""
    q = q.clamp_min(0)
    return -torch.special.xlogy(q, q).sum()


def row_entropy(labels: Tensor) -> float:
    """Mean over rows of the entropy −Σ_k q_k log q_k (nats) of a row-stochastic matrix."""
    return float(_entropy_sum(labels) / labels.shape[0])


def usage_entropy(probs: Tensor, scope: str = "local") -> float:
    r"""Entropy H(P̄) of the mean assignment :math:`\bar P = \frac1N\sum_n P_n` (nats).

    The cluster-usage entropy of the paper's Table 5: log K when every cluster is used
    equally, 0 when all snippets fall into one cluster. With ``scope="global"`` under DDP,
    P̄ is the mean over every rank's rows (two sums all-reduced, nothing gathered).
    """
    flat = probs.reshape(-1, probs.shape[-1])
    totals = torch.cat((flat.sum(0), flat.new_full((1,), flat.shape[0])))
    if world(scope)[1] > 1:
        dist.all_reduce(totals)
    return float(_entropy_sum(totals[:-1] / totals[-1]))


def _diagnostics(labels: Tensor, col_marginal: Tensor, scope: str) -> tuple[float, float, float]:
    """(mean row entropy, max row-sum error, max relative column-sum error) over all ranks' rows.

    ``labels`` are this rank's rows; the sums are all-reduced under ``scope="global"`` DDP, so
    every rank reports the numbers of the global batch.
    """
    # column sums, entropy sum and row count in one tensor on the labels' device: one all-reduce
    sums = torch.cat((labels.sum(0), _entropy_sum(labels).reshape(1), labels.new_full((1,), labels.shape[0])))
    row_error = (labels.sum(-1) - 1).abs().amax() if labels.shape[0] else labels.new_zeros(())
    if world(scope)[1] > 1:
        dist.all_reduce(sums)
        dist.all_reduce(row_error, op=dist.ReduceOp.MAX)
    col_sums, entropy, n_rows = sums[:-2], sums[-2], sums[-1]
    target = n_rows * col_marginal.to(labels.dtype)
    col_error = ((col_sums - target).abs() / target.clamp_min(torch.finfo(labels.dtype).tiny)).amax()
    return float(entropy / n_rows), float(row_error), float(col_error)


def solve_labels(
    scores: Tensor,
    *,
    epsilon: float,
    prior: Tensor | None = None,
    col_marginal: Tensor | None = None,
    n_iter: int = 3,
    method: str = "ot",
    form: str = "soft",
    scope: str = "global",
    col_penalty: float | None = None,
) -> Labels:
    r"""Label the rows of ``scores`` (N, K); the one entry point of every labelling call.

    ``method="ot"``: the entropic transport plan (otlabel, fixed-iteration mode), rows
    summing to 1 and columns to N·``col_marginal`` (uniform by default), pulled toward
    ``prior`` when given. ``method="argmax"``: the row-wise softmax of
    ``scores/epsilon + log(prior)`` (no column constraint). ``form="hard"`` makes them
    one-hot (:func:`otlabel.hard_labels` for OT, argmax otherwise).

    With ``scope="global"`` under DDP the labels are those of the global batch (``scores``
    and ``prior`` hold this rank's rows; soft OT through otlabel's ``process_group=``, hard
    OT by gathering the rows); each rank gets its own rows back. ``col_marginal`` must then
    be the same on every rank (otlabel checks it).

    Parameters
    ----------
    scores : Tensor (N, K)
        Fused logits (no gradient is taken).
    epsilon : float
        otlabel's regularisation strength (0.5 on cosine × 10 logits = the paper's ε = 20).
    prior : Tensor (N, K), optional
        Non-negative prior Q̂ (Eq. 12), this rank's rows.
    col_marginal : Tensor (K,), optional
        Column proportions summing to 1 (Eq. 9 / 13); default uniform.
    n_iter : int
        Sinkhorn iterations.
    method, form, scope : str
        See above.
    col_penalty : float, optional
        Soft OT only: relax the column marginal into a KL penalty of this strength (otlabel's
        ``col_penalty``); the column error then measures how far the labels depart from it.

    Returns
    -------
    Labels
        This rank's labels and diagnostics computed over all labelled rows (every rank's).
    """
    if method not in ("ot", "argmax") or form not in ("soft", "hard"):
        raise ValueError(f"method must be 'ot' or 'argmax' and form 'soft' or 'hard', got {method!r}, {form!r}")
    if col_penalty is not None and (method, form) != ("ot", "soft"):
        raise ValueError("col_penalty applies to soft OT labels (method='ot', form='soft')")
    scores = scores.detach()
    prior = None if prior is None else prior.detach()
    n_cols = scores.shape[-1]
    if col_marginal is None:
        col_marginal = torch.full((n_cols,), 1.0 / n_cols, dtype=scores.dtype, device=scores.device)
    if method == "ot" and form == "hard":
        # exact column quotas are a property of the global matrix: gather it
        all_scores, mine = gather_rows(scores, scope)
        all_prior = None if prior is None else gather_rows(prior, scope)[0]
        labels = sinkhorn(all_scores, epsilon, prior=all_prior, col_marginal=col_marginal, n_iter=n_iter)
        labels = hard_labels(labels, col_marginal)[mine]
    elif method == "ot":  # col_penalty: a KL-relaxed column marginal (None: the hard one)
        group = dist.group.WORLD if world(scope)[1] > 1 else None
        labels = sinkhorn(
            scores,
            epsilon,
            prior=prior,
            col_marginal=col_marginal,
            n_iter=n_iter,
            process_group=group,
            col_penalty=col_penalty,
        )
    else:  # row-wise: no column constraint, nothing to communicate
        logits = scores / epsilon
        if prior is not None:
            logits = logits + torch.log(prior)
        if form == "hard":
            labels = F.one_hot(logits.argmax(-1), n_cols).to(scores.dtype)
        else:
            labels = torch.softmax(logits, dim=-1)
    entropy, row_error, col_error = _diagnostics(labels, col_marginal, scope)
    return Labels(labels, entropy, row_error, col_error)


def _fuse(predictions: Sequence[Tensor], fusion: str) -> Tensor:
    return colabel([p.detach() for p in predictions], space=fusion)


def label_snippet_clusters(
    cluster_logits: Sequence[Tensor],
    fg_scores: Tensor,
    cluster_fg: Tensor,
    cfg: SCCConfig,
    fusion: str = "logits",
    scope: str = "global",
) -> Labels:
    r"""Snippet-clustering pseudo-labels Q^S (paper Eq. 10–12), co-labelled over the streams.

    Parameters
    ----------
    cluster_logits : sequence of Tensor (N, K)
        Each stream's clustering logits (cosine × τ) for the N snippets of the batch.
    fg_scores : Tensor (N,)
        Foreground score of each snippet used to rank it in the prior (the two streams'
        mean attention).
    cluster_fg : Tensor (K,)
        Foreground level φ_k of each cluster, Q^C[:, fg] from the previous step's cluster
        classification (a constant before the first one, which makes the prior flat).
    cfg : SCCConfig
    fusion : {"logits", "probs"}
        Co-labelling space (:func:`otlabel.colabel`).
    scope : {"global", "local"}

    Returns
    -------
    Labels
        Q^S (N, K), rows summing to 1, columns to N/K (equipartition) when solved by OT.

    Examples
    --------
    >>> import torch
    >>> from case.labeling import SCCConfig, label_snippet_clusters
    >>> logits = [torch.randn(12, 3), torch.randn(12, 3)]
    >>> out = label_snippet_clusters(logits, torch.rand(12), torch.full((3,), 0.5), SCCConfig())
    >>> out.labels.shape, round(float(out.labels.sum()), 4)
    (torch.Size([12, 3]), 12.0)
    """
    scores = _fuse(cluster_logits, fusion)
    prior = None
    if cfg.prior == "gaussian":
        all_fg, mine = gather_rows(fg_scores.detach(), scope)
        if cfg.ranking == "argsort":
            # the official code's value for snippet n is the position argsort(-fg)[n]; ranking
            # its negation reproduces that value (up to 1/N) through the same prior function
            all_fg = -torch.argsort(-all_fg).to(scores.dtype)
        # Q^C[:, fg] is a probability, but rounding can leave it at 1.0000001 (every cluster
        # foreground) or just below 0; otlabel refuses levels outside [0, 1], so hand it exact bounds
        levels = cluster_fg.to(scores.dtype).clamp(0.0, 1.0)
        prior = gaussian_rank_prior(all_fg.to(scores.dtype), levels, cfg.sigma)[mine]
    return solve_labels(
        scores,
        epsilon=cfg.epsilon,
        prior=prior,
        n_iter=cfg.n_iter,
        method=cfg.method,
        form=cfg.form,
        scope=scope,
    )


def label_cluster_classes(
    class_logits: Sequence[Tensor],
    fg_labels: Tensor,
    cfg: CCCConfig,
    fusion: str = "logits",
    scope: str = "global",
    marginal_state: OnlineLabeller | None = None,
) -> tuple[Labels, Tensor]:
    r"""Cluster-classification pseudo-labels Q^C (K × {fg, bg}; paper Eq. 9 / 13).

    Parameters
    ----------
    class_logits : sequence of Tensor (K, 2)
        Each stream's cluster-classifier logits (Eq. 6), column 0 foreground. Under DDP the
        prototypes are global sums, so these are the same on every rank and are labelled
        locally.
    fg_labels : Tensor (N,)
        The snippets' binary foreground pseudo-labels (top-k of the ground-truth classes),
        from which β is estimated (Eq. 13); over the global batch with ``scope="global"``.
    cfg : CCCConfig
    fusion, scope : str
    marginal_state : otlabel.OnlineLabeller, optional
        ``cfg.marginal="ema"``: the moving average of β carried from step to step
        (:func:`ccc_marginal_state` makes it); this step's β̂ is folded into it, then labelled with.

    Returns
    -------
    (Labels, Tensor)
        Q^C (K, 2) and the column marginal β (2,) it was solved with.
    """
    scores = _fuse(class_logits, fusion)
    if cfg.marginal == "estimated":
        all_fg, _ = gather_rows(fg_labels.detach().to(scores.dtype), scope)
        beta = foreground_marginal(all_fg)
    elif cfg.marginal == "uniform":
        beta = torch.full((2,), 0.5, dtype=scores.dtype, device=scores.device)
    else:  # variants of Eq. 13: the batch's estimate, smoothed over steps or relaxed
        all_fg, _ = gather_rows(fg_labels.detach().to(scores.dtype), scope)
        beta = foreground_marginal(all_fg)
        if cfg.marginal == "ema":
            if marginal_state is None:
                raise ValueError("labeling.ccc.marginal='ema' needs the moving average's state (ccc_marginal_state)")
            # every rank folds in the same global estimate (labelled locally: no process group)
            marginal_state.update(beta)
            beta = marginal_state.marginal.to(scores.dtype)
    labels = solve_labels(
        scores,
        epsilon=cfg.epsilon,
        col_marginal=beta,
        n_iter=cfg.n_iter,
        method=cfg.method,
        form=cfg.form,
        scope="local",
        **({"col_penalty": cfg.marginal_penalty} if cfg.marginal == "relaxed" else {}),
    )
    return labels, beta


def ccc_marginal_state(cfg: CCCConfig) -> OnlineLabeller | None:
    """The moving average of β that ``cfg.marginal="ema"`` carries from step to step (None otherwise).

    An :class:`otlabel.OnlineLabeller` over the two columns (foreground, background) used for its
    estimate only: β̂ of each batch (Eq. 13) is folded in by :meth:`~otlabel.OnlineLabeller.update`
    (the first replaces the uniform start), and its ``state_dict()`` goes into the checkpoints so
    that ``--resume`` continues it exactly. A floor of 1 % of the uniform share keeps either side
    from reaching 0.
    """
    if cfg.marginal != "ema":
        return None
    return OnlineLabeller(
        2, cfg.epsilon, n_iter=cfg.n_iter, marginal="ema", estimate="given", momentum=cfg.marginal_momentum
    )
