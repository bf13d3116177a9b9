"""Adversarial training (Madry / TRADES) and self-supervised pretext tasks (rotation, jigsaw)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from robustlab.attacks import cross_entropy, input_gradient, pgd
from robustlab.cli.train import train
from robustlab.errors import ConfigError
from robustlab.losses import kl_divergence, madry_loss, stability_kl, trades_loss
from robustlab.methods import build_method
from robustlab.methods.adversarial import trades_objective
from robustlab.methods.pretext import (
    Jigsaw,
    Rotation,
    build_pretexts,
    min_hamming_distance,
    permutation_set,
    pretext_logits,
    rotate,
    shuffle_patches,
)
from robustlab.models import build_backbone
from robustlab.models.base import eval_mode
from robustlab.models.wrapper import ImageClassifier
from robustlab.run.checkpoints import load_checkpoint, model_state
from tests.helpers import QUICK, LinearClassifier, compose_train, quiet_cpu_trainer


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
    assert kl_divergence(clean, adv).item() == pytest.approx(kl)
    loss, ce, kl_mean = trades_loss(clean, adv, y, beta=6.0)
    assert ce.item() == pytest.approx(math.log(2))
    assert kl_mean.item() == pytest.approx(kl)
    assert loss.item() == pytest.approx(math.log(2) + 3 * math.log(4 / 3))
    assert kl_divergence(adv, adv).item() == pytest.approx(0.0, abs=1e-7)


def test_one_kl_divergence_behind_stability_and_trades():
    """Pins the shared KL: per example it equals torch's reference ``F.kl_div``, including
    predictions with (numerically) zero probabilities; stability and TRADES use its mean."""
    g = torch.Generator().manual_seed(0)
    target, logits = 3 * torch.randn(5, 7, generator=g), 3 * torch.randn(5, 7, generator=g)
    target[0, 0] = -200.0  # p_0 underflows to 0: its term must be 0, not nan
    reference = F.kl_div(
        F.log_softmax(logits, 1), F.log_softmax(target, 1), log_target=True, reduction="none"
    ).sum(1)
    per_example = kl_divergence(target, logits)
    assert per_example.shape == (5,) and torch.isfinite(per_example).all()
    torch.testing.assert_close(per_example, reference)
    assert stability_kl(target, logits).item() == pytest.approx(reference.mean().item(), rel=1e-6)
    y = torch.arange(5)
    loss, ce, kl = trades_loss(target, logits, y, beta=2.0)
    assert kl.item() == pytest.approx(reference.mean().item(), rel=1e-6)
    assert ce.item() == pytest.approx(F.cross_entropy(target, y).item(), rel=1e-6)
    assert loss.item() == pytest.approx(ce.item() + 2.0 * kl.item(), rel=1e-6)
    smoothed = trades_loss(target, logits, y, beta=2.0, label_smoothing=0.1)[1]
    assert smoothed.item() == pytest.approx(
        F.cross_entropy(target, y, label_smoothing=0.1).item(), rel=1e-6
    )


def test_negative_eps_and_bad_combinations_are_config_errors():
    with pytest.raises(ConfigError, match="method.attack.*eps"):
        build_method("adversarial", small_model(), attack={"eps": -0.1})
    with pytest.raises(ConfigError, match="method.loss must be one of"):
        build_method("adversarial", small_model(), loss="mart")
    with pytest.raises(ConfigError, match="attack_ssl_weight > 0"):
        build_method("selfsup", small_model(), task_weight=0.0, attack={"eps": 0.1})
    with pytest.raises(ConfigError, match="valid choices"):
        build_method("selfsup", small_model(), pretext=["exemplar"])


def test_trades_attack_without_a_random_start_is_a_config_error():
    """At x' = x the KL and its gradient are 0 (see the objective test above): a TRADES attack
    from the clean image never moves, and TRADES silently becomes standard training."""
    no_start = [{"name": "fgsm", "eps": 0.1}, {"eps": 0.1, "random_start": False}]
    for attack in no_start:
        with pytest.raises(ConfigError, match="random_start"):
            build_method("adversarial", margin_model(), loss="trades", attack=attack)
    # what it guards against: the attack returns x itself and the KL term is 0
    madry = build_method("adversarial", margin_model(), attack={"name": "fgsm", "eps": 0.1})
    objective = trades_objective(madry.model(X_HALF))
    assert torch.equal(madry.attack(madry.model, X_HALF, Y0, objective=objective), X_HALF)
    for attack in no_start:  # Madry and eps = 0 need no random start
        build_method("adversarial", margin_model(), attack=attack)
    build_method("adversarial", margin_model(), loss="trades", attack={"eps": 0})


@pytest.mark.parametrize("key", ["attack", "val_attack"])
def test_targeted_training_or_validation_attack_is_a_config_error(key):
    """A targeted attack towards the true label makes examples easier, not harder."""
    with pytest.raises(ConfigError, match=f"method.{key}.targeted"):
        build_method("adversarial", margin_model(), **{key: {"eps": 0.1, "targeted": True}})


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
    trades.train()
    bn = trades.model.backbone.block2[0][1]
    before = bn.running_mean.clone()
    trades.clean_logits_for_attack(x)  # TRADES' attack target, also made in eval mode
    assert torch.equal(bn.running_mean, before) and bn.training
    # attack_in_eval_mode=false: Madry's original code, batch statistics in every attack pass
    batch_stats = build_method(
        "adversarial", small_model(), attack={"eps": 0.1, "steps": 3}, attack_in_eval_mode=False
    )
    batch_stats.train()
    bn = batch_stats.model.backbone.block2[0][1]
    before = bn.running_mean.clone()
    batch_stats.adversarial_examples(x, y, cross_entropy)
    assert not torch.equal(bn.running_mean, before) and bn.training


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
    from robustlab.run.builders import build_data

    datamodule = build_data(compose_train())
    datamodule.prepare_data()
    datamodule.setup(stage)
    loader = datamodule.train_dataloader() if stage == "fit" else datamodule.test_dataloader()
    xs, ys = zip(*loader, strict=True)
    x = torch.cat(xs)
    return (x.float() / 255 if x.dtype == torch.uint8 else x), torch.cat(ys)


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- hand-built cases
# A linear model whose logits are known in closed form makes every loss term computable by hand.
# Two pixels, two classes: logits = (m, −m) with margin m = 2·x0 − x1, so for label 0 the CE
# gradient is ∝ (−2, +1) and one FGSM step of 0.1 from (0.5, 0.5) lands on (0.4, 0.6).
FGSM = {"name": "fgsm", "eps": 0.1}
X_HALF, Y0 = torch.tensor([[[[0.5, 0.5]]]]), torch.tensor([0])


def margin_model() -> LinearClassifier:
    return LinearClassifier([[2.0, -1.0], [-2.0, 1.0]])


def sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t))


def two_class_kl(m_p: float, m_q: float) -> float:
    """KL(p ‖ q) for the two-class predictions with logits (m, −m)."""
    p, q = sigmoid(2 * m_p), sigmoid(2 * m_q)
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_madry_loss_pure_function_with_label_smoothing():
    adv = torch.tensor([[math.log(3.0), 0.0]])  # q = (3/4, 1/4)
    smoothed = madry_loss(adv, torch.tensor([0]), label_smoothing=0.2)
    # (1 − ε)·(−log q_y) + ε·mean_k(−log q_k)
    expected = 0.8 * math.log(4 / 3) + 0.2 * 0.5 * (math.log(4 / 3) + math.log(4))
    assert smoothed.item() == pytest.approx(expected)


def test_madry_training_loss_is_cross_entropy_at_the_attacked_point():
    method = build_method("adversarial", margin_model(), attack=FGSM)
    out = method.training_loss(X_HALF, Y0)
    # x_adv = (0.4, 0.6): margin 0.2, logits (0.2, −0.2), CE = log(1 + e^{−0.4})
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-0.4)))
    assert out.logits[0].tolist() == pytest.approx([0.5, -0.5])  # train/acc: clean prediction
    assert out.logs["acc_adv"].item() == 1.0
    # a larger ball crosses the boundary: x_adv = (0.2, 0.8), margin −0.4
    wide = build_method("adversarial", margin_model(), attack={"name": "fgsm", "eps": 0.3})
    out = wide.training_loss(X_HALF, Y0)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(0.8)))
    assert out.logs["acc_adv"].item() == 0.0
    # label smoothing applies to the adversarial CE: (1 − ε)·CE + ε·mean_k(−log q_k)
    smooth = build_method("adversarial", margin_model(), attack=FGSM, label_smoothing=0.2)
    log_q = [-math.log(1 + math.exp(-0.4)), -math.log(1 + math.exp(0.4))]
    expected = -(0.8 * log_q[0] + 0.2 * 0.5 * sum(log_q))
    assert smooth.training_loss(X_HALF, Y0).loss.item() == pytest.approx(expected)


def test_attack_objectives_madry_ce_and_trades_kl_to_the_fixed_clean_prediction():
    x_adv = torch.tensor([[[[0.4, 0.6]]]])  # margin 0.2; the clean margin is 0.5
    madry = build_method("adversarial", margin_model(), attack=FGSM)
    objective = madry.attack_objective(X_HALF, Y0, madry.clean_logits_for_attack(X_HALF))
    assert objective(madry.model, x_adv, Y0).item() == pytest.approx(math.log(1 + math.exp(-0.4)))

    trades = build_method("adversarial", margin_model(), loss="trades", attack={"eps": 0.1})
    clean = trades.clean_logits_for_attack(X_HALF)
    assert clean[0].tolist() == pytest.approx([0.5, -0.5])
    objective = trades.attack_objective(X_HALF, Y0, clean)
    value, grad = input_gradient(objective, trades.model, x_adv, Y0)
    # KL(p ‖ q) with p = f(x) the target: not KL(q ‖ p), and not zero (f(x') ≠ f(x))
    assert value.item() == pytest.approx(two_class_kl(0.5, 0.2), rel=1e-5)
    assert value.item() != pytest.approx(two_class_kl(0.2, 0.5), rel=1e-3)
    # with f(x) held fixed, ∇_x' KL = Wᵀ(q − p) = 2(q0 − p0)·(2, −1)
    d = sigmoid(0.4) - sigmoid(1.0)
    torch.testing.assert_close(grad.flatten(), torch.tensor([4 * d, -2 * d]))
    assert objective(trades.model, x_adv, torch.tensor([1])).item() == pytest.approx(value.item())
    # at x' = x the KL and its gradient vanish (hence TRADES' random start)
    value, grad = input_gradient(objective, trades.model, X_HALF, Y0)
    assert value.item() == pytest.approx(0.0, abs=1e-7) and grad.abs().max().item() < 1e-7


def _kl_to(clean_logits: torch.Tensor):
    """The TRADES attack objective written out: x' ↦ Σ_k p_k (log p_k − log q_k(x'))."""
    log_p = F.log_softmax(clean_logits.detach(), dim=1)

    def objective(model, x_adv, y):
        return (log_p.exp() * (log_p - F.log_softmax(model(x_adv), dim=1))).sum(dim=1)

    return objective


def test_trades_training_loss_attacks_the_kl_and_beta_weights_it():
    torch.manual_seed(0)
    weight = torch.randn(3, 4)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 1, 2, 2, generator=generator), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    attack = {"eps": 0.2, "steps": 3, "step_size": 0.1}
    outs = {}
    for beta in (1.0, 2.5):
        method = build_method(
            "adversarial", LinearClassifier(weight), loss="trades", trades_beta=beta, attack=attack
        )
        torch.manual_seed(7)  # the random start
        outs[beta] = method.training_loss(x, y)
    model = LinearClassifier(weight)
    clean = model(x).detach()
    torch.manual_seed(7)
    x_adv = pgd(model, x, y, eps=0.2, steps=3, step_size=0.1, objective=_kl_to(clean))
    torch.manual_seed(7)
    x_ce = pgd(model, x, y, eps=0.2, steps=3, step_size=0.1)  # Madry's objective instead
    ce = F.cross_entropy(clean, y).item()
    kl = _kl_to(clean)(model, x_adv, y).mean().item()
    assert outs[1.0].loss.item() == pytest.approx(ce + kl, rel=1e-5)
    assert outs[1.0].logs["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert outs[1.0].logs["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert (outs[2.5].loss - outs[1.0].loss).item() == pytest.approx(1.5 * kl, rel=1e-4)
    # the two objectives lead elsewhere here, so an attack on CE would give another loss
    kl_ce = _kl_to(clean)(model, x_ce, y).mean().item()
    assert abs(kl_ce - kl) > 1e-3


# ----------------------------------------------------------------------------- val/acc_pgd
def _validate(method, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Run a real Lightning validation over batches of two; returns the logged metrics."""
    trainer = quiet_cpu_trainer(devices=1)
    loader = DataLoader(TensorDataset(x, y), batch_size=2, shuffle=False)
    return trainer.validate(method, dataloaders=loader, verbose=False)[0]


