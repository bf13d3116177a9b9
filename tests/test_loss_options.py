"""Options of the distillation, introspective and mixing losses that the hand-computed loss
tests leave at their defaults (issue 15): label smoothing on every cross-entropy term, the
default weights, DKD's per-example mix and the parts it reports, CRLD's terms with a divergence
that reads the labels, ICN with no pseudo-negatives, the WGAN-GP interpolate, the Laplacian
pyramid's symmetry and level count, and every value kept in the inputs' precision."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.losses import (
    confidence_mask,
    crld_loss,
    cross_view_consistency,
    dkd_loss,
    dkd_parts,
    dkd_per_sample,
    gradient_penalty,
    icn_evidence,
    kd_loss,
    kplus1_loss,
    laplacian_loss,
    laplacian_pyramid,
    mixed_cross_entropy,
    one_vs_rest_loss,
    reconstruction_laplacian_loss,
    winn_loss,
)
from robustlab.losses.mixing import _blur

LOGITS = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
LABELS = [0, 2]


def log_softmax(row: list[float]) -> list[float]:
    total = math.log(sum(math.exp(v) for v in row))
    return [v - total for v in row]


def smoothed_ce(rows: list[list[float]], labels: list[int], s: float) -> float:
    """Batch mean of ``CE_s(z, k) = −(1 − s) log p_k − (s / K) Σ_c log p_c``, by hand."""
    total = 0.0
    for row, k in zip(rows, labels, strict=True):
        log_p = log_softmax(row)
        total += -(1 - s) * log_p[k] - s / len(row) * sum(log_p)
    return total / len(rows)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_every_session3_cross_entropy_term_takes_its_label_smoothing():
    s = 0.2
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    y = torch.tensor(LABELS)
    by_hand = smoothed_ce(LOGITS, LABELS, s)
    assert by_hand != pytest.approx(smoothed_ce(LOGITS, LABELS, 0.0))
    teacher = logits.flip(1)
    kd = kd_loss(logits, teacher, y, 2.0, lambda_ce=1.0, lambda_kd=1.0, label_smoothing=s)
    assert kd.ce.item() == pytest.approx(by_hand, rel=1e-12)
    dkd = dkd_loss(logits, teacher, y, 1.0, 8.0, 2.0, label_smoothing=s)
    assert dkd.ce.item() == pytest.approx(by_hand, rel=1e-12)
    # CRLD: one smoothed CE per view (the weak view's logits, the strong view's reversed rows)
    crld = crld_loss(logits, logits.flip(0), teacher, teacher, y, label_smoothing=s)
    both_views = by_hand + smoothed_ce(LOGITS[::-1], LABELS, s)
    assert crld.ce.item() == pytest.approx(both_views, rel=1e-12)
    # the introspective losses: real CE smoothed, the negative / critic terms unchanged
    kplus1 = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 1.0, 3.0, 0.5]], dtype=torch.float64)
    _, real, negative = kplus1_loss(kplus1, y, kplus1, label_smoothing=s)
    assert real.item() == pytest.approx(smoothed_ce(kplus1.tolist(), LABELS, s), rel=1e-12)
    assert negative.item() == pytest.approx(
        -(log_softmax(kplus1[0].tolist())[3] + log_softmax(kplus1[1].tolist())[3]) / 2, rel=1e-12
    )
    _, real, _ = one_vs_rest_loss(logits, y, logits, y, label_smoothing=s)
    assert real.item() == pytest.approx(by_hand, rel=1e-12)
    scores = torch.tensor([1.0, 2.0], dtype=torch.float64)
    _, real, _ = winn_loss(logits, y, scores, scores, scores.new_zeros(()), label_smoothing=s)
    assert real.item() == pytest.approx(by_hand, rel=1e-12)


def test_default_weights_of_the_icn_and_dkd_losses():
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    y = torch.tensor(LABELS)
    # ICN: w_neg defaults to 1
    loss, real, negative = kplus1_loss(logits, y, logits.flip(0))
    assert loss.item() == pytest.approx(real.item() + negative.item(), rel=1e-12)
    loss, real, logistic = one_vs_rest_loss(logits, y, logits.flip(0), y)
    assert loss.item() == pytest.approx(real.item() + logistic.item(), rel=1e-12)
    # DKD: full weight (warm-up 1) and no smoothing unless asked
    teacher = logits.flip(1)
    tckd, nckd = dkd_parts(logits, teacher, y, 4.0)
    out = dkd_loss(logits, teacher, y, alpha=2.0, beta=3.0, temperature=4.0)
    plain_ce = -(log_softmax(LOGITS[0])[0] + log_softmax(LOGITS[1])[2]) / 2
    assert out.ce.item() == pytest.approx(plain_ce, rel=1e-12)
    assert out.loss.item() == pytest.approx(
        plain_ce + 2 * tckd.mean().item() + 3 * nckd.mean().item(), rel=1e-12
    )


def test_dkd_reports_its_batch_mean_parts_and_mixes_them_per_example_by_alpha_and_beta():
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    teacher = logits.flip(1)
    y = torch.tensor(LABELS)
    tckd, nckd = dkd_parts(logits, teacher, y, 2.0)
    assert not torch.allclose(tckd, nckd)
    out = dkd_loss(logits, teacher, y, 1.0, 8.0, 2.0)
    assert out.tckd.item() == pytest.approx(tckd.mean().item(), rel=1e-12)
    assert out.nckd.item() == pytest.approx(nckd.mean().item(), rel=1e-12)
    per_sample = dkd_per_sample(logits, teacher, y, 0.5, 3.0, 2.0)
    torch.testing.assert_close(per_sample, 0.5 * tckd + 3.0 * nckd, rtol=1e-12, atol=0)


def test_cross_view_terms_pass_the_labels_to_the_divergence():
    """A divergence that reads y: ``D(z_s, z_t, y)_i = z_s[i, y_i] − z_t[i, y_i]``."""

    def at_label(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (student - teacher).gather(1, y[:, None]).squeeze(1)

    sw = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    ss = torch.tensor([[0.0, 4.0], [1.0, 1.0]])
    confident = torch.tensor([[10.0, 0.0], [0.0, 10.0]])  # both teachers pass every τ < 1
    tw, ts = confident, confident.flip(1)
    y = torch.tensor([1, 0])
    within, cross = cross_view_consistency(at_label, sw, ss, tw, ts, y, 0.5, 0.5)
    # within: D(sw, tw) = [2 − 0, 3 − 0], D(ss, ts) = [4 − 10, 1 − 10] -> mean of [-4, -6]
    # cross:  D(ss, tw) = [4 − 0, 1 − 0], D(sw, ts) = [2 − 10, 3 − 10] -> mean of [-4, -6]
    assert within.item() == pytest.approx(-5.0)
    assert cross.item() == pytest.approx(-5.0)
    y = torch.tensor([0, 1])  # the other labels give other values
    within, cross = cross_view_consistency(at_label, sw, ss, tw, ts, y, 0.5, 0.5)
    # within: D(sw, tw) = [1 − 10, 5 − 10], D(ss, ts) = [0 − 0, 1 − 0] -> mean of [-9, -4]
    # cross:  D(ss, tw) = [0 − 10, 1 − 10], D(sw, ts) = [1 − 0, 5 − 0] -> mean of [-9, -4]
    assert within.item() == pytest.approx(-6.5)
    assert cross.item() == pytest.approx(-6.5)


def test_one_vs_rest_without_pseudo_negatives_is_ce_plus_the_positive_term():
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([0, 2])
    loss, real, logistic = one_vs_rest_loss(logits, y, logits[:0], y[:0], negative_weight=2.0)
    positive = (softplus(-2.0) + softplus(-3.0)) / 2
    assert logistic.item() == pytest.approx(positive, rel=1e-6)
    assert loss.item() == pytest.approx(real.item() + 2 * positive, rel=1e-6)


def test_unknown_icn_form_names_itself_and_the_known_forms():
    with pytest.raises(ValueError, match=r"unknown ICN form 'energy'; expected one of \("):
        icn_evidence(torch.zeros(1, 3), torch.tensor([0]), "energy")


def test_mixing_weight_is_used_at_the_precision_of_the_logits():
    """λ = 0.3 as a float64 weight, not rounded through float32 (0.30000001192...)."""
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    a, b = torch.tensor([0, 2]), torch.tensor([1, 1])
    log_p = [log_softmax(row) for row in LOGITS]
    lam = 0.3
    by_hand = (-lam * log_p[0][0] - (1 - lam) * log_p[0][1]) / 2
    by_hand += (-lam * log_p[1][2] - (1 - lam) * log_p[1][1]) / 2
    out = mixed_cross_entropy(logits, a, b, lam)
    assert out.dtype == torch.float64
    assert out.item() == pytest.approx(by_hand, rel=1e-12)


def test_crld_defaults_are_the_papers_settings():
    """T = 4, λ_ce = 1, λ_wv = 2, λ_cv = 0.5, τ_w = 0.9, τ_s = 0.2 (Zhang et al. 2024)."""
    generator = torch.Generator().manual_seed(0)
    views = [3 * torch.randn(6, 4, generator=generator, dtype=torch.float64) for _ in range(4)]
    # teacher max probabilities: weak 0.53 … 0.997 (two rows >= τ_w = 0.9), strong 0.56 … 0.9998
    views[2][:, 0] += torch.tensor([0.0, 1.0, 2.0, 4.0, 6.0, 9.0], dtype=torch.float64)
    views[3][:, 1] += torch.tensor([9.0, 0.5, 3.0, 0.0, 5.0, 1.5], dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    default = crld_loss(*views, y)
    explicit = crld_loss(
        *views,
        y,
        temperature=4.0,
        lambda_ce=1.0,
        lambda_wv=2.0,
        lambda_cv=0.5,
        tau_w=0.9,
        tau_s=0.2,
        label_smoothing=0.0,
    )
    assert default.within.item() > 0 and default.cross.item() > 0
    for got, want in zip(default, explicit, strict=True):
        assert got.item() == pytest.approx(want.item(), rel=1e-12)
    for changed in (
        {"temperature": 5.0},
        {"lambda_wv": 3.0},
        {"lambda_cv": 1.5},
        {"tau_w": 0.99},
        {"tau_s": 0.9},
    ):
        assert crld_loss(*views, y, **changed).loss.item() != pytest.approx(default.loss.item())


def test_confidence_mask_is_in_the_teachers_float_dtype():
    teacher = torch.tensor([[3.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    mask = confidence_mask(teacher, 0.9)
    assert mask.dtype == torch.float64 and mask.tolist() == [1.0, 0.0]


def test_gradient_penalty_interpolates_between_real_and_fake_in_the_images_dtype():
    # W(x) = ½‖x‖²: the gradient at x̂ is x̂ = u·real + (1 − u)·fake = (1, 1) for u = ½
    real = fake = torch.tensor([[1.0, 1.0]])
    penalty = gradient_penalty(lambda x: 0.5 * (x**2).sum(1), real, fake, torch.tensor([0.5]))
    assert penalty.item() == pytest.approx((math.sqrt(2) - 1) ** 2, rel=1e-6)
    mix64 = torch.tensor([0.5], dtype=torch.float64)
    assert gradient_penalty(lambda x: x.sum(1), real, fake, mix64).dtype == torch.float32


def test_blur_of_an_impulse_is_the_binomial_kernel_centred_on_it():
    """The 5 × 5 blur is centred (padding 2 on every side): a unit impulse at (4, 6) of a 9 × 11
    image spreads into ``gain · b bᵀ``, b = [1, 4, 6, 4, 1] / 16, around (4, 6)."""
    impulse = torch.zeros(1, 2, 9, 11, dtype=torch.float64)
    impulse[:, :, 4, 6] = 1.0
    b = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16
    expected = torch.zeros_like(impulse)
    expected[:, :, 2:7, 4:9] = 3.0 * torch.outer(b, b)
    torch.testing.assert_close(_blur(impulse, gain=3.0), expected, rtol=0, atol=1e-15)


def test_laplacian_pyramid_of_a_non_square_image_in_float64():
    """Level sizes 9 × 17 -> 5 × 9 -> 3 × 5; a constant image has all-zero levels (blur and
    the gain-4 up-sampling keep constants), exactly in float64."""
    image = torch.rand(1, 2, 9, 17, generator=torch.Generator().manual_seed(0)).double()
    levels = laplacian_pyramid(image)
    assert [tuple(level.shape) for level in levels] == [(1, 2, 9, 17), (1, 2, 5, 9), (1, 2, 3, 5)]
    constant = laplacian_pyramid(torch.full((1, 1, 9, 17), 0.1, dtype=torch.float64))
    assert all(level.dtype == torch.float64 for level in constant)
    assert max(level.abs().max().item() for level in constant) < 1e-15


def test_laplacian_losses_use_the_given_number_of_levels():
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1
    smooth = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    image = (checker + smooth).expand(1, 1, 16, 16)
    target = torch.zeros_like(image)
    one = laplacian_loss(image, target, levels=1)
    two = laplacian_loss(image, target, levels=2)
    assert one.item() == pytest.approx(laplacian_pyramid(image, 1)[0].abs().mean().item())
    second = laplacian_pyramid(image, 2)[1].abs().mean().item()
    assert second > 0.01 and two.item() == pytest.approx(one.item() + second, rel=1e-6)
    pair = torch.stack([image, 2 * image], dim=1)
    assert reconstruction_laplacian_loss(pair, torch.zeros_like(pair), levels=2).item() == (
        pytest.approx(3 * two.item(), rel=1e-6)
    )
