"""Augmentation policies (``data.augment.policy``, robustlab.data.policies): each op against
torchvision's per-image implementation on PIL images, the per-row draws (batch-size invariant,
seeded, mapped to ops as documented), Cutout's square, Random Erasing's box, the data module's
hook after crop/flip, config errors, and tiny runs from the shell."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as tv_autoaugment
from torchvision.transforms import functional as tv_functional

from robustlab.data import build_datamodule
from robustlab.data import policies as P
from robustlab.data.views import row_uniforms
from robustlab.errors import ConfigError
from tests.helpers import QUICK, quiet_cpu_trainer, results_of, run_app

#: torchvision's op names for ours.
TV_NAMES = {
    "identity": "Identity",
    "shear_x": "ShearX",
    "shear_y": "ShearY",
    "translate_x": "TranslateX",
    "translate_y": "TranslateY",
    "rotate": "Rotate",
    "brightness": "Brightness",
    "color": "Color",
    "contrast": "Contrast",
    "sharpness": "Sharpness",
    "posterize": "Posterize",
    "solarize": "Solarize",
    "auto_contrast": "AutoContrast",
    "equalize": "Equalize",
    "invert": "Invert",
}


def pil_image(seed: int = 0, size: int = 32):
    """A random RGB PIL image and the same pixels as a float batch of one."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels), torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


def levels(images: Tensor) -> Tensor:
    return (images * 255 + 0.5).floor().to(torch.int64)


def pil_levels(image) -> Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].to(torch.int64)


def tv_step(image, tv_name: str, magnitude: float):
    """torchvision's AutoAugment / TrivialAugmentWide step on a PIL image (nearest, black fill)."""
    return tv_autoaugment._apply_op(image, tv_name, magnitude, InterpolationMode.NEAREST, None)


def torchvision_op(image, name: str, magnitude: float):
    return tv_step(image, TV_NAMES[name], magnitude)


def ours(x: Tensor, name: str, magnitude: float) -> Tensor:
    return levels(P.OPS[name](x, torch.tensor([magnitude], dtype=torch.float64)))


def random_images(n: int = 12, size: int = 32, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=generator).float() / 255


# ---------------------------------------------------------------- ops vs torchvision
GEOMETRIC = (
    [("shear_x", m) for m in (0.3, -0.17, 0.99)]
    + [("shear_y", m) for m in (0.3, -0.17, 0.99)]
    + [("translate_x", m) for m in (14.5, -3.2, 16.0, -32.0)]
    + [("translate_y", m) for m in (14.5, -3.2, 16.0)]
    + [("rotate", m) for m in (30.0, -17.3, 90.0, 121.5, -108.0)]
)


@pytest.mark.parametrize("name,magnitude", GEOMETRIC)
def test_geometric_ops_equal_torchvision_on_pil_images(name, magnitude):
    """Shears (factor), translations (whole pixels, torchvision's int()), rotations (degrees,
    counter-clockwise): pixel for pixel, nearest sampling and black fill."""
    image, x = pil_image()
    assert torch.equal(ours(x, name, magnitude), pil_levels(torchvision_op(image, name, magnitude)))


LEVEL_OPS = [
    ("posterize", 8.0),
    ("posterize", 4.0),
    ("posterize", 2.0),
    ("solarize", 255.0),
    ("solarize", 238.0),  # an integer threshold: the level itself is inverted
    ("solarize", 127.5),
    ("solarize", 0.0),
    ("equalize", 0.0),
    ("invert", 0.0),
    ("identity", 0.0),
]


@pytest.mark.parametrize("name,magnitude", LEVEL_OPS)
def test_level_ops_equal_torchvision_on_pil_images(name, magnitude):
    image, x = pil_image(1)
    assert torch.equal(ours(x, name, magnitude), pil_levels(torchvision_op(image, name, magnitude)))


@pytest.mark.parametrize("name", ["brightness", "color", "contrast", "sharpness"])
def test_colour_blends_equal_torchvision_within_pil_rounding(name):
    """Factor ``1 + m`` for AutoAugment's (±0.9) and TrivialAugmentWide's (±0.99) extremes and
    between: within one level (PIL blends in integers), and most pixels exact."""
    image, x = pil_image(2)
    for magnitude in (0.9, -0.9, 0.99, -0.99, 0.33):
        diff = (ours(x, name, magnitude) - pil_levels(torchvision_op(image, name, magnitude))).abs()
        assert int(diff.max()) <= 1, (name, magnitude)
        assert float((diff == 0).float().mean()) > 0.4, (name, magnitude)


