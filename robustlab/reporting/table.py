"""Mean ± sample std over seeds per group, and the table as markdown and CSV.

With a baseline group, every accuracy column gains an error-reduction column
``(err_baseline − err_group) / err_baseline`` with ``err = 1 − acc``, computed on the group
means (not per seed, so it has no std); WINN (Lee et al., CVPR 2018) reports its adversarial
gains this way ("an 88% error reduction").
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError
from robustlab.reporting.grouping import Group, shown
from robustlab.reporting.reference import Reference, matches
from robustlab.reporting.runs import Run, is_number

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
    reduction: bool = False  # followed by an error-reduction column (a baseline was given)


@dataclass
class Row:
    label: str
    n: int  # ok runs (seeds) in the group
    stats: dict[str, Stat]
    reference: dict[str, Any]
    #: metric -> error reduction vs the baseline group (None: not defined for this row)
    reduction: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (run folder, what is wrong)
    decimals: int = 2
    reference: Reference | None = None
    unmatched: list[str] = field(default_factory=list)  # reference rows matching no group
    baseline: str | None = None  # label of the baseline group of the error-reduction columns
    provenance: list[str] = field(default_factory=list)  # code, hardware, wall time of the runs


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


def find_group(groups: Sequence[Group], spec: str) -> Group:
    """The one group ``spec`` names: its label exactly as the table shows it, or config values
    ``key=value[,key=value...]`` (as in reference rows' ``match``) that exactly one group has."""
    labels = [g.label for g in groups]
    if spec in labels:
        return groups[labels.index(spec)]
    pairs = [part.partition("=") for part in spec.split(",")] if "=" in spec else []
    if pairs and all(key.strip() and sep for key, sep, _ in pairs):
        match = {key.strip(): value.strip() for key, _, value in pairs}
        hits = [g for g in groups if matches(g, match)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise RobustlabError(
                f"--baseline '{spec}' matches {len(hits)} groups ("
                + "; ".join(g.label for g in hits)
                + "); add keys to pick one, or give its label"
            )
    close = difflib.get_close_matches(spec, labels, n=3, cutoff=0.3) or labels[:5]
    raise RobustlabError(
        f"--baseline '{spec}' is not a group of the table; give a group label as shown in the "
        "table or key=value pairs, e.g. " + "; ".join(f"'{label}'" for label in close)
    )


def error_reduction(accuracy: float, baseline: float) -> float | None:
    """``(err_b − err) / err_b`` with ``err = 1 − acc``: the share of the baseline's errors a
    method removes (negative when it makes more); None when the baseline makes no error."""
    baseline_error = 1.0 - baseline
    if baseline_error <= 0:
        return None
    return (baseline_error - (1.0 - accuracy)) / baseline_error


def _is_accuracy(name: str, measured: Sequence[float]) -> bool:
    return bool(_ACC.search(name)) and bool(measured) and all(0.0 <= v <= 1.0 for v in measured)


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
    baseline: str | None = None,
) -> Table:
    """Mean ± sample std over the ok runs of each group for ``metrics`` (names or fnmatch globs;
    None: test/acc + common summary keys + reference metrics). A column is shown in percent when
    all its values lie in [0, 1] and ``percent`` is True, or None and its name has the word
    "acc"/"accuracy". Failed and incomplete runs, and runs lacking a metric that other runs of
    their group have, go to ``Table.problems``.

    ``baseline`` names a group (:func:`find_group`); every accuracy column (name with the word
    "acc"/"accuracy", values in [0, 1]) then gets the :func:`error_reduction` of each group's
    mean against the baseline group's mean (0 on the baseline row)."""
    chosen = find_group(groups, baseline) if baseline is not None else None
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
        reduction = chosen is not None and _is_accuracy(name, measured)
        columns.append(Column(name, scaled, any(name in ref for ref in refs), reduction))
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
    if chosen is not None:
        base = rows[list(groups).index(chosen)].stats
        for row in rows:
            for c in columns:
                if c.reduction:
                    s, b = row.stats.get(c.metric), base.get(c.metric)
                    found = s is not None and b is not None
                    row.reduction[c.metric] = error_reduction(s.mean, b.mean) if found else None
    label = chosen.label if chosen is not None else None
    return Table(
        columns, rows, problems, decimals, reference, unmatched, label, provenance_lines(ok_runs)
    )


def _counted(values: Sequence[str]) -> str:
    counts = Counter(values)
    return ", ".join(f"{v} ({n})" if len(counts) > 1 else v for v, n in counts.most_common())


def provenance_lines(runs: Sequence[Run]) -> list[str]:
    """What a table must state about its runs (their results.json ``provenance``): the commits
    (short hash, with run counts when several), the hardware, the wall time per run (median,
    range and total; a resumed run counts its last part only) and when they started; a fact no
    run recorded is left out."""
    facts = [r.provenance for r in runs]
    commits = [str(f["git_commit"]) for f in facts if f.get("git_commit")]
    lines = []
    if commits:
        short = [c[:7] + ("+dirty" if c.endswith("+dirty") else "") for c in commits]
        lines.append(f"Code: commit {_counted(short)}.")
    devices = [str(f["device"]) for f in facts if f.get("device")]
    if devices:
        lines.append(f"Hardware: {_counted(devices)}.")
    walls = sorted(float(f["wall_time_s"]) for f in facts if is_number(f.get("wall_time_s")))
    if walls:
        minutes = [w / 60 for w in walls]
        lines.append(
            f"Wall time per run: median {statistics.median(minutes):.1f} min "
            f"({minutes[0]:.1f}–{minutes[-1]:.1f}), {sum(walls) / 3600:.2f} h in all "
            f"({len(walls)} runs)."
        )
    started = sorted(str(f["started"]) for f in facts if f.get("started"))
    if started:
        lines.append(f"Started: {started[0]} to {started[-1]}.")
    return lines


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _scale(column: Column) -> float:
    return 100.0 if column.percent else 1.0


def _reduction_header(column: Column) -> str:
    return f"{column.metric} err. red." + (" (%)" if column.percent else "")


def to_markdown(table: Table) -> str:
    """The table as GitHub markdown, then the reference source and the failed / incomplete runs.
    Cells read "mean ± std" (std left out for n = 1, "(n=k)" added when k < the group's n);
    error-reduction cells (with a baseline) read the reduction of the group means."""
    header, d = ["group", "n"], table.decimals
    for c in table.columns:
        header.append(c.metric + (" (%)" if c.percent else ""))
        header += [f"{c.metric} (paper)"] if c.reference else []
        header += [_reduction_header(c)] if c.reduction else []
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
            if c.reduction:
                value = row.reduction.get(c.metric)
                cells.append("—" if value is None else f"{value * k:.{d}f}")
        lines.append(cells)
    out = ["| " + " | ".join(_cell(x) for x in line) + " |" for line in lines]
    out += ["", "Mean ± sample std (ddof=1) over the n seeds of each group; (%): fraction × 100."]
    out += [_cell(line) for line in table.provenance]
    if table.baseline is not None:
        out.append(
            "err. red.: error reduction vs the baseline group "
            f"'{_cell(table.baseline)}', (err_baseline − err) / err_baseline with "
            "err = 1 − acc, on the group means (no std); — where the baseline makes no error."
        )
    if table.reference:
        out.append(f"Reference (paper) values: {_cell(table.reference.source)}")
        out += [f"Notes: {_cell(table.reference.notes)}"] if table.reference.notes else []
        out += [f"Reference row matching no group: {_cell(m)}" for m in table.unmatched]
    if table.problems:
        out += ["", "### Failed / incomplete runs", "", "| run | problem |", "|---|---|"]
        out += [f"| {_cell(path)} | {_cell(problem)} |" for path, problem in table.problems]
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    """One row per group: group, n, <metric>_mean, <metric>_std[, <metric>_paper][,
    <metric>_err_red], in the units of the markdown table (percent columns × 100) at full
    precision; empty when not measured."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["group", "n"]
    for c in table.columns:
        header += [f"{c.metric}_mean", f"{c.metric}_std"]
        header += [f"{c.metric}_paper"] if c.reference else []
        header += [f"{c.metric}_err_red"] if c.reduction else []
    writer.writerow(header)
    for row in table.rows:
        cells: list[Any] = [row.label, row.n]
        for c in table.columns:
            s, k = row.stats.get(c.metric), _scale(c)
            cells.append("" if s is None else f"{s.mean * k:.10g}")
            cells.append("" if s is None or s.std is None else f"{s.std * k:.10g}")
            cells += [row.reference.get(c.metric, "")] if c.reference else []
            if c.reduction:
                value = row.reduction.get(c.metric)
                cells.append("" if value is None else f"{value * k:.10g}")
        writer.writerow(cells)
    return buf.getvalue()
