"""The ERM base: loss values, fine-tuning from a checkpoint, freezing, registry errors."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.cli.train import train
from robustlab.errors import CheckpointError, ConfigError
from robustlab.methods import build_method
from robustlab.models import build_classifier
from tests.helpers import QUICK, LinearClassifier, compose_train, results_of


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
