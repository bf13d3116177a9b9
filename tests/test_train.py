"""End-to-end training: accuracy targets, resume, sweeps, DDP, loggers, experiment configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl

from robustlab.train import train
from tests.helpers import QUICK, compose_train, results_of, run_app

CONF = Path(__file__).resolve().parents[1] / "robustlab" / "conf"


def test_erm_reaches_90_percent_on_digits(tmp_path):
    cfg = compose_train("trainer.enable_progress_bar=false", "trainer.max_epochs=8")
    results = train(cfg, tmp_path)
    assert results.status == "ok"
    assert results.metrics["test/acc"] >= 0.90, results.metrics
    record = results_of(tmp_path)
    assert record["metrics"]["test/acc"] == pytest.approx(results.metrics["test/acc"])
    assert Path(record["checkpoint"]).is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "csv" / "metrics.csv").is_file()


@pytest.mark.data
def test_erm_reaches_97_percent_on_mnist_in_one_epoch(tmp_path, mnist_root):
    cfg = compose_train(
        "data=mnist",
        f"data.root={mnist_root}",
        "model=small_cnn",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=1",
    )
    results = train(cfg, tmp_path)
    assert results.metrics["test/acc"] >= 0.97, results.metrics


class StopAfterFirstEpoch(pl.Callback):
    """Simulates an interrupted job: stops cleanly once epoch 0 is done and checkpointed."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resume_reproduces_uninterrupted_run(tmp_path):
    overrides = [
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "data.augment.crop_padding=2",
        "data.augment.flip=true",
    ]
    full = train(compose_train(*overrides), tmp_path / "full")

    interrupted_dir = tmp_path / "interrupted"
    train(compose_train(*overrides), interrupted_dir, extra_callbacks=(StopAfterFirstEpoch(),))
    resumed = train(compose_train(*overrides, "resume=auto"), interrupted_dir)

    assert resumed.metrics["test/acc"] == full.metrics["test/acc"]
    assert resumed.metrics["test/loss"] == pytest.approx(full.metrics["test/loss"], abs=1e-6)
    assert resumed.metrics["val/loss"] == pytest.approx(full.metrics["val/loss"], abs=1e-6)


EXPERIMENTS = sorted(
    p.relative_to(CONF / "experiment").with_suffix("").as_posix()
    for p in (CONF / "experiment").rglob("*.yaml")
)


def _fake_imagenet(root: Path) -> Path:
    """Two classes of random 128 x 128 JPEGs in the ImageNet folder layout."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for wnid in ("n01440764", "n01443537"):
            (root / "imagenet" / split / wnid).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "imagenet" / split / wnid / f"{i}.JPEG")
    return root / "imagenet"


def test_experiment_list_is_complete():
    assert {"quickstart", "stability/mnist", "stability/imagenet_full"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_composes_and_runs(name, tmp_path, request):
    """Each experiment config composes and runs a few steps on tiny batches (full-scale configs
    such as WRN, PGD-100 or Inception-v3 only compose and step). Real-data experiments skip
    without $ROBUSTLAB_DATA; ImageNet ones run on a fake two-class folder without weights."""
    data = compose_train(f"experiment={name}").data.name
    extra = []
    if data in ("mnist", "cifar10"):
        root = request.getfixturevalue(f"{data}_root")
        extra = [f"data.root={root}"]
    elif data == "imagenet":
        extra = [
            f"data.root={_fake_imagenet(tmp_path / 'data')}",
            "data.image_size=112",
            "data.resize=128",
            "model.weights=null",  # pretrained weights: tests/test_models.py, from a local cache
        ]
    full = "_full" in name  # GPU-scale networks: the fewest images that exercise everything
    cfg = compose_train(
        f"experiment={name}",
        *QUICK,
        *extra,
        "data.samples_per_class=null",
        "data.batch_size=8",
        f"data.eval_batch_size={4 if full else 16}",
        "data.num_workers=0",
    )
    for suite in cfg.suite:
        cfg.suite[suite].max_images = 4 if full else 16
    results = train(cfg, tmp_path / "run")
    assert results.status == "ok" and 0 <= results.metrics["test/acc"] <= 1, name


def test_multirun_sweep_writes_one_folder_per_job(tmp_path):
    # "-m" after an override, as users (and the experiment READMEs) write it
    proc = run_app(
        "train",
        "method.optimizer.lr=0.1,0.05",
        "-m",
        "seed=0,1",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert len(jobs) == 4
    seen = {
        (r["config"]["method"]["optimizer"]["lr"], r["seed"])
        for r in map(lambda p: results_of(p.parent), jobs)
    }
    assert seen == {(0.1, 0), (0.1, 1), (0.05, 0), (0.05, 1)}


def test_ddp_cpu_matches_single_process_evaluation(tmp_path):
    run_dir = tmp_path / "ddp"
    proc = run_app(
        "train",
        "trainer=ddp_cpu",
        "data=digits",
        "trainer.max_epochs=5",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = results_of(run_dir)
    assert trained["provenance"]["world_size"] == 2

    proc = run_app(
        "evaluate",
        f"checkpoint={trained['checkpoint']}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}/eval",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = results_of(tmp_path / "eval")
    assert evaluated["provenance"]["world_size"] == 1
    # the same number of correct test images (359 in digits' test split), not just close
    n_test = 359
    assert trained["metrics"]["test/acc"] > 0.5, "DDP training did not learn"
    assert round(evaluated["metrics"]["test/acc"] * n_test) == round(
        trained["metrics"]["test/acc"] * n_test
    )


def test_tensorboard_and_offline_wandb_loggers(tmp_path):
    cfg = compose_train("logger=[csv,tensorboard,wandb]", *QUICK)
    train(cfg, tmp_path)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_joblib_launcher_runs_jobs_in_parallel(tmp_path):
    proc = run_app(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=0,1",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seeds = sorted(
        results_of(p.parent)["seed"] for p in (tmp_path / "sweep").glob("*/results.json")
    )
    assert seeds == [0, 1]


def test_ddp_inside_a_multirun_sweep(tmp_path):
    """Each job of a sweep starts its own 2-process DDP group (the children re-run that job,
    not the sweep) and leaves nothing behind for the next job."""
    proc = run_app(
        "train",
        "-m",
        "trainer=ddp_cpu",
        "seed=0,1",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [results_of(p.parent) for p in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert [(r["seed"], r["status"], r["provenance"]["world_size"]) for r in results] == [
        (0, "ok", 2),
        (1, "ok", 2),
    ]
    assert not list((tmp_path / "sweep").glob("*/*/results.json")), "a child re-ran the sweep"
