"""From snippet scores to detections: clustering-assisted testing, proposals, OIC scores, NMS.

The test-time pipeline of CASE (paper §3.4 and the official ``inference_case.py``), for one
video whose T rows (snippets, all of them or a sample) carry

* ``cas`` (T, C): class activations after the softmax over classes;
* ``attention`` (T,): the foreground attention :math:`P^A`;
* ``cluster_probs`` (T, K): snippet-cluster assignments :math:`P^S`;
* ``cluster_fg`` (K,): each cluster's foreground probability :math:`Q^C[:, fg]`;
* ``video_scores`` (C,): video-level class scores.

Steps (:func:`detect_video`):

1. **Clustering-assisted testing** (:func:`foreground_for_testing`):
   :math:`P^T = P^S \\, Q^C[:, fg]` and :math:`P^M = \\tfrac12 P^A + \\tfrac12 P^T`.
2. **Localisation map**: :math:`\\hat A = w \\cdot \\mathrm{cas} + (1 - w) \\cdot P` for the
   chosen foreground :math:`P` (:func:`localization_map`). The official code averages the CAS
   with the four per-stream maps (two attentions, two :math:`P^T`), which is exactly
   :math:`w = 1/5` on the stream-averaged :math:`P^M` (and :math:`w = 1/3` with two maps).
3. **Classes**: those with a video score >= ``class_threshold``, or the top class if none.
4. **Proposals**: :math:`\\hat A` is upsampled ``scale`` times by linear interpolation; for
   each threshold in ``act_thresholds`` every maximal run of positions at or above it is a
   proposal.
5. **Outer-inner-contrastive score** (:func:`oic_scores`) of a run :math:`[s, e]` of length
   :math:`L`: the mean of :math:`\\hat A` inside, minus its mean over the
   :math:`\\lfloor \\lambda L \\rfloor`-wide margins outside, plus :math:`\\gamma` times the
   video score of the class (:math:`\\lambda` = ``outer_ratio``, :math:`\\gamma` =
   ``video_score_weight``).
6. **NMS** per class (:func:`temporal_nms`), then conversion to seconds
   (:func:`positions_to_seconds`).

**Time.** A snippet is 16 frames at 25 fps: 0.64 s; snippet i covers [0.64 i, 0.64 (i + 1)).
Row j of a sample stands for the original snippets from ``index[j]`` up to ``index[j + 1]``
(``num_snippets`` after the last row); a fractional row position is mapped linearly in
between. With all snippets kept (``index = arange(T)``) position u (in rows) is simply
0.64 u seconds.

**The official code's λ/γ swap.** ``get_proposal_oic(..., lambda_=0.25, gamma=0.2)`` is
called with the configured ``gamma`` (0.15) as its ninth positional argument, which is
``lambda_``: the official numbers use λ = 0.15 and γ = 0.2 (not the intended λ = 0.25,
γ = 0.15). The defaults here are the *effective* values, which produced the paper's numbers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from .data.constants import FEATURE_FPS, FRAMES_PER_SNIPPET, SNIPPET_SECONDS

__all__ = [
    "FOREGROUND_MODES",
    "MODE_LABELS",
    "NMS_KINDS",
    "TEST_MODES",
    "TIME_MAPPINGS",
    "PostprocessConfig",
    "detect_video",
    "foreground_for_testing",
    "localization_map",
    "oic_scores",
    "positions_to_seconds",
    "select_classes",
    "temporal_nms",
    "upsample",
]

#: ``attention``: P^A; ``cluster``: P^T; ``mixed``: P^M (paper); ``official``: the official
#: inference's average of the per-stream attentions and P^T (equal to P^M on stream averages).
ForegroundMode = Literal["attention", "cluster", "mixed", "official"]
#: ``hard``: greedy NMS; ``soft``: Gaussian soft-NMS; ``official``: the CASE/BaSNet variant.
NmsKind = Literal["hard", "soft", "official"]
#: ``index``: through the sampled snippets' original indices; ``stretch``: the official
#: uniform stretch (row u -> u * num_snippets / T).
TimeMapping = Literal["index", "stretch"]
FOREGROUND_MODES: tuple[str, ...] = get_args(ForegroundMode)
NMS_KINDS: tuple[str, ...] = get_args(NmsKind)
TIME_MAPPINGS: tuple[str, ...] = get_args(TimeMapping)

#: The three foregrounds of clustering-assisted testing (the paper's Table 7), which every
#: evaluation of a checkpoint scores side by side from one forward pass per video.
TEST_MODES: tuple[str, ...] = ("attention", "cluster", "mixed")
#: How the paper names each foreground mode.
MODE_LABELS: dict[str, str] = {"attention": "P^A", "cluster": "P^T", "mixed": "P^M"}


#: The largest ``postprocess.scale``: a few digits more (24000 for 24) would ask for gigabytes per
#: video at the end of a run, after all its training.
MAX_SCALE = 1000


@dataclass
class PostprocessConfig:
    """Test-time post-processing settings (defaults: THUMOS14, the official CASE inference).

    Attributes
    ----------
    foreground_mode : str
        Which foreground calibrates the CAS: ``"attention"`` (P^A, the baseline),
        ``"cluster"`` (P^T), ``"mixed"`` (P^M, CASE's clustering-assisted testing) or
        ``"official"`` (the official code's combination; same as ``"mixed"`` on stream-averaged
        inputs).
    cas_weight : float or None
        Weight ``w`` of the CAS in the localisation map ``w * cas + (1 - w) * foreground``.
        ``None`` follows the official code: 1/5 for ``mixed``/``official`` (CAS averaged with
        four per-stream maps), 1/3 for ``attention``/``cluster`` (two maps).
    class_threshold : float
        Classes whose video score is >= this are detected (at least the top class). 0.25.
    act_thresholds : tuple of float
        Thresholds on the upsampled localisation map; each yields proposals. 0.1:0.1:0.9 (the
        official ``np.arange(0.1, 1.0, 0.1)``, written without its float drift).
    scale : int
        Temporal upsampling factor before thresholding. 24 for THUMOS14; at most
        :data:`MAX_SCALE` (the upsampled map holds T × scale values per class).
    outer_ratio : float
        λ: width of each outer margin as a fraction of the proposal length. Default 0.15, the
        value the official code effectively uses (it intended 0.25; see the module notes).
    video_score_weight : float
        γ: weight of the video-level class score added to the OIC score. Default 0.2, the
        official effective value (intended 0.15).
    nms : str
        ``"official"`` (default: the CASE/BaSNet routine — greedy NMS whose suppressed
        proposals are kept with scores decayed once by exp(-IoU² / sigma), IoU computed with
        a +1 added to lengths, as for pixel boxes), ``"hard"`` (greedy NMS on the exact tIoU)
        or ``"soft"`` (Gaussian soft-NMS, Bodla et al. 2017, on the exact tIoU).
    nms_iou : float
        IoU at or above which a proposal is suppressed (``hard``, ``official``). 0.4.
    soft_nms_sigma : float
        Gaussian decay exp(-IoU² / sigma) (``soft``, ``official``). 0.35.
    max_detections : int or None
        Keep at most this many detections per video (highest scores). None: all.
    time_mapping : str
        ``"index"`` (default) maps rows back to time through the original snippet indices;
        ``"stretch"`` is the official ``t = u * num_snippets / T * 16 / 25``. They agree when all
        snippets are kept, and differ by under one snippet for uniform sampling.
    clip_to_duration : bool
        Clip detections to [0, duration] when the duration is known (a no-op for features
        that cover whole 16-frame snippets only).
    """

    foreground_mode: ForegroundMode = "mixed"
    cas_weight: float | None = None
    class_threshold: float = 0.25
    act_thresholds: tuple[float, ...] = field(default=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
    scale: int = 24
    outer_ratio: float = 0.15
    video_score_weight: float = 0.2
    nms: NmsKind = "official"
    nms_iou: float = 0.4
    soft_nms_sigma: float = 0.35
    max_detections: int | None = None
    time_mapping: TimeMapping = "index"
    clip_to_duration: bool = True

    def __post_init__(self) -> None:
        self.act_thresholds = tuple(float(t) for t in self.act_thresholds)
        if self.cas_weight is not None and not 0.0 <= self.cas_weight <= 1.0:
            raise ValueError(f"postprocess.cas_weight must lie in [0, 1] or be null, got {self.cas_weight}")
        if not self.act_thresholds or not all(math.isfinite(t) for t in self.act_thresholds):
            raise ValueError(
                f"postprocess.act_thresholds must be a non-empty list of finite numbers, got {self.act_thresholds}"
            )
        if not 1 <= self.scale <= MAX_SCALE:  # read only after training: a typo must not end a run there
            raise ValueError(f"postprocess.scale must lie in [1, {MAX_SCALE}], got {self.scale}")
        for name in ("class_threshold", "outer_ratio", "video_score_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"postprocess.{name} must be a finite number >= 0, got {value}")
        if not 0 <= self.nms_iou <= 1:  # a tIoU: 2 would silently switch suppression off
            raise ValueError(f"postprocess.nms_iou must lie in [0, 1], got {self.nms_iou}")
        if not (math.isfinite(self.soft_nms_sigma) and self.soft_nms_sigma > 0):
            raise ValueError(f"postprocess.soft_nms_sigma must be a finite number > 0, got {self.soft_nms_sigma}")
        if self.max_detections is not None and self.max_detections < 1:
            raise ValueError(f"postprocess.max_detections must be >= 1 or null, got {self.max_detections}")

    @property
    def resolved_cas_weight(self) -> float:
        """``cas_weight``, or the official code's choice for ``foreground_mode``."""
        if self.cas_weight is not None:
            return float(self.cas_weight)
        return 1.0 / 5.0 if self.foreground_mode in ("mixed", "official") else 1.0 / 3.0


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _array(name: str, value: Any, ndim: int, length: int | None = None) -> np.ndarray:
    """A finite float64 array of the given rank (and first-axis length), or a clear error."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have {length} rows (one per snippet), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


# --------------------------------------------------------------------------------------------
# Clustering-assisted testing
# --------------------------------------------------------------------------------------------


def foreground_for_testing(
    attention: Any, cluster_probs: Any = None, cluster_fg: Any = None, mode: str = "mixed"
) -> np.ndarray:
    """The foreground probability of each snippet used at test time (paper §3.4).

    .. math:: P^T = P^S \\, Q^C[:, fg], \\qquad P^M = \\tfrac12 P^A + \\tfrac12 P^T

    Parameters
    ----------
    attention : array_like, shape (T,)
        :math:`P^A`, the attention branch (two streams averaged).
    cluster_probs : array_like, shape (T, K), optional
        :math:`P^S`, snippet-cluster probabilities (two streams averaged). Not needed for
        ``mode="attention"``.
    cluster_fg : array_like, shape (K,), optional
        :math:`Q^C[:, fg]`, each cluster's foreground probability from the last
        cluster-classification labelling. Not needed for ``mode="attention"``.
    mode : {"attention", "cluster", "mixed", "official"}
        Returns :math:`P^A`, :math:`P^T`, :math:`P^M`, or the official inference's
        combination: the mean of the two per-stream attentions and the two per-stream
        :math:`P^T` — with stream-averaged inputs (as here) exactly :math:`P^M`, since
        :math:`P^T` is linear in :math:`P^S`.

    Returns
    -------
    ndarray, shape (T,)

    Examples
    --------
    >>> att = np.array([0.9, 0.2])
    >>> probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> fg = np.array([0.8, 0.0])
    >>> foreground_for_testing(att, probs, fg, mode="cluster").tolist()
    [0.8, 0.4]
    >>> foreground_for_testing(att, probs, fg, mode="mixed").round(2).tolist()
    [0.85, 0.3]
    """
    _choice("mode", mode, FOREGROUND_MODES)
    p_a = _array("attention", attention, 1)
    if mode == "attention":
        return p_a
    if cluster_probs is None or cluster_fg is None:
        raise ValueError(f"mode={mode!r} needs cluster_probs and cluster_fg")
    p_s = _array("cluster_probs", cluster_probs, 2, p_a.shape[0])
    q_fg = _array("cluster_fg", cluster_fg, 1)
    if q_fg.shape[0] != p_s.shape[1]:
        raise ValueError(f"cluster_fg has {q_fg.shape[0]} entries but cluster_probs has {p_s.shape[1]} clusters")
    p_t = p_s @ q_fg
    if mode == "cluster":
        return p_t
    return 0.5 * p_a + 0.5 * p_t


def localization_map(cas: np.ndarray, foreground: np.ndarray, cas_weight: float) -> np.ndarray:
    """The foreground-calibrated T-CAS :math:`w \\cdot \\mathrm{cas} + (1 - w) \\cdot P`.

    Parameters
    ----------
    cas : ndarray, shape (T, C)
    foreground : ndarray, shape (T,)
    cas_weight : float
        ``w`` in [0, 1].

    Returns
    -------
    ndarray, shape (T, C)
    """
    return cas_weight * cas + (1.0 - cas_weight) * foreground[:, None]


def select_classes(video_scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of classes with ``video_scores >= threshold``; the top class if there is none.

    Examples
    --------
    >>> select_classes(np.array([0.1, 0.3, 0.26]), 0.25).tolist()
    [1, 2]
    >>> select_classes(np.array([0.1, 0.2, 0.05]), 0.25).tolist()
    [1]
    """
    picked = np.flatnonzero(video_scores >= threshold)
    return picked if picked.size else np.array([int(np.argmax(video_scores))])


# --------------------------------------------------------------------------------------------
# Proposals
# --------------------------------------------------------------------------------------------


def upsample(values: np.ndarray, scale: int) -> np.ndarray:
    """Linear interpolation to ``scale`` points per row, extrapolating past the last row.

    Output row ``p`` is the value at row coordinate ``p / scale``; the last ``scale - 1``
    points continue the last segment's slope, as the official ``interp1d(...,
    fill_value="extrapolate")`` does. A single row is repeated.

    Parameters
    ----------
    values : ndarray, shape (T, ...)
    scale : int

    Returns
    -------
    ndarray, shape (T * scale, ...)

    Examples
    --------
    >>> upsample(np.array([0.0, 1.0]), 2).tolist()
    [0.0, 0.5, 1.0, 1.5]
    """
    t = values.shape[0]
    if t == 1:
        return np.repeat(values, scale, axis=0)
    step = np.diff(values, axis=0)
    step = np.concatenate([step, step[-1:]], axis=0)  # the last row continues the last slope
    frac = (np.arange(scale) / scale).reshape((1, scale) + (1,) * (values.ndim - 1))
    out = values[:, None] + frac * step[:, None]
    return out.reshape((t * scale,) + values.shape[1:])


def _runs(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Maximal runs of True along the last axis: (leading indices..., start, end exclusive)."""
    pad = np.zeros(mask.shape[:-1] + (1,), np.int8)
    edges = np.diff(np.concatenate([pad, mask.astype(np.int8), pad], axis=-1), axis=-1)
    width = edges.shape[-1]
    # within each padded row a rise (+1, a start) and a fall (-1, its end) alternate: one
    # pass over the edges finds both, in the order that np.nonzero(edges == ±1) gives them
    flat = np.flatnonzero(edges)
    starts, ends = flat[0::2], flat[1::2]
    lead = np.unravel_index(starts // width, mask.shape[:-1]) if mask.ndim > 1 else ()
    return (*lead, starts % width, ends % width)


def oic_scores(values: np.ndarray, start: np.ndarray, end: np.ndarray, outer_ratio: float) -> np.ndarray:
    """Outer-inner-contrastive score of runs ``[start, end)`` of ``values`` (without γ term).

    With length :math:`L = e - s`, the outer margins are
    :math:`[\\max(0, \\lfloor s - \\lambda L \\rfloor), s)` and
    :math:`[e, \\min(N - 1, \\lfloor e - 1 + \\lambda L \\rfloor)]`; the score is the inner mean
    minus the outer mean (0 when the margins are empty), as in the official
    ``get_proposal_oic``.

    Parameters
    ----------
    values : ndarray, shape (N,)
        One class's upsampled localisation map.
    start, end : ndarray of int, shape (P,)
        Runs, end exclusive.
    outer_ratio : float
        λ.

    Returns
    -------
    ndarray, shape (P,)

    Examples
    --------
    >>> v = np.array([0.0, 0.2, 1.0, 1.0, 0.2, 0.0])
    >>> oic_scores(v, np.array([2]), np.array([4]), 0.5).round(6).tolist()  # 1 - mean(.2, .2)
    [0.8]
    """
    n = values.shape[0]
    cum = np.concatenate([[0.0], np.cumsum(values)])
    length = end - start
    inner = (cum[end] - cum[start]) / length
    # The official int() truncates toward zero; for the left margin max(0, .) makes floor
    # equivalent, and the right bound is never negative.
    outer_lo = np.maximum(0, np.floor(start - outer_ratio * length)).astype(np.int64)
    outer_hi = np.minimum(n - 1, np.floor((end - 1) + outer_ratio * length)).astype(np.int64)
    outer_sum = (cum[start] - cum[outer_lo]) + (cum[outer_hi + 1] - cum[end])
    outer_count = (start - outer_lo) + (outer_hi + 1 - end)
    outer = np.divide(outer_sum, outer_count, out=np.zeros_like(inner), where=outer_count > 0)
    return inner - outer


def positions_to_seconds(
    positions: np.ndarray, index: np.ndarray, num_snippets: int, scale: int, cfg: PostprocessConfig
) -> np.ndarray:
    """Convert upsampled positions (boundaries, in units of 1/scale row) to seconds.

    ``"index"`` mapping: row coordinate :math:`u = p / \\text{scale}` goes to the snippet
    coordinate interpolated linearly through the knots :math:`(j, \\text{index}_j)` for
    :math:`j < T` and :math:`(T, \\text{num\\_snippets})`, times ``snippet_seconds``.
    ``"stretch"``: :math:`p \\cdot 16\\,\\text{num\\_snippets} / (\\text{scale}\\,T\\,25)`, the
    official ``t_factor``.

    Parameters
    ----------
    positions : ndarray, shape (P,)
        Boundary positions in [0, T * scale] (a run [s, e) has boundaries s and e).
    index : ndarray of int, shape (T,)
        Original snippet index of each row (non-decreasing, in [0, num_snippets)).
    num_snippets : int
        Snippets in the whole video.
    scale : int
    cfg : PostprocessConfig

    Returns
    -------
    ndarray, shape (P,)

    Examples
    --------
    >>> cfg = PostprocessConfig()
    >>> positions_to_seconds(np.array([0, 24, 48]), np.arange(2), 2, 24, cfg).round(2).tolist()
    [0.0, 0.64, 1.28]
    >>> # rows sampled at snippets 0 and 10 of 20: row 1 starts at snippet 10 = 6.4 s
    >>> positions_to_seconds(np.array([24, 36]), np.array([0, 10]), 20, 24, cfg).round(2).tolist()
    [6.4, 9.6]
    """
    t = index.shape[0]
    if cfg.time_mapping == "stretch":
        factor = (FRAMES_PER_SNIPPET * num_snippets) / (scale * t * FEATURE_FPS)
        return positions * factor
    knots = np.append(index.astype(np.float64), float(num_snippets))
    return np.interp(positions / scale, np.arange(t + 1, dtype=np.float64), knots) * SNIPPET_SECONDS


# --------------------------------------------------------------------------------------------
# Non-maximum suppression
# --------------------------------------------------------------------------------------------


def _descending(scores: np.ndarray) -> np.ndarray:
    """Descending order; equal scores keep the official ``argsort()[::-1]`` order made stable
    (the later one first), as in :mod:`case.metrics`."""
    return np.argsort(scores, kind="stable")[::-1]


def _iou_one_to_many(start: np.ndarray, end: np.ndarray, i: int, rest: np.ndarray, offset: float) -> np.ndarray:
    """IoU of segment i with segments ``rest``; ``offset`` is added to lengths and overlaps
    (1 in the official BaSNet code, which treats seconds like pixel indices; 0 = exact)."""
    inter = np.maximum(0.0, np.minimum(end[i], end[rest]) - np.maximum(start[i], start[rest]) + offset)
    union = (end[i] - start[i] + offset) + (end[rest] - start[rest] + offset) - inter
    # 0 <= inter <= union, so an empty union (two zero-length segments) gives 0 / tiny = 0.
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


#: Up to this many segments of one class, NMS takes their IoUs from one pairwise matrix (32 MiB
#: of float64 at most, a few such temporaries alive while it is built) and runs greedy NMS by
#: whole-matrix passes, instead of one loop step per kept segment: the same result, bit for bit.
PAIRWISE_IOU_LIMIT = 2048


def _iou_matrix(start: np.ndarray, end: np.ndarray, offset: float) -> np.ndarray:
    """Every row of :func:`_iou_one_to_many` at once: the same operations on the same operands,
    so each entry is bit-identical to the one-to-many value."""
    length = end - start + offset
    inter = np.maximum(
        0.0, np.minimum(end[:, None], end[None, :]) - np.maximum(start[:, None], start[None, :]) + offset
    )
    union = length[:, None] + length[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


def temporal_nms(
    start: np.ndarray,
    end: np.ndarray,
    scores: np.ndarray,
    kind: str = "hard",
    iou_threshold: float = 0.4,
    sigma: float = 0.35,
) -> tuple[np.ndarray, np.ndarray]:
    """Non-maximum suppression of one class's segments.

    Parameters
    ----------
    start, end, scores : ndarray, shape (P,)
    kind : {"hard", "soft", "official"}
        ``hard``: repeatedly keep the best remaining segment and drop those with tIoU >=
        ``iou_threshold`` to it. ``soft``: Gaussian soft-NMS — keep the best, multiply every
        remaining score by :math:`\\exp(-\\mathrm{tIoU}^2 / \\sigma)`, repeat; nothing is
        dropped. ``official``: the CASE/BaSNet ``basnet_nms(soft_nms=True)`` — greedy NMS
        whose suppressed segments are appended after the kept ones with their score decayed
        once by :math:`\\exp(-\\mathrm{IoU}^2 / \\sigma)`, with the IoU computed on lengths
        plus 1.
    iou_threshold : float
    sigma : float

    Returns
    -------
    (ndarray of int, ndarray of float)
        Indices of the output segments in output order, and their (possibly decayed) scores.
        Soft-NMS multiplies scores, so it assumes non-negative scores (a negative OIC score
        moves toward 0 instead of down).

    Examples
    --------
    >>> s, e, sc = np.array([0.0, 1.0, 10.0]), np.array([10.0, 11.0, 20.0]), np.array([.9, .8, .7])
    >>> temporal_nms(s, e, sc, "hard", 0.5)[0].tolist()
    [0, 2]
    """
    _choice("kind", kind, NMS_KINDS)
    scores = np.asarray(scores, dtype=np.float64)
    if kind == "soft":
        live = np.arange(scores.size)
        current = scores.copy()
        order, out = [], []
        while live.size:
            best = live[_descending(current[live])[0]]
            order.append(best)
            out.append(current[best])
            live = live[live != best]
            current[live] *= np.exp(-(_iou_one_to_many(start, end, best, live, 0.0) ** 2) / sigma)
        return np.asarray(order, np.int64), np.asarray(out, np.float64)
    offset = 1.0 if kind == "official" else 0.0
    ranked = _descending(scores)
    if scores.size <= PAIRWISE_IOU_LIMIT:
        found = _greedy_by_matrix(_iou_matrix(start[ranked], end[ranked], offset), iou_threshold)
        if found is not None:
            kept, decayed, iou = found
            index = np.concatenate([ranked[kept], ranked[decayed]])
            if kind == "hard":
                return ranked[kept], scores[ranked[kept]]
            return index, np.concatenate([scores[ranked[kept]], scores[ranked[decayed]] * np.exp(-(iou**2) / sigma)])
    remaining = ranked
    kept_list: list[int] = []
    decayed_list: list[np.ndarray] = [np.empty(0, np.int64)]
    decayed_scores: list[np.ndarray] = [np.empty(0, np.float64)]
    while remaining.size:
        best, rest = remaining[0], remaining[1:]
        kept_list.append(best)
        iou = _iou_one_to_many(start, end, best, rest, offset)
        suppressed = iou >= iou_threshold
        if kind == "official":
            decayed_list.append(rest[suppressed])
            decayed_scores.append(scores[rest[suppressed]] * np.exp(-(iou[suppressed] ** 2) / sigma))
        remaining = rest[~suppressed]
    index = np.concatenate([np.asarray(kept_list, np.int64), *decayed_list])
    return index, np.concatenate([scores[kept_list], *decayed_scores])


#: Greedy NMS by whole-matrix passes gives up (and the loop takes over) after this many passes.
MAX_MATRIX_PASSES = 32


def _greedy_by_matrix(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Greedy NMS of segments ranked best first, from their IoU matrix, without a loop per kept one.

    Segment j is kept when no kept i < j has ``iou[i, j] >= threshold``. That rule has one
    solution, which the passes ``keep[j] = not any(keep[i] and iou[i, j] >= threshold, i < j)``
    reach from "all kept" (after pass t the first t ranks are settled; in practice a few passes
    settle all) — the result of Cluster-NMS (Zheng et al., 2021), identical to the loop's.

    Returns
    -------
    (kept, decayed, iou) or None
        Ranks kept, in order; ranks suppressed, in the loop's order (grouped by the kept rank
        that suppressed them, in its order, then by rank); the IoU with that suppressor. None
        after :data:`MAX_MATRIX_PASSES` passes without settling.
    """
    over = np.triu(iou >= threshold, 1)
    keep = np.ones(iou.shape[0], bool)
    for _ in range(MAX_MATRIX_PASSES):
        settled = ~over[keep].any(axis=0)
        if np.array_equal(settled, keep):
            break
        keep = settled
    else:
        return None
    kept = np.flatnonzero(keep)
    decayed = np.flatnonzero(~keep)
    if decayed.size == 0:
        return kept, decayed, np.empty(0, np.float64)
    suppressor = kept[np.argmax(over[kept][:, decayed], axis=0)]  # the first kept rank that suppresses each
    order = np.argsort(suppressor, kind="stable")  # by suppressor, then by rank (decayed is ascending)
    decayed, suppressor = decayed[order], suppressor[order]
    return kept, decayed, iou[suppressor, decayed]


# --------------------------------------------------------------------------------------------
# One video
# --------------------------------------------------------------------------------------------


def detect_video(
    cas: Any,
    foreground: Any,
    video_scores: Any,
    index: Any,
    num_snippets: int,
    duration: float | None,
    class_names: Sequence[str],
    cfg: PostprocessConfig | None = None,
) -> list[dict[str, Any]]:
    """Detections of one video (the whole test-time pipeline after the model).

    Parameters
    ----------
    cas : array_like, shape (T, C)
        Class activations after the softmax over classes (two streams averaged).
    foreground : array_like, shape (T,)
        From :func:`foreground_for_testing` with ``cfg.foreground_mode``.
    video_scores : array_like, shape (C,)
        Video-level class scores.
    index : array_like of int, shape (T,)
        Original snippet index of each row (``arange(T)`` when all snippets are kept).
    num_snippets : int
        Snippets in the whole video.
    duration : float or None
        Video duration in seconds (for ``cfg.clip_to_duration``); None if unknown.
    class_names : sequence of str, length C
    cfg : PostprocessConfig, optional
        Defaults to ``PostprocessConfig()``.

    Returns
    -------
    list of dict
        ``{"label": str, "score": float, "segment": [start, end]}`` (seconds), by descending
        score.

    Examples
    --------
    >>> cas = np.zeros((6, 2)); cas[2:4, 1] = 1.0
    >>> fg = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    >>> cfg = PostprocessConfig(scale=1, act_thresholds=(0.5,), nms="hard")
    >>> dets = detect_video(cas, fg, [0.1, 0.9], np.arange(6), 6, 3.84, ["A", "B"], cfg)
    >>> [(d["label"], d["segment"]) for d in dets]
    [('B', [1.28, 2.56])]
    """
    cfg = PostprocessConfig() if cfg is None else cfg
    cas = _array("cas", cas, 2)
    t, n_classes = cas.shape
    if t == 0:
        raise ValueError("cas has no snippets (T = 0)")
    foreground = _array("foreground", foreground, 1, t)
    video_scores = _array("video_scores", video_scores, 1, n_classes)
    if len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {n_classes} classes")
    try:
        num_snippets = operator.index(num_snippets)
    except TypeError:
        raise ValueError(f"num_snippets must be an integer, got {num_snippets!r}") from None
    index = np.asarray(index)
    if index.shape != (t,) or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"index must be {t} integers (one per row), got {index.dtype} {index.shape}")
    if num_snippets < 1 or index.min() < 0 or index.max() >= num_snippets or (np.diff(index) < 0).any():
        raise ValueError(
            f"index must be non-decreasing within [0, num_snippets = {num_snippets}), got {index.min()}..{index.max()}"
        )

    classes = select_classes(video_scores, cfg.class_threshold)
    amap = upsample(localization_map(cas[:, classes], foreground, cfg.resolved_cas_weight), cfg.scale)  # (N, n)
    thresholds = np.asarray(cfg.act_thresholds)
    # The official zeroes values below the threshold, then keeps positions > 0.
    mask = (amap.T[None] >= thresholds[:, None, None]) & (amap.T[None] > 0)  # (R, n, N)
    _, col, start, end = _runs(mask)
    if start.size == 0:
        return []
    # each class's proposals, thresholds outer, time inner: the official order
    per_class = [(c, np.flatnonzero(col == c)) for c in np.unique(col)]
    score = np.empty(start.size)
    for c, rows in per_class:
        score[rows] = (
            oic_scores(amap[:, c], start[rows], end[rows], cfg.outer_ratio)
            + cfg.video_score_weight * video_scores[classes[c]]
        )
    seconds_start = positions_to_seconds(start, index, num_snippets, cfg.scale, cfg)
    seconds_end = positions_to_seconds(end, index, num_snippets, cfg.scale, cfg)
    if cfg.clip_to_duration and duration is not None and duration > 0:
        seconds_start = np.minimum(seconds_start, duration)
        seconds_end = np.minimum(seconds_end, duration)

    labels, scores, starts, ends = [], [], [], []
    for c, rows in per_class:
        keep, kept_scores = temporal_nms(
            seconds_start[rows], seconds_end[rows], score[rows], cfg.nms, cfg.nms_iou, cfg.soft_nms_sigma
        )
        labels.extend([class_names[classes[c]]] * keep.size)
        scores.append(kept_scores)
        starts.append(seconds_start[rows[keep]])
        ends.append(seconds_end[rows[keep]])
    all_scores = np.concatenate(scores)
    order = np.argsort(-all_scores, kind="stable")
    if cfg.max_detections is not None:
        order = order[: cfg.max_detections]
    # .tolist() gives the Python floats that float() gives, at once
    out_scores = all_scores[order].tolist()
    out_starts, out_ends = np.concatenate(starts)[order].tolist(), np.concatenate(ends)[order].tolist()
    return [
        {"label": labels[i], "score": value, "segment": [lo, hi]}
        for i, value, lo, hi in zip(order.tolist(), out_scores, out_starts, out_ends, strict=True)
    ]
