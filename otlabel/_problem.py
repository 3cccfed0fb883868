"""What is solved, how, and what comes back — the types every entry point and backend share.

Entry points (``sinkhorn``, ``sinkhorn_with_prior``, ``sinkhorn_ragged``) validate the user's
arguments and build a :class:`Problem` (*what*: scores, prior, epsilon, marginals, layout) and a
:class:`Schedule` (*how*: a fixed number of iterations, or a tolerance with its budget);
backends only solve, returning a :class:`Solution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from ._reduce import Reducer

if TYPE_CHECKING:
    from ._deferred import DeferredChecks
    from ._layout import Dense, Segmented


class Schedule(NamedTuple):
    """How a problem is iterated. ``tol=None``: the fixed-iteration mode (``n_iter`` iterations);
    otherwise the tolerance mode (until the column violation is at most ``tol``, within
    ``max_iter`` iterations, measured every ``check_every``). ``accelerate``: the tolerance mode
    takes Anderson-accelerated column steps (see :mod:`otlabel._acceleration`)."""

    n_iter: int
    tol: float | None
    max_iter: int
    check_every: int
    accelerate: bool = False

    @property
    def fixed(self) -> bool:
        return self.tol is None


class Rule(NamedTuple):
    """How the sums of one side (rows or columns) are held, beyond the hard constraint.

    * ``exponent`` < 1: KL-penalised sums (strength tau: exponent = tau / (tau + epsilon)); the
      scaling step raises the hard step's ratio to this power.
    * ``lower`` / ``upper``: masses the sums must stay between (in the layout-independent shape of
      the masses; None: no bound). A bounded side is projected with Dykstra's corrections.
    """

    exponent: float = 1.0
    lower: torch.Tensor | None = None
    upper: torch.Tensor | None = None

    @property
    def bounded(self) -> bool:
        return self.lower is not None or self.upper is not None

    @property
    def hard(self) -> bool:
        return self is HARD or (self.exponent == 1.0 and not self.bounded)  # (the classical rule first)


#: Rows or columns held at their masses exactly (the balanced problem).
HARD = Rule()


@dataclass(slots=True)
class Problem:
    """A validated entropic OT labelling problem in a :mod:`layout <otlabel._layout>`.

    The solution is ``plan = diag(u) (prior * exp(scores / epsilon)) diag(v)`` with the rows
    summing to ``row_mass`` and each problem's columns to ``col_mass``.
    """

    scores: torch.Tensor  #: (B, N, K) dense or (N, K) segmented, as given (any float dtype); never modified
    prior: torch.Tensor | None  #: like ``scores``: non-negative, or its log when ``log_prior``; None: uniform
    log_prior: bool  #: whether ``prior`` holds log Q-hat (-inf for hard zeros)
    epsilon: float
    row_mass: torch.Tensor | None  #: (B, N) / (N,) target row sums in ``dtype``; None: every row sums to 1
    col_mass: torch.Tensor  #: (B, K) / (G, K) target column sums (rows of the problem * col_marginal)
    dtype: torch.dtype  #: compute dtype (float32 or float64)
    layout: Dense | Segmented
    checks: DeferredChecks
    #: no host synchronisation: failed value checks and an unhealthy scaling path in fixed mode
    #: turn the labels into NaN instead of raising or replaying in the log domain
    device_checks: bool = False
    score_range: tuple[float, float] | None = None  #: (min, max) of the scores, when known for free
    prior_range: tuple[float, float] | None = None  #: (min, max) of the prior (or log prior), when known
    return_potentials: bool = False  #: whether the caller wants the dual potentials
    row_rule: Rule = HARD  #: how row sums are held (see :class:`Rule`)
    col_rule: Rule = HARD  #: how column sums are held
    #: partial transport: the total mass of each problem's plan, (B,) / (G,); None: not fixed
    total_mass: torch.Tensor | None = None
    #: warm start: dual potentials (f, g) absorbed into the kernel before iterating (f may be None:
    #: derived from g by a first row step); None: a cold start
    init: tuple[torch.Tensor | None, torch.Tensor] | None = None

    @property
    def reducer(self) -> Reducer:
        return self.layout.reducer

    @property
    def balanced(self) -> bool:
        """Both sides hard and no fixed total: the classical problem and its stopping rule."""
        return self.row_rule.hard and self.col_rule.hard and self.total_mass is None

    def rows_mass(self) -> torch.Tensor:
        """The row masses as a tensor (made when needed: the default all-ones costs nothing)."""
        if self.row_mass is not None:
            return self.row_mass
        shape = self.scores.shape[:-1]
        return torch.ones(shape, dtype=self.dtype, device=self.scores.device)


@dataclass(slots=True)
class Solution:
    """What a backend returns. ``plan`` has the layout's shape, in the compute dtype.

    Potentials (both None unless ``Problem.return_potentials``) reconstruct the plan:
    ``plan = exp(f + scores / epsilon + log prior + g)`` with f per row and g per problem's column.
    """

    plan: torch.Tensor
    log_row_scaling: torch.Tensor | None  #: (B, N) or (N,)
    log_col_scaling: torch.Tensor | None  #: (B, K) or (G, K)
    n_iter: int  #: iterations run (the largest over the problems)
    converged: bool | None  #: tolerance mode: every problem met tol; fixed mode: None
    log_domain: bool  #: whether the log-domain path had to take over
    backend: str
    #: tolerance mode: how many problems missed tol, and the largest column violation among them
    unconverged: int = 0
    worst_error: float = 0.0
    #: per problem (B,) or (G,): iterations run and whether tol was met (tolerance mode), else None
    problem_n_iter: torch.Tensor | None = None
    problem_converged: torch.Tensor | None = None
