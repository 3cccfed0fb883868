"""The two-stream CASE model (paper Table 9; official ``models/case_model.py``).

Each stream (RGB, optical flow) has the same four parts, all pointwise over the snippets
(1×1 temporal convolutions, written as :class:`torch.nn.Linear` on (B, T, D) tensors —
the same maps and the same MACs without the permutes):

* video classification branch: encoder D→H + ReLU, then the snippet classifier H→G,
  giving the T-CAS logits A (B, T, G);
* attention branch: its own encoder D→H + ReLU (the snippet *embedding* used by the
  clustering), then H→1 + sigmoid, giving the foreground attention P^A (B, T);
* cosine clustering head on the embedding: τ · cos(embedding, prototype_k), giving the
  snippet-clustering logits (B, T, K) whose softmax is P^S.

Under ``torch.autocast`` (``train.precision="bfloat16"``) the four encoders run in bfloat16
and the heads in float32: every output is float32.

For THUMOS14 (D = 1024 per stream, H = 512, G = 20, K = 16) the model has 2,137,130
parameters and 1.60 GMACs for one video of T = 750 snippets (paper Table 1: 2.13 M, 1.60 G).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ModelConfig",
    "StreamOutput",
    "CosineClusterHead",
    "StreamHead",
    "CASEModel",
    "STREAMS",
    "count_params_and_macs",
]

#: Stream names in the order their features appear in the input: columns [:D/2] are RGB.
STREAMS = ("rgb", "flow")


@dataclass
class ModelConfig:
    """Model hyper-parameters (the feature width and the number of classes come from the data).

    Attributes
    ----------
    hidden_dim : int
        Width H of both encoders of each stream (paper: 512).
    num_clusters : int
        Number K of snippet clusters (paper: 16 on THUMOS14, 64 on ActivityNet; Fig. 3 sweeps it).
    temperature : float
        τ multiplying the cosine similarities of the clustering head (paper and code: 10).
    num_classes : int or None
        Number G of action classes; None takes it from the data set (when given, it must
        match the data set; :mod:`profile_model` uses it without loading any data).
    """

    hidden_dim: int = 512
    num_clusters: int = 16
    temperature: float = 10.0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.hidden_dim < 1:
            raise ValueError(f"model.hidden_dim must be >= 1, got {self.hidden_dim}")
        if self.num_clusters < 2:
            raise ValueError(f"model.num_clusters must be >= 2, got {self.num_clusters}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"model.temperature must be a finite number > 0, got {self.temperature}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"model.num_classes must be >= 1 (or null), got {self.num_classes}")


class StreamOutput(NamedTuple):
    """What one stream predicts for a batch of B videos of T snippets.

    Attributes
    ----------
    cas : Tensor (B, T, G)
        T-CAS logits A (before the softmax over classes).
    attention : Tensor (B, T)
        Foreground attention P^A in (0, 1).
    cluster_logits : Tensor (B, T, K)
        τ · cosine similarity to each cluster prototype (softmax over K gives P^S).
    embedding : Tensor (B, T, H)
        The attention branch's encoder output (after ReLU): the snippet features that the
        cluster classification builds its prototypes from (paper Eq. 4–5).
    """

    cas: Tensor
    attention: Tensor
    cluster_logits: Tensor
    embedding: Tensor


class CosineClusterHead(nn.Module):
    r"""Cosine classifier :math:`\tau\,\langle x/\|x\|,\ w_k/\|w_k\|\rangle` over K prototypes.

    As in the official code (and SwAV), the prototypes are renormalised *in place* at the
    start of every forward pass, outside autograd: the gradient updates the prototypes as
    plain linear weights and the next forward projects them back onto the unit sphere.
    """

    def __init__(self, in_dim: int, num_prototypes: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.prototypes = nn.Linear(in_dim, num_prototypes, bias=False)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype onto the unit sphere (in place, no gradient)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, x: Tensor) -> Tensor:
        self.normalize_prototypes()
        return self.prototypes(F.normalize(x, dim=-1)) * self.temperature


class StreamHead(nn.Module):
    """One stream of the model: classification branch, attention branch, clustering head."""

    def __init__(self, in_dim: int, num_classes: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.cas_encoder = nn.Sequential(nn.Linear(in_dim, cfg.hidden_dim), nn.ReLU())
        self.classifier = nn.Linear(cfg.hidden_dim, num_classes)
        self.att_encoder = nn.Sequential(nn.Linear(in_dim, cfg.hidden_dim), nn.ReLU())
        self.attention = nn.Linear(cfg.hidden_dim, 1)
        self.cluster_head = CosineClusterHead(cfg.hidden_dim, cfg.num_clusters, cfg.temperature)

    def forward(self, x: Tensor) -> StreamOutput:
        hidden = self.cas_encoder(x)
        embedding = self.att_encoder(x)
        # Under bfloat16 autocast (train.precision) only the two encoders, the model's compute,
        # run in bfloat16: the heads run in float32 on their float32 outputs, so that every
        # output, the scores otlabel labels included, is float32 computed in float32. Without
        # autocast this block changes nothing (.float() of a float32 tensor is the tensor).
        with torch.autocast(x.device.type, enabled=False):
            hidden, embedding = hidden.float(), embedding.float()
            cas = self.classifier(hidden)
            attention = torch.sigmoid(self.attention(embedding)).squeeze(-1)
            return StreamOutput(cas, attention, self.cluster_head(embedding), embedding)


class CASEModel(nn.Module):
    """The two-stream CASE model.

    Parameters
    ----------
    feature_dim : int
        Width of the input features, RGB then flow (I3D: 2048 = 1024 + 1024); must be even.
    num_classes : int
        Number G of action classes.
    cfg : ModelConfig
        Hidden width, number of clusters, cosine temperature.

    Examples
    --------
    >>> import torch
    >>> from case.model import CASEModel, ModelConfig
    >>> model = CASEModel(2048, 20, ModelConfig())
    >>> rgb, flow = model(torch.rand(2, 750, 2048))
    >>> rgb.cas.shape, rgb.attention.shape, rgb.cluster_logits.shape
    (torch.Size([2, 750, 20]), torch.Size([2, 750]), torch.Size([2, 750, 16]))
    """

    def __init__(self, feature_dim: int, num_classes: int, cfg: ModelConfig) -> None:
        super().__init__()
        if feature_dim < 2 or feature_dim % 2:
            raise ValueError(f"feature_dim must be even (RGB half, flow half), got {feature_dim}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if cfg.num_classes is not None and cfg.num_classes != num_classes:
            raise ValueError(
                f"model.num_classes is {cfg.num_classes} but the data set has {num_classes} classes; "
                "fix the config or leave model.num_classes unset"
            )
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.num_clusters = cfg.num_clusters
        self.streams = nn.ModuleDict({name: StreamHead(feature_dim // 2, num_classes, cfg) for name in STREAMS})

    def forward(self, features: Tensor) -> tuple[StreamOutput, ...]:
        """Predict for a batch of feature sequences.

        Parameters
        ----------
        features : Tensor (B, T, D)
            Columns ``[:D/2]`` are RGB, ``[D/2:]`` optical flow.

        Returns
        -------
        tuple of StreamOutput
            One per stream, in :data:`STREAMS` order (RGB, flow).
        """
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"features must have shape (B, T, {self.feature_dim}), got {tuple(features.shape)}")
        device = features.device.type
        if torch.is_autocast_enabled(device):  # one cast of the features, not one per encoder
            features = features.to(torch.get_autocast_dtype(device))
        halves = features.split(self.feature_dim // 2, dim=-1)
        return tuple(self.streams[name](half) for name, half in zip(STREAMS, halves, strict=True))


def count_params_and_macs(model: nn.Module, num_snippets: int) -> dict[str, int]:
    """Parameters and multiply-accumulates of one forward pass over one video of ``num_snippets``.

    MACs are :class:`torch.utils.flop_counter.FlopCounterMode`'s forward FLOPs / 2 (matrix
    products only: activations and normalisations are not counted, as in the paper's Table 1).

    Examples
    --------
    >>> from case.model import CASEModel, ModelConfig, count_params_and_macs
    >>> count_params_and_macs(CASEModel(2048, 20, ModelConfig()), 750)
    {'params': 2137130, 'macs': 1601280000}
    """
    from torch.utils.flop_counter import FlopCounterMode  # on use: it imports triton (0.2 s) for profile_model.py

    feature_dim = model.feature_dim
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, num_snippets, feature_dim))
    finally:
        model.train(was_training)
    return {"params": sum(p.numel() for p in model.parameters()), "macs": counter.get_total_flops() // 2}
