"""Which snippets of a video a training or test item keeps.

CASE (like BaSNet and its successors) trains on a fixed number T of snippets per video
(T = 750 on THUMOS14, 50 on ActivityNet) so that videos can be batched:

* ``"random"`` — the official code's *random perturbation*: split ``[0, L)`` into T equal
  bins of width L / T; row i takes an index drawn uniformly from ``⌊iL/T⌋`` to
  ``⌊(i+1)L/T⌋`` *inclusive* (the last row: to L − 1); a bin narrower than one snippet keeps
  ``⌊iL/T⌋``. A video shorter than T therefore repeats snippets; L = T keeps every snippet.
* ``"uniform"`` — row i takes ``⌊iL/T⌋`` (test time). A video no longer than T keeps all its
  L snippets (the official code repeats snippets up to T instead; we never need a padded test
  batch, and repeated rows would only duplicate detections).
* ``"all"`` — every snippet, ``0 .. L-1``.
"""

from __future__ import annotations

import numpy as np

from .errors import DatasetError

SAMPLING_MODES = ("random", "uniform", "all")


def sample_indices(length: int, num_segments: int, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Original snippet indices of the rows of one sampled video.

    Parameters
    ----------
    length
        L, the video's number of snippets (≥ 1).
    num_segments
        T, the number of rows to sample (≥ 1); ignored by ``"all"``.
    mode
        ``"random"``, ``"uniform"`` or ``"all"`` (see the module docstring).
    rng
        Required by ``"random"``: the generator to draw from (never the global state).

    Returns
    -------
    numpy.ndarray
        int64 indices in ``[0, L)``, non-decreasing; shape (T,) for ``"random"``, (min(L, T),)
        for ``"uniform"``, (L,) for ``"all"``.

    Examples
    --------
    >>> sample_indices(10, 4, "uniform").tolist()
    [0, 2, 5, 7]
    >>> sample_indices(3, 5, "uniform").tolist()
    [0, 1, 2]
    >>> idx = sample_indices(10, 4, "random", np.random.default_rng(0))
    >>> idx.shape, bool(idx.min() >= 0 and idx.max() <= 9)
    ((4,), True)
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise DatasetError(f"length must be a positive integer, got {length!r}")
    if isinstance(num_segments, bool) or not isinstance(num_segments, (int, np.integer)) or num_segments < 1:
        raise DatasetError(f"num_segments must be a positive integer, got {num_segments!r}")
    if mode == "all" or (mode == "uniform" and length <= num_segments):
        return np.arange(length, dtype=np.int64)
    if mode == "uniform":
        return (np.arange(num_segments, dtype=np.int64) * length) // num_segments
    if mode != "random":
        raise DatasetError(f"sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    if rng is None:
        raise DatasetError("sampling='random' needs an explicit numpy Generator (rng)")
    if length == num_segments:
        return np.arange(length, dtype=np.int64)
    i = np.arange(num_segments, dtype=np.int64)
    low = (i * length) // num_segments  # ⌊iL/T⌋ in exact integer arithmetic
    high = np.append(low[1:], length - 1)  # inclusive upper bound: next bin's start, or L - 1
    # rng.integers(low, high + 1) draws uniformly from the inclusive range; it returns low
    # itself where high == low, which is the official code's "bin narrower than a snippet".
    return rng.integers(low, high + 1, dtype=np.int64)
