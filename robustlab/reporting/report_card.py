"""``report.md`` and PNG plots for one evaluated model (and the same to wandb when active).

Per suite: its image count and the clean accuracy on those same images, a table of the metric
by condition × level, and small multiples of the metric against the level (accuracy vs severity
per corruption, robust accuracy vs ε per attack) with the clean accuracy as a dashed line, plus
the sanity checks the suites raised (e.g. robust accuracy above clean accuracy).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustlab.reporting.plots import draw_panels, leveled_conditions
from robustlab.results import PICTURES, Results, RobustnessRecord, format_level


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


def suite_panels(records: Sequence[RobustnessRecord], metric: str) -> dict[str, dict[str, list]]:
    """``{condition: {metric: [(level, value, None, 1), ...]}}``: the panels of one run's suite."""
    panels: dict[str, dict[str, list]] = defaultdict(lambda: {metric: []})
    for r in sorted(records, key=lambda r: _level_key(r.level)):
        if r.metric == metric:
            panels[r.condition][metric].append((float(r.level), r.value, None, 1))
    return dict(panels)


def plot_suite(
    suite: str,
    records: Sequence[RobustnessRecord],
    metric: str,
    path: Path,
    *,
    clean_acc: float | None = None,
) -> Path:
    """Small multiples of ``metric`` vs level, one panel per condition; for accuracy, a dashed
    line at the clean accuracy measured on the same images."""
    reference = clean_acc if metric == "acc" else None
    return draw_panels(
        suite_panels(records, metric),
        suite,
        metric,
        path,
        title=f"{suite}: {metric}",
        reference=reference,
        reference_label="clean accuracy on the same images",
    )


def suite_line(info: Mapping[str, Any]) -> str:
    """What a suite ran on: its image count, the clean accuracy on those images, and the attack
    implementation where one was chosen (``provenance.suites.<suite>`` of results.json)."""
    parts = []
    if info.get("images") is not None:
        parts.append(f"{info['images']:,} test images")
    if info.get("clean_acc") is not None:
        parts.append(f"clean accuracy on these images {info['clean_acc']:.4f}")
    if info.get("backend"):
        parts.append(
            f"implementation: {info['backend']} ({info['package']} {info['package_version']})"
        )
    if info.get("source"):
        parts.append(f"transfer examples crafted on {info['source']}")
    return "; ".join(parts)


def write_report_card(
    results: Results, run_dir: Path, *, warnings: Sequence[str] = (), loggers: Sequence = ()
) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/plots/<suite>_<metric>.png``; returns the
    report path. Every number is shown with the image count of its suite."""
    run_dir = Path(run_dir)
    suites: Mapping[str, Mapping[str, Any]] = results.provenance.get("suites") or {}
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
        lines += ["## Summary", "", "| metric | value | images |", "|---|---|---|"]
        for key, value in sorted(results.summary.items()):
            count = suites.get(key.split("/")[0], {}).get("images")
            lines.append(f"| {key} | {value:.4f} | {'' if count is None else count} |")
        lines.append("")
    lines += ["## Sanity checks", ""]
    lines += [f"- ⚠ {w}" for w in warnings] or ["- all passed"]
    lines.append("")
    images = {}
    for suite, records in _by_suite(results.robustness).items():
        info = suites.get(suite, {})
        lines += [f"## {suite}", ""]
        lines += [suite_line(info), ""] if suite_line(info) else []
        for metric in sorted({r.metric for r in records}):
            lines += [f"**{metric}**", "", suite_table(records, metric), ""]
            if _numeric(records) and leveled_conditions(suite_panels(records, metric)):
                name = f"{suite}_{metric}.png"
                plot_suite(
                    suite,
                    records,
                    metric,
                    run_dir / "plots" / name,
                    clean_acc=info.get("clean_acc"),
                )
                images[f"{suite}/{metric}"] = run_dir / "plots" / name
                lines += [f"![{suite} {metric}](plots/{name})", ""]
    pictures = sorted((run_dir / PICTURES).glob("*.png"))
    if pictures:  # what the method drew while training (ERM.save_picture)
        lines += ["## Pictures", ""]
        for picture in pictures:
            name = f"{PICTURES}/{picture.name}"
            lines += [f"![{name}]({name})", ""]
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
