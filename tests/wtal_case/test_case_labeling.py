"""CASE's labelling steps (Eq. 9–13) against the official code's loop, written out here, and their ablations."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from case_reference import TEMPERATURE, official_ot  # tests/wtal_case is on sys.path

from case.labeling import (
    CCCConfig,
    LabelingConfig,
    SCCConfig,
    label_cluster_classes,
    label_snippet_clusters,
    row_entropy,
    solve_labels,
    usage_entropy,
)


def official_prior(att: torch.Tensor, cluster_fg: torch.Tensor, std: float) -> torch.Tensor:
    """The official prior: argsort *permutation* of descending attention vs 1 - Q^C[:, fg]."""
    rank = torch.argsort(-att).to(att.dtype)
    n = rank.shape[0]
    d = torch.abs((rank[:, None] + 1) / n - (1.0 - cluster_fg))
    t = torch.exp(-(d**2) / (2 * std**2)) / (std * math.sqrt(2 * math.pi))
    return t / t.sum()


def rank_prior(att: torch.Tensor, cluster_fg: torch.Tensor, std: float) -> torch.Tensor:
    """Eq. 11 written out: ascending rank of each snippet / N vs the cluster's foreground level."""
    n = att.shape[0]
    ranks = torch.empty_like(att)
    ranks[torch.argsort(att)] = torch.arange(1, n + 1, dtype=att.dtype)
    d = ranks[:, None] / n - cluster_fg[None, :]
    return torch.exp(-(d**2) / (2 * std**2))


@pytest.fixture
def problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n, k = 40, 6
    cos = torch.rand(n, k, generator=g, dtype=torch.float64) * 2 - 1
    att = torch.rand(n, generator=g, dtype=torch.float64)
    cluster_fg = torch.rand(k, generator=g, dtype=torch.float64) * 0.8 + 0.1
    return cos * TEMPERATURE, att, cluster_fg


def test_scc_equals_the_official_loop_with_the_paper_epsilon(problem) -> None:
    """Eq. 12 with the rank prior of Eq. 11: otlabel epsilon 0.5 on cos x 10 == paper eps 20."""
    logits, att, cluster_fg = problem
    sigma = 0.2  # narrow enough that the prior matters
    cfg = SCCConfig(sigma=sigma)
    ours = label_snippet_clusters([logits], att, cluster_fg, cfg).labels
    reference = official_ot(logits, rank_prior(att, cluster_fg, sigma))
    assert torch.allclose(ours, reference, atol=1e-10)
    # and the prior matters at this sigma: without it (Eq. 10) the labels differ
    flat = label_snippet_clusters([logits], att, cluster_fg, SCCConfig(sigma=sigma, prior="none")).labels
    assert torch.allclose(flat, official_ot(logits), atol=1e-10)
    assert (flat - ours).abs().max() > 1e-2


def test_scc_argsort_ranking_reproduces_the_official_prior(problem) -> None:
    """The official argsort-permutation prior, up to its 1/N offset (absorbed in the cluster levels)."""
    logits, att, cluster_fg = problem
    n = att.shape[0]
    ours = label_snippet_clusters([logits], att, cluster_fg, SCCConfig(sigma=0.2, ranking="argsort")).labels
    reference = official_ot(logits, official_prior(att, cluster_fg - 1.0 / n, 0.2))
    assert torch.allclose(ours, reference, atol=1e-10)
    ranked = label_snippet_clusters([logits], att, cluster_fg, SCCConfig(sigma=0.2)).labels
    assert (ranked - ours).abs().max() > 1e-2  # the permutation is not the rank


def test_scc_pulls_foreground_snippets_to_foreground_clusters() -> None:
    # flat scores: only the prior decides; the most attended snippets go to the fg cluster
    att = torch.linspace(0, 1, 10, dtype=torch.float64)
    labels = label_snippet_clusters(
        [torch.zeros(10, 2, dtype=torch.float64)],
        att,
        torch.tensor([0.0, 1.0], dtype=torch.float64),
        SCCConfig(sigma=0.2, n_iter=50),
    ).labels
    assert labels.argmax(1).tolist() == [0] * 5 + [1] * 5


