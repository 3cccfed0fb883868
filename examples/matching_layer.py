"""A SuperGlue-style optimal-transport matching layer, trained through otlabel's labels.

Two sets of M and N descriptors show the same points (the second set a rotated, noisy copy,
shuffled), except for some points that appear in one set only. A learned linear projection
(one per view) scores every pair; a dustbin row and column with a learned score absorb the unmatched points;
the layer's soft assignment is the transport plan of the augmented (M+1) x (N+1) score matrix
with SuperGlue's marginals (each point mass 1, each dustbin the other side's count), from
``otlabel.sinkhorn(..., differentiable=True)``. The loss is SuperGlue's: minus the log of the
plan at the true matches and at the dustbin entries of the unmatched points.

    python examples/matching_layer.py [--steps 300] [--iterations 100] [--seed 0] [--plot FILE]

Prints the loss and the match precision / recall every 25 steps; ``--plot`` draws the loss curve.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile

import torch

from otlabel import sinkhorn


# 1. The layer ------------------------------------------------------------------------------
def superglue_marginals(m: int, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """SuperGlue's masses as proportions: each point 1, the dustbins n and m, over m + n."""
    rows = torch.cat([torch.ones(m, dtype=dtype), torch.tensor([float(n)], dtype=dtype)]) / (m + n)
    cols = torch.cat([torch.ones(n, dtype=dtype), torch.tensor([float(m)], dtype=dtype)]) / (m + n)
    return rows, cols


def matching_plan(scores: torch.Tensor, dustbin: torch.Tensor, n_iter: int) -> torch.Tensor:
    """SuperGlue's soft assignment (B, M+1, N+1), each point's row or column summing to 1.

    SuperGlue's loop scales rows first and ends on the columns; otlabel scales columns first and
    ends on the rows. On the transposed problem the two schedules coincide, step for step, so
    this is SuperGlue's ``n_iter``-iteration layer (``log_optimal_transport``), not only its limit.
    """
    batch, m, n = scores.shape
    augmented = torch.cat([scores, dustbin.expand(batch, m, 1)], dim=2)
    augmented = torch.cat([augmented, dustbin.expand(batch, 1, n + 1)], dim=1)
    rows, cols = superglue_marginals(m, n, scores.dtype)
    transposed = sinkhorn(
        augmented.mT, 1.0, n_iter=n_iter, row_marginal=cols, col_marginal=rows, differentiable=True
    )  # rows of the transpose sum to (n + 1) * cols: rescale to SuperGlue's masses
    return transposed.mT * ((m + n) / (n + 1))


# 2. A synthetic matching task ----------------------------------------------------------------
def make_batch(batch: int, points: int, unmatched: int, rotation: torch.Tensor, gen: torch.Generator) -> tuple:
    """Descriptors of two views (the second rotated by the task's fixed ``rotation``, noisy) and
    the ground truth: ``match[b, i]`` is the index in the second view of point i of the first, or
    -1 (a point the second view does not show)."""
    dim = rotation.shape[0]
    first = torch.randn(batch, points, dim, generator=gen)
    second = first @ rotation + 0.3 * torch.randn(batch, points, dim, generator=gen)
    # the last ``unmatched`` points of each view are replaced by points the other view lacks
    first[:, points - unmatched :] = torch.randn(batch, unmatched, dim, generator=gen)
    second[:, points - unmatched :] = torch.randn(batch, unmatched, dim, generator=gen)
    order = torch.stack([torch.randperm(points, generator=gen) for _ in range(batch)])
    second = torch.gather(second, 1, order.unsqueeze(-1).expand(-1, -1, dim))
    position = torch.argsort(order, dim=1)  # where point j of the unshuffled second view went
    match = position.clone()
    match[:, points - unmatched :] = -1
    return first, second, match, position


def matching_loss(plan: torch.Tensor, match: torch.Tensor, position: torch.Tensor, unmatched: int) -> torch.Tensor:
    """SuperGlue's loss: -log of the plan at the true matches and at the dustbins of the
    unmatched points of both views, averaged over the points."""
    batch, m1, n1 = plan.shape
    log_plan = plan.clamp_min(1e-30).log()
    target = torch.where(match >= 0, match, n1 - 1)  # an unmatched point of view 1 -> dustbin column
    terms = [log_plan.gather(2, target.unsqueeze(-1)).squeeze(-1)]
    lost = position[:, m1 - 1 - unmatched :]  # the unmatched points of view 2 -> dustbin row
    terms.append(log_plan[:, -1, :].gather(1, lost))
    return -torch.cat(terms, dim=1).mean()


def precision_recall(plan: torch.Tensor, match: torch.Tensor) -> tuple[float, float]:
    """Mutual-argmax matches of the plan against the ground truth."""
    core = plan[:, :-1, :-1]
    best_col = plan[:, :-1, :].argmax(2)
    best_row = plan[:, :, :-1].argmax(1)
    n = core.shape[2]
    mutual = (best_col < n) & (best_row.gather(1, best_col.clamp_max(n - 1)) == torch.arange(core.shape[1]))
    predicted = torch.where(mutual, best_col, -1)
    correct = ((predicted == match) & (match >= 0)).sum().item()
    return correct / max((predicted >= 0).sum().item(), 1), correct / max((match >= 0).sum().item(), 1)


# 3. Training ----------------------------------------------------------------------------------
def train(steps: int, n_iter: int, seed: int, log_every: int = 25) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dim, points, unmatched, batch = 16, 24, 6, 16
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0]  # what the layer must learn
    # one projection per view: the views differ by a rotation, which a shared projection's
    # symmetric product P Pᵀ cannot express
    first_projection = torch.nn.Linear(dim, dim, bias=False)
    second_projection = torch.nn.Linear(dim, dim, bias=False)
    dustbin = torch.nn.Parameter(torch.tensor(1.0))
    parameters = [*first_projection.parameters(), *second_projection.parameters(), dustbin]
    optimiser = torch.optim.Adam(parameters, lr=3e-2)
    losses = []
    for step in range(1, steps + 1):
        first, second, match, position = make_batch(batch, points, unmatched, rotation, gen)
        scores = first_projection(first) @ second_projection(second).mT / math.sqrt(dim)
        plan = matching_plan(scores, dustbin, n_iter)
        loss = matching_loss(plan, match, position, unmatched)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if step % log_every == 0 or step == 1:
            precision, recall = precision_recall(plan.detach(), match)
            print(f"step {step:4d}  loss {loss.item():.4f}  precision {precision:.3f}  recall {recall:.3f}")
    return losses


def plot(losses: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(losses) + 1), losses)
    ax.set_xlabel("step")
    ax.set_ylabel("matching loss")
    ax.set_title("SuperGlue-style layer through otlabel")
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(suffix=".png", dir=folder)
    os.close(handle)
    try:
        fig.savefig(tmp, dpi=100)
        os.chmod(tmp, 0o644)  # (mkstemp makes it private)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=100, help="Sinkhorn iterations per layer (SuperGlue: 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="write the loss curve to this PNG")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.iterations < 1:
        parser.error(f"--iterations must be at least 1, got {args.iterations}")
    if args.plot and os.path.isdir(args.plot):
        parser.error(f"--plot {args.plot} is a directory; give a file name")
    losses = train(args.steps, args.iterations, args.seed)
    if args.plot:
        plot(losses, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
