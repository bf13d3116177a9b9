"""Tests for robustlab.attacks: geometry, hand-computed steps, and attacks on a trained model."""

from __future__ import annotations

import importlib.metadata
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import (
    Attack,
    AutoAttack,
    ascent_direction,
    autoattack,
    build_attack,
    cross_entropy,
    fgsm,
    perturbation_norm,
    pgd,
    project,
    random_init,
    sanity_flags,
    weighted_sum,
)
from robustlab.errors import ConfigError

NORMS = ("linf", "l2")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack=None, **kwargs) -> float:
    """Top-1 accuracy of ``model`` on ``x``, or on ``attack(model, x, y, **kwargs)``."""
    if attack is not None:
        x = attack(model, x, y, **kwargs)
    with torch.no_grad():
        return model(x).argmax(1).eq(y).float().mean().item()


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("norm", NORMS)
def test_projection_bounds_big_perturbations_and_keeps_small_ones(norm):
    g = _gen(1)
    eps = 0.3
    big = 5 * torch.randn(64, 3, 8, 8, generator=g)
    projected = project(big, eps, norm)
    sizes = perturbation_norm(projected, norm)
    assert sizes.max() <= eps + 1e-6
    assert sizes.min() >= eps - 1e-5  # far outside the ball => lands on its boundary
    small = big / perturbation_norm(big, norm).view(-1, 1, 1, 1) * (0.5 * eps)
    assert torch.allclose(project(small, eps, norm), small)
    zero = torch.zeros(2, 1, 4, 4)
    assert torch.equal(project(zero, eps, norm), zero)  # no NaN from 0/0