def test_val_acc_pgd_is_measured_on_attacked_inputs():
    # predicts class 0 iff x0 > 0.5; batch 0 lies 0.05 from the boundary, batch 1 0.4 away
    def model():
        return LinearClassifier([[10.0, 0.0], [-10.0, 0.0]], bias=[-5.0, 5.0])

    x = torch.tensor([0.55, 0.45, 0.9, 0.1]).reshape(4, 1, 1, 1).repeat(1, 1, 1, 2)
    y = torch.tensor([0, 1, 0, 1])
    attack = {"eps": 0.1, "steps": 5, "step_size": 0.05}
    metrics = _validate(
        build_method("adversarial", model(), attack=attack, val_attack_batches=2), x, y
    )
    assert metrics["val/acc"] == 1.0
    assert metrics["val/acc_pgd"] == 0.5  # batch 0 broken, batch 1 out of reach
    first = build_method("adversarial", model(), attack=attack, val_attack_batches=1)
    assert _validate(first, x, y)["val/acc_pgd"] == 0.0
    none = build_method("adversarial", model(), attack=attack, val_attack_batches=0)
    assert "val/acc_pgd" not in _validate(none, x, y)
    weak = {"eps": 0.01, "steps": 2}  # val_attack replaces the training attack
    small = build_method(
        "adversarial", model(), attack=attack, val_attack=weak, val_attack_batches=2
    )
    assert _validate(small, x, y)["val/acc_pgd"] == 1.0


