"""Label a global batch across ranks with ``sinkhorn(..., process_group=...)``.

Run it with torchrun, on GPUs (NCCL) or on the CPU (gloo):

    torchrun --standalone --nproc_per_node=2 examples/distributed_labelling.py

Each rank holds its own, differently sized, batch of embeddings (as with an uneven last batch)
and scores them against shared prototypes, SwAV-style; one call per rank labels the *global*
batch. The script then checks the two things that make that call worth having: the column
marginal holds over the global batch (not per rank), and every rank's labels equal its rows of
one process labelling the concatenated batch. Rank 0 prints a table; the exit code is 1 if a
check fails.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.distributed as dist

from otlabel import sinkhorn


def embeddings(rank: int, rows: int, dim: int) -> torch.Tensor:
    """This rank's batch: unit embeddings drawn from a seed of its own."""
    gen = torch.Generator().manual_seed(1000 + rank)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen, dtype=torch.float64), dim=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="rows of rank 0; rank r holds rows + 16 r")
    parser.add_argument("--clusters", type=int, default=8, help="K prototypes")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--epsilon", type=float, default=0.05)
    args = parser.parse_args()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)  # torchrun provides the rank, world size and rendezvous
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    prototypes = torch.nn.functional.normalize(
        torch.randn(args.clusters, args.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
        dim=1,
    )
    sizes = [args.rows + 16 * r for r in range(world)]
    scores = (embeddings(rank, sizes[rank], args.dim) @ prototypes.T).to(device)

    # The call: this rank's rows in, the labels of those rows out, marginals over all ranks.
    labels = sinkhorn(scores, args.epsilon, tol=1e-9, process_group=dist.group.WORLD)

    # Check 1: every column holds N_global / K over the global batch.
    col_sums = labels.sum(0)
    dist.all_reduce(col_sums)
    n_global = sum(sizes)
    col_error = ((col_sums - n_global / args.clusters).abs().max() / (n_global / args.clusters)).item()
    # Check 2: one process labelling the concatenated batch gives the same rows (every rank can
    # rebuild the global batch here, as the embeddings come from per-rank seeds).
    everything = torch.cat([embeddings(r, sizes[r], args.dim) for r in range(world)]) @ prototypes.T
    reference = sinkhorn(everything.to(device), args.epsilon, tol=1e-9)
    start = sum(sizes[:rank])
    deviation = (labels - reference[start : start + sizes[rank]]).abs().max().item()
    # A per-rank call, for contrast: its marginal holds per rank, not over the global batch.
    local = sinkhorn(scores, args.epsilon, tol=1e-9)
    local_deviation = (local - reference[start : start + sizes[rank]]).abs().max().item()

    report = torch.tensor([sizes[rank], deviation, local_deviation], dtype=torch.float64, device=device)
    gathered = [torch.empty_like(report) for _ in range(world)]
    dist.all_gather(gathered, report)
    ok = col_error < 1e-8 and max(row[1].item() for row in gathered) < 1e-6
    if rank == 0:
        print(
            f"global batch of {n_global} rows over {world} ranks ({backend}), K = {args.clusters}, "
            f"epsilon = {args.epsilon}; column-marginal error over the global batch: {col_error:.1e}\n"
        )
        print("| rank | rows | max abs diff vs one process | per-rank call instead |")
        print("|---|---|---|---|")
        for r, row in enumerate(gathered):
            print(f"| {r} | {int(row[0])} | {row[1].item():.1e} | {row[2].item():.1e} |")
        print("\nOK" if ok else "\nFAILED: the distributed labels differ from one process")
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
