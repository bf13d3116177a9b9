"""HydraMix / ChimeraMix mixing generator and its PatchGAN discriminator.

Reinders et al., "ChimeraMix: Image Classification on Small Datasets via Masked Feature
Mixing", IJCAI 2022; Reinders, Schubert & Rosenhahn, "HydraMix", arXiv 2501.09504 (2025).
The generator encodes N images of one class, mixes their feature maps under masks and decodes
the mix: ``G(x_1..N, M) = dec(Σ_i M_i ⊙ enc(x_i))`` with ``M_i ≥ 0``, ``Σ_i M_i = 1``.

- Encoder: ReflectionPad(3) + Conv7×7 (ngf) → two stride-2 Conv3×3 (2·ngf, 4·ngf) → residual
  blocks; InstanceNorm + ReLU after each convolution. Features are at ¼ of the working
  resolution, 4·ngf channels.
- Decoder: residual blocks → two stride-2 transposed Conv2×2 (2·ngf, ngf) with InstanceNorm +
  ReLU → ReflectionPad(3) + Conv7×7 → tanh.
- ``n_blocks`` residual blocks on each side of the mixer (ChimeraMix's 4 blocks split 2/2 is
  ``n_blocks=2``). ``decoder_blocks=True`` (default) applies the decoder's blocks, the papers'
  architecture; ``False`` reproduces ChimeraMix's released code, whose decoder builds its
  residual blocks but never applies them (the decoder then has none).
- Discriminator (:class:`PatchDiscriminator`): PatchGAN (Isola et al., CVPR 2017) with four
  stride-2 Conv4×4 blocks (ndf, 2, 4, 8·ndf; InstanceNorm except on the first; LeakyReLU 0.2)
  and a Conv4×4 to one logit per patch; no sigmoid by default (least-squares GAN, Mao et al.,
  ICCV 2017); ``sigmoid=True`` is ChimeraMix's released variant.

Images enter and leave in [0, 1]; inside, the networks work in [−1, 1] (tanh's range) at the
working resolution ``image_size`` (e.g. 64 for 32-px CIFAR): :meth:`MixingGenerator.forward`
resizes the sources there (bilinear) and its output back (bilinear, antialiased when
shrinking), and area-pools the masks to the feature grid (a convex combination, so they still
sum to 1).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.errors import check


class ResidualBlock(nn.Module):
    """``x + IN(conv(relu(IN(conv(x)))))`` with reflection-padded 3×3 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize to ``size`` (antialiased when shrinking); identity at that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def masked_sum(sources: Tensor, masks: Tensor) -> Tensor:
    """``Σ_i M_i ⊙ s_i`` over the N sources: sources (B, N, C, h, w), masks (B, N, h, w) summing
    to 1 over N -> (B, C, h, w). The generator mixes features with it, ``method.mix=direct``
    pixels."""
    return (masks.unsqueeze(2).to(sources.dtype) * sources).sum(dim=1)


