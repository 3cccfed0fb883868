"""Which videos each training step sees: the data order, the held-out slice, batch loading.

Determinism: batch ``step`` is a pure function of (seed, step) (:class:`BatchOrder`) and each
video's random snippet sampling of (seed, epoch, video) (:class:`case.data.VideoDataset`), so
a run resumed from a checkpoint replays exactly the batches an uninterrupted run sees, and
``num_workers`` background processes load exactly the batches the training process would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .data import collate_items

__all__ = ["BatchOrder", "VideoSubset", "split_heldout", "load_batch", "StepBatches", "iterate_batches"]


class BatchOrder:
    """The data order: batch ``step`` is a pure function of (seed, step).

    Each epoch is a permutation of the N training videos drawn from a generator seeded with
    (seed, epoch); it is cut into ⌊N / batch_size⌋ global batches (the remainder is dropped,
    as the official code does), and rank r of W takes the r-th of W equal slices.

    Examples
    --------
    >>> order = BatchOrder(10, 4, seed=0)
    >>> order.batches_per_epoch, order.position(5)
    (2, (2, 1))
    >>> sorted(order.indices(0) + order.indices(1)) == sorted(set(order.indices(0) + order.indices(1)))
    True
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"train.batch_size ({batch_size}) must be a multiple of the number of processes ({world})")
        if num_items < batch_size:
            raise ValueError(f"train.batch_size ({batch_size}) exceeds the {num_items} training videos")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world = rank, world
        self.batches_per_epoch = num_items // batch_size
        self._epoch = -1
        self._perm: list[int] = []

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of global batch ``step`` (0-based)."""
        return divmod(step, self.batches_per_epoch)

    def permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_items, generator=g).tolist()
            self._epoch = epoch
        return self._perm

    def global_indices(self, step: int) -> list[int]:
        epoch, batch = self.position(step)
        start = batch * self.batch_size
        return self.permutation(epoch)[start : start + self.batch_size]

    def indices(self, step: int) -> list[int]:
        """This rank's videos of global batch ``step``."""
        share = self.batch_size // self.world
        return self.global_indices(step)[self.rank * share : (self.rank + 1) * share]

    def state(self, step: int) -> dict[str, int]:
        """What a checkpoint records of the data order (enough to check a resume against)."""
        epoch, batch = self.position(step)
        return {"seed": self.seed, "step": step, "epoch": epoch, "batch": batch, "batch_size": self.batch_size}


class VideoSubset(torch.utils.data.Dataset):
    """Some videos of a data set; item ``i`` is the data set's item ``indices[i]``.

    The data set draws a video's random snippets from (seed, epoch, its own index), so a
    video is sampled the same way in the subset as in the whole set.
    """

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.class_names = dataset.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[self.indices[i]]

    def batch(self, indices: Sequence[int], dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """Items ``indices`` as one batch (:meth:`case.data.VideoDataset.batch`)."""
        return self.dataset.batch([self.indices[i] for i in indices], dtype)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def split_heldout(num_videos: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, held-out) video indices: a seeded ``fraction`` of the training split held out
    for model selection (``train.select="heldout"``), at least one video."""
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    perm = torch.randperm(num_videos, generator=g).tolist()
    held = max(1, round(fraction * num_videos))
    return sorted(perm[held:]), sorted(perm[:held])


def load_batch(
    dataset: Any,
    indices: Sequence[int],
    epoch: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """The batch of videos ``indices`` (random sampling seeded by epoch and video), features in
    ``dtype`` (the forward pass's: see :meth:`case.data.VideoDataset.batch`)."""
    dataset.set_epoch(epoch)
    if hasattr(dataset, "batch"):  # VideoDataset, VideoSubset: gathered straight from the files
        batch = dataset.batch(indices, dtype)
    else:  # any other map-style data set of the same items
        batch = collate_items([dataset[i] for i in indices], dtype)
    if device is not None:
        batch["features"] = batch["features"].to(device, non_blocking=True)
        batch["label"] = batch["label"].to(device, non_blocking=True)
    return batch


class StepBatches(torch.utils.data.Dataset):
    """Item j is this rank's collated batch of step ``start + j``: a pure function of the step.

    Wrapping the batches (rather than the videos) in a DataLoader lets worker processes
    prepare the next steps while the model trains, with exactly the batches the in-process
    path gives: each item sets its own epoch, so no state has to reach the workers.
    """

    def __init__(
        self, dataset: Any, order: BatchOrder, start: int, stop: int, dtype: torch.dtype = torch.float32
    ) -> None:
        self.dataset, self.order, self.start, self.stop, self.dtype = dataset, order, start, stop, dtype

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, j: int) -> dict[str, Any]:
        step = self.start + j
        return load_batch(self.dataset, self.order.indices(step), self.order.position(step)[0], dtype=self.dtype)


def iterate_batches(
    dataset: Any, order: BatchOrder, start: int, stop: int, num_workers: int, dtype: torch.dtype = torch.float32
) -> Iterator[dict[str, Any]]:
    """The batches of steps ``start`` .. ``stop - 1`` (features in ``dtype``), loaded in
    ``num_workers`` background processes (0: inline)."""
    batches = StepBatches(dataset, order, start, stop, dtype)
    if num_workers == 0:
        return (batches[j] for j in range(len(batches)))
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        multiprocessing_context="spawn",
        prefetch_factor=2,
    )
    return iter(loader)
