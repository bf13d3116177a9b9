"""``results.json``: the one record every run leaves behind; its JSON Schema (every field and
what it means) ships beside this module: ``robustlab/results.schema.json``.

Written atomically (temp file + rename) so a reader never sees half a file; a failed run
records ``status: failed`` with the error instead of vanishing. Nothing earlier is lost: an
``ok`` record replaced by a failure is kept as ``results.previous.json``; earlier failures in the
same folder (an interrupted, then resumed run) are listed under ``earlier_failures`` (error,
start time, command) of the new record; an unreadable file is kept as
``results.unreadable.json``. Non-finite numbers (NaN, ±inf) are written as ``null``, so the file
is strict JSON.
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
from dataclasses import asdict, dataclass, field, fields
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


#: The run-folder subfolder of the pictures a method draws while training
#: (``ERM.save_picture``); the run's report.md shows them.
PICTURES = "pictures"


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
    #: the training images (``ImageDataModule.subset_record``); None: not recorded
    subset: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Results:
        """The inverse of ``to_dict`` (keys written beside the fields, such as
        ``earlier_failures``, are not part of a run's results and are dropped)."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in record.items() if k in known}
        kept["robustness"] = [RobustnessRecord(**r) for r in record.get("robustness") or []]
        return cls(**kept)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if self.error is None:
            record.pop("error")
        if self.subset is None:
            record.pop("subset")
        record["metrics"] = {k: _number(v) for k, v in self.metrics.items()}
        record["summary"] = {k: _number(v) for k, v in self.summary.items()}
        return json_safe(record)


def _number(value: Any) -> float | int | None:
    """A plain JSON number; NaN and ±inf become None (JSON has no such numbers)."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (and scalar tensor) inside it replaced by None."""
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return _number(value)
    return value


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


def _failure_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    provenance = record.get("provenance") or {}
    return {
        "error": record.get("error"),
        "started": provenance.get("started"),
        "command": provenance.get("command"),
    }


def write_results(results: Results, run_dir: Path) -> Path:
    """Write ``run_dir/results.json`` without losing what was there (see the module doc)."""
    path = Path(run_dir) / RESULTS_FILE
    record = results.to_dict()
    earlier: dict[str, Any] | None = None
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
            if not isinstance(earlier, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError):
            os.replace(path, path.with_name("results.unreadable.json"))
            earlier = None
    if earlier is not None:
        failures = list(earlier.get("earlier_failures") or [])
        if earlier.get("status") == "failed":
            failures.append(_failure_summary(earlier))
        if failures:
            record["earlier_failures"] = failures
        if results.status != "ok" and earlier.get("status") == "ok":
            os.replace(path, path.with_name("results.previous.json"))
    write_json_atomic(path, record)
    return path


def read_results(path: str | os.PathLike) -> Any:
    """The parsed ``results.json`` of a run folder, or of the file itself (the one reader of the
    record: reports, corruption-error baselines and run-folder checkpoints use it). Raises
    ``OSError`` or ``ValueError`` (malformed JSON) for the caller to name in its own terms."""
    path = Path(path).expanduser()
    return json.loads((path / RESULTS_FILE if path.is_dir() else path).read_text())


def finished_results(
    run_dir: Path, config: Mapping[str, Any], *, part: str | None = None
) -> Results | None:
    """The results of ``run_dir`` when it holds a finished run (``status: ok``) of exactly
    ``config`` (plain containers; ``part``: the key of the stored config it is, as robustlab-eval
    stores ``{"eval": …, "train": …}``), else None. ``skip_finished`` uses it so a re-submitted
    sweep leaves its finished jobs as they are; a finished run of another config (e.g. more
    epochs) is not finished for this one. ``resume`` and ``skip_finished`` are not compared."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        record = read_results(path)
    except (OSError, ValueError):
        return None  # unreadable: run again (write_results keeps the file aside)
    if not isinstance(record, dict) or record.get("status") != "ok":
        return None
    stored = record.get("config") or {}
    if part is not None:
        stored = stored.get(part) or {}
    ignored = ("resume", "skip_finished")
    same = {k: v for k, v in stored.items() if k not in ignored} == {
        k: v for k, v in json_safe(config).items() if k not in ignored
    }
    return Results.from_dict(record) if same else None


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


def _job_overrides() -> list[str] | None:
    """The overrides of the current Hydra job (``key=value`` strings), None outside one."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return [str(item) for item in HydraConfig.get().overrides.task]


def provenance(started: float, *, world_size: int = 1, cwd: Path | None = None) -> dict[str, Any]:
    """Where and with what a run was made: commit, versions, device, host and process id,
    start time, wall time, command, and the Hydra job's own overrides (a sweep's command line
    holds every job's values; ``overrides`` this job's)."""
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
        "pid": os.getpid(),
        "command": " ".join(sys.argv),
        **({"overrides": overrides} if (overrides := _job_overrides()) is not None else {}),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "started_unix": round(started, 3),
        "wall_time_s": round(time.time() - started, 3),
    }
