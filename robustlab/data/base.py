"""``ImageDataModule``: the LightningDataModule every robustlab dataset derives from.

Two loading paths sit side by side:

(a) tensor-resident (datasets that fit in memory): a split is one uint8 tensor (N, C, H, W); a
    batch is one index-slice of it (``TensorBatches``), augmentation runs batched on the
    training device in :meth:`on_after_batch_transfer` (``robustlab.data.augment``).
(b) ordinary DataLoader: per-image torchvision (PIL) transforms in worker processes
    (``ItemBatches``); used for image folders and for any dataset with ``device_augment=false``.

Both draw batches from :class:`~robustlab.data.sampler.ShardedBatchSampler`, which shuffles with
a (seed, epoch) permutation and shards itself over DDP ranks (the trainer runs with
``use_distributed_sampler=False``), or, with ``data.group_size``, from
:class:`~robustlab.data.groups.GroupBatchSampler` (same-class groups, sharded the same way).
With ``data.views`` training batches also carry named extra views (``robustlab.data.views``),
made in :meth:`ImageDataModule.on_after_batch_transfer` next to the crop/flip of ``x``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from robustlab.data.augment import crop_and_flip
from robustlab.data.batches import ItemBatches
from robustlab.data.groups import GroupBatchSampler, check_group_size
from robustlab.data.policies import POLICY_DEFAULTS, apply_policies, build_policies
from robustlab.data.sampler import ShardedBatchSampler
from robustlab.data.seeding import generator_for
from robustlab.data.segments import (
    SEGMENTS_VIEW,
    SegmentBatches,
    crop_and_flip_segments,
    segment_options,
    timed_segments,
)
from robustlab.data.sources import ArraySource, FileSource
from robustlab.data.subsets import EpochPasses, samples_per_class, split_validation, subset_hash
from robustlab.data.transforms import pil_transform
from robustlab.data.views import make_views, view_recipes
from robustlab.errors import ConfigError, DataNotFoundError, check
from robustlab.perturbations.imageops import from_uint8

ROOT_ENV = "ROBUSTLAB_DATA"
AUGMENT_DEFAULTS: dict[str, Any] = {"crop_padding": 0, "flip": False, **POLICY_DEFAULTS}
AUTO = "auto"

Source = ArraySource | FileSource
#: Replaces a loader's batch dataset, e.g. by one that adds image indices (evaluation suites).
BatchWrapper = Callable[[Dataset], Dataset]


class LoadedData(NamedTuple):
    """What a dataset's :meth:`ImageDataModule.load_data` returns."""

    train: Source
    test: Source
    class_names: list[str]
    description: str


