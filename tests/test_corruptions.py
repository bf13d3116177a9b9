"""Common corruptions (Hendrycks & Dietterich, ICLR 2019): tables, definitions, batching, seeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from robustlab.errors import ConfigError, DataNotFoundError, RobustlabError
from robustlab.perturbations import imageops
from robustlab.perturbations.corruptions import (
    ALL_CORRUPTIONS,
    CORRUPTIONS,
    HELDOUT_CORRUPTIONS,
    TABLES,
    TEST_CORRUPTIONS,
    corrupt,
    corruption_params,
    load_corrupted_release,
    textures,
)
from robustlab.perturbations.corruptions.color import hsv_to_rgb, rgb_to_gray, rgb_to_hsv
from robustlab.perturbations.corruptions.params import zoom_factors
from robustlab.perturbations.corruptions.plasma import plasma_fractal
from robustlab.perturbations.corruptions.swaps import local_shuffle_map
from robustlab.randomness import ImageStreams

# corruptions that draw no random numbers
DETERMINISTIC = {
    "gaussian_blur",
    "defocus_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
    "saturate",
}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth_images(b: int = 8, c: int = 3, h: int = 32, w: int = 32, seed: int = 0):
    """Natural-ish images on the uint8 grid: smooth colour fields, a little texture, one square."""
    g = _gen(seed)
    x = F.interpolate(
        torch.rand(b, c, 5, 5, generator=g), size=(h, w), mode="bicubic", align_corners=False
    ).clamp(0, 1)
    texture = 0.1 * torch.rand(b, c, h // 4, w // 4, generator=g)
    x = 0.85 * x + F.interpolate(texture, size=(h, w), mode="nearest")
    x[:, :, h // 4 : h // 2, w // 3 : 2 * w // 3] = torch.rand(b, c, 1, 1, generator=g)
    return imageops.from_uint8(imageops.to_uint8(x))


def _mean_abs_change(x, name, params, seed=0):
    return [float((corrupt(x, name, s, params, _gen(seed)) - x).abs().mean()) for s in range(1, 6)]


# ------------------------------------------------------------------------------------------
# registries, tables, validation
# ------------------------------------------------------------------------------------------


def test_registries_follow_the_paper():
    assert TEST_CORRUPTIONS == (
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "snow",
        "frost",
        "fog",
        "brightness",
        "contrast",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
    )
    assert HELDOUT_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert ALL_CORRUPTIONS == TEST_CORRUPTIONS + HELDOUT_CORRUPTIONS
    assert set(CORRUPTIONS) == set(ALL_CORRUPTIONS)
    for table in TABLES.values():
        assert set(table) == set(ALL_CORRUPTIONS)
        assert all(len(values) == 5 for values in table.values())


def test_parameter_lookup_by_name():
    assert corruption_params("gaussian_noise", 1, "cifar") == 0.04
    assert corruption_params("gaussian_noise", 5, "imagenet") == 0.38
    assert corruption_params("shot_noise", 2, "cifar") == 250
    assert corruption_params("glass_blur", 5, "cifar") == (0.4, 1, 2)
    assert corruption_params("glass_blur", 5, "imagenet") == (1.5, 4, 2)
    assert corruption_params("defocus_blur", 4, "cifar") == (1, 0.2)
    assert corruption_params("fog", 5, "cifar") == (1.5, 1.75)
    assert corruption_params("saturate", 5, "imagenet") == (20, 0.2)
    assert corruption_params("jpeg_compression", 3, "cifar") == 58
    assert corruption_params("pixelate", 5, "imagenet") == 0.25
    assert corruption_params("elastic_transform", 2, "cifar") == pytest.approx((1.6, 6.4, 2.24))
    assert corruption_params("spatter", 4, "cifar") == (0.65, 0.1, 0.7, 0.69, 0.6, 1)
    assert corruption_params("snow", 1, "cifar") == (0.1, 0.2, 1, 0.6, 8, 3, 0.95)


def test_zoom_factors_are_the_references_arange():
    # np.arange(1, 1.06, 0.01) has 7 entries and ends at 1.06 (floating-point length rounding)
    cifar1 = zoom_factors(corruption_params("zoom_blur", 1, "cifar"))
    assert len(cifar1) == 7 and cifar1[0] == 1.0 and cifar1[-1] == pytest.approx(1.06)
    imagenet3 = zoom_factors(corruption_params("zoom_blur", 3, "imagenet"))
    assert len(imagenet3) == 11 and imagenet3[-1] == pytest.approx(1.20)


def test_imagenet_severity_1_is_stronger_than_cifar():
    for name in ("gaussian_noise", "impulse_noise", "speckle_noise"):
        assert corruption_params(name, 1, "imagenet") > corruption_params(name, 1, "cifar")
    assert corruption_params("shot_noise", 1, "imagenet") < corruption_params(
        "shot_noise", 1, "cifar"
    )
    x = _smooth_images()
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"):
        cifar = _mean_abs_change(x, name, "cifar")[0]
        imagenet = _mean_abs_change(x, name, "imagenet")[0]
        assert imagenet > 1.8 * cifar, name


def test_params_none_chooses_the_table_by_image_size():
    small = _smooth_images(2, h=32, w=32)
    assert torch.equal(
        corrupt(small, "gaussian_noise", 2, None, _gen(3)),
        corrupt(small, "gaussian_noise", 2, "cifar", _gen(3)),
    )
    big = _smooth_images(1, h=72, w=96)
    assert torch.equal(corrupt(big, "contrast", 2), corrupt(big, "contrast", 2, "imagenet"))
    assert not torch.equal(corrupt(big, "contrast", 2), corrupt(big, "contrast", 2, "cifar"))


def test_validation_errors_name_the_fix():
    x = _smooth_images(1)
    with pytest.raises(ConfigError, match="valid choices: gaussian_noise, shot_noise"):
        corrupt(x, "gaussian_nosie", 1)
    with pytest.raises(ConfigError, match=r"'gaussian_nosie' \(did you mean 'gaussian_noise'\?\)"):
        corruption_params("gaussian_nosie", 1)
    with pytest.raises(ConfigError, match="severity must be 1..5, got 6"):
        corrupt(x, "fog", 6)
    with pytest.raises(ConfigError, match="severity must be 1..5, got 0"):
        corruption_params("fog", 0, "cifar")
    with pytest.raises(ConfigError, match="cifar.*imagenet"):
        corrupt(x, "fog", 1, params="tinyimagenet")
    with pytest.raises(ConfigError, match="C = 1 or 3"):
        corrupt(torch.rand(1, 2, 32, 32), "fog", 1)
    with pytest.raises(ConfigError, match="float images"):
        corrupt(imageops.to_uint8(x), "fog", 1)


# ------------------------------------------------------------------------------------------
# every corruption × severity: shape, dtype, range, device; seeds
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_severity_keeps_shape_dtype_and_range(name):
    for size in (28, 32):
        for channels in (1, 3):
            x = _smooth_images(3, channels, size, size, seed=size + channels)
            for severity in range(1, 6):
                out = corrupt(x, name, severity, generator=_gen(severity))
                assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
                assert torch.isfinite(out).all()
                assert out.min() >= 0 and out.max() <= 1
                if name != "jpeg_compression" or channels == 3:
                    assert not torch.equal(out, x) or severity == 1
    x64 = _smooth_images(2).double()
    out = corrupt(x64, name, 3, "imagenet", _gen())
    assert out.dtype == torch.float64 and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_seeded_outputs_repeat_and_differ(name):
    x = _smooth_images(4)
    a = corrupt(x, name, 3, "cifar", _gen(7))
    assert torch.equal(a, corrupt(x, name, 3, "cifar", _gen(7)))
    if name not in DETERMINISTIC:
        assert not torch.equal(a, corrupt(x, name, 3, "cifar", _gen(8)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_cuda_matches_cpu_for_the_same_generator(name):
    x = _smooth_images(4)
    cpu = corrupt(x, name, 4, "cifar", _gen(5))
    gpu = corrupt(x.cuda(), name, 4, "cifar", _gen(5))
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().mean() < 2e-3


# ------------------------------------------------------------------------------------------
# severity ordering
# ------------------------------------------------------------------------------------------

# mean |corrupted - clean| is not monotone in the reference parameters for these (see below)
NOT_MONOTONE_CIFAR = {"glass_blur", "frost", "elastic_transform", "spatter", "saturate"}
# ImageNet-C parameters on 32x32 images: the ones whose ordering survives the tiny size
MONOTONE_IMAGENET_AT_32 = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
    "brightness",
    "contrast",
    "jpeg_compression",
    "spatter",
)


def _check_severity_ordering(x):
    for name in ALL_CORRUPTIONS:
        if name in NOT_MONOTONE_CIFAR:
            continue
        m = _mean_abs_change(x, name, "cifar")
        assert all(b >= a - 1e-6 for a, b in zip(m, m[1:], strict=False)), (name, m)
        assert m[4] > m[0], (name, m)
    for name in MONOTONE_IMAGENET_AT_32:
        m = _mean_abs_change(x, name, "imagenet")
        assert all(b >= a - 1e-6 for a, b in zip(m, m[1:], strict=False)), (name, m)
    # the CIFAR-C exceptions, and what is true for them instead:
    # glass: severities 4-5 shuffle twice, 1-3 once
    m = _mean_abs_change(x, "glass_blur", "cifar")
    assert min(m[3:]) > max(m[:3]), m
    # spatter: 1-3 are water drops, 4-5 mud; each family grows with severity
    m = _mean_abs_change(x, "spatter", "cifar")
    assert m[0] < m[1] < m[2] and m[3] < m[4], m
    # frost: the frost/image weight ratio grows (0.2, 0.3, 0.44, 0.47, 0.6), the L1 change only
    # up to severity 3 (the image is also darkened, which partly cancels the added frost)
    m = _mean_abs_change(x, "frost", "cifar")
    assert m[0] < m[1] < m[2], m
    ratios = [b / a for a, b in TABLES["cifar"]["frost"]]
    assert ratios == sorted(ratios)
    # elastic: CIFAR-C shrinks the affine jitter (2.56 -> 0.96 px) while the elastic field grows,
    # so the L1 change falls with severity; severity 1 is a pure affine warp (alpha = 0)
    alpha, _, affine = zip(*TABLES["cifar"]["elastic_transform"], strict=True)
    assert list(affine) == sorted(affine, reverse=True) and alpha[0] == 0
    # saturate: severities 1-2 desaturate (S x 0.3, x 0.1), 3-5 oversaturate
    sat = [float(rgb_to_hsv(corrupt(x, "saturate", s, "cifar"))[:, 1].mean()) for s in range(1, 6)]
    clean = float(rgb_to_hsv(x)[:, 1].mean())
    assert sat[1] < sat[0] < clean < sat[2] < sat[3] < sat[4], (sat, clean)


def test_severity_ordering_on_synthetic_images():
    _check_severity_ordering(_smooth_images(8))


@pytest.mark.data
def test_severity_ordering_on_cifar10(cifar10_root):
    with np.load(cifar10_root / "cifar10-jpeg" / "test.npz") as data:
        images = torch.from_numpy(data["images"][:16].copy())
    _check_severity_ordering(imageops.from_uint8(images.permute(0, 3, 1, 2)))


@pytest.mark.data
def test_every_corruption_runs_on_mnist_digits(mnist_root):
    import gzip

    with gzip.open(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz") as f:
        digits = np.frombuffer(f.read(), dtype=np.uint8, offset=16)[: 4 * 784].reshape(4, 1, 28, 28)
    x = imageops.from_uint8(torch.from_numpy(digits.copy()))
    for name in ALL_CORRUPTIONS:
        for severity in (1, 5):
            out = corrupt(x, name, severity, generator=_gen(severity))
            assert out.shape == (4, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
            assert float((out - x).abs().mean()) > 1e-3 or severity == 1, name


# ------------------------------------------------------------------------------------------
# hand-checked definitions
# ------------------------------------------------------------------------------------------


def test_contrast_is_exact():
    x = torch.zeros(1, 3, 32, 32)
    x[..., :16] = 0.2
    x[..., 16:] = 0.6  # mean 0.4
    out = corrupt(x, "contrast", 2, "cifar")  # c = 0.5
    assert torch.allclose(out[..., :16], torch.full_like(out[..., :16], 0.3), atol=1e-7)
    assert torch.allclose(out[..., 16:], torch.full_like(out[..., 16:], 0.5), atol=1e-7)
    y = _smooth_images(4)
    mean = y.mean((2, 3), keepdim=True)
    assert torch.allclose(
        corrupt(y, "contrast", 5, "imagenet"), ((y - mean) * 0.05 + mean).clamp(0, 1), atol=1e-7
    )


def test_brightness_through_hsv_on_hand_built_pixels():
    x = torch.tensor([[0.2, 0.4, 0.8], [0.95, 0.5, 0.1], [0.3, 0.3, 0.3]]).T.reshape(1, 3, 1, 3)
    x = x.expand(1, 3, 32, 3).contiguous()
    out = corrupt(x, "brightness", 2, "cifar")  # V + 0.1: hue and saturation kept
    expected = torch.tensor([[0.225, 0.45, 0.9], [1.0, 0.5 / 0.95, 0.1 / 0.95], [0.4, 0.4, 0.4]])
    assert torch.allclose(out[0, :, 0].T, expected, atol=1e-6)
    hsv = rgb_to_hsv(x[..., :1, :])
    assert torch.allclose(hsv[0, :, 0, 0], torch.tensor([(4 - 1 / 3) / 6, 0.75, 0.8]), atol=1e-6)
    y = _smooth_images(2)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(y)), y, atol=1e-6)


def test_pixelate_is_pils_box_then_nearest():
    # hand-built: factor 0.5 (ImageNet severity 2) averages 2x2 blocks, rounding half up per pass
    r = torch.arange(32.0).view(-1, 1)
    c = torch.arange(32.0).view(1, -1)
    u8 = (7 * c + 3 * r + (r % 2) * (c % 2)).remainder(256)
    out = corrupt(
        imageops.from_uint8(u8.to(torch.uint8).expand(1, 3, 32, 32)), "pixelate", 2, "imagenet"
    )
    rows = torch.floor((u8[:, 0::2] + u8[:, 1::2] + 1) / 2)  # horizontal pass first
    block = torch.floor((rows[0::2] + rows[1::2] + 1) / 2)
    expected = block.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(imageops.to_uint8(out)[0, 0].float(), expected)
    # and PIL itself, for every table entry and an odd size
    from PIL import Image

    for size in (32, 28):
        x = _smooth_images(2, 3, size, size, seed=size)
        arrays = imageops.to_uint8(x).permute(0, 2, 3, 1).numpy()
        for params in ("cifar", "imagenet"):
            for severity in range(1, 6):
                factor = corruption_params("pixelate", severity, params)
                small = int(size * factor)
                ours = imageops.to_uint8(corrupt(x, "pixelate", severity, params))
                for i, array in enumerate(arrays):
                    ref = Image.fromarray(array).resize((small, small), Image.BOX)
                    ref = np.asarray(ref.resize((size, size), Image.NEAREST))
                    assert np.array_equal(ours[i].permute(1, 2, 0).numpy(), ref)


def test_jpeg_is_a_libjpeg_round_trip():
    x = _smooth_images(3)
    for severity in (1, 5):
        quality = corruption_params("jpeg_compression", severity, "cifar")
        encoded = encode_jpeg(list(imageops.to_uint8(x)), quality=quality)
        expected = imageops.from_uint8(torch.stack(decode_jpeg(encoded)))
        assert torch.equal(corrupt(x, "jpeg_compression", severity, "cifar"), expected)


def test_gaussian_noise_std_is_sigma():
    x = torch.full((4, 3, 64, 64), 0.5)
    for params, severity, sigma in (("cifar", 3, 0.08), ("imagenet", 2, 0.12)):
        noise = corrupt(x, "gaussian_noise", severity, params, _gen(1)) - x
        assert float(noise.std()) == pytest.approx(sigma, rel=0.02)
        assert abs(float(noise.mean())) < 0.003


def test_shot_noise_variance_is_x_over_lambda():
    x = torch.full((4, 3, 64, 64), 0.3)
    out = corrupt(x, "shot_noise", 3, "cifar", _gen(2))  # lambda = 100
    assert float(out.mean()) == pytest.approx(0.3, rel=0.01)
    assert float(out.var()) == pytest.approx(0.3 / 100, rel=0.05)
    assert torch.allclose(out * 100, (out * 100).round(), atol=1e-4)  # Poisson counts / lambda


def test_impulse_noise_replaces_the_given_fraction():
    x = torch.full((4, 3, 64, 64), 0.5)
    out = corrupt(x, "impulse_noise", 4, "cifar", _gen(3))  # amount 0.05
    salt = float((out == 1).float().mean())
    pepper = float((out == 0).float().mean())
    assert salt + pepper == pytest.approx(0.05, rel=0.06)
    assert salt == pytest.approx(pepper, rel=0.15)
    assert bool(((out == 0) | (out == 1) | (out == 0.5)).all())


def test_speckle_noise_scales_with_intensity():
    x = torch.full((4, 3, 64, 64), 0.5)
    out = corrupt(x, "speckle_noise", 5, "cifar", _gen(4))  # x + x * N(0, 0.2)
    assert float((out - x).std()) == pytest.approx(0.5 * 0.2, rel=0.03)
    assert torch.equal(
        corrupt(torch.zeros(1, 3, 32, 32), "speckle_noise", 5), torch.zeros(1, 3, 32, 32)
    )


def _sequential_shuffle(offsets, h, w, delta, swap):
    """The reference's loop on a source-index array (copy: numpy-view semantics)."""
    src = list(range(h * w))
    for i, row in enumerate(range(h - delta, delta, -1)):
        for j, col in enumerate(range(w - delta, delta, -1)):
            dx, dy = offsets[i, j].tolist()
            a, b = row * w + col, (row + dy) * w + col + dx
            if swap:
                src[a], src[b] = src[b], src[a]
            else:
                src[a] = src[b]
    return src


