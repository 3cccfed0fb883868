"""Cases for the distributed tests, and the worker that runs them on every rank of a gloo group.

A case describes one *global* problem (scores, prior, row marginal, options) and how its rows
are split over the ranks; :func:`local_arguments` cuts out one rank's part. The worker runs
every case in order inside one process group and saves each rank's outcome (labels and
diagnostics, or the exception it raised); the tests compare those outcomes with one process
labelling the concatenated rows. Cases run back to back, so a rank left behind by an earlier
case (a deadlock) makes the whole run time out instead of passing.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Seconds a collective may wait for a missing rank before gloo gives up (a deadlock fails).
COLLECTIVE_TIMEOUT_S = 60


@dataclass
class Case:
    """A global problem and its split over the ranks."""

    scores: torch.Tensor  # (N, K) or (B, N, K), the concatenation of every rank's rows
    splits: list[int]  # rows held by each rank (sum = N)
    options: dict[str, Any] = field(default_factory=dict)  # epsilon, tol, col_marginal, ...
    prior: torch.Tensor | None = None  # same shape as scores
    row_marginal: torch.Tensor | None = None  # (N,) or (B, N), global: sums to 1 over all rows
    numpy: bool = False
    #: changes one rank's keyword arguments (to provoke errors): (rank, kwargs) -> kwargs
    perturb: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
    #: "labels" (compare with one process), or the exception class name every rank must raise
    expect: str = "labels"
    group: str = "world"  # "world", or "sub": the subgroup of ranks 0 and 2 (world size 3)
    defer_checks: bool = False  # treat CPU value checks as a GPU would: defer them to a sync point


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scores(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=_generator(seed), dtype=torch.float64)


def _splits(world: int, pattern: str) -> list[int]:
    """Rows per rank: uneven, and with an empty rank where asked."""
    table = {
        "uneven": {2: [7, 12], 3: [5, 9, 3]},
        "empty": {2: [0, 14], 3: [6, 0, 8]},
        "sub": {3: [6, 0, 9]},  # the subgroup {0, 2}; rank 1 is not a member
    }
    return table[pattern][world]


def _prior(seed: int, n: int, k: int, zeros: bool = False) -> torch.Tensor:
    prior = torch.rand(n, k, generator=_generator(seed), dtype=torch.float64) + 0.05
    if zeros:  # a sparse support that keeps every row and column reachable
        mask = torch.rand(n, k, generator=_generator(seed + 1)) < 0.4
        mask[torch.arange(n), torch.arange(n) % k] = False
        prior[mask] = 0.0
    return prior


def _set(rank_to_change: int, **changes: Any) -> Callable[[int, dict[str, Any]], dict[str, Any]]:
    def perturb(rank: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        if rank == rank_to_change:
            kwargs = {**kwargs, **{k: (v(kwargs) if callable(v) else v) for k, v in changes.items()}}
        return kwargs

    return perturb


def cases(world: int) -> dict[str, Case]:
    """Every case for a world of ``world`` ranks (2 or 3), in the order they run."""
    uneven = _splits(world, "uneven")
    n = sum(uneven)
    last = world - 1
    col = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    row = torch.rand(n, generator=_generator(7), dtype=torch.float64) + 0.1
    row = row / row.sum()
    out = {
        "fixed": Case(_scores(1, n, 4), uneven, {"epsilon": 0.5}),
        "tol": Case(_scores(2, n, 4), uneven, {"epsilon": 0.5, "tol": 1e-10, "return_info": True}),
        "prior_fixed": Case(_scores(3, n, 4), uneven, {"epsilon": 0.3, "n_iter": 5}, prior=_prior(3, n, 4)),
        "prior_marginals_tol": Case(
            _scores(4, n, 4),
            uneven,
            {"epsilon": 0.5, "tol": 1e-10, "col_marginal": col, "return_info": True},
            prior=_prior(4, n, 4, zeros=True),
            row_marginal=row,
        ),
        "row_marginal_fixed": Case(_scores(5, n, 4), uneven, {"epsilon": 0.5, "n_iter": 4}, row_marginal=row),
        "batched_tol": Case(
            _scores(6, 2, n, 3),
            uneven,
            {
                "epsilon": 0.4,
                "tol": 1e-10,
                "col_marginal": torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]], dtype=torch.float64),
                "return_info": True,
            },
        ),
        # float32 scalings leave the safe range within 50 iterations at |scores / epsilon| ~ 1e3:
        # the switch to the log domain must be agreed (tol is out of reach: it also warns)
        "log_domain_tol": Case(
            _scores(8, n, 4).float(), uneven, {"epsilon": 1e-3, "tol": 1e-6, "max_iter": 50, "return_info": True}
        ),
        "log_domain_fixed": Case(
            _scores(8, n, 4).float(), uneven, {"epsilon": 1e-3, "n_iter": 50, "return_info": True}
        ),
        "empty_rank_float32_info": Case(
            _scores(49, 14, 4).float(), _splits(world, "empty"), {"epsilon": 0.5, "tol": 1e-6, "return_info": True}
        ),
        "empty_rank_fixed": Case(_scores(10, 14, 4), _splits(world, "empty"), {"epsilon": 0.5, "return_info": True}),
        "empty_rank_tol_prior": Case(
            _scores(11, 14, 4),
            _splits(world, "empty"),
            {"epsilon": 0.5, "tol": 1e-10, "return_info": True},
            prior=_prior(11, 14, 4),
        ),
        "numpy": Case(_scores(12, n, 4), uneven, {"epsilon": 0.5, "tol": 1e-9}, numpy=True),
        # the marginal options: their steps read all-reduced sums, totals and changes
        "penalties_tol": Case(
            _scores(40, n, 4), uneven, {"epsilon": 0.5, "tol": 1e-10, "col_penalty": 2.0, "row_penalty": 5.0}
        ),
        "penalty_fixed_empty_rank": Case(
            _scores(41, 14, 4), _splits(world, "empty"), {"epsilon": 0.5, "n_iter": 7, "col_penalty": 2.0}
        ),
        "partial_tol": Case(
            _scores(42, n, 4), uneven, {"epsilon": 0.5, "tol": 1e-10, "mass": 0.6, "col_marginal": col}
        ),
        "bounds_tol_prior": Case(
            _scores(43, n, 4),
            uneven,
            {"epsilon": 0.5, "tol": 1e-10, "col_bounds": ([0.2] * 4, [0.3] * 4)},
            prior=_prior(43, n, 4),
        ),
        "anderson_tol": Case(
            _scores(44, n, 4), uneven, {"epsilon": 0.2, "tol": 1e-10, "acceleration": "anderson", "return_info": True}
        ),
        "warm_start_tol": Case(
            _scores(45, n, 4),
            uneven,
            {"epsilon": 0.5, "tol": 1e-10, "init": (None, _scores(46, 4)), "return_info": True},
        ),
        "warm_start_fixed_empty_rank": Case(
            _scores(47, 14, 4), _splits(world, "empty"), {"epsilon": 0.5, "n_iter": 4, "init": _scores(48, 4)}
        ),
        # column 0 of the prior has support on the last rank's rows only: no rank may reject it alone
        "prior_column_on_one_rank": Case(
            _scores(13, n, 3),
            uneven,
            # column 0 may only take as much mass as the last rank's rows hold (else infeasible)
            {"epsilon": 0.5, "tol": 1e-10, "col_marginal": torch.tensor([0.1, 0.45, 0.45], dtype=torch.float64)},
            prior=_column_on_last_rank(n, uneven),
        ),
        "warns_on_every_rank": Case(_scores(14, n, 4), uneven, {"epsilon": 0.05, "tol": 1e-12, "max_iter": 2}),
        # errors: every rank must raise, and the next case must still run (no rank left waiting)
        "mismatch_epsilon": Case(
            _scores(20, n, 4),
            uneven,
            {"epsilon": 0.5},
            perturb=_set(1, epsilon=0.25),
            expect="DistributedMismatchError",
        ),
        "mismatch_k": Case(
            _scores(21, n, 4),
            uneven,
            {"epsilon": 0.5},
            perturb=_set(last, scores=lambda kw: torch.cat([kw["scores"], kw["scores"][:, :1]], 1)),
            expect="DistributedMismatchError",
        ),
        "mismatch_mode": Case(
            _scores(22, n, 4),
            uneven,
            {"epsilon": 0.5},
            perturb=_set(0, tol=1e-6),
            expect="DistributedMismatchError",
        ),
        "mismatch_col_marginal": Case(
            _scores(23, n, 4),
            uneven,
            {"epsilon": 0.5, "col_marginal": col},
            perturb=_set(1, col_marginal=col.flip(0)),
            expect="DistributedMismatchError",
        ),
        "mismatch_dtype": Case(
            _scores(24, n, 4),
            uneven,
            {"epsilon": 0.5},
            perturb=_set(1, scores=lambda kw: kw["scores"].float()),
            expect="DistributedMismatchError",
        ),
        "mismatch_n_iter": Case(
            _scores(25, n, 4),
            uneven,
            {"epsilon": 0.5},
            perturb=_set(last, n_iter=4),
            expect="DistributedMismatchError",
        ),
        "nan_on_one_rank": Case(
            _scores(26, n, 4),
            uneven,
            {"epsilon": 0.5},
            perturb=_set(1, scores=_with_nan),
            expect="InvalidArgumentError",
        ),
        "nan_on_one_rank_deferred": Case(
            _scores(27, n, 4),
            uneven,
            {"epsilon": 0.5},
            perturb=_set(1, scores=_with_nan),
            expect="InvalidArgumentError",
            defer_checks=True,
        ),
        "bad_shape_on_one_rank": Case(
            _scores(28, n, 4),
            uneven,
            {"epsilon": 0.5},
            prior=_prior(28, n, 4),
            perturb=_set(0, prior=lambda kw: kw["prior"][:, :3]),
            expect="InvalidArgumentError",
        ),
        "row_marginal_not_summing_to_1": Case(
            _scores(29, n, 4), uneven, {"epsilon": 0.5}, row_marginal=row * 1.5, expect="InvalidArgumentError"
        ),
        "no_rows_anywhere": Case(_scores(30, 0, 4), [0] * world, {"epsilon": 0.5}, expect="InvalidArgumentError"),
        "after_errors": Case(_scores(31, n, 4), uneven, {"epsilon": 0.5, "tol": 1e-10}),
    }
    for name, case in out.items():
        assert sum(case.splits) == case.scores.shape[-2], name
    if world == 3:
        out["subgroup"] = Case(_scores(32, 15, 4), _splits(3, "sub"), {"epsilon": 0.5, "tol": 1e-10}, group="sub")
    return out


def _with_nan(kwargs: dict[str, Any]) -> torch.Tensor:
    scores = kwargs["scores"].clone()
    scores[0, 0] = float("nan")
    return scores


def _column_on_last_rank(n: int, splits: list[int]) -> torch.Tensor:
    prior = _prior(13, n, 3)
    prior[: n - splits[-1], 0] = 0.0
    return prior


def offsets(splits: list[int]) -> list[int]:
    return [sum(splits[:r]) for r in range(len(splits) + 1)]


def local_arguments(case: Case, rank: int) -> dict[str, Any]:
    """Keyword arguments of ``rank``'s call: its rows of everything row-shaped."""
    lo, hi = offsets(case.splits)[rank : rank + 2]
    kwargs: dict[str, Any] = {"scores": case.scores[..., lo:hi, :], **case.options}
    if case.prior is not None:
        kwargs["prior"] = case.prior[..., lo:hi, :]
    if case.row_marginal is not None:
        kwargs["row_marginal"] = case.row_marginal[..., lo:hi]
    if case.numpy:
        kwargs = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return case.perturb(rank, kwargs) if case.perturb else kwargs


