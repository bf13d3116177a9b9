"""Mean ± sample std over seeds per group, and the table as markdown and CSV."""

from __future__ import annotations

import csv
import difflib
import io
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError
from robustlab.reporting.grouping import Group, shown
from robustlab.reporting.reference import Reference, matches

_ACC = re.compile(r"(?<![a-z])acc(uracy)?(?![a-z])", re.IGNORECASE)


@dataclass
class Stat:
    """Mean and sample std (ddof = 1; None when n = 1) of one metric over n runs."""

    mean: float
    std: float | None
    n: int


@dataclass
class Column:
    metric: str
    percent: bool = False  # shown × 100
    reference: bool = False  # followed by a "(paper)" column


@dataclass
class Row:
    label: str
    n: int  # ok runs (seeds) in the group
    stats: dict[str, Stat]
    reference: dict[str, Any]


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (run folder, what is wrong)
    decimals: int = 2
    reference: Reference | None = None
    unmatched: list[str] = field(default_factory=list)  # reference rows matching no group


def _stat(values: Sequence[float]) -> Stat:
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(statistics.fmean(values), std, len(values))


def _select(patterns: Sequence[str], available: Sequence[str]) -> list[str]:
    chosen: dict[str, None] = {}
    for pattern in patterns:
        hits = [k for k in available if fnmatchcase(k, pattern)]
        if not hits:
            close = difflib.get_close_matches(pattern, available, n=5) or list(available)[:8]
            raise RobustlabError(
                f"--metrics '{pattern}' matches no metric in the runs; available: "
                + ", ".join(close)
            )
        chosen.update(dict.fromkeys(hits))
    return list(chosen)


def _default_metrics(groups: Sequence[Group], available: Sequence[str]) -> list[str]:
    """``test/acc`` plus every summary key present in all groups that have an ok run, leaving
    out a key that is another shown column's number under a second name in every run (e.g.
    ``clean/acc`` measured on the same whole test set as ``test/acc``)."""
    per_group = [
        {k for r in g.runs if r.ok for k in r.summary_keys}
        for g in groups
        if any(r.ok for r in g.runs)
    ]
    common = set.intersection(*per_group) if per_group else set()
    order = dict.fromkeys(k for g in groups for r in g.runs for k in r.summary_keys)
    head = ["test/acc"] if "test/acc" in available else []
    ok_runs = [r for g in groups for r in g.runs if r.ok]

    def same(a: str, b: str) -> bool:  # float32 test metrics vs float64 suite sums: 1e-6
        return all(
            a in r.values
            and b in r.values
            and math.isclose(r.values[a], r.values[b], rel_tol=0, abs_tol=1e-6)
            for r in ok_runs
        )

    shown: list[str] = []
    for key in head + [k for k in order if k in common and k not in head]:
        if not any(same(key, k) for k in shown):
            shown.append(key)
    return shown


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def aggregate(
    groups: Sequence[Group],
    metrics: Sequence[str] | None = None,
    *,
    reference: Reference | None = None,
    decimals: int = 2,
    percent: bool | None = None,
) -> Table:
    """Mean ± sample std over the ok runs of each group for ``metrics`` (names or fnmatch globs;
    None: test/acc + common summary keys + reference metrics). A column is shown in percent when
    all its values lie in [0, 1] and ``percent`` is True, or None and its name has the word
    "acc"/"accuracy". Failed and incomplete runs, and runs lacking a metric that other runs of
    their group have, go to ``Table.problems``."""
    ok_runs = [r for g in groups for r in g.runs if r.ok]
    available = list(dict.fromkeys(k for r in ok_runs for k in r.values))
    names = _select(metrics, available) if metrics else _default_metrics(groups, available)
    refs: list[dict[str, Any]] = [{} for _ in groups]
    unmatched = []
    for match, values in reference.rows if reference else []:
        hits = [i for i, g in enumerate(groups) if matches(g, match)]
        if not hits:
            unmatched.append(", ".join(f"{k}={shown(v)}" for k, v in match.items()))
        for i in hits:
            for metric, value in values.items():
                refs[i].setdefault(metric, value)  # the first matching row wins
                if not metrics and metric not in names:
                    names.append(metric)
    columns = []
    for name in names:
        measured = [r.values[name] for r in ok_runs if name in r.values]
        wants = percent if percent is not None else bool(_ACC.search(name))
        scaled = wants and bool(measured) and all(0.0 <= v <= 1.0 for v in measured)
        columns.append(Column(name, scaled, any(name in ref for ref in refs)))
    rows, problems = [], []
    for group, ref in zip(groups, refs, strict=True):
        good = [r for r in group.runs if r.ok]
        stats = {}
        for name in names:
            values = [r.values[name] for r in good if name in r.values]
            if values:
                stats[name] = _stat(values)
        rows.append(Row(group.label, len(good), stats, ref))
        measured = {k for r in good for k in r.values}  # a metric no run of a group has is "—"
        for run in group.runs:
            missing = [m for m in names if m in measured and m not in run.values]
            if not run.ok:
                problems.append((_show(run.path), f"{run.status}: {run.error}"))
            elif missing:
                more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
                text = "missing metric(s): " + ", ".join(missing[:5]) + more
                problems.append((_show(run.path), text))
    return Table(columns, rows, problems, decimals, reference, unmatched)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _scale(column: Column) -> float:
    return 100.0 if column.percent else 1.0


