"""The introspective method's plumbing (robustlab.methods.introspective), in-process on a linear
classifier whose logits are set by hand (no training): the options and their defaults, the
heads, the synthesis round (seeded draws, shares, chunks, the pool), the initial images, the
critic's threshold range, the negatives of each batch and the loss each variant gets, the
pictures and the pool in checkpoints. (Losses and samplers: tests/test_introspective.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import save_image

from robustlab.data.seeding import generator_for
from robustlab.losses import (
    gradient_penalty,
    icn_evidence,
    kplus1_loss,
    one_vs_rest_loss,
    winn_loss,
    winn_score,
)
from robustlab.methods.introspective import POOL_STATE, IntrospectiveTraining, WinnScore
from robustlab.methods.synthesis import (
    AdamSynthesisSettings,
    LangevinSettings,
    NegativePool,
    adam_synthesis,
    langevin,
)
from robustlab.randomness import normal, uniform
from tests.helpers import LinearClassifier, error_message

# K = 3 classes of 1 × 2 × 2 images: logits = W · flatten(x) + b
WEIGHT = [[1.0, -1.0, 0.5, 0.0], [-0.5, 0.5, 0.0, 2.0], [0.3, 0.2, -1.0, 0.4]]
BIAS = [0.1, -0.2, 0.05]
X = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 2, 1, 0])


def _method(**options) -> IntrospectiveTraining:
    torch.manual_seed(0)
    return IntrospectiveTraining(LinearClassifier(WEIGHT, BIAS), **options)


def _trainer(epoch: int = 0, step: int = 0, **more) -> SimpleNamespace:
    return SimpleNamespace(
        current_epoch=epoch, global_step=step, global_rank=0, world_size=1, **more
    )


def _at_batch(method: IntrospectiveTraining, epoch: int, batch: int) -> None:
    """Place ``method`` at batch ``batch`` of epoch ``epoch`` of a one-process fit."""
    method._trainer = _trainer(epoch=epoch)
    method._batch_index = batch


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "options, message",
    [
        ({"variant": "gan"}, "method.variant must be one of ['icn', 'winn'], got 'gan'"),
        (
            {"icn_form": "softmax"},
            "method.icn_form must be one of ['kplus1', 'one_vs_rest'], got 'softmax'",
        ),
        ({"init": "zeros"}, "method.init must be one of ['noise', 'pool'], got 'zeros'"),
        (
            {"critic_input": "pixels"},
            "method.critic_input must be one of ['features', 'logits'], got 'pixels'",
        ),
        ({"synthesis_every": 0}, "method.synthesis_every must be an integer >= 1, got 0"),
        ({"per_class": 2.0}, "method.per_class must be an integer >= 1, got 2.0"),
        ({"pool_capacity": True}, "method.pool_capacity must be an integer >= 1, got True"),
        ({"synthesis_batch": 0}, "method.synthesis_batch must be an integer >= 1, got 0"),
        ({"pictures_per_class": -1}, "method.pictures_per_class must be an integer >= 0, got -1"),
        ({"seed": -1}, "method.seed must be an integer >= 0, got -1"),
        ({"negative_fraction": -0.1}, "method.negative_fraction must be in [0, 1), got -0.1"),
        ({"negative_fraction": 1}, "method.negative_fraction must be in [0, 1), got 1"),
        ({"negative_fraction": True}, "method.negative_fraction must be in [0, 1), got True"),
        (
            {"variant": "winn", "negative_fraction": 0},
            "method.variant=winn compares real and synthesised images in every batch: set "
            "method.negative_fraction > 0",
        ),
        ({"negative_weight": -1}, "method.negative_weight must be a number >= 0, got -1"),
        ({"critic_weight": "1"}, "method.critic_weight must be a number >= 0, got '1'"),
        ({"gp_weight": -0.5}, "method.gp_weight must be a number >= 0, got -0.5"),
        ({"init_std": False}, "method.init_std must be a number >= 0, got False"),
        ({"init_mean": None}, "method.init_mean must be a number, got None"),
        ({"init_mean": True}, "method.init_mean must be a number, got True"),
        ({"langevin": {"step_size": 0}}, "method.langevin.step_size must be > 0"),
        ({"winn": {"tolerance": -1}}, "method.winn.tolerance"),
        ({"winn": {"stepz": 1}}, "method.winn has unknown key(s) ['stepz']"),
        ({"langevin": {"stepz": 1}}, "method.langevin has unknown key(s) ['stepz']"),
    ],
)
def test_bad_options_are_config_errors_word_for_word(options, message):
    error = error_message(lambda: _method(**options))
    sampler = message.startswith(("method.langevin", "method.winn"))  # synthesis.py's wording
    assert error.startswith(message) if sampler else error == message


def test_limits_are_accepted():
    method = _method(
        synthesis_every=1,
        per_class=1,
        pool_capacity=1,
        synthesis_batch=1,
        pictures_per_class=0,
        seed=0,
        negative_fraction=0,
        negative_weight=0,
        critic_weight=0,
        gp_weight=0,
        init_std=0,
        init_mean=-1,
    )
    assert (method.negative_fraction, method.init_mean, method.init_std) == (0.0, -1.0, 0.0)
    winn = _method(variant="winn", negative_fraction=0.01, critic_input="logits")
    assert winn.critic_input == "logits"


def test_defaults_and_the_heads_of_each_variant():
    method = _method()
    assert (method.variant, method.icn_form, method.init) == ("icn", "kplus1", "noise")
    assert (method.synthesis_every, method.per_class, method.pool.capacity) == (1, 100, 1000)
    assert (method.negative_fraction, method.negative_weight) == (0.5, 1.0)
    assert (method.init_mean, method.init_std) == (0.5, 0.25)
    assert (method.critic_weight, method.gp_weight, method.critic_input) == (0.01, 10.0, "features")
    assert (method.synthesis_batch, method.pictures_per_class, method.seed) == (500, 8, 0)
    assert method.langevin_settings == LangevinSettings()
    assert method.adam_settings == AdamSynthesisSettings()
    assert (method.num_classes, method.pool.num_classes, method._batch_index) == (3, 3, 0)
    assert (method.negative_head.in_features, method.negative_head.out_features) == (4, 1)
    assert method.critic is None
    vs_rest = _method(icn_form="one_vs_rest")
    assert vs_rest.negative_head is None and vs_rest.critic is None
    winn = _method(variant="winn")
    assert winn.negative_head is None
    assert (winn.critic.in_features, winn.critic.out_features) == (4, 1)  # the features
    on_logits = _method(variant="winn", critic_input="logits")
    assert (on_logits.critic.in_features, on_logits.critic.out_features) == (3, 1)
    options = _method(langevin={"steps": 2, "noise": 0.0}, winn={"lr": 0.5, "max_steps": 3}, seed=4)
    assert options.langevin_settings == LangevinSettings(steps=2, noise=0.0)
    assert options.adam_settings == AdamSynthesisSettings(lr=0.5, max_steps=3)
    assert options.seed == 4


# ------------------------------------------------------------------------------ heads
def _set(linear, weight, bias):
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight))
        linear.bias.copy_(torch.tensor(bias))


def test_each_head_reads_the_features_or_the_logits():
    logits = LinearClassifier(WEIGHT, BIAS)(X)
    method = _method()
    _set(method.negative_head, [[0.5, 0.0, -1.0, 1.0]], [0.3])
    extra = X.flatten(1) @ torch.tensor([0.5, 0.0, -1.0, 1.0]) + 0.3
    out, head = method.logits_and_extra(X)
    torch.testing.assert_close(out, logits)
    torch.testing.assert_close(head, extra)
    torch.testing.assert_close(method.icn_logits(X), torch.cat([logits, extra[:, None]], 1))
    vs_rest = _method(icn_form="one_vs_rest")
    assert vs_rest.logits_and_extra(X)[1] is None
    torch.testing.assert_close(vs_rest.icn_logits(X), logits)
    winn = _method(variant="winn")
    _set(winn.critic, [[0.5, 0.0, -1.0, 1.0]], [0.3])
    torch.testing.assert_close(winn.critic_values(X), extra)
    on_logits = _method(variant="winn", critic_input="logits")
    _set(on_logits.critic, [[1.0, -2.0, 0.5]], [0.1])
    expected = logits @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
    torch.testing.assert_close(on_logits.critic_values(X), expected)


def test_winn_exports_its_critic_and_icn_only_the_classifier():
    winn = _method(variant="winn", critic_input="logits")
    parts = winn.exported_parts()
    assert list(parts) == ["model", "critic"]
    assert parts["critic"].module is winn.critic
    assert parts["critic"].factory == "torch.nn:Linear"
    assert parts["critic"].kwargs == {"in_features": 3, "out_features": 1}
    assert list(_method().exported_parts()) == ["model"]


def test_winn_score_is_the_documented_score_and_remembers_the_distance():
    winn = _method(variant="winn")
    _set(winn.critic, [[0.5, 0.0, -1.0, 1.0]], [0.3])
    threshold = torch.tensor([0.2, -0.1, 0.4, 0.0])
    score = WinnScore(winn, threshold, 0.7)
    assert score.distance.shape == (4,) and bool(torch.isinf(score.distance).all())
    values = score(winn, X, Y)
    critic = winn.critic_values(X)
    torch.testing.assert_close(values, winn_score(winn(X), critic, Y, threshold, 0.7))
    torch.testing.assert_close(score.distance, (critic - threshold).abs())
    assert not score.distance.requires_grad


# ------------------------------------------------------------------------------ synthesis
def test_world_and_the_share_of_each_rank():
    method = _method(per_class=5)
    assert method.world() == (0, 1)
    method._trainer = SimpleNamespace(global_rank=2, world_size=3)
    assert method.world() == (2, 3)
    assert [method.share(r, 2) for r in range(2)] == [3, 2]
    assert [method.share(r, 3) for r in range(3)] == [2, 2, 1]
    assert [method.share(r, 5) for r in range(5)] == [1] * 5
    assert method.share(0, 1) == 5


@pytest.mark.parametrize(
    "fraction, rows, count", [(0.5, 6, 6), (0.25, 6, 2), (0.25, 5, 2), (0.75, 3, 9)]
)
def test_negatives_per_batch_is_rounded_rho_over_one_minus_rho_times_b(fraction, rows, count):
    assert _method(negative_fraction=fraction).negatives_per_batch(rows) == count


def test_synthesis_is_due_at_the_first_batch_of_every_kth_epoch():
    method = _method(synthesis_every=2)
    due = []
    for epoch in range(4):
        method._trainer = _trainer(epoch)
        for batch in range(2):
            method._batch_index = batch
            due.append(method.synthesis_due())
    assert due == [True, False, False, False, True, False, False, False]


def test_initial_images_are_clipped_noise_or_pool_images_of_the_same_class():
    method = _method(init_mean=0.4, init_std=0.6)
    classes = torch.tensor([0, 1, 1, 2, 0])
    x = method.initial_images(classes, (1, 2, 2), torch.Generator().manual_seed(3))
    twin = torch.Generator().manual_seed(3)
    expected = normal((5, 1, 2, 2), 0.4, 0.6, twin, "cpu").clamp(0, 1)
    torch.testing.assert_close(x, expected)
    assert x.min() == 0 and x.max() == 1  # std 0.6: both bounds are reached

    pooled = _method(init="pool", pool_capacity=4)
    images = torch.tensor([10.0, 11.0, 20.0, 21.0, 30.0, 31.0]).view(3, 2, 1, 1, 1)
    pooled.pool.add(images.expand(3, 2, 1, 2, 2))
    pooled.pool.filled[1] = 0  # class 1 holds nothing: its rows stay noise
    pooled.pool.filled[2] = 1  # class 2 holds one image: slot 0 only
    classes = torch.tensor([0, 1, 2, 0, 2, 2, 0, 0])
    x = pooled.initial_images(classes, (1, 2, 2), torch.Generator().manual_seed(5))
    twin = torch.Generator().manual_seed(5)
    noise = normal((8, 1, 2, 2), 0.5, 0.25, twin, "cpu").clamp(0, 1)
    picks = uniform((8,), 0.0, 1.0, twin, "cpu")
    for row, k in enumerate(classes.tolist()):
        if k == 1:
            torch.testing.assert_close(x[row], noise[row])
        else:
            slot = int(picks[row] * pooled.pool.filled[k])
            assert torch.all(x[row] == 10.0 * (k + 1) + slot), (row, x[row], slot)
    assert {int(picks[r] * 2) for r in (0, 3, 6, 7)} == {0, 1}  # both slots of class 0 drawn
    noise = _method(init="noise")
    _filled(noise)  # a pool does not matter with init=noise
    torch.testing.assert_close(
        noise.initial_images(classes, (1, 2, 2), torch.Generator().manual_seed(5)),
        normal((8, 1, 2, 2), 0.5, 0.25, torch.Generator().manual_seed(5), "cpu").clamp(0, 1),
    )
    empty = _method(init="pool")
    torch.testing.assert_close(
        empty.initial_images(classes, (1, 2, 2), torch.Generator().manual_seed(5)),
        normal((8, 1, 2, 2), 0.5, 0.25, torch.Generator().manual_seed(5), "cpu").clamp(0, 1),
    )


def test_threshold_range_is_the_min_and_max_critic_value_in_eval_mode():
    winn = _method(variant="winn")
    _set(winn.critic, [[0.5, 0.0, -1.0, 1.0]], [0.3])
    values = winn.critic_values(X)
    winn.train()
    low, high = winn.threshold_range(X)
    assert (low, high) == pytest.approx((values.min().item(), values.max().item()))
    assert isinstance(low, float) and isinstance(high, float) and low < high
    assert winn.training  # the mode comes back


def test_icn_rows_are_langevin_on_the_class_evidence():
    settings = {"steps": 3, "step_size": 0.3, "noise": 0.05}
    for form in ("kplus1", "one_vs_rest"):
        method = _method(icn_form=form, langevin=settings)
        x = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(1))
        classes = torch.tensor([2, 0, 1])
        out = method.synthesise_rows(x, classes, torch.Generator().manual_seed(2))

        def evidence(model, images, k, method=method, form=form):
            return icn_evidence(method.icn_logits(images), k, form)

        expected = langevin(
            evidence,
            method,
            x,
            classes,
            LangevinSettings(**settings),
            torch.Generator().manual_seed(2),
        )
        torch.testing.assert_close(out, expected)
        assert not torch.equal(out, x)


def test_winn_rows_are_pixel_adam_towards_uniform_thresholds_in_the_critic_range():
    winn = _method(variant="winn", winn={"max_steps": 5, "lr": 0.05, "ce_weight": 0.3})
    _set(winn.critic, [[0.5, 0.0, -1.0, 1.0]], [0.3])
    x = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([2, 0, 1])
    out = winn.synthesise_rows(x, classes, torch.Generator().manual_seed(2), (-0.5, 1.5))
    threshold = uniform((3,), -0.5, 1.5, torch.Generator().manual_seed(2), "cpu")
    distance = {}

    def score(model, images, k):
        logits, critic = winn.logits_and_extra(images)
        distance["now"] = (critic - threshold).abs().detach()
        return winn_score(logits, critic, k, threshold, 0.3)

    expected, _ = adam_synthesis(
        score,
        winn,
        x,
        classes,
        AdamSynthesisSettings(max_steps=5, lr=0.05, ce_weight=0.3),
        lambda: distance["now"],
    )
    torch.testing.assert_close(out, expected)
    assert not torch.equal(out, x)


def test_a_synthesis_round_draws_from_the_seeded_stream_in_chunks_into_the_pool():
    settings = {"steps": 2, "step_size": 0.3, "noise": 0.05}
    method = _method(
        icn_form="one_vs_rest",
        per_class=3,
        synthesis_batch=2,
        pictures_per_class=0,
        seed=7,
        langevin=settings,
    )
    method._trainer = _trainer(epoch=2, step=5)
    real = torch.rand(4, 1, 2, 2)
    new = method.synthesise(real)
    draws = generator_for(7, "introspective", 0, 2, 5)
    classes = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    x = normal((9, 1, 2, 2), 0.5, 0.25, draws, "cpu").clamp(0, 1)

    def evidence(model, images, k):
        return icn_evidence(method.icn_logits(images), k, "one_vs_rest")

    chunks = [
        langevin(
            evidence, method, x[i : i + 2], classes[i : i + 2], LangevinSettings(**settings), draws
        )
        for i in range(0, 9, 2)
    ]
    expected = torch.cat(chunks).view(3, 3, 1, 2, 2)
    torch.testing.assert_close(new, expected)
    assert method.pool.filled.tolist() == [3, 3, 3]
    for k in range(3):
        torch.testing.assert_close(method.pool.newest(k, 3), expected[k])


def test_a_winn_round_aims_at_thresholds_in_the_real_batchs_critic_range():
    winn = _method(
        variant="winn",
        per_class=2,
        synthesis_batch=4,
        pictures_per_class=0,
        seed=2,
        winn={"max_steps": 3, "lr": 0.05},
    )
    _set(winn.critic, [[0.5, 0.0, -1.0, 1.0]], [0.3])
    winn._trainer = _trainer(epoch=1, step=3)
    new = winn.synthesise(X)
    draws = generator_for(2, "introspective", 0, 1, 3)
    classes = torch.tensor([0, 0, 1, 1, 2, 2])
    x = winn.initial_images(classes, (1, 2, 2), draws)
    critic_range = winn.threshold_range(X)
    rows = [
        winn.synthesise_rows(x[i : i + 4], classes[i : i + 4], draws, critic_range) for i in (0, 4)
    ]
    torch.testing.assert_close(new, torch.cat(rows).view(3, 2, 1, 2, 2))
    assert not torch.equal(new.flatten(0, 1), x)


def test_gather_shares_of_one_process_is_its_own_share():
    method = _method(per_class=2)
    mine = torch.rand(3, 2, 1, 2, 2)
    assert method.gather_shares(mine, 1) is mine


# ------------------------------------------------------------------------------ the objective
def _filled(method, seed: int = 0) -> NegativePool:
    images = torch.rand(3, 2, 1, 2, 2, generator=torch.Generator().manual_seed(seed))
    method.pool.add(images)
    return method.pool


@pytest.mark.parametrize("variant, form", [("icn", "kplus1"), ("icn", "one_vs_rest"), ("winn", "")])
def test_each_batch_draws_its_negatives_from_the_seeded_pool_stream(variant, form):
    method = _method(
        variant=variant,
        icn_form=form or "kplus1",
        negative_fraction=0.6,  # 6 real rows: round(1.5 · 6) = 9 negatives
        negative_weight=0.7,
        critic_weight=0.3,
        gp_weight=2.0,
        label_smoothing=0.1,
        seed=5,
    )
    pool = _filled(method)
    _at_batch(method, epoch=3, batch=2)
    x = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(8))
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    out = method.training_objective((x, y))
    draws = generator_for(5, "introspective_negatives", 0, 3, 2)
    negatives, classes = pool.sample(9, draws)
    assert out.logs["negatives"].item() == 9.0
    logits = method(x)
    torch.testing.assert_close(out.logits, logits)
    if variant == "winn":
        mix = uniform((6,), 0.0, 1.0, draws, "cpu")
        penalty = gradient_penalty(method.critic_values, x, negatives[:6], mix)
        real, fake = method.critic_values(x), method.critic_values(negatives)
        loss, ce, critic = winn_loss(logits, y, real, fake, penalty, 0.3, 2.0, 0.1)
        assert set(out.logs) == {"negatives", "ce", "critic", "gp", "wasserstein"}
        torch.testing.assert_close(out.logs["critic"], critic)
        torch.testing.assert_close(out.logs["gp"], penalty)
        torch.testing.assert_close(out.logs["wasserstein"], real.mean() - fake.mean())
    elif form == "kplus1":
        icn = method.icn_logits
        loss, ce, negative = kplus1_loss(icn(x), y, icn(negatives), 0.7, 0.1)
        assert set(out.logs) == {"negatives", "ce", "negative_loss"}
        torch.testing.assert_close(out.logs["negative_loss"], negative)
    else:
        loss, ce, negative = one_vs_rest_loss(logits, y, method(negatives), classes, 0.7, 0.1)
        torch.testing.assert_close(out.logs["negative_loss"], negative)
    torch.testing.assert_close(out.loss, loss)
    torch.testing.assert_close(out.logs["ce"], ce)
    assert not any(v.requires_grad for v in out.logs.values())


def test_winn_penalty_pairs_and_its_weight_zero():
    method = _method(variant="winn", gp_weight=0.0, critic_weight=0.5)
    x, negatives = torch.rand(4, 1, 2, 2), torch.rand(2, 1, 2, 2)
    draws = torch.Generator().manual_seed(1)
    out = method.introspective_loss(x, Y, negatives, torch.tensor([0, 1]), draws)
    assert out.logs["gp"].item() == 0.0
    assert torch.equal(draws.get_state(), torch.Generator().manual_seed(1).get_state())
    real, fake = method.critic_values(x), method.critic_values(negatives)
    expected, _, _ = winn_loss(method(x), Y, real, fake, x.new_zeros(()), 0.5, 0.0)
    torch.testing.assert_close(out.loss, expected)
    weighted = _method(variant="winn", gp_weight=3.0)
    draws = torch.Generator().manual_seed(1)
    out = weighted.introspective_loss(x, Y, negatives, torch.tensor([0, 1]), draws)
    mix = uniform((2,), 0.0, 1.0, torch.Generator().manual_seed(1), "cpu")
    penalty = gradient_penalty(weighted.critic_values, x[:2], negatives, mix)
    torch.testing.assert_close(out.logs["gp"], penalty)


def test_no_negatives_without_a_pool_or_a_fraction():
    method = _method(icn_form="one_vs_rest")
    _at_batch(method, epoch=0, batch=1)  # no synthesis
    out = method.training_objective((X, Y))
    assert out.logs["negatives"].item() == 0.0
    expected, _, _ = one_vs_rest_loss(method(X), Y, X[:0], Y[:0], 1.0)
    torch.testing.assert_close(out.loss, expected)
    none = _method(icn_form="one_vs_rest", negative_fraction=0.0)
    _filled(none)
    _at_batch(none, epoch=0, batch=1)
    assert none.training_objective((X, Y)).logs["negatives"].item() == 0.0


def test_training_step_remembers_the_batch_index():
    method = _method(icn_form="one_vs_rest")
    seen = []

    class Stop(Exception):
        pass

    def objective(batch):
        seen.append(method._batch_index)
        raise Stop

    method.training_objective = objective
    with pytest.raises(Stop):
        method.training_step((X, Y), 4)
    assert seen == [4]


# ------------------------------------------------------------------------------ pictures, state
def test_pictures_show_the_newest_images_of_each_class_in_rows(tmp_path):
    method = _method(per_class=3, pictures_per_class=2)
    assert method.save_pictures() is None  # no trainer
    _filled(method)
    method.pool.add(torch.rand(3, 2, 1, 2, 2, generator=torch.Generator().manual_seed(4)))
    method._trainer = _trainer(
        is_global_zero=True, checkpoint_callback=None, default_root_dir=str(tmp_path), loggers=[]
    )
    path = method.save_pictures()
    assert path == tmp_path / "pictures" / "pseudo_negatives_epoch000.png"
    tiles = torch.cat([method.pool.newest(k, 2) for k in range(3)])
    save_image(tiles, tmp_path / "expected.png", nrow=2, padding=1, pad_value=1.0)
    assert np.array_equal(
        np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "expected.png"))
    )
    few = _method(per_class=1, pictures_per_class=8)
    _filled(few)
    few._trainer = method._trainer
    path = few.save_pictures()
    assert Image.open(path).size == (1 * 3 + 1, 3 * 3 + 1)  # one column: min(8, per_class)
    off = _method(pictures_per_class=0)
    off._trainer = method._trainer
    assert off.save_pictures() is None


def test_the_pool_is_saved_in_checkpoints_and_restored():
    method = _method(pool_capacity=3)
    _filled(method)
    checkpoint = {}
    method.on_save_checkpoint(checkpoint)
    saved = checkpoint[POOL_STATE]
    assert torch.equal(saved["images"], method.pool.images)
    restored = _method(pool_capacity=3)
    restored.on_load_checkpoint(checkpoint)
    assert torch.equal(restored.pool.images, method.pool.images)
    assert restored.pool.filled.tolist() == [2, 2, 2]
    untouched = _method(pool_capacity=3)
    untouched.on_load_checkpoint({k: v for k, v in checkpoint.items() if k != POOL_STATE})
    assert len(untouched.pool) == 0


# ------------------------------------------------------------------------------ session-6 re-run
class _SquaredFeatures(LinearClassifier):
    """features(x) = flatten(x)²: a critic whose gradient depends on the interpolate, so the
    WINN penalty depends on the mixing weights (a linear critic's does not)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) ** 2


def test_winn_penalty_mixes_with_the_negatives_stream_and_weight_one_counts():
    torch.manual_seed(0)
    method = IntrospectiveTraining(
        _SquaredFeatures(WEIGHT, BIAS),
        variant="winn",
        negative_fraction=0.5,
        gp_weight=1.0,
        critic_weight=0.3,
        seed=4,
    )
    pool = _filled(method)
    _at_batch(method, epoch=1, batch=3)
    x = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(123)  # a mix from the global stream would differ
    out = method.training_objective((x, Y))
    draws = generator_for(4, "introspective_negatives", 0, 1, 3)
    negatives, _ = pool.sample(4, draws)
    mix = uniform((4,), 0.0, 1.0, draws, "cpu")
    penalty = gradient_penalty(method.critic_values, x, negatives, mix)
    assert penalty.item() > 0
    torch.testing.assert_close(out.logs["gp"], penalty)
    real, fake = method.critic_values(x), method.critic_values(negatives)
    expected, _, _ = winn_loss(method(x), Y, real, fake, penalty, 0.3, 1.0)
    torch.testing.assert_close(out.loss, expected)


def test_pool_negatives_take_the_batchs_dtype():
    method = _method(icn_form="one_vs_rest", negative_fraction=0.5, seed=1)
    images = torch.rand(
        3, 2, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    method.pool.add(images)  # e.g. a pool restored from a float64 run's checkpoint
    _at_batch(method, epoch=0, batch=1)
    out = method.training_objective((X, Y))
    draws = generator_for(1, "introspective_negatives", 0, 0, 1)
    negatives, classes = method.pool.sample(4, draws)
    assert out.loss.dtype == torch.float32
    expected, _, _ = one_vs_rest_loss(method(X), Y, method(negatives.float()), classes, 1.0)
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("rank", [0, 1])
def test_gather_shares_concatenates_the_ranks_shares_in_rank_order(rank):
    """Two processes, per_class = 5: rank 0 holds 3 images per class, rank 1 holds 2; each
    sends its share zero-padded to 3 (``all_gather`` stands in for the DDP collective)."""
    method = _method(per_class=5)
    shares = [torch.rand(3, n, 1, 2, 2, generator=torch.Generator().manual_seed(n)) for n in (3, 2)]
    padded = [torch.cat([s, s.new_zeros(3, 3 - s.shape[1], 1, 2, 2)], dim=1) for s in shares]
    sent = []

    def all_gather(tensor):
        sent.append(tensor.clone())
        return torch.stack([tensor if r == rank else padded[r] for r in range(2)])

    method.all_gather = all_gather
    gathered = method.gather_shares(shares[rank], 2)
    assert torch.equal(gathered, torch.cat(shares, dim=1))
    assert gathered.shape == (3, 5, 1, 2, 2)
    assert len(sent) == 1 and torch.equal(sent[0], padded[rank])


def test_threshold_range_over_two_processes_is_the_min_and_max_of_both():
    winn = _method(variant="winn")
    _set(winn.critic, [[0.5, 0.0, -1.0, 1.0]], [0.3])
    values = winn.critic_values(X)
    low, high = values.min().item(), values.max().item()
    other = torch.tensor([low - 1.5, -(high - 0.25)])  # the other rank: lower min, lower max
    sent = []

    def all_gather(tensor):
        sent.append(tensor.clone())
        return torch.stack([tensor, other])

    winn._trainer = SimpleNamespace(global_rank=0, world_size=2)
    winn.all_gather = all_gather
    assert winn.threshold_range(X) == pytest.approx((low - 1.5, high))
    assert len(sent) == 1
    torch.testing.assert_close(sent[0], torch.tensor([low, -high]))


def test_a_rank_with_no_share_synthesises_nothing_and_takes_the_others_images():
    """per_class = 1 over two processes: rank 1's share is 0; it still joins the gather
    (``all_gather`` stands in for the DDP collective) and fills its pool with rank 0's images."""
    method = _method(per_class=1, pictures_per_class=0)
    method._trainer = SimpleNamespace(current_epoch=0, global_step=0, global_rank=1, world_size=2)
    theirs = torch.rand(3, 1, 1, 2, 2, generator=torch.Generator().manual_seed(6))
    sent = []

    def all_gather(tensor):
        sent.append(tensor.clone())
        return torch.stack([theirs, tensor])

    method.all_gather = all_gather
    new = method.synthesise(X)
    assert torch.equal(new, theirs)
    assert len(sent) == 1 and torch.equal(sent[0], torch.zeros(3, 1, 1, 2, 2))
    assert method.pool.filled.tolist() == [1, 1, 1]
    assert torch.equal(method.pool.images[:, :1], theirs)
