"""Stability training (Zheng et al., CVPR 2016): losses, the method, and the feature-distance
suites (near-duplicate detection, similar-image ranking)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.cli.train import train
from robustlab.errors import ConfigError
from robustlab.losses import (
    embedding_stability,
    random_triplets,
    stability_kl,
    triplet_ranking_loss,
)
from robustlab.methods import build_method
from robustlab.methods.stability import StabilityTraining
from robustlab.models import build_classifier
from robustlab.suites.base import Case
from robustlab.suites.distance_histograms import (
    average_precision,
    distance_histogram,
    precision_at_recall,
    roc_auc,
)
from robustlab.suites.near_duplicate import NearDuplicateSuite
from robustlab.suites.similar_ranking import SimilarRankingSuite, ranking_correct
from tests.helpers import LinearClassifier, compose_train


# ------------------------------------------------------------------------------ losses
def test_stability_kl_hand_computed():
    # p = softmax([0, ln 3]) = (1/4, 3/4); q = softmax([0, 0]) = (1/2, 1/2)
    clean = torch.tensor([[0.0, math.log(3.0)]])
    noisy = torch.tensor([[0.0, 0.0]])
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # 0.130812...
    assert stability_kl(clean, noisy).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1308120, abs=1e-6)
    # the batch mean of two examples, one of them identical: half the KL
    both = stability_kl(torch.cat([clean, noisy]), torch.cat([noisy, noisy]))
    assert both.item() == pytest.approx(expected / 2, abs=1e-6)
    # direction matters: KL(q || p) = ½ ln(½/¼) + ½ ln(½/¾) ≠ KL(p || q)
    reverse = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert stability_kl(noisy, clean).item() == pytest.approx(reverse, abs=1e-6)


def test_stability_kl_is_zero_for_identical_inputs_and_shift_invariant():
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    assert stability_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert stability_kl(logits, logits + 5.0).item() == pytest.approx(0.0, abs=1e-6)


def test_stability_kl_gradient_follows_detach():
    clean = torch.tensor([[0.0, 1.0, -1.0]], requires_grad=True)
    noisy = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    stability_kl(clean.detach(), noisy).backward()
    assert clean.grad is None
    # d KL / d noisy_logits = q − p
    p, q = F.softmax(clean.detach(), 1), F.softmax(noisy.detach(), 1)
    torch.testing.assert_close(noisy.grad, q - p)
    noisy.grad = None
    stability_kl(clean, noisy).backward()
    assert clean.grad is not None and clean.grad.abs().sum() > 0


def test_embedding_and_triplet_losses_hand_computed():
    assert embedding_stability(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])).item() == 5.0
    a, p = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    # max(0, 0.5 + 1 − 2) = 0 ; max(0, 0.5 + 1 − 1.2) = 0.3
    assert triplet_ranking_loss(a, p, torch.tensor([[0.0, 2.0]]), 0.5).item() == 0.0
    loss = triplet_ranking_loss(a, p, torch.tensor([[0.0, 1.2]]), 0.5)
    assert loss.item() == pytest.approx(0.3, abs=1e-6)


def test_random_triplets_respect_classes():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    a, p, n = random_triplets(labels, torch.Generator().manual_seed(0))
    assert a.tolist() == [0, 1, 3, 4, 5]  # class 1 has a single example: no positive
    assert (labels[a] == labels[p]).all() and (a != p).all()
    assert (labels[a] != labels[n]).all()
    assert random_triplets(torch.tensor([1, 1]))[0].numel() == 0  # no negative available


# ------------------------------------------------------------------------------ the method
def _method(**kwargs) -> StabilityTraining:
    torch.manual_seed(0)
    model = build_classifier(
        "small_cnn", num_classes=3, in_channels=1, mean=(0.5,), std=(0.25,), width=4
    )
    return build_method("stability", model, **kwargs)


def _param_grads(method: StabilityTraining, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in method.model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, retain_graph=True)


@pytest.mark.parametrize("joint_forward", [True, False])
def test_method_loss_equals_task_plus_alpha_kl_and_detaches_clean(joint_forward):
    method = _method(alpha=0.7, sigma=0.3, detach_clean=True, joint_forward=joint_forward)
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    torch.manual_seed(5)
    out = method.training_loss(x, y)
    torch.manual_seed(5)
    x_noisy = x + 0.3 * torch.randn_like(x)  # the same draw, unclipped
    if joint_forward:
        logits, logits_noisy = method.model(torch.cat([x, x_noisy])).chunk(2)
    else:
        logits, logits_noisy = method.model(x), method.model(x_noisy)
    task = F.cross_entropy(logits, y)
    detached = task + 0.7 * stability_kl(logits.detach(), logits_noisy)
    attached = task + 0.7 * stability_kl(logits, logits_noisy)
    assert out.loss.item() == pytest.approx(detached.item(), rel=1e-5)
    assert out.logs["stab_loss"].item() > 1e-4
    g_out, g_det, g_att = (_param_grads(method, v) for v in (out.loss, detached, attached))
    for a, b in zip(g_out, g_det, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert max((a - b).abs().max().item() for a, b in zip(g_out, g_att, strict=True)) > 1e-6


def test_method_without_detach_matches_attached_gradient():
    method = _method(alpha=0.7, sigma=0.3, detach_clean=False)
    x, y = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(3)
    out = method.training_loss(x, y)
    torch.manual_seed(3)
    x_noisy = x + 0.3 * torch.randn_like(x)
    logits, logits_noisy = method.model(torch.cat([x, x_noisy])).chunk(2)
    attached = F.cross_entropy(logits, y) + 0.7 * stability_kl(logits, logits_noisy)
    for a, b in zip(_param_grads(method, out.loss), _param_grads(method, attached), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_zero_noise_gives_zero_stability_loss_and_erm_loss():
    method = _method(alpha=1.0, sigma=0.0)
    method.eval()  # BatchNorm in eval: the two halves are processed identically
    x, y = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    out = method.training_loss(x, y)
    assert out.logs["stab_loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert out.loss.item() == pytest.approx(F.cross_entropy(method.model(x), y).item(), rel=1e-5)


# ------------------------------------------------------------------------------ hand-built cases
# A linear model (features = the flattened pixels, no BatchNorm) on 8x8 images: every term of
# the loss, and x' for every perturbation, can be written out independently of the method.
LIN_X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
LIN_Y = torch.tensor([0, 1, 2, 0, 1, 2])


def _linear(**kwargs) -> StabilityTraining:
    torch.manual_seed(0)
    weight = 0.5 * torch.randn(3, 64)
    return build_method("stability", LinearClassifier(weight), **kwargs)


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8)


def jpeg_by_hand(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image quantised to uint8, JPEG-encoded at ``quality`` by libjpeg and decoded."""
    from torchvision.io import decode_jpeg, encode_jpeg

    images = [decode_jpeg(encode_jpeg(image, quality=quality)) for image in _uint8(x)]
    return torch.stack(images).float() / 255


