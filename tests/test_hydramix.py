"""HydraMix stage 2 (issue 13): the classifier on real or mixed same-class groups with a frozen
generator from a stage-1 run, N-shot subsets with their own seed and hash, N-shot epochs, and the
two-stage pipeline from the shell."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.cli.train import train
from robustlab.data import build_datamodule
from robustlab.data.subsets import EpochPasses, subset_hash
from robustlab.errors import CheckpointError, ConfigError
from robustlab.methods import GeneratorStage, HydraMix, TrainingOutput, build_method
from robustlab.methods.hydramix import batch_is_generated, mix_direct
from robustlab.models import build_classifier
from robustlab.results import Results, provenance
from robustlab.run.checkpoints import (
    ExportedPart,
    load_checkpoint,
    load_module,
    recorded_subset,
)
from robustlab.run.validation import validate_train
from tests.helpers import QUICK, compose_train, results_of, run_app

CONF = Path(__file__).resolve().parents[1] / "conf"


# ------------------------------------------------------------------------------ stand-ins
class StandInMixer(nn.Module):
    """The mixing generator's interface at toy size: ``forward(images (B, N, C, H, W), masks
    (B, N, H, W)) -> (B, C, H, W)`` in [0, 1]: the pixel mix, a 1×1 convolution, BatchNorm
    (whose running statistics would move if the frozen generator ran in training mode), sigmoid."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.conv = nn.Conv2d(in_channels, in_channels, 1)
        self.norm = nn.BatchNorm2d(in_channels)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.norm(self.conv(mix_direct(images, masks))))


def build_stand_in(in_channels: int = 1) -> StandInMixer:
    return StandInMixer(in_channels)


class StandInStage(GeneratorStage):
    """A stage 1 on same-class groups that trains :class:`StandInMixer` to reproduce a group's
    first image from a one-hot mask, and exports it as part ``generator``."""

    needs_groups = True

    def __init__(self, model: nn.Module, **erm):
        super().__init__(model, **erm)
        self.mixer = StandInMixer(model.in_channels)

    def exported_parts(self):
        kwargs = {"in_channels": self.mixer.in_channels}
        return {"generator": ExportedPart(self.mixer, "tests.test_hydramix:build_stand_in", kwargs)}

    def optimizer_parameters(self):
        return {"generator": self.mixer.parameters()}

    def training_objective(self, batch):
        x, _, *_ = batch
        images = x.view(-1, self.trainer.datamodule.group_size, *x.shape[1:])
        masks = torch.zeros(images.shape[:2] + images.shape[3:], device=x.device)
        masks[:, 0] = 1
        loss = F.mse_loss(self.mixer(images, masks), images[:, 0])
        optimizer = self.optimizers_by_name()["generator"]
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return TrainingOutput(loss.detach(), None)


#: the stand-in generator's factory lives in this module: subprocesses must import ``tests``
TESTS_IMPORTABLE = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
DATA = ["data.samples_per_class=8", "data.group_size=2", "data.batch_size=4"]


def stage1_cfg(*extra: str):
    return compose_train(
        "method.name=tests.test_hydramix:StandInStage",
        "method.optimizer=null",
        "method.scheduler=null",
        "method.optimizers={generator: {name: adam, lr: 0.05, weight_decay: 0}}",
        "test=false",
        "suite=[]",
        "model.width=4",
        *DATA,
        *QUICK,
        *extra,
    )


def stage2_overrides(generator, *extra: str) -> list[str]:
    return [
        "method=hydramix",
        f"method.generator={generator}",
        "model.width=4",
        *DATA,
        *QUICK,
        "trainer.limit_train_batches=8",
        *extra,
    ]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stage1")
    assert train(stage1_cfg("data.subset_seed=7"), run_dir).status == "ok"
    return run_dir


# ------------------------------------------------------------------------------ subsets
def digits(**kwargs):
    return build_datamodule("digits", **{"samples_per_class": 5, "val_fraction": 0.1, **kwargs})


def test_subset_hash_is_sha256_of_name_and_sorted_int64_indices():
    indices = torch.tensor([7, 2, 40])
    expected = hashlib.sha256(b"digits\0" + np.array([2, 7, 40], "<i8").tobytes()).hexdigest()
    assert subset_hash("digits", indices) == expected[:16]
    assert subset_hash("mnist", indices) != subset_hash("digits", indices)


