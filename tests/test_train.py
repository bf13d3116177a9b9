"""End-to-end training: accuracy targets, resume, sweeps, DDP, loggers, experiment configs."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from robustlab.cli.train import train
from robustlab.results import Results
from robustlab.run.builders import build_data as train_data
from robustlab.run.checkpoints import load_classifier
from tests.helpers import (
    QUICK,
    compose_train,
    evaluate_trained,
    results_of,
    run_app,
    wandb_offline_runs,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_erm_reaches_90_percent_on_digits(tmp_path):
    cfg = compose_train("trainer.enable_progress_bar=false", "trainer.max_epochs=8")
    results = train(cfg, tmp_path)
    assert results.status == "ok"
    assert results.metrics["test/acc"] >= 0.90, results.metrics
    record = results_of(tmp_path)
    assert record["metrics"]["test/acc"] == pytest.approx(results.metrics["test/acc"])
    best = _checkpoint(Path(record["checkpoint"]))
    assert record["metrics"]["val/best_acc"] == pytest.approx(
        float(
            best["callbacks"][next(k for k in best["callbacks"] if "RunCheckpoint" in k)][
                "best_model_score"
            ]
        )
    )
    last = _checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 7, "last.ckpt is not the final epoch"
    rows = _csv_rows(tmp_path)
    assert [r["epoch"] for r in rows if r["train/loss_epoch"]] == [str(e) for e in range(8)]
    test_rows = [r for r in rows if r["test/acc"]]
    assert len(test_rows) == 1
    assert float(test_rows[0]["test/acc"]) == pytest.approx(results.metrics["test/acc"])


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


TINY = [
    "data.batch_size=16",
    "trainer.enable_progress_bar=false",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series as TensorBoard shows it (events of a purged, re-done part dropped),
    but Lightning's ``hp_metric`` placeholder (-1 at step 0, once per fit or test call)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag != "hp_metric"
    }


def test_last_checkpoint_is_the_final_epoch_when_the_best_is_earlier(tmp_path):
    """Ranking by ``epoch`` with mode=min makes epoch 0 the best: Lightning's own save_last
    would leave last.ckpt at epoch 0; it must hold the state after the final epoch."""
    cfg = compose_train(
        *TINY,
        "trainer.max_epochs=3",
        "callbacks.checkpoint.monitor=epoch",
        "callbacks.checkpoint.mode=min",
    )
    results = train(cfg, tmp_path)
    assert Path(results.checkpoint).name == "epoch000.ckpt"
    last = _checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (2, 15)
    best = _checkpoint(Path(results.checkpoint))
    assert (best["epoch"], best["global_step"]) == (0, 5)


class RandomStateProbe(pl.Callback):
    """Records what a resumed run must reproduce: where training starts, every global random
    state and the sampler epoch at each epoch's first step, and every (augmented) batch. It
    also draws from python's ``random`` and numpy each step, as a method using them would."""

    def __init__(self):
        self.start = None
        self.states: dict[int, tuple] = {}
        self.batches: dict[tuple[int, int], torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module):
        self.start = (trainer.current_epoch, trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:  # the states the epoch's first training step draws from
            self.states[trainer.current_epoch] = (
                torch.get_rng_state(),
                random.getstate(),
                np.random.get_state()[1].copy(),
                trainer.train_dataloader.sampler.epoch,
            )
        self.batches[(trainer.current_epoch, batch_idx)] = batch[0].clone()
        random.random()
        np.random.rand()


class InterruptMidEpoch(pl.Callback):
    """Ctrl-C (or the SIGTERM the apps turn into one) in the middle of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            raise KeyboardInterrupt("interrupted for the test")


def test_interrupted_stochastic_run_resumes_exactly(tmp_path):
    """Stability training draws noise every step and the data are randomly cropped and
    flipped: a run interrupted mid-epoch 3 and resumed with resume=auto starts at the end of
    epoch 2 (epoch and global step from the checkpoint, not 0), with every random state, the
    sampler epoch and the augmentation stream where the uninterrupted run had them, ends with
    bit-identical weights, and its CSV and TensorBoard histories hold each row exactly once.
    Checkpoints are ranked by epoch (best = epoch 0), so a last.ckpt written only with a new
    best checkpoint (Lightning's save_last) would send the resume back to epoch 1."""
    overrides = [
        *TINY,
        "trainer.max_epochs=3",
        "callbacks.checkpoint.monitor=epoch",
        "callbacks.checkpoint.mode=min",
        "method=stability",
        "method.sigma=0.2",
        "method.alpha=1.0",
        "data.augment.crop_padding=2",
        "data.augment.flip=true",
        "logger=[csv,tensorboard]",
    ]
    full_probe = RandomStateProbe()
    full = train(compose_train(*overrides), tmp_path / "full", extra_callbacks=(full_probe,))

    run_dir = tmp_path / "interrupted"
    with pytest.raises(SystemExit):  # Lightning ends an interrupted fit with exit code 1
        interrupt = InterruptMidEpoch(2, 2)
        train(compose_train(*overrides), run_dir, extra_callbacks=(RandomStateProbe(), interrupt))
    assert _checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1
    probe = RandomStateProbe()
    resumed = train(compose_train(*overrides, "resume=auto"), run_dir, extra_callbacks=(probe,))

    assert probe.start == (2, 10), "resume did not start where the checkpoint was taken"
    torch_state, python_state, numpy_state, sampler_epoch = probe.states[2]
    expected = full_probe.states[2]
    assert torch.equal(torch_state, expected[0]), "torch RNG"
    assert python_state == expected[1], "python random state"
    assert np.array_equal(numpy_state, expected[2]), "numpy RNG"
    assert sampler_epoch == expected[3] == 2
    assert set(probe.batches) == {k for k in full_probe.batches if k[0] == 2}
    for key, images in probe.batches.items():
        assert torch.equal(images, full_probe.batches[key]), f"batch {key} differs"

    weights = _checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    reference = _checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    assert weights.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(weights[name], tensor), name
    assert resumed.metrics == full.metrics
    assert _csv_rows(run_dir) == _csv_rows(tmp_path / "full")
    train_rows = [r["epoch"] for r in _csv_rows(run_dir) if r["train/loss_epoch"]]
    assert train_rows == ["0", "1", "2"]
    assert _tensorboard_scalars(run_dir) == _tensorboard_scalars(tmp_path / "full")


class InterruptTesting(pl.Callback):
    """Stops the run once it is testing: training is over, its evaluation is not."""

    def on_test_start(self, trainer, pl_module):
        raise KeyboardInterrupt("interrupted for the test")


class CountTrainedBatches(pl.Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1


def test_run_stopped_after_its_last_epoch_resumes_with_the_uninterrupted_metrics(tmp_path):
    """A job killed while testing (or scoring its suites) resumes with ``resume=auto``, trains
    no batch, and reports the train/ and val/ scalars of its last epoch from last.ckpt: the
    metrics of an uninterrupted run, not the test numbers alone."""
    overrides = [*TINY, "trainer.max_epochs=2"]
    full = train(compose_train(*overrides), tmp_path / "full")
    run_dir = tmp_path / "stopped"
    with pytest.raises(SystemExit):
        train(compose_train(*overrides), run_dir, extra_callbacks=(InterruptTesting(),))
    assert not (run_dir / "results.json").exists()
    count = CountTrainedBatches()
    resumed = train(compose_train(*overrides, "resume=auto"), run_dir, extra_callbacks=(count,))
    assert count.batches == 0
    assert {"train/loss", "train/acc", "val/acc", "val/best_acc"} <= set(full.metrics)
    assert resumed.metrics == full.metrics


def test_resubmitted_finished_run_is_left_as_it_is(tmp_path):
    """``skip_finished=true`` on a folder whose results.json records a finished run of the same
    config returns that record without training or rewriting anything (a re-submitted sweep
    skips its finished jobs). A finished run of another config is not finished for this one:
    with ``resume=auto`` and one more epoch it is extended in place (epoch 2's batches only)."""
    common = [*TINY, "resume=auto", "skip_finished=true"]
    overrides = [*common, "trainer.max_epochs=1"]
    made = run_app("train", *overrides, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    first = Results.from_dict(results_of(tmp_path))
    assert first.provenance["overrides"] == overrides  # the job's own (not hydra.run.dir)
    written = (tmp_path / "results.json").read_text()
    count = CountTrainedBatches()
    again = train(compose_train(*overrides), tmp_path, extra_callbacks=(count,))
    assert count.batches == 0
    assert again.metrics == first.metrics and again.robustness == first.robustness
    assert (tmp_path / "results.json").read_text() == written
    longer = CountTrainedBatches()
    extended = train(
        compose_train(*common, "trainer.max_epochs=2"), tmp_path, extra_callbacks=(longer,)
    )
    assert longer.batches == 5  # TINY: 5 batches per epoch; epoch 1 is not repeated
    assert results_of(tmp_path)["config"]["trainer"]["max_epochs"] == 2
    assert extended.metrics["train/loss"] != first.metrics["train/loss"]


def test_resumed_run_continues_the_interrupted_wandb_run(tmp_path):
    """resume=auto logs into the wandb run of the interrupted part (same run id, so ``wandb
    sync`` joins both parts into one history); a fresh run in a new folder gets its own id."""
    from robustlab.run.loggers import finish_wandb

    finish_wandb()  # a run an earlier in-process test left open would be reused by Lightning
    overrides = [*TINY, "trainer.max_epochs=2", "logger=[csv,wandb]"]
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):
        train(compose_train(*overrides), run_dir, extra_callbacks=(InterruptMidEpoch(1, 2),))
    finish_wandb(exit_code=1)
    train(compose_train(*overrides, "resume=auto"), run_dir)
    finish_wandb()
    train(compose_train(*overrides), tmp_path / "other")
    finish_wandb()

    def run_ids(folder: Path) -> list[str]:
        return [run["id"] for run in wandb_offline_runs(folder)]

    first, resumed = run_ids(run_dir)
    assert first == resumed
    assert all(run["history"] > 0 for run in wandb_offline_runs(run_dir))
    assert run_ids(tmp_path / "other") != [first]


@pytest.mark.slow
def test_sigterm_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    """The real thing: ``python -m robustlab.cli.train`` gets SIGTERM once an epoch is
    checkpointed; ``resume=auto`` finishes it with the weights and metric history of a run
    that was never stopped, each epoch logged exactly once."""
    overrides = [
        "data.batch_size=16",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=6",
        "trainer.limit_train_batches=20",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "method=stability",
        "data.augment.crop_padding=2",
    ]
    full = run_app("train", *overrides, f"hydra.run.dir={tmp_path}/full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robustlab.cli.train", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    record = results_of(run_dir)
    assert record["status"] == "failed" and "SIGTERM" in record["error"]
    stopped_at = _checkpoint(last)["epoch"]
    assert stopped_at < 5, "the run finished before it was stopped"

    resumed = run_app("train", *overrides, "resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights = _checkpoint(last)["state_dict"]
    reference = _checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    for name, tensor in reference.items():
        assert torch.equal(weights[name], tensor), name
    assert results_of(run_dir)["metrics"] == results_of(tmp_path / "full")["metrics"]
    assert _csv_rows(run_dir) == _csv_rows(tmp_path / "full")
    epochs = [r["epoch"] for r in _csv_rows(run_dir) if r["train/loss_epoch"]]
    assert epochs == [str(e) for e in range(6)]


EXPERIMENTS = sorted(
    p.relative_to(CONF / "experiment").with_suffix("").as_posix()
    for p in (CONF / "experiment").rglob("*.yaml")
    if not any(part.startswith("_") for part in p.relative_to(CONF / "experiment").parts)
    # distillation students need their teacher runs (and CIFAR-100 / ImageNet), HydraMix
    # classifiers their stage-1 generator runs: tests/test_distillation.py and
    # tests/test_hydramix.py compose and validate every one of them
    and p.relative_to(CONF / "experiment").parts[0] not in ("distill", "hydramix")
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
    composed = compose_train(f"experiment={name}")
    data = composed.data.name
    extra = []
    if data in ("mnist", "cifar10"):
        root = request.getfixturevalue(f"{data}_root")
        extra = [f"data.root={root}"]
    elif data == "svhn":
        root = Path(os.environ.get("ROBUSTLAB_DATA", "data"))
        if not (root / "train_32x32.mat").is_file():
            pytest.skip("SVHN is not under $ROBUSTLAB_DATA")
        extra = [f"data.root={root}"]
    elif data == "imagenet":
        extra = [
            f"data.root={_fake_imagenet(tmp_path / 'data')}",
            "data.image_size=112",
            "data.resize=128",
            "model.weights=null",  # pretrained weights: tests/test_models.py, from a local cache
        ]
    if composed.method.name == "introspective":  # a synthesis round of 2 images, 2 steps
        extra += ["method.per_class=2", "method.langevin.steps=2", "method.winn.max_steps=2"]
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
        attack = "epsilons" in cfg.suite[suite] and "steps" in cfg.suite[suite]
        if full and attack:  # PGD-100 on a WRN: the same code as 2 steps
            cfg.suite[suite].steps = [2]
    if full and "attack" in cfg.method:  # likewise the training attack (PGD-10)
        cfg.method.attack.steps = 2
    results = train(cfg, tmp_path / "run")
    assert results.status == "ok", name
    record = results_of(tmp_path / "run")
    # the run is the one the config describes ...
    assert (record["method"], record["data"], record["model"]) == (
        cfg.method.name,
        cfg.data.name,
        cfg.model.name,
    )
    # ... it trained (QUICK: 3 optimiser steps, fewer where an epoch has fewer batches) ...
    datamodule = train_data(cfg)
    steps = min(3, len(datamodule.train_dataloader()))
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, steps), name
    # ... and its checkpoint, rebuilt alone, reproduces test/acc on the tested images
    model = load_classifier(record["checkpoint"])
    correct = total = 0
    with torch.no_grad():
        for batch, (x, y) in enumerate(datamodule.test_dataloader()):
            if batch == 2:  # QUICK: limit_test_batches=2
                break
            x = x.float() / 255 if x.dtype == torch.uint8 else x
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    assert correct / total == pytest.approx(record["metrics"]["test/acc"], abs=1e-6), name


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

    assert trained["metrics"]["test/acc"] > 0.5, "DDP training did not learn"
    evaluated = evaluate_trained(trained, tmp_path / "eval", cwd=tmp_path)
    assert evaluated["provenance"]["world_size"] == 1


def test_tensorboard_and_offline_wandb_loggers(tmp_path):
    cfg = compose_train("logger=[csv,tensorboard,wandb]", *QUICK)
    results = train(cfg, tmp_path)
    scalars = _tensorboard_scalars(tmp_path)
    assert scalars["test/acc"] == [(3, pytest.approx(results.metrics["test/acc"]))]
    assert [step for step, _ in scalars["train/loss_epoch"]] == [2]
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_joblib_launcher_runs_jobs_in_parallel(tmp_path):
    """Two jobs on two joblib workers: different processes whose training times overlap (run
    one after the other, the second would start after the first ended)."""
    proc = run_app(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=0,1",
        *QUICK,
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=10",
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [results_of(p.parent) for p in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert len({r["provenance"]["pid"] for r in records}) == 2
    spans = [
        (
            r["provenance"]["started_unix"],
            r["provenance"]["started_unix"] + r["provenance"]["wall_time_s"],
        )
        for r in records
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans


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


def _multistep_schedules(method) -> list[tuple[str, list[int]]]:
    """(where, milestones) of every multistep schedule of a composed method config."""
    found = []
    named = {"method": method} | {
        f"optimizers.{k}": v for k, v in (method.get("optimizers") or {}).items()
    }
    for where, owner in named.items():
        scheduler = owner.get("scheduler") if owner is not None else None
        if scheduler is not None and scheduler.get("name") == "multistep":
            assert scheduler.get("interval", "epoch") == "epoch", where
            found.append((where, list(scheduler.milestones)))
    return found


def test_every_experiments_step_schedule_decays_within_its_epochs():
    """A multistep milestone at or after max_epochs never fires: a shortened copy of a long
    schedule (e.g. ChimeraMix's drops at 60/120/160 kept in a 30-epoch budget) trains at the
    initial rate throughout. Every shipped experiment, students and generators included."""
    names = sorted(
        p.relative_to(CONF / "experiment").with_suffix("").as_posix()
        for p in (CONF / "experiment").rglob("*.yaml")
        if not any(part.startswith("_") for part in p.relative_to(CONF / "experiment").parts)
    )
    checked = 0
    for name in names:
        composed = compose_train(f"experiment={name}")
        for where, milestones in _multistep_schedules(composed.method):
            assert max(milestones) < composed.trainer.max_epochs, (name, where, milestones)
            checked += 1
    assert checked >= 3  # the generators' schedules at least