def thumbnail_by_hand(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Box-average down to scale·H, bilinear (half-pixel centres) back up to H."""
    h = x.shape[-1]
    small = F.interpolate(x, size=(round(h * scale),) * 2, mode="area")
    return F.interpolate(small, size=(h, h), mode="bilinear", align_corners=False)


def crops_by_hand(x: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The four corner (H−k)² windows, each resized bilinearly back to H × H."""
    h = x.shape[-1]
    return [
        F.interpolate(x[..., t : t + h - k, s : s + h - k], size=(h, h), mode="bilinear")
        for t in (0, k)
        for s in (0, k)
    ]


def shifts_by_hand(x: torch.Tensor, k: int) -> list[torch.Tensor]:
    """Content moved by (±k, ±k) pixels, zeros shifted in: out[i, j] = x[i − dy, j − dx]."""
    h = x.shape[-1]
    padded = F.pad(x, (k, k, k, k))
    return [
        padded[..., k - dy : k - dy + h, k - dx : k - dx + h] for dy in (-k, k) for dx in (-k, k)
    ]


def _which(x_perturbed: torch.Tensor, candidates: list[torch.Tensor]) -> list[int]:
    """Per image, the index of the candidate it equals (to 1e-5); fails if it equals none."""
    errors = torch.stack([(x_perturbed - c).flatten(1).abs().amax(1) for c in candidates])
    best = errors.min(dim=0)
    assert best.values.max().item() < 1e-5, best.values
    return best.indices.tolist()


def test_gaussian_perturbation_is_x_plus_sigma_noise_clipped_only_when_asked():
    x = torch.full((4, 1, 8, 8), 0.02)
    for clip in (False, True):
        method = _linear(sigma=0.3, clip=clip)
        torch.manual_seed(2)
        x_perturbed = method.perturb(x)
        torch.manual_seed(2)
        expected = x + 0.3 * torch.randn_like(x)
        torch.testing.assert_close(x_perturbed, expected.clamp(0, 1) if clip else expected)
    assert (expected < 0).any()  # so clip=false really leaves x' outside [0, 1]


@pytest.mark.parametrize("quality", [90, 10])
def test_jpeg_perturbation_is_the_jpeg_round_trip_at_the_level(quality):
    method = _linear(perturbation="jpeg", levels={"jpeg": [quality]})
    x_perturbed = method.perturb(LIN_X)
    torch.testing.assert_close(x_perturbed, jpeg_by_hand(LIN_X, quality), atol=1e-6, rtol=0)
    assert (x_perturbed - LIN_X).abs().mean() > 0.01


def test_jpeg_levels_are_drawn_per_image():
    method = _linear(perturbation="jpeg", levels={"jpeg": [10, 90]})
    torch.manual_seed(0)
    x = LIN_X.repeat(3, 1, 1, 1)
    chosen = _which(method.perturb(x), [jpeg_by_hand(x, 10), jpeg_by_hand(x, 90)])
    assert set(chosen) == {0, 1}


def test_thumbnail_perturbation_is_downscale_then_upscale():
    method = _linear(perturbation="thumbnail", levels={"thumbnail": [0.5]})
    torch.testing.assert_close(
        method.perturb(LIN_X), thumbnail_by_hand(LIN_X, 0.5), atol=1e-6, rtol=0
    )


def test_crop_perturbation_is_a_corner_window_resized_back():
    method = _linear(perturbation="crop", levels={"crop": [2]})
    torch.manual_seed(0)
    x = LIN_X.repeat(3, 1, 1, 1)
    chosen = _which(method.perturb(x), crops_by_hand(x, 2))
    assert len(set(chosen)) >= 3  # the corner is drawn per image


def test_crop_pad_perturbation_shifts_content_and_fills_zeros():
    method = _linear(perturbation="crop_pad", levels={"crop_pad": [1]})
    torch.manual_seed(0)
    x = LIN_X.repeat(3, 1, 1, 1)
    chosen = _which(method.perturb(x), shifts_by_hand(x, 1))
    assert len(set(chosen)) >= 3  # the direction is drawn per image


def test_gaussian_noise_distortion_adds_noise_of_the_drawn_sigma():
    method = _linear(perturbation="gaussian_noise", levels={"gaussian_noise": [0.02, 0.1]})
    torch.manual_seed(0)
    x = torch.full((32, 1, 16, 16), 0.5)  # far from 0 and 1: clipping never happens
    noise = (method.perturb(x) - x).flatten(1)
    assert noise.mean().abs().item() < 0.01
    std = noise.std(dim=1)
    chosen = torch.where(
        (std - 0.02).abs() < 0.004, 0, torch.where((std - 0.1).abs() < 0.02, 1, -1)
    )
    assert set(chosen.tolist()) == {0, 1}, std  # every image one of the two levels, both used
    clipped = method.perturb(torch.zeros(4, 1, 8, 8))
    assert clipped.min().item() == 0.0 and (clipped == 0).float().mean() > 0.4  # clipped at 0


def test_mix_perturbation_draws_one_distortion_per_image():
    method = _linear(
        perturbation="mix", mix=["jpeg", "thumbnail"], levels={"jpeg": [50], "thumbnail": [0.5]}
    )
    torch.manual_seed(0)
    x = LIN_X.repeat(3, 1, 1, 1)
    chosen = _which(method.perturb(x), [jpeg_by_hand(x, 50), thumbnail_by_hand(x, 0.5)])
    assert set(chosen) == {0, 1}


@pytest.mark.parametrize(
    ("kwargs", "perturbed"),
    [
        ({"perturbation": "jpeg", "levels": {"jpeg": [30]}}, lambda x: jpeg_by_hand(x, 30)),
        (
            {"perturbation": "thumbnail", "levels": {"thumbnail": [0.5]}},
            lambda x: thumbnail_by_hand(x, 0.5),
        ),
    ],
)
def test_classification_loss_uses_the_perturbation_and_alpha_weights_the_kl(kwargs, perturbed):
    logits = _linear().model(LIN_X).detach()
    logits_p = _linear().model(perturbed(LIN_X)).detach()
    task = F.cross_entropy(logits, LIN_Y)
    # KL(p ‖ q) with the clean prediction p as the target, written out
    p, log_p, log_q = F.softmax(logits, 1), F.log_softmax(logits, 1), F.log_softmax(logits_p, 1)
    kl = (p * (log_p - log_q)).sum(1).mean()
    losses = {a: _linear(alpha=a, **kwargs).training_loss(LIN_X, LIN_Y) for a in (1.0, 3.0)}
    assert losses[1.0].loss.item() == pytest.approx((task + kl).item(), rel=1e-5)
    assert losses[1.0].logs["stab_loss"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert (losses[3.0].loss - losses[1.0].loss).item() == pytest.approx(2 * kl.item(), rel=1e-4)
    smoothed = _linear(alpha=1.0, label_smoothing=0.1, **kwargs).training_loss(LIN_X, LIN_Y)
    task_smooth = F.cross_entropy(logits, LIN_Y, label_smoothing=0.1)
    assert smoothed.loss.item() == pytest.approx((task_smooth + kl).item(), rel=1e-5)


# Embedding task: with labels (0, 0, 1) the triplets are fixed: anchors 0 and 1, each the
# other's positive, image 2 the negative of both.
EMB_X = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
EMB_Y = torch.tensor([0, 0, 1])


def _embedding_terms(method, x_perturbed):
    """(CE, triplet hinge, ‖e − e'‖₂) written out on the method's L2-normalised embeddings."""

    def embed(z):
        f = z.flatten(1)
        if method.embedding_head is not None:
            f = method.embedding_head(f)
        return f / f.norm(dim=1, keepdim=True)

    e, e_p = embed(EMB_X), embed(x_perturbed)
    d = lambda i, j: (e[i] - e[j]).norm()  # noqa: E731
    m = method.margin
    triplet = 0.5 * (F.relu(m + d(0, 1) - d(0, 2)) + F.relu(m + d(1, 0) - d(1, 2)))
    task = F.cross_entropy(method.model(EMB_X), EMB_Y)
    return task, triplet, e, e_p


def _embedding_loss(**kwargs):
    method = _linear(task="embedding", sigma=0.2, **kwargs)
    torch.manual_seed(3)
    out = method.training_loss(EMB_X, EMB_Y)
    torch.manual_seed(3)
    x_perturbed = EMB_X + 0.2 * torch.randn_like(EMB_X)
    return method, out, x_perturbed


@pytest.mark.parametrize("embedding_dim", [None, 5])
def test_embedding_loss_is_task_plus_triplet_plus_alpha_l2_stability(embedding_dim):
    base = {"embedding_dim": embedding_dim, "margin": 1.5}
    method, out, x_perturbed = _embedding_loss(alpha=1.0, triplet_weight=1.0, **base)
    task, triplet, e, e_p = _embedding_terms(method, x_perturbed)
    stab = (e - e_p).norm(dim=1).mean()
    assert triplet.item() > 0 and stab.item() > 0
    assert out.loss.item() == pytest.approx((task + triplet + stab).item(), rel=1e-5)
    assert out.logs["triplet_loss"].item() == pytest.approx(triplet.item(), rel=1e-5)
    assert out.logs["stab_loss"].item() == pytest.approx(stab.item(), rel=1e-5)
    # each weight scales exactly its own term
    alpha = _embedding_loss(alpha=3.0, triplet_weight=1.0, **base)[1].loss - out.loss
    assert alpha.item() == pytest.approx(2 * stab.item(), rel=1e-4)
    weight = _embedding_loss(alpha=1.0, triplet_weight=0.25, **base)[1].loss - out.loss
    assert weight.item() == pytest.approx(-0.75 * triplet.item(), rel=1e-4)
    # both hinges are active: a margin 0.1 larger adds 0.1 to the triplet term
    wider = {**base, "margin": 1.6}
    margin = _embedding_loss(alpha=1.0, triplet_weight=1.0, **wider)[1].loss - out.loss
    assert margin.item() == pytest.approx(0.1, rel=1e-4)


@pytest.mark.parametrize("detach_clean", [True, False])
def test_embedding_stability_gradient_follows_detach_clean(detach_clean):
    method, out, x_perturbed = _embedding_loss(
        alpha=1.0, triplet_weight=0.0, embedding_dim=5, detach_clean=detach_clean
    )
    task, _, e, e_p = _embedding_terms(method, x_perturbed)
    head = method.embedding_head.weight
    (got,) = torch.autograd.grad(out.loss, head)
    stab = {
        "detached": (e.detach() - e_p).norm(dim=1).mean(),
        "attached": (e - e_p).norm(dim=1).mean(),
    }
    detached = torch.autograd.grad(task + stab["detached"], head, retain_graph=True)[0]
    attached = torch.autograd.grad(task + stab["attached"], head)[0]
    torch.testing.assert_close(got, detached if detach_clean else attached)
    assert (detached - attached).abs().max().item() > 1e-4  # the two really differ


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"alpha": -0.1}, "method.alpha must be >= 0"),
        ({"sigma": -1.0}, "method.sigma must be >= 0"),
        ({"perturbation": "blur"}, "valid: gaussian, crop"),
        ({"task": "retrieval"}, "valid: classification, embedding"),
        ({"mix": ["jpeg", "fog"]}, "unknown distortion(s) ['fog']"),
    ],
)
def test_invalid_config_values_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        _method(**kwargs)
    assert fragment in str(err.value)


