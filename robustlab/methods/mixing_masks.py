"""Mixing masks for HydraMix / ChimeraMix: which source image each location of a mix comes from.

A mask batch ``M`` has shape (B, N, H, W): for row b, ``M[b, i]`` is the weight of source image
i at every pixel, with ``M[b, i] >= 0`` and ``Σ_i M[b, i] = 1`` everywhere, so a mix
``Σ_i M_i ⊙ f_i`` (of features, Reinders et al., IJCAI 2022, Sec. 3; or of pixels) is a convex
combination at each location. Every draw comes from the given ``torch.Generator`` on the
masks' device, batched over rows (no Python loop over samples).

Kinds (:func:`sample_masks`):

- ``grid`` (ChimeraMix's grid masks): a ``cells × cells`` grid whose cells are each taken
  from one of the N sources, uniformly; the grid is shifted by a random offset of less than one
  cell along each axis, so ``cells + 1`` cells per axis may be visible at the borders. Drawn
  per row at the images' resolution (ChimeraMix draws it on the feature grid with one shift per
  batch; the generator area-pools these masks to its feature grid).
- ``segmentation``: the Felzenszwalb segments of each image (``segments`` (B, N, H, W) label
  maps, ``data.segments``) decide the regions.

  * ``rule="uniform"`` (default, any N): one source per row is drawn uniformly as the *base*;
    each of the base image's segments is given to one of the N sources uniformly and
    independently. ASSUMPTION: HydraMix (Reinders et al., 2025) mixes N images under
    segmentation masks but its assignment rule is not published; this is ours.
  * ``rule="chimeramix"`` (N = 2 only): ChimeraMix's released rule. With ``n`` the segment
    count of image b (the second source; ``max id + 1``), draw ``l`` uniform in
    ``{0, …, max(n − 1, 1) − 1}`` and ``u`` uniform in ``{l + 1, …, max(l + 2, n) − 1}``; the
    pixels whose segment id *in image b* lies in ``[l, u)`` come from image a (the first
    source), the rest from b. (As in the released code, the last id ``n − 1`` never moves for
    n ≥ 2, and image a's own segments are not used.)

- ``soft_segmentation``: as ``segmentation``'s uniform rule, but each segment of the base image
  gets Dirichlet(``concentration`` · 1_N) weights over the N sources instead of one source
  (concentration 1: uniform on the simplex). Gamma variates by Marsaglia & Tsang (ACM TOMS
  2000), seeded by the generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.data.segments import SEGMENTS_VIEW
from robustlab.errors import ConfigError, check

SEGMENT_KINDS = ("segmentation", "soft_segmentation")
RULES = ("uniform", "chimeramix")
#: The options each mask kind takes (:func:`sample_masks`).
MASK_OPTIONS = {
    "grid": ("cells",),
    "segmentation": ("rule",),
    "soft_segmentation": ("concentration",),
}
#: Candidate draws per gamma variate (Marsaglia–Tsang accepts each with probability > 0.95).
GAMMA_ATTEMPTS = 8


def _one_hot_masks(sources: Tensor, n_sources: int) -> Tensor:
    """Source indices (B, H, W) -> one-hot masks (B, N, H, W) float."""
    return F.one_hot(sources, n_sources).permute(0, 3, 1, 2).float()


def grid_masks(
    n_sources: int,
    *,
    batch: int,
    size: tuple[int, int],
    generator: torch.Generator,
    cells: int = 4,
) -> Tensor:
    """A randomly shifted ``cells × cells`` grid per row, each cell from one source.

    Cell ``(r, c)`` covers pixel rows ``i`` with ``⌊(i + o_y) · cells / H⌋ = r`` (same for
    columns with ``o_x``), offsets ``o`` uniform in ``{0, …, ⌈H / cells⌉ − 1}``; the cell sources
    are uniform in ``{0, …, N − 1}``.
    """
    check(
        isinstance(cells, int) and not isinstance(cells, bool) and cells >= 1,
        f"method.mask.cells must be an integer >= 1, got {cells!r}",
    )
    height, width = size
    device = generator.device
    sources = torch.randint(
        0, n_sources, (batch, cells + 1, cells + 1), generator=generator, device=device
    )
    offset_y = torch.randint(0, -(-height // cells), (batch, 1), generator=generator, device=device)
    offset_x = torch.randint(0, -(-width // cells), (batch, 1), generator=generator, device=device)
    rows = ((torch.arange(height, device=device) + offset_y) * cells) // height  # (B, H)
    cols = ((torch.arange(width, device=device) + offset_x) * cells) // width  # (B, W)
    flat = rows[:, :, None] * (cells + 1) + cols[:, None, :]  # (B, H, W) cell index
    per_pixel = sources.flatten(1).gather(1, flat.flatten(1)).view(batch, height, width)
    return _one_hot_masks(per_pixel, n_sources)


def _check_segments(segments: Tensor | None, n_sources: int, batch: int, size: tuple) -> Tensor:
    if segments is None:
        raise ConfigError(
            "segmentation masks need each image's segments: set data.segments={} "
            "(Felzenszwalb options, robustlab.data.segments)"
        )
    expected = (batch, n_sources, *size)
    if tuple(segments.shape) != expected or segments.is_floating_point():
        raise ValueError(
            f"segments must be integer label maps of shape {expected}, got "
            f"{segments.dtype} {tuple(segments.shape)}"
        )
    return segments.long()


def _base_segments(segments: Tensor, generator: torch.Generator) -> Tensor:
    """Each row's base label map (B, H, W): the segments of one source drawn uniformly."""
    batch, n_sources = segments.shape[:2]
    base = torch.randint(0, n_sources, (batch,), generator=generator, device=generator.device)
    return segments[torch.arange(batch, device=segments.device), base.to(segments.device)]