def test_validation_attack_leaves_the_training_random_stream_alone():
    """val/acc_pgd's random starts come from a generator seeded by the batch index: the same
    attack every epoch, and validation settings cannot change the training draws after it."""
    x = torch.rand(4, 1, 1, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 1])
    states, metrics = {}, {}
    for batches in (0, 2):
        method = build_method(
            "adversarial", margin_model(), attack={"eps": 0.3}, val_attack_batches=batches
        )
        torch.manual_seed(0)
        metrics[batches] = [_validate(method, x, y) for _ in range(2)]
        states[batches] = torch.get_rng_state()
    assert torch.equal(states[0], states[2])
    first, second = metrics[2]
    assert first["val/acc_pgd"] == second["val/acc_pgd"]


# ----------------------------------------------------------------------------- self-supervision
def rotation_ssl(head, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
    """Rotation pretext loss written out with torch.rot90, per example: the mean over the four
    rotations of CE(head(flatten(rot_k x)), k), or CE for one rotation ``k`` (B,) per image."""
    if k is not None:
        views = torch.stack(
            [torch.rot90(xi, int(ki), dims=(-2, -1)) for xi, ki in zip(x, k, strict=True)]
        )
        return F.cross_entropy(head(views.flatten(1)), k, reduction="none")
    losses = [
        F.cross_entropy(
            head(torch.rot90(x, r, dims=(-2, -1)).flatten(1)),
            torch.full((len(x),), r),
            reduction="none",
        )
        for r in range(4)
    ]
    return torch.stack(losses).mean(dim=0)


def fgsm_by_hand(objective, x: torch.Tensor, eps: float) -> torch.Tensor:
    """clip(x + ε·sign(∇ₓ Σ objective(x)), 0, 1)."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x).sum(), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


SSL_X = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(3))
SSL_Y = torch.tensor([0, 1, 2, 0, 1, 2])


def ssl_method(**kwargs):
    torch.manual_seed(0)
    weight = torch.randn(3, 4)
    kwargs.setdefault("attack", {"name": "fgsm", "eps": 0.2})
    kwargs.setdefault("pretext", "rotation")
    return build_method("selfsup", LinearClassifier(weight), **kwargs)


def ce_of(method):
    return lambda z: F.cross_entropy(method.model(z), SSL_Y, reduction="none")


@pytest.mark.parametrize("ssl_inputs", ["adversarial", "clean", "both"])
def test_selfsup_loss_is_task_plus_ssl_on_the_configured_inputs(ssl_inputs):
    method = ssl_method(ssl_weight=0.5, ssl_inputs=ssl_inputs)
    head = method.pretext_heads["rotation"]
    x_adv = fgsm_by_hand(ce_of(method), SSL_X, 0.2)
    ssl_adv, ssl_clean = rotation_ssl(head, x_adv).mean(), rotation_ssl(head, SSL_X).mean()
    assert abs(ssl_adv - ssl_clean).item() > 1e-3  # the choice of inputs shows in the number
    ssl = {"adversarial": ssl_adv, "clean": ssl_clean, "both": 0.5 * (ssl_adv + ssl_clean)}
    expected = F.cross_entropy(method.model(x_adv), SSL_Y) + 0.5 * ssl[ssl_inputs]
    out = method.training_loss(SSL_X, SSL_Y)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.logs["ssl_loss"].item() == pytest.approx(ssl[ssl_inputs].item(), rel=1e-6)


def test_selfsup_weights_scale_exactly_their_terms():
    def loss(**kwargs):
        return ssl_method(**kwargs).training_loss(SSL_X, SSL_Y).loss.item()

    method = ssl_method()
    head = method.pretext_heads["rotation"]
    x_adv = fgsm_by_hand(ce_of(method), SSL_X, 0.2)
    ssl = rotation_ssl(head, x_adv).mean().item()
    ce = F.cross_entropy(method.model(x_adv), SSL_Y).item()
    assert loss(ssl_weight=1.5) - loss(ssl_weight=0.5) == pytest.approx(ssl, rel=1e-5)
    assert loss(task_weight=3.0) - loss(task_weight=1.0) == pytest.approx(2 * ce, rel=1e-5)
    assert loss(ssl_weight=0.0) == pytest.approx(ce, rel=1e-6)


def test_selfsup_pretraining_trains_only_the_pretext_head():
    method = ssl_method(task_weight=0.0, ssl_weight=2.0, attack={"eps": 0})
    out = method.training_loss(SSL_X, SSL_Y)
    ssl = rotation_ssl(method.pretext_heads["rotation"], SSL_X).mean()
    assert out.loss.item() == pytest.approx(2 * ssl.item(), rel=1e-6)
    classifier = method.model.classifier.weight
    (grad,) = torch.autograd.grad(out.loss, classifier, allow_unused=True)
    assert grad is None or grad.abs().max().item() == 0.0
    torch.testing.assert_close(out.logits, method.model(SSL_X))


@pytest.mark.parametrize("weight", [0.0, 4.0])
def test_selfsup_attack_ascends_ce_plus_weighted_ssl(weight):
    method = ssl_method(ssl_weight=0.5, attack_ssl_weight=weight)
    head = method.pretext_heads["rotation"]

    def objective(z):
        return ce_of(method)(z) + weight * rotation_ssl(head, z)

    x_adv = fgsm_by_hand(objective, SSL_X, 0.2)
    if weight:  # the SSL term moves the attack: CE alone would land elsewhere
        assert not torch.equal(x_adv, fgsm_by_hand(ce_of(method), SSL_X, 0.2))
    expected = F.cross_entropy(method.model(x_adv), SSL_Y) + 0.5 * rotation_ssl(head, x_adv).mean()
    out = method.training_loss(SSL_X, SSL_Y)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_selfsup_adversarial_pretraining_attacks_the_ssl_loss_alone():
    method = ssl_method(task_weight=0.0, ssl_weight=1.0, attack_ssl_weight=1.0)
    head = method.pretext_heads["rotation"]
    x_adv = fgsm_by_hand(lambda z: rotation_ssl(head, z), SSL_X, 0.2)
    assert not torch.equal(x_adv, fgsm_by_hand(ce_of(method), SSL_X, 0.2))
    out = method.training_loss(SSL_X, SSL_Y)
    assert out.loss.item() == pytest.approx(rotation_ssl(head, x_adv).mean().item(), rel=1e-6)


def test_selfsup_with_trades_attacks_kl_plus_ssl():
    attack = {"eps": 0.2, "steps": 2, "step_size": 0.1}  # TRADES needs the random start
    method = ssl_method(
        loss="trades", trades_beta=3.0, ssl_weight=0.5, attack_ssl_weight=2.0, attack=attack
    )
    head = method.pretext_heads["rotation"]
    clean = method.model(SSL_X).detach()
    kl = _kl_to(clean)

    def objective(model, z, y):
        return kl(model, z, y) + 2.0 * rotation_ssl(head, z)

    torch.manual_seed(9)
    x_adv = pgd(method.model, SSL_X, SSL_Y, eps=0.2, steps=2, step_size=0.1, objective=objective)
    torch.manual_seed(9)
    x_kl = pgd(method.model, SSL_X, SSL_Y, eps=0.2, steps=2, step_size=0.1, objective=kl)
    assert not torch.equal(x_adv, x_kl)  # the SSL term moves the attack
    expected = (
        F.cross_entropy(clean, SSL_Y)
        + 3.0 * kl(method.model, x_adv, SSL_Y).mean()
        + 0.5 * rotation_ssl(head, x_adv).mean()
    )
    torch.manual_seed(9)
    out = method.training_loss(SSL_X, SSL_Y)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_random_pretext_labels_are_drawn_once_for_attack_and_loss():
    method = ssl_method(
        pretext_options={"rotation": {"views": "random"}}, ssl_weight=1.0, attack_ssl_weight=3.0
    )
    head = method.pretext_heads["rotation"]
    torch.manual_seed(11)
    k = torch.randint(4, (len(SSL_X), 1))[:, 0]
    assert len(set(k.tolist())) > 1

    def objective(z):
        return ce_of(method)(z) + 3.0 * rotation_ssl(head, z, k)

    x_adv = fgsm_by_hand(objective, SSL_X, 0.2)
    expected = F.cross_entropy(method.model(x_adv), SSL_Y) + rotation_ssl(head, x_adv, k).mean()
    torch.manual_seed(11)
    out = method.training_loss(SSL_X, SSL_Y)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def jigsaw_ssl(head, perms: torch.Tensor, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Jigsaw loss on a 2x2 grid of one-pixel patches, written out: cell j of the view holds
    pixel perms[l, j] of the image (row-major), CE(head(view), l) per example."""
    views = torch.gather(x.flatten(1), 1, perms[labels])
    return F.cross_entropy(head(views), labels, reduction="none")


def test_pretext_ensemble_averages_the_task_losses():
    method = ssl_method(pretext=["rotation", "jigsaw"], ssl_weight=1.0, attack={"eps": 0})
    heads, perms = method.pretext_heads, method.tasks["jigsaw"].perms
    torch.manual_seed(5)
    labels = torch.randint(24, (len(SSL_X),))  # the jigsaw labels the method will draw
    assert len(set(labels.tolist())) > 1
    rotation = rotation_ssl(heads["rotation"], SSL_X)
    jigsaw = jigsaw_ssl(heads["jigsaw"], perms, SSL_X, labels)
    expected = F.cross_entropy(method.model(SSL_X), SSL_Y) + 0.5 * (rotation + jigsaw).mean()
    torch.manual_seed(5)
    out = method.training_loss(SSL_X, SSL_Y)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.logs["ssl_loss"].item() == pytest.approx(0.5 * (rotation + jigsaw).mean().item())


def _constant_rotation_head(method) -> None:
    """The rotation head always predicts rotation 0 (zero weights, bias on class 0)."""
    head = method.pretext_heads["rotation"]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))


