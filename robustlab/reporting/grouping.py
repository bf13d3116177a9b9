"""Grouping runs that share a config up to the seed (the rows of a report)."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from robustlab.errors import RobustlabError
from robustlab.reporting.runs import Run, is_number

CHOICES = ("method", "data", "model")
MISSING = object()
_PATHLIKE = re.compile(r"(^|_)(dir|dirpath|path|root|file|filename|checkpoint|ckpt)$")


@dataclass
class Group:
    """Runs that share a config up to the seed."""

    label: str
    key: tuple
    runs: list[Run]


def canon(value: Any) -> str:
    """Comparable text of a config value: "0.10", 0.1 and "1e-1" are the same."""
    if isinstance(value, str):
        try:
            return repr(float(value))
        except ValueError:
            pass
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(value, str):
            return value
    if is_number(value):
        return repr(float(value))
    return json.dumps(value, sort_keys=True, default=str)


def shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


#: run-control keys that change how a run is driven, never its numbers (resume continues to the
#: same results as an uninterrupted run; progress bars and summaries only print)
RUN_CONTROL = frozenset({"resume", "trainer.enable_progress_bar", "trainer.enable_model_summary"})


def ignored(key: str) -> bool:
    """Keys that never split groups: seeds, hydra.*, logger.*, paths.*, path-like keys, the
    run-control keys (``RUN_CONTROL``) and the transfer sources of attack suites
    (``suite.<attack>.source``: one run folder per seed)."""
    parts = key.split(".")
    return (
        key in RUN_CONTROL
        or parts[0] in ("hydra", "logger", "paths")
        or parts[-1] == "seed"
        or parts[-1].endswith("_seed")
        or bool(_PATHLIKE.search(parts[-1]))
        or (parts[-1] == "source" and "suite" in parts[:-1])
    )


#: the pseudo-key of ``--group-by`` that groups runs by the PATH argument that found them
FOUND_UNDER = "path"


def lookup(run: Run, key: str) -> Any:
    """A run's value for a dotted config key (``method``/``data``/``model``: the choice;
    ``path``: the PATH argument of the report that found the run)."""
    if key == FOUND_UNDER:
        return run.found_under if run.found_under is not None else MISSING
    if key in CHOICES:
        return getattr(run, key) if getattr(run, key) is not None else MISSING
    if key == "seed" and run.seed is not None:
        return run.seed
    if key in run.config:
        return run.config[key]
    return (run.overrides or {}).get(key, MISSING)


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)}


def _label(run: Run, params: Sequence[tuple[str, Any]], short: Mapping[str, str]) -> str:
    words = [run.method or "?"] + [f"{short[k]}={shown(v)}" for k, v in params]
    context = ", ".join(x for x in (run.data, run.model) if x)
    return " ".join(words) + (f" ({context})" if context else "")


def _default_keys(runs: Sequence[Run]) -> list[tuple[tuple, str]]:
    if all(r.overrides is not None for r in runs):
        # overridden keys; a run that leaves one at its default takes the value from its config
        keys = dict.fromkeys(
            k for r in runs for k in r.overrides if k not in CHOICES and not ignored(k)
        )
        params = [{k: r.overrides.get(k, r.config.get(k)) for k in keys} for r in runs]
        params = [{k: v for k, v in p.items() if v is not None} for p in params]
        scopes, known = [None] * len(runs), [True] * len(runs)
    else:  # resolved configs, compared within each (method, data, model)
        params = [{k: v for k, v in r.config.items() if not ignored(k)} for r in runs]
        scopes = [(r.method, r.data, r.model) for r in runs]
        known = [bool(r.config) for r in runs]
    varying: dict[Any, list[str]] = {}
    for scope in dict.fromkeys(scopes):
        members = [p for s, p, k in zip(scopes, params, known, strict=True) if s == scope and k]
        union = dict.fromkeys(k for p in members for k in p)
        varying[scope] = [
            k for k in union if len({canon(p[k]) if k in p else None for p in members}) > 1
        ]
    short = _short_names(list(dict.fromkeys(k for keys in varying.values() for k in keys)))
    keyed = []
    for run, scope, p in zip(runs, scopes, params, strict=True):
        chosen = [(k, p[k]) for k in varying[scope] if k in p]
        key = (run.method, run.data, run.model, *((k, canon(v)) for k, v in chosen))
        keyed.append((key, _label(run, chosen, short)))
    return keyed


def _explicit_keys(runs: Sequence[Run], group_by: Sequence[str]) -> list[tuple[tuple, str]]:
    for key in group_by:
        if all(lookup(r, key) is MISSING for r in runs):
            known = sorted(
                {k for r in runs for k in r.config} | set(CHOICES) | {"seed", FOUND_UNDER}
            )
            close = difflib.get_close_matches(key, known, n=3) or known[:5]
            raise RobustlabError(
                f"--group-by key '{key}' is not set in any run; use dotted config keys such as "
                + ", ".join(close)
            )
    short = _short_names(list(group_by))
    keyed = []
    for run in runs:
        values = [lookup(run, k) for k in group_by]
        key = tuple(None if v is MISSING else canon(v) for v in values)
        words = [  # a key the run does not have (e.g. a method-specific one) is left out
            f"{short[k]}={shown(v)}"
            for k, v in zip(group_by, values, strict=True)
            if v is not MISSING
        ]
        keyed.append((key, " ".join(words) or "without " + ", ".join(group_by)))
    return keyed


def group_runs(runs: Sequence[Run], group_by: Sequence[str] | None = None) -> list[Group]:
    """Group runs that differ only in their seed, in run order. Default key: (method, data,
    model) plus the Hydra overrides whose values differ between runs (without overrides: the
    resolved-config keys that differ between runs of one (method, data, model)), never seeds,
    ``hydra.*``, ``logger.*`` or path-like keys; ``group_by``: these dotted keys instead."""
    keyed = _explicit_keys(runs, group_by) if group_by else _default_keys(runs)
    groups: dict[tuple, Group] = {}
    for run, (key, label) in zip(runs, keyed, strict=True):
        groups.setdefault(key, Group(label, key, [])).runs.append(run)
    return list(groups.values())
