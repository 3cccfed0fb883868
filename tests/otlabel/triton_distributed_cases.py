"""``process_group=`` on the Triton backend: the cases, and the worker every rank of a gloo world runs.

Each case is one *global* float32 problem split over the ranks (:class:`~tests.otlabel.distributed_cases.Case`);
every rank labels its rows with ``backend="triton"`` and the column partials are all-reduced between
passes. Without a GPU the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` is set
before the workers start); with one, both ranks share it and gloo all-reduces the CUDA tensors.
``layout`` forces the backend's rows or tiled layout on these small problems.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from .distributed_cases import Case, join_world, label, local_arguments, outcome

#: Launch constants per forced layout (module attributes of otlabel.backends.triton_backend).
LAYOUTS: dict[str, dict[str, int]] = {
    "rows": {"TILE_SINGLE": 64, "TILE_MULTI": 64, "TILE_INTERPRETED": 64},
    "tiled": {
        "TILED_K": 2,
        "TILED_BLOCK_K": 4,
        "TILED_BLOCK_K_INTERPRETED": 4,
        "TILE_MULTI": 64,
        "TILE_INTERPRETED": 64,
        "MIN_ROWS_PER_PROGRAM": 16,
    },
}


def _scores(seed: int, *shape: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float32)


def cases() -> dict[str, tuple[Case, str]]:
    """name -> (case, layout) for a world of 2 ranks."""
    uneven, empty = [23, 41], [0, 50]
    n = sum(uneven)
    generator = torch.Generator().manual_seed(5)
    prior = torch.rand(n, 6, generator=generator) + 0.05
    prior[torch.rand(n, 6, generator=generator) < 0.3] = 0.0
    prior[torch.arange(n), torch.arange(n) % 6] = 1.0  # every row and column keeps support
    row = torch.rand(n, generator=generator) + 0.1
    row[:3] = 0.0
    row = row / row.sum()
    col = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.15, 0.1])
    tiny = torch.tensor([1e-36, 0.25, 0.25, 0.25, 0.25])
    out: dict[str, tuple[Case, str]] = {}
    for layout in ("rows", "tiled"):
        out |= {
            f"fixed/{layout}": (Case(_scores(1, n, 6), uneven, {"epsilon": 0.2, "return_info": True}), layout),
            f"tolerance/{layout}": (
                Case(_scores(2, n, 6), uneven, {"epsilon": 0.5, "tol": 1e-5, "return_info": True}),
                layout,
            ),
            # (the interpreter pays per pass: tolerance mode with a prior on one layout only)
            f"prior, marginals, {'tolerance' if layout == 'rows' else 'fixed'}/{layout}": (
                Case(
                    _scores(3, n, 6),
                    uneven,
                    {"epsilon": 0.5, "col_marginal": col, "return_info": True}
                    | ({"tol": 1e-5} if layout == "rows" else {"n_iter": 5}),
                    prior=prior,
                    row_marginal=row,
                ),
                layout,
            ),
            # (without return_info: a float32 call with return_info over a group with an empty rank
            # fails in the front end: its rows error is all-reduced as float32 there, float64 elsewhere)
            f"empty rank, {'tolerance' if layout == 'rows' else 'fixed'}/{layout}": (
                Case(_scores(4, 50, 6), empty, {"epsilon": 0.5} | ({"tol": 1e-5} if layout == "rows" else {})),
                layout,
            ),
            f"log-sum-exp rerun/{layout}": (
                Case(_scores(6, n, 5), uneven, {"epsilon": 0.2, "col_marginal": tiny, "return_info": True}),
                layout,
            ),
            f"device checks/{layout}": (
                Case(_scores(7, n, 6), uneven, {"epsilon": 0.2, "n_iter": 4, "validate": "device"}),
                layout,
            ),
        }
    out["batched tolerance/rows"] = (
        Case(
            _scores(8, 2, n, 4),
            uneven,
            {"epsilon": 0.5, "tol": 1e-5, "col_marginal": torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25] * 4])},
        ),
        "rows",
    )
    return out


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Run every case on this rank with the Triton backend; save the outcomes to ``out_dir/rank{rank}.pt``."""
    import torch.distributed as dist

    from otlabel.backends import triton_backend

    join_world(rank, world, init_file)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    defaults = {name: getattr(triton_backend, name) for layout in LAYOUTS.values() for name in layout}
    results: dict[str, dict[str, Any]] = {}
    for name, (case, layout) in cases().items():
        for key, value in {**defaults, **LAYOUTS[layout]}.items():
            setattr(triton_backend, key, value)
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in local_arguments(case, rank).items()}
        start = time.perf_counter()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            try:
                got = outcome(label(kwargs, backend="triton", process_group=dist.group.WORLD))
                results[name] = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in got.items()}
            except Exception as error:  # noqa: BLE001 - the test shows it
                results[name] = {"error": type(error).__name__, "trace": traceback.format_exc()}
        results[name]["seconds"] = time.perf_counter() - start
    dist.destroy_process_group()
    target = Path(out_dir) / f"rank{rank}.pt"
    torch.save(results, str(target) + ".tmp")
    os.replace(str(target) + ".tmp", target)