class _Grab(pl.Callback):
    def on_fit_end(self, trainer, pl_module):
        self.model = pl_module.model


def _noise_stats(model: nn.Module, x: torch.Tensor, sigma: float) -> tuple[float, float]:
    """(mean KL(clean ‖ noisy), fraction of changed predictions) under N(0, σ²) noise."""
    model.eval()
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        clean = model(x)
        noisy = model(x + sigma * torch.randn(x.shape, generator=g))
    kl = stability_kl(clean, noisy).item()
    flips = (clean.argmax(1) != noisy.argmax(1)).float().mean().item()
    return kl, flips


def test_stability_training_is_more_stable_than_erm_on_digits(tmp_path):
    """Same seed and budget: a stabilised model's predictions change less under noise."""
    common = [
        "data=digits",
        "model.width=16",
        "trainer.max_epochs=5",
        "trainer.enable_progress_bar=false",
        "suite=[perturbation_sequences]",
        "suite.perturbation_sequences.kinds=[gaussian_noise]",
        "suite.perturbation_sequences.steps.gaussian_noise=0.04",
    ]
    runs = {}
    for method, extra in [("erm", []), ("stability", ["method.alpha=1.0", "method.sigma=0.2"])]:
        grab = _Grab()
        cfg = compose_train(f"method={method}", *common, *extra)
        results = train(cfg, tmp_path / method, extra_callbacks=(grab,))
        assert results.status == "ok"
        x = _digits_test_images(cfg)
        kl, flips = _noise_stats(grab.model, x, 0.3)
        runs[method] = (results, kl, flips)
    erm, stab = runs["erm"], runs["stability"]
    assert stab[0].metrics["test/acc"] >= 0.8, stab[0].metrics
    assert stab[1] < 0.5 * erm[1], (stab[1], erm[1])  # KL(clean ‖ noisy)
    assert stab[2] < erm[2], (stab[2], erm[2])  # changed predictions at σ = 0.3
    flip = "perturbation_sequences/mean_flip_prob"
    assert stab[0].summary[flip] < erm[0].summary[flip], (stab[0].summary, erm[0].summary)


