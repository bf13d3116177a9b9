"""Evaluation suites: score a model on a base test set under a list of conditions.

A suite is a LightningDataModule with one test dataloader per :class:`Condition` (each over
the base test set, sharded exactly under DDP by the base datamodule) and a :meth:`measure`
that turns a clean batch into *additive* statistics for that condition — sums and counts,
so that shards and batches combine exactly (``acc = Σ correct / Σ n``). Perturbations are
made on the evaluation device, batch by batch, from a generator seeded by
(suite seed, condition, batch): the same seed gives the same perturbed images.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

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

    # -------------------------------------------------------------- data
    def setup(self, stage: str | None = None) -> None:
        self.base.trainer = self.trainer
        self.base.setup("test")

    def test_dataloader(self) -> list:
        return [self.base.test_dataloader(max_images=self.max_images) for _ in self.conditions]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.base.on_after_batch_transfer(batch, dataloader_idx)

    def generator(
        self, device: torch.device, condition_index: int, batch_index: int, rank: int = 0
    ) -> torch.Generator:
        key = f"{self.name}/{self.seed}/{condition_index}/{batch_index}/{rank}".encode()
        return torch.Generator(device=device).manual_seed(zlib.crc32(key))

    # -------------------------------------------------------------- scoring
    def measure(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        condition: Condition,
        generator: torch.Generator,
    ) -> Stats:
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

    def perturb(self, x: Tensor, condition: Condition, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def measure(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        condition: Condition,
        generator: torch.Generator,
    ) -> Stats:
        return correct_count(model, self.perturb(x, condition, generator), y)

    def summarize(
        self, records: list[RobustnessRecord], clean_acc: float | None = None
    ) -> dict[str, float]:
        """Mean accuracy over all conditions and per perturbation family."""
        summary = super().summarize(records, clean_acc)
        summary.update(
            {f"{self.name}/{c}/mean_acc": v for c, v in condition_means(records, "acc").items()}
        )
        return summary