def test_auto_contrast_equals_torchvision_within_one_level():
    """On an image whose levels span [30, 200) the stretch is real: PIL truncates the stretched
    level where randaugment.auto_contrast rounds it, so they agree within one level."""
    from PIL import Image

    pixels = np.random.default_rng(3).integers(30, 200, (32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    expected = pil_levels(torchvision_op(Image.fromarray(pixels), "auto_contrast", 0.0))
    diff = ours(x, "auto_contrast", 0.0) - expected
    assert int(diff.min()) >= 0 and int(diff.max()) <= 1
    assert int(expected.amin()) == 0 and int(expected.amax()) >= 254  # stretched


def test_magnitude_bins_and_the_cifar10_policy_are_torchvisions():
    autoaugment = tv_autoaugment.AutoAugment(tv_autoaugment.AutoAugmentPolicy.CIFAR10)
    for size in ((32, 32), (24, 40)):
        space = autoaugment._augmentation_space(10, size)
        for name in P.OP_NAMES[1:]:
            expected, signed = space[TV_NAMES[name]]
            expected = expected.double().expand(10)
            assert torch.equal(P.magnitude_bins(name, 10, size, wide=False), expected), name
            assert (name in P.SIGNED) == signed, name
    wide = tv_autoaugment.TrivialAugmentWide()._augmentation_space(31)
    assert tuple(TV_NAMES[n] for n in P.TRIVIALAUGMENT_OPS) == tuple(wide)
    for name in P.TRIVIALAUGMENT_OPS:
        expected, signed = wide[TV_NAMES[name]]
        assert torch.equal(P.magnitude_bins(name, 31, (32, 32), True), expected.double().expand(31))
        assert (name in P.SIGNED) == signed, name
    ours_policy = [
        tuple((TV_NAMES[s.op], s.probability, s.bin) for s in pair) for pair in P.CIFAR10_POLICY
    ]
    assert ours_policy == [tuple(pair) for pair in autoaugment.policies]


# ---------------------------------------------------------------- whole policies per row
#: Ops that round differently from PIL (integer blends; AutoContrast truncates in PIL).
ROUNDED = {"Brightness", "Color", "Contrast", "Sharpness", "AutoContrast"}


def torchvision_autoaugment_row(image, u: Tensor):
    """The documented draw: sub-policy ``floor(25 u0)``; step j applied when ``u[1+2j] < p``,
    its signed magnitude negated when ``u[2+2j] < 1/2``; applied with torchvision on PIL.
    Returns the image and how many :data:`ROUNDED` ops ran."""
    autoaugment = tv_autoaugment.AutoAugment(tv_autoaugment.AutoAugmentPolicy.CIFAR10)
    space = autoaugment._augmentation_space(10, (image.size[1], image.size[0]))
    blends = 0
    for j, (name, p, bin_) in enumerate(autoaugment.policies[int(u[0] * 25)]):
        if u[1 + 2 * j] < p:
            magnitudes, signed = space[name]
            magnitude = float(magnitudes[bin_]) if bin_ is not None else 0.0
            magnitude = -magnitude if signed and u[2 + 2 * j] < 0.5 else magnitude
            image = tv_step(image, name, magnitude)
            blends += name in ROUNDED
    return image, blends


def torchvision_trivialaugment_row(image, u: Tensor):
    """Op ``floor(14 u0)``, bin ``floor(31 u1)``, negated when signed and ``u2 < 1/2``."""
    space = tv_autoaugment.TrivialAugmentWide()._augmentation_space(31)
    name = list(space)[int(u[0] * 14)]
    magnitudes, signed = space[name]
    magnitude = float(magnitudes[int(u[1] * 31)]) if magnitudes.ndim else 0.0
    magnitude = -magnitude if signed and u[2] < 0.5 else magnitude
    return tv_step(image, name, magnitude), int(name in ROUNDED)


@pytest.mark.parametrize(
    "policy,count,reference",
    [
        (P.AutoAugment(), 5, torchvision_autoaugment_row),
        (P.TrivialAugmentWide(), 3, torchvision_trivialaugment_row),
    ],
    ids=["autoaugment", "trivialaugment"],
)
def test_policy_rows_equal_torchvision_with_the_same_draws(policy, count, reference):
    """Every row equals torchvision's per-image policy fed the row's documented draws: exactly
    when no op that rounds differently ran (:data:`ROUNDED`), else within one level per such op
    on nearly every pixel (a following Equalize or Solarize may turn a one-level step into
    more)."""
    from PIL import Image

    x = random_images(n=48, seed=3)
    out = levels(policy(x, torch.Generator().manual_seed(5), lambda: (0.5,) * 3))
    u = row_uniforms(48, count, torch.Generator().manual_seed(5)).double()
    exact = changed = 0
    for i in range(48):
        image = Image.fromarray(levels(x[i]).permute(1, 2, 0).to(torch.uint8).numpy())
        expected, blends = reference(image, u[i])
        diff = (out[i] - pil_levels(expected)[0]).abs()
        if blends == 0:
            assert torch.equal(out[i], pil_levels(expected)[0]), i
            exact += 1
        else:
            assert float((diff <= blends).float().mean()) > 0.9, i
            assert float(diff.float().mean()) < blends, i
        changed += int(not torch.equal(out[i], levels(x[i])))
    assert exact > 12 and changed > 24  # most rows augmented, many without blends


POLICIES = {
    "cutout": P.Cutout(size=16),
    "random_erasing": P.RandomErasing(p=0.5),
    "autoaugment": P.AutoAugment(),
    "trivialaugment": P.TrivialAugmentWide(),
}


@pytest.mark.parametrize("name", list(POLICIES))
def test_policy_draws_are_per_row_seeded_and_independent_of_the_batch(name):
    policy = POLICIES[name]
    x = random_images(n=12)

    def draw(images, seed=0):
        return policy(images, torch.Generator().manual_seed(seed), lambda: (0.4, 0.5, 0.6))

    full = draw(x)
    assert full.shape == x.shape and float(full.min()) >= 0 and float(full.max()) <= 1
    assert torch.equal(draw(x[:5]), full[:5]), "a row depends on the batch size"
    changed = x.clone()
    changed[1:] = random_images(n=12, seed=7)[1:]
    assert torch.equal(draw(changed)[0], full[0]), "a row depends on the other images"
    assert torch.equal(draw(x), full)  # seeded
    same = draw(x[:1].expand(12, -1, -1, -1))
    assert len({tuple(v.flatten().tolist()) for v in same}) >= 6  # independent draws per row


# ---------------------------------------------------------------- Cutout and Random Erasing
def test_cutout_fills_exactly_a_square_of_its_side_cut_at_the_borders():
    x = 0.2 + 0.8 * random_images(n=64, size=20, seed=4)  # no zero pixels
    out = P.Cutout(size=8, fill=0)(x, torch.Generator().manual_seed(1), lambda: ())
    u = row_uniforms(64, 2, torch.Generator().manual_seed(1)).double()
    clipped = 0
    for i in range(64):
        cy, cx = int(u[i, 0] * 20), int(u[i, 1] * 20)
        rows = torch.arange(20)
        inside_rows = (rows >= cy - 4) & (rows < cy + 4)
        inside_cols = (rows >= cx - 4) & (rows < cx + 4)
        expected = inside_rows[:, None] & inside_cols[None, :]
        zero = (out[i] == 0).all(0)
        assert torch.equal(zero, expected), i
        assert torch.equal(out[i][:, ~expected], x[i][:, ~expected])  # the rest untouched
        side_r, side_c = int(inside_rows.sum()), int(inside_cols.sum())
        clipped += (side_r, side_c) != (8, 8)
        assert 4 <= side_r <= 8 and 4 <= side_c <= 8
    assert 0 < clipped < 64  # squares inside and cut at the border both occurred
    filled = P.Cutout(size=8)(x, torch.Generator().manual_seed(1), lambda: (0.1, 0.2, 0.3))
    grey = torch.tensor([0.1, 0.2, 0.3]).view(3, 1)
    assert torch.allclose(filled[0][:, (out[0] == 0).all(0)], grey)  # default fill: the mean


def test_random_erasing_box_follows_its_area_ratio_and_probability():
    h = w = 32
    x = 0.2 + 0.8 * random_images(n=400, size=32, seed=5)
    erasing = P.RandomErasing(p=0.5, value=0)
    out = erasing(x, torch.Generator().manual_seed(2), lambda: ())
    erased = (out == 0).all(1)  # (B, H, W)
    hit = erased.flatten(1).any(1)
    assert 0.42 < float(hit.float().mean()) < 0.58  # p = 1/2
    for i in torch.nonzero(hit).flatten().tolist():
        ys, xs = torch.nonzero(erased[i], as_tuple=True)
        top, left = int(ys.min()), int(xs.min())
        rows, cols = int(ys.max()) - top + 1, int(xs.max()) - left + 1
        assert rows * cols == len(ys)  # one axis-aligned rectangle
        assert rows < h and cols < w  # torchvision's fit rule, inside the image
        # sides are sqrt(s H W r) and sqrt(s H W / r) rounded: area and ratio within rounding
        assert 0.02 * h * w * 0.7 <= rows * cols <= 0.33 * h * w * 1.2
        assert 0.3 * 0.7 <= rows / cols <= 3.3 / 0.7
        assert torch.equal(out[i][:, ~erased[i]], x[i][:, ~erased[i]])
        # the same box erased by torchvision's per-image op
        reference = tv_functional.erase(x[i], top, left, rows, cols, torch.tensor(0.0))
        assert torch.equal(out[i], reference)
    noisy = P.RandomErasing(p=1.0)(x[:8], torch.Generator().manual_seed(2), lambda: ())
    box = (noisy != x[:8]).any(1)
    assert bool(box.flatten(1).any(1).all())
    values = noisy.permute(0, 2, 3, 1)[box]
    assert float(values.min()) >= 0 and float(values.max()) < 1 and len(values.unique()) > 50
    untouched = P.RandomErasing(p=0.0)(x[:8], torch.Generator().manual_seed(2), lambda: ())
    assert torch.equal(untouched, x[:8])


# ---------------------------------------------------------------- the data module's hook
class Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3 * 8 * 8, 4)
        self.batches: list[tuple[int, Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.batches.append((self.current_epoch, x.clone()))
        return F.cross_entropy(self.layer(x.flatten(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_training_batches_get_the_policies_after_crop_and_flip_seeded_per_step():
    augment = {"crop_padding": 1, "flip": True, "policy": ["trivialaugment", "cutout"]}
    augment["cutout"] = {"size": 4, "fill": 0}
    dm = build_datamodule(
        "synthetic",
        num_classes=4,
        image_size=8,
        channels=3,
        n_train=40,
        n_test=20,
        batch_size=10,
        val_fraction=0.0,
        augment=augment,
    )
    model = Recorder()
    trainer = quiet_cpu_trainer(max_epochs=2, use_distributed_sampler=False)
    trainer.fit(model, dm)
    assert len(model.batches) == 8
    images = dm._ensure_loaded().train.images[dm.train_index]
    sampler = dm.train_dataloader().sampler
    for position, (epoch, x) in enumerate(model.batches):
        step = position % 4
        sampler.set_epoch(epoch)
        cropped = dm.augment_batch(images[list(sampler)[step]], epoch, step).float() / 255
        assert torch.equal(x, dm.apply_policies(cropped, epoch, step))
        assert not torch.equal(x, cropped)
        assert int(((x == 0).all(1)).flatten(1).sum(1).min()) >= 4  # Cutout ran last
    assert not torch.equal(model.batches[0][1], model.batches[4][1])  # new draws each epoch


def test_policy_config_errors_name_the_key_and_the_fix():
    def data(**augment):
        return build_datamodule("synthetic", augment=augment)

    with pytest.raises(ConfigError, match="did you mean 'cutout'"):
        data(policy="cutuot")
    with pytest.raises(ConfigError, match="twice"):
        data(policy=["cutout", "cutout"])
    with pytest.raises(ConfigError, match="data.augment.cutout.size"):
        data(policy="cutout", cutout={"size": 0})
    with pytest.raises(ConfigError, match="did you mean 'size'"):
        data(policy="cutout", cutout={"sise": 8})
    with pytest.raises(ConfigError, match="value must be 'random' or 'mean', a number"):
        data(policy="random_erasing", random_erasing={"value": "noise"})
    with pytest.raises(ConfigError, match="scale"):
        data(policy="random_erasing", random_erasing={"scale": [0.5, 0.1]})
    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        data(policy="autoaugment", autoaugment={"policy": "cifar"})
    assert data(policy=None).policies == {}


# ---------------------------------------------------------------- from the shell
def test_every_policy_trains_from_the_shell(tmp_path):
    """One run on digits (1-channel: the colour ops see grey) with all four policies in order."""
    policies = "[cutout,random_erasing,autoaugment,trivialaugment]"
    proc = run_app(
        "train",
        f"data.augment.policy={policies}",
        "data.augment.cutout.size=8",
        "data.augment.random_erasing.p=1.0",
        "suite=[]",
        *QUICK,
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = results_of(tmp_path / "run")
    assert results["status"] == "ok" and math.isfinite(results["metrics"]["train/loss"])
    augment = results["config"]["data"]["augment"]
    assert augment["policy"] == policies[1:-1].split(",") and augment["cutout"]["size"] == 8


def test_cli_rejects_an_unknown_policy_in_one_line(tmp_path):
    proc = run_app("train", "data.augment.policy=autoaugmnt", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'autoaugment'" in lines[0], proc.stderr
