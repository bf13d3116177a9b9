"""``robustlab-report PATH...``: tables of mean ± std over seeds from robustlab runs.

The command line over :mod:`robustlab.reporting` (whose docstring states the rules), and the
Python API in one place: ``load_runs``, ``group_runs``, ``aggregate``, ``to_markdown``,
``to_csv``, ``load_reference`` and :func:`build_table` for all of them in one call.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from robustlab import reporting
from robustlab.errors import RobustlabError
from robustlab.reporting import (
    Column,
    Group,
    Reference,
    Row,
    Run,
    Stat,
    Table,
    aggregate,
    format_level,
    group_runs,
    load_reference,
    load_runs,
    robustness_key,
    to_csv,
    to_markdown,
)

__all__ = [
    "Column",
    "Group",
    "Reference",
    "Row",
    "Run",
    "Stat",
    "Table",
    "aggregate",
    "build_table",
    "format_level",
    "group_runs",
    "load_reference",
    "load_runs",
    "main",
    "robustness_key",
    "to_csv",
    "to_markdown",
]


def build_table(
    paths: Iterable[str | os.PathLike],
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    reference: str | os.PathLike | None = None,
    decimals: int = 2,
    percent: bool | None = None,
) -> Table:
    """load_runs -> group_runs -> aggregate, as ``robustlab-report`` does."""
    ref = load_reference(reference) if reference is not None else None
    groups = group_runs(load_runs(paths), group_by)
    return aggregate(groups, metrics, reference=ref, decimals=decimals, percent=percent)


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
        help="group by these dotted config keys instead, e.g. method method.alpha",
    )
    add("--reference", metavar="FILE.yaml", help="paper numbers: source:, notes:, rows:")
    add(
        "--format",
        choices=("markdown", "csv", "both"),
        help="files written with --output: report.md, report.csv or both (default)",
    )
    add("--output", metavar="DIR", type=Path, help="also write the report files here")
    add("--decimals", type=int, default=2, metavar="N", help="decimals shown (default 2)")
    add(
        "--percent",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="percent for every [0, 1] column / for none (default: accuracy columns)",
    )
    return parser


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


def _run(args: argparse.Namespace) -> int:
    if not 0 <= args.decimals <= 10:
        raise RobustlabError(f"--decimals must be between 0 and 10, got {args.decimals}")
    if args.format and args.output is None:
        raise RobustlabError("--format chooses the files written with --output; add --output DIR")
    table = build_table(
        args.paths, args.metrics, args.group_by, args.reference, args.decimals, args.percent
    )
    markdown = to_markdown(table)
    sys.stdout.write(markdown)
    if args.output is not None:
        written = _write(table, markdown, args.output, args.format or "both")
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
