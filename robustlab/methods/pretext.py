"""Self-supervised pretext tasks: rotation and jigsaw labels made from unlabelled images.

A task turns a batch ``x`` (B, C, H, W) into ``V`` labelled views per image: ``labels`` (B, V)
are drawn once per batch (:meth:`PretextTask.sample_labels`), ``transform(x, labels)`` returns
the views (B·V, C, H, W) in example-major order, ``invert(views, labels)`` undoes it exactly. A
linear head ``nn.Linear(feature_dim, num_classes)`` on the shared backbone features predicts the
label; :func:`pretext_loss` is its per-example cross-entropy, differentiable in ``x`` so that an
attack can ascend it.

- Rotation (Gidaris et al., ICLR 2018; Hendrycks et al., NeurIPS 2019): 4 classes, rotation by
  k·90°; ``views="all"`` puts all four rotations of every image in the batch (Hendrycks),
  ``views="random"`` one random rotation per image.
- Jigsaw (Noroozi & Favaro, ECCV 2016; Chen et al., CVPR 2020): a g×g grid of patches shuffled
  by one of P fixed permutations chosen greedily for a large minimum Hamming distance; Chen et
  al. use g = 4 and P = 31 (identity + 30) with the identity forced ~10% of the time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab import randomness
from robustlab.errors import ConfigError, check
from robustlab.registry import check_known


# ----------------------------------------------------------------------------- rotation
def rotate(x: Tensor, k: Tensor) -> Tensor:
    """Rotate image i of ``x`` (B, C, H, H) by ``k[i]``·90° counter-clockwise (k in 0..3)."""
    check(x.shape[-1] == x.shape[-2], f"rotation needs square images, got {tuple(x.shape[-2:])}")
    out = torch.empty_like(x)
    k = k.to(x.device)
    for quarter in range(4):
        index = (k % 4 == quarter).nonzero(as_tuple=True)[0]
        if index.numel():
            out[index] = torch.rot90(x[index], quarter, dims=(-2, -1))
    return out


# ----------------------------------------------------------------------------- jigsaw
def hamming_distances(perms: Tensor) -> Tensor:
    """Pairwise Hamming distances (P, P) between the rows of ``perms`` (P, n)."""
    return (perms[:, None, :] != perms[None, :, :]).sum(-1)


def min_hamming_distance(perms: Tensor) -> int:
    """The smallest Hamming distance between two different permutations of the set."""
    d = hamming_distances(perms).float()
    d.fill_diagonal_(float("inf"))
    return int(d.min().item())


def permutation_set(
    n: int, size: int, seed: int = 0, candidates: int = 2000, include_identity: bool = True
) -> Tensor:
    """``size`` permutations of ``range(n)`` with a large minimum Hamming distance (P, n).

    Greedy max-min selection (Noroozi & Favaro 2016): start from the identity (or the first
    candidate), then repeatedly add the candidate whose minimum distance to the chosen set is
    largest (first such on ties). Candidates are all n! permutations when n! ≤ ``candidates``,
    else ``candidates`` random ones drawn with ``seed``: same arguments ⇒ same set.
    """
    check(n >= 2, f"a permutation set needs n >= 2 items, got {n}")
    check(
        1 <= size <= math.factorial(n),
        f"permutation set size must be in [1, {n}!] = [1, {math.factorial(n)}], got {size}",
    )
    if math.factorial(n) <= candidates:
        pool = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)
    else:
        generator = torch.Generator().manual_seed(int(seed))
        pool = torch.stack([torch.randperm(n, generator=generator) for _ in range(candidates)])
        pool = torch.unique(torch.cat([torch.arange(n)[None], pool]), dim=0)
        pool = pool[torch.randperm(len(pool), generator=generator)]
        check(len(pool) >= size, f"only {len(pool)} distinct candidates for {size} permutations")
    identity = torch.arange(n)
    first = identity if include_identity else pool[0]
    chosen = [first]
    distance = (pool != first).sum(1)  # min distance of each candidate to the chosen set
    distance[(pool == first).all(1)] = -1
    while len(chosen) < size:
        best = int(distance.argmax())
        chosen.append(pool[best])
        distance = torch.minimum(distance, (pool != pool[best]).sum(1))
        distance[best] = -1
    return torch.stack(chosen)


def _patches(x: Tensor, grid: int) -> tuple[Tensor, int, int]:
    """The g×g patches (B, g², C, ph, pw) of the top-left ``g·⌊H/g⌋ × g·⌊W/g⌋`` region."""
    b, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    check(ph >= 1 and pw >= 1, f"a {grid}x{grid} jigsaw needs images of >= {grid} pixels")
    region = x[:, :, : grid * ph, : grid * pw]
    patches = region.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, grid * grid, c, ph, pw), ph, pw


def shuffle_patches(x: Tensor, perms: Tensor, grid: int) -> Tensor:
    """Image i with patch ``perms[i, j]`` moved to grid cell j (row-major); pixels beyond the
    largest multiple of ``grid`` stay in place. ``perms`` (B, g²)."""
    b, c, h, w = x.shape
    patches, ph, pw = _patches(x, grid)
    index = perms.to(x.device)[:, :, None, None, None].expand_as(patches)
    shuffled = torch.gather(patches, 1, index)
    shuffled = shuffled.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    out = x.clone()
    out[:, :, : grid * ph, : grid * pw] = shuffled.reshape(b, c, grid * ph, grid * pw)
    return out


# ----------------------------------------------------------------------------- tasks
class PretextTask:
    """Base class: ``num_classes`` labels, ``views`` per image (see module docstring)."""

    name = "pretext"
    num_classes = 1
    views = 1

    def sample_labels(
        self,
        batch: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Labels (batch, views) for a batch; ``generator`` makes them reproducible."""
        raise NotImplementedError

    def transform(self, x: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def invert(self, views: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError


class Rotation(PretextTask):
    """Predict the rotation k·90° (4 classes). ``views``: ``all`` (the four rotations of every
    image, Hendrycks et al. 2019) or ``random`` (one uniformly drawn rotation per image)."""

    name = "rotation"
    num_classes = 4

    def __init__(self, views: str = "all"):
        check(
            views in ("all", "random"),
            f"method.pretext_options.rotation.views must be 'all' or 'random', got {views!r}",
        )
        self.mode = views
        self.views = 4 if views == "all" else 1

    def sample_labels(
        self,
        batch: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if self.mode == "all":
            return torch.arange(4, device=device).repeat(batch, 1)
        return randomness.randint((batch, 1), 0, 4, generator, device)

    def transform(self, x: Tensor, labels: Tensor) -> Tensor:
        return rotate(x.repeat_interleave(labels.shape[1], dim=0), labels.reshape(-1))

    def invert(self, views: Tensor, labels: Tensor) -> Tensor:
        flat = rotate(views, -labels.reshape(-1))
        return flat.reshape(labels.shape[0], labels.shape[1], *views.shape[1:])[:, 0]


class Jigsaw(PretextTask):
    """Predict which of ``permutations`` fixed patch shufflings of a ``grid``×``grid`` grid was
    applied. Label 0 is the identity when ``include_identity``; ``identity_prob`` (e.g. 0.1,
    Chen et al. 2020) forces it that often, the other labels being uniform over the rest."""

    name = "jigsaw"

    def __init__(
        self,
        grid: int = 2,
        permutations: int = 24,
        seed: int = 0,
        include_identity: bool = True,
        identity_prob: float | None = None,
        candidates: int = 2000,
    ):
        check(
            isinstance(grid, int) and grid >= 2,
            f"method.pretext_options.jigsaw.grid must be an integer >= 2, got {grid!r}",
        )
        check(
            identity_prob is None or (include_identity and 0 <= identity_prob <= 1),
            "method.pretext_options.jigsaw.identity_prob must be null or in [0, 1] "
            f"(and needs include_identity=true), got {identity_prob!r}",
        )
        self.grid = grid
        self.perms = permutation_set(grid * grid, permutations, seed, candidates, include_identity)
        self.num_classes = int(permutations)
        self.identity_prob = identity_prob
        self.views = 1

    @property
    def min_hamming_distance(self) -> int:
        return min_hamming_distance(self.perms) if self.num_classes > 1 else 0

    def sample_labels(
        self,
        batch: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if self.identity_prob is None or self.num_classes == 1:
            labels = randomness.randint((batch,), 0, self.num_classes, generator, device)
        else:
            others = randomness.randint((batch,), 1, self.num_classes, generator, device)
            coin = randomness.uniform((batch,), 0.0, 1.0, generator, device)
            labels = torch.where(coin < self.identity_prob, torch.zeros_like(others), others)
        return labels[:, None]

    def transform(self, x: Tensor, labels: Tensor) -> Tensor:
        perms = self.perms.to(x.device)[labels.reshape(-1)]
        return shuffle_patches(x, perms, self.grid)

    def invert(self, views: Tensor, labels: Tensor) -> Tensor:
        inverse = self.perms.to(views.device)[labels.reshape(-1)].argsort(dim=1)
        return shuffle_patches(views, inverse, self.grid)


PRETEXTS: dict[str, type[PretextTask]] = {"rotation": Rotation, "jigsaw": Jigsaw}


def build_pretexts(
    names: str | Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, PretextTask]:
    """Tasks by name, e.g. ``build_pretexts(["rotation", "jigsaw"], {"jigsaw": {"grid": 4}})``."""
    names = [names] if isinstance(names, str) else list(names)
    options = dict(options or {})
    check(len(names) > 0, f"method.pretext must name at least one task of {sorted(PRETEXTS)}")
    check_known([*names, *options], PRETEXTS, group="pretext task")
    check(len(set(names)) == len(names), f"method.pretext lists a task twice: {names}")
    tasks = {}
    for name in names:
        cls = PRETEXTS[name]
        kwargs = dict(options.get(name) or {})
        try:
            tasks[name] = cls(**kwargs)
        except TypeError as err:
            raise ConfigError(f"method.pretext_options.{name}: {err}") from None
    return tasks


def pretext_heads(tasks: Mapping[str, PretextTask], feature_dim: int) -> nn.ModuleDict:
    """One linear head ``Linear(feature_dim, task.num_classes)`` per task."""
    return nn.ModuleDict({n: nn.Linear(feature_dim, t.num_classes) for n, t in tasks.items()})


def pretext_logits(
    model: nn.Module, head: nn.Module, task: PretextTask, x: Tensor, labels: Tensor
) -> Tensor:
    """Head logits (B·V, num_classes) on the backbone features of the views of ``x``."""
    return head(model.features(task.transform(x, labels)))


def pretext_loss(
    model: nn.Module, head: nn.Module, task: PretextTask, x: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-example pretext loss ``(1/V) Σ_v CE(head(φ(t_v(x))), l_v)`` (B,) and the logits."""
    logits = pretext_logits(model, head, task, x, labels)
    ce = F.cross_entropy(logits, labels.reshape(-1), reduction="none")
    return ce.reshape(labels.shape).mean(dim=1), logits


__all__ = [
    "PRETEXTS",
    "Jigsaw",
    "PretextTask",
    "Rotation",
    "build_pretexts",
    "hamming_distances",
    "min_hamming_distance",
    "permutation_set",
    "pretext_heads",
    "pretext_logits",
    "pretext_loss",
    "rotate",
    "shuffle_patches",
]
