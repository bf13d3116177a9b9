"""Model zoo: interface of every registered backbone, published parameter counts, the
normalising wrapper, forward-hook feature extraction and registry errors."""

from __future__ import annotations

import gzip
import math
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import ConfigError
from robustlab.models import (
    MODELS,
    Backbone,
    ImageClassifier,
    build_backbone,
    build_classifier,
    feature_extractor,
)
from robustlab.models.resnet_cifar import ZeroPadShortcut
from robustlab.models.shufflenetv2 import channel_shuffle

#: Kwargs for generic factories that have required arguments (kept small for speed).
REQUIRED = {"wide_resnet": {"depth": 10, "widen_factor": 1}, "cifar_resnet": {"depth": 8}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(name: str, num_classes: int, in_channels: int, **kwargs) -> nn.Module:
    return build_backbone(name, num_classes, in_channels, **{**REQUIRED.get(name, {}), **kwargs})


def _num_params(name: str, num_classes: int = 10, **kwargs) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = _build(name, num_classes, 3, **kwargs)
    return sum(p.numel() for p in model.parameters())


def test_registry_holds_the_zoo() -> None:
    expected = {
        "small_cnn",
        "resnet20",
        "resnet32",
        "resnet56",
        "resnet110",
        "resnet8x4",
        "resnet32x4",
        "preact_resnet18",
        "wide_resnet",
        "wrn_16_2",
        "wrn_16_4",
        "wrn_16_8",
        "wrn_28_4",
        "wrn_28_10",
        "wrn_40_1",
        "wrn_40_2",
        "vgg8",
        "vgg13",
        "mobilenetv1",
        "mobilenetv2",
        "shufflenetv1",
        "shufflenetv2",
    }
    assert expected <= set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_interface_at_32px(name: str) -> None:
    """forward(x) == classifier(features(x)), shapes (2, K) and (2, D), for 1 and 3 channels."""
    torch.manual_seed(0)
    for in_channels in (1, 3):
        model = _build(name, 7, in_channels).eval()
        assert isinstance(model, Backbone)
        assert isinstance(model.classifier, nn.Linear)
        assert model.classifier.in_features == model.feature_dim
        assert (model.num_classes, model.in_channels) == (7, in_channels)
        x = torch.rand(2, in_channels, 32, 32)
        with torch.no_grad():
            feats = model.features(x)
            logits = model(x)
        assert feats.shape == (2, model.feature_dim)
        assert logits.shape == (2, 7)
        torch.testing.assert_close(model.classifier(feats), logits)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "name",
    [
        "small_cnn",
        "resnet20",
        "resnet8x4",
        "wrn_16_2",
        "preact_resnet18",
        "vgg8",
        "mobilenetv2_half",
        "shufflenetv1",
        "mobilenetv1",
        "shufflenetv2",
    ],
)
def test_small_and_odd_input_sizes(name: str) -> None:
    """MNIST's 28 px and the 16 px minimum both reach global pooling."""
    model = _build(name, 10, 1).eval()
    with torch.no_grad():
        for size in (28, 16):
            assert model(torch.rand(2, 1, size, size)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # He et al. (2016) Table 6 architectures (option-A shortcuts): 0.27M 0.46M 0.66M 0.85M 1.7M.
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet44", 658_586),
        ("resnet56", 853_018),
        ("resnet110", 1_727_962),
    ],
)
def test_cifar_resnet_counts_match_he_et_al(name: str, expected: int) -> None:
    assert _num_params(name, shortcut="pad") == expected
    published = {
        "resnet20": 0.27e6,
        "resnet32": 0.46e6,
        "resnet44": 0.66e6,
        "resnet56": 0.85e6,
        "resnet110": 1.7e6,
    }[name]
    # The projection-shortcut default (CRD/mdistiller) adds < 1.2%.
    assert _num_params(name) == pytest.approx(published, rel=0.03)


@pytest.mark.parametrize(
    ("name", "num_classes", "published"),
    [
        ("wrn_28_10", 10, 36.5e6),  # Zagoruyko & Komodakis (2016), Table 4
        ("wrn_40_2", 10, 2.2e6),
        ("wrn_16_8", 10, 11.0e6),
        ("wrn_16_4", 10, 2.7e6),
        ("resnet8x4", 100, 1.23e6),  # CRD (Tian et al., 2020) CIFAR-100 models
        ("resnet32x4", 100, 7.43e6),
        ("preact_resnet18", 10, 11.17e6),
        ("shufflenetv1", 100, 0.95e6),  # CRD/mdistiller "ShuffleV1" (g = 3) at CIFAR-100
    ],
)
def test_published_parameter_counts(name: str, num_classes: int, published: float) -> None:
    assert _num_params(name, num_classes) == pytest.approx(published, rel=0.03)


