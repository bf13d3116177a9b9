"""Cost of PGD-k adversarial training relative to ERM: step time ratio vs the bound 1.15·(k+1).

One training step = ``training_loss`` + backward + SGD step of the same model on the same batch;
ERM does one forward/backward, PGD-k adversarial training k attack forward/backwards (input
gradients only) plus one. Warm-up first, then ERM and adversarial steps are interleaved (so load
drift on a shared machine hits both alike) and the median of the repeats is reported.

    python scripts/bench_adversarial.py --steps 5 10 --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab.methods import build_method
from robustlab.models import build_backbone
from robustlab.models.wrapper import ImageClassifier


def make_method(name: str, steps: int, args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    backbone = build_backbone(args.model, 10, args.channels, width=args.width)
    model = ImageClassifier(backbone, (0.5,) * args.channels, (0.25,) * args.channels)
    kwargs = {} if name == "erm" else {"attack": {"eps": args.eps, "steps": steps}}
    method = build_method(name, model, **kwargs).to(device)
    method.train()
    return method, torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)


def step_time(method, optimizer, x, y, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    method.training_loss(x, y).loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10], help="PGD steps k")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, args.channels, args.size, args.size, generator=gen).to(device)
    y = torch.randint(10, (args.batch,), generator=gen).to(device)
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"model={args.model}(width={args.width}) batch={args.batch}x{args.channels}x{args.size}^2"
    )
    for k in args.steps:
        erm, erm_opt = make_method("erm", 0, args, device)
        adv, adv_opt = make_method("adversarial", k, args, device)
        for _ in range(args.warmup):
            step_time(erm, erm_opt, x, y, device)
            step_time(adv, adv_opt, x, y, device)
        erm_t, adv_t = [], []
        for _ in range(args.repeats):
            erm_t.append(step_time(erm, erm_opt, x, y, device))
            adv_t.append(step_time(adv, adv_opt, x, y, device))
        e, a = statistics.median(erm_t), statistics.median(adv_t)
        bound = 1.15 * (k + 1)
        verdict = "ok" if a / e <= bound else "OVER"
        print(
            f"PGD-{k}: ERM step {e * 1e3:.1f} ms, adversarial step {a * 1e3:.1f} ms, "
            f"ratio {a / e:.2f} (bound 1.15*(k+1) = {bound:.2f}) {verdict}"
        )


if __name__ == "__main__":
    main()
