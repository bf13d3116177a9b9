"""Empirical risk minimisation, the LightningModule every robustlab method builds on.

ERM minimises E_(x,y)[CE(f(x), y)] (optionally with label smoothing, Szegedy et al. 2016).
Subclasses change *what* is minimised by overriding :meth:`ERM.training_loss` (a loss on
``(x, y)``) or :meth:`ERM.training_objective` (a loss on the whole batch, e.g. ``(x, y, views)``
for a method that declares ``required_views``, or group-major same-class rows for one that
declares ``needs_groups``); optimisation, schedules, metrics, logging, composed terms
(``method.terms``, :mod:`robustlab.methods.terms`) and checkpoint metadata live here once.

Methods with their own optimisation loop (GAN-style stages) set ``automatic_optimization =
False``, name their optimisers (``method.optimizers``, parameters per name from
:meth:`ERM.optimizer_parameters`) and step them inside ``training_objective`` (by name:
:meth:`ERM.optimizers_by_name`); ``training_step`` still logs their output and steps their
schedules. Extra trainable parts (heads) are ordinary submodules and are optimised
automatically, frozen parts (teachers) are excluded via :meth:`trainable_parameters`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
from torchvision.utils import save_image

from robustlab.data.segments import SEGMENTS_VIEW, available_segments
from robustlab.errors import CheckpointError, check
from robustlab.methods.optim import (
    OptimizerConfig,
    ScheduleConfig,
    build_optimizer,
    build_scheduler,
    named_optimizer_configs,
    optimizer_config,
    schedule_config,
)
from robustlab.methods.terms import build_terms
from robustlab.results import PICTURES
from robustlab.run.checkpoints import (
    CHECKPOINT_KEY,
    ExportedPart,
    load_classifier,
    part_records,
    restore_rng,
    run_record,
)


@dataclass
class TrainingOutput:
    """What one training step produced: the loss to minimise (manual optimisation: the loss
    reported as ``train/loss``), the logits whose accuracy is reported as ``train/acc`` (None:
    no accuracy, e.g. a generator stage), and extra scalars logged as ``train/<name>``.

    ``inputs`` / ``input_logits``: the images the trained prediction was made on and its
    logits with their graph (e.g. the PGD examples of Madry training), which composed terms
    regularise; None means ``(x, logits)``.
    """

    loss: Tensor
    logits: Tensor | None
    logs: dict[str, Tensor] = field(default_factory=dict)
    inputs: Tensor | None = None
    input_logits: Tensor | None = None


#: Checkpoint key of the training scalars accumulated so far in an unfinished epoch.
EPOCH_MEANS_KEY = "robustlab_epoch_means"


class EpochMeans:
    """Batch-size-weighted epoch means of named training scalars over all processes:
    ``mean_k = Σ_(p, t) w_pt · v_kpt / Σ_(p, t) w_pt`` (process p, step t, weight w = the
    step's batch size), the same number on every rank for any world size and batch size.

    Per step, :meth:`add` is one in-place add on the value's device (no read back to the host,
    no Lightning bookkeeping); :meth:`compute` reduces all sums and weights over the processes
    in one all-reduce at the epoch's end. Sums are float64 (float32 on MPS, which has none).
    Every process must add the same names in an epoch (as Lightning's ``sync_dist`` needs).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything added or restored (a new epoch)."""
        self.sums: dict[str, Tensor] = {}  # Σ w·v per name, on the device
        self.weights: dict[str, int] = {}  # Σ w per name
        self.carried: dict[str, tuple[float, int]] = {}  # restored from a checkpoint

    def __bool__(self) -> bool:
        return bool(self.sums or self.carried)

    def add(self, name: str, value: Tensor | float, weight: int, device: torch.device) -> None:
        """Add a batch mean ``value`` (a one-element tensor or a number) over ``weight``
        images: ``weight · value`` to ``name``'s sum."""
        total = self._sum(name, value.device if isinstance(value, Tensor) else device)
        if isinstance(value, Tensor):
            total.add_(value.detach().reshape(()), alpha=weight)
        else:
            total.add_(float(value) * weight)
        self.weights[name] = self.weights.get(name, 0) + weight

    def add_total(self, name: str, total: Tensor, weight: int) -> None:
        """Add a batch total (e.g. the number of right predictions) over ``weight`` images."""
        self._sum(name, total.device).add_(total.detach().reshape(()))
        self.weights[name] = self.weights.get(name, 0) + weight

    def _sum(self, name: str, device: torch.device) -> Tensor:
        if name not in self.sums:
            self.sums[name] = torch.zeros((), dtype=_sum_dtype(device), device=device)
        return self.sums[name]

    def totals(self, strategy: Any, device: torch.device) -> tuple[list[str], Tensor, Tensor]:
        """The names and their sums and weights over all processes (``strategy.reduce``)."""
        names = sorted(self.sums.keys() | self.carried.keys())
        dtype = _sum_dtype(device)
        zero = torch.zeros((), dtype=dtype, device=device)
        carried = [self.carried.get(n, (0.0, 0)) for n in names]
        local = torch.tensor(
            [
                [s for s, _ in carried],
                [w + self.weights.get(n, 0) for n, (_, w) in zip(names, carried, strict=True)],
            ],
            dtype=dtype,
            device=device,
        )
        local[0] += torch.stack([self.sums.get(n, zero).to(device) for n in names])
        packed = strategy.reduce(local, reduce_op="sum")
        return names, packed[0], packed[1]

    def compute(self, strategy: Any, device: torch.device) -> dict[str, Tensor]:
        """Each name's mean over all processes (float32), then start afresh."""
        names, sums, weights = self.totals(strategy, device)
        self.reset()
        means = (sums / weights).float()
        return {name: means[i] for i, name in enumerate(names)}

    def state(self, strategy: Any, device: torch.device) -> dict[str, tuple[float, int]]:
        """Sums and weights over all processes so far, for a checkpoint (a collective: every
        process saves, as Lightning requires)."""
        names, sums, weights = self.totals(strategy, device)
        pairs = zip(sums.tolist(), map(round, weights.tolist()), strict=True)
        return dict(zip(names, pairs, strict=True))

    def restore(self, state: Mapping[str, tuple[float, int]], owner: bool) -> None:
        """Continue from :meth:`state`: the ``owner`` process carries the totals, the others
        zeros under the same names (their sum over processes is the saved total)."""
        self.reset()
        self.carried = {
            name: ((float(s), int(w)) if owner else (0.0, 0)) for name, (s, w) in state.items()
        }


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


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
    """Copy the matching model tensors of the robustlab checkpoint (or run folder) at ``path``
    into ``model``; returns the names that kept their initialisation (absent or differently
    shaped)."""
    source = load_classifier(path).state_dict()
    target = model.state_dict()
    matched = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    features = [  # weights, not counters (BatchNorm's num_batches_tracked fits any width)
        k
        for k, v in matched.items()
        if k.startswith("backbone.") and ".classifier." not in f".{k}" and v.is_floating_point()
    ]
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
        own = list(module.named_parameters(prefix=name, recurse=False))
        outside = [p for full, p in own if not any(full.startswith(q) for q in prefixes)]
        for parameter in outside:
            parameter.requires_grad_(False)
        if own and len(outside) == len(own):  # no parameter of its own left to train
            frozen.append(module)
    return frozen


class ERM(pl.LightningModule):
    """Standard training: ``L = CE_ε(f(x), y)`` with label smoothing ε.

    Class attributes a method sets to declare what it needs (checked before data loads,
    :meth:`check_requirements`):

    - ``required_views``: names of the extra training views (``data.views``); the training
      batch is then ``(x, y, views)``.
    - ``needs_groups``: training rows come as same-class groups (``data.group_size``).
    - ``is_classifier``: ``self.model`` is a classifier the run tests and scores with suites
      (False for a generator stage: the run needs ``test=false suite=[]``).

    Args:
        model: an :class:`~robustlab.models.ImageClassifier` (takes [0, 1] images).
        optimizer: ``name`` (sgd|adam|adamw), ``lr``, ``momentum``, ``nesterov``,
            ``weight_decay``, ``betas``.
        scheduler: ``name`` (cosine|multistep|constant), ``warmup_epochs``, ``milestones``
            (epochs), ``gamma``, ``min_lr_ratio``, ``interval`` (step|epoch).
        optimizers: instead of ``optimizer``/``scheduler`` (which must then be null): named
            optimisers ``{name: {optimizer keys..., scheduler: {schedule keys...}}}``, one
            schedule each; parameters per name from :meth:`optimizer_parameters`. More than
            one needs manual optimisation.
        terms: composed objective terms ``{name: options}`` (:mod:`robustlab.methods.terms`),
            e.g. ``{stability: {alpha: 0.1, sigma: 0.04}}``; each adds
            ``weight · term(model, x_used, logits, y)`` to the training loss.
        label_smoothing: ε in [0, 1).
        init_from: a robustlab checkpoint whose model weights initialise this model
            (fine-tuning); tensors whose name or shape do not match (e.g. a new classifier
            for another number of classes, or pretext heads) keep their fresh initialisation.
        trainable: which model parameters are optimised: ``all``; ``classifier`` (linear
            probe / head-only fine-tuning); or a list of dotted prefixes of
            ``model.named_parameters()`` (partial fine-tuning, e.g. ``[backbone.layer3,
            backbone.classifier]``). Frozen parts also keep their BatchNorm statistics.
    """

    required_views: ClassVar[tuple[str, ...]] = ()
    needs_groups: ClassVar[bool] = False
    is_classifier: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        label_smoothing: float = 0.0,
        init_from: str | None = None,
        trainable: str | list[str] = "all",
        optimizers: Mapping[str, Mapping] | None = None,
        terms: Mapping[str, Mapping | None] | None = None,
    ):
        super().__init__()
        check(
            0 <= label_smoothing < 1,
            f"method.label_smoothing must be in [0, 1), got {label_smoothing}",
        )
        self.model = model
        self.named_optimizer_cfgs: dict[str, tuple[OptimizerConfig, ScheduleConfig]] | None = None
        if optimizers is None:
            self.optimizer_cfg = optimizer_config(optimizer)
            self.schedule_cfg = schedule_config(scheduler)
        else:
            check(
                optimizer is None and scheduler is None,
                "method.optimizers (named optimisers) replaces method.optimizer and "
                "method.scheduler: set method.optimizer=null method.scheduler=null",
            )
            self.named_optimizer_cfgs = named_optimizer_configs(optimizers)
        self.label_smoothing = float(label_smoothing)
        self.terms = build_terms(terms)
        self.check_manual_optimization()
        check(
            not init_from or self.is_classifier,
            f"method.init_from copies classifier weights; {type(self).__name__} trains no "
            "classifier: set method.init_from=null",
        )
        check(
            trainable == "all" or self.is_classifier,
            f"method.trainable selects classifier parameters; {type(self).__name__} trains no "
            "classifier: set method.trainable=all",
        )
        if init_from:
            initialise_from_checkpoint(self.model, init_from)
        self.frozen = freeze_except(self.model, trainable)
        self.save_hyperparameters(ignore=["model"])
        self.run_config: dict | None = None  # the resolved run config, stored in checkpoints
        self._optimizer_names: list[str] = []
        self._schedule_intervals: list[str] = []
        self.training_means = EpochMeans()  # train/loss, acc and <name>: epoch values
        self._restored_means: dict[str, tuple[float, int]] | None = None
        if self.is_classifier:
            num_classes = model.num_classes
            self.val_metrics = evaluation_metrics(num_classes, "val/")
            self.test_metrics = evaluation_metrics(num_classes, "test/")
            self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    # ----------------------------------------------------------------- requirements
    @classmethod
    def data_requirements(cls) -> dict[str, Any]:
        """The data keys this method needs set: ``{"views": [names]}`` and/or
        ``{"group_size": "an integer >= 2"}`` (empty for a plain ``(x, y)`` method)."""
        needs: dict[str, Any] = {}
        if cls.required_views:
            needs["views"] = list(cls.required_views)
        if cls.needs_groups:
            needs["group_size"] = "an integer >= 2"
        return needs

    @classmethod
    def views_for(cls, method: Mapping[str, Any]) -> tuple[str, ...]:
        """The training views a run of this method with options ``method`` needs (default:
        ``required_views``; a method whose options add views, e.g. a plug-in, overrides it)."""
        return tuple(cls.required_views)

    @classmethod
    def check_requirements(
        cls,
        data: Mapping[str, Any],
        *,
        test: bool = True,
        suites: Any = None,
        method: Mapping[str, Any] | None = None,
    ) -> None:
        """A one-line :class:`~robustlab.errors.ConfigError` naming the key to set when the
        run's ``data`` config does not give this method its views or groups, or when a stage
        that trains no classifier would be tested or scored by suites."""
        name = cls.__name__
        views = [*(data.get("views") or ()), *available_segments(data)]
        needed = cls.views_for(method or {})
        missing = [v for v in needed if v not in views]
        recipes = [v for v in needed if v != SEGMENTS_VIEW]
        fixes = [f"data.views=[{','.join(recipes)}]"] if set(missing) - {SEGMENTS_VIEW} else []
        fixes += ["data.segments={}"] if SEGMENTS_VIEW in missing else []
        check(
            not missing,
            f"{name} needs the training view(s) {missing}: set {' '.join(fixes)}",
        )
        group_size = data.get("group_size")
        grouped = isinstance(group_size, int) and not isinstance(group_size, bool)
        check(
            not cls.needs_groups or (grouped and group_size >= 2),
            f"{name} trains on same-class groups: set data.group_size=N (N >= 2), "
            f"got {group_size!r}",
        )
        if not cls.is_classifier:
            check(not test, f"{name} trains no classifier, nothing to test: set test=false")
            check(not suites, f"{name} trains no classifier for suites to score: set suite=[]")

    def check_manual_optimization(self) -> None:
        """Several named optimisers need manual optimisation; composed terms need automatic
        optimisation (a manual method has already stepped when they would be added)."""
        check(
            self.automatic_optimization or not self.terms,
            f"method.terms cannot be added to {type(self).__name__}, which steps its own "
            "optimisers: remove method.terms",
        )
        check(
            not self.automatic_optimization or len(self.named_optimizer_cfgs or {}) <= 1,
            f"{type(self).__name__} optimises automatically, with one optimiser; "
            f"method.optimizers names {list(self.named_optimizer_cfgs or {})}: keep one",
        )

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

    def training_objective(self, batch: tuple) -> TrainingOutput:
        """The objective on one training batch ``(x, y, *extra)``; by default
        :meth:`training_loss` on ``(x, y)``. Methods that need views or groups override this;
        manual-optimisation methods also step their optimisers here."""
        x, y, *_ = batch
        return self.training_loss(x, y)

    def objective_with_terms(self, batch: tuple) -> TrainingOutput:
        """:meth:`training_objective` plus every composed term: ``L + Σ_t w_t · R_t`` on the
        inputs and logits the objective trained (default: the batch's x and the logits).
        Each term is logged unweighted as ``train/<log_name>``."""
        out = self.training_objective(batch)
        if not self.terms:
            return out
        x, y, *_ = batch
        inputs = x if out.inputs is None else out.inputs
        logits = out.logits if out.input_logits is None else out.input_logits
        loss, logs = out.loss, dict(out.logs)
        for term in self.terms.values():
            value = term(self.model, inputs, logits, y)
            loss = loss + term.weight * value
            logs[term.log_name] = value.detach()
        return TrainingOutput(loss, out.logits, logs, out.inputs, out.input_logits)

    # ----------------------------------------------------------------- Lightning steps
    def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
        out = self.objective_with_terms(batch)
        self.log_training(out, batch[1])
        if not self.automatic_optimization:
            self.step_schedules("step")
        return out.loss

    @property
    def shows_progress_bar(self) -> bool:
        """Whether the attached trainer draws a progress bar."""
        return self._trainer is not None and self.trainer.progress_bar_callback is not None

    def log_training(self, out: TrainingOutput, y: Tensor | None) -> None:
        """Record one training step: ``train/loss`` (an epoch mean, and the step's value on
        logging steps), ``train/acc`` (top-1 accuracy of ``out.logits`` against ``y`` over the
        epoch's images, when both exist and the method is a classifier) and ``train/<name>``
        for each of ``out.logs`` (epoch means). Epoch values are weighted by the batch size
        (``len(y)``, else ``len(out.logits)``, else 1) and taken over all processes
        (:class:`EpochMeans`).

        A step makes no ``self.log`` call unless it logs its loss (:meth:`logs_this_step`):
        each call costs Lightning about a millisecond of host work (it moves its record of the
        metric to the device), and with ``sync_dist`` an all-reduce, once per step and scalar.
        The accuracy is counted on the device too (a torchmetrics update is host work)."""
        weight = len(y) if y is not None else len(out.logits) if out.logits is not None else 1
        loss = out.loss.detach()
        self.training_means.add("train/loss", loss, weight, self.device)
        if self.is_classifier and out.logits is not None and y is not None:
            right = (out.logits.detach().argmax(dim=1) == y).sum()  # top-1, over images
            self.training_means.add_total("train/acc", right, len(y))
        for name, value in out.logs.items():
            self.record_training_scalar(name, value, weight)
        if self.logs_this_step():
            # the mean over processes, what sync_dist=True gave (a clone: the reduction is
            # in place and ``loss`` shares its storage with the training loss)
            value = self.trainer.strategy.reduce(loss.clone(), reduce_op="mean")
            show = self.shows_progress_bar
            step = {"on_step": True, "on_epoch": False, "batch_size": weight}
            self.log("train/loss_step", value, prog_bar=show, **step)
            self.log("train/loss", value, logger=False, **step)  # for callbacks

    def record_training_scalar(self, name: str, value: Tensor | float, batch_size: int) -> None:
        """Add ``value`` (weight ``batch_size``) to the epoch mean logged as ``train/<name>``."""
        self.training_means.add(f"train/{name}", value, batch_size, self.device)

    def logs_this_step(self) -> bool:
        """Whether the current training step logs its loss (``train/loss_step``): on the steps
        Lightning writes to the loggers (every ``trainer.log_every_n_steps``, asked the way
        Lightning asks itself: ``trainer._logger_connector.should_update_logs``, a public
        property on the one private attribute; Lightning has no public call for it), on the
        epoch's last batch (so callbacks see the last step's loss), and on every step when a
        progress bar is drawn. With gradient accumulation Lightning writes only the stepping
        batch of a logging window; the others are logged too, and not written."""
        if self._trainer is None:
            return False
        trainer = self.trainer
        if self.shows_progress_bar or trainer.fast_dev_run:
            return True
        if trainer._logger_connector.should_update_logs:
            return True
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return batches == trainer.num_training_batches

    def log_epoch_means(self) -> None:
        """Log the epoch values of :meth:`log_training`: ``train/loss_epoch`` (loggers),
        ``train/loss`` (callbacks: checkpoint monitors, results.json), ``train/acc`` (both on
        the progress bar when one is drawn) and ``train/<name>``. The values are already
        reduced over processes; ``reduce_fx="max"`` with ``sync_dist`` returns them exactly and
        tells Lightning they are synchronised (else it warns under DDP)."""
        if not self.training_means:
            return
        means = self.training_means.compute(self.trainer.strategy, self.device)
        epoch = {"on_step": False, "on_epoch": True, "sync_dist": True, "reduce_fx": "max"}
        show = self.shows_progress_bar
        loss = means.pop("train/loss", None)
        if loss is not None:
            self.log("train/loss_epoch", loss, prog_bar=show, **epoch)
            self.log("train/loss", loss, logger=False, **epoch)
        for name, value in means.items():
            self.log(name, value, prog_bar=show and name == "train/acc", **epoch)

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

    def on_train_start(self) -> None:
        """A fit starts its epoch means afresh, or from the sums of a checkpoint taken inside
        an epoch (kept only if Lightning resumes that epoch: a new one resets them)."""
        self.training_means.reset()
        if self._restored_means is not None:
            self.training_means.restore(self._restored_means, owner=self.global_rank == 0)
            self._restored_means = None

    def on_train_epoch_start(self) -> None:
        """Each epoch's means start empty (Lightning skips this hook when it resumes an
        epoch mid-way); frozen parts keep their running statistics."""
        self.training_means.reset()
        for module in self.frozen:
            module.eval()

    def on_train_epoch_end(self) -> None:
        """The epoch's training values (:meth:`log_epoch_means`), then the epoch's schedules
        of a method that steps its own optimisers."""
        self.log_epoch_means()
        if not self.automatic_optimization:
            self.step_schedules("epoch")

    # ----------------------------------------------------------------- optimisation
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser updates (all that require grad; frozen parts opt out)."""
        return (p for p in self.parameters() if p.requires_grad)

    def optimizer_parameters(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters per named optimiser (``method.optimizers``), in the order Lightning gets
        the optimisers. Default: every trainable parameter under the one configured name; a
        method with several parts (generator, discriminator) overrides this."""
        names = list(self.named_optimizer_cfgs or {"model": None})
        check(
            len(names) == 1,
            f"method.optimizers names {names}, but {type(self).__name__} optimises one set "
            "of parameters: keep one name",
        )
        return {names[0]: self.trainable_parameters()}

    def configure_optimizers(self) -> dict[str, Any] | list[dict[str, Any]]:
        total_steps = int(self.trainer.estimated_stepping_batches)
        max_epochs = max(1, self.trainer.max_epochs or 1)
        if self.named_optimizer_cfgs is None:
            configs = {"model": (self.optimizer_cfg, self.schedule_cfg)}
            groups = {"model": self.trainable_parameters()}
        else:
            configs, groups = self.named_optimizer_cfgs, self.optimizer_parameters()
            check(
                sorted(groups) == sorted(configs),
                f"method.optimizers names {sorted(configs)}; {type(self).__name__} "
                f"optimises {sorted(groups)}: name exactly those",
            )
        self.check_manual_optimization()
        self._optimizer_names = list(groups)
        self._schedule_intervals = []
        entries = []
        for name, parameters in groups.items():
            optimizer_cfg, schedule_cfg = configs[name]
            optimizer = build_optimizer(parameters, optimizer_cfg)
            scheduler = build_scheduler(
                optimizer, schedule_cfg, total_steps=total_steps, max_epochs=max_epochs
            )
            self._schedule_intervals.append(schedule_cfg.interval)
            # manual optimisation: step_schedules() steps it at its interval
            schedule = {"scheduler": scheduler, "interval": schedule_cfg.interval}
            if self.named_optimizer_cfgs is not None:
                schedule["name"] = f"lr-{name}"  # the LearningRateMonitor's column
            entries.append({"optimizer": optimizer, "lr_scheduler": schedule})
        return entries[0] if len(entries) == 1 else entries

    def optimizers_by_name(self) -> dict[str, Any]:
        """The run's optimisers (Lightning's wrappers) by their ``method.optimizers`` name
        (``model`` for the single ``method.optimizer``), for manual optimisation."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return dict(zip(self._optimizer_names, optimizers, strict=True))

    def step_schedules(self, interval: str) -> None:
        """Manual optimisation: step every schedule configured with ``interval`` (``step``:
        after each training batch, ``epoch``: after each epoch). Automatic optimisation
        leaves this to Lightning."""
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        for scheduler, every in zip(schedulers, self._schedule_intervals, strict=True):
            if every == interval:
                scheduler.step()

    # ----------------------------------------------------------------- pictures
    def run_folder(self) -> Path:
        """The run's folder (where ``checkpoints/`` is), or the trainer's root."""
        dirpath = getattr(self.trainer.checkpoint_callback, "dirpath", None)
        return Path(dirpath).parent if dirpath else Path(self.trainer.default_root_dir)

    def save_picture(self, name: str, tiles: Tensor, columns: int) -> Path | None:
        """Rank 0 saves ``tiles`` (T, C, H, W) in [0, 1] as a grid of ``columns`` columns to
        ``<run dir>/pictures/<name>_epochEEE.png`` (the run's report.md shows every picture
        there) and logs it to wandb as ``pictures/<name>``; returns the path (None off rank 0)."""
        if not self.trainer.is_global_zero:
            return None
        path = self.run_folder() / PICTURES / f"{name}_epoch{self.current_epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(tiles.detach().float().cpu(), path, nrow=columns, padding=1, pad_value=1.0)
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"pictures/{name}", images=[str(path)], step=self.global_step)
        return path

    # ----------------------------------------------------------------- checkpoints
    def exported_parts(self) -> dict[str, ExportedPart]:
        """The modules other runs may load from this run's checkpoints
        (:func:`robustlab.run.checkpoints.load_module`), by name. Default: the classifier as
        part ``model``; a method exporting more (a generator, a student) adds
        ``ExportedPart(module, "pkg.module:factory", kwargs)`` entries."""
        return {"model": ExportedPart(self.model)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what is needed to rebuild the exported parts and to resume bit-for-bit: the
        resolved config, the classifier's shape, the parts and every global random state;
        inside an epoch (``every_n_train_steps``, ``val_check_interval`` < 1) also the
        epoch's sums and weights over all processes (``EPOCH_MEANS_KEY``)."""
        parts = part_records(self, self.exported_parts())
        checkpoint[CHECKPOINT_KEY] = run_record(self.run_config, self.model, parts)
        if self.training_means and self._trainer is not None:  # taken inside an epoch
            strategy = self.trainer.strategy
            checkpoint[EPOCH_MEANS_KEY] = self.training_means.state(strategy, self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume: put every global random state and the unfinished epoch's sums back where
        the checkpoint left them (only when fitting; testing a saved checkpoint leaves the
        random streams alone)."""
        rng = checkpoint.get(CHECKPOINT_KEY, {}).get("rng")
        fitting = self._trainer is None or self._trainer.state.fn == TrainerFn.FITTING
        if rng and fitting:
            restore_rng(rng)
        if fitting:  # the unfinished epoch's sums, put back when the fit starts
            self._restored_means = checkpoint.get(EPOCH_MEANS_KEY)
