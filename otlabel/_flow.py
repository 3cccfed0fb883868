"""Whether a support pattern admits the marginals: a bipartite flow question, decided exactly.

A plan Q >= 0 with row sums ``supply``, column sums ``demand`` and zeros outside a support
pattern exists exactly when the maximum flow from the rows to the columns along the support
(each row sending at most its supply, each column receiving at most its demand) carries all the
mass. By max-flow/min-cut (Hall's condition for flows) it fails exactly when some set of rows
needs more mass than the columns it can reach are allowed to receive, and the minimum cut names
such a set.

The decision runs on the host with numpy:

1. rows with the same support pattern are merged (their supplies add up), which shrinks the
   graph to its distinct patterns;
2. a few vectorised Sinkhorn (RAS) iterations on the support produce a flow that certifies
   feasibility at once for the usual, strictly feasible, supports;
3. otherwise Dinic's maximum-flow algorithm decides, and its minimum cut gives the rows and
   columns named in the error.

Masses are floats, so "carries all the mass" means up to a relative tolerance of a few hundred
units in the last place of the compute dtype (see :func:`feasibility_rtol`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["HallViolation", "feasibility_rtol", "find_hall_violation"]

#: RAS iterations tried before the exact max-flow decides.
RAS_ITERATIONS = 100


def feasibility_rtol(dtype: torch.dtype) -> float:
    """Relative mass deficit below which a support counts as feasible (rounding of the masses)."""
    return 256 * torch.finfo(dtype).eps


@dataclass(frozen=True)
class HallViolation:
    """Rows that need more mass than the columns they reach may receive (indices of the input)."""

    rows: np.ndarray  #: indices of the rows of the violating set
    cols: np.ndarray  #: the columns those rows have support on
    row_mass: float  #: mass the rows must send
    col_mass: float  #: mass the columns may receive

    def describe(self, row_name: str = "rows", col_name: str = "columns") -> str:
        def show(values: np.ndarray) -> str:
            head = ", ".join(str(int(v)) for v in values[:8])
            return f"[{head}{', ...' if values.size > 8 else ''}]"

        return (
            f"{row_name} {show(self.rows)} ({self.rows.size} in all) must send mass {self.row_mass:.6g} but have "
            f"support only on {col_name} {show(self.cols)}, which may receive {self.col_mass:.6g}"
        )


def find_hall_violation(
    support: np.ndarray, supply: np.ndarray, demand: np.ndarray, rtol: float
) -> HallViolation | None:
    """None when some plan on ``support`` (N, K bool) has row sums ``supply`` and column sums
    ``demand`` (non-negative float64 vectors with equal totals, up to ``rtol``); otherwise the
    violated Hall condition (a minimum cut)."""
    total = min(float(supply.sum()), float(demand.sum()))
    if total <= 0:
        return None
    live_cols = demand > 0
    edges = support & live_cols[None, :]
    live_rows = supply > 0
    # merge rows with one pattern: the graph only depends on the distinct patterns
    patterns, inverse = np.unique(np.packbits(edges[live_rows], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    merged_supply = np.bincount(inverse, weights=supply[live_rows], minlength=patterns.shape[0])
    merged = np.unpackbits(patterns, axis=1, count=support.shape[1]).astype(bool)
    target = total * (1 - rtol)
    if _ras_flow(merged, merged_supply, demand) >= target:
        return None
    value, source_side = _max_flow(merged, merged_supply, demand)
    if value >= target:
        return None
    # the rows left on the source side of the minimum cut need more than their neighbours may take
    side_rows = np.flatnonzero(source_side)
    cols = np.flatnonzero(merged[side_rows].any(0))
    original = np.flatnonzero(live_rows)[np.isin(inverse, side_rows)]
    return HallViolation(
        rows=original,
        cols=cols,
        row_mass=float(merged_supply[side_rows].sum()),
        col_mass=float(demand[cols].sum()),
    )


def _ras_flow(edges: np.ndarray, supply: np.ndarray, demand: np.ndarray) -> float:
    """A lower bound on the maximum flow, from Sinkhorn iterations on the support.

    After a row step the rows send exactly their supply; scaling every over-full column down to
    its demand leaves a valid flow worth ``sum_k min(col_sum_k, demand_k)``.
    """
    plan = edges.astype(np.float64)
    row_sums = plan.sum(1)
    if np.any(row_sums == 0):  # a row with mass and no live column: certainly infeasible
        return 0.0
    plan *= (supply / row_sums)[:, None]
    best = 0.0
    for _ in range(RAS_ITERATIONS):
        col_sums = plan.sum(0)
        best = max(best, float(np.minimum(col_sums, demand).sum()))
        if best >= demand.sum() * (1 - 1e-15):
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(col_sums > 0, demand / col_sums, 0.0)
        plan *= scale[None, :]
        row_sums = plan.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            plan *= np.where(row_sums > 0, supply / row_sums, 0.0)[:, None]
    return best


def _max_flow(edges: np.ndarray, supply: np.ndarray, demand: np.ndarray) -> tuple[float, np.ndarray]:
    """Dinic's algorithm on source -> rows -> columns -> sink; return (flow value, rows on the
    source side of a minimum cut)."""
    n_rows, n_cols = edges.shape
    source, sink = n_rows + n_cols, n_rows + n_cols + 1
    head: list[list[int]] = [[] for _ in range(n_rows + n_cols + 2)]
    to: list[int] = []
    cap: list[float] = []

    def add(u: int, v: int, capacity: float) -> None:
        head[u].append(len(to))
        to.append(v)
        cap.append(capacity)
        head[v].append(len(to))
        to.append(u)
        cap.append(0.0)

    unbounded = float(supply.sum()) * 2 + 1.0
    for row in range(n_rows):
        add(source, row, float(supply[row]))
    for row, col in zip(*np.nonzero(edges)):
        add(int(row), n_rows + int(col), unbounded)
    for col in range(n_cols):
        add(n_rows + col, sink, float(demand[col]))
    eps = 1e-300  # residual capacities below this count as saturated

    def levels() -> list[int]:
        level = [-1] * len(head)
        level[source] = 0
        queue = deque([source])
        while queue:
            u = queue.popleft()
            for e in head[u]:
                if cap[e] > eps and level[to[e]] < 0:
                    level[to[e]] = level[u] + 1
                    queue.append(to[e])
        return level

    flow = 0.0
    while True:
        level = levels()
        if level[sink] < 0:
            return flow, np.array([level[row] >= 0 for row in range(n_rows)], dtype=bool)
        pointer = [0] * len(head)
        while True:  # blocking flow: augment along shortest paths until none is left
            path: list[int] = []
            u = source
            while u != sink:
                edges_u = head[u]
                while pointer[u] < len(edges_u):
                    e = edges_u[pointer[u]]
                    if cap[e] > eps and level[to[e]] == level[u] + 1:
                        break
                    pointer[u] += 1
                if pointer[u] == len(edges_u):  # dead end: retreat
                    if u == source:
                        break
                    level[u] = -1
                    u = to[path.pop() ^ 1]
                    continue
                e = edges_u[pointer[u]]
                path.append(e)
                u = to[e]
            if u != sink:
                break
            pushed = min(cap[e] for e in path)
            for e in path:
                cap[e] -= pushed
                cap[e ^ 1] += pushed
            flow += pushed
