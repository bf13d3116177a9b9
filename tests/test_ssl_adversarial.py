"""Adversarial training (Madry / TRADES) and self-supervised pretext tasks (rotation, jigsaw)."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.attacks import cross_entropy, input_gradient, pgd
from robustlab.checkpoints import load_checkpoint, model_state
from robustlab.errors import ConfigError
from robustlab.methods import build_method
from robustlab.methods.adversarial import eval_mode, madry_loss, trades_kl, trades_loss
from robustlab.models import build_backbone
from robustlab.models.wrapper import ImageClassifier
from robustlab.pretext import (
    Jigsaw,
    Rotation,
    build_pretexts,
    min_hamming_distance,
    permutation_set,
    rotate,
    shuffle_patches,
)
from robustlab.train import train
from tests.helpers import QUICK, compose_train


def small_model(width: int = 8, channels: int = 1) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(build_backbone("small_cnn", 10, channels, width=width), (0.5,), (0.25,))


# ----------------------------------------------------------------------------- pretext tasks
def test_rotation_of_a_hand_made_image():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    # 90° counter-clockwise: the right column becomes the top row
    assert rotate(x, torch.tensor([1])).flatten().tolist() == [2.0, 4.0, 1.0, 3.0]
    assert rotate(x, torch.tensor([2])).flatten().tolist() == [4.0, 3.0, 2.0, 1.0]
    task = Rotation(views="all")
    labels = task.sample_labels(3)
    assert labels.tolist() == [[0, 1, 2, 3]] * 3
    views = task.transform(x.repeat(3, 1, 1, 1), labels)
    assert views.shape == (12, 1, 2, 2)
    assert views[3].flatten().tolist() == [3.0, 1.0, 4.0, 2.0]  # 270°


@pytest.mark.parametrize("views", ["all", "random"])
def test_rotation_is_recoverable(views):
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    task = Rotation(views=views)
    labels = task.sample_labels(6, generator=torch.Generator().manual_seed(2))
    out = task.transform(x, labels)
    assert out.shape[0] == 6 * task.views
    assert torch.equal(task.invert(out, labels), x)
    if views == "random":  # a rotated image differs from the original unless k = 0
        changed = (out != x).flatten(1).any(1)
        assert changed.tolist() == (labels[:, 0] != 0).tolist()


def test_jigsaw_moves_patches_as_documented():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)  # a 2x2 grid of 1-pixel patches [[0, 1], [2, 3]]
    out = shuffle_patches(x, torch.tensor([[3, 2, 1, 0]]), grid=2)
    assert out.flatten().tolist() == [3.0, 2.0, 1.0, 0.0]
    out = shuffle_patches(x, torch.tensor([[1, 0, 3, 2]]), grid=2)
    assert out.flatten().tolist() == [1.0, 0.0, 3.0, 2.0]


@pytest.mark.parametrize("grid,size", [(2, 24), (3, 28), (4, 32)])
def test_jigsaw_is_recoverable(grid, size):
    task = Jigsaw(grid=grid, permutations=min(24, math.factorial(grid * grid)), seed=3)
    x = torch.rand(16, 1, size, size, generator=torch.Generator().manual_seed(0))
    labels = task.sample_labels(16, generator=torch.Generator().manual_seed(1))
    views = task.transform(x, labels)
    assert torch.equal(task.invert(views, labels), x)
    # non-identity permutations really move pixels; the margin beyond g*floor(H/g) stays put
    moved = (views != x).flatten(1).any(1)
    assert moved.tolist() == (labels[:, 0] != 0).tolist()
    edge = grid * (size // grid)
    assert torch.equal(views[..., edge:, :], x[..., edge:, :])


def test_permutation_sets_size_distance_and_determinism():
    chen = permutation_set(16, 31, seed=0)  # Chen et al.: 4x4 grid, identity + 30
    assert chen.shape == (31, 16)
    assert chen[0].tolist() == list(range(16))
    assert all(sorted(p.tolist()) == list(range(16)) for p in chen)
    assert len({tuple(p.tolist()) for p in chen}) == 31
    assert min_hamming_distance(chen) == 14  # of 16 tiles: every pair differs in >= 14 cells
    assert torch.equal(chen, permutation_set(16, 31, seed=0))
    assert not torch.equal(chen, permutation_set(16, 31, seed=1))
    # 2x2 grid, 4 permutations: greedy finds a Latin square (every pair differs everywhere)
    assert min_hamming_distance(permutation_set(4, 4)) == 4
    assert min_hamming_distance(permutation_set(9, 31, seed=0)) == 7
    assert Jigsaw(grid=4, permutations=31).min_hamming_distance == 14


def test_jigsaw_identity_probability():
    task = Jigsaw(grid=4, permutations=31, identity_prob=0.1)
    labels = task.sample_labels(20000, generator=torch.Generator().manual_seed(0))[:, 0]
    assert abs((labels == 0).float().mean().item() - 0.1) < 0.01
    assert labels.max().item() == 30 and labels.min().item() == 0


def test_unknown_pretext_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown pretext task \['colour'\].*jigsaw.*rotation"):
        build_pretexts(["rotation", "colour"])
    with pytest.raises(ConfigError, match="grid"):
        build_pretexts("jigsaw", {"jigsaw": {"grid": 1}})


# ----------------------------------------------------------------------------- losses
def test_madry_and_trades_losses_on_a_hand_computed_case():
    clean = torch.tensor([[0.0, 0.0]])  # p = (1/2, 1/2)
    adv = torch.tensor([[math.log(3.0), 0.0]])  # q = (3/4, 1/4)
    y = torch.tensor([0])
    assert madry_loss(adv, y).item() == pytest.approx(math.log(4 / 3))
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = ½ ln(4/3)
    assert trades_kl(clean, adv).item() == pytest.approx(kl)
    loss, ce, kl_mean = trades_loss(clean, adv, y, beta=6.0)
    assert ce.item() == pytest.approx(math.log(2))
    assert kl_mean.item() == pytest.approx(kl)
    assert loss.item() == pytest.approx(math.log(2) + 3 * math.log(4 / 3))
    assert trades_kl(adv, adv).item() == pytest.approx(0.0, abs=1e-7)


def test_negative_eps_and_bad_combinations_are_config_errors():
    with pytest.raises(ConfigError, match="method.attack.*eps"):
        build_method("adversarial", small_model(), attack={"eps": -0.1})
    with pytest.raises(ConfigError, match="method.loss must be one of"):
        build_method("adversarial", small_model(), loss="mart")
    with pytest.raises(ConfigError, match="attack_ssl_weight > 0"):
        build_method("selfsup", small_model(), task_weight=0.0, attack={"eps": 0.1})
    with pytest.raises(ConfigError, match="valid choices"):
        build_method("selfsup", small_model(), pretext=["exemplar"])


# ----------------------------------------------------------------------------- the methods
def test_attack_runs_in_eval_mode_and_restores_flags():
    method = build_method("adversarial", small_model(), attack={"eps": 0.1, "steps": 3})
    method.train()
    method.model.backbone.block1.eval()  # e.g. a frozen block
    bn = method.model.backbone.block2[0][1]
    before = bn.running_mean.clone()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(10, (8,))
    with eval_mode(method.model):
        assert not bn.training
    x_adv = method.adversarial_examples(x, y, cross_entropy)
    assert torch.equal(bn.running_mean, before)  # the attack did not touch BN statistics
    assert bn.training and not method.model.backbone.block1.training
    assert (x_adv - x).abs().max().item() == pytest.approx(0.1, abs=1e-6)
    trades = build_method("adversarial", small_model(), loss="trades", attack={"eps": 0.1})
    out = trades.training_loss(x, y)
    expected = out.logs["ce"] + 6.0 * out.logs["kl"]
    assert out.loss.item() == pytest.approx(expected.item()) and out.logs["kl"].item() > 0


def test_attacked_ssl_objective_includes_the_ssl_term():
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(10, (6,), generator=torch.Generator().manual_seed(1))
    grads = {}
    for w in (0.0, 0.5):
        method = build_method("selfsup", small_model(), attack_ssl_weight=w, attack={"eps": 0.1})
        method.eval()
        labels = method.sample_pretext_labels(x)
        objective = method.combined_objective(x, y, labels)
        values, grads[w] = input_gradient(objective, method.model, x, y)
        ce, grads["ce"] = input_gradient(cross_entropy, method.model, x, y)
        ssl = method.ssl_loss(method.model, x, labels)[0]
        assert torch.allclose(values, ce + w * ssl, atol=1e-6)
    assert torch.equal(grads[0.0], grads["ce"])
    assert (grads[0.5] - grads["ce"]).abs().max() > 1e-4


def digits_arrays(stage: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (float [0, 1]) and labels of the digits train or test split."""
    from robustlab.train import build_data

    datamodule = build_data(compose_train())
    datamodule.prepare_data()
    datamodule.setup(stage)
    loader = datamodule.train_dataloader() if stage == "fit" else datamodule.test_dataloader()
    xs, ys = zip(*loader, strict=True)
    x = torch.cat(xs)
    return (x.float() / 255 if x.dtype == torch.uint8 else x), torch.cat(ys)