def label(kwargs: dict[str, Any], **extra: Any) -> Any:
    """Call sinkhorn or sinkhorn_with_prior, as the arguments ask."""
    from otlabel import sinkhorn, sinkhorn_with_prior

    kwargs = dict(kwargs)
    if "prior" in kwargs:
        return sinkhorn_with_prior(kwargs.pop("scores"), kwargs.pop("prior"), **kwargs, **extra)
    return sinkhorn(kwargs.pop("scores"), **kwargs, **extra)


def join_world(rank: int, world: int, init_file: str) -> None:
    """Join this spawned rank to the gloo world of ``world`` ranks (one torch thread: several
    ranks share the machine's cores); a missing rank fails a collective after COLLECTIVE_TIMEOUT_S."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )


def reference(case: Case, **extra: Any) -> dict[str, Any]:
    """One process labelling the concatenated rows (the same keyword arguments, unsplit)."""
    kwargs: dict[str, Any] = {"scores": case.scores, **case.options}
    if case.prior is not None:
        kwargs["prior"] = case.prior
    if case.row_marginal is not None:
        kwargs["row_marginal"] = case.row_marginal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return outcome(label(kwargs, **extra))


def outcome(result: Any) -> dict[str, Any]:
    """What a call returned, as plain tensors and numbers."""
    from otlabel import SinkhornResult

    if not isinstance(result, SinkhornResult):
        return {"labels": torch.as_tensor(result)}
    return {
        "labels": torch.as_tensor(result.labels),
        "n_iter": result.n_iter,
        "converged": result.converged,
        "row_error": result.row_error,
        "col_error": result.col_error,
        "log_domain": result.log_domain,
        "log_col_scaling": torch.as_tensor(result.log_col_scaling),
        "log_row_scaling": torch.as_tensor(result.log_row_scaling),
    }


def _always_defer(self: Any, ok: torch.Tensor, error: Callable[[], Exception]) -> None:
    self.flags.append(ok.reshape(()))
    self.errors.append(error())


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Run every case on this rank; save the outcomes to ``out_dir/rank{rank}.pt``."""
    import torch.distributed as dist

    from otlabel import _checks

    join_world(rank, world, init_file)
    sub = dist.new_group([0, 2]) if world == 3 else None  # every rank must take part in new_group
    results: dict[str, dict[str, Any]] = {}
    original_require = _checks.DeferredChecks.require
    for name, case in cases(world).items():
        group = dist.group.WORLD if case.group == "world" else sub
        _checks.DeferredChecks.require = _always_defer if case.defer_checks else original_require
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                results[name] = outcome(label(local_arguments(case, rank), process_group=group))
            except Exception as error:  # noqa: BLE001 - the test inspects it
                results[name] = {
                    "error": type(error).__name__,
                    "message": str(error),
                    "trace": traceback.format_exc(),
                }
        results[name]["warnings"] = [w.category.__name__ for w in caught]
        results[name]["seconds"] = time.perf_counter() - start
    _checks.DeferredChecks.require = original_require
    leave_world(results, rank, out_dir)


