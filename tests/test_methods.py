"""The ERM base: loss values, fine-tuning from a checkpoint, freezing, registry errors."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.cli.train import train
from robustlab.errors import CheckpointError, ConfigError
from robustlab.methods import build_method
from robustlab.models import build_classifier
from tests.helpers import QUICK, LinearClassifier, compose_train, quiet_cpu_trainer, results_of


def _model():
    torch.manual_seed(0)
    return build_classifier("small_cnn", num_classes=3, in_channels=1, mean=0.5, std=0.5, width=4)


def test_task_loss_with_label_smoothing_matches_hand_computation():
    method = build_method("erm", _model(), label_smoothing=0.3)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = torch.log_softmax(logits, dim=1)[0]
    # smoothed target: (1 - ε) one-hot + ε / K
    expected = -(0.7 * log_p[0] + 0.1 * log_p.sum())
    assert method.task_loss(logits, torch.tensor([0])).item() == pytest.approx(expected.item())
    assert build_method("erm", _model()).task_loss(logits, torch.tensor([0])).item() == (
        pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))), rel=1e-6)
    )


def test_erm_training_loss_is_smoothed_cross_entropy_of_the_model():
    # logits = (x0, x1, −x0 − x1) for the two-pixel image (0.2, 0.7): (0.2, 0.7, −0.9)
    def method(smoothing: float):
        model = LinearClassifier([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
        return build_method("erm", model, label_smoothing=smoothing)

    x, y = torch.tensor([[[[0.2, 0.7]]]]), torch.tensor([1])
    log_z = math.log(math.exp(0.2) + math.exp(0.7) + math.exp(-0.9))
    nll = [log_z - 0.2, log_z - 0.7, log_z + 0.9]  # −log p_k
    out = method(0.0).training_loss(x, y)
    assert out.loss.item() == pytest.approx(nll[1], rel=1e-6)
    assert out.logits[0].tolist() == pytest.approx([0.2, 0.7, -0.9])  # train/acc's logits
    # CE_ε = (1 − ε)·CE + ε·mean_k(−log p_k): ε moves the loss by ε·(mean_k nll_k − nll_y)
    smoothed = method(0.3).training_loss(x, y).loss.item()
    assert smoothed - out.loss.item() == pytest.approx(0.3 * (sum(nll) / 3 - nll[1]), rel=1e-5)


def test_unknown_option_and_bad_value_are_config_errors():
    with pytest.raises(ConfigError, match=r"does not take \['alpha'\]"):
        build_method("erm", _model(), alpha=1.0)
    with pytest.raises(ConfigError, match="label_smoothing must be in"):
        build_method("erm", _model(), label_smoothing=1.5)
    with pytest.raises(ConfigError, match="valid choices: .*erm"):
        build_method("nonexistent", _model())


def test_classifier_only_finetuning_freezes_the_backbone():
    method = build_method("erm", _model(), trainable="classifier")
    trainable = {n for n, p in method.model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.classifier.weight", "backbone.classifier.bias"}
    method.train()
    method.on_train_epoch_start()
    assert all(not m.training for m in method.frozen)
    with pytest.raises(ConfigError, match="no parameter starts with"):
        build_method("erm", _model(), trainable=["backbone.nope"])


def test_init_from_copies_matching_weights(tmp_path):
    run = train(compose_train(*QUICK), tmp_path / "source")
    source = torch.load(run.checkpoint, weights_only=True)["state_dict"]
    # fine-tune a model for 3 classes from a 10-class run: backbone copied, classifier fresh
    model = build_classifier("small_cnn", num_classes=3, in_channels=1, mean=0.5, std=0.5)
    fresh_head = model.backbone.classifier.weight.clone()
    method = build_method("erm", model, init_from=run.checkpoint)
    conv = next(k for k in source if k.endswith("weight") and source[k].ndim == 4)
    assert torch.equal(method.state_dict()[conv], source[conv])
    assert torch.equal(method.model.backbone.classifier.weight, fresh_head)
    assert results_of(tmp_path / "source")["status"] == "ok"

    other = build_classifier("resnet8", num_classes=10, in_channels=1, mean=0.5, std=0.5)
    with pytest.raises(CheckpointError, match="none of its weights fit"):
        build_method("erm", other, init_from=run.checkpoint)


def test_single_optimizer_parameters_are_the_trainable_ones_under_the_name_model():
    method = build_method("erm", LinearClassifier(torch.ones(2, 3)), trainable="classifier")
    groups = method.optimizer_parameters()
    assert list(groups) == ["model"]
    expected = [p for p in method.parameters() if p.requires_grad]
    assert [id(p) for p in groups["model"]] == [id(p) for p in expected]


def test_training_and_test_metrics_are_example_weighted_epoch_means_under_their_names():
    """A real fit of one epoch with batches of 3 and 1 images (learning rate ~0, so the model
    is the same for both): ``train/loss`` per step and per epoch, the epoch value the mean over
    the 4 images (not over the 2 batches), ``train/acc`` over the images, ``test/*`` names."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    weight = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
    x = torch.tensor([[0.2, 0.7], [0.9, 0.1], [0.5, 0.4], [0.0, 0.3]]).reshape(4, 1, 1, 2)
    y = torch.tensor([1, 2, 0, 0])
    logits = LinearClassifier(weight)(x)
    per_image = F.cross_entropy(logits, y, reduction="none")
    method = build_method(
        "erm",
        LinearClassifier(weight),
        optimizer={"name": "sgd", "lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0},
        scheduler={"name": "constant"},
    )
    trainer = quiet_cpu_trainer(max_epochs=1, limit_val_batches=0)
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    trainer.fit(method, train_dataloaders=loader)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["train/loss_epoch"] == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert per_image.mean().item() != pytest.approx(
        (per_image[:3].mean() + per_image[3]).item() / 2, rel=1e-3
    )  # the batch-mean of means would differ
    assert logged["train/loss_step"] == pytest.approx(per_image[3].item(), rel=1e-5)
    accuracy = (logits.argmax(1) == y).float().mean().item()
    assert logged["train/acc"] == pytest.approx(accuracy) and 0 < accuracy < 1
    assert "train/acc_step" not in logged and "train/acc_epoch" not in logged
    (tested,) = trainer.test(method, dataloaders=loader, verbose=False)
    assert tested["test/acc"] == pytest.approx(accuracy)
    assert tested["test/loss"] == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert {"test/acc", "test/ece", "test/loss"} <= set(tested)
