"""The unperturbed test set: top-1 accuracy and expected calibration error."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from robustlab.suites.base import Case, Condition, EvaluationSuite, Stats

ECE_BINS = 15


def calibration_stats(probs: Tensor, y: Tensor, bins: int = ECE_BINS) -> Stats:
    """Per-bin additive statistics whose combination gives the ECE (Guo et al. 2017):
    ECE = Σ_b |Σ_{i∈b} (conf_i − correct_i)| / n, with equal-width confidence bins."""
    confidence, prediction = probs.max(dim=1)
    correct = (prediction == y).float()
    index = torch.clamp((confidence * bins).ceil().long() - 1, 0, bins - 1)
    gap = torch.zeros(bins, device=probs.device).index_add_(0, index, confidence - correct)
    n = torch.tensor(float(y.numel()), device=probs.device)
    return {f"ece_gap_{b}": (gap[b], n) for b in range(bins)}


class CleanSuite(EvaluationSuite):
    name = "clean"

    def __init__(self, base, **common: Any):
        super().__init__(base, **common)
        self.conditions = [Condition("clean", 0)]

    def measure(self, case: Case) -> Stats:
        with torch.no_grad():
            logits = case.model(case.x)
        n = torch.tensor(float(case.y.numel()), device=case.x.device)
        stats = {"acc": ((logits.argmax(1) == case.y).sum().float(), n)}
        stats.update(calibration_stats(logits.softmax(1), case.y))
        return stats

    def records(self, values):
        """Fold the per-bin gaps into one ``ece`` value: Σ_b |gap_b| (each already / n)."""
        ece = sum(abs(v) for (i, m), v in values.items() if m.startswith("ece_gap_"))
        kept = {k: v for k, v in values.items() if not k[1].startswith("ece_gap_")}
        kept[(0, "ece")] = ece
        return super().records(kept)

    def summarize(self, records, clean_acc: float | None = None):
        return {f"clean/{r.metric}": r.value for r in records}