def test_subset_follows_subset_seed_not_the_training_seed_or_batch_size():
    reference = digits(seed=0, subset_seed=3)
    same = [digits(seed=5, subset_seed=3, batch_size=7), digits(seed=3)]  # null = the seed
    for datamodule in same:
        assert torch.equal(datamodule.train_index, reference.train_index)
        assert datamodule.subset_hash == reference.subset_hash
    other = digits(seed=0, subset_seed=4)
    assert other.subset_hash != reference.subset_hash
    assert not torch.equal(other.train_index, reference.train_index)
    record = reference.subset_record()
    assert record == {
        "dataset": "digits",
        "samples_per_class": 5,
        "val_fraction": 0.1,
        "subset_seed": 3,
        "images": 50,
        "hash": reference.subset_hash,
    }
    with pytest.raises(ConfigError, match="data.subset_seed must be an integer >= 0"):
        digits(subset_seed=-1)


def test_subset_hash_is_the_same_in_another_process():
    code = (
        "from robustlab.data import build_datamodule as b;"
        "print(b('digits', samples_per_class=5, val_fraction=0.1, subset_seed=3).subset_hash)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digits(subset_seed=3).subset_hash


def test_results_record_the_subset_by_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((resources.files("robustlab") / "results.schema.json").read_text())
    subset = digits(subset_seed=3).subset_record()
    where = provenance(time.time())
    record = Results("hydramix", "digits", "small_cnn", 0, subset=subset, provenance=where)
    record = record.to_dict()
    assert record["subset"] == subset
    jsonschema.Draft202012Validator(schema).validate(record)
    assert "subset" not in Results("erm", "digits", "small_cnn", 0).to_dict()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**record, "subset": {"hash": "x"}})


def test_epoch_passes_run_several_seeded_inner_epochs_per_epoch():
    datamodule = digits(batch_size=10, val_fraction=0.0, epoch_images_per_class=12)
    assert datamodule.passes == 12 // 5
    loader = datamodule.train_dataloader()
    assert isinstance(loader.sampler, EpochPasses) and len(loader) == 2 * 5  # 50 images / 10
    loader.sampler.set_epoch(1)
    batches = [b for b in loader.sampler]
    seen = torch.cat(batches)
    # every image twice per epoch, the two passes in different orders
    assert torch.equal(torch.bincount(seen, minlength=50), torch.full((50,), 2))
    first, second = torch.cat(batches[:5]), torch.cat(batches[5:])
    assert not torch.equal(first, second)
    loader.sampler.set_epoch(0)
    assert not torch.equal(torch.cat(list(loader.sampler)), seen)  # epochs differ
    groups = digits(batch_size=5, group_size=5, repeat=3).train_dataloader()
    assert len(groups) == 3 * 2  # 10 groups per pass, 5 per batch
    with pytest.raises(ConfigError, match="epoch_images_per_class .* needs data.samples_per_class"):
        build_datamodule("digits", epoch_images_per_class=500)
    with pytest.raises(ConfigError, match="data.repeat must be an integer >= 1"):
        digits(repeat=0)


# ------------------------------------------------------------------------------ the batch
def classifier():
    torch.manual_seed(0)
    return build_classifier("small_cnn", 3, 1, (0.5,), (0.25,), width=4)


