"""Knowledge distillation: a student (``self.model``) trained against a frozen teacher.

- ``method=kd`` — Hinton, Vinyals & Dean (2015): ``λ_ce·CE(z_s, y) + λ_kd·T²·KL(z_t/T ‖ z_s/T)``.
- ``method=dkd`` — Zhao et al. (CVPR 2022): ``λ_ce·CE + w_e·(α·TCKD + β·NCKD)``, w_e a linear
  warm-up over the first epochs.
- ``method=crld`` — Zhang et al. (ACM MM 2024): cross-entropy on a weak and a strong view plus
  within-view and cross-view KD gated by the teacher's confidence.
- ``method.consistency=crld`` adds CRLD's view terms to KD or DKD around their own divergence
  (:mod:`robustlab.methods.consistency`); ``method.terms.adversarial.target=teacher`` trains on
  PGD examples against the teacher's soft labels (ARD).

The losses are the pure functions of :mod:`robustlab.losses.distillation`.

The teacher (``method.teacher``) is another run's classifier — a checkpoint file or run folder,
rebuilt from its own stored config (architecture and normalisation may differ from the
student's) — or a model config with pretrained weights (``{model: torchvision, arch: resnet34,
weights: IMAGENET1K_V1}``). It is loaded with the method, around the student built for the
data (before the trainer exists; config validation, whose stand-in student has no storage, only
checks that the source exists), checked against the student (classes, input channels), frozen
(no gradients, eval mode for good, not optimised) and registered as the submodule ``teacher``,
so it follows the student to its device and works under DDP. It is left out of the
student's checkpoints: the student's ``model.`` weights load in ``robustlab-eval`` as a plain
classifier.

With ``data.views`` holding ``weak``, KD and DKD distil on the weak view (else on ``x``, the
usual crop/flip view); CRLD and the consistency plug-in need ``data.views=[weak,strong]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustlab.errors import CheckpointError, ConfigError, check
from robustlab.losses import (
    crld_loss,
    dkd_loss,
    dkd_per_sample,
    dkd_warmup,
    kd_loss,
    kd_per_sample,
)
from robustlab.methods.consistency import (
    AdversarialTerm,
    CrossViewConsistency,
    build_consistency,
)
from robustlab.methods.erm import ERM, TrainingOutput
from robustlab.models import build_classifier
from robustlab.models.base import is_stand_in
from robustlab.run.checkpoints import frozen, load_classifier

TEACHER_PREFIX = "teacher."
VIEWS = ("weak", "strong")


def check_teacher_source(teacher: Any) -> str | dict[str, Any]:
    """``method.teacher`` as given, checked without loading anything: an existing checkpoint
    file or run folder, or a model config ``{model: <name>, ...keys, weights: <set>}``."""
    check(
        teacher is not None,
        "method.teacher is required: set method.teacher=<teacher run folder or .ckpt> (train "
        "the teacher first with robustlab-train), or a pretrained model config such as "
        "method.teacher={model:torchvision,arch:resnet34,weights:IMAGENET1K_V1}",
    )
    if isinstance(teacher, Mapping):
        config = dict(teacher)
        check(
            isinstance(config.get("model"), str),
            f"method.teacher: a model-config teacher needs model=<model name>, got {config}",
        )
        check(
            config.get("weights") is not None,
            f"method.teacher={config}: a teacher built from a model config needs pretrained "
            "weights (e.g. weights=IMAGENET1K_V1); a trained robustlab teacher is given by "
            "its run folder",
        )
        return config
    check(
        isinstance(teacher, (str, Path)),
        f"method.teacher must be a run folder, a .ckpt path or a model config, got {teacher!r}",
    )
    if not Path(teacher).expanduser().exists():
        raise CheckpointError(
            f"method.teacher={teacher}: no such checkpoint file or run folder; train the "
            "teacher first (robustlab-train ... hydra.run.dir=<folder>) and pass that folder"
        )
    return str(teacher)


def pretrained_num_classes(model: str, arch: str | None, weights: str) -> int:
    """Number of classes of a torchvision weight set (read from its metadata, no download)."""
    check(
        model == "torchvision",
        f"method.teacher.model={model}: only model=torchvision has pretrained weights; "
        "give a robustlab teacher by its run folder",
    )
    import torchvision.models as tvm

    try:
        return len(tvm.get_model_weights(arch)[weights].meta["categories"])
    except (KeyError, ValueError) as error:
        raise ConfigError(
            f"method.teacher: torchvision has no weight set {weights!r} for arch={arch!r} ({error})"
        ) from None


def build_teacher(source: str | Mapping[str, Any], student: nn.Module) -> nn.Module:
    """The teacher classifier (eval mode, its own weights and normalisation; a model-config
    teacher without ``mean``/``std`` takes the student's, i.e. the data's)."""
    if not isinstance(source, Mapping):
        try:
            return load_classifier(source, label=f"method.teacher={source}")
        except CheckpointError as error:
            raise CheckpointError(f"method.teacher: {error}") from None
    options = dict(source)
    name = options.pop("model")
    mean = options.pop("mean", student.mean.flatten().tolist())
    std = options.pop("std", student.std.flatten().tolist())
    num_classes = pretrained_num_classes(name, options.get("arch"), options["weights"])
    return build_classifier(name, num_classes, student.in_channels, mean, std, **options).eval()


def teacher_in_channels(teacher: nn.Module) -> int | None:
    """The input channels a classifier takes (None when it does not say)."""
    channels = getattr(teacher, "in_channels", None)
    return None if channels is None else int(channels)


class Distillation(ERM):
    """The shared base of KD, DKD and CRLD: the frozen teacher, its logits, the optional
    consistency plug-in; subclasses give their per-example divergence and objective.

    Args (beyond :class:`ERM`'s):
        teacher: a robustlab checkpoint file or run folder, or a pretrained model config.
        temperature: T > 0 of the softened distributions.
        lambda_ce: λ_ce, weight of the cross-entropy with the labels.
        consistency: null, ``crld`` or ``{name: crld, ...}`` (CRLD's view terms around this
            method's divergence; needs ``data.views=[weak,strong]``).
    """

    #: CRLD itself, not a host: its own view terms replace the plug-in
    takes_consistency: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        teacher: str | Mapping[str, Any] | None = None,
        temperature: float = 4.0,
        lambda_ce: float = 1.0,
        consistency: str | Mapping[str, Any] | None = None,
        **erm: Any,
    ):
        super().__init__(model, **erm)
        self.teacher_source = check_teacher_source(teacher)
        check(temperature > 0, f"method.temperature must be > 0, got {temperature}")
        check(lambda_ce >= 0, f"method.lambda_ce must be >= 0, got {lambda_ce}")
        check(
            consistency is None or self.takes_consistency,
            f"{type(self).__name__} has CRLD's view terms built in: set method.consistency=null",
        )
        self.temperature = float(temperature)
        self.lambda_ce = float(lambda_ce)
        self.consistency = build_consistency(consistency)
        self.teacher: nn.Module | None = None
        self._teacher_cache: tuple[Tensor, Tensor] | None = None
        for term in self.terms.values():
            if isinstance(term, AdversarialTerm):
                term.use_teacher(self.teacher_logits)
        if not is_stand_in(model):  # config validation builds a storage-less stand-in
            self.set_teacher(build_teacher(self.teacher_source, model))

    # ----------------------------------------------------------------- the teacher
    @classmethod
    def views_for(cls, method: Mapping[str, Any]) -> tuple[str, ...]:
        """CRLD, or KD/DKD with the consistency plug-in, need the weak and strong views (checked
        with the run config, before any data)."""
        return VIEWS if cls.required_views or method.get("consistency") is not None else ()

    def needed_views(self) -> tuple[str, ...]:
        """The training views this configuration needs (CRLD or the consistency plug-in)."""
        return VIEWS if self.required_views or self.consistency is not None else ()

    def setup(self, stage: str) -> None:
        """Before fitting: the data must give the views this configuration needs."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or datamodule is None:
            return
        missing = [v for v in self.needed_views() if v not in datamodule.view_recipes]
        who = f"method.consistency={self.consistency.name}" if self.consistency else "method"
        check(
            not missing,
            f"{who} needs the training views {missing}: set data.views=[{','.join(VIEWS)}]",
        )

    def set_teacher(self, teacher: nn.Module) -> None:
        """Freeze ``teacher`` and register it; its classes and input channels must be the
        student's (the data's)."""
        label = f"method.teacher={self.teacher_source}"
        classes, channels = getattr(teacher, "num_classes", None), teacher_in_channels(teacher)
        check(
            classes == self.model.num_classes,
            f"{label} predicts {classes} classes but the data has {self.model.num_classes}: "
            "distil from a teacher trained on the same data",
        )
        check(
            channels in (None, self.model.in_channels),
            f"{label} takes {channels}-channel images but the data has "
            f"{self.model.in_channels}: distil from a teacher trained on the same data",
        )
        self.teacher = frozen(teacher)

    def teacher_logits(self, x: Tensor) -> Tensor:
        """``t(x)`` without gradient (the last input's logits are reused: a composed term on
        the same inputs costs no second teacher forward)."""
        if self._teacher_cache is not None and self._teacher_cache[0] is x:
            return self._teacher_cache[1]
        with torch.no_grad():
            logits = self.teacher(x)
        self._teacher_cache = (x, logits)
        return logits

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._teacher_cache = None  # hold no inputs or logits between steps

    # ----------------------------------------------------------------- the objective
    def divergence(self, student: Tensor, teacher: Tensor, y: Tensor) -> Tensor:
        """This method's per-example distillation divergence D(z_s, z_t, y) (B,)."""
        raise NotImplementedError

    def distillation_loss(
        self, student: Tensor, teacher: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's loss on one view: ``(loss, logs)``."""
        raise NotImplementedError

    def training_objective(self, batch: tuple) -> TrainingOutput:
        """The method's loss on the weak view (or x), plus CRLD's view terms when
        ``method.consistency`` is set."""
        x, y, *rest = batch
        views = rest[0] if rest else {}
        x_weak = views.get("weak", x)
        student_weak = self(x_weak)
        teacher_weak = self.teacher_logits(x_weak)
        loss, logs = self.distillation_loss(student_weak, teacher_weak, y)
        if self.consistency is not None:
            x_strong = views["strong"]
            student = (student_weak, self(x_strong))
            teacher = (teacher_weak, self.teacher_logits(x_strong))
            extra, extra_logs = self.consistency(
                self.divergence,
                student,
                teacher,
                y,
                host_lambda_ce=self.lambda_ce,
                label_smoothing=self.label_smoothing,
            )
            loss, logs = loss + extra, {**logs, **extra_logs}
            self._teacher_cache = (x_weak, teacher_weak)  # composed terms see the weak view
        return TrainingOutput(loss, student_weak, logs, inputs=x_weak, input_logits=student_weak)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The teacher is another run's: its weights stay out of the student's checkpoint."""
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume / test from a student checkpoint: the loaded teacher keeps its own weights."""
        super().on_load_checkpoint(checkpoint)
        if self.teacher is not None and "state_dict" in checkpoint:
            for key, value in self.teacher.state_dict().items():
                checkpoint["state_dict"][TEACHER_PREFIX + key] = value


class KnowledgeDistillation(Distillation):
    """``method=kd`` (Hinton et al. 2015): ``λ_ce · CE(z_s, y) + λ_kd · mean_i KD_T(z_s, z_t)``.

    Args (beyond :class:`Distillation`'s): ``lambda_kd``, λ_kd ≥ 0.
    mdistiller's CIFAR defaults: T=4, λ_ce=0.1, λ_kd=0.9.
    """

    def __init__(self, model: nn.Module, lambda_kd: float = 0.9, **distillation: Any):
        super().__init__(model, **distillation)
        check(lambda_kd >= 0, f"method.lambda_kd must be >= 0, got {lambda_kd}")
        self.lambda_kd = float(lambda_kd)

    def divergence(self, student: Tensor, teacher: Tensor, y: Tensor) -> Tensor:
        return kd_per_sample(student, teacher, self.temperature)

    def distillation_loss(
        self, student: Tensor, teacher: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        loss, ce, kd = kd_loss(
            student,
            teacher,
            y,
            self.temperature,
            self.lambda_ce,
            self.lambda_kd,
            self.label_smoothing,
        )
        return loss, {"ce": ce, "kd": kd}


class DecoupledKD(Distillation):
    """``method=dkd`` (Zhao et al., CVPR 2022): ``λ_ce · CE + w_e · mean_i(α·TCKD_i + β·NCKD_i)``
    with ``w_e = min(e / warmup_epochs, 1)`` in epoch e = 1, 2, ... (linear warm-up).

    Args (beyond :class:`Distillation`'s): ``alpha`` (α), ``beta`` (β), ``warmup_epochs``.
    Defaults (the paper's CIFAR-100 ResNet32x4→ResNet8x4 setting): α=1, β=8, T=4, λ_ce=1, 20.
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1.0,
        beta: float = 8.0,
        warmup_epochs: int = 20,
        **distillation: Any,
    ):
        super().__init__(model, **distillation)
        check(alpha >= 0 and beta >= 0, f"method.alpha/beta must be >= 0, got {alpha}/{beta}")
        check(
            isinstance(warmup_epochs, int)
            and not isinstance(warmup_epochs, bool)
            and warmup_epochs >= 0,
            f"method.warmup_epochs must be an integer >= 0, got {warmup_epochs!r}",
        )
        self.alpha, self.beta = float(alpha), float(beta)
        self.warmup_epochs = warmup_epochs

    @property
    def warmup(self) -> float:
        """The warm-up factor of the current epoch (Lightning counts epochs from 0)."""
        return dkd_warmup(self.current_epoch + 1, self.warmup_epochs)

    def divergence(self, student: Tensor, teacher: Tensor, y: Tensor) -> Tensor:
        per_sample = dkd_per_sample(student, teacher, y, self.alpha, self.beta, self.temperature)
        return self.warmup * per_sample

    def distillation_loss(
        self, student: Tensor, teacher: Tensor, y: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        loss, ce, tckd, nckd = dkd_loss(
            student,
            teacher,
            y,
            self.alpha,
            self.beta,
            self.temperature,
            self.lambda_ce,
            self.warmup,
            self.label_smoothing,
        )
        return loss, {"ce": ce, "tckd": tckd, "nckd": nckd}


class CRLD(Distillation):
    """``method=crld`` (Zhang et al., ACM MM 2024, :func:`robustlab.losses.crld_loss`)::

        λ_ce·[CE(z_s^w, y) + CE(z_s^s, y)]
          + λ_wv·mean_i(m_w[i]·(KD_T(z_s^w, z_t^w) + KD_T(z_s^s, z_t^s)))
          + λ_cv·mean_i(m_s[i]·(KD_T(z_s^s, z_t^w) + KD_T(z_s^w, z_t^s)))

    Args (beyond :class:`Distillation`'s): ``lambda_wv``, ``lambda_cv``, ``tau_w``, ``tau_s``.
    Defaults λ_ce=1, λ_wv=2, λ_cv=0.5, T=4, τ_w=0.9, τ_s=0.2 (ImageNet: T=1, λ_ce=2).
    """

    required_views: ClassVar[tuple[str, ...]] = VIEWS
    takes_consistency: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        lambda_wv: float = 2.0,
        lambda_cv: float = 0.5,
        tau_w: float = 0.9,
        tau_s: float = 0.2,
        **distillation: Any,
    ):
        super().__init__(model, **distillation)
        # CRLD's weights and thresholds, checked as the plug-in checks them
        self.view_terms = CrossViewConsistency(lambda_wv, lambda_cv, tau_w, tau_s, where="method")

    def training_objective(self, batch: tuple) -> TrainingOutput:
        _, y, views = batch
        x_weak, x_strong = views["weak"], views["strong"]
        student_weak, student_strong = self(x_weak), self(x_strong)
        teacher_strong = self.teacher_logits(x_strong)
        teacher_weak = self.teacher_logits(x_weak)  # last: composed terms see the weak view
        loss, ce, within, cross = crld_loss(
            student_weak,
            student_strong,
            teacher_weak,
            teacher_strong,
            y,
            self.temperature,
            self.lambda_ce,
            self.view_terms.lambda_wv,
            self.view_terms.lambda_cv,
            self.view_terms.tau_w,
            self.view_terms.tau_s,
            self.label_smoothing,
        )
        logs = {"ce": ce, "kd_within": within, "kd_cross": cross}
        return TrainingOutput(loss, student_weak, logs, inputs=x_weak, input_logits=student_weak)
