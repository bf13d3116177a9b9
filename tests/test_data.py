"""Tests of robustlab.data: subsets, sharding, both loading paths, augmentation, datasets."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.data import DATASETS, build_datamodule
from robustlab.data.arrays import channel_stats, load_array_file, read_idx
from robustlab.data.augment import crop_at, random_crop, random_crop_offsets, random_flip
from robustlab.data.mnist import MNISTDataModule
from robustlab.data.sampler import ShardedBatchSampler
from robustlab.data.subsets import samples_per_class, split_validation
from robustlab.errors import ConfigError, DataNotFoundError
from tests.helpers import quiet_cpu_trainer

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def synthetic(**kwargs):
    options = dict(num_classes=4, image_size=8, channels=3, n_train=80, n_test=20, batch_size=16)
    return build_datamodule("synthetic", **{**options, **kwargs})


def write_index_npz(folder: Path, n_train: int, n_test: int, num_classes: int = 5) -> None:
    """npz files whose image i stores i in pixel (0, 0) as two base-256 digits."""
    for name, n in (("train.npz", n_train), ("test.npz", n_test)):
        images = np.zeros((n, 4, 4, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(n) % 256
        images[:, 0, 0, 1] = np.arange(n) // 256
        np.savez(folder / name, images=images, labels=np.arange(n) % num_classes)


def decode_index(images: torch.Tensor) -> torch.Tensor:
    """Inverse of write_index_npz for a batch (uint8 or float [0, 1])."""
    if images.dtype != torch.uint8:
        images = (images * 255).round().to(torch.int64)
    return images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()


# ---------------------------------------------------------------- subsets
def test_samples_per_class_exact_and_seeded():
    labels = torch.arange(300) % 7
    picks = samples_per_class(labels, 5, seed=3)
    assert torch.bincount(labels[picks], minlength=7).tolist() == [5] * 7
    assert len(picks.unique()) == 35
    assert torch.equal(picks, samples_per_class(labels, 5, seed=3))
    assert not torch.equal(picks, samples_per_class(labels, 5, seed=4))
    with pytest.raises(ConfigError, match="class 6 has only 42"):
        samples_per_class(labels, 43, seed=0)


def test_datamodule_n_shot_after_validation_holdout():
    dm = synthetic(n_train=400, samples_per_class=7, val_fraction=0.25, seed=1)
    labels = dm._ensure_loaded().train.labels
    assert torch.bincount(labels[dm.train_index], minlength=4).tolist() == [7] * 4
    assert len(dm.val_index) == 100
    assert not set(dm.train_index.tolist()) & set(dm.val_index.tolist())
    same = synthetic(n_train=400, samples_per_class=7, val_fraction=0.25, seed=1)
    other = synthetic(n_train=400, samples_per_class=7, val_fraction=0.25, seed=2)
    assert torch.equal(dm.train_index, same.train_index)
    assert not torch.equal(dm.train_index, other.train_index)
    with pytest.raises(ConfigError, match="samples_per_class=80"):
        synthetic(n_train=400, samples_per_class=80, val_fraction=0.25).setup()


def test_validation_split_disjoint_and_sized():
    train, val = split_validation(1000, 0.1, seed=0)
    assert len(val) == 100 and len(train) == 900
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert torch.equal(val, split_validation(1000, 0.1, seed=0)[1])
    assert not torch.equal(val, split_validation(1000, 0.1, seed=1)[1])
    empty_train, empty_val = split_validation(10, 0.0, seed=0)
    assert len(empty_val) == 0 and empty_train.tolist() == list(range(10))


# ---------------------------------------------------------------- sampler and sharding
def test_train_sampler_epoch_covers_every_index_once_and_reshuffles():
    sampler = ShardedBatchSampler(103, 10, mode="train", drop_last=False, seed=5)
    assert len(sampler) == 11
    epoch0 = torch.cat(list(sampler))
    assert sorted(epoch0.tolist()) == list(range(103))
    assert torch.equal(epoch0, torch.cat(list(sampler)))  # reproducible
    sampler.set_epoch(1)
    epoch1 = torch.cat(list(sampler))
    assert sorted(epoch1.tolist()) == list(range(103))
    assert not torch.equal(epoch0, epoch1)
    again = ShardedBatchSampler(103, 10, mode="train", drop_last=False, seed=5)
    again.set_epoch(1)
    assert torch.equal(epoch1, torch.cat(list(again)))
    dropped = ShardedBatchSampler(103, 10, mode="train", drop_last=True, seed=5)
    assert [len(b) for b in dropped] == [10] * 10
    tiny = ShardedBatchSampler(7, 10, mode="train", drop_last=True)
    assert [len(b) for b in tiny] == [7]  # a shard below one batch still trains


def test_datamodule_tensor_path_covers_training_set():
    dm = synthetic(n_train=50, batch_size=8, drop_last=False)
    loader = dm.train_dataloader()
    assert len(loader) == 7
    seen = torch.cat([y for _, y in loader])
    assert seen.shape == (50,)
    assert (
        torch.bincount(seen, minlength=4).tolist()
        == torch.bincount(dm._ensure_loaded().train.labels, minlength=4).tolist()
    )


def test_both_loading_paths_deliver_the_same_indices(tmp_path):
    write_index_npz(tmp_path, 37, 11)
    fast = build_datamodule("npz", root=tmp_path, batch_size=8, drop_last=False, seed=2)
    slow = build_datamodule(
        "npz", root=tmp_path, batch_size=8, drop_last=False, seed=2, device_augment=False
    )
    order = []
    for epoch in (0, 1):
        batches = []
        for dm in (fast, slow):
            loader = dm.train_dataloader()
            loader.sampler.set_epoch(epoch)
            batches.append([dm.on_after_batch_transfer(b, 0) for b in loader])
        for (xa, ya), (xb, yb) in zip(*batches, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        order.append(torch.cat([decode_index(x) for x, _ in batches[0]]))
        assert sorted(order[-1].tolist()) == list(range(37))
    assert not torch.equal(order[0], order[1])
    test_order = torch.cat([decode_index(x) for x, _ in fast.test_dataloader()])
    assert test_order.tolist() == list(range(11))


def test_train_shards_equal_disjoint():
    world = 3
    shards = []
    for rank in range(world):
        sampler = ShardedBatchSampler(
            100, 8, mode="train", drop_last=True, seed=1, rank=rank, world_size=world
        )
        sampler.set_epoch(4)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 4 and all(len(b) == 8 for b in batches)
        shards.append(torch.cat(batches))
    union = torch.cat(shards)
    assert len(union.unique()) == 96  # disjoint
    no_drop = [
        sum(len(b) for b in ShardedBatchSampler(100, 8, rank=r, world_size=world))
        for r in range(world)
    ]
    assert no_drop == [33, 33, 33]
    # every rank derives the same permutation: strided shards of it
    full = ShardedBatchSampler(100, 100, mode="train", seed=1)
    full.set_epoch(4)
    order = full.indices()
    assert torch.equal(shards[1], order[1::3][:32])


def test_eval_shards_partition_exactly():
    n, world = 101, 4
    shards = [
        torch.cat(list(ShardedBatchSampler(n, 10, mode="eval", rank=r, world_size=world)))
        for r in range(world)
    ]
    assert [len(s) for s in shards] == [25, 25, 25, 26]
    assert torch.cat(shards).tolist() == list(range(n))  # contiguous, unpadded, no duplicates
    # per-rank (correct, count) sums equal the single-process figures exactly
    correct = torch.rand(n) > 0.3
    assert sum(int(correct[s].sum()) for s in shards) == int(correct.sum())


def test_datamodule_shards_itself_from_the_trainer():
    class FakeTrainer:
        global_rank, world_size, training = 1, 2, False

    dm = synthetic(n_train=80, n_test=21, batch_size=8)
    dm.trainer = FakeTrainer()
    assert dm.train_dataloader().sampler.shard_size() == 40
    test = torch.cat([y for _, y in dm.test_dataloader()])
    assert torch.equal(test, dm.test_arrays()[1][10:])


# ---------------------------------------------------------------- augmentation
def test_crop_at_shifts_with_zero_fill():
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4)
    assert torch.equal(crop_at(x, 1, torch.tensor([[1, 1]])), x)
    top_left = crop_at(x, 1, torch.tensor([[0, 0]]))
    assert top_left[0, 0, 0].tolist() == [0, 0, 0, 0]
    assert top_left[0, 0, :, 0].tolist() == [0, 0, 0, 0]
    assert torch.equal(top_left[..., 1:, 1:], x[..., :3, :3])
    corner = crop_at(x, 2, torch.tensor([[4, 3]]))  # down by 2, right by 1
    expected = torch.zeros(4, 4)
    expected[:2, :3] = x[0, 0, 2:, 1:]
    assert torch.equal(corner[0, 0], expected)


def test_random_crop_offsets_range_and_determinism():
    offsets = random_crop_offsets(2000, 3, torch.Generator().manual_seed(0))
    assert offsets.min() == 0 and offsets.max() == 6
    assert len(offsets[:, 0].unique()) == 7 and len(offsets[:, 1].unique()) == 7
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    a = random_crop(x, 3, torch.Generator().manual_seed(11))
    b = random_crop(x, 3, torch.Generator().manual_seed(11))
    c = random_crop(x, 3, torch.Generator().manual_seed(12))
    assert a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    drawn = random_crop_offsets(64, 3, torch.Generator().manual_seed(11))
    assert torch.equal(a, crop_at(x, 3, drawn))
    assert torch.equal(random_crop(x, 0), x)


def test_random_flip_reverses_width():
    x = torch.arange(4 * 2 * 3 * 5, dtype=torch.float32).view(4, 2, 3, 5).repeat(50, 1, 1, 1)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.all(flipped ^ kept)
    assert 60 < int(flipped.sum()) < 140
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(0)))
    assert out[flipped][0, 0, 0].tolist() == x[flipped][0, 0, 0].flip(0).tolist()


def test_device_augmentation_seeded_by_epoch_and_step():
    dm = synthetic(augment={"crop_padding": 2, "flip": True})
    assert dm.device_augment_active
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(dm.augment_batch(x, epoch=1, step=3), dm.augment_batch(x, 1, 3))
    assert not torch.equal(dm.augment_batch(x, 1, 3), dm.augment_batch(x, 1, 4))
    assert not torch.equal(dm.augment_batch(x, 1, 3), dm.augment_batch(x, 2, 3))
    assert not torch.equal(dm.augment_batch(x, 1, 3), dm.augment_batch(x, 1, 3, rank=1))
    out, labels = dm.on_after_batch_transfer((x, torch.zeros(16)), 0)  # no trainer: eval only
    assert out.dtype == torch.float32 and torch.equal(out, x.float() / 255)


def test_training_with_lightning_reshuffles_and_augments():
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3 * 8 * 8, 4)
            self.batches: list[torch.Tensor] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.batches.append(x.clone())
            return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def run(seed):
        dm = synthetic(n_train=32, batch_size=16, seed=seed, augment={"crop_padding": 2})
        model = Recorder()
        trainer = quiet_cpu_trainer(max_epochs=2, use_distributed_sampler=False)
        trainer.fit(model, dm)
        return model.batches, dm

    batches, dm = run(0)
    assert len(batches) == 4 and all(b.dtype == torch.float32 for b in batches)
    images = dm._ensure_loaded().train.images
    sampler = dm.train_dataloader().sampler
    for position, batch in enumerate(batches):  # exactly (seed, epoch, step)-seeded augmentation
        epoch, step = divmod(position, 2)
        sampler.set_epoch(epoch)
        raw = images[list(sampler)[step]]
        assert not torch.equal(batch, raw.float() / 255)
        assert torch.equal(batch, dm.augment_batch(raw, epoch, step).float() / 255)
    assert not torch.equal(batches[0], batches[2])  # epochs differ
    again, _ = run(0)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


# ---------------------------------------------------------------- datasets
def test_digits_dataset():
    dm = build_datamodule("digits")
    train_x, _ = dm._ensure_loaded().train.images, None
    test_x, test_y = dm.test_arrays()
    assert len(train_x) + len(test_x) == 1797
    assert len(test_x) == 359  # stratified round(0.2 * n_k), summed over classes
    assert dm.num_classes == 10 and dm.in_channels == 1 and dm.image_size == (32, 32)
    assert test_x.shape[1:] == (1, 32, 32) and int(test_x.max()) == 255
    blocks = test_x.float().unfold(2, 4, 4).unfold(3, 4, 4)  # nearest: constant 4x4 blocks
    assert torch.equal(blocks.amax((-1, -2)), blocks.amin((-1, -2)))
    assert torch.bincount(test_y).tolist()[:2] == [36, 36]
    first = dm.test_dataset()[0]
    assert first[0].shape == (1, 32, 32) and first[0].dtype == torch.float32


@pytest.mark.data
def test_mnist_counts(mnist_root):
    dm = build_datamodule("mnist", root=mnist_root)
    train = dm._ensure_loaded().train
    test_x, test_y = dm.test_arrays()
    assert train.images.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert int(train.labels[0]) == 5 and int(test_y[0]) == 7
    assert torch.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(test_y).tolist() == MNIST_TEST_COUNTS
    assert dm.mean[0] == pytest.approx(0.1307, abs=1e-4)
    assert dm.std[0] == pytest.approx(0.3081, abs=1e-4)


@pytest.mark.data
def test_cifar10_jpeg_copy(cifar10_root):
    data_root = cifar10_root
    dm = build_datamodule("cifar10", root=data_root)
    with pytest.warns(UserWarning, match="JPEG-decoded copy"):
        data = dm._ensure_loaded()
    assert data.train.images.shape == (50000, 3, 32, 32) and len(data.test) == 10000
    with np.load(data_root / "cifar10-jpeg" / "test.npz") as npz:
        assert torch.equal(data.test.labels, torch.from_numpy(npz["labels"].astype(np.int64)))
        assert torch.equal(
            data.test.images[:5], torch.from_numpy(npz["images"][:5]).permute(0, 3, 1, 2)
        )
    assert torch.bincount(data.train.labels).tolist() == [5000] * 10
    assert dm.class_names[0] == "airplane" and dm.num_classes == 10
    assert "JPEG-decoded" in dm.description


def test_missing_files_name_what_is_expected(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        build_datamodule("mnist", root=tmp_path).setup()
    message = str(error.value)
    assert (
        "MNIST/raw/train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    )
    assert "data.download=true" in message and "ROBUSTLAB_DATA" in message
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py/data_batch_1.*cifar10-jpeg"):
        build_datamodule("cifar10", root=tmp_path).setup()
    with pytest.raises(DataNotFoundError, match=r"ciFAIR-10/test_batch"):
        build_datamodule("cifair10", root=tmp_path).setup()
    with pytest.raises(DataNotFoundError, match="train_32x32.mat"):
        build_datamodule("svhn", root=tmp_path).setup()
    with pytest.raises(DataNotFoundError, match=r"stl10_binary/train_X.bin"):
        build_datamodule("stl10", root=tmp_path).setup()
    with pytest.raises(DataNotFoundError, match=r"mine.npz") as error:
        build_datamodule("npz", root=tmp_path, train_path="mine.npz").setup()
    assert "download" not in str(error.value)


def write_cifar_layout(folder: Path, files_class, n_per_file: int = 6) -> None:
    """Fake python-pickle batches in torchvision's CIFAR layout (checksums are patched away)."""
    folder.mkdir(parents=True)
    fine = files_class.meta["key"] == "fine_label_names"
    num_classes = 100 if fine else 10
    names = [name for name, _ in files_class.train_list + files_class.test_list]
    for number, name in enumerate(names):
        data = np.full((n_per_file, 3072), number, dtype=np.uint8)
        labels = [(number + i) % num_classes for i in range(n_per_file)]
        entry = {"data": data, ("fine_labels" if fine else "labels"): labels}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {files_class.meta["key"]: [f"c{k}" for k in range(num_classes)]}
    (folder / files_class.meta["filename"]).write_bytes(pickle.dumps(meta))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "cifair10", "cifair100"])
