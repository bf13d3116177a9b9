"""``results.json``: the one record every run leaves behind (schema in contract.md).

Written atomically (temp file + rename) so a reader never sees half a file; a failed run
records ``status: failed`` with the error instead of vanishing. An earlier ``ok`` record in
the same folder is kept as ``results.previous.json`` rather than overwritten by a failure.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RESULTS_FILE = "results.json"
PACKAGES = (
    "robustlab",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "numpy",
)


@dataclass(frozen=True)
class RobustnessRecord:
    """One tidy measurement: ``suite`` × ``condition`` × ``level`` → ``metric`` = ``value``."""

    suite: str
    condition: str
    level: float | int | str | None
    metric: str
    value: float


@dataclass
class Results:
    method: str
    data: str
    model: str
    seed: int | None
    status: str = "ok"
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    robustness: list[RobustnessRecord] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if self.error is None:
            record.pop("error")
        record["metrics"] = {k: _number(v) for k, v in self.metrics.items()}
        record["summary"] = {k: _number(v) for k, v in self.summary.items()}
        return record


def _number(value: Any) -> float | int | None:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    return None if math.isnan(value) else value


def format_level(level: Any) -> str:
    """Compact level label: whole numbers as integers (3 -> "3"), k/255 within 1e-6 as "k/255"
    (0.0313725 -> "8/255") unless also a short decimal (0.2 stays "0.2"), else 4 significant
    digits (0.123456 -> "0.1235")."""
    if level is None:
        return ""
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        return str(level)
    if float(level).is_integer():
        return str(int(level))
    k = round(level * 255)
    if k and abs(level - k / 255) <= 1e-6 and abs(level - round(level, 3)) > 1e-6:
        return f"{k}/255"
    return f"{level:.4g}"


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Keep the scalar entries of a Lightning metrics dict as plain numbers."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            continue
        if isinstance(value, (int, float, torch.Tensor)):
            out[name] = _number(value)
    return out


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, allow_nan=False, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(results: Results, run_dir: Path) -> Path:
    """Write ``run_dir/results.json``; a failure never replaces an earlier ``ok`` record."""
    path = Path(run_dir) / RESULTS_FILE
    if results.status != "ok" and path.exists():
        try:
            previous_ok = json.loads(path.read_text()).get("status") == "ok"
        except (OSError, ValueError):
            previous_ok = False
        if previous_ok:
            os.replace(path, path.with_name("results.previous.json"))
    write_json_atomic(path, results.to_dict())
    return path


def read_results(path: Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads((path / RESULTS_FILE if path.is_dir() else path).read_text())


def _git_commit(paths: Iterable[Path]) -> str | None:
    for where in paths:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    return None


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def provenance(started: float, *, world_size: int = 1, cwd: Path | None = None) -> dict[str, Any]:
    """Where and with what a run was made: commit, versions, device, wall time, command."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    package_dir = Path(__file__).resolve().parent
    return {
        "git_commit": _git_commit([package_dir, *([cwd] if cwd else [])]),
        "versions": {"python": platform.python_version(), **versions},
        "device": _device_name(),
        "world_size": world_size,
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_time_s": round(time.time() - started, 3),
    }
