"""Reading the official CIFAR-10-C / CIFAR-100-C release (Hendrycks & Dietterich 2019).

Layout: ``<root>/<corruption>.npy`` of uint8 (50000, 32, 32, 3) — severities 1..5, 10,000
images each, severity-major — and ``<root>/labels.npy`` (50,000 labels, the test labels repeated
per severity; a 10,000-entry file is accepted too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustlab.errors import ConfigError, DataNotFoundError
from robustlab.perturbations.corruptions.params import check_severity

SEVERITIES = 5


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataNotFoundError(
            f"missing {path}: expected the CIFAR-10-C / CIFAR-100-C release "
            f"layout <root>/<corruption>.npy + <root>/labels.npy (download "
            f"from https://zenodo.org/record/2535967 and point root there)"
        )
    return np.load(path, mmap_mode="r")


def load_corrupted_release(
    root: str | Path, name: str, severity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 N×H×W×C) and labels (int64 N) of ``name`` at ``severity`` 1..5."""
    from robustlab.perturbations.corruptions.api import get_corruption

    get_corruption(name)  # an unknown name: the one error listing the valid ones
    severity = check_severity(severity)
    root = Path(root)
    images = _load(root / f"{name}.npy")
    labels = _load(root / "labels.npy")
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) % SEVERITIES:
        raise ConfigError(
            f"{root / f'{name}.npy'}: expected uint8 N×H×W×C with N a multiple of "
            f"{SEVERITIES} (severity-major), got {images.dtype} {images.shape}"
        )
    n = len(images) // SEVERITIES
    part = slice((severity - 1) * n, severity * n)
    if len(labels) == len(images):
        labels = labels[part]
    elif len(labels) != n:
        raise ConfigError(
            f"{root / 'labels.npy'} has {len(labels)} labels; expected "
            f"{len(images)} (or {n}) for {name}.npy"
        )
    return np.ascontiguousarray(images[part]), np.asarray(labels, dtype=np.int64)
