r"""A stateful labeller for training loops: :class:`OnlineLabeller`.

One labelling call per training step is what SwAV, SeLa and CASE make; what they carry from one
step to the next is a handful of tensors — a queue of past scores that fills the problem, an
estimate of the class proportions, the last column potential — and a resumed run must carry them
too. :class:`OnlineLabeller` keeps that state as tensors on the scores' device, updates it
without a host synchronisation in the fixed-iteration mode, and saves and restores it exactly
(``state_dict()`` / ``load_state_dict()``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from ._checks import check_bool, check_int, check_marginal
from ._deferred import DeferredChecks, device_checks
from ._front import label, label_with_potentials
from ._gradients import check_differentiable_options
from ._marginals import Sizes, resolve
from ._options import Options
from .errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["OnlineLabeller"]

MARGINALS = ("uniform", "ema")
ESTIMATES = ("predictions", "labels", "given")

#: The keys of :meth:`OnlineLabeller.state_dict`, in order.
STATE_KEYS = ("queue", "queue_filled", "marginal_ema", "ema_updates", "log_col_scaling", "has_potential")


_INT64_MAX = 2**63 - 1


def _whole_number(value: torch.Tensor, key: str, low: int, high: int) -> int:
    """One entry of a state dict that counts something: a single finite whole number in [low, high]
    (any real or bool dtype), as a Python int; refused with the key's name before any cast."""
    if value.dtype.is_complex:
        raise ArgumentTypeError(f"state[{key!r}] must hold a real number, got {value.dtype}")
    number = value.detach().reshape(()).item()  # exact for integer dtypes, a float for floating ones
    if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
        raise InvalidArgumentError(f"state[{key!r}] must be a whole number, got {number}")
    number = int(number)
    if not low <= number <= high:
        allowed = "be 0 or 1" if (low, high) == (0, 1) else f"lie in [{low}, {high}]"
        raise InvalidArgumentError(f"state[{key!r}] must {allowed}, got {number}")
    return number