def test_mobilenetv1_imagenet_count_and_cifar_stride() -> None:
    """Howard et al. (2017), Table 8: MobileNet-224 1.0 has 4.2M parameters; with the stride-2
    stem 224 px reach a 7 x 7 map, with the CIFAR stride-1 stem 32 px a 2 x 2 map."""
    assert _num_params("mobilenetv1", 1000, stem_stride=2) == pytest.approx(4.2e6, rel=0.01)
    assert _num_params("mobilenetv1", 1000, stem_stride=1) == _num_params(
        "mobilenetv1", 1000, stem_stride=2
    )
    half = _num_params("mobilenetv1", 1000, width_mult=0.5, stem_stride=2)
    assert half == pytest.approx(1.3e6, rel=0.03)  # Table 6: 0.50 MobileNet-224, 1.3M
    model = _build("mobilenetv1", 10, 3).eval()
    with torch.no_grad():
        assert model.layers(model.stem(torch.rand(1, 3, 32, 32))).shape == (1, 1024, 2, 2)


def test_shufflenetv1_units_grouped_convolutions_and_concat_shortcut() -> None:
    """Stage widths 240/480/960 (g = 3, Zhang et al. Table 1), 4/8/4 units, and the first unit
    of stage 3 (240 -> 480, stride 2) counted by hand: reduce 240 -> 60 in 3 groups (4800),
    depthwise 3x3 (540), expand 60 -> 240 in 3 groups (4800), BN 2 x (60 + 60 + 240)."""
    model = _build("shufflenetv1", 100, 3).eval()
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [4, 8, 4]
    unit = model.layer2[0]
    assert sum(p.numel() for p in unit.parameters()) == 4800 + 540 + 4800 + 2 * (60 + 60 + 240)
    x = torch.rand(1, 240, 8, 8)
    with torch.no_grad():
        out = unit(x)
        pooled = torch.nn.functional.avg_pool2d(x, 3, 2, 1)
    assert out.shape == (1, 480, 4, 4)
    assert torch.equal(out[:, 240:], torch.relu(pooled))  # the shortcut half is the pooled input
    assert model.layer1[0].first_groups == 1 and model.layer1[1].first_groups == 3
    assert model.feature_dim == 960
    with pytest.raises(ConfigError, match="groups must be one of"):
        build_backbone("shufflenetv1", 10, 3, groups=4)


def test_wrn_28_10_exact_count_and_width() -> None:
    assert _num_params("wrn_28_10") == 36_479_194
    assert _build("wrn_16_2", 10, 3).feature_dim == 128


def test_zero_pad_shortcut_subsamples_and_pads() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y = ZeroPadShortcut(extra_channels=2, stride=2)(x)
    assert y.shape == (1, 4, 2, 2)
    assert y[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert y[0, 1].tolist() == [[16.0, 18.0], [24.0, 26.0]]
    assert (y[0, 2:] == 0).all()


def test_channel_shuffle_interleaves_groups() -> None:
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_standard_initialisation() -> None:
    torch.manual_seed(0)
    model = _build("resnet32x4", 10, 3)
    conv = model.layer3[1].conv1  # 256 -> 256, 3x3: fan_out = 2304
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 2304), rel=0.02)
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=1e-3)
    bn = model.layer3[1].bn1
    assert (bn.weight == 1).all() and (bn.bias == 0).all()
    assert (model.classifier.bias == 0).all()


