"""``train.py`` refuses what cannot work before the first step, and never loses a run after it.

Every mistake below used to surface only after training (a traceback once the run was over),
inside a step (otlabel's message about NaN scores), or as a traceback that left a run folder
blocking the corrected rerun. Now each one is a single line on stderr with exit status 2, it
names the setting or the file, and no run folder is left behind, so rerunning the corrected
command just works. The runs are real ``train.py`` processes on a three-video CASE/BaSNet set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_checks import list_in_both_splits  # tests/wtal_case is on sys.path
from test_data_readers import VIDEOS, make_basnet

from case.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "wtal_case" / "train.py"
STEPS = 6


def _command(data: Path, out: Path, *extra: str) -> list[str]:
    tiny = [
        f"data.root={data}", "data.source=basnet", "data.num_segments=4", "train.batch_size=2",
        f"train.steps={STEPS}", "train.checkpoint_every=2", "train.progress=false", "eval.plot_videos=0",
    ]  # fmt: skip
    sets = [arg for item in tiny for arg in ("--set", item)]
    return [sys.executable, str(TRAIN), "--config", str(CONFIG_DIR / "smoke.yaml"), *sets, "--out", str(out), *extra]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(data, out, *extra), capture_output=True, text=True, env=_env(), cwd=out.parent)


def _refused(result: subprocess.CompletedProcess, out: Path, *words: str) -> None:
    """Exit status 2, one error line naming ``words``, no traceback, no run folder."""
    errors = [line for line in result.stderr.splitlines() if not line.startswith("train.py: warning:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("train.py: error: "), result.stderr
    assert all(word in errors[0] for word in words), (words, errors[0])
    assert not out.exists(), f"{out} was left behind"


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return make_basnet(tmp_path / "data")


def _poke(path: Path, value: float) -> None:
    features = np.load(path)
    features[2, 5] = value
    np.save(path, features)


# --------------------------------------------------------------------------- refused before the first step


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--set", "eval.split=validation"], ["eval.split must be one of 'test', 'train'"]),
        (["--set", "eval.ambiguous=/nonexistent/Ambiguous_test.txt"], ["eval.ambiguous", "/nonexistent"]),
        (["--set", "eval.ambiguous=/"], ["ambiguous-segment file / cannot be read: Is a directory"]),
        (["--set", "train.batch_size=8"], ["train.batch_size (8) exceeds the 2 training videos"]),
        (["--seed", "-1"], ["train.seed must be an integer in [0, 2**32 - 1], got -1"]),
        (["--seed", str(2**70)], ["train.seed must be an integer in [0, 2**32 - 1]"]),
        (["--set", "postprocess.nms_iou=2"], ["postprocess.nms_iou must lie in [0, 1], got 2.0"]),
        (["--set", "model.num_classes=5"], ["model.num_classes is 5 but the data set has 3 classes"]),
        (["--device", f"cuda:{torch.cuda.device_count()}"], ["train.device", "cuda"]),  # a GPU this machine lacks
        # sizes a typo makes absurd: the allocator refused them after the run folder existed
        (["--set", f"model.hidden_dim={2**40}"], [f"the model (model.hidden_dim={2**40}", "does not fit", "GiB"]),
        (["--set", f"data.num_segments={2**40}"], [f"data.num_segments={2**40} snippets does not fit", "TiB"]),
        # issue 21: a traceback in Adam's step once the run folder existed; 1e20, otlabel's "fg_scores contains NaN"
        (["--set", "optim.lr=1e38"], ["optim.lr must lie in (0, 10]", "got 1e+38"]),
        (["--set", "optim.lr=1e20"], ["optim.lr must lie in (0, 10]", "got 1e+20"]),
        # issue 21: "train.batch_size (2) exceeds the 0 training videos" did not say why there were none
        (
            ["--set", "train.select=heldout", "--set", "train.heldout_fraction=0.99"],
            ["train.heldout_fraction=0.99 holds out 2 of the 2 training videos, leaving 0", "batch_size (2)"],
        ),
    ],
    ids=[
        "split",
        "ambiguous",
        "ambiguous-folder",
        "batch",
        "seed-1",
        "seed2**70",
        "nms_iou",
        "classes",
        "device",
        "hidden",
        "T",
        "lr1e38",
        "lr1e20",
        "heldout-fraction",
    ],
)
def test_bad_settings_are_refused_at_once(data: Path, tmp_path: Path, extra: list[str], words: list[str]) -> None:
    out = tmp_path / "run"
    _refused(_train(data, out, *extra), out, *words)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda root: _poke(root / "features/test/flow/v_test_a.npy", np.nan), ["test/flow/v_test_a.npy", "NaN"]),
        (lambda root: _poke(root / "features/train/rgb/v_train_b.npy", np.inf), ["rgb/v_train_b.npy", "infinity"]),
        (lambda root: _poke(root / "features/train/rgb/v_train_a.npy", 1e30), ["v_train_a.npy", "1e+30"]),
        (lambda root: (root / "split_test.txt").write_text(""), ["split_test.txt is empty"]),
        (lambda root: (root / "gt.json").unlink(), ["gt.json not found"]),
        (lambda root: (root / "split_train.txt").write_text("v_train_a\nv_train_b\nv_train_a\n"), ["listed twice"]),
        # issue 21: NumPy's advice to set allow_pickle=True, and "not found" for a directory
        (lambda root: (root / "features/train/flow/v_train_b.npy").write_bytes(np.random.default_rng(0).bytes(4096)),
         ["feature file", "flow/v_train_b.npy is not a valid .npy array"]),
        (lambda root: _swap_for_directory(root / "features/test/rgb/v_test_a.npy"),
         ["feature file", "rgb/v_test_a.npy is a directory, not a file"]),
        (lambda root: _swap_for_directory(root / "split_train.txt"), ["split_train.txt is a directory, not a file"]),
        # a test video in the training list too (its features copied): trained on and scored
        (list_in_both_splits, ["video 'v_test_a' is listed in both", "split_train.txt and", "split_test.txt"]),
    ],
    ids=[
        "nan-test-features", "inf-train-features", "1e30-features", "empty-test-split", "no-gt", "repeated-video",
        "random-bytes-npy", "npy-directory", "split-directory", "video-in-both-splits",
    ],
)  # fmt: skip
def test_bad_data_is_refused_at_once_naming_the_file(data: Path, tmp_path: Path, damage, words: list[str]) -> None:
    damage(data)
    out = tmp_path / "run"
    _refused(_train(data, out), out, *words)


def _swap_for_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def test_a_training_split_without_annotations_is_refused(data: Path, tmp_path: Path) -> None:
    gt = json.loads((data / "gt.json").read_text())
    for entry in gt["database"].values():
        if entry["subset"] == "train":
            entry["annotations"] = []
    (data / "gt.json").write_text(json.dumps(gt))
    out = tmp_path / "run"
    _refused(_train(data, out), out, "none of the 2 training videos has an annotation")


def test_a_config_that_is_not_utf8_and_an_out_that_is_a_file(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes("# réglages\ntrain:\n  steps: 3\n".encode("latin-1"))
    out = tmp_path / "run"
    command = _command(data, out)
    command[command.index("--config") + 1] = str(config)
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd=tmp_path)
    _refused(result, out, "latin1.yaml: not UTF-8 text")
    out.write_text("a file, not a folder")
    result = _train(data, out)
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr and "Traceback" not in result.stderr
    assert out.read_text() == "a file, not a folder"


def test_after_a_refusal_the_corrected_command_just_works(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _refused(_train(data, out, "--set", "train.batch_size=8"), out, "train.batch_size")
    result = _train(data, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.json").exists() and not (out / "run.lock").exists()  # the lock goes with the process


# --------------------------------------------------------------------------- resume: never on another run


@pytest.fixture()
def finished(data: Path, tmp_path: Path) -> Path:
    out = tmp_path / "finished"
    result = _train(data, out, "--set", "train.keep_checkpoints=0")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_resume_compares_with_the_checkpoint_s_configuration(finished: Path, data: Path) -> None:
    """With config.yaml deleted, --resume --set optim.lr=0.5 used to continue old weights at another rate."""
    (finished / "config.yaml").unlink()
    result = _train(data, finished, "--resume", "--set", "optim.lr=0.5")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "configuration differs" in result.stderr and "final.pt" in result.stderr
    assert "optim.lr: 0.001 -> 0.5" in result.stderr
    assert not (finished / "config.yaml").exists()  # the folder keeps describing its own run
    assert _train(data, finished, "--resume").returncode == 0  # the same configuration still resumes


def test_a_damaged_latest_checkpoint_is_passed_over_saying_so(finished: Path, data: Path) -> None:
    before = (finished / "metrics.json").read_text()
    log = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in open(finished / "log.jsonl")]
    final = finished / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])  # a copy cut short, a disk error
    (finished / "metrics.json").unlink()
    result = _train(data, finished, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    warning = [line for line in result.stderr.splitlines() if "final.pt" in line]
    assert len(warning) == 1 and warning[0].startswith("train.py: warning: ") and "unreadable" in warning[0]
    assert "passing over it for the checkpoint before it" in warning[0]
    # resumed from step 4 (the last periodic checkpoint): the same run, the same numbers
    assert (finished / "metrics.json").read_text() == before
    assert [
        {k: v for k, v in json.loads(line).items() if k != "seconds"} for line in open(finished / "log.jsonl")
    ] == log
    torch.load(final, weights_only=False)  # rewritten whole


def test_when_no_checkpoint_reads_back_training_restarts_saying_so(finished: Path, data: Path) -> None:
    before = (finished / "metrics.json").read_text()
    for path in (finished / "checkpoints").iterdir():
        path.write_bytes(b"not a checkpoint")
    result = _train(data, finished, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training restarts from step 0" in result.stderr
    assert (finished / "metrics.json").read_text() == before


# --------------------------------------------------------------------------- one process per run folder


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), f"{path} did not appear"


@contextlib.contextmanager
def _started(command: list[str], cwd: Path, stderr: int = subprocess.DEVNULL) -> Iterator[subprocess.Popen]:
    """A training process, killed on the way out if it still runs (a failed assertion must not
    leave it behind); ``stderr=subprocess.PIPE`` keeps what it says, as text."""
    text = stderr == subprocess.PIPE
    proc = subprocess.Popen(command, env=_env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr, text=text)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_process_is_refused_and_a_dead_holder_s_lock_is_stale(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with _started(_command(data, out), tmp_path) as first:
        _wait_for(out / "config.yaml", first)  # written after the lock is taken
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock, mid-run, for as long as the test needs
        holder = json.loads((out / "run.lock").read_text())
        assert holder["pid"] == first.pid
        started = time.monotonic()
        second = _train(data, out, "--resume")
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
        assert f"is in use by pid {first.pid} on {holder['host']}" in second.stderr and "run.lock" in second.stderr
        assert time.monotonic() - started < 60  # refused at once, not after a run
        os.kill(first.pid, signal.SIGKILL)  # killed holding the lock: the file stays, the lock is stale
        first.wait()
    assert json.loads((out / "run.lock").read_text())["pid"] == first.pid
    third = _train(data, out, "--resume")
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"stale lock of pid {first.pid}" in third.stderr and "taken over" in third.stderr
    assert (out / "metrics.json").exists() and not (out / "run.lock").exists()


def test_a_run_killed_while_writing_its_first_file_can_start_again(data: Path, tmp_path: Path) -> None:
    """A kill inside an atomic write leaves its temporary file; that alone used to make the folder
    "hold files" and refuse the rerun."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / ".config.yaml.k1ll3d.tmp").write_text("train: {steps: ")
    (out / "checkpoints" / ".step_000002.pt.k1ll3d.tmp").write_bytes(b"PK")
    result = _train(data, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(out.rglob("*.tmp")) and (out / "metrics.json").exists()


# --------------------------------------------------------------------------- the end of a run


def test_what_the_plots_cannot_draw_never_fails_a_finished_run(tmp_path: Path) -> None:
    """A 244-character video name fits its feature files but not 'foreground_<name>.png' with an atomic
    write's suffix: the run crashed after training, and again on every --resume. A resume whose
    log.jsonl was deleted had no entropy to draw: a ValueError, also after the evaluation."""
    long = "v_test_" + "x" * 237
    videos = dict(VIDEOS)
    videos[long] = videos.pop("v_test_a")
    data = make_basnet(tmp_path / "data", videos=videos)
    out = tmp_path / "run"
    first = _train(data, out, "--set", "eval.plot_videos=1")
    assert first.returncode == 0 and "warning" not in first.stderr, first.stderr[-3000:]
    plots = sorted(p.name for p in out.glob("foreground_*.png"))
    assert len(plots) == 1 and plots[0].startswith("foreground_v_test_xxx") and len(plots[0]) < 130
    metrics = (out / "metrics.json").read_text()
    (out / "log.jsonl").unlink()
    (out / "metrics.json").unlink()
    again = _train(data, out, "--set", "eval.plot_videos=1", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"train.py: warning: {out / 'entropy.png'} not drawn: " in again.stderr
    assert (out / "metrics.json").read_text() == metrics


def test_a_damaged_best_checkpoint_is_trained_again(data: Path, tmp_path: Path) -> None:
    """With held-out selection the run ends by evaluating best.pt: a damaged one crashed the evaluation
    of every --resume. Now the run resumes before the selected step, whose replay writes it again."""
    heldout = ["--set", "train.select=heldout", "--set", "train.heldout_fraction=0.5", "--set", "train.batch_size=1"]
    heldout += ["--set", "train.eval_every=2"]
    out = tmp_path / "run"
    assert _train(data, out, *heldout).returncode == 0
    reference = {name: (out / name).read_text() for name in ("metrics.json", "predictions.json")}
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=False)
    (out / "checkpoints" / "best.pt").write_bytes(b"garbage")
    (out / "metrics.json").unlink()
    result = _train(data, out, *heldout, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best.pt is unreadable" in result.stderr and f"resuming before step {best['step']}" in result.stderr
    assert {name: (out / name).read_text() for name in reference} == reference
    again = torch.load(out / "checkpoints" / "best.pt", weights_only=False)
    assert again["step"] == best["step"] and all(torch.equal(again["model"][k], v) for k, v in best["model"].items())


def test_a_resume_on_data_with_other_classes_is_refused(finished: Path, data: Path) -> None:
    """The classes come from the data (classes.txt, or gt.json's labels), not the configuration: a
    reordered list resumed silently with every classifier output meaning another class, and one
    more class was a multi-line size-mismatch traceback from load_state_dict."""
    for classes in (["Run", "Jump", "Swim"], ["Jump", "Run", "Swim", "Dive"]):
        (data / "classes.txt").write_text("\n".join(classes) + "\n")
        result = _train(data, finished, "--resume")
        errors = [line for line in result.stderr.splitlines() if "warning" not in line]
        assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "final.pt was trained on the classes ['Jump', 'Run', 'Swim']" in errors[0]
        assert f"the data set has {classes}" in errors[0]


def test_non_finite_model_outputs_stop_the_step_with_the_example_s_message() -> None:
    """C-new-8: weights that a too-high learning rate has sent to NaN reached otlabel, whose
    "fg_scores contains NaN or infinite values" named none of the example's settings; the step
    now stops with the example's own message (train.py: exit status 1, the checkpoints kept)."""
    from case.config import load_config
    from case.model import CASEModel
    from case.trainer import train_step

    cfg = load_config(CONFIG_DIR / "smoke.yaml")
    torch.manual_seed(0)
    model = CASEModel(cfg.data.feature_dim, 3, cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    batch = {"features": torch.randn(2, 16, cfg.data.feature_dim), "label": torch.eye(3)[:2]}
    cluster_fg = torch.full((cfg.model.num_clusters,), 0.5)
    train_step(model, batch, cluster_fg, optimizer, cfg, torch.device("cpu"))  # a finite step passes
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    message = "the loss is not finite (the model's outputs are NaN or infinite); lower optim.lr"
    with pytest.raises(FloatingPointError, match=re.escape(message)):
        train_step(model, batch, cluster_fg, optimizer, cfg, torch.device("cpu"))


# --------------------------------------------------------------------------- a run stopped from outside


def _last_error(result_stderr: str) -> list[str]:
    """The lines of stderr that are not warnings."""
    return [line for line in result_stderr.splitlines() if not line.startswith("train.py: warning:")]


def test_ctrl_c_during_training_is_one_line_and_the_run_resumes(data: Path, tmp_path: Path) -> None:
    """Ctrl-C was a 25-33 line traceback (C-new-9); now one line saying how to go on, exit status 130."""
    out = tmp_path / "run"
    with _started(_command(data, out), tmp_path, stderr=subprocess.PIPE) as proc:
        _wait_for(out / "checkpoints" / "step_000002.pt", proc)
        os.kill(proc.pid, signal.SIGSTOP)  # an interrupt between the first checkpoint and the end of the run
        assert not (out / "metrics.json").exists()
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(_last_error(stderr)) == 1, stderr
    assert re.fullmatch(
        rf"train\.py: interrupted at step \d; continue with --resume --out {re.escape(str(out))}",
        _last_error(stderr)[0],
    )
    assert not (out / "run.lock").exists()
    resumed = _train(data, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "metrics.json").exists()


def test_a_ctrl_c_that_a_step_swallows_still_stops_training(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C raised inside code that drops it (a lazily imported C extension's init does) ran the
    training to its end; the next step now raises it again, and the run resumes from there."""
    import case.trainer as trainer
    from case.config import load_config
    from case.errors import ctrl_c_is_never_lost

    real_step, steps = trainer.train_step, []

    def step_with_a_swallowed_ctrl_c(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        steps.append(len(steps) + 1)
        if len(steps) == 3:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the handler runs here
            except KeyboardInterrupt:
                pass
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step_with_a_swallowed_ctrl_c)
    command = _command(data, tmp_path)
    overrides = [item for flag, item in zip(command, command[1:]) if flag == "--set"]
    cfg = load_config(CONFIG_DIR / "smoke.yaml", overrides)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        with ctrl_c_is_never_lost(), pytest.raises(KeyboardInterrupt, match="interrupted at step 3"):
            trainer.train(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert steps == [1, 2, 3] and not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / "run.lock").exists()


def test_ctrl_c_during_data_generation_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C while the first run generates the synthetic set: one line, exit 130, no half-written set."""
    root = tmp_path / "synthetic"
    command = [
        sys.executable, str(TRAIN), "--config", str(CONFIG_DIR / "smoke.yaml"), "--set", f"data.root={root}",
        "--set", "data.synthetic.scale=1.0", "--set", "train.progress=false", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    with _started(command, tmp_path, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".synthetic.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and len(_last_error(stderr)) == 1, stderr
    line = _last_error(stderr)[0]
    assert line.startswith("train.py: interrupted while generating the synthetic data set") and str(root) in line
    assert "the next run generates it again" in line
    assert not root.exists() and not list(tmp_path.glob(".synthetic.tmp-*")) and not (tmp_path / "run").exists()


def test_a_write_error_other_than_a_full_disk_is_one_line(data: Path, tmp_path: Path) -> None:
    """A file-size limit (EFBIG), a read-only checkpoints/ folder (EACCES, EROFS): a 28-line traceback
    (C-new-7); now one line naming the file and the error, exit status 2, the run folder resumable."""
    out = tmp_path / "run"

    def limit_file_size() -> None:  # the checkpoints (3 MB) do not fit; config.yaml and the log do
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    result = subprocess.run(
        _command(data, out), capture_output=True, text=True, env=_env(), cwd=tmp_path, preexec_fn=limit_file_size
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = _last_error(result.stderr)
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert errors[0].startswith(f"train.py: error: {out / 'checkpoints' / 'step_000002.pt'}: File too large")
    assert "EFBIG" in errors[0] and "--resume" in errors[0]
    assert not (out / "run.lock").exists() and not list(out.rglob("*.tmp"))
    resumed = _train(data, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "metrics.json").exists()


def test_two_runs_without_out_started_together_take_two_folders(data: Path, tmp_path: Path) -> None:
    """Both chose runs/<config>-seed<seed> before either locked it: the second was refused "in use"
    (C-new-14); now it takes the next free name, -2, as documented."""
    command = [arg for arg in _command(data, tmp_path / "unused") if arg not in ("--out", str(tmp_path / "unused"))]
    procs = [
        subprocess.Popen(command, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr[-3000:]
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["smoke-seed0", "smoke-seed0-2"]
    assert all((runs / name / "metrics.json").exists() for name in ("smoke-seed0", "smoke-seed0-2"))
    printed = sorted(line for stdout, _ in results for line in stdout.splitlines() if line.startswith("run folder:"))
    assert [line.split()[2] for line in printed] == ["runs/smoke-seed0", "runs/smoke-seed0-2"]


# --------------------------------------------------------------------------- what --resume compares


def test_a_resume_may_change_what_cannot_change_the_outcome(finished: Path, data: Path) -> None:
    """--resume refused a changed train.progress or train.num_workers, which only show progress or load
    the same batches in other processes; a setting that changes the run (optim.lr) is still refused."""
    allowed = _train(data, finished, "--resume", "--set", "train.progress=true", "--set", "train.num_workers=1")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    refused = _train(data, finished, "--resume", "--set", "optim.lr=0.5", "--set", "train.num_workers=1")
    assert refused.returncode == 2 and "configuration differs" in refused.stderr, refused.stderr
    assert "optim.lr: 0.001 -> 0.5" in refused.stderr and "num_workers" not in refused.stderr