def _check_fraction(value: Any, name: str) -> float:
    """A real number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a real number in [0, 1), got {type(value).__name__}")
    value = float(value)
    if not 0 <= value < 1:
        raise InvalidArgumentError(f"{name} must lie in [0, 1), got {value}")
    return value


class OnlineLabeller:
    r"""Label one batch per training step, carrying a queue, a class-marginal estimate and potentials.

    Each call labels the rows of ``scores`` (B, K) by :func:`~otlabel.sinkhorn` on the problem

    .. math::

        S = \begin{bmatrix} S_{\text{queue}} \\ S_{\text{batch}} \end{bmatrix} \in \mathbb{R}^{N \times K},
        \qquad Q = \operatorname{diag}(u)\, e^{S / \varepsilon} \operatorname{diag}(v),
        \quad Q \mathbf{1}_K = \mathbf{1}_N,\quad Q^\top \mathbf{1}_N = N c_t,

    and returns the batch's B rows of Q. The queue (SwAV) holds the scores of the last
    ``queue_size`` rows of earlier calls, oldest first: it only fills the problem, so that the
    column constraint holds over more rows than one batch; its rows' labels are discarded.

    **The class marginal** :math:`c_t` is uniform, a fixed vector, or (``marginal="ema"``) an
    exponential moving average of the class proportions the batches show (SoLar's estimate of
    the class prior; CASE's β of Eq. 13 smoothed over steps):

    .. math::

        \bar c_1 = \hat c_1, \qquad \bar c_t = m\, \bar c_{t-1} + (1 - m)\, \hat c_t,
        \qquad c_t = (1 - \phi)\, \bar c_t + \phi / K,

    with momentum m and floor φ. The first estimate replaces the uniform start (no bias toward
    it); before any, :math:`c = 1/K`. The floor mixes in φ of the uniform marginal, so that no
    class ever gets zero mass: a class the estimate once left empty would otherwise receive no
    rows, hence no training signal, and stay empty. ``estimate`` says where
    :math:`\hat c_t` comes from:

    * ``"predictions"`` (default): the class distribution the scores give without the column
      constraint, :math:`\hat c = \frac1B \sum_{n \in \text{batch}} \operatorname{softmax}(S_n / \varepsilon)`
      (the row-wise solution of the same problem; SoLar's moving average of the predicted class
      distribution). Updated *after* labelling: a call labels with the estimate of the batches
      before it.
    * ``"labels"``: the class shares of the batch's own labels,
      :math:`\hat c_k = \sum_n Q_{nk} / \sum_{nk} Q_{nk}` — informative only when the marginal
      does not bind them, so it needs ``col_penalty`` or ``mass``.
    * ``"given"``: only :meth:`update` moves the estimate, with a batch estimate of the caller's
      (CASE's Eq. 13 β from the snippets' foreground pseudo-labels); call it before labelling for
      the batch to count.

    **Warm starts** (``warm_start=True``): each call starts from the previous call's column
    potential g (the rows change, so only the column potential carries over; the row potential
    follows from it). In tolerance mode this never changes the converged answer, only the
    iterations it takes; in fixed-iteration mode the ``n_iter`` iterations continue from it.

    **Distributed** (``process_group=``): each rank passes its own rows and labels the global
    problem (all ranks' queues and batches), as :func:`~otlabel.sinkhorn` does. The queue is per
    rank (SwAV). The estimate :math:`\hat c` is computed from all-reduced column sums (and, for
    :meth:`update`, averaged over the ranks), so the EMA is the same on every rank.

    **On a GPU**, the state lives on the scores' device (moved there at the first call after a
    load) and a fixed-iteration call makes no host synchronisation and takes no data-dependent
    branch (with ``validate="device"``, or under ``torch.compile`` with ``"auto"``). A call whose
    labels come back NaN there (a failed device-side check) leaves the marginal estimate and the
    potential as they were, and its rows do not enter the queue (the queue keeps its rows; one
    that is not yet full then counts all-zero rows in their place).

    Parameters
    ----------
    n_classes : int
        K, the number of columns of every ``scores``.
    epsilon : float, default 0.05
        Entropic regularisation, as in :func:`~otlabel.sinkhorn`.
    n_iter, tol, max_iter, check_every
        The schedule, as in :func:`~otlabel.sinkhorn` (fixed-iteration mode, 3 iterations, by default).
    queue_size : int, default 0
        Rows of past scores kept to fill the problem (0: no queue).
    marginal : {"uniform", "ema"} or array-like of shape (K,), default "uniform"
        The class marginal: uniform, the moving average above, or fixed class proportions
        (non-negative, summing to 1 within 1e-4).
    momentum : float in [0, 1), default 0.9
        m of the moving average (0: each batch's estimate alone).
    estimate : {"predictions", "labels", "given"}, default "predictions"
        Where the moving average's batch estimate comes from (see above).
    floor : float in [0, 1), default 0.01
        φ: the share of the uniform marginal mixed into the estimate (0: none; a class may then die).
    warm_start : bool, default False
        Start each call from the previous call's column potential.
    process_group : torch.distributed.ProcessGroup, optional
        Label the global batch of a distributed job (see above).
    col_penalty, row_penalty, mass, col_bounds, acceleration, backend, validate
        Passed to :func:`~otlabel.sinkhorn` at every call (``col_bounds`` replaces the marginal:
        it needs ``marginal="uniform"``).
    differentiable : bool, default False
        Labels that carry gradients to the batch's scores (the queued scores are constants), as
        :func:`~otlabel.sinkhorn`'s ``differentiable``; with ``warm_start`` only in tolerance mode.

    Attributes
    ----------
    marginal : Tensor (K,), float64
        The class marginal :math:`c_t` the next call labels with (sums to 1; with the floor,
        no entry below φ/K).

    Raises
    ------
    InvalidArgumentError, ArgumentTypeError
        On a bad argument, at construction (the solver options included), and on scores of the
        wrong type, rank or number of columns at a call.

    Examples
    --------
    >>> import torch
    >>> from otlabel import OnlineLabeller
    >>> labeller = OnlineLabeller(3, epsilon=0.5, queue_size=8, marginal="ema", momentum=0.5)
    >>> generator = torch.Generator().manual_seed(0)
    >>> for _ in range(4):
    ...     scores = torch.randn(4, 3, generator=generator) + torch.tensor([2.0, 0.0, 0.0])
    ...     labels = labeller(scores)
    >>> labels.shape, bool(torch.allclose(labels.sum(1), torch.ones(4)))
    (torch.Size([4, 3]), True)
    >>> bool(labeller.marginal.argmax() == 0), round(float(labeller.marginal.sum()), 6)
    (True, 1.0)
    >>> state = labeller.state_dict()                   # torch.save(state, path) with the model's
    >>> resumed = OnlineLabeller(3, epsilon=0.5, queue_size=8, marginal="ema", momentum=0.5)
    >>> resumed.load_state_dict(state)
    >>> bool(torch.equal(resumed(scores), labeller(scores)))
    True
    """

    def __init__(
        self,
        n_classes: int,
        epsilon: float = 0.05,
        *,
        n_iter: int | None = None,
        tol: float | None = None,
        max_iter: int = 1000,
        check_every: int = 10,
        queue_size: int = 0,
        marginal: Any = "uniform",
        momentum: float = 0.9,
        estimate: str = "predictions",
        floor: float = 0.01,
        warm_start: bool = False,
        process_group: Any = None,
        col_penalty: float | None = None,
        row_penalty: float | None = None,
        mass: float | None = None,
        col_bounds: Any = None,
        acceleration: str | None = None,
        backend: str = "auto",
        validate: str = "auto",
        differentiable: bool = False,
    ):
        self.n_classes = check_int(n_classes, "n_classes", 1)
        k = self.n_classes
        if isinstance(marginal, str):
            if marginal not in MARGINALS:
                raise InvalidArgumentError(
                    f"marginal must be one of {MARGINALS} or class proportions of shape ({k},), got {marginal!r}"
                )
            self._kind = marginal
        else:
            self._kind = "fixed"
        # the solver's settings, checked now with the library's own messages (a stand-in column
        # marginal says whether one will be given; the real one is set at every call)
        self._options = Options.make(
            epsilon=epsilon,
            col_marginal=None if self._kind == "uniform" else "given at each call",
            n_iter=n_iter,
            tol=tol,
            max_iter=max_iter,
            check_every=check_every,
            backend=backend,
            process_group=process_group,
            validate=validate,
            col_penalty=col_penalty,
            row_penalty=row_penalty,
            mass=mass,
            col_bounds=col_bounds,
            acceleration=acceleration,
            differentiable=differentiable,
        )
        self._options.raise_error()
        if self._options.differentiable:
            check_differentiable_options(self._options, warm_start=bool(warm_start))
        self.queue_size = check_int(queue_size, "queue_size", 0)
        self.momentum = _check_fraction(momentum, "momentum")
        self.floor = _check_fraction(floor, "floor")
        self.warm_start = check_bool(warm_start, "warm_start")
        if estimate not in ESTIMATES:
            raise InvalidArgumentError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
        self.estimate = estimate
        fixed: torch.Tensor | None = None
        if self._kind == "fixed":
            if isinstance(marginal, torch.Tensor):  # checked on the host, once (a device check would be deferred)
                marginal = marginal.detach().cpu()
            like = torch.zeros(1, 1, k, dtype=torch.float64)
            fixed = check_marginal(marginal, "marginal", k, "K", 1, False, like, torch.float64, DeferredChecks())[0]
        if col_bounds is not None:  # its shape and values, on a stand-in problem
            stand_in = torch.zeros(1, 1, k, dtype=torch.float64)
            resolve(self._options, Sizes(1, 1, k, batched=False), stand_in, torch.float64, DeferredChecks())
        if estimate == "labels" and col_penalty is None and mass is None:
            raise InvalidArgumentError(
                "estimate='labels' needs col_penalty or mass: under a hard column marginal the labels' class "
                "shares are the marginal itself, so the moving average could never move"
            )
        if self._kind != "ema" and estimate != "predictions":
            raise InvalidArgumentError(f"estimate={estimate!r} applies to marginal='ema' only")
        # the state: tensors, moved to the scores' device at the first call
        self._queue = torch.zeros(self.queue_size, k)
        self._filled = 0  # rows of the queue that hold scores (the last ones); host-side, never data-dependent
        self._ema = torch.full((k,), 1.0 / k, dtype=torch.float64)
        self._updates = torch.zeros((), dtype=torch.int64)
        self._potential = torch.zeros(k, dtype=torch.float64)
        self._has_potential = False
        self._fixed = fixed

    # ------------------------------------------------------------------ the marginal

    @property
    def marginal(self) -> torch.Tensor:
        """The class marginal the next call labels with, (K,) float64 on the state's device."""
        if self._kind == "fixed":
            return self._fixed.to(self._ema.device)
        if self._kind == "uniform":
            return torch.full_like(self._ema, 1.0 / self.n_classes)
        if self.floor == 0:
            return self._ema
        return (1 - self.floor) * self._ema + self.floor / self.n_classes

    def update(self, estimate: Any) -> None:
        r"""Fold a batch estimate :math:`\hat c` of the class proportions into the moving average.

        For ``marginal="ema"`` (with ``estimate="given"``, the only way it moves). ``estimate``
        (K,) is normalised to sum to 1. Under ``process_group`` every rank must call it, and the
        ranks' estimates are averaged (pass the global estimate, or each rank's own). A bad
        estimate (negative, non-finite, or summing to 0) raises in host mode; in device mode it is
        ignored (the average stays as it was).
        """
        if self._kind != "ema":
            raise InvalidArgumentError("update() applies to marginal='ema'")
        if not isinstance(estimate, torch.Tensor):
            raise ArgumentTypeError(f"estimate must be a torch.Tensor, got {type(estimate).__name__}")
        if estimate.dim() != 1 or estimate.shape[0] != self.n_classes:
            raise InvalidArgumentError(
                f"estimate must have shape ({self.n_classes},) (K = n_classes), got {tuple(estimate.shape)}"
            )
        if not estimate.dtype.is_floating_point:
            raise ArgumentTypeError(f"estimate must hold floating-point numbers, got dtype {estimate.dtype}")
        self._place(estimate)
        value = estimate.detach().to(torch.float64)
        total = value.sum()
        ok = torch.isfinite(value).all() & (value >= 0).all() & (total > 0)
        if not device_checks(self.validate, estimate) and not bool(ok):
            raise InvalidArgumentError(
                f"estimate must be finite and non-negative with a positive sum, got {estimate.tolist()}"
            )
        value = value / total
        if self.process_group is not None:
            value = value.clone()
            dist.all_reduce(value, group=self.process_group)
            value = value / dist.get_world_size(self.process_group)
        self._fold(value, ok)

    def _fold(self, value: torch.Tensor, ok: torch.Tensor) -> None:
        """The moving average's step (branch-free: the first estimate replaces the start; a failed one is ignored)."""
        ok = ok & torch.isfinite(value).all()
        moved = self.momentum * self._ema + (1 - self.momentum) * value
        moved = torch.where(self._updates == 0, value, moved)
        self._ema = torch.where(ok, moved, self._ema)
        self._updates = self._updates + ok.to(torch.int64)

    # ------------------------------------------------------------------ labelling

    def _place(self, like: torch.Tensor) -> None:
        """Move the state to ``like``'s device (at the first call, and after a load)."""
        device = like.device
        if self._ema.device != device:
            self._queue = self._queue.to(device)
            self._ema = self._ema.to(device)
            self._updates = self._updates.to(device)
            self._potential = self._potential.to(device)

    def _solve(self, rows: torch.Tensor, col_marginal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels of the problem ``rows`` and, for a warm start, its column potential (no read-back)."""
        if not self.warm_start:
            return label(rows, None, self._options.changed(col_marginal=col_marginal)), None
        init = None
        if self._has_potential:
            # the rows follow from the column potential by a row step, f = -logsumexp(S / eps + g); computed
            # here rather than passed as (None, g), which the fixed-iteration mode does not continue from
            dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
            g = self._potential.to(dtype)
            init = (-torch.logsumexp(rows.to(dtype) / self.epsilon + g, dim=-1), g)
        options = self._options.changed(col_marginal=col_marginal, init=init)
        labels, potential = label_with_potentials(rows, options)
        return labels, potential.reshape(self.n_classes)

    # the settings, as the constructor took them
    epsilon = property(lambda self: self._options.epsilon)
    n_iter = property(lambda self: self._options.n_iter)
    tol = property(lambda self: self._options.tol)
    max_iter = property(lambda self: self._options.max_iter)
    check_every = property(lambda self: self._options.check_every)
    backend = property(lambda self: self._options.backend)
    validate = property(lambda self: self._options.validate)
    process_group = property(lambda self: self._options.process_group)
    acceleration = property(lambda self: self._options.acceleration)
    differentiable = property(lambda self: self._options.differentiable)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """Label a batch: ``scores`` (B, K) → labels (B, K) of its rows (rows sum to 1; no gradient
        unless ``differentiable=True``, then to ``scores`` — the queue is a constant).

        Labels the queue and the batch together with the current marginal, then updates the
        marginal estimate (``estimate="predictions"`` or ``"labels"``), the potential
        (``warm_start``) and the queue, in that order.
        """
        if not isinstance(scores, torch.Tensor):
            raise ArgumentTypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
        if scores.dim() != 2 or scores.shape[1] != self.n_classes:
            raise InvalidArgumentError(
                f"scores must have shape (B, {self.n_classes}) (K = n_classes), got {tuple(scores.shape)}"
            )
        self._place(scores)
        rows = scores.detach()
        n_batch = rows.shape[0]
        queued = self._queue[self.queue_size - self._filled :].to(rows.dtype) if self._filled else None
        batch = scores if self._options.differentiable else rows  # (the queue is a constant)
        problem = batch if queued is None else torch.cat((queued, batch))
        col_marginal = None if self._kind == "uniform" else self.marginal
        labels, potential = self._solve(problem, col_marginal)
        mine = labels if queued is None else labels[self._filled :]
        ok = torch.isfinite(mine).all() if n_batch else torch.ones((), dtype=torch.bool, device=rows.device)
        if self._kind == "ema" and self.estimate != "given":
            if self.estimate == "predictions":
                dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
                shares = torch.softmax(rows.to(dtype) / self.epsilon, dim=-1)
            else:
                shares = mine.detach()
            sums = shares.sum(0, dtype=torch.float64)
            if self.process_group is not None:  # one all-reduce: the column sums, and whether any rank failed
                both = torch.cat((sums, (~ok).to(torch.float64).reshape(1)))
                dist.all_reduce(both, group=self.process_group)
                sums, ok = both[:-1], both[-1] == 0
            self._fold(sums / sums.sum(), ok)
        if potential is not None:
            keep = ok & torch.isfinite(potential).all()
            self._potential = torch.where(keep, potential.to(torch.float64), self._potential)
            self._has_potential = True
        if self.queue_size:
            self._push(rows, ok)
        return mine

    def _push(self, rows: torch.Tensor, ok: torch.Tensor) -> None:
        """Queue the batch's rows, unless its labels failed (device mode: NaN labels), which
        would make every call NaN until they left the queue: then the queue keeps its rows."""
        if self._queue.dtype != rows.dtype:
            self._queue = self._queue.to(rows.dtype)
        pushed = torch.cat((self._queue, rows))[-self.queue_size :]
        self._queue = torch.where(ok, pushed, self._queue)
        self._filled = min(self.queue_size, self._filled + rows.shape[0])

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The labeller's state as tensors (for :func:`torch.save` beside the model's).

        Keys: ``queue`` (queue_size, K) — the queued rows are its last ``queue_filled``;
        ``queue_filled``; ``marginal_ema`` (K,) float64 (before the floor); ``ema_updates``, the
        estimates folded in so far; ``log_col_scaling`` (K,), the warm start's column potential,
        and ``has_potential``. The settings are the constructor's, not part of the state.
        """
        return {
            "queue": self._queue,
            "queue_filled": torch.tensor(self._filled, dtype=torch.int64),
            "marginal_ema": self._ema,
            "ema_updates": self._updates,
            "log_col_scaling": self._potential,
            "has_potential": torch.tensor(self._has_potential),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the next call continues exactly).

        Raises
        ------
        InvalidArgumentError, ArgumentTypeError
            A missing or unexpected key, a tensor of the wrong shape (another number of classes or
            another queue size) or dtype, or a value out of range; nothing is changed then.
        """
        if not isinstance(state, Mapping):
            raise ArgumentTypeError(f"state must be a mapping (from state_dict()), got {type(state).__name__}")
        missing = [key for key in STATE_KEYS if key not in state]
        unexpected = [str(key) for key in state if key not in STATE_KEYS]
        if missing or unexpected:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(unexpected)}"] if unexpected else []
            )
            raise InvalidArgumentError(
                f"state for OnlineLabeller: {'; '.join(parts)} (expected {', '.join(STATE_KEYS)})"
            )
        for key in STATE_KEYS:
            if not isinstance(state[key], torch.Tensor):
                raise ArgumentTypeError(f"state[{key!r}] must be a torch.Tensor, got {type(state[key]).__name__}")
        k, size = self.n_classes, self.queue_size
        ema, potential, queue = state["marginal_ema"], state["log_col_scaling"], state["queue"]
        if ema.dim() != 1 or potential.dim() != 1 or queue.dim() != 2:
            raise InvalidArgumentError(
                "state: marginal_ema and log_col_scaling must be vectors and queue a matrix, got shapes "
                f"{tuple(ema.shape)}, {tuple(potential.shape)}, {tuple(queue.shape)}"
            )
        if ema.shape[0] != k or potential.shape[0] != k or queue.shape[1] != k:
            raise InvalidArgumentError(f"state is for {ema.shape[0]} classes but this labeller has n_classes = {k}")
        if queue.shape[0] != size:
            raise InvalidArgumentError(
                f"state has a queue of {queue.shape[0]} rows but this labeller's queue_size = {size}"
            )
        for key in ("queue", "marginal_ema", "log_col_scaling"):
            if not state[key].dtype.is_floating_point:
                raise ArgumentTypeError(f"state[{key!r}] must hold floating-point numbers, got {state[key].dtype}")
        for key in ("queue_filled", "ema_updates", "has_potential"):
            if state[key].numel() != 1:
                raise InvalidArgumentError(
                    f"state[{key!r}] must be a single number, got shape {tuple(state[key].shape)}"
                )
        for key in ("queue", "log_col_scaling"):
            if not bool(torch.isfinite(state[key]).all()):
                raise InvalidArgumentError(f"state[{key!r}] contains NaN or infinite values")
        # the counters are checked before any conversion: a float 1e30 cast to int64 is -2**63
        filled = _whole_number(state["queue_filled"], "queue_filled", 0, size)
        updates = _whole_number(state["ema_updates"], "ema_updates", 0, _INT64_MAX)
        has_potential = _whole_number(state["has_potential"], "has_potential", 0, 1)
        ema64 = ema.detach().to(torch.float64)
        if not (bool(torch.isfinite(ema64).all()) and bool((ema64 >= 0).all()) and abs(float(ema64.sum()) - 1) <= 1e-6):
            raise InvalidArgumentError(
                "state['marginal_ema'] must be a probability vector (finite, >= 0, summing to 1)"
            )
        device = self._ema.device
        self._queue = queue.detach().clone().to(device)
        self._filled = filled
        self._ema = ema64.clone().to(device)
        self._updates = torch.tensor(updates, dtype=torch.int64, device=device)
        self._potential = potential.detach().to(torch.float64).clone().to(device)
        self._has_potential = bool(has_potential)

    def __repr__(self) -> str:
        mode = f"n_iter={self.n_iter or 3}" if self.tol is None else f"tol={self.tol:g}"
        return (
            f"OnlineLabeller(n_classes={self.n_classes}, epsilon={self.epsilon:g}, {mode}, "
            f"queue_size={self.queue_size}, marginal={self._kind!r}, step={int(self._updates)})"
        )
