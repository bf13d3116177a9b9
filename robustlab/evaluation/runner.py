"""Run the suites chosen in the ``suite`` config group on one model."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from torch import nn

from robustlab.evaluation.evaluator import SuiteEvaluator
from robustlab.results import RobustnessRecord
from robustlab.suites import build_suite

log = logging.getLogger("robustlab")


def run_suites(
    suite_cfg: Mapping[str, Mapping] | None,
    model: nn.Module,
    datamodule: pl.LightningDataModule,
    trainer: pl.Trainer,
    *,
    seed: int = 0,
    clean_acc: float | None = None,
) -> tuple[list[RobustnessRecord], dict[str, float], list[str]]:
    """Score ``model`` on every suite in ``suite_cfg`` (``{name: options}``).

    Returns the tidy records, the headline summary and the sanity warnings of all suites
    (checked against ``clean_acc``, or the ``clean`` suite's accuracy once it has run).
    Suites run in the order given, through ``trainer.test`` (so on every device and
    process of the trainer).
    """
    records: list[RobustnessRecord] = []
    summary: dict[str, float] = {}
    warnings: list[str] = []
    for name, options in (suite_cfg or {}).items():
        options: dict[str, Any] = dict(options or {})
        options.setdefault("seed", seed)
        suite = build_suite(name, datamodule, **options)
        evaluator = SuiteEvaluator(model, suite)
        started = time.perf_counter()
        trainer.test(evaluator, datamodule=suite, verbose=False)
        log.info(
            f"suite {name}: {len(suite.conditions)} conditions in "
            f"{time.perf_counter() - started:.1f} s"
        )
        suite_records = suite.records(evaluator.values)
        records.extend(suite_records)
        summary.update(suite.summarize(suite_records, clean_acc))
        clean_acc = summary.get("clean/acc", clean_acc)
        warnings.extend(suite.sanity_violations(suite_records, clean_acc))
    return records, summary, warnings
