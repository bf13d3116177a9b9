"""Training-step throughput of ``method=erm`` (the real Lightning path) against a hand-written
PyTorch loop on the same model, data, batch size and optimiser, measured in the same run.

    python scripts/bench_train.py                       # resnet20 on 32×32 synthetic data, CPU
    python scripts/bench_train.py --model small_cnn --data mnist   # needs ROBUSTLAB_DATA

Both sides: tensor-resident uint8 data sliced per batch, [0, 1] conversion, normalisation
inside the model, SGD step; the robustlab side additionally runs its metrics and logging.
Timing starts after ``--warmup`` steps (median of ``--repeats`` runs). Prints images/s and
the ratio robustlab / plain (target ≥ 0.9 on CPU).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from robustlab.run.builders import build_data, build_run_method  # noqa: E402
from robustlab.run.callbacks import build_callbacks  # noqa: E402
from robustlab.run.trainer import build_trainer  # noqa: E402


class StepTimer(pl.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def robustlab_throughput(cfg, steps: int, warmup: int, run_dir: Path) -> float:
    datamodule = build_data(cfg)
    method = build_run_method(cfg, datamodule)
    callbacks, _ = build_callbacks(cfg.callbacks, run_dir, has_validation=False, has_logger=False)
    timer = StepTimer(warmup)
    trainer = build_trainer(
        cfg.trainer,
        callbacks=[*callbacks, timer],
        max_steps=warmup + steps,
        limit_val_batches=0,
        enable_checkpointing=True,
        default_root_dir=str(run_dir),
    )
    trainer.fit(method, datamodule=datamodule)
    return steps * cfg.data.batch_size / (timer.end - timer.start)


def plain_throughput(cfg, steps: int, warmup: int) -> float:
    datamodule = build_data(cfg)
    model = build_run_method(cfg, datamodule).model  # same architecture and initialisation
    images, labels = (
        datamodule._ensure_loaded().train.images,
        datamodule._ensure_loaded().train.labels,
    )
    opt_cfg = cfg.method.optimizer
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=opt_cfg.lr,
        momentum=opt_cfg.momentum,
        nesterov=opt_cfg.nesterov,
        weight_decay=opt_cfg.weight_decay,
    )
    batch = cfg.data.batch_size
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=generator)
    model.train()
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        index = order[(step * batch) % (len(order) - batch) :][:batch]
        x = images[index].float() / 255
        loss = F.cross_entropy(model(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [
        f"model={args.model}",
        f"data={args.data}",
        f"data.batch_size={args.batch_size}",
        "data.val_fraction=0",
        "logger=[]",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=1000",
        "suite=[]",
    ]
    if args.data == "synthetic":
        overrides += ["data.n_train=6400", "data.channels=3"]
    with initialize_config_module(config_module="robustlab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device cpu"
    )
    print(
        f"model={args.model} data={args.data} batch={args.batch_size} steps={args.steps} "
        f"(after {args.warmup} warm-up) repeats={args.repeats}"
    )
    ours, plain = [], []
    import tempfile

    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        pl.seed_everything(0, verbose=False)
        plain.append(plain_throughput(cfg, args.steps, args.warmup))
        pl.seed_everything(0, verbose=False)
        with tempfile.TemporaryDirectory() as run_dir:
            ours.append(robustlab_throughput(cfg, args.steps, args.warmup, Path(run_dir)))
    ratio = statistics.median(ours) / statistics.median(plain)
    for label, values in (("plain PyTorch loop", plain), ("robustlab method=erm", ours)):
        print(
            f"{label:21s}: {statistics.median(values):9.1f} images/s {[round(v) for v in values]}"
        )
    print(f"ratio robustlab / plain = {ratio:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
