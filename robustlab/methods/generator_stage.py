"""The base for training stages that produce no classifier (e.g. HydraMix's mixing generator,
trained as a GAN before the classifier that uses it).

Such a stage keeps everything :class:`~robustlab.methods.erm.ERM` gives a method — named
optimisers with one schedule each, ``train/<name>`` logging through the same helper,
checkpoints and resume — and drops what only a classifier has: accuracy metrics, the test
step, suites (a run needs ``test=false suite=[]``, checked before data loads) and, by default,
validation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from robustlab.methods.erm import ERM
from robustlab.run.checkpoints import ExportedPart


class GeneratorStage(ERM):
    """A stage that trains parts other than a classifier, with manual optimisation.

    Subclasses build their parts as submodules (``self.model`` may be replaced, e.g. by an
    ``nn.ModuleDict`` of generator and discriminator; the ``model`` argument is what the run's
    ``model`` group built), map ``method.optimizers`` names to parameters in
    :meth:`~ERM.optimizer_parameters`, and in :meth:`~ERM.training_objective` step each
    optimiser from :meth:`~ERM.optimizers_by_name` (``manual_backward``, ``step``,
    ``zero_grad``), returning a :class:`~robustlab.methods.erm.TrainingOutput` whose ``loss``
    is reported as ``train/loss``, ``logits=None`` and its terms in ``logs``. Schedules step
    per batch or per epoch as each ``scheduler.interval`` says.

    Under DDP, a step that updates one part leaves the other's parameters out of that
    backward: run with ``trainer.strategy=ddp_find_unused_parameters_true``.

    Exported parts: none by default (there is no classifier to export). A stage whose
    product a later run uses declares it in :meth:`exported_parts`, e.g. ``{"generator":
    ExportedPart(self.generator, "pkg.module:build_generator", {"noise_dim": 128})}``; a
    later run loads it with ``load_module(run_dir, "generator")`` without building this stage.

    Validation: none by default (there is no accuracy to rank checkpoints by; ``last.ckpt``
    is the stage's result). A subclass that validates defines ``validation_step`` and should
    make ``callbacks.checkpoint.monitor`` name what it logs.
    """

    is_classifier: ClassVar[bool] = False
    automatic_optimization = False  # type: ignore[assignment]
    validation_step = None  # type: ignore[assignment]  # Lightning then skips validation

    def __init__(self, model: nn.Module, **erm: Any):
        super().__init__(model, **erm)

    def exported_parts(self) -> dict[str, ExportedPart]:
        """Nothing by default: a subclass declares its generator (see the class docstring)."""
        return {}