@pytest.mark.parametrize("swap", [False, True])
def test_glass_shuffle_equals_the_sequential_loop(swap):
    g = _gen(11)
    for h, w, delta in ((9, 11, 1), (12, 10, 2), (15, 13, 3), (28, 28, 4)):
        offsets = torch.randint(-delta, delta, (2, h - 2 * delta, w - 2 * delta, 2), generator=g)
        src = local_shuffle_map(offsets, h, w, delta, swap=swap)
        for b in range(2):
            assert src[b].tolist() == _sequential_shuffle(offsets[b], h, w, delta, swap)


def test_glass_shuffle_with_unit_shift_reads_up_left_neighbours():
    # delta = 1: every visited pixel copies one of itself, left, up, up-left of the *original*
    offsets = torch.randint(-1, 1, (1, 30, 30, 2), generator=_gen(12))
    src = local_shuffle_map(offsets, 32, 32, 1)[0].view(32, 32)
    rows, cols = torch.meshgrid(torch.arange(2, 32), torch.arange(2, 32), indexing="ij")
    dx = offsets[0, :, :, 0].flip(0, 1)
    dy = offsets[0, :, :, 1].flip(0, 1)
    assert torch.equal(src[2:, 2:], (rows + dy) * 32 + cols + dx)


def test_defocus_kernel_is_a_normalised_disk():
    from robustlab.perturbations.corruptions.blur import disk_kernel

    k = disk_kernel(1.0, 0.2)
    assert k.shape == (17, 17) and float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(k[8, 8]) > float(k[8, 9]) > float(k[8, 10]) and float(k[0, 0]) == 0
    assert disk_kernel(10.0, 0.5).shape == (21, 21)


