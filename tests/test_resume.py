"""The resume machinery of ``robustlab-train`` without training a real model: where a resume
starts from (``resume_path``), how far the checkpoint got (``logged_steps``), the loggers that
keep the interrupted run's history (``resumed_loggers``, ``LoggedHistory``) and the checkpoint
callbacks (``RunCheckpoint``, ``build_callbacks``, ``sigterm_deferred``).

The end-to-end resume tests (a stochastic run interrupted and resumed equals an uninterrupted
one) are in tests/test_train.py; these pin each piece with a value, found by mutation testing
(tests/MUTATION.md).
"""

from __future__ import annotations

import csv
import json
import signal
import threading
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from robustlab.cli.train import logged_steps, resume_path, resumed_loggers, run_metrics
from robustlab.errors import CheckpointError, ConfigError
from robustlab.run.callbacks import (
    LAST,
    LoggedHistory,
    RunCheckpoint,
    build_callbacks,
    sigterm_deferred,
)
from robustlab.run.checkpoints import (
    CHECKPOINT_KEY,
    checkpoint_path,
    load_checkpoint,
    model_state,
)


def _checkpoint(path: Path, loops: dict | None = None) -> Path:
    """A minimal file load_checkpoint accepts: a run record with a model config, weights."""
    content = {
        CHECKPOINT_KEY: {"config": {"model": {"name": "small_cnn"}}},
        "state_dict": {"model.weight": torch.zeros(1)},
    }
    if loops is not None:
        content["loops"] = loops
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path)
    return path


def _loops(steps: int) -> dict:
    return {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": steps}}}


# ------------------------------------------------------------------------------ resume_path
@pytest.mark.parametrize("off", [None, "", False])
def test_resume_path_is_none_when_resume_is_off(off, tmp_path):
    _checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert resume_path(off, tmp_path) is None


def test_resume_auto_continues_from_last_ckpt_only_when_it_exists(tmp_path):
    assert resume_path("auto", tmp_path) is None  # a fresh run folder: start from scratch
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch000.ckpt").write_bytes(b"")  # not the last one
    assert resume_path("auto", tmp_path) is None
    last = _checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert resume_path("auto", tmp_path) == str(last)


def test_resume_from_a_named_file_expands_home_and_refuses_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    saved = _checkpoint(tmp_path / "runs" / "a.ckpt")
    assert resume_path("~/runs/a.ckpt", tmp_path / "elsewhere") == str(saved)
    fix = r"pass the path of a last\.ckpt, or resume=auto to continue the run in hydra\.run\.dir$"
    with pytest.raises(
        CheckpointError, match=rf"^resume=~/runs/b.ckpt: no such checkpoint file; {fix}"
    ):
        resume_path("~/runs/b.ckpt", tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        resume_path(str(tmp_path / "runs"), tmp_path)  # a folder is not a checkpoint file


# ------------------------------------------------------------------------------ logged_steps
def test_logged_steps_reads_the_batches_that_stepped(tmp_path):
    assert logged_steps(str(_checkpoint(tmp_path / "a.ckpt", _loops(7)))) == 7
    # a checkpoint without loop state (or without the fit loop) counts 0 steps
    assert logged_steps(str(_checkpoint(tmp_path / "b.ckpt"))) == 0
    assert logged_steps(str(_checkpoint(tmp_path / "c.ckpt", {"fit_loop": {}}))) == 0
    no_count = {"fit_loop": {"epoch_loop.state_dict": {}}}
    assert logged_steps(str(_checkpoint(tmp_path / "d.ckpt", no_count))) == 0


# ------------------------------------------------------------------------------ LoggedHistory
def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "train/loss", "val/acc"])
        writer.writeheader()
        writer.writerows(rows)


def test_logged_history_keeps_rows_before_the_checkpoint_step_without_empty_cells(tmp_path):
    metrics = tmp_path / "metrics.csv"
    _write_csv(
        metrics,
        [
            {"epoch": 0, "step": 0, "train/loss": 2.5},
            {"epoch": 0, "step": 1, "val/acc": 0.5},
            {"epoch": 0, "step": "", "val/acc": 0.7},  # no step: cannot be placed, dropped
            {"epoch": 1, "step": 2.0, "train/loss": 1.5},  # at the checkpoint: re-done, dropped
            {"epoch": 1, "step": 3, "train/loss": 1.0},
        ],
    )
    history = LoggedHistory(metrics, until_step=2)
    assert history.rows == [
        {"epoch": "0", "step": "0", "train/loss": "2.5"},
        {"epoch": "0", "step": "1", "val/acc": "0.5"},
    ]
    assert LoggedHistory(tmp_path / "absent.csv", until_step=5).rows == []
    assert len(LoggedHistory(metrics, until_step=3).rows) == 3  # step "2.0" parses as 2


