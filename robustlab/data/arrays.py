"""Array files of images and labels: .npy/.npz (NHWC uint8, e.g. CIFAR-10-C) and MNIST idx.

Images leave this module as uint8 tensors (N, C, H, W); labels as int64 tensors (N,).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robustlab.errors import DataNotFoundError


def load_array_file(path: str | Path, key: str | None = None, *, mmap: bool = False) -> np.ndarray:
    """Read one array from ``.npy`` or from ``key`` of an ``.npz`` (``mmap`` memory-maps a .npy).

    Missing file or key => DataNotFoundError naming the path and the keys present.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"array file not found: {path}")
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        if key is None:
            if len(archive.files) != 1:
                raise DataNotFoundError(
                    f"{path} holds arrays {archive.files}; name the one to read (key)"
                )
            key = archive.files[0]
        if key not in archive.files:
            raise DataNotFoundError(f"{path} has no array {key!r}; it holds {archive.files}")
        return archive[key]


def images_from_array(array: np.ndarray, *, source: str = "array") -> Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) with C in {1, 3} -> uint8 tensor (N, C, H, W)."""
    if array.dtype != np.uint8:
        raise DataNotFoundError(f"{source}: images must be uint8, got {array.dtype}")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DataNotFoundError(
            f"{source}: images must be (N, H, W) or (N, H, W, C) with C in {{1, 3}}, "
            f"got shape {array.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


def labels_from_array(array: np.ndarray, *, source: str = "array") -> Tensor:
    """Integer labels of any shape (N,) or (N, 1) -> int64 tensor (N,)."""
    if not np.issubdtype(array.dtype, np.integer):
        raise DataNotFoundError(f"{source}: labels must be integers, got {array.dtype}")
    return torch.from_numpy(np.asarray(array).reshape(-1).astype(np.int64))


def load_images(path: str | Path, key: str | None = None) -> Tensor:
    """``images_from_array(load_array_file(path, key))``."""
    return images_from_array(load_array_file(path, key), source=f"{path}[{key}]")


def load_labels(path: str | Path, key: str | None = None) -> Tensor:
    """``labels_from_array(load_array_file(path, key))``."""
    return labels_from_array(load_array_file(path, key), source=f"{path}[{key}]")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (LeCun's MNIST format, optionally gzipped) of unsigned bytes.

    Header: two zero bytes, type code 0x08 (uint8), number of dims d, then d big-endian int32 sizes.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataNotFoundError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 images (N, C, H, W) in [0, 1] units.

    mean_c = sum x / (255 n), std_c = sqrt(sum x^2 / n - (sum x / n)^2) / 255, with integer sums.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.int64)
    squares = torch.zeros(channels, dtype=torch.int64)
    for part in images.split(chunk):
        total += part.sum(dim=(0, 2, 3), dtype=torch.int64)
        wide = part.to(torch.int32)
        squares += (wide * wide).sum(dim=(0, 2, 3), dtype=torch.int64)
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total.double() / count
    var = (squares.double() / count - mean * mean).clamp_min(0)
    return tuple((mean / 255).tolist()), tuple((var.sqrt() / 255).tolist())
