"""Cases and the rank worker for :func:`~otlabel.sinkhorn_features` with ``process_group`` (gloo):
features sharded by rows over the ranks (uneven, one rank empty), prototypes replicated."""

from __future__ import annotations

import traceback
from typing import Any

import torch

from .distributed_cases import join_world, leave_world, offsets

#: rows per rank, uneven and with an empty rank
SPLITS = {2: {"uneven": [70, 123], "empty": [0, 140]}, 3: {"uneven": [50, 91, 33], "empty": [61, 0, 80]}}
K, D = 5, 8
#: name -> keywords of sinkhorn_features ("row": the global row marginal's slice)
CASES: dict[str, dict[str, Any]] = {
    "fixed/hard": {"n_iter": 4, "output": "hard"},
    "fixed/plan/normalize": {"n_iter": 3, "normalize": True, "scale": 3.0},
    "tolerance/marginals": {"tol": 1e-10, "col_marginal": "col", "row_marginal": "row", "output": "topk", "top_k": 2},
    "tolerance/mass": {"tol": 1e-10, "mass": 0.6},
    "tolerance/col_penalty/info": {"tol": 1e-10, "col_penalty": 0.4, "return_info": True},
}


def global_inputs(n_rows: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(n_rows)
    col = torch.rand(K, generator=gen, dtype=torch.float64) + 0.3
    row = torch.rand(n_rows, generator=gen, dtype=torch.float64) + 0.3
    return {
        "features": torch.randn(n_rows, D, generator=gen, dtype=torch.float64),
        "prototypes": torch.randn(K, D, generator=gen, dtype=torch.float64),
        "col": col / col.sum(),
        "row": row / row.sum(),
    }


def label(values: dict[str, torch.Tensor], case: str, **extra: Any) -> dict[str, torch.Tensor]:
    """The case's answer as a flat dict of tensors (row-shaped ones under names starting "rows.")."""
    from otlabel import SinkhornResult, sinkhorn_features

    keywords = {k: values[v] if isinstance(v, str) and v in values else v for k, v in CASES[case].items()}
    keywords.update(extra)
    extra = {}
    result = sinkhorn_features(values["features"], values["prototypes"], 0.5, chunk_rows=16, **keywords, **extra)
    out: dict[str, torch.Tensor] = {}
    if isinstance(result, SinkhornResult):
        out["col_error"] = torch.tensor(result.col_error)
        out["rows.log_row_scaling"] = result.log_row_scaling
        out["log_col_scaling"] = result.log_col_scaling
        result = result.labels
    if isinstance(result, tuple):
        for name, value in result._asdict().items():
            out[f"rows.{name}"] = value
    else:
        out["rows.labels"] = result
    return out


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    join_world(rank, world, init_file)
    results: dict[str, Any] = {}
    for split_name, splits in SPLITS[world].items():
        lo, hi = offsets(splits)[rank : rank + 2]
        values = global_inputs(sum(splits))
        values["features"], values["row"] = values["features"][lo:hi], values["row"][lo:hi]
        for case in CASES:
            name = f"{split_name}/{case}"
            try:
                results[name] = label(values, case, process_group=dist.group.WORLD)
            except Exception as error:  # noqa: BLE001 - the test reports it
                results[name] = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"}
    # prototypes that differ on one rank are refused on every rank
    values = global_inputs(20)
    if rank == world - 1:
        values["prototypes"] = values["prototypes"] + 1e-9
    try:
        label(values, "fixed/hard", process_group=dist.group.WORLD)
        results["different_prototypes"] = {"error": "none raised"}
    except Exception as error:  # noqa: BLE001 - the test checks the message
        results["different_prototypes"] = {"raised": f"{type(error).__name__}: {error}"}
    try:  # exact column counts need every row in one process
        label(global_inputs(20), "fixed/hard", process_group=dist.group.WORLD, output="quotas")
        results["quotas"] = {"error": "none raised"}
    except Exception as error:  # noqa: BLE001 - the test checks the message
        results["quotas"] = {"raised": f"{type(error).__name__}: {error}"}
    leave_world(results, rank, out_dir)
