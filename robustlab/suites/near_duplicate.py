"""Near-duplicate detection (Zheng et al., CVPR 2016): is (image, distorted copy) told apart
from (image, a different image) by the distance of their L2-normalised penultimate features?

Positive pair: (x_i, distort(x_i)); negative pair: (x_i, distort(x_{i+1})), x_{i+1} the next
image of the evaluated split (mod N) with its own random draws (a distinct image undergoing the
same distortion, so the distortion itself does not give the answer away). Distances are
accumulated in fixed bins on [0, 2] (additive, exact under DDP);
ROC AUC, average precision and precision at a fixed recall come from the merged histograms,
exact up to the bin width (``robustlab.suites.distance_histograms``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from robustlab.errors import check
from robustlab.results import RobustnessRecord, format_level
from robustlab.suites.base import Case, Stats
from robustlab.suites.distance_histograms import (
    average_precision,
    distance_histogram,
    interpolated_pr_curve,
    precision_at_recall,
    roc_auc,
)
from robustlab.suites.feature_pairs import DistortedPairSuite

MAX_DISTANCE = 2.0  # between unit vectors
PR_CURVE_METRIC = "pr_precision"  # the report card plots it against recall (its level)


class NearDuplicateSuite(DistortedPairSuite):
    """ROC AUC, average precision and precision at ``recall`` of feature-distance
    near-duplicate detection, per (distortion, level).

    Besides those records, each condition adds its interpolated precision/recall curve as
    records ``condition="<distortion>=<level>", level=recall, metric="pr_precision"`` (so the
    report card plots precision against recall).
    """

    name = "near_duplicate"

    def __init__(
        self,
        base,
        *,
        distortions: Mapping[str, Sequence[float]] | None = None,
        bins: int = 200,
        recall: float = 0.9,
        pr_points: int = 20,
        **common: Any,
    ):
        super().__init__(base, distortions=distortions, **common)
        check(bins >= 2, f"suite.{self.name}.bins must be >= 2, got {bins}")
        check(0 < recall <= 1, f"suite.{self.name}.recall must be in (0, 1], got {recall}")
        check(pr_points >= 0, f"suite.{self.name}.pr_points must be >= 0, got {pr_points}")
        self.bins, self.recall, self.pr_points = int(bins), float(recall), int(pr_points)

    def measure(self, case: Case) -> Stats:
        clean, distorted = self.pair_features(case, case.x, case.random)
        _, other_distorted = self.pair_features(case, case.next_x, case.random_for(case.next_index))
        d_pos = (clean - distorted).norm(dim=1)
        d_neg = (clean - other_distorted).norm(dim=1)[self.has_other_image(case)]
        n_pos = torch.tensor(float(len(d_pos)), device=case.x.device)
        n_neg = torch.tensor(float(len(d_neg)), device=case.x.device)
        stats: Stats = {
            "mean_pos_distance": (d_pos.sum(), n_pos),
            "mean_neg_distance": (d_neg.sum(), n_neg),
            "_neg_per_pos": (n_neg, n_pos),
        }
        pos_hist = distance_histogram(d_pos, self.bins, MAX_DISTANCE)
        neg_hist = distance_histogram(d_neg, self.bins, MAX_DISTANCE)
        for k in range(self.bins):
            stats[f"_pos{k:04d}"] = (pos_hist[k], n_pos)
            stats[f"_neg{k:04d}"] = (neg_hist[k], n_neg)
        return stats

    @property
    def precision_metric(self) -> str:
        return f"precision_at_recall_{self.recall:g}"

    def records(self, values: Mapping[tuple[int, str], float]) -> list[RobustnessRecord]:
        """Detection metrics (and PR-curve points) from the merged distance histograms."""
        out = []
        for i, condition in enumerate(self.conditions):
            pos = torch.tensor([values.get((i, f"_pos{k:04d}"), 0.0) for k in range(self.bins)])
            neg = torch.tensor([values.get((i, f"_neg{k:04d}"), 0.0) for k in range(self.bins)])
            if not (pos.sum() > 0 and neg.sum() > 0):
                continue  # nothing measured (e.g. batches of one image)
            neg = neg * values[(i, "_neg_per_pos")]  # relative counts: P vs N pairs
            metrics = {
                "auc": roc_auc(pos, neg),
                "ap": average_precision(pos, neg),
                self.precision_metric: precision_at_recall(pos, neg, self.recall),
                "mean_pos_distance": values[(i, "mean_pos_distance")],
                "mean_neg_distance": values[(i, "mean_neg_distance")],
            }
            out += [
                RobustnessRecord(self.name, condition.name, condition.level, m, float(v))
                for m, v in metrics.items()
            ]
            if self.pr_points:
                curve = f"{condition.name}={format_level(condition.level)}"
                levels = torch.linspace(1 / self.pr_points, 1, self.pr_points)
                out += [
                    RobustnessRecord(self.name, curve, round(r, 6), PR_CURVE_METRIC, p)
                    for r, p in interpolated_pr_curve(pos, neg, levels)
                ]
        return out

    def summarize(
        self, records: list[RobustnessRecord], clean_acc: float | None = None
    ) -> dict[str, float]:
        """Mean AUC / AP / precision at recall over the conditions, and AUC per distortion."""
        summary: dict[str, float] = {}
        by_metric: dict[str, list[float]] = {}
        by_family: dict[str, list[float]] = {}
        for r in records:
            if r.metric in ("auc", "ap", self.precision_metric):
                by_metric.setdefault(r.metric, []).append(r.value)
            if r.metric == "auc":
                by_family.setdefault(r.condition, []).append(r.value)
        summary.update({f"{self.name}/mean_{m}": sum(v) / len(v) for m, v in by_metric.items()})
        summary.update({f"{self.name}/{f}/auc": sum(v) / len(v) for f, v in by_family.items()})
        return summary
