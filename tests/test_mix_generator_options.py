"""The mixing-generator stage's plumbing (robustlab.methods.mix_generator), in-process on a tiny
generator: two real SGD steps against a hand-written step (masks and the real-image draw
from the documented seed, the weighted generator loss, the discriminator loss on the detached
mix, each part updated by its own gradients only), the pictures, the parts it exports and
optimises, and every option error word for word. (The losses: tests/test_mix_generator.py.)"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlab.data.seeding import generator_for
from robustlab.losses import reconstruction_laplacian_loss
from robustlab.methods import MixGenerator
from robustlab.methods.mix_generator import GENERATOR_FACTORY, PALETTE
from robustlab.methods.mixing_masks import sample_masks
from tests.helpers import error_message, quiet_cpu_trainer

SGD = {
    "name": "sgd",
    "lr": 0.05,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "scheduler": {"name": "constant"},
}
G_SGD = {**SGD, "lr": 1e-4}  # the generator's loss carries 1000 · MSE
TINY = {"ngf": 2, "n_blocks": 1, "image_size": 32}
# 8 one-channel 8 × 8 images in same-class pairs (group-major): classes 0, 1, 1, 0
IMAGES = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 0, 1, 1, 1, 1, 0, 0])
SEGMENTS = torch.randint(0, 4, (8, 8, 8), generator=torch.Generator().manual_seed(9))


def _data_model(channels: int = 1) -> nn.Module:
    """What the run's model group builds; the stage reads only its input channels."""
    model = nn.Identity()
    model.in_channels = channels
    return model


def _stage(seed: int = 3, **options) -> MixGenerator:
    torch.manual_seed(0)
    defaults = {
        "generator": TINY,
        "discriminator": {"ndf": 2},
        "optimizer": None,
        "scheduler": None,
        "optimizers": {"generator": G_SGD, "discriminator": SGD},
        "pictures_every": 0,
        "seed": seed,
    }
    return MixGenerator(_data_model(), **{**defaults, **options})


# ------------------------------------------------------------------------------ the step
def _expected_step(stage, images, masks, choice, weights, levels, lr=(1e-4, 0.05)):
    """One generator then one discriminator SGD step, written out: returns the losses and the
    parts' weights after the step (the stage's own modules are not touched)."""
    generator, discriminator = stage.generator, stage.discriminator
    groups, sources = images.shape[:2]
    flat = images.flatten(0, 1)
    targets = (2 * generator.working(flat) - 1).view(groups, sources, -1, 32, 32)
    features = generator.encode(flat)
    reconstructions = (2 * generator.decode(features) - 1).view_as(targets)
    features = features.view(groups, sources, *features.shape[1:])
    mixed = 2 * generator.decode(generator.mix(features, generator.feature_masks(masks))) - 1
    rec = (reconstructions - targets).pow(2).flatten(2).mean(2).mean(0).sum()
    lap = reconstruction_laplacian_loss(reconstructions, targets, levels)
    adv = (discriminator(mixed) - 1).pow(2).mean()
    g_loss = weights[0] * rec + weights[1] * lap + weights[2] * adv
    g_grads = torch.autograd.grad(g_loss, list(generator.parameters()))
    real = targets[torch.arange(groups), choice].detach()
    d_loss = (discriminator(real) - 1).pow(2).mean() + discriminator(mixed.detach()).pow(2).mean()
    d_grads = torch.autograd.grad(d_loss, list(discriminator.parameters()))
    with torch.no_grad():
        for p, g in zip(generator.parameters(), g_grads, strict=True):
            p -= lr[0] * g
        for p, g in zip(discriminator.parameters(), d_grads, strict=True):
            p -= lr[1] * g
    logs = {"g_loss": g_loss, "d_loss": d_loss, "reconstruction_mse": rec, "laplacian": lap}
    return {**logs, "adversarial": adv}


def _fit_recording(stage, epochs: int = 1):
    outputs = []
    objective = stage.training_objective

    def recording(batch):
        out = objective(batch)
        outputs.append(out)
        return out

    stage.training_objective = recording
    stage.group_size = 2  # the datamodule's data.group_size when the run fits

    def with_segments(rows):  # (x, y, {"segments": ...}) as the data module gives them
        x, y, segments = (torch.stack(column) for column in zip(*rows, strict=True))
        return x, y, {"segments": segments}

    dataset = TensorDataset(IMAGES, LABELS, SEGMENTS)
    loader = DataLoader(dataset, batch_size=4, shuffle=False, collate_fn=with_segments)
    trainer = quiet_cpu_trainer(
        max_epochs=epochs, devices=1, num_sanity_val_steps=0, precision="64-true"
    )
    trainer.fit(stage, loader)
    return outputs