def test_l2_projection_hand_computed():
    delta = torch.tensor([3.0, 4.0]).view(1, 1, 1, 2)  # norm 5
    assert torch.allclose(project(delta, 1.0, "l2").flatten(), torch.tensor([0.6, 0.8]))
    assert torch.allclose(project(delta, 1.0, "linf").flatten(), torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_inside_ball_nontrivial_and_seeded(norm):
    eps = 0.1
    x = torch.full((32, 3, 8, 8), 0.5)
    start = random_init(x, eps, norm, _gen(3))
    sizes = perturbation_norm(start - x, norm)
    assert sizes.max() <= eps + 1e-6
    if norm == "linf":
        assert (start - x).abs().mean() == pytest.approx(eps / 2, rel=0.05)  # E|U(-e,e)| = e/2
    else:
        assert sizes.min() > 0.9 * eps  # d = 192: radius e*U^(1/d) is close to e
    assert torch.equal(start, random_init(x, eps, norm, _gen(3)))
    assert not torch.equal(start, random_init(x, eps, norm, _gen(4)))
    edge = random_init(torch.zeros(4, 1, 8, 8), 0.5, norm, _gen(0))
    assert edge.min() >= 0 and edge.max() <= 1


def test_l2_random_init_is_uniform_in_the_disc():
    # In d = 2, P(r < eps/2) = (1/2)^2 = 1/4 for a uniform point in the disc.
    eps = 0.2
    x = torch.full((20000, 1, 1, 2), 0.5)
    radius = perturbation_norm(random_init(x, eps, "l2", _gen(5)) - x, "l2")
    assert (radius < eps / 2).float().mean().item() == pytest.approx(0.25, abs=0.015)


def test_ascent_direction_unit_and_safe_for_zero_gradient():
    g = torch.randn(5, 3, 4, 4, generator=_gen(2))
    g[0] = 0
    l2 = ascent_direction(g, "l2")
    assert torch.allclose(perturbation_norm(l2[1:], "l2"), torch.ones(4))
    assert torch.equal(l2[0], torch.zeros_like(l2[0]))
    assert torch.equal(ascent_direction(g, "linf"), g.sign())
    assert torch.isfinite(l2).all()


# --------------------------------------------------------------------------- hand-computed steps


class _Linear(nn.Module):
    """logits = (0, w·x): for label 0, ∇ₓ CE = p₁ · w, so ascent moves along +w."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.fc = nn.Linear(w.numel(), 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([torch.zeros_like(w), w]))

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture()
def linear():
    w = torch.tensor([0.5, -1.0, 2.0, -0.25, 1.5, -3.0, 0.75, 1.0, -2.0])
    return _Linear(w), w.view(1, 1, 3, 3)


@pytest.mark.parametrize("norm", NORMS)
def test_one_step_moves_exactly_along_the_gradient(linear, norm):
    model, w = linear
    eps = 0.1
    x = torch.full((2, 1, 3, 3), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    expected = eps * (w.sign() if norm == "linf" else w / w.norm())
    out = fgsm(model, x, y, eps=eps, norm=norm)
    assert torch.allclose(out - x, expected.expand_as(x), atol=1e-6)
    one = pgd(model, x, y, eps=eps, steps=1, step_size=eps, norm=norm, random_start=False)
    assert torch.allclose(one - x, expected.expand_as(x), atol=1e-6)
    # targeted towards the true class 0: descend instead of ascend
    towards = fgsm(model, x, y, eps=eps, norm=norm, targeted=True)
    assert torch.allclose(towards - x, -expected.expand_as(x), atol=1e-6)
    # a smaller step moves by exactly that step
    half = pgd(model, x, y, eps=eps, steps=1, step_size=eps / 2, norm=norm, random_start=False)
    assert torch.allclose(half - x, expected.expand_as(x) / 2, atol=1e-6)


def test_many_steps_saturate_at_the_ball_corner(linear):
    model, w = linear
    x = torch.full((1, 1, 3, 3), 0.5)
    out = pgd(model, x, torch.zeros(1, dtype=torch.long), eps=0.1, steps=7, generator=_gen(0))
    assert torch.allclose(out - x, 0.1 * w.sign(), atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_pgd_takes_exactly_steps_times_step_size_inside_the_ball(linear, norm):
    """Away from the ball's edge, k steps of size α move x by exactly k·α along dir(w)."""
    model, w = linear
    x = torch.full((2, 1, 3, 3), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    direction = w.sign() if norm == "linf" else w / w.norm()
    out = pgd(model, x, y, eps=1.0, steps=3, step_size=0.02, norm=norm, random_start=False)
    assert torch.allclose(out - x, 3 * 0.02 * direction.expand_as(x), atol=1e-6)
    # targeted towards class 1 ascends the class-1 logit w·x: the same way as untargeted y = 0;
    # towards class 0 it descends
    to_one = pgd(
        model,
        x,
        y + 1,
        eps=1.0,
        steps=3,
        step_size=0.02,
        norm=norm,
        targeted=True,
        random_start=False,
    )
    assert torch.allclose(to_one, out, atol=1e-6)
    to_zero = pgd(
        model, x, y, eps=1.0, steps=3, step_size=0.02, norm=norm, targeted=True, random_start=False
    )
    assert torch.allclose(to_zero - x, -(out - x), atol=1e-6)


@pytest.mark.parametrize("targeted", [False, True])
def test_early_stopped_pgd_freezes_each_example_at_the_step_that_fools_it(linear, targeted):
    """logits = (0, w·x): every l∞ step of size α raises w·x by α‖w‖₁, so an example starting
    at w·x₀ = −(k − ½)·α‖w‖₁ is first misclassified (class 1) after exactly k steps. Early
    stopping must keep that k-th iterate, not the last one; unfooled examples take every step."""
    model, w = linear
    alpha, steps = 0.01, 6
    per_step = alpha * w.abs().sum()
    fooled_at = torch.tensor([1, 3, 5, 8])  # 8 > steps: never fooled
    flat = w.flatten()
    base = torch.full_like(flat, 0.5)
    target = -(fooled_at.float() - 0.5) * per_step  # w·x₀ for each example
    x = base + ((target - base @ flat) / flat.dot(flat)).unsqueeze(1) * flat
    x = x.view(-1, 1, 3, 3)
    assert torch.allclose(x.flatten(1) @ flat, target, atol=1e-5)
    assert x.min() > alpha * steps and x.max() < 1 - alpha * steps  # no [0, 1] clamping
    # untargeted: the label is 0; targeted: the target is class 1 (the same way up)
    y = torch.full((4,), 1 if targeted else 0, dtype=torch.long)
    kwargs = dict(eps=1.0, steps=steps, step_size=alpha, random_start=False, targeted=targeted)
    early = pgd(model, x, y, stop_on_success=True, **kwargs)
    last = pgd(model, x, y, **kwargs)
    taken = fooled_at.clamp(max=steps).float().view(-1, 1, 1, 1)
    assert torch.allclose(early - x, taken * alpha * w.sign(), atol=1e-6)
    assert torch.allclose(last - x, steps * alpha * w.sign().expand_as(x), atol=1e-6)
    with torch.no_grad():
        assert model(early).argmax(1).tolist() == [1, 1, 1, 0]


def test_clamps_to_valid_pixels(linear):
    model, w = linear
    x = (w > 0).float().expand(3, 1, 3, 3).clone()  # pixels at 1 where the step is +, 0 where -
    out = fgsm(model, x, torch.zeros(3, dtype=torch.long), eps=0.2)
    assert torch.equal(out, x)  # every coordinate pushed outside [0, 1] and clamped back
    out = pgd(
        model,
        torch.rand(8, 1, 3, 3, generator=_gen(1)),
        torch.zeros(8, dtype=torch.long),
        eps=0.5,
        steps=3,
        norm="l2",
        generator=_gen(2),
    )
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "config"])
def test_eps_zero_returns_input_exactly(linear, attack):
    model, _ = linear
    x = torch.rand(4, 1, 3, 3, generator=_gen(0))
    y = torch.zeros(4, dtype=torch.long)
    if attack == "pgd":
        out = pgd(model, x, y, eps=0, steps=5, restarts=2)
    elif attack == "fgsm":
        out = fgsm(model, x, y, eps=0.0)
    else:
        out = build_attack("pgd", eps=0)(model, x, y)
    assert torch.equal(out, x)


