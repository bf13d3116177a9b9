"""The introspective samplers and the pseudo-negative pool step by step
(robustlab.methods.synthesis; issue 15): one Langevin step with
seeded noise and WINN's pixel Adam against hand-written references (clipping included), the
per-image stop (at the tolerance, never resumed), the settings' bounds and messages, and the
pool's shape checks, newest images, empty-pool errors, device moves and state round trips."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustlab.errors import ConfigError
from robustlab.methods.synthesis import (
    AdamSynthesisSettings,
    LangevinSettings,
    NegativePool,
    adam_synthesis,
    langevin,
)
from robustlab.randomness import normal

# per class; the score peaks at x = t / 2: outside [0, 1], so the clipping is reached
TARGETS = torch.tensor([2.4, -0.4], dtype=torch.float64)
CLASSES = [1, 0]  # image 0 is pushed down, image 1 up


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def score(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``−½ Σ_p (f(x)_p − t_k)²`` with f(x) = 2x: ∂/∂x = −2 (2x − t_k)."""
    return -0.5 * (model(x) - TARGETS[classes].view(-1, 1, 1, 1)).pow(2).flatten(1).sum(1)


def adam_by_hand(
    pixels: list[float], target: float, steps: int, lr: float, betas: tuple[float, float]
) -> list[float]:
    """Adam minimising −score for one image, pixel by pixel, clipped to [0, 1] (eps 1e-8)."""
    beta1, beta2 = betas
    out = []
    for x in pixels:
        m = v = 0.0
        for step in range(1, steps + 1):
            g = 2 * (2 * x - target)  # gradient of −score
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
            x = min(max(x - lr * m_hat / (math.sqrt(v_hat) + 1e-8), 0.0), 1.0)
        out.append(x)
    return out


START = [[0.03, 0.6], [0.97, 0.4]]  # two images of 1 × 1 × 2 pixels


def start_images() -> torch.Tensor:
    return torch.tensor(START, dtype=torch.float64).view(2, 1, 1, 2)


def test_langevin_step_adds_half_the_step_times_the_gradient_and_the_seeded_noise():
    """x₁ = clip(x₀ + (λ/2)·∇score + η), η ~ N(0, σ²) from the generator (λ = 0.3, σ = 0.05)."""
    x = start_images()
    settings = LangevinSettings(steps=1, step_size=0.3, noise=0.05)
    out = langevin(
        score, Double(), x, torch.tensor(CLASSES), settings, torch.Generator().manual_seed(4)
    )
    eta = normal((2, 1, 1, 2), 0.0, 0.05, torch.Generator().manual_seed(4), "cpu", torch.float64)
    targets = TARGETS[CLASSES].view(-1, 1, 1, 1)
    expected = (x + 0.15 * (-2) * (2 * x - targets) + eta).clamp(0, 1)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_langevin_schedule_of_one_and_two_steps():
    """λ_t = λ₀·r^(t / (T − 1)): T = 2 ends exactly at r·λ₀; T = 1 is λ₀ alone."""
    two = LangevinSettings(steps=2, step_size=0.5, noise=0.1, final_ratio=0.04).schedule()
    assert [value for pair in two for value in pair] == pytest.approx([0.5, 0.1, 0.02, 0.02])
    assert LangevinSettings(steps=1, step_size=0.5, noise=0.1).schedule() == [(0.5, 0.1)]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "m.steps must be an integer >= 1, got 0"),
        ({"steps": True}, "m.steps must be an integer >= 1, got True"),
        ({"step_size": 0}, "m.step_size must be > 0, got 0"),
        ({"step_size": -1.0}, "m.step_size must be > 0, got -1.0"),
        ({"step_size": True}, "m.step_size must be > 0, got True"),
        ({"noise": -0.1}, "m.noise must be >= 0, got -0.1"),
        ({"final_ratio": 0.0}, "m.final_ratio must be in (0, 1], got 0.0"),
        ({"final_ratio": 1.5}, "m.final_ratio must be in (0, 1], got 1.5"),
    ],
)
def test_langevin_settings_bounds(options, message):
    LangevinSettings(steps=1, noise=0.0, final_ratio=1.0).check("m")  # the inclusive bounds
    with pytest.raises(ConfigError) as error:
        LangevinSettings(**options).check("m")
    assert str(error.value) == message


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr": 0}, "a.lr must be > 0, got 0"),
        ({"lr": -1.0}, "a.lr must be > 0, got -1.0"),
        ({"betas": 0.5}, "a.betas must be two numbers in [0, 1), got 0.5"),
        ({"betas": (0.9, 1.0)}, "a.betas must be two numbers in [0, 1), got (0.9, 1.0)"),
        ({"betas": (0.9, 1.5)}, "a.betas must be two numbers in [0, 1), got (0.9, 1.5)"),
        ({"betas": (0.9,)}, "a.betas must be two numbers in [0, 1), got (0.9,)"),
        ({"max_steps": 0}, "a.max_steps must be an integer >= 1, got 0"),
        ({"tolerance": -1.0}, "a.tolerance must be >= 0, got -1.0"),
        ({"ce_weight": -1.0}, "a.ce_weight must be >= 0, got -1.0"),
    ],
)
def test_adam_settings_bounds(options, message):
    AdamSynthesisSettings(betas=(0.0, 0.5), max_steps=1, tolerance=0.0, ce_weight=0.0).check("a")
    with pytest.raises(ConfigError) as error:
        AdamSynthesisSettings(**options).check("a")
    assert str(error.value) == message