def test_wide_resnet_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    model = _build("wrn_16_2", 10, 3, dropout=0.3)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3}
    x = torch.rand(2, 3, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


class _Recorder(nn.Module):
    """A backbone that stores what it receives: features = per-channel sums."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.in_channels = channels
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, 2)
        self.seen: torch.Tensor | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x.sum(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_image_classifier_normalises_per_channel() -> None:
    backbone = _Recorder()
    model = ImageClassifier(backbone, mean=(0.5, 0.25, 0.125), std=(0.5, 0.25, 2.0))
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 2, 0, 0] = 1.0, 0.75, 0.125
    model(x)
    seen = backbone.seen
    # (1 - .5) / .5 = 1; (.75 - .25) / .25 = 2; (.125 - .125) / 2 = 0; zeros give -mean/std.
    assert seen[0, :, 0, 0].tolist() == [1.0, 2.0, 0.0]
    assert seen[0, :, 1, 1].tolist() == [-1.0, -1.0, -0.0625]
    torch.testing.assert_close(model.features(x), torch.tensor([[-2.0, -1.0, -0.1875]]))
    assert model.mean.shape == model.std.shape == (1, 3, 1, 1)
    assert {"mean", "std"} <= set(model.state_dict())
    assert (model.feature_dim, model.num_classes, model.in_channels) == (3, 2, 3)
    assert model.classifier is backbone.classifier and model.backbone is backbone
    assert model.double().mean.dtype == torch.float64


def test_image_classifier_broadcasts_one_value_and_rejects_bad_stats() -> None:
    model = ImageClassifier(_Recorder(), mean=0.5, std=[0.25])
    model(torch.full((1, 3, 1, 1), 1.0))
    assert model.backbone.seen.flatten().tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ConfigError, match="positive"):
        ImageClassifier(_Recorder(), mean=(0.5, 0.5, 0.5), std=(0.5, 0.0, 0.5))
    with pytest.raises(ConfigError, match="same number of channels"):
        ImageClassifier(_Recorder(), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5))
    with pytest.raises(ConfigError, match="expects 3 input channels"):
        ImageClassifier(_Recorder(), mean=(0.5, 0.5), std=(0.5, 0.5))


def test_build_classifier_matches_manual_normalisation() -> None:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, 1, mean=(0.1307,), std=(0.3081,)).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.backbone((x - 0.1307) / 0.3081))
    assert isinstance(model, ImageClassifier) and model.num_classes == 10


def test_feature_extractor_returns_hooked_outputs() -> None:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
    fx = feature_extractor(net, ["0", "1"])
    out, feats = fx(torch.tensor([[1.0, 3.0]]))
    # W x = [1 - 3, 2 * 1] = [-2, 2]; relu -> [0, 2].
    assert feats["0"].tolist() == [[-2.0, 2.0]]
    assert feats["1"].tolist() == [[0.0, 2.0]] == out.tolist()
    assert feats["0"].requires_grad  # feature losses can back-propagate
    net(torch.tensor([[0.0, 1.0]]))  # direct calls are recorded too
    assert fx.features["0"].tolist() == [[-1.0, 0.0]]
    fx.remove()
    net(torch.tensor([[5.0, 5.0]]))
    assert fx.features["0"].tolist() == [[-1.0, 0.0]]


def test_feature_extractor_on_wrapped_backbone() -> None:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, 1, mean=(0.5,), std=(0.25,), width=32).eval()
    x = torch.rand(2, 1, 28, 28)
    with feature_extractor(model, "backbone.block2", detach=True) as fx, torch.no_grad():
        out, feats = fx(x)
    b = model.backbone
    with torch.no_grad():
        expected = b.block2(b.block1((x - 0.5) / 0.25))
        torch.testing.assert_close(out, model(x))
    assert feats["backbone.block2"].shape == (2, 64, 7, 7)
    torch.testing.assert_close(feats["backbone.block2"], expected)
    assert not model.backbone.block2._forward_hooks  # the context manager removed the hook


def test_feature_extractor_names_missing_layers() -> None:
    model = _build("resnet20", 10, 3)
    with pytest.raises(ConfigError, match=r"no child 'layer4'.*layer1, layer2, layer3"):
        feature_extractor(model, "layer4")
    with pytest.raises(ConfigError, match="'layer1.0' .* no child 'conv9'"):
        feature_extractor(model, "layer1.0.conv9")


def test_every_model_lists_reachable_stages() -> None:
    for name in (
        "resnet20",
        "wrn_16_2",
        "vgg8",
        "mobilenetv2_half",
        "shufflenetv2",
        "small_cnn",
        "preact_resnet18",
    ):
        model = _build(name, 10, 3)
        assert model.stage_names
        for path in model.stage_names:
            model.get_submodule(path)


def test_unknown_model_lists_sorted_choices() -> None:
    with pytest.raises(ConfigError) as err:
        build_backbone("resnet21", 10, 3)
    message = str(err.value)
    assert "resnet21" in message and ", ".join(sorted(MODELS)) in message
    assert isinstance(err.value, ValueError)


def test_unknown_and_missing_kwargs_are_named() -> None:
    with pytest.raises(ConfigError, match=r"does not take \['widen'\]; accepted keys: shortcut"):
        build_backbone("resnet20", 10, 3, widen=2)
    with pytest.raises(
        ConfigError,
        match=r"does not take \['droput'\] \(did you mean 'dropout'\?\); accepted keys: depth, "
        r"widen_factor, dropout",
    ):
        build_backbone("wide_resnet", 10, 3, droput=0.3, depth=16, widen_factor=2)
    with pytest.raises(ConfigError, match=r"needs \['depth', 'widen_factor'\]"):
        build_backbone("wide_resnet", 10, 3)


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("wide_resnet", {"depth": 27, "widen_factor": 2}, "6n\\+4"),
        ("wide_resnet", {"depth": 16, "widen_factor": 0}, "widen_factor"),
        ("wrn_16_2", {"dropout": 1.5}, "dropout"),
        ("cifar_resnet", {"depth": 21}, "6n\\+2"),
        ("resnet20", {"shortcut": "B"}, "shortcut"),
        ("shufflenetv2", {"net_size": 0.7}, "net_size"),
        ("mobilenetv2", {"stem_stride": 4}, "stem_stride"),
        ("small_cnn", {"width": 0}, "width"),
    ],
)
def test_invalid_values_raise_config_error(name: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_backbone(name, 10, 3, **kwargs)


def test_invalid_num_classes() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        build_backbone("resnet20", 0, 3)


def test_user_models_by_import_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_user_models.py").write_text(
        textwrap.dedent("""
        from robustlab.models import SmallCNN

        def tiny(num_classes, in_channels, width=4):
            return SmallCNN(num_classes, in_channels, width=width)

        def not_a_backbone(num_classes, in_channels):
            return object()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model = build_backbone("my_user_models:tiny", 5, 1, width=8)
        assert model.feature_dim == 32 and model(torch.rand(2, 1, 28, 28)).shape == (2, 5)
        assert build_backbone("my_user_models.tiny", 5, 1).feature_dim == 16
        with pytest.raises(ConfigError, match=r"does not take \['depth'\].*accepted keys: width"):
            build_backbone("my_user_models:tiny", 5, 1, depth=3)
        with pytest.raises(ConfigError, match="not a backbone"):
            build_backbone("my_user_models:not_a_backbone", 5, 1)
    finally:
        sys.modules.pop("my_user_models", None)
    assert build_backbone("robustlab.models.resnet_cifar:resnet20", 10, 3).feature_dim == 64
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg.models'"):
        build_backbone("no_such_pkg.models:net", 10, 3)
    with pytest.raises(ConfigError, match="must accept num_classes and in_channels"):
        build_backbone("torch.nn:Linear", 10, 3)


def _read_idx(path, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


@pytest.mark.slow
@pytest.mark.data
def test_small_cnn_reaches_99_percent_on_mnist(mnist_root) -> None:
    """Two epochs of Adam with a one-cycle schedule: >= 99% test accuracy (measured 99.4%)."""
    raw = mnist_root / "MNIST" / "raw"
    x_train = torch.from_numpy(_read_idx(raw / "train-images-idx3-ubyte.gz", 16).copy())
    y_train = torch.from_numpy(_read_idx(raw / "train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    x_test = torch.from_numpy(_read_idx(raw / "t10k-images-idx3-ubyte.gz", 16).copy())
    y_test = torch.from_numpy(_read_idx(raw / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    x_train = x_train.view(-1, 1, 28, 28).float() / 255
    x_test = x_test.view(-1, 1, 28, 28).float() / 255
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, 1, mean=(0.1307,), std=(0.3081,), width=32)
    epochs, batch = 2, 128
    steps = len(x_train) // batch
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * steps)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train))
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(x_test[i : i + 1000]).argmax(1) == y_test[i : i + 1000]).sum().item()
            for i in range(0, len(x_test), 1000)
        )
    assert correct / len(x_test) >= 0.99


