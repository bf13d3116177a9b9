"""Introspective training: reclassification by synthesis (``method=introspective``).

ICN (Jin, Lazarow & Tu, NeurIPS 2017, arXiv 1704.07816) and WINN (Lee, Xu, Fan & Tu, CVPR 2018,
arXiv 1711.08875) make one classifier also a generative model. Every ``synthesis_every`` epochs,
at the epoch's first batch, the classifier synthesises ``per_class`` pseudo-negatives of every
class (:mod:`robustlab.methods.synthesis`, model in eval mode, gradients w.r.t. pixels only) and
adds them to a per-class pool (a ring buffer of ``pool_capacity`` images per class); every
training batch of B real images then gets ``round(ρ / (1 − ρ) · B)`` pseudo-negatives drawn
uniformly from the pool (ρ = ``negative_fraction``, their share of the batch's rows), and the
classifier is trained on both (losses: :mod:`robustlab.losses.introspective`):

- ``variant=icn``: synthesis is SGD-Langevin ascent of the class evidence; the loss is one of
  two multi-class forms, both ASSUMPTIONS (the paper's single-CNN form is unconfirmed):
  ``icn_form=kplus1`` (default) — a (K+1)-th "synthesised" logit from an extra linear head on the
  classifier's penultimate features (``negative_head``), so the classifier itself keeps its K
  logits: evaluation, suites and ``robustlab-eval`` see a K-class model, and the head lives
  beside it in the checkpoint; ``icn_form=one_vs_rest`` — the K logits double as per-class
  logistic classifiers, no extra head.
- ``variant=winn``: a Wasserstein critic head W (a linear layer on the penultimate features, or on
  the logits as in WINN's code with ``critic_input=logits``; checkpointed and exported as part
  ``critic``), the loss ``CE + 0.01 · (mean W(x̃) − mean W(x) + 10 · GP)`` and synthesis by Adam
  on the pixels towards a critic value ``thr ~ U[min, max]`` of the current real batch's critic
  values (the min and max over all processes). WINN's code optimises the classifier with Adam
  1e-3, β = (0, 0.9) (``conf/experiment/introspective/*``).

Initial images: Gaussian noise N(``init_mean``, ``init_std``²) clipped to [0, 1]
(``init=noise``), or persistent chains continued from pool images of the same class drawn
uniformly (``init=pool``; noise while a class's pool is empty).

Randomness: synthesis draws from a generator seeded by (seed, rank, epoch, global step), the
pseudo-negatives of a batch by (seed, rank, epoch, batch): a run repeats bit for bit and a
resumed one continues like the uninterrupted run (the pool is saved in every checkpoint under
``introspective_pool``).

DDP: rank r synthesises ``per_class // W (+1 for r < per_class mod W)`` images of every class;
the shares are all-gathered and added in rank order, so the pool is the same on every rank
(each rank then draws its own batch negatives from it).

Pictures: each synthesis round, rank 0 saves the newest ``pictures_per_class`` pseudo-negatives
of every class (one row per class) to ``<run dir>/pictures/pseudo_negatives_epoch<E>.png``
(shown in the run's report.md) and logs it to wandb as ``pictures/pseudo_negatives`` when a
wandb logger is active.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.data.seeding import generator_for
from robustlab.errors import check
from robustlab.losses.introspective import (
    ICN_FORMS,
    gradient_penalty,
    icn_evidence,
    kplus1_loss,
    one_vs_rest_loss,
    winn_loss,
    winn_score,
)
from robustlab.methods.erm import ERM, TrainingOutput
from robustlab.methods.synthesis import (
    AdamSynthesisSettings,
    LangevinSettings,
    NegativePool,
    adam_synthesis,
    langevin,
    options_from,
)
from robustlab.models.base import eval_mode
from robustlab.randomness import normal, uniform
from robustlab.run.checkpoints import ExportedPart

VARIANTS = ("icn", "winn")
INITS = ("noise", "pool")
CRITIC_INPUTS = ("features", "logits")
#: where the pool is kept in a checkpoint
POOL_STATE = "introspective_pool"


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


class WinnScore:
    """WINN's synthesis score ``−(|W(x) − thr| + ce_weight · CE(f(x), k))`` per image, as an
    attack objective; remembers ``|W(x) − thr|`` of its latest call for the early stop."""

    def __init__(self, method: IntrospectiveTraining, threshold: Tensor, ce_weight: float):
        self.method, self.threshold, self.ce_weight = method, threshold, ce_weight
        self.distance = torch.full_like(threshold, float("inf"))

    def __call__(self, model: nn.Module, x: Tensor, classes: Tensor) -> Tensor:
        logits, critic = self.method.logits_and_extra(x)
        self.distance = (critic - self.threshold).abs().detach()
        return winn_score(logits, critic, classes, self.threshold, self.ce_weight)


class IntrospectiveTraining(ERM):
    """``method=introspective``: ICN or WINN on the ERM base (module docstring).

    Args (beyond :class:`~robustlab.methods.erm.ERM`'s):
        variant: ``icn`` | ``winn``.
        icn_form: ``kplus1`` | ``one_vs_rest`` (ICN's loss; both ASSUMPTIONS).
        synthesis_every: synthesise every this many epochs (from epoch 0).
        per_class: new pseudo-negatives per class per synthesis round (WINN: 100).
        negative_fraction: ρ in [0, 1), the pseudo-negatives' share of a training batch's rows.
        negative_weight: w_neg of ICN's negative term.
        pool_capacity: images kept per class (ring buffer).
        init: ``noise`` | ``pool`` (persistent chains); ``init_mean``, ``init_std``: the noise.
        langevin: ICN's sampler, ``{steps, step_size, noise, final_ratio}``.
        winn: WINN's pixel optimiser, ``{lr, betas, max_steps, tolerance, ce_weight, eps}``.
        critic_weight, gp_weight: λ_W and λ_gp of WINN's loss; critic_input: ``features`` |
            ``logits``.
        synthesis_batch: images synthesised at once (memory bound; fixes the noise order).
        pictures_per_class: columns of the pseudo-negative picture (0: no pictures).
        seed: the run's seed (``${seed}``).
    """

    def __init__(
        self,
        model: nn.Module,
        variant: str = "icn",
        icn_form: str = "kplus1",
        synthesis_every: int = 1,
        per_class: int = 100,
        negative_fraction: float = 0.5,
        negative_weight: float = 1.0,
        pool_capacity: int = 1000,
        init: str = "noise",
        init_mean: float = 0.5,
        init_std: float = 0.25,
        langevin: Mapping[str, Any] | None = None,
        winn: Mapping[str, Any] | None = None,
        critic_weight: float = 0.01,
        gp_weight: float = 10.0,
        critic_input: str = "features",
        synthesis_batch: int = 500,
        pictures_per_class: int = 8,
        seed: int = 0,
        **erm: Any,
    ):
        check(
            variant in VARIANTS, f"method.variant must be one of {list(VARIANTS)}, got {variant!r}"
        )
        check(
            icn_form in ICN_FORMS,
            f"method.icn_form must be one of {list(ICN_FORMS)}, got {icn_form!r}",
        )
        check(init in INITS, f"method.init must be one of {list(INITS)}, got {init!r}")
        check(
            critic_input in CRITIC_INPUTS,
            f"method.critic_input must be one of {list(CRITIC_INPUTS)}, got {critic_input!r}",
        )
        for name, value, least in (
            ("synthesis_every", synthesis_every, 1),
            ("per_class", per_class, 1),
            ("pool_capacity", pool_capacity, 1),
            ("synthesis_batch", synthesis_batch, 1),
            ("pictures_per_class", pictures_per_class, 0),
            ("seed", seed, 0),
        ):
            check(
                _integer(value, least),
                f"method.{name} must be an integer >= {least}, got {value!r}",
            )
        check(
            _number(negative_fraction) and 0 <= negative_fraction < 1,
            f"method.negative_fraction must be in [0, 1), got {negative_fraction!r}",
        )
        check(
            variant != "winn" or negative_fraction > 0,
            "method.variant=winn compares real and synthesised images in every batch: set "
            "method.negative_fraction > 0",
        )
        for name, value in (
            ("negative_weight", negative_weight),
            ("critic_weight", critic_weight),
            ("gp_weight", gp_weight),
            ("init_std", init_std),
        ):
            check(
                _number(value) and value >= 0, f"method.{name} must be a number >= 0, got {value!r}"
            )
        check(_number(init_mean), f"method.init_mean must be a number, got {init_mean!r}")
        self.langevin_settings = options_from(LangevinSettings, langevin, "method.langevin")
        self.langevin_settings.check("method.langevin")
        self.adam_settings = options_from(AdamSynthesisSettings, winn, "method.winn")
        self.adam_settings.check("method.winn")
        super().__init__(model, **erm)
        self.variant, self.icn_form, self.init = variant, icn_form, init
        self.synthesis_every, self.per_class = int(synthesis_every), int(per_class)
        self.negative_fraction, self.negative_weight = (
            float(negative_fraction),
            float(negative_weight),
        )
        self.init_mean, self.init_std = float(init_mean), float(init_std)
        self.critic_weight, self.gp_weight = float(critic_weight), float(gp_weight)
        self.critic_input = critic_input
        self.synthesis_batch, self.pictures_per_class = (
            int(synthesis_batch),
            int(pictures_per_class),
        )
        self.seed = int(seed)
        self.num_classes = int(model.num_classes)
        features = int(model.feature_dim)
        self.negative_head: nn.Linear | None = None
        self.critic: nn.Linear | None = None
        if variant == "icn" and icn_form == "kplus1":
            self.negative_head = nn.Linear(features, 1)
        if variant == "winn":
            width = features if critic_input == "features" else self.num_classes
            self.critic = nn.Linear(width, 1)
        self.pool = NegativePool(self.num_classes, pool_capacity)
        self._batch_index = 0

    # ----------------------------------------------------------------- heads
    def logits_and_extra(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The K class logits and the head's output per image: the synthesised-class logit
        (ICN K+1), the critic value W(x) (WINN) or None (ICN one-vs-rest)."""
        features = self.model.features(x)
        logits = self.model.classifier(features)
        if self.critic is not None:
            source = features if self.critic_input == "features" else logits
            return logits, self.critic(source).squeeze(1)
        if self.negative_head is not None:
            return logits, self.negative_head(features).squeeze(1)
        return logits, None

    def icn_logits(self, x: Tensor) -> Tensor:
        """The logits ICN's loss and evidence take: (B, K+1) for ``kplus1``, else (B, K)."""
        logits, extra = self.logits_and_extra(x)
        return logits if extra is None else torch.cat([logits, extra[:, None]], dim=1)

    def critic_values(self, x: Tensor) -> Tensor:
        """W(x) per image (WINN)."""
        return self.logits_and_extra(x)[1]

    def exported_parts(self) -> dict[str, ExportedPart]:
        """The classifier and, for WINN, the critic head (``torch.nn.Linear``)."""
        parts = super().exported_parts()
        if self.critic is not None:
            size = {"in_features": self.critic.in_features, "out_features": 1}
            parts["critic"] = ExportedPart(self.critic, "torch.nn:Linear", size)
        return parts

    # ----------------------------------------------------------------- synthesis
    def world(self) -> tuple[int, int]:
        """(rank, world size)."""
        if self._trainer is None:
            return 0, 1
        return int(self.global_rank), int(self.trainer.world_size)

    def share(self, rank: int, world: int) -> int:
        """Images per class rank ``rank`` synthesises."""
        return self.per_class // world + int(rank < self.per_class % world)

    def initial_images(
        self, classes: Tensor, shape: tuple[int, ...], generator: torch.Generator
    ) -> Tensor:
        """Noise N(init_mean, init_std²) clipped to [0, 1]; with ``init=pool`` each row whose
        class has pool images starts from one of them, drawn uniformly."""
        device = classes.device
        x = normal((len(classes), *shape), self.init_mean, self.init_std, generator, device)
        x = x.clamp_(0.0, 1.0)
        if self.init == "pool" and len(self.pool):
            self.pool.to(device)
            held = self.pool.filled.to(device)[classes]
            picks = uniform((len(classes),), 0.0, 1.0, generator, device)
            slots = (picks * held).long().clamp(max=self.pool.capacity - 1)
            from_pool = held > 0
            if bool(from_pool.any()):
                x[from_pool] = self.pool.images[classes[from_pool], slots[from_pool]]
        return x

    def threshold_range(self, real: Tensor) -> tuple[float, float]:
        """min and max of W over the real images (over all processes)."""
        with torch.no_grad(), eval_mode(self):
            values = self.critic_values(real)
        bounds = torch.stack([values.min(), -values.max()])
        if self.world()[1] > 1:
            bounds = self.all_gather(bounds).view(-1, 2).min(dim=0).values
        return float(bounds[0]), float(-bounds[1])

    def synthesise_rows(
        self,
        x: Tensor,
        classes: Tensor,
        generator: torch.Generator,
        critic_range: tuple[float, float] | None = None,
    ) -> Tensor:
        """Run this variant's sampler on initial images ``x`` for ``classes`` (WINN: towards
        thresholds drawn uniformly from ``critic_range``)."""
        if self.variant == "icn":

            def evidence(model: nn.Module, images: Tensor, k: Tensor) -> Tensor:
                return icn_evidence(self.icn_logits(images), k, self.icn_form)

            return langevin(evidence, self, x, classes, self.langevin_settings, generator)
        low, high = critic_range
        threshold = uniform((len(x),), low, high, generator, x.device)
        score = WinnScore(self, threshold, float(self.adam_settings.ce_weight))
        images, _ = adam_synthesis(
            score, self, x, classes, self.adam_settings, lambda: score.distance
        )
        return images

    def synthesise(self, real: Tensor) -> Tensor:
        """One synthesis round (module docstring): this rank's share of every class,
        all-gathered into the pool. Returns the new images (K, per_class, C, H, W)."""
        rank, world = self.world()
        device, shape = real.device, tuple(real.shape[1:])
        generator = generator_for(
            self.seed,
            "introspective",
            rank,
            int(self.current_epoch),
            int(self.global_step),
            device=device,
        )
        share = self.share(rank, world)
        classes = torch.arange(self.num_classes, device=device).repeat_interleave(share)
        x = self.initial_images(classes, shape, generator)
        # once per round on every rank (a collective under DDP, whatever this rank's share)
        critic_range = self.threshold_range(real) if self.variant == "winn" else None
        chunks = [
            self.synthesise_rows(
                x[i : i + self.synthesis_batch],
                classes[i : i + self.synthesis_batch],
                generator,
                critic_range,
            )
            for i in range(0, len(x), self.synthesis_batch)
        ]
        mine = (torch.cat(chunks) if chunks else x).view(self.num_classes, share, *shape)
        new = self.gather_shares(mine, world)
        self.pool.to(device).add(new)
        self.save_pictures()
        return new

    def gather_shares(self, mine: Tensor, world: int) -> Tensor:
        """Every rank's (K, share_r, ...) images, concatenated in rank order along the share."""
        if world == 1:
            return mine
        most = self.share(0, world)
        padded = mine.new_zeros((self.num_classes, most, *mine.shape[2:]))
        padded[:, : mine.shape[1]] = mine
        gathered = self.all_gather(padded)  # (W, K, most, ...)
        parts = [gathered[r, :, : self.share(r, world)] for r in range(world)]
        return torch.cat(parts, dim=1)

    def negatives_per_batch(self, real_rows: int) -> int:
        """round(ρ / (1 − ρ) · B): the pseudo-negatives added to B real images."""
        return round(self.negative_fraction / (1 - self.negative_fraction) * real_rows)

    # ----------------------------------------------------------------- the objective
    def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
        self._batch_index = batch_idx
        return super().training_step(batch, batch_idx)

    def synthesis_due(self) -> bool:
        """At the first batch of every ``synthesis_every``-th epoch (from epoch 0)."""
        return self._batch_index == 0 and self.current_epoch % self.synthesis_every == 0

    def training_objective(self, batch: tuple) -> TrainingOutput:
        x, y, *_ = batch
        if self.synthesis_due():
            self.synthesise(x)
        count = self.negatives_per_batch(len(x))
        rank = self.world()[0]
        draws = generator_for(
            self.seed,
            "introspective_negatives",
            rank,
            int(self.current_epoch),
            self._batch_index,
            device=x.device,
        )
        if count and len(self.pool):
            negatives, classes = self.pool.to(x.device).sample(count, draws)
        else:
            negatives, classes = x[:0], y[:0]
        return self.introspective_loss(x, y, negatives.to(x.dtype), classes, draws)

    def introspective_loss(
        self, x: Tensor, y: Tensor, negatives: Tensor, classes: Tensor, draws: torch.Generator
    ) -> TrainingOutput:
        """The variant's loss on real images (x, y) and pseudo-negatives of ``classes``, in one
        forward pass (WINN: one more for the penalty's interpolates, mixed by ``draws``)."""
        rows = len(x)
        logits, extra = self.logits_and_extra(torch.cat([x, negatives]))
        real_logits = logits[:rows]
        logs = {"negatives": torch.tensor(float(len(negatives)), device=x.device)}
        if self.variant == "winn":
            pairs = min(rows, len(negatives))
            if self.gp_weight > 0 and pairs:
                mix = uniform((pairs,), 0.0, 1.0, draws, x.device)
                penalty = gradient_penalty(self.critic_values, x[:pairs], negatives[:pairs], mix)
            else:
                penalty = x.new_zeros(())
            loss, ce, critic = winn_loss(
                real_logits,
                y,
                extra[:rows],
                extra[rows:],
                penalty,
                self.critic_weight,
                self.gp_weight,
                self.label_smoothing,
            )
            logs.update(ce=ce.detach(), critic=critic.detach(), gp=penalty.detach())
            logs["wasserstein"] = (extra[:rows].mean() - extra[rows:].mean()).detach()
            return TrainingOutput(loss, real_logits, logs)
        if self.icn_form == "kplus1":
            full = torch.cat([logits, extra[:, None]], dim=1)
            loss, ce, negative = kplus1_loss(
                full[:rows], y, full[rows:], self.negative_weight, self.label_smoothing
            )
        else:
            loss, ce, negative = one_vs_rest_loss(
                real_logits, y, logits[rows:], classes, self.negative_weight, self.label_smoothing
            )
        logs.update(ce=ce.detach(), negative_loss=negative.detach())
        return TrainingOutput(loss, real_logits, logs)

    # ----------------------------------------------------------------- pictures
    def save_pictures(self) -> Path | None:
        """The newest pseudo-negatives, one row per class, as
        ``pictures/pseudo_negatives_epochEEE.png`` (rank 0; also to wandb)."""
        if not self.pictures_per_class or self._trainer is None:
            return None
        columns = min(self.pictures_per_class, self.per_class)
        rows = [self.pool.newest(k, columns) for k in range(self.num_classes)]
        return self.save_picture("pseudo_negatives", torch.cat(rows), columns)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also the pool, so ``resume`` continues with the same pseudo-negatives."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[POOL_STATE] = self.pool.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if POOL_STATE in checkpoint:
            self.pool.load_state_dict(checkpoint[POOL_STATE])