def test_adam_synthesis_takes_exact_adam_steps_until_max_steps():
    settings = AdamSynthesisSettings(lr=0.05, betas=(0.9, 0.99), max_steps=3, tolerance=0.0)
    out, taken = adam_synthesis(
        score, Double(), start_images(), torch.tensor(CLASSES), settings, lambda: torch.ones(2)
    )
    assert taken == 3
    for i, k in enumerate(CLASSES):
        expected = adam_by_hand(START[i], float(TARGETS[k]), 3, 0.05, (0.9, 0.99))
        assert expected[0] in (0.0, 1.0)  # the first pixel of each image is clipped
        assert out[i].flatten().tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_adam_synthesis_stops_an_image_at_the_tolerance_and_never_resumes_it():
    # image 0's distance: 1, then exactly the tolerance (stop), then above it again
    distances = iter([[1.0, 1.0], [0.5, 1.0], [1.0, 1.0], [1.0, 1.0]])
    settings = AdamSynthesisSettings(lr=0.05, betas=(0.9, 0.99), max_steps=3, tolerance=0.5)
    out, taken = adam_synthesis(
        score,
        Double(),
        start_images(),
        torch.tensor(CLASSES),
        settings,
        lambda: torch.tensor(next(distances)),
    )
    assert taken == 3
    one_step = adam_by_hand(START[0], float(TARGETS[1]), 1, 0.05, (0.9, 0.99))
    three_steps = adam_by_hand(START[1], float(TARGETS[0]), 3, 0.05, (0.9, 0.99))
    assert out[0].flatten().tolist() == pytest.approx(one_step, rel=1e-12)
    assert out[1].flatten().tolist() == pytest.approx(three_steps, rel=1e-12)


def test_adam_synthesis_of_converged_images_takes_no_step():
    settings = AdamSynthesisSettings(max_steps=5, tolerance=1e-3)
    x = start_images()
    out, taken = adam_synthesis(
        score, Double(), x, torch.tensor([0, 1]), settings, lambda: torch.zeros(2)
    )
    assert taken == 0
    assert torch.equal(out, x)


# ------------------------------------------------------------------------------ pool
def test_pool_capacity_must_be_a_positive_integer_and_counts_are_integers():
    with pytest.raises(ConfigError) as error:
        NegativePool(num_classes=2, capacity=0)
    assert str(error.value) == "method.pool_capacity must be an integer >= 1, got 0"
    state = NegativePool(num_classes=2, capacity=1).state_dict()
    assert state["filled"].dtype == state["written"].dtype == torch.int64


def test_pool_takes_k_by_n_images_of_any_shape_and_refuses_others():
    pool = NegativePool(num_classes=2, capacity=2)
    pool.add(torch.arange(6.0).view(2, 3, 1))  # (K, n, D): three vectors of one number per class
    assert pool.images.shape == (2, 2, 1)
    assert pool.newest(0, 2).flatten().tolist() == [1.0, 2.0]
    message = r"the pool takes \(K=2, n, \.\.\.\) images, got \(2, 3\)"
    with pytest.raises(ConfigError, match=message):
        pool.add(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match=r"got \(3, 1, 1, 1, 1\)"):
        pool.add(torch.zeros(3, 1, 1, 1, 1))


def test_newest_returns_only_the_newest_and_nothing_from_an_empty_pool():
    pool = NegativePool(num_classes=1, capacity=3)
    assert pool.newest(0, 2).numel() == 0
    pool.add(torch.tensor([[[1.0], [2.0]]]))
    assert pool.newest(0, 1).flatten().tolist() == [2.0]
    assert pool.newest(0, 0).numel() == 0


def test_sampling_an_empty_pool_is_a_config_error_and_one_image_is_enough():
    with pytest.raises(ConfigError, match="^the pseudo-negative pool is empty$"):
        NegativePool(num_classes=2, capacity=2).sample(1, torch.Generator())
    # storage allocated, nothing held
    holding = NegativePool(num_classes=1, capacity=2)
    holding.load_state_dict(
        {
            "capacity": 2,
            "filled": torch.zeros(1, dtype=torch.long),
            "written": torch.zeros(1, dtype=torch.long),
            "images": torch.zeros(1, 2, 1),
        }
    )
    with pytest.raises(ConfigError, match="the pseudo-negative pool is empty"):
        holding.sample(1, torch.Generator())
    single = NegativePool(num_classes=1, capacity=1)
    single.add(torch.tensor([[[7.0]]]))
    images, classes = single.sample(3, torch.Generator().manual_seed(0))
    assert images.flatten().tolist() == [7.0, 7.0, 7.0] and classes.tolist() == [0, 0, 0]


def test_pool_moves_its_images_to_a_device_and_returns_itself():
    pool = NegativePool(num_classes=1, capacity=2)
    assert pool.to("meta") is pool and pool.images is None  # nothing to move yet
    pool.add(torch.ones(1, 1, 3))
    assert pool.to("meta") is pool
    assert pool.images.device.type == "meta" and pool.images.shape == (1, 2, 3)


def test_pool_state_round_trips_empty_and_a_restored_pool_keeps_its_ring_order():
    empty = NegativePool(num_classes=2, capacity=2)
    empty.load_state_dict(NegativePool(num_classes=2, capacity=2).state_dict())
    assert empty.images is None and len(empty) == 0
    pool = NegativePool(num_classes=1, capacity=2)
    pool.add(torch.tensor([[[1.0], [2.0], [3.0]]]))  # holds 2, 3; 2 is the oldest
    restored = NegativePool(num_classes=1, capacity=2)
    restored.load_state_dict(pool.state_dict())
    restored.add(torch.tensor([[[4.0]]]))  # overwrites 2
    assert restored.newest(0, 2).flatten().tolist() == [3.0, 4.0]
    assert restored.written.tolist() == [4]
