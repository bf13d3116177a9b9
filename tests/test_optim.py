"""Learning-rate schedules and optimiser config checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.errors import ConfigError
from robustlab.methods.optim import (
    ScheduleConfig,
    build_optimizer,
    build_scheduler,
    lr_multiplier,
    optimizer_config,
    schedule_config,
)


def test_cosine_endpoints_and_midpoint():
    cfg = ScheduleConfig(name="cosine")
    assert lr_multiplier(0, cfg, steps_per_epoch=10, total_steps=100) == pytest.approx(1.0)
    assert lr_multiplier(50, cfg, 10, 100) == pytest.approx(0.5)
    assert lr_multiplier(100, cfg, 10, 100) == pytest.approx(0.0, abs=1e-12)
    with_floor = ScheduleConfig(name="cosine", min_lr_ratio=0.1)
    assert lr_multiplier(100, with_floor, 10, 100) == pytest.approx(0.1)


def test_linear_warmup_then_cosine():
    cfg = ScheduleConfig(name="cosine", warmup_epochs=2)  # 20 warm-up steps of 100
    assert lr_multiplier(0, cfg, 10, 100) == pytest.approx(1 / 20)
    assert lr_multiplier(19, cfg, 10, 100) == pytest.approx(1.0)
    # halfway through the 80 cosine steps
    assert lr_multiplier(60, cfg, 10, 100) == pytest.approx(0.5)


def test_multistep_decays_at_milestone_epochs():
    cfg = ScheduleConfig(name="multistep", milestones=[150, 180, 210], gamma=0.1)
    spe = 782  # CIFAR, batch 64
    assert lr_multiplier(149 * spe, cfg, spe, 240 * spe) == pytest.approx(1.0)
    assert lr_multiplier(150 * spe, cfg, spe, 240 * spe) == pytest.approx(0.1)
    assert lr_multiplier(200 * spe, cfg, spe, 240 * spe) == pytest.approx(0.01)
    assert lr_multiplier(239 * spe, cfg, spe, 240 * spe) == pytest.approx(0.001)


def test_scheduler_drives_optimizer_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], optimizer_config({"name": "sgd", "lr": 0.2, "nesterov": True}))
    sched = build_scheduler(opt, schedule_config({"name": "cosine"}), total_steps=4, max_epochs=1)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.2 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert lrs == pytest.approx(expected)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"lr": -0.1}, "lr must be > 0"),
        ({"name": "lion"}, "choose one of"),
        ({"lrr": 0.1}, "unknown key"),
        ({"nesterov": True, "momentum": 0.0}, "momentum > 0"),
    ],
)
def test_optimizer_config_rejects_bad_values(bad, message):
    with pytest.raises(ConfigError, match=message):
        optimizer_config(bad)


def test_schedule_config_rejects_unknown_schedule():
    with pytest.raises(ConfigError, match="cosine"):
        schedule_config({"name": "exponential"})


def _two_steps(cfg: dict, p0: float = 1.0, g: float = 0.5) -> list[float]:
    """The parameter after each of two steps on the loss g·p (gradient g everywhere)."""
    param = torch.nn.Parameter(torch.tensor([p0]))
    opt = build_optimizer([param], optimizer_config(cfg))
    values = []
    for _ in range(2):
        opt.zero_grad()
        (g * param).sum().backward()
        opt.step()
        values.append(param.item())
    return values


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_step_uses_lr_momentum_nesterov_and_weight_decay(nesterov):
    lr, mu, wd, g = 0.1, 0.5, 0.01, 0.5  # μ ≠ the 0.9 default
    cfg = {"name": "sgd", "lr": lr, "momentum": mu, "nesterov": nesterov, "weight_decay": wd}
    p, buf, expected = 1.0, 0.0, []
    for step in range(2):  # PyTorch SGD: d = g + wd·p; buf = μ·buf + d (buf = d at step 0)
        d = g + wd * p
        buf = d if step == 0 else mu * buf + d
        p -= lr * (d + mu * buf if nesterov else buf)
        expected.append(p)
    assert _two_steps(cfg) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_steps_use_betas_and_coupled_or_decoupled_weight_decay(name):
    lr, (b1, b2), wd, g, eps = 0.1, (0.8, 0.9), 0.2, 0.5, 1e-8
    cfg = {"name": name, "lr": lr, "betas": [b1, b2], "weight_decay": wd}
    p, m, v, expected = 1.0, 0.0, 0.0, []
    for t in (1, 2):
        if name == "adamw":  # decoupled (Loshchilov & Hutter 2019): p ← p·(1 − lr·wd)
            p *= 1 - lr * wd
            d = g
        else:  # L2 penalty added to the gradient
            d = g + wd * p
        m, v = b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d * d
        p -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        expected.append(p)
    assert _two_steps(cfg) == pytest.approx(expected, rel=1e-6)
