"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then renamed
over the target, so a reader (or a run killed mid-write) never sees a partial file.

The file gets the permissions a plain ``open(path, "w")`` would give it: those of the file it
replaces, or ``0o666`` less the umask for a new one (a temporary file is created ``0o600``,
which would hide every run file from colleagues on a shared machine).

Free of torch, so that the numpy-only modules (metrics, plots) use the same writes as the
engine's checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "remove_temporaries", "write_through"]

#: A write of ``name`` goes through ``.<name>.<random>.tmp`` beside it.
_SUFFIX = ".tmp"


def _plain_write_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` leaves: the existing file's, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o077)  # reading the umask means setting it; put it back at once
        os.umask(umask)
        return 0o666 & ~umask


#: The name of such a temporary file: ``.<target>.<mkstemp's random letters>.tmp``.
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]+" + re.escape(_SUFFIX))


def remove_temporaries(folder: str | Path, targets: str | re.Pattern[str]) -> list[Path]:
    """Delete the temporary files that writes of ``targets`` killed mid-way left in ``folder``; return them.

    ``targets`` is a regular expression that the whole name of a written file matches (e.g.
    ``config\\.yaml|log\\.jsonl``): a hidden ``.tmp`` file that is not the temporary file of
    one of them — a user's own, in a folder given as ``--out`` by mistake — is left alone.
    Only for a folder no one else writes to (a locked run folder): a live writer's temporary
    file would go too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    left = []
    for path in folder.iterdir():
        match = _TEMPORARY.fullmatch(path.name)
        if match and re.fullmatch(targets, match["target"]) and path.is_file():
            left.append(path)
    for path in left:
        path.unlink(missing_ok=True)
    return left


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    A ``path`` that is (or links to) something other than a regular file or a folder — a
    device, a pipe, a terminal: ``/dev/null``, ``/dev/stdout`` — is written to as a plain
    ``open(path, "w")`` would: renaming a file over it would put a regular file in its place
    (in ``/dev`` itself, for a user allowed to write there). A link to a regular file is
    replaced by the new file, never written through (a link planted in a shared run folder
    cannot make a run write elsewhere); ``evaluate.py --out`` writes through one
    (:func:`write_through`).
    """
    path = Path(path)
    if _is_stream(path):
        write_through(path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _plain_write_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:  # ENOSPC from write()
            err.filename = str(path)
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _is_stream(path: Path) -> bool:
    """Whether ``path`` exists and is (or links to) neither a regular file nor a folder."""
    try:
        kind = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not (stat.S_ISREG(kind) or stat.S_ISDIR(kind))


def write_through(path: str | Path, data: bytes) -> None:
    """Write ``data`` as a plain ``open(path, "wb")`` does: through links, into devices and pipes."""
    with open(path, "wb") as stream:
        stream.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")
