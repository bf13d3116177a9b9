"""Epoch-seeded, self-sharding batch sampler shared by both loading paths.

The trainer runs with ``use_distributed_sampler=False``; sharding happens here:

* ``mode="train"``: the epoch's order is ``randperm(N)`` seeded by (seed, epoch), identical on
  every rank; rank r takes ``order[r::world]`` truncated to ``N // world`` indices, so shards are
  disjoint and every rank runs the same number of batches (up to ``world - 1`` samples sit out
  each epoch, a different set every epoch).
* ``mode="eval"``: indices in order, rank r takes the contiguous block
  ``[N*r//world, N*(r+1)//world)``: no padding and no duplicates, so sums/counts gathered over
  ranks equal a single-process evaluation exactly. Block sizes differ by at most one sample, so
  batch counts may differ by one between ranks: evaluation steps must not run per-step
  collectives (epoch-end metric sync is fine).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler

from robustlab.data.seeding import generator_for
from robustlab.errors import ConfigError

MODES = ("train", "eval")


class ShardedBatchSampler(Sampler[Tensor]):
    """Yields this rank's batches as int64 index tensors; ``set_epoch`` reseeds the shuffle.

    Use as ``DataLoader(batch_dataset, sampler=..., batch_size=None)``: Lightning calls
    ``set_epoch(epoch)`` on ``dataloader.sampler`` before every epoch.
    ``drop_last`` (train only) drops the final incomplete batch when at least one full batch
    exists; a shard smaller than ``batch_size`` still gives one (smaller) batch.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        mode: str = "train",
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if mode == "train" and num_samples < world_size:
            raise ConfigError(
                f"{num_samples} training images cannot be split over {world_size} processes; "
                "use more data (data.samples_per_class) or fewer devices"
            )
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.mode = mode
        self.drop_last = bool(drop_last) and mode == "train"
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def shard_size(self) -> int:
        """Number of samples this rank sees per epoch (before ``drop_last``)."""
        n, r, w = self.num_samples, self.rank, self.world_size
        if self.mode == "train":
            return n // w
        return n * (r + 1) // w - n * r // w

    def _num_batches_and_used(self) -> tuple[int, int]:
        size = self.shard_size()
        if self.drop_last and size >= self.batch_size:
            full = size // self.batch_size
            return full, full * self.batch_size
        return math.ceil(size / self.batch_size), size

    def indices(self) -> Tensor:
        """This rank's sample indices for the current epoch, in iteration order."""
        n, r, w = self.num_samples, self.rank, self.world_size
        if self.mode == "train":
            order = torch.randperm(n, generator=generator_for(self.seed, "shuffle", self.epoch))
            shard = order[r::w][: n // w]
        else:
            shard = torch.arange(n * r // w, n * (r + 1) // w)
        return shard[: self._num_batches_and_used()[1]]

    def __iter__(self) -> Iterator[Tensor]:
        yield from self.indices().split(self.batch_size)

    def __len__(self) -> int:
        return self._num_batches_and_used()[0]
