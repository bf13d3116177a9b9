"""``robustlab-train``: compose a run from config groups, train, test, evaluate, write results.

robustlab-train experiment=quickstart
robustlab-train data=mnist model=small_cnn method=erm trainer.max_epochs=1
robustlab-train -m method.optimizer.lr=0.1,0.05 seed=0,1
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.model_helpers import is_overridden

from robustlab.cli.app import choice, hydra_app
from robustlab.errors import CheckpointError
from robustlab.reporting.report_card import write_report_card
from robustlab.results import (
    PICTURES,
    RESULTS_FILE,
    Results,
    finished_results,
    provenance,
    scalar_metrics,
    write_results,
)
from robustlab.run.builders import build_data, build_run_method, config_container
from robustlab.run.callbacks import LoggedHistory, build_callbacks
from robustlab.run.checkpoints import load_checkpoint
from robustlab.run.distributed import distributed_job
from robustlab.run.loggers import build_loggers
from robustlab.run.trainer import build_trainer
from robustlab.run.validation import validate_train
from robustlab.suites.runner import build_suites, check_suites_fit, score_suites

log = logging.getLogger("robustlab")


def run_metrics(logged: dict) -> dict[str, float]:
    """Epoch-level ``train/``, ``val/`` and ``test/`` scalars (no per-step duplicates)."""
    return {
        k.removesuffix("_epoch"): v
        for k, v in scalar_metrics(logged).items()
        if k.startswith(("train/", "val/", "test/")) and not k.endswith("_step")
    }


def resume_path(resume: str | None, run_dir: Path) -> str | None:
    """``resume=auto`` continues from ``<run dir>/checkpoints/last.ckpt`` when it exists."""
    if resume in (None, "", False):
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    path = Path(resume).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"resume={resume}: no such checkpoint file; pass the path of a "
            "last.ckpt, or resume=auto to continue the run in hydra.run.dir"
        )
    return str(path)


def logged_steps(checkpoint_file: str) -> int:
    """How many logging steps (batches that stepped) the checkpoint has behind it: what the
    loggers wrote from this step on belongs to the part of the run that resume re-does."""
    loops = load_checkpoint(checkpoint_file).get("loops", {})
    epoch_loop = loops.get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(epoch_loop.get("_batches_that_stepped", 0))


def resumed_loggers(cfg: DictConfig, run_dir: Path, resume_from: str | None) -> tuple[list, list]:
    """The run's loggers and, when resuming, the callback that keeps their earlier history:
    CSV rows up to the checkpoint are kept (Lightning's CSV logger would delete the file) and
    TensorBoard discards events from the re-done part (``purge_step``) and wandb continues
    the interrupted run (same run id)."""
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True) or {}
    if resume_from is None:
        return build_loggers(logger_cfg, run_dir), []
    until = logged_steps(resume_from)
    if "tensorboard" in logger_cfg:
        logger_cfg["tensorboard"] = {**(logger_cfg["tensorboard"] or {}), "purge_step": until}
    history = LoggedHistory(run_dir / "csv" / "metrics.csv", until_step=until)
    return build_loggers(logger_cfg, run_dir, resume=True), [history]


def train(cfg: DictConfig, run_dir: Path, extra_callbacks: tuple = ()) -> Results:
    """Run one training job in ``run_dir``; returns (and on rank 0 writes) its results."""
    started = time.time()
    validate_train(cfg, run_dir)  # every group, before any data is read or step taken
    skip = cfg.get("skip_finished", False)
    finished = finished_results(run_dir, config_container(cfg)) if skip else None
    if finished is not None:
        log.info(f"already finished, left as it is (skip_finished): {run_dir / RESULTS_FILE}")
        return finished
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    with distributed_job():
        datamodule = build_data(cfg)
        method = build_run_method(cfg, datamodule)
        suites = build_suites(cfg.get("suite"), datamodule, seed=int(cfg.seed))  # once per run
        if method.is_classifier:
            check_suites_fit(suites, method.model)
        resume_from = resume_path(cfg.get("resume"), run_dir)
        loggers, history = resumed_loggers(cfg, run_dir, resume_from)
        callbacks, checkpoint = build_callbacks(
            cfg.callbacks,
            run_dir,
            # a method without validation_step (a generator stage) ranks no checkpoints
            has_validation=datamodule.has_validation and is_overridden("validation_step", method),
            has_logger=bool(loggers),
        )
        trainer = build_trainer(
            cfg.trainer,
            callbacks=[*history, *callbacks, *extra_callbacks],
            loggers=loggers,
            app_module="robustlab.cli.train",
        )
        trainer.fit(method, datamodule=datamodule, ckpt_path=resume_from)
        # resumed after its last epoch, the fit trains nothing: the checkpoint's epoch scalars
        metrics = {
            **run_metrics(checkpoint.restored_metrics),
            **run_metrics(trainer.callback_metrics),
        }
        best = checkpoint.best_model_path or checkpoint.last_model_path or None
        if checkpoint.best_model_score is not None:
            metrics["val/best_" + str(checkpoint.monitor).split("/")[-1]] = float(
                checkpoint.best_model_score
            )
        if cfg.get("test", True):  # test=false: a stage that trains no classifier
            tested = trainer.test(method, datamodule=datamodule, ckpt_path=best, verbose=False)
            metrics.update(run_metrics(tested[0] if tested else {}))
        records, summary, warnings, suite_runs = score_suites(
            suites, method.model, datamodule, trainer, seed=int(cfg.seed)
        )
        results = Results(
            method=choice(cfg, "method"),
            data=choice(cfg, "data"),
            model=choice(cfg, "model"),
            seed=int(cfg.seed),
            metrics=metrics,
            robustness=records,
            summary=summary,
            checkpoint=best,
            subset=datamodule.subset_record(),
            config=config_container(cfg),
            provenance={**provenance(started, world_size=trainer.world_size), "suites": suite_runs},
        )
        if trainer.is_global_zero:
            path = write_results(results, run_dir)
            if records or (run_dir / PICTURES).is_dir():
                write_report_card(results, run_dir, warnings=warnings, loggers=loggers)
            tested = f"test/acc = {metrics['test/acc']:.4f}; " if "test/acc" in metrics else ""
            log.info(f"{tested}results: {path.resolve()}")
    return results


main = hydra_app(train, "train")

if __name__ == "__main__":
    main()
