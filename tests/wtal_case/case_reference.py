"""The official CASE labelling loop (``Trainer.OT`` in main_case.py), re-typed.

The yardstick for ``case.labeling`` in the tests and the peer in
``benchmarks/bench_case_step.py``; deliberately the plain loop of the official code.
"""

from __future__ import annotations

import torch

TEMPERATURE = 10.0  # cosine head
PAPER_EPS = 20.0  # the paper's "epsilon": exp(eps * cosine)


def official_ot(
    logits: torch.Tensor, prior: torch.Tensor | float = 1.0, beta: torch.Tensor | None = None
) -> torch.Tensor:
    """The official CASE ``Trainer.OT`` (main_case.py), re-typed: 3 iterations, columns then rows."""
    q = (logits / TEMPERATURE * PAPER_EPS).exp().mul(prior).t()
    k, b = q.shape
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(dim=1, keepdim=True)
        q = q / k if beta is None else q * beta.unsqueeze(1)
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return q.t() * b
