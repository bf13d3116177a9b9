"""Throughput of robustlab's batched corruptions vs the per-image ``imagecorruptions`` package.

Both sides corrupt the same 32x32 RGB images with ImageNet-C parameters (``imagecorruptions``
only implements those, so ``params="imagenet"`` keeps the comparison like for like). Ours runs
on one batch tensor, the reference on one uint8 HWC array at a time. Each measurement is the
median of ``--repeats`` runs after a warm-up; the reference is timed on ``--ref-n`` images and
reported per image. Overall ratio = Σ reference time per image / Σ our time per image over the
corruptions both sides ran.

``imagecorruptions`` 1.1.2 predates numpy 2, setuptools without ``pkg_resources`` and
scikit-image 0.19+; :func:`install_imagecorruptions_shims` patches exactly that at runtime, here
only (never in the library): a stand-in ``pkg_resources.resource_filename``, ``np.float_`` =
``np.float64``, and ``skimage.filters.gaussian(multichannel=True)`` -> ``channel_axis=-1``.

    python scripts/bench_corruptions.py --n 256 --threads 1,2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from robustlab.perturbations import imageops
from robustlab.perturbations.corruptions import ALL_CORRUPTIONS, corrupt


def install_imagecorruptions_shims():
    """Import ``imagecorruptions`` on numpy 2 / new setuptools / new scikit-image."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, relative: str) -> str:
            spec = importlib.util.find_spec(package.split(".")[0])
            return os.path.join(list(spec.submodule_search_locations)[0], relative)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # removed in numpy 2; used by plasma_fractal (fog)
    import skimage.filters

    gaussian = skimage.filters.gaussian

    def gaussian_compat(*args, multichannel=None, **kwargs):
        if multichannel:  # removed in scikit-image 0.19
            kwargs.setdefault("channel_axis", -1)
        return gaussian(*args, **kwargs)

    import imagecorruptions
    import imagecorruptions.corruptions as module

    module.gaussian = gaussian_compat
    return imagecorruptions


def load_images(n: int) -> tuple[torch.Tensor, str]:
    root = os.environ.get("ROBUSTLAB_DATA")
    path = Path(root) / "cifar10-jpeg" / "test.npz" if root else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            images = torch.from_numpy(data["images"][:n].copy()).permute(0, 3, 1, 2)
        return imageops.from_uint8(images), f"CIFAR-10 test (JPEG-decoded copy), {n} images"
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(
        torch.rand(n, 3, 6, 6, generator=g), size=(32, 32), mode="bicubic", align_corners=False
    )
    x = x + 0.05 * torch.randn(n, 3, 32, 32, generator=g)
    return imageops.from_uint8(imageops.to_uint8(x)), f"random smooth images, {n}"


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(threads: int, x: torch.Tensor, ic, severity: int, repeats: int, ref_n: int) -> None:
    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    arrays = imageops.to_uint8(x[:ref_n]).permute(0, 2, 3, 1).numpy()
    print(
        f"\n## torch threads = {torch.get_num_threads()}, device = cpu, severity {severity}, "
        f"ours on {len(x)} images, imagecorruptions on {ref_n}"
    )
    print(f"{'corruption':20s} {'ours img/s':>12s} {'ref img/s':>12s} {'ratio':>8s}")
    ours_total = ref_total = 0.0
    for name in ALL_CORRUPTIONS:
        try:
            np.random.seed(0)
            ic.corrupt(arrays[0], corruption_name=name, severity=severity)
        except Exception as err:  # noqa: BLE001 - report and skip, whatever broke
            print(
                f"{name:20s} skipped: imagecorruptions fails on 32x32 ({type(err).__name__}: "
                f"{str(err)[:60]})"
            )
            continue
        ours = median_time(
            lambda n=name: corrupt(x, n, severity, "imagenet", torch.Generator().manual_seed(0)),
            repeats,
        )
        ref = median_time(
            lambda n=name: [ic.corrupt(a, corruption_name=n, severity=severity) for a in arrays],
            repeats,
        )
        ours_per, ref_per = ours / len(x), ref / len(arrays)
        ours_total += ours_per
        ref_total += ref_per
        print(f"{name:20s} {1 / ours_per:12.0f} {1 / ref_per:12.0f} {ref_per / ours_per:7.1f}x")
    print(
        f"{'overall (total time)':20s} {1 / ours_total:12.0f} {1 / ref_total:12.0f} "
        f"{ref_total / ours_total:7.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256, help="images in our batch")
    parser.add_argument("--ref-n", type=int, default=32, help="images for imagecorruptions")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    ic = install_imagecorruptions_shims()
    x, source = load_images(args.n)
    print(
        f"# robustlab corruptions vs imagecorruptions | {source} | torch {torch.__version__}, "
        f"numpy {np.__version__}, python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for threads in (int(t) for t in args.threads.split(",")):
        run(threads, x, ic, args.severity, args.repeats, min(args.ref_n, args.n))


if __name__ == "__main__":
    main()
