"""Batch datasets: ``dataset[index_tensor] -> (images, labels)`` for one whole batch.

Used as ``DataLoader(batch_dataset, sampler=ShardedBatchSampler(...), batch_size=None)``, so the
sampler (not a per-item fetch + collate) decides what goes into a batch.
"""

from __future__ import annotations

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
