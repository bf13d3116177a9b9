"""Benchmark: HydraMix / ChimeraMix stage 1 (``method=mix_generator``) and the segment precompute.

(1) Stage-1 step: the real method in a real Lightning trainer (one generator step and one
    discriminator step per batch of ``--groups`` groups of ``--sources`` same-class images,
    masks of ``--mask`` kind), timed per batch by a callback; reported as source images per
    second and as a ratio over (2).
(2) Reference, in the same run: a plain encoder–decoder step of the same generator on the same
    number of images (reconstruction MSE, one Adam step), plain PyTorch.
(3) Segmentation precompute: Felzenszwalb once per image of a 100-per-class subset at setup
    (``data.segments``), seconds and images per second, beside what segmenting every sample in
    the loader costs over a HydraMix schedule (``500 // 100`` passes per epoch × 200 epochs,
    ChimeraMix's released pipeline).
Data: CIFAR-10 from $ROBUSTLAB_DATA (canonical or the JPEG-decoded copy), else synthetic 3×32×32
images. Device: CUDA if available, else CPU. Medians over ``--steps`` after ``--warmup``.

    python scripts/bench_mix_generator.py [--groups 16] [--sources 3] [--steps 10] [--ngf 64]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from _bench import cifar10_or_synthetic, sync  # scripts/_bench.py

from robustlab.methods import build_method
from robustlab.models import build_classifier
from robustlab.models.mixing_generator import build_mixing_generator


class StepTimer(pl.Callback):
    """Wall-clock seconds of every training batch (device synchronised)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sync(pl_module.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        sync(pl_module.device)
        self.seconds.append(time.perf_counter() - self.start)


def stage_step_seconds(dm, args, accelerator: str) -> float:
    """Median seconds of one stage-1 batch (after the warm-up batches)."""
    model = build_classifier("small_cnn", num_classes=10, in_channels=3, mean=0.5, std=0.25)
    mask = {"kind": args.mask, **({"rule": "uniform"} if args.mask == "segmentation" else {})}
    method = build_method(
        "mix_generator",
        model,
        generator={"ngf": args.ngf, "n_blocks": 2, "image_size": args.image_size},
        discriminator={"ndf": args.ngf},
        mask=mask,
        pictures_every=0,
        optimizer=None,
        scheduler=None,
        optimizers={
            "generator": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
            "discriminator": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
        },
    )
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=args.precision,
        max_epochs=1,
        limit_train_batches=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(method, datamodule=dm)
    return statistics.median(timer.seconds[args.warmup :])


def reference_step_seconds(dm, args, device: torch.device) -> float:
    """Median seconds of a plain encoder–decoder step on ``groups · sources`` images."""
    generator = build_mixing_generator(
        in_channels=3, ngf=args.ngf, n_blocks=2, image_size=args.image_size
    ).to(device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    images = dm.train_dataloader().dataset[torch.arange(args.groups * args.sources)][0]
    images = images.to(device).float() / 255
    autocast = torch.autocast(device.type, enabled=args.precision != "32-true")
    seconds = []
    for step in range(args.warmup + args.steps):
        sync(device)
        start = time.perf_counter()
        with autocast:
            target = 2 * generator.working(images) - 1
            loss = F.mse_loss(2 * generator.decode(generator.encode(images)) - 1, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync(device)
        if step >= args.warmup:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--sources", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--mask", default="segmentation", choices=["grid", "segmentation"])
    parser.add_argument("--precision", default="32-true", help="e.g. 16-mixed on a GPU")
    args = parser.parse_args()
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")

    dm = cifar10_or_synthetic(
        1000,
        samples_per_class=100,
        val_fraction=0.0,
        batch_size=args.groups,
        group_size=args.sources,
        segments={},
        augment={"crop_padding": 4, "flip": True},
    )
    segments = dm.train_segments  # (3) the one-off precompute, timed by the data module
    precompute = dm.segment_seconds
    count = len(segments)
    per_image = precompute / count
    schedule = count * max(500 // 100, 1) * 200  # segmentations if done per sample per pass

    stage = stage_step_seconds(dm, args, "gpu" if cuda else "cpu")
    reference = reference_step_seconds(dm, args, device)
    images = args.groups * args.sources
    print(f"device: {torch.cuda.get_device_name() if cuda else platform.processor() or 'cpu'}")
    print(f"data: {dm.description} ({count} training images, 100 per class)")
    print(
        f"settings: {args.groups} groups x {args.sources} sources, ngf {args.ngf}, working "
        f"size {args.image_size}, mask {args.mask}, precision {args.precision}"
    )
    print(
        f"(1) stage-1 step: {stage * 1e3:.1f} ms = {images / stage:.1f} source images/s "
        f"({args.groups / stage:.1f} mixes/s)"
    )
    rate = images / reference
    print(f"(2) plain encoder-decoder step: {reference * 1e3:.1f} ms = {rate:.1f} images/s")
    print(f"    ratio stage-1 / plain: {stage / reference:.2f}x")
    mean_segments = segments.flatten(1).amax(1).float().mean().item() + 1
    print(
        f"(3) segmentation precompute: {precompute:.2f} s for {count} images "
        f"({count / precompute:.0f} images/s, mean {mean_segments:.1f} "
        f"segments); per sample per pass over a 200-epoch schedule: {schedule} segmentations "
        f"= {schedule * per_image:.0f} s ({schedule // count}x the precompute)"
    )


if __name__ == "__main__":
    main()