def test_defocus_equals_opencv_filter2d_with_the_reference_disk():
    cv2 = pytest.importorskip("cv2")
    x = _smooth_images(2)
    for params, severity in (("cifar", 5), ("imagenet", 2)):
        radius, alias = corruption_params("defocus_blur", severity, params)
        half = 8 if radius <= 8 else radius
        grid = np.arange(-half, half + 1)
        disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).astype(np.float32)
        size = (3, 3) if radius <= 8 else (5, 5)
        kernel = cv2.GaussianBlur(disk / disk.sum(), ksize=size, sigmaX=alias)
        ours = corrupt(x, "defocus_blur", severity, params)
        for i in range(2):
            image = x[i].permute(1, 2, 0).double().numpy()
            ref = np.stack([cv2.filter2D(image[..., d], -1, kernel) for d in range(3)], -1)
            assert np.allclose(ours[i].permute(1, 2, 0).numpy(), np.clip(ref, 0, 1), atol=2e-6)


def test_gaussian_and_zoom_blur_match_scipy():
    from scipy import ndimage

    x = _smooth_images(2)
    image = x[0].permute(1, 2, 0).double().numpy()
    ref = ndimage.gaussian_filter(image, sigma=(2, 2, 0), mode="nearest", truncate=4.0)
    ours = corrupt(x, "gaussian_blur", 2, "imagenet")[0].permute(1, 2, 0).numpy()
    assert np.allclose(ours, np.clip(ref, 0, 1), atol=1e-6)

    def clipped_zoom(img, z):  # make_cifar_c.py's helper
        h = img.shape[0]
        ch = int(np.ceil(h / z))
        top = (h - ch) // 2
        img = ndimage.zoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
        trim = (img.shape[0] - h) // 2
        return img[trim : trim + h, trim : trim + h]

    for params, severity in (("cifar", 1), ("cifar", 5), ("imagenet", 4)):
        factors = np.arange(*corruption_params("zoom_blur", severity, params))
        ref = (image + sum(clipped_zoom(image, z) for z in factors)) / (len(factors) + 1)
        ours = corrupt(x, "zoom_blur", severity, params)[0].permute(1, 2, 0).numpy()
        assert np.allclose(ours, np.clip(ref, 0, 1), atol=1e-6)