def test_selfsup_logs_the_pretext_accuracy_of_the_drawn_labels():
    method = ssl_method(ssl_weight=0.5)
    _constant_rotation_head(method)
    torch.manual_seed(11)
    labels = method.sample_pretext_labels(SSL_X)["rotation"]
    torch.manual_seed(11)  # training_loss draws the same labels from the global stream
    out = method.training_loss(SSL_X, SSL_Y)
    expected = (labels.reshape(-1) == 0).float().mean().item()
    assert 0 < expected < 0.5  # neither all right nor symmetric around 1/2
    assert out.logs["ssl_acc_rotation"].item() == pytest.approx(expected)
    # a head that does not predict one class: accuracy row by row over the B·4 views
    method = ssl_method(ssl_weight=0.5)
    task, head = method.tasks["rotation"], method.pretext_heads["rotation"]
    labels = method.sample_pretext_labels(SSL_X)["rotation"]
    views = pretext_logits(method.model, head, task, SSL_X, labels)
    expected = (views.argmax(1) == labels.reshape(-1)).float().mean().item()
    acc = method.ssl_loss(method.model, SSL_X, {"rotation": labels})[1]["rotation"]
    assert acc.item() == pytest.approx(expected)


def test_selfsup_pretext_labels_come_from_the_given_generator_only():
    method = ssl_method(pretext_options={"rotation": {"views": "random"}})  # drawn labels
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = method.sample_pretext_labels(SSL_X, torch.Generator().manual_seed(4))["rotation"]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)
    again = method.sample_pretext_labels(SSL_X, torch.Generator().manual_seed(4))["rotation"]
    assert torch.equal(first, again) and first.shape[0] == len(SSL_X)


