"""Each loss of CASE pinned by a small hand-checkable case (paper Eq. 1–6, 14; suppl. Eq. 15–16)."""

from __future__ import annotations

import math

import pytest
import torch

from case.labeling import LabelingConfig
from case.losses import (
    LossConfig,
    calibrated_cas,
    case_objective,
    cluster_classifier_logits,
    gbce,
    joint_objective,
    mil_video_logits,
    prototypes,
    soft_cross_entropy,
    topk_count,
    topk_foreground_labels,
    video_loss,
)
from case.model import CASEModel, ModelConfig


def test_topk_count_is_floor_with_a_minimum_of_one() -> None:
    assert topk_count(750, 8) == 93  # THUMOS14: k = T // 8
    assert topk_count(50, 2) == 25  # ActivityNet: k = T // 2
    assert topk_count(5, 8) == 1


def test_calibrated_cas_code_is_the_equal_mean_and_paper_is_the_omega_mix() -> None:
    cas = torch.tensor([[[0.2, 0.8]]])
    att = [torch.tensor([[0.5]]), torch.tensor([[0.8]])]
    # official instance_selection_function: (cas + a1 + a2) / 3
    assert torch.allclose(calibrated_cas(cas, att, "code"), torch.tensor([[[0.5, 0.7]]]))
    # paper: 0.25 * cas + 0.75 * mean(a) = 0.25 * cas + 0.4875
    assert torch.allclose(calibrated_cas(cas, att, "paper", 0.25), torch.tensor([[[0.5375, 0.6875]]]))
    with pytest.raises(ValueError, match="calibration"):
        calibrated_cas(cas, att, "other")


def test_mil_top_k_pools_the_logits_of_the_snippets_chosen_on_the_selection_score() -> None:
    # one video, T = 4, G = 2, k = 2; the selection score (not the logits) picks the snippets
    logits = torch.tensor([[[1.0, 0.0], [2.0, 4.0], [3.0, 0.0], [5.0, 8.0]]])
    select = torch.tensor([[[0.9, 0.1], [0.1, 0.8], [0.8, 0.2], [0.2, 0.9]]])
    (video,), index = mil_video_logits([logits], select, k=2)
    assert sorted(index[0, :, 0].tolist()) == [0, 2] and sorted(index[0, :, 1].tolist()) == [1, 3]
    assert torch.allclose(video, torch.tensor([[2.0, 6.0]]))  # class 0: (1 + 3)/2; class 1: (4 + 8)/2


def test_video_loss_is_cross_entropy_with_the_normalised_label_averaged_over_streams() -> None:
    # logits (0, ln 3): softmax (1/4, 3/4); label on class 1 -> -ln(3/4)
    a = torch.tensor([[0.0, math.log(3.0)]])
    assert float(video_loss([a], torch.tensor([[0.0, 1.0]]))) == pytest.approx(-math.log(0.75), abs=1e-6)
    # two classes in the label share the mass: -(ln(1/4) + ln(3/4)) / 2
    both = float(video_loss([a], torch.tensor([[1.0, 1.0]])))
    assert both == pytest.approx(-(math.log(0.25) + math.log(0.75)) / 2, abs=1e-6)
    # two streams are averaged
    b = torch.tensor([[0.0, 0.0]])
    two = float(video_loss([a, b], torch.tensor([[0.0, 1.0]])))
    assert two == pytest.approx((-math.log(0.75) + math.log(2.0)) / 2, abs=1e-6)


def test_foreground_pseudo_labels_are_the_top_k_of_the_video_classes_only() -> None:
    index = torch.tensor([[[0, 3], [1, 2]]])  # (B=1, k=2, G=2): class 0 -> {0, 1}, class 1 -> {3, 2}
    fg = topk_foreground_labels(index, torch.tensor([[1.0, 0.0]]), num_snippets=5)
    assert fg.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]
    fg = topk_foreground_labels(index, torch.tensor([[1.0, 1.0]]), num_snippets=5)
    assert fg.tolist() == [[1.0, 1.0, 1.0, 1.0, 0.0]]


