"""Step time of method=stability vs method=erm (same model, batch and data).

One training step = the method's ``training_loss`` + backward + optimiser step (what the
Lightning training step does, without the logging). Measured after warm-up, interleaving the
methods so all see the same machine load; prints the fastest of the repeats (as timeit advises:
on a shared machine noise only adds time) and the ratios.
Stability training runs the clean and perturbed batch in one forward of 2B images, so the floor
is an ERM step on 2B images, measured too ("erm@2B"): stability / erm@2B is the overhead of the
method itself (noise, KL), stability / erm the cost a user sees (target <= 2.2x).

    python scripts/bench_stability.py [--model small_cnn] [--batch 128] [--repeats 11]
"""

from __future__ import annotations

import argparse
import platform
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
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, args.channels, args.size, args.size, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    methods = {
        "erm": make("erm", args.model, args.channels),
        "erm@2B": make("erm", args.model, args.channels),
        "stability": make("stability", args.model, args.channels, alpha=0.01, sigma=0.04),
    }
    batches = {"erm": (x, y), "erm@2B": (torch.cat([x, x]), torch.cat([y, y])), "stability": (x, y)}
    for name, (module, optimizer) in methods.items():
        module.to(device)
        time_steps(module, optimizer, *batches[name], 3)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, (module, optimizer) in methods.items():
            times[name].append(time_steps(module, optimizer, *batches[name], args.steps))
    erm, erm2, stab = (min(times[n]) for n in ("erm", "erm@2B", "stability"))
    print(
        f"machine: {platform.machine()} {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; model {args.model}, batch {args.batch}x"
        f"{args.channels}x{args.size}x{args.size}; fastest of {args.repeats} x {args.steps} steps"
    )
    print(f"erm:       {erm * 1e3:8.1f} ms/step")
    print(f"erm@2B:    {erm2 * 1e3:8.1f} ms/step  (the two-forward floor)")
    print(f"stability: {stab * 1e3:8.1f} ms/step")
    print(f"ratio stability / erm:    {stab / erm:.2f}x (target <= 2.2x)")
    print(f"ratio stability / erm@2B: {stab / erm2:.2f}x (the method's own overhead)")


if __name__ == "__main__":
    main()
