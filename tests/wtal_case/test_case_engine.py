"""The training engine on real runs of train.py (smoke.yaml): run folder, resume after a kill, DDP.

Every run here is a real ``train.py`` process on the tiny synthetic smoke set. The resume test
kills a run with SIGKILL right after its first periodic checkpoint, resumes it, and requires
the same final weights, log and metrics as the uninterrupted run; the DDP test trains with
``torchrun`` on 2 CPU processes (gloo) and requires the single-process result on the same
global batches.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from case.batching import BatchOrder
from case.checkpoint import load_checkpoint
from case.config import CONFIG_DIR, load_config

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "wtal_case" / "train.py"
SMOKE = CONFIG_DIR / "smoke.yaml"
STEPS = 60  # smoke.yaml


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(SMOKE),
        "--set",
        f"data.root={data}",
        "--set",
        "train.progress=false",
        "--out",
        str(out),
        *extra,
    ]


def _train(data: Path, out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(TRAIN), *_args(data, out, *extra)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=out.parent,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data") / "synthetic-smoke"


@pytest.fixture(scope="module")
def reference_run(smoke_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted smoke run (it also generates the smoke data set)."""
    run = tmp_path_factory.mktemp("runs") / "reference"
    _train(smoke_data, run)
    return run


def test_smoke_run_folder_is_complete_and_the_losses_fall(reference_run: Path) -> None:
    run = reference_run
    # config.yaml is the resolved configuration and reloads to the same thing
    cfg = load_config(run / "config.yaml")
    assert cfg == load_config(SMOKE, [f"data.root={cfg.data.root}", "train.progress=false"])
    # log.jsonl: one record per step, losses and OT diagnostics all finite
    log = _log(run)
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    keys = (
        "loss",
        "video",
        "attention",
        "scc",
        "ccc",
        "H_QS",
        "H_QC",
        "H_PS_usage",
        "scc_row_error",
        "scc_col_error",
        "ccc_col_error",
        "beta_fg",
    )
    for record in log:
        for key in keys:
            assert math.isfinite(record[key]), (record["step"], key, record[key])
        assert len(record["QC_fg"]) == cfg.model.num_clusters and all(0 <= v <= 1 for v in record["QC_fg"])
        assert 0 <= record["H_QS"] <= math.log(cfg.model.num_clusters) + 1e-6
    first = sum(r["loss"] for r in log[:10]) / 10
    last = sum(r["loss"] for r in log[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    assert sum(r["video"] for r in log[-10:]) < sum(r["video"] for r in log[:10])
    # checkpoints: periodic (every 10 steps, before the last) and final, with what a resume needs
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["final.pt"] + [f"step_{s:06d}.pt" for s in range(10, STEPS, 10)]
    final = load_checkpoint(run / "checkpoints" / "final.pt")
    assert final["step"] == STEPS and final["data_order"]["step"] == STEPS
    assert {"model", "optimizer", "cluster_fg", "rng", "config"} <= set(final)
    assert final["cluster_fg"].tolist() == pytest.approx(log[-1]["QC_fg"], abs=1e-6)
    # predictions (ActivityNet results format) and metrics (fractions)
    predictions = json.loads((run / "predictions.json").read_text())
    assert set(predictions) == {"results"} and predictions["results"]
    for dets in predictions["results"].values():
        for d in dets:
            assert set(d) == {"label", "score", "segment"} and d["segment"][0] <= d["segment"][1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tiou"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert len(metrics["mAP"]) == 7 and all(0 <= m <= 1 for m in metrics["mAP"])
    assert metrics["average"] == pytest.approx(sum(metrics["mAP"]) / 7)
    # plots: a Fig. 5-style foreground figure of a test video and the Fig. 4-style entropy curves
    assert (run / "entropy.png").stat().st_size > 0
    assert len(list(run.glob("foreground_*.png"))) == cfg.eval.plot_videos
    # no temporary files left behind by the atomic writes, and every file readable as a plain write
    # leaves it (atomic writes used to make config, checkpoints, predictions, metrics, plots 0600)
    assert not [p for p in run.rglob("*.tmp")]
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.relative_to(run).as_posix(): oct(p.stat().st_mode & 0o777) for p in run.rglob("*") if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(
    reference_run: Path, smoke_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), *_args(smoke_data, run)],
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first = run / "checkpoints" / "step_000010.pt"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    # it really was interrupted: mid-training, no final checkpoint, no metrics
    assert first.exists() and not (run / "checkpoints" / "final.pt").exists() and not (run / "metrics.json").exists()
    killed_at = max(r["step"] for r in _log(run))
    assert 10 <= killed_at < STEPS

    refused = _train(smoke_data, run, check=False)  # an existing run needs --resume
    assert refused.returncode == 2 and "--resume" in refused.stderr
    different = _train(smoke_data, run, "--resume", "--seed", "1", check=False)
    assert different.returncode == 2 and "configuration differs" in different.stderr

    _train(smoke_data, run, "--resume")
    assert json.loads((run / "metrics.json").read_text()) == json.loads((reference_run / "metrics.json").read_text())
    assert (run / "predictions.json").read_text() == (reference_run / "predictions.json").read_text()
    resumed = load_checkpoint(run / "checkpoints" / "final.pt")
    reference = load_checkpoint(reference_run / "checkpoints" / "final.pt")
    for name, tensor in reference["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert torch.equal(resumed["cluster_fg"], reference["cluster_fg"])
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
    assert strip(_log(run)) == strip(_log(reference_run))
    # the log rewritten on resume (and every other file) keeps the mode a plain write gives
    umask = os.umask(0o022)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in run.rglob("*") if p.is_file()} == {oct(0o666 & ~umask)}


def test_resuming_a_finished_run_only_re_evaluates(reference_run: Path, smoke_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(reference_run, run)
    (run / "metrics.json").unlink()
    _train(smoke_data, run, "--resume")
    assert json.loads((run / "metrics.json").read_text()) == json.loads((reference_run / "metrics.json").read_text())
    assert len(_log(run)) == STEPS


def test_ddp_on_two_gloo_processes_matches_one_process(reference_run: Path, smoke_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(TRAIN),
            *_args(smoke_data, run),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ddp, single = _log(run), _log(reference_run)
    assert len(ddp) == len(single) == STEPS
    for a, b in zip(ddp, single, strict=True):
        # global-batch labelling + prototypes summed over ranks + DDP's gradient mean == one process
        for key in ("loss", "video", "attention", "scc", "ccc", "H_QS", "beta_fg"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)
    ddp_final = load_checkpoint(run / "checkpoints" / "final.pt")["model"]
    single_final = load_checkpoint(reference_run / "checkpoints" / "final.pt")["model"]
    for name, tensor in single_final.items():
        assert torch.allclose(ddp_final[name], tensor, rtol=1e-4, atol=1e-5), name
    ddp_metrics = json.loads((run / "metrics.json").read_text())
    assert ddp_metrics["mAP"] == pytest.approx(
        json.loads((reference_run / "metrics.json").read_text())["mAP"], abs=0.01
    )


def test_batch_order_is_a_pure_function_of_seed_and_step() -> None:
    a, b = BatchOrder(10, 4, seed=3), BatchOrder(10, 4, seed=3)
    assert [a.global_indices(s) for s in range(7)] == [b.global_indices(s) for s in reversed(range(7))][::-1]
    epoch0 = a.global_indices(0) + a.global_indices(1)
    assert len(set(epoch0)) == 8  # no video twice within an epoch
    assert a.global_indices(0) != a.global_indices(2)  # a new permutation each epoch
    ranks = [BatchOrder(10, 4, seed=3, rank=r, world=2).indices(5) for r in range(2)]
    assert ranks[0] + ranks[1] == a.global_indices(5)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        BatchOrder(10, 3, seed=0, world=2)
    with pytest.raises(ValueError, match="exceeds the 3 training videos"):
        BatchOrder(3, 4, seed=0)


def test_heldout_selection_uses_training_videos_only(reference_run: Path, smoke_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "heldout"
    extra = ["--set", "train.select=heldout", "--set", "train.heldout_fraction=0.25", "--set", "train.eval_every=20"]
    result = _train(smoke_data, run, *extra, "--set", "train.num_workers=1")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best"]["step"] in (20, 40, 60) and best["step"] == best["best"]["step"]
    assert f"best held-out step {best['best']['step']}" in result.stdout
    # 12 training videos, 3 held out: batches of 4 come from the other 9 (2 batches an epoch)
    assert max(r["epoch"] for r in _log(run)) == (STEPS - 1) // 2
    assert (run / "metrics.json").exists()


def test_background_loading_gives_the_same_batches(smoke_data: Path, reference_run: Path) -> None:
    from case.batching import iterate_batches
    from case.data import build_dataset

    cfg = load_config(reference_run / "config.yaml")
    dataset = build_dataset(cfg.data, "train", "random", seed=0)
    order = BatchOrder(len(dataset), 4, seed=0)
    inline = list(iterate_batches(dataset, order, 3, 6, num_workers=0))
    background = list(iterate_batches(dataset, order, 3, 6, num_workers=1))
    assert len(inline) == len(background) == 3
    for a, b in zip(inline, background, strict=True):
        assert (
            a["video"] == b["video"]
            and torch.equal(a["features"], b["features"])
            and torch.equal(a["index"], b["index"])
        )
    assert inline[0]["video"] != inline[1]["video"]


def test_a_checkpoint_alone_reproduces_the_run_s_predictions(reference_run: Path) -> None:
    from case.data import build_dataset
    from case.inference import detect_dataset, load_for_inference, predict_dataset

    trained = load_for_inference(reference_run / "checkpoints" / "final.pt")
    cfg = trained.config
    dataset = build_dataset(cfg.data, cfg.eval.split, cfg.eval.sampling, seed=cfg.train.seed)
    outputs = predict_dataset(trained, dataset, cfg, torch.device("cpu"))
    predictions = detect_dataset(outputs, dataset.class_names, cfg)
    assert json.loads(json.dumps(predictions)) == json.loads((reference_run / "predictions.json").read_text())


def test_all_snippets_foreground_does_not_crash_the_labelling(smoke_data: Path, tmp_path: Path) -> None:
    """``loss.topk_divisor=1`` makes every snippet foreground: Q^C[:, fg] is 1 for every cluster and
    rounds to 1.0000001, which the rank prior refuses; the run crashed at step 10 (and at the same
    step again on --resume, runs being deterministic)."""
    run = tmp_path / "all-foreground"
    _train(smoke_data, run, "--set", "loss.topk_divisor=1", "--set", "train.steps=12", "--set", "eval.plot_videos=0")
    assert [r["step"] for r in _log(run)] == list(range(1, 13))
    assert all(0 <= v <= 1 for r in _log(run) for v in r["QC_fg"])


def test_a_bfloat16_run_resumes_bit_for_bit_and_keeps_its_precision(
    reference_run: Path, smoke_data: Path, tmp_path: Path
) -> None:
    """train.precision=bfloat16 (with the fused Adam step): a resume from a periodic checkpoint ends
    on the same weights, log and metrics; resuming it in float32 is refused, naming the key."""
    speed = ("--set", "train.precision=bfloat16", "--set", "optim.fused=true")
    run = tmp_path / "bf16"
    _train(smoke_data, run, *speed)
    log = _log(run)
    assert all(math.isfinite(r["loss"]) for r in log) and len(log) == STEPS
    exact = _log(reference_run)  # float32: another arithmetic, the same training at first
    assert log[0]["loss"] != exact[0]["loss"] and abs(log[0]["loss"] - exact[0]["loss"]) < 1e-2 * exact[0]["loss"]

    # the run as a kill after step 30 leaves it: later checkpoints, log records and results gone
    cut = tmp_path / "bf16-cut"
    shutil.copytree(run, cut)
    for path in (cut / "checkpoints").iterdir():
        if path.name in ("final.pt", "step_000040.pt", "step_000050.pt"):
            path.unlink()
    for name in ("metrics.json", "predictions.json"):
        (cut / name).unlink()
    refused = _train(smoke_data, cut, "--resume", "--set", "optim.fused=true", check=False)
    assert refused.returncode == 2 and "train.precision: 'bfloat16' -> 'float32'" in refused.stderr
    assert not (cut / "checkpoints" / "final.pt").exists()

    _train(smoke_data, cut, "--resume", *speed)
    assert json.loads((cut / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())
    resumed = load_checkpoint(cut / "checkpoints" / "final.pt")
    whole = load_checkpoint(run / "checkpoints" / "final.pt")
    for name, tensor in whole["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert torch.equal(resumed["cluster_fg"], whole["cluster_fg"])
    strip = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert strip(_log(cut)) == strip(log)
