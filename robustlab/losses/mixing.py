"""Losses of the HydraMix / ChimeraMix mixing generator (Reinders et al., IJCAI 2022, Sec. 3.3;
HydraMix, arXiv 2501.09504): reconstruction under one-hot masks, a Laplacian-pyramid L1
perceptual loss and the least-squares GAN losses (Mao et al., ICCV 2017).

Images are compared in the generator's [−1, 1] range, as ChimeraMix does; every function is
pure (tensors in, a scalar tensor out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: The 5-tap binomial filter [1, 4, 6, 4, 1] / 16 (Burt & Adelson, 1983), as a 5×5 kernel.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(images: Tensor, gain: float = 1.0) -> Tensor:
    """Depthwise 5×5 binomial blur with reflection padding, times ``gain``."""
    channels = images.shape[1]
    kernel = (gain * torch.outer(_BINOMIAL, _BINOMIAL)).to(images)
    kernel = kernel.expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(images, (2, 2, 2, 2), mode="reflect"), kernel, groups=channels)


def laplacian_pyramid(images: Tensor, levels: int = 3) -> list[Tensor]:
    """The ``levels`` band-pass levels of the Laplacian pyramid (Burt & Adelson, 1983):
    ``L_k = g_k − up(down(blur(g_k)))`` with ``g_0 = images``, ``g_{k+1} = down(blur(g_k))``,
    ``down`` keeping every second pixel and ``up`` inserting zeros then blurring with gain 4
    (cropped to ``g_k``'s size when it is odd). The low-pass residual is not included."""
    pyramid, current = [], images
    for _ in range(levels):
        down = _blur(current)[..., ::2, ::2]
        spread = torch.zeros(
            (*down.shape[:2], 2 * down.shape[2], 2 * down.shape[3]),
            dtype=down.dtype,
            device=down.device,
        )
        spread[..., ::2, ::2] = down
        up = _blur(spread, gain=4.0)[..., : current.shape[2], : current.shape[3]]
        pyramid.append(current - up)
        current = down
    return pyramid


def laplacian_loss(output: Tensor, target: Tensor, levels: int = 3) -> Tensor:
    """``Σ_k mean |L_k(output) − L_k(target)|`` over the ``levels`` pyramid levels
    (ChimeraMix's perceptual loss, 3 levels) for (B, C, H, W) images."""
    pairs = zip(laplacian_pyramid(output, levels), laplacian_pyramid(target, levels), strict=True)
    return sum((F.l1_loss(a, b) for a, b in pairs), output.new_zeros(()))


def reconstruction_loss(reconstructions: Tensor, sources: Tensor, weight: float = 1000.0) -> Tensor:
    """``weight · Σ_i mean (x̂_i − x_i)²`` for (B, N, C, H, W) reconstructions x̂_i = G(x, e_i)
    (the one-hot mask of source i) of sources x_i: one mean squared error per source, summed
    over the N sources (ChimeraMix: ``1000 · (MSE_a + MSE_b)``)."""
    errors = (reconstructions - sources).pow(2).flatten(2).mean(dim=2)  # (B, N)
    return weight * errors.mean(dim=0).sum()


def reconstruction_laplacian_loss(
    reconstructions: Tensor, sources: Tensor, levels: int = 3
) -> Tensor:
    """:func:`laplacian_loss` of each source's reconstruction, summed over the N sources, for
    (B, N, C, H, W) tensors (ChimeraMix: ``Lap(x̂_a, x_a) + Lap(x̂_b, x_b)``)."""
    return sum(
        (
            laplacian_loss(reconstructions[:, i], sources[:, i], levels)
            for i in range(sources.shape[1])
        ),
        sources.new_zeros(()),
    )


def lsgan_generator_loss(fake_scores: Tensor) -> Tensor:
    """Least-squares GAN generator loss ``mean (D(G(z)) − 1)²`` (Mao et al., 2017, eq. 2)."""
    return (fake_scores - 1).pow(2).mean()


def lsgan_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Least-squares GAN discriminator loss ``mean (D(x) − 1)² + mean D(G(z))²`` (Mao et al.,
    2017, eq. 2 with a = 0, b = 1, without the ½; as ChimeraMix)."""
    return (real_scores - 1).pow(2).mean() + fake_scores.pow(2).mean()