def leave_world(results: Any, rank: int, out_dir: str) -> None:
    """Save this rank's outcomes (atomically), then leave the world: a barrier, so that no rank
    tears the group down while a collective is in flight, then the teardown.

    The outcomes are saved first because gloo's teardown has been seen to abort a rank now and
    then ("terminate called without an active exception", 2 of ~10 full suite runs), after
    every collective had returned: :func:`run_world` then still reads what every rank saved.
    """
    import torch.distributed as dist

    target = Path(out_dir) / f"rank{rank}.pt"
    torch.save(results, str(target) + ".tmp")
    os.replace(str(target) + ".tmp", target)
    dist.barrier()
    dist.destroy_process_group()


def aborting_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """A rank 0 that aborts (as gloo's teardown has) after saving, or before saving when
    ``out_dir`` ends in "early": what :func:`run_world` reads in each case (a test of the harness)."""
    import torch.distributed as dist

    join_world(rank, world, init_file)
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    if rank == 0 and out_dir.endswith("early"):
        os.abort()
    leave_world({"total": total}, rank, out_dir)
    if rank == 0:
        os.abort()


def run_world(
    world: int, out_dir: Path, timeout_s: float = 240.0, target: Callable[..., None] | None = None
) -> list[dict[str, dict[str, Any]]]:
    """Spawn ``world`` ranks running :func:`worker` (or ``target``, a module-level function with its
    signature that saves ``out_dir/rank{rank}.pt``); return each rank's outcomes.

    Fails (instead of hanging) when the ranks do not finish within ``timeout_s``.
    """
    import torch.multiprocessing as mp

    out_dir.mkdir(parents=True, exist_ok=True)
    init_file = out_dir / "rendezvous"
    context = mp.start_processes(
        target or worker, args=(world, str(init_file), str(out_dir)), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout_s
    saved = [out_dir / f"rank{rank}.pt" for rank in range(world)]
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {world} ranks did not finish within {timeout_s:.0f} s (deadlock?)")
    except mp.ProcessExitedException as exited:
        # A rank that dies before saving its outcomes fails the test. One killed by a signal
        # after every rank saved died in the group's teardown (see leave_world), not in
        # otlabel's code: its outcomes are read, and the abort is reported, not hidden.
        if exited.signal_name is None or not all(path.exists() for path in saved):
            raise
        warnings.warn(f"a rank of the {world}-rank world died in teardown after saving: {exited}", stacklevel=2)
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(path, weights_only=False) for path in saved]


if __name__ == "__main__":  # python -m tests.otlabel.distributed_cases [world]: a quick look
    outcomes = run_world(int(sys.argv[1]) if len(sys.argv) > 1 else 2, Path("/tmp/otlabel-distributed"))
    for name in outcomes[0]:
        print(name, [o[name].get("error", "ok") for o in outcomes], [round(o[name]["seconds"], 3) for o in outcomes])
