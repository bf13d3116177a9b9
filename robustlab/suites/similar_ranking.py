"""Similar-image ranking under distortion (Zheng et al., CVPR 2016): for the triplet
(anchor = distort(x_i), positive = x_i, negative = x_{i+1}, the next image of the evaluated
split, mod N),
ranking accuracy = P(d(a, p) < d(a, n)) with d the distance of L2-normalised penultimate
features (ties count ½)."""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.results import RobustnessRecord
from robustlab.suites.base import Case, Stats, condition_means
from robustlab.suites.feature_pairs import DistortedPairSuite, normalized_features


def ranking_correct(anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """Σ_i [d(a_i, p_i) < d(a_i, n_i)] + ½ [d(a_i, p_i) = d(a_i, n_i)]."""
    d_pos = (anchor - positive).norm(dim=1)
    d_neg = (anchor - negative).norm(dim=1)
    return (d_pos < d_neg).sum().double() + 0.5 * (d_pos == d_neg).sum().double()


class SimilarRankingSuite(DistortedPairSuite):
    """Ranking accuracy of (distorted anchor, its original, another image) per distortion."""

    name = "similar_ranking"

    def measure(self, case: Case) -> Stats:
        clean, distorted = self.pair_features(case, case.x, case.random)
        with torch.no_grad():
            other = normalized_features(case.model, case.next_x)
        keep = self.has_other_image(case)
        correct = ranking_correct(distorted[keep], clean[keep], other[keep])
        return {"ranking_acc": (correct, keep.sum().double())}

    def summarize(
        self, records: list[RobustnessRecord], clean_acc: float | None = None
    ) -> dict[str, float]:
        """Mean ranking accuracy over all conditions and per distortion."""
        summary = super().summarize(records, clean_acc)
        means = condition_means(records, "ranking_acc")
        summary.update({f"{self.name}/{c}/ranking_acc": v for c, v in means.items()})
        return summary
