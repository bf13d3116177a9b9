"""Step time of method=hydramix (stage 2) vs a plain classifier step on the same classifier,
batch and data, and vs its floor.

A HydraMix batch of B same-class groups of N images is either real (the classifier trains on
one image per group: a plain step on B images) or generated (the frozen generator mixes each
group's N images under fresh masks, then the same classifier step on the B mixes). Its floor is
that work: the generator forward on B·N images without gradient plus the plain step. Printed:
``generated / plain`` (the cost of a generated batch), ``mean / plain`` at ``mix_prob`` = 1/2
(what an epoch costs per step), and ``generated / floor`` (the method's own overhead: masks,
reshapes, bookkeeping).

Stage 1 is a real robustlab run (method=mix_generator for one batch: its weights do not matter
for time); stage 2 is built exactly as robustlab-train builds it (``method.generator=`` that
run folder) on grouped batches from the data module. One step = batch preparation + objective +
backward + optimiser step (the Lightning step without logging). Measured after warm-up,
interleaving the variants so all see the same machine load; the fastest of the repeats counts.

    python scripts/bench_hydramix.py [--model wrn_16_2] [--groups 10] [--sources 3] [--ngf 64]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _bench import compose_config, timed, train_one_step  # scripts/_bench.py

from robustlab.run.builders import build_data, build_run_method


def data_overrides(args: argparse.Namespace) -> list[str]:
    return [
        "data=synthetic",
        "data.num_classes=10",
        f"data.n_train={40 * args.sources * args.groups}",
        f"data.batch_size={args.groups}",
        f"data.group_size={args.sources}",
        "data.val_fraction=0",
    ]


def generator_overrides(args: argparse.Namespace) -> list[str]:
    return [f"method.generator.ngf={args.ngf}", f"method.generator.image_size={args.image_size}"]


def train_generator(args: argparse.Namespace, folder: Path) -> Path:
    """Stage 1: a mix_generator run folder (one optimiser step is enough here)."""
    return train_one_step(
        folder,
        *data_overrides(args),
        "method=mix_generator",
        *generator_overrides(args),
        "method.pictures_every=0",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn_16_2")
    parser.add_argument("--groups", type=int, default=10, help="B: groups per batch")
    parser.add_argument("--sources", type=int, default=3, help="N: images per group")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64, help="generator resolution")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        generator_dir = train_generator(args, Path(tmp) / "generator")
        cfg = compose_config(
            *data_overrides(args),
            f"model={args.model}",
            "method=hydramix",
            f"method.generator={generator_dir}",
        )
        datamodule = build_data(cfg)
        hydramix = build_run_method(cfg, datamodule)
    hydramix.group_size = args.sources
    x, y = next(iter(datamodule.train_dataloader()))
    x = (x.float() / 255 if x.dtype == torch.uint8 else x).to(device)
    y = y.to(device)
    hydramix.to(device).train()
    classifier, generator = hydramix.model, hydramix.generator
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01, momentum=0.9)
    groups = x.view(-1, args.sources, *x.shape[1:])
    masks = hydramix.masks(groups, None, torch.Generator(device).manual_seed(0))

    def plain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(classifier(groups[:, 0]), y[:: args.sources]).backward()
        optimizer.step()

    def floor_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            mixed = generator(groups, masks)
        F.cross_entropy(classifier(mixed), y[:: args.sources]).backward()
        optimizer.step()

    def hydramix_step(mix_prob: float) -> Callable[[], None]:
        def step() -> None:
            hydramix.mix_prob = mix_prob
            optimizer.zero_grad(set_to_none=True)
            inputs, labels, _ = hydramix.training_batch((x, y), 0)
            hydramix.training_loss(inputs, labels).loss.backward()
            optimizer.step()

        return step

    variants = {
        "plain": plain_step,
        "floor": floor_step,
        "generated": hydramix_step(1.0),
        "real": hydramix_step(0.0),
    }
    for step in variants.values():
        timed(step, 2, device)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, step in variants.items():
            times[name].append(timed(step, args.steps, device))
    plain, floor, generated, real = (min(times[n]) for n in variants)
    mean = (generated + real) / 2
    print(
        f"machine: {platform.machine()} {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; classifier {args.model}, {args.groups} groups of "
        f"{args.sources} images 3x32x32, generator ngf {args.ngf} at {args.image_size} px; "
        f"fastest of {args.repeats} x {args.steps} steps"
    )
    print(f"plain:     {plain * 1e3:8.1f} ms/step  (classifier fwd+bwd on {args.groups} images)")
    print(f"floor:     {floor * 1e3:8.1f} ms/step  (generator forward + the plain step)")
    print(f"generated: {generated * 1e3:8.1f} ms/step")
    print(f"real:      {real * 1e3:8.1f} ms/step")
    print(f"ratio generated / plain:       {generated / plain:.2f}x")
    print(f"ratio mean (mix_prob ½) / plain: {mean / plain:.2f}x")
    print(f"ratio generated / floor:       {generated / floor:.3f}x (the method's own overhead)")


if __name__ == "__main__":
    main()