def test_no_parameter_grads_mode_kept_and_grad_contexts(linear):
    model, _ = linear
    x = torch.full((2, 1, 3, 3), 0.5, dtype=torch.float64)
    model = model.double()
    y = torch.zeros(2, dtype=torch.long)
    expected = pgd(model, x, y, eps=0.1, steps=2, generator=_gen(0))
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            a = pgd(model, x, y, eps=0.1, steps=2, generator=_gen(0))
        with torch.inference_mode():
            b = pgd(model, x.clone(), y.clone(), eps=0.1, steps=2, generator=_gen(0))
        assert model.training is training
        assert torch.equal(a, expected) and torch.equal(b, expected)
        assert a.dtype == torch.float64 and not a.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_objective_decides_the_direction(linear):
    model, w = linear
    x = torch.full((2, 1, 3, 3), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    v = -10 * w  # an extra term whose gradient dominates and points against w

    def extra(model, x_adv, y):
        return (x_adv * v).flatten(1).sum(1)

    ce = fgsm(model, x, y, eps=0.1)
    mixed = fgsm(model, x, y, eps=0.1, objective=weighted_sum((1.0, cross_entropy), (1.0, extra)))
    assert torch.allclose(mixed - x, -(ce - x), atol=1e-6)
    # an objective that ignores x has zero gradient: PGD stays at its random start
    const = pgd(
        model,
        x,
        y,
        eps=0.1,
        steps=4,
        generator=_gen(7),
        objective=lambda m, xa, yy: torch.zeros(xa.shape[0]),
    )
    assert torch.equal(const, random_init(x, 0.1, "linf", _gen(7)))


def test_weighted_sum_weights_each_term(linear):
    """Σ_k w_k · objective_k per example, and the weight decides which term steers the attack."""
    model, w = linear
    x = torch.full((2, 1, 3, 3), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    v = -10 * w

    def extra(model, x_adv, y):
        return (x_adv * v).flatten(1).sum(1)

    ce, ex = cross_entropy(model, x, y), extra(model, x, y)
    both = weighted_sum((2.0, cross_entropy), (0.25, extra))(model, x, y)
    assert torch.allclose(both, 2.0 * ce + 0.25 * ex)
    # ∇ CE = p₁·w with p₁ = sigmoid(w·x); the extra term's gradient is w_extra · (−10 w)
    p1 = torch.sigmoid((w * x[:1]).sum())
    for weight in (0.01, 1.0):  # CE dominates below p₁/10, the extra term above
        objective = weighted_sum((1.0, cross_entropy), (weight, extra))
        step = fgsm(model, x, y, eps=0.1, objective=objective) - x
        sign = 1.0 if weight * 10 < p1 else -1.0
        assert torch.allclose(step, sign * 0.1 * w.sign().expand_as(x), atol=1e-6)


def test_restarts_keep_a_fooling_start_over_a_higher_objective(linear):
    """Per example, restarts keep the highest-objective start among those that fool the model,
    and only when none fools, the highest-objective start overall (steps = 0: each restart is
    its random start, drawn in turn from the generator)."""
    model, w = linear
    x = 0.5 + 0.2 * (torch.rand(300, 1, 3, 3, generator=_gen(11)) - 0.5)
    y = torch.zeros(300, dtype=torch.long)
    u = torch.randn(1, 1, 3, 3, generator=_gen(12))  # an objective unrelated to fooling

    def objective(model, x_adv, y):
        return (x_adv * u).flatten(1).sum(1)

    out = pgd(model, x, y, eps=0.3, steps=0, restarts=3, objective=objective, generator=_gen(13))
    g = _gen(13)
    starts = torch.stack([random_init(x, 0.3, "linf", g) for _ in range(3)])
    with torch.no_grad():
        fooled = torch.stack([model(s).argmax(1).ne(y) for s in starts])
    value = torch.stack([objective(model, s, y) for s in starts])
    chosen = (value + 1e3 * fooled).argmax(0)  # fooling first, then the objective
    assert torch.equal(out, starts[chosen, torch.arange(300)])
    # the rule mattered: some example's best objective is a start that does not fool
    assert (fooled.any(0) & ~fooled[value.argmax(0), torch.arange(300)]).any()


def test_targeted_restarts_keep_a_start_that_reaches_the_target(linear):
    """Targeted: success means prediction = y (the target), and the objective is minimised."""
    model, w = linear
    x = 0.5 + 0.2 * (torch.rand(300, 1, 3, 3, generator=_gen(21)) - 0.5)
    y = torch.ones(300, dtype=torch.long)  # target class 1
    u = torch.randn(1, 1, 3, 3, generator=_gen(22))

    def objective(model, x_adv, y):
        return (x_adv * u).flatten(1).sum(1)

    out = pgd(
        model,
        x,
        y,
        eps=0.3,
        steps=0,
        restarts=3,
        targeted=True,
        objective=objective,
        generator=_gen(23),
    )
    g = _gen(23)
    starts = torch.stack([random_init(x, 0.3, "linf", g) for _ in range(3)])
    with torch.no_grad():
        hit = torch.stack([model(s).argmax(1).eq(y) for s in starts])
    value = torch.stack([-objective(model, s, y) for s in starts])  # targeted ascends −objective
    chosen = (value + 1e3 * hit).argmax(0)
    assert torch.equal(out, starts[chosen, torch.arange(300)])
    assert (hit.any(0) & ~hit[value.argmax(0), torch.arange(300)]).any()
    assert (hit.any(0) & ~hit.all(0)).any()  # some examples reach the target only on some starts


def test_fgsm_is_exactly_one_step_of_size_eps():
    """An objective peaked at t = x + ε/2·s: one step of size ε lands on x + ε·s; any second
    step of that size would come back to x."""
    x = torch.full((2, 1, 2, 2), 0.5)
    s = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 1, 2, 2)
    t = x + 0.05 * s

    def peaked(model, x_adv, y):
        return -((x_adv - t) ** 2).flatten(1).sum(1)

    model = nn.Flatten()
    y = torch.zeros(2, dtype=torch.long)
    out = fgsm(model, x, y, eps=0.1, objective=peaked)
    assert torch.allclose(out, x + 0.1 * s.expand_as(x), atol=1e-6)
    two = pgd(model, x, y, eps=0.1, step_size=0.1, steps=2, random_start=False, objective=peaked)
    assert torch.allclose(two, x, atol=1e-6)


def test_perturbation_norm_is_per_example():
    delta = torch.zeros(3, 1, 2, 2)
    delta[0, 0, 0, 0], delta[1, 0, 1, 1], delta[2, 0, 0, 1] = -0.3, 0.1, 0.2
    delta[2, 0, 1, 0] = 0.2
    assert torch.allclose(perturbation_norm(delta, "linf"), torch.tensor([0.3, 0.1, 0.2]))
    l2 = torch.tensor([0.3, 0.1, 0.2 * math.sqrt(2)])
    assert torch.allclose(perturbation_norm(delta, "l2"), l2)


@pytest.mark.parametrize("norm", NORMS)
def test_early_stopped_pgd_starts_at_the_seeded_random_start(linear, norm):
    """steps = 0 with early stopping returns its start: the random start of the generator."""
    model, _ = linear
    x = torch.full((4, 1, 3, 3), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    out = pgd(model, x, y, eps=0.2, steps=0, norm=norm, stop_on_success=True, generator=_gen(5))
    assert torch.equal(out, random_init(x, 0.2, norm, _gen(5)))
    assert not torch.equal(out, x)


def test_early_stopped_l2_pgd_steps_along_the_normalised_gradient(linear):
    model, w = linear
    x = torch.full((2, 1, 3, 3), 0.5) - 0.1 * w / w.norm()  # w·x < 0: class 0, not fooled
    y = torch.zeros(2, dtype=torch.long)
    kwargs = dict(eps=1.0, step_size=0.05, steps=1, norm="l2", random_start=False)
    out = pgd(model, x, y, stop_on_success=True, **kwargs)
    assert torch.allclose(out - x, 0.05 * (w / w.norm()).expand_as(x), atol=1e-6)


def test_restarts_rank_starts_by_an_objective_of_the_model_and_the_labels(linear):
    model, w = linear
    x = torch.full((50, 1, 3, 3), 0.5)
    y = torch.zeros(50, dtype=torch.long)

    def other_logit(model_, x_adv, y_):  # w·x for y = 0: fooling ⟺ objective > 0
        return model_(x_adv).gather(1, (1 - y_).view(-1, 1)).squeeze(1)

    out = pgd(model, x, y, eps=0.3, steps=0, restarts=3, objective=other_logit, generator=_gen(8))
    g = _gen(8)
    starts = torch.stack([random_init(x, 0.3, "linf", g) for _ in range(3)])
    with torch.no_grad():
        value = torch.stack([other_logit(model, s, y) for s in starts])
    assert torch.equal(out, starts[value.argmax(0), torch.arange(50)])


def test_linf_random_start_is_x_plus_the_drawn_uniform_offset():
    """δ = (2u − 1)·ε with u ~ U[0, 1) drawn from the generator (Madry's random start)."""
    x = torch.full((3, 1, 2, 2), 0.5)
    u = torch.rand(x.shape, generator=_gen(4))
    assert torch.allclose(random_init(x, 0.1, "linf", _gen(4)), x + (2 * u - 1) * 0.1)


def test_l2_random_start_points_every_way_even_for_a_single_image():
    """Directions come from a normal draw: offsets fall in every quadrant of the 2-pixel
    plane (uniform draws would only give the positive one)."""
    x = torch.full((400, 1, 1, 2), 0.5)
    delta = (random_init(x, 0.3, "l2", _gen(6)) - x).flatten(1)
    quadrants = {(bool(a > 0), bool(b > 0)) for a, b in delta.tolist()}
    assert quadrants == {(True, True), (True, False), (False, True), (False, False)}
    one = random_init(x[:1], 0.3, "l2", _gen(6)) - x[:1]  # a batch of one image
    assert 0 < perturbation_norm(one, "l2").item() <= 0.3 + 1e-6


def test_l2_pgd_stays_on_the_l2_ball_not_the_linf_box(linear):
    """Five l2 steps of size ε along w end on the l2 sphere at x + ε·w/‖w‖, which lies
    inside the l∞ box: an l∞ clamp instead of the l2 projection would leave it farther out."""
    model, w = linear
    x = torch.full((2, 1, 3, 3), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    out = pgd(model, x, y, eps=0.1, step_size=0.1, steps=5, norm="l2", random_start=False)
    assert torch.allclose(out - x, 0.1 * (w / w.norm()).expand_as(x), atol=1e-6)


def test_pgd_defaults_ten_steps_one_restart_and_the_madry_step():
    from robustlab.attacks.objectives import resolve_objective
    from robustlab.attacks.pgd import madry_step_size

    assert madry_step_size(0.1, 1) == pytest.approx(0.25)
    assert madry_step_size(0.1, 0) == pytest.approx(0.25)
    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    s = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 1, 2, 2)
    t = x + 0.05 * s

    def peaked(model, x_adv, y):  # steps of size ε oscillate: even step counts return to x
        return -((x_adv - t) ** 2).flatten(1).sum(1)

    model = nn.Flatten()
    out = pgd(model, x, y, eps=0.1, step_size=0.1, random_start=False, objective=peaked)
    assert torch.allclose(out, x, atol=1e-6)
    # one restart by default: the result is the first random start
    lin = _Linear(torch.linspace(-1, 1, 4))
    xs = torch.full((64, 1, 2, 2), 0.5)
    ys = torch.zeros(64, dtype=torch.long)
    start = pgd(lin, xs, ys, eps=0.2, steps=0, generator=_gen(9))
    assert torch.equal(start, random_init(xs, 0.2, "linf", _gen(9)))
    # the default objective is cross-entropy, not negated
    ce = resolve_objective()(lin, xs, ys)
    assert torch.allclose(ce, F.cross_entropy(lin(xs), ys, reduction="none"))


def test_attacks_take_float_batches_of_any_rank_at_least_two():
    model = nn.Linear(4, 2)
    x = torch.full((3, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    out = pgd(model, x, y, eps=0.1, steps=1, random_start=False)
    assert out.shape == x.shape and perturbation_norm(out - x, "linf").max() <= 0.1 + 1e-6
    with pytest.raises(ConfigError, match="float images"):
        pgd(model, (x * 255).to(torch.uint8), y, eps=0.1)


def test_attack_suite_builds_one_attack_per_steps_and_eps():
    from robustlab.suites.attacks import AttackSuite
    from robustlab.suites.base import Condition

    base = object()
    suite = AttackSuite(base, epsilons=["2/255", 0.1], steps=[5, 20], step_size_ratio=0.25)
    assert suite.base is base and suite.max_images is None and suite.backend is None
    assert suite.random_key(suite.conditions[0])[0] == 0  # default seed
    expected = {
        Condition(f"pgd{n}", eps, (("steps", n),)): Attack(
            norm="linf",
            eps=eps,
            steps=n,
            step_size=0.25 * eps,
            restarts=1,
            random_start=True,
            stop_on_success=True,
        )
        for eps in (2 / 255, 0.1)
        for n in (5, 20)
    }
    assert suite.attacks == expected and suite.conditions == list(expected)
    clean = AttackSuite(base, epsilons=[0], steps=[5])  # ε = 0 is allowed (clean accuracy)
    assert clean.conditions == [Condition("pgd5", 0.0, (("steps", 5),))]
    # ε = 0 beside a step_size_ratio: no step to scale, the ε > 0 radii keep ratio·ε
    ratio = AttackSuite(base, epsilons=[0, 0.1], steps=[5], step_size_ratio=0.25)
    assert [a.step_size for a in ratio.attacks.values()] == [None, 0.025]
    fixed = AttackSuite(base, epsilons=[0.1], steps=[3], step_size=0.05, max_images=7)
    assert fixed.max_images == 7
    assert fixed.attacks[fixed.conditions[0]].step_size == 0.05
    once = AttackSuite(base, attack="fgsm", epsilons=[0.1], steps=[5], backend="torchattacks")
    assert once.backend is None
    assert once.conditions == [Condition("fgsm", 0.1, (("steps", 1),))]
    tuned = AttackSuite(base, epsilons=[0.1], steps=[3], restarts=3, random_start=False, seed=5)
    (attack,) = tuned.attacks.values()
    assert attack.restarts == 3 and attack.random_start is False
    assert tuned.random_key(tuned.conditions[0])[0] == 5
    auto = AttackSuite(base, attack="autoattack", epsilons=[0.1], backend="torchattacks", seed=4)
    assert auto.backend == "torchattacks"
    assert auto.conditions == [Condition("autoattack-standard", 0.1, (("steps", 1),))]
    (aa,) = auto.attacks.values()
    assert (aa.version, aa.seed, aa.backend) == ("standard", 4, "torchattacks")
    for bad in (
        dict(attack="autoattack"),  # no backend named
        dict(epsilons=[]),
        dict(epsilons=[-0.1]),
        dict(step_size=0.1, step_size_ratio=0.25),
        dict(attack="cw"),
    ):
        with pytest.raises(ConfigError):
            AttackSuite(base, **bad)


def test_sanity_flags_read_mappings_and_accept_the_ends_of_0_to_1():
    # mapping records: "value" when there is no "acc"; "steps" counts
    rising = [{"eps": 0.1, "steps": 5, "value": 0.2}, {"eps": 0.1, "steps": 20, "value": 0.4}]
    (flag,) = sanity_flags(rising)
    assert "when steps grows from 5 to 20" in flag
    assert sanity_flags([{"eps": 0.1, "steps": 5, "acc": 0.2}]) == []
    # steps None counts as 0, below 1
    (flag,) = sanity_flags([(0.1, None, 0.2), (0.1, 1, 0.4)])
    assert "when steps grows from 0 to 1" in flag
    # 0 and 1 are valid accuracies; an ε = 0 record is not compared with the given clean
    assert sanity_flags([(0, 0, 1.0), (0.3, 20, 0.0)]) == []
    assert sanity_flags([(0, 0, 0.9), (0.1, 10, 0.5)], clean=0.8) == []
    # equal accuracies are no violation: robust = clean, or the same under more steps / larger ε
    assert sanity_flags([(0, 0, 0.5), (0.1, 5, 0.5), (0.1, 20, 0.5), (0.2, 5, 0.5)]) == []


def test_two_restarts_keep_the_better_start_and_the_first_on_a_tie(linear):
    model, w = linear
    x = torch.full((50, 1, 3, 3), 0.5)
    y = torch.zeros(50, dtype=torch.long)
    g = _gen(14)
    starts = [random_init(x, 0.3, "linf", g) for _ in range(2)]

    def zero(model_, x_adv, y_):
        return torch.zeros(x_adv.shape[0])

    tie = pgd(model, x, y, eps=0.3, steps=0, restarts=2, objective=zero, generator=_gen(14))
    fooled = [model(s).argmax(1).ne(y) for s in starts]
    expected = torch.where((fooled[1] & ~fooled[0]).view(-1, 1, 1, 1), starts[1], starts[0])
    assert torch.equal(tie, expected)  # equal objectives: the second start wins only by fooling
    assert not torch.equal(expected, starts[1])
    out = pgd(model, x, y, eps=0.3, steps=0, restarts=2, generator=_gen(14))  # cross-entropy
    with torch.no_grad():
        ce = torch.stack([cross_entropy(model, s, y) for s in starts])
    assert torch.equal(out, torch.stack(starts)[ce.argmax(0), torch.arange(50)])


def test_objective_must_be_per_example(linear):
    model, _ = linear
    x = torch.full((3, 1, 3, 3), 0.5)
    with pytest.raises(ConfigError, match="one loss per example"):
        pgd(
            model,
            x,
            torch.zeros(3, dtype=torch.long),
            eps=0.1,
            objective=lambda m, xa, yy: F.cross_entropy(m(xa), yy),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(eps=-0.1), "eps must be a finite number >= 0"),
        (dict(eps=float("nan")), "eps must be"),
        (dict(eps=0.1, steps=-1), "steps must be an integer >= 0"),
        (
            dict(eps=0.1, norm="l1"),
            r"unknown attack norm 'l1' \(did you mean 'l2'\?\); valid choices: inf, l2, l_2, l_inf",
        ),
        (dict(eps=0.1, restarts=0), "restarts must be an integer >= 1"),
        (dict(eps=0.1, step_size=0), "step_size must be a number > 0"),
    ],
)
def test_validation_errors(linear, kwargs, match):
    model, _ = linear
    x = torch.full((1, 1, 3, 3), 0.5)
    with pytest.raises(ConfigError, match=match):
        pgd(model, x, torch.zeros(1, dtype=torch.long), **kwargs)


def test_registry_and_config_objects(linear):
    model, _ = linear
    attack = build_attack("PGD", eps="8/255", steps=20, step_size="2/255", norm="Linf")
    assert attack.eps == pytest.approx(8 / 255) and attack.step_size == pytest.approx(2 / 255)
    assert attack.norm == "linf" and attack.label == "PGD-20 linf eps=8/255"
    assert build_attack("pgd", eps=0.3, steps=10).effective_step_size == pytest.approx(0.075)
    assert build_attack(**attack.to_dict()) == attack
    x = torch.rand(4, 1, 3, 3, generator=_gen(0))
    y = torch.zeros(4, dtype=torch.long)
    expected = pgd(model, x, y, eps=8 / 255, steps=20, step_size=2 / 255, generator=_gen(9))
    assert torch.equal(attack(model, x, y, generator=_gen(9)), expected)
    f = build_attack("fgsm", eps=0.1)
    assert (f.steps, f.random_start, f.label) == (1, False, "FGSM linf eps=0.1")
    assert torch.equal(f(model, x, y), fgsm(model, x, y, eps=0.1))
    with pytest.raises(ConfigError, match="unknown attack 'cw'; valid choices: autoattack, fgsm"):
        build_attack("cw", eps=0.1)
    with pytest.raises(ConfigError, match=r"unknown attack 'pdg' \(did you mean 'pgd'\?\)"):
        build_attack("pdg", eps=0.1)
    with pytest.raises(ConfigError, match=r"does not take \['step'\]; accepted arguments"):
        build_attack("pgd", eps=0.1, step=0.01)
    with pytest.raises(ConfigError, match="use name='pgd'"):
        Attack(name="fgsm", eps=0.1, steps=5, random_start=False)
    with pytest.raises(ConfigError, match="fraction like '8/255'"):
        build_attack("pgd", eps="eight")


# --------------------------------------------------------------------------- sanity checks


def test_sanity_flags():
    good = [
        (0, 0, 0.95),
        (2 / 255, 10, 0.7),
        (8 / 255, 10, 0.4),
        (8 / 255, 20, 0.38),
        (2 / 255, 20, 0.69),
    ]
    assert sanity_flags(good) == []
    bad = [*good, (16 / 255, 20, 0.5), (4 / 255, 100, 0.99)]
    flags = sanity_flags(bad)
    assert any("exceeds clean accuracy 0.9500" in f for f in flags)
    assert any("when eps grows from 0.0313725 to 0.0627451" in f for f in flags)
    assert any("when steps grows" in f for f in sanity_flags([(0.1, 5, 0.2), (0.1, 20, 0.3)]))
    assert sanity_flags([{"eps": 0.1, "steps": 5, "acc": 0.2}], clean=0.1) != []
    assert sanity_flags([(0.1, 5, 1.2)])[0].startswith("accuracy 1.2 at eps=0.1")


@pytest.mark.parametrize("weaker_first", [True, False])
def test_suite_summary_takes_the_strongest_attack_per_eps(weaker_first):
    """Two attacks per ε (PGD-1 and PGD-20): acc@ε is the lower of the two, whichever order
    the records come in, and mean_acc averages those minima over ε."""
    from robustlab.results import RobustnessRecord
    from robustlab.suites import build_suite

    suite = build_suite("pgd_linf", None, epsilons=["2/255", "8/255"], steps=[1, 20])
    assert [(c.name, c.level) for c in suite.conditions] == [
        ("pgd1", 2 / 255),
        ("pgd20", 2 / 255),
        ("pgd1", 8 / 255),
        ("pgd20", 8 / 255),
    ]
    weak = [
        RobustnessRecord("pgd_linf", "pgd1", e, "acc", v)
        for e, v in ((2 / 255, 0.7), (8 / 255, 0.5))
    ]
    strong = [
        RobustnessRecord("pgd_linf", "pgd20", e, "acc", v)
        for e, v in ((2 / 255, 0.6), (8 / 255, 0.2))
    ]
    records = weak + strong if weaker_first else strong + weak
    assert suite.summarize(records) == {
        "pgd_linf/acc@2/255": 0.6,
        "pgd_linf/acc@8/255": 0.2,
        "pgd_linf/mean_acc": pytest.approx(0.4),
    }
    assert suite.sanity_violations(records, clean_acc=0.9) == []
    # more steps helping the model is flagged, with the clean reference it was given
    rising = [*weak, RobustnessRecord("pgd_linf", "pgd20", 8 / 255, "acc", 0.55)]
    (flag,) = suite.sanity_violations(rising, clean_acc=0.9)
    assert "from 0.5000 to 0.5500 when steps grows from 1 to 20" in flag
    (flag,) = suite.sanity_violations(weak, clean_acc=0.65)
    assert "robust accuracy 0.7000 at eps=0.00784314, steps=1 exceeds clean accuracy 0.6500" in flag


# --------------------------------------------------------------------------- trained model


class _DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )

    def forward(self, x):
        return self.body((x - 0.5) / 0.5)  # normalisation lives inside the model


@pytest.fixture(scope="module")
def digits():
    """An undefended CNN trained for a few seconds on sklearn digits (16x16, [0, 1])."""
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=_gen(0))
    train, test = order[:1400], order[1400:]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = _gen(1)
        for _ in range(300):
            idx = train[torch.randint(len(train), (64,), generator=g)]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    return model, images[test], labels[test]