def test_selfsup_zero_weights_drop_their_terms_from_the_logs():
    """ssl_weight=0: no pretext term at all; task_weight=0 (pre-training): no robust loss,
    only the pretext terms (and the classifier's accuracy)."""
    plain = ssl_method(ssl_weight=0.0).training_loss(SSL_X, SSL_Y)
    assert set(plain.logs) == {"acc_adv"}
    pretrain = ssl_method(task_weight=0.0, attack={"eps": 0}).training_loss(SSL_X, SSL_Y)
    assert set(pretrain.logs) == {"ssl_loss", "ssl_acc_rotation"}
    assert pretrain.loss.item() == pytest.approx(0.5 * pretrain.logs["ssl_loss"].item())


def test_selfsup_validation_logs_pretext_accuracy_with_labels_seeded_by_the_batch():
    method = ssl_method(pretext_options={"rotation": {"views": "random"}})  # drawn labels
    _constant_rotation_head(method)
    x = torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loader = DataLoader(TensorDataset(x, y), batch_size=5)  # batches of 5 and 3
    trainer = pl.Trainer(
        logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False
    )
    (logged,) = trainer.validate(method, dataloaders=loader, verbose=False)
    task = method.tasks["rotation"]
    accs = [
        (task.sample_labels(n, x.device, torch.Generator().manual_seed(b)) == 0).float().mean()
        for b, n in enumerate((5, 3))
    ]
    expected = (5 * accs[0] + 3 * accs[1]).item() / 8  # the mean over images, not batches
    assert logged["val/ssl_acc"] == pytest.approx(expected, abs=1e-6)


