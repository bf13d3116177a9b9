"""Options and messages of the mixing methods that their behaviour tests leave at the
defaults (issue 15): mixup / CutMix defaults, bounds and exact
errors, α = 0 meaning no mixing, label smoothing and ERM options reaching the mixed loss, a
CutMix box cut at the left border; HydraMix's subset record in words, the option its missing
generator names, the seeding and options of a generated batch's masks, its batch errors word
for word, and a direct-mix checkpoint without a generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from robustlab.data.seeding import generator_for
from robustlab.errors import CheckpointError, ConfigError
from robustlab.losses import mixed_cross_entropy
from robustlab.methods import build_method
from robustlab.methods.hydramix import (
    HydraMix,
    batch_is_generated,
    load_generator,
    mix_direct,
    subset_label,
)
from robustlab.methods.mixing_masks import sample_masks
from robustlab.methods.sample_mixing import CutMix, Mixup, cutmix_box
from robustlab.models import build_classifier
from tests.helpers import LinearClassifier, quiet_cpu_trainer

FROZEN = {"name": "sgd", "lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0}


def linear(size: int = 4, scale: float = 0.1) -> LinearClassifier:
    weight = scale * torch.randn(3, size * size, generator=torch.Generator().manual_seed(0))
    return LinearClassifier(weight)


def test_mixing_defaults_alpha_one_prob_one_seed_zero():
    mixup = Mixup(linear(), optimizer=FROZEN, scheduler={"name": "constant"})
    assert (mixup.alpha, mixup.prob, mixup.seed) == (1.0, 1.0, 0)


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"alpha": -0.5},
            "method.alpha of cutmix must be >= 0 (Beta(alpha, alpha); 0 = no mixing), got -0.5",
        ),
        ({"prob": -0.1}, "method.prob of cutmix must be in [0, 1], got -0.1"),
        ({"seed": -1}, "method.seed must be an integer >= 0, got -1"),
        ({"seed": True}, "method.seed must be an integer >= 0, got True"),
        ({"seed": 1.0}, "method.seed must be an integer >= 0, got 1.0"),
    ],
)
def test_mixing_option_errors_word_for_word(options, message):
    with pytest.raises(ConfigError) as error:
        CutMix(linear(), **options)
    assert str(error.value) == message


def test_alpha_zero_is_no_mixing_and_small_alpha_is_allowed():
    rng = np.random.default_rng(0)
    none = Mixup(linear(), alpha=0)
    assert [none.mixing_weight(rng) for _ in range(5)] == [1.0] * 5
    assert 0 < Mixup(linear(), alpha=0.2).mixing_weight(np.random.default_rng(0)) < 1


def test_label_smoothing_and_erm_options_reach_the_mixed_loss():
    mixup = Mixup(linear(scale=3.0), label_smoothing=0.2, optimizer=FROZEN)
    assert mixup.label_smoothing == 0.2
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed = mixup.mix(x, y, mixup.draws(0))
    with torch.no_grad():
        out = mixup.training_objective((mixed.images, y, mixed))
        logits = mixup(mixed.images)
    smoothed = mixed_cross_entropy(logits, mixed.labels_a, mixed.labels_b, mixed.lam, 0.2)
    plain = mixed_cross_entropy(logits, mixed.labels_a, mixed.labels_b, mixed.lam)
    assert float(out.loss) == pytest.approx(float(smoothed), rel=1e-6)
    assert float(out.loss) != pytest.approx(float(plain), rel=1e-3)


def test_cutmix_box_is_cut_at_the_left_and_top_border():
    # λ = 0.75: a 4 × 4 box of an 8 × 8 image centred on (0, 1): rows -2…1, columns -1…2
    box = cutmix_box(8, 8, 0.75, (0, 1))
    assert (box.top, box.bottom, box.left, box.right) == (0, 2, 0, 3) and box.area == 6


def test_subset_label_names_every_field_of_the_record():
    record = {
        "dataset": "cifar10",
        "samples_per_class": 10,
        "val_fraction": 0.1,
        "subset_seed": 3,
        "hash": "1a2b",
    }
    assert subset_label(record) == (
        "cifar10, 10 per class, val_fraction 0.1, subset_seed 3, hash 1a2b"
    )
    del record["samples_per_class"]
    assert subset_label(record) == "cifar10, all images, val_fraction 0.1, subset_seed 3, hash 1a2b"


def test_a_missing_generator_is_an_error_naming_the_option(tmp_path):
    source = str(tmp_path / "no_stage1_run")
    with pytest.raises(CheckpointError) as error:
        load_generator(source)
    assert str(error.value).startswith(f"method.generator={source}: ")


# ------------------------------------------------------------------------------ HydraMix
GROUPS = torch.rand(4, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # B=4, N=3
LABELS = torch.tensor([2, 0, 1, 2]).repeat_interleave(3)


def hydramix(group_size: int | None = 3, **options) -> HydraMix:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, 1, (0.5,), (0.25,), width=4)
    method = build_method("hydramix", model, mix="direct", mix_prob=1.0, **options)
    method.group_size = group_size
    return method


def test_generated_batch_uses_the_masks_seeded_by_seed_rank_epoch_and_batch_and_its_options():
    """Masks from ``generator_for(seed, "hydramix_masks", rank, epoch, batch)`` with every mask
    option (here 2 × 2 grid cells)."""
    method = hydramix(seed=4, mask={"kind": "grid", "cells": 2})
    x, y, generated = method.training_batch((GROUPS.flatten(0, 1), LABELS), 5)
    draws = generator_for(4, "hydramix_masks", 0, 0, 5)
    masks = sample_masks("grid", 3, batch=4, size=(8, 8), generator=draws, cells=2)
    assert generated and y.tolist() == [2, 0, 1, 2]
    torch.testing.assert_close(x, mix_direct(GROUPS, masks), rtol=0, atol=0)


@pytest.mark.parametrize("group_size", [None, 1, 5])
def test_hydramix_batch_errors_word_for_word(group_size):
    with pytest.raises(ConfigError) as error:
        hydramix(group_size, mask={"kind": "grid"}).training_batch(
            (GROUPS.flatten(0, 1), LABELS), 0
        )
    assert str(error.value) == (
        "HydraMix needs batches of same-class groups (data.group_size >= 2), got 12 rows for "
        f"groups of {group_size}"
    )


def test_hydramix_mixed_class_group_error_word_for_word():
    labels = LABELS.clone()
    labels[4] = 1
    with pytest.raises(ConfigError) as error:
        hydramix(mask={"kind": "grid"}).training_batch((GROUPS.flatten(0, 1), labels), 0)
    assert str(error.value) == (
        "HydraMix groups must be of one class each (rows g·N … g·N+N−1 share a label); "
        "train with data.group_size=N"
    )


def test_direct_hydramix_checkpoints_without_a_generator():
    method = hydramix(mask={"kind": "grid"})
    loaded = {"state_dict": {"model.weight": torch.zeros(1)}}
    method.on_load_checkpoint(loaded)  # no generator: the state is left as it is
    assert list(loaded["state_dict"]) == ["model.weight"]
    saved: dict = {}
    method.on_save_checkpoint(saved)  # a checkpoint without a state dict (nothing to drop)
    assert "state_dict" not in saved and "robustlab" in saved


def test_batch_draw_is_one_uniform_seeded_by_seed_name_epoch_and_batch():
    for seed, epoch, batch in ((0, 0, 0), (3, 2, 7), (5, 1, 11)):
        uniform = float(torch.rand(1, generator=generator_for(seed, "hydramix", epoch, batch)))
        for p in (uniform - 1e-6, uniform + 1e-6):
            assert batch_is_generated(seed, epoch, batch, p) == (uniform < p)


def test_hydramix_defaults_and_erm_options():
    method = build_method(
        "hydramix", linear(), mix="direct", mask={"kind": "grid"}, label_smoothing=0.1
    )
    assert (method.seed, method.mix_prob, method.label_smoothing) == (0, 0.5, 0.1)
    assert method.generator is None and method.generator_subset is None
    with pytest.raises(ConfigError) as error:  # N is unknown until the datamodule sets it
        method.training_batch((GROUPS.flatten(0, 1), LABELS), 0)
    assert str(error.value).endswith("got 12 rows for groups of None")


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"mix": "pixels"},
            "method.mix must be one of ['generator', 'direct'], got 'pixels'",
        ),
        (
            {"mask": "grid"},
            "method.mask must be a mapping with a kind (grid, segmentation, soft_segmentation), "
            "got 'grid'",
        ),
        ({"seed": -1}, "method.seed must be an integer >= 0, got -1"),
        ({"seed": True}, "method.seed must be an integer >= 0, got True"),
        (
            {"mix": "generator"},
            "method.generator is required with method.mix=generator: set it to a stage-1 run "
            "folder or .ckpt (robustlab-train method=mix_generator ...), or use method.mix=direct "
            "(pixel-space mixing, no generator)",
        ),
        (
            {"mix": "generator", "generator": "/no/such/run"},
            "method.generator=/no/such/run: no such checkpoint file or run folder; train the "
            "generator first (robustlab-train method=mix_generator ... hydra.run.dir=<folder>) "
            "and pass that folder",
        ),
    ],
)
def test_hydramix_option_errors_word_for_word(options, message):
    options = {"mix": "direct", "mask": {"kind": "grid"}, **options}
    with pytest.raises((ConfigError, CheckpointError)) as error:
        HydraMix(linear(), **options)
    assert str(error.value) == message


def test_train_generated_is_the_image_weighted_epoch_fraction_of_generated_batches():
    """A real one-epoch fit, batches of 4 and 2 groups; seed 0 generates batch 0 only, so
    ``train/generated`` = 4 / 6 (an epoch value only, weighted by the batch's images)."""
    assert batch_is_generated(0, 0, 0, 0.5) and not batch_is_generated(0, 0, 1, 0.5)
    method = hydramix(seed=0, mask={"kind": "grid"})
    method.mix_prob = 0.5
    images = torch.rand(18, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2]).repeat_interleave(3)
    trainer = quiet_cpu_trainer(max_epochs=1, limit_val_batches=0)
    loader = DataLoader(TensorDataset(images, labels), batch_size=12)
    trainer.fit(method, train_dataloaders=loader)
    logged = trainer.callback_metrics
    assert float(logged["train/generated"]) == pytest.approx(4 / 6)
    assert "train/generated_step" not in logged and "train/generated_epoch" not in logged