def _digits_test_images(cfg) -> torch.Tensor:
    from robustlab.perturbations.imageops import from_uint8
    from robustlab.run.builders import build_data

    images, _ = build_data(cfg).test_arrays()
    return from_uint8(images)


# ------------------------------------------------------------------------------ metrics
def test_histogram_auc_and_ap_match_exact_values_up_to_binning():
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    pos = (0.5 + 0.3 * torch.randn(3000, generator=g)).clamp(0, 2)
    neg = (0.9 + 0.3 * torch.randn(2000, generator=g)).clamp(0, 2)
    ph, nh = distance_histogram(pos, 2000), distance_histogram(neg, 2000)
    labels = torch.cat([torch.ones(3000), torch.zeros(2000)]).numpy()
    scores = (-torch.cat([pos, neg])).numpy()
    assert roc_auc(ph, nh) == pytest.approx(sklearn.roc_auc_score(labels, scores), abs=2e-3)
    assert average_precision(ph, nh) == pytest.approx(
        sklearn.average_precision_score(labels, scores), abs=5e-3
    )


def test_histogram_metrics_on_constructed_cases():
    pos = distance_histogram(torch.zeros(100), 200)  # identical features: d = 0
    neg = distance_histogram(torch.full((100,), 1.0), 200)
    assert roc_auc(pos, neg) == 1.0
    assert average_precision(pos, neg) == 1.0
    assert precision_at_recall(pos, neg, 0.9) == 1.0
    same = distance_histogram(torch.full((10,), 0.5), 200)  # all ties: AUC ½
    assert roc_auc(same, same) == pytest.approx(0.5)
    # 3 positives in bin 0, 1 positive and 2 negatives in bin 1, 2 negatives in bin 2:
    # AUC = (3·4 + 1·(2 + ½·2)) / (4·4) = 15/16; recall 0.9 needs bin 1: precision 4/6
    pos = torch.tensor([3.0, 1.0, 0.0])
    neg = torch.tensor([0.0, 2.0, 2.0])
    assert roc_auc(pos, neg) == pytest.approx(15 / 16)
    assert precision_at_recall(pos, neg, 0.9) == pytest.approx(4 / 6)
    assert average_precision(pos, neg) == pytest.approx(0.75 * 1.0 + 0.25 * 4 / 6)


