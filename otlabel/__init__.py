"""otlabel: fast, numerically safe optimal-transport self-labelling for PyTorch."""

from . import errors
from .clustering import BalancedKMeans, balanced_kmeans
from .colabel import colabel
from .errors import *  # noqa: F403 - the exception and warning classes, listed in errors.__all__
from .features import HardLabels, TopLabels, sinkhorn_features
from .labeller import OnlineLabeller
from .labels import hard_labels, integer_quotas
from .priors import foreground_marginal, fractional_ranks, gaussian_rank_prior
from .ragged import RaggedSinkhornResult, sinkhorn_ragged
from .sinkhorn import SinkhornResult, sinkhorn, sinkhorn_with_prior

__version__ = "0.1.0.dev0"

__all__ = [
    "sinkhorn",
    "sinkhorn_with_prior",
    "SinkhornResult",
    "sinkhorn_ragged",
    "RaggedSinkhornResult",
    "sinkhorn_features",
    "HardLabels",
    "TopLabels",
    "balanced_kmeans",
    "BalancedKMeans",
    "OnlineLabeller",
    "gaussian_rank_prior",
    "fractional_ranks",
    "foreground_marginal",
    "colabel",
    "hard_labels",
    "integer_quotas",
    *errors.__all__,
]
