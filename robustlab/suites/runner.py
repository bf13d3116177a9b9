"""Run the suites chosen in the ``suite`` config group on one model.

Every suite is checked against a clean reference measured on *its own* images: the clean
accuracy of the first ``max_images`` test images when the suite is limited to them, else of the
whole test set (one clean pass per distinct image set, shared with the ``clean`` suite). So a
robust or corrupted accuracy is never compared with a clean accuracy from another sample.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import pytorch_lightning as pl
from torch import nn

from robustlab.results import RobustnessRecord
from robustlab.suites import build_suite
from robustlab.suites.base import EvaluationSuite
from robustlab.suites.evaluator import SuiteEvaluator

log = logging.getLogger("robustlab")


class SuiteRun(NamedTuple):
    """What :func:`run_suites` measured.

    ``suites`` is ``{name: {"images": n, "clean_acc": a, ...}}``: the number of test images each
    suite used, the clean accuracy on exactly those images, and (attack suites) the attack
    implementation (``backend``, ``package``, ``package_version``). It goes into results.json
    as ``provenance.suites`` and into report.md.
    """

    records: list[RobustnessRecord]
    summary: dict[str, float]
    warnings: list[str]
    suites: dict[str, dict[str, Any]]


def build_suites(
    suite_cfg: Mapping[str, Mapping] | None, datamodule: pl.LightningDataModule, *, seed: int = 0
) -> dict[str, EvaluationSuite]:
    """Every suite of ``suite_cfg`` (``{name: options}``), built — and so validated, including
    attack backends — before any of them runs."""
    suites = {}
    for name, options in (suite_cfg or {}).items():
        options = dict(options or {})
        options.setdefault("seed", seed)
        suites[name] = build_suite(name, datamodule, **options)
    return suites


def check_suites_fit(suites: Mapping[str, EvaluationSuite], model: nn.Module) -> None:
    """Before training: every suite's own models (a transfer attack's ``source``) classify
    ``model``'s classes and channels, so a mismatch stops the run before its first step rather
    than after it (one-line ConfigError)."""
    for suite in suites.values():
        suite.check_fits(model.num_classes, model.in_channels)


def image_count(datamodule: pl.LightningDataModule, max_images: int | None) -> int | None:
    """Test images a suite limited to ``max_images`` sees (None if the data cannot tell)."""
    try:
        total = len(datamodule.test_dataset())
    except (AttributeError, TypeError, NotImplementedError):
        return None
    return total if max_images is None else min(int(max_images), total)


def _evaluate(suite: EvaluationSuite, model: nn.Module, trainer: pl.Trainer) -> dict:
    evaluator = SuiteEvaluator(model, suite)
    started = time.perf_counter()
    trainer.test(evaluator, datamodule=suite, verbose=False)
    log.info(
        f"suite {suite.name}: {len(suite.conditions)} conditions in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return evaluator.values


def run_suites(
    suite_cfg: Mapping[str, Mapping] | None,
    model: nn.Module,
    datamodule: pl.LightningDataModule,
    trainer: pl.Trainer,
    *,
    seed: int = 0,
) -> SuiteRun:
    """Score ``model`` on every suite in ``suite_cfg`` (``{name: options}``), in the order given:
    :func:`build_suites`, then :func:`score_suites`."""
    suites = build_suites(suite_cfg, datamodule, seed=seed)
    return score_suites(suites, model, datamodule, trainer, seed=seed)


def score_suites(
    suites: Mapping[str, EvaluationSuite],
    model: nn.Module,
    datamodule: pl.LightningDataModule,
    trainer: pl.Trainer,
    *,
    seed: int = 0,
) -> SuiteRun:
    """Score ``model`` on built ``suites`` (of ``datamodule``), in their order, through
    ``trainer.test`` (so on every device and process of the trainer).

    Returns the tidy records, the headline summary, the sanity warnings (each suite checked
    against the clean accuracy on its own images) and what each suite ran on (:class:`SuiteRun`).
    """
    clean_runs: dict[int | None, tuple[list[RobustnessRecord], dict[str, float]]] = {}

    def clean_reference(max_images: int | None) -> tuple[list[RobustnessRecord], dict]:
        if max_images not in clean_runs:
            clean = build_suite("clean", datamodule, seed=seed, max_images=max_images)
            clean_records = clean.records(_evaluate(clean, model, trainer))
            clean_runs[max_images] = (clean_records, clean.summarize(clean_records))
        return clean_runs[max_images]

    records: list[RobustnessRecord] = []
    summary: dict[str, float] = {}
    warnings: list[str] = []
    described: dict[str, dict[str, Any]] = {}
    for name, suite in suites.items():
        if name == "clean":
            suite_records, suite_summary = clean_reference(suite.max_images)
            clean_acc = suite_summary["clean/acc"]
        else:
            clean_acc = clean_reference(suite.max_images)[1]["clean/acc"]
            suite_records = suite.records(_evaluate(suite, model, trainer))
            suite_summary = suite.summarize(suite_records, clean_acc)
        records.extend(suite_records)
        summary.update(suite_summary)
        warnings.extend(suite.sanity_violations(suite_records, clean_acc))
        described[name] = {
            "images": image_count(datamodule, suite.max_images),
            "clean_acc": clean_acc,
            **getattr(suite, "provenance", dict)(),
        }
    return SuiteRun(records, summary, warnings, described)
