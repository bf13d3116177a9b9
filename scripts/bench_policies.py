"""Benchmark: augmentation policies per second, batched (robustlab) vs per image (torchvision).

For each policy (``cutout``, ``random_erasing``, ``autoaugment``, ``trivialaugment``):
(a) robustlab: ``data.augment={crop_padding: 4, flip: true, policy: <name>}`` on the
    tensor-resident training loader; every batch cropped, flipped and augmented by
    :meth:`ImageDataModule.augment_batch` and :meth:`ImageDataModule.apply_policies` on the
    training device (CUDA if available, else CPU);
(b) torchvision: the same images through a DataLoader whose workers apply per image
    ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, then the policy
    (``AutoAugment(CIFAR10)``, ``TrivialAugmentWide()`` on the PIL image; ``RandomErasing()``
    after ``ToTensor()``; Cutout, which torchvision lacks, as ``RandomErasing(p=1, scale=(1/4,
    1/4), ratio=(1, 1), value=0)``, a 16 x 16 square kept inside the image) and ``ToTensor()``;
    batches copied to the device.
Both yield float [0, 1] batches on the device, in the same run. Data: CIFAR-10 from
$ROBUSTLAB_DATA (canonical or the JPEG-decoded copy), else synthetic 3x32x32 images.
Reports the median over repeats after a warm-up of images per second of wall-clock time ((b)
with ``--workers`` processes) and images per CPU-second of the process doing the work ((b) in
the main process, the fair comparison on a shared, loaded machine), and the ratios (a) / (b).

    python scripts/bench_policies.py [--batches 20] [--batch-size 128] [--workers 2] \
        [--threads 1] [--policies cutout,autoaugment]
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
from _bench import (
    batched_vs_per_image,
    cifar10_or_synthetic,
    per_image_loader,
    time_device_batches,
)  # scripts/
from torch.utils.data import DataLoader
from torchvision import transforms as T

POLICIES = ("cutout", "random_erasing", "autoaugment", "trivialaugment")


def torchvision_policy(name: str) -> tuple[list, list]:
    """(transforms on the PIL image, transforms on the tensor after ToTensor) for ``name``."""
    if name == "autoaugment":
        return [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)], []
    if name == "trivialaugment":
        return [T.TrivialAugmentWide()], []
    if name == "random_erasing":
        return [], [T.RandomErasing()]
    return [], [T.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0)]


def make_datamodule(batch_size: int, policy: str):
    augment = {"crop_padding": 4, "flip": True, "policy": policy}
    common = dict(batch_size=batch_size, augment=augment, drop_last=True, val_fraction=0.0)
    return cifar10_or_synthetic(20000, **common)


def time_batched(dm, device: torch.device, batches: int, epoch: int) -> tuple[float, float]:
    """(wall, CPU) seconds for ``batches`` cropped, flipped and policy-augmented batches."""

    def augment(images: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        return dm.apply_policies(dm.augment_batch(images, epoch, step), epoch, step)

    return time_device_batches(dm, device, batches, epoch, augment)


def torchvision_loader(dm, batch_size: int, workers: int, policy: str) -> DataLoader:
    on_image, on_tensor = torchvision_policy(policy)
    transform = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *on_image, T.ToTensor()] + on_tensor
    )
    return per_image_loader(dm, transform, batch_size, workers)


def bench(policy: str, args, device: torch.device) -> tuple[float, float, float, float]:
    """Median (a) and (b) images/s and images/CPU-s of ``policy``."""
    dm = make_datamodule(args.batch_size, policy)
    workers = torchvision_loader(dm, args.batch_size, args.workers, policy)
    in_process = torchvision_loader(dm, args.batch_size, 0, policy)
    return batched_vs_per_image(
        time_batched, dm, workers, in_process, device, args.batches, args.repeats
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="torchvision DataLoader workers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of (a) (0: torch's default); each worker of (b) runs one thread",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"device={device} cpu={platform.processor() or platform.machine()} "
        f"threads={torch.get_num_threads()} cores={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
        f"batch={args.batch_size} (a) batched on the device, (b) torchvision per image: "
        f"images/s with {args.workers} workers | images/CPU-s in the main process"
    )
    for policy in args.policies.split(","):
        a, a_cpu, b, b_cpu = bench(policy, args, device)
        print(
            f"{policy:15s} (a) {a:7.0f}/s {a_cpu:7.0f}/CPU-s  (b) {b:7.0f}/s {b_cpu:7.0f}/CPU-s  "
            f"ratio {a / b:5.2f}x wall, {a_cpu / b_cpu:5.2f}x per CPU-second"
        )


if __name__ == "__main__":
    main()
