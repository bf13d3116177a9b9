"""GPU training benchmark: robustlab's ``method=erm`` and PGD-10 adversarial training against
plain PyTorch loops with identical settings in the same run, and the wall time of the full
corruption suite through robustlab's suite runner (issue 14).

    python scripts/bench_gpu.py                      # cuda: preact_resnet18, batch 256, bf16, NHWC
    python scripts/bench_gpu.py --model resnet20 --precision 32-true --memory-format contiguous
    python scripts/bench_gpu.py --checkpoint RUN/checkpoints/last.ckpt   # suite on a trained model
    python scripts/bench_gpu.py --smoke --device cpu # the whole script in seconds (not GPU numbers)

Both sides of a comparison train the same classifier (robustlab's builder under the same seed:
same architecture, same initial weights, normalisation inside the model) on the same data
(the CIFAR-10 copy under ``$ROBUSTLAB_DATA``, else synthetic 32×32 images; no augmentation),
with SGD at robustlab's default hyper-parameters and a constant learning rate, the forward pass
under bfloat16 autocast (what Lightning's ``bf16-mixed`` does; ``--precision 32-true`` turns it
off), convolution weights channels-last, cuDNN autotuning as ``trainer=gpu`` sets it.

- robustlab: its real path: data module, method and Trainer from robustlab's builders (the
  trainer applies ``trainer.memory_format`` and ``trainer.precision``); batches are index-slices
  of the host-resident uint8 tensor, copied to the device per step.
- plain loop: the whole uint8 training set resident on the device, one index-slice per step.

PGD-10 adversarial training (Madry et al., ICLR 2018): l∞ ε = 8/255, step α = 2/255, uniform
random start in the ball, the attack with the model in eval mode (robustlab's default
``attack_in_eval_mode``), then cross-entropy on the adversarial batch in train mode. The plain
side runs :func:`plain_pgd`, written here with the arithmetic of ``robustlab.attacks.pgd`` (the
test checks both give the same examples). Both sides also run the no-grad eval-mode forward of
the clean batch that robustlab's step makes for ``train/acc``: the same work on each side.

Timing: ``--warmup`` steps excluded, the device drained at both ends, robustlab and plain
interleaved over ``--repeats`` runs (which goes first alternates), the median reported.

Corruption suite: every corruption × 5 severities × ``--corruption-images`` test images (plus
the clean reference pass the runner makes on the same images), on a freshly initialised model
unless ``--checkpoint`` is given (the cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by the tests
from _bench import cifar10_or_synthetic, compose_config, sync  # noqa: E402  scripts/_bench.py

from robustlab.attacks import Attack  # noqa: E402
from robustlab.data import SyntheticDataModule, build_datamodule  # noqa: E402
from robustlab.errors import ConfigError  # noqa: E402
from robustlab.perturbations.corruptions import ALL_CORRUPTIONS  # noqa: E402
from robustlab.perturbations.imageops import from_uint8  # noqa: E402
from robustlab.run.builders import build_model, build_run_method  # noqa: E402
from robustlab.run.callbacks import build_callbacks  # noqa: E402
from robustlab.run.checkpoints import load_classifier  # noqa: E402
from robustlab.run.trainer import MEMORY_FORMATS, build_trainer  # noqa: E402
from robustlab.suites.runner import run_suites  # noqa: E402

PRECISIONS = ("bf16-mixed", "32-true")
SMOKE = {  # tiny enough that a loaded CPU runs the whole script in well under a minute
    "model": "resnet8",
    "batch_size": 16,
    "steps": 2,
    "warmup": 1,
    "repeats": 1,
    "corruption_images": 64,
    "corruptions": ["gaussian_noise", "brightness"],
}


# ----------------------------------------------------------------------------- plain PyTorch
def plain_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Hand-written l∞ PGD from a uniform random start: ``x₀ = clip(x + U[−ε, ε], 0, 1)``,
    ``x_{t+1} = clip(x_t + α · sign(∇ₓ Σ_i CE_i), max(x − ε, 0), min(x + ε, 1))``. The random
    start is drawn on ``generator``'s device (else ``x``'s, from the global generator)."""
    source = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=source, dtype=x.dtype).to(x.device)
    x_adv = (x + (2 * u - 1) * eps).clamp(0.0, 1.0)
    lower, upper = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="none").sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.clamp(x_adv.detach() + step_size * grad.sign(), lower, upper)
    return x_adv.detach()


