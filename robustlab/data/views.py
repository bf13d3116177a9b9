"""Named extra views of a training batch (``data.views``), made on the training device.

A *view recipe* is a function ``recipe(images, generator) -> images`` over a float batch
(B, C, H, W) in [0, 1] on the training device; it draws every random number from ``generator``
and makes one independent draw per example (row): row i's view depends on image i, on its
row and on the batch size (which numbers of the stream it gets), never on the other images.
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
- ``strong``: an independently drawn crop and flip. Hook for the distillation issue (#11):
  CRLD's strong view (Zhang et al., ACM MM 2024) appends RandAugment (2 ops) and Cutout; add
  those as steps and re-register, e.g.
  ``register_view("strong", compose(weak, rand_augment, cutout), replace=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from robustlab.data.augment import crop_and_flip
from robustlab.errors import ConfigError, closest
from robustlab.registry import resolve

#: ``recipe(images (B, C, H, W) float in [0, 1], generator) -> images`` of the same shape.
ViewRecipe = Callable[[Tensor, torch.Generator], Tensor]

VIEW_RECIPES: dict[str, ViewRecipe] = {}


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


def crop_padding_for(size: Sequence[int]) -> int:
    """Zero padding of the weak crop for (H, W) images: ``min(H, W) // 8``, at least 1."""
    return max(1, min(int(s) for s in size) // 8)


def weak(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop (padding ``min(H, W) // 8``) + random horizontal flip, per example."""
    return crop_and_flip(images, crop_padding_for(images.shape[-2:]), True, generator)


def strong(images: Tensor, generator: torch.Generator) -> Tensor:
    """An independently drawn crop + flip (its own generator); RandAugment + Cutout are
    appended by the distillation issue (see the module docstring)."""
    return weak(images, generator)


register_view("weak", weak)
register_view("strong", strong)


def view_recipes(names: Sequence[str] | None) -> dict[str, ViewRecipe]:
    """``{name: recipe}`` for ``data.views``; unknown or repeated names are a ConfigError."""
    if names is None:
        return {}
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(f"data.views must be a list of view names, got {names!r}")
    recipes: dict[str, ViewRecipe] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"data.views: a view name must be a non-empty string, got {name!r}")
        if name in recipes:
            raise ConfigError(f"data.views names {name!r} twice; list each view once")
        if name not in VIEW_RECIPES and ":" not in name and "." not in name:
            best = closest(name, sorted(VIEW_RECIPES))
            hint = f" (did you mean {best!r}?)" if best else ""
            raise ConfigError(
                f"data.views: unknown view {name!r}{hint}; registered views: "
                f"{', '.join(sorted(VIEW_RECIPES))}"
            )
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
