"""Re-score robustlab checkpoints with one fixed PGD-20 protocol (mean ± std per folder).

Used for the compute-matched control of finding 3 in RESULTS.md, so that every compared model
is measured by the same code: PGD-20 (random start, step 2.5·ε/20, last iterate, model in eval
mode) on the first ``--images`` MNIST test images at each l∞ and l2 ε, plus clean accuracy on
the same images.

    python experiments/ssl_adversarial/eval_checkpoints.py $RUNS/ssl_runs/auxiliary/{0,1,2} \
        --label AT --images 512
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from omegaconf import OmegaConf

from robustlab.attacks import pgd
from robustlab.cli.train import build_data
from robustlab.run.checkpoints import (
    CHECKPOINT_KEY,
    checkpoint_path,
    load_checkpoint,
    load_classifier,
)

LINF = (0.05, 0.1, 0.2, 0.3)
L2 = (0.5, 1.0, 2.0)


def test_images(run_cfg, n: int) -> tuple[torch.Tensor, torch.Tensor, object]:
    datamodule = build_data(run_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    xs, ys, count = [], [], 0
    for x, y in datamodule.test_dataloader():
        xs.append(x.float() / 255 if x.dtype == torch.uint8 else x)
        ys.append(y)
        count += len(y)
        if count >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n], datamodule


def score(run_dir: Path, n: int) -> dict[str, float]:
    checkpoint = load_checkpoint(checkpoint_path(run_dir))  # the best one results.json names
    run_cfg = OmegaConf.create(checkpoint[CHECKPOINT_KEY]["config"])
    x, y, datamodule = test_images(run_cfg, n)
    model = load_classifier(checkpoint, datamodule=datamodule)
    generator = torch.Generator().manual_seed(0)
    out = {}
    with torch.no_grad():
        out["clean"] = (model(x).argmax(1) == y).float().mean().item()
    for norm, epsilons in (("linf", LINF), ("l2", L2)):
        for eps in epsilons:
            x_adv = pgd(model, x, y, eps=eps, steps=20, norm=norm, generator=generator)
            with torch.no_grad():
                out[f"{norm}@{eps:g}"] = (model(x_adv).argmax(1) == y).float().mean().item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--label", default="runs")
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    scores = [score(run, args.images) for run in args.runs]
    cells = []
    for key in scores[0]:
        values = [100 * s[key] for s in scores]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
    print("| variant | n | " + " | ".join(scores[0]) + " |")
    print(f"| {args.label} | {len(scores)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
