"""The checkpoint format: validation, rebuilding another run's classifier (robustlab-eval,
method.init_from, scripts) from a file or a run folder, declared parts, older formats, and the
``frozen`` helper. (Parts other than the classifier: tests/test_platform_methods.py.)"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.cli.evaluate import evaluate
from robustlab.cli.train import train
from robustlab.errors import CheckpointError
from robustlab.run.checkpoints import (
    CHECKPOINT_KEY,
    ExportedPart,
    capture_rng,
    frozen,
    load_checkpoint,
    load_classifier,
    load_module,
    part_records,
    restore_rng,
)
from tests.helpers import compose_train, results_of, run_app

RUN = [
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
]


def _evaluate(checkpoint: Path, run_dir: Path):
    cfg = compose_train(
        f"checkpoint={checkpoint}", "trainer.enable_progress_bar=false", config_name="eval"
    )
    return evaluate(cfg, run_dir)


@pytest.fixture(scope="module")
def selfsup_run(tmp_path_factory) -> Path:
    """A self-supervised run: its checkpoint carries rotation-head tensors beside the model."""
    run_dir = tmp_path_factory.mktemp("selfsup")
    train(compose_train(*RUN, "method=selfsup", "method.attack.eps=0"), run_dir)
    return run_dir


def test_selfsup_checkpoint_evaluates_to_its_own_test_accuracy(selfsup_run, tmp_path):
    state = load_checkpoint(results_of(selfsup_run)["checkpoint"])["state_dict"]
    assert any(k.startswith("pretext_heads.") for k in state), "not a selfsup checkpoint"
    evaluated = _evaluate(Path(results_of(selfsup_run)["checkpoint"]), tmp_path / "eval")
    assert evaluated.metrics["test/acc"] == pytest.approx(
        results_of(selfsup_run)["metrics"]["test/acc"], abs=1e-6
    )


def test_a_run_folder_names_its_best_checkpoint(selfsup_run):
    from_folder = load_classifier(selfsup_run)
    from_file = load_classifier(results_of(selfsup_run)["checkpoint"])
    assert not from_folder.training
    for (name, a), (_, b) in zip(
        from_folder.state_dict().items(), from_file.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not any("pretext" in k for k in from_folder.state_dict())


def test_method_tensors_under_model_are_ignored_missing_ones_are_an_error(selfsup_run, tmp_path):
    checkpoint = load_checkpoint(results_of(selfsup_run)["checkpoint"])
    x = torch.rand(4, 1, 8, 8)
    reference = load_classifier(checkpoint)(x)
    checkpoint["state_dict"]["model.embedding_head.weight"] = torch.zeros(3, 3)
    assert torch.equal(load_classifier(checkpoint)(x), reference)
    classifier_weight = next(k for k in checkpoint["state_dict"] if "classifier" in k)
    del checkpoint["state_dict"][classifier_weight]
    with pytest.raises(CheckpointError, match="missing backbone.classifier"):
        load_classifier(checkpoint)


def test_a_checkpoint_without_its_run_config_is_refused(selfsup_run, tmp_path):
    checkpoint = load_checkpoint(results_of(selfsup_run)["checkpoint"])
    checkpoint[CHECKPOINT_KEY]["config"] = None
    torch.save(checkpoint, tmp_path / "no_config.ckpt")
    with pytest.raises(CheckpointError, match="has no run config"):
        load_checkpoint(tmp_path / "no_config.ckpt")
    proc = run_app(
        "evaluate",
        f"checkpoint={tmp_path / 'no_config.ckpt'}",
        f"hydra.run.dir={tmp_path}/eval",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: checkpoint=")
    assert "Traceback" not in proc.stderr


def _fake_hub(torch_home: Path) -> None:
    """mobilenet_v3_small's IMAGENET1K_V1 file in a torch-hub cache (served without network)."""
    import torchvision.models as tvm

    weights = tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(tvm.mobilenet_v3_small().state_dict(), cache / weights.url.rsplit("/", 1)[-1])


