"""Named extra views (``data.views``) and same-class groups (``data.group_size``) of the data
modules: seeding, per-example draws, resume, group structure, exact DDP sharding, and toy
methods that train on them end to end."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.cli.train import train
from robustlab.data import build_datamodule
from robustlab.data import randaugment as ra
from robustlab.data.augment import crop_at
from robustlab.data.groups import GroupBatchSampler
from robustlab.data.views import (
    STRONG_UNIFORMS,
    VIEW_RECIPES,
    crop_padding_for,
    register_view,
    row_uniforms,
    strong,
    weak,
)
from robustlab.errors import ConfigError
from robustlab.methods import ERM
from robustlab.methods.erm import TrainingOutput
from tests.helpers import QUICK, compose_train, quiet_cpu_trainer, results_of, run_app

REPO = Path(__file__).resolve().parents[1]
VIEWS = ["weak", "strong"]


def synthetic(**kwargs):
    options = dict(num_classes=4, image_size=32, channels=3, n_train=80, n_test=20, batch_size=8)
    return build_datamodule("synthetic", **{**options, **kwargs})


def random_images(n: int = 8, size: int = 32, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def crops_and_flips(image: Tensor, padding: int) -> Tensor:
    """Every crop (offsets in {0..2p}^2) of one image, unflipped and flipped: (2(2p+1)^2, ...)."""
    side = 2 * padding + 1
    offsets = torch.cartesian_prod(torch.arange(side), torch.arange(side))
    crops = crop_at(image.expand(len(offsets), *image.shape), padding, offsets)
    return torch.cat([crops, crops.flip(3)])


# ---------------------------------------------------------------- views
def test_views_seeded_distinct_and_float():
    x = random_images()
    views = synthetic(views=VIEWS, seed=3).make_views(x, epoch=1, step=2)
    assert list(views) == VIEWS
    for view in views.values():
        assert view.shape == x.shape and view.dtype == torch.float32
        assert float(view.min()) >= 0 and float(view.max()) <= 1
    again = synthetic(views=VIEWS, seed=3).make_views(x, 1, 2)  # a new process, same seed
    assert all(torch.equal(views[n], again[n]) for n in VIEWS)
    other_seed = synthetic(views=VIEWS, seed=4).make_views(x, 1, 2)
    assert not any(torch.equal(views[n], other_seed[n]) for n in VIEWS)
    for epoch, step, rank in ((1, 3, 0), (2, 2, 0), (1, 2, 1)):  # every key moves the draw
        moved = synthetic(views=VIEWS, seed=3).make_views(x, epoch, step, rank)
        assert not torch.equal(views["weak"], moved["weak"])
    assert not torch.equal(views["weak"], views["strong"])  # independent draws per view
    assert not torch.equal(views["weak"], x.float() / 255)


def test_weak_view_is_a_per_example_crop_and_flip_of_its_own_image():
    """The contract: row i's view is a crop (padding size/8) + flip of image i alone, drawn
    from the (seed, view, rank, epoch, step) stream at row i — it depends on the row's position
    and the batch size, never on the content of the other images of the batch."""
    x = random_images(size=32)
    dm = synthetic(views=["weak"], seed=0)
    weak = dm.make_views(x, 0, 0)["weak"]
    assert crop_padding_for((32, 32)) == 4 and crop_padding_for((64, 64)) == 8
    for i in range(len(x)):
        candidates = crops_and_flips(x[i].float() / 255, 4)
        assert (candidates == weak[i]).flatten(1).all(1).any(), f"row {i} is no crop/flip of x[i]"
    changed = x.clone()
    changed[1:] = random_images(seed=9)[1:]  # other images of the batch replaced
    assert torch.equal(dm.make_views(changed, 0, 0)["weak"][0], weak[0])
    same = x[:1].expand(8, -1, -1, -1).contiguous()  # one image in every row: per-row draws
    rows = dm.make_views(same, 0, 0)["weak"]
    assert len({tuple(row.flatten().tolist()) for row in rows}) > 1


def test_registered_recipe_is_used_and_validation_names_the_closest():
    register_view("test_negative", lambda images, generator: 1 - images)
    try:
        views = synthetic(views=["test_negative"]).make_views(random_images(), 0, 0)
        assert torch.equal(views["test_negative"], 1 - random_images().float() / 255)
    finally:
        del VIEW_RECIPES["test_negative"]
    with pytest.raises(ConfigError, match=r"unknown data.views 'wek' \(did you mean 'weak'\?\)"):
        synthetic(views=["wek"])
    with pytest.raises(ConfigError, match="twice"):
        synthetic(views=["weak", "weak"])
    with pytest.raises(ConfigError, match="device_augment"):
        synthetic(views=["weak"], device_augment=False)


# ---------------------------------------------------------------- strong view: RandAugment, Cutout
def pil_image(seed: int = 0, size: tuple[int, int] = (24, 32)):
    """A random RGB PIL image (H, W) = ``size`` and the same pixels as a float batch of one."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels), torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