class _PixelFeatures(nn.Module):
    """features(x) = the flattened pixels (or, with ``random``, noise unrelated to x)."""

    def __init__(self, random: bool = False):
        super().__init__()
        self.random = random
        self.g = torch.Generator().manual_seed(7)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.random:
            return torch.randn(x.shape[0], 16, generator=self.g)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[:, :2]


def _evaluate(suite, model, batches):
    """What SuiteEvaluator does: Σ sum / Σ count per (condition, metric), then records. The
    batches are consecutive slices of one split; each image's neighbour is the next one."""
    images = torch.cat(batches)
    sums: dict = {}
    for i, condition in enumerate(suite.conditions):
        start = 0
        for x in batches:
            index = torch.arange(start, start + len(x))
            start += len(x)
            following = (index + 1) % len(images)
            labels = torch.zeros(len(x), dtype=torch.long)
            key = suite.random_key(condition)
            case = Case(model, x, labels, condition, index, key, images[following], following)
            for metric, (total, count) in suite.measure(case).items():
                acc = sums.setdefault((i, metric), [0.0, 0.0])
                acc[0] += float(total)
                acc[1] += float(count)
    values = {k: s / c for k, (s, c) in sums.items() if c > 0}
    return suite.records(values)


def test_near_duplicate_suite_identical_vs_random_features():
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(64, 1, 8, 8, generator=g) for _ in range(4)]
    suite = NearDuplicateSuite(None, distortions={"gaussian_noise": [0.0, 0.01]})
    records = _evaluate(suite, _PixelFeatures(), batches)
    auc = {r.level: r.value for r in records if r.metric == "auc"}
    assert auc[0.0] == 1.0 and auc[0.01] == 1.0
    pr = [r for r in records if r.metric == "pr_precision"]
    assert len(pr) == 2 * 20 and all(r.value == 1.0 for r in pr)
    assert {r.condition for r in pr} == {"gaussian_noise=0", "gaussian_noise=0.01"}
    random_records = _evaluate(suite, _PixelFeatures(random=True), batches)
    auc = [r.value for r in random_records if r.metric == "auc"]
    assert all(abs(a - 0.5) < 0.06 for a in auc), auc
    summary = suite.summarize(records)
    assert summary["near_duplicate/mean_auc"] == 1.0
    assert summary["near_duplicate/gaussian_noise/auc"] == 1.0