def segment_masks(segments: Tensor, generator: torch.Generator) -> Tensor:
    """``segmentation`` with ``rule="uniform"``: every segment of each row's base image goes
    to one of the N sources uniformly (see the module docstring; an assumption for HydraMix)."""
    batch, n_sources = segments.shape[:2]
    base = _base_segments(segments, generator)
    count = int(base.max()) + 1
    owners = torch.randint(
        0, n_sources, (batch, count), generator=generator, device=generator.device
    )
    per_pixel = owners.to(base.device).gather(1, base.flatten(1)).view_as(base)
    return _one_hot_masks(per_pixel, n_sources)


def chimeramix_range(num_segments: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """ChimeraMix's segment range per row: ``l`` uniform in ``{0, …, max(n − 1, 1) − 1}``,
    ``u`` uniform in ``{l + 1, …, max(l + 2, n) − 1}``, for segment counts ``n`` (B,)."""
    device = generator.device
    n = num_segments.to(device)
    uniforms = torch.rand((len(n), 2), generator=generator, device=device)
    lower_choices = torch.clamp(n - 1, min=1)
    lower = (uniforms[:, 0] * lower_choices).floor().long().clamp(max=lower_choices - 1)
    upper_choices = torch.maximum(lower + 2, n) - (lower + 1)
    upper = lower + 1 + (uniforms[:, 1] * upper_choices).floor().long().clamp(max=upper_choices - 1)
    return lower, upper


def chimeramix_masks(segments: Tensor, generator: torch.Generator) -> Tensor:
    """``segmentation`` with ``rule="chimeramix"`` (N = 2): the pixels whose segment id in image
    b lies in ``[l, u)`` (:func:`chimeramix_range`) come from image a, the rest from b."""
    second = segments[:, 1]
    counts = second.flatten(1).amax(dim=1) + 1
    lower, upper = chimeramix_range(counts, generator)
    lower, upper = lower.to(second.device), upper.to(second.device)
    from_first = (second >= lower.view(-1, 1, 1)) & (second < upper.view(-1, 1, 1))
    return torch.stack([from_first, ~from_first], dim=1).float()


def gamma_variates(shape: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma(shape, 1) variates, one per element of ``shape`` (all > 0), seeded by ``generator``.

    Marsaglia & Tsang (2000): for a ≥ 1, with d = a − 1/3, c = 1/√(9d), x ~ N(0, 1),
    v = (1 + cx)³, accept d·v when v > 0 and log U < x²/2 + d − dv + d log v (first of
    :data:`GAMMA_ATTEMPTS` candidates; d if none is accepted, probability < 1e-10); for a < 1,
    Gamma(a) = Gamma(a + 1) · U^(1/a).
    """
    device = generator.device
    a = shape.to(device=device, dtype=torch.float32)
    boosted = torch.where(a < 1, a + 1, a)
    d = (boosted - 1 / 3).unsqueeze(-1)
    c = 1 / torch.sqrt(9 * d)
    x = torch.randn((*a.shape, GAMMA_ATTEMPTS), generator=generator, device=device)
    u = torch.rand((*a.shape, GAMMA_ATTEMPTS), generator=generator, device=device)
    v = (1 + c * x) ** 3
    positive = v > 0
    log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
    accept = positive & (torch.log(u) < x**2 / 2 + d - d * v + d * log_v)
    first = torch.argmax(accept.int(), dim=-1, keepdim=True)
    candidate = (d * v).gather(-1, first).squeeze(-1)
    value = torch.where(accept.any(-1), candidate, d.squeeze(-1))
    boost = torch.rand(a.shape, generator=generator, device=device)
    return torch.where(a < 1, value * boost ** (1 / a), value).clamp_min(1e-30)


def soft_segment_masks(
    segments: Tensor, generator: torch.Generator, concentration: float = 1.0
) -> Tensor:
    """``soft_segmentation``: each segment of each row's base image gets Dirichlet(α · 1_N)
    weights over the N sources (α = ``concentration``); the weights are normalised gammas."""
    check(
        isinstance(concentration, int | float)
        and not isinstance(concentration, bool)
        and concentration > 0,
        f"method.mask.concentration must be a number > 0, got {concentration!r}",
    )
    batch, n_sources = segments.shape[:2]
    base = _base_segments(segments, generator)
    count = int(base.max()) + 1
    alpha = torch.full((batch, count, n_sources), float(concentration))
    gammas = gamma_variates(alpha, generator).to(base.device)
    weights = gammas / gammas.sum(dim=-1, keepdim=True)  # (B, S, N)
    per_pixel = weights.gather(1, base.flatten(1).unsqueeze(-1).expand(-1, -1, n_sources))
    return per_pixel.view(batch, *base.shape[1:], n_sources).permute(0, 3, 1, 2).contiguous()


def mask_views(mask: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The training views a ``method.mask`` config needs: ``("segments",)`` for the segment
    kinds (``data.segments``), else none (for ``ERM.views_for``)."""
    return (SEGMENTS_VIEW,) if (mask or {}).get("kind") in SEGMENT_KINDS else ()


def check_mask_options(
    kind: str, options: Mapping[str, Any], n_sources: int | None = None
) -> dict[str, Any]:
    """The options of ``kind`` among ``options`` (a ConfigError naming the key for an unknown
    kind or option, a bad rule, or ChimeraMix's rule with N != 2); ``n_sources`` None: not
    known yet (checked again when masks are drawn)."""
    check(
        n_sources is None or (isinstance(n_sources, int) and n_sources >= 2),
        f"mixing needs at least 2 sources (data.group_size >= 2), got {n_sources!r}",
    )
    check(
        kind in MASK_OPTIONS,
        f"method.mask.kind must be one of {list(MASK_OPTIONS)}, got {kind!r}",
    )
    known = {name for names in MASK_OPTIONS.values() for name in names}
    extra = sorted(set(options) - known)
    check(not extra, f"method.mask does not take {extra}; mask options are {sorted(known)}")
    mine = {name: value for name, value in options.items() if name in MASK_OPTIONS[kind]}
    if kind == "segmentation":
        rule = mine.get("rule", "uniform")
        check(rule in RULES, f"method.mask.rule must be one of {list(RULES)}, got {rule!r}")
        check(
            rule != "chimeramix" or n_sources in (None, 2),
            f"method.mask.rule=chimeramix mixes exactly 2 images; got {n_sources} "
            "(data.group_size=2, or rule=uniform)",
        )
    return mine


def sample_masks(
    kind: str,
    n_sources: int,
    *,
    batch: int,
    size: tuple[int, int],
    generator: torch.Generator,
    segments: Tensor | None = None,
    **options: Any,
) -> Tensor:
    """Masks (B, N, H, W) of kind ``grid`` (``cells``), ``segmentation`` (``rule``: uniform |
    chimeramix) or ``soft_segmentation`` (``concentration``); each sums to 1 over N at every
    location. ``segments``: (B, N, H, W) int label maps of the sources (segment kinds only).
    ``options`` may hold every kind's options (:data:`MASK_OPTIONS`, so a config lists them all
    and switches ``kind`` alone); those of other kinds are ignored, unknown ones are an error.
    """
    mine = check_mask_options(kind, options, n_sources)
    size = (int(size[0]), int(size[1]))
    if kind == "grid":
        return grid_masks(n_sources, batch=batch, size=size, generator=generator, **mine)
    labels = _check_segments(segments, n_sources, batch, size)
    if kind == "soft_segmentation":
        return soft_segment_masks(labels, generator, **mine)
    rule = mine.get("rule", "uniform")
    return (chimeramix_masks if rule == "chimeramix" else segment_masks)(labels, generator)
