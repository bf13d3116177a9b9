"""Transfer attacks (``suite.<attack>.source``): adversarial examples crafted on another run's
classifier and scored on the evaluated one, beside the unchanged white-box numbers."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from robustlab.cli.train import train
from robustlab.data import build_datamodule
from robustlab.errors import ConfigError
from robustlab.run.checkpoints import load_checkpoint, load_classifier
from robustlab.suites.attacks import AttackSuite
from robustlab.suites.runner import run_suites
from tests.helpers import QUICK, compose_train, results_of, run_app, suite_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models

TINY = [*QUICK, "trainer.max_epochs=4", "trainer.limit_train_batches=1.0", "model.width=8"]


def _train(run_dir: Path, *overrides: str) -> Path:
    train(compose_train(*TINY, *overrides), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two digits classifiers of different seeds (A: source, B: evaluated) and one of another
    shape (4 classes of 3-channel synthetic images)."""
    root = tmp_path_factory.mktemp("transfer")
    return {
        "A": _train(root / "A", "seed=0"),
        "B": _train(root / "B", "seed=1"),
        "other": _train(
            root / "other",
            "data=synthetic",
            "data.num_classes=4",
            "data.n_train=200",
            "data.n_test=40",
            "trainer.max_epochs=1",
        ),
    }


def _evaluated(run_dir: Path):
    """The run's classifier and its (set-up) test data."""
    config = load_checkpoint(results_of(run_dir)["checkpoint"])["robustlab"]["config"]
    data = dict(config["data"])
    datamodule = build_datamodule(data.pop("name"), **data)
    return load_classifier(run_dir), datamodule


