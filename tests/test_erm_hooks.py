"""The ERM base's Lightning plumbing, checked value by value on tiny real fits (a 2-pixel
linear classifier, batches of 3 and 1 images, well under a second each): what is logged, where
(per step / per epoch / progress bar / synchronised over processes) and with which weights;
the optimisers and schedules it configures, stepped by Lightning or by the method; the
checkpoint record it writes and the random state it restores; its config checks, word for
word. (Loss values of the methods: tests/test_methods.py and the per-method tests.)"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlab.data import build_datamodule
from robustlab.errors import CheckpointError, ConfigError
from robustlab.methods.erm import (
    ERM,
    TrainingOutput,
    evaluation_metrics,
    freeze_except,
    initialise_from_checkpoint,
)
from robustlab.models import build_classifier
from robustlab.run.builders import build_run_method
from robustlab.run.checkpoints import (
    CHECKPOINT_KEY,
    ExportedPart,
    capture_rng,
    load_classifier,
    run_record,
)
from tests.helpers import (
    LinearClassifier,
    _wandb_log_records,
    compose_train,
    quiet_cpu_trainer,
    wandb_offline_runs,
)

# logits = (x0, x1, −x0 − x1); predictions 1, 0, 0, 1 against labels 1, 2, 0, 0
WEIGHT = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
X = torch.tensor([[0.2, 0.7], [0.9, 0.1], [0.5, 0.4], [0.0, 0.3]]).reshape(4, 1, 1, 2)
Y = torch.tensor([1, 2, 0, 0])
FROZEN_SGD = {"name": "sgd", "lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0}
CONSTANT = {"name": "constant"}


def _per_image() -> torch.Tensor:
    return F.cross_entropy(LinearClassifier(WEIGHT)(X), Y, reduction="none")


def _trainer(**options) -> pl.Trainer:
    defaults = {"max_epochs": 1, "devices": 1, "num_sanity_val_steps": 0, "limit_val_batches": 0}
    return quiet_cpu_trainer(**{**defaults, **options})


def _loader(batch_size: int = 3, **options) -> DataLoader:
    return DataLoader(TensorDataset(X, Y), batch_size=batch_size, **options)


class _Doubled(ERM):
    """ERM that also reports twice its loss as ``train/double`` (a method's extra scalar)."""

    def training_loss(self, x, y):
        out = super().training_loss(x, y)
        return TrainingOutput(out.loss, out.logits, {"double": 2 * out.loss.detach()})


class _Stacked(_Doubled):
    """Training batches ``(x stacked twice: (2, B, C, H, W), y)``: the batch's first tensor is
    not batch-major, so Lightning cannot infer the batch size from it (it would take 2)."""

    def training_objective(self, batch):
        stacked, y = batch
        return self.training_loss(stacked[0], y)


def _stacked_loader(batch_size: int = 3) -> DataLoader:
    def collate(rows):
        x = torch.stack([row[0] for row in rows])
        return torch.stack([x, x]), torch.stack([row[1] for row in rows])

    return DataLoader(TensorDataset(X, Y), batch_size=batch_size, collate_fn=collate)


class _Placement(pl.Callback):
    """Per training batch: the logged values so far and each logged key's Lightning options
    (on_step, on_epoch, prog_bar, synchronised over processes)."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []
        self.options: dict[str, tuple] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.record_options(trainer)

    def on_train_end(self, trainer, pl_module):  # also what was logged at the epoch's end
        self.record_options(trainer)

    def record_options(self, trainer):
        for result in trainer._results.values():
            meta = result.meta
            self.options[meta.name] = (
                meta.on_step,
                meta.on_epoch,
                meta.prog_bar,
                meta.sync.should,
            )


# ------------------------------------------------------------------------------ logging
def test_training_logs_values_per_step_and_example_weighted_epoch_means():
    per_image = _per_image()
    accuracy = 0.5  # predictions 1, 0, 0, 1: images 0 and 2 right
    method = _Doubled(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    watch = _Placement()
    trainer = _trainer(callbacks=[watch], log_every_n_steps=1)  # every step a logging step
    trainer.fit(method, train_dataloaders=_loader())
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    epoch_loss = per_image.mean().item()
    assert logged["train/loss_epoch"] == pytest.approx(epoch_loss, rel=1e-5)
    assert logged["train/double"] == pytest.approx(2 * epoch_loss, rel=1e-5)
    assert logged["train/acc"] == pytest.approx(accuracy)
    # per step: the batch's own mean
    assert watch.steps[0]["train/loss_step"] == pytest.approx(per_image[:3].mean().item(), 1e-5)
    assert watch.steps[1]["train/loss_step"] == pytest.approx(per_image[3].item(), rel=1e-5)
    # train/loss per step and per epoch; accuracy and extra scalars per epoch only
    assert set(trainer.logged_metrics) == {
        "train/loss_step",
        "train/loss_epoch",
        "train/acc",
        "train/double",
    }
    # no progress bar drawn: nothing is read back for one
    assert trainer.progress_bar_metrics == {}


def test_the_progress_bar_shows_the_loss_and_accuracy_not_the_extra_scalars():
    method = _Doubled(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    trainer = _trainer(enable_progress_bar=True)
    trainer.fit(method, train_dataloaders=_loader())
    assert set(trainer.progress_bar_metrics) == {"train/loss_step", "train/loss_epoch", "train/acc"}
    assert trainer.progress_bar_metrics["train/acc"] == pytest.approx(0.5)


class _HostReads:
    """Counts reads of tensor values into Python (``item``, ``tolist``, ``float``, ``int``,
    ``bool``) while active: on a GPU each one waits for every queued kernel."""

    NAMES = ("item", "tolist", "__float__", "__int__", "__bool__")

    def __init__(self, monkeypatch):
        self.active, self.count = False, 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(original))

    def _counted(self, original):
        def read(tensor, *args, **kwargs):
            self.count += self.active
            return original(tensor, *args, **kwargs)

        return read


class _CountFrom(pl.Callback):
    def __init__(self, reads: _HostReads, step: int):
        self.reads, self.step = reads, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.reads.active |= trainer.global_step == self.step

    def on_train_epoch_end(self, trainer, pl_module):
        self.reads.active = False


@pytest.mark.parametrize("method_name", ["erm", "adversarial", "stability", "selfsup"])
def test_training_steps_read_nothing_back_to_the_host_without_a_progress_bar(
    monkeypatch, method_name
):
    """Between logging steps a training step leaves the device's queue alone: the host reads
    over 12 steps equal those over 4 (the same epoch-end work), for the methods the GPU
    benchmark times and two that log extra scalars. Before the fix, Lightning read the step
    loss back for an invisible progress bar once per step."""
    reads = _HostReads(monkeypatch)
    counts = []
    for steps in (4, 12):
        cfg = compose_train("data=synthetic", "model=small_cnn", f"method={method_name}")
        dm = build_datamodule(
            "synthetic",
            n_train=4 * (2 + steps),
            n_test=4,
            image_size=32,
            batch_size=4,
            val_fraction=0,
        )
        dm.setup("fit")
        pl.seed_everything(0, verbose=False)
        trainer = _trainer(callbacks=[_CountFrom(reads, 2)], log_every_n_steps=1000)
        reads.count = 0
        trainer.fit(build_run_method(cfg, dm), datamodule=dm)
        counts.append(reads.count)
    assert counts[0] == counts[1]


class _NoLogits(ERM):
    """A step that reports no prediction (e.g. a generator step)."""

    def training_loss(self, x, y):
        return TrainingOutput(super().training_loss(x, y).loss, None)


class _Unlabelled(ERM):
    """Logs its step without labels."""

    def training_step(self, batch, batch_idx):
        out = self.objective_with_terms(batch)
        self.log_training(out, None)
        return out.loss


class _NoClassifier(ERM):
    is_classifier = False


def test_no_train_accuracy_without_logits_labels_or_a_classifier():
    for cls in (_NoLogits, _Unlabelled, _NoClassifier):
        method = cls(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
        trainer = _trainer()
        trainer.fit(method, train_dataloaders=_loader())
        assert set(trainer.logged_metrics) == {"train/loss_step", "train/loss_epoch"}, cls
        epoch_loss = float(trainer.logged_metrics["train/loss_epoch"])
        assert epoch_loss == pytest.approx(_per_image().mean().item(), rel=1e-5)


def test_train_accuracy_is_over_images_not_a_mean_over_classes():
    """Labels 0, 0, 0, 1 with predictions 0, 0, 1, 0: 2 of 4 images right (0.5); the mean of
    the per-class recalls would be (2/3 + 0) / 2 = 1/3."""
    x = torch.tensor([[3.0, 0.0], [2.0, 1.0], [0.0, 1.0], [1.0, 0.0]]).reshape(4, 1, 1, 2)
    y = torch.tensor([0, 0, 0, 1])
    model = LinearClassifier([[1.0, 0.0], [0.0, 1.0]])
    assert model(x).argmax(1).tolist() == [0, 0, 1, 0]
    method = ERM(model, optimizer=FROZEN_SGD, scheduler=CONSTANT)
    trainer = _trainer()
    trainer.fit(method, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=4))
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(0.5)


def test_epoch_means_are_weighted_by_the_number_of_labels_whatever_the_batch_looks_like():
    """Batches of 3 and 1 images whose first tensor is (2, B, ...): the epoch values are the
    mean over the 4 images (weights len(y)), not the mean of the 2 batch means."""
    per_image = _per_image()
    method = _Stacked(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    trainer = _trainer()
    trainer.fit(method, train_dataloaders=_stacked_loader())
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    by_image = per_image.mean().item()
    by_batch = (per_image[:3].mean().item() + per_image[3].item()) / 2
    assert by_image != pytest.approx(by_batch, rel=1e-2)
    assert logged["train/loss_epoch"] == pytest.approx(by_image, rel=1e-5)
    assert logged["train/double"] == pytest.approx(2 * by_image, rel=1e-5)


def test_training_logs_are_synchronised_over_processes():
    """A real DDP fit (gloo, one process): the epoch values (accuracy too) are reduced over
    all processes by the method (one all-reduce) and logged as synchronised (so Lightning does
    not warn), the step loss is reduced before it is logged; their placement. (Two processes:
    test_epoch_means_are_over_all_processes_under_ddp.)"""
    saved_env = dict(os.environ)
    try:
        method = _Doubled(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
        watch = _Placement()
        trainer = _trainer(strategy="ddp", callbacks=[watch])
        trainer.fit(method, train_dataloaders=_loader())
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved_env)
    assert watch.options == {
        # name: (on_step, on_epoch, prog_bar, synchronised); no progress bar drawn
        "train/loss_step": (True, False, False, False),  # the last batch: reduced already
        "train/loss_epoch": (False, True, False, True),
        "train/loss": (False, True, False, True),  # the callbacks' epoch value (last record)
        "train/acc": (False, True, False, True),
        "train/double": (False, True, False, True),
    }
    assert logged["train/loss_epoch"] == pytest.approx(_per_image().mean().item(), rel=1e-5)


def test_validation_and_test_log_epoch_metrics_under_their_stage():
    """``val/*`` and ``test/*``: accuracy, ECE and the loss as example-weighted epoch means
    (batches of 3 and 1), per epoch only; the progress bar shows validation accuracy and ECE."""
    per_image = _per_image()
    method = ERM(LinearClassifier(WEIGHT))
    trainer = _trainer(limit_val_batches=None)
    (validated,) = trainer.validate(method, dataloaders=_loader(), verbose=False)
    assert set(trainer.callback_metrics) == {"val/acc", "val/ece", "val/loss"}
    assert set(trainer.progress_bar_metrics) == {"val/acc", "val/ece"}
    (tested,) = trainer.test(method, dataloaders=_loader(), verbose=False)
    assert set(trainer.callback_metrics) == {"test/acc", "test/ece", "test/loss"}
    assert trainer.progress_bar_metrics == {}
    for record, stage in ((validated, "val"), (tested, "test")):
        assert record[f"{stage}/acc"] == pytest.approx(0.5)
        assert record[f"{stage}/loss"] == pytest.approx(per_image.mean().item(), rel=1e-5)
        by_batch = (per_image[:3].mean().item() + per_image[3].item()) / 2
        assert record[f"{stage}/loss"] != pytest.approx(by_batch, rel=1e-2)
    with torch.no_grad():
        confidence, predicted = F.softmax(LinearClassifier(WEIGHT)(X), dim=1).max(dim=1)
    # ECE over 15 equal-width confidence bins: Σ_bins |Σ_i∈bin (correct_i − confidence_i)| / N
    gaps: dict[int, float] = {}
    for bin_, right, conf in zip(
        (confidence * 15).floor().tolist(), predicted == Y, confidence, strict=True
    ):
        gaps[bin_] = gaps.get(bin_, 0.0) + float(right) - conf.item()
    ece = sum(abs(g) for g in gaps.values()) / len(Y)
    assert len(gaps) == 3  # two images share a bin
    assert tested["test/ece"] == pytest.approx(ece, rel=1e-5)
    assert validated["val/ece"] == pytest.approx(ece, rel=1e-5)


def _probabilities_as_logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).log()


def test_evaluation_metrics_accuracy_over_images_and_ece_in_fifteen_bins():
    """Confidences 0.45 (right), 0.47 (wrong), 0.9 (right), 0.6 (wrong). With 15 bins 0.45 and
    0.47 fall in different bins: ECE = (0.55 + 0.47 + 0.1 + 0.6) / 4 = 0.43 (with 16 bins they
    share one: 0.195). Labels 0, 1, 0, 2: accuracy 2/4 (the class mean would be 1/3)."""
    logits = _probabilities_as_logits(
        [
            [0.45, 0.275, 0.275],
            [0.47, 0.265, 0.265],
            [0.9, 0.05, 0.05],
            [0.6, 0.2, 0.2],
        ]
    )
    metrics = evaluation_metrics(3, "p/")
    metrics.update(logits, torch.tensor([0, 1, 0, 2]))
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values == pytest.approx({"p/acc": 0.5, "p/ece": 0.43}, rel=1e-5)


def test_evaluation_metrics_top5_over_images_from_six_classes():
    """Seven classes; the label ranks 1st, 5th, 6th and 7th: top-5 accuracy 2/4 (top-6: 3/4,
    top-1: 1/4); labels 0, 0, 0, 1 (the class mean of top-5 recalls would differ)."""
    order = [
        [0, 1, 2, 3, 4, 5, 6],  # label 0 first
        [1, 2, 3, 4, 0, 5, 6],  # label 0 fifth
        [1, 2, 3, 4, 5, 0, 6],  # label 0 sixth
        [0, 2, 3, 4, 5, 6, 1],  # label 1 seventh
    ]
    logits = torch.zeros(4, 7)
    for row, ranking in enumerate(order):
        for rank, cls in enumerate(ranking):
            logits[row, cls] = 7.0 - rank
    metrics = evaluation_metrics(7, "t/")
    metrics.update(logits, torch.tensor([0, 0, 0, 1]))
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert set(values) == {"t/acc", "t/ece", "t/acc_top5"}
    assert values["t/acc_top5"] == pytest.approx(0.5)
    assert values["t/acc"] == pytest.approx(0.25)
    assert set(evaluation_metrics(6, "v/").keys()) == {"v/acc", "v/ece", "v/acc_top5"}
    assert set(evaluation_metrics(5, "v/").keys()) == {"v/acc", "v/ece"}


# ------------------------------------------------------------------------------ optimisation
class _LrWatch(pl.Callback):
    """The learning rate of every optimiser at the start of every training batch."""

    def __init__(self):
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append([opt.param_groups[0]["lr"] for opt in trainer.optimizers])


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / total))


def _fit_lrs(method: ERM, epochs: int, batch_size: int = 2) -> tuple[pl.Trainer, list]:
    watch = _LrWatch()
    trainer = _trainer(max_epochs=epochs, callbacks=[watch])
    trainer.fit(method, train_dataloaders=_loader(batch_size))
    return trainer, watch.lrs


def test_step_schedule_is_stepped_once_per_batch_over_the_whole_run():
    """2 epochs of 2 batches: a cosine over 4 optimiser steps, lr 0.4·½(1 + cos(π s / 4))."""
    optimizer = {"name": "sgd", "lr": 0.4, "momentum": 0.5, "nesterov": True, "weight_decay": 0.01}
    method = ERM(LinearClassifier(WEIGHT), optimizer=optimizer, scheduler={"name": "cosine"})
    trainer, lrs = _fit_lrs(method, epochs=2)
    assert [lr for (lr,) in lrs] == pytest.approx([0.4 * _cosine(s, 4) for s in range(4)])
    (group,) = trainer.optimizers[0].param_groups
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.5, True, 0.01)
    (config,) = trainer.lr_scheduler_configs
    assert (config.interval, config.name) == ("step", None)


def test_epoch_schedule_is_stepped_once_per_epoch_over_max_epochs():
    """3 epochs: a cosine over 3 epochs, the same lr within an epoch; after a 1-epoch run the
    cosine over 1 epoch has reached 0."""
    scheduler = {"name": "cosine", "interval": "epoch"}
    method = ERM(LinearClassifier(WEIGHT), optimizer={"lr": 0.4}, scheduler=scheduler)
    _, lrs = _fit_lrs(method, epochs=3)
    expected = [0.4 * _cosine(epoch, 3) for epoch in range(3) for _ in range(2)]
    assert [lr for (lr,) in lrs] == pytest.approx(expected)
    method = ERM(LinearClassifier(WEIGHT), optimizer={"lr": 0.4}, scheduler=scheduler)
    trainer, _ = _fit_lrs(method, epochs=1)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_multistep_milestones_are_in_epochs_of_the_run():
    """2 epochs of 2 steps with a milestone at epoch 1 (step interval): lr 0.4, 0.4, 0.04, 0.04."""
    scheduler = {"name": "multistep", "milestones": [1], "gamma": 0.1}
    method = ERM(LinearClassifier(WEIGHT), optimizer={"lr": 0.4}, scheduler=scheduler)
    _, lrs = _fit_lrs(method, epochs=2)
    assert [lr for (lr,) in lrs] == pytest.approx([0.4, 0.4, 0.04, 0.04])


def test_only_trainable_parameters_are_optimised_under_the_named_optimizer():
    method = ERM(
        LinearClassifier(WEIGHT),
        optimizers={"head": {"name": "adam", "lr": 0.1, "betas": [0.5, 0.9], "weight_decay": 0}},
        trainable=["classifier.bias"],
    )
    weight = method.model.classifier.weight.detach().clone()
    trainer, _ = _fit_lrs(method, epochs=1)
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, torch.optim.Adam)
    (group,) = optimizer.param_groups
    assert group["params"] == [method.model.classifier.bias]
    assert group["betas"] == (0.5, 0.9)
    assert torch.equal(method.model.classifier.weight, weight)
    assert trainer.lr_scheduler_configs[0].name == "lr-head"


class _Manual(ERM):
    """Manual optimisation: every optimiser (by name) stepped on the same loss."""

    automatic_optimization = False

    def training_objective(self, batch):
        x, y, *_ = batch
        optimizers = self.optimizers_by_name()
        out = self.training_loss(x, y)
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        self.manual_backward(out.loss)
        for optimizer in optimizers.values():
            optimizer.step()
        return TrainingOutput(out.loss.detach(), out.logits)


class _TwoOptimisers(_Manual):
    """Two named optimisers: ``weight`` and ``bias`` of the linear classifier."""

    def optimizer_parameters(self):
        return {"weight": [self.model.classifier.weight], "bias": [self.model.classifier.bias]}


TWO = {
    "weight": {"name": "sgd", "lr": 0.4, "momentum": 0.0, "scheduler": {"name": "cosine"}},
    "bias": {
        "name": "adam",
        "lr": 0.2,
        "betas": [0.5, 0.9],
        "scheduler": {"name": "cosine", "interval": "epoch"},
    },
}


def test_manual_optimisation_steps_each_schedule_at_its_own_interval():
    """The method steps its schedules (Lightning does not under manual optimisation): the
    ``weight`` cosine after each of the 4 batches, the ``bias`` cosine after each of the 2
    epochs; each optimiser holds its own part, under its name."""
    method = _TwoOptimisers(LinearClassifier(WEIGHT), optimizers=TWO)
    trainer, lrs = _fit_lrs(method, epochs=2)
    expected = [[0.4 * _cosine(s, 4), 0.2 * _cosine(s // 2, 2)] for s in range(4)]
    assert sum(lrs, []) == pytest.approx(sum(expected, []))
    sgd, adam = trainer.optimizers
    assert sgd.param_groups[0]["params"] == [method.model.classifier.weight]
    assert adam.param_groups[0]["params"] == [method.model.classifier.bias]
    assert adam.param_groups[0]["betas"] == (0.5, 0.9)
    configs = trainer.lr_scheduler_configs
    assert [(c.name, c.interval) for c in configs] == [("lr-weight", "step"), ("lr-bias", "epoch")]
    assert float(trainer.callback_metrics["train/acc"]) >= 0  # logged like any method


def test_manual_optimisation_with_one_optimiser_steps_its_schedule():
    method = _Manual(LinearClassifier(WEIGHT), optimizer={"lr": 0.4}, scheduler={"name": "cosine"})
    trainer, lrs = _fit_lrs(method, epochs=2)
    assert [lr for (lr,) in lrs] == pytest.approx([0.4 * _cosine(s, 4) for s in range(4)])
    assert list(method.optimizers_by_name()) == ["model"]
    assert method.optimizers_by_name()["model"].optimizer is trainer.optimizers[0]


def test_named_optimisers_must_name_exactly_the_parts_the_method_optimises():
    named = {"w": TWO["weight"], "b": TWO["bias"]}
    with pytest.raises(ConfigError) as err:
        _fit_lrs(_TwoOptimisers(LinearClassifier(WEIGHT), optimizers=named), epochs=1)
    assert str(err.value) == (
        "method.optimizers names ['b', 'w']; _TwoOptimisers optimises ['bias', 'weight']: "
        "name exactly those"
    )


def test_config_errors_of_optimisers_and_terms_name_the_fix():
    terms = {"stability": {"alpha": 0.1}}
    with pytest.raises(ConfigError) as err:
        _TwoOptimisers(LinearClassifier(WEIGHT), optimizers=TWO, terms=terms)
    assert str(err.value) == (
        "method.terms cannot be added to _TwoOptimisers, which steps its own optimisers: "
        "remove method.terms"
    )
    with pytest.raises(ConfigError) as err:
        _Manual(LinearClassifier(WEIGHT), optimizers=TWO).optimizer_parameters()
    assert str(err.value) == (
        "method.optimizers names ['weight', 'bias'], but _Manual optimises one set of "
        "parameters: keep one name"
    )
    with pytest.raises(ConfigError) as err:
        ERM(LinearClassifier(WEIGHT), optimizers={"a": {}, "b": {}})
    assert str(err.value) == (
        "ERM optimises automatically, with one optimiser; method.optimizers names ['a', 'b']: "
        "keep one"
    )
    for given in ({"optimizer": {"lr": 0.1}}, {"scheduler": CONSTANT}):
        with pytest.raises(ConfigError) as err:
            ERM(LinearClassifier(WEIGHT), optimizers={"a": {}}, **given)
        assert str(err.value) == (
            "method.optimizers (named optimisers) replaces method.optimizer and "
            "method.scheduler: set method.optimizer=null method.scheduler=null"
        )
    with pytest.raises(ConfigError) as err:
        ERM(LinearClassifier(WEIGHT), label_smoothing=1)
    assert str(err.value) == "method.label_smoothing must be in [0, 1), got 1"
    # the default options are valid; an explicit optimiser is used as given
    method = ERM(LinearClassifier(WEIGHT), optimizer={"lr": 0.3}, scheduler=CONSTANT)
    assert (method.optimizer_cfg.lr, method.schedule_cfg.name) == (0.3, "constant")
    assert method.label_smoothing == 0.0 and method.frozen == [] and method.run_config is None
    assert "model" not in method.hparams


# ------------------------------------------------------------------------------ composed terms
class ProbeTerm:
    """An objective term that records what it was given: value ``Σ inputs + 2·Σ logits +
    3·Σ y``."""

    log_name = "probe"

    def __init__(self, weight: float = 1.0):
        self.weight = weight
        self.seen: tuple | None = None

    def __call__(self, model, x, logits, y):
        self.seen = (model, x, logits, y)
        return x.sum() + 2 * logits.sum() + 3 * y.float().sum()


class _OnOtherInputs(ERM):
    """Trains on 1 − x (like an attack's examples) and says so in its output."""

    def training_objective(self, batch):
        x, y, *_ = batch
        inputs = 1 - x
        logits = self(inputs)
        clean = self(x)
        return TrainingOutput(
            self.task_loss(logits, y), clean, {"base": logits.sum()}, inputs, logits
        )


def test_terms_add_weight_times_value_on_the_inputs_the_objective_trained():
    terms = {"tests.test_erm_hooks:ProbeTerm": {"weight": 0.5}}
    method = ERM(LinearClassifier(WEIGHT), terms=terms)
    (term,) = method.terms.values()
    out = method.objective_with_terms((X, Y))
    logits = method(X)
    value = X.sum() + 2 * logits.sum() + 3 * Y.sum()
    assert term.seen[0] is method.model and term.seen[1] is X and term.seen[3] is Y
    assert torch.equal(term.seen[2], logits)
    assert out.loss.item() == pytest.approx(F.cross_entropy(logits, Y).item() + 0.5 * value.item())
    assert (
        out.logs["probe"].item() == pytest.approx(value.item())
        and not out.logs["probe"].requires_grad
    )
    assert torch.equal(out.logits, logits) and out.inputs is None and out.input_logits is None

    other = _OnOtherInputs(LinearClassifier(WEIGHT), terms=terms)
    (term,) = other.terms.values()
    out = other.objective_with_terms((X, Y, {"extra": X}))
    inputs, used = 1 - X, other(1 - X)
    assert torch.equal(term.seen[1], inputs) and torch.equal(term.seen[2], used)
    value = inputs.sum() + 2 * used.sum() + 3 * Y.sum()
    expected = F.cross_entropy(used, Y).item() + 0.5 * value.item()
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert set(out.logs) == {"base", "probe"}
    assert torch.equal(out.logits, other(X))  # train/acc stays on the clean logits
    assert torch.equal(out.inputs, inputs) and torch.equal(out.input_logits, used)
    # without terms the objective is returned as it is
    plain = ERM(LinearClassifier(WEIGHT))
    assert plain.objective_with_terms((X, Y)).loss.item() == pytest.approx(
        F.cross_entropy(logits, Y).item()
    )


# ------------------------------------------------------------------------------ requirements
class _Segmented(ERM):
    required_views = ("segments", "weak")


class _OptionalView(ERM):
    @classmethod
    def views_for(cls, method):
        return ("strong",) if method.get("strong") else ()


class _Grouped(ERM):
    needs_groups = True


class _Stage(ERM):
    is_classifier = False


def _message(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    return str(err.value)


def test_requirement_errors_name_each_missing_key():
    assert _message(lambda: _Segmented.check_requirements({})) == (
        "_Segmented needs the training view(s) ['segments', 'weak']: "
        "set data.views=[weak] data.segments={}"
    )
    assert _message(lambda: _Segmented.check_requirements({"views": ["weak"]})) == (
        "_Segmented needs the training view(s) ['segments']: set data.segments={}"
    )
    assert _message(lambda: _Segmented.check_requirements({"segments": {}})) == (
        "_Segmented needs the training view(s) ['weak']: set data.views=[weak]"
    )
    _Segmented.check_requirements({"views": ["weak"], "segments": {}})
    _OptionalView.check_requirements({})
    _OptionalView.check_requirements({"views": ["strong"]}, method={"strong": True})
    assert _message(lambda: _OptionalView.check_requirements({}, method={"strong": 1})) == (
        "_OptionalView needs the training view(s) ['strong']: set data.views=[strong]"
    )
    _Grouped.check_requirements({"group_size": 2})
    for bad in (1, 2.0, True, None):
        assert _message(lambda bad=bad: _Grouped.check_requirements({"group_size": bad})) == (
            f"_Grouped trains on same-class groups: set data.group_size=N (N >= 2), got {bad!r}"
        )
    _Stage.check_requirements({}, test=False, suites=[])
    assert _message(lambda: _Stage.check_requirements({}, suites=[])) == (
        "_Stage trains no classifier, nothing to test: set test=false"
    )
    assert _message(lambda: _Stage.check_requirements({}, test=False, suites=["clean"])) == (
        "_Stage trains no classifier for suites to score: set suite=[]"
    )
    ERM.check_requirements({}, test=True, suites=["clean"])


def test_a_stage_without_classifier_has_no_metrics_and_refuses_init_from(tmp_path):
    stage = _Stage(LinearClassifier(WEIGHT))
    assert not hasattr(stage, "train_acc") and not hasattr(stage, "val_metrics")
    assert _message(lambda: _Stage(LinearClassifier(WEIGHT), init_from=str(tmp_path))) == (
        "method.init_from copies classifier weights; _Stage trains no classifier: "
        "set method.init_from=null"
    )


# ------------------------------------------------------------------------------ freezing
def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_classifier("small_cnn", num_classes=3, in_channels=1, mean=0.5, std=0.5, width=4)


def _trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_freeze_except_keeps_exactly_the_named_parts_trainable():
    model = _small_cnn()
    names = [name for name, _ in model.named_parameters()]
    assert freeze_except(model, "all") == [] and _trainable(model) == set(names)
    frozen = freeze_except(model, "classifier")
    assert _trainable(model) == {"backbone.classifier.weight", "backbone.classifier.bias"}
    owners = [m for _, m in model.named_modules() if list(m.parameters(recurse=False))]
    assert frozen == [m for m in owners if m is not model.backbone.classifier]

    linear = LinearClassifier(WEIGHT)
    assert freeze_except(linear, "classifier") == [] and _trainable(linear) == set(
        dict(linear.named_parameters())
    )
    headless = nn.Sequential(nn.Linear(2, 2))
    assert freeze_except(headless, "classifier") == [headless[0]]  # nothing named classifier
    assert _trainable(headless) == set()

    model = _small_cnn()
    first = names[0].rsplit(".", 1)[0]  # a module's dotted name as the prefix
    freeze_except(model, [first, "backbone.classifier.bias"])
    assert _trainable(model) == {n for n in names if n.startswith(f"{first}.")} | {
        "backbone.classifier.bias"
    }


def test_freeze_except_errors_are_one_line_with_the_names():
    model = _small_cnn()
    names = [name for name, _ in model.named_parameters()]
    assert len(names) > 4
    for bad in (5, ["backbone", 1]):
        assert _message(lambda bad=bad: freeze_except(model, bad)) == (
            "method.trainable must be 'all', 'classifier' or a list of parameter-name "
            f"prefixes, got {bad!r}"
        )
    assert _message(lambda: freeze_except(model, ["backbone", "nope"])) == (
        f"method.trainable: no parameter starts with ['nope']; names look like {names[:4]}"
    )


# ------------------------------------------------------------------------------ checkpoints
class _WithHead(ERM):
    """Exports an extra part beside its classifier."""

    def __init__(self, model, **erm):
        super().__init__(model, **erm)
        self.head = nn.Linear(3, 2)

    def exported_parts(self):
        size = {"in_features": 3, "out_features": 2}
        return {
            **super().exported_parts(),
            "head": ExportedPart(self.head, "torch.nn:Linear", size),
        }


RUN_CONFIG = {"model": {"name": "small_cnn", "width": 4}, "seed": 7}


def test_saved_checkpoint_records_config_shape_parts_and_the_random_state(tmp_path):
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    method = _WithHead(_small_cnn(), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    method.run_config = RUN_CONFIG
    trainer = _trainer()
    trainer.fit(method, train_dataloaders=DataLoader(TensorDataset(images, Y), batch_size=4))
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    expected_rng = capture_rng()
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    record = checkpoint[CHECKPOINT_KEY]
    assert record["format"] == 3 and record["config"] == RUN_CONFIG
    assert record["classifier"] == {"num_classes": 3, "in_channels": 1}
    assert record["parts"] == {
        "model": {"prefix": "model.", "factory": None, "kwargs": {}},
        "head": {
            "prefix": "head.",
            "factory": "torch.nn:Linear",
            "kwargs": {"in_features": 3, "out_features": 2},
        },
    }
    assert torch.equal(record["rng"]["torch"], expected_rng["torch"])
    assert record["rng"]["python"] == expected_rng["python"]
    assert torch.equal(record["rng"]["numpy"], expected_rng["numpy"])
    rebuilt = load_classifier(path)
    assert torch.equal(rebuilt(images), method.model.eval()(images))
    # a method whose run config was never set stores none (robustlab-eval refuses it)
    bare = ERM(_small_cnn())
    bare_record: dict = {}
    bare.on_save_checkpoint(bare_record)
    assert bare_record[CHECKPOINT_KEY]["config"] is None
    assert bare_record[CHECKPOINT_KEY]["parts"] == {
        "model": {"prefix": "model.", "factory": None, "kwargs": {}}
    }


def _draws() -> tuple:
    return torch.rand(2).tolist(), random.random(), float(np.random.rand())


def test_loading_restores_the_random_state_only_when_fitting():
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    record = {CHECKPOINT_KEY: run_record(None, LinearClassifier(WEIGHT))}
    expected = _draws()
    method = ERM(LinearClassifier(WEIGHT))

    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    method.on_load_checkpoint(record)  # no trainer: restored
    assert _draws() == expected

    trainer = _trainer()
    method.trainer = trainer
    trainer.state.fn = TrainerFn.FITTING  # resuming a fit: restored
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    method.on_load_checkpoint(record)
    assert _draws() == expected

    trainer.state.fn = TrainerFn.TESTING  # testing a saved checkpoint: left alone
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    untouched = _draws()
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    method.on_load_checkpoint(record)
    assert _draws() == untouched != expected

    # checkpoints without the record or without random state load without touching it
    trainer.state.fn = TrainerFn.FITTING
    for other in ({}, {CHECKPOINT_KEY: {}}):
        torch.manual_seed(2), random.seed(2), np.random.seed(2)
        method.on_load_checkpoint(other)
        assert _draws() == untouched


def test_init_from_a_checkpoint_copies_the_matching_weights(tmp_path):
    source = _small_cnn()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    path = tmp_path / "source.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
            CHECKPOINT_KEY: run_record(RUN_CONFIG, source),
        },
        path,
    )
    method = ERM(_small_cnn(), init_from=str(path))
    for name, tensor in source.state_dict().items():
        assert torch.equal(method.model.state_dict()[name], tensor), name
    # another number of classes: everything but the classifier is copied
    five = build_classifier("small_cnn", num_classes=5, in_channels=1, mean=0.5, std=0.5, width=4)
    fresh = {k: v.clone() for k, v in five.state_dict().items()}
    kept = initialise_from_checkpoint(five, str(path))
    assert kept == ["backbone.classifier.bias", "backbone.classifier.weight"]
    for name, tensor in five.state_dict().items():
        assert torch.equal(tensor, fresh[name] if name in kept else source.state_dict()[name])
    # nothing but counters, normalisation buffers and a classifier fit: refused
    for other in (
        LinearClassifier(WEIGHT),
        build_classifier("small_cnn", num_classes=3, in_channels=1, mean=0.5, std=0.5, width=8),
    ):
        with pytest.raises(CheckpointError) as err:
            ERM(other, init_from=str(path))
        assert str(err.value) == (
            f"method.init_from={path}: none of its weights fit this model; was it trained "
            "with the same model config?"
        )


# ------------------------------------------------------------------------------ pictures
TILES = torch.tensor([0.0, 0.2, 0.4, 0.6]).reshape(4, 1, 1, 1).expand(4, 1, 2, 2)


class _Painter(ERM):
    """Saves the same 2 × 2 grid of 2 × 2 tiles after every training epoch."""

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        self.saved = getattr(self, "saved", []) + [self.save_picture("grid", TILES, columns=2)]


def _expected_grid() -> torch.Tensor:
    """The grid torchvision draws: 1-pixel white padding around and between the tiles."""
    grid = torch.full((7, 7), 255, dtype=torch.uint8)
    for i, value in enumerate((0.0, 0.2, 0.4, 0.6)):
        row, col = divmod(i, 2)
        top, left = 1 + 3 * row, 1 + 3 * col
        grid[top : top + 2, left : left + 2] = int(value * 255 + 0.5)
    return grid


def test_pictures_are_saved_per_epoch_in_the_run_folder_and_logged_to_wandb(tmp_path, monkeypatch):
    # WandbLogger(offline=True) sets WANDB_MODE in the process: restored after the test
    monkeypatch.setenv("WANDB_MODE", "offline")
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import WandbLogger
    from torchvision.io import read_image

    # no checkpoint folder: under the trainer's root (created with its parents)
    root = tmp_path / "root" / "deeper"
    method = _Painter(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    _trainer(max_epochs=2, default_root_dir=root).fit(method, train_dataloaders=_loader())
    assert method.saved == [root / "pictures" / f"grid_epoch{e:03d}.png" for e in (0, 1)]
    picture = read_image(str(method.saved[1]))
    assert picture.shape == (3, 7, 7)
    assert torch.equal(picture[0], _expected_grid()) and torch.equal(picture[2], picture[0])

    # beside checkpoints/ in the run folder; wandb gets the picture at the global step
    run = tmp_path / "run"
    method = _Painter(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="pictures")
    trainer = _trainer(
        logger=logger,
        enable_checkpointing=True,
        callbacks=[ModelCheckpoint(dirpath=run / "checkpoints")],
    )
    try:
        trainer.fit(method, train_dataloaders=_loader())
        media = Path(logger.experiment.dir) / "media" / "images" / "pictures"
    finally:
        logger.experiment.finish()
    assert method.saved == [run / "pictures" / "grid_epoch000.png"]
    (logged,) = media.glob("grid_*.png")
    assert torch.equal(read_image(str(logged)), read_image(str(method.saved[0])))
    (row,) = [row for row in _wandb_history(tmp_path) if "pictures/grid/count" in row]
    assert row["trainer/global_step"] == trainer.global_step == 2
    assert row["pictures/grid/filenames"] == [f"media/images/pictures/{logged.name}"]


def _wandb_history(folder: Path) -> list[dict]:
    """The history rows of the offline wandb run under ``folder`` (after it is flushed)."""
    from wandb.proto import wandb_internal_pb2

    (run,) = wandb_offline_runs(folder)
    rows = []
    for raw in _wandb_log_records(next(Path(run["dir"]).glob("run-*.wandb"))):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows


# ------------------------------------------------------------------------------ logging cost
class _LogCalls(pl.Callback):
    """The names Lightning is asked to log (``_ResultCollection.log``, what every
    ``self.log`` ends in: about a millisecond of host work each) inside each training step."""

    def __init__(self, monkeypatch):
        from pytorch_lightning.trainer.connectors.logger_connector.result import (
            _ResultCollection,
        )

        self.per_step: list[list[str]] = []
        original = _ResultCollection.log

        def counted(results, fx, name, *args, **kwargs):
            if fx == "training_step" and self.per_step:
                self.per_step[-1].append(name)
            return original(results, fx, name, *args, **kwargs)

        monkeypatch.setattr(_ResultCollection, "log", counted)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.per_step.append([])


STEP_LOGS = ["train/loss_step", "train/loss"]  # for the loggers, and for callbacks


@pytest.mark.parametrize(
    "method_name, overrides, extra",
    [
        ("erm", [], []),
        ("adversarial", ["method.loss=trades", "method.attack.steps=1"], ["acc_adv", "ce", "kl"]),
        ("stability", [], ["stab_loss", "task_loss"]),
        ("selfsup", [], ["acc_adv", "ssl_acc_rotation", "ssl_loss"]),
    ],
)
def test_only_logging_steps_call_self_log(monkeypatch, method_name, overrides, extra):
    """12 steps with log_every_n_steps=4: steps 4, 8 and 12 are the ones Lightning writes to
    the loggers, and only they log (the step loss); the other nine make no call, whatever
    extra scalars the method reports (TRADES, stability, SSL), which are logged once, as
    epoch means. Before, every step made 1 + len(extra) calls."""
    calls = _LogCalls(monkeypatch)
    cfg = compose_train("data=synthetic", "model=small_cnn", f"method={method_name}", *overrides)
    dm = build_datamodule(
        "synthetic", n_train=48, n_test=4, image_size=32, batch_size=4, val_fraction=0
    )
    dm.setup("fit")
    pl.seed_everything(0, verbose=False)
    trainer = _trainer(callbacks=[calls], log_every_n_steps=4)
    trainer.fit(build_run_method(cfg, dm), datamodule=dm)
    assert calls.per_step == [STEP_LOGS if step % 4 == 3 else [] for step in range(12)]
    epoch = {"train/loss_step", "train/loss_epoch", "train/acc", *(f"train/{n}" for n in extra)}
    assert set(trainer.logged_metrics) == epoch


def test_the_step_loss_is_logged_on_logging_steps_the_last_batch_and_for_a_progress_bar(
    monkeypatch,
):
    """Four batches of one image, log_every_n_steps=3: step 3 (a logging step) and step 4 (the
    epoch's last batch, so callbacks end the epoch with its loss) log their loss, with the
    batch's own value; with a progress bar drawn every step does."""
    per_image = _per_image()
    calls = _LogCalls(monkeypatch)
    watch = _Placement()
    method = ERM(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    trainer = _trainer(callbacks=[calls, watch], log_every_n_steps=3)
    trainer.fit(method, train_dataloaders=_loader(batch_size=1))
    assert calls.per_step == [[], [], STEP_LOGS, STEP_LOGS]
    assert "train/loss_step" not in watch.steps[1]
    for step in (2, 3):
        assert watch.steps[step]["train/loss_step"] == pytest.approx(per_image[step].item(), 1e-6)
        assert watch.steps[step]["train/loss"] == pytest.approx(per_image[step].item(), 1e-6)
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(per_image.mean().item())

    calls.per_step.clear()
    method = ERM(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    trainer = _trainer(callbacks=[calls], log_every_n_steps=3, enable_progress_bar=True)
    trainer.fit(method, train_dataloaders=_loader(batch_size=1))
    assert calls.per_step == [STEP_LOGS] * 4


class _RankShards(_Doubled):
    """Under DDP, rank 0 trains on images 0, 1, 2 in batches of 2 and 1, rank 1 on images 3
    and 1 in batches of 1: unequal weights per process and per step."""

    SHARDS = {0: ([0, 1, 2], 2), 1: ([3, 1], 1)}

    def train_dataloader(self):
        rows, batch_size = self.SHARDS[self.global_rank]
        return DataLoader(TensorDataset(X[rows], Y[rows]), batch_size=batch_size)


class _SaveCallbackMetrics(pl.Callback):
    """Each process writes its ``trainer.callback_metrics`` at the end of the fit."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        values = {k: float(v) for k, v in trainer.callback_metrics.items()}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(values))


@pytest.mark.slow  # two processes: about 45 s on a loaded 2-core machine
def test_epoch_means_are_over_all_processes_under_ddp(tmp_path):
    """Two real processes (gloo): every rank gets the mean over the 5 images both trained on
    (not the mean of the two ranks' means), the step loss is the mean of the ranks' step
    losses, as with Lightning's ``sync_dist``."""
    saved_env = dict(os.environ)
    try:
        method = _RankShards(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
        trainer = _trainer(
            strategy="ddp_spawn",
            devices=2,
            use_distributed_sampler=False,
            callbacks=[_SaveCallbackMetrics(tmp_path)],
        )
        trainer.fit(method)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    per_image = _per_image()
    expected = per_image[[0, 1, 2, 3, 1]].mean().item()
    mean_of_ranks = (per_image[[0, 1, 2]].mean() + per_image[[3, 1]].mean()).item() / 2
    assert expected != pytest.approx(mean_of_ranks, rel=1e-2)
    logged = ranks[0]
    assert logged["train/loss_epoch"] == pytest.approx(expected, rel=1e-6)
    assert logged["train/loss"] == logged["train/loss_epoch"]
    assert logged["train/double"] == pytest.approx(2 * expected, rel=1e-6)
    assert logged["train/acc"] == pytest.approx(2 / 5)  # images 0 and 2 right
    last_steps = (per_image[2] + per_image[1]).item() / 2  # rank 0: image 2; rank 1: image 1
    assert logged["train/loss_step"] == pytest.approx(last_steps, rel=1e-6)


class _SaveAfterFirstBatch(pl.Callback):
    def __init__(self, path: Path):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            trainer.save_checkpoint(self.path)


def test_a_checkpoint_taken_inside_an_epoch_carries_its_epoch_means(tmp_path):
    """A checkpoint after batch 1 of 2 (images 0-2) holds the sums and weights so far; the fit
    resumed from it on the remaining batch (image 3, as a resumable loader gives it) reports
    the uninterrupted epoch values over all 4 images. Before, Lightning's running sums (and
    the accuracy metric's counts) were not in the checkpoint: the resumed epoch reported
    image 3 alone."""
    from robustlab.methods.erm import EPOCH_MEANS_KEY

    per_image = _per_image()
    path = tmp_path / "inside.ckpt"
    method = _Doubled(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    _trainer(callbacks=[_SaveAfterFirstBatch(path)]).fit(method, train_dataloaders=_loader())
    saved = torch.load(path, map_location="cpu", weights_only=True)[EPOCH_MEANS_KEY]
    assert saved["train/loss"][1] == saved["train/double"][1] == 3
    assert saved["train/loss"][0] == pytest.approx(per_image[:3].sum().item(), rel=1e-6)

    resumed = _Doubled(LinearClassifier(WEIGHT), optimizer=FROZEN_SGD, scheduler=CONSTANT)
    trainer = _trainer()
    remaining = DataLoader(TensorDataset(X[[3, 3]], Y[[3, 3]]), batch_size=1)  # 2nd read
    trainer.fit(resumed, train_dataloaders=remaining, ckpt_path=path)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["train/loss_epoch"] == pytest.approx(per_image.mean().item(), rel=1e-6)
    assert logged["train/double"] == pytest.approx(2 * per_image.mean().item(), rel=1e-6)
    assert logged["train/acc"] == pytest.approx(0.5)  # images 0 and 2 right (image 3: wrong)
    # a checkpoint at an epoch's end carries nothing: the next epoch starts afresh
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    assert EPOCH_MEANS_KEY not in torch.load(tmp_path / "end.ckpt", weights_only=True)