@pytest.mark.parametrize(
    "options, weights, levels",
    [
        ({}, (1000.0, 1.0, 1.0), 3),
        (
            {
                "reconstruction_weight": 7.0,
                "laplacian_weight": 0.5,
                "adversarial_weight": 3.0,
                "laplacian_levels": 2,
                "mask": {"kind": "grid", "cells": 2},
            },
            (7.0, 0.5, 3.0),
            2,
        ),
        ({"mask": {"kind": "segmentation"}}, (1000.0, 1.0, 1.0), 3),
    ],
)
def test_two_sgd_steps_equal_the_hand_written_generator_then_discriminator_step(
    options, weights, levels
):
    stage = _stage(**options)
    reference = copy.deepcopy(stage).double()  # the fit runs in float64 (no drift in 4 steps)
    mask = dict(options.get("mask", {"kind": "grid", "cells": 4}))
    kind = mask.pop("kind")
    outputs = _fit_recording(stage, epochs=2)
    assert len(outputs) == 4
    for step, out in enumerate(outputs):
        epoch, batch = divmod(step, 2)
        draws = generator_for(3, "mix_generator", 0, epoch, batch)
        segments = SEGMENTS[4 * batch : 4 * batch + 4].view(2, 2, 8, 8)
        masks = sample_masks(
            kind, 2, batch=2, size=(8, 8), generator=draws, segments=segments, **mask
        )
        choice = torch.randint(0, 2, (2,), generator=draws)
        images = IMAGES[4 * batch : 4 * batch + 4].view(2, 2, 1, 8, 8).double()
        expected = _expected_step(reference, images, masks, choice, weights, levels)
        assert set(out.logs) == set(expected)
        for name, value in expected.items():
            torch.testing.assert_close(out.logs[name], value.detach(), msg=name)
            assert not out.logs[name].requires_grad
        torch.testing.assert_close(out.loss, (expected["g_loss"] + expected["d_loss"]).detach())
        assert out.logits is None
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(stage.state_dict()[name], value, msg=name)


def test_the_seed_changes_the_masks_and_the_real_draws():
    first = _fit_recording(_stage(seed=3))
    other_seed = _fit_recording(_stage(seed=4))
    assert not torch.equal(first[0].logs["g_loss"], other_seed[0].logs["g_loss"])
    assert not torch.equal(first[0].logs["d_loss"], other_seed[0].logs["d_loss"])


def test_grouped_splits_rows_into_groups_and_refuses_other_batches():
    stage = _stage()
    segments = torch.arange(8 * 8 * 8).view(8, 8, 8)
    stage.group_size = 2
    images, labels, parts = stage.grouped((IMAGES, LABELS, {"segments": segments}))
    assert images.shape == (4, 2, 1, 8, 8) and torch.equal(images[1, 0], IMAGES[2])
    assert labels.tolist() == [[0, 0], [1, 1], [1, 1], [0, 0]]
    assert parts.shape == (4, 2, 8, 8) and torch.equal(parts[3, 1], segments[7])
    assert stage.grouped((IMAGES, LABELS))[2] is None
    assert stage.grouped((IMAGES, LABELS, {}))[2] is None
    for size, rows in ((None, 8), (1, 8), (3, 8)):
        stage.group_size = size
        assert error_message(lambda rows=rows: stage.grouped((IMAGES[:rows], LABELS[:rows]))) == (
            "MixGenerator needs batches of same-class groups (data.group_size >= 2), got "
            f"8 rows for groups of {size}"
        )