def test_val_acc_pgd_is_not_logged_when_the_validation_attack_has_eps_0():
    method = build_method("adversarial", small_model(), attack={"name": "fgsm", "eps": 0})
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 1, 2, 3])), batch_size=4)
    trainer = pl.Trainer(
        logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False
    )
    (logged,) = trainer.validate(method, dataloaders=loader, verbose=False)
    assert "val/acc" in logged and "val/acc_pgd" not in logged


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ssl_weight": -1.0}, "method.ssl_weight must be >= 0, got -1.0"),
        ({"task_weight": -0.5}, "method.task_weight must be >= 0, got -0.5"),
        ({"attack_ssl_weight": -2}, "method.attack_ssl_weight must be >= 0, got -2"),
        ({"ssl_inputs": "views"}, "method.ssl_inputs must be one of ['adversarial', "),
        (
            {"task_weight": 0.0, "ssl_weight": 0.0},
            "method.task_weight and method.ssl_weight are both 0: nothing to train",
        ),
        (
            {"task_weight": 0.0},
            "SSL pre-training (method.task_weight=0) with method.attack.eps > 0 needs "
            "method.attack_ssl_weight > 0 (the attack maximises the pretext loss), or set "
            "method.attack.eps=0 for standard pre-training",
        ),
    ],
)
def test_selfsup_bad_weights_are_config_errors_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError) as err:
        ssl_method(**kwargs)
    assert str(err.value).startswith(message)


