"""What stops a run before it starts, and what it says without stopping.

Every error here names the setting or the file at fault. The command lines (``train.py``,
``evaluate.py``, ``ablate.py``) print :data:`SETUP_ERRORS` as one line on stderr with exit
status 2, and warnings as one line each (:func:`one_line_warnings`).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

from .data.errors import DatasetError
from .metrics import DetectionFileError

__all__ = ["ConfigError", "RunFolderError", "RunWarning", "SETUP_ERRORS", "one_line_warnings"]


class ConfigError(ValueError):
    """A configuration file, override or setting is malformed, or this machine cannot honour it;
    the message names the key and the source."""


class RunFolderError(RuntimeError):
    """The run folder is in a state that the requested action would damage (taken, locked, or
    holding a run of another configuration); the message names the folder or file."""


class RunWarning(UserWarning):
    """Something about a run that its user should know and that does not stop it (a stale lock
    taken over, a damaged checkpoint passed over)."""


#: Errors found before any work is done: bad settings, data, ground truth or run folder.
SETUP_ERRORS = (ConfigError, DatasetError, DetectionFileError, RunFolderError)


@contextlib.contextmanager
def one_line_warnings(program: str) -> Iterator[None]:
    """Inside, each warning prints as ``<program>: warning: <message>`` on stderr (no source line)."""

    def show(message: Warning | str, *args: object, **kwargs: object) -> None:
        print(f"{program}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
