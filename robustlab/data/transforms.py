"""torchvision (PIL) transforms of the ordinary DataLoader path.

The per-image counterpart of :mod:`robustlab.data.augment`: ``RandomCrop(size, padding=p)`` pads
with zeros and picks a uniform window, ``RandomHorizontalFlip()`` flips with probability 1/2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torchvision import transforms as T


def pil_transform(
    *,
    crop_padding: int = 0,
    flip: bool = False,
    size: tuple[int, int] | None = None,
    pre: Sequence[Callable] = (),
) -> Callable:
    """``pre`` (e.g. Resize/CenterCrop), RandomCrop(size, padding), flip (if asked), ToTensor."""
    steps = list(pre)
    if crop_padding > 0:
        if size is None:
            raise ValueError("RandomCrop needs the image size")
        steps.append(T.RandomCrop(size, padding=crop_padding))
    if flip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    return T.Compose(steps)
