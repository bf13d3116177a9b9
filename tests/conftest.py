"""Shared fixtures. Real datasets come from $ROBUSTLAB_DATA (e.g. ../shared/data); tests that
need them skip cleanly where that folder is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def _data_root() -> Path | None:
    root = os.environ.get("ROBUSTLAB_DATA")
    return Path(root) if root and Path(root).is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data folder, or skip."""
    root = _data_root()
    if root is None:
        pytest.skip("real data not available: set ROBUSTLAB_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def mnist_root(data_root: Path) -> Path:
    if not (data_root / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found under {data_root}/MNIST/raw")
    return data_root


@pytest.fixture(scope="session")
def cifar10_root(data_root: Path) -> Path:
    if not (data_root / "cifar10-jpeg" / "test.npz").is_file():
        pytest.skip(f"CIFAR-10 copy not found under {data_root}/cifar10-jpeg")
    return data_root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Many small tensor ops: one thread beats two on a shared, busy machine. Modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