def test_eval_of_a_finetuned_torchvision_checkpoint_fetches_no_weights(tmp_path, monkeypatch):
    """Fine-tuned from model.weights=IMAGENET1K_V1 (from a local hub cache); evaluated with an
    empty TORCH_HOME and downloads forbidden: the checkpoint's own weights are used."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "cache"))
    _fake_hub(tmp_path / "cache")
    run = tmp_path / "run"
    trained = train(
        compose_train(
            *RUN,
            "model=torchvision",
            "model.arch=mobilenet_v3_small",
            "model.weights=IMAGENET1K_V1",
        ),
        run,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(empty))

    def no_download(*args, **kwargs):
        raise AssertionError("robustlab-eval tried to fetch pretrained weights")

    import torchvision.models._api as weights_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", no_download)
    evaluated = _evaluate(Path(trained.checkpoint), tmp_path / "eval")
    assert evaluated.metrics["test/acc"] == pytest.approx(trained.metrics["test/acc"], abs=1e-6)
    assert not list(empty.rglob("*"))


def test_pretrained_inception_keeps_transform_input_when_rebuilt(tmp_path):
    """torchvision's pretrained Inception-v3/GoogLeNet normalise their input themselves
    (transform_input=True); the rebuilt network must do the same without the weights (a
    randomly initialised GoogLeNet's logits hardly depend on the input, so the switch itself is
    checked)."""
    from robustlab.models import build_classifier
    from robustlab.run.checkpoints import run_record

    model = build_classifier("torchvision", 3, 3, (0.5,) * 3, (0.25,) * 3, arch="googlenet")
    model.backbone.net.transform_input = True  # what weights=IMAGENET1K_V1 builds
    config = {"model": {"name": "torchvision", "arch": "googlenet", "weights": "IMAGENET1K_V1"}}
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        CHECKPOINT_KEY: run_record(config, model),
    }
    rebuilt = load_classifier(checkpoint)
    assert rebuilt.backbone.net.transform_input is True


def test_rng_record_round_trip():
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # both keep a cached Gaussian
    record = capture_rng()
    expected = torch.rand(3), random.random(), random.gauss(0, 1), np.random.standard_normal()
    torch.manual_seed(4), random.seed(4), np.random.seed(4)
    restore_rng(record)
    got = torch.rand(3), random.random(), random.gauss(0, 1), np.random.standard_normal()
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


class _Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.teacher = frozen(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5)))
        self.head = nn.Linear(2, 2)


def test_frozen_module_stays_in_eval_mode_without_gradients():
    student = _Student()
    student.train()  # what Lightning does at the start of every training epoch
    assert student.head.training
    assert not any(m.training for m in student.teacher.modules())
    assert not any(p.requires_grad for p in student.teacher.parameters())
    before = student.teacher[1].running_mean.clone()
    student.teacher(torch.randn(8, 2) + 5)
    assert torch.equal(student.teacher[1].running_mean, before), "BatchNorm statistics moved"
    assert [p for p in student.parameters() if p.requires_grad] == list(student.head.parameters())


def test_train_on_a_frozen_module_returns_the_module_and_leaves_it_in_eval_mode():
    teacher = frozen(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    assert teacher.train() is teacher and teacher.train(True) is teacher
    assert not any(m.training for m in teacher.modules())


def test_init_from_a_run_folder_copies_its_classifier(selfsup_run):
    from robustlab.methods.erm import initialise_from_checkpoint
    from robustlab.models import build_classifier

    source = load_classifier(selfsup_run)
    target = build_classifier("small_cnn", 10, 1, (0.0,), (1.0,), width=16, dropout=0.0)
    assert initialise_from_checkpoint(target, str(selfsup_run)) == []
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


def test_eval_rescores_the_best_checkpoint_of_a_run_folder_under_pgd(selfsup_run, tmp_path):
    """What experiments/ssl_adversarial's re-scoring script did: ``robustlab-eval
    checkpoint=<run folder> suite=[clean,pgd_linf]`` scores the checkpoint results.json names."""
    cfg = compose_train(
        f"checkpoint={selfsup_run}",
        "suite=[clean,pgd_linf]",
        "suite.pgd_linf.epsilons=[0.1,0.3]",
        "suite.pgd_linf.steps=[5]",
        "suite.pgd_linf.max_images=32",
        "trainer.enable_progress_bar=false",
        config_name="eval",
    )
    evaluated = evaluate(cfg, tmp_path / "eval")
    assert evaluated.checkpoint == str(Path(results_of(selfsup_run)["checkpoint"]).resolve())
    assert evaluated.metrics["test/acc"] == pytest.approx(
        results_of(selfsup_run)["metrics"]["test/acc"], abs=1e-6
    )
    clean_on_32 = evaluated.provenance["suites"]["pgd_linf"]["clean_acc"]
    weak, strong = evaluated.summary["pgd_linf/acc@0.1"], evaluated.summary["pgd_linf/acc@0.3"]
    assert evaluated.provenance["suites"]["pgd_linf"]["images"] == 32
    assert strong <= weak <= clean_on_32 and strong < clean_on_32


def _as_format_2(checkpoint: dict) -> dict:
    record = checkpoint[CHECKPOINT_KEY]
    del record["parts"]
    record["format"] = 2
    return checkpoint


def test_a_checkpoint_older_than_parts_still_loads_its_classifier(selfsup_run):
    current = load_checkpoint(results_of(selfsup_run)["checkpoint"])
    assert current[CHECKPOINT_KEY]["format"] == 3
    assert current[CHECKPOINT_KEY]["parts"] == {
        "model": {"prefix": "model.", "factory": None, "kwargs": {}}
    }
    old = _as_format_2(load_checkpoint(results_of(selfsup_run)["checkpoint"]))
    x = torch.rand(4, 1, 32, 32)
    assert torch.equal(load_classifier(old)(x), load_classifier(current)(x))
    with pytest.raises(CheckpointError, match="format 2, older than exported parts"):
        load_module(old, "pretext_heads")
    with pytest.raises(CheckpointError, match="exports no part 'pretext_heads'; its parts: model$"):
        load_module(current, "pretext_heads")


def test_exported_parts_are_submodules_with_plain_arguments():
    owner = nn.Module()
    owner.model = nn.Linear(2, 3)
    owner.generator = nn.Sequential(nn.Linear(1, 2))
    records = part_records(
        owner,
        {
            "model": ExportedPart(owner.model),
            "generator": ExportedPart(owner.generator[0], "torch.nn:Linear", {"in_features": 1}),
        },
    )
    assert records == {
        "model": {"prefix": "model.", "factory": None, "kwargs": {}},
        "generator": {
            "prefix": "generator.0.",
            "factory": "torch.nn:Linear",
            "kwargs": {"in_features": 1},
        },
    }
    with pytest.raises(ValueError, match="'stray' is not a submodule"):
        part_records(owner, {"stray": ExportedPart(nn.Linear(1, 1))})
    with pytest.raises(TypeError, match="plain config values"):
        part_records(owner, {"model": ExportedPart(owner.model, "x:y", {"t": torch.ones(1)})})
