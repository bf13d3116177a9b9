"""``report.md`` and PNG plots for one evaluated model (and the same to wandb when active).

Per suite: a table of the metric by condition × level, and a plot of the metric against the
level (accuracy vs severity per corruption, robust accuracy vs ε per attack), plus the sanity
checks the suites raised (e.g. robust accuracy above clean accuracy).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from robustlab.reporting.plots import level_axis_label
from robustlab.results import Results, RobustnessRecord, format_level


def _by_suite(records: Sequence[RobustnessRecord]) -> dict[str, list[RobustnessRecord]]:
    grouped: dict[str, list[RobustnessRecord]] = defaultdict(list)
    for record in records:
        grouped[record.suite].append(record)
    return grouped


def suite_table(records: Sequence[RobustnessRecord], metric: str) -> str:
    """Markdown table: one row per condition, one column per level."""
    levels = sorted({r.level for r in records if r.metric == metric}, key=_level_key)
    rows: dict[str, dict] = defaultdict(dict)
    for r in records:
        if r.metric == metric:
            rows[r.condition][r.level] = r.value
    head = f"| condition | {' | '.join(format_level(level) for level in levels)} | mean |"
    lines = [head, "|---" * (len(levels) + 2) + "|"]
    for condition, values in rows.items():
        cells = [f"{values[level]:.4f}" if level in values else "" for level in levels]
        mean = sum(values.values()) / len(values)
        lines.append(f"| {condition} | {' | '.join(cells)} | {mean:.4f} |")
    return "\n".join(lines)


def _level_key(level: object) -> tuple:
    return (0, float(level)) if isinstance(level, (int, float)) else (1, str(level))


def _numeric(records: Sequence[RobustnessRecord]) -> bool:
    return all(isinstance(r.level, (int, float)) for r in records)


def plot_suite(suite: str, records: Sequence[RobustnessRecord], metric: str, path: Path) -> Path:
    """Line plot of ``metric`` vs level, one line per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        if r.metric == metric:
            lines[r.condition].append((float(r.level), r.value))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (condition, points) in enumerate(lines.items()):
        points.sort()
        style = ("-", "--", ":")[index // 10 % 3]  # the colour cycle has 10 colours
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            linestyle=style,
            label=condition,
        )
    levels = sorted({p[0] for pts in lines.values() for p in pts})
    ax.set_xticks(levels, [format_level(x) for x in levels], fontsize=8)
    ax.set_xlabel(level_axis_label(suite, metric))
    ax.set_ylabel(metric)
    ax.set_title(f"{suite}: {metric}")
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend(fontsize=7, ncol=2 if len(lines) > 8 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report_card(
    results: Results, run_dir: Path, *, warnings: Sequence[str] = (), loggers: Sequence = ()
) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/plots/<suite>.png``; returns the report path."""
    run_dir = Path(run_dir)
    lines = [
        f"# Robustness report: {results.method} / {results.model} on {results.data}",
        "",
        f"- checkpoint: `{results.checkpoint}`",
        f"- seed: {results.seed}",
        f"- device: {results.provenance.get('device')}, "
        f"commit: {results.provenance.get('git_commit')}",
        "",
    ]
    if results.summary:
        lines += ["## Summary", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(results.summary.items())]
        lines.append("")
    lines += ["## Sanity checks", ""]
    lines += [f"- ⚠ {w}" for w in warnings] or ["- all passed"]
    lines.append("")
    images = {}
    for suite, records in _by_suite(results.robustness).items():
        lines += [f"## {suite}", ""]
        for metric in sorted({r.metric for r in records}):
            lines += [f"**{metric}**", "", suite_table(records, metric), ""]
            levels = {r.level for r in records if r.metric == metric}
            if _numeric(records) and len(levels) > 1:
                name = f"{suite}_{metric}.png"
                plot_suite(
                    suite,
                    records,
                    metric,
                    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
                    or run_dir / "plots" / name,
                )
                images[f"{suite}/{metric}"] = run_dir / "plots" / name
                lines += [f"![{suite} {metric}](plots/{name})", ""]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    _log_to_wandb(loggers, results, images)
    return report


def _log_to_wandb(loggers: Sequence, results: Results, images: dict[str, Path]) -> None:
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            run = logger.experiment
            run.log({f"plots/{k}": wandb.Image(str(v)) for k, v in images.items()})
            table = wandb.Table(
                columns=["suite", "condition", "level", "metric", "value"],
                data=[
                    [r.suite, r.condition, str(r.level), r.metric, r.value]
                    for r in results.robustness
                ],
            )
            run.log(
                {"robustness": table, **{f"summary/{k}": v for k, v in results.summary.items()}}
            )
