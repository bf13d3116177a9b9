"""Synthesis of pseudo-negatives for introspective learning, and the pool that keeps them.

Both samplers run batched on the training device with the model in eval mode
(:func:`robustlab.models.base.eval_mode`) and differentiate the score with respect to the pixels
only (:func:`robustlab.attacks.gradients.input_gradient`, the attacks' machinery): no parameter
gets a ``.grad``. A *score* is an attack objective ``score(model, x, classes) -> (B,)``, one value
per image, each depending on its own image only (eval mode), so an image's chain never depends
on the others in its batch.

- :func:`langevin` (ICN, Jin et al. NeurIPS 2017, Sec. 3; SGD-Langevin, Welling & Teh 2011):
  ``x_{t+1} = clip_[0,1](x_t + (λ_t / 2) · ∇_x score(x_t) + η_t)``, ``η_t ~ N(0, σ_t²)``, with the
  step annealed geometrically from λ_0 to ``final_ratio`` · λ_0 over the T steps,
  ``λ_t = λ_0 · final_ratio^(t / (T − 1))``, and the noise following it,
  ``σ_t = σ_0 · sqrt(λ_t / λ_0)`` (σ_0² = λ_0 would be exact Langevin dynamics). ASSUMPTIONS:
  ICN anneals λ but publishes neither schedule nor values; the defaults (λ_0 = 1, σ_0 = 0.01,
  60 steps, ratio 0.1) were chosen here so that noise images reach positive evidence for their
  class on a trained small CNN (evidence −15 → +13 on digits), with noise far below
  Langevin's sqrt(λ_0) so the pictures stay readable.
- :func:`adam_synthesis` (WINN's released code): Adam on the pixels minimising ``−score``
  (lr 0.02, β = (0.9, 0.9), at most 2,000 steps), each image stopping as soon as its own
  ``|W(x) − thr| ≤ tolerance``; clipped to [0, 1] after every step.

:class:`NegativePool`: a fixed-capacity **ring buffer per class** (policy: once a class holds
``capacity`` images, each new one overwrites the oldest), saved in the checkpoint so a resumed
run continues with the same pool bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from robustlab.attacks.gradients import input_gradient
from robustlab.attacks.objectives import Objective
from robustlab.errors import check
from robustlab.models.base import eval_mode
from robustlab.randomness import normal


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def options_from(cls: type, options: Mapping | None, where: str):
    """``cls(**options)`` of a settings dataclass; an unknown key is a one-line ConfigError."""
    options = dict(options or {})
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(known))
    check(not unknown, f"{where} has unknown key(s) {unknown}; known: {known}")
    return cls(**options)


@dataclass(frozen=True)
class LangevinSettings:
    """``steps`` T, ``step_size`` λ_0, ``noise`` σ_0, ``final_ratio`` λ_{T−1} / λ_0."""

    steps: int = 60
    step_size: float = 1.0
    noise: float = 0.01
    final_ratio: float = 0.1

    def check(self, where: str) -> None:
        check(_integer(self.steps, 1), f"{where}.steps must be an integer >= 1, got {self.steps!r}")
        check(
            _number(self.step_size) and self.step_size > 0,
            f"{where}.step_size must be > 0, got {self.step_size!r}",
        )
        check(
            _number(self.noise) and self.noise >= 0,
            f"{where}.noise must be >= 0, got {self.noise!r}",
        )
        check(
            _number(self.final_ratio) and 0 < self.final_ratio <= 1,
            f"{where}.final_ratio must be in (0, 1], got {self.final_ratio!r}",
        )

    def schedule(self) -> list[tuple[float, float]]:
        """(λ_t, σ_t) for t = 0 … T−1 (module docstring)."""
        last = max(self.steps - 1, 1)
        steps = [self.step_size * self.final_ratio ** (t / last) for t in range(self.steps)]
        return [(lam, self.noise * (lam / self.step_size) ** 0.5) for lam in steps]


@dataclass(frozen=True)
class AdamSynthesisSettings:
    """WINN's pixel optimiser: ``lr``, ``betas``, ``max_steps``, early-stop ``tolerance`` on
    |W(x) − thr|, ``ce_weight`` of the class term of the score."""

    lr: float = 0.02
    betas: tuple[float, float] = (0.9, 0.9)
    max_steps: int = 2000
    tolerance: float = 1e-3
    ce_weight: float = 0.5
    eps: float = 1e-8

    def check(self, where: str) -> None:
        check(_number(self.lr) and self.lr > 0, f"{where}.lr must be > 0, got {self.lr!r}")
        betas = list(self.betas) if isinstance(self.betas, list | tuple) else []
        check(
            len(betas) == 2 and all(_number(b) and 0 <= b < 1 for b in betas),
            f"{where}.betas must be two numbers in [0, 1), got {self.betas!r}",
        )
        check(
            _integer(self.max_steps, 1),
            f"{where}.max_steps must be an integer >= 1, got {self.max_steps!r}",
        )
        check(
            _number(self.tolerance) and self.tolerance >= 0,
            f"{where}.tolerance must be >= 0, got {self.tolerance!r}",
        )
        check(
            _number(self.ce_weight) and self.ce_weight >= 0,
            f"{where}.ce_weight must be >= 0, got {self.ce_weight!r}",
        )


def langevin(
    score: Objective,
    model: nn.Module,
    x: Tensor,
    classes: Tensor,
    settings: LangevinSettings,
    generator: torch.Generator,
) -> Tensor:
    """SGD-Langevin ascent of ``score`` from ``x`` (module docstring); returns the final images
    (detached, in [0, 1]). Noise comes from ``generator`` only."""
    with eval_mode(model):
        for step_size, noise in settings.schedule():
            _, grad = input_gradient(score, model, x, classes)
            eta = normal(tuple(x.shape), 0.0, noise, generator, x.device, x.dtype)
            x = (x + 0.5 * step_size * grad + eta).clamp_(0.0, 1.0)
    return x.detach()


def adam_synthesis(
    score: Objective,
    model: nn.Module,
    x: Tensor,
    classes: Tensor,
    settings: AdamSynthesisSettings,
    distance: Callable[[], Tensor],
) -> tuple[Tensor, int]:
    """Adam on the pixels minimising ``−score`` (WINN); image i stops once ``distance()[i]``
    (|W(x_i) − thr_i| of the latest score call) is within ``settings.tolerance``. Returns the
    images (detached, in [0, 1]) and the steps taken by the slowest image."""
    beta1, beta2 = settings.betas
    first, second = torch.zeros_like(x), torch.zeros_like(x)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    x = x.detach().clone()
    taken = 0
    with eval_mode(model):
        for step in range(1, settings.max_steps + 1):
            _, grad = input_gradient(score, model, x, classes)
            active &= distance() > settings.tolerance
            if not bool(active.any()):
                break
            taken = step
            grad = -grad  # minimise −score
            rows = active.view(-1, *([1] * (x.dim() - 1)))
            first = torch.where(rows, beta1 * first + (1 - beta1) * grad, first)
            second = torch.where(rows, beta2 * second + (1 - beta2) * grad * grad, second)
            # every active image has taken exactly `step` steps (stopped ones never resume)
            m_hat = first / (1 - beta1**step)
            v_hat = second / (1 - beta2**step)
            update = settings.lr * m_hat / (v_hat.sqrt() + settings.eps)
            x = torch.where(rows, (x - update).clamp(0.0, 1.0), x)
    return x.detach(), taken


class NegativePool:
    """Pseudo-negatives per class in a fixed-capacity ring buffer (the oldest image of a class is
    overwritten once it holds ``capacity``). Storage is allocated on the first :meth:`add`
    (shape (K, capacity, C, H, W)); :meth:`state_dict` / :meth:`load_state_dict` carry it in
    checkpoints (plain tensors: ``weights_only`` loadable)."""

    def __init__(self, num_classes: int, capacity: int):
        check(
            _integer(capacity, 1), f"method.pool_capacity must be an integer >= 1, got {capacity!r}"
        )
        self.num_classes, self.capacity = int(num_classes), int(capacity)
        self.images: Tensor | None = None
        self.filled = torch.zeros(self.num_classes, dtype=torch.long)  # images held per class
        self.written = torch.zeros(self.num_classes, dtype=torch.long)  # images ever added

    def __len__(self) -> int:
        return int(self.filled.sum())

    def to(self, device: torch.device | str) -> NegativePool:
        if self.images is not None:
            self.images = self.images.to(device)
        return self

    def add(self, images: Tensor) -> None:
        """Add ``images`` (K, n, C, H, W): n new images of every class, in order."""
        check(
            images.dim() >= 3 and images.shape[0] == self.num_classes,
            f"the pool takes (K={self.num_classes}, n, ...) images, got {tuple(images.shape)}",
        )
        if self.images is None:
            self.images = images.new_zeros((self.num_classes, self.capacity, *images.shape[2:]))
        images = images.to(self.images.device, self.images.dtype)
        for k in range(self.num_classes):
            # images that a later one of the same call would overwrite are skipped
            self.written[k] += max(len(images[k]) - self.capacity, 0)
            for image in images[k][-self.capacity :]:
                self.images[k, int(self.written[k]) % self.capacity] = image
                self.written[k] += 1
            self.filled[k] = min(int(self.written[k]), self.capacity)

    def newest(self, k: int, n: int) -> Tensor:
        """The ``n`` most recent images of class ``k`` (fewer if it holds fewer), oldest first."""
        count = min(n, int(self.filled[k]))
        if self.images is None or count == 0:
            return torch.empty(0)
        end = int(self.written[k])
        slots = torch.arange(end - count, end) % self.capacity
        return self.images[k, slots.to(self.images.device)]

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``count`` images drawn uniformly, with replacement, from every image the pool holds;
        returns (images, their classes)."""
        check(self.images is not None and len(self) > 0, "the pseudo-negative pool is empty")
        draws = torch.randint(0, len(self), (count,), generator=generator, device=generator.device)
        offsets = torch.cumsum(self.filled, 0)
        classes = torch.searchsorted(offsets.to(draws.device), draws, right=True)
        starts = (offsets - self.filled).to(draws.device)
        slots = draws - starts[classes]
        device = self.images.device
        classes, slots = classes.to(device), slots.to(device)
        return self.images[classes, slots], classes

    def state_dict(self) -> dict[str, Tensor | int]:
        state: dict[str, Tensor | int] = {
            "capacity": self.capacity,
            "filled": self.filled.clone(),
            "written": self.written.clone(),
        }
        if self.images is not None:
            state["images"] = self.images.detach().cpu().clone()
        return state

    def load_state_dict(self, state: Mapping[str, Tensor | int]) -> None:
        check(
            int(state["capacity"]) == self.capacity and len(state["filled"]) == self.num_classes,
            f"the checkpoint's pseudo-negative pool ({len(state['filled'])} classes x "
            f"{int(state['capacity'])}) does not fit this run's ({self.num_classes} x "
            f"{self.capacity}); keep method.pool_capacity as it was",
        )
        device = self.images.device if self.images is not None else "cpu"
        self.filled = state["filled"].clone().long()
        self.written = state["written"].clone().long()
        images = state.get("images")
        self.images = None if images is None else images.clone().to(device)