def test_selfsup_default_ssl_weight_is_one_half():
    default = ssl_method().training_loss(SSL_X, SSL_Y).loss
    assert default.item() == pytest.approx(
        ssl_method(ssl_weight=0.5).training_loss(SSL_X, SSL_Y).loss.item(), rel=1e-7
    )
    assert default.item() != pytest.approx(
        ssl_method(ssl_weight=1.5).training_loss(SSL_X, SSL_Y).loss.item(), rel=1e-3
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attack": {"name": "cw"}}, "method.attack.name must be 'pgd' or 'fgsm' for training"),
        (
            {"attack": {"eps": 0.1, "targeted": True}},
            "method.attack.targeted must be false: a targeted attack towards the true label "
            "makes examples easier, not harder",
        ),
        ({"trades_beta": -0.5}, "method.trades_beta must be >= 0, got -0.5"),
        ({"val_attack_batches": -1}, "method.val_attack_batches must be an integer >= 0, got -1"),
        ({"val_attack_batches": 1.5}, "method.val_attack_batches must be an integer >= 0"),
        (
            {"loss": "trades", "attack": {"name": "fgsm", "eps": 1.0}},
            "method.loss=trades needs method.attack.name=pgd with random_start=true: the KL "
            "term and its gradient are 0 at the clean image, so an attack started there "
            "never moves",
        ),
    ],
)
def test_adversarial_config_errors_name_the_key_and_the_fix(kwargs, message):
    with pytest.raises(ConfigError) as err:
        build_method("adversarial", margin_model(), **kwargs)
    assert str(err.value).startswith(message)


