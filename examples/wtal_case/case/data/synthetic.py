r"""A seeded, THUMOS14-like synthetic data set in the CASE/BaSNet layout.

The generator draws *annotations* from a model fitted to the real THUMOS14 statistics of
:mod:`case.data.constants`, and *features* from a fixed latent model with the structure that
makes weakly-supervised localisation hard. Its parameters (:class:`FeatureModel`) were
fixed before any localisation method was run on the data and are not tuned toward one; the
size knobs of :class:`SyntheticConfig` (seed, scale, snippet cap, classes, dtype) are the
only things a configuration changes. ``docs/wtal_data.md`` describes the model for users.

Annotations (per video)
-----------------------
* Classes: the video's set of classes is drawn without replacement from THUMOS14's 410
  class sets (``THUMOS14_CLASS_SET_VIDEOS``: 85% single-class videos, CricketBowling +
  CricketShot in 27 videos, CliffDiving + Diving in 26, ...), so class frequencies and
  co-occurrence follow the real set.
* Duration: ln D ~ N(4.979, 0.8803²) clipped to THUMOS14's [8.9 s, 1673 s]; T = ⌊25D/16⌋
  snippets; with a snippet cap, T = min(T, cap) and D = 0.64 T.
* Instance count: ln n from the least-squares model of ``THUMOS14_LOG_INSTANCES_MODEL``
  (class intercepts, duration, the video's typical instance length, Gaussian residual),
  n ≥ number of classes.
  This reproduces the heavy tail (median 8, mean 15, p90 ≈ 36).
* Lengths: ln ℓ = ``THUMOS14_CLASS_LOG_SECONDS[class]`` + b_video + e_instance, with b and
  e Gaussian of the between- and within-video spreads of
  ``THUMOS14_INSTANCE_LOG_SECONDS_STD``; at least 0.2 s;
  scaled down if they would cover more than 90% of the video. Instances do not overlap; the
  background time between them is split by a flat Dirichlet draw.

Features (per snippet, each stream)
-----------------------------------
Every snippet is the average of ``substeps`` = 4 sub-steps of 0.16 s, each of which is
*action* (of instance i, class c, phase p), *context* (class c) or *background* (scene s).
In a latent space of ``latent_dim`` = 64 dimensions, with unit prototype vectors:

.. math::

   z^{\mathrm{rgb}} &= \begin{cases}
       \omega_a (A^{\mathrm{rgb}}_{c,p} + \delta_i) + (1-\omega_a) S^{\mathrm{rgb}}_{v} & \text{action} \\
       \omega_c K^{\mathrm{rgb}}_{c,j} + (1-\omega_c) S^{\mathrm{rgb}}_{v} & \text{context} \\
       S^{\mathrm{rgb}}_s & \text{background}
   \end{cases} \qquad
   z^{\mathrm{flow}} = \begin{cases}
       A^{\mathrm{flow}}_{c,p} + \delta'_i & \text{action} \\
       K^{\mathrm{flow}}_{c,j} & \text{context} \\
       S^{\mathrm{flow}}_s & \text{background}
   \end{cases}

averaged over the snippet's sub-steps, plus a per-video appearance shift u (norm 0.5 RGB,
0.25 flow) and AR(1) noise (correlation 0.8 between snippets, norm 1); the feature is
``relu(z @ W + b + 0.1 ξ)`` with a fixed random decoder W (64 × 1024), b, and i.i.d. ξ:

* sub-actions: ``phases`` = 3 per class in temporal order (Dirichlet(2, 2, 2) proportions of
  an instance); phase 0 is one of ``shared_motions`` = 6 motions shared by ~3 classes each
  (run-up, swing, ...), phases 1–2 are the class's own;
* backgrounds: ``venues`` = 12 venue scenes (each class has one, ~2 classes share a venue;
  10% of videos use another venue) and ``generic_scenes`` = 20 class-agnostic scenes (studio,
  crowd, replay, ...); a video cuts between shots (exponential lengths, mean 8 s) of its venue
  (half of the shots) and 1–3 generic scenes; actions happen at the venue, so in RGB an
  action snippet is half venue (ω_a = 0.5);
* context: 0.5–3 s before and after each instance (uniform) show context
  K_{c,j} = ½ X_c + ½ G_j — half class-specific (X_c), half one of ``context_types`` = 4
  generic kinds G_j (preparation, celebration, replay, close-up; one per instance):
  background by the annotation, correlated with the class, but less than the action is;
* flow: half of the scenes are *dynamic* (crowd, camera motion): their flow prototype is
  0.85 × a random sub-action's flow + 0.15 × their own, so flow separates the static scenes
  from actions but not the dynamic ones;
* variation: each instance has its own offset δ_i (norm 0.3) — performers differ.

Cache
-----
:func:`ensure_synthetic` generates the set once into a folder whose ``manifest.json``
records the SHA-256 of every generator parameter (config, feature model, the THUMOS14
constants used and :data:`GENERATOR_VERSION`). A later call with the same parameters reuses
it; any change regenerates. Generation writes a temporary sibling folder and renames it into
place, under a file lock, so a killed generation never leaves a half-written set and two
processes (e.g. DDP ranks) never generate twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: generation is not guarded against a concurrent one (see _locked)
    fcntl = None

from .annotations import Segment, VideoRecord, activitynet_entry, num_snippets
from .constants import (
    SNIPPET_SECONDS,
    STREAM_DIM,
    THUMOS14_CLASS_LOG_INSTANCES_INTERCEPT,
    THUMOS14_CLASS_LOG_SECONDS,
    THUMOS14_CLASS_SET_VIDEOS,
    THUMOS14_CLASSES,
    THUMOS14_INSTANCE_LOG_SECONDS_STD,
    THUMOS14_INSTANCE_SECONDS,
    THUMOS14_LOG_INSTANCES_MODEL,
    THUMOS14_NUM_VIDEOS,
    THUMOS14_VIDEO_SECONDS,
)
from .errors import DatasetError, raise_if_interrupted

#: Bump when the generator's output changes for the same parameters (invalidates caches).
GENERATOR_VERSION = 1

#: Name written in a generated set's manifest; a folder without it is never overwritten.
MANIFEST_NAME = "manifest.json"
_GENERATOR_ID = "case.data.synthetic"

_SPLITS = ("train", "test")


@dataclass
class SyntheticConfig:
    """Size and seed of the synthetic set (its structure is :class:`FeatureModel`, fixed).

    Attributes
    ----------
    seed
        Seed of everything: prototypes, decoder, videos, features.
    scale
        Fraction of THUMOS14's 200 training / 210 test videos (at least 1 each). The videos
        of a smaller scale are the first videos of a larger one (same seed, same cap).
    max_snippets
        Cap on snippets per video (0: none). Longer videos are drawn shorter (T = cap), with
        instances in proportion, not cut.
    num_classes
        Number of classes, the first ``num_classes`` THUMOS14 classes (1 to 20).
    dtype
        ``"float16"`` (half the disk and reading time; I3D features lose nothing that
        matters) or ``"float32"``.

    Examples
    --------
    The default is the full THUMOS14-sized set; a CPU-sized one::

        SyntheticConfig(scale=0.5, max_snippets=512)
    """

    seed: int = 0
    scale: float = 1.0
    max_snippets: int = 0
    num_classes: int = 20
    dtype: Literal["float16", "float32"] = "float16"

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"data.synthetic.seed must be >= 0, got {self.seed}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"data.synthetic.scale must lie in (0, 1], got {self.scale}")
        if self.max_snippets < 0:
            raise ValueError(f"data.synthetic.max_snippets must be >= 0, got {self.max_snippets}")
        if not 1 <= self.num_classes <= len(THUMOS14_CLASSES):
            raise ValueError(
                f"data.synthetic.num_classes must lie in 1..{len(THUMOS14_CLASSES)}, got {self.num_classes}"
            )

    def num_videos(self, split: str) -> int:
        """Videos in ``split`` at this scale: ``max(1, round(scale * THUMOS14 count))``."""
        return max(1, int(round(self.scale * THUMOS14_NUM_VIDEOS[split])))


@dataclass(frozen=True)
class FeatureModel:
    """The generator's fixed structural parameters (see the module docstring).

    Chosen once, from the structure of the real task, before any localisation method was
    trained on the data. Only ``noise`` and ``dynamic_flow_mix`` were set with a measurement:
    the method-independent supervised linear probes of ``tools/synthetic_probe.py`` (snippet
    foreground AUC about 0.83 RGB, 0.90 flow, 0.95 both, so neither stream alone nor both
    together separate actions perfectly). Never tuned toward a method. Changing any field
    changes the data set's hash, so cached sets are regenerated.
    """

    latent_dim: int = 64
    substeps: int = 4
    phases: int = 3
    phase_concentration: float = 2.0
    shared_motions: int = 6
    venues: int = 12
    generic_scenes: int = 20
    dynamic_scene_fraction: float = 0.5
    dynamic_flow_mix: float = 0.85
    action_weight_rgb: float = 0.5
    context_weight_rgb: float = 0.5
    context_class_weight: float = 0.5
    context_types: int = 4
    context_seconds: tuple[float, float] = (0.5, 3.0)
    shot_seconds: float = 8.0
    venue_shot_probability: float = 0.5
    generic_scenes_per_video: tuple[int, int] = (1, 3)
    off_venue_probability: float = 0.1
    instance_variation: float = 0.3
    appearance_shift_rgb: float = 0.5
    appearance_shift_flow: float = 0.25
    noise: float = 1.0
    noise_correlation: float = 0.8
    iid_noise: float = 0.1
    decoder_bias: tuple[float, float] = (0.0, 0.25)
    max_foreground_fraction: float = 0.9


#: The feature model every synthetic set uses.
FEATURE_MODEL = FeatureModel()


def parameters(cfg: SyntheticConfig, model: FeatureModel = FEATURE_MODEL) -> dict[str, Any]:
    """Every input of the generator, JSON-serialisable: what the cache hash covers."""
    classes = list(THUMOS14_CLASSES[: cfg.num_classes])
    return {
        "generator": _GENERATOR_ID,
        "version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "model": asdict(model),
        "thumos14": {
            "classes": classes,
            "num_videos": THUMOS14_NUM_VIDEOS,
            "video_seconds": THUMOS14_VIDEO_SECONDS,
            "instance_seconds_min": THUMOS14_INSTANCE_SECONDS["min"],
            "log_instances_model": THUMOS14_LOG_INSTANCES_MODEL,
            "instance_log_seconds_std": THUMOS14_INSTANCE_LOG_SECONDS_STD,
            "class_log_seconds": {c: THUMOS14_CLASS_LOG_SECONDS[c] for c in classes},
            "class_log_instances_intercept": {c: THUMOS14_CLASS_LOG_INSTANCES_INTERCEPT[c] for c in classes},
            "class_set_videos": [[list(k), n] for k, n in THUMOS14_CLASS_SET_VIDEOS.items()],
        },
    }


def parameter_hash(params: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``params``."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------
# The world: prototypes and decoders shared by every video of a seed.


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclass
class _World:
    classes: list[str]
    sub_rgb: np.ndarray  # (n_sub, Z) sub-action prototypes: shared motions first
    sub_flow: np.ndarray
    class_phase: np.ndarray  # (C, phases) row of sub_* for each class and phase
    scene_rgb: np.ndarray  # (venues + generic, Z): venues first
    scene_flow: np.ndarray
    class_venue: np.ndarray  # (C,)
    context_rgb: np.ndarray  # (C, Z) class-specific part of context
    context_flow: np.ndarray
    generic_context_rgb: np.ndarray  # (context_types, Z)
    generic_context_flow: np.ndarray
    decoder: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # stream -> (W, b)


def _build_world(cfg: SyntheticConfig, model: FeatureModel) -> _World:
    rng = np.random.default_rng([cfg.seed, 0])
    z, c, p = model.latent_dim, cfg.num_classes, model.phases
    classes = list(THUMOS14_CLASSES[:c])
    shared_rgb, shared_flow = _unit(rng, model.shared_motions, z), _unit(rng, model.shared_motions, z)
    own_rgb, own_flow = _unit(rng, c * (p - 1), z), _unit(rng, c * (p - 1), z)
    class_phase = np.empty((c, p), dtype=np.int64)
    # Spread the shared motions evenly: class k's phase 0 is motion perm[k] mod M.
    class_phase[:, 0] = rng.permutation(c) % model.shared_motions
    class_phase[:, 1:] = model.shared_motions + np.arange(c * (p - 1)).reshape(c, p - 1)
    sub_rgb = np.concatenate([shared_rgb, own_rgb])
    sub_flow = np.concatenate([shared_flow, own_flow])

    n_scene = model.venues + model.generic_scenes
    scene_rgb = _unit(rng, n_scene, z)
    static_flow = _unit(rng, 1, z)[0]
    own_scene_flow = _unit(rng, n_scene, z)
    dynamic = np.zeros(n_scene, dtype=bool)
    dynamic[rng.permutation(n_scene)[: int(round(model.dynamic_scene_fraction * n_scene))]] = True
    # Static scenes share one low-motion direction (flow tells them from actions); dynamic
    # ones are pulled toward a random sub-action's motion (flow confuses them with actions).
    mimic = sub_flow[rng.integers(len(sub_flow), size=n_scene)]
    scene_flow = np.where(
        dynamic[:, None],
        model.dynamic_flow_mix * mimic + (1 - model.dynamic_flow_mix) * own_scene_flow,
        static_flow + 0.5 * own_scene_flow,
    )
    scene_flow /= np.linalg.norm(scene_flow, axis=1, keepdims=True)
    class_venue = rng.permutation(c) % model.venues

    decoder = {}
    for stream in ("rgb", "flow"):
        w = rng.standard_normal((z, STREAM_DIM)).astype(np.float32)
        b = rng.normal(model.decoder_bias[0], model.decoder_bias[1], STREAM_DIM).astype(np.float32)
        decoder[stream] = (w, b)
    return _World(
        classes=classes,
        sub_rgb=sub_rgb,
        sub_flow=sub_flow,
        class_phase=class_phase,
        scene_rgb=scene_rgb,
        scene_flow=scene_flow,
        class_venue=class_venue,
        context_rgb=_unit(rng, c, z),
        context_flow=_unit(rng, c, z),
        generic_context_rgb=_unit(rng, model.context_types, z),
        generic_context_flow=_unit(rng, model.context_types, z),
        decoder=decoder,
    )


# --------------------------------------------------------------------------------------
# One video: annotations, then features.


def _class_sets(cfg: SyntheticConfig, split: str) -> list[list[int]]:
    """Class set of each video of the full-size split: THUMOS14's class sets, shuffled.

    The multiset of the 410 real class sets is drawn without replacement, reshuffled when
    exhausted. With ``num_classes`` < 20, sets lose the classes past the first
    ``num_classes`` (CliffDiving + Diving becomes CliffDiving) and empty sets are dropped.
    """
    rng = np.random.default_rng([cfg.seed, 1 + _SPLITS.index(split)])
    index = {name: k for k, name in enumerate(THUMOS14_CLASSES[: cfg.num_classes])}
    pool = []
    for key, count in THUMOS14_CLASS_SET_VIDEOS.items():
        kept = [index[c] for c in key if c in index]
        pool.extend([kept] * count if kept else [])
    full = THUMOS14_NUM_VIDEOS[split]
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(math.ceil(full / len(pool)))])[:full]
    return [pool[k] for k in order]


def _annotate(
    world: _World, classes: list[int], cfg: SyntheticConfig, model: FeatureModel, rng: np.random.Generator
) -> tuple[float, int, np.ndarray, np.ndarray, np.ndarray]:
    """Duration (s), snippet count, and instance starts, ends (s) and classes of one video."""
    vs = THUMOS14_VIDEO_SECONDS
    duration = float(np.clip(np.exp(rng.normal(vs["log_mean"], vs["log_std"])), vs["min"], vs["max"]))
    length = num_snippets(duration)
    if cfg.max_snippets and length > cfg.max_snippets:
        length = cfg.max_snippets
        duration = length * SNIPPET_SECONDS
    span = length * SNIPPET_SECONDS  # the time the snippets cover; instances stay inside it

    spread = THUMOS14_INSTANCE_LOG_SECONDS_STD
    log_location = np.array([THUMOS14_CLASS_LOG_SECONDS[name] for name in world.classes])
    video_offset = rng.normal(0.0, spread["between_video"])
    m = THUMOS14_LOG_INSTANCES_MODEL
    intercept = [THUMOS14_CLASS_LOG_INSTANCES_INTERCEPT[name] for name in world.classes]
    log_n = (
        np.mean([intercept[k] for k in classes])
        + m["slope_log_duration"] * (np.log(duration) - m["mean_log_duration"])
        + m["slope_log_length"] * (log_location[classes].mean() + video_offset - m["mean_log_length"])
        + rng.normal(0.0, m["residual_std"])
    )
    min_len = THUMOS14_INSTANCE_SECONDS["min"]
    budget = model.max_foreground_fraction * span
    n = int(min(max(len(classes), round(math.exp(log_n))), max(1, budget // min_len)))
    classes = classes[:n]
    inst_class = np.concatenate([classes, rng.choice(classes, size=n - len(classes))]).astype(np.int64)
    rng.shuffle(inst_class)
    lengths = np.exp(log_location[inst_class] + video_offset + rng.normal(0.0, spread["within_video"], n))
    lengths = np.maximum(lengths, min_len)
    if lengths.sum() > budget:
        lengths = np.maximum(lengths * (budget / lengths.sum()), min(min_len, budget / n))
    gaps = rng.dirichlet(np.ones(n + 1)) * max(span - lengths.sum(), 0.0)
    starts = np.cumsum(gaps[:n]) + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    # Annotations are stored to 10 ms; features are generated from the stored values.
    starts = np.round(starts, 2)
    ends = np.minimum(np.round(starts + lengths, 2), round(span, 2))
    ends = np.maximum(ends, starts + 0.01)
    return duration, length, starts, ends, inst_class


def _ar1_noise(rng: np.random.Generator, length: int, dim: int, norm: float, rho: float) -> np.ndarray:
    """Stationary AR(1) noise along time, (length, dim), expected row norm ``norm``."""
    xi = rng.standard_normal((length, dim)) * (norm / math.sqrt(dim))
    out = np.empty_like(xi)
    out[0] = xi[0]
    innovation = math.sqrt(1.0 - rho * rho)
    for t in range(1, length):
        out[t] = rho * out[t - 1] + innovation * xi[t]
    return out


def _features(
    world: _World,
    model: FeatureModel,
    rng: np.random.Generator,
    primary: int,
    length: int,
    starts: np.ndarray,
    ends: np.ndarray,
    inst_class: np.ndarray,
    dtype: str,
) -> dict[str, np.ndarray]:
    """RGB and flow features (length, 1024) of one video (see the module docstring)."""
    s = model.substeps
    dt = SNIPPET_SECONDS / s
    times = (np.arange(length * s) + 0.5) * dt
    span = length * SNIPPET_SECONDS
    # kind: 0 background, 1 context, 2 action; per sub-step: class, scene, phase, instance.
    kind = np.zeros(len(times), dtype=np.int64)
    klass = np.zeros(len(times), dtype=np.int64)
    phase = np.zeros(len(times), dtype=np.int64)
    instance = np.full(len(times), -1, dtype=np.int64)

    venue = world.class_venue[primary]
    if rng.random() < model.off_venue_probability:
        venue = rng.integers(model.venues)
    lo, hi = model.generic_scenes_per_video
    generic = model.venues + rng.choice(model.generic_scenes, size=rng.integers(lo, hi + 1), replace=False)
    shot_ends = np.cumsum(rng.exponential(model.shot_seconds, size=8))
    while shot_ends[-1] < span:  # rarely more than a few extensions
        shot_ends = np.concatenate([shot_ends, shot_ends[-1] + np.cumsum(rng.exponential(model.shot_seconds, size=8))])
    n_shots = len(shot_ends)
    shot_scene = np.where(rng.random(n_shots) < model.venue_shot_probability, venue, rng.choice(generic, size=n_shots))
    scene = shot_scene[np.searchsorted(shot_ends, times)]

    bounds = np.searchsorted(times, np.stack([starts, ends], axis=1))  # sub-steps in [start, end)
    pre = rng.uniform(*model.context_seconds, size=len(starts))
    post = rng.uniform(*model.context_seconds, size=len(starts))
    ctx_bounds = np.searchsorted(times, np.stack([starts - pre, ends + post], axis=1))
    context_type = rng.integers(model.context_types, size=len(starts))
    for i, k in enumerate(inst_class):  # context first: an action overrides a neighbour's context
        a, b = ctx_bounds[i]
        kind[a:b], klass[a:b], instance[a:b] = 1, k, i
    phase_ends = np.cumsum(rng.dirichlet(np.full(model.phases, model.phase_concentration), size=len(starts)), axis=1)
    for i, k in enumerate(inst_class):
        a, b = bounds[i]
        if b <= a:  # shorter than a sub-step: occupies the nearest one
            a = min(int(np.floor(starts[i] / dt)), len(times) - 1)
            b = a + 1
        rel = (times[a:b] - starts[i]) / max(ends[i] - starts[i], 1e-9)
        kind[a:b], klass[a:b], instance[a:b] = 2, k, i
        phase[a:b] = np.minimum(np.searchsorted(phase_ends[i], rel), model.phases - 1)

    z_dim = model.latent_dim
    out = {}
    for stream in ("rgb", "flow"):
        sub = world.sub_rgb if stream == "rgb" else world.sub_flow
        scenes = world.scene_rgb if stream == "rgb" else world.scene_flow
        own, generic = (
            (world.context_rgb, world.generic_context_rgb)
            if stream == "rgb"
            else (world.context_flow, world.generic_context_flow)
        )
        wk = model.context_class_weight
        context = wk * own[klass] + (1 - wk) * generic[context_type[np.maximum(instance, 0)]]
        delta = _unit(rng, len(starts), z_dim) * model.instance_variation
        action = sub[world.class_phase[klass, phase]] + delta[np.maximum(instance, 0)]
        z = np.where((kind == 0)[:, None], scenes[scene], 0.0)
        if stream == "rgb":
            wa, wc = model.action_weight_rgb, model.context_weight_rgb
            backdrop = scenes[venue]
            z += np.where((kind == 1)[:, None], wc * context + (1 - wc) * backdrop, 0.0)
            z += np.where((kind == 2)[:, None], wa * action + (1 - wa) * backdrop, 0.0)
            shift = model.appearance_shift_rgb
        else:
            z += np.where((kind == 1)[:, None], context, 0.0)
            z += np.where((kind == 2)[:, None], action, 0.0)
            shift = model.appearance_shift_flow
        z = z.reshape(length, s, z_dim).mean(axis=1)
        z += _unit(rng, 1, z_dim) * shift
        z += _ar1_noise(rng, length, z_dim, model.noise, model.noise_correlation)
        w, b = world.decoder[stream]
        x = z.astype(np.float32) @ w
        x += b
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(model.iid_noise)
        np.maximum(x, 0.0, out=x)
        out[stream] = x.astype(dtype, copy=False)
    return out


def _videos(
    cfg: SyntheticConfig, model: FeatureModel, features: bool
) -> Iterator[tuple[str, VideoRecord, dict[str, np.ndarray] | None]]:
    world = _build_world(cfg, model)
    for split in _SPLITS:
        class_sets = _class_sets(cfg, split)
        for j in range(cfg.num_videos(split)):
            # Separate streams for annotations and features: the annotations do not depend
            # on whether (or how) features are generated.
            key = [cfg.seed, 1 + _SPLITS.index(split), j + 1]
            classes = class_sets[j]
            duration, length, starts, ends, inst_class = _annotate(
                world, classes, cfg, model, np.random.default_rng(key + [0])
            )
            segments = [Segment(float(a), float(b), world.classes[k]) for a, b, k in zip(starts, ends, inst_class)]
            record = VideoRecord(f"synthetic_{split}_{j:04d}", split, round(duration, 3), segments)
            feats = None
            if features:
                rng = np.random.default_rng(key + [1])
                feats = _features(world, model, rng, classes[0], length, starts, ends, inst_class, cfg.dtype)
            yield split, record, feats


def generate_videos(
    cfg: SyntheticConfig, model: FeatureModel = FEATURE_MODEL
) -> Iterator[tuple[str, VideoRecord, dict[str, np.ndarray]]]:
    """Yield ``(split, record, {"rgb": (T, 1024), "flow": (T, 1024)})`` for every video.

    Video ``j`` of a split depends only on (seed, split, j) and the world of the seed, so
    the videos of a smaller ``scale`` are a prefix of a larger one's (same cap).
    """
    yield from _videos(cfg, model, features=True)  # type: ignore[misc]


def synthetic_records(cfg: SyntheticConfig, model: FeatureModel = FEATURE_MODEL) -> list[VideoRecord]:
    """The annotations :func:`generate_videos` would produce, without the features (fast).

    Examples
    --------
    >>> records = synthetic_records(SyntheticConfig(scale=0.05))
    >>> len(records), records[0].subset, records[0].name
    (20, 'train', 'synthetic_train_0000')
    """
    return [record for _, record, _ in _videos(cfg, model, features=False)]


def write_synthetic(cfg: SyntheticConfig, folder: str | Path, model: FeatureModel = FEATURE_MODEL) -> dict[str, Any]:
    """Generate the set into ``folder`` (created; must not exist) in the CASE/BaSNet layout.

    Writes ``features/{train,test}/{rgb,flow}/<video>.npy``, ``split_{train,test}.txt``,
    ``gt.json`` (ActivityNet style, with durations), ``classes.txt`` and, last,
    ``manifest.json``. Not atomic by itself: :func:`ensure_synthetic` calls it on a
    temporary folder. Returns the manifest.
    """
    folder = Path(folder)
    start = time.perf_counter()
    params = parameters(cfg, model)
    for split in _SPLITS:
        for stream in ("rgb", "flow"):
            (folder / "features" / split / stream).mkdir(parents=True, exist_ok=False)
    database: dict[str, Any] = {}
    names: dict[str, list[str]] = {split: [] for split in _SPLITS}
    snippets = 0
    for split, rec, feats in generate_videos(cfg, model):
        raise_if_interrupted()
        for stream, x in feats.items():
            np.save(folder / "features" / split / stream / f"{rec.name}.npy", x)
        names[split].append(rec.name)
        snippets += len(feats["rgb"])
        database[rec.name] = activitynet_entry(split, rec.duration, rec.segments)
    for split in _SPLITS:
        (folder / f"split_{split}.txt").write_text("".join(f"{n}\n" for n in names[split]))
    (folder / "gt.json").write_text(json.dumps({"database": database}))
    (folder / "classes.txt").write_text("".join(f"{c}\n" for c in params["thumos14"]["classes"]))
    manifest = {
        "hash": parameter_hash(params),
        "parameters": params,
        "videos": {split: len(names[split]) for split in _SPLITS},
        "snippets": snippets,
        "seconds": round(time.perf_counter() - start, 3),
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a generated set in ``folder``, or None (absent or unreadable)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("parameters", {}).get("generator") != _GENERATOR_ID:
        return None
    return manifest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (a no-op where fcntl is unavailable)."""
    if fcntl is None:  # Windows: no concurrent generation support, plain sequential use works
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_synthetic(cfg: SyntheticConfig, root: str | Path, model: FeatureModel = FEATURE_MODEL) -> Path:
    """Make sure ``root`` holds the synthetic set of ``cfg``; generate it if needed.

    Parameters
    ----------
    cfg
        Seed and size of the set.
    root
        Folder of the set (e.g. ``data/synthetic-thumos14``). If it holds a set with the same
        parameter hash, nothing is done; if it holds a generated set with other parameters,
        that set is replaced; any other non-empty folder is left alone and an error raised.

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    DatasetError
        An invalid config, or ``root`` is a non-empty folder that is not a generated set.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "tiny"
    >>> _ = ensure_synthetic(SyntheticConfig(scale=0.02, max_snippets=64), root)
    >>> sorted(p.name for p in root.iterdir())
    ['classes.txt', 'features', 'gt.json', 'manifest.json', 'split_test.txt', 'split_train.txt']
    """
    root = Path(root)
    wanted = parameter_hash(parameters(cfg, model))

    def current() -> bool:
        manifest = read_manifest(root)
        return manifest is not None and manifest.get("hash") == wanted

    if current():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.parent / f".{root.name}.lock"):
        if current():  # another process generated it while we waited for the lock
            return root
        if root.exists() and read_manifest(root) is None and any(root.iterdir()):
            raise DatasetError(
                f"{root} exists and is not a generated synthetic set (no {MANIFEST_NAME}); "
                "refusing to overwrite it: choose another data.root"
            )
        # Leftovers of killed generations: safe to remove, we hold the lock.
        for stale in root.parent.glob(f".{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            write_synthetic(cfg, tmp, model)
            raise_if_interrupted()  # a Ctrl-C swallowed on the way must not commit the set
            if root.exists():
                old = root.parent / f".{root.name}.tmp-old-{uuid.uuid4().hex[:8]}"
                os.replace(root, old)
                os.replace(tmp, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root
