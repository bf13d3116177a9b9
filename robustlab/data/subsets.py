"""Seeded index subsets of a training set: validation hold-out and N-shot selection, the
subset's identity (a stable hash of the chosen indices) and N-shot epochs of several passes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from robustlab.data.seeding import generator_for
from robustlab.errors import ConfigError

#: hex digits of the sha256 digest kept as a subset's hash
SUBSET_HASH_LENGTH = 16


def split_validation(num_samples: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Hold out ``round(fraction * N)`` random samples: returns sorted (train, val) indices.

    Uniform over subsets of that size, seeded by ``seed``; ``fraction=0`` gives an empty val set.
    """
    num_val = int(round(fraction * num_samples))
    if fraction > 0 and not 1 <= num_val < num_samples:
        raise ConfigError(
            f"data.val_fraction={fraction} of {num_samples} training images leaves "
            f"{num_val} for validation and {num_samples - num_val} for training; "
            "choose a fraction that leaves at least one image in each"
        )
    order = torch.randperm(num_samples, generator=generator_for(seed, "val_split"))
    return order[num_val:].sort().values, order[:num_val].sort().values


def samples_per_class(
    labels: Tensor, n: int, seed: int, class_names: list[str] | None = None
) -> Tensor:
    """Positions (into ``labels``) of exactly ``n`` random samples of every class, sorted.

    Classes are ``0..K-1`` with ``K = len(class_names)`` (or ``labels.max() + 1``); each class's
    draw is a seeded uniform subset. Raises ConfigError if a class has fewer than ``n`` samples.
    """
    num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    generator = generator_for(seed, "samples_per_class")
    chosen = []
    for k in range(num_classes):
        members = torch.nonzero(labels == k).flatten()
        if len(members) < n:
            name = f"{k} ({class_names[k]!r})" if class_names is not None else str(k)
            raise ConfigError(
                f"data.samples_per_class={n} but class {name} has only {len(members)} training "
                f"images; choose data.samples_per_class <= {len(members)}"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(chosen).sort().values


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Hold out ``round(fraction * n_k)`` random samples of each class k: sorted (rest, held)."""
    generator = generator_for(seed, "stratified_split")
    held = []
    for k in labels.unique(sorted=True).tolist():
        members = torch.nonzero(labels == k).flatten()
        count = int(round(fraction * len(members)))
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    held_index = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_index] = False
    return torch.nonzero(keep).flatten(), held_index


def subset_hash(dataset: str, indices: Tensor) -> str:
    """A stable identity of the training images a run uses: the first 16 hex digits of
    ``sha256(dataset name, NUL, the sorted indices as little-endian int64)``. The same on every
    machine and process, whatever the batch size, worker count or training seed; it changes
    with the chosen images (``data.subset_seed``, ``samples_per_class``, ``val_fraction``)."""
    ordered = np.sort(torch.as_tensor(indices).cpu().numpy().astype("<i8"))
    digest = hashlib.sha256(dataset.encode() + b"\0" + ordered.tobytes())
    return digest.hexdigest()[:SUBSET_HASH_LENGTH]


class EpochPasses(Sampler[Tensor]):
    """``passes`` consecutive epochs of ``sampler`` as one epoch (``data.repeat``): epoch e runs
    the inner sampler's epochs ``e·passes … e·passes + passes − 1`` (each its own seeded shuffle
    and, for groups, its own draw), so an N-shot run can count epochs of a fixed number of
    images (HydraMix: ``max(500 // N, 1)`` passes over an N-per-class subset)."""

    def __init__(self, sampler: Sampler[Tensor], passes: int) -> None:
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        self.sampler, self.passes, self.epoch = sampler, int(passes), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Tensor]:
        for inner in range(self.epoch * self.passes, (self.epoch + 1) * self.passes):
            self.sampler.set_epoch(inner)
            yield from self.sampler

    def __len__(self) -> int:
        return self.passes * len(self.sampler)
