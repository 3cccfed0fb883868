"""Cases and the rank worker for ``differentiable=True`` with ``process_group`` (gloo ranks).

Every rank labels its rows of one global problem, takes the loss of its own labels and calls
``backward``; the backward's all-reduces make each rank's gradient that of the *sum* of the
ranks' losses, i.e. its slice of one process differentiating the whole loss.
"""

from __future__ import annotations

import traceback
from typing import Any

import torch

from .distributed_cases import join_world, leave_world, offsets

#: rows per rank, uneven and with an empty rank
SPLITS = {2: {"uneven": [7, 12], "empty": [0, 14]}, 3: {"uneven": [5, 9, 3], "empty": [6, 0, 8]}}
#: name -> (keywords of sinkhorn, inputs that carry a gradient)
OPTIONS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "equipartition": ({}, ["scores"]),
    "marginals": ({"col_marginal": "col", "row_marginal": "row"}, ["scores", "col", "row"]),
    "prior": ({"prior": "prior"}, ["scores", "prior"]),
    "col_penalty": ({"col_penalty": 0.4, "col_marginal": "col"}, ["scores", "col"]),
    "mass": ({"mass": 0.7, "col_marginal": "col"}, ["scores", "col"]),  # tolerance mode only
}
MODES = {"fixed": {"n_iter": 5}, "tolerance": {"tol": 1e-12, "max_iter": 100_000}}
K = 4


def applies(option: str, mode: str) -> bool:
    """Partial transport is differentiated in tolerance mode only."""
    return not (option == "mass" and mode == "fixed")


def global_inputs(n_rows: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(n_rows)
    col = torch.rand(K, generator=gen, dtype=torch.float64) + 0.3
    row = torch.rand(n_rows, generator=gen, dtype=torch.float64) + 0.3
    return {
        "scores": torch.randn(n_rows, K, generator=gen, dtype=torch.float64),
        "prior": torch.rand(n_rows, K, generator=gen, dtype=torch.float64) + 0.1,
        "col": col / col.sum(),
        "row": row / row.sum(),
        "weights": torch.randn(n_rows, K, generator=gen, dtype=torch.float64),
    }


def gradients(values: dict[str, torch.Tensor], option: str, mode: str, **extra: Any) -> dict[str, torch.Tensor]:
    """The gradients of (labels * weights).sum() with respect to the option's inputs."""
    from otlabel import sinkhorn

    keywords, wanted = OPTIONS[option]
    leaves = {key: values[key].clone().requires_grad_(True) for key in wanted}
    given = {k: leaves.get(v, values.get(v)) if isinstance(v, str) else v for k, v in keywords.items()}
    labels = sinkhorn(leaves["scores"], 0.5, differentiable=True, **given, **MODES[mode], **extra)
    loss = (labels * values["weights"]).sum()
    found = torch.autograd.grad(loss, [leaves[key] for key in wanted])
    return {"labels": labels.detach(), **dict(zip(wanted, found))}


def _local(values: dict[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    rows = {"scores", "prior", "row", "weights"}
    return {key: value[lo:hi] if key in rows else value for key, value in values.items()}


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    join_world(rank, world, init_file)
    results: dict[str, Any] = {}
    for split_name, splits in SPLITS[world].items():
        lo, hi = offsets(splits)[rank : rank + 2]
        values = _local(global_inputs(sum(splits)), lo, hi)
        for option in OPTIONS:
            for mode in MODES:
                if not applies(option, mode):
                    continue
                name = f"{split_name}/{option}/{mode}"
                try:
                    results[name] = gradients(values, option, mode, process_group=dist.group.WORLD)
                except Exception as error:  # noqa: BLE001 - the test reports it
                    results[name] = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"}
    leave_world(results, rank, out_dir)
