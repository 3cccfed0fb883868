"""Processes, devices and collectives: everything the example does about ``torch.distributed``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank is one process with its own slice of every
global batch (:class:`case.batching.BatchOrder`); :class:`Distributed` is this process's place
in the job. The collectives below are what the labelling and the losses need to make a
multi-process step equal one process on the global batch: :func:`gather_rows` (the rank prior
ranks the snippets of the global batch; hard OT labels meet exact quotas over it),
:func:`global_sum` (prototypes are sums over every snippet, Eq. 4–5) and
:func:`mean_over_ranks` (the logged loss parts). Without a process group every one of them
is the identity, so single-process code calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import ConfigError

__all__ = [
    "Distributed",
    "gather_rows",
    "global_sum",
    "mean_over_ranks",
    "process_group_backend",
    "setup_runtime",
    "world",
]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        """Whether this is the process that writes the run folder (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    @classmethod
    def setup(cls, device: str) -> Distributed:
        """Join the process group that ``torchrun`` describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(process_group_backend(device))
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)

    def teardown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def process_group_backend(device: str) -> str:
    """NCCL for CUDA runs and gloo on the CPU; ``CASE_DIST_BACKEND`` overrides it (e.g. gloo on CUDA
    tensors, for several processes sharing one GPU where NCCL refuses a duplicate GPU)."""
    return os.environ.get("CASE_DIST_BACKEND") or ("nccl" if device.startswith("cuda") else "gloo")


def setup_runtime(device: str, threads: int = 0, env: Distributed | None = None) -> torch.device:
    """Apply ``train.threads`` and return the device of ``train.device`` (this rank's GPU under DDP:
    local rank modulo the GPU count).

    Shared by training, ``evaluate.py`` and the ablation, so that a checkpoint is evaluated
    on the setup its run used.

    Raises
    ------
    ConfigError
        ``train.device`` names a CUDA device that this machine does not have.
    """
    env = env or Distributed()
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {device!r} but no CUDA device is available; use --device cpu")
        if env.world > 1:  # one GPU per local rank; more ranks than GPUs share them round-robin
            device = f"cuda:{env.local_rank % max(1, torch.cuda.device_count())}"
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device is {device!r} but this machine has {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(torch.device(device))
    return torch.device(device)


def world(scope: str = "global") -> tuple[int, int]:
    """(rank, world size) that labelling spans: (0, 1) unless ``scope="global"`` under DDP."""
    if scope == "global" and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(tensor: Tensor, scope: str) -> tuple[Tensor, slice]:
    """Concatenate every rank's rows (rank order) and say which rows are this rank's.

    Every rank must pass the same number of rows (:class:`case.batching.BatchOrder` gives
    equal per-rank batches). Without a process group, or with ``scope="local"``, it returns
    the tensor itself and ``slice(None)``.
    """
    rank, size = world(scope)
    if size == 1:
        return tensor, slice(None)
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous())
    n = tensor.shape[0]
    return torch.cat(parts, dim=0), slice(rank * n, (rank + 1) * n)


def global_sum(tensor: Tensor, scope: str) -> Tensor:
    """Sum ``tensor`` over the ranks, differentiably (identity without a process group).

    Used for the cluster and F&B prototypes (Eq. 4–5), which are sums over all snippets of
    the batch: the backward pass sums the incoming gradients over the ranks, so that after
    DDP's gradient averaging the update equals one process on the global batch.
    """
    if world(scope)[1] == 1:
        return tensor
    from torch.distributed.nn.functional import all_reduce  # imported on use: absent from some builds

    return all_reduce(tensor)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over the ranks (one all-reduce); the values themselves in one process."""
    size = world("global")[1]
    if size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / size for k, v in zip(keys, t.tolist(), strict=True)}
