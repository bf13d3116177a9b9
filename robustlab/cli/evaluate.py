"""``robustlab-eval checkpoint=PATH suite=[...]``: score a trained model on evaluation suites.

``checkpoint`` is a checkpoint file or a run folder (the best checkpoint its results.json names).
Data are rebuilt from the run config stored in the checkpoint, the classifier by
:func:`~robustlab.run.checkpoints.load_classifier` (the checkpoint's exported part ``model``; a
stage that exports no classifier is refused with the parts it does export); results go to
``results.json`` (tidy ``robustness`` records + ``summary``) and a human ``report.md`` with plots.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from robustlab.cli.app import hydra_app
from robustlab.reporting.report_card import write_report_card
from robustlab.results import RESULTS_FILE, Results, finished_results, provenance, write_results
from robustlab.run.builders import build_data, config_container
from robustlab.run.checkpoints import (
    CHECKPOINT_KEY,
    checkpoint_path,
    load_checkpoint,
    load_classifier,
)
from robustlab.run.distributed import distributed_job
from robustlab.run.loggers import build_loggers
from robustlab.run.trainer import build_trainer
from robustlab.run.validation import validate_eval
from robustlab.suites.runner import run_suites

log = logging.getLogger("robustlab")


def evaluate(cfg: DictConfig, run_dir: Path) -> Results:
    started = time.time()
    if cfg.get("skip_finished", False):
        finished = finished_results(run_dir, config_container(cfg), part="eval")
        if finished is not None:
            log.info(f"already finished, left as it is (skip_finished): {run_dir / RESULTS_FILE}")
            return finished
    checkpoint_file = checkpoint_path(cfg.checkpoint)
    checkpoint = load_checkpoint(checkpoint_file)
    run_cfg = OmegaConf.create(checkpoint[CHECKPOINT_KEY]["config"])
    overrides = {
        k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if v is not None
    }
    run_cfg.data = OmegaConf.merge(run_cfg.data, overrides)
    validate_eval(cfg, run_cfg, run_dir)  # every group, before any data is read
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    with distributed_job():
        datamodule = build_data(run_cfg)
        model = load_classifier(
            checkpoint, datamodule=datamodule, label=f"checkpoint={checkpoint_file}"
        )
        loggers = build_loggers(cfg.logger, run_dir)
        trainer = build_trainer(cfg.trainer, loggers=loggers, app_module="robustlab.cli.evaluate")
        suites = OmegaConf.to_container(cfg.suite, resolve=True) or {}
        suites = {"clean": suites.pop("clean", {}), **suites}  # clean first: the reference
        records, summary, warnings, suite_runs = run_suites(
            suites, model, datamodule, trainer, seed=int(cfg.seed)
        )
        metrics = {"test/acc": summary["clean/acc"], "test/ece": summary["clean/ece"]}
        results = Results(
            method=str(run_cfg.method.name),
            data=str(run_cfg.data.name),
            model=str(run_cfg.model.name),
            seed=run_cfg.get("seed"),
            metrics=metrics,
            robustness=records,
            summary=summary,
            checkpoint=str(checkpoint_file.resolve()),
            config={"eval": config_container(cfg), "train": config_container(run_cfg)},
            provenance={**provenance(started, world_size=trainer.world_size), "suites": suite_runs},
        )
        if trainer.is_global_zero:
            path = write_results(results, run_dir)
            report = write_report_card(results, run_dir, warnings=warnings, loggers=loggers)
            log.info(
                f"test/acc = {metrics['test/acc']:.4f}; results: {path.resolve()}; "
                f"report: {report.resolve()}"
            )
    return results


main = hydra_app(evaluate, "eval")

if __name__ == "__main__":
    main()