def default_root() -> Path:
    """``$ROBUSTLAB_DATA`` if set, else ``./data``."""
    return Path(os.environ.get(ROOT_ENV) or "./data")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_augment(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    if augment is None:
        return dict(AUGMENT_DEFAULTS)
    check(isinstance(augment, Mapping), f"data.augment must be a mapping or null, got {augment!r}")
    unknown = sorted(set(augment) - set(AUGMENT_DEFAULTS))
    check(
        not unknown, f"data.augment: unknown key(s) {unknown}; accepted: {sorted(AUGMENT_DEFAULTS)}"
    )
    parsed = {**AUGMENT_DEFAULTS, **dict(augment)}
    padding = parsed["crop_padding"]
    check(
        _is_int(padding) and padding >= 0,
        f"data.augment.crop_padding must be an integer >= 0 (0 = off), got {padding!r}",
    )
    check(
        isinstance(parsed["flip"], bool),
        f"data.augment.flip must be true/false, got {parsed['flip']!r}",
    )
    return parsed


class ImageDataModule(pl.LightningDataModule):
    """Base datamodule; subclasses implement :meth:`load_data` (and :meth:`download_data`).

    Args (Hydra keys ``data.*``):
        root: data folder; None => ``$ROBUSTLAB_DATA`` or ``./data``.
        batch_size: training batch size per process.
        eval_batch_size: validation/test batch size per process; None => ``batch_size``.
        num_workers: worker processes of the DataLoader path (b); the tensor-resident path
            slices in the main process (workers would only add copies).
        val_fraction: 0 <= f < 1; seeded random hold-out of ``round(f * N)`` training images as
            the validation set. 0 => no validation loader.
        samples_per_class: N-shot: exactly N seeded random images of every class are kept for
            training (drawn after the validation hold-out). None => all.
        seed: data seed for the validation split, N-shot subset, epoch shuffles and device
            augmentation (independent streams).
        download: fetch missing files with the dataset's official download code.
        augment: ``{crop_padding: int (0 = off), flip: bool}`` training augmentation; None = off.
            ``policy``: null, a name or a list of ``robustlab.data.policies`` (cutout,
            random_erasing, autoaugment, trivialaugment) run in order on the training device
            after the crop/flip, options under their names (e.g. ``cutout: {size: 16}``).
        device_augment: true => batched on the training device; false => per-image PIL
            transforms in the DataLoader (path b); "auto" => on for tensor-resident datasets.
        pin_memory: pin batches for faster host-to-GPU copies; "auto" => when CUDA is available.
        drop_last: drop the last incomplete training batch (never for val/test).
        views: names of extra views of every training image (``robustlab.data.views``, e.g.
            ``[weak, strong]``): training batches become ``(x, y, views)`` with ``views`` a
            dict name -> float (B, C, H, W) in [0, 1], made on the training device from the
            un-augmented images (so they need device augmentation: ``device_augment`` auto
            or true); validation and test batches stay ``(x, y)``.
        group_size: N => the training loader yields ``batch_size`` groups of N same-class
            images as one flat batch of ``batch_size * N`` rows, group-major
            (``robustlab.data.groups``); None => ordinary batches.
        group_repeats: whether an image may appear more than once in a group (drawn with
            replacement); false needs at least ``group_size`` training images per class.
        subset_seed: seed of the validation hold-out and the N-shot draw (which images train),
            independent of the training seed; None => ``seed``. The chosen images are
            identified by :attr:`subset_hash` (recorded in checkpoints and results.json).
        repeat: passes over the training images per epoch (>= 1; ``EpochPasses``).
        epoch_images_per_class: K => an epoch is ``max(K // samples_per_class, 1)`` passes
            over the N-shot subset, about K images per class (HydraMix: 500); replaces
            ``repeat`` and needs ``samples_per_class``. None => ``repeat`` passes.
        segments: ``{scale, min_size, sigma}`` (null keys: defaults by image size) => every
            training image is segmented once at setup (Felzenszwalb, ``robustlab.data.segments``)
            and training batches become ``(x, y, views)`` with ``views["segments"]`` its (B, H, W)
            int64 label map, cropped and flipped exactly like ``x`` on the device (needs a
            tensor-resident dataset and device augmentation). None => no segments.
    """

    name: str = ""
    downloadable: bool = False

    def __init__(
        self,
        root: str | Path | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = 512,
        num_workers: int = 0,
        val_fraction: float = 0.0,
        samples_per_class: int | None = None,
        seed: int = 0,
        download: bool = False,
        augment: Mapping[str, Any] | None = None,
        device_augment: bool | str = AUTO,
        pin_memory: bool | str = AUTO,
        drop_last: bool = True,
        views: Sequence[str] | None = None,
        group_size: int | None = None,
        group_repeats: bool = False,
        subset_seed: int | None = None,
        repeat: int = 1,
        epoch_images_per_class: int | None = None,
        segments: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check(
            _is_int(batch_size) and batch_size >= 1,
            f"data.batch_size must be an integer >= 1, got {batch_size!r}",
        )
        check(
            eval_batch_size is None or (_is_int(eval_batch_size) and eval_batch_size >= 1),
            f"data.eval_batch_size must be an integer >= 1 or null, got {eval_batch_size!r}",
        )
        check(
            _is_int(num_workers) and num_workers >= 0,
            f"data.num_workers must be an integer >= 0, got {num_workers!r}",
        )
        check(
            isinstance(val_fraction, int | float)
            and not isinstance(val_fraction, bool)
            and 0 <= val_fraction < 1,
            f"data.val_fraction must be in [0, 1), got {val_fraction!r}",
        )
        check(
            samples_per_class is None or (_is_int(samples_per_class) and samples_per_class >= 1),
            f"data.samples_per_class must be an integer >= 1 or null, got {samples_per_class!r}",
        )
        check(_is_int(seed) and seed >= 0, f"seed must be an integer >= 0, got {seed!r}")
        check(isinstance(download, bool), f"data.download must be true/false, got {download!r}")
        check(
            device_augment in (True, False, AUTO),
            f"data.device_augment must be true, false or auto, got {device_augment!r}",
        )
        check(
            pin_memory in (True, False, AUTO),
            f"data.pin_memory must be true, false or auto, got {pin_memory!r}",
        )
        check(isinstance(drop_last, bool), f"data.drop_last must be true/false, got {drop_last!r}")
        self.view_recipes = view_recipes(views)
        check(
            not self.view_recipes or device_augment is not False,
            "data.views are made on the training device from un-augmented images; set "
            "data.device_augment=auto or true (not false)",
        )
        check(
            group_size is None or (_is_int(group_size) and group_size >= 1),
            f"data.group_size must be an integer >= 1 or null, got {group_size!r}",
        )
        check(
            isinstance(group_repeats, bool),
            f"data.group_repeats must be true/false, got {group_repeats!r}",
        )
        check(
            group_size is None
            or group_repeats
            or samples_per_class is None
            or samples_per_class >= group_size,
            f"data.group_size={group_size} needs {group_size} distinct images per class but "
            f"data.samples_per_class={samples_per_class}; lower data.group_size or set "
            "data.group_repeats=true",
        )
        check(
            subset_seed is None or (_is_int(subset_seed) and subset_seed >= 0),
            f"data.subset_seed must be an integer >= 0 or null (= seed), got {subset_seed!r}",
        )
        check(
            _is_int(repeat) and repeat >= 1, f"data.repeat must be an integer >= 1, got {repeat!r}"
        )
        check(
            epoch_images_per_class is None
            or (_is_int(epoch_images_per_class) and epoch_images_per_class >= 1),
            "data.epoch_images_per_class must be an integer >= 1 or null, got "
            f"{epoch_images_per_class!r}",
        )
        check(
            epoch_images_per_class is None or (samples_per_class is not None and repeat == 1),
            "data.epoch_images_per_class sets the passes over an N-shot subset: it needs "
            f"data.samples_per_class (got {samples_per_class!r}) and data.repeat=1 "
            f"(got {repeat!r})",
        )
        self.segment_options = segment_options(segments)
        check(
            self.segment_options is None or device_augment is not False,
            "data.segments are cropped and flipped with x on the training device; set "
            "data.device_augment=auto or true (not false)",
        )
        self._segments: Tensor | None = None
        self.segment_seconds: float | None = None  # the one-off segmentation time
        self.subset_seed = seed if subset_seed is None else subset_seed
        self.passes = (
            repeat
            if epoch_images_per_class is None
            else max(epoch_images_per_class // samples_per_class, 1)
        )
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.num_workers = num_workers
        self.val_fraction = float(val_fraction)
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.download = download
        self.augment = _parse_augment(augment)
        self.policies = build_policies(self.augment)
        self.device_augment = device_augment
        self.pin_memory = torch.cuda.is_available() if pin_memory == AUTO else pin_memory
        self.drop_last = drop_last
        self.group_size = group_size
        self.group_repeats = group_repeats
        self._data: LoadedData | None = None
        self._train_index: Tensor | None = None
        self._val_index: Tensor | None = None
        self._stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self._augment_epoch = -1
        self._augment_step = 0

    # ------------------------------------------------------------------ subclass hooks
    def load_data(self) -> LoadedData:
        """Read both splits from ``self.root``; raise DataNotFoundError naming missing files."""
        raise NotImplementedError

    def download_data(self) -> None:
        """Fetch the files with the official download code (no state assignment: Lightning
        calls this from ``prepare_data`` on one process per node)."""
        raise ConfigError(f"data={self.name} cannot be downloaded; put the files under {self.root}")

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        if self.download:
            self.download_data()

    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def _ensure_loaded(self) -> LoadedData:
        if self._data is not None:
            return self._data
        try:
            data = self.load_data()
        except DataNotFoundError:
            if not self.download:
                raise
            self.download_data()
            data = self.load_data()
        train_index, val_index = torch.arange(len(data.train)), torch.zeros(0, dtype=torch.int64)
        if self.val_fraction > 0:
            train_index, val_index = split_validation(
                len(data.train), self.val_fraction, self.subset_seed
            )
        if self.samples_per_class is not None:
            keep = samples_per_class(
                data.train.labels[train_index],
                self.samples_per_class,
                self.subset_seed,
                data.class_names,
            )
            train_index = train_index[keep]
        if self.group_size is not None:
            check_group_size(
                data.train.labels[train_index],
                self.group_size,
                self.group_repeats,
                data.class_names,
            )
        self._data, self._train_index, self._val_index = data, train_index, val_index
        return data

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        return len(self._ensure_loaded().class_names)

    @property
    def class_names(self) -> list[str]:
        return list(self._ensure_loaded().class_names)

    @property
    def in_channels(self) -> int:
        return self._ensure_loaded().train.channels

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images in a batch."""
        return self._ensure_loaded().train.image_size

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean in [0, 1] units of the full official training split."""
        return self._channel_stats()[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation in [0, 1] units of the full official training split."""
        return self._channel_stats()[1]

    @property
    def description(self) -> str:
        """Which files were read, e.g. to label numbers measured on a JPEG-decoded copy."""
        return self._ensure_loaded().description

    @property
    def has_validation(self) -> bool:
        """Whether a validation split is held out (``val_fraction > 0``)."""
        return len(self.val_index) > 0

    @property
    def is_tensor_resident(self) -> bool:
        return self._ensure_loaded().train.resident

    @property
    def train_index(self) -> Tensor:
        """Indices into the official training split used for training (after val/N-shot)."""
        self._ensure_loaded()
        return self._train_index

    @property
    def val_index(self) -> Tensor:
        """Indices into the official training split held out for validation (may be empty)."""
        self._ensure_loaded()
        return self._val_index

    @property
    def subset_hash(self) -> str:
        """Identity of the training images (:func:`~robustlab.data.subsets.subset_hash` of the
        dataset name and :attr:`train_index`)."""
        return subset_hash(self.name, self.train_index)

    def subset_record(self) -> dict[str, Any]:
        """What identifies the training images, for checkpoints and results.json."""
        return {
            "dataset": self.name,
            "samples_per_class": self.samples_per_class,
            "val_fraction": self.val_fraction,
            "subset_seed": self.subset_seed,
            "images": len(self.train_index),
            "hash": self.subset_hash,
        }

    def state_dict(self) -> dict[str, Any]:
        """Lightning stores this in every checkpoint (under the class name): the training
        subset (:meth:`subset_record`), read back by ``run.checkpoints.recorded_subset``."""
        return {"subset": self.subset_record()}

    @property
    def train_segments(self) -> Tensor:
        """Felzenszwalb label maps (N, H, W) int64 of the training images (in
        :attr:`train_index` order), computed once on first use and kept
        (``data.segments``)."""
        check(self.segment_options is not None, "no data.segments configured for this dataset")
        if self._segments is None:
            train = self._ensure_loaded().train
            check(
                train.resident,
                f"data.segments needs a tensor-resident dataset; data={self.name} reads image "
                "files: set data.segments=null",
            )
            images = train.images[self._train_index]
            self._segments, self.segment_seconds = timed_segments(images, self.segment_options)
        return self._segments

    @property
    def device_augment_active(self) -> bool:
        """Whether training batches are augmented on the device in ``on_after_batch_transfer``."""
        if not self._augment_on:
            return False
        if self.device_augment == AUTO:  # views come from un-augmented images: x too
            return self._ensure_loaded().train.resident or bool(self.view_recipes)
        return bool(self.device_augment)

    @property
    def _augment_on(self) -> bool:
        return self.augment["crop_padding"] > 0 or self.augment["flip"]

    def _channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self._stats is None:
            self._stats = self._ensure_loaded().train.stats()
        return self._stats

    # ------------------------------------------------------------------ evaluation access
    def test_arrays(self) -> tuple[Tensor, Tensor]:
        """The test split as (uint8 images (N, C, H, W), int64 labels); tensor-resident only."""
        test = self._ensure_loaded().test
        if not test.resident:
            raise ConfigError(
                f"data={self.name} is not tensor-resident; use test_dataset() instead"
            )
        return test.images, test.labels

    def test_dataset(self) -> Dataset:
        """The whole test split as a Dataset of (float image (C, H, W) in [0, 1], int label)."""
        return self._ensure_loaded().test.items()

    # ------------------------------------------------------------------ loaders
    def _shard(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        data = self._ensure_loaded()
        rank, world = self._shard()
        shard = {"drop_last": self.drop_last, "seed": self.seed, "rank": rank, "world_size": world}
        if self.group_size is not None:
            sampler = GroupBatchSampler(
                data.train.labels[self._train_index],
                self.group_size,
                self.batch_size,
                repeats=self.group_repeats,
                class_names=data.class_names,
                **shard,
            )
        else:
            sampler = ShardedBatchSampler(
                len(self._train_index), self.batch_size, mode="train", **shard
            )
        if self.passes > 1:
            sampler = EpochPasses(sampler, self.passes)
        wrap = None
        if self.segment_options is not None:
            segments = self.train_segments
            wrap = lambda batches: SegmentBatches(batches, segments)  # noqa: E731
        return self._loader(data.train, self._train_index, sampler, train=True, wrap=wrap)

    def val_dataloader(self) -> DataLoader | list:
        data = self._ensure_loaded()
        if len(self._val_index) == 0:
            return []
        return self._eval_loader(data.train, self._val_index)

    def test_dataloader(
        self, max_images: int | None = None, wrap: BatchWrapper | None = None
    ) -> DataLoader:
        """The test split (its first ``max_images`` images when given, e.g. for quick suites).

        ``wrap`` replaces the batch dataset by ``wrap(batches)`` (evaluation suites add each
        image's index this way, :class:`~robustlab.data.batches.IndexedBatches`).
        """
        data = self._ensure_loaded()
        if max_images is None:
            return self._eval_loader(data.test, None, wrap)
        check(
            _is_int(max_images) and max_images >= 1,
            f"max_images must be an integer >= 1 or null, got {max_images!r}",
        )
        subset = torch.arange(min(int(max_images), len(data.test)))
        return self._eval_loader(data.test, subset, wrap)

    def arrays_dataloader(
        self,
        images: Tensor,
        labels: Tensor,
        max_images: int | None = None,
        wrap: BatchWrapper | None = None,
    ) -> DataLoader:
        """An evaluation loader (sharded like the test split) over external uint8 (N, C, H, W)
        images, e.g. the official CIFAR-10-C release files; ``wrap`` as in test_dataloader."""
        count = len(labels) if max_images is None else min(int(max_images), len(labels))
        return self._eval_loader(ArraySource(images[:count], labels[:count]), None, wrap)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def _eval_loader(
        self, source: Source, index: Tensor | None, wrap: BatchWrapper | None = None
    ) -> DataLoader:
        rank, world = self._shard()
        size = len(source) if index is None else len(index)
        sampler = ShardedBatchSampler(
            size, self.eval_batch_size, mode="eval", rank=rank, world_size=world
        )
        return self._loader(source, index, sampler, train=False, wrap=wrap)

    def _loader(
        self,
        source: Source,
        index: Tensor | None,
        sampler: Sampler[Tensor],
        *,
        train: bool,
        wrap: BatchWrapper | None = None,
    ) -> DataLoader:
        wrap = wrap or (lambda batches: batches)
        if source.resident and not (train and self.device_augment is False):
            return DataLoader(
                wrap(source.batches(index)),
                sampler=sampler,
                batch_size=None,
                pin_memory=self.pin_memory,
            )
        pre = (
            () if not isinstance(source, FileSource) else source.train_pre if train else source.pre
        )
        transform = pil_transform(pre=pre) if pre else None
        if train and self._augment_on and not self.device_augment_active:
            transform = pil_transform(
                crop_padding=self.augment["crop_padding"],
                flip=self.augment["flip"],
                size=source.image_size,
                pre=pre,
            )
        return DataLoader(
            wrap(ItemBatches(source.items(index, transform))),
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=generator_for(self.seed, "workers"),
        )

    # ------------------------------------------------------------------ device side
    def augment_batch(self, images: Tensor, epoch: int, step: int, rank: int = 0) -> Tensor:
        """Device augmentation of one training batch, seeded by (seed, rank, epoch, step)."""
        generator = generator_for(self.seed, "augment", rank, epoch, step, device=images.device)
        return crop_and_flip(images, self.augment["crop_padding"], self.augment["flip"], generator)

    def augment_segments(self, labels: Tensor, epoch: int, step: int, rank: int = 0) -> Tensor:
        """The batch's label maps (B, H, W) cropped and flipped with the draws of
        :meth:`augment_batch` (a generator with the same seed: the same offsets and flips)."""
        generator = generator_for(self.seed, "augment", rank, epoch, step, device=labels.device)
        padding, flip = self.augment["crop_padding"], self.augment["flip"]
        return crop_and_flip_segments(labels, padding, flip, generator)

    def apply_policies(self, images: Tensor, epoch: int, step: int, rank: int = 0) -> Tensor:
        """``data.augment.policy`` on one training batch after its crop/flip: float [0, 1],
        policy ``name`` seeded by (seed, "policy", name, rank, epoch, step), one draw per row."""
        images = from_uint8(images) if images.dtype == torch.uint8 else images
        generators = {
            name: generator_for(self.seed, "policy", name, rank, epoch, step, device=images.device)
            for name in self.policies
        }
        return apply_policies(images, self.policies, generators, lambda: self.mean)

    def make_views(self, images: Tensor, epoch: int, step: int, rank: int = 0) -> dict[str, Tensor]:
        """The ``data.views`` of one training batch of un-augmented images: float [0, 1],
        view ``name`` seeded by (seed, "view", name, rank, epoch, step), one draw per row."""
        images = from_uint8(images) if images.dtype == torch.uint8 else images
        generators = {
            name: generator_for(self.seed, "view", name, rank, epoch, step, device=images.device)
            for name in self.view_recipes
        }
        return make_views(images, self.view_recipes, generators)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 -> float [0, 1]; in training, batched crop/flip on the batch's device and,
        with ``data.views``, ``(x, y, views)`` (views made from the un-augmented images); with
        ``data.segments``, ``views["segments"]`` (cropped and flipped like ``x``)."""
        segments = None
        if self.segment_options is not None and len(batch) == 3:  # a training batch
            images, labels, segments = batch
        else:
            images, labels = batch
        raw, views = images, None
        trainer = self.trainer
        if (
            trainer is not None
            and trainer.training
            and (self.device_augment_active or self.view_recipes or self.policies)
        ):
            epoch = int(trainer.current_epoch)
            if epoch != self._augment_epoch:
                self._augment_epoch, self._augment_step = epoch, 0
            step, rank = self._augment_step, int(trainer.global_rank)
            if self.device_augment_active:
                images = self.augment_batch(images, epoch, step, rank)
            if self.policies:
                images = self.apply_policies(images, epoch, step, rank)
            if self.view_recipes:
                views = self.make_views(raw, epoch, step, rank)
            if segments is not None and self.device_augment_active:
                segments = self.augment_segments(segments, epoch, step, rank)
            self._augment_step += 1
        if segments is not None:
            views = {**(views or {}), SEGMENTS_VIEW: segments}
        if images.dtype == torch.uint8:
            images = from_uint8(images)
        return (images, labels) if views is None else (images, labels, views)