def test_motion_blur_line_kernel_by_hand():
    from robustlab.perturbations.corruptions.filters import motion_blur

    x = torch.rand(2, 1, 12, 12, generator=_gen(4))
    out = motion_blur(x, 2, 1.0, torch.tensor([0.0, 90.0]))  # 5 taps, w_i ∝ exp(-i²/2)
    w = torch.exp(-(torch.arange(5.0) ** 2) / 2)
    w = w / w.sum()
    cols = (torch.arange(12)[:, None] + torch.arange(5)).clamp(max=11)  # x + i, edge clamp
    right = (x[0, 0][:, cols] * w).sum(-1)
    down = (x[1, 0].T[:, cols] * w).sum(-1).T
    assert torch.allclose(out[0, 0], right, atol=1e-6)
    assert torch.allclose(out[1, 0], down, atol=1e-6)


def test_fog_plasma_map_adapts_to_the_image_size():
    maps = plasma_fractal(3, 32, 2.0, _gen(1), torch.device("cpu"))
    assert maps.shape == (3, 32, 32)
    assert float(maps.amin()) == 0 and torch.allclose(maps.amax((1, 2)), torch.ones(3))
    x = torch.full((2, 1, 28, 28), 0.5)
    out = corrupt(x, "fog", 3, "cifar", _gen(1))  # clip((x + 0.75 P) * 0.5 / 1.25)
    assert float(out.min()) >= 0.2 - 1e-6 and float(out.max()) <= 0.5 + 1e-6
    assert float(out.max() - out.min()) > 0.15