def test_logged_history_puts_the_rows_first_into_the_csv_logger(tmp_path):
    metrics = tmp_path / "old.csv"
    _write_csv(metrics, [{"epoch": 0, "step": 0, "train/loss": 2.0}])
    history = LoggedHistory(metrics, until_step=1)
    csv_logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    tensorboard = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    trainer = pl.Trainer(
        logger=[tensorboard, csv_logger], accelerator="cpu", enable_progress_bar=False
    )
    csv_logger.experiment.metrics.append({"step": 5, "train/loss": 0.5})
    history.setup(trainer, None, "fit")
    assert csv_logger.experiment.metrics == [
        {"epoch": "0", "step": "0", "train/loss": "2.0"},
        {"step": 5, "train/loss": 0.5},
    ]
    assert history.rows == []  # handed over once: a second setup adds nothing
    history.setup(trainer, None, "test")
    assert len(csv_logger.experiment.metrics) == 2


# ------------------------------------------------------------------------------ resumed_loggers
def _logger_cfg(**loggers) -> OmegaConf:
    return OmegaConf.create({"logger": loggers})


def test_fresh_run_builds_plain_loggers_and_no_history(tmp_path):
    loggers, history = resumed_loggers(_logger_cfg(csv={}, tensorboard={}), tmp_path, None)
    assert [type(lg) for lg in loggers] == [CSVLogger, TensorBoardLogger]
    assert history == []
    assert "purge_step" not in loggers[1]._kwargs
    assert loggers[0].save_dir == str(tmp_path)  # into the run folder


def test_logger_options_are_resolved_before_the_loggers_are_built(tmp_path):
    cfg = OmegaConf.create(
        {"every": 7, "logger": {"csv": {"flush_logs_every_n_steps": "${every}"}}}
    )
    ckpt = _checkpoint(tmp_path / "last.ckpt", _loops(1))
    for resume_from in (None, str(ckpt)):
        (csv_logger,) = resumed_loggers(cfg, tmp_path, resume_from)[0]
        assert csv_logger._flush_logs_every_n_steps == 7
        assert csv_logger.save_dir == str(tmp_path)


def test_resumed_wandb_logger_continues_the_stored_run_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    ckpt = _checkpoint(tmp_path / "checkpoints" / "last.ckpt", _loops(2))
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "run-id").write_text("abc12345")
    cfg = _logger_cfg(wandb={"mode": "offline"})
    (logger,) = resumed_loggers(cfg, tmp_path, str(ckpt))[0]
    assert logger._wandb_init["id"] == "abc12345" and logger._wandb_init["resume"] == "allow"
    (fresh,) = resumed_loggers(cfg, tmp_path, None)[0]  # a fresh run: a new id
    assert fresh._wandb_init["id"] != "abc12345"


def test_wandb_mode_dryrun_is_offline(tmp_path, monkeypatch):
    """wandb's older name for offline (what Lightning's WandbLogger(offline=True) puts in
    WANDB_MODE, which logger.wandb.mode reads) starts an offline logger, not an error."""
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    (logger,) = resumed_loggers(_logger_cfg(wandb={"mode": "dryrun"}), tmp_path, None)[0]
    assert logger._wandb_init["mode"] == "offline"


def test_resumed_run_purges_tensorboard_and_keeps_csv_rows_up_to_the_checkpoint(tmp_path):
    ckpt = _checkpoint(tmp_path / "checkpoints" / "last.ckpt", _loops(4))
    _write_csv(
        tmp_path / "csv" / "metrics.csv",
        [{"epoch": 0, "step": s, "train/loss": 1.0 / (s + 1)} for s in range(6)],
    )
    cfg = _logger_cfg(csv={}, tensorboard={"log_graph": False})
    loggers, history = resumed_loggers(cfg, tmp_path, str(ckpt))
    assert [type(lg) for lg in loggers] == [CSVLogger, TensorBoardLogger]
    assert loggers[1]._kwargs == {"purge_step": 4}
    assert loggers[1]._log_graph is False  # the user's options are kept beside purge_step
    (keep,) = history
    assert isinstance(keep, LoggedHistory)
    assert [row["step"] for row in keep.rows] == ["0", "1", "2", "3"]
    # without tensorboard nothing is added for it; an empty tensorboard entry still purges
    loggers, _ = resumed_loggers(_logger_cfg(csv={}), tmp_path, str(ckpt))
    assert [type(lg) for lg in loggers] == [CSVLogger]
    loggers, _ = resumed_loggers(_logger_cfg(tensorboard=None), tmp_path, str(ckpt))
    assert loggers[0]._kwargs == {"purge_step": 4}