def test_adversarial_training_raises_pgd_accuracy_on_digits():
    """4 epochs of PGD-5 training at ε = 0.1: PGD-10 accuracy at ε from ~0 (ERM) to > 0.3."""
    eps = 0.1
    x_train, y_train = digits_arrays("fit")
    x_test, y_test = digits_arrays("test")
    x_test, y_test = x_test[:256], y_test[:256]
    robust = {}
    for name in ("erm", "adversarial"):
        kwargs = {} if name == "erm" else {"attack": {"eps": eps, "steps": 5, "step_size": None}}
        method = build_method(name, small_model(width=8), **kwargs)
        method.train()
        optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        generator = torch.Generator().manual_seed(0)
        for _ in range(4):
            order = torch.randperm(len(x_train), generator=generator)
            for i in range(0, len(order) - 63, 64):
                batch = order[i : i + 64]
                optimizer.zero_grad()
                method.training_loss(x_train[batch], y_train[batch]).loss.backward()
                optimizer.step()
        method.eval()
        x_adv = pgd(method.model, x_test, y_test, eps=eps, steps=10, generator=generator)
        with torch.no_grad():
            robust[name] = (method.model(x_adv).argmax(1) == y_test).float().mean().item()
    assert robust["erm"] < 0.05, robust
    assert robust["adversarial"] > robust["erm"] + 0.3, robust