def test_gbce_matches_the_hand_computed_value() -> None:
    # q = 0.5: positive p = 0.25 -> (1 - 0.5) / 0.5 = 1; negative p = 0.64 -> (1 - 0.6) / 0.5 = 0.8
    loss = gbce(torch.tensor([[0.25, 0.64]]), torch.tensor([[1.0, 0.0]]), q=0.5)
    assert float(loss) == pytest.approx(1.8, abs=1e-5)
    # positives and negatives are each averaged within a video, then over videos
    loss = gbce(
        torch.tensor([[0.25, 0.25, 0.64], [0.25, 0.64, 0.64]]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), q=0.5
    )
    assert float(loss) == pytest.approx(1.8, abs=1e-5)


def test_gbce_tends_to_the_binary_cross_entropy_as_q_tends_to_zero() -> None:
    p = torch.tensor([[0.3, 0.9]])
    y = torch.tensor([[1.0, 0.0]])
    assert float(gbce(p, y, q=1e-5)) == pytest.approx(-math.log(0.3) - math.log(0.1), rel=1e-3)


def test_soft_cross_entropy_and_prototypes_and_cluster_classifier() -> None:
    assert float(soft_cross_entropy(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2))) == pytest.approx(math.log(2))
    features = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]])
    weights = torch.tensor([[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]])
    protos = prototypes(weights, features, scope="local")  # (3,4)/5 and (0, 1.5)/1.5
    assert torch.allclose(protos, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    fb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(cluster_classifier_logits(protos, fb, 10.0), torch.tensor([[6.0, 8.0], [0.0, 10.0]]))


def test_joint_objective_weights_the_parts_by_lambda() -> None:
    parts = {
        "video": torch.tensor(1.0),
        "attention": torch.tensor(2.0),
        "scc": torch.tensor(3.0),
        "ccc": torch.tensor(4.0),
    }
    assert float(joint_objective(parts, LossConfig())) == pytest.approx(1 + 2 + 3 * 1.0 + 4 * 0.3)
    assert float(joint_objective(parts, LossConfig(lambda_scc=0.5, lambda_ccc=0.0))) == pytest.approx(4.5)
    with pytest.raises(ValueError, match="unknown loss parts"):
        joint_objective({"other": torch.tensor(1.0)}, LossConfig())


def test_loss_config_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="loss.gbce_q"):
        LossConfig(gbce_q=0.0)
    with pytest.raises(ValueError, match="loss.topk_divisor"):
        LossConfig(topk_divisor=0)
    with pytest.raises(ValueError, match="loss.omega"):
        LossConfig(omega=1.5)


def _batch(seed: int = 0, batch: int = 2, snippets: int = 24, classes: int = 4, clusters: int = 5):
    torch.manual_seed(seed)
    model = CASEModel(16, classes, ModelConfig(hidden_dim=8, num_clusters=clusters))
    labels = torch.zeros(batch, classes)
    labels[0, 1] = 1
    labels[1, [0, 3]] = 1
    return model, model(torch.rand(batch, snippets, 16)), labels


def test_case_objective_assembles_eq_14_from_its_parts_and_both_streams_share_the_labels() -> None:
    model, outputs, labels = _batch()
    cfg = LossConfig(topk_divisor=4)
    result = case_objective(outputs, labels, torch.full((5,), 0.5), cfg, LabelingConfig())
    assert set(result.parts) == {"video", "attention", "scc", "ccc"}
    expected = result.parts["video"] + result.parts["attention"] + result.parts["scc"] + 0.3 * result.parts["ccc"]
    assert float(result.loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert result.cluster_fg is not None and result.cluster_fg.shape == (5,)
    assert 0 <= float(result.cluster_fg.min()) and float(result.cluster_fg.max()) <= 1
    for key in ("H_QS", "H_QC", "H_PS_usage", "scc_col_error", "ccc_col_error", "beta_fg"):
        assert math.isfinite(result.diagnostics[key])
    # beta (Eq. 13) is the share of top-k pseudo-foreground snippets: video 0 has 1 class, video 1 two
    # (k = 6 each, possibly overlapping) out of 2 x 24 snippets
    assert 12 / 48 <= result.diagnostics["beta_fg"] <= 18 / 48
    result.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_baseline_only_skips_the_clustering_terms() -> None:
    model, outputs, labels = _batch()
    cfg = LabelingConfig()
    cfg.scc.enabled = False
    cfg.ccc.enabled = False
    result = case_objective(outputs, labels, torch.full((5,), 0.5), LossConfig(topk_divisor=4), cfg)
    assert set(result.parts) == {"video", "attention"} and result.cluster_fg is None
    assert float(result.loss.detach()) == pytest.approx(result.parts["video"] + result.parts["attention"], rel=1e-6)
