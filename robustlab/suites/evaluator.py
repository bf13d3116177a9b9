"""The LightningModule that runs any :class:`~robustlab.suites.base.EvaluationSuite`."""

from __future__ import annotations

from collections import defaultdict

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from robustlab.data.batches import IndexedBatch
from robustlab.suites.base import EvaluationSuite


class SuiteEvaluator(pl.LightningModule):
    """Scores a frozen classifier on every condition of a suite (``trainer.test``).

    Statistics are summed per (condition, metric) over batches, then over processes, and every
    random draw comes from the image's own stream (:meth:`EvaluationSuite.case`), so a DDP
    evaluation reports exactly what one process would on the same images, at any batch size.
    """

    def __init__(self, model: nn.Module, suite: EvaluationSuite):
        super().__init__()
        self.model = model
        self.suite = suite
        self._sums: dict[tuple[int, str], list[Tensor]] = defaultdict(
            lambda: [torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
        )
        self.values: dict[tuple[int, str], float] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_test_start(self) -> None:
        self.model.eval()
        self._sums.clear()

    def test_step(self, batch: IndexedBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        case = self.suite.case(self.model, batch, dataloader_idx)
        with torch.set_grad_enabled(self.suite.needs_grad):
            stats = self.suite.measure(case)
        for metric, (total, count) in stats.items():
            acc = self._sums[(dataloader_idx, metric)]
            acc[0] += total.detach().double().cpu()
            acc[1] += count.detach().double().cpu()

    def on_test_epoch_end(self) -> None:
        keys = sorted(self._sums)
        if not keys:
            self.values = {}
            return
        stacked = torch.stack([torch.stack(self._sums[k]) for k in keys]).to(self.device)
        stacked = self.trainer.strategy.reduce(stacked, reduce_op="sum")
        self.values = {
            k: (s / c).item() if c > 0 else float("nan")
            for k, (s, c) in zip(keys, stacked.cpu(), strict=True)
        }
