"""Paper-style tables from robustlab runs (the library behind ``robustlab-report``).

Gathers every ``results.json`` under run / multirun folders, groups the runs that share a config up
to the seed, and reports mean ± sample std (ddof = 1) over the seeds of each group, as markdown and
CSV, optionally next to a paper's reference numbers. Rules:

- Columns: robustness records become "{suite}/{condition}@{level}/{metric}" with compact levels
  (3 -> "3", 0.0313725 -> "8/255", else 4 significant digits). Default columns: test/acc plus
  every summary key present in all groups, less any key equal to an earlier column in every run
  (clean/acc on the whole test set is test/acc), plus the metrics of matching reference rows;
  --metrics picks columns by name or fnmatch glob, e.g. 'distortions/*/acc'.
- Percent: a column is shown x 100 with "(%)" when every measured value lies in [0, 1] and its
  name contains the word "acc"/"accuracy" (default), any name (--percent) or never
  (--no-percent). Reference values are printed as given: write them in the displayed unit.
- Groups: (method, data, model) plus the Hydra overrides (.hydra/overrides.yaml) whose values
  differ between runs; without overrides, the resolved-config keys that differ between runs of
  the same (method, data, model). Seeds, hydra.*, logger.*, paths.* and path-like keys (*dir,
  *path, *root, *file, checkpoint) never split groups. --group-by replaces this with explicit
  dotted keys ("method", "data", "model" are the config choices).
- Error reduction (--baseline GROUP, a group label or key=value pairs naming one group): after
  each accuracy column, (err_baseline - err) / err_baseline with err = 1 - acc, on the group
  means (no std); 0 on the baseline row. suite.<attack>.source paths never split groups.
- Failed runs, Hydra job folders without results.json and runs missing a shown metric that
  other runs of their group have are listed under "Failed / incomplete runs" (a metric no run of
  a group has, e.g. ERM's stability loss, is just "—"); n counts the ok runs of a group.
- Plots (--plots, with --output): per "suite/metric", one panel per condition and one line per
  group of the metric's mean ± std against the record level (severity, ε, distortion level,
  recall); --wandb logs the table and the plots to a wandb run (offline by default).
"""

from __future__ import annotations

from robustlab.reporting.grouping import Group, group_runs
from robustlab.reporting.plots import check_plottable, plot_comparison, plottable
from robustlab.reporting.reference import Reference, load_reference
from robustlab.reporting.runs import Run, format_level, load_runs, robustness_key
from robustlab.reporting.table import Column, Row, Stat, Table, aggregate, to_csv, to_markdown

__all__ = [
    "Column",
    "Group",
    "Reference",
    "Row",
    "Run",
    "Stat",
    "Table",
    "aggregate",
    "check_plottable",
    "format_level",
    "group_runs",
    "load_reference",
    "load_runs",
    "plot_comparison",
    "plottable",
    "robustness_key",
    "to_csv",
    "to_markdown",
]
