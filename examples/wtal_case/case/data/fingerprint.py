"""What a run was trained on, cheaply: a split's videos in order and a digest of every file it reads.

``train.py`` saves :func:`fingerprint` of its splits in every checkpoint, and ``--resume``
compares them with the data as it is now (:func:`first_change`), so that a resume after a split
file was reordered (another data order) or a feature or annotation file was replaced is refused
naming the file, instead of continuing silently on other data.

* the **videos** of a split, in the order of the file that lists them (``split_<split>.txt``, or
  W-TALC's ``videoname.npy``): the data order is a function of it. A blank line more or less is
  the same list;
* every other **file** the split reads (``gt.json``, the feature files, W-TALC's annotations) by
  its size and a SHA-256 of its content — the whole file up to 128 KiB, its first and last 64 KiB
  beyond (a few percent of a THUMOS14 feature file), so that a copy of the data set (new
  modification times) is the same data. ``classes.txt`` is left to the checkpoint's class names,
  which are compared exactly.

Paths are kept relative to the data set's folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["fingerprint", "first_change", "file_digest"]

#: Files up to twice this size are hashed whole; larger ones by their first and last CHUNK bytes.
CHUNK = 64 * 1024


def file_digest(path: str | os.PathLike[str]) -> str:
    """``"<size>:<sha256 prefix>"`` of ``path``'s content (whole up to 128 KiB, else its two ends)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= 2 * CHUNK:
            digest.update(handle.read())
        else:
            digest.update(handle.read(CHUNK))
            handle.seek(size - CHUNK)
            digest.update(handle.read(CHUNK))
    return f"{size}:{digest.hexdigest()[:32]}"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:  # not under the data set's folder
        return str(path)


def fingerprint(dataset: Any, root: str | Path) -> dict[str, Any]:
    """The fingerprint of a :class:`~case.data.VideoDataset` whose files lie under ``root``.

    Returns
    -------
    dict
        ``{"listing": path of the file that lists the videos, "videos": [...], "files":
        {path: digest}}``, paths relative to ``root``.
    """
    root = Path(root)
    skipped = {dataset.listing, dataset.class_file} - {None}
    return {
        "listing": _relative(dataset.listing, root) if dataset.listing is not None else None,
        "videos": list(dataset.videos),
        "files": {_relative(path, root): file_digest(path) for path in dataset.files if path not in skipped},
    }


def first_change(saved: Mapping[str, Any], now: Mapping[str, Any], root: str | Path) -> str | None:
    """What differs first between a saved fingerprint and the current one of a split whose files lie
    under ``root``, naming the file; None when they agree."""
    root = Path(root)
    listing = root / str(saved.get("listing") or now.get("listing"))
    before, after = list(saved.get("videos", [])), list(now.get("videos", []))
    if before != after:
        gone = [video for video in before if video not in set(after)]
        new = [video for video in after if video not in set(before)]
        if gone:
            what = f"video {gone[0]!r} is gone" + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")
        elif new:
            what = f"video {new[0]!r} is new" + (f" (and {len(new) - 1} more)" if len(new) > 1 else "")
        else:
            first = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b)
            what = f"the same videos in another order (from entry {first + 1} on), another data order"
        return f"{listing} changed since the run started: {what}"
    files_before, files_after = saved.get("files", {}), now.get("files", {})
    for name in list(files_before) + [name for name in files_after if name not in files_before]:
        if files_before.get(name) != files_after.get(name):
            what = "it is new" if name not in files_before else "it is gone" if name not in files_after else None
            return f"{root / name} changed since the run started ({what or 'its size or content'})"
    return None
