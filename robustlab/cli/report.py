"""``robustlab-report PATH...``: tables of mean ± std over seeds from robustlab runs.

The command line over :mod:`robustlab.reporting`, the library (and Python API) whose docstring
states the rules.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from robustlab import reporting
from robustlab.errors import RobustlabError
from robustlab.reporting import (
    Table,
    aggregate,
    check_plottable,
    group_runs,
    load_reference,
    load_runs,
    plot_comparison,
    plottable,
    to_csv,
    to_markdown,
)
from robustlab.results import format_level


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # a one-line RobustlabError, not usage + exit
        raise RobustlabError(f"{message} (see robustlab-report --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="robustlab-report",
        description="Tables (markdown, CSV) of mean ± std over seeds from robustlab runs.\n"
        "Put PATHs first (or end --metrics/--group-by lists with --).",
        epilog=reporting.__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("paths", nargs="+", metavar="PATH", help="run/multirun folders or results.json files")
    add(
        "--metrics",
        nargs="+",
        action="extend",
        metavar="M",
        help="columns by name or glob, e.g. test/acc 'distortions/*/acc'",
    )
    add(
        "--group-by",
        nargs="+",
        action="extend",
        metavar="KEY",
        help="group by these dotted config keys instead, e.g. method method.alpha; the key "
        "path groups by the PATH argument that found each run (one row per PATH)",
    )
    add("--reference", metavar="FILE.yaml", help="paper numbers: source:, notes:, rows:")
    add(
        "--baseline",
        metavar="GROUP",
        help="add an error-reduction column per accuracy column, (err_baseline − err) / "
        "err_baseline with err = 1 − acc on group means; GROUP: a group label as shown in the "
        "table, or key=value[,key=value] config values of one group, e.g. method=erm",
    )
    add(
        "--format",
        choices=("markdown", "csv", "both"),
        help="files written with --output: report.md, report.csv or both (default)",
    )
    add("--output", metavar="DIR", type=Path, help="also write the report files here")
    add(
        "--plots",
        nargs="*",
        action="extend",
        metavar="SUITE/METRIC",
        help="with --output: comparison plots (metric vs level, one line per group) in "
        "DIR/plots, linked from report.md, e.g. distortions/acc near_duplicate/pr_precision; "
        "no value: every suite/metric measured at two or more levels",
    )
    add(
        "--mark",
        nargs="+",
        action="extend",
        metavar="SUITE/METRIC=LEVEL",
        help="with --plots: a dotted vertical line at LEVEL in that plot, e.g. the training "
        "epsilon: pgd_linf/acc=0.1 'pgd_linf/acc=8/255'",
    )
    add(
        "--wandb",
        metavar="PROJECT",
        help="with --output: log the table and plots to a wandb run of PROJECT saved in DIR "
        "(offline unless --wandb-mode online)",
    )
    add("--wandb-mode", choices=("offline", "online"), default="offline", help="default offline")
    add("--decimals", type=int, default=2, metavar="N", help="decimals shown (default 2)")
    add(
        "--percent",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="percent for every [0, 1] column / for none (default: accuracy columns)",
    )
    return parser


def parse_marks(specs: Sequence[str]) -> dict[str, float]:
    """``--mark`` values ``suite/metric=level`` (a number or a fraction such as 8/255) as
    ``{plot name: level}``."""
    marks = {}
    for spec in specs:
        name, sep, level = spec.partition("=")
        try:
            value = float(Fraction(level.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            value = None
        if not sep or value is None:
            raise RobustlabError(
                f"--mark {spec!r}: give SUITE/METRIC=LEVEL with a number or a fraction as the "
                "level, e.g. pgd_linf/acc=0.1 or pgd_linf/acc=8/255"
            )
        marks[name] = value
    return marks


def _write(table: Table, markdown: str, output: Path, fmt: str) -> list[Path]:
    written = []
    try:
        output.mkdir(parents=True, exist_ok=True)
        if fmt in ("markdown", "both"):
            written.append(output / "report.md")
            written[-1].write_text(markdown, encoding="utf-8")
        if fmt in ("csv", "both"):
            written.append(output / "report.csv")
            written[-1].write_text(to_csv(table), encoding="utf-8", newline="")
    except OSError as exc:
        raise RobustlabError(f"cannot write the report to {output}: {exc}") from None
    return written


def log_report(
    table: Table, plots: dict[str, Path], output: Path, project: str, mode: str = "offline"
) -> None:
    """Log the table (as a wandb.Table, the CSV's columns) and the plots to one wandb run of
    ``project`` saved under ``output`` (offline by default; online falls back to offline)."""
    import csv

    import wandb

    from robustlab.run.loggers import wandb_logger

    def cell(text: str) -> str | float | None:
        try:
            return float(text) if text else None
        except ValueError:
            return text

    header, *rows = list(csv.reader(io.StringIO(to_csv(table))))
    rows = [[cell(text) for text in row] for row in rows]
    run = wandb_logger(output, project=project, name="robustlab-report", mode=mode).experiment
    run.log(
        {
            "report": wandb.Table(columns=header, data=rows),
            **{f"plots/{name}": wandb.Image(str(path)) for name, path in plots.items()},
        }
    )
    run.finish()


def _run(args: argparse.Namespace) -> int:
    if not 0 <= args.decimals <= 10:
        raise RobustlabError(f"--decimals must be between 0 and 10, got {args.decimals}")
    for option, value in (
        ("--format", args.format),
        ("--plots", args.plots),
        ("--wandb", args.wandb),
    ):
        if value is not None and args.output is None:
            raise RobustlabError(f"{option} needs a folder for its files; add --output DIR")
    marks = parse_marks(args.mark or [])
    if marks and args.plots is None:
        raise RobustlabError("--mark draws into plots; add --plots")
    ref = load_reference(args.reference) if args.reference is not None else None
    groups = group_runs(load_runs(args.paths), args.group_by)
    table = aggregate(
        groups,
        args.metrics,
        reference=ref,
        decimals=args.decimals,
        percent=args.percent,
        baseline=args.baseline,
    )
    markdown = to_markdown(table)
    sys.stdout.write(markdown)
    if args.output is None:
        return 0
    plots: dict[str, Path] = {}
    if args.plots is not None:
        names = list(dict.fromkeys(args.plots or plottable(groups)))
        unplotted = sorted(set(marks) - set(names))
        if unplotted:
            raise RobustlabError(
                f"--mark: {unplotted[0]} is not a plot of this report; list it under --plots"
            )
        check_plottable(groups, names)  # all names valid before anything is written
        for name in names:
            file = args.output / "plots" / (name.replace("/", "_") + ".png")
            mark = marks.get(name)
            label = f"marked: {format_level(mark)}" if mark is not None else ""
            plots[name] = plot_comparison(groups, name, file, mark=mark, mark_label=label)
        markdown += "".join(f"\n![{n}](plots/{p.name})\n" for n, p in plots.items())
    written = _write(table, markdown, args.output, args.format or "both") + list(plots.values())
    if args.wandb:
        log_report(table, plots, args.output, args.wandb, args.wandb_mode)
        written.append(args.output / "wandb")
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``robustlab-report``: 0 on success; a user error prints one line on stderr
    and returns 2 (``HYDRA_FULL_ERROR=1`` re-raises it with its traceback)."""
    try:
        return _run(build_parser().parse_args(argv))
    except RobustlabError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"robustlab-report: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