def test_frost_blends_the_real_photographs():
    black = torch.zeros(2, 3, 32, 32)
    layer = corrupt(black, "frost", 1, "cifar", _gen(9)) / 0.2 * 255  # 0.2 * frost
    assert torch.allclose(layer, layer.round(), atol=1e-3)
    layer = layer.round()
    for image in layer:  # each layer is a 32x32 crop of one photograph (shrunk by 0.2)
        found = False
        for tex in textures.frost_textures("cifar", 32, 32):
            tex = tex.float()
            corner = (
                (
                    tex.unfold(1, 4, 1).unfold(2, 4, 1)
                    == image[:, :4, :4, None, None].permute(0, 3, 4, 1, 2)
                )
                .all(0)
                .all(-1)
                .all(-1)
            )
            for top, left in corner.nonzero().tolist():
                found |= torch.equal(tex[:, top : top + 32, left : left + 32], image)
        assert found


def test_frost_without_imagecorruptions_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    textures._load.cache_clear()
    try:
        with pytest.raises(RobustlabError, match="pip install imagecorruptions"):
            corrupt(torch.rand(1, 3, 32, 32), "frost", 1)
    finally:
        monkeypatch.undo()
        textures._load.cache_clear()


def test_spatter_opencv_ports_match_opencv():
    cv2 = pytest.importorskip("cv2")
    from robustlab.perturbations.corruptions import cvops

    rng = np.random.default_rng(0)
    for sigma, threshold in ((0.7, 0.7), (2.0, 0.68)):
        base = torch.from_numpy(rng.normal(0.65, 0.3, (32, 32)))[None, None]
        from robustlab.perturbations.corruptions.filters import gaussian_filter

        liquid = gaussian_filter(base, sigma)
        liquid = torch.where(liquid < threshold, 0.0, liquid)
        u8 = torch.floor(liquid * 255)
        edges_ref = cv2.Canny(u8[0, 0].numpy().astype(np.uint8), 50, 150)
        edges = cvops.canny(u8, 50, 150)
        assert np.array_equal(edges[0, 0].numpy(), edges_ref > 0) and edges.any()
        dist_ref = cv2.distanceTransform(255 - edges_ref, cv2.DIST_L2, 5)
        dist = cvops.distance_transform_l2_mask5(edges, 20.0)[0, 0].numpy()
        assert np.allclose(dist, np.minimum(dist_ref, 20), atol=1e-5)
        blurred = cv2.blur(np.minimum(dist_ref, 20), (3, 3)).astype(np.uint8)
        ours = cvops.box_blur3_f32(torch.from_numpy(np.minimum(dist_ref, 20))[None, None])
        assert np.array_equal(torch.floor(ours)[0, 0].numpy(), blurred)
        eq = cvops.equalize_hist(torch.from_numpy(blurred)[None, None])
        assert np.array_equal(eq[0, 0].numpy(), cv2.equalizeHist(blurred))


