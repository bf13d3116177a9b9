"""Glass-blur pixel shuffling: the reference's sequential local moves, computed exactly in batch.

The reference (Hendrycks & Dietterich 2019, ``glass_blur``) visits the pixels in reverse raster
order — rows h = H-δ, ..., δ+1, and within a row columns w = W-δ, ..., δ+1 — draws
(dx, dy) ~ randint(-δ, δ) (so -δ..δ-1) and executes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``
with (h', w') = (h+dy, w+dx). On an RGB array those are numpy *views* of pixel rows, so the
second assignment reads the already overwritten pixel: the statement copies x[h', w'] into
x[h, w] and leaves x[h', w'] as it was (numpy/numpy#14428). That copy is what produced the
released CIFAR-10-C / ImageNet-C data, so it is the default here; ``swap=True`` gives the
intended exchange.

Either way a pass is a composition of N maps, output[q] = input[σ(q)] with
σ = φ_1 ∘ φ_2 ∘ … ∘ φ_N (φ_t moves one pixel). Composition is associative, so σ is regrouped by
rows, σ = ρ_1 ∘ ρ_2 ∘ … with ρ_i the composition of row i's moves. ρ_i only depends on row i's
offsets and only touches the band of 2δ rows around row i, so all rows' ρ_i are built at once —
one batched step per column, over every image and row — and then composed in visiting order, one
batched gather per row: W + H tensor steps instead of H·W Python iterations, bit-identical to the
sequential loop for the same offsets (tested against it), for any δ.
"""

from __future__ import annotations

import torch
from torch import Tensor


def local_shuffle_map(
    offsets: Tensor, height: int, width: int, delta: int, swap: bool = False
) -> Tensor:
    """Source index map of one glass-blur shuffling pass, exactly as the sequential reference.

    ``offsets``: (B, H-2δ, W-2δ, 2) integer (dx, dy) in -δ..δ-1 for the visits in the reference's
    order (row slot i is row H-δ-i, column slot j is column W-δ-j). Returns (B, H·W) long ``src``
    with shuffled.flatten()[q] = image.flatten()[src[q]]. ``swap=False``: each visit copies its
    neighbour into (h, w) (the reference's actual behaviour on RGB arrays); ``swap=True``:
    each visit exchanges the two pixels.
    """
    b, nh, nw, _ = offsets.shape
    dev = offsets.device
    k = 2 * delta
    n = b * nh
    off = offsets.long().reshape(n, nw, 2)
    # ρ_i for every image and row at once, as global flat source indices over its band
    # (2δ rows starting at H-2δ-i): moving pixel contents = moving these entries
    slot = torch.arange(nh, device=dev).repeat(b).view(-1, 1)
    band = (height - 2 * delta - slot) * width + torch.arange(k * width, device=dev).view(1, -1)
    centre = delta * width + (width - delta - torch.arange(nw, device=dev))  # (h, w) in its band
    target = centre.view(1, -1) + off[..., 1] * width + off[..., 0]
    for j in range(nw):
        here = centre[j].expand(n, 1)
        there = target[:, j : j + 1]
        moved_here = band.gather(1, there)
        if swap:
            band.scatter_(1, there, band.gather(1, here))
        band.scatter_(1, here, moved_here)
    band = band.view(b, nh, k * width)
    # σ = ρ_1 ∘ ρ_2 ∘ …: S <- S ∘ ρ_i changes S only on row i's band
    src = torch.arange(height * width, device=dev).repeat(b, 1)
    for i in range(nh):
        start = (height - 2 * delta - i) * width
        src[:, start : start + k * width] = src.gather(1, band[:, i])
    return src
