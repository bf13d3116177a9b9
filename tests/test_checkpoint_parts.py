"""Loading the parts a run exported (robustlab.run.checkpoints.load_module) from hand-built
checkpoints, without training: every part from a dict, a file and a run folder, the classifier
rebuilt from its stored config, older formats, and each error word for word."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from robustlab.errors import CheckpointError
from robustlab.models import build_classifier
from robustlab.run.checkpoints import (
    CHECKPOINT_KEY,
    ExportedPart,
    load_classifier,
    load_module,
    part_records,
    recorded_subset,
    run_record,
)
from tests.helpers import error_message

CONFIG = {"model": {"name": "small_cnn", "width": 4}}
IMAGES = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class _Owner(nn.Module):
    """A method's modules: the classifier ``model`` and a ``generator`` it exports."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = build_classifier("small_cnn", 3, 1, (0.3,), (0.2,), width=4)
        self.generator = nn.Linear(2, 4)
        self.norm = nn.BatchNorm1d(3)


def _parts(owner: _Owner, **extra: ExportedPart) -> dict[str, ExportedPart]:
    size = {"in_features": 2, "out_features": 4}
    return {
        "model": ExportedPart(owner.model),
        "generator": ExportedPart(owner.generator, "torch.nn:Linear", size),
        **extra,
    }


def _checkpoint(owner: _Owner, parts: dict[str, ExportedPart] | None = None) -> dict:
    parts = _parts(owner) if parts is None else parts
    return {
        "state_dict": dict(owner.state_dict()),
        CHECKPOINT_KEY: run_record(CONFIG, owner.model, part_records(owner, parts)),
    }


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _error(call) -> str:
    return error_message(call, CheckpointError)


def test_every_part_loads_from_a_dict_a_file_and_a_run_folder(tmp_path):
    owner = _Owner().eval()
    checkpoint = _checkpoint(owner)
    path = tmp_path / "checkpoints" / "best.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    (tmp_path / "results.json").write_text(json.dumps({"checkpoint": str(path)}))
    for source in (checkpoint, path, str(path), tmp_path):
        classifier = load_classifier(source)
        assert not classifier.training and _same_weights(classifier, owner.model)
        assert torch.equal(classifier(IMAGES), owner.model(IMAGES))  # its mean/std buffers too
        assert _same_weights(load_module(source), owner.model)
        generator = load_module(source, "generator")
        assert type(generator) is nn.Linear and not generator.training
        assert _same_weights(generator, owner.generator)


def test_a_classifier_of_a_record_without_its_shape_is_sized_by_the_data_module():
    """Format 1 (no classifier shape) with a method tensor under ``model.`` whose name looks
    like a classifier: the shape cannot be read off the weights, the data module gives it."""
    owner = _Owner().eval()
    checkpoint = _checkpoint(owner)
    checkpoint[CHECKPOINT_KEY]["classifier"] = None
    checkpoint["state_dict"]["model.aux_classifier.weight"] = torch.zeros(1, 1, 1, 1)
    datamodule = SimpleNamespace(num_classes=3, in_channels=1)
    assert _same_weights(load_classifier(checkpoint, datamodule=datamodule), owner.model)
    assert _same_weights(load_module(checkpoint, datamodule=datamodule), owner.model)
    assert _error(lambda: load_classifier(checkpoint)) == (
        "checkpoint records no classifier shape; pass the run's data module to rebuild it"
    )


def test_only_pretrained_googlenet_and_inception_switch_on_transform_input():
    model = build_classifier("torchvision", 3, 3, (0.5,) * 3, (0.25,) * 3, arch="googlenet")
    config = {"model": {"name": "torchvision", "arch": "googlenet", "weights": None}}
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        CHECKPOINT_KEY: run_record(config, model),
    }
    assert load_classifier(checkpoint).backbone.net.transform_input is False
    resnet = build_classifier("torchvision", 3, 3, (0.5,) * 3, (0.25,) * 3, arch="resnet18")
    config = {"model": {"name": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}}
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in resnet.state_dict().items()},
        CHECKPOINT_KEY: run_record(config, resnet),
    }
    rebuilt = load_classifier(checkpoint)  # no download: the weights come from the checkpoint
    assert _same_weights(rebuilt, resnet) and not hasattr(rebuilt.backbone.net, "transform_input")