def to_markdown(table: Table) -> str:
    """The table as GitHub markdown, then the reference source and the failed / incomplete runs.
    Cells read "mean ± std" (std left out for n = 1, "(n=k)" added when k < the group's n)."""
    header, d = ["group", "n"], table.decimals
    for c in table.columns:
        header.append(c.metric + (" (%)" if c.percent else ""))
        header += [f"{c.metric} (paper)"] if c.reference else []
    lines = [header, ["---", "---:"] + ["---:"] * (len(header) - 2)]
    for row in table.rows:
        cells = [row.label, str(row.n)]
        for c in table.columns:
            s, k = row.stats.get(c.metric), _scale(c)
            if s is None:
                text = "—"
            else:
                text = f"{s.mean * k:.{d}f}" + ("" if s.std is None else f" ± {s.std * k:.{d}f}")
                text += f" (n={s.n})" if s.n != row.n else ""
            cells.append(text)
            if c.reference:
                cells.append(str(row.reference[c.metric]) if c.metric in row.reference else "—")
        lines.append(cells)
    out = ["| " + " | ".join(_cell(x) for x in line) + " |" for line in lines]
    out += ["", "Mean ± sample std (ddof=1) over the n seeds of each group; (%): fraction × 100."]
    if table.reference:
        out.append(f"Reference (paper) values: {_cell(table.reference.source)}")
        out += [f"Notes: {_cell(table.reference.notes)}"] if table.reference.notes else []
        out += [f"Reference row matching no group: {_cell(m)}" for m in table.unmatched]
    if table.problems:
        out += ["", "### Failed / incomplete runs", "", "| run | problem |", "|---|---|"]
        out += [f"| {_cell(path)} | {_cell(problem)} |" for path, problem in table.problems]
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    """One row per group: group, n, <metric>_mean, <metric>_std[, <metric>_paper], in the units
    of the markdown table (percent columns × 100) at full precision; empty when not measured."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["group", "n"]
    for c in table.columns:
        header += [f"{c.metric}_mean", f"{c.metric}_std"]
        header += [f"{c.metric}_paper"] if c.reference else []
    writer.writerow(header)
    for row in table.rows:
        cells: list[Any] = [row.label, row.n]
        for c in table.columns:
            s, k = row.stats.get(c.metric), _scale(c)
            cells.append("" if s is None else f"{s.mean * k:.10g}")
            cells.append("" if s is None or s.std is None else f"{s.std * k:.10g}")
            cells += [row.reference.get(c.metric, "")] if c.reference else []
        writer.writerow(cells)
    return buf.getvalue()
