"""Seeded index subsets of a training set: validation hold-out and N-shot selection."""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.data.seeding import generator_for
from robustlab.errors import ConfigError


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
