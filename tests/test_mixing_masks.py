"""Mixing masks of HydraMix / ChimeraMix (issue 13): every kind sums to 1 over the sources at
every location, grids are shifted k×k grids, ChimeraMix's N = 2 segment rule is reproduced
exactly, and the Dirichlet weights of the soft variant have the right moments."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch

from robustlab.errors import ConfigError
from robustlab.methods.mixing_masks import (
    MASK_OPTIONS,
    chimeramix_range,
    gamma_variates,
    sample_masks,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _segments(batch: int, sources: int, size: int = 12, seed: int = 1) -> torch.Tensor:
    """Random label maps with ids 0..n-1 (blocks of 3×3 pixels, 16 blocks)."""
    blocks = torch.randint(0, 6, (batch, sources, size // 3, size // 3), generator=_generator(seed))
    return blocks.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)


KINDS = [
    ("grid", {}),
    ("grid", {"cells": 3}),
    ("segmentation", {}),
    ("segmentation", {"rule": "chimeramix"}),
    ("soft_segmentation", {}),
    ("soft_segmentation", {"concentration": 0.3}),
]


@pytest.mark.parametrize(
    "kind, options, sources",
    [
        (kind, options, sources)
        for kind, options in KINDS
        for sources in (2, 3, 5)
        if options.get("rule") != "chimeramix" or sources == 2  # ChimeraMix mixes two images
    ],
)
def test_every_mask_sums_to_one_at_every_location(kind, options, sources):
    masks = sample_masks(
        kind,
        sources,
        batch=64,
        size=(12, 12),
        generator=_generator(),
        segments=_segments(64, sources),
        **options,
    )
    assert masks.shape == (64, sources, 12, 12) and masks.dtype == torch.float32
    assert bool((masks >= 0).all())
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(64, 12, 12), atol=1e-6, rtol=0)
    if kind != "soft_segmentation":  # hard kinds: each pixel from exactly one source
        assert set(masks.unique().tolist()) == {0.0, 1.0}
    # every source is used (uniform assignments)
    assert bool((masks.sum(dim=(0, 2, 3)) > 0).all())


def test_grid_masks_are_randomly_shifted_grids_of_cells():
    masks = sample_masks("grid", 3, batch=400, size=(16, 16), generator=_generator(), cells=4)
    sources = masks.argmax(dim=1)  # (B, H, W)
    shifts = Counter()
    for row in sources:
        # the map changes only at cell borders: rows (and columns) congruent mod the cell size
        changed_rows = {i for i in range(1, 16) if not torch.equal(row[i], row[i - 1])}
        changed_cols = {j for j in range(1, 16) if not torch.equal(row[:, j], row[:, j - 1])}
        for changed in (changed_rows, changed_cols):
            assert len({i % 4 for i in changed}) <= 1, changed
        shifts.update(i % 4 for i in changed_rows)
    assert set(shifts) == {0, 1, 2, 3}  # every offset occurs (offset 0 changes at 4, 8, 12)
    share = torch.bincount(sources.flatten(), minlength=3).float() / sources.numel()
    torch.testing.assert_close(share, torch.full((3,), 1 / 3), atol=0.02, rtol=0)


def test_chimeramix_rule_moves_a_random_contiguous_range_of_image_b_segments_to_image_a():
    """Image b: 5 vertical stripes with ids 0..4. ChimeraMix draws l from {0..3} and u from
    {l+1..4} (torch.randint's exclusive bounds in its code): the pixels of b's segments
    [l, u) come from a. Image a's own segments play no part."""
    stripes = torch.arange(5).repeat_interleave(2).expand(4, 10)  # (H=4, W=10), ids 0..4
    rows = 3000
    segments = torch.stack([torch.zeros(4, 10, dtype=torch.int64), stripes]).expand(rows, 2, 4, 10)
    masks = sample_masks(
        "segmentation",
        2,
        batch=rows,
        size=(4, 10),
        generator=_generator(3),
        segments=segments,
        rule="chimeramix",
    )
    from_a = masks[:, 0, 0, ::2].bool()  # (rows, 5): is stripe s taken from image a?
    assert torch.equal(masks[:, 0], from_a.repeat_interleave(2, dim=1)[:, None].expand(-1, 4, -1))
    pairs = Counter()
    for row in from_a.tolist():
        ids = [s for s, taken in enumerate(row) if taken]
        assert ids == list(range(ids[0], ids[-1] + 1))  # one contiguous range
        pairs[(ids[0], ids[-1] + 1)] += 1
    expected = {(lo, up) for lo in range(4) for up in range(lo + 1, 5)}
    assert set(pairs) == expected  # the last segment (id 4) never moves
    lower = Counter()
    for (lo, _), count in pairs.items():
        lower[lo] += count
    for lo in range(4):  # l uniform over 4 values, then u uniform over its 4 - l values
        assert lower[lo] == pytest.approx(rows / 4, rel=0.12)
        for up in range(lo + 1, 5):
            assert pairs[(lo, up)] == pytest.approx(lower[lo] / (4 - lo), rel=0.3)
    # image a's segments do not matter: same draws, different a, same masks
    other = segments.clone()
    other[:, 0] = torch.arange(40).view(4, 10)
    again = sample_masks(
        "segmentation",
        2,
        batch=rows,
        size=(4, 10),
        generator=_generator(3),
        segments=other,
        rule="chimeramix",
    )
    assert torch.equal(again, masks)


def test_chimeramix_range_for_one_and_two_segments():
    lower, upper = chimeramix_range(torch.tensor([1, 2] * 50), _generator())
    assert lower.tolist() == [0] * 100 and upper.tolist() == [1] * 100


def test_uniform_segmentation_gives_each_segment_of_one_source_to_one_source():
    segments = _segments(300, 3)
    masks = sample_masks(
        "segmentation", 3, batch=300, size=(12, 12), generator=_generator(), segments=segments
    )
    owner = masks.argmax(dim=1)
    bases = Counter()
    for b in range(300):
        # the mask is constant on every segment of (at least) one source's label map
        fits = [
            i
            for i in range(3)
            if all(
                owner[b][segments[b, i] == s].unique().numel() == 1 for s in segments[b, i].unique()
            )
        ]
        assert fits, b
        bases.update(fits)
    assert all(bases[i] > 60 for i in range(3))  # the base image is drawn among the sources


def test_soft_segmentation_weights_are_dirichlet_per_segment():
    stripes = torch.arange(4).repeat_interleave(2).expand(2, 8)  # 4 segments
    segments = stripes.expand(4000, 3, 2, 8)
    masks = sample_masks(
        "soft_segmentation",
        3,
        batch=4000,
        size=(2, 8),
        generator=_generator(),
        segments=segments,
        concentration=1.0,
    )
    weights = masks[:, :, 0, ::2]  # (B, N, 4 segments): constant within each segment
    assert torch.equal(masks, weights.repeat_interleave(2, dim=2)[:, :, None].expand_as(masks))
    # Dirichlet(1, 1, 1): mean 1/3, variance (1/3)(2/3)/(3 + 1) = 1/18
    torch.testing.assert_close(weights.mean(dim=(0, 2)), torch.full((3,), 1 / 3), atol=0.01, rtol=0)
    assert weights.var().item() == pytest.approx(1 / 18, rel=0.05)


@pytest.mark.parametrize("shape", [0.4, 1.0, 2.5])
def test_gamma_variates_have_the_gamma_mean_and_variance(shape):
    draws = gamma_variates(torch.full((200_000,), shape), _generator(5))
    assert bool((draws > 0).all())
    assert draws.mean().item() == pytest.approx(shape, rel=0.02)
    assert draws.var().item() == pytest.approx(shape, rel=0.04)


def test_options_of_other_kinds_are_ignored_so_a_config_switches_kind_alone():
    every = {"cells": 2, "rule": "uniform", "concentration": 0.5}
    segments = _segments(4, 2)
    for kind in ("grid", "segmentation", "soft_segmentation"):
        alone = {k: v for k, v in every.items() if k == MASK_OPTIONS[kind][0]}
        masks = [
            sample_masks(
                kind, 2, batch=4, size=(12, 12), generator=_generator(), segments=segments, **o
            )
            for o in (every, alone)
        ]
        assert torch.equal(*masks), kind


def test_masks_are_reproducible_from_the_generator_seed():
    a = sample_masks("grid", 3, batch=8, size=(8, 8), generator=_generator(7))
    b = sample_masks("grid", 3, batch=8, size=(8, 8), generator=_generator(7))
    c = sample_masks("grid", 3, batch=8, size=(8, 8), generator=_generator(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kind, sources, options, message",
    [
        ("segmentation", 2, {"segments": None}, "set data.segments"),
        ("soft_segmentation", 2, {"segments": None}, "set data.segments"),
        ("segmentation", 3, {"rule": "chimeramix"}, "rule=chimeramix mixes exactly 2"),
        ("segmentation", 2, {"rule": "random"}, "method.mask.rule must be one of"),
        ("grid", 2, {"size_": 3}, r"method.mask does not take \['size_'\]"),
        ("grid", 2, {"cells": 0}, "cells must be an integer >= 1"),
        ("stripes", 2, {}, "method.mask.kind must be one of"),
        ("grid", 1, {}, "at least 2 sources"),
    ],
)
def test_bad_mask_options_are_config_errors(kind, sources, options, message):
    options = {"segments": _segments(2, sources), **options}
    with pytest.raises(ConfigError, match=message):
        sample_masks(kind, sources, batch=2, size=(12, 12), generator=_generator(), **options)


# ---------------------------------------------- exact masks from the generator (mutation tests)
def test_grid_masks_are_exactly_the_documented_cells_and_offsets():
    """Cell (r, c) of row b covers pixels with ⌊(i + o_y)·k / H⌋ = r, ⌊(j + o_x)·k / W⌋ = c; the
    draws, in order: the (k + 1) × (k + 1) cell sources, o_y, o_x (default k = 4)."""
    from robustlab.methods.mixing_masks import grid_masks

    for cells, size in ((4, (8, 12)), (3, (6, 5)), (1, (3, 4))):
        options = {} if cells == 4 else {"cells": cells}
        masks = grid_masks(3, batch=5, size=size, generator=_generator(11), **options)
        draws = _generator(11)
        sources = torch.randint(0, 3, (5, cells + 1, cells + 1), generator=draws)
        offset_y = torch.randint(0, -(-size[0] // cells), (5, 1), generator=draws)
        offset_x = torch.randint(0, -(-size[1] // cells), (5, 1), generator=draws)
        for b in range(5):
            for i in range(size[0]):
                for j in range(size[1]):
                    r = (i + int(offset_y[b])) * cells // size[0]
                    c = (j + int(offset_x[b])) * cells // size[1]
                    owner = int(sources[b, r, c])
                    assert masks[b, :, i, j].tolist() == [float(s == owner) for s in range(3)]


def test_uniform_segment_masks_are_the_drawn_owner_of_each_base_segment():
    from robustlab.methods.mixing_masks import segment_masks

    segments = _segments(6, 3, size=6, seed=4)
    masks = segment_masks(segments, _generator(2))
    draws = _generator(2)
    base = torch.randint(0, 3, (6,), generator=draws)
    base_maps = segments[torch.arange(6), base]
    owners = torch.randint(0, 3, (6, int(base_maps.max()) + 1), generator=draws)
    expected = owners.gather(1, base_maps.flatten(1)).view(6, 6, 6)
    assert torch.equal(masks.argmax(dim=1), expected)


def test_chimeramix_range_is_floor_of_the_two_uniform_draws():
    counts = torch.tensor([1, 2, 3, 5, 8, 40])
    lower, upper = chimeramix_range(counts, _generator(6))
    u = torch.rand((6, 2), generator=_generator(6))
    for i, n in enumerate(counts.tolist()):
        lo = int(u[i, 0] * max(n - 1, 1))
        assert int(lower[i]) == lo
        assert int(upper[i]) == lo + 1 + int(u[i, 1] * (max(lo + 2, n) - lo - 1))


def test_soft_segment_masks_are_normalised_gammas_of_the_base_segments():
    from robustlab.methods.mixing_masks import soft_segment_masks

    segments = _segments(4, 2, size=6, seed=3)
    for concentration in (None, 0.5):
        options = {} if concentration is None else {"concentration": concentration}
        masks = soft_segment_masks(segments, _generator(9), **options)
        draws = _generator(9)
        base = torch.randint(0, 2, (4,), generator=draws)
        base_maps = segments[torch.arange(4), base]
        count = int(base_maps.max()) + 1
        gammas = gamma_variates(torch.full((4, count, 2), concentration or 1.0), draws)
        weights = gammas / gammas.sum(dim=-1, keepdim=True)
        for b in range(4):
            expected = weights[b][base_maps[b]].permute(2, 0, 1)  # (N, H, W)
            torch.testing.assert_close(masks[b], expected, rtol=0, atol=0)


@pytest.mark.parametrize("concentration", [0, -1.0, True, "1"])
def test_concentration_must_be_a_positive_number(concentration):
    from robustlab.methods.mixing_masks import soft_segment_masks

    message = f"method.mask.concentration must be a number > 0, got {concentration!r}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        soft_segment_masks(_segments(2, 2), _generator(), concentration)


def test_only_the_segment_kinds_need_the_segments_view():
    from robustlab.methods.mixing_masks import mask_views

    assert mask_views({"kind": "segmentation"}) == ("segments",)
    assert mask_views({"kind": "soft_segmentation", "concentration": 1}) == ("segments",)
    assert mask_views({"kind": "grid"}) == ()
    assert mask_views(None) == () and mask_views({}) == ()


def test_gamma_variates_are_marsaglia_tsang_on_the_generators_draws():
    """Element by element from the same draws: d = a' − 1/3, c = 1/√(9d), v = (1 + c x)³, the
    first of 8 candidates with v > 0 and log u < x²/2 + d − d v + d log v gives d v; a < 1 uses
    a' = a + 1 and the factor U^(1/a)."""
    shapes = torch.tensor([0.4, 1.0, 2.5, 7.0])
    got = gamma_variates(shapes, _generator(12))
    draws = _generator(12)
    x = torch.randn((4, 8), generator=draws)
    u = torch.rand((4, 8), generator=draws)
    boost = torch.rand(4, generator=draws)
    for i, a in enumerate(shapes.tolist()):
        d = (a + 1 if a < 1 else a) - 1 / 3
        c = 1 / (9 * d) ** 0.5
        value = None
        for j in range(8):
            v = (1 + c * float(x[i, j])) ** 3
            if v > 0 and math.log(u[i, j]) < float(x[i, j]) ** 2 / 2 + d - d * v + d * math.log(v):
                value = d * v
                break
        assert value is not None
        if a < 1:
            value *= float(boost[i]) ** (1 / a)
        assert got[i].item() == pytest.approx(value, rel=1e-5)


def test_masks_have_one_channel_per_source_even_when_a_source_is_never_drawn():
    one_segment = torch.zeros(1, 5, 3, 3, dtype=torch.int64)
    for seed in range(4):
        generator = _generator(seed)
        masks = sample_masks(
            "segmentation", 5, batch=1, size=(3, 3), generator=generator, segments=one_segment
        )
        assert masks.shape == (1, 5, 3, 3) and masks.sum().item() == 9


def test_sample_masks_passes_the_concentration_to_the_soft_masks():
    from robustlab.methods.mixing_masks import soft_segment_masks

    segments = _segments(3, 2, size=6)
    got = sample_masks(
        "soft_segmentation",
        2,
        batch=3,
        size=(6, 6),
        generator=_generator(1),
        segments=segments,
        concentration=0.3,
    )
    assert torch.equal(got, soft_segment_masks(segments, _generator(1), 0.3))
    assert not torch.equal(got, soft_segment_masks(segments, _generator(1), 1.0))


def test_segment_and_rule_errors_word_for_word():
    def masks(n_sources=2, **options):
        return sample_masks(
            "segmentation", n_sources, batch=2, size=(6, 6), generator=_generator(), **options
        )

    with pytest.raises(ConfigError) as error:
        masks(segments=None)
    assert str(error.value) == (
        "segmentation masks need each image's segments: set data.segments={} "
        "(Felzenszwalb options, robustlab.data.segments)"
    )
    with pytest.raises(ValueError) as error:
        masks(segments=torch.zeros(2, 2, 6, 5, dtype=torch.int64))
    assert str(error.value) == (
        "segments must be integer label maps of shape (2, 2, 6, 6), got torch.int64 (2, 2, 6, 5)"
    )
    with pytest.raises(ValueError, match=r"got torch.float32 \(2, 2, 6, 6\)$"):
        masks(segments=torch.zeros(2, 2, 6, 6))
    with pytest.raises(ConfigError) as error:
        masks(3, segments=_segments(2, 3, size=6), rule="chimeramix")
    assert str(error.value) == (
        "method.mask.rule=chimeramix mixes exactly 2 images; got 3 "
        "(data.group_size=2, or rule=uniform)"
    )
