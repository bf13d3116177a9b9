"""Same-class groups (``data.group_size``): batches of B groups of N images of one class.

A batch is one flat index tensor of B·N positions ordered group-major: positions g·N … g·N+N−1
are group g, all of one class, so a method reshapes its rows to (B, N, …).

Every epoch the groups are drawn afresh from (seed, epoch):

* ``repeats=False``: each class's images are shuffled and cut into ``n_k // N`` groups of N
  distinct images (an image appears at most once per epoch; the ``n_k mod N`` left over sit
  out, different ones each epoch). A class with fewer than N images is a ConfigError.
* ``repeats=True``: ``ceil(n_k / N)`` groups per class, each of N images drawn uniformly with
  replacement from the class (one image may appear twice in a group; any class size >= 1).

The number of groups G is the same every epoch; the groups are then shuffled and sharded
exactly as :class:`~robustlab.data.sampler.ShardedBatchSampler` shards images: rank r takes
whole groups ``order[r::world][:G // world]``, disjoint across ranks, the same count per rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Sampler

from robustlab.data.sampler import ShardedBatchSampler
from robustlab.data.seeding import generator_for
from robustlab.errors import ConfigError


def class_members(labels: Tensor, num_classes: int | None = None) -> list[Tensor]:
    """Positions of each class's samples in ``labels``: ``members[k]`` (sorted, int64)."""
    count = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    order = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels, minlength=count).tolist()
    return list(order.split(sizes))


def check_group_size(
    labels: Tensor,
    group_size: int,
    repeats: bool,
    class_names: Sequence[str] | None = None,
) -> None:
    """Without repeats every class needs at least ``group_size`` images (ConfigError)."""
    if repeats:
        return
    num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num_classes)
    k = int(torch.argmin(counts))  # the smallest class bounds the group size
    if counts[k] < group_size:
        name = f"{k} ({class_names[k]!r})" if class_names is not None else str(k)
        raise ConfigError(
            f"data.group_size={group_size} but class {name} has only {int(counts[k])} training "
            f"images; choose data.group_size <= {int(counts[k])} or set data.group_repeats=true"
        )


class GroupBatchSampler(Sampler[Tensor]):
    """Yields this rank's batches of ``batch_size`` same-class groups as flat int64 positions.

    ``labels`` are the labels of the training samples (positions 0..len-1); ``set_epoch``
    redraws the groups and their order. ``drop_last`` as in ShardedBatchSampler, in groups.
    """

    def __init__(
        self,
        labels: Tensor,
        group_size: int,
        batch_size: int,
        *,
        repeats: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        check_group_size(labels, group_size, repeats, class_names)
        num_classes = len(class_names) if class_names is not None else None
        self.members = class_members(labels, num_classes)
        self.group_size = int(group_size)
        self.repeats = bool(repeats)
        self.seed = int(seed)
        self.groups_per_class = [
            math.ceil(len(m) / group_size) if repeats else len(m) // group_size
            for m in self.members
        ]
        num_groups = sum(self.groups_per_class)
        if num_groups < world_size:
            raise ConfigError(
                f"{num_groups} groups of data.group_size={group_size} cannot be split over "
                f"{world_size} processes; use more data, a smaller group size or fewer devices"
            )
        self.batches = ShardedBatchSampler(
            num_groups,
            batch_size,
            mode="train",
            drop_last=drop_last,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )

    @property
    def epoch(self) -> int:
        return self.batches.epoch

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def groups(self) -> Tensor:
        """All G groups of the current epoch (every rank draws the same): (G, N) positions,
        class by class."""
        generator = generator_for(self.seed, "groups", self.epoch)
        drawn = []
        for members, count in zip(self.members, self.groups_per_class, strict=True):
            if count == 0:
                continue
            if self.repeats:
                shape = (count, self.group_size)
                drawn.append(members[torch.randint(0, len(members), shape, generator=generator)])
            else:
                order = torch.randperm(len(members), generator=generator)
                drawn.append(members[order[: count * self.group_size]].view(count, -1))
        return torch.cat(drawn)

    def __iter__(self) -> Iterator[Tensor]:
        groups = self.groups()
        for batch in self.batches:
            yield groups[batch].flatten()

    def __len__(self) -> int:
        return len(self.batches)
