"""Post-processing: foreground, proposals, OIC, NMS, time, and the official inference."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from case import postprocess
from case.postprocess import (
    PostprocessConfig,
    detect_video,
    foreground_for_testing,
    oic_scores,
    positions_to_seconds,
    select_classes,
    temporal_nms,
    upsample,
)

SNIPPET = 16 / 25


# ---------------------------------------------------------------------------- foreground


def test_foreground_modes() -> None:
    rng = np.random.default_rng(0)
    att = rng.random(7)
    probs = rng.dirichlet(np.ones(4), size=7)
    fg = rng.random(4)
    p_t = np.array([sum(probs[t, k] * fg[k] for k in range(4)) for t in range(7)])
    np.testing.assert_allclose(foreground_for_testing(att, mode="attention"), att)
    np.testing.assert_allclose(foreground_for_testing(att, probs, fg, "cluster"), p_t)
    np.testing.assert_allclose(foreground_for_testing(att, probs, fg, "mixed"), (att + p_t) / 2)
    np.testing.assert_allclose(foreground_for_testing(att, probs, fg, "official"), (att + p_t) / 2)


def test_official_mode_equals_the_per_stream_average() -> None:
    # The official inference averages att_rgb, att_flow, P^S_rgb Q, P^S_flow Q; on the
    # stream-averaged inputs the engine passes, that is P^M.
    rng = np.random.default_rng(1)
    att_rgb, att_flow = rng.random(9), rng.random(9)
    ps_rgb, ps_flow = rng.dirichlet(np.ones(5), 9), rng.dirichlet(np.ones(5), 9)
    q = rng.random(5)
    official = (att_rgb + att_flow + ps_rgb @ q + ps_flow @ q) / 4
    ours = foreground_for_testing((att_rgb + att_flow) / 2, (ps_rgb + ps_flow) / 2, q, "official")
    np.testing.assert_allclose(ours, official, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.ones(3), None, None, "mixed"), "needs cluster_probs and cluster_fg"),
        ((np.ones(3), np.ones((3, 2)), np.ones(3), "mixed"), "cluster_fg has 3 entries"),
        ((np.ones(3), np.ones((4, 2)), np.ones(2), "cluster"), "cluster_probs must have 3 rows"),
        ((np.ones((3, 1)), None, None, "attention"), "attention must have 1 dimension"),
        ((np.array([1.0, np.nan]), None, None, "attention"), "attention contains non-finite"),
        ((np.ones(3), None, None, "both"), "mode must be one of"),
    ],
)
def test_foreground_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        foreground_for_testing(*args)


def test_select_classes_falls_back_to_the_top_class() -> None:
    assert select_classes(np.array([0.25, 0.1, 0.9]), 0.25).tolist() == [0, 2]  # inclusive
    assert select_classes(np.array([0.1, 0.2, 0.05]), 0.25).tolist() == [1]


# ---------------------------------------------------------------------------- pieces


def test_upsample_matches_scipy_extrapolating_interp1d() -> None:
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(2)
    for t in (2, 3, 17):
        values = rng.random((t, 3))
        up = upsample(values, 24)
        official = interpolate.interp1d(np.arange(t), values, kind="linear", axis=0, fill_value="extrapolate")(
            np.arange(t * 24) / 24
        )
        assert up.shape == (t * 24, 3)
        np.testing.assert_allclose(up, official, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(upsample(np.array([[0.3, 0.4]]), 3), [[0.3, 0.4]] * 3)


def test_oic_score_by_hand() -> None:
    v = np.array([0.1, 0.3, 0.9, 0.7, 0.8, 0.2, 0.0, 0.4])
    # Run [2, 5), L = 3, lambda 0.5: left margin floor(2 - 1.5) = 0 -> rows 0, 1;
    # right margin floor(4 + 1.5) = 5 -> row 5. Inner 0.8, outer (0.1 + 0.3 + 0.2) / 3.
    assert oic_scores(v, np.array([2]), np.array([5]), 0.5) == pytest.approx([0.8 - 0.2])
    # lambda 0.15 (lambda L = 0.45): the official truncation is asymmetric -- the left margin
    # starts at floor(2 - 0.45) = 1 (one row), the right one ends at floor(4 + 0.45) = 4
    # (empty). Outer = v[1].
    assert oic_scores(v, np.array([2]), np.array([5]), 0.15) == pytest.approx([0.8 - 0.3])
    # lambda 0: no margin -> outer 0.
    assert oic_scores(v, np.array([2]), np.array([5]), 0.0) == pytest.approx([0.8])
    # A run touching both ends has no margin either.
    assert oic_scores(v, np.array([0]), np.array([8]), 0.5) == pytest.approx([v.mean()])
    # Margins are clipped at the sequence ends: [6, 8) with lambda 1 -> rows 4, 5 only.
    assert oic_scores(v, np.array([6]), np.array([8]), 1.0) == pytest.approx([0.2 - 0.5])


def test_nms_kinds_by_hand() -> None:
    start, end = np.array([0.0, 1.0, 20.0, 2.0]), np.array([10.0, 11.0, 30.0, 6.0])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # Exact tIoU of [1, 11] with [0, 10] = 9/11 >= 0.4 -> dropped; [2, 6] has 4/10 -> dropped.
    keep, kept = temporal_nms(start, end, scores, "hard", 0.4)
    assert keep.tolist() == [0, 2] and kept.tolist() == [0.9, 0.7]
    keep, _ = temporal_nms(start, end, scores, "hard", 0.5)
    assert keep.tolist() == [0, 2, 3]
    # Official: IoU on lengths + 1: (9 + 1) / (11 + 11 - 10) = 5/6 and (4 + 1) / (11 + 5 - 5)
    # = 5/11; suppressed ones come after the kept ones, decayed once.
    keep, out = temporal_nms(start, end, scores, "official", 0.4, 0.35)
    assert keep.tolist() == [0, 2, 1, 3]
    np.testing.assert_allclose(
        out, [0.9, 0.7, 0.8 * np.exp(-((5 / 6) ** 2) / 0.35), 0.6 * np.exp(-((5 / 11) ** 2) / 0.35)]
    )
    # Gaussian soft-NMS: every step decays all remaining scores by the kept one's tIoU.
    keep, out = temporal_nms(start, end, scores, "soft", sigma=0.5)
    s1 = 0.8 * np.exp(-((9 / 11) ** 2) / 0.5)
    s3 = 0.6 * np.exp(-((4 / 10) ** 2) / 0.5)  # 0.6 * 0.726 = 0.436 > s1 = 0.210
    s1_after = s1 * np.exp(-((4 / 10) ** 2) / 0.5)  # [1, 11] vs [2, 6]: 4 / 10
    assert keep.tolist() == [0, 2, 3, 1]
    np.testing.assert_allclose(out, [0.9, 0.7, s3, s1_after])


@pytest.mark.parametrize("kind", ["hard", "official"])
def test_nms_pairwise_matrix_is_bit_identical_to_one_row_at_a_time(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below PAIRWISE_IOU_LIMIT greedy NMS runs on one IoU matrix (whole-matrix passes), above it
    (or when the passes do not settle) one row per kept segment: the same segments, in the same
    order, with the same scores to the last bit."""
    rng = np.random.default_rng(7)
    for _ in range(60):
        n = int(rng.integers(0, 300))
        start = np.round(rng.uniform(0, 60, n), 2)  # rounded: equal bounds and zero lengths occur
        end = start + np.round(rng.exponential(3.0, n) * (rng.random(n) > 0.1), 2)
        scores = np.round(rng.uniform(-0.2, 1.0, n), 2)  # ties, and negative OIC scores
        threshold = float(rng.choice([0.0, 0.2, 0.4, 0.7, 1.0]))
        by_matrix = temporal_nms(start, end, scores, kind, threshold, 0.35)
        monkeypatch.setattr(postprocess, "PAIRWISE_IOU_LIMIT", 0)
        by_rows = temporal_nms(start, end, scores, kind, threshold, 0.35)
        monkeypatch.undo()
        monkeypatch.setattr(postprocess, "MAX_MATRIX_PASSES", 1)  # gives up at once: the loop takes over
        gave_up = temporal_nms(start, end, scores, kind, threshold, 0.35)
        monkeypatch.undo()
        assert by_matrix[0].tolist() == by_rows[0].tolist() == gave_up[0].tolist()
        assert by_matrix[1].tobytes() == by_rows[1].tobytes() == gave_up[1].tobytes()


