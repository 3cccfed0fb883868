"""``process_group=`` on the fused Triton backend: two real gloo ranks against one process.

The world is spawned once (:func:`tests.otlabel.distributed_cases.run_world` with the Triton
cases' worker) and runs every case; each rank's labels must be its slice of the torch backend labelling the
concatenated rows in one process, to 1e-5. Without a GPU the ranks run the kernels in Triton's
CPU interpreter; with one they share it (gloo all-reduces CUDA tensors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # inherited by the spawned ranks

pytest.importorskip("triton", reason="the triton backend needs triton (pip install 'otlabel[triton]')")

from .distributed_cases import offsets, reference, run_world  # noqa: E402
from .triton_distributed_cases import cases, worker  # noqa: E402


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, Any]]]:
    return run_world(2, Path(tmp_path_factory.mktemp("triton-world")), timeout_s=300.0, target=worker)


def _reference(name: str) -> dict[str, Any]:
    return reference(cases()[name][0], backend="torch")


@pytest.mark.parametrize("name", list(cases()))
def test_each_rank_gets_its_slice_of_one_process_labelling(outcomes: Any, name: str) -> None:
    case, _ = cases()[name]
    expected = _reference(name)
    bounds = offsets(case.splits)
    for rank, ranks in enumerate(outcomes):
        got = ranks[name]
        assert "error" not in got, got.get("trace")
        rows = slice(bounds[rank], bounds[rank + 1])
        torch.testing.assert_close(got["labels"].double(), expected["labels"][..., rows, :].double(), rtol=0, atol=1e-5)
        if "n_iter" in got:
            assert got["n_iter"] == expected["n_iter"] and got["converged"] == expected["converged"]
            assert got["col_error"] == pytest.approx(expected["col_error"], rel=0.1, abs=1e-6)
            assert got["log_domain"] == name.startswith("log-sum-exp")  # agreed on every rank