def test_scc_takes_cluster_levels_that_rounding_put_just_outside_0_1(problem) -> None:
    """Q^C[:, fg] is a probability, but float rounding can leave it at 1.0000001 (all clusters
    foreground, e.g. ``loss.topk_divisor=1``) or -1e-8; the prior must treat it as 1 or 0."""
    logits, att, _ = problem
    k = logits.shape[1]
    cfg = SCCConfig(sigma=0.2)
    for value in (1.0, 0.0):
        exact = torch.full((k,), value, dtype=torch.float64)
        rounded = torch.full((k,), float(np.float32(value) + (1.2e-7 if value else -1e-8)), dtype=torch.float64)
        got = label_snippet_clusters([logits], att, rounded, cfg).labels
        assert torch.equal(got, label_snippet_clusters([logits], att, exact, cfg).labels)


def test_co_labelling_fuses_the_streams(problem) -> None:
    logits, att, cluster_fg = problem
    other = logits.flip(0)
    cfg = SCCConfig(sigma=0.2)
    fused_logits = label_snippet_clusters([logits, other], att, cluster_fg, cfg, fusion="logits").labels
    assert torch.allclose(fused_logits, official_ot((logits + other) / 2, rank_prior(att, cluster_fg, 0.2)), atol=1e-10)
    fused_probs = label_snippet_clusters([logits, other], att, cluster_fg, cfg, fusion="probs").labels
    mean_probs = (torch.softmax(logits, -1) + torch.softmax(other, -1)) / 2
    assert torch.allclose(fused_probs, official_ot(mean_probs.log(), rank_prior(att, cluster_fg, 0.2)), atol=1e-10)
    # the fused scores differ by more than a per-row constant, so the labels differ
    assert (fused_probs - fused_logits).abs().max() > 1e-2


def test_ccc_with_the_estimated_marginal_equals_the_official_loop() -> None:
    """Eq. 13: beta = (mean y, 1 - mean y) as the column marginal of the K x 2 problem."""
    g = torch.Generator().manual_seed(1)
    logits = (torch.rand(8, 2, generator=g, dtype=torch.float64) * 2 - 1) * TEMPERATURE
    fg = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    labels, beta = label_cluster_classes([logits], fg, CCCConfig())
    assert beta.tolist() == pytest.approx([0.3, 0.7])
    assert torch.allclose(labels.labels, official_ot(logits, beta=beta), atol=1e-10)
    uniform, beta_u = label_cluster_classes([logits], fg, CCCConfig(marginal="uniform", n_iter=200))
    assert beta_u.tolist() == [0.5, 0.5]  # Eq. 9
    assert torch.allclose(uniform.labels.sum(0), torch.tensor([4.0, 4.0], dtype=torch.float64), atol=1e-6)


def test_ot_balances_the_clusters_where_argmax_collapses() -> None:
    """Table 5: without OT a dominant cluster takes every snippet; OT keeps the equipartition."""
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(60, 4, generator=g, dtype=torch.float64)
    scores[:, 0] += 3.0  # every snippet prefers cluster 0
    soft = solve_labels(scores, epsilon=0.5, n_iter=100)
    assert torch.allclose(soft.labels.sum(0), torch.full((4,), 15.0, dtype=torch.float64), atol=1e-6)
    assert soft.col_error < 1e-6 and soft.row_error < 1e-12
    hard = solve_labels(scores, epsilon=0.5, n_iter=100, form="hard")
    assert hard.labels.sum(0).tolist() == [15.0] * 4 and hard.entropy == 0.0
    argmax_hard = solve_labels(scores, epsilon=0.5, method="argmax", form="hard")
    assert argmax_hard.labels.sum(0)[0] > 50 and argmax_hard.col_error > 1.0
    argmax_soft = solve_labels(scores, epsilon=0.5, method="argmax")
    assert torch.allclose(argmax_soft.labels, torch.softmax(scores / 0.5, -1))
    assert usage_entropy(argmax_hard.labels) < usage_entropy(hard.labels) == pytest.approx(math.log(4))


def test_entropies() -> None:
    assert row_entropy(torch.full((3, 4), 0.25)) == pytest.approx(math.log(4))
    assert row_entropy(torch.eye(3)) == 0.0
    assert usage_entropy(torch.eye(4)) == pytest.approx(math.log(4))
    assert usage_entropy(torch.tensor([[1.0, 0.0], [1.0, 0.0]])) == 0.0


