"""Bad input ends the apps with exit code != 0 and one clear message, no traceback."""

from __future__ import annotations

import json
import time

import pytest
import torch

from tests.helpers import QUICK, compose_train, results_of, run_app, wandb_offline_runs


def _assert_clean_failure(proc, *needles: str) -> str:
    """Exit code 2, no traceback, exactly one line on stderr holding every needle; returns it."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in:\n{lines[0]}"
    return lines[0]


def test_unknown_option_is_one_line_with_a_suggestion(tmp_path):
    proc = run_app("train", "model=small_cn", cwd=tmp_path)
    line = _assert_clean_failure(
        proc, "model=small_cn is not an option", "did you mean model=small_cnn?"
    )
    assert "resnet20" in line and "wrn_16_8" in line  # the valid choices are listed
    proc = run_app("train", "method=nonexistent", cwd=tmp_path)
    _assert_clean_failure(proc, "method=nonexistent is not an option", "erm", "stability")


def test_unknown_nested_experiment_lists_nested_experiments(tmp_path):
    proc = run_app("train", "experiment=stability/mnst", cwd=tmp_path)
    line = _assert_clean_failure(proc, "did you mean experiment=stability/mnist?")
    assert "stability/mnist_erm" in line and "quickstart" in line
    assert "_base" not in line  # shared settings files are not experiments to pick


@pytest.mark.parametrize(
    "method_twin, erm_twin",
    [
        ("stability/mnist", "stability/mnist_erm"),
        ("stability/cifar10", "stability/cifar10_erm"),
        ("stability/cifar10_full", "stability/cifar10_full_erm"),
        ("stability/imagenet_full", "stability/imagenet_full_erm"),
    ],
)
def test_erm_baseline_equals_its_method_twin_except_the_method(method_twin, erm_twin):
    """The twins share one base file: same data, model, trainer, suites and optimiser; only the
    method (and its own options) differ."""
    twin, erm = compose_train(f"experiment={method_twin}"), compose_train(f"experiment={erm_twin}")
    assert (twin.method.name, erm.method.name) == ("stability", "erm")
    assert {k: v for k, v in twin.items() if k != "method"} == {
        k: v for k, v in erm.items() if k != "method"
    }
    for key in ("optimizer", "scheduler"):
        assert twin.method[key] == erm.method[key], key
    assert (twin.method.alpha, twin.method.sigma) == (0.01, 0.04)


def test_ssl_adversarial_experiments_share_the_reduced_scale_settings():
    """mnist, mnist_pretrain and cifar10 take model, pretext, optimiser and attack from one
    base; mnist and mnist_pretrain also share ε_train and the converged budget (every training
    batch for 3 epochs), cifar10 trains on every batch for 10 epochs (its CPU budget)."""
    mnist, pretrain, cifar = (
        compose_train(f"experiment=ssl_adversarial/{name}")
        for name in ("mnist", "mnist_pretrain", "cifar10")
    )
    for cfg in (pretrain, cifar):
        assert cfg.model == mnist.model
        assert cfg.method.pretext_options == mnist.method.pretext_options
        assert cfg.method.optimizer == mnist.method.optimizer
    assert pretrain.trainer == mnist.trainer
    assert (mnist.trainer.max_epochs, mnist.trainer.limit_train_batches) == (3, None)
    assert (cifar.trainer.max_epochs, cifar.trainer.limit_train_batches) == (10, None)
    assert pretrain.method.attack == mnist.method.attack
    assert (mnist.method.attack.eps, cifar.method.attack.eps) == (0.1, "8/255")
    assert (pretrain.method.task_weight, mnist.method.task_weight) == (0.0, 1.0)


def test_typo_in_key_is_one_line_with_a_suggestion(tmp_path):
    proc = run_app("train", "method.optimizer.lrr=0.1", cwd=tmp_path)
    line = _assert_clean_failure(
        proc, "unknown key method.optimizer.lrr", "did you mean method.optimizer.lr?"
    )
    assert "+method" not in line  # adding a key the method does not take is no fix
    proc = run_app("train", "seeed=1", cwd=tmp_path)
    _assert_clean_failure(proc, "unknown key seeed", "did you mean seed?")
    proc = run_app("train", "metod=erm", cwd=tmp_path)
    _assert_clean_failure(proc, "did you mean method?")


def test_hydra_errors_keep_the_traceback_with_full_error(tmp_path):
    proc = run_app("train", "model=small_cn", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def _help_groups(help_text: str) -> dict[str, str]:
    """``{group: "option, option"}`` from the "Config groups" section of ``--help``."""
    section = help_text.split("== Config groups ==")[1].split("== Config ==")[0]
    return dict(line.split(": ", 1) for line in section.strip().splitlines())


def test_help_lists_the_groups_each_app_uses(tmp_path):
    train_help = run_app("train", "--help", cwd=tmp_path)
    assert train_help.returncode == 0, train_help.stderr
    groups = _help_groups(train_help.stdout)
    assert groups["hydra/launcher"] == "basic, joblib, submitit_slurm"
    assert "stability/mnist" in groups["experiment"].split(", ")
    methods = groups["method"].split(", ")
    assert {"adversarial", "erm", "selfsup", "stability"} <= set(methods)
    assert not any("/" in m for m in methods)  # no terms/stability: a group of its own
    assert "stability" in groups["method/terms"].split(", ")  # +method/terms=stability
    assert "_shared" not in train_help.stdout and "_base" not in train_help.stdout
    eval_help = run_app("evaluate", "--help", cwd=tmp_path)
    assert eval_help.returncode == 0, eval_help.stderr
    eval_groups = set(_help_groups(eval_help.stdout))
    assert eval_groups == {"trainer", "logger", "suite", "hydra/launcher"}, eval_groups


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["suite=[clean,pgd_linf]", "suite.pgd_linf.epsilons=[-0.1]"], "epsilons must be >= 0"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs must be an integer"),
        (["method=stability", "method.alpha=-1"], "method.alpha must be >= 0"),
        (["logger=[csv,wandb]", "logger.wandb.mode=sometimes"], "logger.wandb.mode"),
        (["callbacks.checkpoint.mode=maximum"], "callbacks.checkpoint.mode must be min or max"),
        (["trainer.accelerator=tpu9"], "invalid accelerator name"),
        (["seed=abc"], "seed must be a non-negative integer, got 'abc'"),
    ],
)
def test_bad_settings_stop_the_run_before_any_data_or_step(tmp_path, overrides, message):
    """Each group is checked before data is read: with a data folder that does not exist the
    error is still about the setting (data would fail first), and nothing was trained."""
    run_dir = tmp_path / "run"
    started = time.monotonic()
    proc = run_app(
        "train",
        "data=mnist",
        f"data.root={tmp_path}/nowhere",
        f"hydra.run.dir={run_dir}",
        *QUICK,
        *overrides,
        cwd=tmp_path,
    )
    assert not (run_dir / "checkpoints").exists(), "an epoch ran before the check"
    assert not (run_dir / "csv" / "metrics.csv").exists()
    assert time.monotonic() - started < 60
    _assert_clean_failure(proc, message)


def test_bad_suite_is_rejected_before_training(tmp_path):
    """With data present (the bundled digits), a negative ε still stops the run before its
    first step: no checkpoint, no logged metric."""
    run_dir = tmp_path / "run"
    proc = run_app(
        "train",
        f"hydra.run.dir={run_dir}",
        *QUICK,
        "suite=[clean,pgd_linf]",
        "suite.pgd_linf.epsilons=[0.1,-0.1]",
        cwd=tmp_path,
    )
    assert not (run_dir / "checkpoints").exists(), "an epoch ran before the check"
    assert not (run_dir / "csv" / "metrics.csv").exists()
    _assert_clean_failure(proc, "suite.pgd_linf.epsilons must be >= 0, got -0.1")
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"


def test_eval_rejects_a_bad_suite_before_the_clean_suite_runs(tmp_path):
    train_dir = tmp_path / "train"
    proc = run_app("train", f"hydra.run.dir={train_dir}", *QUICK, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    checkpoint = next((train_dir / "checkpoints").glob("epoch*.ckpt"))
    eval_dir = tmp_path / "eval"
    proc = run_app(
        "evaluate",
        f"checkpoint={checkpoint}",
        f"hydra.run.dir={eval_dir}",
        "suite=[clean,pgd_linf]",
        "suite.pgd_linf.epsilons=[-0.1]",
        "trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert "suite clean:" not in proc.stdout, "the clean suite ran before the check"
    assert not (eval_dir / "report.md").exists()
    _assert_clean_failure(proc, "suite.pgd_linf.epsilons must be >= 0")
    proc = run_app(
        "evaluate",
        f"checkpoint={checkpoint}",
        f"hydra.run.dir={eval_dir}",
        "seed=abc",
        cwd=tmp_path,
    )
    _assert_clean_failure(proc, "seed must be a non-negative integer, got 'abc'")


def _sweep_wandb_runs(tmp_path, *launcher: str) -> None:
    """A 4-job sweep (seed × lr) logging to offline wandb: one run per job, in the job's
    folder, named by its overrides, grouped by the sweep, with the job's seed and lr."""
    sweep_dir = tmp_path / "sweep"
    proc = run_app(
        "train",
        "-m",
        "seed=0,1",
        "method.optimizer.lr=0.1,0.05",
        "logger=[csv,wandb]",
        "data.val_fraction=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        "suite={}",
        f"hydra.sweep.dir={sweep_dir}",
        *launcher,
        cwd=tmp_path,
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = wandb_offline_runs(sweep_dir)
    assert len(runs) == 4, [str(r["dir"]) for r in runs]
    for job in range(4):
        (run,) = [r for r in runs if r["dir"].parent.parent.name == str(job)]
        overrides = (sweep_dir / str(job) / ".hydra" / "overrides.yaml").read_text()
        seed, lr = run["config"]["seed"], run["config"]["optimizer"]["lr"]
        assert f"seed={seed}" in overrides and f"method.optimizer.lr={lr}" in overrides
        assert f"seed={seed}" in run["name"] and f"method.optimizer.lr={lr}" in run["name"]
        assert run["group"] == str(sweep_dir)
        assert (run["config"]["method"], run["config"]["data"]) == ("erm", "digits")
        assert run["config"]["model"] == "small_cnn"
        assert run["history"] >= 1 and run["exit_code"] == 0
    assert sorted((r["config"]["seed"], r["config"]["optimizer"]["lr"]) for r in runs) == [
        (0, 0.05),
        (0, 0.1),
        (1, 0.05),
        (1, 0.1),
    ]


def test_sequential_sweep_gives_each_job_its_own_wandb_run(tmp_path):
    _sweep_wandb_runs(tmp_path)


@pytest.mark.slow
def test_joblib_sweep_gives_each_job_its_own_wandb_run(tmp_path):
    _sweep_wandb_runs(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


def test_failed_job_finishes_its_wandb_run(tmp_path, monkeypatch):
    """A job that raises still finishes its wandb run (exit code 1), so the next job of the
    same process starts a run of its own instead of writing into the failed one."""
    import wandb

    from robustlab.run.loggers import JobIdentity, build_loggers, job_scope

    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(RuntimeError), job_scope(JobIdentity(name="a", config={"seed": 0})):
        (logger,) = build_loggers({"wandb": {}}, tmp_path / "a")
        logger.log_metrics({"x": 1.0}, step=0)
        raise RuntimeError("the job failed")
    assert wandb.run is None
    with job_scope(JobIdentity(name="b", config={"seed": 1})):
        (logger,) = build_loggers({"wandb": {}}, tmp_path / "b")
        logger.log_metrics({"x": 2.0}, step=0)
    runs = {run["name"]: run for run in wandb_offline_runs(tmp_path)}
    assert runs["a"]["exit_code"] == 1 and runs["b"]["exit_code"] == 0
    assert (runs["a"]["config"]["seed"], runs["b"]["config"]["seed"]) == (0, 1)
    assert runs["a"]["dir"].is_relative_to(tmp_path / "a")
    assert runs["b"]["dir"].is_relative_to(tmp_path / "b")


def test_out_of_range_value_names_the_key(tmp_path):
    proc = run_app(
        "train", "method.optimizer.lr=-0.1", f"hydra.run.dir={tmp_path}/run", *QUICK, cwd=tmp_path
    )
    _assert_clean_failure(proc, "method.optimizer.lr must be > 0")
    assert proc.returncode == 2
    # the started run still leaves a record of its failure
    assert '"status": "failed"' in (tmp_path / "run" / "results.json").read_text()


def test_missing_dataset_names_expected_files(tmp_path):
    proc = run_app(
        "train",
        "data=mnist",
        f"data.root={tmp_path}/nowhere",
        f"hydra.run.dir={tmp_path}/run",
        *QUICK,
        cwd=tmp_path,
    )
    _assert_clean_failure(proc, "train-images-idx3-ubyte", "data.download=true")


def test_full_error_shows_traceback(tmp_path):
    proc = run_app(
        "train",
        "method.optimizer.lr=-0.1",
        f"hydra.run.dir={tmp_path}/run",
        *QUICK,
        cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_corrupt_and_foreign_checkpoints(tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"this is not a checkpoint")
    proc = run_app(
        "evaluate", f"checkpoint={corrupt}", f"hydra.run.dir={tmp_path}/e1", cwd=tmp_path
    )
    _assert_clean_failure(proc, "corrupt.ckpt", "cannot be read")

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    proc = run_app(
        "evaluate", f"checkpoint={foreign}", f"hydra.run.dir={tmp_path}/e2", cwd=tmp_path
    )
    _assert_clean_failure(proc, "not written by robustlab-train")

    proc = run_app(
        "evaluate",
        f"checkpoint={tmp_path}/missing.ckpt",
        f"hydra.run.dir={tmp_path}/e3",
        cwd=tmp_path,
    )
    _assert_clean_failure(proc, "no such file")


def test_slurm_launcher_without_plugin_says_what_to_install(monkeypatch):
    import sys

    from hydra_plugins.robustlab_launchers.slurm import INSTALL_HINT, SlurmLauncher

    monkeypatch.setitem(
        sys.modules, "hydra_plugins.hydra_submitit_launcher.submitit_launcher", None
    )
    try:
        SlurmLauncher(partition="gpu")
    except ImportError as err:
        assert str(err) == INSTALL_HINT and "robustlab[slurm]" in str(err)
    else:
        raise AssertionError("expected an ImportError")


def test_missing_mandatory_checkpoint_is_named(tmp_path):
    proc = run_app("evaluate", f"hydra.run.dir={tmp_path}/e", cwd=tmp_path)
    _assert_clean_failure(proc, "checkpoint is required", "checkpoint=")


def test_gpu_trainer_without_gpu_says_so(tmp_path):
    # hide any GPU of this machine, so the check runs on every machine
    proc = run_app(
        "train",
        "trainer=gpu",
        f"hydra.run.dir={tmp_path}/run",
        *QUICK,
        cwd=tmp_path,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    _assert_clean_failure(proc, "needs a CUDA GPU", "trainer=cpu")


def test_launcher_configs_compose(tmp_path):
    targets = {
        "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "submitit_slurm": "hydra_plugins.robustlab_launchers.slurm.SlurmLauncher",
    }
    for launcher, target in targets.items():
        proc = run_app("train", f"hydra/launcher={launcher}", "--cfg", "hydra", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"_target_: {target}" in proc.stdout


def test_terminated_run_records_why_it_failed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robustlab.cli.train",
            "trainer.max_epochs=500",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.5)  # the first epoch is done and checkpointed
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "failed" and "SIGTERM" in record["error"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file(), "checkpoints written so far are kept"


def test_command_line_suite_selection_overrides_an_experiments_tuned_suites(tmp_path):
    """An experiment that tunes a suite's options (``suite.fgsm.max_images``) must not bring
    that suite back when the command line selects ``suite=[clean]`` (it did: the tuned entry was
    built with the suite's defaults for the rest and ran)."""
    experiments = tmp_path / "conf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "tuned.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /suite: [clean, fgsm]\n"
        "suite:\n  fgsm:\n    max_images: 20\n    epsilons: [0.1]\n"
    )
    common = [*QUICK, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=tuned"]
    tuned = run_app("train", *common, f"hydra.run.dir={tmp_path / 'tuned'}", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    suites = {r["suite"] for r in results_of(tmp_path / "tuned")["robustness"]}
    assert suites == {"clean", "fgsm"}  # the experiment's own selection runs its tuned fgsm
    clean = run_app(
        "train", *common, "suite=[clean]", f"hydra.run.dir={tmp_path / 'clean'}", cwd=tmp_path
    )
    assert clean.returncode == 0, clean.stderr[-2000:]
    result = results_of(tmp_path / "clean")
    assert {r["suite"] for r in result["robustness"]} == {"clean"}
    assert "fgsm" not in result["config"]["suite"]


def test_a_key_of_every_swept_method_but_not_the_default_points_to_the_plus_plus_fix(tmp_path):
    """Hydra checks plain overrides against the group's default (erm) before a sweep starts, so
    a key every swept option has (KD's and DKD's temperature) fails; the message names ``++``,
    which works."""
    proc = run_app("train", "-m", "method=kd,dkd", "method.temperature=2", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "++method.temperature=..." in lines[0], proc.stderr
    sweep = tmp_path / "sweep"
    proc = run_app(
        "train",
        "-m",
        "method=kd,dkd",
        "++method.temperature=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    # both jobs start: each then stops at its own first check (no teacher was given)
    assert "unknown key" not in proc.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert results_of(sweep / job)["config"]["method"]["temperature"] == 2
