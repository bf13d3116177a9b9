"""Batch datasets: ``dataset[index_tensor] -> (images, labels)`` for one whole batch.

Used as ``DataLoader(batch_dataset, sampler=ShardedBatchSampler(...), batch_size=None)``, so the
sampler (not a per-item fetch + collate) decides what goes into a batch. Evaluation suites wrap
theirs in :class:`IndexedBatches`, which adds each image's index in the evaluated split.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset


class TensorBatches(Dataset):
    """Tensor-resident fast path: a batch is one index-slice of the uint8 image tensor."""

    def __init__(self, images: Tensor, labels: Tensor, index: Tensor | None = None) -> None:
        self.images = images
        self.labels = labels
        self.index = index

    def __len__(self) -> int:
        return len(self.labels) if self.index is None else len(self.index)

    def __getitem__(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        rows = batch if self.index is None else self.index[batch]
        return self.images[rows], self.labels[rows]


class ItemBatches(Dataset):
    """DataLoader path: a batch stacks ``items[i]`` for each index (transforms run per image)."""

    def __init__(self, items: Dataset) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        pairs = [self.items[int(i)] for i in batch]
        images = torch.stack([image for image, _ in pairs])
        labels = torch.tensor([label for _, label in pairs], dtype=torch.int64)
        return images, labels


class IndexedBatch(NamedTuple):
    """An evaluation batch: images, labels and each image's index in the evaluated split; with
    neighbours, also the images (and indices) ``(index + 1) mod N`` — the next image of the split,
    whichever batch, worker or process it falls in."""

    images: Tensor
    labels: Tensor
    index: Tensor
    next_images: Tensor | None = None
    next_index: Tensor | None = None


class IndexedBatches(Dataset):
    """``batches[positions] -> IndexedBatch``: a batch dataset whose batches also carry their
    positions (the sampler's indices, 0..N-1 over the evaluated images) as image indices."""

    def __init__(self, batches: Dataset, *, neighbours: bool = False) -> None:
        self.batches = batches
        self.neighbours = neighbours

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, batch: Tensor) -> IndexedBatch:
        images, labels = self.batches[batch]
        if not self.neighbours:
            return IndexedBatch(images, labels, batch)
        following = (batch + 1) % len(self.batches)
        return IndexedBatch(images, labels, batch, self.batches[following][0], following)