class MixingGenerator(nn.Module):
    """Encoder, mixer and decoder (see the module docstring); ``forward(images, masks)``."""

    def __init__(
        self,
        in_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 2,
        decoder_blocks: bool = True,
        image_size: int = 64,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.feature_size = self.image_size // 4
        self.decoder_blocks = bool(decoder_blocks)
        wide = 4 * ngf
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=False),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(inplace=True),
            nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1, bias=False),
            nn.InstanceNorm2d(2 * ngf),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * ngf, wide, 3, stride=2, padding=1, bias=False),
            nn.InstanceNorm2d(wide),
            nn.ReLU(inplace=True),
            *[ResidualBlock(wide) for _ in range(n_blocks)],
        )
        blocks = [ResidualBlock(wide) for _ in range(n_blocks if decoder_blocks else 0)]
        self.decoder = nn.Sequential(
            *blocks,
            nn.ConvTranspose2d(wide, 2 * ngf, 2, stride=2, bias=False),
            nn.InstanceNorm2d(2 * ngf),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * ngf, ngf, 2, stride=2, bias=False),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, in_channels, 7),
            nn.Tanh(),
        )

    def working(self, images: Tensor) -> Tensor:
        """[0, 1] images (B, C, H, W) at the working resolution (bilinear)."""
        return _resize(images, (self.image_size, self.image_size))

    def encode(self, images: Tensor) -> Tensor:
        """Features (B, 4·ngf, S/4, S/4) of [0, 1] images (B, C, H, W) of any size."""
        return self.encoder(2 * self.working(images) - 1)

    def mix(self, features: Tensor, masks: Tensor) -> Tensor:
        """``Σ_i M_i ⊙ f_i``: features (B, N, C', h, w), masks (B, N, h, w) -> (B, C', h, w)."""
        return masked_sum(features, masks)

    def decode(self, features: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """[0, 1] images decoded from features, at ``size`` (default: the working size)."""
        images = (self.decoder(features) + 1) / 2
        return images if size is None else _resize(images, tuple(size))

    def feature_masks(self, masks: Tensor) -> Tensor:
        """Masks (B, N, H, W) area-pooled to the feature grid (B, N, S/4, S/4)."""
        grid = (self.feature_size, self.feature_size)
        return masks if tuple(masks.shape[-2:]) == grid else F.interpolate(masks, grid, mode="area")

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        """The mix of images (B, N, C, H, W) in [0, 1] under masks (B, N, H, W) summing to 1
        over N: (B, C, H, W) in [0, 1] at the images' resolution."""
        batch, sources, channels, height, width = images.shape
        check(
            masks.shape == (batch, sources, height, width),
            f"masks must have shape {(batch, sources, height, width)} to mix images of shape "
            f"{tuple(images.shape)}, got {tuple(masks.shape)}",
        )
        features = self.encode(images.reshape(batch * sources, channels, height, width))
        features = features.view(batch, sources, *features.shape[1:])
        return self.decode(self.mix(features, self.feature_masks(masks)), (height, width))


def build_mixing_generator(
    in_channels: int = 3,
    ngf: int = 64,
    n_blocks: int = 2,
    decoder_blocks: bool = True,
    image_size: int = 64,
) -> MixingGenerator:
    """The generator from plain config values (the factory stage 1 exports it with)."""
    for name, value, least in (("in_channels", in_channels, 1), ("ngf", ngf, 1)):
        check(
            isinstance(value, int) and not isinstance(value, bool) and value >= least,
            f"method.generator.{name} must be an integer >= {least}, got {value!r}",
        )
    check(
        isinstance(n_blocks, int) and not isinstance(n_blocks, bool) and n_blocks >= 0,
        f"method.generator.n_blocks must be an integer >= 0, got {n_blocks!r}",
    )
    check(
        isinstance(decoder_blocks, bool),
        f"method.generator.decoder_blocks must be true/false, got {decoder_blocks!r}",
    )
    check(
        isinstance(image_size, int) and image_size >= 32 and image_size % 4 == 0,
        "method.generator.image_size (the working resolution) must be a multiple of 4 and "
        f">= 32 (the discriminator halves it four times), got {image_size!r}",
    )
    return MixingGenerator(in_channels, ngf, n_blocks, decoder_blocks, image_size)


class PatchDiscriminator(nn.Module):
    """PatchGAN: one logit per overlapping patch, (B, 1, S/16, S/16) for S×S inputs in [−1, 1]."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, sigmoid: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        widths = [in_channels, ndf, 2 * ndf, 4 * ndf, 8 * ndf]
        for index, (inputs, outputs) in enumerate(zip(widths, widths[1:], strict=False)):
            layers.append(nn.Conv2d(inputs, outputs, 4, stride=2, padding=1))
            if index > 0:
                layers.append(nn.InstanceNorm2d(outputs))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers += [nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(8 * ndf, 1, 4, padding=1)]
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.model = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)


def build_discriminator(in_channels: int = 3, ndf: int = 64, sigmoid: bool = False) -> nn.Module:
    """The PatchGAN discriminator from plain config values."""
    check(
        isinstance(ndf, int) and not isinstance(ndf, bool) and ndf >= 1,
        f"method.discriminator.ndf must be an integer >= 1, got {ndf!r}",
    )
    check(
        isinstance(sigmoid, bool),
        f"method.discriminator.sigmoid must be true/false, got {sigmoid!r}",
    )
    return PatchDiscriminator(in_channels, ndf, sigmoid)


__all__ = [
    "MixingGenerator",
    "PatchDiscriminator",
    "build_discriminator",
    "build_mixing_generator",
]
