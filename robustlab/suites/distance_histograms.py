"""Detection metrics from histograms of pair distances (exact up to the bin width).

Near-duplicate detection (Zheng et al., CVPR 2016) calls a pair a duplicate when the distance
of its two feature vectors is below a threshold. Distances of duplicate pairs (positives) and
of distinct pairs (negatives) are accumulated as counts in fixed bins — additive statistics,
so batches and processes merge exactly — and the metrics are computed from the merged
histograms with the thresholds at the bin edges:

- ROC AUC = P(d_neg > d_pos) + ½ P(same bin): pairs in one bin count as ties.
- precision(t) = TP / (TP + FP), recall(t) = TP / P for "duplicate iff d < t".
- average precision = Σ_k (R_k − R_{k−1}) · P_k over the bin edges (the step-wise sum of
  scikit-learn's ``average_precision_score``).
- precision at recall r: the precision at the first threshold whose recall reaches r.
- interpolated PR curve: p_interp(r) = max{P_k : R_k ≥ r}.
"""

from __future__ import annotations

import torch
from torch import Tensor


def distance_histogram(distances: Tensor, bins: int = 200, max_distance: float = 2.0) -> Tensor:
    """Counts of ``distances`` in ``bins`` equal bins on [0, max_distance] (values above the
    range go to the last bin), float64 on the input's device."""
    index = (distances.double() / max_distance * bins).floor().clamp_(0, bins - 1).long()
    return torch.bincount(index, minlength=bins).double()


def roc_auc(pos_hist: Tensor, neg_hist: Tensor) -> float:
    """P(d_neg > d_pos) + ½ P(d_neg, d_pos in the same bin), positives = small distances."""
    pos = pos_hist.double() / pos_hist.sum()
    neg = neg_hist.double() / neg_hist.sum()
    neg_above = neg.flip(0).cumsum(0).flip(0) - neg  # mass of negatives in higher bins
    return min(1.0, float((pos * (neg_above + 0.5 * neg)).sum()))


def precision_recall(pos_hist: Tensor, neg_hist: Tensor) -> tuple[Tensor, Tensor]:
    """Precision and recall at each bin edge t_k (duplicate iff d < t_k), k = 1..bins;
    precision is 1 where nothing is predicted a duplicate."""
    tp = pos_hist.double().cumsum(0)
    fp = neg_hist.double().cumsum(0)
    predicted = tp + fp
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1e-300), torch.ones_like(tp))
    recall = tp / pos_hist.double().sum()
    return precision, recall


def average_precision(pos_hist: Tensor, neg_hist: Tensor) -> float:
    """Σ_k (R_k − R_{k−1}) P_k over the bin edges (R_0 = 0)."""
    precision, recall = precision_recall(pos_hist, neg_hist)
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((steps * precision).sum())


def precision_at_recall(pos_hist: Tensor, neg_hist: Tensor, recall_level: float) -> float:
    """Precision at the smallest threshold whose recall is ≥ ``recall_level``."""
    precision, recall = precision_recall(pos_hist, neg_hist)
    reached = torch.nonzero(recall >= recall_level - 1e-12)
    return float(precision[reached[0, 0]]) if reached.numel() else 0.0


def interpolated_pr_curve(
    pos_hist: Tensor, neg_hist: Tensor, recall_levels: Tensor
) -> list[tuple[float, float]]:
    """(r, max{precision_k : recall_k ≥ r}) for each r of ``recall_levels``."""
    precision, recall = precision_recall(pos_hist, neg_hist)
    points = []
    for r in recall_levels.tolist():
        mask = recall >= r - 1e-12
        points.append((float(r), float(precision[mask].max()) if mask.any() else 0.0))
    return points
