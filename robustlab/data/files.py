"""Checks for dataset files on disk, with one error message that says what to put where."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from robustlab.errors import DataNotFoundError


def missing_data_error(
    dataset: str, root: Path, expected: Sequence[Path], *, downloadable: bool, note: str = ""
) -> DataNotFoundError:
    """A DataNotFoundError naming every expected file (relative to ``root``) and the fixes."""
    names = ", ".join(_relative(p, root) for p in expected)
    fix = "set data.root (or the environment variable ROBUSTLAB_DATA) to the folder that holds them"
    if downloadable:
        fix += ", or set data.download=true to download them"
    message = f"data={dataset}: dataset files not found under {root}: expected {names}; {fix}."
    return DataNotFoundError(message + (f" {note}" if note else ""))


def require_files(
    dataset: str, root: Path, expected: Sequence[Path], *, downloadable: bool, note: str = ""
) -> None:
    """Raise :func:`missing_data_error` unless every path in ``expected`` exists."""
    if not all(Path(p).exists() for p in expected):
        raise missing_data_error(dataset, root, expected, downloadable=downloadable, note=note)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