def test_ranking_accuracy_constructed_cases():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = torch.tensor([[1.0, 0.1], [1.0, 0.0], [1.0, 0.0]])
    n = torch.tensor([[0.0, 1.0], [0.0, 1.1], [0.0, 1.0]])
    # correct, wrong (1.41 > 0.1), tie (1 = 1): 1 + 0 + ½
    assert ranking_correct(a, p, n).item() == pytest.approx(1.5)
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(32, 1, 8, 8, generator=g) for _ in range(2)]
    suite = SimilarRankingSuite(None, distortions={"gaussian_noise": [0.0]})
    records = _evaluate(suite, _PixelFeatures(), batches)
    assert [r.value for r in records] == [1.0]
    random_records = _evaluate(suite, _PixelFeatures(random=True), batches)
    assert abs(random_records[0].value - 0.5) < 0.15


def test_pair_suites_reject_unknown_distortions():
    with pytest.raises(ConfigError, match="valid|names from"):
        NearDuplicateSuite(None, distortions={"fog": [1]})


def test_embedding_batch_without_triplets_has_a_zero_ranking_term():
    """Labels with no repeated class give no (anchor, positive) pair: the ranking term is 0
    (not the NaN mean of an empty batch) and the loss is task + α · stability."""
    x, y = EMB_X, torch.tensor([0, 1, 2])
    method = _linear(task="embedding", sigma=0.2, alpha=1.0, embedding_dim=None)
    torch.manual_seed(3)
    out = method.training_loss(x, y)
    torch.manual_seed(3)
    x_perturbed = x + 0.2 * torch.randn_like(x)
    e, e_p = F.normalize(x.flatten(1), dim=1), F.normalize(x_perturbed.flatten(1), dim=1)
    task = F.cross_entropy(method.model(x), y)
    stab = (e - e_p).norm(dim=1).mean()
    assert out.logs["triplet_loss"].item() == 0.0
    assert out.loss.item() == pytest.approx((task + stab).item(), rel=1e-5)
    assert set(out.logs) == {"task_loss", "triplet_loss", "stab_loss"}
    assert out.logs["task_loss"].item() == pytest.approx(task.item(), rel=1e-6)
    torch.testing.assert_close(out.logits, method.model(x))  # train/acc: the clean logits


