"""Reading the example's JSON inputs strictly, each problem one error naming the file.

Python's :mod:`json` reader lets the later of two equal keys win silently (a video listed
twice in a ground-truth or predictions file loses its first entry, and every score with it),
recurses once per nesting level (a file nested 100,000 deep is a bare ``RecursionError``),
and refuses an integer of over 4,300 digits with a ``ValueError`` that names no file.
:func:`read_json` turns each into one error of the caller's type naming the file:
:class:`~case.metrics.DetectionFileError` for ``evaluate.py``'s files,
:class:`~case.data.DatasetError` for a data set's ``gt.json``.

Free of torch, like :mod:`case.atomic`, so that :mod:`case.metrics` stays NumPy-only.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["read_json"]


class _RepeatedKey(Exception):
    """A key written twice in one JSON object (raised from inside the parser)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _RepeatedKey(key)
        obj[key] = value
    return obj


def read_json(path: str | os.PathLike[str], what: str, error: type[Exception]) -> Any:
    """The decoded content of the JSON file ``path`` (``what`` it is, for messages).

    Raises
    ------
    FileNotFoundError
        No such file (the caller says what was looked for).
    error
        The file cannot be read (a folder, no permission), is not UTF-8 or not JSON, is nested
        too deeply, holds an integer of over 4,300 digits, or writes a key twice in one object.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            return json.load(handle, object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise
    except _RepeatedKey as repeated:
        raise error(
            f"{name}: the key {repeated.args[0]!r} is written twice in one object (a JSON reader keeps only "
            "the last one)"
        ) from None
    except UnicodeDecodeError as exc:
        raise error(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{name}: not valid JSON ({exc})") from None
    except RecursionError:  # json recurses once per nesting level
        raise error(f"{name}: nested too deeply to be {what}") from None
    except ValueError:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise error(f"{name}: holds an integer of more than 4300 digits") from None
    except OSError as exc:
        raise error(f"{what} {name} cannot be read: {exc.strerror or exc}") from None