def test_resumed_run_without_loggers_builds_none(tmp_path):
    ckpt = _checkpoint(tmp_path / "last.ckpt", _loops(2))
    loggers, history = resumed_loggers(OmegaConf.create({"logger": {}}), tmp_path, str(ckpt))
    assert loggers == [] and len(history) == 1


# ------------------------------------------------------------------------------ build_callbacks
def _callbacks_cfg(**changes) -> dict:
    cfg = {
        "checkpoint": {"monitor": "val/acc", "mode": "max", "save_top_k": 2, "save_last": True},
        "lr_monitor": True,
        "early_stopping": {"enabled": False, "monitor": "val/acc", "mode": "max", "patience": 3},
    }
    cfg.update(changes)
    return cfg


def test_build_callbacks_checkpoints_into_the_run_folder_by_the_monitored_metric(tmp_path):
    callbacks, checkpoint = build_callbacks(
        _callbacks_cfg(), tmp_path, has_validation=True, has_logger=True
    )
    assert callbacks[0] is checkpoint and isinstance(checkpoint, RunCheckpoint)
    assert Path(checkpoint.dirpath) == tmp_path / "checkpoints"
    assert checkpoint.filename == "epoch{epoch:03d}"
    assert checkpoint.auto_insert_metric_name is False
    assert (checkpoint.monitor, checkpoint.mode, checkpoint.save_top_k) == ("val/acc", "max", 2)
    assert checkpoint.keep_last is True and not checkpoint.save_last
    assert [type(c) for c in callbacks] == [RunCheckpoint, LearningRateMonitor]
    assert callbacks[1].logging_interval == "epoch"


def test_without_validation_the_last_checkpoint_is_the_only_one_kept(tmp_path):
    _, checkpoint = build_callbacks(
        _callbacks_cfg(), tmp_path, has_validation=False, has_logger=True
    )
    assert checkpoint.monitor is None and checkpoint.save_top_k == 1


def test_learning_rate_monitor_only_with_a_logger_and_when_asked(tmp_path):
    for lr_monitor, has_logger in [(True, False), (False, True)]:
        callbacks, _ = build_callbacks(
            _callbacks_cfg(lr_monitor=lr_monitor),
            tmp_path,
            has_validation=True,
            has_logger=has_logger,
        )
        assert [type(c) for c in callbacks] == [RunCheckpoint]
    no_key = {k: v for k, v in _callbacks_cfg().items() if k != "lr_monitor"}
    callbacks, _ = build_callbacks(no_key, tmp_path, has_validation=True, has_logger=True)
    assert [type(c) for c in callbacks] == [RunCheckpoint]


def test_early_stopping_gets_its_options_and_needs_validation(tmp_path):
    early = {"enabled": True, "monitor": "val/loss", "mode": "min", "patience": 3}
    callbacks, _ = build_callbacks(
        _callbacks_cfg(early_stopping=early), tmp_path, has_validation=True, has_logger=False
    )
    (stopper,) = [c for c in callbacks if isinstance(c, EarlyStopping)]
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/loss", "min", 3)
    assert early["enabled"] is True  # the caller's config is not changed
    message = r"^callbacks.early_stopping needs a validation set \(data.val_fraction > 0\)$"
    with pytest.raises(ConfigError, match=message):
        build_callbacks(
            _callbacks_cfg(early_stopping=early), tmp_path, has_validation=False, has_logger=False
        )
    # no early_stopping entry at all, or not enabled: none
    no_key = {k: v for k, v in _callbacks_cfg().items() if k != "early_stopping"}
    callbacks, _ = build_callbacks(no_key, tmp_path, has_validation=False, has_logger=False)
    assert not any(isinstance(c, EarlyStopping) for c in callbacks)


