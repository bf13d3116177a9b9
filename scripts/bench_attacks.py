"""Throughput of robustlab's PGD versus torchattacks.PGD on the same model and batch.

PGD-20, l∞, ε = 8/255, step 2/255, uniform random start; model in eval mode; a warm-up run,
then ``--repeats`` interleaved timings of each implementation; the median is reported as images/s
and the ratio ours / torchattacks (target ≥ 1.0). Both attacks are also checked to agree: robust
accuracy (labels = the model's clean predictions, so a randomly initialised model still gives a
meaningful number), mean adversarial cross-entropy, and the perturbation size.

Model: a CIFAR ResNet-20 (robustlab.models) behind ImageClassifier normalisation, falling back to
a small CNN. Batch: 128 CIFAR-10 test images from $ROBUSTLAB_DATA/cifar10-jpeg/test.npz when
present, else uniform noise.

    python scripts/bench_attacks.py [--batch 128] [--repeats 5] [--device cpu|cuda]

Needs torchattacks, which no robustlab extra installs (its requests~=2.25 pin would downgrade
requests, urllib3 and idna): ``pip install --no-deps torchattacks``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import pgd

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 8 * 8, 10),
        )
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model() -> tuple[nn.Module, str]:
    try:
        from robustlab.models import build_backbone
        from robustlab.models.wrapper import ImageClassifier

        backbone = build_backbone("resnet20", num_classes=10, in_channels=3)
        return ImageClassifier(backbone, CIFAR_MEAN, CIFAR_STD), "resnet20 (robustlab.models)"
    except Exception as err:  # models package missing or still being written
        return _SmallCNN(), f"small CNN (robustlab.models unavailable: {type(err).__name__})"


def load_batch(n: int) -> tuple[torch.Tensor, str]:
    root = os.environ.get("ROBUSTLAB_DATA")
    path = Path(root) / "cifar10-jpeg" / "test.npz" if root else None
    if path is not None and path.is_file():
        images = np.load(path)["images"][:n]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
        return x.contiguous(), f"CIFAR-10 test[:{n}] ({path})"
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g), f"uniform noise ({n}x3x32x32)"


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000, out
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def summarise(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor
) -> str:
    with torch.no_grad():
        logits = model(adv)
    acc = logits.argmax(1).eq(y).float().mean().item()
    ce = F.cross_entropy(logits, y).item()
    linf = (adv - x).abs().flatten(1).amax(1).max().item() * 255
    return f"{name:13s} robust acc {acc:6.2%}  mean adv CE {ce:7.3f}  max |δ|∞ {linf:.3f}/255"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--compare-eps",
        type=float,
        default=1 / 255,
        help="extra small-ε run where robust accuracy is not trivially 0",
    )
    args = parser.parse_args()

    try:
        import torchattacks
    except ImportError:
        raise SystemExit(
            "bench_attacks.py compares with torchattacks: pip install --no-deps torchattacks"
        ) from None

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # model init and random starts: same numbers on every run
    device = torch.device(args.device)
    model, model_name = build_model()
    model = model.to(device).eval()
    x, data_name = load_batch(args.batch)
    x = x.to(device)
    with torch.no_grad():
        y = model(x).argmax(1)  # clean predictions as labels: clean accuracy is 100% by design
    eps, alpha, steps = 8 / 255, 2 / 255, args.steps

    def ours(e: float = eps, a: float = alpha) -> torch.Tensor:
        return pgd(model, x, y, eps=e, step_size=a, steps=steps, norm="linf", random_start=True)

    def theirs(e: float = eps, a: float = alpha) -> torch.Tensor:
        return torchattacks.PGD(model, eps=e, alpha=a, steps=steps, random_start=True)(x, y)

    print(
        f"machine: {platform.processor() or platform.machine()}, device {device}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"torchattacks {torchattacks.__version__}"
    )
    print(f"model: {model_name}; batch: {data_name}")
    print(f"attack: PGD-{steps} linf eps=8/255 step=2/255 random start, eval mode")
    timed(ours, device)
    timed(theirs, device)  # warm-up
    t_ours, t_theirs = [], []
    adv_ours = adv_theirs = x
    for _ in range(args.repeats):  # interleaved so load drift hits both alike
        dt, adv_ours = timed(ours, device)
        t_ours.append(dt)
        dt, adv_theirs = timed(theirs, device)
        t_theirs.append(dt)
    ips_ours = args.batch / statistics.median(t_ours)
    ips_theirs = args.batch / statistics.median(t_theirs)
    print(
        f"robustlab.pgd     {ips_ours:8.1f} images/s  (median of {args.repeats}: "
        f"{statistics.median(t_ours):.3f} s; runs {[round(t, 3) for t in t_ours]})"
    )
    print(
        f"torchattacks.PGD  {ips_theirs:8.1f} images/s  (median of {args.repeats}: "
        f"{statistics.median(t_theirs):.3f} s; runs {[round(t, 3) for t in t_theirs]})"
    )
    print(f"ratio ours/torchattacks: {ips_ours / ips_theirs:.2f}x (target >= 1.0x)")
    print("agreement at eps=8/255:")
    print("  " + summarise("robustlab", model, x, y, adv_ours))
    print("  " + summarise("torchattacks", model, x, y, adv_theirs))
    small = args.compare_eps
    print(f"agreement at eps={small * 255:g}/255, step eps/4:")
    print("  " + summarise("robustlab", model, x, y, ours(small, small / 4)))
    print("  " + summarise("torchattacks", model, x, y, theirs(small, small / 4)))


if __name__ == "__main__":
    main()
