"""mixup and CutMix (``method=mixup|cutmix``, robustlab.methods.sample_mixing): the mixed loss
by hand, CutMix's λ as the pasted share, seeded draws, train/acc against the dominant label,
and tiny runs from the shell."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from robustlab.cli.train import train
from robustlab.errors import ConfigError
from robustlab.losses import dominant_labels, mixed_cross_entropy
from robustlab.methods import build_method
from robustlab.methods.sample_mixing import CutMix, Mixup, cutmix_box
from robustlab.run.checkpoints import load_checkpoint
from tests.helpers import (
    QUICK,
    LinearClassifier,
    compose_train,
    quiet_cpu_trainer,
    results_of,
    run_app,
)

FROZEN = {"name": "sgd", "lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0}


def log_softmax_by_hand(row: list[float]) -> list[float]:
    total = math.log(sum(math.exp(v) for v in row))
    return [v - total for v in row]


def test_mixed_cross_entropy_is_the_lambda_weighted_ce_of_both_labels_by_hand():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    a, b = torch.tensor([0, 2]), torch.tensor([1, 1])
    log_p = [log_softmax_by_hand(row) for row in logits.tolist()]
    lam = 0.3
    by_hand = (-lam * log_p[0][0] - (1 - lam) * log_p[0][1]) / 2
    by_hand += (-lam * log_p[1][2] - (1 - lam) * log_p[1][1]) / 2
    assert float(mixed_cross_entropy(logits, a, b, lam)) == pytest.approx(by_hand, rel=1e-6)
    per_row = torch.tensor([0.9, 0.2])
    expected = (-0.9 * log_p[0][0] - 0.1 * log_p[0][1] - 0.2 * log_p[1][2] - 0.8 * log_p[1][1]) / 2
    assert float(mixed_cross_entropy(logits, a, b, per_row)) == pytest.approx(expected, rel=1e-6)
    assert float(mixed_cross_entropy(logits, a, b, 1.0)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, a))
    )
    assert torch.equal(dominant_labels(a, b, 0.5), a) and torch.equal(dominant_labels(a, b, 0.4), b)
    # label smoothing s on both terms: CE_s(z, k) = −(1 − s)·log p_k − (s / K)·Σ_c log p_c
    s, k = 0.3, 3

    def smoothed(row: list[float], label: int) -> float:
        return -(1 - s) * row[label] - s / k * sum(row)

    expected = (lam * smoothed(log_p[0], 0) + (1 - lam) * smoothed(log_p[0], 1)) / 2
    expected += (lam * smoothed(log_p[1], 2) + (1 - lam) * smoothed(log_p[1], 1)) / 2
    assert float(mixed_cross_entropy(logits, a, b, lam, label_smoothing=s)) == pytest.approx(
        expected, rel=1e-6
    )


def constant_rows(n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i is the flat image ``(i + 1) / 10``, label ``i % 3``."""
    x = ((torch.arange(n, dtype=torch.float32) + 1) / 10).view(n, 1, 1, 1)
    return x.expand(n, 1, size, size).clone(), torch.arange(n) % 3


def method(name: str, size: int = 16, **options):
    weight = 0.1 * torch.randn(3, size * size, generator=torch.Generator().manual_seed(0))
    scheduler = {"name": "constant"}
    return build_method(
        name, LinearClassifier(weight), optimizer=FROZEN, scheduler=scheduler, **options
    )


def test_mixup_mixes_images_with_beta_lambda_and_trains_both_labels():
    mixup = method("mixup", alpha=1.0)
    x, y = constant_rows()
    step = next(i for i in range(50) if 0.3 < mixup.mix(x, y, mixup.draws(i)).lam < 0.7)
    mixed = mixup.mix(x, y, mixup.draws(step))
    rng = np.random.default_rng(mixup.draws(step).bit_generator.seed_seq)
    rng.random()  # the apply draw
    lam = rng.beta(1.0, 1.0)
    partner = torch.as_tensor(rng.permutation(8))
    assert float(mixed.lam) == pytest.approx(lam)
    assert torch.allclose(mixed.images, lam * x + (1 - lam) * x[partner])
    assert torch.equal(mixed.labels_b, y[partner]) and not torch.equal(partner, torch.arange(8))
    dominant = dominant_labels(mixed.labels_a, mixed.labels_b, mixed.lam)
    out = mixup.training_objective((mixed.images, dominant, mixed))
    logits = mixup(mixed.images)
    ce = torch.nn.functional.cross_entropy
    expected = lam * ce(logits, y) + (1 - lam) * ce(logits, y[partner])
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(out.loss) != pytest.approx(float(ce(logits, y)), rel=1e-3)
    assert float(out.loss) != pytest.approx(float(ce(logits, y[partner])), rel=1e-3)
    lams = [float(mixup.mix(x, y, mixup.draws(i)).lam) for i in range(400)]
    assert abs(np.mean(lams) - 0.5) < 0.05 and abs(np.var(lams) - 1 / 12) < 0.02  # U(0, 1)