def test_bad_callback_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"callbacks has unknown key\(s\) \['swa'\]"):
        build_callbacks(_callbacks_cfg(swa={}), tmp_path, has_validation=True, has_logger=True)
    bad_mode = _callbacks_cfg(checkpoint={"monitor": "val/acc", "mode": "avg"})
    with pytest.raises(ConfigError, match=r"checkpoint.mode must be min or max, got 'avg'"):
        build_callbacks(bad_mode, tmp_path, has_validation=True, has_logger=True)
    _, checkpoint = build_callbacks(  # both directions are accepted
        _callbacks_cfg(checkpoint={"monitor": "val/loss", "mode": "min"}),
        tmp_path,
        has_validation=True,
        has_logger=False,
    )
    assert (checkpoint.monitor, checkpoint.mode) == ("val/loss", "min")
    # no mode at all passes the check (which reads a missing mode as max)
    build_callbacks(
        _callbacks_cfg(checkpoint={"monitor": "val/acc"}),
        tmp_path,
        has_validation=True,
        has_logger=False,
    )


def test_a_checkpoint_config_without_mode_ranks_by_max(tmp_path):
    _, checkpoint = build_callbacks(
        _callbacks_cfg(checkpoint={"monitor": "val/acc"}),
        tmp_path,
        has_validation=True,
        has_logger=False,
    )
    assert checkpoint.mode == "max"