def test_digits_model_is_accurate_and_falls_under_attack(digits):
    model, x, y = digits
    clean = _accuracy(model, x, y)
    assert clean >= 0.93
    strong = _accuracy(model, x, y, Attack(eps=0.3, steps=20), generator=_gen(0))
    assert strong <= 0.10
    small = _accuracy(
        model,
        x,
        y,
        build_attack("pgd", eps="8/255", steps=10, step_size="2/255"),
        generator=_gen(0),
    )
    assert small < clean - 0.02
    l2 = _accuracy(model, x, y, Attack(norm="l2", eps=1.5, steps=20), generator=_gen(0))
    assert l2 <= 0.10
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert sanity_flags([(0, 0, clean), (8 / 255, 10, small), (0.3, 20, strong)]) == []


def test_more_steps_and_restarts_never_help_the_model(digits):
    model, x, y = digits
    accs = [_accuracy(model, x, y, Attack(eps=0.1, steps=s), generator=_gen(0)) for s in (1, 5, 20)]
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[0] > accs[2]  # and the difference is real
    one = _accuracy(model, x, y, Attack(eps=0.05, steps=5), generator=_gen(3))
    three = _accuracy(model, x, y, Attack(eps=0.05, steps=5, restarts=3), generator=_gen(3))
    assert three <= one
    # per example: restarts keep a fooling start, else the highest loss (first run = 1 restart)
    xs, ys = x[:64], y[:64]
    single = pgd(model, xs, ys, eps=0.05, steps=3, generator=_gen(5))
    multi = pgd(model, xs, ys, eps=0.05, steps=3, restarts=4, generator=_gen(5))
    with torch.no_grad():
        fooled_1, fooled_4 = (model(a).argmax(1).ne(ys) for a in (single, multi))
        loss_1, loss_4 = (cross_entropy(model, a, ys) for a in (single, multi))
    assert (fooled_4 >= fooled_1).all()
    same = fooled_4 == fooled_1
    assert (loss_4[same] >= loss_1[same] - 1e-6).all() and (loss_4 > loss_1 + 1e-4).any()


