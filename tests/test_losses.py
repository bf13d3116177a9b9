"""The pure loss functions of :mod:`robustlab.losses` on hand-computed cases.

Each case is built so that a changed reduction axis, a dropped term, a swapped argument or a
changed default gives a different number (found by mutation testing, tests/MUTATION.md).
"""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.losses import (
    embedding_stability,
    kl_divergence,
    madry_loss,
    random_triplets,
    stability_kl,
    trades_loss,
    triplet_ranking_loss,
)

LN2 = math.log(2.0)
# p = (1/2, 1/4, 1/4), q = (1/4, 1/4, 1/2):  KL(p ‖ q) = ½ ln 2 + ¼ ln ½ = ¼ ln 2
# u = (1/3, 1/3, 1/3), p as above:           KL(u ‖ p) = ⅓ (ln ⅔ + 2 ln 4/3) = ⅓ ln(32/27)
KL_PQ = 0.25 * LN2
KL_UP = math.log(32.0 / 27.0) / 3.0


def _logits(*probs: float, shift: float = 0.0) -> list[float]:
    return [math.log(p) + shift for p in probs]


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows whose logits carry different constant shifts: softmax over classes (dim 1)
    ignores them, any other axis does not."""
    target = torch.tensor([_logits(0.5, 0.25, 0.25, shift=3.0), [0.0, 0.0, 0.0]])
    logits = torch.tensor([_logits(0.25, 0.25, 0.5, shift=-1.0), _logits(0.5, 0.25, 0.25)])
    return target, logits


def test_kl_divergence_is_per_example_over_classes():
    target, logits = _pair()
    kl = kl_divergence(target, logits)
    assert kl.shape == (2,)
    torch.testing.assert_close(kl, torch.tensor([KL_PQ, KL_UP]))
    # KL is not symmetric: KL(q ‖ p) = ¼ ln ½ + ½ ln 2 = ¼ ln 2 for row 0 but differs for row 1
    reverse = kl_divergence(logits, target)
    assert reverse[1].item() == pytest.approx(
        0.5 * math.log(1.5) + 0.25 * math.log(0.75) * 2, abs=1e-6
    )


def test_stability_kl_is_the_batch_mean_of_the_per_example_kl():
    target, logits = _pair()
    assert stability_kl(target, logits).item() == pytest.approx((KL_PQ + KL_UP) / 2, abs=1e-6)


def test_embedding_stability_is_the_mean_l2_distance_of_rows():
    clean = torch.tensor([[3.0, 4.0, 0.0], [1.0, 1.0, 0.0]])
    perturbed = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # rows: ‖(3,4,0)‖ = 5, ‖(0,1,0)‖ = 1 → mean 3 (the sum's norms give (5 + √5)/2, column
    # norms (3 + √17 + 0)/3)
    assert embedding_stability(clean, perturbed).item() == pytest.approx(3.0)


def test_triplet_ranking_loss_default_margin_and_hinge():
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    positive = torch.tensor([[4.0, 4.0], [2.0, 0.0]])  # d(a, p) = 5, 1
    negative = torch.tensor([[1.0, 1.0], [7.0, 8.0]])  # d(a, n) = 1, 10
    # max(0, 0.2 + 5 − 1) = 4.2 ; max(0, 0.2 + 1 − 10) = 0  → mean 2.1
    assert triplet_ranking_loss(anchor, positive, negative).item() == pytest.approx(2.1)
    assert triplet_ranking_loss(anchor, positive, negative, 1.0).item() == pytest.approx(2.5)
    # the hinge is what keeps the second triplet at 0: both active would give (4 + (−8))/2
    assert triplet_ranking_loss(anchor, positive, negative, 0.0).item() == pytest.approx(2.0)


def test_random_triplets_pick_the_only_positive_and_negatives_uniformly():
    labels = torch.tensor([0, 0, 1, 2])
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(400):
        anchors, positives, negatives = random_triplets(labels, g)
        assert anchors.tolist() == [0, 1]  # classes 1 and 2 have no second example
        assert positives.tolist() == [1, 0]  # the other example of the class, never itself
        assert set(negatives.tolist()) <= {2, 3}
        counts += torch.bincount(negatives, minlength=4)
    # each anchor draws one of its two negatives uniformly: 400 of 800 draws expected each
    assert counts[:2].tolist() == [0, 0]
    assert 340 <= counts[2] <= 460 and 340 <= counts[3] <= 460


def test_random_triplets_positive_is_uniform_over_the_other_examples_of_the_class():
    labels = torch.tensor([0, 0, 0, 1])
    g = torch.Generator().manual_seed(1)
    hits = torch.zeros(3)
    for _ in range(300):
        anchors, positives, negatives = random_triplets(labels, g)
        assert anchors.tolist() == [0, 1, 2] and negatives.tolist() == [3, 3, 3]
        assert (positives != anchors).all()
        hits += torch.bincount(positives, minlength=4)[:3]
    assert all(240 <= h <= 360 for h in hits.tolist())  # 300 expected for each index


def test_random_triplets_without_anchors_are_empty_label_typed():
    for labels in (torch.tensor([0, 1, 2]), torch.tensor([4, 4])):
        anchors, positives, negatives = random_triplets(labels)
        for t in (anchors, positives, negatives):
            assert t.shape == (0,) and t.dtype == labels.dtype


def test_madry_loss_is_unsmoothed_cross_entropy_by_default():
    adv = torch.tensor([_logits(0.75, 0.25), _logits(0.5, 0.5)])
    y = torch.tensor([1, 0])
    expected = (math.log(4.0) + LN2) / 2
    assert madry_loss(adv, y).item() == pytest.approx(expected)
    # ε = 0.5: (1 − ε)·CE + ε·mean_k(−log q_k)
    smooth_row0 = 0.5 * math.log(4.0) + 0.25 * (math.log(4 / 3) + math.log(4.0))
    assert madry_loss(adv, y, 0.5).item() == pytest.approx((smooth_row0 + LN2) / 2)


def test_trades_loss_returns_total_ce_and_kl_with_beta_on_the_kl_only():
    target, logits = _pair()
    y = torch.tensor([0, 2])
    ce = (LN2 + math.log(3.0)) / 2  # −ln ½ for row 0, −ln ⅓ for row 1 (clean logits)
    kl = (KL_PQ + KL_UP) / 2
    loss, ce_term, kl_term = trades_loss(target, logits, y, beta=3.0)
    assert ce_term.item() == pytest.approx(ce, abs=1e-6)
    assert kl_term.item() == pytest.approx(kl, abs=1e-6)
    assert loss.item() == pytest.approx(ce + 3.0 * kl, abs=1e-6)
    # label smoothing reaches the CE term only: row 0 smoothed CE = ½ ln 2 + ½·⅓(ln 2 + 2 ln 4)
    smoothed = trades_loss(target, logits, y, beta=3.0, label_smoothing=0.5)
    ce_row0 = 0.5 * LN2 + 0.5 * (LN2 + 2 * math.log(4.0)) / 3
    assert smoothed[1].item() == pytest.approx((ce_row0 + math.log(3.0)) / 2, abs=1e-6)
    assert smoothed[2].item() == pytest.approx(kl, abs=1e-6)


def test_random_triplets_draw_from_the_generator_only():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    first = random_triplets(labels, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), global_state)  # the global stream is untouched
    torch.manual_seed(999)  # a different global state: the draw does not change
    again = random_triplets(labels, torch.Generator().manual_seed(5))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
