"""The two-stream model of the paper's Table 9 and its size (Table 1: 2.13 M parameters, 1.60 GMACs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from case.model import CASEModel, ModelConfig, count_params_and_macs

ROOT = Path(__file__).resolve().parents[2]


def test_outputs_have_the_documented_shapes_and_ranges() -> None:
    model = CASEModel(32, 5, ModelConfig(hidden_dim=8, num_clusters=3))
    with torch.no_grad():
        rgb, flow = model(torch.rand(2, 7, 32))
    for out in (rgb, flow):
        assert out.cas.shape == (2, 7, 5) and out.attention.shape == (2, 7)
        assert out.cluster_logits.shape == (2, 7, 3) and out.embedding.shape == (2, 7, 8)
        assert bool(((out.attention > 0) & (out.attention < 1)).all())
        assert float(out.embedding.min()) >= 0  # after ReLU
        # cosine x temperature 10
        assert float(out.cluster_logits.abs().max()) <= 10.0 + 1e-5


def test_streams_read_their_own_half_of_the_features() -> None:
    model = CASEModel(8, 2, ModelConfig(hidden_dim=4, num_clusters=2))
    x = torch.rand(1, 3, 8)
    y = x.clone()
    y[..., 4:] += 1.0  # change the flow half only
    rgb_x, flow_x = model(x)
    rgb_y, flow_y = model(y)
    assert torch.equal(rgb_x.cas, rgb_y.cas) and not torch.equal(flow_x.cas, flow_y.cas)


def test_cluster_head_is_a_cosine_classifier_with_unit_prototypes() -> None:
    model = CASEModel(8, 2, ModelConfig(hidden_dim=4, num_clusters=3))
    head = model.streams["rgb"].cluster_head
    with torch.no_grad():
        head.prototypes.weight.mul_(5.0)
    with torch.no_grad():
        (rgb, _) = model(torch.rand(1, 6, 8))
    w = head.prototypes.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(3), atol=1e-6)
    emb = torch.nn.functional.normalize(rgb.embedding, dim=-1)
    assert torch.allclose(rgb.cluster_logits, 10.0 * emb @ w.t(), atol=1e-5)


def test_parameter_count_follows_table_9() -> None:
    d, h, g, k = 1024, 512, 20, 16
    per_stream = 2 * (d * h + h) + (h * g + g) + (h + 1) + h * k  # two encoders, classifier, attention, prototypes
    model = CASEModel(2 * d, g, ModelConfig(hidden_dim=h, num_clusters=k))
    assert sum(p.numel() for p in model.parameters()) == 2 * per_stream == 2_137_130


def test_macs_are_the_matrix_products_of_one_video() -> None:
    d, h, g, k, t = 64, 16, 3, 4, 10
    model = CASEModel(2 * d, g, ModelConfig(hidden_dim=h, num_clusters=k))
    profile = count_params_and_macs(model, t)
    assert profile["macs"] == 2 * t * (2 * d * h + h * g + h + h * k)


def test_profile_model_reproduces_table_1_for_thumos14() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "wtal_case" / "profile_model.py"),
            "--config",
            str(ROOT / "examples" / "wtal_case" / "configs" / "thumos14.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},  # as tests/conftest.py
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    profile = json.loads(lines[0])
    assert set(profile) == {"params", "macs"} and all(isinstance(v, int) for v in profile.values())
    assert profile["params"] == pytest.approx(2.13e6, rel=0.01)
    assert profile["macs"] == pytest.approx(1.60e9, rel=0.02)


def test_bad_model_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="feature_dim must be even"):
        CASEModel(7, 2, ModelConfig())
    with pytest.raises(ValueError, match="model.num_clusters"):
        ModelConfig(num_clusters=1)
    model = CASEModel(8, 2, ModelConfig(hidden_dim=4, num_clusters=2))
    with pytest.raises(ValueError, match=r"features must have shape \(B, T, 8\)"):
        model(torch.rand(3, 8))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--classes", "0"], "model.num_classes must be >= 1"),
        (["--classes", "-3"], "model.num_classes must be >= 1"),
        (["--snippets", "0"], "--snippets must be >= 1"),
        # a few digits too many: the allocator's refusal was a traceback of C++ frames
        (["--classes", str(2**40)], f"{2**40} classes) on 750 snippets does not fit in this machine's memory"),
        (["--snippets", str(2**40)], f"on {2**40} snippets does not fit in this machine's memory"),
        (["--classes", str(2**70)], "model.num_classes must be an integer within ±2**63"),
    ],
)
def test_profile_model_refuses_bad_sizes_in_one_line(extra: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "wtal_case" / "profile_model.py"), *extra],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},  # as tests/conftest.py
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
