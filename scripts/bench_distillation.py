"""Step time of method=crld vs method=erm and vs CRLD's floor (same student, batch and data).

CRLD runs the student forward and backward on a weak and a strong view and the frozen teacher
forward on both, so its floor is exactly that work: two student forward passes + one backward
of their (cross-entropy) loss + two teacher forwards without gradient, then the optimiser step.
``crld / floor`` is the method's own overhead (masks, four KD terms, bookkeeping; goal <= 1.15x),
``crld / erm`` the cost a user sees against a plain student step.

The teacher is a real robustlab run: step one trains it for one batch (its weights do not matter
for time), step two builds the CRLD student exactly as robustlab-train does (``method.teacher=``
the teacher's run folder) on batches with their weak and strong views made by the data module.
One training step = objective + backward + optimiser step (the Lightning step without logging).
Measured after warm-up, interleaving the variants so all see the same machine load; the fastest
of the repeats is printed (noise on a shared machine only adds time).

    python scripts/bench_distillation.py [--teacher resnet32x4] [--student resnet8x4] [--batch 64]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _bench import compose_config, timed, train_one_step  # scripts/_bench.py

from robustlab.run.builders import build_data, build_run_method


def data_overrides(args: argparse.Namespace) -> list[str]:
    return [
        "data=synthetic",
        f"data.num_classes={args.classes}",
        f"data.n_train={4 * args.batch}",
        f"data.batch_size={args.batch}",
        "data.views=[weak,strong]",
        "data.val_fraction=0",
    ]


def train_teacher(args: argparse.Namespace, folder: Path) -> Path:
    """Step one of the pipeline: a teacher run folder (one optimiser step is enough here)."""
    return train_one_step(folder, *data_overrides(args), f"model={args.teacher}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = train_teacher(args, Path(tmp) / "teacher")
        cfg = compose_config(
            *data_overrides(args),
            f"model={args.student}",
            "method=crld",
            f"method.teacher={teacher_dir}",
        )
        datamodule = build_data(cfg)
        crld = build_run_method(cfg, datamodule)
    x, y = next(iter(datamodule.train_dataloader()))
    views = datamodule.make_views(x, epoch=0, step=0)
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    x, y = x.to(device), y.to(device)
    weak, strong = views["weak"].to(device), views["strong"].to(device)
    crld.to(device).train()
    student, teacher = crld.model, crld.teacher
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)

    def erm_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(student(x), y).backward()
        optimizer.step()

    def floor_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            teacher(weak), teacher(strong)
        (F.cross_entropy(student(weak), y) + F.cross_entropy(student(strong), y)).backward()
        optimizer.step()

    def crld_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        crld.training_objective((x, y, {"weak": weak, "strong": strong})).loss.backward()
        optimizer.step()

    variants = {"erm": erm_step, "floor": floor_step, "crld": crld_step}
    for step in variants.values():
        timed(step, 2, device)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, step in variants.items():
            times[name].append(timed(step, args.steps, device))
    erm, floor, crld_time = (min(times[n]) for n in variants)
    print(
        f"machine: {platform.machine()} {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; teacher {args.teacher}, student {args.student}, "
        f"batch {args.batch}x3x32x32, {args.classes} classes; fastest of {args.repeats} x "
        f"{args.steps} steps"
    )
    print(f"erm:   {erm * 1e3:8.1f} ms/step  (one student forward + backward)")
    print(f"floor: {floor * 1e3:8.1f} ms/step  (2 student fwd+bwd + 2 teacher forwards)")
    print(f"crld:  {crld_time * 1e3:8.1f} ms/step")
    print(f"ratio crld / floor: {crld_time / floor:.3f}x (goal <= 1.15x)")
    print(f"ratio crld / erm:   {crld_time / erm:.2f}x")


if __name__ == "__main__":
    main()
