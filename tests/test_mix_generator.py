"""HydraMix / ChimeraMix stage 1 (issue 13): the mixing generator, its losses, the
``mix_generator`` GAN stage (G and D alternate, both learn, resume, shell and DDP runs, the
exported generator) and the Felzenszwalb segments it mixes by (computed once, moved with x)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import robustlab.data.base as data_base
from robustlab.cli.train import train
from robustlab.data import build_datamodule
from robustlab.data.augment import random_crop_offsets
from robustlab.data.base import ImageDataModule, LoadedData
from robustlab.data.segments import (
    compact_labels,
    crop_and_flip_segments,
    default_scale,
    segment_images,
)
from robustlab.data.sources import ArraySource
from robustlab.errors import ConfigError
from robustlab.losses import (
    laplacian_loss,
    laplacian_pyramid,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    reconstruction_laplacian_loss,
    reconstruction_loss,
)
from robustlab.methods import MixGenerator
from robustlab.models.mixing_generator import (
    MixingGenerator,
    ResidualBlock,
    build_discriminator,
    build_mixing_generator,
)
from robustlab.run.checkpoints import load_checkpoint, load_module, recorded_subset
from tests.helpers import QUICK, InterruptAt, compose_train, results_of, run_app

TINY = {"ngf": 4, "n_blocks": 1, "image_size": 32}


def _generator(seed: int = 0, **kwargs) -> MixingGenerator:
    torch.manual_seed(seed)
    return build_mixing_generator(**{"in_channels": 3, **TINY, **kwargs})


# ------------------------------------------------------------------------------ the generator
def test_one_hot_masks_reproduce_the_plain_encoder_decoder():
    generator = _generator()
    images = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    plain = [generator.decode(generator.encode(images[:, i]), (16, 16)) for i in range(3)]
    for source in range(3):
        masks = torch.zeros(2, 3, 16, 16)
        masks[:, source] = 1
        mixed = generator(images, masks)
        assert mixed.shape == (2, 3, 16, 16)
        torch.testing.assert_close(mixed, plain[source], atol=1e-6, rtol=0)
    # a half/half mix of sources 0 and 1 is neither source's reconstruction
    half = torch.zeros(2, 3, 16, 16)
    half[:, :2] = 0.5
    mixed = generator(images, half)
    assert min((mixed - plain[i]).abs().max().item() for i in range(2)) > 1e-3


def test_mix_is_the_mask_weighted_sum_of_features_at_the_working_resolution():
    generator = _generator()
    images = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    masks = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    masks = torch.cat([masks, 1 - masks], dim=1)
    features = generator.encode(images[0]).unsqueeze(0)  # 16 px -> 32 px -> (1, 2, 16, 8, 8)
    assert features.shape == (1, 2, 16, 8, 8)
    pooled = F.avg_pool2d(masks, 2)  # 16 px masks on the 8×8 feature grid: 2×2 means
    torch.testing.assert_close(generator.feature_masks(masks), pooled)
    by_hand = generator.decode(
        pooled[:, :1] * features[:, 0] + pooled[:, 1:] * features[:, 1], (16, 16)
    )
    torch.testing.assert_close(generator(images, masks), by_hand, atol=1e-6, rtol=0)
    out = generator(images, masks)
    assert out.min() >= 0 and out.max() <= 1


def test_decoder_blocks_false_is_chimeramix_code_without_decoder_residual_blocks():
    paper, released = _generator(n_blocks=2), _generator(n_blocks=2, decoder_blocks=False)
    count = lambda module: sum(isinstance(m, ResidualBlock) for m in module.modules())  # noqa: E731
    assert (count(paper.encoder), count(paper.decoder)) == (2, 2)
    assert (count(released.encoder), count(released.decoder)) == (2, 0)


def test_patch_discriminator_scores_patches():
    scores = build_discriminator(3, ndf=4)(torch.rand(2, 3, 64, 64))
    assert scores.shape == (2, 1, 4, 4)  # one score per patch: 64 / 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 30}, "multiple of 4"),
        ({"image_size": 16}, ">= 32"),
        ({"ngf": 0}, "ngf must be an integer >= 1"),
        ({"decoder_blocks": "yes"}, "decoder_blocks must be true/false"),
    ],
)
def test_bad_generator_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_mixing_generator(**kwargs)


# ------------------------------------------------------------------------------ losses
def test_reconstruction_loss_is_1000_mse_per_source_summed():
    sources = torch.zeros(2, 2, 1, 2, 2)
    reconstructions = torch.zeros(2, 2, 1, 2, 2)
    reconstructions[:, 0] = 1.0  # source 0: every pixel off by 1 -> MSE 1
    reconstructions[0, 1, 0, 0, 0] = 2.0  # source 1: one of 8 pixels off by 2 -> MSE 4/8
    assert reconstruction_loss(reconstructions, sources).item() == pytest.approx(1000 * 1.5)
    assert reconstruction_loss(reconstructions, sources, weight=1).item() == pytest.approx(1.5)
    # non-zero sources (the error is x̂ − x, not x̂ + x) and a batch of 3 for 2 sources (the mean
    # runs over the batch, the sum over the sources): source 0 errors 1, 3, 2 -> mean of squares
    # 14/3; source 1 exact
    sources = torch.full((3, 2, 1, 1, 1), 0.5)
    reconstructions = sources.clone()
    reconstructions[:, 0, 0, 0, 0] = torch.tensor([1.5, 3.5, 2.5])
    assert reconstruction_loss(reconstructions, sources, weight=1).item() == pytest.approx(14 / 3)


def test_laplacian_loss_on_hand_computed_images():
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1  # ±1 checkers
    checker = checker.expand(1, 3, 16, 16)
    # the binomial blur [1,4,6,4,1]/16 of ±1 alternation is 0: level 0 is the image itself,
    # the deeper levels are 0, so the loss against black is mean |±1| = 1
    levels = laplacian_pyramid(checker)
    torch.testing.assert_close(levels[0], checker)
    assert all(level.abs().max() < 1e-6 for level in levels[1:])
    assert laplacian_loss(checker, torch.zeros_like(checker)).item() == pytest.approx(1.0)
    assert laplacian_loss(3 * checker, checker).item() == pytest.approx(2.0)
    # a constant shift is invisible to every band-pass level
    smooth = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert laplacian_loss(smooth + 0.3, smooth).item() == pytest.approx(0.0, abs=1e-6)
    pair = torch.stack([checker, checker], dim=1)
    total = reconstruction_laplacian_loss(pair * 3, pair)
    assert total.item() == pytest.approx(4.0)  # 2 per source


def test_least_squares_gan_losses():
    assert lsgan_generator_loss(torch.tensor([0.5, 1.5])).item() == pytest.approx(0.25)
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert lsgan_discriminator_loss(real, fake).item() == pytest.approx(0.5 + 0.5)
    # scores away from 0 and 1: mean (D(x) − 1)² = (0.25 + 0.09) / 2, mean D(G(z))² = (4 + 0.25) / 2
    real, fake = torch.tensor([0.5, 1.3]), torch.tensor([2.0, -0.5])
    assert lsgan_discriminator_loss(real, fake).item() == pytest.approx(0.17 + 2.125)


# ------------------------------------------------------------------------------ the stage
GENERATOR_OVERRIDES = [
    "method=mix_generator",
    "method.generator.ngf=4",
    "method.generator.n_blocks=1",
    "method.generator.image_size=32",
    "method.discriminator.ndf=4",
    "data.samples_per_class=6",
    "data.group_size=2",
    "data.batch_size=4",
    "test=false",
    "suite=[]",
]


def stage_cfg(*extra: str):
    return compose_train(*GENERATOR_OVERRIDES, *QUICK, *extra)


class _Steps(pl.Callback):
    """Which optimiser steps, in order; whether the other part has gradients at that moment;
    the parts' weights at the start and after the first batch."""

    def __init__(self):
        self.order: list[str] = []
        self.other_has_grad: list[bool] = []

    def on_train_start(self, trainer, pl_module):
        self.before = {k: v.clone() for k, v in pl_module.model.state_dict().items()}
        self.names = {id(o.optimizer): n for n, o in pl_module.optimizers_by_name().items()}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        name = self.names[id(optimizer)]
        other = pl_module.discriminator if name == "generator" else pl_module.generator
        self.order.append(name)
        self.other_has_grad.append(any(p.grad is not None for p in other.parameters()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.after_one = {k: v.clone() for k, v in pl_module.model.state_dict().items()}


def test_generator_and_discriminator_alternate_and_both_learn(tmp_path):
    steps = _Steps()
    results = train(stage_cfg(), tmp_path, extra_callbacks=(steps,))
    assert results.status == "ok"
    assert steps.order == ["generator", "discriminator"] * 3  # 3 batches
    assert steps.other_has_grad == [False] * 6  # each step trains only its own part
    for part in ("generator", "discriminator"):
        changed = [
            k
            for k, v in steps.before.items()
            if k.startswith(part) and not torch.equal(v, steps.after_one[k])
        ]
        assert changed, f"{part} did not change after one step"
    metrics = results_of(tmp_path)["metrics"]
    assert metrics["train/d_loss"] > 0 and metrics["train/reconstruction_mse"] > 0
    # g_loss = 1000·MSE + Laplacian + adversarial, epoch means of the same batches
    composed = (
        1000 * metrics["train/reconstruction_mse"]
        + metrics["train/laplacian"]
        + metrics["train/adversarial"]
    )
    assert metrics["train/g_loss"] == pytest.approx(composed, rel=1e-5)
    assert (tmp_path / "pictures" / "mixes_epoch000.png").is_file()


class _Final(pl.Callback):
    def on_fit_end(self, trainer, pl_module):
        self.weights = {k: v.clone() for k, v in pl_module.model.state_dict().items()}
        self.moments = {
            name: opt.optimizer.state_dict()["state"]
            for name, opt in pl_module.optimizers_by_name().items()
        }


def test_interrupted_stage_resumes_to_the_uninterrupted_result(tmp_path):
    two = ("trainer.max_epochs=2", "trainer.limit_train_batches=2", "method.pictures_every=0")
    full = _Final()
    train(stage_cfg(*two), tmp_path / "full", extra_callbacks=(full,))
    run_dir = tmp_path / "interrupted"
    with pytest.raises(SystemExit):
        train(stage_cfg(*two), run_dir, extra_callbacks=(InterruptAt(1, 0),))
    resumed = _Final()
    train(stage_cfg(*two, "resume=auto"), run_dir, extra_callbacks=(resumed,))
    for name, tensor in full.weights.items():
        assert torch.equal(resumed.weights[name], tensor), name
    for part, state in full.moments.items():
        for index, moments in state.items():
            for key, value in moments.items():
                again = torch.as_tensor(resumed.moments[part][index][key])
                assert torch.equal(again, torch.as_tensor(value)), (part, key)


def _shell_stage(tmp_path: Path, *extra: str):
    proc = run_app(
        "train", *GENERATOR_OVERRIDES, *QUICK, *extra, f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results_of(tmp_path)
    assert record["status"] == "ok" and record["robustness"] == []
    assert record["metrics"]["train/d_loss"] > 0
    return record


def test_stage_from_the_shell_exports_a_generator_stage_two_can_load(tmp_path):
    record = _shell_stage(tmp_path, "logger=[csv,wandb]")
    checkpoint = load_checkpoint(record["checkpoint"])
    generator = load_module(checkpoint, "generator")
    assert isinstance(generator, MixingGenerator) and generator.in_channels == 1
    assert recorded_subset(checkpoint)["images"] == 60  # 6 per class, digits' 10 classes
    images = torch.rand(2, 2, 1, 32, 32)
    masks = torch.zeros(2, 2, 32, 32)
    masks[:, 0] = 1
    with torch.no_grad():
        out = generator(images, masks)
    assert out.shape == (2, 1, 32, 32)
    assert (tmp_path / "pictures" / "mixes_epoch000.png").is_file()
    report = (tmp_path / "report.md").read_text()  # a stage without suites still reports
    assert "![pictures/mixes_epoch000.png](pictures/mixes_epoch000.png)" in report
    logged = list((tmp_path / "wandb").glob("offline-run-*/files/media/images/**/mixes_*.png"))
    assert len(logged) == 1  # the same picture, logged to wandb (offline)


def test_segmentation_stage_from_the_shell(tmp_path):
    """Needs ERM.check_requirements to accept data.segments as the 'segments' view."""
    _shell_stage(
        tmp_path,
        "method.mask.kind=segmentation",
        "method.mask.rule=chimeramix",
        "data.segments={}",
        "data.augment.crop_padding=2",
        "data.augment.flip=true",
    )


@pytest.mark.slow  # two processes: about 40 s on a loaded 2-core machine
def test_stage_under_ddp(tmp_path):
    _shell_stage(tmp_path, "trainer=ddp_cpu", "trainer.strategy=ddp_find_unused_parameters_true")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.group_size=null"], "set data.group_size=N"),
        (["test=true"], "set test=false"),
        (["method.mask.kind=soft_segmentation"], "['segments']: set data.segments={}"),
        (["method.generator.image_size=30"], "multiple of 4"),
        (["method.reconstruction_weight=-1"], "reconstruction_weight must be a number >= 0"),
        (["method.mask.kind=stripes"], "method.mask.kind must be one of"),
        (["data.segments={scale: -1}"], "data.segments.scale must be a number >= 0"),
    ],
)
def test_bad_stage_configs_are_found_before_any_data(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(stage_cfg(*overrides, "data=mnist", f"data.root={tmp_path}"), tmp_path)


def test_a_bad_stage_config_from_the_shell_is_one_line_exit_2(tmp_path):
    proc = run_app(
        "train",
        *GENERATOR_OVERRIDES,
        "method.mask.kind=segmentation",
        "data=mnist",  # not read: the check comes first (no MNIST files under tmp_path)
        f"data.root={tmp_path}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "set data.segments={}" in lines[0], lines


# ------------------------------------------------------------------------------ segments
def test_felzenszwalb_segments_of_a_hand_built_image():
    image = torch.zeros(1, 3, 12, 12, dtype=torch.uint8)
    image[..., 6:] = 200  # two flat halves
    labels = segment_images(image, scale=10, min_size=5, sigma=0.0)
    assert labels.shape == (1, 12, 12) and labels.dtype == torch.int64
    assert labels[0, :, :6].unique().tolist() == [0] and labels[0, :, 6:].unique().tolist() == [1]
    grey = segment_images(image[:, :1], scale=10, min_size=5, sigma=0.0)
    assert torch.equal(grey, labels)
    assert (default_scale((32, 32)), default_scale((96, 96))) == (60, 400)


def test_segments_follow_the_crop_and_flip_of_x_hand_checked():
    labels = torch.arange(9).view(1, 3, 3)
    # find a seed whose draws are: crop offset (0, 0) of the 1-padded image, then a flip
    for seed in range(200):
        twin = torch.Generator().manual_seed(seed)
        offsets = random_crop_offsets(1, 1, twin)
        flip = torch.rand(1, generator=twin) < 0.5
        if offsets.tolist() == [[0, 0]] and bool(flip):
            break
    moved = crop_and_flip_segments(labels, 1, True, torch.Generator().manual_seed(seed))
    # window rows/cols -1..1 of [[0,1,2],[3,4,5],[6,7,8]]: padding (segment 0), then ids
    # 0,1,3,4 renumbered 1..4, then flipped left-right
    assert moved.tolist() == [[[0, 0, 0], [2, 1, 0], [4, 3, 0]]]
    assert compact_labels(torch.tensor([[[5, 9], [9, 2]]])).tolist() == [[[1, 2], [2, 0]]]


class _Quadrants(ImageDataModule):
    """Images of four flat quadrants (values 40, 80, 120, 160 shifted per image), one class per
    two images; their Felzenszwalb segments are the quadrants."""

    name = "quadrants"

    def load_data(self) -> LoadedData:
        count = 16
        value = torch.tensor([[40, 80], [120, 160]]).repeat_interleave(8, 0).repeat_interleave(8, 1)
        images = (value + 5 * torch.arange(count).view(-1, 1, 1)).to(torch.uint8)
        images = images.unsqueeze(1).expand(count, 3, 16, 16).contiguous()
        source = ArraySource(images, torch.arange(count) % 2)
        return LoadedData(source, source, ["a", "b"], "quadrants")


def test_segments_are_computed_once_and_move_with_x_on_the_device(monkeypatch):
    calls = []
    timed = data_base.timed_segments
    monkeypatch.setattr(
        data_base, "timed_segments", lambda *a, **k: calls.append(1) or timed(*a, **k)
    )
    datamodule = _Quadrants(
        batch_size=4,
        val_fraction=0,
        segments={"scale": 1, "min_size": 4, "sigma": 0},
        augment={"crop_padding": 3, "flip": True},
        group_size=2,
    )
    datamodule.trainer = SimpleNamespace(
        training=True, current_epoch=0, global_rank=0, world_size=1
    )
    seen = 0
    for _ in range(2):  # two epochs' loaders, one segmentation
        for batch in datamodule.train_dataloader():
            x, y, views = datamodule.on_after_batch_transfer(batch, 0)
            segments = views["segments"]
            assert segments.shape == (len(x), 16, 16) and segments.dtype == torch.int64
            for image, labels in zip(x[:, 0], segments, strict=True):
                # same segment <=> same value in x (the padding is black and segment 0)
                pairs = set(zip(labels.flatten().tolist(), image.flatten().tolist(), strict=True))
                assert len(pairs) == len({s for s, _ in pairs}) == len({v for _, v in pairs})
                assert labels.unique().tolist() == list(range(len(labels.unique())))
                seen += 1
    assert calls == [1] and seen == 32
    assert datamodule.train_segments.shape == (16, 16, 16)


def test_bad_segment_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"data.segments: unknown key\(s\) \['k'\]"):
        build_datamodule("digits", segments={"k": 1})
    with pytest.raises(ConfigError, match="data.segments.scale must be a number >= 0"):
        build_datamodule("digits", segments={"scale": -1})
    with pytest.raises(ConfigError, match="set data.device_augment=auto or true"):
        build_datamodule("digits", segments={}, device_augment=False)


def test_method_declares_the_segments_view_for_segment_masks():
    assert MixGenerator.views_for({"mask": {"kind": "grid"}}) == ()
    assert MixGenerator.views_for({"mask": {"kind": "soft_segmentation"}}) == ("segments",)