# ------------------------------------------------------------------------------ RunCheckpoint
class _Falling(pl.LightningModule):
    """A linear model whose logged val/acc falls every epoch: the best epoch is the first."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        self.log("val/acc", 1.0 / (self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(4, 2)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(2, 2)), batch_size=2)


def _fit(tmp_path: Path, epochs: int = 3, **options) -> RunCheckpoint:
    checkpoint = RunCheckpoint(
        dirpath=str(tmp_path),
        monitor="val/acc",
        mode="max",
        save_top_k=1,
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        **options,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[checkpoint],
        logger=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(_Falling())
    return checkpoint


def test_last_ckpt_holds_the_final_epoch_not_the_best(tmp_path):
    checkpoint = _fit(tmp_path)
    assert Path(checkpoint.best_model_path).name == "epoch000.ckpt"
    assert checkpoint.last_model_path == str(tmp_path / LAST)
    last = torch.load(tmp_path / LAST, weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 6)  # 3 epochs of 2 batches
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch000.ckpt", LAST]


def test_last_ckpt_follows_save_weights_only(tmp_path):
    """last.ckpt is written like the top-k files: full state by default (optimiser, loops,
    callbacks: what resume needs), weights only with save_weights_only=True."""
    torch.manual_seed(0)
    _fit(tmp_path / "full", epochs=1)
    torch.manual_seed(0)
    _fit(tmp_path / "weights", epochs=1, save_weights_only=True)
    full = torch.load(tmp_path / "full" / LAST, weights_only=False)
    weights = torch.load(tmp_path / "weights" / LAST, weights_only=False)
    assert {"optimizer_states", "callbacks"} <= set(full)
    assert not {"optimizer_states", "callbacks"} & set(weights)
    assert torch.equal(weights["state_dict"]["layer.weight"], full["state_dict"]["layer.weight"])


class _FailsInSecondEpoch(_Falling):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            raise RuntimeError("interrupted")
        return super().training_step(batch, batch_idx)


def test_a_crash_mid_epoch_leaves_the_last_finished_epoch_as_last_ckpt(tmp_path):
    """No checkpoint of the half-done epoch (Lightning's save_on_exception stays off): resume
    re-runs the interrupted epoch from its start."""
    checkpoint = RunCheckpoint(
        dirpath=str(tmp_path),
        monitor="val/acc",
        mode="max",
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[checkpoint],
        logger=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(RuntimeError, match="interrupted"):
        trainer.fit(_FailsInSecondEpoch())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch000.ckpt", LAST]
    last = torch.load(tmp_path / LAST, weights_only=False)
    assert (last["epoch"], last["global_step"]) == (0, 2)


def test_save_last_false_writes_only_the_best(tmp_path):
    checkpoint = _fit(tmp_path, save_last=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch000.ckpt"]
    assert checkpoint.last_model_path == ""


def test_sigterm_is_held_back_inside_the_block_on_the_main_thread():
    def blocked() -> bool:
        return signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])

    assert not blocked()
    with sigterm_deferred():
        assert blocked()
    assert not blocked()
    seen = []

    def in_thread():
        with sigterm_deferred():
            seen.append(blocked())

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    assert seen == [False]  # other threads cannot mask for the process: the block just runs


# ------------------------------------------------------------------------------ run_metrics
def test_run_metrics_keeps_epoch_scalars_of_train_val_and_test_only():
    logged = {
        "train/loss_step": torch.tensor(9.0),  # per-step duplicate: dropped
        "train/loss_epoch": torch.tensor(2.0),  # the epoch value, named without the suffix
        "val/acc": torch.tensor(0.75),
        "test/ece": 0.125,
        "val/confusion": torch.ones(2, 2),  # not a scalar
        "lr-SGD": 0.1,  # not a train/val/test metric
        "trainer/epoch_step": 3,
    }
    assert run_metrics(logged) == {"train/loss": 2.0, "val/acc": 0.75, "test/ece": 0.125}


# ------------------------------------------------------------------------------ checkpoint files
# What resume (logged_steps, Lightning's ckpt_path) and robustlab-eval read back.
def test_load_checkpoint_returns_the_dict_of_a_robustlab_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _checkpoint(tmp_path / "a.ckpt", _loops(3))
    loaded = load_checkpoint("~/a.ckpt")
    assert loaded[CHECKPOINT_KEY]["config"] == {"model": {"name": "small_cnn"}}
    torch.testing.assert_close(loaded["state_dict"]["model.weight"], torch.zeros(1))
    assert loaded["loops"] == _loops(3)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, r"no such file; pass the path of a \.ckpt"),
        (b"not a pickle", r"cannot be read \(\w+: .*\); the file is corrupt"),
        ([1, 2], "was not written by robustlab-train"),
        ({"state_dict": {}}, "was not written by robustlab-train"),
        ({CHECKPOINT_KEY: {"config": {}}}, "was not written by robustlab-train"),
        ({CHECKPOINT_KEY: [], "state_dict": {}}, "was not written by robustlab-train"),
        ({CHECKPOINT_KEY: {"config": {}}, "state_dict": []}, "was not written by robustlab"),
        ({CHECKPOINT_KEY: {}, "state_dict": {}}, "has no run config"),
        ({CHECKPOINT_KEY: {"config": {"model": "resnet"}}, "state_dict": {}}, "has no run config"),
    ],
)
def test_load_checkpoint_refuses_missing_corrupt_and_foreign_files(tmp_path, content, fragment):
    path = tmp_path / "x.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint={path}.*{fragment}"):
        load_checkpoint(path)


def _run_folder(tmp_path: Path, named: str | None) -> Path:
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"checkpoint": named}))
    return folder


def test_checkpoint_path_follows_a_run_folder_to_its_named_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert checkpoint_path("~/x.ckpt") == tmp_path / "x.ckpt"  # a file: itself, unchecked
    best = _checkpoint(tmp_path / "elsewhere" / "epoch003.ckpt")
    folder = _run_folder(tmp_path, str(best))
    assert checkpoint_path("~/run") == best
    # a moved folder: the recorded absolute path is gone, the same name under checkpoints/ wins
    moved = _checkpoint(folder / "checkpoints" / "epoch007.ckpt")
    (folder / "results.json").write_text(json.dumps({"checkpoint": "/gone/epoch007.ckpt"}))
    assert checkpoint_path(folder) == moved


def test_checkpoint_path_of_a_folder_without_a_usable_record_is_an_error(tmp_path):
    folder = _run_folder(tmp_path, None)
    with pytest.raises(CheckpointError, match=r"without a results.json naming its checkpoint"):
        checkpoint_path(folder)
    (folder / "results.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"without a results.json naming its checkpoint"):
        checkpoint_path(folder)
    (folder / "results.json").unlink()
    with pytest.raises(CheckpointError, match=r"without a results.json naming its checkpoint"):
        checkpoint_path(folder)
    (folder / "results.json").write_text(json.dumps({"checkpoint": "/gone/best.ckpt"}))
    with pytest.raises(CheckpointError, match=r"names checkpoint /gone/best.ckpt, which does not"):
        checkpoint_path(folder)


def test_model_state_is_the_model_part_without_its_prefix():
    checkpoint = {
        "state_dict": {
            "model.backbone.w": torch.ones(1),
            "model.mean": torch.zeros(1, 3, 1, 1),
            "pretext_head.weight": torch.ones(2),  # a method part: left out
            "val_metrics.acc": torch.ones(1),
            "xmodel.y": torch.ones(1),  # starts with "model" but not with "model."
        }
    }
    assert sorted(model_state(checkpoint)) == ["backbone.w", "mean"]


def test_classifier_shape_from_the_record_the_data_or_the_weights():
    from types import SimpleNamespace

    from robustlab.run.checkpoints import _classifier_shape

    state = {
        "model.mean": torch.zeros(1, 3, 1, 1),
        "model.backbone.classifier.weight": torch.zeros(7, 16),
        "model.backbone.classifier.bias": torch.zeros(7),
        "model.backbone.conv.weight": torch.zeros(16, 3, 3, 3),
    }
    data = SimpleNamespace(num_classes=5, in_channels=1)

    def record(classifier):
        return {CHECKPOINT_KEY: {"classifier": classifier}, "state_dict": state}

    assert _classifier_shape(record({"num_classes": 10, "in_channels": 1}), data) == (10, 1)
    # a shape recorded only in part is not trusted: the data module's, else the weights'
    assert _classifier_shape(record({"num_classes": 10, "in_channels": None}), data) == (5, 1)
    assert _classifier_shape(record(None), data) == (5, 1)
    assert _classifier_shape(record({"num_classes": None, "in_channels": 2}), None) == (7, 3)
    assert _classifier_shape(record(None), None) == (7, 3)
    for missing in ("model.mean", "model.backbone.classifier.weight"):
        broken = {k: v for k, v in state.items() if k != missing}
        with pytest.raises(CheckpointError, match="records no classifier shape"):
            _classifier_shape({CHECKPOINT_KEY: {}, "state_dict": broken}, None)
    flat = {**state, "model.backbone.classifier.weight": torch.zeros(7)}
    with pytest.raises(CheckpointError, match="records no classifier shape"):
        _classifier_shape({CHECKPOINT_KEY: {}, "state_dict": flat}, None)


def test_load_checkpoint_errors_name_the_file_the_cause_and_the_fix(tmp_path):
    missing = tmp_path / "none.ckpt"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(missing)
    assert str(err.value) == (
        f"checkpoint={missing}: no such file; pass the path of a .ckpt written by "
        "robustlab-train (e.g. <run dir>/checkpoints/last.ckpt) or a run folder"
    )
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x80\x04not a pickle at all")
    try:
        torch.load(corrupt, weights_only=True)
    except Exception as cause:  # what torch says, first line, at most 200 characters
        first = f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(corrupt)
    assert str(err.value) == (
        f"checkpoint={corrupt} cannot be read ({first}); the file is corrupt or not a "
        "PyTorch checkpoint — re-run training or pick another file"
    )


class _NotATensor:
    """Any pickled object beyond tensors and plain containers."""


def test_load_checkpoint_reads_tensors_only_never_arbitrary_pickles(tmp_path):
    path = _checkpoint(tmp_path / "ok.ckpt")
    content = torch.load(path, weights_only=True)
    content["extra"] = _NotATensor()
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)


def test_checkpoint_path_error_for_a_folder_names_the_fix(tmp_path):
    folder = _run_folder(tmp_path, None)
    with pytest.raises(CheckpointError) as err:
        checkpoint_path(folder)
    assert str(err.value) == (
        f"{folder} is a folder without a results.json naming its checkpoint; pass a "
        ".ckpt file (e.g. <run dir>/checkpoints/last.ckpt)"
    )


def test_run_record_holds_config_classifier_shape_parts_and_random_state():
    from types import SimpleNamespace

    from robustlab.run.checkpoints import CHECKPOINT_FORMAT, run_record

    config = {"model": {"name": "small_cnn"}, "seed": 3}
    torch.manual_seed(5)
    record = run_record(config, SimpleNamespace(num_classes=10, in_channels=3))
    assert record["format"] == CHECKPOINT_FORMAT == 3
    assert record["config"] is config
    assert record["classifier"] == {"num_classes": 10, "in_channels": 3}
    assert record["parts"] == {"model": {"prefix": "model.", "factory": None, "kwargs": {}}}
    assert torch.equal(record["rng"]["torch"], torch.get_rng_state())
    # a module without the attributes records None; declared parts are kept as given
    parts = {"generator": {"prefix": "generator.", "factory": "a.b:c", "kwargs": {"z": 8}}}
    other = run_record(None, torch.nn.Linear(1, 1), parts)
    assert other["classifier"] == {"num_classes": None, "in_channels": None}
    assert other["parts"] == parts and other["config"] is None
