"""Comparison plots: a robustness metric against its level, one line per group of runs.

For one ``(suite, metric)`` — e.g. ``distortions/acc`` or ``corruptions/acc`` against the level,
``pgd_linf/acc`` against ε, ``near_duplicate/pr_precision`` against recall — every condition gets
a panel and every group (runs sharing a config up to the seed) a line of the mean over its seeds,
with ± one sample std (ddof = 1) as error bars. Conditions that grow stronger as their level falls
(JPEG quality, thumbnail scale) get a reversed x axis, so every level panel reads "stronger →".
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from robustlab.errors import RobustlabError
from robustlab.reporting.grouping import Group
from robustlab.results import format_level

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: conditions whose distortion grows as the level *falls* (quality, scale)
STRONGER_AT_LOWER_LEVELS = frozenset({"jpeg", "thumbnail"})

#: x-axis label by metric, where the level is not a severity / ε / distortion level
LEVEL_AXIS_LABELS: dict[str, str] = {"pr_precision": "recall"}

#: (level, mean, std or None, n) of one group on one condition
Point = tuple[float, float, float | None, int]


def level_axis_label(suite: str, metric: str) -> str:
    """What the ``level`` of a suite's records is: ε, severity, recall or a distortion level."""
    if metric in LEVEL_AXIS_LABELS:
        return LEVEL_AXIS_LABELS[metric]
    if suite.startswith(("pgd", "fgsm", "autoattack")):
        return "ε"
    return "severity" if suite == "corruptions" else "level"


def curves(groups: Sequence[Group], suite: str, metric: str) -> dict[str, dict[str, list[Point]]]:
    """``{condition: {group label: [(level, mean, std, n), ...] sorted by level}}`` over the ok
    runs' records of ``suite``/``metric`` that have a numeric level."""
    out: dict[str, dict[str, list[Point]]] = defaultdict(dict)
    for group in groups:
        values: dict[tuple[str, float], list[float]] = defaultdict(list)
        for run in group.runs:
            if run.ok:
                for r in run.records:
                    if r.suite == suite and r.metric == metric:
                        values[(r.condition, r.level)].append(r.value)
        for (condition, level), vals in sorted(values.items()):
            std = statistics.stdev(vals) if len(vals) > 1 else None
            point = (level, statistics.fmean(vals), std, len(vals))
            out[condition].setdefault(group.label, []).append(point)
    return dict(out)


def plottable(groups: Sequence[Group]) -> list[str]:
    """``"suite/metric"`` names with at least one condition measured at two or more levels."""
    levels: dict[tuple[str, str, str], set[float]] = defaultdict(set)
    for group in groups:
        for run in group.runs:
            for r in run.records if run.ok else ():
                levels[(r.suite, r.metric, r.condition)].add(r.level)
    names = {f"{s}/{m}" for (s, m, _), lv in levels.items() if len(lv) > 1}
    return sorted(names)


def check_plottable(groups: Sequence[Group], names: Sequence[str]) -> None:
    """Raise a RobustlabError naming the plottable choices unless every name can be drawn."""
    available = plottable(groups)
    for name in names:
        if name not in available:
            raise RobustlabError(
                f"cannot plot {name!r}: no suite/metric of that name has records at two or more "
                f"levels; plottable: {', '.join(available) or 'none (no leveled records)'}"
            )


def plot_comparison(
    groups: Sequence[Group],
    name: str,
    path: str | Path,
    *,
    mark: float | None = None,
    mark_label: str = "marked level",
) -> Path:
    """Draw ``name`` = ``"suite/metric"`` for all groups (one panel per condition) to ``path``;
    ``mark``: a level drawn as a dotted vertical line in every panel (e.g. the training ε)."""
    check_plottable(groups, [name])
    suite, _, metric = name.partition("/")
    data = curves(groups, suite, metric)
    order = [g.label for g in groups]
    return draw_panels(
        data,
        suite,
        metric,
        path,
        title=f"{name} (mean ± std over seeds)",
        order=order,
        mark=mark,
        mark_label=mark_label,
    )


def leveled_conditions(panels: dict[str, dict[str, list[Point]]]) -> list[str]:
    """The conditions of ``panels`` measured at two or more levels (the ones with a curve)."""
    return [c for c in panels if len({p[0] for pts in panels[c].values() for p in pts}) > 1]


def panel_figure(
    panels: dict[str, dict[str, list[Point]]],
    suite: str,
    metric: str,
    *,
    title: str,
    order: Sequence[str] = (),
    reference: float | None = None,
    reference_label: str = "",
    mark: float | None = None,
    mark_label: str = "",
) -> Figure:
    """Small multiples: one panel per condition of ``panels`` (``{condition: {line label:
    points}}``) measured at two or more levels, shared y axis, one line per label with ± std
    error bars, an optional dashed horizontal ``reference`` line (e.g. clean accuracy), an
    optional dotted vertical line at the level ``mark`` (e.g. the training ε) and one legend
    below the panels, never over the data. Readable at 19 conditions × 5 levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = leveled_conditions(panels)
    if not conditions:
        raise ValueError("no condition of these panels has two or more levels to draw")
    present = {label for c in conditions for label in panels[c]}
    labels = [x for x in order if x in present] + sorted(present - set(order))
    cols = min(5 if len(conditions) > 12 else 4, len(conditions))
    rows = -(-len(conditions) // cols)
    entries = len(labels) + (reference is not None) + (mark is not None)
    legend = 0.17 * entries / (1 if entries > 4 else 2) + 0.3  # inches
    height = 2.6 * rows + legend + 0.4
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, height), squeeze=False, sharey=True)
    handles = {}
    for ax, condition in zip(axes.flat, conditions, strict=False):
        for label, points in panels[condition].items():
            index = labels.index(label)
            handles[label] = ax.errorbar(
                [p[0] for p in points],
                [p[1] for p in points],
                yerr=[p[2] or 0.0 for p in points],
                marker="o",
                ms=3,
                capsize=2,
                linestyle=("-", "--", ":")[index // 10 % 3],  # the colour cycle has 10 colours
                color=f"C{index % 10}",
            )
        if reference is not None:
            handles[reference_label] = ax.axhline(reference, color="0.4", ls="--", lw=1)
        if mark is not None:
            handles[mark_label] = ax.axvline(mark, color="0.4", ls=":", lw=1)
        levels = sorted({p[0] for pts in panels[condition].values() for p in pts})
        if len(levels) <= 8:  # label the measured levels; denser curves keep the default ticks
            ax.set_xticks(levels, [format_level(x) for x in levels], fontsize=7)
        if condition in STRONGER_AT_LOWER_LEVELS:  # the level is the quality / scale itself
            ax.invert_xaxis()
        ax.set_title(condition, fontsize=9)
        ax.set_xlabel(level_axis_label(suite, metric), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(conditions) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    names = labels + [reference_label] * (reference is not None) + [mark_label] * (mark is not None)
    key = fig.legend(
        [handles[k] for k in names],
        names,
        loc="lower center",
        fontsize=7,
        ncol=1 if entries > 4 else 2,
        frameon=False,
    )
    fig.canvas.draw()  # long group labels under few panels: widen the figure to the legend
    wide = key.get_window_extent().width / fig.dpi + 0.3
    if wide > fig.get_figwidth():
        fig.set_figwidth(wide)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend / height, 1, 1))
    return fig


def draw_panels(
    panels: dict[str, dict[str, list[Point]]], suite: str, metric: str, path: str | Path, **kw
) -> Path:
    """:func:`panel_figure` saved as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = panel_figure(panels, suite, metric, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