def test_pretrain_then_head_only_finetune(tmp_path):
    pretrain = train(
        compose_train(
            *QUICK,
            "model.width=8",
            "method=selfsup",
            "method.task_weight=0",
            "method.ssl_weight=1",
            "method.attack_ssl_weight=1",
            "method.attack.eps=0.1",
            "method.attack.steps=2",
            "method.pretext=[rotation,jigsaw]",
            "method.val_attack_batches=0",
        ),
        tmp_path / "pretrain",
    )
    assert pretrain.status == "ok" and "val/ssl_acc" in pretrain.metrics
    ckpt = str(tmp_path / "pretrain" / "checkpoints" / "last.ckpt")
    finetune = train(
        compose_train(
            *QUICK,
            "model.width=8",
            "method=adversarial",
            "method.attack.eps=0.1",
            "method.attack.steps=2",
            f"method.init_from={ckpt}",
            "method.trainable=classifier",
        ),
        tmp_path / "finetune",
    )
    assert finetune.status == "ok" and "val/acc_pgd" in finetune.metrics
    before = model_state(load_checkpoint(ckpt))
    after = model_state(load_checkpoint(str(tmp_path / "finetune/checkpoints/last.ckpt")))
    assert torch.equal(before["backbone.block1.0.0.weight"], after["backbone.block1.0.0.weight"])
    assert not torch.equal(
        before["backbone.classifier.weight"], after["backbone.classifier.weight"]
    )
