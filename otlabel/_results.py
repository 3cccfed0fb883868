"""The typed outputs of the labelling entry points (``return_info=True``)."""

from __future__ import annotations

from dataclasses import dataclass

from ._checks import Array

__all__ = ["RaggedSinkhornResult", "SinkhornResult"]


@dataclass(frozen=True)
class SinkhornResult:
    """Labels and diagnostics of one labelling call (``return_info=True``).

    Attributes
    ----------
    labels : Tensor or ndarray, shape (N, K) or (B, N, K)
        The transport plan Q, in the input's type, dtype and device.
    n_iter : int
        Iterations run (one iteration = one column step and one row step).
    converged : bool or None
        Tolerance mode: whether the column-marginal violation fell below ``tol`` — with
        ``col_penalty``, ``row_penalty``, ``mass`` or ``col_bounds``, whether no scaling (nor,
        with ``mass``, Dykstra's correction of the total) changed by more than ``tol``
        (relatively) in the iteration before a check (stationarity: the column sums
        need not meet the marginal then). Fixed-iteration mode has no criterion and reports ``None``.
    row_error, col_error : float
        Scale-free marginal violations of ``labels`` (computed in the compute dtype before
        any cast back to float16/bfloat16): max over rows (columns) and over the batch of
        ``|Q.sum(-1) - N * row_marginal| / (N * row_marginal)`` (likewise for columns).
        ``row_error`` is at rounding level for the classical problem: every schedule ends with
        a row step. With the marginal options they measure the distance to the nominal marginals
        (``col_marginal``, uniform under ``col_bounds``), which a relaxed, partial or bounded
        problem need not meet: not a violation then.
    backend : str
        The backend that ran (``"torch"`` or ``"triton"``).
    log_domain : bool
        True when the scaling path left the safe floating-point range and the log-domain
        path computed the answer (it is then slower, not less accurate).
    log_row_scaling, log_col_scaling : Tensor or ndarray, shapes (…, N) and (…, K)
        Dual potentials f, g with ``Q = exp(f[:, None] + scores / epsilon + log(prior) + g[None, :])``.
    """

    labels: Array
    n_iter: int
    converged: bool | None
    row_error: float
    col_error: float
    backend: str
    log_domain: bool
    log_row_scaling: Array
    log_col_scaling: Array


@dataclass(frozen=True)
class RaggedSinkhornResult:
    """Labels and per-group diagnostics of :func:`sinkhorn_ragged` (``return_info=True``).

    Array fields are tensors (numpy arrays for numpy input) on the scores' device.

    Attributes
    ----------
    labels : Tensor or ndarray, shape (N, K)
        The transport plans of all groups, packed like ``scores``.
    n_iter : Tensor or ndarray, shape (G,), int64
        Iterations each group ran. In tolerance mode a group stops (its scalings freeze) at
        the first check where it meets ``tol``, as it would if labelled on its own.
    converged : Tensor or ndarray, shape (G,), bool, or None
        Tolerance mode: whether each group met ``tol``. None in fixed-iteration mode.
    row_error, col_error : Tensor or ndarray, shape (G,)
        Scale-free marginal violations of each group's plan (as in
        :class:`~otlabel.SinkhornResult`).
    log_domain : bool
        Whether the log-domain path computed the answer (for all groups at once).
    segments : str
        What ran: ``"torch"`` or ``"torch_scatter"`` segment reductions, or ``"dense"`` (equal-size
        groups in fixed-iteration mode, labelled as one batched problem).
    log_row_scaling : Tensor or ndarray, shape (N,)
        Dual potential f of every row.
    log_col_scaling : Tensor or ndarray, shape (G, K)
        Dual potential g of every group's columns:
        ``labels[n] = exp(f[n] + scores[n] / epsilon + log prior[n] + g[group(n)])``.
    """

    labels: Array
    n_iter: Array
    converged: Array | None
    row_error: Array
    col_error: Array
    log_domain: bool
    segments: str
    log_row_scaling: Array
    log_col_scaling: Array