@pytest.mark.parametrize(
    ("backend", "module"), [("reference", "pyautoattack"), ("torchattacks", "torchattacks")]
)
def test_autoattack_backends(digits, backend, module):
    pytest.importorskip(module)
    model, x, y = digits
    x, y = x[:40], y[:40]
    state = torch.get_rng_state()
    with torch.no_grad():
        adv = autoattack(model, x, y, eps=0.3, backend=backend)
    assert torch.equal(torch.get_rng_state(), state)  # the wrapped code's reseeding is undone
    assert perturbation_norm(adv - x, "linf").max() <= 0.3 + 1e-5
    assert adv.min() >= 0 and adv.max() <= 1
    assert _accuracy(model, adv, y) <= 0.05
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(autoattack(model, x, y, eps=0, backend=backend), x)
    built = build_attack("autoattack", eps="8/255", backend=backend)
    assert built == AutoAttack(eps=8 / 255, backend=backend) and built.version == "standard"
    assert AutoAttack(eps=0.3, backend=backend).provenance() == {
        "backend": backend,
        "package": module,
        "package_version": importlib.metadata.version(module),
    }


def test_missing_autoattack_backend_is_a_config_error_naming_pip(monkeypatch, linear):
    model, _ = linear
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    x, y = torch.full((1, 1, 3, 3), 0.5), torch.zeros(1, dtype=torch.long)
    message = "AutoAttack backend 'reference' needs the 'pyautoattack' package: " + (
        'pip install "robustlab[autoattack]"'
    )
    with pytest.raises(ConfigError) as err:
        build_attack("autoattack", eps=0.1)  # building checks, before anything runs
    assert str(err.value) == message
    with pytest.raises(ConfigError, match="pip install torchattacks$"):
        AutoAttack(eps=0.1, backend="torchattacks")
    with pytest.raises(ConfigError, match=r"pip install \"robustlab\[autoattack\]\""):
        autoattack(model, x, y, eps=0.1)
    with pytest.raises(
        ConfigError, match=r"backend must be one of \['reference', 'torchattacks'\]"
    ):
        AutoAttack(eps=0.1, backend="auto")
    with pytest.raises(ConfigError, match="version must be one of"):
        autoattack(model, x, y, eps=0.1, version="fast")