def test_missing_parts_name_the_source_and_what_it_exports(tmp_path):
    owner = _Owner()
    checkpoint = _checkpoint(owner)
    path = tmp_path / "run.ckpt"
    torch.save(checkpoint, path)
    assert _error(lambda: load_module(checkpoint, "nope")) == (
        "checkpoint exports no part 'nope'; its parts: model, generator"
    )
    assert _error(lambda: load_module(path, "nope")) == (
        f"checkpoint={path} exports no part 'nope'; its parts: model, generator"
    )
    assert _error(lambda: load_module(checkpoint, "nope", label="teacher")) == (
        "teacher exports no part 'nope'; its parts: model, generator"
    )
    none = _checkpoint(owner, {})
    assert _error(lambda: load_classifier(none)) == (
        "checkpoint exports no part 'model'; its parts: none"
    )
    old = _checkpoint(owner)
    del old[CHECKPOINT_KEY]["parts"]
    old[CHECKPOINT_KEY]["format"] = 2
    assert _same_weights(load_classifier(old), owner.model)
    assert _error(lambda: load_module(old, "generator", label="teacher")) == (
        "teacher is of checkpoint format 2, older than exported parts (format 3): only its "
        "classifier (part 'model') loads; re-train it to load part 'generator'"
    )
    malformed = _checkpoint(owner)
    malformed[CHECKPOINT_KEY]["parts"] = ["model"]
    assert _error(lambda: load_classifier(malformed)) == (
        "checkpoint: its 'parts' record is malformed (list)"
    )
    assert _error(lambda: load_classifier(malformed, label="teacher")) == (
        "teacher: its 'parts' record is malformed (list)"
    )


def test_weights_that_do_not_fit_are_named():
    owner = _Owner()
    checkpoint = _checkpoint(owner)
    state = checkpoint["state_dict"]
    no_model = {k: v for k, v in state.items() if not k.startswith("model.")}
    assert _error(lambda: load_classifier({**checkpoint, "state_dict": no_model})) == (
        "checkpoint holds no weights of part 'model' ('model.*')"
    )
    no_generator = {k: v for k, v in state.items() if not k.startswith("generator.")}
    assert (
        _error(
            lambda: load_module({**checkpoint, "state_dict": no_generator}, "generator", label="t")
        )
        == "t holds no weights of part 'generator' ('generator.*')"
    )
    # the classifier: the first five tensors its config needs and the checkpoint lacks
    kept = "model.backbone.classifier.weight"
    needed = [k for k in owner.model.state_dict() if f"model.{k}" != kept]
    partial = {**no_model, kept: state[kept]}
    assert _error(lambda: load_classifier({**checkpoint, "state_dict": partial})) == (
        "checkpoint: its weights do not fit the model its config describes "
        f"(missing {', '.join(needed[:5])})"
    )
    # a part is loaded strictly: a tensor it does not have is an error (a classifier ignores it)
    extra = {**state, "generator.extra": torch.zeros(1), "model.extra": torch.zeros(1)}
    assert _same_weights(load_classifier({**checkpoint, "state_dict": extra}), owner.model)
    assert _error(lambda: load_module({**checkpoint, "state_dict": extra}, "generator")) == (
        "checkpoint: its weights do not fit part 'generator' "
        '(Unexpected key(s) in state_dict: "extra".)'
    )
    # a part of another size: torch's one line per tensor, after its header line
    records = checkpoint[CHECKPOINT_KEY]["parts"]
    records["generator"]["kwargs"] = {"in_features": 3, "out_features": 4}
    assert _error(lambda: load_module(checkpoint, "generator")) == (
        "checkpoint: its weights do not fit part 'generator' (size mismatch for weight: "
        "copying a param with shape torch.Size([4, 2]) from checkpoint, the shape in current "
        "model is torch.Size([4, 3]).)"
    )
    # long reports are cut at 300 characters
    records["norm"] = {
        "prefix": "norm.",
        "factory": "torch.nn:BatchNorm1d",
        "kwargs": {"num_features": 5},
    }
    message = _error(lambda: load_module(checkpoint, "norm"))
    head = "checkpoint: its weights do not fit part 'norm' ("
    assert message.startswith(f"{head}size mismatch for weight: copying a param with")
    assert len(message) == len(head) + 300 + 1 and "Error(s)" not in message
    assert "torch.Size([5]). size mismatch for bias: copying" in message  # one space between
    # a module whose loading fails with a one-line error: that line, cut at 300 characters
    records["odd"] = {
        "prefix": "generator.",
        "factory": "tests.test_checkpoint_parts:Refusing",
        "kwargs": {"in_features": 2, "out_features": 4},
    }
    assert _error(lambda: load_module(checkpoint, "odd")) == (
        f"checkpoint: its weights do not fit part 'odd' (refused: {'x' * 291})"
    )


