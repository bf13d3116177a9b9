"""What every command-line app shares: running one Hydra job with robustlab's error contract.

A :class:`~robustlab.errors.RobustlabError` (bad input) prints one message and exits with code 2,
no traceback unless ``HYDRA_FULL_ERROR=1``; so do the mistakes Hydra itself catches (an unknown
option, a typo'd key), as one line with a "did you mean" (:mod:`robustlab.cli.config_tree`).
Each job runs in a :func:`~robustlab.run.loggers.job_scope`: its own wandb run, finished when the
job ends.
Any failure after the job started leaves a ``results.json`` with ``status: failed``. In a
multirun, a failed job is recorded and the sweep goes on; the app exits non-zero at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import hydra._internal.utils as hydra_internal
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from robustlab.cli.config_tree import config_groups_help, one_line
from robustlab.errors import ConfigError, RobustlabError
from robustlab.results import Results, provenance, write_results
from robustlab.run.builders import config_container
from robustlab.run.loggers import JobIdentity, job_scope

log = logging.getLogger("robustlab")
_failed_jobs: list[str] = []

# Keep the apps' output about the run: drop Lightning's product tips, a deprecation warning
# Lightning raises about its own internals, and its warning about the empty validation loader
# list that ``data.val_fraction=0`` asks for.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: not record.getMessage().startswith("💡 Tip")
)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
# ``--help`` lists each app's groups and their options (conf/hydra/help/robustlab.yaml).
OmegaConf.register_new_resolver("robustlab_config_groups", config_groups_help, replace=True)


def choice(cfg: DictConfig, group: str) -> str:
    """The config name chosen for ``group`` (e.g. ``method`` → ``erm``)."""
    try:
        chosen = HydraConfig.get().runtime.choices.get(group)
    except ValueError:  # Hydra not initialised (API use)
        chosen = None
    return str(chosen or OmegaConf.select(cfg, f"{group}.name", default="?"))


def command_line_suites(overrides: list[str]) -> list[str] | None:
    """The suites a ``suite=[...]`` (or ``~suite``) among the command-line ``overrides`` selects;
    None when the command line does not choose the suites."""
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group != "suite" or override.package is not None:
            continue
        if override.is_delete():
            return []
        value = override.value()
        return [str(name) for name in (value if isinstance(value, list) else [value])]
    return None


def drop_unselected_suites(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Make a command-line ``suite=[...]`` the whole list of suites the run scores.

    An experiment file that tunes its suites (``suite: {corruptions: {max_images: 1000}}``) puts
    those entries in the config whatever the command line selects, and a suite is built from any
    entry, missing options taking their defaults: ``experiment=X suite=[clean]`` would still run
    X's corruption suite. Entries the command line's selection leaves out are removed (and
    logged); returns their names.
    """
    selected = command_line_suites(overrides)
    suites = cfg.get("suite")
    if selected is None or not suites:
        return []
    dropped = [name for name in suites if name not in selected]
    with open_dict(cfg):
        for name in dropped:
            del cfg.suite[name]
    if dropped:
        log.info(f"suite={selected} on the command line: not running the experiment's {dropped}")
    return dropped


def _record_failure(cfg: DictConfig, run_dir: Path, error: BaseException, started: float) -> None:
    message = f"{type(error).__name__}: {error}"
    results = Results(
        method=choice(cfg, "method"),
        data=choice(cfg, "data"),
        model=choice(cfg, "model"),
        seed=OmegaConf.select(cfg, "seed"),
        status="failed",
        error=message,
        config=config_container(cfg),
        provenance=provenance(started),
    )
    write_results(results, run_dir)


