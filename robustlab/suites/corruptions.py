"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) as an evaluation suite: accuracy per
corruption × severity, made batch by batch on the evaluation device (or read from the official
CIFAR-10-C release), with mean accuracy, CE / mCE and relative mCE against a baseline run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustlab.errors import check
from robustlab.perturbations.corruptions import (
    ALL_CORRUPTIONS,
    HELDOUT_CORRUPTIONS,
    TEST_CORRUPTIONS,
    corrupt,
    load_corrupted_release,
)
from robustlab.randomness import RandomSource
from robustlab.registry import check_known
from robustlab.results import RobustnessRecord
from robustlab.suites.base import Condition, PerturbationSuite
from robustlab.suites.corruption_error import baseline_from_results, corruption_errors


class CorruptionSuite(PerturbationSuite):
    """Accuracy under each corruption at each severity.

    Args:
        corruptions: names (null = all 15 test + 4 held-out corruptions).
        severities: subset of 1..5.
        params: ``cifar`` | ``imagenet`` parameter table (null: by image size).
        baseline: results.json (or run folder) of a baseline model for CE / mCE.
        release_root: folder with the official ``<corruption>.npy`` + ``labels.npy`` files
            (CIFAR-10-C layout); when set, images are read from it instead of generated.
    """

    name = "corruptions"

    def __init__(
        self,
        base,
        *,
        corruptions: Sequence[str] | None = None,
        severities: Sequence[int] = (1, 2, 3, 4, 5),
        params: str | None = None,
        baseline: str | None = None,
        release_root: str | None = None,
        **common: Any,
    ):
        super().__init__(base, **common)
        names = list(corruptions or ALL_CORRUPTIONS)
        check_known(
            names, ALL_CORRUPTIONS, group="corruption(s)", where=f"suite.{self.name}", ordered=True
        )
        for s in severities:
            check(
                isinstance(s, int) and 1 <= s <= 5,
                f"suite.{self.name}.severities must be integers in 1..5, got {s!r}",
            )
        check(
            params in (None, "cifar", "imagenet"),
            f"suite.{self.name}.params must be cifar, imagenet or null, got {params!r}",
        )
        self.params = params
        self.baseline = baseline_from_results(baseline, self.name) if baseline else None
        self.release_root = Path(release_root).expanduser() if release_root else None
        self.conditions = [Condition(c, int(s)) for c in names for s in severities]

    def test_dataloader(self) -> list:
        if self.release_root is None:
            return super().test_dataloader()
        loaders = []
        for condition in self.conditions:
            images, labels = load_corrupted_release(
                self.release_root, condition.name, condition.level
            )
            images = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()
            loaders.append(
                self.base.arrays_dataloader(
                    images,
                    torch.as_tensor(labels).long(),
                    max_images=self.max_images,
                    wrap=self.index_batches,
                )
            )
        return loaders

    def perturb(self, x: Tensor, condition: Condition, random: RandomSource) -> Tensor:
        if self.release_root is not None:
            return x  # already corrupted on disk
        return corrupt(x, condition.name, condition.level, params=self.params, generator=random)

    def summarize(
        self, records: list[RobustnessRecord], clean_acc: float | None = None
    ) -> dict[str, float]:
        summary = super().summarize(records, clean_acc)
        accs = {(r.condition, int(r.level)): r.value for r in records if r.metric == "acc"}
        for group, members in (("", TEST_CORRUPTIONS), ("heldout_", HELDOUT_CORRUPTIONS)):
            values = [v for (c, _), v in accs.items() if c in members]
            if values:
                summary[f"{self.name}/{group}mean_acc"] = sum(values) / len(values)
                summary[f"{self.name}/{group}mean_error"] = 1 - sum(values) / len(values)
        if self.baseline is not None:
            errors = {k: 1 - v for k, v in accs.items() if k[0] in TEST_CORRUPTIONS}
            baseline_errors, baseline_clean = self.baseline
            clean_error = None if clean_acc is None else 1 - clean_acc
            ce = corruption_errors(errors, baseline_errors, clean_error, baseline_clean)
            summary.update({f"{self.name}/{k}": v for k, v in ce.items()})
        return summary
