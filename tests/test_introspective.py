"""Introspective training (ICN, WINN; issue 12): losses and scores against hand-computed values,
the samplers, the pseudo-negative pool (capacity, ring order, resume), end-to-end fits from the
shell (both variants, and DDP with the pool equal on both ranks) and one-line config errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from robustlab.cli.train import train
from robustlab.errors import ConfigError
from robustlab.losses import (
    gradient_penalty,
    icn_evidence,
    kplus1_loss,
    one_vs_rest_loss,
    wasserstein_critic_loss,
    winn_loss,
    winn_score,
)
from robustlab.methods import build_method
from robustlab.methods.introspective import POOL_STATE, IntrospectiveTraining
from robustlab.methods.synthesis import (
    AdamSynthesisSettings,
    LangevinSettings,
    NegativePool,
    adam_synthesis,
    langevin,
)
from robustlab.models import build_classifier
from robustlab.run.checkpoints import load_checkpoint, load_classifier, load_module
from tests.helpers import (
    QUICK,
    InterruptAt,
    LinearClassifier,
    compose_train,
    results_of,
    run_app,
)

REPO = Path(__file__).resolve().parents[1]


def _log_softmax(row: list[float], index: int) -> float:
    return row[index] - math.log(sum(math.exp(v) for v in row))


# ------------------------------------------------------------------------------ losses
def test_kplus1_loss_is_real_ce_plus_weight_times_synthesised_class_ce():
    real = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0]])  # K = 2 classes + synthesised
    labels = torch.tensor([0, 1])
    negatives = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    ce = -(_log_softmax([2, 0, -1], 0) + _log_softmax([0.5, 1, 0], 1)) / 2
    neg = -(_log_softmax([0, 0, 1], 2) + _log_softmax([1, 0, 0], 2)) / 2
    loss, real_ce, negative = kplus1_loss(real, labels, negatives, negative_weight=1.0)
    assert real_ce.item() == pytest.approx(ce, rel=1e-6)
    assert negative.item() == pytest.approx(neg, rel=1e-6)
    assert loss.item() == pytest.approx(ce + neg, rel=1e-6)
    tripled, *_ = kplus1_loss(real, labels, negatives, negative_weight=3.0)
    assert (tripled - loss).item() == pytest.approx(2 * neg, rel=1e-6)
    # no pseudo-negatives: plain cross-entropy
    alone, *_ = kplus1_loss(real, labels, negatives[:0], negative_weight=3.0)
    assert alone.item() == pytest.approx(ce, rel=1e-6)


def test_one_vs_rest_negative_of_class_k_is_a_logistic_negative_for_k_only():
    real = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])
    negatives = torch.tensor([[1.0, 5.0, -2.0], [0.5, 0.0, 0.0]])
    classes = torch.tensor([0, 2])

    def softplus(v: float) -> float:
        return math.log1p(math.exp(v))

    ce = -(_log_softmax([2, -1, 0], 0) + _log_softmax([0, 1, 3], 2)) / 2
    positive = (softplus(-2.0) + softplus(-3.0)) / 2
    negative = (softplus(1.0) + softplus(0.0)) / 2  # logits 5.0 (class 1) play no part
    loss, real_ce, logistic = one_vs_rest_loss(real, labels, negatives, classes, 1.0)
    assert real_ce.item() == pytest.approx(ce, rel=1e-6)
    assert logistic.item() == pytest.approx(positive + negative, rel=1e-6)
    assert loss.item() == pytest.approx(ce + positive + negative, rel=1e-6)
    halved, *_ = one_vs_rest_loss(real, labels, negatives, classes, 0.5)
    assert (loss - halved).item() == pytest.approx(0.5 * (positive + negative), rel=1e-6)


def test_winn_loss_is_ce_plus_critic_weight_times_the_wgan_gp_critic_loss():
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    real_scores, fake_scores = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0, 0.5])
    penalty = torch.tensor(0.25)
    ce = -(_log_softmax([1, 0], 0) + _log_softmax([0, 2], 1)) / 2
    critic = (-0.5 / 3) - 2.0 + 10 * 0.25
    assert wasserstein_critic_loss(real_scores, fake_scores, penalty).item() == pytest.approx(
        critic
    )
    loss, real_ce, critic_loss = winn_loss(logits, labels, real_scores, fake_scores, penalty)
    assert real_ce.item() == pytest.approx(ce, rel=1e-6)
    assert critic_loss.item() == pytest.approx(critic, rel=1e-6)
    assert loss.item() == pytest.approx(ce + 0.01 * critic, rel=1e-6)
    heavier, *_ = winn_loss(logits, labels, real_scores, fake_scores, penalty, critic_weight=0.11)
    assert (heavier - loss).item() == pytest.approx(0.1 * critic, rel=1e-5)
    no_gp, *_ = winn_loss(logits, labels, real_scores, fake_scores, penalty, gp_weight=0.0)
    assert (loss - no_gp).item() == pytest.approx(0.01 * 10 * 0.25, rel=1e-5)


def test_gradient_penalty_equals_hand_computed_values():
    real = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    fake = torch.tensor([[0.0, 4.0], [1.0, -1.0]])
    mix = torch.tensor([0.5, 0.25])
    # a linear critic W(x) = w·x has gradient w everywhere: GP = (‖w‖ − 1)²
    w = torch.tensor([3.0, 4.0])
    linear = gradient_penalty(lambda x: x @ w, real, fake, mix)
    assert linear.item() == pytest.approx((5.0 - 1.0) ** 2)
    # W(x) = ½‖x‖² has gradient x̂ = mix·real + (1 − mix)·fake: (1.5, 2) and (1, −0.5)
    quadratic = gradient_penalty(lambda x: 0.5 * (x**2).sum(1), real, fake, mix)
    expected = ((2.5 - 1) ** 2 + (math.sqrt(1.25) - 1) ** 2) / 2
    assert quadratic.item() == pytest.approx(expected, rel=1e-6)
    # it is a loss: differentiable with respect to the critic's parameters
    weight = torch.tensor([3.0, 4.0], requires_grad=True)
    gradient_penalty(lambda x: x @ weight, real, fake, mix).backward()
    assert torch.allclose(weight.grad, 2 * (5.0 - 1.0) * torch.tensor([0.6, 0.8]))


def test_synthesis_scores_are_the_evidence_log_ratio_and_winns_score():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    classes = torch.tensor([1, 0])
    assert icn_evidence(logits, classes, "kplus1").tolist() == [1.5, -3.0]
    assert icn_evidence(logits, classes, "one_vs_rest").tolist() == [2.0, 0.0]
    critic, threshold = torch.tensor([0.3, -1.0]), 0.5
    ce = [-_log_softmax([1, 2, 0.5], 1), -_log_softmax([0, -1, 3], 0)]
    expected = [-(0.2 + 0.5 * ce[0]), -(1.5 + 0.5 * ce[1])]
    assert winn_score(logits, critic, classes, threshold).tolist() == pytest.approx(expected)


# ------------------------------------------------------------------------------ model
def test_resnet32_winn_has_32_weight_layers_and_no_batch_statistics():
    """31 convolutions + 1 linear layer; layer norm makes each image's output its own even in
    training mode (what the gradient penalty and per-image synthesis assume)."""
    torch.manual_seed(0)
    model = build_classifier("resnet32_winn", 10, 1, (0.5,), (0.25,)).train()
    modules = list(model.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in modules) == 31
    assert sum(isinstance(m, torch.nn.Linear) for m in modules) == 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x)[:1], model(x[:1]), atol=1e-5)
        assert model.features(x).shape == (3, 64)


# ------------------------------------------------------------------------------ samplers
def _linear_icn(form: str = "one_vs_rest") -> IntrospectiveTraining:
    weight = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-0.5, 0.5, 0.0, 2.0]])  # K = 2, 2x2 images
    return IntrospectiveTraining(LinearClassifier(weight), icn_form=form)


def _evidence(method: IntrospectiveTraining):
    def score(model, x, k):
        return icn_evidence(method.icn_logits(x), k, method.icn_form)

    return score


def test_langevin_step_is_half_the_step_size_times_the_evidence_gradient():
    method = _linear_icn()
    x = torch.full((2, 1, 2, 2), 0.5)
    classes = torch.tensor([0, 1])
    settings = LangevinSettings(steps=1, step_size=0.2, noise=0.0)
    out = langevin(_evidence(method), method, x, classes, settings, torch.Generator())
    weight = method.model.classifier.weight.detach()
    expected = (x.flatten(1) + 0.1 * weight[classes]).clamp(0, 1).view_as(x)
    assert torch.allclose(out, expected)


def test_langevin_run_raises_the_target_class_evidence_of_a_cnn():
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, 1, (0.5,), (0.25,), width=4)
    method = IntrospectiveTraining(model, icn_form="kplus1")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 16, 16, generator=generator)
    classes = torch.tensor([0, 1, 2, 0, 1, 2])
    settings = LangevinSettings(steps=30, step_size=0.5, noise=0.005, final_ratio=0.2)
    method.train()
    out = langevin(_evidence(method), method, x, classes, settings, generator)
    assert method.training and method.model.training  # the model's mode comes back
    assert all(p.grad is None for p in method.parameters())  # gradients w.r.t. pixels only
    assert out.min() >= 0 and out.max() <= 1
    method.eval()
    with torch.no_grad():
        before = icn_evidence(method.icn_logits(x), classes, "kplus1")
        after = icn_evidence(method.icn_logits(out), classes, "kplus1")
    assert bool((after > before + 0.2).all()), (before, after)


def test_schedule_anneals_step_and_noise_geometrically():
    steps = LangevinSettings(steps=3, step_size=0.4, noise=0.2, final_ratio=0.25).schedule()
    assert [s for s, _ in steps] == pytest.approx([0.4, 0.2, 0.1])
    assert [n for _, n in steps] == pytest.approx([0.2, 0.2 / math.sqrt(2), 0.1])


def test_adam_synthesis_stops_each_image_once_its_critic_value_is_near_the_threshold():
    # critic W(x) = mean pixel value; score −|W − thr|: image 0 starts at its threshold
    def score(model, x, k):
        state["distance"] = (x.flatten(1).mean(1) - threshold).abs().detach()
        return -(x.flatten(1).mean(1) - threshold).abs()

    state: dict = {}
    threshold = torch.tensor([0.5, 0.8])
    x = torch.full((2, 1, 2, 2), 0.5)
    settings = AdamSynthesisSettings(lr=0.01, max_steps=200, tolerance=1e-3)
    out, taken = adam_synthesis(
        score, torch.nn.Identity(), x, torch.zeros(2), settings, lambda: state["distance"]
    )
    assert torch.equal(out[0], x[0])  # never moved
    assert abs(out[1].mean().item() - 0.8) <= 1e-3 + 1e-6
    # Adam's first steps move every pixel by ≈ lr: about 30 steps from 0.5 to 0.8, then stop
    assert 25 <= taken <= 40


# ------------------------------------------------------------------------------ pool
def test_pool_is_a_ring_buffer_per_class_that_keeps_its_capacity():
    pool = NegativePool(num_classes=2, capacity=3)
    batch = lambda start: torch.arange(start, start + 4.0).view(2, 2, 1, 1, 1)  # noqa: E731
    pool.add(batch(0))  # class 0: 0, 1; class 1: 2, 3
    assert pool.filled.tolist() == [2, 2] and len(pool) == 4
    pool.add(batch(10))  # class 0: +10, 11 -> 1, 10, 11 kept (0 overwritten)
    assert pool.filled.tolist() == [3, 3] and pool.images.shape[:2] == (2, 3)
    assert pool.newest(0, 3).flatten().tolist() == [1.0, 10.0, 11.0]
    assert sorted(pool.images[1].flatten().tolist()) == [3.0, 12.0, 13.0]
    pool.add(torch.arange(100, 108.0).view(2, 4, 1, 1, 1))  # more than the capacity at once
    assert pool.newest(0, 3).flatten().tolist() == [101.0, 102.0, 103.0]
    assert pool.written.tolist() == [8, 8] and pool.filled.tolist() == [3, 3]
    images, classes = pool.sample(200, torch.Generator().manual_seed(0))
    values = images.flatten()
    assert set(values[classes == 0].tolist()) == {101.0, 102.0, 103.0}
    assert set(values[classes == 1].tolist()) == {105.0, 106.0, 107.0}
    restored = NegativePool(num_classes=2, capacity=3)
    restored.load_state_dict(pool.state_dict())
    assert torch.equal(restored.images, pool.images)
    assert torch.equal(
        restored.sample(5, torch.Generator().manual_seed(1))[0],
        pool.sample(5, torch.Generator().manual_seed(1))[0],
    )
    with pytest.raises(ConfigError, match="keep method.pool_capacity"):
        NegativePool(num_classes=2, capacity=4).load_state_dict(pool.state_dict())


# ------------------------------------------------------------------------------ the method
def test_kplus1_classifier_keeps_k_logits_and_the_step_trains_against_pool_negatives():
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, 1, (0.5,), (0.25,), width=4)
    method = build_method(
        "introspective",
        model,
        per_class=2,
        negative_fraction=0.5,
        langevin={"steps": 2},
    )
    x = torch.rand(4, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 0])
    assert method(x).shape == (4, 3)  # evaluation sees K logits; the K+1-th is a head
    out = method.training_objective((x, y))  # batch 0 of epoch 0: a synthesis round
    assert method.pool.filled.tolist() == [2, 2, 2]
    assert out.logs["negatives"].item() == 4  # rho / (1 - rho) * B = B
    assert out.logits.shape == (4, 3)
    out.loss.backward()
    assert method.negative_head.weight.grad is not None


def _fit_overrides(*extra: str) -> list[str]:
    return [
        "method=introspective",
        "method.per_class=3",
        "method.pool_capacity=5",
        "method.langevin.steps=3",
        "method.init=pool",
        "method.pictures_per_class=2",
        "data.batch_size=16",
        "model.width=4",
        *QUICK,
        "trainer.max_epochs=3",
        *extra,
    ]


class _Pool(pl.Callback):
    """The weights and the pool at the end of the fit."""

    def on_fit_end(self, trainer, pl_module):
        self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}
        self.pool = pl_module.pool.state_dict()


def test_pool_keeps_its_capacity_and_survives_a_resume_bit_for_bit(tmp_path):
    """3 epochs of 3 new images per class into a pool of 5: the ring wraps. A run interrupted
    in its last epoch and resumed equals the uninterrupted one: weights and pool."""
    full = _Pool()
    train(compose_train(*_fit_overrides()), tmp_path / "full", extra_callbacks=(full,))
    assert full.pool["filled"].tolist() == [5] * 10 and full.pool["written"].tolist() == [9] * 10
    saved = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")[POOL_STATE]
    assert torch.equal(saved["images"], full.pool["images"])
    run_dir = tmp_path / "interrupted"
    with pytest.raises(SystemExit):
        train(compose_train(*_fit_overrides()), run_dir, extra_callbacks=(InterruptAt(2, 1),))
    resumed = _Pool()
    train(compose_train(*_fit_overrides("resume=auto")), run_dir, extra_callbacks=(resumed,))
    assert torch.equal(resumed.pool["images"], full.pool["images"])
    assert torch.equal(resumed.pool["written"], full.pool["written"])
    for name, tensor in full.weights.items():
        assert torch.equal(resumed.weights[name], tensor), name
    # one picture per round: 10 class rows of 2 columns of 32 px (+1 px padding)
    pictures = sorted(p.name for p in (tmp_path / "full" / "pictures").iterdir())
    assert pictures == [f"pseudo_negatives_epoch00{e}.png" for e in range(3)]
    with Image.open(tmp_path / "full" / "pictures" / "pseudo_negatives_epoch002.png") as picture:
        assert picture.size == (2 * 33 + 1, 10 * 33 + 1)


def test_tiny_icn_fit_runs_from_the_shell_and_evaluates_as_a_k_class_classifier(tmp_path):
    proc = run_app(
        "train",
        *_fit_overrides("trainer.max_epochs=1", "suite=[]"),
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results_of(tmp_path)
    assert record["status"] == "ok" and 0 <= record["metrics"]["test/acc"] <= 1
    assert record["metrics"]["train/negatives"] == 16  # rho = 0.5: one per real image
    assert (tmp_path / "pictures" / "pseudo_negatives_epoch000.png").is_file()
    report = (tmp_path / "report.md").read_text()
    picture = "pictures/pseudo_negatives_epoch000.png"
    assert f"![{picture}]({picture})" in report
    classifier = load_classifier(tmp_path)  # the K+1-th logit is a head beside the classifier
    assert classifier(torch.rand(2, 1, 32, 32)).shape == (2, 10)


class PoolRecorder(IntrospectiveTraining):
    """Writes its pool to ``<run dir>/pool_rank<r>.pt`` at the end of the fit."""

    def on_fit_end(self) -> None:
        torch.save(self.pool.state_dict(), self.run_folder() / f"pool_rank{self.global_rank}.pt")


def test_tiny_winn_fit_under_ddp_splits_the_synthesis_and_holds_the_same_pool(tmp_path):
    """Two processes (gloo): rank 0 synthesises 2 images of every class, rank 1 one; both end
    with the same pool of all 3. Also WINN end to end from the shell, its critic exported."""
    proc = run_app(
        "train",
        *_fit_overrides(
            "method.name=tests.test_introspective:PoolRecorder",
            "method.variant=winn",
            "method.winn.max_steps=4",
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            "suite=[]",
        ),
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results_of(tmp_path)
    assert record["status"] == "ok" and 0 <= record["metrics"]["test/acc"] <= 1
    assert record["metrics"]["train/gp"] >= 0 and "train/wasserstein" in record["metrics"]
    pools = [torch.load(tmp_path / f"pool_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(pools[0]["images"], pools[1]["images"])
    assert pools[0]["filled"].tolist() == [3] * 10
    # rank 0 made images 0 and 1 of each class, rank 1 image 2: from other noise
    images = pools[0]["images"]
    assert not torch.equal(images[:, 0], images[:, 2])
    critic = load_module(tmp_path, "critic")
    assert critic.in_features == 16 and critic.out_features == 1


# ------------------------------------------------------------------------------ bad settings
@pytest.mark.parametrize(
    "override, message",
    [
        ("method.langevin.step_size=-0.1", "method.langevin.step_size must be > 0"),
        ("method.pool_capacity=0", "method.pool_capacity must be an integer >= 1"),
        ("method.variant=gan", "method.variant must be one of ['icn', 'winn'], got 'gan'"),
    ],
)
def test_bad_settings_are_one_line_errors_with_exit_2(tmp_path, override, message):
    proc = run_app(
        "train",
        "method=introspective",
        override,
        "data=mnist",  # never read: the check comes first
        f"data.root={tmp_path}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize(
    "options, message",
    [
        ({"negative_fraction": 1.0}, "negative_fraction must be in [0, 1)"),
        ({"variant": "winn", "negative_fraction": 0.0}, "set method.negative_fraction > 0"),
        ({"icn_form": "softmax"}, "method.icn_form must be one of"),
        ({"langevin": {"stepz": 3}}, "method.langevin has unknown key(s) ['stepz']"),
        ({"winn": {"max_steps": 0}}, "method.winn.max_steps must be an integer >= 1"),
        ({"synthesis_every": 0}, "method.synthesis_every must be an integer >= 1"),
    ],
)
def test_out_of_range_settings_are_config_errors(options, message):
    model = build_classifier("small_cnn", 3, 1, (0.5,), (0.25,), width=4)
    with pytest.raises(ConfigError) as error:
        build_method("introspective", model, **options)
    assert message in str(error.value)


@pytest.mark.parametrize("variant, form", [("icn", "kplus1"), ("icn", "one_vs_rest"), ("winn", "")])
def test_the_method_feeds_each_loss_the_right_logits_classes_and_critic_values(variant, form):
    """In eval mode (no batch statistics) the method's one joint forward of real images and
    pseudo-negatives gives exactly the pure loss of separate forwards."""
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, 1, (0.5,), (0.25,), width=4)
    options = {"variant": variant, "icn_form": form or "kplus1", "negative_weight": 0.7}
    method = build_method("introspective", model, **options).eval()
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    negatives, classes = torch.rand(3, 1, 16, 16), torch.tensor([2, 0, 1])
    out = method.introspective_loss(x, y, negatives, classes, torch.Generator().manual_seed(3))
    if variant == "winn":
        mix = torch.rand(3, generator=torch.Generator().manual_seed(3))
        penalty = gradient_penalty(method.critic_values, x[:3], negatives, mix)
        logits, real_scores = method.logits_and_extra(x)
        expected, *_ = winn_loss(logits, y, real_scores, method.critic_values(negatives), penalty)
    elif form == "kplus1":
        expected, *_ = kplus1_loss(
            method.icn_logits(x), y, method.icn_logits(negatives), negative_weight=0.7
        )
        assert method.icn_logits(x).shape == (4, 4)
    else:
        expected, *_ = one_vs_rest_loss(method(x), y, method(negatives), classes, 0.7)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logits.shape == (4, 3)