GROUPS = torch.rand(4, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # B=4, N=3
LABELS = torch.tensor([2, 0, 1, 2]).repeat_interleave(3)


def direct(mix_prob: float = 1.0, seed: int = 0) -> HydraMix:
    method = build_method(
        "hydramix", classifier(), mix="direct", mix_prob=mix_prob, mask={"kind": "grid"}, seed=seed
    )
    method.group_size = 3
    return method


def test_batch_draw_honours_mix_prob_and_is_seeded():
    for p in (0.5, 0.2):
        count = sum(batch_is_generated(0, epoch, b, p) for epoch in range(4) for b in range(1000))
        assert abs(count - 4000 * p) <= 4 * math.sqrt(4000 * p * (1 - p))
    assert not any(batch_is_generated(1, 0, b, 0.0) for b in range(200))
    assert all(batch_is_generated(1, 0, b, 1.0) for b in range(200))
    draws = [batch_is_generated(3, 2, b, 0.5) for b in range(50)]
    assert draws == [batch_is_generated(3, 2, b, 0.5) for b in range(50)]
    assert draws != [batch_is_generated(4, 2, b, 0.5) for b in range(50)]


def test_direct_mix_is_the_mask_weighted_sum_of_the_group_by_hand(monkeypatch):
    images = GROUPS[:1]  # one group of 3 images
    weights = torch.zeros(1, 3, 8, 8)
    weights[0, 0, :, :4], weights[0, 1, :, 4:] = 1.0, 0.25
    weights[0, 2, :, 4:] = 0.75
    expected = images[0, 0].clone()
    expected[..., 4:] = 0.25 * images[0, 1, ..., 4:] + 0.75 * images[0, 2, ..., 4:]
    torch.testing.assert_close(mix_direct(images, weights)[0], expected)
    # the method's generated batch is that sum, with the masks it drew, labelled by the group
    method, drawn = direct(), []
    sample = HydraMix.masks
    monkeypatch.setattr(HydraMix, "masks", lambda *a: drawn.append(sample(*a)) or drawn[-1])
    x, y, generated = method.training_batch((GROUPS.flatten(0, 1), LABELS), 0)
    assert generated and x.shape == (4, 1, 8, 8) and y.tolist() == [2, 0, 1, 2]
    mask = drawn[0]
    torch.testing.assert_close(mask.sum(1), torch.ones(4, 8, 8))
    torch.testing.assert_close(x, (mask[:, :, None] * GROUPS).sum(1))


def test_segmentation_masks_come_from_each_groups_segments_view():
    """Segments arrive as views["segments"] (B·N, H, W), group-major like x: with one segment
    per image, a segmentation mix takes the whole image from one source of its own group."""
    method = build_method(
        "hydramix", classifier(), mix="direct", mix_prob=1.0, mask={"kind": "segmentation"}
    )
    method.group_size = 3
    segments = torch.zeros(12, 8, 8, dtype=torch.int64)
    x, y, generated = method.training_batch(
        (GROUPS.flatten(0, 1), LABELS, {"segments": segments}), 0
    )
    assert generated and y.tolist() == [2, 0, 1, 2]
    for mixed, group in zip(x, GROUPS, strict=True):
        assert any(torch.equal(mixed, image) for image in group)


def test_real_batches_are_each_groups_first_image_and_groups_must_share_a_class():
    x, y, generated = direct(mix_prob=0.0).training_batch((GROUPS.flatten(0, 1), LABELS), 0)
    assert not generated
    assert torch.equal(x, GROUPS[:, 0]) and y.tolist() == [2, 0, 1, 2]
    mixed_labels = LABELS.clone()
    mixed_labels[4] = 1
    with pytest.raises(ConfigError, match="groups must be of one class"):
        direct(mix_prob=0.0).training_batch((GROUPS.flatten(0, 1), mixed_labels), 0)


def test_options_are_checked_before_any_data(tmp_path):
    with pytest.raises(ConfigError, match="method.generator is required with method.mix=gen"):
        build_method("hydramix", classifier(), mask={"kind": "grid"})
    with pytest.raises(CheckpointError, match="no such checkpoint file or run folder"):
        build_method("hydramix", classifier(), generator=str(tmp_path / "x"), mask={"kind": "grid"})
    with pytest.raises(ConfigError, match="method.generator=null"):
        build_method("hydramix", classifier(), mix="direct", generator="g", mask={"kind": "grid"})
    with pytest.raises(ConfigError, match=r"method.mix_prob must be in \[0, 1\]"):
        build_method("hydramix", classifier(), mix="direct", mix_prob=2, mask={"kind": "grid"})
    assert HydraMix.views_for({"mask": {"kind": "segmentation"}}) == ("segments",)
    assert HydraMix.views_for({"mask": {"kind": "grid"}}) == ()
    cfg = compose_train("method=hydramix", "method.mix=direct")
    with pytest.raises(ConfigError, match="set data.group_size=N"):
        HydraMix.check_requirements(cfg.data, method=cfg.method)


# ------------------------------------------------------------------------------ runs
def test_stage1_checkpoint_records_its_subset(stage1):
    checkpoint = load_checkpoint(stage1 / "checkpoints" / "last.ckpt")
    record = recorded_subset(checkpoint)
    expected = build_datamodule("digits", samples_per_class=8, val_fraction=0.1, subset_seed=7)
    assert record == expected.subset_record()
    assert isinstance(load_module(checkpoint, "generator"), StandInMixer)


def test_frozen_generator_is_bit_identical_after_stage2_and_left_out_of_its_checkpoint(
    stage1, tmp_path
):
    cfg = compose_train(*stage2_overrides(stage1, "seed=7", "method.mix_prob=0.5"))
    before = load_module(stage1, "generator").state_dict()
    seen = {}

    class Watch(pl.Callback):
        def on_fit_end(self, trainer, pl_module):
            seen["state"] = {k: v.clone() for k, v in pl_module.generator.state_dict().items()}
            seen["training"] = pl_module.generator.training

    results = train(cfg, tmp_path, extra_callbacks=(Watch(),))
    assert results.status == "ok"
    assert seen["training"] is False
    assert before.keys() == seen["state"].keys()
    for key, value in before.items():
        assert torch.equal(value, seen["state"][key]), key
    state = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert not [k for k in state if k.startswith("generator.")]
    assert [k for k in state if k.startswith("model.")]
    # train/generated is the fraction of the epoch's 8 batches the seeded draw made generated
    expected = sum(batch_is_generated(7, 0, b, 0.5) for b in range(8)) / 8
    assert 0 < expected < 1
    assert results.metrics["train/generated"] == pytest.approx(expected)


class StopAfterFirstEpoch(pl.Callback):
    """Ends the fit after epoch 0 (its last.ckpt already written), as an interrupted job."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resumed_stage2_equals_an_uninterrupted_run(stage1, tmp_path):
    """Two epochs at once, or stopped after one and continued with ``resume=auto``: the same
    classifier bit for bit (the real/generated draws and the masks are functions of (seed,
    epoch, batch); the generator is reloaded from stage 1, not from the classifier's checkpoint)."""
    run = [*stage2_overrides(stage1, "seed=7", "method.mix_prob=0.5"), "trainer.max_epochs=2"]
    run.append("trainer.limit_train_batches=4")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(compose_train(*run), whole).status == "ok"
    assert (
        train(compose_train(*run), parts, extra_callbacks=(StopAfterFirstEpoch(),)).status == "ok"
    )
    assert load_checkpoint(parts / "checkpoints" / "last.ckpt")["epoch"] == 0
    assert train(compose_train(*run, "resume=auto"), parts).status == "ok"
    states = [
        load_checkpoint(d / "checkpoints" / "last.ckpt")["state_dict"] for d in (whole, parts)
    ]
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


def test_generator_trained_on_another_subset_is_refused_with_exit_2(stage1, tmp_path):
    proc = run_app(
        "train",
        *stage2_overrides(stage1, "data.subset_seed=8", "method.mask.kind=grid"),
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        env=TESTS_IMPORTABLE,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    # one error line (after Lightning's device summary: the check needs the loaded data)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "was trained on other images" in lines[0], proc.stderr[-2000:]
    assert "subset_seed 7" in lines[0] and "subset_seed 8" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()  # refused before any training step


# ------------------------------------------------------------------------------ the protocol
TINY = [
    "data=digits",
    "model=small_cnn",
    "model.width=4",
    "data.eval_batch_size=512",
    "trainer=cpu",
    *QUICK,
]
TINY_GENERATOR = [
    "method.generator.ngf=4",
    "method.generator.n_blocks=0",
    "method.generator.image_size=32",
    "method.discriminator.ndf=4",
    "method.pictures_every=0",
]


def protocol(tmp_path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(Path(__file__).resolve().parents[1] / "experiments" / "hydramix" / "protocol.py"),
        "--dataset=cifar10_cpu",
        "--samples=8",
        "--seeds=0",
        "--variants=plain,chimeramix_grid",
        f"--runs={tmp_path / 'runs'}",
        *[f"--set={o}" for o in TINY],
        *[f"--generator-set={o}" for o in TINY_GENERATOR],
        "--classifier-set=~suite.corruptions",
        "--metrics=test/acc",
        *args,
    ]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_protocol_trains_each_generator_once_and_reports_every_variant(tmp_path):
    proc = protocol(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = tmp_path / "runs" / "hydramix" / "digits"
    generator = root / "generator_grid2" / "n8" / "seed0"
    plain = root / "classifiers" / "plain" / "n8" / "seed0"
    mixed = root / "classifiers" / "chimeramix_grid" / "n8" / "seed0"
    for run in (generator, plain, mixed):
        assert results_of(run)["status"] == "ok", run
    assert results_of(mixed)["config"]["method"]["generator"] == str(generator)
    assert results_of(mixed)["config"]["data"]["subset_seed"] == 0
    assert (
        recorded_subset(load_checkpoint(generator / "checkpoints" / "last.ckpt"))["hash"]
        == (recorded_subset(load_checkpoint(mixed / "checkpoints" / "last.ckpt"))["hash"])
    )
    report = (root / "report" / "report.md").read_text()
    assert "hydramix" in report and "erm" in report
    # a second call finds every run done: nothing is trained again
    stamp = (generator / "results.json").stat().st_mtime_ns
    again = protocol(tmp_path)
    assert again.returncode == 0 and "robustlab.cli.train" not in again.stdout
    assert (generator / "results.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_two_stages_from_the_shell_under_ddp(tmp_path):
    """Stage 1 (method=mix_generator) and stage 2 (method=hydramix) as two shell commands, each
    over two DDP processes: the classifier uses the generator of its own subset."""
    common = [*TINY, "data.samples_per_class=8", "data.group_size=2", "data.batch_size=4"]
    common += ["data.subset_seed=3", "trainer=ddp_cpu"]
    generator = tmp_path / "generator"
    proc = run_app(
        "train",
        "method=mix_generator",
        "test=false",
        "suite=[]",
        *TINY_GENERATOR,
        *common,
        "trainer.strategy=ddp_find_unused_parameters_true",
        f"hydra.run.dir={generator}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    classifier = tmp_path / "classifier"
    proc = run_app(
        "train",
        "method=hydramix",
        f"method.generator={generator}",
        "method.mix_prob=0.5",
        *common,
        "trainer.limit_train_batches=5",
        f"hydra.run.dir={classifier}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results_of(classifier)
    assert record["status"] == "ok" and record["provenance"]["world_size"] == 2
    # the draw is the same on both ranks: the epoch's fraction of generated batches is exact
    # (80 images = 40 pairs, 20 per rank in batches of 4 pairs: 5 batches)
    expected = sum(batch_is_generated(0, 0, b, 0.5) for b in range(5)) / 5
    assert record["metrics"]["train/generated"] == pytest.approx(expected)
    hashes = [
        recorded_subset(load_checkpoint(run / "checkpoints" / "last.ckpt"))
        for run in (generator, classifier)
    ]
    assert hashes[0] == hashes[1] and hashes[0]["subset_seed"] == 3


HYDRAMIX_EXPERIMENTS = sorted(
    p.relative_to(CONF / "experiment").with_suffix("").as_posix()
    for p in (CONF / "experiment" / "hydramix").rglob("*.yaml")
    if not any(part.startswith("_") for part in p.relative_to(CONF / "experiment").parts)
)


@pytest.mark.parametrize("name", HYDRAMIX_EXPERIMENTS)
def test_every_hydramix_experiment_composes_and_validates(name, tmp_path):
    """Each stage config is one the run would accept: generators are stages without a test,
    classifiers name their generator's run folder; every group passes the pre-data checks."""
    cfg = compose_train(f"experiment={name}")
    generator_stage = cfg.method.name == "mix_generator"
    assert cfg.test is not generator_stage
    if cfg.method.name == "hydramix" and cfg.method.mix == "generator":
        assert "/hydramix/" in cfg.method.generator  # where the protocol trains it
        # the folder must exist to validate (its weights load at setup): stand in an empty one
        cfg = compose_train(f"experiment={name}", f"method.generator={tmp_path}")
    validate_train(cfg, tmp_path)