def test_torchvision_backbone_splits_features_and_head():
    from robustlab.models import build_backbone

    net = build_backbone("torchvision", num_classes=7, arch="resnet18")
    assert net.feature_dim == 512 and net.classifier.out_features == 7
    assert net.stage_names == ("net.layer1", "net.layer2", "net.layer3", "net.layer4")
    x = torch.rand(2, 3, 64, 64)
    net.eval()
    features = net.features(x)
    assert features.shape == (2, 512)
    assert torch.allclose(net(x), net.classifier(features))
    inception = build_backbone("torchvision", num_classes=3, arch="inception_v3")
    inception.train()  # no auxiliary head: training mode returns plain logits
    assert inception(torch.rand(2, 3, 80, 80)).shape == (2, 3)
    with pytest.raises(ConfigError, match="resnet50"):
        build_backbone("torchvision", num_classes=3, arch="resnet5")


def test_torchvision_pretrained_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    """The real download code path, served from a local torch-hub cache (no network)."""
    import torchvision.models as tvm

    from robustlab.models import build_backbone

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    reference = tvm.mobilenet_v3_small()
    nn.init.constant_(reference.classifier[-1].bias, 0.25)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / weights.url.rsplit("/", 1)[-1])
    kept = build_backbone(
        "torchvision", num_classes=1000, arch="mobilenet_v3_small", weights="IMAGENET1K_V1"
    )
    x = torch.rand(2, 3, 64, 64)
    reference.eval(), kept.eval()
    assert torch.equal(kept.classifier.bias, reference.classifier[-1].bias)  # head kept
    assert torch.allclose(kept(x), reference(x), atol=1e-5)
    ten = build_backbone(
        "torchvision", num_classes=10, arch="mobilenet_v3_small", weights="IMAGENET1K_V1"
    )
    ten.eval()
    assert ten.classifier.out_features == 10  # a new head, the pretrained body
    assert torch.allclose(ten.features(x), kept.features(x), atol=1e-6)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        build_backbone("torchvision", num_classes=10, arch="mobilenet_v3_small", weights="V9")
