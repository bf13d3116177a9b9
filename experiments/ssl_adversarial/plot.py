"""Robust accuracy vs test ε for each self-supervision × adversarial-training variant.

Reads every ``results.json`` under the given run / multirun folders, labels each run by its
variant (AT, AT + SSL λ, attacked SSL, SSL pre-trained → AT), and draws mean ± std over seeds of
the strongest attack's accuracy per ε, one panel per threat model (``pgd_linf``, ``pgd_l2``);
ε = 0 is clean accuracy. A dashed line marks the training ε of the l∞ panel.

    python experiments/ssl_adversarial/plot.py RUN_DIR... --out robust_accuracy_vs_eps.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SUITES = {"pgd_linf": "PGD l∞", "pgd_l2": "PGD l2"}


def variant(result: dict) -> str:
    """A short label for the training variant of one run."""
    method = result["config"]["method"]
    if method.get("init_from"):
        return "SSL pre-trained → AT"
    if method.get("task_weight", 1.0) == 0:
        return "SSL pre-training"
    eps = method.get("attack", {}).get("eps", 0)
    head = "AT" if eps not in (0, "0") else "standard"
    lam = method.get("ssl_weight", 0.0)
    if not lam:
        return head
    text = f"{head} + rotation λ={lam:g}"
    if method.get("attack_ssl_weight"):
        text += f", attacked w={method['attack_ssl_weight']:g}"
    return text


def budget(result: dict) -> str:
    """Training batches of the run (``trainer.limit_train_batches`` x epochs)."""
    trainer = result["config"]["trainer"]
    return f"{trainer.get('limit_train_batches')}x{trainer.get('max_epochs')}"


def collect(paths: list[Path]) -> tuple[dict, float | None]:
    """{variant: {suite: {ε: [accuracy per seed]}}} (strongest attack per ε) and the train ε.

    When the runs have different training budgets, the label says each run's batches."""
    groups: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    train_eps = None
    results = [
        json.loads(file.read_text())
        for path in paths
        for file in sorted(Path(path).rglob("results.json"))
    ]
    results = [r for r in results if r.get("status") == "ok" and variant(r) != "SSL pre-training"]
    several_budgets = len({budget(r) for r in results}) > 1
    for result in results:
        train_eps = result["config"]["method"].get("attack", {}).get("eps", train_eps)
        strongest: dict = {}
        for r in result["robustness"]:
            if r["metric"] != "acc":
                continue
            if r["suite"] in SUITES:
                key = (r["suite"], float(r["level"]))
                strongest[key] = min(r["value"], strongest.get(key, 1.0))
        clean = result["metrics"]["test/acc"]
        name = variant(result)
        if several_budgets:
            name += f" [{budget(result).split('x')[0]} batches]"
        group = groups[name]
        for suite in SUITES:
            group[suite][0.0].append(clean)
        for (suite, eps), acc in strongest.items():
            if eps > 0:
                group[suite][eps].append(acc)
    return groups, train_eps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("robust_accuracy_vs_eps.png"))
    args = parser.parse_args()
    groups, train_eps = collect(args.runs)
    fig, axes = plt.subplots(1, len(SUITES), figsize=(11, 4.2))
    for ax, (suite, title) in zip(axes, SUITES.items(), strict=True):
        for name in sorted(groups):
            points = sorted(groups[name][suite].items())
            xs = [eps for eps, _ in points]
            means = [100 * statistics.mean(v) for _, v in points]
            stds = [100 * statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in points]
            n = min(len(v) for _, v in points)
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{name} (n={n})")
        if suite == "pgd_linf" and train_eps is not None:
            ax.axvline(float(train_eps), color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{title} (PGD-20; ε=0: clean)")
        ax.set_xlabel("test ε")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