def plain_images_per_s(cfg, dm, args, device: torch.device, attack: Attack | None) -> float:
    """Images/s of a hand-written training loop: ERM, or Madry PGD training with ``attack``."""
    pl.seed_everything(0, verbose=False)
    model = build_model(cfg, dm).to(device)
    model = model.to(memory_format=MEMORY_FORMATS[args.memory_format])
    torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)
    opt = cfg.method.optimizer
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=opt.lr,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        weight_decay=opt.weight_decay,
    )
    train = dm._ensure_loaded().train
    index = dm.train_index
    images, labels = train.images[index].to(device), train.labels[index].to(device)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).to(device)
    batch, bf16 = args.batch_size, args.precision == "bf16-mixed"
    model.train()
    start = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync(device)
            start = time.perf_counter()
        rows = order[(step * batch) % (len(order) - batch + 1) :][:batch]
        x, y = from_uint8(images[rows]), labels[rows]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if attack is not None:
                model.eval()
                x_adv = plain_pgd(
                    model, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps
                )
                model.train()
                loss = F.cross_entropy(model(x_adv), y)
                with torch.no_grad():  # clean accuracy, as robustlab's train/acc
                    model.eval()
                    model(x)
                    model.train()
            else:
                loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return args.steps * batch / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- robustlab
class StepTimer(pl.Callback):
    """Wall time from the start of optimiser step ``warmup`` to the end of step ``last``,
    the device drained at both ends (so checkpoint writing after the last step is not timed)."""

    def __init__(self, warmup: int, last: int, device: torch.device):
        self.warmup, self.last, self.device = warmup, last, device
        self.start = self.seconds = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.last and self.seconds is None:
            sync(self.device)
            self.seconds = time.perf_counter() - self.start


def robustlab_images_per_s(cfg, dm, args, device: torch.device) -> float:
    """Images/s of ``trainer.fit`` on robustlab's method, callbacks and trainer."""
    pl.seed_everything(0, verbose=False)
    method = build_run_method(cfg, dm)
    timer = StepTimer(args.warmup, args.warmup + args.steps, device)
    with tempfile.TemporaryDirectory() as run_dir:
        callbacks, _ = build_callbacks(
            cfg.callbacks, Path(run_dir), has_validation=False, has_logger=False
        )
        trainer = build_trainer(
            cfg.trainer,
            callbacks=[*callbacks, timer],
            max_steps=args.warmup + args.steps,
            limit_val_batches=0,
            default_root_dir=run_dir,
        )
        trainer.fit(method, datamodule=dm)
    return args.steps * args.batch_size / timer.seconds


# ----------------------------------------------------------------------------- the run
def training_config(args, device: torch.device, data: str, method: str):
    overrides = [
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"trainer.precision={args.precision}",
        f"trainer.memory_format={args.memory_format}",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=1000",
        f"model={args.model}",
        f"data={data}",
        f"data.batch_size={args.batch_size}",
        f"method={method}",
        "method.scheduler.name=constant",
        "logger=[]",
        "suite=[]",
    ]
    if method == "adversarial":
        overrides += [
            "method.attack.eps=8/255",
            "method.attack.step_size=2/255",
            f"method.attack.steps={args.pgd_steps}",
            "method.attack.random_start=true",
        ]
    return compose_config(*overrides)


def compare(label: str, cfg, dm, args, device: torch.device, attack: Attack | None) -> float:
    """Interleaved repeats of the plain loop and robustlab; prints both medians and the ratio."""
    plain, ours = [], []
    for repeat in range(args.repeats):  # which side goes first alternates
        for side in ("plain", "robustlab")[:: 1 if repeat % 2 == 0 else -1]:
            if side == "plain":
                plain.append(plain_images_per_s(cfg, dm, args, device, attack))
            else:
                ours.append(robustlab_images_per_s(cfg, dm, args, device))
    ratio = statistics.median(ours) / statistics.median(plain)
    for side, values in (("plain PyTorch loop", plain), (f"robustlab {label}", ours)):
        runs = [round(v) for v in values]
        print(f"  {side:30s}: {statistics.median(values):10.1f} images/s {runs}")
    print(f"{label}: ratio robustlab / plain = {ratio:.3f}  (goal >= 0.95)")
    return ratio


