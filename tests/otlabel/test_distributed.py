"""``process_group=``: labelling a global batch split over real gloo ranks (world sizes 2 and 3).

Each world is spawned once (:func:`tests.otlabel.distributed_cases.run_world`) and runs every
case back to back; the tests below then compare each rank's outcome with one process labelling
the concatenated rows, or check that every rank raised the expected error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from otlabel import ArgumentTypeError, InvalidArgumentError, sinkhorn

from .distributed_cases import aborting_worker, cases, offsets, reference, run_world

WORLDS = (2, 3)

#: What every rank must say, per error case: (rank, fragment) pairs; rank None means every rank.
ERROR_MESSAGES: dict[str, list[tuple[int | None, str]]] = {
    "mismatch_epsilon": [(None, "disagree on epsilon (0.5 on rank"), (None, "0.25 on rank 1")],
    "mismatch_k": [(None, "K, the number of columns"), (None, "5 on rank")],
    "mismatch_mode": [(None, "tol (1e-06 on rank 0; None on rank")],
    "mismatch_col_marginal": [(None, "col_marginal"), (None, "on rank 1)")],
    "mismatch_dtype": [(None, "the dtype of scores (float64 on rank"), (None, "float32 on rank 1")],
    "mismatch_n_iter": [(None, "n_iter (3 on rank"), (None, "4 on rank")],
    "nan_on_one_rank": [(1, "scores contains NaN"), (0, "rank 1 rejected its arguments")],
    "nan_on_one_rank_deferred": [(1, "scores contains NaN"), (0, "rank 1 rejected its arguments")],
    "bad_shape_on_one_rank": [(0, "prior must have the shape of scores"), (1, "rank 0 rejected")],
    "row_marginal_not_summing_to_1": [(None, "row_marginal must sum to 1 over all ranks")],
    "no_rows_anywhere": [(None, "no rows on any rank")],
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Per world size: every rank's outcomes, computed on first use (one spawn per world)."""
    cache: dict[int, list[dict[str, dict[str, Any]]]] = {}

    def get(world: int) -> list[dict[str, dict[str, Any]]]:
        if world not in cache:
            cache[world] = run_world(world, Path(tmp_path_factory.mktemp(f"world{world}")))
        return cache[world]

    return get


def _label_cases() -> list[tuple[int, str]]:
    return [(w, name) for w in WORLDS for name, case in cases(w).items() if case.expect == "labels"]


def _error_cases() -> list[tuple[int, str]]:
    return [(w, name) for w in WORLDS for name, case in cases(w).items() if case.expect != "labels"]