def test_nms_ties_keep_the_later_segment_first() -> None:
    keep, _ = temporal_nms(np.array([0.0, 0.0]), np.array([1.0, 1.0]), np.array([0.5, 0.5]), "hard", 0.5)
    assert keep.tolist() == [1]


# ---------------------------------------------------------------------------- time


def test_positions_to_seconds_with_all_snippets() -> None:
    cfg = PostprocessConfig()
    pos = np.arange(0, 10 * 24 + 1)
    expected = pos / 24 * SNIPPET
    np.testing.assert_allclose(positions_to_seconds(pos, np.arange(10), 10, 24, cfg), expected, rtol=0, atol=1e-12)
    stretch = PostprocessConfig(time_mapping="stretch")
    np.testing.assert_allclose(positions_to_seconds(pos, np.arange(10), 10, 24, stretch), expected, rtol=0, atol=1e-12)


def test_positions_to_seconds_with_uniform_sampling() -> None:
    # 750 rows sampled uniformly (floor(j * L / T), the CASE/BaSNet rule) from 2000 snippets.
    length, t = 2000, 750
    index = np.floor(np.arange(t) * length / t).astype(np.int64)
    cfg, stretch = PostprocessConfig(), PostprocessConfig(time_mapping="stretch")
    # Row boundaries map to the sampled snippets' own start times; the end to the video end.
    rows = np.arange(t + 1) * 24
    np.testing.assert_allclose(
        positions_to_seconds(rows, index, length, 24, cfg), np.append(index, length) * SNIPPET, rtol=0, atol=1e-9
    )
    # The official stretch differs by less than one snippet.
    pos = np.arange(t * 24 + 1)
    gap = np.abs(
        positions_to_seconds(pos, index, length, 24, cfg) - positions_to_seconds(pos, index, length, 24, stretch)
    )
    assert 0 < gap.max() < SNIPPET
    # Uneven samples (e.g. a random perturbation) are followed exactly at the knots.
    index = np.array([0, 1, 5, 6, 9])
    got = positions_to_seconds(np.array([0, 2, 3, 5, 6, 10]), index, 12, 2, cfg)
    np.testing.assert_allclose(got, np.array([0, 1, 3, 5.5, 6, 12]) * SNIPPET, atol=1e-12)


