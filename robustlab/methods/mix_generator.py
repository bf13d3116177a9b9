"""HydraMix / ChimeraMix stage 1: the mixing generator, trained as a GAN on same-class groups
(``method=mix_generator``; Reinders et al., IJCAI 2022, Sec. 3; HydraMix, arXiv 2501.09504).

Training rows come as B groups of N same-class images (``data.group_size=N``, group-major).
Each step, with masks M (B, N, H, W) summing to 1 over N (``method.mask``,
:func:`~robustlab.methods.mixing_masks.sample_masks`) and everything at the generator's working
resolution in [−1, 1]:

1. *generator step*: the sources' features ``f_i = enc(x_i)``, their reconstructions
   ``x̂_i = dec(f_i)`` (one-hot masks), the mix ``x̃ = dec(Σ_i M_i ⊙ f_i)``;
   ``L_G = λ_rec · Σ_i MSE(x̂_i, x_i) + λ_lap · Σ_i Lap(x̂_i, x_i) + λ_adv · (D(x̃) − 1)²``
   (λ_rec = 1000, λ_lap = λ_adv = 1; :mod:`robustlab.losses.mixing`), with the
   discriminator's parameters toggled off;
2. *discriminator step*: ``L_D = (D(x_r) − 1)² + D(x̃)²`` (least squares, patch means) on one
   real source per group, drawn uniformly, and the generator step's mix, detached (ChimeraMix
   draws fresh masks for its discriminator step; reusing the mix is the usual GAN practice and
   saves a generator pass).

Randomness: masks and the real-image draw come from a generator seeded by
(seed, "mix_generator", rank, epoch, batch): a resumed run repeats them.

The trained generator is exported as part ``generator`` (factory
``robustlab.models.mixing_generator:build_mixing_generator``), which stage 2 (``method=hydramix``)
loads with :func:`~robustlab.run.checkpoints.load_module`.

Pictures: every ``pictures_every`` epochs (0: never), rank 0 saves
``<run dir>/pictures/mixes_epoch<E>.png`` (:meth:`~robustlab.methods.erm.ERM.save_picture`,
shown in the run's report.md): one row per class (the first group of each class the
epoch trained on, at most ``pictures_classes`` classes): the N sources, the mask (source i
coloured with the i-th palette colour, soft masks blended) and the mix, with masks drawn from a
fixed seed; logged to wandb as ``pictures/mixes`` when a wandb logger is active.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.data.seeding import generator_for
from robustlab.data.segments import SEGMENTS_VIEW
from robustlab.errors import check
from robustlab.losses.mixing import (
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    reconstruction_laplacian_loss,
    reconstruction_loss,
)
from robustlab.methods.erm import TrainingOutput
from robustlab.methods.generator_stage import GeneratorStage
from robustlab.methods.mixing_masks import check_mask_options, mask_views, sample_masks
from robustlab.models.mixing_generator import build_discriminator, build_mixing_generator
from robustlab.registry import construct
from robustlab.run.checkpoints import ExportedPart

GENERATOR_FACTORY = "robustlab.models.mixing_generator:build_mixing_generator"
#: Mask colours of the pictures (source i gets colour i mod 6).
PALETTE = torch.tensor(
    [
        [0.9, 0.2, 0.2],
        [0.2, 0.5, 0.9],
        [0.2, 0.8, 0.3],
        [0.95, 0.8, 0.2],
        [0.7, 0.3, 0.8],
        [0, 0.8, 0.8],
    ]
)


def _is_int(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


class MixGenerator(GeneratorStage):
    """``method=mix_generator``: the HydraMix / ChimeraMix mixing generator (module docstring).

    Args (beyond :class:`~robustlab.methods.erm.ERM`'s; optimisers ``generator`` and
    ``discriminator`` under ``method.optimizers``):
        generator: :func:`~robustlab.models.mixing_generator.build_mixing_generator` options
            (``ngf``, ``n_blocks``, ``decoder_blocks``, ``image_size``); ``in_channels`` comes
            from the data.
        discriminator: ``{ndf, sigmoid}`` of the PatchGAN discriminator.
        mask: ``{kind: grid|segmentation|soft_segmentation, ...options}`` (segmentation kinds
            need ``data.segments``).
        reconstruction_weight, laplacian_weight, adversarial_weight: λ_rec, λ_lap, λ_adv.
        laplacian_levels: levels of the Laplacian pyramid loss.
        pictures_every: save (and log) the pictures every this many epochs; 0 = never.
        pictures_classes: at most this many classes (rows) per picture.
        seed: the run's seed (``${seed}``), for the masks and the real-image draws.
    """

    needs_groups = True

    def __init__(
        self,
        model: nn.Module,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        mask: Mapping[str, Any] | None = None,
        reconstruction_weight: float = 1000.0,
        laplacian_weight: float = 1.0,
        adversarial_weight: float = 1.0,
        laplacian_levels: int = 3,
        pictures_every: int = 1,
        pictures_classes: int = 10,
        seed: int = 0,
        **erm: Any,
    ):
        super().__init__(model, **erm)
        mask = {"kind": "grid"} if mask is None else dict(mask)
        check(
            isinstance(mask.get("kind"), str),
            f"method.mask must be a mapping with a kind (grid, segmentation, "
            f"soft_segmentation), got {mask!r}",
        )
        for name, weight in (
            ("reconstruction_weight", reconstruction_weight),
            ("laplacian_weight", laplacian_weight),
            ("adversarial_weight", adversarial_weight),
        ):
            check(
                isinstance(weight, int | float) and not isinstance(weight, bool) and weight >= 0,
                f"method.{name} must be a number >= 0, got {weight!r}",
            )
        for name, value, least in (
            ("laplacian_levels", laplacian_levels, 1),
            ("pictures_every", pictures_every, 0),
            ("pictures_classes", pictures_classes, 1),
            ("seed", seed, 0),
        ):
            check(
                _is_int(value, least), f"method.{name} must be an integer >= {least}, got {value!r}"
            )
        check(
            "in_channels" not in (generator or {}),
            "method.generator.in_channels comes from the data; remove it",
        )
        self.generator_kwargs = {
            **dict(generator or {}),
            "in_channels": int(getattr(model, "in_channels", 3)),
        }
        channels = self.generator_kwargs["in_channels"]
        self.model = nn.ModuleDict(
            {
                "generator": construct(
                    build_mixing_generator, "method.generator", **self.generator_kwargs
                ),
                "discriminator": construct(
                    build_discriminator,
                    "method.discriminator",
                    in_channels=channels,
                    **dict(discriminator or {}),
                ),
            }
        )
        self.mask_kind = mask.pop("kind")
        self.mask_options = mask
        check_mask_options(self.mask_kind, self.mask_options)
        self.weights = {
            "reconstruction": float(reconstruction_weight),
            "laplacian": float(laplacian_weight),
            "adversarial": float(adversarial_weight),
        }
        self.laplacian_levels = int(laplacian_levels)
        self.pictures_every, self.pictures_classes = int(pictures_every), int(pictures_classes)
        self.seed = int(seed)
        self.group_size: int | None = None  # N, from the datamodule when fitting
        self._batch_index = 0
        self._picture_groups: dict[int, tuple[Tensor, Tensor | None]] = {}

    # ----------------------------------------------------------------- parts
    @property
    def generator(self) -> nn.Module:
        return self.model["generator"]

    @property
    def discriminator(self) -> nn.Module:
        return self.model["discriminator"]

    def exported_parts(self) -> dict[str, ExportedPart]:
        """The generator, rebuilt by ``build_mixing_generator(**kwargs)`` in stage 2."""
        return {"generator": ExportedPart(self.generator, GENERATOR_FACTORY, self.generator_kwargs)}

    def optimizer_parameters(self) -> dict[str, Any]:
        return {
            "generator": self.generator.parameters(),
            "discriminator": self.discriminator.parameters(),
        }

    @classmethod
    def views_for(cls, method: Mapping[str, Any]) -> tuple[str, ...]:
        """Segmentation masks need each image's segments (``data.segments``)."""
        return mask_views(method.get("mask"))

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None:
            self.group_size = int(datamodule.group_size)

    # ----------------------------------------------------------------- the step
    def masks(
        self, batch: int, size: tuple[int, int], segments: Tensor | None, draws: torch.Generator
    ) -> Tensor:
        """Masks (B, N, H, W) of this method's kind for groups of :attr:`group_size`."""
        return sample_masks(
            self.mask_kind,
            self.group_size,
            batch=batch,
            size=size,
            generator=draws,
            segments=segments,
            **self.mask_options,
        )

    def grouped(self, batch: tuple) -> tuple[Tensor, Tensor, Tensor | None]:
        """Images (B, N, C, H, W), labels (B, N) and segments (B, N, H, W) or None."""
        x, y, *rest = batch
        sources = self.group_size
        check(
            sources is not None and sources >= 2 and len(x) % sources == 0,
            f"MixGenerator needs batches of same-class groups (data.group_size >= 2), got "
            f"{len(x)} rows for groups of {sources}",
        )
        segments = (rest[0] if rest else {}).get(SEGMENTS_VIEW)
        if segments is not None:
            segments = segments.view(-1, sources, *segments.shape[1:])
        return x.view(-1, sources, *x.shape[1:]), y.view(-1, sources), segments

    def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
        self._batch_index = batch_idx
        return super().training_step(batch, batch_idx)

    def training_objective(self, batch: tuple) -> TrainingOutput:
        images, labels, segments = self.grouped(batch)
        groups, sources, channels, height, width = images.shape
        draws = generator_for(
            self.seed,
            "mix_generator",
            self.global_rank,
            int(self.current_epoch),
            self._batch_index,
            device=images.device,
        )
        masks = self.masks(groups, (height, width), segments, draws)
        real_choice = torch.randint(0, sources, (groups,), generator=draws, device=images.device)
        if self.pictures_every and (self.current_epoch + 1) % self.pictures_every == 0:
            self.remember_groups(images, labels, segments)
        optimizers = self.optimizers_by_name()
        generator, discriminator = self.generator, self.discriminator

        # 1. generator step
        g_optimizer = optimizers["generator"]
        self.toggle_optimizer(g_optimizer)
        targets = 2 * generator.working(images.flatten(0, 1)) - 1  # [−1, 1], working size
        targets = targets.view(groups, sources, *targets.shape[1:])
        features = generator.encode(images.flatten(0, 1))
        reconstructions = 2 * generator.decode(features) - 1
        reconstructions = reconstructions.view_as(targets)
        features = features.view(groups, sources, *features.shape[1:])
        mixed = 2 * generator.decode(generator.mix(features, generator.feature_masks(masks))) - 1
        rec = reconstruction_loss(reconstructions, targets, weight=1.0)
        lap = reconstruction_laplacian_loss(reconstructions, targets, self.laplacian_levels)
        adv = lsgan_generator_loss(discriminator(mixed))
        w = self.weights
        g_loss = w["reconstruction"] * rec + w["laplacian"] * lap + w["adversarial"] * adv
        self.manual_backward(g_loss)
        g_optimizer.step()
        g_optimizer.zero_grad()  # the other part's step then sees no gradients of this one
        self.untoggle_optimizer(g_optimizer)

        # 2. discriminator step
        d_optimizer = optimizers["discriminator"]
        self.toggle_optimizer(d_optimizer)
        real = targets[torch.arange(groups, device=images.device), real_choice].detach()
        real_scores, fake_scores = discriminator(real), discriminator(mixed.detach())
        d_loss = lsgan_discriminator_loss(real_scores, fake_scores)
        self.manual_backward(d_loss)
        d_optimizer.step()
        d_optimizer.zero_grad()  # the other part's step then sees no gradients of this one
        self.untoggle_optimizer(d_optimizer)

        logs = {
            "g_loss": g_loss.detach(),
            "d_loss": d_loss.detach(),
            "reconstruction_mse": rec.detach(),
            "laplacian": lap.detach(),
            "adversarial": adv.detach(),
        }
        return TrainingOutput((g_loss + d_loss).detach(), None, logs)

    # ----------------------------------------------------------------- pictures
    def remember_groups(self, images: Tensor, labels: Tensor, segments: Tensor | None) -> None:
        """Keep the first group of each class seen this epoch (for the pictures)."""
        for row, label in enumerate(labels[:, 0].tolist()):
            if len(self._picture_groups) >= self.pictures_classes:
                return
            if label not in self._picture_groups:
                kept = None if segments is None else segments[row].detach().clone()
                self._picture_groups[label] = (images[row].detach().clone(), kept)

    def picture(self) -> Tensor:
        """The picture grid (rows: classes; columns: N sources, mask, mix) as (R·(N+2), 3, H, W)
        tiles in [0, 1], masks drawn from a fixed seed."""
        classes = sorted(self._picture_groups)
        images = torch.stack([self._picture_groups[c][0] for c in classes])
        segments = None
        if self._picture_groups[classes[0]][1] is not None:
            segments = torch.stack([self._picture_groups[c][1] for c in classes])
        groups, sources, channels, height, width = images.shape
        draws = generator_for(self.seed, "mix_generator_pictures", device=images.device)
        with torch.no_grad():
            masks = self.masks(groups, (height, width), segments, draws)
            mixed = self.generator(images, masks)
        colours = PALETTE[torch.arange(sources) % len(PALETTE)].to(images.device)
        mask_rgb = torch.einsum("bnhw,nc->bchw", masks, colours)
        rgb = (lambda t: t.expand(*t.shape[:-3], 3, height, width)) if channels == 1 else None
        tiles = [
            (rgb(images) if rgb else images),  # (B, N, 3, H, W)
            mask_rgb.unsqueeze(1),
            (rgb(mixed) if rgb else mixed).unsqueeze(1),
        ]
        return torch.cat(tiles, dim=1).flatten(0, 1).clamp(0, 1).float()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        groups, self._picture_groups = self._picture_groups, {}
        if not groups or not self.trainer.is_global_zero:
            return
        self._picture_groups = groups
        tiles = self.picture()
        self._picture_groups = {}
        self.save_picture("mixes", tiles, columns=self.group_size + 2)