def test_labelling_config_rejects_bad_values() -> None:
    # values are the sections' own checks; choices are the loader's (test_case_config)
    with pytest.raises(ValueError, match="labeling.scc.sigma"):
        SCCConfig(sigma=0.0)
    with pytest.raises(ValueError, match="labeling.ccc.epsilon"):
        CCCConfig(epsilon=-1.0)
    with pytest.raises(ValueError, match="needs labeling.scc.enabled"):
        LabelingConfig(scc=SCCConfig(enabled=False))


# --------------------------------------------------------------------------- global batch over gloo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _diag(labels) -> np.ndarray:
    return np.array([labels.entropy, labels.row_error, labels.col_error])


def _global_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(3)
        logits = torch.randn(2 * 30, 5, generator=g, dtype=torch.float64) * 5
        att = torch.rand(2 * 30, generator=g, dtype=torch.float64)
        fg = (torch.rand(2 * 30, generator=g) > 0.7).to(torch.float64)
        mine = slice(rank * 30, (rank + 1) * 30)
        cluster_fg = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
        q_s = label_snippet_clusters([logits[mine]], att[mine], cluster_fg, SCCConfig(sigma=0.3))
        q_local = label_snippet_clusters([logits[mine]], att[mine], cluster_fg, SCCConfig(sigma=0.3), scope="local")
        _, beta = label_cluster_classes([torch.zeros(5, 2, dtype=torch.float64)], fg[mine], CCCConfig())
        variants = {}
        for method, form in (("ot", "soft"), ("ot", "hard"), ("argmax", "soft"), ("argmax", "hard")):
            got = solve_labels(logits[mine], epsilon=0.5, prior=att[mine, None] + cluster_fg, method=method, form=form)
            variants[f"{method}-{form}"] = np.concatenate([got.labels.numpy().ravel(), _diag(got)])
        np.savez(
            f"{out}/rank{rank}.npz",
            q=q_s.labels.numpy(),
            q_diag=_diag(q_s),
            local=q_local.labels.numpy(),
            beta=beta.numpy(),
            **variants,
        )
    finally:
        dist.destroy_process_group()


def test_global_scope_labels_the_global_batch_over_gloo(tmp_path) -> None:
    mp.spawn(_global_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(60, 5, generator=g, dtype=torch.float64) * 5
    att = torch.rand(60, generator=g, dtype=torch.float64)
    fg = (torch.rand(60, generator=g) > 0.7).to(torch.float64)
    cluster_fg = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    whole = label_snippet_clusters([logits], att, cluster_fg, SCCConfig(sigma=0.3))
    parts = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    np.testing.assert_allclose(np.concatenate([p["q"] for p in parts]), whole.labels.numpy(), atol=1e-12)
    for p in parts:  # the diagnostics are those of the global batch, on every rank
        np.testing.assert_allclose(p["q_diag"], _diag(whole), rtol=1e-9, atol=1e-12)
    for method, form in (("ot", "soft"), ("ot", "hard"), ("argmax", "soft"), ("argmax", "hard")):
        one = solve_labels(logits, epsilon=0.5, prior=att[:, None] + cluster_fg, method=method, form=form)
        got = [p[f"{method}-{form}"] for p in parts]
        labels = np.concatenate([g[:-3].reshape(30, 5) for g in got])
        np.testing.assert_allclose(labels, one.labels.numpy(), atol=1e-12, err_msg=f"{method}-{form}")
        for g in got:
            np.testing.assert_allclose(g[-3:], _diag(one), rtol=1e-9, atol=1e-12, err_msg=f"{method}-{form}")
    for r, p in enumerate(parts):
        np.testing.assert_allclose(p["beta"], [float(fg.mean()), 1 - float(fg.mean())], atol=1e-12)
        alone = label_snippet_clusters(
            [logits[r * 30 : (r + 1) * 30]], att[r * 30 : (r + 1) * 30], cluster_fg, SCCConfig(sigma=0.3)
        )
        np.testing.assert_allclose(p["local"], alone.labels.numpy(), atol=1e-12)
