"""Bad input ends the apps with exit code != 0 and one clear message, no traceback."""

from __future__ import annotations

import json

import torch

from tests.helpers import QUICK, run_app


def _assert_clean_failure(proc, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"


def test_unknown_method_lists_valid_methods(tmp_path):
    proc = run_app("train", "method=nonexistent", cwd=tmp_path)
    _assert_clean_failure(proc, "method/nonexistent", "Available options in 'method'", "erm")


def test_typo_in_key_is_an_error(tmp_path):
    proc = run_app("train", "method.optimizer.lrr=0.1", cwd=tmp_path)
    _assert_clean_failure(proc, "lrr")


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
    if torch.cuda.is_available():
        return
    proc = run_app("train", "trainer=gpu", f"hydra.run.dir={tmp_path}/run", *QUICK, cwd=tmp_path)
    _assert_clean_failure(proc, "needs a CUDA GPU", "trainer=cpu")


def test_launcher_configs_compose(tmp_path):
    for launcher in ("joblib", "submitit_slurm"):
        proc = run_app("train", f"hydra/launcher={launcher}", "--cfg", "hydra", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "launcher" in proc.stdout and "_target_" in proc.stdout


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
            "robustlab.train",
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
