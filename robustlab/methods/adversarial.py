"""PGD adversarial training (Madry et al., ICLR 2018) and TRADES (Zhang et al., ICML 2019).

Madry: ``min_θ E[max_{‖δ‖_p ≤ ε} CE(f(x + δ), y)]``, the inner max approximated by PGD.
TRADES: ``CE(f(x), y) + β · KL(f(x) ‖ f(x'))`` with x' maximising the KL term in the ε-ball
(from a random start: at x' = x the KL and its gradient are 0). The losses are the pure
functions :func:`robustlab.losses.madry_loss` and :func:`robustlab.losses.trades_loss`.
The attack is the evaluation one (:func:`robustlab.attacks.build_attack`), so "PGD-10 at 8/255"
means the same thing in training and in the ``pgd_linf`` suite.

BatchNorm: by default the attack runs with the model in eval mode (running statistics, no
running-average updates from the k attack passes; as in the TRADES reference code) and the
model's per-module train/eval flags are restored before the loss is computed in train mode.
``attack_in_eval_mode=false`` attacks with batch statistics (Madry's original code).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from robustlab.attacks import Attack, Objective, cross_entropy, training_attack
from robustlab.errors import check
from robustlab.losses import kl_divergence, madry_loss, trades_loss
from robustlab.methods.erm import ERM, TrainingOutput
from robustlab.models.base import eval_mode

LOSSES = ("madry", "trades")


def trades_objective(logits_clean: Tensor) -> Objective:
    """The TRADES attack objective ``x' ↦ KL(f(x) ‖ f(x'))`` per example, ``f(x)`` held fixed."""
    target = logits_clean.detach()

    def kl_to_clean(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
        return kl_divergence(target, model(x_adv))

    return kl_to_clean


class AdversarialTraining(ERM):
    """Adversarial training: minimise the loss on PGD examples made on the fly.

    Args:
        attack: the training attack, ``{name: pgd|fgsm, norm: linf|l2, eps, steps, step_size,
            random_start, restarts}`` (fractions such as ``"8/255"`` allowed); ``eps: 0`` is
            standard training.
        loss: ``madry`` (CE on adversarial examples) or ``trades`` (CE on clean + β·KL;
            needs ``attack.random_start``).
        trades_beta: β of TRADES (6 in Zhang et al. for CIFAR-10).
        attack_in_eval_mode: run the attack with the model in eval mode (see module docstring).
        val_attack: the attack for ``val/acc_pgd`` (null: the training attack); not targeted.
        val_attack_batches: validation batches per epoch on which ``val/acc_pgd`` is measured
            (random starts seeded by the batch index: the same attack every epoch).
        **erm: the :class:`ERM` keys (optimizer, scheduler, label_smoothing, init_from, trainable).
    """

    def __init__(
        self,
        model: nn.Module,
        attack: Mapping[str, Any] | None = None,
        loss: str = "madry",
        trades_beta: float = 6.0,
        attack_in_eval_mode: bool = True,
        val_attack: Mapping[str, Any] | None = None,
        val_attack_batches: int = 1,
        **erm: Any,
    ):
        super().__init__(model, **erm)
        check(loss in LOSSES, f"method.loss must be one of {list(LOSSES)}, got {loss!r}")
        check(trades_beta >= 0, f"method.trades_beta must be >= 0, got {trades_beta}")
        check(
            isinstance(val_attack_batches, int) and val_attack_batches >= 0,
            f"method.val_attack_batches must be an integer >= 0, got {val_attack_batches!r}",
        )
        self.attack = training_attack(attack, "method.attack")
        self.val_attack = (
            training_attack(val_attack, "method.val_attack") if val_attack else self.attack
        )
        check(
            loss != "trades" or self.attack.eps == 0 or self.attack.random_start,
            "method.loss=trades needs method.attack.name=pgd with random_start=true: the KL "
            "term and its gradient are 0 at the clean image, so an attack started there "
            "never moves",
        )
        self.loss_name = loss
        self.trades_beta = float(trades_beta)
        self.attack_in_eval_mode = bool(attack_in_eval_mode)
        self.val_attack_batches = val_attack_batches
        self.val_acc_adv = MeanMetric()

    # ----------------------------------------------------------------- the attack
    def attack_objective(self, x: Tensor, y: Tensor, logits_clean: Tensor | None) -> Objective:
        """What the training attack ascends: CE (Madry) or KL to the clean prediction (TRADES)."""
        if self.loss_name == "trades":
            return trades_objective(logits_clean)
        return cross_entropy

    def adversarial_examples(
        self, x: Tensor, y: Tensor, objective: Objective, attack: Attack | None = None
    ) -> Tensor:
        """``attack(model, x, y)`` ascending ``objective`` (model in eval mode if configured)."""
        attack = attack or self.attack
        if attack.eps == 0:
            return x
        with eval_mode(self.model, self.attack_in_eval_mode):
            return attack(self.model, x, y, objective=objective).detach()

    def clean_logits_for_attack(self, x: Tensor) -> Tensor | None:
        """f(x) as the TRADES attack sees it (same BatchNorm mode as the attack), else None."""
        if self.loss_name != "trades":
            return None
        with torch.no_grad(), eval_mode(self.model, self.attack_in_eval_mode):
            return self.model(x)

    # ----------------------------------------------------------------- the objective
    def training_loss(self, x: Tensor, y: Tensor) -> TrainingOutput:
        objective = self.attack_objective(x, y, self.clean_logits_for_attack(x))
        x_adv = self.adversarial_examples(x, y, objective)
        return self.robust_loss(x, x_adv, y)

    def robust_loss(self, x: Tensor, x_adv: Tensor, y: Tensor) -> TrainingOutput:
        """The loss on (x, x_adv): Madry ``CE(f(x_adv), y)`` or TRADES. ``train/acc`` reports
        clean accuracy (for Madry measured in eval mode, so BatchNorm statistics see only the
        adversarial batch), ``train/acc_adv`` accuracy on x_adv. Composed terms
        (``method.terms``) regularise the trained prediction: f(x_adv) for Madry, f(x) for
        TRADES."""
        logits_adv = self(x_adv)
        acc_adv = (logits_adv.argmax(1) == y).float().mean()
        if self.loss_name == "trades":
            logits = self(x)
            loss, ce, kl = trades_loss(
                logits, logits_adv, y, self.trades_beta, self.label_smoothing
            )
            logs = {"acc_adv": acc_adv, "ce": ce, "kl": kl}
            return TrainingOutput(loss, logits, logs, inputs=x, input_logits=logits)
        loss = madry_loss(logits_adv, y, self.label_smoothing)
        trained = {"inputs": x_adv, "input_logits": logits_adv}
        if x_adv is x:  # eps = 0: standard training
            return TrainingOutput(loss, logits_adv, {"acc_adv": acc_adv}, **trained)
        with torch.no_grad(), eval_mode(self.model):  # clean accuracy; no BatchNorm update
            logits = self(x)
        return TrainingOutput(loss, logits, {"acc_adv": acc_adv}, **trained)

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Also ``val/acc_pgd``: accuracy under ``val_attack`` on the first
        ``val_attack_batches`` batches, its random start drawn from a generator seeded by the
        batch index (the same attack every epoch; the global random stream is left alone)."""
        super().validation_step(batch, batch_idx)
        if batch_idx < self.val_attack_batches and self.val_attack.eps > 0:
            x, y = batch
            generator = torch.Generator(device=x.device).manual_seed(batch_idx)
            x_adv = self.val_attack(self.model, x, y, generator)  # the model is in eval mode
            with torch.no_grad():
                correct = (self.model(x_adv).argmax(1) == y).float()
            self.val_acc_adv.update(correct)
            self.log("val/acc_pgd", self.val_acc_adv, on_step=False, on_epoch=True)