def test_cifar_python_layouts(tmp_path, monkeypatch, name):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    cls = DATASETS[name]
    write_cifar_layout(tmp_path / cls.files_class.base_folder, cls.files_class)
    if cls.jpeg_folder:  # the canonical layout wins over a JPEG copy next to it
        (tmp_path / cls.jpeg_folder).mkdir()
        write_index_npz(tmp_path / cls.jpeg_folder, 3, 3)
    dm = build_datamodule(name, root=tmp_path)
    train = dm._ensure_loaded().train
    test_x, test_y = dm.test_arrays()
    num_train_files = len(cls.files_class.train_list)
    assert train.images.shape == (6 * num_train_files, 3, 32, 32) and test_x.shape == (6, 3, 32, 32)
    assert int(test_x.min()) == int(test_x.max()) == num_train_files  # the test file's bytes
    num_classes = 100 if name.endswith("100") else 10
    assert test_y.tolist() == [(num_train_files + i) % num_classes for i in range(6)]
    assert dm.num_classes == num_classes and dm.class_names[1] == "c1"
    assert cls.files_class.base_folder in dm.description
    if name.startswith("cifair"):
        assert cls.files_class.url.startswith("https://github.com/cvjena/cifair/releases/")


def test_stl10_binary_layout(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # stored column-major
        np.array([1, 10, 4][:n], dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    dm = build_datamodule("stl10", root=tmp_path)
    test_x, test_y = dm.test_arrays()
    assert torch.equal(test_x, torch.from_numpy(images)) and test_y.tolist() == [0, 9]
    assert dm.image_size == (96, 96) and dm.class_names[2] == "car"


def test_svhn_mat_files(tmp_path, monkeypatch):
    import scipy.io
    import torchvision.datasets.svhn as tv_svhn

    monkeypatch.setattr(tv_svhn, "check_integrity", lambda path, md5=None: Path(path).is_file())
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 3)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = np.array([[10], [1], [9], [3]][:n], dtype=np.uint8)  # 10 encodes the digit 0
        mat = {"X": images.transpose(1, 2, 3, 0), "y": labels}
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", mat)
    dm = build_datamodule("svhn", root=tmp_path)
    test_x, test_y = dm.test_arrays()
    assert test_y.tolist() == [0, 1, 9]
    assert torch.equal(test_x, torch.from_numpy(images).permute(0, 3, 1, 2))


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}i", *array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    rng = np.random.default_rng(0)
    fake = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(30) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(12) % 10,
    }
    fetched = []

    def fake_download_url(url, root, filename=None, md5=None, max_redirect_hops=3):
        fetched.append(url)
        Path(root, filename).write_bytes(_idx_bytes(fake[filename]))

    def no_network(*args, **kwargs):
        raise AssertionError("the test must not reach the network")

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    dm = MNISTDataModule(root=tmp_path, download=True)
    dm.prepare_data()
    assert dm._data is None  # prepare_data assigns no state
    assert sorted(Path(u).name for u in fetched) == sorted(fake)
    dm.setup("fit")
    assert len(dm.train_index) == 30 and dm.test_arrays()[0].shape == (12, 1, 28, 28)
    assert torch.equal(
        dm.test_arrays()[0][:, 0],
        torch.from_numpy(fake["t10k-images-idx3-ubyte.gz"]).to(torch.uint8),
    )

    def failing(*args, **kwargs):
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(tv_utils, "download_url", failing)
    with pytest.raises(DataNotFoundError, match="download into"):
        MNISTDataModule(root=tmp_path / "empty", download=True).prepare_data()