def test_masks_are_the_configured_kind_for_the_group_size():
    stage = _stage(mask={"kind": "grid", "cells": 2})
    stage.group_size = 3
    masks = stage.masks(2, (8, 8), None, torch.Generator().manual_seed(5))
    expected = sample_masks(
        "grid", 3, batch=2, size=(8, 8), generator=torch.Generator().manual_seed(5), cells=2
    )
    assert torch.equal(masks, expected)
    labels = torch.randint(0, 3, (2, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    soft = _stage(mask={"kind": "soft_segmentation", "concentration": 0.3})
    soft.group_size = 3
    masks = soft.masks(2, (8, 8), labels, torch.Generator().manual_seed(5))
    expected = sample_masks(
        "soft_segmentation",
        3,
        batch=2,
        size=(8, 8),
        generator=torch.Generator().manual_seed(5),
        segments=labels,
        concentration=0.3,
    )
    assert torch.equal(masks, expected)


# ------------------------------------------------------------------------------ the pictures
def test_remember_groups_keeps_the_first_group_of_each_class_up_to_the_limit():
    stage = _stage(pictures_classes=2)
    images = IMAGES.view(4, 2, 1, 8, 8)
    labels = torch.tensor([[5, 5], [2, 2], [5, 5], [7, 7]])
    stage.remember_groups(images, labels, None)
    assert sorted(stage._picture_groups) == [2, 5]  # class 7 is over the limit
    assert torch.equal(stage._picture_groups[5][0], images[0])
    assert torch.equal(stage._picture_groups[2][0], images[1])
    assert stage._picture_groups[5][1] is None
    images[0].add_(1.0)  # kept copies, not views
    assert not torch.equal(stage._picture_groups[5][0], images[0])
    segments = torch.arange(4 * 2 * 8 * 8).view(4, 2, 8, 8)
    again = _stage(pictures_classes=5)
    again.remember_groups(IMAGES.view(4, 2, 1, 8, 8), labels, segments)
    assert sorted(again._picture_groups) == [2, 5, 7]
    assert torch.equal(again._picture_groups[7][1], segments[3])


def test_picture_rows_are_the_sources_the_coloured_mask_and_the_mix():
    stage = _stage(seed=6, mask={"kind": "grid", "cells": 2})
    stage.group_size = 3
    images = torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    stage._picture_groups = {4: (images[1], None), 1: (images[0], None)}
    tiles = stage.picture()
    assert tiles.shape == (2 * 5, 3, 8, 8) and tiles.dtype == torch.float32
    draws = generator_for(6, "mix_generator_pictures")
    masks = sample_masks("grid", 3, batch=2, size=(8, 8), generator=draws, cells=2)
    with torch.no_grad():
        mixed = stage.generator(images, masks)
    for row in range(2):  # classes in order: 1, then 4
        for source in range(3):
            assert torch.equal(tiles[5 * row + source], images[row, source].expand(3, 8, 8))
        colour = sum(masks[row, i, None] * PALETTE[i].view(3, 1, 1) for i in range(3))
        torch.testing.assert_close(tiles[5 * row + 3], colour.clamp(0, 1))
        torch.testing.assert_close(tiles[5 * row + 4], mixed[row].expand(3, 8, 8).clamp(0, 1))
    assert sorted(stage._picture_groups) == [1, 4]  # drawing does not forget them


def _fit_pictures(tmp_path, every: int, epochs: int, **options) -> MixGenerator:
    stage = _stage(pictures_every=every, pictures_classes=1, **options)
    stage.group_size = 2
    loader = DataLoader(TensorDataset(IMAGES, LABELS), batch_size=4, shuffle=False)
    trainer = quiet_cpu_trainer(
        max_epochs=epochs, devices=1, num_sanity_val_steps=0, default_root_dir=tmp_path
    )
    trainer.fit(stage, loader)
    return stage


def test_pictures_are_saved_every_k_epochs_on_rank_zero(tmp_path):
    stage = _fit_pictures(tmp_path / "three", every=3, epochs=3)
    pictures = sorted(p.name for p in (tmp_path / "three" / "pictures").iterdir())
    assert pictures == ["mixes_epoch002.png"]  # (epoch + 1) % 3 == 0: the third epoch only
    assert stage._picture_groups == {}
    # one class (row) of N = 2 sources, the mask and the mix: 4 tiles of 8 × 8, padding 1
    assert Image.open(tmp_path / "three" / "pictures" / "mixes_epoch002.png").size == (37, 10)
    _fit_pictures(tmp_path / "every", every=1, epochs=2)
    pictures = sorted(p.name for p in (tmp_path / "every" / "pictures").iterdir())
    assert pictures == ["mixes_epoch000.png", "mixes_epoch001.png"]


def test_picture_masks_of_segment_kinds_use_the_kept_segments():
    stage = _stage(seed=2, mask={"kind": "soft_segmentation", "concentration": 0.5})
    stage.group_size = 2
    images = torch.rand(2, 2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    segments = SEGMENTS[:4].view(2, 2, 8, 8)
    stage.remember_groups(images, torch.tensor([[3, 3], [1, 1]]), segments)
    tiles = stage.picture()
    draws = generator_for(2, "mix_generator_pictures")
    kept = torch.stack([segments[1], segments[0]])  # classes in order: 1, then 3
    masks = sample_masks(
        "soft_segmentation",
        2,
        batch=2,
        size=(8, 8),
        generator=draws,
        segments=kept,
        concentration=0.5,
    )
    for row in range(2):
        colour = sum(masks[row, i, None] * PALETTE[i].view(3, 1, 1) for i in range(2))
        torch.testing.assert_close(tiles[4 * row + 2], colour.clamp(0, 1))


# ------------------------------------------------------------------------------ parts, options
def test_parts_exported_and_optimised():
    stage = _stage(generator={**TINY, "decoder_blocks": False})
    kwargs = {**TINY, "decoder_blocks": False, "in_channels": 1}
    assert stage.generator_kwargs == kwargs
    parts = stage.exported_parts()
    assert list(parts) == ["generator"]
    assert parts["generator"].module is stage.generator
    assert parts["generator"].factory == GENERATOR_FACTORY
    assert parts["generator"].kwargs == kwargs
    optimised = stage.optimizer_parameters()
    assert list(optimised) == ["generator", "discriminator"]
    assert [id(p) for p in optimised["generator"]] == [id(p) for p in stage.generator.parameters()]
    assert [id(p) for p in optimised["discriminator"]] == [
        id(p) for p in stage.discriminator.parameters()
    ]
    convolutions = [m for m in stage.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert (convolutions[0].in_channels, convolutions[0].out_channels) == (1, 2)  # ndf = 2


def test_defaults_and_what_comes_from_the_data():
    stage = MixGenerator(
        _data_model(channels=3),
        generator=TINY,
        optimizer=None,
        scheduler=None,
        optimizers={"generator": SGD, "discriminator": SGD},
    )
    assert stage.mask_kind == "grid" and stage.mask_options == {}
    assert stage.weights == {"reconstruction": 1000.0, "laplacian": 1.0, "adversarial": 1.0}
    assert stage.laplacian_levels == 3
    assert (stage.pictures_every, stage.pictures_classes, stage.seed) == (1, 10, 0)
    assert stage.group_size is None
    assert stage.generator_kwargs["in_channels"] == 3
    assert stage.generator.encode(torch.rand(1, 3, 8, 8)).shape[1] == 4 * TINY["ngf"]
    no_channels = MixGenerator(
        nn.Identity(),
        generator=TINY,
        optimizer=None,
        scheduler=None,
        optimizers={"generator": SGD, "discriminator": SGD},
    )
    assert no_channels.generator_kwargs["in_channels"] == 3
    mask = {"kind": "grid", "cells": 2}
    stage = _stage(mask=mask)
    assert (stage.mask_kind, stage.mask_options) == ("grid", {"cells": 2})
    assert mask == {"kind": "grid", "cells": 2}  # the config is not changed


def test_setup_reads_the_group_size_when_fitting():
    stage = _stage()
    stage._trainer = SimpleNamespace(datamodule=SimpleNamespace(group_size=3))
    stage.setup("validate")
    assert stage.group_size is None
    stage.setup("fit")
    assert stage.group_size == 3 and isinstance(stage.group_size, int)
    stage.group_size = None
    stage._trainer = SimpleNamespace(datamodule=None)
    stage.setup("fit")
    assert stage.group_size is None


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"mask": {"cells": 2}},
            "method.mask must be a mapping with a kind (grid, segmentation, soft_segmentation), "
            "got {'cells': 2}",
        ),
        (
            {"mask": {"kind": 3}},
            "method.mask must be a mapping with a kind (grid, segmentation, soft_segmentation), "
            "got {'kind': 3}",
        ),
        (
            {"reconstruction_weight": -1},
            "method.reconstruction_weight must be a number >= 0, got -1",
        ),
        ({"laplacian_weight": True}, "method.laplacian_weight must be a number >= 0, got True"),
        ({"adversarial_weight": "1"}, "method.adversarial_weight must be a number >= 0, got '1'"),
        ({"laplacian_levels": 0}, "method.laplacian_levels must be an integer >= 1, got 0"),
        ({"laplacian_levels": 2.0}, "method.laplacian_levels must be an integer >= 1, got 2.0"),
        ({"pictures_every": -1}, "method.pictures_every must be an integer >= 0, got -1"),
        ({"pictures_classes": 0}, "method.pictures_classes must be an integer >= 1, got 0"),
        ({"seed": -1}, "method.seed must be an integer >= 0, got -1"),
        ({"seed": True}, "method.seed must be an integer >= 0, got True"),
        (
            {"generator": {**TINY, "in_channels": 1}},
            "method.generator.in_channels comes from the data; remove it",
        ),
        ({"mask": {"kind": "stripes"}}, "method.mask.kind must be one of"),
        ({"generator": {"ngff": 2}}, "method.generator does not take ['ngff']"),
        ({"discriminator": {"ndff": 2}}, "method.discriminator does not take ['ndff']"),
        (  # trainable names classifier parameters; the stage replaces the classifier
            {"trainable": "classifier"},
            "method.trainable selects classifier parameters; MixGenerator trains no classifier: "
            "set method.trainable=all",
        ),
    ],
)
def test_bad_options_are_config_errors_word_for_word(options, message):
    error = error_message(lambda: _stage(**options))
    prefix = message.endswith(("one of", "['ngff']", "['ndff']"))  # then the accepted values
    assert error.startswith(message) if prefix else error == message


def test_limits_are_accepted():
    stage = _stage(
        reconstruction_weight=0,
        laplacian_weight=0.0,
        adversarial_weight=0,
        laplacian_levels=1,
        pictures_every=0,
        pictures_classes=1,
        seed=0,
    )
    assert stage.weights == {"reconstruction": 0.0, "laplacian": 0.0, "adversarial": 0.0}
