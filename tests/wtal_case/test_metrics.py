"""The detection evaluator: hand-computed cases, the official loop on random inputs, THUMOS14."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest
from anet_reference import reference_evaluate, rows_from_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from case import atomic, metrics
from case.metrics import (
    DetectionFileError,
    DetectionMetrics,
    evaluate_detection,
    format_metrics,
    load_ambiguous,
    load_ground_truth,
    write_metrics,
)


def gt_file(videos: dict[str, list[tuple[float, float, str]]], subset: str = "test", extra: dict | None = None) -> dict:
    db = {
        v: {"subset": subset, "annotations": [{"segment": [s, e], "label": lab} for s, e, lab in anns]}
        for v, anns in videos.items()
    }
    db.update(extra or {})
    return {"database": db}


def pred_file(videos: dict[str, list[tuple[float, float, str, float]]]) -> dict:
    return {
        "results": {
            v: [{"segment": [s, e], "label": lab, "score": sc} for s, e, lab, sc in items]
            for v, items in videos.items()
        }
    }


def ap_of(gt: dict, pred: dict, thr: list[float]) -> list[float]:
    return evaluate_detection(gt, pred, tiou_thresholds=thr).mAP


# ---------------------------------------------------------------------------- hand-computed


def test_interpolated_ap_by_hand() -> None:
    gt = gt_file({"v": [(0, 10, "A"), (20, 30, "A")]})
    pred = pred_file({"v": [(0, 9, "A", 0.9), (40, 50, "A", 0.8), (21, 30, "A", 0.7)]})
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3.
    assert ap_of(gt, pred, [0.5]) == pytest.approx([0.5 + 1 / 3], abs=1e-12)
    # At 0.95 nothing matches: AP 0.
    assert ap_of(gt, pred, [0.95]) == [0.0]


def test_envelope_uses_later_higher_precision() -> None:
    gt = gt_file({"v": [(0, 10, "A"), (20, 30, "A")]})
    # FP, TP, TP: precision 0, 1/2, 2/3 at recall 0, 1/2, 1; the envelope lifts the 1/2 to 2/3.
    pred = pred_file({"v": [(40, 50, "A", 0.9), (0, 10, "A", 0.8), (20, 30, "A", 0.7)]})
    assert ap_of(gt, pred, [0.5]) == pytest.approx([2 / 3], abs=1e-12)


def test_threshold_is_inclusive() -> None:
    gt = gt_file({"v": [(0, 10, "A")]})
    pred = pred_file({"v": [(0, 5, "A", 1.0)]})  # tIoU exactly 0.5
    assert ap_of(gt, pred, [0.5, 0.6]) == [1.0, 0.0]


def test_each_ground_truth_is_matched_once() -> None:
    gt = gt_file({"v": [(0, 10, "A"), (20, 30, "A")]})
    pred = pred_file({"v": [(0, 10, "A", 0.9), (0, 10, "A", 0.8), (20, 30, "A", 0.7)]})
    assert ap_of(gt, pred, [0.5]) == pytest.approx([0.5 + 1 / 3], abs=1e-12)


def test_match_takes_the_free_ground_truth_with_highest_tiou() -> None:
    # p1 overlaps g1 (tIoU 0.6) and g2 (0.75): it takes g2; p2 then still finds g1.
    gt = gt_file({"v": [(0, 10, "A"), (6, 14, "A")]})
    pred = pred_file({"v": [(4, 12, "A", 0.9), (0, 9, "A", 0.8)]})
    assert ap_of(gt, pred, [0.5]) == [1.0]


def test_score_ties_rank_the_later_prediction_first() -> None:
    gt = gt_file({"v": [(0, 10, "A")]})
    fp, tp = (50, 60, "A", 0.5), (0, 10, "A", 0.5)
    # Later listed ranks first: TP then FP -> AP 1; FP then TP -> precision 1/2 at recall 1.
    assert ap_of(gt, pred_file({"v": [fp, tp]}), [0.5]) == [1.0]
    assert ap_of(gt, pred_file({"v": [tp, fp]}), [0.5]) == [0.5]
    # Across videos the file order of videos counts the same way.
    gt2 = gt_file({"v": [(0, 10, "A")], "w": [(0, 10, "B")]})
    both = {"v": [tp], "w": [(50, 60, "A", 0.5)]}
    assert ap_of(gt2, pred_file(both), [0.5])[0] == 0.5 / 2  # class A: FP first; class B: 0
    both = {"w": [(50, 60, "A", 0.5)], "v": [tp]}
    assert ap_of(gt2, pred_file(both), [0.5])[0] == 1.0 / 2


def test_tiou_ties_take_the_later_ground_truth_first() -> None:
    # p1 = [5, 15] has tIoU 1/3 with both [0, 10] and [10, 20]; it takes the later-listed one.
    # p2 = [0, 10] then finds [0, 10] free (both TP) -- or not, when the order is swapped.
    p = pred_file({"v": [(5, 15, "A", 0.9), (0, 10, "A", 0.8)]})
    assert ap_of(gt_file({"v": [(0, 10, "A"), (10, 20, "A")]}), p, [0.3]) == [1.0]
    assert ap_of(gt_file({"v": [(10, 20, "A"), (0, 10, "A")]}), p, [0.3]) == [0.5]


def test_prediction_without_ground_truth_of_its_class_is_a_false_positive() -> None:
    gt = gt_file({"v": [(0, 10, "A")], "w": [(0, 10, "B")]})
    pred = pred_file(
        {"w": [(0, 10, "A", 0.9)], "v": [(0, 10, "A", 0.8)], "x": [(0, 10, "A", 0.95)]}
    )  # "x" is not in the ground truth at all
    m = evaluate_detection(gt, pred, tiou_thresholds=[0.5])
    # Class A: FP (x), FP (w), TP (v): precision 1/3 at recall 1. Class B: no prediction -> 0.
    assert m.per_class_ap == {"A": [pytest.approx(1 / 3)], "B": [0.0]}
    assert m.mAP == [pytest.approx(1 / 6)]
    assert m.num_outside_subset == 1 and m.num_predictions == 3


def test_video_of_another_subset_counts_as_false_positive() -> None:
    gt = gt_file(
        {"v": [(0, 10, "A")]}, extra={"t": {"subset": "train", "annotations": [{"segment": [0, 10], "label": "A"}]}}
    )
    pred = pred_file({"t": [(0, 10, "A", 0.9)], "v": [(0, 10, "A", 0.8)]})
    assert ap_of(gt, pred, [0.5]) == [0.5]


def test_labels_of_other_subsets_are_ignored_and_unknown_labels_rejected() -> None:
    gt = gt_file(
        {"v": [(0, 10, "A")]}, extra={"t": {"subset": "train", "annotations": [{"segment": [0, 10], "label": "Z"}]}}
    )
    m = evaluate_detection(gt, pred_file({"v": [(0, 10, "Z", 0.99), (0, 10, "A", 0.5)]}), tiou_thresholds=[0.5])
    assert m.mAP == [1.0] and list(m.per_class_ap) == ["A"] and m.num_predictions == 1
    with pytest.raises(DetectionFileError, match="label 'Q' is unknown"):
        evaluate_detection(gt, pred_file({"v": [(0, 10, "Q", 0.5)]}))


def test_class_without_predictions_scores_zero_and_empty_predictions() -> None:
    gt = gt_file({"v": [(0, 10, "A"), (20, 30, "B")]})
    m = evaluate_detection(gt, pred_file({"v": [(0, 10, "A", 0.5)]}), tiou_thresholds=[0.5])
    assert m.per_class_ap == {"A": [1.0], "B": [0.0]} and m.mAP == [0.5]
    m = evaluate_detection(gt, {"results": {}}, tiou_thresholds=[0.1, 0.5])
    assert m.mAP == [0.0, 0.0] and m.average == 0.0


def test_zero_length_segments_have_tiou_zero() -> None:
    # The official code computes 0/0 = NaN here and would count a hit at every threshold.
    gt = gt_file({"v": [(5, 5, "A")]})
    assert ap_of(gt, pred_file({"v": [(3, 3, "A", 1.0)]}), [0.1]) == [0.0]
    # A zero-length prediction inside a real instance has tIoU 0 too.
    gt = gt_file({"v": [(0, 10, "A")]})
    assert ap_of(gt, pred_file({"v": [(5, 5, "A", 1.0)]}), [0.1]) == [0.0]
    # With threshold 0 every pair would qualify (tIoU >= 0; the official code scores this mAP 1.0): refused.
    with pytest.raises(ValueError, match=r"thresholds in \(0, 1\]"):
        ap_of(gt, pred_file({"v": [(50, 60, "A", 1.0)]}), [0.0])


def test_string_bounds_and_extra_keys_are_accepted() -> None:
    gt = {
        "version": "x",
        "database": {
            "v": {"subset": "test", "duration": 12.0, "annotations": [{"segment": ["0.5", "10"], "label": "A"}]}
        },
    }
    pred = {
        "version": "VERSION 1.3",
        "external_data": {},
        "results": {"v": [{"segment": ["0.5", 10], "label": "A", "score": 1}]},
    }
    assert evaluate_detection(gt, pred, tiou_thresholds=[0.99]).mAP == [1.0]


def test_mean_over_thresholds_and_classes() -> None:
    gt = gt_file({"v": [(0, 10, "A"), (0, 10, "B")]})
    pred = pred_file({"v": [(0, 6, "A", 1.0), (0, 10, "B", 1.0)]})  # A: tIoU 0.6
    m = evaluate_detection(gt, pred, tiou_thresholds=[0.5, 0.7])
    assert m.per_class_ap == {"A": [1.0, 0.0], "B": [1.0, 1.0]}
    assert m.mAP == [1.0, 0.5] and m.average == 0.75
    assert m.to_dict() == {"tiou": [0.5, 0.7], "mAP": [1.0, 0.5], "average": 0.75}


# ---------------------------------------------------------------------------- bad input

BAD_GT = [
    ({"nodatabase": {}}, "'database'"),
    ({"database": {"v": {"annotations": []}}}, "'subset'"),
    ({"database": {"v": {"subset": "test", "annotations": {}}}}, "'annotations' must be a list"),
    (gt_file({"v": [(3, 1, "A")]}), "end 1.0 < start 3.0"),
    ({"database": {"v": {"subset": "test", "annotations": [{"segment": [0], "label": "A"}]}}}, "'segment' must be"),
    ({"database": {"v": {"subset": "test", "annotations": [{"segment": ["a", 1], "label": "A"}]}}}, "bad segment"),
    ({"database": {"v": {"subset": "test", "annotations": [{"segment": ["nan", 1], "label": "A"}]}}}, "finite"),
    ({"database": {"v": {"subset": "test", "annotations": [{"segment": [0, 1]}]}}}, "missing"),
    (
        {"database": {"v": {"subset": "test", "annotations": [{"segment": [0, 1], "label": 3}]}}},
        "'label' must be a string",
    ),
    (gt_file({"v": [(0, 1, "A")]}, subset="train"), "no annotated instance in subset 'test'"),
]


@pytest.mark.parametrize(("gt", "message"), BAD_GT)
def test_malformed_ground_truth_is_rejected(gt: dict, message: str) -> None:
    with pytest.raises(DetectionFileError, match=message):
        evaluate_detection(gt, {"results": {}})


GOOD_GT = gt_file({"v": [(0, 10, "A")]})
BAD_PRED = [
    ({"res": {}}, "'results'"),
    ({"results": {"v": {}}}, "must be a list"),
    ({"results": {"v": [{"label": "A", "segment": [0, 1]}]}}, r"missing key\(s\) \['score'\]"),
    ({"results": {"v": ["x"]}}, "expected an object"),
    (pred_file({"v": [(2, 1, "A", 0.5)]}), "end 1.0 < start 2.0"),
    (pred_file({"v": [(0, float("inf"), "A", 0.5)]}), "finite"),
    (pred_file({"v": [(0, 1, "A", float("nan"))]}), "'score' must be a finite number"),
    (pred_file({"v": [(0, 1, "A", "0.5")]}), "'score' must be a finite number"),
    (pred_file({"v": [(0, 1, "A", True)]}), "'score' must be a finite number"),
]


@pytest.mark.parametrize(("pred", "message"), BAD_PRED)
def test_malformed_predictions_are_rejected(pred: dict, message: str) -> None:
    with pytest.raises(DetectionFileError, match=message):
        evaluate_detection(GOOD_GT, pred)


def test_errors_name_the_file_and_entry(tmp_path: Path) -> None:
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(GOOD_GT))
    pred_path = tmp_path / "pred.json"
    pred_path.write_text(json.dumps(pred_file({"v": [(0, 1, "A", 0.5), (3, 2, "A", 0.5)]})))
    with pytest.raises(DetectionFileError, match=r"pred\.json: results\['v'\]\[1\]"):
        evaluate_detection(gt_path, pred_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DetectionFileError, match=r"bad\.json: not valid JSON"):
        evaluate_detection(gt_path, bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DetectionFileError, match="top level"):
        evaluate_detection(bad, pred_path)
    with pytest.raises(FileNotFoundError, match="predictions file not found"):
        evaluate_detection(gt_path, tmp_path / "missing.json")
    with pytest.raises(TypeError, match="must be a path or a mapping"):
        evaluate_detection(gt_path, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("thr", [[], [0.0], [0.5, 0], [1.5], [-0.1], [float("nan")], [[0.1, 0.2]], ["x"]])
def test_bad_thresholds_are_rejected(thr: list) -> None:
    with pytest.raises(ValueError, match="tiou_thresholds"):
        evaluate_detection(GOOD_GT, {"results": {}}, tiou_thresholds=thr)


# ---------------------------------------------------------------------------- vs the official loop


@st.composite
def problems(draw: st.DrawFn, ties: bool) -> tuple[dict, dict, list[float]]:
    """Small random ground truth + predictions; integer times and a few score levels make ties."""
    n_videos = draw(st.integers(1, 4))
    classes = ["A", "B", "C"][: draw(st.integers(1, 3))]
    coord = st.integers(0, 12) if ties else st.floats(0, 12, allow_nan=False)
    length = st.integers(0, 6) if ties else st.floats(0.01, 6, allow_nan=False)
    seg = st.tuples(coord, length).map(lambda t: (t[0], t[0] + t[1]))
    score = st.sampled_from([0.2, 0.5, 0.9]) if ties else st.floats(0, 1, allow_nan=False)

    videos = {}
    for v in range(n_videos):
        anns = draw(st.lists(st.tuples(seg, st.sampled_from(classes)), max_size=5))
        videos[f"v{v}"] = [(s, e, lab) for (s, e), lab in anns]
    videos["v0"].append((0, 5, classes[0]))  # at least one instance in the subset
    # Every label is known to the database; "Z" only outside the subset.
    gt = gt_file(
        videos,
        extra={
            "train": {"subset": "train", "annotations": [{"segment": [0, 1], "label": lab} for lab in [*classes, "Z"]]}
        },
    )
    pred_videos: dict[str, list] = {}
    for v in draw(st.lists(st.sampled_from([*videos, "train", "elsewhere"]), max_size=6)):
        items = draw(st.lists(st.tuples(seg, st.sampled_from([*classes, "Z"]), score), max_size=8))
        pred_videos.setdefault(v, []).extend((s, e, lab, sc) for (s, e), lab, sc in items)
    thr = draw(
        st.lists(st.sampled_from([0.1, 0.2, 0.25, 1 / 3, 0.5, 0.6, 2 / 3, 0.7, 0.95, 1.0]), min_size=1, max_size=5)
    )
    return gt, pred_file(pred_videos), thr


def assert_matches_reference(gt: dict, pred: dict, thr: list[float], sort_kind: str) -> None:
    m = evaluate_detection(gt, pred, tiou_thresholds=thr)
    per_class, m_ap = reference_evaluate(*rows_from_files(gt, pred, "test"), thr, sort_kind)
    assert list(m.per_class_ap) == list(per_class)
    for c, ap in per_class.items():
        np.testing.assert_allclose(m.per_class_ap[c], ap, rtol=0, atol=1e-9, err_msg=c)
    np.testing.assert_allclose(m.mAP, m_ap, rtol=0, atol=1e-9)
    assert m.average == pytest.approx(float(np.mean(m_ap)), abs=1e-9)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(ties=True))
def test_matches_the_official_loop_with_ties(problem: tuple[dict, dict, list[float]]) -> None:
    assert_matches_reference(*problem, sort_kind="stable")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(ties=False))
def test_matches_the_literal_official_sort_without_ties(problem: tuple[dict, dict, list[float]]) -> None:
    # Without ties the official argsort()[::-1] (NumPy's default, unstable sort) is well
    # defined, and we agree with it as written.
    gt, pred, thr = problem
    scores = [p["score"] for items in pred["results"].values() for p in items]
    if len(set(scores)) < len(scores):
        return
    assert_matches_reference(gt, pred, thr, sort_kind="quicksort")


# ---------------------------------------------------------------------------- real THUMOS14


@pytest.fixture(scope="module")
def thumos_gt(thumos14_dir: Path) -> dict:
    return json.loads((thumos14_dir / "gt.json").read_text())


def test_thumos14_ground_truth_as_predictions_scores_one(thumos_gt: dict) -> None:
    pred = {
        "results": {
            v: [{"label": a["label"], "score": 1.0, "segment": a["segment"]} for a in e["annotations"]]
            for v, e in thumos_gt["database"].items()
            if e["subset"] == "test"
        }
    }
    m = evaluate_detection(thumos_gt, pred)
    assert len(m.per_class_ap) == 20 and m.num_ground_truth == m.num_predictions
    np.testing.assert_allclose(m.mAP, 1.0, rtol=0, atol=1e-12)


def perturbed(gt: dict, seed: int, subset: str = "test") -> dict:
    """Jittered copies of the ground truth, wrong classes and random false positives."""
    rng = np.random.default_rng(seed)
    classes = sorted({a["label"] for e in gt["database"].values() for a in e["annotations"]})
    results: dict[str, list] = {}
    for v, e in gt["database"].items():
        if e["subset"] != subset:
            continue
        items = results.setdefault(v, [])
        for a in e["annotations"]:
            s, t = float(a["segment"][0]), float(a["segment"][1])
            jitter = rng.normal(0, 0.25 * (t - s) + 0.1, size=2)
            s2, t2 = sorted([max(0.0, s + jitter[0]), max(0.0, t + jitter[1])])
            label = a["label"] if rng.random() < 0.9 else classes[rng.integers(len(classes))]
            items.append({"label": label, "score": round(float(rng.random()), 2), "segment": [s2, t2]})
        for _ in range(rng.integers(0, 6)):
            s = float(rng.uniform(0, 300))
            items.append(
                {
                    "label": classes[rng.integers(len(classes))],
                    "score": round(float(rng.random()), 2),
                    "segment": [s, s + float(rng.exponential(5))],
                }
            )
    return {"results": results}


def test_thumos14_perturbed_predictions_match_the_official_loop(thumos_gt: dict) -> None:
    # Scores rounded to 2 decimals: thousands of ties, all resolved by the stated rule.
    pred = perturbed(thumos_gt, seed=0)
    assert_matches_reference(thumos_gt, pred, list(metrics.DEFAULT_TIOU_THRESHOLDS), "stable")
    m = evaluate_detection(thumos_gt, pred)
    assert 0.05 < m.average < 0.95  # a non-degenerate case


def test_thumos14_ambiguous_filtering(thumos14_dir: Path, thumos_gt: dict) -> None:
    path = thumos14_dir / "wtalc-annotations" / "Ambiguous_test.txt"
    amb = load_ambiguous(path)
    assert sum(len(s) for s in amb.values()) == 99
    pred = perturbed(thumos_gt, seed=1)
    gt = load_ground_truth(thumos_gt, "test")
    # Predictions sitting on ambiguous segments, in test videos.
    for vid, segs in list(amb.items())[:10]:
        if vid in gt.videos:
            pred["results"].setdefault(vid, []).extend(
                {"label": gt.class_names[0], "score": 0.99, "segment": [float(s), float(e)]} for s, e in segs
            )
    # Reference: drop by hand every prediction overlapping an ambiguous segment of its video.
    kept = {
        v: [
            p
            for p in items
            if not any(min(p["segment"][1], e) - max(p["segment"][0], s) > 0 for s, e in amb.get(v, np.zeros((0, 2))))
        ]
        for v, items in pred["results"].items()
    }
    removed = sum(len(i) for i in pred["results"].values()) - sum(len(i) for i in kept.values())
    m = evaluate_detection(thumos_gt, pred, ambiguous=path)
    assert m.num_ambiguous == removed > 10
    ref = evaluate_detection(thumos_gt, {"results": kept})
    assert m.mAP == ref.mAP
    assert evaluate_detection(thumos_gt, pred).mAP != m.mAP  # the filter is off by default


def test_ambiguous_file_format(tmp_path: Path) -> None:
    f = tmp_path / "amb.txt"
    f.write_text("v  1.0 2.0\n\nv Ambiguous 3 4\nw 0 1\n")
    amb = load_ambiguous(f)
    assert amb["v"].tolist() == [[1.0, 2.0], [3.0, 4.0]] and amb["w"].tolist() == [[0.0, 1.0]]
    f.write_text("v 1.0\n")
    with pytest.raises(DetectionFileError, match=r"amb\.txt:1: expected 'video start end'"):
        load_ambiguous(f)
    f.write_text("v 2.0 1.0\n")
    with pytest.raises(DetectionFileError, match="end 1.0 < start 2.0"):
        load_ambiguous(f)
    # a file that cannot be read is named (it was an IsADirectoryError or UnicodeDecodeError traceback
    # in train.py, after the whole run had been checked)
    f.write_bytes("v\xe9 1 2\n".encode("latin-1"))
    with pytest.raises(DetectionFileError, match=r"amb\.txt: not UTF-8 text \(invalid continuation byte at byte 1\)"):
        load_ambiguous(f)
    with pytest.raises(DetectionFileError, match=f"ambiguous-segment file {tmp_path} cannot be read: Is a directory"):
        load_ambiguous(tmp_path)
    gt = gt_file({"v": [(0, 10, "A")]})
    pred = pred_file({"v": [(1, 3, "A", 0.9), (0, 10, "A", 0.8), (3, 5, "A", 0.7)]})
    # [1, 3] overlaps [2, 2.5]; [0, 10] too; [3, 5] only touches [5, 6] -> kept, and alone it
    # misses at 0.5 (tIoU 0.2), where [0, 10] would have been a hit.
    m = evaluate_detection(gt, pred, tiou_thresholds=[0.5], ambiguous={"v": [[2, 2.5], [5, 6]]})
    assert m.num_ambiguous == 2 and m.num_predictions == 1 and m.mAP == [0.0]


# ---------------------------------------------------------------------------- output


def test_write_metrics_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = DetectionMetrics([0.1, 0.5], [0.75, 0.25], 0.5, {"A": [0.75, 0.25]})
    path = tmp_path / "metrics.json"
    write_metrics(path, m)
    assert json.loads(path.read_text()) == {"tiou": [0.1, 0.5], "mAP": [0.75, 0.25], "average": 0.5}

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    # fail after the temporary file is written, before it replaces the old one
    monkeypatch.setattr(atomic.os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        write_metrics(path, DetectionMetrics([0.1], [0.0], 0.0))
    assert json.loads(path.read_text())["average"] == 0.5  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_format_metrics_in_percent() -> None:
    m = DetectionMetrics([0.1, 0.5], [0.75, 0.25], 0.5, {"Jump": [1.0, 0.5], "Run": [0.5, 0.0]})
    lines = format_metrics(m, per_class=True).splitlines()
    assert lines[0].split() == ["tIoU", "0.10", "0.50", "avg"]
    assert lines[1].split() == ["mAP", "(%)", "75.00", "25.00", "50.00"]
    assert lines[2].split() == ["Jump", "100.00", "50.00", "75.00"]
    assert len(format_metrics(m).splitlines()) == 2


def test_docstring_examples_run() -> None:
    result = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
