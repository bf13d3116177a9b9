"""HydraMix stage 2 (Reinders, Schubert & Rosenhahn, arXiv 2501.09504, 2025; ChimeraMix,
Reinders et al., IJCAI 2022): a classifier trained from scratch on real images and on images a
frozen mixing generator makes from N images of one class.

Training rows come as B same-class groups (``data.group_size=N``: rows g·N … g·N+N−1 are group
g, :mod:`robustlab.data.groups`). Each batch is, as a whole:

- *generated*, with probability ``mix_prob``: group g's images x_{g,1..N} are mixed under masks
  M_g ∈ [0, 1]^{N×H×W} with Σ_i M_{g,i} = 1 at every pixel (``method.mask``,
  :func:`robustlab.methods.mixing_masks.sample_masks`), by the frozen generator
  x̃_g = G(x_g, M_g), which mixes the N images' features (``mix=generator``), or in pixel
  space x̃_g = Σ_i M_{g,i} ⊙ x_{g,i} (``mix=direct``: the ablation, no generator);
- *real*, otherwise: the first image of each group, x_{g,1}.

Either way the classifier sees B images, one per group, each labelled with its group's class,
and minimises ERM's objective on them (cross-entropy with label smoothing, composed
``method.terms``); ``train/acc`` is measured on those B rows, ``train/generated`` is the
fraction of generated batches. Documented choices (the papers say only that a batch is all
real or all generated, with probability ½): a real batch classifies one row per group, not
all B·N, so both kinds of batch have B images; the groups are drawn afresh every epoch, so a
group's first row is a uniformly random training image of its class. Every group must be of
one class (checked per batch): the label of a mix is that class.

Randomness: the real/generated draw of batch b in epoch e is one uniform seeded by (seed, e,
b), the same on every DDP rank (:func:`batch_is_generated`); the masks are seeded by (seed,
rank, e, b). A resumed run repeats both.

The generator (``method.generator``: a stage-1 run folder or ``.ckpt``, the part
``generator`` its method exports, loaded with :func:`~robustlab.run.checkpoints.load_module`)
is frozen (no gradients, eval mode for good), not optimised, left out of this run's
checkpoints (reloaded from its source on resume), and must have been trained on exactly this
run's training images: the subset hash its checkpoint records
(:func:`~robustlab.run.checkpoints.recorded_subset`) must equal the datamodule's, checked
before training.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.data.seeding import generator_for
from robustlab.data.segments import SEGMENTS_VIEW
from robustlab.errors import CheckpointError, check
from robustlab.methods.erm import ERM
from robustlab.methods.mixing_masks import SEGMENT_KINDS, sample_masks
from robustlab.models.base import is_stand_in
from robustlab.models.mixing_generator import masked_sum
from robustlab.run.checkpoints import (
    checkpoint_path,
    frozen,
    load_checkpoint,
    load_module,
    recorded_subset,
)

MIXES = ("generator", "direct")
#: the generator's tensors in this method's state dict (kept out of its checkpoints)
GENERATOR_PREFIX = "generator."


def batch_is_generated(seed: int, epoch: int, batch: int, mix_prob: float) -> bool:
    """Whether batch ``batch`` of ``epoch`` is generated: ``u < mix_prob`` for one uniform u
    seeded by (seed, "hydramix", epoch, batch) — the same on every rank and on resume."""
    uniform = torch.rand(1, generator=generator_for(seed, "hydramix", epoch, batch))
    return bool(uniform.item() < mix_prob)


def mix_direct(images: Tensor, masks: Tensor) -> Tensor:
    """Pixel-space mixing Σ_i M_i ⊙ x_i: images (B, N, C, H, W), masks (B, N, H, W) summing to
    1 over N -> (B, C, H, W)."""
    return masked_sum(images, masks)


def subset_label(record: Mapping[str, Any]) -> str:
    """A subset record in words, e.g. ``cifar10, 10 per class, subset_seed 3, hash 1a2b…``."""
    per_class = record.get("samples_per_class")
    size = "all images" if per_class is None else f"{per_class} per class"
    return (
        f"{record.get('dataset')}, {size}, val_fraction {record.get('val_fraction')}, "
        f"subset_seed {record.get('subset_seed')}, hash {record.get('hash')}"
    )


def load_generator(source: str) -> tuple[nn.Module, dict[str, Any] | None]:
    """The frozen generator a stage-1 run exported, and the training subset it records."""
    label = f"method.generator={source}"
    try:
        checkpoint = load_checkpoint(checkpoint_path(source))
    except CheckpointError as error:
        raise CheckpointError(f"{label}: {error}") from None
    generator = load_module(checkpoint, "generator", label=label)
    return frozen(generator), recorded_subset(checkpoint)


class HydraMix(ERM):
    """``method=hydramix``: ERM on batches that are real or mixed from same-class groups.

    Args (beyond :class:`ERM`'s):
        generator: the stage-1 run folder or ``.ckpt`` (``mix=generator``; null with
            ``mix=direct``).
        mix: ``generator`` (feature mixing by the frozen generator) or ``direct`` (pixel-space
            Σ_i M_i ⊙ x_i with the same masks).
        mix_prob: probability that a batch is generated, in [0, 1].
        mask: ``{kind: grid|segmentation|soft_segmentation, ...options}`` for
            :func:`~robustlab.methods.mixing_masks.sample_masks` (segmentation kinds need
            ``data.segments``).
        seed: the run's seed (``${seed}``), for the real/generated draws and the masks.
    """

    needs_groups = True

    def __init__(
        self,
        model: nn.Module,
        generator: str | None = None,
        mix: str = "generator",
        mix_prob: float = 0.5,
        mask: Mapping[str, Any] | None = None,
        seed: int = 0,
        **erm: Any,
    ):
        super().__init__(model, **erm)
        check(mix in MIXES, f"method.mix must be one of {list(MIXES)}, got {mix!r}")
        check(
            isinstance(mix_prob, int | float) and 0 <= mix_prob <= 1,
            f"method.mix_prob must be in [0, 1], got {mix_prob!r}",
        )
        check(
            isinstance(mask, Mapping) and isinstance(mask.get("kind"), str),
            f"method.mask must be a mapping with a kind (grid, segmentation, "
            f"soft_segmentation), got {mask!r}",
        )
        check(
            isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
            f"method.seed must be an integer >= 0, got {seed!r}",
        )
        if mix == "generator":
            check(
                generator is not None,
                "method.generator is required with method.mix=generator: set it to a stage-1 "
                "run folder or .ckpt (robustlab-train method=mix_generator ...), or use "
                "method.mix=direct (pixel-space mixing, no generator)",
            )
            if not Path(str(generator)).expanduser().exists():
                raise CheckpointError(
                    f"method.generator={generator}: no such checkpoint file or run folder; train "
                    "the generator first (robustlab-train method=mix_generator ... "
                    "hydra.run.dir=<folder>) and pass that folder"
                )
        else:
            check(
                generator is None,
                f"method.mix=direct mixes pixels without a generator: set "
                f"method.generator=null (got {generator!r})",
            )
        self.mix, self.mix_prob, self.seed = mix, float(mix_prob), int(seed)
        options = dict(mask)
        self.mask_kind = options.pop("kind")
        self.mask_options = options
        self.generator_source = None if generator is None else str(generator)
        self.generator: nn.Module | None = None
        self.generator_subset: dict[str, Any] | None = None
        self.group_size: int | None = None  # N, from the datamodule when fitting
        if self.generator_source is not None and not is_stand_in(model):
            self.generator, self.generator_subset = load_generator(self.generator_source)
            channels = getattr(self.generator, "in_channels", None)
            check(
                channels in (None, model.in_channels),
                f"method.generator={generator} mixes {channels}-channel images but the data has "
                f"{model.in_channels}: train the generator on the same data",
            )

    # ----------------------------------------------------------------- requirements
    @classmethod
    def views_for(cls, method: Mapping[str, Any]) -> tuple[str, ...]:
        """Segmentation masks need each image's segments (``data.segments``)."""
        mask = method.get("mask") or {}
        return (SEGMENTS_VIEW,) if mask.get("kind") in SEGMENT_KINDS else ()

    def setup(self, stage: str) -> None:
        """Before fitting: N from the data, and a generator trained on this run's images."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or datamodule is None:
            return
        self.group_size = int(datamodule.group_size)
        if self.generator is None:
            return
        label = f"method.generator={self.generator_source}"
        ours, theirs = datamodule.subset_record(), self.generator_subset
        check(
            theirs is not None,
            f"{label} records no training subset (trained before subsets were recorded); "
            "re-train the generator on this run's data",
        )
        check(
            theirs["hash"] == ours["hash"],
            f"{label} was trained on other images ({subset_label(theirs)}) than this run "
            f"({subset_label(ours)}); use the generator of this subset (same data, "
            "samples_per_class, val_fraction and subset_seed)",
        )

    # ----------------------------------------------------------------- the batch
    def masks(self, images: Tensor, segments: Tensor | None, generator: torch.Generator) -> Tensor:
        """Masks (B, N, H, W) for groups ``images`` (B, N, C, H, W)."""
        batch, sources, _, height, width = images.shape
        return sample_masks(
            self.mask_kind,
            sources,
            batch=batch,
            size=(height, width),
            generator=generator,
            segments=segments,
            **self.mask_options,
        )

    def mixed(self, images: Tensor, masks: Tensor) -> Tensor:
        """One image per group: G(x_g, M_g), or Σ_i M_{g,i} ⊙ x_{g,i} for ``mix=direct``."""
        if self.generator is None:
            return mix_direct(images, masks)
        return self.generator(images, masks)

    def training_batch(self, batch: tuple, batch_index: int) -> tuple[Tensor, Tensor, bool]:
        """``(x, y, generated)``: what the classifier trains on for one grouped batch, B real or
        B generated images and the groups' classes (see the module docstring)."""
        x, y, *rest = batch
        views = rest[0] if rest else {}
        sources = self.group_size
        check(
            sources is not None and sources >= 2 and len(x) % sources == 0,
            f"HydraMix needs batches of same-class groups (data.group_size >= 2), got "
            f"{len(x)} rows for groups of {sources}",
        )
        images = x.view(-1, sources, *x.shape[1:])
        labels = y.view(-1, sources)
        check(
            bool((labels == labels[:, :1]).all()),
            "HydraMix groups must be of one class each (rows g·N … g·N+N−1 share a label); "
            "train with data.group_size=N",
        )
        epoch = int(self.current_epoch)
        generated = batch_is_generated(self.seed, epoch, batch_index, self.mix_prob)
        if not generated:
            return images[:, 0], labels[:, 0], False
        segments = views.get(SEGMENTS_VIEW)
        if segments is not None:
            segments = segments.view(-1, sources, *segments.shape[1:])
        draws = generator_for(
            self.seed, "hydramix_masks", self.global_rank, epoch, batch_index, device=x.device
        )
        with torch.no_grad():
            mixed = self.mixed(images, self.masks(images, segments, draws))
        return mixed.detach(), labels[:, 0], True

    def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
        """ERM's step on :meth:`training_batch`; logs ``train/generated`` (the epoch's fraction
        of generated batches)."""
        x, y, generated = self.training_batch(batch, batch_idx)
        self.record_training_scalar("generated", float(generated), len(y))
        return super().training_step((x, y), batch_idx)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The generator is stage 1's: its weights stay out of the classifier's checkpoint."""
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(GENERATOR_PREFIX)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume / test: the loaded generator keeps its own (stage-1) weights."""
        super().on_load_checkpoint(checkpoint)
        if self.generator is not None and "state_dict" in checkpoint:
            for key, value in self.generator.state_dict().items():
                checkpoint["state_dict"][GENERATOR_PREFIX + key] = value
