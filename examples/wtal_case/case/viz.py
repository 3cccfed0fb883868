"""Figures of a CASE run as PNG files: foreground curves (paper Fig. 5) and entropies (Fig. 4).

Both functions draw on a bare :class:`matplotlib.figure.Figure` with the Agg renderer (no
pyplot, no global backend change, safe on headless machines and in threads) and write the
PNG atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .atomic import atomic_write_bytes

__all__ = ["DEFAULT_ENTROPY_KEYS", "foreground_plot_name", "plot_entropy_curves", "plot_foreground", "save_figure"]

PathLike = Union[str, "os.PathLike[str]"]

#: Display name -> ``log.jsonl`` key of the entropies the engine logs (paper Fig. 4):
#: the snippet-clustering labels, the cluster-classification labels, and the usage of the
#: clusters by the snippet predictions (entropy of the mean prediction).
DEFAULT_ENTROPY_KEYS: dict[str, str] = {
    "$H(Q^S)$": "H_QS",
    "$H(Q^C)$": "H_QC",
    r"$H(\bar{P}^S)$": "H_PS_usage",
}


def foreground_plot_name(video: str) -> str:
    """The file name of ``video``'s foreground plot: ``foreground_<video>.png``.

    A name that is not a plain file name — a ``/`` (the plot would land in another folder),
    other characters outside ``[A-Za-z0-9._-]``, or too long for the file system once the
    prefix and an atomic write's temporary suffix are added — is cut to 100 safe characters
    and told apart from others by a short hash of the whole name.

    Examples
    --------
    >>> foreground_plot_name("video_test_0000004")
    'foreground_video_test_0000004.png'
    >>> foreground_plot_name("../escape")
    'foreground_.._escape-2c09a87e.png'
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", video)
    if safe != video or len(safe) > 100:
        safe = f"{safe[:100]}-{hashlib.sha1(video.encode('utf-8')).hexdigest()[:8]}"
    return f"foreground_{safe}.png"