@pytest.mark.parametrize(("world", "name"), _label_cases())
def test_each_rank_gets_its_slice_of_one_process_labelling(outcomes: Any, world: int, name: str) -> None:
    case = cases(world)[name]
    ranks = outcomes(world)
    members = [0, 2] if case.group == "sub" else list(range(world))
    expected = reference(case)
    float64 = case.scores.dtype == torch.float64
    atol = 1e-9 if float64 else 2e-5  # float32 cases run 50 log-domain iterations
    bounds = offsets(case.splits)
    for rank in members:
        got = ranks[rank][name]
        assert "error" not in got, f"rank {rank}: {got.get('trace')}"
        lo, hi = bounds[rank : rank + 2]
        want = expected["labels"][..., lo:hi, :]
        assert got["labels"].shape == want.shape and got["labels"].dtype == want.dtype
        torch.testing.assert_close(got["labels"], want, rtol=0, atol=atol, msg=f"rank {rank}")
        # Anderson's least squares see the all-reduced sums' rounding: it may stop a check earlier
        accelerated = case.options.get("acceleration") is not None
        for key in ("converged", "log_domain") if accelerated else ("n_iter", "converged", "log_domain"):
            assert got.get(key) == expected.get(key), f"rank {rank}: {key}"
        if accelerated:
            assert got["n_iter"] == ranks[members[0]][name]["n_iter"], f"rank {rank}: n_iter differs between ranks"
        if "col_error" in expected:
            # every rank reports the global diagnostics, equal across ranks
            assert got["col_error"] == ranks[members[0]][name]["col_error"]
            assert got["row_error"] == ranks[members[0]][name]["row_error"]
            if accelerated:  # stopped at another check, below tol all the same
                assert got["col_error"] <= case.options["tol"]
            else:
                within = pytest.approx(expected["col_error"], rel=1e-3, abs=1e-12 if float64 else 1e-6)
                assert got["col_error"] == within
            assert got["row_error"] <= (1e-12 if float64 else 1e-5)
            torch.testing.assert_close(
                got["log_col_scaling"], ranks[members[0]][name]["log_col_scaling"], rtol=0, atol=0
            )
            if float64 and not accelerated:  # accelerated potentials may differ by a constant
                torch.testing.assert_close(got["log_col_scaling"], expected["log_col_scaling"], rtol=1e-9, atol=1e-9)
                want_f = expected["log_row_scaling"][..., lo:hi]
                torch.testing.assert_close(got["log_row_scaling"], want_f, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("world", WORLDS)
def test_a_rank_with_no_rows_takes_part(outcomes: Any, world: int) -> None:
    empty = cases(world)["empty_rank_tol_prior"].splits.index(0)
    got = outcomes(world)[empty]["empty_rank_tol_prior"]
    assert got["labels"].shape == (0, 4)
    assert got["converged"] is True and got["n_iter"] > 0


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("name", ["warns_on_every_rank", "log_domain_tol"])
def test_convergence_warning_on_every_rank(outcomes: Any, world: int, name: str) -> None:
    for rank, got in enumerate(outcomes(world)):
        assert got[name]["warnings"] == ["ConvergenceWarning"], f"rank {rank}"


@pytest.mark.parametrize("world", WORLDS)
def test_log_domain_switch_is_agreed(outcomes: Any, world: int) -> None:
    for name in ("log_domain_tol", "log_domain_fixed"):
        assert [r[name]["log_domain"] for r in outcomes(world)] == [True] * world


@pytest.mark.parametrize(("world", "name"), _error_cases())
def test_every_rank_raises(outcomes: Any, world: int, name: str) -> None:
    case = cases(world)[name]
    ranks = outcomes(world)
    for rank, got in enumerate(ranks):
        assert got[name].get("error") == case.expect, f"rank {rank}: {got[name]}"
    for who, fragment in ERROR_MESSAGES[name]:
        for rank in range(world) if who is None else [who]:
            assert fragment in ranks[rank][name]["message"], f"rank {rank}: {ranks[rank][name]['message']}"
    if name.startswith("mismatch"):  # the same message everywhere, naming only what differs
        assert len({r[name]["message"] for r in ranks}) == 1
        message = ranks[0][name]["message"]
        assert ("col_marginal" in message) == (name == "mismatch_col_marginal")
        assert ("n_iter" in message) == (name == "mismatch_n_iter")


def test_only_members_of_a_subgroup_take_part(outcomes: Any) -> None:
    got = outcomes(3)[1]["subgroup"]
    assert got["error"] == "InvalidArgumentError" and "not a member" in got["message"]


def test_process_group_needs_an_initialised_group() -> None:
    scores = torch.randn(5, 3)
    with pytest.raises(InvalidArgumentError, match="init_process_group"):
        sinkhorn(scores, process_group=dist.group.WORLD or object())


def test_single_rank_group(tmp_path: Path) -> None:
    """A world of one rank in this very process: same labels as no group; the type is checked."""
    if dist.is_initialized():  # pragma: no cover - another test left a group behind
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        scores = np.random.default_rng(0).standard_normal((9, 3))
        expected = sinkhorn(scores, 0.5, tol=1e-10)
        np.testing.assert_allclose(
            sinkhorn(scores, 0.5, tol=1e-10, process_group=dist.group.WORLD), expected, atol=1e-12
        )
        with pytest.raises(ArgumentTypeError, match="process_group must be a torch.distributed.ProcessGroup"):
            sinkhorn(scores, 0.5, process_group=True)
    finally:
        dist.destroy_process_group()


def test_torchrun_example_runs_on_the_cpu() -> None:
    """examples/distributed_labelling.py under torchrun (2 gloo ranks) passes its own checks."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "examples/distributed_labelling.py",
        "--rows",
        "24",
    ]
    # a session of its own, so that a hang can be ended with every rank torchrun started
    process = subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the torchrun example did not finish within 180 s")
    assert process.returncode == 0, output
    assert "| 0 | 24 | " in output and "| 1 | 40 | " in output and "\nOK" in output


def test_a_rank_that_dies_in_teardown_after_saving_is_reported_one_that_dies_before_fails(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="died in teardown after saving"):
        ranks = run_world(2, tmp_path / "late", timeout_s=120, target=aborting_worker)
    assert [float(rank["total"]) for rank in ranks] == [3.0, 3.0]
    with pytest.raises(torch.multiprocessing.ProcessExitedException, match="SIGABRT"):
        run_world(2, tmp_path / "early", timeout_s=120, target=aborting_worker)
