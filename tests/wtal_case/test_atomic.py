"""Atomic writes (``case.atomic``): whole files or none, with the permissions a plain write gives."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest
import train as train_py  # examples/wtal_case/train.py: on sys.path (conftest)

from case.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text


@pytest.fixture()
def umask() -> object:
    """Set the process umask for one test and restore it after."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_a_new_file_gets_the_mode_a_plain_write_gives(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    for write, name, payload in (
        (atomic_write_bytes, "a.bin", b"x"),
        (atomic_write_text, "a.txt", "x"),
        (atomic_write_json, "a.json", {"x": 1}),
    ):
        target = tmp_path / name
        write(target, payload)
        assert _mode(target) == _mode(plain) == 0o666 & ~mask, (name, oct(_mode(target)))


def test_replacing_a_file_keeps_its_mode(tmp_path: Path, umask) -> None:
    umask(0o022)
    target = tmp_path / "shared.json"
    target.write_text("{}")
    target.chmod(0o664)  # made group-writable on purpose: a rewrite must not undo it
    atomic_write_json(target, {"x": 2})
    assert _mode(target) == 0o664 and target.read_text() == '{\n "x": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def test_a_full_disk_leaves_the_old_file_and_names_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC comes from write() or fsync() on the temporary file, whose error carried no file name."""
    target = tmp_path / "final.pt"
    target.write_bytes(b"the previous checkpoint")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"the next one")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert [p.name for p in tmp_path.iterdir()] == ["final.pt"] and target.read_bytes() == b"the previous checkpoint"


def test_train_py_stops_on_a_full_disk_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A full disk mid-run was a traceback; the run is whole up to its last checkpoint: say how to go on."""

    def full(cfg, out, resume=False, numbered=False):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoints/step_000500.pt")

    monkeypatch.setattr(train_py, "train", full)
    assert train_py.main(["--out", "runs/x", "--set", "train.steps=1"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "train.py: error: runs/x/checkpoints/step_000500.pt: No space left on device; the checkpoints written "
        "before are whole: free some space and continue with --resume\n"
    )


def test_a_pipe_or_device_is_written_to_not_replaced(tmp_path: Path) -> None:
    """`evaluate.py --out /dev/null` (or /dev/stdout) renamed a temporary file over the device: run as
    root, it put a regular file in /dev in its place. A FIFO stands in for the device here."""
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write_text(fifo, "metrics\n")
    reader.join(timeout=10)
    assert received == [b"metrics\n"] and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["stream"]


def test_a_link_is_replaced_never_written_through(tmp_path: Path) -> None:
    """In a run folder a link may be planted: the new file replaces it, the file it names is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "config.yaml"
    link.symlink_to(victim)
    atomic_write_text(link, "train: {}\n")
    assert not link.is_symlink() and link.read_text() == "train: {}\n" and victim.read_text() == "precious"