def save_figure(fig: Figure, path: PathLike) -> Path:
    """Render a bare :class:`~matplotlib.figure.Figure` to PNG at ``path`` atomically; returns the path.

    Also used by the reproduction report's figures (:mod:`case.ablation`).
    """
    path = Path(path)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _curve(name: str, values: Any, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if length is not None and arr.size != length:
        raise ValueError(f"{name} has {arr.size} values, expected {length} (one per snippet)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _segments(ground_truth: Iterable[Any]) -> list[tuple[float, float, str | None]]:
    """(start, end, label) from pairs or ActivityNet-style annotation dicts."""
    out = []
    for i, item in enumerate(ground_truth):
        label = None
        if isinstance(item, Mapping):
            label = item.get("label")
            item = item.get("segment")
        try:
            start, end = (float(x) for x in item)
        except (TypeError, ValueError):
            raise ValueError(
                f"ground_truth[{i}] must be [start, end] or an annotation with a 'segment', got {item!r}"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"ground_truth[{i}] must have finite start <= end, got {[start, end]}")
        out.append((start, end, label))
    return out


def plot_foreground(
    path: PathLike,
    attention: Any,
    cluster: Any = None,
    mixed: Any = None,
    *,
    ground_truth: Iterable[Any] = (),
    index: Any = None,
    snippet_seconds: float = 16 / 25,
    title: str | None = None,
) -> Path:
    """Fig. 5-style figure: the foreground curves of one video against its ground truth.

    One panel per curve — :math:`P^A` (attention), :math:`P^T` (clustering-assisted) and
    :math:`P^M = \\tfrac12 P^A + \\tfrac12 P^T` — over time, with the ground-truth segments
    shaded in every panel.

    Parameters
    ----------
    path : path
        Output PNG file.
    attention : array_like, shape (T,)
        :math:`P^A`.
    cluster : array_like, shape (T,), optional
        :math:`P^T` (e.g. ``foreground_for_testing(..., mode="cluster")``).
    mixed : array_like, shape (T,), optional
        :math:`P^M`; computed from the two others when omitted and ``cluster`` is given.
    ground_truth : iterable
        ``[start, end]`` pairs in seconds, or annotations ``{"segment": [s, e], "label": ...}``
        (as in ``VideoDataset.ground_truth()``).
    index : array_like of int, shape (T,), optional
        Original snippet index of each row (default ``arange(T)``); row t is drawn at the
        centre of its snippet, ``(index[t] + 0.5) * snippet_seconds``.
    snippet_seconds : float
        Seconds per snippet (16 frames at 25 fps = 0.64).
    title : str, optional

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "fg.png"
    >>> plot_foreground(out, [0.1, 0.9, 0.8, 0.2], [0.2, 0.7, 0.9, 0.1],
    ...                 ground_truth=[[0.64, 1.92]]).stat().st_size > 0
    True
    """
    p_a = _curve("attention", attention)
    t = p_a.size
    curves = [("$P^A$ (attention)", p_a)]
    p_t = None if cluster is None else _curve("cluster", cluster, t)
    if p_t is not None:
        curves.append(("$P^T$ (clustering-assisted)", p_t))
    if mixed is not None:
        curves.append(("$P^M$ (mixed)", _curve("mixed", mixed, t)))
    elif p_t is not None:
        curves.append(("$P^M$ (mixed)", 0.5 * p_a + 0.5 * p_t))
    if index is None:
        rows = np.arange(t, dtype=np.float64)
    else:
        rows = _curve("index", index, t)
    if not (math.isfinite(snippet_seconds) and snippet_seconds > 0):
        raise ValueError(f"snippet_seconds must be > 0, got {snippet_seconds}")
    times = (rows + 0.5) * snippet_seconds
    segments = _segments(ground_truth)

    fig = Figure(figsize=(10, 1.6 * len(curves) + 0.6))
    axes = fig.subplots(len(curves), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, curves):
        for start, end, _ in segments:
            ax.axvspan(start, end, color="tab:green", alpha=0.25, lw=0)
        ax.plot(times, values, color="tab:blue", lw=1.2)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.set_ylim(min(0.0, float(values.min())) - 0.02, max(1.0, float(values.max())) + 0.02)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s); shaded: ground truth")
    axes[-1].set_xlim(0, max(times[-1] + snippet_seconds / 2, max((e for _, e, _ in segments), default=0.0)))
    if title:
        axes[0].set_title(title)
    return save_figure(fig, path)


def _read_records(records: PathLike | Iterable[Mapping[str, Any]]) -> tuple[list[Mapping], str]:
    if isinstance(records, (str, os.PathLike)):
        name = os.fspath(records)
        out = []
        with open(name, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{name}:{n}: not a JSON record ({exc})") from None
                if not isinstance(record, Mapping):
                    raise ValueError(f"{name}:{n}: expected a JSON object, got {type(record).__name__}")
                out.append(record)
        return out, name
    out = list(records)
    for i, record in enumerate(out):
        if not isinstance(record, Mapping):
            raise ValueError(f"records[{i}] must be a mapping, got {type(record).__name__}")
    return out, "records"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_entropy_curves(
    path: PathLike,
    records: PathLike | Iterable[Mapping[str, Any]],
    keys: Mapping[str, str] | Sequence[str] | None = None,
    *,
    x_key: str = "step",
    title: str | None = None,
) -> Path:
    """Fig. 4-style figure: entropies of the pseudo-labels and predictions over training.

    Parameters
    ----------
    path : path
        Output PNG file.
    records : path or iterable of mapping
        A ``log.jsonl`` file (one JSON object per line) or the records themselves. Records
        without ``x_key`` or without any requested key (e.g. evaluation records) are skipped;
        non-numeric or non-finite values are skipped point by point.
    keys : mapping or sequence of str, optional
        Display name -> record key (a sequence uses the keys as names). Default
        :data:`DEFAULT_ENTROPY_KEYS` (``H_QS``, ``H_QC``, ``H_PS_usage``). A key found in no
        record is left out; if none is found, :class:`ValueError`.
    x_key : str
        The record key of the x axis (default ``"step"``).
    title : str, optional

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "entropy.png"
    >>> log = [{"step": s, "H_QS": 2.0 - s / 10, "H_QC": 0.6} for s in range(10)]
    >>> plot_entropy_curves(out, log).stat().st_size > 0
    True
    """
    if keys is None:
        keys = DEFAULT_ENTROPY_KEYS
    names = dict(keys) if isinstance(keys, Mapping) else {k: k for k in keys}
    if not names or not all(isinstance(k, str) for k in names.values()):
        raise ValueError(f"keys must name at least one record key, got {keys!r}")
    rows, source = _read_records(records)
    series = {}
    for name, key in names.items():
        points = [(r[x_key], r[key]) for r in rows if _number(r.get(x_key)) and _number(r.get(key))]
        if points:
            series[name] = np.asarray(sorted(points, key=lambda p: p[0]), dtype=np.float64)
    if not series:
        raise ValueError(f"{source}: no record has {x_key!r} and any of {sorted(names.values())} as numbers")

    fig = Figure(figsize=(4 * len(series), 3.2))
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (name, xy) in zip(axes, series.items()):
        ax.plot(xy[:, 0], xy[:, 1], lw=1.4)
        ax.set_title(name)
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("entropy")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
