"""Cost of introspective training (method=introspective, ICN / WINN) against plain training.

Two ratios, measured in one run on the same model, batch and device:

1. synthesis throughput: Langevin synthesis (ICN) in images x steps per second, over a plain
   training forward + backward of the same batch in images per second. One Langevin step is a
   forward and a backward to the pixels, so ~1x is the floor to aim at.
2. an epoch's cost over ERM's: ``--batches`` training steps (forward, backward, optimiser step)
   of ERM, against the same steps of ICN / WINN plus the epoch's synthesis round
   (``--per-class`` images of each class; WINN: ``--winn-steps`` Adam steps, no early stop).

Random images of MNIST's shape by default (timings do not depend on the pixels); prints the
fastest of ``--repeats`` (noise on a shared machine only adds time) and the ratios.

    python scripts/bench_introspective.py [--model small_cnn] [--batch 128] [--per-class 30]
"""

from __future__ import annotations

import argparse
import platform

import torch
from _bench import timed  # scripts/_bench.py

from robustlab.methods import build_method
from robustlab.methods.synthesis import NegativePool
from robustlab.models import build_classifier

CLASSES = 10


def make(method: str, model_name: str, channels: int, **kwargs):
    torch.manual_seed(0)
    model = build_classifier(
        model_name, CLASSES, channels, mean=(0.5,) * channels, std=(0.25,) * channels
    )
    module = build_method(method, model, **kwargs)
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, betas=(0.0, 0.9))
    return module, optimizer


def epoch(module, optimizer, batches) -> None:
    """One epoch of training steps (the introspective method synthesises at batch 0)."""
    for index, (x, y) in enumerate(batches):
        module._batch_index = index
        optimizer.zero_grad(set_to_none=True)
        module.training_objective((x, y)).loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batches", type=int, default=40, help="training steps per epoch")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--langevin-steps", type=int, default=40)
    parser.add_argument("--winn-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    batches = [
        (
            torch.rand(shape, generator=g).to(device),
            torch.randint(0, CLASSES, (args.batch,), generator=g).to(device),
        )
        for _ in range(args.batches)
    ]
    x, y = batches[0]
    common = {"per_class": args.per_class, "pool_capacity": 10 * args.per_class}
    methods = {
        "erm": make("erm", args.model, args.channels),
        "icn": make(
            "introspective",
            args.model,
            args.channels,
            langevin={"steps": args.langevin_steps},
            pictures_per_class=0,
            **common,
        ),
        "winn": make(
            "introspective",
            args.model,
            args.channels,
            variant="winn",
            winn={"max_steps": args.winn_steps, "tolerance": 0.0},
            pictures_per_class=0,
            **common,
        ),
    }
    for module, _ in methods.values():
        module.to(device)

    # 1. synthesis throughput vs a plain forward + backward of the same batch
    erm, erm_opt = methods["erm"]
    icn, _ = methods["icn"]
    classes = torch.arange(CLASSES, device=device).repeat(args.batch // CLASSES + 1)[: args.batch]

    def forward_backward() -> None:
        erm_opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(erm(x), y).backward()

    def synthesis() -> None:
        generator = torch.Generator(device=device).manual_seed(0)
        icn.synthesise_rows(x.clone(), classes, generator)

    def forward_backwards() -> None:  # as many passes as Langevin steps: similar durations
        for _ in range(args.langevin_steps):
            forward_backward()

    forward_backward(), synthesis()  # warm-up
    plain, langevin = float("inf"), float("inf")
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        plain = min(plain, timed(forward_backwards, 1, device))
        langevin = min(langevin, timed(synthesis, 1, device))
    plain_rate = args.batch * args.langevin_steps / plain
    langevin_rate = args.batch * args.langevin_steps / langevin

    # 2. an epoch (steps + the epoch's synthesis round) over ERM's
    epochs = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, (module, optimizer) in methods.items():
            if name != "erm":  # every epoch starts from an empty pool
                module.pool = NegativePool(CLASSES, module.pool.capacity)
            epochs[name].append(
                timed(lambda m=module, o=optimizer: epoch(m, o, batches), 1, device)
            )
    best = {name: min(times) for name, times in epochs.items()}

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} | device: {device} | "
        f"torch threads: {torch.get_num_threads()} | torch {torch.__version__}"
    )
    print(
        f"model {args.model}, batch {args.batch} of {args.channels}x{args.size}x{args.size}, "
        f"{args.batches} steps per epoch, {args.per_class} pseudo-negatives per class per epoch"
    )
    print(f"plain forward+backward: {plain_rate:9.1f} images/s")
    print(
        f"Langevin synthesis:     {langevin_rate:9.1f} images x steps/s "
        f"({args.langevin_steps} steps) -> {langevin_rate / plain_rate:.2f}x forward+backward"
    )
    for name in ("icn", "winn"):
        print(
            f"epoch {name} / erm: {best[name] / best['erm']:.2f}x "
            f"({best[name]:.2f} s vs {best['erm']:.2f} s)"
        )


if __name__ == "__main__":
    main()
