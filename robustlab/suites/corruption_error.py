"""Corruption error metrics of Hendrycks & Dietterich (ICLR 2019).

With E_{s,c} the top-1 error at severity s of corruption c and E_clean the clean error:
  CE_c          = Σ_s E_{s,c} / Σ_s E^base_{s,c}
  relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^base_{s,c} − E^base_clean)
  mCE (relative mCE) = the mean of CE_c (relative CE_c) over the corruptions present in both.
Baseline errors are looked up by corruption name and severity, never by position.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from robustlab.errors import ConfigError
from robustlab.results import read_results

#: (corruption, severity) -> top-1 error
Errors = Mapping[tuple[str, int], float]


def corruption_errors(
    errors: Errors,
    baseline: Errors,
    clean_error: float | None = None,
    baseline_clean_error: float | None = None,
) -> dict[str, float]:
    """``{"ce/<c>", "mce"}`` and, when both clean errors are given, ``{"relative_ce/<c>",
    "relative_mce"}`` over the corruptions whose severities all exist in the baseline."""
    corruptions = sorted({c for c, _ in errors})
    out: dict[str, float] = {}
    relative: dict[str, float] = {}
    for c in corruptions:
        severities = sorted(s for cc, s in errors if cc == c)
        if not all((c, s) in baseline for s in severities):
            continue
        ours = [errors[(c, s)] for s in severities]
        theirs = [baseline[(c, s)] for s in severities]
        if sum(theirs) > 0:
            out[f"ce/{c}"] = sum(ours) / sum(theirs)
        if clean_error is not None and baseline_clean_error is not None:
            denominator = sum(t - baseline_clean_error for t in theirs)
            if denominator > 0:
                relative[f"relative_ce/{c}"] = sum(e - clean_error for e in ours) / denominator
    ces = [v for k, v in out.items() if k.startswith("ce/")]
    if ces:
        out["mce"] = sum(ces) / len(ces)
    if relative:
        out.update(relative)
        out["relative_mce"] = sum(relative.values()) / len(relative)
    return out


def baseline_from_results(
    path: str | Path, suite: str = "corruptions"
) -> tuple[dict[tuple[str, int], float], float | None]:
    """Corruption errors and clean error of an earlier run's ``results.json`` (or its folder)."""
    path = Path(path).expanduser()
    try:
        record = read_results(path)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"suite.{suite}.baseline={path}: cannot read a results.json there ({err}); pass the "
            "run folder or results.json of an earlier run evaluated with the corruptions suite"
        ) from None
    errors = {
        (r["condition"], int(r["level"])): 1.0 - float(r["value"])
        for r in record.get("robustness", [])
        if r.get("suite") == suite and r.get("metric") == "acc"
    }
    if not errors:
        raise ConfigError(
            f"suite.{suite}.baseline={path} has no '{suite}' accuracy records; evaluate the "
            f"baseline with suite=[{suite}] first"
        )
    clean = record.get("metrics", {}).get("test/acc", record.get("summary", {}).get("clean/acc"))
    return errors, None if clean is None else 1.0 - float(clean)