# ------------------------------------------------------------------------------------------
# grey images
# ------------------------------------------------------------------------------------------


def test_grey_images_follow_the_rgb_rule():
    grey = _smooth_images(3, 1)
    rgb = grey.expand(-1, 3, -1, -1)
    # channel-alike corruptions: the grey result is the RGB result's (identical) channel
    for name in (
        "glass_blur",
        "fog",
        "elastic_transform",
        "motion_blur",
        "zoom_blur",
        "pixelate",
        "defocus_blur",
    ):
        assert torch.allclose(
            corrupt(grey, name, 3, "cifar", _gen(1)),
            corrupt(rgb, name, 3, "cifar", _gen(1))[:, :1],
            atol=1e-6,
        ), name
    # colour corruptions go through RGB and back with ITU-R 601 luma
    assert torch.allclose(
        corrupt(grey, "brightness", 3, "cifar"), (grey + 0.15).clamp(0, 1), atol=1e-6
    )
    snowy = corrupt(rgb, "snow", 2, "cifar", _gen(2))
    assert torch.allclose(corrupt(grey, "snow", 2, "cifar", _gen(2)), rgb_to_gray(snowy), atol=1e-6)
    # pixel noise keeps its strength on one channel
    flat = torch.full((4, 1, 64, 64), 0.5)
    noise = corrupt(flat, "gaussian_noise", 3, "cifar", _gen(3)) - flat
    assert float(noise.std()) == pytest.approx(0.08, rel=0.03)


# ------------------------------------------------------------------------------------------
# the official release
# ------------------------------------------------------------------------------------------


