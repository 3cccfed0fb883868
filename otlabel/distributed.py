"""Labelling a global batch over ``torch.distributed``: ``process_group=`` of :func:`~otlabel.sinkhorn`.

SwAV-style self-labelling wants the column marginal to hold over the *global* batch of a
data-parallel job, not over each rank's slice of it. Every rank passes its own rows; the only
quantities that couple rows are the column sums (and, once, the column maxima used to keep
the kernel in range), so those are all-reduced and everything else stays per row. The labels
of each rank's rows are then the corresponding rows of one process labelling the
concatenated batch.

One call runs the same sequence of collectives on every rank:

1. **Local checks**, without communication. A rank whose arguments fail them does not raise
   yet: a rank that raised while the others entered a collective would leave them waiting
   forever.
2. **Agreement**: one ``all_gather`` of a fingerprint of ~16 numbers per rank (whether the
   local checks failed, the row count, B, K, the dtype, epsilon, the mode and its settings,
   a checksum of the column marginal, which optional arguments were given, ``return_info``,
   ``backend``), read back once on the host. Every rank then raises the same way: the rank
   whose checks failed raises its own error, the others an
   :class:`~otlabel.InvalidArgumentError` naming that rank; ranks that disagree all raise
   :class:`~otlabel.DistributedMismatchError` naming what differs and on which ranks. The
   fingerprint also gives the global row count N, so the column marginal becomes
   ``N * col_marginal``.
3. **Global checks** that need every rank's rows (a custom ``row_marginal`` summing to 1 over
   all ranks, a prior column with support somewhere), on all-reduced values, so every rank
   reaches the same verdict.
4. **Solving** with :class:`GroupReducer`: the backend routes its column sums, the column-max
   shift, its status read-backs (convergence, overflow, deferred checks) and the log-domain
   column log-sum-exp through it. Status values are combined with a MAX all-reduce, which is
   exact and order-independent, so every rank takes every data-dependent branch the same way.

Per iteration this costs one all-reduce of B x K numbers, as SwAV's ``distributed_sinkhorn``
does, plus the fingerprint exchange (one small all-gather and one host read-back) per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ._checks import BACKENDS, FLOAT_DTYPES, OUTPUTS
from ._deferred import VALIDATE, DeferredChecks
from ._reduce import Agreement, Reducer
from .errors import ArgumentTypeError, BackendUnavailableError, DistributedMismatchError, InvalidArgumentError

__all__ = ["GroupReducer", "check_process_group", "gather_rows"]

#: Column marginals whose checksums agree to this relative tolerance count as equal (ranks
#: may compute the same marginal with different rounding, e.g. on different devices).
COL_MARGINAL_RTOL = 1e-6


def check_process_group(process_group: Any) -> dist.ProcessGroup:
    """Validate ``process_group``: an initialised :class:`torch.distributed.ProcessGroup` this process belongs to.

    These errors are raised at once: without a usable group, no rank can tell the others.
    """
    if not dist.is_available():
        raise BackendUnavailableError("process_group needs torch.distributed, which this PyTorch build lacks")
    if not dist.is_initialized():
        raise InvalidArgumentError(
            "process_group is given but torch.distributed is not initialised; call "
            "torch.distributed.init_process_group() first (note that torch.distributed.group.WORLD is None until then)"
        )
    if isinstance(process_group, int) and process_group == dist.GroupMember.NON_GROUP_MEMBER:
        # what torch.distributed.new_group returns on the ranks it leaves out
        raise InvalidArgumentError("process_group: this process is not a member of that group")
    if not isinstance(process_group, dist.ProcessGroup):
        raise ArgumentTypeError(
            "process_group must be a torch.distributed.ProcessGroup (e.g. torch.distributed.group.WORLD "
            f"or one from torch.distributed.new_group), got {type(process_group).__name__}"
        )
    if dist.get_rank(process_group) < 0:
        raise InvalidArgumentError("process_group: this process is not a member of that group")
    return process_group


class GroupReducer(Reducer):
    """Combines per-rank partial column quantities with all-reduces over a process group."""

    distributed = True

    def __init__(self, process_group: Any):
        self.group = check_process_group(process_group)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, dist.ReduceOp.SUM)

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, dist.ReduceOp.MAX)

    def _all_reduce(self, tensor: torch.Tensor, op: Any) -> torch.Tensor:
        # all_reduce works in place; callers may still need their local values (log-sum-exp)
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=op, group=self.group)
        return out

    def agreement(self) -> GroupAgreement:
        return GroupAgreement(self.group)


def _rank_list(ranks: list[int]) -> str:
    shown = ", ".join(str(r) for r in ranks[:8]) + (", ..." if len(ranks) > 8 else "")
    return f"rank{'s' if len(ranks) > 1 else ''} {shown}"


def _dtype_name(code: float) -> str:
    return str(FLOAT_DTYPES[int(code)]).removeprefix("torch.")


# The fingerprint, in order: (field, how a mismatch is named, how a value is shown). Fields
# shown as None are not compared. Settings that do not apply to the call's mode are recorded
# as 0, so that, e.g., two fixed-iteration calls never disagree about max_iter.
_FIELDS: tuple[tuple[str, str | None, Callable[[float], str]], ...] = (
    ("failed", None, str),
    ("checks_failed", None, str),
    ("rows", None, str),
    ("batch", "the batch size B", lambda v: str(int(v))),
    ("columns", "K, the number of columns", lambda v: str(int(v))),
    ("dtype", "the dtype of scores", _dtype_name),
    ("epsilon", "epsilon", repr),
    ("tol", "tol", lambda v: "None" if v < 0 else f"{v:g}"),
    ("n_iter", "n_iter", lambda v: str(int(v))),
    ("max_iter", "max_iter", lambda v: str(int(v))),
    ("check_every", "check_every", lambda v: str(int(v))),
    ("prior", "whether a prior is given", lambda v: str(bool(v))),
    ("log_prior", "log_prior", lambda v: str(bool(v))),
    ("row_marginal", "whether row_marginal is given", lambda v: str(bool(v))),
    ("return_info", "return_info", lambda v: str(bool(v))),
    ("backend", "backend", lambda v: repr(BACKENDS[int(v)])),
    ("validate", "validate", lambda v: repr(VALIDATE[int(v)])),
    ("row_exponent", "row_penalty", lambda v: "None" if v == 1 else f"exponent {v:g}"),
    ("col_exponent", "col_penalty", lambda v: "None" if v == 1 else f"exponent {v:g}"),
    ("mass", "mass", lambda v: "None" if v < 0 else f"{v:g}"),
    ("col_bounds", "whether col_bounds is given", lambda v: str(bool(v))),
    ("init", "whether init is given (and its row potential)", lambda v: ("no", "column only", "both")[int(v)]),
    ("accelerate", "acceleration", lambda v: "'anderson'" if v else "None"),
    ("output", "output", lambda v: repr(OUTPUTS[int(v)])),
    ("top_k", "top_k", lambda v: str(int(v))),
    ("col_marginal", "col_marginal", str),  # a checksum: its values are shown as A, B, ...
)
_INDEX = {name: i for i, (name, _, _) in enumerate(_FIELDS)}


def _checksum(marginal: torch.Tensor) -> torch.Tensor:
    """A position-weighted sum of a (B, K) marginal, in float64: equal marginals, equal sums."""
    weights = torch.arange(marginal.numel(), dtype=torch.float64, device=marginal.device)
    weights = 1.0 + torch.remainder(weights * 0.6180339887498949, 1.0)
    return (marginal.to(torch.float64).reshape(-1) * weights).sum()


def _exchange_device(group: dist.ProcessGroup, like: torch.Tensor | None) -> torch.device:
    """A device whose tensors the group's backend can all-gather."""
    backend = str(dist.get_backend(group)).lower()
    if "gloo" in backend or "mpi" in backend:  # includes the default "cpu:gloo,cuda:nccl"
        return torch.device("cpu")
    if "nccl" in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return like.device if like is not None else torch.device("cpu")


