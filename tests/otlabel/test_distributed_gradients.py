"""``differentiable=True`` with ``process_group=``: on real gloo worlds of 2 and 3 ranks (uneven,
and with an empty rank), each rank's gradient is its slice of one process differentiating the
sum of the ranks' losses; a gradient of the shared column marginal is the whole one on every rank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from .distributed_cases import offsets, run_world
from .distributed_gradients import MODES, OPTIONS, SPLITS, applies, global_inputs, gradients, worker

ROW_SHAPED = {"scores", "prior", "row", "labels"}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache: dict[int, list[dict[str, Any]]] = {}

    def get(world: int) -> list[dict[str, Any]]:
        if world not in cache:
            cache[world] = run_world(world, Path(tmp_path_factory.mktemp(f"grad{world}")), target=worker)
        return cache[world]

    return get


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("split", ["uneven", "empty"])
@pytest.mark.parametrize(
    ("option", "mode"), [(option, mode) for option in OPTIONS for mode in MODES if applies(option, mode)]
)
def test_each_rank_gets_its_slice_of_one_process_gradient(
    outcomes: Any, world: int, split: str, option: str, mode: str
) -> None:
    splits = SPLITS[world][split]
    expected = gradients(global_inputs(sum(splits)), option, mode)
    bounds = offsets(splits)
    for rank, outcome in enumerate(outcomes(world)):
        got = outcome[f"{split}/{option}/{mode}"]
        assert "error" not in got, f"rank {rank}: {got['error']}"
        lo, hi = bounds[rank : rank + 2]
        for key, value in expected.items():
            want = value[lo:hi] if key in ROW_SHAPED else value
            assert got[key].shape == want.shape, (rank, key)
            torch.testing.assert_close(got[key], want, rtol=0, atol=1e-9, msg=f"rank {rank}, {key}")
