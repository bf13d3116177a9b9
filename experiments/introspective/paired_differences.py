"""Per-seed paired differences of the introspective reduced runs (tables in RESULTS.md).

    python experiments/introspective/paired_differences.py $RUNS/introspective

The seed fixes the data subset, the validation split and the initialisation, so ICN and WINN are
compared with the ERM run of the same seed: d_s = acc(method, s) − acc(ERM, s) in points, mean d̄
and paired t = d̄ / (sd(d) / √n) with n = 3 (df = 2: |t| < 4.30 is inside the noise at the
two-sided 5 % level). Error reduction per seed: (err_ERM − err_method) / err_ERM, err = 1 − acc.
Also prints the size sweep as one table (mean ± sample std over the seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

SEEDS = (0, 1, 2)
CLEAN, FGSM, TRANSFER = "clean/acc", "fgsm/acc@0.125", "fgsm/transfer_acc@0.125"
SETTINGS = [  # (label, folder of <model>/seed<s>, metric)
    ("MNIST full", "mnist/full", CLEAN),
    ("MNIST full", "mnist/full", FGSM),
    ("MNIST full", "mnist/transfer", TRANSFER),
    *[(f"MNIST n={n}", f"mnist/sizes/n{n}", m) for n in (10, 30, 100, 300) for m in (CLEAN, FGSM)],
    ("CIFAR-10 copy", "cifar10", CLEAN),
    ("CIFAR-10 copy", "cifar10", FGSM),
]


def accuracy(root: Path, folder: str, model: str, seed: int, metric: str) -> float:
    """One run's summary metric in points (%)."""
    path = root / folder / model / f"seed{seed}" / "results.json"
    if not path.is_file():
        print(
            f"paired_differences: no {path}; pass the folder that holds mnist/ and cifar10/ "
            "(e.g. $RUNS/introspective) after run_reduced.sh has finished",
            file=sys.stderr,
        )
        sys.exit(2)
    results = json.loads(path.read_text())
    return 100.0 * results["summary"][metric]


def paired(root: Path, folder: str, model: str, metric: str) -> str:
    """Markdown cells: per-seed differences to ERM, their mean and the paired t."""
    diffs = [
        accuracy(root, folder, model, s, metric) - accuracy(root, folder, "erm", s, metric)
        for s in SEEDS
    ]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    t = mean / (sd / len(diffs) ** 0.5) if sd > 0 else float("inf")
    return f"{' / '.join(f'{d:+.2f}' for d in diffs)} | {mean:+.2f} | {t:.1f}"


def reductions(root: Path, folder: str, model: str, metric: str) -> str:
    """Per-seed error reductions vs ERM of the same seed (%), and their mean."""
    values = [
        100.0
        * (accuracy(root, folder, model, s, metric) - accuracy(root, folder, "erm", s, metric))
        / (100.0 - accuracy(root, folder, "erm", s, metric))
        for s in SEEDS
    ]
    return f"{' / '.join(f'{v:.1f}' for v in values)} | {statistics.mean(values):.1f}"


def spread(root: Path, folder: str, model: str, metric: str) -> str:
    values = [accuracy(root, folder, model, s, metric) for s in SEEDS]
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(root: Path) -> None:
    print("| setting | metric | ICN − ERM per seed | mean | t | WINN − ERM per seed | mean | t |")
    print("|---|---|---|---:|---:|---|---:|---:|")
    for label, folder, metric in SETTINGS:
        icn, winn = (paired(root, folder, m, metric) for m in ("icn", "winn"))
        print(f"| {label} | {metric} | {icn} | {winn} |")
    print(
        "\n| attack (MNIST full) | ICN error reduction per seed (%) | mean "
        "| WINN error reduction per seed (%) | mean |"
    )
    print("|---|---|---:|---|---:|")
    for folder, metric in (("mnist/full", FGSM), ("mnist/transfer", TRANSFER)):
        icn, winn = (reductions(root, folder, m, metric) for m in ("icn", "winn"))
        print(f"| {metric} | {icn} | {winn} |")
    print("\n| n per class | model | clean/acc (%) | fgsm/acc@0.125 (%) |")
    print("|---:|---|---:|---:|")
    for n in (10, 30, 100, 300):
        for model in ("erm", "icn", "winn"):
            cells = (spread(root, f"mnist/sizes/n{n}", model, m) for m in (CLEAN, FGSM))
            print(f"| {n} | {model.upper()} | {' | '.join(cells)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="$RUNS/introspective")
    main(parser.parse_args().runs)