def _fake_release(root: Path, name: str = "fog", per_severity: int = 10) -> None:
    images = np.zeros((5 * per_severity, 32, 32, 3), dtype=np.uint8)
    for s in range(5):
        images[s * per_severity : (s + 1) * per_severity] = 10 * (s + 1)
    images[:, 0, 0, 0] = np.arange(5 * per_severity) % 256
    np.save(root / f"{name}.npy", images)
    np.save(root / "labels.npy", np.tile(np.arange(per_severity) % 10, 5).astype(np.uint8))


def test_load_corrupted_release_reads_one_severity(tmp_path):
    _fake_release(tmp_path)
    images, labels = load_corrupted_release(tmp_path, "fog", 3)
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert int(images[0, 5, 5, 1]) == 30 and images[:, 0, 0, 0].tolist() == list(range(20, 30))
    assert labels.tolist() == list(range(10)) and labels.dtype == np.int64
    np.save(tmp_path / "labels.npy", np.arange(10, dtype=np.uint8))  # per-severity labels
    assert load_corrupted_release(tmp_path, "fog", 5)[1].tolist() == list(range(10))


def test_load_corrupted_release_errors(tmp_path):
    _fake_release(tmp_path)
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "snow.npy")):
        load_corrupted_release(tmp_path, "snow", 1)
    with pytest.raises(ConfigError, match="valid choices"):
        load_corrupted_release(tmp_path, "rain", 1)
    with pytest.raises(ConfigError, match="severity must be 1..5, got 6"):
        load_corrupted_release(tmp_path, "fog", 6)
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(DataNotFoundError, match="labels.npy"):
        load_corrupted_release(tmp_path, "fog", 1)


# ------------------------------------------------------------------------------------------
# per-image random streams (evaluation): an image's corruption does not depend on its batch
# ------------------------------------------------------------------------------------------


def _streams(indices, *key) -> ImageStreams:
    return ImageStreams.keyed((0, "test", *key), torch.as_tensor(list(indices)), "cpu")


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_per_image_streams_make_each_image_independent_of_its_batch(name):
    for channels in (1, 3):
        x = _smooth_images(5, channels, seed=channels)
        whole = corrupt(x, name, 3, "cifar", _streams(range(5)))
        order = [3, 0, 4]  # another batch, another order, the same images
        assert torch.equal(corrupt(x[order], name, 3, "cifar", _streams(order)), whole[order])
        if name in DETERMINISTIC:
            continue
        assert not torch.equal(corrupt(x, name, 3, "cifar", _streams(range(5), "other")), whole)
        # two copies of one image with different indices get different draws
        twins = x[:1].expand(2, -1, -1, -1).contiguous()
        out = corrupt(twins, name, 3, "cifar", _streams([0, 1]))
        assert not torch.equal(out[0], out[1])


# ------------------------------------------------------------------------------------------
# random corruptions checked against their definitions
# ------------------------------------------------------------------------------------------