@pytest.mark.slow
def test_autoattack_is_at_least_as_strong_as_pgd(digits):
    pytest.importorskip("torchattacks")
    model, x, y = digits
    x, y = x[:100], y[:100]
    pgd_acc = _accuracy(model, x, y, Attack(eps=0.1, steps=20), generator=_gen(0))
    aa_acc = _accuracy(model, x, y, AutoAttack(eps=0.1, backend="torchattacks"))
    assert aa_acc <= pgd_acc


def test_early_stopped_pgd_is_at_least_as_strong_and_exact_where_it_never_stops(digits):
    model, x, y = digits
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        last = pgd(model, x, y, eps=eps, steps=10, norm=norm, generator=_gen(7))
        early = pgd(
            model, x, y, eps=eps, steps=10, norm=norm, generator=_gen(7), stop_on_success=True
        )
        with torch.no_grad():
            fooled_last = model(last).argmax(1) != y
            fooled_early = model(early).argmax(1) != y
        # every example the last iterate fools, some iterate fooled (and froze) as well
        assert (fooled_early >= fooled_last).all()
        # examples never fooled follow exactly the same trajectory
        never = ~fooled_early
        assert torch.allclose(early[never], last[never], atol=1e-6)
        assert perturbation_norm(early - x, norm).max() <= eps + 1e-6
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError, match="cross-entropy objective only"):
        pgd(model, x[:4], y[:4], eps=0.1, objective=cross_entropy, stop_on_success=True)
