"""What stops a run before it starts, and what it says without stopping.

Every error here names the setting or the file at fault. The command lines (``train.py``,
``evaluate.py``, ``ablate.py``) print :data:`SETUP_ERRORS` as one line on stderr with exit
status 2, and warnings as one line each (:func:`one_line_warnings`); ``train.py`` prints
:class:`Interrupted` (Ctrl-C) as one line with exit status 130.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator

from .data.errors import DatasetError, Interrupted, ctrl_c_is_never_lost, raise_if_interrupted
from .metrics import DetectionFileError

__all__ = [
    "ConfigError",
    "Interrupted",
    "RunFolderError",
    "RunFolderInUse",
    "RunWarning",
    "SETUP_ERRORS",
    "one_line_warnings",
    "fits_in_memory",
    "ctrl_c_is_never_lost",
    "raise_if_interrupted",
]


class ConfigError(ValueError):
    """A configuration file, override or setting is malformed, or this machine cannot honour it;
    the message names the key and the source."""


class RunFolderError(RuntimeError):
    """The run folder is in a state that the requested action would damage (taken, locked, or
    holding a run of another configuration); the message names the folder or file."""


class RunFolderInUse(RunFolderError):
    """Another process holds the run folder's lock."""


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


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed (NumPy's MemoryError, torch's CPU or CUDA allocator)."""
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


@contextlib.contextmanager
def fits_in_memory(what: str) -> Iterator[None]:
    """Inside, an allocation that fails is a :class:`ConfigError` saying that ``what`` does not fit.

    For the sizes a configuration sets (``model.hidden_dim``, ``data.num_segments``, ...): a
    typo of a few extra digits asks for terabytes, which the allocator refuses at once, with
    a message of C++ frames. Other errors pass through unchanged.
    """
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        asked = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ [KMGTPE]?i?B)", str(err))
        size = ""
        if asked is not None:
            size = f": {int(asked[1]) / 2**30:.3g} GiB asked" if asked[1] else f": {asked[2]} asked"
        raise ConfigError(f"{what} does not fit in this machine's memory{size}") from None
