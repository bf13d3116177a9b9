"""Tests for robustlab.attacks: geometry, hand-computed steps, and attacks on a trained model."""

from __future__ import annotations

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
    robust_accuracy,
    sanity_flags,
    weighted_sum,
)
from robustlab.errors import ConfigError, RobustlabError

NORMS = ("linf", "l2")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
        (dict(eps=0.1, norm="l1"), r"unknown attack norm 'l1'; use one of \['linf', 'l2'\]"),
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
    aa = build_attack("autoattack", eps="8/255")
    assert isinstance(aa, AutoAttack) and aa.version == "standard"
    with pytest.raises(ConfigError, match="unknown attack 'cw'; choose one of"):
        build_attack("cw", eps=0.1)
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
    clean = robust_accuracy(model, (x, y), None)
    assert clean >= 0.93
    strong = robust_accuracy(model, (x, y), Attack(eps=0.3, steps=20), generator=_gen(0))
    assert strong <= 0.10
    small = robust_accuracy(
        model,
        (x, y),
        build_attack("pgd", eps="8/255", steps=10, step_size="2/255"),
        generator=_gen(0),
    )
    assert small < clean - 0.02
    l2 = robust_accuracy(model, (x, y), Attack(norm="l2", eps=1.5, steps=20), generator=_gen(0))
    assert l2 <= 0.10
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert sanity_flags([(0, 0, clean), (8 / 255, 10, small), (0.3, 20, strong)]) == []


def test_more_steps_and_restarts_never_help_the_model(digits):
    model, x, y = digits
    accs = [
        robust_accuracy(model, (x, y), Attack(eps=0.1, steps=s), generator=_gen(0))
        for s in (1, 5, 20)
    ]
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[0] > accs[2]  # and the difference is real
    one = robust_accuracy(model, (x, y), Attack(eps=0.05, steps=5), generator=_gen(3))
    three = robust_accuracy(model, (x, y), Attack(eps=0.05, steps=5, restarts=3), generator=_gen(3))
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


def test_robust_accuracy_inputs(digits):
    model, x, y = digits
    x8 = (x * 255).round().to(torch.uint8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x8, y), batch_size=100)
    from_loader = robust_accuracy(model, loader, None)
    from_tensors = robust_accuracy(model, (x8, y), None, "cpu", batch_size=64)
    assert from_loader == from_tensors
    assert math.isclose(from_loader, robust_accuracy(model, (x, y), None), abs_tol=0.01)


@pytest.mark.parametrize(
    ("backend", "module"),
    [
        ("reference", "autoattack"),
        ("pyautoattack", "pyautoattack"),
        ("torchattacks", "torchattacks"),
    ],
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
    assert robust_accuracy(model, (adv, y), None) <= 0.05
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(autoattack(model, x, y, eps=0, backend=backend), x)


def test_autoattack_missing_backend_names_the_package(monkeypatch, linear):
    model, _ = linear
    for module in ("autoattack", "pyautoattack", "torchattacks"):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    x = torch.full((1, 1, 3, 3), 0.5)
    with pytest.raises(RobustlabError, match="pip install pyautoattack"):
        autoattack(model, x, torch.zeros(1, dtype=torch.long), eps=0.1)
    with pytest.raises(RobustlabError, match="'reference' is not installed"):
        AutoAttack(eps=0.1, backend="reference")(model, x, torch.zeros(1, dtype=torch.long))
    with pytest.raises(ConfigError, match="version must be one of"):
        autoattack(model, x, torch.zeros(1, dtype=torch.long), eps=0.1, version="fast")


@pytest.mark.slow
def test_autoattack_is_at_least_as_strong_as_pgd(digits):
    pytest.importorskip("torchattacks")
    model, x, y = digits
    x, y = x[:100], y[:100]
    pgd_acc = robust_accuracy(model, (x, y), Attack(eps=0.1, steps=20), generator=_gen(0))
    aa_acc = robust_accuracy(model, (x, y), AutoAttack(eps=0.1, backend="torchattacks"))
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