def levels(images: Tensor) -> Tensor:
    """Float [0, 1] images as int 8-bit levels (PIL's rounding)."""
    return (images * 255 + 0.5).floor().to(torch.int64)


def pil_levels(image) -> Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].to(torch.int64)


def one(value: float) -> Tensor:
    return torch.tensor([value])


def test_each_randaugment_op_agrees_with_pil_as_the_reference_applies_it():
    """The reference (CRLD) applies the pool with PIL to 8-bit images: the level ops and the
    geometric ops match PIL exactly, the blends to within PIL's integer rounding (one level)."""
    from PIL import Image, ImageEnhance, ImageOps

    image, x = pil_image()
    exact = {
        "solarize": (128.5, ImageOps.solarize(image, 128.5)),
        "posterize": (4.7, ImageOps.posterize(image, 4)),  # floor(4.7) bits
        "equalize": (0.3, ImageOps.equalize(image)),
        "auto_contrast": (0.3, ImageOps.autocontrast(image)),
        "identity": (0.3, image),
    }
    w, h = image.size
    for v in (0.23, -0.17):  # PIL maps output (x, y) to input via the affine coefficients
        exact[f"shear_x {v}"] = (v, image.transform(image.size, Image.AFFINE, (1, v, 0, 0, 1, 0)))
        exact[f"shear_y {v}"] = (v, image.transform(image.size, Image.AFFINE, (1, 0, 0, v, 1, 0)))
        exact[f"translate_x {v}"] = (
            v,
            image.transform((w, h), Image.AFFINE, (1, 0, v * w, 0, 1, 0)),
        )
        exact[f"translate_y {v}"] = (
            v,
            image.transform((w, h), Image.AFFINE, (1, 0, 0, 0, 1, v * h)),
        )
    for key, (magnitude, expected) in exact.items():
        op = getattr(ra, key.split()[0])
        assert torch.equal(levels(op(x, one(magnitude))), pil_levels(expected)), key
    square, xs = pil_image(1, (24, 24))
    for degrees in (90.0, 17.3, -25.0):  # counter-clockwise about the centre, black fill
        assert torch.equal(levels(ra.rotate(xs, one(degrees))), pil_levels(square.rotate(degrees)))
    enhancers = {
        "brightness": ImageEnhance.Brightness,
        "color": ImageEnhance.Color,
        "contrast": ImageEnhance.Contrast,
        "sharpness": ImageEnhance.Sharpness,
    }
    for name, enhancer in enhancers.items():
        for factor in (0.05, 0.4, 0.95):
            ours = levels(getattr(ra, name)(x, one(factor)))
            diff = (ours - pil_levels(enhancer(image).enhance(factor))).abs().max()
            assert diff <= 1, (name, factor)