def suite_data(dm, args):
    """The test images the corruption suite runs on: the CIFAR-10 copy's test split, or
    synthetic images when there is none."""
    if not isinstance(dm, SyntheticDataModule):
        return dm
    suite_dm = build_datamodule(
        "synthetic",
        n_train=10,
        n_test=args.corruption_images,
        image_size=32,
        eval_batch_size=args.eval_batch_size,
        val_fraction=0,
    )
    suite_dm.setup("fit")
    return suite_dm


def corruption_suite(cfg, dm, args, device: torch.device) -> None:
    """Wall time of ``run_suites`` with the corruption suite on ``--corruption-images``."""
    dm = suite_data(dm, args)
    if args.checkpoint:
        model = load_classifier(args.checkpoint, datamodule=dm)
        state = f"the trained model of {args.checkpoint}"
    else:
        pl.seed_everything(0, verbose=False)
        model = build_model(cfg, dm)
        state = f"{args.model} freshly initialised (the cost does not depend on the weights)"
    corruptions = args.corruptions or list(ALL_CORRUPTIONS)
    suite = {"corruptions": {"corruptions": corruptions, "max_images": args.corruption_images}}
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(cfg.trainer, default_root_dir=run_dir)
        sync(device)
        start = time.perf_counter()
        run = run_suites(suite, model, dm, trainer, seed=0)
        sync(device)
        seconds = time.perf_counter() - start
    n = run.suites["corruptions"]["images"]
    total = len(corruptions) * 5 * n
    summary = run.summary
    mean_acc = summary.get("corruptions/mean_acc", summary.get("corruptions/heldout_mean_acc"))
    print(
        f"corruption suite: {len(corruptions)} corruptions x 5 severities x {n} images = "
        f"{total} images in {seconds:.2f} s = {total / seconds:.1f} images/s "
        f"({state}; eval batch {args.eval_batch_size}; the runner's clean "
        f"pass included; mean corrupted accuracy {mean_acc:.3f})"
    )


def machine_line(device: torch.device, args) -> str:
    if device.type == "cuda":
        where = (
            f"GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}"
        )
    else:
        where = (
            f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
            f"threads, load average {os.getloadavg()[0]:.1f}"
        )
    return (
        f"machine: {where}, torch {torch.__version__}, lightning {pl.__version__}, "
        f"device {device}, precision {args.precision}, memory format {args.memory_format}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="preact_resnet18", help="e.g. preact_resnet18, resnet20")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16-mixed")
    parser.add_argument("--memory-format", choices=sorted(MEMORY_FORMATS), default="channels_last")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--corruption-images", type=int, default=10_000)
    parser.add_argument(
        "--corruptions", nargs="+", choices=ALL_CORRUPTIONS, default=None, help="default: all 19"
    )
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument("--checkpoint", default=None, help="a trained run for the suite")
    parser.add_argument("--smoke", action="store_true", help="tiny defaults (a CPU test)")
    if parser.parse_args(argv).smoke:  # smoke settings are defaults: explicit options win
        parser.set_defaults(**SMOKE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda needs a visible CUDA GPU; use --device cpu", file=sys.stderr)
        sys.exit(2)
    try:
        run(args, device)
    except ConfigError as err:  # bad option values: one line, exit status 2
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace, device: torch.device) -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # keep the report readable
    if device.type != "cuda":
        print(f"note: running on {device}, not a GPU: these are not GPU numbers")
    n_train = args.batch_size * (args.warmup + args.steps + 1)
    dm = cifar10_or_synthetic(
        n_train,
        n_test=args.corruption_images,  # without data: as many synthetic images as the suite scores
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        val_fraction=0,
    )
    data = "synthetic" if isinstance(dm, SyntheticDataModule) else "cifar10"
    print(machine_line(device, args))
    print(
        f"model={args.model} data={data} ({dm.description}) batch={args.batch_size} "
        f"steps={args.steps} (after {args.warmup} warm-up) repeats={args.repeats}"
    )
    erm_cfg = training_config(args, device, data, "erm")
    compare("method=erm", erm_cfg, dm, args, device, attack=None)
    adv_cfg = training_config(args, device, data, "adversarial")
    attack = Attack(eps="8/255", step_size="2/255", steps=args.pgd_steps, random_start=True)
    compare(f"PGD-{args.pgd_steps} adversarial", adv_cfg, dm, args, device, attack)
    corruption_suite(erm_cfg, dm, args, device)


if __name__ == "__main__":
    main()
