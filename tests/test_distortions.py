"""Stability distortions (Zheng et al. 2016) and the shared image ops they are built on."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torch.nn import functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from robustlab.errors import ConfigError
from robustlab.perturbations import distortions, imageops
from robustlab.perturbations.distortions import (
    DEFAULT_LEVELS,
    DISTORTIONS,
    distort,
    random_distortion,
)
from robustlab.randomness import ImageStreams


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth_images(b: int = 6, c: int = 3, h: int = 32, w: int = 32, seed: int = 0):
    """Natural-ish test images: smooth colour fields plus one sharp-edged square each."""
    g = _gen(seed)
    low = torch.rand(b, c, 5, 5, generator=g)
    x = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    texture = 0.1 * torch.rand(b, c, h // 4, w // 4, generator=g)
    x = 0.85 * x + F.interpolate(texture, size=(h, w), mode="nearest")
    x[:, :, h // 4 : h // 2, w // 3 : 2 * w // 3] = torch.rand(b, c, 1, 1, generator=g)
    return x.clamp(0, 1)


def _ramp(b: int, h: int, w: int) -> torch.Tensor:
    """f(y, x) = (x + 2y) / (3h): affine in the pixel index, so bilinear resampling is exact."""
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    return ((xs + 2 * ys) / (3 * h)).expand(b, 3, h, w).clone()


# ------------------------------------------------------------------------------------------
# imageops
# ------------------------------------------------------------------------------------------


def test_translate_integer_is_exact_per_sample_with_fill():
    x = torch.rand(2, 3, 30, 28, generator=_gen(1))
    out = imageops.translate(x, torch.tensor([2, -3]), torch.tensor([-1, 4]), fill=0.25)
    # sample 0: right 2, up 1
    assert torch.equal(out[0, :, :29, 2:], x[0, :, 1:, :26])
    assert torch.all(out[0, :, :, :2] == 0.25) and torch.all(out[0, :, 29:, :] == 0.25)
    # sample 1: left 3, down 4
    assert torch.equal(out[1, :, 4:, :25], x[1, :, :26, 3:])
    assert torch.all(out[1, :, :4, :] == 0.25) and torch.all(out[1, :, :, 25:] == 0.25)


def test_translate_subpixel_is_bilinear():
    x = _ramp(1, 32, 32)
    out = imageops.translate(x, 0.5, 0.0)
    # content moves right by half a pixel: out(y, x) = f(y, x - 0.5) away from the left border
    expected = x - 0.5 / (3 * 32)
    torch.testing.assert_close(out[..., 1:], expected[..., 1:], atol=1e-5, rtol=0)
    # left column blends the fill (0) and the first pixel half-and-half
    torch.testing.assert_close(out[..., 0], 0.5 * x[..., 0], atol=1e-5, rtol=0)


def test_affine_rotation_is_counter_clockwise_and_matches_rot90():
    x = torch.rand(2, 3, 32, 32, generator=_gen(2))
    torch.testing.assert_close(
        imageops.affine(x, angle_deg=90.0), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0
    )
    # per-sample angles: 0 and 180 degrees
    out = imageops.affine(x, angle_deg=torch.tensor([0.0, 180.0]))
    torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], torch.flip(x[1], dims=(-2, -1)), atol=1e-5, rtol=0)


def test_affine_scale_and_fill():
    x = _ramp(1, 32, 32)
    out = imageops.affine(x, scale=2.0)
    # zoom ×2 about the centre c = 15.5: out(x) = f(c + (x - c) / 2)
    c = 15.5
    grid = torch.arange(32, dtype=torch.float32)
    src = c + (grid - c) / 2
    expected = (src[None, :] + 2 * src[:, None]) / 96
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=0)
    # zoom out ×0.5: the outer ring samples outside the image and takes the fill value
    out = imageops.affine(torch.ones(1, 1, 32, 32) * 0.2, scale=0.5, fill=0.9)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.9, abs=1e-6)
    assert out[0, 0, 16, 16].item() == pytest.approx(0.2, abs=1e-6)


def test_resize_area_downscale_exact_and_nearest_upscale():
    low = torch.rand(2, 3, 16, 14, generator=_gen(3))
    blocks = low.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    torch.testing.assert_close(imageops.resize(blocks, (16, 14), "area"), low, atol=1e-6, rtol=0)
    assert torch.equal(imageops.resize(low, (32, 28), "nearest"), blocks)
    with pytest.raises(ValueError, match="area, bilinear, bicubic, nearest"):
        imageops.resize(low, 8, "lanczos")


def test_imageops_gaussian_noise_per_sample_sigma():
    x = torch.full((2, 3, 64, 64), 0.5)
    out = imageops.gaussian_noise(x, torch.tensor([0.0, 0.05]), _gen(4))
    assert torch.equal(out[0], x[0])
    assert (out[1] - 0.5).std().item() == pytest.approx(0.05, rel=0.05)


# ------------------------------------------------------------------------------------------
# distortions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_equals_torchvision_roundtrip(channels):
    u8 = (_smooth_images(3, channels, 32, 40) * 255).round().to(torch.uint8)
    out = distortions.jpeg(imageops.from_uint8(u8), 50)
    expected = torch.stack([decode_jpeg(encode_jpeg(img, quality=50)) for img in u8])
    assert out.shape == u8.shape
    assert torch.equal(imageops.to_uint8(out), expected)


def test_thumbnail_scale_one_is_identity():
    x = _smooth_images()
    assert torch.equal(distortions.thumbnail(x, 1.0), x)


def test_thumbnail_half_on_block_image():
    low = torch.rand(2, 3, 16, 16, generator=_gen(5))
    blocks = low.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    # area down, nearest up: 2×2-constant blocks survive exactly
    torch.testing.assert_close(
        distortions.thumbnail(blocks, 0.5, up="nearest"), blocks, atol=1e-6, rtol=0
    )
    # default bilinear up, on an image constant along rows with column blocks [v0 v0 v1 v1 ...]:
    # out[2i] = 0.75 v[i] + 0.25 v[i-1], out[2i+1] = 0.75 v[i] + 0.25 v[i+1] (edges clamped)
    v = torch.rand(16, generator=_gen(6))
    img = v.repeat_interleave(2).expand(1, 1, 32, 32).clone()
    prev = torch.cat([v[:1], v[:-1]])
    nxt = torch.cat([v[1:], v[-1:]])
    expected = torch.stack([0.75 * v + 0.25 * prev, 0.75 * v + 0.25 * nxt], dim=1).reshape(32)
    out = distortions.thumbnail(img, 0.5)
    torch.testing.assert_close(out[0, 0], expected.expand(32, 32), atol=1e-6, rtol=0)


def test_crop_offset_zero_is_identity():
    x = _smooth_images()
    assert torch.equal(distortions.crop(x, 0, _gen(0)), x)
    assert torch.equal(distortions.crop_pad(x, 0, _gen(0)), x)


def test_crop_resizes_the_corner_window_back():
    b, h, w, k = 16, 32, 32, 3
    x = _ramp(b, h, w)
    out = distortions.crop(x, k, _gen(7))
    # bilinear (half-pixel centres) of an affine image is exact: sample at the window coords
    r = torch.arange(h, dtype=torch.float32)
    src = ((r + 0.5) * (h - k) / h - 0.5).clamp(0, h - k - 1)
    corners = []
    for i in range(b):
        matches = []
        for top in (0, k):
            for left in (0, k):
                expected = ((left + src)[None, :] + 2 * (top + src)[:, None]) / (3 * h)
                if torch.allclose(out[i, 0], expected, atol=1e-5):
                    matches.append((top, left))
        assert len(matches) == 1, f"sample {i} matches {matches}"
        corners.append(matches[0])
    assert len(set(corners)) >= 3  # the corner really is random per sample

    # same corners, natural image: agrees with torchvision's independent resized_crop
    y = _smooth_images(b, 3, h, w, seed=8)
    out = distortions.crop(y, k, _gen(7))
    for i, (top, left) in enumerate(corners):
        ref = TF.resized_crop(y[i], top, left, h - k, w - k, [h, w], antialias=True)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_crop_pad_shifts_diagonally_with_zero_border():
    b, k = 8, 2
    x = _smooth_images(b) * 0.9 + 0.05  # no exact zeros inside
    out = distortions.crop_pad(x, k, _gen(9))
    seen = set()
    for i in range(b):
        hits = [
            (dx, dy)
            for dx in (-k, k)
            for dy in (-k, k)
            if torch.equal(out[i], imageops.translate(x[i : i + 1], dx, dy)[0])
        ]
        assert len(hits) == 1
        seen.add(hits[0])
        assert (out[i] == 0).float().mean().item() == pytest.approx(1 - (30 / 32) ** 2)
    assert len(seen) >= 2


def test_gaussian_noise_std_matches_sigma():
    x = torch.full((4, 3, 32, 32), 0.5)
    for sigma in (0.02, 0.08):
        noise = distortions.gaussian_noise(x, sigma, _gen(10)) - x
        assert noise.std().item() == pytest.approx(sigma, rel=0.03)
        assert abs(noise.mean().item()) < 0.1 * sigma
    assert torch.equal(distortions.gaussian_noise(x, 0.0, _gen(10)), x)


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_distance_from_clean_grows_with_level(name):
    x = _smooth_images(8, seed=11)
    levels = DEFAULT_LEVELS[name]  # listed mildest first (jpeg: quality falling)
    dist = [(distort(x, name, lv, _gen(12)) - x).abs().mean().item() for lv in levels]
    assert dist[0] > 0
    assert all(a < b for a, b in zip(dist, dist[1:], strict=False)), dist


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_every_distortion_handles_gray_non_square(name):
    x = _smooth_images(2, 1, 28, 36, seed=13)
    out = distort(x, name, DEFAULT_LEVELS[name][1], _gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min().item() >= 0 and out.max().item() <= 1
    assert not torch.equal(out, x)


@pytest.mark.parametrize("name", ["crop", "crop_pad", "gaussian_noise"])
def test_random_distortions_are_seeded(name):
    x = _smooth_images(8)
    a = distort(x, name, 2 if "crop" in name else 0.04, _gen(14))
    b = distort(x, name, 2 if "crop" in name else 0.04, _gen(14))
    c = distort(x, name, 2 if "crop" in name else 0.04, _gen(15))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_distortion_per_sample_choices():
    x = _smooth_images(24, seed=16)
    levels = {"jpeg": [70, 30], "thumbnail": [0.5]}
    out, choices = random_distortion(
        x, ["jpeg", "thumbnail"], levels, _gen(17), return_choices=True
    )
    assert set(choices) == {("jpeg", 70), ("jpeg", 30), ("thumbnail", 0.5)}
    for i, (name, level) in enumerate(choices):
        assert torch.equal(out[i : i + 1], distort(x[i : i + 1], name, level))
    # seeded, including the random distortions inside
    a = random_distortion(x, generator=_gen(18))
    assert torch.equal(a, random_distortion(x, generator=_gen(18)))
    assert not torch.equal(a, random_distortion(x, generator=_gen(19)))


@pytest.mark.parametrize(
    ("name", "level", "message"),
    [
        ("jpeg", 0, r"integer in 1\.\.100"),
        ("jpeg", 101, r"integer in 1\.\.100"),
        ("jpeg", 50.5, r"integer in 1\.\.100"),
        ("thumbnail", 0.0, r"in \(0, 1\]"),
        ("thumbnail", 1.5, r"in \(0, 1\]"),
        ("crop", 16, r"0 <= offset < min\(H, W\)/2 = 16 for 32x32"),
        ("crop", -1, r"0 <= offset < min\(H, W\)/2 = 16"),
        ("crop_pad", 1.5, r"crop_pad offset must be an integer"),
        ("gaussian_noise", -0.1, r"sigma must be >= 0"),
    ],
)
def test_invalid_levels_name_the_valid_range(name, level, message):
    with pytest.raises(ConfigError, match=message):
        distort(_smooth_images(2), name, level)


def test_unknown_distortion_lists_valid_names():
    with pytest.raises(ConfigError, match="valid choices: crop, crop_pad, gaussian_noise, jpeg"):
        distort(_smooth_images(2), "blur", 1)
    with pytest.raises(ConfigError, match=r"unknown distortion 'jepg' \(did you mean 'jpeg'\?\)"):
        distort(_smooth_images(2), "jepg", 50)
    # random_distortion validates every level up front, even ones not drawn
    with pytest.raises(ConfigError, match=r"1\.\.100"):
        random_distortion(_smooth_images(2), ["jpeg"], {"jpeg": [50, 0]}, _gen(0))
    with pytest.raises(ConfigError, match="no levels given for 'crop'"):
        random_distortion(_smooth_images(2), ["crop"], {"jpeg": [50]}, _gen(0))


# ------------------------------------------------------------------------------------------
# per-image random streams (evaluation)
# ------------------------------------------------------------------------------------------


def _streams(indices, *key) -> ImageStreams:
    return ImageStreams.keyed((0, "test", *key), torch.as_tensor(list(indices)), "cpu")


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_per_image_streams_make_each_image_independent_of_its_batch(name):
    x = _smooth_images(6, seed=20)
    level = DEFAULT_LEVELS[name][1]
    whole = distort(x, name, level, _streams(range(6)))
    order = [4, 1, 5]
    assert torch.equal(distort(x[order], name, level, _streams(order)), whole[order])


def test_random_distortion_with_streams_keeps_each_images_choice_and_draws():
    x = _smooth_images(12, seed=21)
    out, choices = random_distortion(x, generator=_streams(range(12)), return_choices=True)
    part, part_choices = random_distortion(
        x[3:8], generator=_streams(range(3, 8)), return_choices=True
    )
    assert part_choices == choices[3:8]
    assert torch.equal(part, out[3:8])
    assert len(set(choices)) >= 4  # choices really vary per image


def test_crop_corners_are_uniform_over_the_four_corners():
    b, k = 1000, 2
    x = _ramp(b, 16, 16)
    out = distortions.crop(x, k, _streams(range(b)))
    # each output is the bilinear resize of exactly one corner window of the ramp
    seen = []
    r = torch.arange(16, dtype=torch.float32)
    src = ((r + 0.5) * (16 - k) / 16 - 0.5).clamp(0, 16 - k - 1)
    for i in range(b):
        for top in (0, k):
            for left in (0, k):
                expected = ((left + src)[None, :] + 2 * (top + src)[:, None]) / (3 * 16)
                if torch.allclose(out[i, 0], expected, atol=1e-5):
                    seen.append((top, left))
    assert len(seen) == b
    counts = torch.tensor([seen.count(c) for c in ((0, 0), (0, k), (k, 0), (k, k))]) / b
    assert torch.all((counts - 0.25).abs() < 0.05), counts  # 3.6 standard errors


def test_gaussian_noise_std_is_sigma_per_image_with_streams():
    x = torch.full((3, 3, 64, 64), 0.5)
    for sigma in (0.02, 0.1):
        noise = distortions.gaussian_noise(x, sigma, _streams(range(3))) - x
        stds = noise.flatten(1).std(1)
        torch.testing.assert_close(stds, torch.full((3,), sigma), rtol=0.05, atol=0)
        corr = torch.corrcoef(noise.flatten(1))  # images get independent noise
        assert (corr - torch.eye(3)).abs().max() < 0.05


@pytest.mark.parametrize("name", ["jpeg", "thumbnail", "crop", "crop_pad", "gaussian_noise"])
def test_every_distortion_rejects_what_is_not_a_float_image_batch(name):
    """One image-batch check (imageops.check_images) guards every distortion: wrong channel
    counts and uint8 pixels are named with the fix, not a deep torch error or a silent result."""
    level = {"jpeg": 50, "thumbnail": 16, "crop": 2, "crop_pad": 2, "gaussian_noise": 0.1}[name]
    with pytest.raises(ConfigError, match=r"distortions take float images .* got \(2, 2, 28, 28\)"):
        distort(torch.rand(2, 2, 28, 28), name, level)
    with pytest.raises(ConfigError, match="got dtype torch.uint8; convert uint8 with"):
        distort(imageops.to_uint8(_smooth_images(2)), name, level)
