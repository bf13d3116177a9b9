"""Accuracy vs distortion level, ERM vs stability training (mean ± std over seeds).

Reads every ``results.json`` under the given run / multirun folders, groups runs by method
(and α, σ, perturbation for stability training), and draws one panel per distortion of the
``distortions`` suite.

    python experiments/stability_training/plot.py RUN_DIR... --out accuracy_vs_distortion.png
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

#: x-axis direction: JPEG quality and thumbnail scale get *stronger* as they fall.
DESCENDING = {"jpeg", "thumbnail"}
XLABEL = {
    "jpeg": "JPEG quality",
    "thumbnail": "thumbnail scale",
    "crop": "crop offset (px)",
    "crop_pad": "shift (px)",
    "gaussian_noise": "noise σ",
}


def label(result: dict) -> str:
    method = result["config"]["method"]
    if result["method"] != "stability":
        return result["method"]
    text = f"stability α={method['alpha']:g}"
    if method["perturbation"] == "gaussian":
        return f"{text} σ={method['sigma']:g}"
    return f"{text} ({method['perturbation']})"


def collect(paths: list[Path]) -> dict[str, dict[tuple[str, float], list[float]]]:
    """{group label: {(distortion, level): [accuracy per seed]}} plus (clean, 0)."""
    groups: dict[str, dict[tuple[str, float], list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for file in sorted(Path(path).rglob("results.json")):
            result = json.loads(file.read_text())
            if result.get("status") != "ok":
                continue
            group = groups[label(result)]
            for r in result["robustness"]:
                if r["suite"] == "distortions" and r["metric"] == "acc":
                    group[(r["condition"], float(r["level"]))].append(r["value"])
                if r["suite"] == "clean" and r["metric"] == "acc":
                    group[("clean", 0.0)].append(r["value"])
    return groups


def plot(groups: dict, out: Path, title: str) -> Path:
    names = sorted({d for g in groups.values() for d, _ in g if d != "clean"})
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for group, values in sorted(groups.items()):
            points = sorted((lv, v) for (d, lv), v in values.items() if d == name)
            xs = [p[0] for p in points]
            means = [statistics.mean(p[1]) for p in points]
            stds = [statistics.stdev(p[1]) if len(p[1]) > 1 else 0.0 for p in points]
            ax.errorbar(xs, means, yerr=stds, marker="o", ms=3, capsize=2, label=group)
        if name in DESCENDING:
            ax.invert_xaxis()
        ax.set_xlabel(XLABEL.get(name, name))
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run or multirun folders")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "accuracy.png")
    parser.add_argument("--title", default="Accuracy under distortion (mean ± std over seeds)")
    args = parser.parse_args()
    groups = collect(args.runs)
    if not groups:
        raise SystemExit(f"no results.json with status ok under {args.runs}")
    print(plot(groups, args.out, args.title))


if __name__ == "__main__":
    main()
