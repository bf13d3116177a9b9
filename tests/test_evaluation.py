"""Evaluation suites, corruption-error metrics, the eval app and its report card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from robustlab.checkpoints import load_checkpoint, model_state
from robustlab.data import build_datamodule
from robustlab.evaluation import run_suites
from robustlab.models import build_classifier
from robustlab.report import main as report_main
from robustlab.suites.clean import calibration_stats
from robustlab.suites.corruption_error import baseline_from_results, corruption_errors
from robustlab.train import train
from tests.helpers import compose_train, results_of, run_app


def test_mce_on_hand_computed_example():
    ours = {("fog", 1): 0.2, ("fog", 2): 0.4, ("snow", 1): 0.3, ("snow", 2): 0.3}
    base = {("snow", 1): 0.5, ("snow", 2): 0.7, ("fog", 2): 0.6, ("fog", 1): 0.4}  # any order
    out = corruption_errors(ours, base, clean_error=0.1, baseline_clean_error=0.2)
    assert out["ce/fog"] == pytest.approx(0.6 / 1.0)
    assert out["ce/snow"] == pytest.approx(0.6 / 1.2)
    assert out["mce"] == pytest.approx((0.6 + 0.5) / 2)
    # relative: Σ(E − E_clean) / Σ(E_base − E_base_clean)
    assert out["relative_ce/fog"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.4))
    assert out["relative_ce/snow"] == pytest.approx((0.2 + 0.2) / (0.3 + 0.5))
    assert out["relative_mce"] == pytest.approx((0.4 / 0.6 + 0.4 / 0.8) / 2)


def test_baseline_is_read_by_name_from_results_json(tmp_path):
    record = {
        "metrics": {"test/acc": 0.9},
        "robustness": [
            {"suite": "corruptions", "condition": "fog", "level": 2, "metric": "acc", "value": 0.7},
            {
                "suite": "pgd_linf",
                "condition": "pgd20",
                "level": 0.03,
                "metric": "acc",
                "value": 0.1,
            },
        ],
    }
    (tmp_path / "results.json").write_text(json.dumps(record))
    errors, clean_error = baseline_from_results(tmp_path)
    assert errors == {("fog", 2): pytest.approx(0.3)}
    assert clean_error == pytest.approx(0.1)


def test_calibration_stats_give_the_ece():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    y = torch.tensor([0, 1, 1, 0])
    stats = calibration_stats(probs, y, bins=10)
    ece = sum(abs(total) for total, _ in stats.values()) / 4
    # bins: 0.9 (conf .9, right), 0.6 (.6, wrong), 0.7 (.7, right), 1.0 (.95, right)
    expected = (abs(0.9 - 1) + abs(0.6 - 0) + abs(0.7 - 1) + abs(0.95 - 1)) / 4
    assert float(ece) == pytest.approx(expected)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("digits_run")
    cfg = compose_train("trainer.enable_progress_bar=false", "trainer.max_epochs=6")
    assert train(cfg, run_dir).metrics["test/acc"] > 0.9
    return run_dir


def _model_and_data(run_dir: Path):
    checkpoint = load_checkpoint(results_of(run_dir)["checkpoint"])
    config = checkpoint["robustlab"]["config"]
    data = dict(config["data"])
    datamodule = build_datamodule(data.pop("name"), **data)
    model_cfg = dict(config["model"])
    model = build_classifier(
        model_cfg.pop("name"),
        num_classes=10,
        in_channels=1,
        mean=datamodule.mean,
        std=datamodule.std,
        **model_cfg,
    )
    model.load_state_dict(model_state(checkpoint))
    return model.eval(), datamodule


def _evaluate(run_dir: Path, suites: dict):
    model, datamodule = _model_and_data(run_dir)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        inference_mode=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
    )
    return run_suites(suites, model, datamodule, trainer, seed=0)


def test_accuracy_falls_with_severity_and_epsilon(digits_run):
    records, summary, warnings = _evaluate(
        digits_run,
        {
            "clean": {},
            "corruptions": {"corruptions": ["gaussian_noise", "contrast", "pixelate", "fog"]},
            "distortions": {},
            "pgd_linf": {"epsilons": ["2/255", "16/255", 0.1, 0.3], "steps": [5]},
        },
    )
    acc = {(r.suite, r.condition, r.level): r.value for r in records}
    for c in ("gaussian_noise", "contrast", "pixelate", "fog"):
        assert acc[("corruptions", c, 1)] >= acc[("corruptions", c, 5)], c
    mean = [
        sum(acc[("corruptions", c, s)] for c in ("gaussian_noise", "contrast", "pixelate", "fog"))
        / 4
        for s in (1, 5)
    ]
    assert mean[0] > mean[1] + 0.05
    assert (
        acc[("distortions", "gaussian_noise", 0.01)] >= acc[("distortions", "gaussian_noise", 0.08)]
    )
    pgd = [acc[("pgd_linf", "pgd5", eps)] for eps in (2 / 255, 16 / 255, 0.1, 0.3)]
    assert pgd == sorted(pgd, reverse=True)
    assert pgd[-1] <= 0.10  # an undefended model falls at ε = 0.3
    assert pgd[0] <= summary["clean/acc"]
    assert summary["pgd_linf/acc@0.3"] == pgd[-1]
    assert warnings == []


def test_sanity_check_flags_robust_above_clean(digits_run):
    from robustlab.results import RobustnessRecord
    from robustlab.suites import build_suite

    _, datamodule = _model_and_data(digits_run)
    suite = build_suite("pgd_linf", datamodule, epsilons=["2/255", "8/255"], steps=[5])
    fake = [
        RobustnessRecord("pgd_linf", "pgd5", 2 / 255, "acc", 0.5),
        RobustnessRecord("pgd_linf", "pgd5", 8 / 255, "acc", 0.7),
    ]
    flags = suite.sanity_violations(fake, clean_acc=0.6)
    assert any("exceeds clean" in f for f in flags)
    assert any("increases" in f or "non-increasing" in f or "rises" in f for f in flags), flags


def test_eval_app_writes_records_report_and_plots(digits_run, tmp_path):
    checkpoint = results_of(digits_run)["checkpoint"]
    proc = run_app(
        "evaluate",
        f"checkpoint={checkpoint}",
        "suite=[corruptions,pgd_linf]",
        "suite.pgd_linf.steps=[3]",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}/e1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results_of(tmp_path / "e1")
    corruption_records = [r for r in record["robustness"] if r["suite"] == "corruptions"]
    assert len(corruption_records) == 95
    assert {r["level"] for r in corruption_records} == {1, 2, 3, 4, 5}
    assert "corruptions/mean_acc" in record["summary"]
    assert record["metrics"]["test/acc"] == pytest.approx(
        results_of(digits_run)["metrics"]["test/acc"]
    )
    report = (tmp_path / "e1" / "report.md").read_text()
    assert "## corruptions" in report and "## pgd_linf" in report
    assert (tmp_path / "e1" / "plots" / "corruptions_acc.png").stat().st_size > 10_000
    assert (tmp_path / "e1" / "plots" / "pgd_linf_acc.png").is_file()

    assert report_main([str(tmp_path / "e1"), "--metrics", "test/acc", "corruptions/mean_acc"]) == 0


def test_ddp_evaluation_equals_single_process(digits_run, tmp_path):
    """Deterministic conditions (clean, JPEG, thumbnail) give identical records whether the
    test set is sharded over 2 processes or not: statistics are summed across ranks."""
    checkpoint = results_of(digits_run)["checkpoint"]
    common = [
        f"checkpoint={checkpoint}",
        "suite=[distortions]",
        "suite.distortions.distortions=[jpeg,thumbnail]",
        "trainer.enable_progress_bar=false",
    ]
    single = run_app("evaluate", *common, f"hydra.run.dir={tmp_path}/single", cwd=tmp_path)
    ddp = run_app(
        "evaluate",
        *common,
        "trainer=ddp_cpu",
        "logger=[csv,wandb]",
        f"hydra.run.dir={tmp_path}/ddp",
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = results_of(tmp_path / "single"), results_of(tmp_path / "ddp")
    assert two["provenance"]["world_size"] == 2

    def as_table(r):
        return {
            (x["suite"], x["condition"], x["level"], x["metric"]): x["value"]
            for x in r["robustness"]
        }

    # accuracies are sums of counts: identical; ECE sums floats in another order: to 1e-9
    assert as_table(one).keys() == as_table(two).keys()
    for key, value in as_table(one).items():
        assert as_table(two)[key] == (pytest.approx(value, abs=1e-9) if key[3] == "ece" else value)
    assert {k: v for k, v in one["summary"].items() if "ece" not in k} == {
        k: v for k, v in two["summary"].items() if "ece" not in k
    }
    assert len(as_table(one)) == 2 + 5 + 4  # clean acc + ece, 5 JPEG and 4 thumbnail levels
    # the plots and the robustness table also went to the (offline) wandb run
    (run,) = (tmp_path / "ddp" / "wandb").glob("offline-run-*")
    assert list((run / "files" / "media" / "images").rglob("*.png")), "plots not logged to wandb"
    assert list((run / "files" / "media" / "table").glob("robustness_*.table.json"))