def test_detection_times_in_seconds() -> None:
    # All 30 snippets of a 19.2 s video; foreground (and class 0) on snippets [10, 20).
    t = 30
    cas = np.zeros((t, 2))
    cas[10:20, 0] = 1.0
    fg = np.zeros(t)
    fg[10:20] = 1.0
    one = PostprocessConfig(scale=1, act_thresholds=(0.5,))
    dets = detect_video(cas, fg, [0.9, 0.0], np.arange(t), t, t * SNIPPET, ["A", "B"], one)
    assert len(dets) == 1 and dets[0]["label"] == "A"
    assert dets[0]["segment"] == pytest.approx([10 * SNIPPET, 20 * SNIPPET], abs=1e-12)
    # Upsampled 24x, the 0.5 crossing lies half-way between snippet centres' grid points:
    # rising edge at row 9 + 12/24, falling edge after row 19 + 12/24 (end exclusive + 1/24).
    dets = detect_video(
        cas, fg, [0.9, 0.0], np.arange(t), t, t * SNIPPET, ["A", "B"], PostprocessConfig(act_thresholds=(0.5,))
    )
    assert dets[0]["segment"] == pytest.approx([9.5 * SNIPPET, (19 + 13 / 24) * SNIPPET])
    # The same video sampled every 3rd snippet (rows 0..9 = snippets 0, 3, ..., 27):
    # foreground rows [4, 7) = snippets 12..18 -> [12 * 0.64, 21 * 0.64).
    index = np.arange(0, t, 3)
    dets = detect_video(cas[index], fg[index], [0.9, 0.0], index, t, t * SNIPPET, ["A", "B"], one)
    assert dets[0]["segment"] == pytest.approx([12 * SNIPPET, 21 * SNIPPET], abs=1e-12)


def test_clip_to_duration_and_max_detections() -> None:
    t = 10
    cas = np.ones((t, 1))
    fg = np.ones(t)
    cfg = PostprocessConfig(scale=1, act_thresholds=(0.5,))
    dets = detect_video(cas, fg, [1.0], np.arange(t), t, 5.0, ["A"], cfg)
    assert dets[0]["segment"] == [0.0, 5.0]
    cfg = PostprocessConfig(scale=1, act_thresholds=(0.5,), clip_to_duration=False)
    assert detect_video(cas, fg, [1.0], np.arange(t), t, 5.0, ["A"], cfg)[0]["segment"][1] == pytest.approx(t * SNIPPET)
    rng = np.random.default_rng(3)
    cas, fg = rng.random((40, 3)), rng.random(40)
    everything = detect_video(cas, fg, [0.9, 0.8, 0.1], np.arange(40), 40, None, "ABC")
    top = detect_video(cas, fg, [0.9, 0.8, 0.1], np.arange(40), 40, None, "ABC", PostprocessConfig(max_detections=5))
    assert len(everything) > 5 and top == everything[:5]
    scores = [d["score"] for d in everything]
    assert scores == sorted(scores, reverse=True)
    assert {d["label"] for d in everything} == {"A", "B"}  # class threshold 0.25


