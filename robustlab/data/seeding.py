"""Independent random streams derived from one data seed.

Every random decision of the data layer (validation split, N-shot subset, epoch shuffle,
device augmentation) draws from its own generator seeded by ``derive_seed(seed, *keys)``,
so changing one decision never shifts another and no global RNG is touched.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """Mix ``seed`` and ``keys`` (ints >= 0 or strings) into a 63-bit seed (NumPy SeedSequence)."""
    words = [int(seed)]
    for key in keys:
        words.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key))
    if any(w < 0 for w in words):
        raise ValueError(f"seeds and keys must be non-negative, got {words}")
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1


def generator_for(
    seed: int, *keys: int | str, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, *keys)``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *keys))
    return generator
