"""CCC's β as a moving average (``labeling.ccc.marginal=ema``) or a relaxed marginal (``relaxed``).

The official Eq. 13 (``estimated``) stays the default, untouched; the two variants are checked
against otlabel directly, refused when misconfigured before the first step, and run end to end in
``train.py`` (the moving average resumes exactly from a checkpoint).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_train_checks import _refused, _train, data  # noqa: F401 - data is a fixture (tests/wtal_case on sys.path)

from case.checkpoint import load_checkpoint, save_checkpoint
from case.config import ConfigError, load_config
from case.labeling import CCCConfig, ccc_marginal_state, label_cluster_classes
from otlabel import foreground_marginal, sinkhorn


def _problem(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(6, 2, generator=generator, dtype=torch.float64)
    fg = (torch.rand(40, generator=generator, dtype=torch.float64) < 0.2 + 0.1 * seed).to(torch.float64)
    return logits, fg


def test_the_default_is_the_official_estimate_and_needs_no_state() -> None:
    cfg = CCCConfig()
    assert cfg.marginal == "estimated" and ccc_marginal_state(cfg) is None
    logits, fg = _problem(0)
    labels, beta = label_cluster_classes([logits], fg, cfg)
    assert torch.equal(beta, foreground_marginal(fg))
    assert torch.equal(labels.labels, sinkhorn(logits, 0.5, col_marginal=beta, n_iter=3))


def test_the_moving_average_folds_each_batch_s_estimate() -> None:
    cfg = CCCConfig(marginal="ema", marginal_momentum=0.75)
    state = ccc_marginal_state(cfg)
    ema = None
    for step in range(3):
        logits, fg = _problem(step)
        labels, beta = label_cluster_classes([logits], fg, cfg, marginal_state=state)
        estimate = foreground_marginal(fg)
        ema = estimate if ema is None else 0.75 * ema + 0.25 * estimate  # the first replaces the start
        expected = 0.99 * ema + 0.01 / 2  # the labeller's floor
        torch.testing.assert_close(beta, expected, rtol=0, atol=1e-15)
        torch.testing.assert_close(
            labels.labels, sinkhorn(logits, 0.5, col_marginal=expected, n_iter=3), rtol=0, atol=1e-14
        )
    with pytest.raises(ValueError, match="needs the moving average's state"):
        label_cluster_classes([logits], fg, cfg)


def test_the_relaxed_marginal_is_otlabel_s_col_penalty() -> None:
    logits, fg = _problem(1)
    cfg = CCCConfig(marginal="relaxed", marginal_penalty=0.3)
    labels, beta = label_cluster_classes([logits], fg, cfg)
    assert torch.equal(beta, foreground_marginal(fg))
    assert torch.equal(labels.labels, sinkhorn(logits, 0.5, col_marginal=beta, n_iter=3, col_penalty=0.3))
    assert labels.col_error > 0.01  # the labels depart from beta
    # a very strong penalty is Eq. 13
    strong, _ = label_cluster_classes([logits], fg, CCCConfig(marginal="relaxed", marginal_penalty=1e9))
    official, _ = label_cluster_classes([logits], fg, CCCConfig())
    torch.testing.assert_close(strong.labels, official.labels, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "labeling.ccc.marginal=batch",
            "labeling.ccc.marginal must be one of 'estimated', 'uniform', 'ema', 'relaxed'",
        ),
        ("labeling.ccc.marginal_momentum=1", "labeling.ccc.marginal_momentum must lie in [0, 1), got 1.0"),
        ("labeling.ccc.marginal_momentum=-0.1", "labeling.ccc.marginal_momentum must lie in [0, 1)"),
        ("labeling.ccc.marginal_penalty=0", "labeling.ccc.marginal_penalty must be a finite number > 0, got 0.0"),
        ("labeling.ccc.marginal_penalty=.inf", "labeling.ccc.marginal_penalty must be a finite number > 0"),
        ("labeling.ccc.marginal_penalty=strong", "labeling.ccc.marginal_penalty must be a number"),
    ],
)
def test_bad_settings_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(None, [override])
    assert message in str(caught.value)


def test_a_relaxed_marginal_needs_soft_ot_labels() -> None:
    with pytest.raises(ConfigError, match="marginal='relaxed' needs labeling.ccc.method='ot' and form='soft'"):
        load_config(None, ["labeling.ccc.marginal=relaxed", "labeling.ccc.form=hard"])


def test_train_py_refuses_a_bad_momentum_before_the_first_step(data: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "run"
    _refused(_train(data, out, "--set", "labeling.ccc.marginal_momentum=1.5"), out, "labeling.ccc.marginal_momentum")


def _log(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in (run / "log.jsonl").read_text().splitlines()
    ]


def test_train_py_with_a_relaxed_marginal(data: Path, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "relaxed"
    result = _train(data, run, "--set", "labeling.ccc.marginal=relaxed", "--set", "train.steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    log = _log(run)
    assert [r["step"] for r in log] == [1, 2] and all(0 < r["beta_fg"] < 1 for r in log)
    assert "ccc_marginal" not in load_checkpoint(run / "checkpoints" / "final.pt")


def test_train_py_with_a_moving_average_resumes_it_exactly(data: Path, tmp_path: Path) -> None:  # noqa: F811
    ema = ("--set", "labeling.ccc.marginal=ema", "--set", "labeling.ccc.marginal_momentum=0.5")
    reference = tmp_path / "reference"
    result = _train(data, reference, *ema)
    assert result.returncode == 0, result.stderr[-3000:]
    final = load_checkpoint(reference / "checkpoints" / "final.pt")
    assert int(final["ccc_marginal"]["ema_updates"]) == 6  # one estimate per step
    assert int(load_checkpoint(reference / "checkpoints" / "step_000004.pt")["ccc_marginal"]["ema_updates"]) == 4
    # resume from step 4: the moving average must continue, not restart
    run = tmp_path / "resumed"
    shutil.copytree(reference, run)
    for name in ("checkpoints/final.pt", "metrics.json", "predictions.json"):
        (run / name).unlink()
    result = _train(data, run, *ema, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = load_checkpoint(run / "checkpoints" / "final.pt")
    for key, value in final["ccc_marginal"].items():
        assert torch.equal(resumed["ccc_marginal"][key], value), key
    for name, tensor in final["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert _log(run) == _log(reference)
    assert (run / "metrics.json").read_text() == (reference / "metrics.json").read_text()
    # a checkpoint without the state cannot resume an ema run: one line, exit status 2
    (run / "checkpoints" / "final.pt").unlink()
    (run / "metrics.json").unlink()
    damaged = load_checkpoint(run / "checkpoints" / "step_000004.pt")
    del damaged["ccc_marginal"]
    save_checkpoint(run / "checkpoints" / "step_000004.pt", damaged)
    result = _train(data, run, *ema, "--resume")
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 2 and len(errors) == 1 and "holds no ccc_marginal state" in errors[0], result.stderr
