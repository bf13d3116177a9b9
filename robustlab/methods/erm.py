"""Empirical risk minimisation, the LightningModule every robustlab method builds on.

ERM minimises E_(x,y)[CE(f(x), y)] (optionally with label smoothing, Szegedy et al. 2016).
Subclasses change *what* is minimised by overriding :meth:`ERM.training_loss`; optimisation,
schedules, metrics, logging and checkpoint metadata live here once. Methods that need their
own optimisation loop (GAN-style generators) set ``automatic_optimization = False`` and
override ``training_step``; extra trainable parts (heads) are ordinary submodules and are
optimised automatically, frozen parts (teachers) are excluded via :meth:`trainable_parameters`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from robustlab.errors import CheckpointError, check
from robustlab.optim import build_optimizer, build_scheduler, optimizer_config, schedule_config

CHECKPOINT_KEY = "robustlab"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainingOutput:
    """What one training step produced: the loss to minimise, the logits whose accuracy is
    reported as ``train/acc``, and extra scalars logged as ``train/<name>``."""

    loss: Tensor
    logits: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


def evaluation_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 (and top-5) accuracy and expected calibration error (15 bins, L1)."""
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "ece": MulticlassCalibrationError(num_classes, n_bins=15, norm="l1"),
    }
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


def initialise_from_checkpoint(model: nn.Module, path: str) -> list[str]:
    """Copy the matching model tensors of the robustlab checkpoint at ``path`` into ``model``;
    returns the names that kept their initialisation (absent or differently shaped)."""
    from robustlab.checkpoints import load_checkpoint, model_state

    source = model_state(load_checkpoint(path))
    target = model.state_dict()
    matched = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    features = [k for k in matched if k.startswith("backbone.") and ".classifier." not in f".{k}"]
    if not features:
        raise CheckpointError(
            f"method.init_from={path}: none of its weights fit this model; was it trained "
            "with the same model config?"
        )
    model.load_state_dict(matched, strict=False)
    return sorted(set(target) - set(matched))


def freeze_except(model: nn.Module, trainable: str | list[str]) -> list[nn.Module]:
    """Stop gradients to every parameter outside ``trainable``; returns the frozen modules."""
    if trainable == "all":
        return []
    prefixes = ["classifier.", "backbone.classifier."] if trainable == "classifier" else trainable
    check(
        isinstance(prefixes, (list, tuple)) and all(isinstance(p, str) for p in prefixes),
        f"method.trainable must be 'all', 'classifier' or a list of parameter-name prefixes, "
        f"got {trainable!r}",
    )
    names = [name for name, _ in model.named_parameters()]
    unmatched = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    check(
        trainable == "classifier" or not unmatched,
        f"method.trainable: no parameter starts with {unmatched}; names look like {names[:4]}",
    )
    frozen = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own and not any(f"{name}.".startswith(p) or name.startswith(p) for p in prefixes):
            for parameter in own:
                parameter.requires_grad_(False)
            frozen.append(module)
    return frozen


class ERM(pl.LightningModule):
    """Standard training: ``L = CE_ε(f(x), y)`` with label smoothing ε.

    Args:
        model: an :class:`~robustlab.models.ImageClassifier` (takes [0, 1] images).
        optimizer: ``name`` (sgd|adam|adamw), ``lr``, ``momentum``, ``nesterov``,
            ``weight_decay``, ``betas``.
        scheduler: ``name`` (cosine|multistep|constant), ``warmup_epochs``, ``milestones``
            (epochs), ``gamma``, ``min_lr_ratio``.
        label_smoothing: ε in [0, 1).
        init_from: a robustlab checkpoint whose model weights initialise this model
            (fine-tuning); tensors whose name or shape do not match (e.g. a new classifier
            for another number of classes, or pretext heads) keep their fresh initialisation.
        trainable: which model parameters are optimised: ``all``; ``classifier`` (linear
            probe / head-only fine-tuning); or a list of dotted prefixes of
            ``model.named_parameters()`` (partial fine-tuning, e.g. ``[backbone.layer3,
            backbone.classifier]``). Frozen parts also keep their BatchNorm statistics.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        label_smoothing: float = 0.0,
        init_from: str | None = None,
        trainable: str | list[str] = "all",
    ):
        super().__init__()
        check(
            0 <= label_smoothing < 1,
            f"method.label_smoothing must be in [0, 1), got {label_smoothing}",
        )
        self.model = model
        self.optimizer_cfg = optimizer_config(optimizer)
        self.schedule_cfg = schedule_config(scheduler)
        self.label_smoothing = float(label_smoothing)
        if init_from:
            initialise_from_checkpoint(self.model, init_from)
        self.frozen = freeze_except(self.model, trainable)
        self.save_hyperparameters(ignore=["model"])
        self.run_config: dict | None = None  # the resolved run config, stored in checkpoints
        num_classes = model.num_classes
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = evaluation_metrics(num_classes, "val/")
        self.test_metrics = evaluation_metrics(num_classes, "test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    # ----------------------------------------------------------------- the objective
    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def task_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy with this method's label smoothing."""
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def training_loss(self, x: Tensor, y: Tensor) -> TrainingOutput:
        """The quantity one training step minimises; methods override this."""
        logits = self(x)
        return TrainingOutput(self.task_loss(logits, y), logits)

    # ----------------------------------------------------------------- Lightning steps
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        out = self.training_loss(x, y)
        self.train_acc(out.logits.detach(), y)
        self.log("train/loss", out.loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        for name, value in out.logs.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True)
        return out.loss

    def _evaluation_step(
        self,
        batch: tuple[Tensor, Tensor],
        metrics: MetricCollection,
        loss_metric: MeanMetric,
        stage: str,
    ) -> None:
        x, y = batch
        logits = self(x)
        metrics.update(logits, y)
        loss_metric.update(F.cross_entropy(logits, y), weight=y.numel())
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, self.val_metrics, self.val_loss, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, self.test_metrics, self.test_loss, "test")

    def on_train_epoch_start(self) -> None:
        for module in self.frozen:  # frozen parts keep their running statistics
            module.eval()

    # ----------------------------------------------------------------- optimisation
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser updates (all that require grad; frozen parts opt out)."""
        return (p for p in self.parameters() if p.requires_grad)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.trainable_parameters(), self.optimizer_cfg)
        scheduler = build_scheduler(
            optimizer,
            self.schedule_cfg,
            total_steps=int(self.trainer.estimated_stepping_batches),
            max_epochs=max(1, self.trainer.max_epochs or 1),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what is needed to rebuild the run and to resume it bit-for-bit: the resolved
        config and the global RNG states (plain tensors and ints: ``weights_only``-loadable)."""
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "config": self.run_config,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": list(random.getstate()[1]),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get(CHECKPOINT_KEY, {}).get("rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate((3, tuple(rng["python"]), None))