def test_randaugment_ops_keep_the_properties_that_define_them():
    _, x = pil_image(2)
    # Solarize inverts exactly the pixels at or above the threshold and keeps the others.
    above = levels(x) >= 100
    out = ra.solarize(x, one(99.5))
    assert torch.equal(out[above], 1 - x[above]) and torch.equal(out[~above], x[~above])
    # Posterize keeps the top bits: 5 bits => multiples of 8, each level's own top bits.
    kept = levels(ra.posterize(x, one(5.9)))
    assert torch.equal(kept, levels(x) & 0b11111000) and (kept % 8 == 0).all()
    # Equalize spreads 16 equally frequent levels evenly over [0, 255]: a flat histogram.
    crowded = (100 + torch.arange(16).repeat_interleave(256)).view(1, 1, 64, 64).float() / 255
    spread = levels(ra.equalize(crowded, one(0))).unique()
    assert len(spread) == 16 and spread[0] == 0 and spread[-1] >= 239
    # equal counts => equal spacing: level j -> (step // 2 + 256 j) // step, step = 3840 // 255
    assert spread.tolist() == [min(255, (7 + 256 * j) // 15) for j in range(16)]
    assert set(spread.diff().tolist()) <= {16, 17, 18}
    # Identity is the identity; AutoContrast maps each channel's min to 0 and max to 1.
    assert torch.equal(ra.identity(x, one(0.7)), x)
    stretched = ra.auto_contrast(x * 0.5 + 0.2, one(0))
    assert torch.allclose(stretched.amin((2, 3)), torch.zeros(1, 3), atol=1e-6)
    assert torch.allclose(stretched.amax((2, 3)), torch.ones(1, 3), atol=1e-6)
    # Brightness scales, Color at 0 is grey, Contrast keeps the mean luma and scales deviations.
    assert torch.allclose(ra.brightness(x, one(0.3)), 0.3 * x)
    grey = ra.color(x, one(0.0))
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    low = ra.contrast(x, one(0.25))
    assert torch.allclose(ra.luma(low).mean(), ra.luma(x).mean(), atol=1e-6)
    assert torch.allclose(
        low - low.mean((2, 3), keepdim=True), 0.25 * (x - x.mean((2, 3), keepdim=True)), atol=1e-5
    )
    # Sharpness 0 is the smoothing filter: interior = (3x3 sum + 4 centre) / 13, border kept.
    soft = ra.sharpness(x, one(0.0))
    by_hand = (x[0, :, 4:7, 9:12].sum((1, 2)) + 4 * x[0, :, 5, 10]) / 13
    assert torch.allclose(soft[0, :, 5, 10], by_hand) and torch.equal(soft[..., 0, :], x[..., 0, :])
    assert torch.allclose(ra.sharpness(x, one(1.0)), x, atol=1e-6)
    # Translation moves content by floor(f W + 1/2) pixels and fills black.
    moved = ra.translate_x(x, one(0.1))  # 3.2 -> 3 pixels left
    assert torch.equal(moved[..., :-3], x[..., 3:]) and (moved[..., -3:] == 0).all()


def test_randaugment_maps_uniforms_to_op_and_magnitude_per_row():
    """Op j of row i is OPS[floor(14 u)] at low + (high - low) u': two rows, two recipes."""
    _, x = pil_image(3)
    batch = torch.cat([x, x.flip(3)])
    solarize, posterize, rotate = (
        ra.OP_NAMES.index("solarize"),
        ra.OP_NAMES.index("posterize"),
        ra.OP_NAMES.index("rotate"),
    )
    uniforms = torch.tensor(
        [
            [(solarize + 0.5) / 14, 0.5, (posterize + 0.2) / 14, 0.0],  # solarize 128, 4 bits
            [(rotate + 0.9) / 14, 1.0, (solarize + 0.1) / 14, 0.25],  # rotate 30, solarize 64
        ]
    )
    out = ra.rand_augment(batch, uniforms)
    assert torch.equal(out[0], ra.posterize(ra.solarize(x, one(128.0)), one(4.0))[0])
    expected = ra.solarize(ra.rotate(batch[1:], one(30.0)), one(64.0))[0]
    assert torch.equal(out[1], expected)
    assert len(ra.OPS) == 14 and len(set(ra.OP_NAMES)) == 14
    every = torch.arange(14)
    assert torch.equal(
        ra.magnitudes(every, torch.zeros(14)),
        torch.tensor([o.low for o in ra.OPS], dtype=torch.float64),
    )
    assert torch.allclose(
        ra.magnitudes(every, torch.ones(14)),
        torch.tensor([o.high for o in ra.OPS], dtype=torch.float64),
    )


def test_cutout_fills_exactly_one_square_with_the_fill_colour():
    x = torch.rand(4, 3, 32, 32) * 0.4  # no pixel can equal the fill colour
    uniforms = torch.tensor(
        [[0.5, 0.5, 0.5], [1.0, 0.5, 0.25], [0.0, 0.3, 0.3], [0.999, 0.99, 0.01]]
    )  # side round(16 u0), centre (32 u1, 32 u2), corner max(0, floor(centre - side / 2))
    out = ra.random_cutout(x, uniforms)
    fill = torch.tensor(ra.CUTOUT_FILL).view(3, 1, 1)
    expected = [(8, 12, 12), (16, 0, 8), (0, 0, 0), (16, 0, 23)]  # (side, top, left)
    for row, (side, top, left) in enumerate(expected):
        filled = (out[row] == fill).all(0)
        assert torch.equal(out[row][:, ~filled], x[row][:, ~filled])  # the rest untouched
        if side == 0:
            assert not filled.any()
            continue
        rows, cols = filled.nonzero(as_tuple=True)
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert filled.sum() == height * width, "the filled pixels form one rectangle"
        assert (int(rows.min()), int(cols.min())) == (top, left)
        assert height == side and width == min(side, 32 - left)  # cut at the right edge
    grey = ra.random_cutout(torch.zeros(1, 1, 8, 8), torch.tensor([[1.0, 0.5, 0.5]]))
    assert torch.allclose(grey.max(), (torch.tensor(ra.CUTOUT_FILL) * torch.tensor(ra.LUMA)).sum())


def test_strong_view_is_per_example_independent_of_batch_size_and_seeded():
    x = random_images(n=12).float() / 255

    def draw(images, seed=0):
        return strong(images, torch.Generator().manual_seed(seed))

    full = draw(x)
    assert full.shape == x.shape and float(full.min()) >= 0 and float(full.max()) <= 1
    assert torch.equal(draw(x[:5]), full[:5]), "a row's view depends on the batch size"
    weak_full = weak(x, torch.Generator().manual_seed(0))
    assert torch.equal(weak(x[:5], torch.Generator().manual_seed(0)), weak_full[:5])
    changed = x.clone()
    changed[1:] = random_images(n=12, seed=7)[1:].float() / 255
    assert torch.equal(draw(changed)[0], full[0]), "a row's view depends on the other images"
    assert torch.equal(draw(x), full)  # seeded
    assert not torch.equal(draw(x, seed=1), full)  # two draws differ ...
    assert all(
        not torch.equal(a, b) for a, b in zip(draw(x, seed=1), full, strict=True)
    )  # ... per row
    same = x[:1].expand(12, -1, -1, -1)
    assert len({tuple(v.flatten().tolist()) for v in draw(same)}) == 12  # per-row draws
    big = row_uniforms(300, STRONG_UNIFORMS, torch.Generator().manual_seed(0))
    assert torch.equal(big[:5], row_uniforms(5, STRONG_UNIFORMS, torch.Generator().manual_seed(0)))
    mnist_like = strong(torch.rand(3, 1, 28, 28), torch.Generator().manual_seed(0))
    assert mnist_like.shape == (3, 1, 28, 28)


class Recorder(pl.LightningModule):
    """Records every training batch; validation batches must stay (x, y)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.layer = torch.nn.Linear(in_features, num_classes)
        self.batches: list[tuple] = []

    def training_step(self, batch, batch_idx):
        x, y, views = batch
        self.batches.append(
            (self.current_epoch, x.clone(), {k: v.clone() for k, v in views.items()})
        )
        return F.cross_entropy(self.layer(x.flatten(1)), y)

    def validation_step(self, batch, batch_idx):
        assert len(batch) == 2, "validation batches carry no views"

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(
    dm, max_epochs: int, ckpt_path: str | None = None, save: Path | None = None, classes: int = 4
) -> Recorder:
    model = Recorder(3 * 8 * 8, classes)
    trainer = quiet_cpu_trainer(
        max_epochs=max_epochs, use_distributed_sampler=False, num_sanity_val_steps=0
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    if save is not None:
        trainer.save_checkpoint(save)
    return model


def test_views_in_training_batches_match_their_seeded_positions_and_survive_resume(tmp_path):
    def data():
        return synthetic(
            image_size=8,
            n_train=40,
            batch_size=10,
            val_fraction=0.25,
            views=VIEWS,
            augment={"crop_padding": 1, "flip": True},
        )

    dm = data()
    full = _fit(dm, max_epochs=2)
    assert len(full.batches) == 6
    images = dm._ensure_loaded().train.images[dm.train_index]
    sampler = dm.train_dataloader().sampler
    for position, (epoch, x, views) in enumerate(full.batches):
        step = position % 3
        sampler.set_epoch(epoch)
        raw = images[list(sampler)[step]]
        assert torch.equal(x, dm.augment_batch(raw, epoch, step).float() / 255)
        expected = dm.make_views(raw, epoch, step)
        assert all(torch.equal(views[n], expected[n]) for n in VIEWS)
        assert not torch.equal(views["weak"], x) and not torch.equal(views["strong"], x)
    # resume at the epoch boundary in a fresh datamodule: epoch 1's views are the same
    _fit(data(), max_epochs=1, save=tmp_path / "epoch0.ckpt")
    resumed = _fit(data(), max_epochs=2, ckpt_path=str(tmp_path / "epoch0.ckpt"))
    assert [epoch for epoch, *_ in resumed.batches] == [1, 1, 1]
    for (_, x, views), (_, x_full, views_full) in zip(
        resumed.batches, full.batches[3:], strict=True
    ):
        assert torch.equal(x, x_full)
        assert all(torch.equal(views[n], views_full[n]) for n in VIEWS)


def test_file_datasets_get_views_from_the_decoded_images(tmp_path):
    """Image files are decoded in the DataLoader; with views, the crop/flip of x moves to the
    device too (device_augment=auto), so x and the views are drawn from the same images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for split in ("train", "val"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")

    def data(**kwargs):
        options = dict(root=tmp_path, batch_size=3, augment={"crop_padding": 1, "flip": True})
        return build_datamodule("imagefolder", **options, **kwargs)

    assert not data().device_augment_active  # without views: PIL transforms in the workers
    dm = data(views=VIEWS)
    assert dm.device_augment_active and not dm.is_tensor_resident
    recorded = _fit(dm, max_epochs=1, classes=2).batches
    assert len(recorded) == 2
    sampler = dm.train_dataloader().sampler
    sampler.set_epoch(0)
    decoded = dm._ensure_loaded().train.items(dm.train_index)
    for step, (positions, (_, x, views)) in enumerate(zip(sampler, recorded, strict=True)):
        raw = torch.stack([decoded[int(i)][0] for i in positions])
        assert torch.equal(x, dm.augment_batch(raw, 0, step))
        expected = dm.make_views(raw, 0, step)
        assert all(torch.equal(views[n], expected[n]) for n in VIEWS)


# ---------------------------------------------------------------- groups
def imbalanced_labels() -> Tensor:
    """Class k has 5 + 3k samples (5, 8, 11, 14), interleaved."""
    labels = torch.cat([torch.full((5 + 3 * k,), k) for k in range(4)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def test_groups_are_same_class_distinct_cover_the_classes_and_reshuffle():
    labels, n = imbalanced_labels(), 3
    sampler = GroupBatchSampler(labels, n, batch_size=2, seed=1)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert all(len(b) == 2 * n for b in batches[:-1]) and len(batches) == len(sampler)
        groups = torch.cat(batches).view(-1, n)  # group-major rows
        assert (labels[groups] == labels[groups][:, :1]).all(), "a group mixes classes"
        assert len(groups.flatten().unique()) == groups.numel(), "an image appears twice"
        per_class = torch.bincount(labels[groups[:, 0]], minlength=4).tolist()
        assert per_class == [5 // n, 8 // n, 11 // n, 14 // n]  # floor(n_k / N) groups each
        epochs.append(groups)
    assert not torch.equal(epochs[0], epochs[1]), "groups must be redrawn every epoch"
    again = GroupBatchSampler(labels, n, batch_size=2, seed=1)
    again.set_epoch(1)
    assert torch.equal(torch.cat(list(again)).view(-1, n), epochs[1])


def test_group_repeats_draw_with_replacement_and_small_classes_need_them():
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1])  # class 0 has 2 images
    with pytest.raises(ConfigError, match="class 0 has only 2 training images.*group_repeats=true"):
        GroupBatchSampler(labels, 3, batch_size=1)
    sampler = GroupBatchSampler(labels, 3, batch_size=1, repeats=True, seed=0)
    groups = torch.cat(list(sampler)).view(-1, 3)
    assert sorted(labels[groups[:, 0]].tolist()) == [0, 1, 1]  # ceil(n_k / N) groups per class
    assert (labels[groups] == labels[groups][:, :1]).all()
    class0 = groups[labels[groups[:, 0]] == 0][0]
    assert len(class0.unique()) < 3, "3 draws from 2 images must repeat one"


def test_groups_shard_exactly_over_ranks():
    labels, n, world = imbalanced_labels(), 2, 2
    total = GroupBatchSampler(labels, n, batch_size=3, seed=4)  # 2+4+5+7 = 18 groups
    for epoch in range(2):
        total.set_epoch(epoch)
        all_groups = {tuple(g) for g in total.groups().tolist()}
        shards = []
        for rank in range(world):
            sampler = GroupBatchSampler(
                labels, n, batch_size=3, seed=4, rank=rank, world_size=world, drop_last=True
            )
            sampler.set_epoch(epoch)
            shards.append([tuple(g) for g in torch.cat(list(sampler)).view(-1, n).tolist()])
        assert len(shards[0]) == len(shards[1]) == 9  # whole groups, equal counts
        assert not set(shards[0]) & set(shards[1]), "ranks share a group"
        assert set(shards[0]) | set(shards[1]) == all_groups  # 18 groups, none left out
        images = [i for shard in shards for g in shard for i in g]
        assert len(images) == len(set(images)), "an image is on two ranks"


def test_datamodule_groups_with_n_shot_subsets_and_views():
    dm = synthetic(samples_per_class=5, group_size=3, batch_size=2, views=["weak"], val_fraction=0)
    loader = dm.train_dataloader()
    assert len(loader) == 2  # 4 classes x floor(5/3) groups, 2 groups per batch
    labels = dm._ensure_loaded().train.labels[dm.train_index]
    seen = []
    for positions in loader.sampler:
        assert len(positions) == 6
        seen.append(labels[positions].view(2, 3))
    seen = torch.cat(seen)
    assert (seen == seen[:, :1]).all() and sorted(seen[:, 0].tolist()) == [0, 1, 2, 3]
    x, y = next(iter(loader))
    assert x.shape == (6, 3, 32, 32) and y.shape == (6,)
    with pytest.raises(ConfigError, match="samples_per_class=2"):
        synthetic(samples_per_class=2, group_size=3)
    assert synthetic(samples_per_class=2, group_size=3, group_repeats=True).group_size == 3
    with pytest.raises(ConfigError, match="group_size must be an integer >= 1"):
        synthetic(group_size=0)
    with pytest.raises(ConfigError, match=r"class 0 \('class_0'\) has only 20"):
        synthetic(group_size=21, val_fraction=0).setup("fit")  # known once the data is read


class GroupMean(ERM):
    """A toy group-aware method: the logits of a group's N same-class images are averaged and
    scored with the group's one label, ``L = CE(mean_n f(x_gn), y_g)``."""

    needs_groups = True

    def __init__(self, model, group_size: int, **kwargs):
        super().__init__(model, **kwargs)
        self.group_size = group_size
        self.groups_seen = 0

    def training_objective(self, batch: tuple) -> TrainingOutput:
        x, y, *_ = batch
        groups = y.view(-1, self.group_size)  # (B, N): rows are group-major
        if not (groups == groups[:, :1]).all():
            raise AssertionError(f"batch is not made of same-class groups: {groups}")
        logits = self(x)
        group_logits = logits.view(*groups.shape, -1).mean(1)
        self.groups_seen += len(groups)
        return TrainingOutput(self.task_loss(group_logits, groups[:, 0]), logits)


class TwoViews(ERM):
    """A toy two-view method: ``L = CE(f(weak), y) + CE(f(strong), y)``; it checks that the
    views are new draws of the batch's images (never the training ``x`` itself)."""

    required_views = ("weak", "strong")

    def training_objective(self, batch: tuple) -> TrainingOutput:
        x, y, views = batch
        assert set(views) == {"weak", "strong"} and not torch.equal(views["weak"], x)
        weak, strong = self(views["weak"]), self(views["strong"])
        return TrainingOutput(self.task_loss(weak, y) + self.task_loss(strong, y), weak)


GROUP_RUN = [
    "method.name=tests.test_views_groups:GroupMean",
    "+method.group_size=${data.group_size}",
    "data.group_size=3",
    "data.batch_size=4",
]


class GroupsSeen(pl.Callback):
    """Keeps the method's group count and the label shape of every training batch."""

    def __init__(self):
        self.groups_seen, self.label_shapes = 0, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.label_shapes.append(tuple(batch[1].shape))

    def on_train_end(self, trainer, pl_module):
        self.groups_seen = pl_module.groups_seen


def test_group_method_trains_end_to_end_on_digits(tmp_path):
    cfg = compose_train(*GROUP_RUN, "data.samples_per_class=5", *QUICK)
    seen = GroupsSeen()
    results = train(cfg, tmp_path, extra_callbacks=(seen,))
    # 10 classes x floor(5/3) = 10 groups an epoch, 4 groups a batch, the last 2 dropped
    assert seen.label_shapes == [(12,), (12,)] and seen.groups_seen == 8
    assert torch.isfinite(torch.tensor(results.metrics["train/loss"]))
    assert "test/acc" in results.metrics  # tested as a plain classifier


def test_two_view_method_trains_end_to_end_on_digits(tmp_path):
    cfg = compose_train(
        "method.name=tests.test_views_groups:TwoViews", "data.views=[weak,strong]", *QUICK
    )
    results = train(cfg, tmp_path)
    assert torch.isfinite(torch.tensor(results.metrics["train/loss"]))
    assert "test/acc" in results.metrics  # validation and test batches stayed (x, y)


def test_group_method_runs_under_ddp_cpu(tmp_path):
    proc = run_app(
        "train",
        "trainer=ddp_cpu",
        *GROUP_RUN,
        *QUICK,
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
        env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = results_of(tmp_path / "run")
    assert results["provenance"]["world_size"] == 2 and results["status"] == "ok"


def test_cli_rejects_an_unknown_view_in_one_line(tmp_path):
    proc = run_app("train", "data.views=[wek]", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'weak'" in lines[0], proc.stderr
