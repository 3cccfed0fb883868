"""Errors and warnings of the data readers and the synthetic generator."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A data set on disk is inconsistent or malformed; the message names the file."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A file the data set needs is missing; the message names the path."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what it cut short and how to go on as its message (the command lines print
    it as one line, exit status 130). A :class:`KeyboardInterrupt`, so that whatever stops on
    Ctrl-C stops on it too."""


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
