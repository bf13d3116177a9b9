"""scripts/bench_gpu.py: the smoke run prints its three measurements as numbers, and the plain
loop's hand-written PGD makes exactly robustlab's PGD examples (so the reference does the same
work as the robustlab side it is compared with)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from robustlab.attacks import cross_entropy, pgd
from robustlab.methods import build_method
from robustlab.models import build_classifier

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_model():
    torch.manual_seed(0)
    model = build_classifier(
        "resnet8", num_classes=10, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    return model.eval()


def batch(n: int = 6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(10, (n,), generator=g)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_plain_pgd_equals_robustlab_pgd(bench, bf16):
    model, (x, y) = small_model(), batch()
    eps, alpha = 8 / 255, 2 / 255
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ours = pgd(
            model,
            x,
            y,
            eps=eps,
            step_size=alpha,
            steps=10,
            generator=torch.Generator().manual_seed(7),
        )
        plain = bench.plain_pgd(
            model,
            x,
            y,
            eps=eps,
            step_size=alpha,
            steps=10,
            generator=torch.Generator().manual_seed(7),
        )
    assert torch.equal(plain, ours)
    # and it is a real attack: inside the ball, in [0, 1], and raising the loss
    assert (plain - x).abs().max() <= eps + 1e-6 and plain.min() >= 0 and plain.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(plain), y) > F.cross_entropy(model(x), y)


def test_plain_pgd_equals_the_training_attack(bench):
    """The attack robustlab's adversarial training step runs (method=adversarial at the
    benchmark's settings, global random stream, eval-mode attack) and the plain loop's attack,
    from the same global seed, give the same examples."""
    model, (x, y) = small_model(), batch()
    attack = {"eps": "8/255", "step_size": "2/255", "steps": 10, "random_start": True}
    method = build_method("adversarial", model, attack=attack)
    method.train()
    torch.manual_seed(11)
    ours = method.adversarial_examples(x, y, cross_entropy)
    assert method.model.training  # train/eval flags restored
    model.eval()
    torch.manual_seed(11)
    plain = bench.plain_pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10)
    assert torch.equal(plain, ours)
    torch.manual_seed(12)  # another random start gives other examples: the start is used
    assert not torch.equal(
        bench.plain_pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10), ours
    )


def test_smoke_run_prints_the_three_measurements():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "not GPU numbers" in out
    assert re.search(r"machine: .*precision bf16-mixed, memory format channels_last", out)
    for label in ("method=erm", "PGD-10 adversarial"):
        block = re.search(
            rf"plain PyTorch loop\s*:\s*{NUMBER} images/s .*\n"
            rf"\s*robustlab {re.escape(label)}\s*:\s*{NUMBER} images/s .*\n"
            rf"{re.escape(label)}: ratio robustlab / plain = {NUMBER}  \(goal >= 0.95\)",
            out,
        )
        assert block, out
        plain, ours, ratio = (float(v) for v in block.groups())
        assert plain > 0 and ours > 0
        rounding = 0.05 / ours + 0.05 / plain  # images/s are printed to 0.1, the ratio to 0.001
        assert ratio == pytest.approx(ours / plain, rel=rounding, abs=0.0006)
    suite = re.search(
        rf"corruption suite: 2 corruptions x 5 severities x 64 images = (\d+) images in "
        rf"{NUMBER} s = {NUMBER} images/s",
        out,
    )
    assert suite, out
    total, seconds, rate = int(suite[1]), float(suite[2]), float(suite[3])
    assert total == 2 * 5 * 64
    assert seconds > 0  # printed to 0.01 s, images/s to 0.1
    assert rate == pytest.approx(total / seconds, rel=0.006 / seconds, abs=0.06)