# ---------------------------------------------------------------------------- vs official


def official_video(
    cas_rgb_sm: np.ndarray,
    cas_flow_sm: np.ndarray,
    att: tuple,
    pt: tuple,
    video_scores: np.ndarray,
    num_snippets: int,
    act_thresh: np.ndarray,
    scale: int = 24,
    class_thresh: float = 0.25,
    gamma_cfg: float = 0.15,
    nms_thresh: float = 0.4,
    nms_alpha: float = 0.35,
) -> list[tuple]:
    """Loop re-statement of the official ``inference_case.py`` for one video (after the model).

    Written from the logic of the official ``instance_selection_function``,
    ``upgrade_resolution``, ``get_proposal_oic`` (called, as there, with the configured gamma
    in the position of ``lambda_``) and ``basnet_nms(soft_nms=True)``.
    """
    interpolate = pytest.importorskip("scipy.interpolate")
    t = cas_rgb_sm.shape[0]
    actionness = [a[:, None] for a in (*att, *pt)]  # (T, 1) each, broadcast over classes
    combined = (0.5 * cas_flow_sm + 0.5 * cas_rgb_sm + sum(actionness)) / (1 + len(actionness))
    score_np = (video_scores >= class_thresh).astype(float)
    if np.all(score_np == 0):
        score_np[np.argmax(video_scores)] = 1
    pred = np.where(score_np > class_thresh)[0]
    cas_pred = combined[:, pred].reshape(t, -1, 1)
    cas_pred = interpolate.interp1d(np.arange(t), cas_pred, kind="linear", axis=0, fill_value="extrapolate")(
        np.arange(0, t, 1 / scale)
    )
    lambda_, gamma = gamma_cfg, 0.2  # the swap: the 9th positional argument is lambda_
    t_factor = (16 * num_snippets) / (scale * t * 25)
    proposal_dict: dict[int, list] = {}
    for thr in act_thresh:
        cas_temp = cas_pred.copy()
        cas_temp[np.where(cas_temp[:, :, 0] < thr)] = 0
        for i in range(len(pred)):
            pos = np.where(cas_temp[:, i, 0] > 0)[0]
            if not pos.any():
                continue
            for grp in np.split(pos, np.where(np.diff(pos) != 1)[0] + 1):
                inner = np.mean(cas_pred[grp, i, 0])
                n = len(grp)
                outer_s = max(0, int(grp[0] - lambda_ * n))
                outer_e = min(int(cas_pred.shape[0] - 1), int(grp[-1] + lambda_ * n))
                outer_idx = list(range(outer_s, int(grp[0]))) + list(range(int(grp[-1] + 1), outer_e + 1))
                outer = np.mean(cas_pred[outer_idx, i, 0]) if outer_idx else 0
                score = inner - outer + gamma * video_scores[pred[i]]
                proposal_dict.setdefault(pred[i], []).append(
                    [pred[i], score, grp[0] * t_factor, (grp[-1] + 1) * t_factor]
                )
    out = []
    for props in proposal_dict.values():
        props = np.array(props)
        x1, x2, sc = props[:, 2], props[:, 3], props[:, 1]
        areas = x2 - x1 + 1
        order = sc.argsort()[::-1]
        keep, not_keep = [], []
        while order.size > 0:
            i = order[0]
            keep.append(props[i].tolist())
            xx1 = np.maximum(x1[i], x1[order[1:]])
            xx2 = np.minimum(x2[i], x2[order[1:]])
            inter = np.maximum(0.0, xx2 - xx1 + 1)
            iou = inter / (areas[i] + areas[order[1:]] - inter)
            inv = np.where(iou >= nms_thresh)[0]
            mod = props[order[inv + 1]]
            for k in range(mod.shape[0]):
                mod[k, 1] = mod[k, 1] * np.exp(-np.square(iou[inv][k]) / nms_alpha)
            not_keep.extend(mod.tolist())
            order = order[np.where(iou < nms_thresh)[0] + 1]
        out.extend(keep + not_keep)
    return sorted((int(c), s, a, b) for c, s, a, b in out)


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_official_inference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t, n_classes, k = int(rng.integers(20, 80)), 4, 6
    num_snippets = int(t * rng.uniform(1, 3))

    # Smooth-ish random signals so that runs are longer than a point.
    def smooth(x: np.ndarray) -> np.ndarray:
        kernel = np.ones(5) / 5
        return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, x)

    logits = smooth(rng.normal(0, 3, (2, t, n_classes)).reshape(2 * t, n_classes))
    cas_rgb = np.exp(logits[:t]) / np.exp(logits[:t]).sum(1, keepdims=True)
    cas_flow = np.exp(logits[t:]) / np.exp(logits[t:]).sum(1, keepdims=True)
    att = (smooth(rng.random((t, 1)))[:, 0], smooth(rng.random((t, 1)))[:, 0])
    ps = (rng.dirichlet(np.ones(k), t), rng.dirichlet(np.ones(k), t))
    q = rng.random(k)
    pt = (ps[0] @ q, ps[1] @ q)
    video_scores = rng.dirichlet(np.ones(n_classes)) if seed % 2 else rng.random(n_classes) * 0.3
    act = np.arange(0.1, 1.0, 0.1)
    expected = official_video(cas_rgb, cas_flow, att, pt, video_scores, num_snippets, act)

    cfg = PostprocessConfig(
        foreground_mode="official", act_thresholds=tuple(act), time_mapping="stretch", clip_to_duration=False
    )
    fg = foreground_for_testing((att[0] + att[1]) / 2, (ps[0] + ps[1]) / 2, q, cfg.foreground_mode)
    index = np.floor(np.arange(t) * num_snippets / t).astype(np.int64)
    dets = detect_video(
        (cas_rgb + cas_flow) / 2, fg, video_scores, index, num_snippets, None, [str(c) for c in range(n_classes)], cfg
    )
    got = sorted((int(d["label"]), d["score"], *d["segment"]) for d in dets)
    assert len(expected) > 3 and len(got) == len(expected)
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cas_weight": 1.5}, "postprocess.cas_weight"),
        ({"act_thresholds": ()}, "postprocess.act_thresholds"),
        ({"act_thresholds": (0.1, float("nan"))}, "postprocess.act_thresholds"),
        ({"scale": 0}, "postprocess.scale"),
        ({"outer_ratio": -0.1}, "postprocess.outer_ratio"),
        ({"video_score_weight": float("inf")}, "postprocess.video_score_weight"),
        ({"nms_iou": 2.0}, r"postprocess.nms_iou must lie in \[0, 1\]"),
        ({"nms_iou": -0.1}, "postprocess.nms_iou"),
        ({"soft_nms_sigma": 0.0}, "postprocess.soft_nms_sigma"),
        ({"max_detections": 0}, "postprocess.max_detections"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    # values are the section's own checks; choices and types (nms, scale=2.5) are the loader's
    with pytest.raises(ValueError, match=message):
        PostprocessConfig(**kwargs)


def test_config_defaults_and_weights() -> None:
    cfg = PostprocessConfig(act_thresholds=[0.2, 0.4])  # lists from YAML become tuples
    assert cfg.act_thresholds == (0.2, 0.4)
    assert cfg.scale == 24
    assert (cfg.outer_ratio, cfg.video_score_weight) == (0.15, 0.2)
    assert cfg.resolved_cas_weight == pytest.approx(0.2)
    baseline = PostprocessConfig(foreground_mode="attention")
    assert baseline.resolved_cas_weight == pytest.approx(1 / 3)
    assert PostprocessConfig(cas_weight=0.5).resolved_cas_weight == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cas": np.ones(5)}, "cas must have 2 dimension"),
        ({"cas": np.ones((0, 2))}, "no snippets"),
        ({"foreground": np.ones(4)}, "foreground must have 5 rows"),
        ({"video_scores": np.ones(3)}, "video_scores must have 2 rows"),
        ({"video_scores": np.array([np.inf, 0])}, "video_scores contains non-finite"),
        ({"class_names": ["A"]}, "class_names has 1 names"),
        ({"index": np.arange(5.0)}, "index must be 5 integers"),
        ({"index": np.array([0, 1, 3, 2, 4])}, "non-decreasing"),
        ({"index": np.arange(5) + 1}, "within"),
        ({"num_snippets": 5.5}, "num_snippets must be an integer"),
    ],
)
def test_detect_video_rejects_bad_input(change: dict, message: str) -> None:
    args = {
        "cas": np.ones((5, 2)),
        "foreground": np.ones(5),
        "video_scores": np.ones(2),
        "index": np.arange(5),
        "num_snippets": 5,
        "duration": 3.2,
        "class_names": ["A", "B"],
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        detect_video(**args)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(postprocess)
    assert result.attempted > 0 and result.failed == 0
