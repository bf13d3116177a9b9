"""Seeded random draws on a device: the one implementation used by corruptions, distortions,
perturbation sequences, the random start of attacks and training-time perturbations.

Every draw takes a *source* of randomness:

- ``None``: torch's global generator (ad-hoc use only, not reproducible);
- a ``torch.Generator``: numbers are drawn on the generator's device and moved to the
  requested one, so a CPU generator gives the same numbers for CPU and CUDA inputs and the same
  seed always gives the same draw (training-time draws, seeded per batch);
- :class:`ImageStreams`: one independent stream per image. A draw of shape (B, *rest) takes
  row i from the stream of image i, so an image gets the same numbers whichever batch, worker,
  process or rank it is in (evaluation draws, keyed on the image's index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class ImageStreams:
    """One ``torch.Generator`` per row of a batch; row i of every draw comes from stream i.

    Streams are consumed in call order, so the k-th draw of an image is the same however the
    images are batched. :meth:`subset` and :meth:`tile` re-arrange rows while sharing the
    underlying streams (a tiled row draws from the stream of the image it copies).
    """

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self._generators = list(generators)

    @classmethod
    def keyed(
        cls, key: Sequence[int | str], indices: Tensor, device: torch.device | str
    ) -> ImageStreams:
        """Streams for images ``indices`` (global image indices), stream i seeded with
        ``derive_seed(key[0], *key[1:], indices[i])``; generators live on ``device``."""
        from robustlab.data.seeding import derive_seed  # robustlab.data imports imageops

        seed, *words = key
        generators = []
        for index in indices.tolist():
            generator = torch.Generator(device=device)
            generator.manual_seed(derive_seed(int(seed), *words, int(index)))
            generators.append(generator)
        return cls(generators)

    def __len__(self) -> int:
        return len(self._generators)

    @property
    def device(self) -> torch.device:
        return self._generators[0].device if self._generators else torch.device("cpu")

    def subset(self, rows: Tensor | Sequence[int]) -> ImageStreams:
        """The streams of ``rows`` (e.g. the images that share one choice of distortion)."""
        rows = rows.tolist() if isinstance(rows, Tensor) else rows
        return ImageStreams([self._generators[int(r)] for r in rows])

    def tile(self, times: int) -> ImageStreams:
        """Rows ``[0..B-1] * times``: row t·B + i draws from stream i (e.g. frames of a video)."""
        return ImageStreams(self._generators * int(times))

    def pairs(self, rows: Tensor) -> list[tuple[Tensor, torch.Generator]]:
        """(row i of ``rows``, stream i) for every row."""
        if len(rows) != len(self):
            raise ValueError(f"{len(rows)} rows for {len(self)} per-image streams")
        return list(zip(rows, self._generators, strict=True))

    def draw(self, shape: Sequence[int], sample: Callable[..., Tensor], device) -> Tensor:
        """Stack ``sample(rest, generator)`` over the rows of a (B, *rest) draw."""
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self):
            raise ValueError(
                f"a per-image draw needs shape (B, ...) with B = {len(self)} images, got {shape}"
            )
        return torch.stack([sample(shape[1:], g) for g in self._generators]).to(device)


#: Where random numbers come from (see the module docstring).
RandomSource = torch.Generator | ImageStreams | None


def rows_of(source: RandomSource, rows: Tensor) -> RandomSource:
    """The source for a subset ``rows`` of the batch: those images' streams, or the same
    generator (then consumed in call order)."""
    return source.subset(rows) if isinstance(source, ImageStreams) else source


def _draw(
    fn: Callable[..., Tensor],
    shape: Sequence[int],
    source: RandomSource,
    device: torch.device | str,
    **kwargs,
) -> Tensor:
    """``fn(shape, generator=..., device=..., **kwargs)`` from ``source``, on ``device``."""
    device = torch.device(device)
    if isinstance(source, ImageStreams):
        if len(shape) and shape[0] == 0:
            return fn(tuple(shape), device=device, **kwargs)

        def sample(rest, generator):
            return fn(rest, generator=generator, device=source.device, **kwargs)

        return source.draw(shape, sample, device)
    src = source.device if source is not None else device
    return fn(tuple(shape), generator=source, device=src, **kwargs).to(device)


def uniform(
    shape: Sequence[int],
    low: float | Tensor,
    high: float | Tensor,
    source: RandomSource,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """U[low, high) samples of ``shape``."""
    u = _draw(torch.rand, shape, source, device, dtype=dtype)
    return low + (high - low) * u


def normal(
    shape: Sequence[int],
    mean: float,
    std: float,
    source: RandomSource,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """N(mean, std²) samples of ``shape``."""
    return _draw(torch.randn, shape, source, device, dtype=dtype).mul_(std).add_(mean)


def randint(
    shape: Sequence[int], low: int, high: int, source: RandomSource, device: torch.device | str
) -> Tensor:
    """Integers uniform in [low, high) (numpy's ``randint`` convention), int64."""

    def integers(size, generator=None, device=None):
        return torch.randint(low, high, size, generator=generator, device=device)

    return _draw(integers, shape, source, device)


def poisson(rates: Tensor, source: RandomSource) -> Tensor:
    """Poisson(rates) samples, same shape and device as ``rates`` (row i from stream i)."""
    if isinstance(source, ImageStreams):
        if len(rates) == 0:
            return rates.clone()
        rows = [torch.poisson(r.to(source.device), generator=g) for r, g in source.pairs(rates)]
        return torch.stack(rows).to(rates.device)
    src = source.device if source is not None else rates.device
    return torch.poisson(rates.to(src), generator=source).to(rates.device)


def randn_like(x: Tensor, source: RandomSource = None) -> Tensor:
    """Standard normal noise shaped like ``x`` (its device and dtype)."""
    return normal(tuple(x.shape), 0.0, 1.0, source, x.device, x.dtype)
