"""The validated problem handed to a backend, and what a backend hands back.

Front ends (``sinkhorn``, ``sinkhorn_with_prior``, the grouped and distributed variants)
validate the user's arguments and build a :class:`Problem`; backends only solve.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from ._checks import DeferredChecks


class Reducer:
    """How per-process partial column quantities combine; the default is a single process.

    The distributed front end substitutes a reducer that all-reduces over a process group
    (:class:`otlabel.distributed.GroupReducer`), so that every backend labels the *global*
    batch without knowing about ranks.
    """

    #: Whether the rows are a slice of a batch spread over several processes.
    distributed = False

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all participants (identity for one process)."""
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``tensor`` over all participants (identity for one process)."""
        return tensor

    def agreement(self) -> Agreement:
        """A context in which the arguments are validated; see :class:`Agreement`."""
        return Agreement()


class Agreement(AbstractContextManager):
    """Validation of the arguments of one call; a single process has nothing to agree on.

    Over a process group, leaving the context makes every rank learn whether every rank's
    arguments passed the local checks and whether they agree (``settle`` records what must
    agree), before any rank starts a collective that the others might not join.
    """

    def settle(self, *description: Any) -> None:
        """Record what the participants must agree on (nothing to do for one process)."""

    def __exit__(self, *exc_info: Any) -> None:
        return None


@dataclass
class Problem:
    """A validated entropic OT labelling problem, batched as (B, N, K).

    The solution is ``plan = diag(u) (prior * exp(scores / epsilon)) diag(v)`` with
    ``plan.sum(-1) == row_mass`` and ``plan.sum(-2) == col_mass``.
    """

    scores: torch.Tensor  #: (B, N, K) as given by the user (any float dtype); never modified
    prior: torch.Tensor | None  #: (B, N, K) non-negative, or None for a uniform prior
    epsilon: float
    row_mass: torch.Tensor  #: (B, N) target row sums, in ``dtype``
    col_mass: torch.Tensor  #: (B, K) target column sums (N_global * col_marginal), in ``dtype``
    dtype: torch.dtype  #: compute dtype (float32 or float64)
    n_iter: int  #: iterations of the fixed-iteration mode
    tol: float | None  #: None: fixed-iteration mode; else tolerance mode
    max_iter: int
    check_every: int
    checks: DeferredChecks = field(default_factory=DeferredChecks)
    reducer: Reducer = field(default_factory=Reducer)
    score_range: tuple[float, float] | None = None  #: (min, max) of the scores, when known for free
    prior_range: tuple[float, float] | None = None  #: (min, max) of the prior, when known for free
    return_potentials: bool = False  #: whether the caller wants the dual potentials

    @property
    def shape(self) -> tuple[int, int, int]:
        batch, n_rows, n_cols = self.scores.shape
        return batch, n_rows, n_cols


@dataclass
class Solution:
    """What a backend returns. ``plan`` is (B, N, K) in the compute dtype."""

    plan: torch.Tensor
    log_row_scaling: torch.Tensor | None  #: (B, N): plan = exp(f[:, :, None] + S/eps + log prior + g[:, None, :])
    log_col_scaling: torch.Tensor | None  #: (B, K); both None unless Problem.return_potentials
    n_iter: int
    converged: bool | None
    col_error: float | None  #: measured column violation of ``plan`` (tolerance mode), else None
    log_domain: bool  #: whether the log-domain path had to take over
    backend: str


def relative_violation(sums: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Scale-free marginal violation per problem: max |sums - mass| / mass, shape (B,).

    Entries with zero target mass are measured relative to the problem's total mass instead.
    """
    if mass.shape[-1] == 0:  # a rank that holds no rows of a global batch
        return mass.new_zeros(mass.shape[:-1])
    total = mass.sum(-1, keepdim=True)
    scale = torch.where(mass > 0, mass, total)
    return ((sums - mass).abs() / scale).amax(-1)