def test_read_idx_accepts_plain_and_gzip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(_idx_bytes(array))
    (tmp_path / "a").write_bytes(gzip.decompress(_idx_bytes(array)))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    assert np.array_equal(read_idx(tmp_path / "a"), array)


def test_array_files_and_channel_stats(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (10, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(10))
    with pytest.raises(DataNotFoundError, match=r"no array 'x'.*'images', 'labels'"):
        load_array_file(tmp_path / "d.npz", "x")
    np.save(tmp_path / "c.npy", images)
    assert np.array_equal(load_array_file(tmp_path / "c.npy", mmap=True), images)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    mean, std = channel_stats(tensor, chunk=3)
    floats = tensor.double() / 255
    assert mean == pytest.approx(floats.mean((0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(floats.std((0, 2, 3), unbiased=False).tolist(), abs=1e-12)


def test_imagefolder_loads_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    dm = build_datamodule(
        "imagefolder",
        root=tmp_path,
        batch_size=4,
        drop_last=False,
        augment={"crop_padding": 1, "flip": True},
    )
    assert dm.class_names == ["cat", "dog"] and dm.image_size == (12, 10)
    assert not dm.is_tensor_resident and not dm.device_augment_active
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 12, 10) and x.dtype == torch.float32
    image, label = dm.test_dataset()[3]
    assert label == 1 and image.shape == (3, 12, 10)
    saved = np.asarray(Image.open(tmp_path / "val" / "dog" / "1.png"))
    assert torch.allclose(image, torch.from_numpy(saved.copy()).permute(2, 0, 1).float() / 255)
    square = build_datamodule("imagefolder", root=tmp_path, image_size=8, channels=1)
    assert square.image_size == (8, 8) and square.test_dataset()[0][0].shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="tensor-resident"):
        square.test_arrays()


def test_imagenet_pipeline_random_resized_train_crop_centre_eval_crop(tmp_path):
    """data=imagenet: training images are random-resized crops, evaluation images the
    deterministic resize + centre crop, normalised with ImageNet's fixed mean/std."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for split in ("train", "val"):
        for wnid in ("n0", "n1"):
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(pixels).save(tmp_path / split / wnid / f"{i}.png")
    dm = build_datamodule(
        "imagenet", root=tmp_path, image_size=16, resize=24, batch_size=8, val_fraction=0.0
    )
    assert dm.mean == (0.485, 0.456, 0.406) and dm.std == (0.229, 0.224, 0.225)
    assert dm.image_size == (16, 16)
    centre = dm.test_dataset()[0][0]
    assert all(torch.equal(centre, dm.test_dataset()[i][0]) for i in range(8))  # deterministic
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16)
    # every training view of the same file is a different random crop, none the centre crop
    assert all(not torch.allclose(view, centre, atol=1e-3) for view in x)
    assert len({view.sum().item() for view in x}) == 8
    with pytest.raises(ConfigError, match="random_resized_crop needs data.image_size"):
        build_datamodule("imagefolder", root=tmp_path, random_resized_crop=True)
    with pytest.raises(ConfigError, match="both be null or both list 3"):
        build_datamodule("imagefolder", root=tmp_path, mean=[0.5, 0.5, 0.5])
    with pytest.raises(ConfigError, match="crop_scale"):
        build_datamodule("imagenet", root=tmp_path, crop_scale=[0.5, 0.1])
    empty = tmp_path / "nothing"
    with pytest.raises(DataNotFoundError, match="data=imagenet"):
        build_datamodule("imagenet", root=empty).setup("fit")


def test_synthetic_is_learnable():
    dm = synthetic(n_train=400, n_test=200, image_size=16)
    train = dm._ensure_loaded().train
    test_x, test_y = dm.test_arrays()
    means = torch.stack([train.images[train.labels == k].float().mean(0) for k in range(4)])
    distances = torch.cdist(test_x.float().flatten(1), means.flatten(1))
    assert (distances.argmin(1) == test_y).float().mean() > 0.95
    assert torch.cdist(means.flatten(1), means.flatten(1)).fill_diagonal_(1e9).min() > 100
    assert torch.equal(test_x, synthetic(n_train=400, n_test=200, image_size=16).test_arrays()[0])


# ---------------------------------------------------------------- registry and validation
def test_registry_and_config_errors():
    assert {"digits", "mnist", "cifar10", "cifair10", "npz", "imagefolder", "synthetic"} <= set(
        DATASETS
    )
    with pytest.raises(ConfigError, match="valid choices: .*digits"):
        build_datamodule("cifar11")
    typo = r"does not take \['batchsize'\] \(did you mean 'batch_size'\?\); accepted keys: .*batch"
    with pytest.raises(ConfigError, match=typo):
        build_datamodule("digits", batchsize=3)
    assert build_datamodule("digits", test_fraction=0.5).test_fraction == 0.5
    for bad in (
        {"batch_size": 0},
        {"val_fraction": 1.0},
        {"samples_per_class": 0},
        {"augment": {"crop_pad": 4}},
        {"augment": {"crop_padding": -1}},
        {"device_augment": "yes"},
        {"seed": -1},
    ):
        with pytest.raises(ConfigError):
            build_datamodule("digits", **bad)


def test_datamodule_pickles_after_setup():
    dm = synthetic()
    dm.setup("fit")
    clone = pickle.loads(pickle.dumps(dm))
    assert torch.equal(clone.train_index, dm.train_index) and clone.mean == dm.mean


# ---------------------------------------------------------------- Tiny-ImageNet
TINY_WNIDS = ["n03", "n01", "n02"]  # wnids.txt order; class indices follow the sorted ids
TINY_COLOURS = {"n01": (200, 30, 30), "n02": (30, 200, 30), "n03": (30, 30, 200)}


def write_tiny_imagenet(root: Path) -> list[tuple[str, str]]:
    """A small fake in the official tiny-imagenet-200 layout: solid-colour 64 px JPEGs (colour
    = class), a flat val/images with val_annotations.txt; returns the annotations."""
    from PIL import Image

    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    for wnid in TINY_WNIDS:
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
        for i in range(4):
            Image.new("RGB", (64, 64), TINY_COLOURS[wnid]).save(folder / f"{wnid}_{i}.JPEG")
    annotations = [(f"val_{i}.JPEG", ["n02", "n03", "n01", "n02", "n01"][i]) for i in range(5)]
    for name, wnid in annotations:
        Image.new("RGB", (64, 64), TINY_COLOURS[wnid]).save(base / "val" / "images" / name)
    lines = [f"{name}\t{wnid}\t0\t0\t63\t63" for name, wnid in annotations]
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return annotations


def _colour_class(image: torch.Tensor) -> int:
    """Index (sorted wnids) of the class whose colour a decoded solid image has."""
    mean = image.mean((1, 2)) * 255
    distances = [
        float((mean - torch.tensor(TINY_COLOURS[w], dtype=torch.float32)).abs().max())
        for w in sorted(TINY_WNIDS)
    ]
    return int(np.argmin(distances))


def test_tiny_imagenet_sorts_val_by_its_annotations_file(tmp_path):
    from tests.helpers import compose_train

    annotations = write_tiny_imagenet(tmp_path)
    cfg = compose_train("data=tiny_imagenet", f"data.root={tmp_path}", "data.num_workers=0")
    kwargs = {k: v for k, v in cfg.data.items() if k != "name"}
    assert {k: kwargs["augment"][k] for k in ("crop_padding", "flip")} == {
        "crop_padding": 8,
        "flip": True,
    }  # padding 8 at 64 px
    assert kwargs["augment"]["policy"] is None
    dm = build_datamodule("tiny_imagenet", **{**kwargs, "val_fraction": 0.0, "batch_size": 4})
    dm.setup("fit")
    assert dm.class_names == ["n01", "n02", "n03"] and dm.num_classes == 3
    assert dm.image_size == (64, 64) and not dm.is_tensor_resident
    assert "val_annotations.txt" in dm.description
    test = dm.test_dataset()
    assert len(test) == 5
    wanted = [dm.class_names.index(wnid) for _, wnid in annotations]
    assert [int(test[i][1]) for i in range(5)] == wanted  # the annotated classes, file order
    assert [_colour_class(test[i][0]) for i in range(5)] == wanted  # ... of the right images
    train_labels = dm._ensure_loaded().train.labels
    assert torch.bincount(train_labels).tolist() == [4, 4, 4]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 64, 64)
    # a val/ already sorted into class folders (what preparation scripts leave) reads the same
    val = tmp_path / "tiny-imagenet-200" / "val"
    for name, wnid in annotations:
        (val / wnid / "images").mkdir(parents=True, exist_ok=True)
        (val / "images" / name).rename(val / wnid / "images" / name)
    (val / "images").rmdir()
    sorted_dm = build_datamodule("tiny_imagenet", root=tmp_path, val_fraction=0.0)
    labels = sorted(int(sorted_dm.test_dataset()[i][1]) for i in range(5))
    assert labels == sorted(wanted) and "class folders" in sorted_dm.description


def test_tiny_imagenet_missing_files_and_download(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    with pytest.raises(DataNotFoundError) as error:
        build_datamodule("tiny_imagenet", root=tmp_path).setup("fit")
    message = str(error.value)
    assert "tiny-imagenet-200/val/val_annotations.txt" in message
    assert "tiny-imagenet-200/train/<wnid>/images" in message and "data.download=true" in message
    fetched = []

    def fake_download(url, download_root, md5=None, **kwargs):
        fetched.append((url, md5))
        write_tiny_imagenet(Path(download_root))

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    dm = build_datamodule("tiny_imagenet", root=tmp_path / "fresh", download=True)
    dm.prepare_data()
    assert fetched == [
        ("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")
    ]
    dm.setup("fit")
    assert dm.num_classes == 3
    dm.prepare_data()  # already there: no second download
    assert len(fetched) == 1
    (tmp_path / "fresh" / "tiny-imagenet-200" / "wnids.txt").write_text("n01\nn02\nn09\n")
    with pytest.raises(DataNotFoundError, match="wnids.txt lists 3 classes"):
        build_datamodule("tiny_imagenet", root=tmp_path / "fresh").setup("fit")
