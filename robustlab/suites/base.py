"""Evaluation suites: score a model on a base test set under a list of conditions.

A suite is a LightningDataModule with one test dataloader per :class:`Condition` (each over
the base test set, sharded exactly under DDP by the base datamodule) and a :meth:`measure`
that turns one :class:`Case` (a clean batch under one condition) into *additive* statistics —
sums and counts, so that shards and batches combine exactly (``acc = Σ correct / Σ n``).

Perturbations are made on the evaluation device, batch by batch. Every random number of a
condition comes from per-image streams (:class:`~robustlab.randomness.ImageStreams`): image i's
stream is seeded by (suite seed, suite name, condition name, condition level, i), i its index in
the evaluated split. So a perturbed image, and every record, is the same whatever the batch
size, worker count, world size or device (of the same kind), and adding a condition leaves the
others' numbers unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from robustlab.data.batches import IndexedBatch, IndexedBatches
from robustlab.randomness import ImageStreams, RandomSource
from robustlab.results import RobustnessRecord

#: metric name -> (sum, count) for one batch; the value reported is Σ sum / Σ count.
Stats = dict[str, tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Condition:
    """One test condition of a suite, e.g. (``gaussian_noise``, severity 3)."""

    name: str
    level: float | int | str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)


@dataclass
class Case:
    """One batch under one condition, as :meth:`EvaluationSuite.measure` scores it.

    ``index`` holds each image's index in the evaluated split; ``next_x`` / ``next_index`` the
    following image of the split (suites with ``uses_neighbours``), else None. ``key`` is what
    the condition's random streams are seeded by, besides the image index.
    """

    model: nn.Module
    x: Tensor
    y: Tensor
    condition: Condition
    index: Tensor
    key: tuple[int | str, ...]
    next_x: Tensor | None = None
    next_index: Tensor | None = None

    @cached_property
    def random(self) -> ImageStreams:
        """This batch's per-image random streams for the condition."""
        return self.random_for(self.index)

    def random_for(self, index: Tensor) -> ImageStreams:
        """The condition's streams of the images ``index`` (e.g. the neighbours)."""
        return ImageStreams.keyed(self.key, index, self.x.device)


def condition_means(records: list[RobustnessRecord], metric: str) -> dict[str, float]:
    """Mean of ``metric`` over the levels of each condition (e.g. per corruption family)."""
    values: dict[str, list[float]] = {}
    for r in records:
        if r.metric == metric:
            values.setdefault(r.condition, []).append(r.value)
    return {condition: sum(v) / len(v) for condition, v in values.items()}


def correct_count(model: nn.Module, x: Tensor, y: Tensor) -> Stats:
    """Top-1 accuracy statistics of ``model`` on images ``x``."""
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).sum()
    return {"acc": (correct.float(), torch.tensor(float(y.numel()), device=x.device))}


class EvaluationSuite(pl.LightningDataModule):
    """Base class: subclasses set ``name``, build ``conditions`` and implement :meth:`measure`."""

    name: ClassVar[str] = "suite"
    #: Attacks need input gradients; other suites run under ``torch.no_grad``.
    needs_grad: ClassVar[bool] = False
    #: Whether batches also carry the next image of the split (pair suites).
    uses_neighbours: ClassVar[bool] = False

    def __init__(
        self,
        base: pl.LightningDataModule,
        *,
        seed: int = 0,
        max_images: int | None = None,
        name: str | None = None,
    ):
        super().__init__()
        self.name = name or type(self).name  # the config key, e.g. pgd_linf / pgd_l2
        self.base = base
        self.seed = int(seed)
        self.max_images = max_images
        self.conditions: list[Condition] = []

    def check_fits(self, num_classes: int, in_channels: int) -> None:
        """Raise a one-line ConfigError if a model of this suite's own (e.g. a transfer
        attack's source) cannot classify the evaluated images: ``num_classes`` classes of
        ``in_channels``-channel images. Nothing to check by default."""

    # -------------------------------------------------------------- data
    def setup(self, stage: str | None = None) -> None:
        self.base.trainer = self.trainer
        self.base.setup("test")

    def index_batches(self, batches: Any) -> IndexedBatches:
        """The batch dataset of every suite loader: batches also carry image indices."""
        return IndexedBatches(batches, neighbours=self.uses_neighbours)

    def test_dataloader(self) -> list:
        return [
            self.base.test_dataloader(max_images=self.max_images, wrap=self.index_batches)
            for _ in self.conditions
        ]

    def on_after_batch_transfer(self, batch: IndexedBatch, dataloader_idx: int) -> IndexedBatch:
        """The base datamodule's conversion (uint8 -> float) of the images and neighbours."""
        x, y = self.base.on_after_batch_transfer((batch.images, batch.labels), dataloader_idx)
        following = batch.next_images
        if following is not None:
            following, _ = self.base.on_after_batch_transfer((following, y), dataloader_idx)
        return batch._replace(images=x, labels=y, next_images=following)

    # -------------------------------------------------------------- scoring
    def random_key(self, condition: Condition) -> tuple[int | str, ...]:
        """What a condition's per-image streams are seeded by (besides the image index)."""
        return (self.seed, self.name, condition.name, repr(condition.level))

    def case(self, model: nn.Module, batch: IndexedBatch, condition_index: int) -> Case:
        """The :class:`Case` of ``batch`` under condition ``condition_index``."""
        condition = self.conditions[condition_index]
        return Case(
            model,
            batch.images,
            batch.labels,
            condition,
            batch.index,
            self.random_key(condition),
            batch.next_images,
            batch.next_index,
        )

    def measure(self, case: Case) -> Stats:
        raise NotImplementedError

    def records(self, values: Mapping[tuple[int, str], float]) -> list[RobustnessRecord]:
        """Tidy records from ``{(condition index, metric): value}``."""
        return [
            RobustnessRecord(
                self.name, self.conditions[i].name, self.conditions[i].level, metric, float(value)
            )
            for (i, metric), value in sorted(values.items())
        ]

    def summarize(
        self, records: list[RobustnessRecord], clean_acc: float | None = None
    ) -> dict[str, float]:
        """Headline figures (``<suite>/<name>``); by default the mean of each metric."""
        by_metric: dict[str, list[float]] = {}
        for record in records:
            by_metric.setdefault(record.metric, []).append(record.value)
        return {f"{self.name}/mean_{m}": sum(v) / len(v) for m, v in by_metric.items()}

    def sanity_violations(
        self, records: list[RobustnessRecord], clean_acc: float | None
    ) -> list[str]:
        """Checks a reader should see in the report (attacks override this)."""
        return []


class PerturbationSuite(EvaluationSuite):
    """A suite whose conditions are image perturbations scored by top-1 accuracy; subclasses
    implement :meth:`perturb` (corruptions, distortions)."""

    def perturb(self, x: Tensor, condition: Condition, random: RandomSource) -> Tensor:
        raise NotImplementedError

    def measure(self, case: Case) -> Stats:
        return correct_count(case.model, self.perturb(case.x, case.condition, case.random), case.y)

    def summarize(
        self, records: list[RobustnessRecord], clean_acc: float | None = None
    ) -> dict[str, float]:
        """Mean accuracy over all conditions and per perturbation family."""
        summary = super().summarize(records, clean_acc)
        summary.update(
            {f"{self.name}/{c}/mean_acc": v for c, v in condition_means(records, "acc").items()}
        )
        return summary