class Refusing(nn.Linear):
    """A module whose state loading fails with a single long line."""

    def _load_from_state_dict(self, *args, **kwargs):
        raise RuntimeError("refused: " + "x" * 400)


def test_parts_that_cannot_be_rebuilt_are_one_line_errors():
    owner = _Owner()
    checkpoint = _checkpoint(owner)
    records = checkpoint[CHECKPOINT_KEY]["parts"]
    records["generator"]["factory"] = "torch.nn:NoSuchLayer"
    assert _error(lambda: load_module(checkpoint, "generator")) == (
        "checkpoint: cannot rebuild part 'generator': part 'generator' "
        "factory='torch.nn:NoSuchLayer': module 'torch.nn' has no 'NoSuchLayer'"
    )
    records["generator"] = {"prefix": "generator.", "factory": "collections:OrderedDict"}
    assert _error(lambda: load_module(checkpoint, "generator", label="t")) == (
        "t: part 'generator' factory collections:OrderedDict built a OrderedDict, "
        "not a torch module"
    )
    records["generator"] = {
        "prefix": "generator.",
        "factory": "torch.nn:Linear",
        "kwargs": {"in_features": 2, "out_features": 4, "bogus": 1},
    }
    assert _error(lambda: load_module(checkpoint, "generator")) == (
        "checkpoint: cannot rebuild part 'generator': part 'generator' factory torch.nn:Linear "
        "does not take ['bogus']; accepted keys: in_features, out_features, bias, device, dtype"
    )


def test_part_records_are_prefixes_and_plain_arguments():
    owner = _Owner()
    nested = {"sizes": (1, 2), "options": {"depth": [3, None], "name": "g"}, "on": True}
    records = part_records(owner, {"g": ExportedPart(owner.generator, "torch.nn:Linear", nested)})
    assert records == {
        "g": {
            "prefix": "generator.",
            "factory": "torch.nn:Linear",
            "kwargs": {"sizes": [1, 2], "options": {"depth": [3, None], "name": "g"}, "on": True},
        }
    }
    assert type(records["g"]["kwargs"]["options"]) is dict
    with pytest.raises(ValueError) as err:
        part_records(owner, {"stray": ExportedPart(nn.Linear(1, 1))})
    assert str(err.value) == (
        "exported part 'stray' is not a submodule of _Owner; register it as an attribute "
        "before declaring it"
    )
    for bad in ({"t": [torch.ones(1)]}, {"t": {"u": torch.ones(1)}}, {"t": {1: "a"}}):
        with pytest.raises(TypeError, match="plain config values"):
            part_records(owner, {"g": ExportedPart(owner.generator, "x:y", bad)})


def test_the_training_subset_is_read_from_the_datamodule_state():
    subset = {"dataset": "synthetic", "images": 7, "hash": "ab12"}
    checkpoint = {
        "epoch": 3,
        CHECKPOINT_KEY: {"subset": {"hash": "not this"}},
        "state_dict": {"subset": {"hash": "nor this"}},
        "optimizer_states": [{"subset": {"hash": "nor this"}}],
        "Unfinished": {"subset": "not a record"},
        "Unhashed": {"subset": {"hash": 5}},
        "Other": {},
        "SyntheticDataModule": {"subset": subset},
    }
    found = recorded_subset(checkpoint)
    assert found == subset and found is not subset
    del checkpoint["SyntheticDataModule"]
    assert recorded_subset(checkpoint) is None


def test_a_checkpoint_file_without_its_model_config_is_refused(tmp_path):
    owner = _Owner()
    for config in (None, {"seed": 0}, {"model": "small_cnn"}):
        checkpoint = _checkpoint(owner)
        checkpoint[CHECKPOINT_KEY]["config"] = config
        path = tmp_path / "run.ckpt"
        torch.save(checkpoint, path)
        assert _error(lambda path=path: load_classifier(path)) == (
            f"checkpoint={path} has no run config (model settings); it cannot be rebuilt — "
            "use a checkpoint written by robustlab-train"
        )