def test_cutmix_lambda_is_the_share_of_the_image_left_after_pasting():
    """Rows are flat and distinct, so every pixel tells its source: λ equals the share of each
    row's own pixels, the rest are its partner's, and 1 − λ the box area over H·W."""
    cutmix = method("cutmix", alpha=1.0, prob=1.0)
    x, y = constant_rows(n=8, size=16)
    clipped = 0
    for batch_idx in range(40):
        mixed = cutmix.mix(x, y, cutmix.draws(batch_idx))
        rng = np.random.default_rng(cutmix.draws(batch_idx).bit_generator.seed_seq)
        rng.random()  # the apply draw
        lam0 = rng.beta(1.0, 1.0)
        partner = torch.as_tensor(rng.permutation(8))
        centre = (int(rng.integers(16)), int(rng.integers(16)))
        assert torch.equal(mixed.labels_b, y[partner])
        for i in torch.nonzero(partner != torch.arange(8)).flatten().tolist():
            own = mixed.images[i] == x[i]
            assert float(mixed.lam) == pytest.approx(float(own.float().mean()), abs=1e-6)
            assert torch.equal(mixed.images[i][~own], x[partner[i]][~own])
        box = cutmix_box(16, 16, lam0, centre)
        assert float(mixed.lam) == pytest.approx(1 - box.area / 256)
        side = int(16 * math.sqrt(1 - lam0))
        clipped += box.area < side * side
    assert clipped > 0  # boxes cut at the border occurred


def test_cutmix_box_sides_and_clipping():
    box = cutmix_box(32, 32, 0.75, (16, 16))  # sqrt(1 - 0.75) = 1/2: a 16 x 16 box
    assert (box.top, box.bottom, box.left, box.right) == (8, 24, 8, 24) and box.area == 256
    corner = cutmix_box(32, 32, 0.75, (0, 31))
    assert (corner.top, corner.bottom, corner.left, corner.right) == (0, 8, 23, 32)
    assert cutmix_box(32, 32, 1.0, (5, 5)).area == 0


def test_mixing_draws_are_seeded_per_step_and_prob_zero_is_plain_erm():
    x, y = constant_rows()
    a, b = method("cutmix", seed=1, prob=1.0), method("cutmix", seed=1, prob=1.0)
    first = a.mix(x, y, a.draws(0))
    assert torch.equal(first.images, b.mix(x, y, b.draws(0)).images)  # seeded
    assert not torch.equal(first.images, a.mix(x, y, a.draws(1)).images)  # per step
    other = method("cutmix", seed=2, prob=1.0)
    assert not torch.equal(first.images, other.mix(x, y, other.draws(0)).images)
    plain = method("mixup", prob=0.0)
    unmixed = plain.mix(x, y, plain.draws(0))
    assert float(unmixed.lam) == 1.0 and torch.equal(unmixed.images, x)
    with pytest.raises(ConfigError, match="method.alpha"):
        method("mixup", alpha=-1.0)
    with pytest.raises(ConfigError, match="method.prob"):
        method("cutmix", prob=1.5)


def test_train_acc_counts_the_dominant_label_of_the_mixed_batch():
    """A real fit of one batch (learning rate 1e-12): ``train/loss`` is the mixed loss and
    ``train/acc`` the accuracy of the mixed images' predictions against the dominant label."""
    x, y = constant_rows(n=12, size=4)
    x = x + 0.05 * torch.randn(12, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1, 0, 0, 1, 2])
    for name, cls in (("mixup", Mixup), ("cutmix", CutMix)):
        model = method(name, size=4, seed=3, prob=1.0)
        assert isinstance(model, cls)
        trainer = quiet_cpu_trainer(max_epochs=1, limit_val_batches=0)
        trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=12))
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        fresh = method(name, size=4, seed=3, prob=1.0)  # epoch 0 (the fitted one is past it)
        mixed = fresh.mix(x, y, fresh.draws(0))
        logits = fresh(mixed.images)
        dominant = dominant_labels(mixed.labels_a, mixed.labels_b, mixed.lam)
        accuracy = float((logits.argmax(1) == dominant).float().mean())
        loss = mixed_cross_entropy(logits, mixed.labels_a, mixed.labels_b, mixed.lam)
        assert logged["train/acc"] == pytest.approx(accuracy), name
        assert logged["train/loss_epoch"] == pytest.approx(float(loss), rel=1e-5), name
        assert logged["train/mix_lambda"] == pytest.approx(float(mixed.lam)), name
        assert 0 < float(mixed.lam) < 1, name


def test_mixup_and_cutmix_train_from_the_shell(tmp_path):
    proc = run_app(
        "train",
        "-m",
        "method=mixup,cutmix",
        "suite=[]",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, name in enumerate(("mixup", "cutmix")):
        results = results_of(tmp_path / "sweep" / str(job))
        assert results["status"] == "ok" and results["method"] == name
        assert 0 < results["metrics"]["train/mix_lambda"] <= 1  # cutmix mixes half the batches
        assert results["config"]["method"]["seed"] == results["seed"]
        assert "test/acc" in results["metrics"]


def test_cutmix_with_a_policy_resumed_ends_where_an_uninterrupted_run_does(tmp_path):
    """The mixing draws (seed, epoch, batch index) and the policy draws (seed, epoch, step) are
    the same after a resume: the final weights equal an uninterrupted run's bit for bit (a
    constant learning rate, since a cosine schedule depends on max_epochs)."""
    run = [
        "data=digits",
        "model=small_cnn",
        "model.width=8",
        "method=cutmix",
        "method.prob=1.0",
        "method.scheduler.name=constant",
        "data.augment.policy=trivialaugment",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "test=false",
        "suite=[]",
    ]
    part = tmp_path / "part"
    train(compose_train(*run, "trainer.max_epochs=2"), tmp_path / "full")
    train(compose_train(*run), part)
    train(compose_train(*run, "trainer.max_epochs=2", "resume=auto"), part)
    weights = load_checkpoint(part / "checkpoints" / "last.ckpt")["state_dict"]
    reference = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    assert weights.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(weights[name], tensor), name
