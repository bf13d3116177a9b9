"""Finding and reading run results: every ``results.json`` under run and multirun folders."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from robustlab.errors import RobustlabError
from robustlab.results import format_level, read_results

RESULTS = "results.json"
EXPECTED = (
    "expected run folders containing results.json (written by robustlab-train / robustlab-eval), "
    "Hydra multirun folders (multirun/<date>/<time>/<job>/results.json) or results.json files"
)


class Record(NamedTuple):
    """A robustness record with a numeric level (what the comparison plots draw)."""

    suite: str
    condition: str
    level: float
    metric: str
    value: float


@dataclass
class Run:
    """One run: its status, its numbers flattened to ``{column: value}`` and its config."""

    path: Path  # the run folder
    status: str  # "ok", "failed", "incomplete" (no results.json yet) or "unreadable"
    error: str | None = None
    method: str | None = None
    data: str | None = None
    model: str | None = None
    seed: Any = None
    values: dict[str, float] = field(default_factory=dict)
    summary_keys: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # flattened, dotted keys
    overrides: dict[str, str] | None = None  # its provenance.overrides, else .hydra/overrides.yaml
    records: list[Record] = field(default_factory=list)  # robustness records at numeric levels
    found_under: str | None = None  # the PATH argument of load_runs that found it
    #: where and how it ran: git_commit, device, wall_time_s, started (from results.json)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def robustness_key(record: Mapping[str, Any]) -> str:
    """Column name of a robustness record: ``"{suite}/{condition}@{level}/{metric}"``."""
    level = format_level(record.get("level"))
    where = f"{record.get('condition')}@{level}" if level else f"{record.get('condition')}"
    return f"{record.get('suite')}/{where}/{record.get('metric')}"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one ``{"a.b.c": value}`` dict."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _numbers(mapping: Any) -> dict[str, float]:
    items = mapping.items() if isinstance(mapping, Mapping) else ()
    return {str(k): float(v) for k, v in items if is_number(v)}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _parse_overrides(items: Any) -> dict[str, str]:
    """Hydra overrides ("key=value" strings) as a dict."""
    pairs = (str(item).partition("=") for item in (items if isinstance(items, list) else []))
    return {key.lstrip("+~"): value for key, sep, value in pairs if sep}


def _read_overrides(run_dir: Path) -> dict[str, str] | None:
    """``.hydra/overrides.yaml`` as a dict; None when there is none."""
    file = run_dir / ".hydra" / "overrides.yaml"
    return _parse_overrides(_read_yaml(file)) if file.is_file() else None


def _load_results(file: Path) -> Run:
    run_dir = file.parent
    overrides = _read_overrides(run_dir)
    try:
        doc = read_results(file)
        if not isinstance(doc, dict):
            raise ValueError("the top level is not a JSON object")
    except (OSError, ValueError) as exc:
        return Run(run_dir, "unreadable", f"cannot read {file.name}: {exc}", overrides=overrides)
    metrics, summary = _numbers(doc.get("metrics")), _numbers(doc.get("summary"))
    records = doc.get("robustness") if isinstance(doc.get("robustness"), list) else []
    robust = {
        robustness_key(r): float(r["value"])
        for r in records
        if isinstance(r, Mapping) and is_number(r.get("value"))
    }
    leveled = [
        Record(
            *(str(r.get(k)) for k in ("suite", "condition")),
            r["level"],
            str(r.get("metric")),
            r["value"],
        )
        for r in records
        if isinstance(r, Mapping) and is_number(r.get("value")) and is_number(r.get("level"))
    ]
    status = str(doc.get("status", "ok"))
    config = doc.get("config") if isinstance(doc.get("config"), Mapping) else {}
    facts = doc.get("provenance") if isinstance(doc.get("provenance"), Mapping) else {}
    recorded = facts.get("overrides")
    if isinstance(recorded, list):  # the run's own record beats a .hydra a later job rewrote
        overrides = _parse_overrides(recorded)
    return Run(
        path=run_dir,
        status=status,
        error=None if status == "ok" else str(doc.get("error") or "no error message recorded"),
        method=doc.get("method"),
        data=doc.get("data"),
        model=doc.get("model"),
        seed=doc.get("seed", config.get("seed")),
        values={**metrics, **summary, **robust},
        summary_keys=list(summary),
        config=flatten(config),
        overrides=overrides,
        records=leveled,
        provenance=_provenance(facts),
    )


def _provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a results.json ``provenance`` a report states: code, hardware, time."""
    keys = ("git_commit", "device", "wall_time_s", "started")
    return {k: record[k] for k in keys if record.get(k) is not None}


def _load_unfinished(run_dir: Path) -> Run:
    """A Hydra job folder without results.json; its identity comes from ``.hydra/``."""
    config = _read_yaml(run_dir / ".hydra" / "config.yaml")
    config = config if isinstance(config, dict) else {}
    hydra = _read_yaml(run_dir / ".hydra" / "hydra.yaml")
    choices = flatten(hydra if isinstance(hydra, dict) else {})
    overrides = _read_overrides(run_dir)

    def choice(group: str) -> str | None:
        return choices.get(f"hydra.runtime.choices.{group}") or (overrides or {}).get(group)

    return Run(
        path=run_dir,
        status="incomplete",
        error="no results.json: the job did not finish (crashed, killed or still running)",
        method=choice("method"),
        data=choice("data"),
        model=choice("model"),
        seed=config.get("seed"),
        config=flatten(config),
        overrides=overrides,
    )


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Every run under ``paths`` (run/multirun folders, any depth, or results.json files), in
    natural path order; Hydra job folders without results.json come back as "incomplete"."""
    paths = [Path(p) for p in paths]
    files: list[tuple[Path, Path]] = []  # (results.json, the PATH that found it)
    unfinished: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_file():
            files.append((path, path))
        elif path.is_dir():
            for root, dirs, names in os.walk(path):
                has_hydra = ".hydra" in dirs
                dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=_natural)
                if RESULTS in names:
                    files.append((Path(root) / RESULTS, path))
                elif has_hydra:
                    unfinished.append((Path(root), path))
        else:
            raise RobustlabError(f"{path} does not exist; {EXPECTED}")
    if not files:
        searched = ", ".join(str(p) for p in paths)
        extra = (
            f" ({len(unfinished)} Hydra job folder(s) there have .hydra/ but no results.json: "
            "those jobs have not finished)"
            if unfinished
            else ""
        )
        raise RobustlabError(f"no results.json found under {searched}{extra}; {EXPECTED}")
    runs, seen = [], set()
    jobs = [(*f, _load_results) for f in files] + [(*d, _load_unfinished) for d in unfinished]
    for item, found_under, loader in jobs:
        if item.resolve() not in seen:
            seen.add(item.resolve())
            runs.append(replace(loader(item), found_under=str(found_under)))
    return runs
