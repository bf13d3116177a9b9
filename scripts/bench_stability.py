"""Step time of method=stability vs method=erm (same model, batch and data).

One training step = the method's ``training_loss`` + backward + optimiser step (what the
Lightning training step does, without the logging). Measured after warm-up, interleaving the two
methods so both see the same machine load; prints the median of the repeats and the ratio
(stability runs the clean and perturbed batch in one forward of 2B images, so ~2x is the floor).

    python scripts/bench_stability.py [--model small_cnn] [--batch 128] [--repeats 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from robustlab.methods import build_method
from robustlab.models import build_classifier


def make(method: str, model_name: str, channels: int, **kwargs):
    torch.manual_seed(0)
    model = build_classifier(
        model_name,
        num_classes=10,
        in_channels=channels,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )
    module = build_method(method, model, **kwargs)
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    return module, optimizer


def step(module, optimizer, x, y) -> None:
    optimizer.zero_grad(set_to_none=True)
    module.training_loss(x, y).loss.backward()
    optimizer.step()


def time_steps(module, optimizer, x, y, steps: int) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(module, optimizer, x, y)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, args.channels, args.size, args.size, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    methods = {
        "erm": make("erm", args.model, args.channels),
        "stability": make("stability", args.model, args.channels, alpha=0.01, sigma=0.04),
    }
    for module, optimizer in methods.values():
        module.to(device)
        time_steps(module, optimizer, x, y, 3)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, (module, optimizer) in methods.items():
            times[name].append(time_steps(module, optimizer, x, y, args.steps))
    erm, stab = (statistics.median(times[n]) for n in ("erm", "stability"))
    print(
        f"machine: {platform.machine()} {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; model {args.model}, batch {args.batch}x"
        f"{args.channels}x{args.size}x{args.size}; median of {args.repeats} x {args.steps} steps"
    )
    print(f"erm:       {erm * 1e3:8.1f} ms/step")
    print(f"stability: {stab * 1e3:8.1f} ms/step")
    print(f"ratio stability / erm: {stab / erm:.2f}x (target <= 2.2x; floor ~2x)")


if __name__ == "__main__":
    main()