def _record_signals() -> list[str]:
    """Turn SIGTERM (a scheduler's time limit, ``kill``) into an interrupt that Lightning shuts
    down gracefully, and remember it so the failure record can say what ended the run."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        return received

    def on_sigterm(signum: int, frame: object) -> None:
        received.append("terminated by SIGTERM")
        raise KeyboardInterrupt("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    return received


def job_identity(cfg: DictConfig) -> JobIdentity:
    """The current Hydra job as a dashboard names it: its override string, its sweep folder
    (multirun) and a config holding the chosen groups, the seed and the overrides."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    chosen = {group: choice(cfg, group) for group in ("method", "data", "model")}
    config = {
        **{group: name for group, name in chosen.items() if name != "?"},
        "seed": OmegaConf.select(cfg, "seed"),
        "overrides": overrides,
        "job": str(hydra_cfg.job.name),
        "run": config_container(cfg),
    }
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return JobIdentity(
        name=str(hydra_cfg.job.override_dirname) or None,
        group=str(hydra_cfg.sweep.dir) if multirun else None,
        config=config,
    )


def run_job(task: Callable[[DictConfig, Path], object], cfg: DictConfig) -> None:
    """Run ``task(cfg, run_dir)`` inside the current Hydra job with the error contract."""
    started = time.time()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    signals = _record_signals()
    try:
        try:
            drop_unselected_suites(cfg, list(hydra_cfg.overrides.task))
            with job_scope(job_identity(cfg)):
                task(cfg, run_dir)
        except MissingMandatoryValue as error:
            key = error.full_key
            raise ConfigError(
                f"{key} is required: give it on the command line, {key}=..."
            ) from None
        except OmegaConfBaseException as error:
            message = str(error).splitlines()[0]
            raise ConfigError(
                f"config error at {error.full_key or 'top level'}: {message}"
            ) from None
    except SystemExit as error:  # Lightning exits on interrupts; record why the run ended
        if error.code not in (0, None) and rank_zero_only.rank == 0:
            reason = signals or [f"exit code {error.code}"]
            _record_failure(cfg, run_dir, RuntimeError(f"run ended early: {reason[0]}"), started)
        raise
    except (Exception, KeyboardInterrupt) as error:
        if rank_zero_only.rank == 0:
            _record_failure(cfg, run_dir, error, started)
        if not isinstance(error, RobustlabError) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {error}", file=sys.stderr)
        if not multirun:
            raise SystemExit(2) from None
        _failed_jobs.append(str(run_dir))


def exit_status() -> int:
    """0, or 2 when a job of this process's multirun failed (its results.json says why)."""
    if _failed_jobs:
        print(
            f"{len(_failed_jobs)} job(s) failed; see results.json in: " + ", ".join(_failed_jobs),
            file=sys.stderr,
        )
        return 2
    return 0


def hydra_argv(argv: list[str]) -> list[str]:
    """Hydra's parser wants flags before overrides; accept ``app k=v -m k=a,b`` as users type
    it (and as the experiment READMEs write it) by moving ``-m``/``--multirun`` first."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    return [argv[0], *flags, *(a for a in argv[1:] if a not in flags)]


@contextmanager
def one_line_hydra_errors(overrides: list[str]) -> Iterator[None]:
    """Inside, a mistake Hydra catches (unknown option, typo'd key, bad override syntax) prints
    one line with a "did you mean" and exits with code 2, like robustlab's own errors;
    ``HYDRA_FULL_ERROR=1`` keeps Hydra's traceback. Hydra reports every stage of an app through
    ``run_and_report``; this wraps that one function for the duration."""
    report = hydra_internal.run_and_report

    def run_and_report(func: Callable[[], object]) -> object:
        def guarded() -> object:
            try:
                return func()
            except (HydraException, OmegaConfBaseException) as error:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"Error: {one_line(error, overrides)}", file=sys.stderr)
                raise SystemExit(2) from None

        return report(guarded)

    hydra_internal.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_internal.run_and_report = report


def hydra_app(task: Callable[[DictConfig, Path], object], config_name: str) -> Callable[[], None]:
    """A console-script ``main`` running ``task`` as a Hydra app on ``conf/<config_name>.yaml``."""

    @hydra.main(version_base="1.3", config_path="pkg://robustlab.conf", config_name=config_name)
    def hydra_main(cfg: DictConfig) -> None:
        run_job(task, cfg)

    def main() -> None:
        sys.argv = hydra_argv(sys.argv)
        with one_line_hydra_errors([a for a in sys.argv[1:] if not a.startswith("-")]):
            hydra_main()
        raise SystemExit(exit_status())

    return main
