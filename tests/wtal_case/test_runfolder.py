"""The run lock and the run folder's checks, in one process (two real processes: test_train_checks.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from case import checkpoint as ckpt
from case import runfolder
from case.config import Config
from case.errors import RunFolderError, RunWarning
from case.runfolder import RunFolder, RunLock, RunPaths


def test_a_held_lock_refuses_a_second_holder_and_goes_with_its_release(tmp_path: Path) -> None:
    first, second = RunLock(tmp_path / "run.lock"), RunLock(tmp_path / "run.lock")
    first.acquire()
    record = json.loads((tmp_path / "run.lock").read_text())
    assert record["host"] == socket.gethostname() and isinstance(record["pid"], int)
    with pytest.raises(RunFolderError, match=f"in use by pid {record['pid']} on {record['host']}"):
        second.acquire()  # flock: another open file description, even in the same process
    first.release()
    assert not (tmp_path / "run.lock").exists()
    second.acquire()
    second.release()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("holder", "taken"),
    [
        (lambda: {"pid": _dead_pid(), "host": socket.gethostname(), "since": "then"}, True),  # a dead process
        (lambda: {"pid": 1, "host": socket.gethostname(), "started": "0", "since": "then"}, True),  # pid reused
        (lambda: '{"pid": 12', True),  # a record cut short by a kill
        (lambda: {"pid": 1, "host": socket.gethostname(), "since": "then"}, False),  # alive
        (lambda: {"pid": _dead_pid(), "host": "another-host", "since": "then"}, False),  # cannot tell: alive
    ],
    ids=["dead", "reused-pid", "cut-short", "alive", "other-host"],
)
def test_without_flock_the_record_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, holder, taken: bool) -> None:
    """Where the file system cannot flock (some network mounts), a lock is stale when its process is gone."""
    monkeypatch.setattr(runfolder, "fcntl", None)
    record = holder()
    (tmp_path / "run.lock").write_text(record if isinstance(record, str) else json.dumps(record))
    lock = RunLock(tmp_path / "run.lock")
    if taken:
        with pytest.warns(RunWarning, match="stale lock of .* taken over"):
            lock.acquire()
        lock.release()
    else:
        with pytest.raises(RunFolderError, match="is in use by .*delete the lock file if that process is gone"):
            lock.acquire()
        assert (tmp_path / "run.lock").exists()


def test_a_checkpoint_folder_that_is_a_file_is_refused_and_the_lock_released(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    (root / "checkpoints").write_text("not a folder")
    with pytest.raises(RunFolderError, match="checkpoints is a file"):
        RunFolder.open(RunPaths(root), Config(), resume=True)
    assert sorted(p.name for p in root.iterdir()) == ["checkpoints"]


@pytest.mark.parametrize("text", ["train: [1, 2\n", "train:\n  steps: 3\n  steps: 4\n"], ids=["syntax", "repeated-key"])
def test_a_damaged_config_yaml_is_named_in_one_line(tmp_path: Path, text: str) -> None:
    """PyYAML's message ran over four lines with a caret; a repeated key was read silently."""
    root = tmp_path / "run"
    root.mkdir()
    (root / "config.yaml").write_text(text)
    with pytest.raises(RunFolderError) as caught:
        RunFolder.open(RunPaths(root), Config(), resume=True)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{root / 'config.yaml'} cannot be read") and "(line " in message
    assert not (root / "run.lock").exists()


def test_a_folder_that_holds_no_run_is_left_as_it_is(tmp_path: Path) -> None:
    """--out naming a folder of other files by mistake: its hidden .tmp files were deleted before the
    refusal, and --resume wrote a run into it (truncating a log.jsonl there, replacing metrics.json)."""
    root = tmp_path / "thesis"
    root.mkdir()
    files = {".notes.tmp": "draft", ".notes.txt.x1y2z3.tmp": "autosave", "log.jsonl": "my own log\n"}
    for name, text in files.items():
        (root / name).write_text(text)
    with pytest.raises(RunFolderError, match="already holds files"):
        RunFolder.open(RunPaths(root), Config(), resume=False)
    with pytest.raises(RunFolderError, match=r"--resume: .*thesis holds files but no run of train.py"):
        RunFolder.open(RunPaths(root), Config(), resume=True)
    assert {p.name: p.read_text() for p in root.iterdir()} == files


def test_only_the_run_s_own_temporary_files_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    cut_short = [root / ".metrics.json.a1b2c3d4.tmp", root / "checkpoints" / ".step_000010.pt.zz_9y8x7.tmp"]
    kept = [root / ".photo.jpg.a1b2c3d4.tmp", root / "checkpoints" / ".metrics.json.a1b2c3d4.tmp"]
    for path in cut_short + kept:
        path.write_text("partial")
    with pytest.raises(RunFolderError, match="already holds files"):  # the user's temporary files are files
        RunFolder.open(RunPaths(root), Config(), resume=False)
    assert not any(p.exists() for p in cut_short) and all(p.exists() for p in kept)


def test_resume_where_there_is_no_run_yet_says_so(tmp_path: Path) -> None:
    root = tmp_path / "not" / "there" / "yet"
    with pytest.warns(RunWarning, match=r"--resume: .*yet holds no run yet; a new one starts"):
        folder = RunFolder.open(RunPaths(root), Config(), resume=True)
    with folder:
        assert root.is_dir()
    assert not (root / "run.lock").exists()


def test_the_latest_checkpoint_before_a_step(tmp_path: Path) -> None:
    """What a resume falls back on when best.pt (held-out selection at some step) is damaged."""
    for name, step in (("step_000002.pt", 2), ("step_000004.pt", 4), ("final.pt", 6)):
        ckpt.save_checkpoint(tmp_path / name, {key: step for key in ckpt.REQUIRED_KEYS})
    assert ckpt.load_latest(tmp_path)[0].name == "final.pt"
    assert ckpt.load_latest(tmp_path, before=4)[0].name == "step_000002.pt"
    assert ckpt.load_latest(tmp_path, before=6)[0].name == "step_000004.pt"  # final.pt is never before a step
    assert ckpt.load_latest(tmp_path, before=2) is None and ckpt.resume_candidates(tmp_path, before=2) == []


def test_no_run_file_is_written_through_a_planted_link(tmp_path: Path) -> None:
    """run.lock was opened following links and its record written over the link's target (any file
    the user may write: as root, any file); log.jsonl is appended to, which a dangling link would
    create wherever it points."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    root = tmp_path / "run"
    root.mkdir()
    (root / "config.yaml").write_text("")
    (root / "run.lock").symlink_to(victim)
    with pytest.raises(RunFolderError, match=r"lock file .*run\.lock is a symbolic link, which no run makes"):
        RunFolder.open(RunPaths(root), Config(), resume=True)
    assert victim.read_text() == "precious" and (root / "run.lock").is_symlink()
    (root / "run.lock").unlink()
    (root / "log.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(RunFolderError, match=r"log\.jsonl is a symbolic link"):
        RunFolder.open(RunPaths(root), Config(), resume=True)
    assert not (tmp_path / "elsewhere.jsonl").exists() and not (root / "run.lock").exists()
