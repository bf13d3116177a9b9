"""HydraMix's N-shot protocol in one command (issue 13): generators once per (dataset, subset,
seed, generator config), then every classifier variant on each subset, then the mean ± std table.

    python experiments/hydramix/protocol.py --dataset cifair10 --set trainer=gpu
    python experiments/hydramix/protocol.py --dataset cifar10_cpu --samples 10,20,50 \\
        --seeds 0,1,2 --variants plain,cutout,chimeramix_grid,chimeramix_seg,hydramix_n3 \\
        --launcher joblib --jobs 2
    python experiments/hydramix/protocol.py --dataset stl10 --launcher submitit_slurm \\
        --set trainer=gpu --set hydra.launcher.partition=gpu

Every run goes to a deterministic folder under ``$ROBUSTLAB_RUNS`` (default ``runs``):

- generators: ``hydramix/<data>/<generator config>/n<N>/seed<s>`` — exactly the folder each
  classifier variant's ``method.generator`` names (conf/experiment/hydramix/_variant/), so a
  generator is trained once and reused by every variant, rerun, and later protocol call;
- classifiers: ``hydramix/<data>/classifiers/<variant>/n<N>/seed<s>``;
- the table: ``hydramix/<data>/report/report.md`` (robustlab-report, mean ± std over seeds).

A run whose folder already holds an ``ok`` results.json is skipped; the others of one
(configuration, N) go to ``robustlab-train -m ... resume=auto`` as one sweep over the seeds (a
run stopped midway continues from its ``last.ckpt``: rerun the same command after an
interruption, e.g. a time-limited GPU session), run by the chosen
Hydra launcher (``basic``: one after another; ``joblib``: ``--jobs`` at once on this machine;
``submitit_slurm``: SLURM jobs). The subset of seed s is ``data.subset_seed=s`` (the experiment
configs set it to the seed), so generator and classifiers of seed s train on the same images.

Smaller grids: ``--samples``, ``--seeds``, ``--variants`` (or the environment variables
HYDRAMIX_SAMPLES, HYDRAMIX_SEEDS, HYDRAMIX_VARIANTS); ``--set KEY=VALUE`` adds an override to every
run, ``--generator-set`` / ``--classifier-set`` to one stage only (e.g. tiny runs in tests).
Exit status: 0 when every run is ok, 1 otherwise (the table is still written).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_module

DATASETS = ("cifair10", "cifair100", "stl10", "cifar10_cpu")
VARIANTS = (
    "plain",
    "cutout",
    "random_erasing",
    "mixup",
    "cutmix",
    "autoaugment",
    "trivialaugment",
    "chimeramix_grid",
    "chimeramix_seg",
    "hydramix_n3",
)
#: the generator experiment (conf/experiment/hydramix/<dataset>/<name>) each mixing variant uses
GENERATOR_OF = {
    "chimeramix_grid": "generator_grid2",
    "chimeramix_seg": "generator_seg2",
    "hydramix_n3": "generator_seg3",
}
SAMPLES = (5, 10, 20, 30, 50, 100)
SEEDS = (0, 1, 2, 3, 4)
#: report rows: the keys that tell the variants apart (the generator's folder differs per seed)
GROUP_BY = (
    "method",
    "data.samples_per_class",
    "data.group_size",
    "data.augment.policy",
    "method.mask.kind",
)
METRICS = ("test/acc", "corruptions/mean_acc")


def numbers(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def is_done(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds the ``ok`` results.json of a finished run."""
    try:
        return json.loads((run_dir / "results.json").read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def generator_folder(experiment: str, n: int, seed: int, overrides: Sequence[str]) -> Path:
    """Where the classifier ``experiment`` looks for its generator (its composed
    ``method.generator``) for N-shot subsets of ``n`` per class and seed ``seed``."""
    with initialize_config_module(config_module="robustlab.conf", version_base="1.3"):
        cfg = compose(
            "train",
            [f"experiment={experiment}", f"data.samples_per_class={n}", f"seed={seed}", *overrides],
        )
    return Path(str(cfg.method.generator))


def sweep(
    experiment: str,
    n: int,
    seeds: Sequence[int],
    folder: Path,
    overrides: Sequence[str],
    args: argparse.Namespace,
) -> bool:
    """``robustlab-train -m`` of ``experiment`` with ``n`` per class over ``seeds`` into
    ``folder/seed<s>``; True when the command succeeded."""
    launcher = [f"hydra/launcher={args.launcher}"]
    if args.launcher == "joblib":
        launcher.append(f"hydra.launcher.n_jobs={args.jobs}")
    command = [
        sys.executable,
        "-m",
        "robustlab.cli.train",
        "-m",
        f"experiment={experiment}",
        f"data.samples_per_class={n}",
        f"seed={','.join(map(str, seeds))}",
        f"hydra.sweep.dir={folder}",
        "hydra.sweep.subdir=seed${seed}",
        "resume=auto",
        *launcher,
        *overrides,
    ]
    print("+", " ".join(command), flush=True)
    if args.dry_run:
        return True
    return subprocess.run(command, check=False).returncode == 0


def missing_seeds(folder: Path, seeds: Sequence[int]) -> list[int]:
    return [s for s in seeds if not is_done(folder / f"seed{s}")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, default="cifair10")
    env = os.environ.get
    parser.add_argument("--samples", type=numbers, default=numbers(env("HYDRAMIX_SAMPLES", "")))
    parser.add_argument("--seeds", type=numbers, default=numbers(env("HYDRAMIX_SEEDS", "")))
    parser.add_argument("--variants", type=names, default=names(env("HYDRAMIX_VARIANTS", "")))
    parser.add_argument("--runs", type=Path, default=Path(env("ROBUSTLAB_RUNS") or "runs"))
    parser.add_argument(
        "--launcher", choices=("basic", "joblib", "submitit_slurm"), default="basic"
    )
    parser.add_argument("--jobs", type=int, default=2, help="joblib: runs at once")
    parser.add_argument("--set", action="append", default=[], help="override for every run")
    parser.add_argument("--generator-set", action="append", default=[])
    parser.add_argument("--classifier-set", action="append", default=[])
    parser.add_argument("--metrics", type=names, default=list(METRICS), help="report columns")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    samples, seeds = args.samples or list(SAMPLES), args.seeds or list(SEEDS)
    variants = args.variants or list(VARIANTS)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    os.environ["ROBUSTLAB_RUNS"] = str(args.runs.resolve())  # the configs' generator folders
    prefix = f"hydramix/{args.dataset}"
    classifier_overrides = [*args.set, *args.classifier_set]
    generator_overrides = [*args.set, *args.generator_set]
    ok = True

    # 1. each generator once per (subset, seed), in the folder its classifiers name
    for generator in sorted({GENERATOR_OF[v] for v in variants if v in GENERATOR_OF}):
        user = next(v for v in variants if GENERATOR_OF.get(v) == generator)
        for n in samples:
            folders = {
                s: generator_folder(f"{prefix}/{user}", n, s, classifier_overrides) for s in seeds
            }
            parents = {folder.parent for folder in folders.values()}
            assert len(parents) == 1 and all(f.name == f"seed{s}" for s, f in folders.items())
            todo = missing_seeds(parents.pop(), seeds)
            if todo:
                folder = folders[todo[0]].parent
                ok &= sweep(f"{prefix}/{generator}", n, todo, folder, generator_overrides, args)

    # 2. every classifier variant on every subset and seed
    data_name = None
    for variant in variants:
        for n in samples:
            with initialize_config_module(config_module="robustlab.conf", version_base="1.3"):
                data_name = compose(
                    "train", [f"experiment={prefix}/{variant}", *classifier_overrides]
                ).data.name
            folder = args.runs / "hydramix" / data_name / "classifiers" / variant / f"n{n}"
            todo = missing_seeds(folder, seeds)
            if todo:
                ok &= sweep(f"{prefix}/{variant}", n, todo, folder, classifier_overrides, args)

    # 3. mean ± std over seeds per variant and N
    if data_name is not None and not args.dry_run:
        root = args.runs / "hydramix" / data_name
        command = [
            sys.executable,
            "-m",
            "robustlab.cli.report",
            str(root / "classifiers"),
            "--metrics",
            *args.metrics,
            "--group-by",
            *GROUP_BY,
            "--output",
            str(root / "report"),
        ]
        print("+", " ".join(command), flush=True)
        ok &= subprocess.run(command, check=False).returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