def _fgsm_by_hand(model, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """x + ε·sign(∇ₓ CE(model(x), y)), clipped to [0, 1] (Goodfellow et al. 2015)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def test_transfer_examples_are_the_source_whitebox_examples_scored_on_the_target(runs):
    """FGSM crafted on A and scored on B equals, image for image, the count computed here by
    hand (A's FGSM examples, B's predictions); the white-box number beside it is B's own FGSM,
    unchanged in name; the source's checkpoint is recorded."""
    model_b, datamodule = _evaluated(runs["B"])
    eps = [0.1, 0.3]
    run = run_suites(
        {"fgsm": {"attack": "fgsm", "epsilons": eps, "source": str(runs["A"])}},
        model_b,
        datamodule,
        suite_trainer(),
    )
    model_a = load_classifier(runs["A"])
    images, labels = datamodule.test_arrays()
    x = images.float() / 255
    n = len(labels)
    for e in eps:
        with torch.no_grad():
            transfer = model_b(_fgsm_by_hand(model_a, x, labels, e)).argmax(1).eq(labels).sum()
            whitebox = model_b(_fgsm_by_hand(model_b, x, labels, e)).argmax(1).eq(labels).sum()
        assert round(run.summary[f"fgsm/transfer_acc@{e:g}"] * n) == transfer.item()
        assert round(run.summary[f"fgsm/acc@{e:g}"] * n) == whitebox.item()
        assert transfer > whitebox  # the source matters: crafted on B itself is stronger
    metrics = {(r.level, r.metric) for r in run.records if r.suite == "fgsm"}
    assert metrics == {(e, m) for e in eps for m in ("acc", "transfer_acc")}
    assert run.suites["fgsm"]["source"] == str(Path(results_of(runs["A"])["checkpoint"]))
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((resources.files("robustlab") / "results.schema.json").read_text())
    suites_schema = {
        **schema["$defs"]["provenance"]["properties"]["suites"],
        "$defs": schema["$defs"],
    }
    jsonschema.Draft202012Validator(suites_schema).validate(run.suites)  # "source" is allowed
    assert run.warnings == []  # transfer numbers are not held to white-box sanity rules


def test_a_source_equal_to_the_evaluated_model_gives_the_whitebox_numbers(runs):
    """PGD with random starts and early stopping: crafted on a copy of B (its run folder),
    every transfer number equals the white-box one — the same per-image random starts."""
    model_b, datamodule = _evaluated(runs["B"])
    options = {"epsilons": [0.05, 0.2], "steps": [3], "max_images": 64}
    run = run_suites(
        {"pgd_linf": {**options, "source": str(runs["B"])}},
        model_b,
        datamodule,
        suite_trainer(),
    )
    for e in options["epsilons"]:
        assert run.summary[f"pgd_linf/transfer_acc@{e:g}"] == run.summary[f"pgd_linf/acc@{e:g}"]
    assert 0 < run.summary["pgd_linf/acc@0.05"] < run.suites["pgd_linf"]["clean_acc"]
    only = run_suites(
        {"pgd_linf": {**options, "source": str(runs["B"]), "whitebox": False}},
        model_b,
        datamodule,
        suite_trainer(),
    )
    assert {r.metric for r in only.records if r.suite == "pgd_linf"} == {"transfer_acc"}
    assert only.summary["pgd_linf/mean_transfer_acc"] == run.summary["pgd_linf/mean_transfer_acc"]


def test_a_source_of_another_shape_or_none_at_all_is_refused(runs, tmp_path):
    model_b, datamodule = _evaluated(runs["B"])
    with pytest.raises(ConfigError, match="4 classes of 3-channel images.*10 classes of 1-ch"):
        run_suites(
            {"fgsm": {"attack": "fgsm", "source": str(runs["other"])}},
            model_b,
            datamodule,
            suite_trainer(),
        )
    with pytest.raises(ConfigError, match="whitebox=false needs a suite.fgsm.source"):
        AttackSuite(datamodule, name="fgsm", attack="fgsm", whitebox=False)
    with pytest.raises(ConfigError, match=r"^suite.fgsm.source: checkpoint=.*no such file"):
        AttackSuite(datamodule, name="fgsm", attack="fgsm", source=str(tmp_path / "nope.ckpt"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing", "suite.fgsm.source: checkpoint="),
        ("other", "suite.fgsm.source="),
    ],
)
def test_robustlab_eval_with_a_bad_source_exits_2_in_one_line(runs, tmp_path, source, message):
    """A missing source stops before any data is read; one of another shape before any attack."""
    where = tmp_path / "missing.ckpt" if source == "missing" else runs[source]
    proc = run_app(
        "evaluate",
        f"checkpoint={runs['B']}",
        "suite=[fgsm]",
        f"suite.fgsm.source={where}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert message in lines[-1] and "Traceback" not in proc.stderr


def test_robustlab_train_refuses_a_source_of_another_shape_before_its_first_step(runs, tmp_path):
    """The mismatch is found when the model is built, not after training (no checkpoint)."""
    run_dir = tmp_path / "train"
    proc = run_app(
        "train",
        *QUICK,
        "suite=[fgsm]",
        f"suite.fgsm.source={runs['other']}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "4 classes of 3-channel images" in lines[-1] and "Traceback" not in proc.stderr
    assert not (run_dir / "checkpoints").exists()
    assert results_of(run_dir)["status"] == "failed"


def test_a_training_run_loads_its_transfer_source_once_after_validation(
    runs, tmp_path, monkeypatch
):
    """The suites are built once per run (checked against the model before training, scored
    after it): the source loads once for the pre-data validation and once for the run."""
    from robustlab.suites import attacks

    loaded = []

    def counting(path):
        loaded.append(Path(path))
        return load_classifier(path)

    monkeypatch.setattr(attacks, "load_classifier", counting)
    run_dir = _train(
        tmp_path / "C",
        "seed=2",
        "trainer.max_epochs=1",
        "suite=[fgsm]",
        f"suite.fgsm.source={runs['A']}",
    )
    assert "fgsm/transfer_acc@8/255" in results_of(run_dir)["summary"]
    assert len(loaded) == 2 and len(set(loaded)) == 1, loaded


@pytest.mark.slow
def test_transfer_numbers_are_the_same_under_ddp(runs, tmp_path):
    """robustlab-eval with a source: two DDP processes count the same images right as one."""
    summaries = []
    for name, extra in (("one", []), ("ddp", ["trainer=ddp_cpu"])):
        proc = run_app(
            "evaluate",
            f"checkpoint={runs['B']}",
            "suite=[fgsm]",
            f"suite.fgsm.source={runs['A']}",
            "suite.fgsm.epsilons=[0.1,0.3]",
            "trainer.enable_progress_bar=false",
            *extra,
            f"hydra.run.dir={tmp_path / name}",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        summaries.append(results_of(tmp_path / name)["summary"])
    one, ddp = summaries
    keys = [k for k in one if k.startswith("fgsm/")]
    assert "fgsm/transfer_acc@0.1" in keys and all(one[k] == ddp[k] for k in keys)


def test_the_report_card_names_the_transfer_source():
    from robustlab.reporting.report_card import suite_line

    line = suite_line({"images": 1000, "clean_acc": 0.5, "source": "/runs/A/last.ckpt"})
    assert line == (
        "1,000 test images; clean accuracy on these images 0.5000; "
        "transfer examples crafted on /runs/A/last.ckpt"
    )