def test_adversarial_boundary_values_are_accepted():
    for beta in (0.0, 0.5):  # β = 0 is plain CE on clean images
        build_method("adversarial", margin_model(), loss="trades", trades_beta=beta)
    # TRADES with ε = 0 needs no random start (standard training)
    build_method("adversarial", margin_model(), loss="trades", attack={"name": "fgsm", "eps": 0})
    build_method("adversarial", margin_model(), val_attack_batches=0)


def test_trades_default_beta_is_six():
    attack = {"eps": 0.2, "steps": 2, "step_size": 0.1}

    def loss(**kwargs):
        method = build_method("adversarial", margin_model(), loss="trades", attack=attack, **kwargs)
        torch.manual_seed(3)
        return method.training_loss(X_HALF, Y0)

    default, six = loss(), loss(trades_beta=6.0)
    assert default.loss.item() == pytest.approx(six.loss.item(), rel=1e-7)
    assert default.logs["kl"].item() > 1e-4  # β really weighs something here


def test_val_attack_batches_defaults_to_the_first_batch():
    def model():
        return LinearClassifier([[10.0, 0.0], [-10.0, 0.0]], bias=[-5.0, 5.0])

    x = torch.tensor([0.55, 0.45, 0.9, 0.1]).reshape(4, 1, 1, 1).repeat(1, 1, 1, 2)
    y = torch.tensor([0, 1, 0, 1])
    attack = {"eps": 0.1, "steps": 5, "step_size": 0.05}
    # only batch 0 (0.05 from the boundary, broken) is attacked: 0.5 if batch 1 counted too
    assert (
        _validate(build_method("adversarial", model(), attack=attack), x, y)["val/acc_pgd"] == 0.0
    )


def test_robust_loss_reports_clean_logits_and_the_trained_inputs():
    x = torch.tensor([[[[0.5, 0.5]]], [[[0.3, 0.9]]]])
    y = torch.tensor([0, 1])
    trades = build_method(
        "adversarial", margin_model(), loss="trades", attack={"eps": 0.1, "steps": 2}
    )
    torch.manual_seed(0)
    out = trades.training_loss(x, y)
    clean = margin_model()(x)
    torch.testing.assert_close(out.logits, clean)  # train/acc: clean accuracy
    assert out.inputs is x  # TRADES regularises f(x)
    torch.testing.assert_close(out.input_logits, clean)
    assert set(out.logs) == {"acc_adv", "ce", "kl"}
    smoothed = build_method(
        "adversarial",
        margin_model(),
        loss="trades",
        attack={"eps": 0.1, "steps": 2},
        label_smoothing=0.2,
    )
    torch.manual_seed(0)
    ce = F.cross_entropy(clean, y, label_smoothing=0.2).item()
    assert smoothed.training_loss(x, y).logs["ce"].item() == pytest.approx(ce, rel=1e-6)
    standard = build_method("adversarial", margin_model(), attack={"name": "fgsm", "eps": 0})
    out = standard.training_loss(x, y)
    assert out.inputs is x  # ε = 0: the batch itself, no attack call
    torch.testing.assert_close(out.logits, clean)
    torch.testing.assert_close(out.input_logits, clean)
    assert out.logs["acc_adv"].item() == pytest.approx((clean.argmax(1) == y).float().mean().item())


def test_trades_clean_logits_for_the_attack_follow_attack_in_eval_mode():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for in_eval in (True, False):
        method = build_method(
            "adversarial", small_model(), loss="trades", attack_in_eval_mode=in_eval
        )
        method.train()
        got = method.clean_logits_for_attack(x)
        method.model.train(not in_eval)
        with torch.no_grad():
            expected = method.model(x)
        torch.testing.assert_close(got, expected)
    # BatchNorm makes the two modes differ on this batch
    with torch.no_grad():
        assert not torch.allclose(method.model.train()(x), method.model.eval()(x))
