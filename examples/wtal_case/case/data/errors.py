"""Errors and warnings of the data readers and the synthetic generator."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path


class DatasetError(ValueError):
    """A data set on disk is inconsistent or malformed; the message names the file."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A file the data set needs is missing; the message names the path."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what it cut short and how to go on as its message (the command lines print
    it as one line, exit status 130). A :class:`KeyboardInterrupt`, so that whatever stops on
    Ctrl-C stops on it too."""


#: Set by the handler :func:`ctrl_c_is_never_lost` installs, when Ctrl-C arrives.
_ctrl_c_pressed = False


def _on_ctrl_c(signum: int, frame: object) -> None:
    global _ctrl_c_pressed
    _ctrl_c_pressed = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def ctrl_c_is_never_lost() -> Iterator[None]:
    """Inside, Ctrl-C raises :class:`KeyboardInterrupt` as usual and is also remembered, so that
    :func:`raise_if_interrupted` raises it again where the first one was swallowed.

    Python raises the interrupt in whatever code runs next, and some code drops it unseen: the
    init of a C extension module that a lazy import loads (NumPy's ``numpy.random``, imported
    on first use of ``np.random``) clears the errors of its ABC registrations. A Ctrl-C that
    lands there left a run going to its end, exit status 0. Nothing is installed outside the
    main thread or where Ctrl-C is ignored (a ``nohup`` or background job keeps ignoring it).
    """
    global _ctrl_c_pressed
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        None,
    ):
        yield
        return
    _ctrl_c_pressed = False
    previous = signal.signal(signal.SIGINT, _on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _ctrl_c_pressed = False


def raise_if_interrupted() -> None:
    """Raise :class:`KeyboardInterrupt` if Ctrl-C was pressed inside :func:`ctrl_c_is_never_lost`
    (called where work is committed: each generated video, the rename of the set, each step)."""
    if _ctrl_c_pressed:
        raise KeyboardInterrupt


class DatasetWarning(UserWarning):
    """An oddity of a data set that real data has too (e.g. THUMOS14 annotations that run past
    their video's end): the data set is used as it is, and the warning names what is odd."""


def require_file(path: Path, what: str) -> None:
    """Raise unless ``path`` is a file: :class:`DatasetFileNotFoundError` when nothing is there,
    :class:`DatasetError` saying so when a directory is there (a path one level short), not "not found"."""
    if path.is_dir():
        raise DatasetError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise DatasetFileNotFoundError(f"{what} {path} not found")


def require_folder(path: Path, what: str) -> None:
    """Raise unless ``path`` is a folder: :class:`DatasetFileNotFoundError` when nothing is there,
    :class:`DatasetError` saying so when a file is there, not "not found"."""
    if path.exists() and not path.is_dir():
        raise DatasetError(f"{what} {path} is a file, not a folder")
    if not path.is_dir():
        raise DatasetFileNotFoundError(f"{what} {path} not found")
