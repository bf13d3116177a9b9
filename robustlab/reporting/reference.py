"""A paper's reference numbers (``--reference FILE.yaml``) and which groups they belong to.

The file: ``source:`` (required, citation or URL), ``notes:`` (optional) and
``rows: [{match: {method: stability, data: mnist, method.alpha: 0.01}, values: {test/acc: 99.1}}]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustlab.errors import RobustlabError
from robustlab.reporting.grouping import MISSING, Group, canon, lookup
from robustlab.reporting.runs import flatten, is_number


@dataclass
class Reference:
    """A paper's numbers: ``rows`` are (flattened match, {metric: value}) pairs."""

    source: str
    notes: str | None = None
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)


def load_reference(path: str | os.PathLike) -> Reference:
    """Read and validate a reference YAML; every problem is a one-line RobustlabError."""
    where = f"reference file {path}"
    if not Path(path).is_file():
        raise RobustlabError(f"{where} does not exist; pass a YAML file with source: and rows:")
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RobustlabError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise RobustlabError(f"{where} must be a YAML mapping with keys source, notes, rows")
    unknown = sorted(set(doc) - {"source", "notes", "rows"})
    if unknown:
        raise RobustlabError(f"{where} has unknown key(s) {unknown}; allowed: source, notes, rows")
    source = doc.get("source")
    if not isinstance(source, str) or not source.strip():
        raise RobustlabError(
            f"{where} has no 'source:'; add `source: <citation or URL>` naming where the "
            "reference numbers come from"
        )
    rows = doc.get("rows") or []
    if not isinstance(rows, list):
        raise RobustlabError(f"{where}: 'rows' must be a list of {{match: ..., values: ...}}")
    parsed = []
    for i, row in enumerate(rows):
        match = row.get("match") if isinstance(row, dict) else None
        values = row.get("values") if isinstance(row, dict) else None
        if not isinstance(match, dict) or not match or not isinstance(values, dict):
            raise RobustlabError(
                f"{where}: rows[{i}] needs 'match:' (a non-empty mapping of config keys) and "
                "'values:' (a mapping of metric name to number)"
            )
        bad = [k for k, v in values.items() if not (is_number(v) or isinstance(v, str))]
        if bad:
            raise RobustlabError(f"{where}: rows[{i}].values {bad} must be numbers")
        parsed.append((flatten(match), {str(k): v for k, v in values.items()}))
    notes = doc.get("notes")
    return Reference(source.strip(), None if notes is None else str(notes).strip(), parsed)


def matches(group: Group, match: Mapping[str, Any]) -> bool:
    """Whether every (ok) run of ``group`` has the config values ``match`` asks for."""
    runs = [r for r in group.runs if r.ok] or group.runs
    return all(
        lookup(r, k) is not MISSING and canon(lookup(r, k)) == canon(v)
        for r in runs
        for k, v in match.items()
    )
