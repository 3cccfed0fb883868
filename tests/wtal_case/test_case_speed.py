"""The speed settings: train.precision (bfloat16 autocast), train.compile, optim.fused.

In-process steps on small random batches (the engine tests run the settings through train.py):
each setting must train to the same losses as the float32, eager, for-loop default within its
rounding, and the float32 default must be the plain model's arithmetic, unchanged.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from case.config import ADDED_SETTINGS, load_config
from case.runfolder import RESUME_MAY_CHANGE, RunFolder
from case.trainer import _new_state, compiled, forward, train_step

CLASSES, BATCH, SNIPPETS, FEATURES = 5, 4, 48, 2048  # data.feature_dim's default


def _config(*overrides: str):
    return load_config(
        None,
        [
            "model.hidden_dim=64",
            "model.num_clusters=8",
            f"train.batch_size={BATCH}",
            "optim.lr=1e-3",
            *overrides,
        ],
    )


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    features = torch.rand(BATCH, SNIPPETS, FEATURES, generator=g)
    label = torch.zeros(BATCH, CLASSES)
    label[torch.arange(BATCH), torch.randint(CLASSES, (BATCH,), generator=g)] = 1.0
    features[:, 10:20] += 2.0 * label[:, :1, None]  # a little structure: class 0 videos have an action
    return {"features": features, "label": label}


def _losses(cfg, steps: int, compile_model: bool = False) -> tuple[list[float], torch.nn.Module]:
    state = _new_state(cfg, CLASSES, torch.device("cpu"))
    net = compiled(state.model, cfg) if compile_model else state.model
    cluster_fg, losses = state.cluster_fg, []
    for step in range(steps):
        result = train_step(net, _batch(step), cluster_fg, state.optimizer, cfg, torch.device("cpu"))
        cluster_fg = result.cluster_fg
        losses.append(float(result.loss.detach()))
    return losses, state.model


def test_float32_is_the_plain_model_s_arithmetic() -> None:
    """train.precision=float32 runs the model as it always ran (no cast, same bits)."""
    cfg = _config()
    model = _new_state(cfg, CLASSES, torch.device("cpu")).model
    x = _batch(0)["features"]
    with torch.no_grad():
        got = forward(model, x, "float32")
        for name, half, out in zip(("rgb", "flow"), x.split(FEATURES // 2, dim=-1), got, strict=True):
            stream = model.streams[name]
            embedding = stream.att_encoder(half)
            assert torch.equal(out.cas, stream.classifier(stream.cas_encoder(half)))
            assert torch.equal(out.embedding, embedding)
            assert torch.equal(out.attention, torch.sigmoid(stream.attention(embedding)).squeeze(-1))


def test_bfloat16_runs_the_encoders_in_bfloat16_and_hands_float32_scores_on() -> None:
    cfg = _config()
    model = _new_state(cfg, CLASSES, torch.device("cpu")).model
    x = _batch(0)["features"]
    with torch.no_grad():
        exact = forward(model, x, "float32")
        low = forward(model, x, "bfloat16")
        # the encoders alone, under autocast: what bfloat16 makes of them
        with torch.autocast("cpu", dtype=torch.bfloat16):
            encoded = model.streams["rgb"].att_encoder(x[..., : FEATURES // 2])
    assert encoded.dtype == torch.bfloat16
    for e, b in zip(exact, low, strict=True):
        for name, a, c in zip(e._fields, e, b, strict=True):
            assert c.dtype == torch.float32, name  # what the losses and otlabel receive
            assert not torch.equal(a, c), name  # bfloat16 really ran
        # the clustering scores otlabel labels: τ·cos in [-10, 10], off by bfloat16's rounding only
        assert float((e.cluster_logits - b.cluster_logits).abs().max()) < 0.1
        assert float(b.cluster_logits.abs().max()) <= 10.0 + 1e-4
        assert torch.allclose(e.embedding, b.embedding, rtol=2e-2, atol=2e-2)


def test_bfloat16_trains_to_the_float32_losses_within_its_rounding() -> None:
    exact, _ = _losses(_config(), 4)
    low, _ = _losses(_config("train.precision=bfloat16"), 4)
    assert all(math.isfinite(v) for v in low)
    assert low != exact  # another arithmetic...
    for a, b in zip(exact, low, strict=True):
        assert abs(a - b) <= 1e-2 * abs(a), (exact, low)  # ...the same training


def test_fused_adam_follows_the_for_loop_update() -> None:
    loop_losses, loop = _losses(_config(), 3)
    fused_losses, fused = _losses(_config("optim.fused=true"), 3)
    for a, b in zip(loop_losses, fused_losses, strict=True):
        assert abs(a - b) <= 1e-5 * abs(a)
    for (name, p), q in zip(loop.named_parameters(), fused.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_compiled_model_gives_the_eager_first_steps() -> None:
    """train.compile=true (inductor, on the CPU a C++ build: tens of seconds on 2 cores)."""
    eager_losses, eager = _losses(_config(), 2)
    compiled_losses, model = _losses(_config("train.compile=true"), 2, compile_model=True)
    for a, b in zip(eager_losses, compiled_losses, strict=True):
        assert abs(a - b) <= 1e-5 * abs(a), (eager_losses, compiled_losses)
    # the compiled module trains the model's own parameters (what checkpoints save)
    for (name, p), q in zip(eager.named_parameters(), model.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_speed_settings_are_part_of_a_run_s_configuration() -> None:
    """They change the arithmetic: a resume may not change them (train.py refuses, naming the key)."""
    for key in ("train.precision", "train.compile", "optim.fused"):
        assert key not in RESUME_MAY_CHANGE
    from case.config import to_dict
    from case.errors import RunFolderError

    saved = to_dict(_config())
    with pytest.raises(RunFolderError, match=r"train\.precision: 'float32' -> 'bfloat16'"):
        RunFolder.check_same_config(saved, _config("train.precision=bfloat16"), "config.yaml")
    with pytest.raises(RunFolderError, match=r"train\.compile: False -> True"):
        RunFolder.check_same_config(saved, _config("train.compile=true"), "config.yaml")


def test_a_run_saved_before_the_speed_settings_resumes_with_their_old_values() -> None:
    from case.config import to_dict
    from case.errors import RunFolderError

    old = copy.deepcopy(to_dict(_config()))
    for key in ADDED_SETTINGS:
        section, name = key.split(".")
        del old[section][name]
    from case.config import differences_from  # what --resume and the ablation's reuse compare with

    assert differences_from(old, _config()) == []  # what such a run used: no difference
    RunFolder.check_same_config(old, _config(), "config.yaml")
    with pytest.raises(RunFolderError, match=r"train\.precision: 'float32' -> 'bfloat16'"):
        RunFolder.check_same_config(old, _config("train.precision=bfloat16"), "config.yaml")


def test_the_machine_is_checked_for_the_speed_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the first step (prepare_run): compile without a C++ compiler is one line naming the key."""
    import case.trainer
    from case.errors import ConfigError

    case.trainer._check_speed_settings(_config("train.compile=true"), torch.device("cpu"))  # g++ is here
    monkeypatch.setattr(case.trainer.shutil, "which", lambda name: None)
    monkeypatch.setenv("CXX", "my-c++")
    with pytest.raises(ConfigError, match=r"^train\.compile is true but the C\+\+ compiler 'my-c\+\+'"):
        case.trainer._check_speed_settings(_config("train.compile=true"), torch.device("cpu"))
    case.trainer._check_speed_settings(_config(), torch.device("cpu"))  # eager needs no compiler