def test_classification_stability_logs_task_and_stability_terms_and_clean_logits():
    out = _linear(alpha=1.0).training_loss(LIN_X, LIN_Y)
    logits = _linear().model(LIN_X)
    assert set(out.logs) == {"task_loss", "stab_loss"}
    assert out.logs["task_loss"].item() == pytest.approx(F.cross_entropy(logits, LIN_Y).item())
    torch.testing.assert_close(out.logits, logits)


def test_perturbation_draws_from_the_given_generator_only():
    method = _linear(sigma=0.2)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = method.perturb(LIN_X, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)
    assert torch.equal(first, method.perturb(LIN_X, torch.Generator().manual_seed(2)))
    assert not torch.equal(first, LIN_X)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": -0.1}, "method.margin must be >= 0, got -0.1"),
        ({"triplet_weight": -1.0}, "method.triplet_weight must be >= 0, got -1.0"),
        ({"embedding_dim": 0}, "method.embedding_dim must be a positive integer or null, got 0"),
        ({"embedding_dim": 2.5}, "method.embedding_dim must be a positive integer or null"),
        (
            {"terms": {"stability": {"alpha": 0.1}}},
            "method=stability already has the stability term: set method.alpha / method.sigma "
            "instead of method.terms.stability",
        ),
    ],
)
def test_stability_config_errors_name_the_key(kwargs, message):
    with pytest.raises(ConfigError) as err:
        _linear(**kwargs)
    assert str(err.value).startswith(message)


def test_stability_boundary_values_are_accepted():
    assert _linear(margin=0.0).margin == 0.0
    assert _linear(task="embedding", embedding_dim=1).embedding_head.out_features == 1
