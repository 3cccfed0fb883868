"""The run lock and the run folder's checks, in one process (two real processes: test_train_checks.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
