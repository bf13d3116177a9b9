"""Self-supervision × adversarial training (Kucer et al. 2021; Hendrycks et al. 2019; Chen et al.
2020): one method whose configs are all the combinations those papers compare.

Loss on a batch (x, y), pretext labels l drawn once per batch, x' = attack(x):
``L = task_weight · L_task(x, x', y) + ssl_weight · mean_tasks SSL(x_ssl, l)``, where L_task is
the Madry or TRADES loss (:class:`AdversarialTraining`; ``attack.eps: 0`` = standard training),
SSL is a pretext head's cross-entropy on the backbone features
(:mod:`robustlab.methods.pretext`) and x_ssl is x' (``ssl_inputs: adversarial``), x (``clean``)
or both averaged (``both``, Chen et al.'s ½[CE(x') + CE(x)]). The attack ascends
``[task_weight > 0] · L_attack + attack_ssl_weight · SSL``.

- (a) pre-training: ``task_weight: 0`` (SSL only; adversarial with ``attack_ssl_weight: 1``, the
  attack then maximises the pretext loss as in Chen et al.), then fine-tune with any method via
  ``method.init_from=<ckpt> method.trainable=all|classifier|[prefixes]``;
- (b) auxiliary / multi-task SSL: ``ssl_weight: λ``, ``attack_ssl_weight: 0``;
- (c) attacked SSL (Kucer's strongest variant; Hendrycks et al. use λ = 0.5 and CE + CE_rot/8
  in the attack): ``attack_ssl_weight: w > 0``;
- (d) ensembles of pretext tasks: ``pretext: [rotation, jigsaw]``.

The perturbation is made on the upright image and the pretext views are derived from x', so one
δ per image serves the task and all pretext views (Hendrycks et al. perturb each rotated copy
separately).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from robustlab.attacks import Objective, weighted_sum
from robustlab.errors import check
from robustlab.methods.adversarial import AdversarialTraining
from robustlab.methods.erm import TrainingOutput
from robustlab.methods.pretext import build_pretexts, pretext_heads, pretext_loss
from robustlab.models.base import eval_mode

SSL_INPUTS = ("adversarial", "clean", "both")


class SelfSupervised(AdversarialTraining):
    """Adversarial (or standard) training with self-supervised pretext heads.

    Args:
        pretext: task names (``rotation``, ``jigsaw``) or one name.
        pretext_options: per-task constructor options, e.g. ``{jigsaw: {grid: 4,
            permutations: 31, identity_prob: 0.1}, rotation: {views: all}}``.
        ssl_weight: λ, the weight of the pretext loss in the training loss.
        task_weight: weight of the classification (Madry / TRADES) loss; 0 = SSL pre-training.
        attack_ssl_weight: weight of the pretext loss inside the attack objective (0 = the
            attack sees only the task loss).
        ssl_inputs: images the pretext loss is computed on: ``adversarial``, ``clean``, ``both``.
        **adversarial: the :class:`AdversarialTraining` and ERM keys.
    """

    def __init__(
        self,
        model: nn.Module,
        pretext: str | Sequence[str] = ("rotation",),
        pretext_options: Mapping[str, Mapping[str, Any]] | None = None,
        ssl_weight: float = 0.5,
        task_weight: float = 1.0,
        attack_ssl_weight: float = 0.0,
        ssl_inputs: str = "adversarial",
        **adversarial: Any,
    ):
        super().__init__(model, **adversarial)
        for key, value in (
            ("ssl_weight", ssl_weight),
            ("task_weight", task_weight),
            ("attack_ssl_weight", attack_ssl_weight),
        ):
            check(value >= 0, f"method.{key} must be >= 0, got {value}")
        check(
            ssl_inputs in SSL_INPUTS,
            f"method.ssl_inputs must be one of {list(SSL_INPUTS)}, got {ssl_inputs!r}",
        )
        check(
            task_weight > 0 or ssl_weight > 0,
            "method.task_weight and method.ssl_weight are both 0: nothing to train",
        )
        check(
            task_weight > 0 or self.attack.eps == 0 or attack_ssl_weight > 0,
            "SSL pre-training (method.task_weight=0) with method.attack.eps > 0 needs "
            "method.attack_ssl_weight > 0 (the attack maximises the pretext loss), or set "
            "method.attack.eps=0 for standard pre-training",
        )
        self.tasks = build_pretexts(pretext, pretext_options)
        self.pretext_heads = pretext_heads(self.tasks, model.feature_dim)
        self.ssl_weight = float(ssl_weight)
        self.task_weight = float(task_weight)
        self.attack_ssl_weight = float(attack_ssl_weight)
        self.ssl_inputs = ssl_inputs
        self.val_ssl_acc = MeanMetric()

    # ----------------------------------------------------------------- pretext loss
    def sample_pretext_labels(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Pretext labels (B, V) per task, drawn once per batch and shared by attack and loss."""
        return {n: t.sample_labels(len(x), x.device, generator) for n, t in self.tasks.items()}

    def ssl_loss(
        self, model: nn.Module, x: Tensor, labels: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-example pretext loss averaged over tasks (B,), and each task's accuracy."""
        losses, accs = [], {}
        for name, task in self.tasks.items():
            loss, logits = pretext_loss(model, self.pretext_heads[name], task, x, labels[name])
            losses.append(loss)
            accs[name] = (logits.argmax(1) == labels[name].reshape(-1)).float().mean().detach()
        return torch.stack(losses).mean(dim=0), accs

    def ssl_objective(self, labels: Mapping[str, Tensor]) -> Objective:
        """``x' ↦ SSL(x', l)`` per example, for the attack."""

        def pretext_objective(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
            return self.ssl_loss(model, x_adv, labels)[0]

        return pretext_objective

    # ----------------------------------------------------------------- the objective
    def combined_objective(self, x: Tensor, y: Tensor, labels: Mapping[str, Tensor]) -> Objective:
        """``[task_weight > 0] · L_attack + attack_ssl_weight · SSL`` (see module docstring)."""
        terms = []
        if self.task_weight > 0:
            terms.append((1.0, self.attack_objective(x, y, self.clean_logits_for_attack(x))))
        if self.attack_ssl_weight > 0:
            terms.append((self.attack_ssl_weight, self.ssl_objective(labels)))
        return terms[0][1] if len(terms) == 1 and terms[0][0] == 1.0 else weighted_sum(*terms)

    def training_loss(self, x: Tensor, y: Tensor) -> TrainingOutput:
        labels = self.sample_pretext_labels(x)
        x_adv = self.adversarial_examples(x, y, self.combined_objective(x, y, labels))
        if self.task_weight > 0:
            out = self.robust_loss(x, x_adv, y)
            loss = self.task_weight * out.loss
        else:  # pre-training: the classifier is not trained; report its accuracy only
            with torch.no_grad(), eval_mode(self.model):
                out = TrainingOutput(x.new_zeros(()), self.model(x))
            loss = out.loss
        if self.ssl_weight > 0:
            if self.ssl_inputs == "clean":
                ssl, accs = self.ssl_loss(self.model, x, labels)
            else:
                ssl, accs = self.ssl_loss(self.model, x_adv, labels)
                if self.ssl_inputs == "both":
                    ssl = 0.5 * (ssl + self.ssl_loss(self.model, x, labels)[0])
            ssl = ssl.mean()
            loss = loss + self.ssl_weight * ssl
            out.logs["ssl_loss"] = ssl
            out.logs.update({f"ssl_acc_{name}": acc for name, acc in accs.items()})
        return replace(out, loss=loss)

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Also ``val/ssl_acc``: pretext accuracy (mean over tasks) on clean validation images,
        with labels from a generator seeded by the batch index (same every epoch)."""
        super().validation_step(batch, batch_idx)
        x, _ = batch
        generator = torch.Generator(device=x.device).manual_seed(batch_idx)
        labels = self.sample_pretext_labels(x, generator)
        with torch.no_grad():
            _, accs = self.ssl_loss(self.model, x, labels)
        self.val_ssl_acc.update(torch.stack(list(accs.values())).mean(), weight=len(x))
        self.log("val/ssl_acc", self.val_ssl_acc, on_step=False, on_epoch=True)