class GroupAgreement(Agreement):
    """The agreement step of one distributed call (step 2 of :mod:`otlabel.distributed`)."""

    def __init__(self, group: dist.ProcessGroup):
        self.group = group
        self.values: list[float] | None = None
        self.device_values: list[torch.Tensor] = []
        self.like: torch.Tensor | None = None
        self.checks: DeferredChecks | None = None
        #: the number of rows over all ranks, once agreed
        self.total_rows = 0

    def settle(
        self,
        scores: torch.Tensor,
        prior: torch.Tensor | None,
        col: torch.Tensor,
        row: torch.Tensor | None,
        checks: DeferredChecks,
        resolved: Any,
        options: Any,
    ) -> None:
        """Record this rank's fingerprint: its validated arguments and :class:`~otlabel._options.Options`
        (called last inside the context)."""
        batch, n_rows, n_cols = scores.shape
        schedule = options.schedule
        fixed = schedule.fixed
        n_iter, tol, max_iter, check_every = schedule.n_iter, schedule.tol, schedule.max_iter, schedule.check_every
        values = {
            "failed": 0.0,
            "rows": n_rows,
            "batch": batch,
            "columns": n_cols,
            "dtype": FLOAT_DTYPES.index(scores.dtype),
            "epsilon": options.epsilon,
            "tol": -1.0 if fixed else tol,
            "n_iter": n_iter if fixed else 0,
            "max_iter": 0 if fixed else max_iter,
            "check_every": 0 if fixed else check_every,
            "prior": prior is not None,
            "log_prior": options.log_prior,
            "row_marginal": row is not None,
            "return_info": options.return_info,
            "backend": BACKENDS.index(options.backend),
            "validate": VALIDATE.index(options.validate),
            "row_exponent": resolved.row_rule.exponent,
            "col_exponent": resolved.col_rule.exponent,
            "mass": -1.0 if resolved.total_fraction is None else resolved.total_fraction,
            "col_bounds": resolved.col_rule.bounded,
            "init": 0 if resolved.init is None else (1 if resolved.init[0] is None else 2),
            "accelerate": resolved.accelerate,
            "output": OUTPUTS.index(options.output),
            "top_k": options.top_k if options.output == "topk" else 0,
        }
        self.values = [float(values.get(name, 0.0)) for name, _, _ in _FIELDS]
        # values that live on the scores' device join without a host synchronisation
        failed_checks = checks.as_tensor(scores.device).amax() if checks.flags else torch.zeros(())
        self.device_values = [failed_checks, _checksum(col)]
        self.like, self.checks = scores, checks

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        if exc is not None and not isinstance(exc, Exception):
            return None  # KeyboardInterrupt and the like: stop at once
        table = self._exchange(failed=exc is not None)
        if exc is not None:
            return None  # re-raise this rank's own error; the others learnt of it above
        assert self.checks is not None
        if table[dist.get_rank(self.group)][_INDEX["checks_failed"]] > 0:
            self.checks.raise_now()
        failed = [rank for rank, row in enumerate(table) if row[_INDEX["failed"]] or row[_INDEX["checks_failed"]]]
        if failed:
            raise InvalidArgumentError(
                f"process_group: {_rank_list(failed)} rejected {'its' if len(failed) == 1 else 'their'} arguments "
                "(the error is raised there); every rank raises so that none waits forever in a collective"
            )
        differences = _differences(table)
        if differences:
            raise DistributedMismatchError(
                "ranks of process_group disagree on "
                + "; ".join(differences)
                + " (these must be the same on every rank)"
            )
        self.total_rows = int(sum(row[_INDEX["rows"]] for row in table))
        if self.total_rows == 0:
            raise InvalidArgumentError(
                "scores have no rows on any rank of process_group (N = 0 in total): there is nothing to label"
            )
        return None

    def _exchange(self, failed: bool) -> list[list[float]]:
        """All-gather every rank's fingerprint; return it as a (world size) x (fields) table."""
        device = _exchange_device(self.group, None if failed else self.like)
        if failed or self.values is None:
            vector = torch.zeros(len(_FIELDS), dtype=torch.float64, device=device)
            vector[_INDEX["failed"]] = 1.0
        else:
            vector = torch.tensor(self.values, dtype=torch.float64, device=device)
            vector[_INDEX["checks_failed"]] = self.device_values[0].to(device, torch.float64)
            vector[_INDEX["col_marginal"]] = self.device_values[1].to(device)
        gathered = [torch.empty_like(vector) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(gathered, vector, group=self.group)
        return torch.stack(gathered).tolist()


def _same_checksum(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=COL_MARGINAL_RTOL, abs_tol=1e-12)


def _differences(table: list[list[float]]) -> list[str]:
    """What the ranks' fingerprints (rows of ``table``) disagree on, each with its ranks."""
    column = {name: [row[i] for row in table] for i, (name, _, _) in enumerate(_FIELDS)}
    skip = set()
    if len({tol < 0 for tol in column["tol"]}) > 1:  # different modes: their settings differ too
        skip |= {"n_iter", "max_iter", "check_every"}
    if len(set(column["batch"])) > 1 or len(set(column["columns"])) > 1:
        skip.add("col_marginal")  # a marginal of another shape: said already
    found = []
    for name, label, show in _FIELDS:
        if label is None or name in skip:
            continue
        values = column[name]
        if name == "col_marginal":  # checksums: equal within rounding, shown as letters
            distinct: list[float] = []
            keys = []
            for v in values:
                index = next((i for i, d in enumerate(distinct) if _same_checksum(v, d)), len(distinct))
                if index == len(distinct):
                    distinct.append(v)
                keys.append("value " + chr(ord("A") + min(index, 25)))
        else:
            keys = [show(v) for v in values]
        if len(set(keys)) == 1:
            continue
        groups: dict[str, list[int]] = {}
        for rank, key in enumerate(keys):
            groups.setdefault(key, []).append(rank)
        found.append(f"{label} (" + "; ".join(f"{key} on {_rank_list(ranks)}" for key, ranks in groups.items()) + ")")
    return found


def gather_rows(group: dist.ProcessGroup, *row_tensors: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's rows of (B, N_rank, ...) tensors, concatenated in rank order along N, on every
    rank (a host-side gather of the validation: e.g. a prior's support for the exact feasibility
    check)."""
    parts: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, [tensor.cpu() for tensor in row_tensors], group=group)
    return [torch.cat([part[i] for part in parts], dim=1) for i in range(len(row_tensors))]
