"""Named extra views of a training batch (``data.views``), made on the training device.

A *view recipe* is a function ``recipe(images, generator) -> images`` over a float batch
(B, C, H, W) in [0, 1] on the training device; it draws every random number from ``generator``
and makes one independent draw per example (row). The built-in recipes draw all their numbers
at once as uniforms (:func:`row_uniforms`), so row i's view depends only on image i, on i and on
the generator's seed: never on the other images, nor on the batch size (a batch of 8 gives its
first 4 rows the views a batch of 4 gives them).
The data module calls each requested recipe with its own generator,
seeded by (data seed, "view", name, rank, epoch, step) (:meth:`ImageDataModule.make_views`):
views are reproducible from the seed, independent of each other and of the crop/flip of ``x``.
They start from the images the training loader delivers: for image files, the decoded image
after the dataset's own steps (e.g. ``data=imagenet``'s random-resized training crop, which
``x`` and the views then share); the crop/flip of ``x`` then runs on the device as well.

Recipes are registered by name in :data:`VIEW_RECIPES` (:func:`register_view`); ``data.views``
also accepts an import path ``package.module:function`` to a recipe of one's own.

- ``weak``: random crop with zero padding ``size // 8`` (4 at 32 px, 8 at 64 px) and a random
  horizontal flip, the CIFAR "weak view" (He et al., CVPR 2016, Sec. 4.2).
- ``strong``: CRLD's strong view (Zhang et al., ACM MM 2024): an independently drawn crop and
  flip as in ``weak``, then RandAugment (2 ops drawn with replacement from 14, each magnitude
  uniform in its range) and Cutout (side ``U(0, 0.5) * width``), :mod:`robustlab.data.randaugment`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from robustlab.data.augment import crop_at
from robustlab.data.randaugment import NUM_OPS, rand_augment, random_cutout
from robustlab.errors import ConfigError
from robustlab.registry import resolve

#: ``recipe(images (B, C, H, W) float in [0, 1], generator) -> images`` of the same shape.
ViewRecipe = Callable[[Tensor, torch.Generator], Tensor]

VIEW_RECIPES: dict[str, ViewRecipe] = {}

#: Rows per draw of :func:`row_uniforms`: a fixed shape, so every device's generator lays the
#: numbers out the same way whatever the batch size.
ROWS_PER_DRAW = 256


def register_view(name: str, recipe: ViewRecipe, *, replace: bool = False) -> ViewRecipe:
    """Make ``recipe`` available as ``data.views=[name]``; ``replace`` overrides an entry."""
    if name in VIEW_RECIPES and not replace:
        raise ValueError(f"view recipe {name!r} is already registered; pass replace=True")
    VIEW_RECIPES[name] = recipe
    return recipe


def compose(*steps: ViewRecipe) -> ViewRecipe:
    """The recipe applying ``steps`` in order, all drawing from the one view generator."""

    def recipe(images: Tensor, generator: torch.Generator) -> Tensor:
        for step in steps:
            images = step(images, generator)
        return images

    return recipe


def row_uniforms(batch: int, count: int, generator: torch.Generator) -> Tensor:
    """U[0, 1) numbers (batch, count) on the generator's device, drawn in blocks of
    :data:`ROWS_PER_DRAW` rows of fixed shape, so row i is the same for every ``batch > i``."""
    blocks = [
        torch.rand((ROWS_PER_DRAW, count), generator=generator, device=generator.device)
        for _ in range(max(1, math.ceil(batch / ROWS_PER_DRAW)))
    ]
    return torch.cat(blocks)[:batch]


def crop_padding_for(size: Sequence[int]) -> int:
    """Zero padding of the weak crop for (H, W) images: ``min(H, W) // 8``, at least 1."""
    return max(1, min(int(s) for s in size) // 8)


def crop_and_flip_from(images: Tensor, uniforms: Tensor) -> Tensor:
    """Crop (padding :func:`crop_padding_for`) at offsets ``floor(u[:, :2] (2p + 1))`` and flip
    the rows with ``u[:, 2] < 1/2``, from uniforms (B, 3)."""
    padding = crop_padding_for(images.shape[-2:])
    u = uniforms.to(images.device)
    offsets = (u[:, :2] * (2 * padding + 1)).floor().to(torch.int64).clamp_(max=2 * padding)
    cropped = crop_at(images, padding, offsets)
    return torch.where((u[:, 2] < 0.5).view(-1, 1, 1, 1), cropped.flip(3), cropped)


def weak(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop (padding ``min(H, W) // 8``) + random horizontal flip, per example."""
    return crop_and_flip_from(images, row_uniforms(len(images), 3, generator))


#: Uniforms per row of the strong view: crop/flip, RandAugment's (op, magnitude) pairs, Cutout.
STRONG_UNIFORMS = 3 + 2 * NUM_OPS + 3


def strong(images: Tensor, generator: torch.Generator) -> Tensor:
    """CRLD's strong view: crop + flip, RandAugment (:data:`NUM_OPS` ops), Cutout, per example
    (:mod:`robustlab.data.randaugment`)."""
    u = row_uniforms(len(images), STRONG_UNIFORMS, generator)
    images = crop_and_flip_from(images, u[:, :3])
    images = rand_augment(images, u[:, 3 : 3 + 2 * NUM_OPS])
    return random_cutout(images, u[:, 3 + 2 * NUM_OPS :])


register_view("weak", weak)
register_view("strong", strong)


def view_recipes(names: Sequence[str] | None) -> dict[str, ViewRecipe]:
    """``{name: recipe}`` for ``data.views`` (registered names or import paths, looked up by
    :func:`robustlab.registry.resolve`); unknown or repeated names are a ConfigError."""
    if names is None:
        return {}
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(f"data.views must be a list of view names, got {names!r}")
    recipes: dict[str, ViewRecipe] = {}
    for name in names:
        if name in recipes:
            raise ConfigError(f"data.views names {name!r} twice; list each view once")
        recipes[name] = resolve(VIEW_RECIPES, name, group="data.views")
    return recipes


def check_view(name: str, view: Tensor, images: Tensor) -> Tensor:
    """A recipe's output must be a float batch shaped like its input."""
    if view.shape != images.shape or not view.is_floating_point():
        raise ValueError(
            f"view recipe {name!r} returned {view.dtype} {tuple(view.shape)}; expected a float "
            f"batch of shape {tuple(images.shape)}"
        )
    return view


def make_views(
    images: Tensor, recipes: Mapping[str, ViewRecipe], generators: Mapping[str, torch.Generator]
) -> dict[str, Tensor]:
    """``{name: recipe(images, generators[name])}`` for every recipe."""
    return {
        name: check_view(name, recipe(images, generators[name]), images)
        for name, recipe in recipes.items()
    }