def _coordinate_image(h: int, w: int) -> torch.Tensor:
    """R = x / (W-1), G = y / (H-1): bilinear resampling reads back the source coordinates."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return torch.stack([xs / (w - 1), ys / (h - 1), torch.zeros_like(xs)])[None]


def _displacement(out: torch.Tensor) -> torch.Tensor:
    """(2, H, W) source-minus-target (dx, dy) of a warp of :func:`_coordinate_image`."""
    h, w = out.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return torch.stack([out[0, 0] * (w - 1) - xs, out[0, 1] * (h - 1) - ys])


def test_elastic_displacement_is_alpha_times_the_smoothed_uniform_field():
    from robustlab.perturbations.corruptions.filters import gaussian_filter

    core = CORRUPTIONS["elastic_transform"].core
    x = _coordinate_image(32, 32)
    sigma = 4.0
    rms = []
    for alpha in (1.0, 2.0, 4.0):
        out = core(x, (alpha, sigma, 0.0), params="cifar", generator=_gen(3))
        # the draws, in the corruption's order: affine jitter (here U(0, 0)), then U(-1, 1) fields
        g = _gen(3)
        torch.rand(1, 3, 2, generator=g)
        fields = 2 * torch.rand(1, 2, 32, 32, generator=g, dtype=torch.float64) - 1
        expected = gaussian_filter(fields, sigma, truncate=3.0, mode="symmetric")[0] * alpha
        measured = _displacement(out)
        inside = (slice(None), slice(6, -6), slice(6, -6))  # away from the reflected border
        assert expected[inside].abs().max() < 6
        torch.testing.assert_close(measured[inside], expected[inside], atol=1e-5, rtol=0)
        rms.append(float(measured[inside].pow(2).mean().sqrt()))
    assert rms[1] == pytest.approx(2 * rms[0], rel=1e-4)
    assert rms[2] == pytest.approx(4 * rms[0], rel=1e-4)


def test_elastic_affine_jitter_is_an_affine_warp_growing_with_its_parameter():
    core = CORRUPTIONS["elastic_transform"].core
    x = _coordinate_image(32, 32)
    ys, xs = torch.meshgrid(
        torch.arange(32, dtype=torch.float64), torch.arange(32, dtype=torch.float64), indexing="ij"
    )
    design = torch.stack([xs.flatten(), ys.flatten(), torch.ones(32 * 32, dtype=torch.float64)], 1)
    inside = ((xs > 4) & (xs < 27) & (ys > 4) & (ys < 27)).flatten()
    rms = []
    for affine in (0.5, 1.0, 2.0):
        d = _displacement(core(x, (0.0, 1.0, affine), params="cifar", generator=_gen(4)))
        d = d.flatten(1).T[inside]  # (pixels, 2)
        fit = torch.linalg.lstsq(design[inside], d).solution
        assert (design[inside] @ fit - d).abs().max() < 1e-5  # an affine map of the plane
        rms.append(float(d.pow(2).mean().sqrt()))
    assert 0 < rms[0] < rms[1] < rms[2]
    assert rms[2] == pytest.approx(4 * rms[0], rel=0.1)  # ≈ linear in the jitter


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_snow_adds_two_flake_layers_to_the_whitened_image(severity):
    mean, std, zoom, threshold, radius, sigma, blend = TABLES["cifar"]["snow"][severity - 1]
    grey = 0.3
    x = torch.full((4, 3, 32, 32), grey)
    out = corrupt(x, "snow", severity, "cifar", _gen(severity))
    whitened = blend * grey + (1 - blend) * max(grey, 1.5 * grey + 0.5)
    # flakes only add to the whitened background, and there are flakes
    assert float(out.amin()) == pytest.approx(whitened, abs=1e-6)
    assert float((out > whitened + 0.05).float().mean()) > 0.005
    # the layer is added as is and rotated by 180°: on a flat image the result is symmetric
    torch.testing.assert_close(out, out.flip(-2, -1), atol=1e-6, rtol=0)
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_spatter_mode_follows_the_table_water_or_mud(severity):
    *_, intensity, mode = TABLES["cifar"]["spatter"][severity - 1]
    black = torch.zeros(8, 3, 32, 32)
    out = corrupt(black, "spatter", severity, "cifar", _gen(severity)).double()
    wet = out.sum(1) > 0
    assert wet.float().mean() > 0.001  # some liquid on black images
    r, g, b = (out[:, c][wet] for c in range(3))
    if mode == 0:  # water: m · pale turquoise (175, 238, 238) / 255, m <= intensity
        torch.testing.assert_close(r / g, torch.full_like(r, 175 / 238), atol=1e-6, rtol=0)
        torch.testing.assert_close(g, b, atol=1e-6, rtol=0)
        assert float(g.max()) <= intensity * 238 / 255 + 1e-6
    else:  # mud: mask · brown (63, 42, 20) / 255, mask <= 1
        torch.testing.assert_close(r / g, torch.full_like(r, 63 / 42), atol=1e-6, rtol=0)
        torch.testing.assert_close(g / b, torch.full_like(g, 42 / 20), atol=1e-6, rtol=0)
        assert float(r.max()) <= 63 / 255 + 1e-6 and float(r.min()) >= 0.8 * 63 / 255 - 1e-6


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_fog_spans_exactly_from_darkened_to_original_on_a_flat_image(severity):
    strength, _ = TABLES["cifar"]["fog"][severity - 1]
    c = 0.5
    out = corrupt(torch.full((3, 1, 32, 32), c), "fog", severity, "cifar", _gen(severity))
    # (c + s·P)·c/(c + s) with the plasma P normalised to exactly [0, 1] on the 32×32 map
    torch.testing.assert_close(out.amin((1, 2, 3)), torch.full((3,), c * c / (c + strength)))
    torch.testing.assert_close(out.amax((1, 2, 3)), torch.full((3,), c))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_frost_scales_the_image_by_its_weight(severity):
    image_weight, frost_weight = TABLES["cifar"]["frost"][severity - 1]
    black = corrupt(torch.zeros(4, 3, 32, 32), "frost", severity, "cifar", _gen(5))
    grey = corrupt(torch.full((4, 3, 32, 32), 0.2), "frost", severity, "cifar", _gen(5))
    unclipped = grey < 1
    torch.testing.assert_close(
        (grey - black)[unclipped], torch.full_like(grey[unclipped], 0.2 * image_weight)
    )
    assert float(black.amax()) <= frost_weight + 1e-6 and float(black.mean()) > 0.05
