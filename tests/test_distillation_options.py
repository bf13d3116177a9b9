"""The distillation methods' plumbing (robustlab.methods.distillation), in-process on a teacher
checkpoint written by hand (no training): which logits, views, temperatures, weights and
label smoothing reach each loss, the teacher's cache and checkpoint handling, the warm-up of
DKD, the views a configuration needs, and every option and teacher error word for word.
The losses themselves are checked by hand in tests/test_distillation.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import CheckpointError
from robustlab.losses import crld_loss, dkd_loss, dkd_per_sample, kd_loss, kd_per_sample
from robustlab.methods import distillation as distillation_module
from robustlab.methods.consistency import AdversarialTerm
from robustlab.methods.distillation import (
    CRLD,
    DecoupledKD,
    Distillation,
    KnowledgeDistillation,
    build_teacher,
    check_teacher_source,
    pretrained_num_classes,
    teacher_in_channels,
)
from robustlab.models import ImageClassifier, build_backbone, build_classifier
from robustlab.run.checkpoints import CHECKPOINT_KEY, ExportedPart, part_records, run_record
from tests.helpers import error_message

CLASSES = 3
IMAGES = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
STRONG = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
LABELS = torch.tensor([0, 1, 2, 2, 1, 0])


def _classifier(seed: int, classes: int = CLASSES, channels: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return build_classifier(
        "small_cnn", classes, channels, (0.3,) * channels, (0.2,) * channels, width=4
    )


class _Owner(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


def _write_teacher(path: Path, model: nn.Module) -> Path:
    owner = _Owner(model.eval())
    record = run_record(
        {"model": {"name": "small_cnn", "width": 4}},
        model,
        part_records(owner, {"model": ExportedPart(model)}),
    )
    torch.save({"state_dict": dict(owner.state_dict()), CHECKPOINT_KEY: record}, path)
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Path, nn.Module]:
    """A 3-class small CNN teacher saved as a robustlab checkpoint, and the module itself."""
    model = _classifier(seed=7)
    with torch.no_grad():  # confident, varied logits: some examples pass CRLD's masks
        model.classifier.weight.mul_(40.0)
    path = _write_teacher(tmp_path_factory.mktemp("teacher") / "teacher.ckpt", model)
    return path, model


def _method(cls, teacher_path: Path, **options):
    return cls(_classifier(seed=3), teacher=str(teacher_path), **options)


# ------------------------------------------------------------------------------ the teacher
def test_teacher_source_is_checked_word_for_word(tmp_path):
    assert error_message(lambda: check_teacher_source(None)) == (
        "method.teacher is required: set method.teacher=<teacher run folder or .ckpt> (train "
        "the teacher first with robustlab-train), or a pretrained model config such as "
        "method.teacher={model:torchvision,arch:resnet34,weights:IMAGENET1K_V1}"
    )
    assert error_message(lambda: check_teacher_source({"arch": "resnet34"})) == (
        "method.teacher: a model-config teacher needs model=<model name>, got {'arch': 'resnet34'}"
    )
    assert error_message(
        lambda: check_teacher_source({"model": "torchvision", "weights": None})
    ) == (
        "method.teacher={'model': 'torchvision', 'weights': None}: a teacher built from a model "
        "config needs pretrained weights (e.g. weights=IMAGENET1K_V1); a trained robustlab "
        "teacher is given by its run folder"
    )
    assert error_message(lambda: check_teacher_source(3)) == (
        "method.teacher must be a run folder, a .ckpt path or a model config, got 3"
    )
    missing = tmp_path / "nowhere"
    assert error_message(lambda: check_teacher_source(missing), CheckpointError) == (
        f"method.teacher={missing}: no such checkpoint file or run folder; train the "
        "teacher first (robustlab-train ... hydra.run.dir=<folder>) and pass that folder"
    )
    config = {"model": "torchvision", "weights": "IMAGENET1K_V1"}
    returned = check_teacher_source(config)
    assert returned == config and returned is not config and isinstance(returned, dict)
    assert check_teacher_source(tmp_path) == str(tmp_path)  # a Path is returned as a string
    assert check_teacher_source(str(tmp_path)) == str(tmp_path)


def test_unknown_pretrained_weight_set_is_a_config_error():
    message = error_message(lambda: pretrained_num_classes("torchvision", "resnet18", "NOPE"))
    assert message.startswith(
        "method.teacher: torchvision has no weight set 'NOPE' for arch='resnet18' ("
    )
    assert pretrained_num_classes("torchvision", "resnet18", "IMAGENET1K_V1") == 1000
    message = error_message(lambda: pretrained_num_classes("small_cnn", None, "x"))
    assert message == (
        "method.teacher.model=small_cnn: only model=torchvision has pretrained weights; "
        "give a robustlab teacher by its run folder"
    )


def test_a_checkpoint_teacher_is_rebuilt_with_its_weights_in_eval_mode(teacher, tmp_path):
    path, model = teacher
    built = build_teacher(str(path), _classifier(seed=3))
    assert not built.training
    for key, value in model.state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key
    torch.testing.assert_close(built(IMAGES), model(IMAGES))
    broken = tmp_path / "broken.ckpt"
    broken.write_text("not a checkpoint")
    message = error_message(
        lambda: build_teacher(str(broken), _classifier(seed=3)), CheckpointError
    )
    assert message.startswith(f"method.teacher: checkpoint={broken} cannot be read (")


def test_a_model_config_teacher_takes_the_students_normalisation_unless_given(monkeypatch):
    """The torchvision builder is real; only its pretrained download is left out (no network
    here): the call records which classes, channels, mean, std and options reach it."""
    calls = []

    def builder(name, num_classes, in_channels, mean, std, **options):
        calls.append((name, num_classes, in_channels, list(mean), list(std), dict(options)))
        return build_classifier("small_cnn", num_classes, in_channels, mean, std, width=4)

    monkeypatch.setattr(distillation_module, "build_classifier", builder)
    student = _classifier(seed=3, channels=1)
    with torch.no_grad():
        student.mean.fill_(0.25)
        student.std.fill_(0.5)
    config = {"model": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}
    built = build_teacher(config, student)
    assert not built.training
    assert calls[-1] == (
        "torchvision",
        1000,
        1,
        [0.25],
        [0.5],
        {"arch": "resnet18", "weights": "IMAGENET1K_V1"},
    )
    assert config == {"model": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}
    build_teacher({**config, "mean": [0.1], "std": [0.9]}, student)
    assert calls[-1][3:5] == ([0.1], [0.9])
    # the method builds it around its student (a 3-class weight set, for the class check)
    monkeypatch.setattr(distillation_module, "pretrained_num_classes", lambda *args: CLASSES)
    method = KnowledgeDistillation(student, teacher=config)
    options = {"arch": "resnet18", "weights": "IMAGENET1K_V1"}
    assert calls[-1] == ("torchvision", CLASSES, 1, [0.25], [0.5], options)
    assert method.teacher_source == config and not method.teacher.training


def test_a_stand_in_student_checks_its_teacher_source_but_loads_no_teacher(teacher, tmp_path):
    """Config validation builds the method around a storage-less (meta) student."""
    path, _ = teacher
    with torch.device("meta"):  # as robustlab.run.validation builds it
        backbone = build_backbone("small_cnn", CLASSES, 1, width=4)
    stand_in = ImageClassifier(backbone, mean=0.5, std=0.25)
    method = KnowledgeDistillation(stand_in, teacher=str(path))
    assert method.teacher is None and method.teacher_source == str(path)
    checkpoint = {"state_dict": {}}
    method.on_load_checkpoint(checkpoint)  # nothing to put back
    assert checkpoint["state_dict"] == {}
    with pytest.raises(CheckpointError):
        KnowledgeDistillation(stand_in, teacher=str(tmp_path / "nowhere"))


def test_teacher_in_channels_reads_the_classifier_or_says_none():
    assert teacher_in_channels(_classifier(seed=0, channels=3)) == 3
    assert teacher_in_channels(nn.Linear(2, 3)) is None
    assert teacher_in_channels(SimpleNamespace(in_channels="2")) == 2


def test_the_teacher_must_match_the_students_classes_and_channels(teacher, tmp_path):
    path, _ = teacher
    four = _write_teacher(tmp_path / "four.ckpt", _classifier(seed=1, classes=4))
    message = error_message(lambda: _method(KnowledgeDistillation, four))
    assert message == (
        f"method.teacher={four} predicts 4 classes but the data has 3: distil from a teacher "
        "trained on the same data"
    )
    rgb = _write_teacher(tmp_path / "rgb.ckpt", _classifier(seed=1, channels=3))
    assert error_message(lambda: _method(KnowledgeDistillation, rgb)) == (
        f"method.teacher={rgb} takes 3-channel images but the data has 1: distil from a "
        "teacher trained on the same data"
    )
    method = _method(KnowledgeDistillation, path)
    assert error_message(lambda: method.set_teacher(nn.Linear(64, CLASSES))) == (
        f"method.teacher={path} predicts None classes but the data has 3: distil from a "
        "teacher trained on the same data"
    )
    head = nn.Linear(64, CLASSES)  # no in_channels: accepted
    head.num_classes = CLASSES
    method.set_teacher(head)
    assert method.teacher is head and not head.training
    assert not any(p.requires_grad for p in head.parameters())
    head.train()
    assert not head.training  # frozen for good


def test_method_options_are_checked_word_for_word(teacher):
    path, _ = teacher
    assert error_message(lambda: _method(KnowledgeDistillation, path, temperature=0)) == (
        "method.temperature must be > 0, got 0"
    )
    assert error_message(lambda: _method(KnowledgeDistillation, path, lambda_ce=-0.5)) == (
        "method.lambda_ce must be >= 0, got -0.5"
    )
    assert error_message(lambda: _method(KnowledgeDistillation, path, lambda_kd=-1)) == (
        "method.lambda_kd must be >= 0, got -1"
    )
    assert error_message(lambda: _method(CRLD, path, consistency="crld")) == (
        "CRLD has CRLD's view terms built in: set method.consistency=null"
    )
    assert error_message(lambda: _method(DecoupledKD, path, alpha=-1)) == (
        "method.alpha/beta must be >= 0, got -1/8.0"
    )
    assert error_message(lambda: _method(DecoupledKD, path, beta=-2)) == (
        "method.alpha/beta must be >= 0, got 1.0/-2"
    )
    for bad in (2.0, -1, True):
        assert error_message(lambda bad=bad: _method(DecoupledKD, path, warmup_epochs=bad)) == (
            f"method.warmup_epochs must be an integer >= 0, got {bad!r}"
        )
    # the limits themselves are allowed
    assert _method(KnowledgeDistillation, path, temperature=0.5).temperature == 0.5
    _method(KnowledgeDistillation, path, lambda_ce=0, lambda_kd=0)
    _method(DecoupledKD, path, alpha=0, beta=0, warmup_epochs=0)


def test_defaults_of_the_three_methods(teacher):
    path, _ = teacher
    kd = _method(KnowledgeDistillation, path)
    assert (kd.temperature, kd.lambda_ce, kd.lambda_kd, kd.consistency) == (4.0, 1.0, 0.9, None)
    assert isinstance(kd.temperature, float) and isinstance(kd.lambda_ce, float)
    dkd = _method(DecoupledKD, path)
    assert (dkd.alpha, dkd.beta, dkd.warmup_epochs) == (1.0, 8.0, 20)
    crld = _method(CRLD, path)
    terms = crld.view_terms
    assert (terms.lambda_wv, terms.lambda_cv, terms.tau_w, terms.tau_s) == (2.0, 0.5, 0.9, 0.2)
    assert error_message(lambda: _method(CRLD, path, tau_w=1.5)) == (
        "method.tau_w must be a probability in [0, 1], got 1.5"
    )


# ------------------------------------------------------------------------------ views
def test_the_views_each_configuration_needs(teacher):
    path, _ = teacher
    assert KnowledgeDistillation.views_for({}) == ()
    assert KnowledgeDistillation.views_for({"consistency": None}) == ()
    assert KnowledgeDistillation.views_for({"consistency": "crld"}) == ("weak", "strong")
    assert CRLD.views_for({}) == ("weak", "strong")
    assert _method(KnowledgeDistillation, path).needed_views() == ()
    plugged = _method(KnowledgeDistillation, path, consistency="crld")
    assert plugged.needed_views() == ("weak", "strong")
    assert _method(CRLD, path).needed_views() == ("weak", "strong")


def _attach(method, view_recipes):
    method._trainer = SimpleNamespace(datamodule=SimpleNamespace(view_recipes=view_recipes))
    return method


def test_setup_refuses_data_without_the_needed_views(teacher):
    path, _ = teacher
    crld = _attach(_method(CRLD, path), {"weak": None})
    assert error_message(lambda: crld.setup("fit")) == (
        "method needs the training views ['strong']: set data.views=[weak,strong]"
    )
    crld.setup("test")  # only fitting needs the views
    plugged = _attach(_method(KnowledgeDistillation, path, consistency="crld"), {})
    assert error_message(lambda: plugged.setup("fit")) == (
        "method.consistency=crld needs the training views ['weak', 'strong']: set "
        "data.views=[weak,strong]"
    )
    _attach(_method(CRLD, path), {"weak": None, "strong": None}).setup("fit")
    _attach(_method(KnowledgeDistillation, path), {}).setup("fit")
    no_data = _method(CRLD, path)
    no_data._trainer = SimpleNamespace(datamodule=None)
    no_data.setup("fit")


# ------------------------------------------------------------------------------ the objective
class _Counting(nn.Module):
    """The teacher's logits, counting forwards."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.calls = model, 0
        self.num_classes = model.num_classes

    def forward(self, x):
        self.calls += 1
        return self.model(x)


def test_teacher_logits_are_cached_per_input_without_gradient(teacher):
    path, model = teacher
    method = _method(KnowledgeDistillation, path)
    counting = _Counting(model)
    method.set_teacher(counting)
    first = method.teacher_logits(IMAGES)
    assert not first.requires_grad and counting.calls == 1
    assert method.teacher_logits(IMAGES) is first and counting.calls == 1
    same_values = IMAGES.clone()  # another tensor: another forward
    torch.testing.assert_close(method.teacher_logits(same_values), first)
    assert counting.calls == 2
    method.on_train_batch_end(None, None, 0)
    assert method._teacher_cache is None
    method.teacher_logits(same_values)
    assert counting.calls == 3


def _student_and_teacher(method, x):
    return method(x), method.teacher(x)


def test_kd_objective_on_the_weak_view_with_its_options(teacher):
    path, _ = teacher
    method = _method(
        KnowledgeDistillation,
        path,
        temperature=2.5,
        lambda_ce=0.3,
        lambda_kd=0.7,
        label_smoothing=0.1,
    )
    student, teacher_logits = _student_and_teacher(method, STRONG)
    expected = kd_loss(student, teacher_logits, LABELS, 2.5, 0.3, 0.7, 0.1)
    out = method.training_objective((IMAGES, LABELS, {"weak": STRONG}))
    torch.testing.assert_close(out.loss, expected.loss)
    assert set(out.logs) == {"ce", "kd"}
    torch.testing.assert_close(out.logs["ce"], expected.ce)
    torch.testing.assert_close(out.logs["kd"], expected.kd)
    torch.testing.assert_close(out.logits, student)
    assert out.inputs is STRONG
    torch.testing.assert_close(out.input_logits, student)
    plain = method.training_objective((IMAGES, LABELS))  # no views: x itself
    student = method(IMAGES)
    expected = kd_loss(student, method.teacher(IMAGES), LABELS, 2.5, 0.3, 0.7, 0.1)
    torch.testing.assert_close(plain.loss, expected.loss)
    assert plain.inputs is IMAGES
    torch.testing.assert_close(
        method.divergence(student, method.teacher(IMAGES), LABELS),
        kd_per_sample(student, method.teacher(IMAGES), 2.5),
    )


def test_dkd_objective_with_its_options_and_warmup_per_epoch(teacher):
    path, _ = teacher
    method = _method(
        DecoupledKD,
        path,
        alpha=0.5,
        beta=3.0,
        warmup_epochs=4,
        temperature=2.0,
        lambda_ce=0.7,
        label_smoothing=0.2,
    )
    student, teacher_logits = _student_and_teacher(method, IMAGES)
    for epoch, warmup in ((0, 0.25), (1, 0.5), (3, 1.0), (6, 1.0)):
        method._trainer = SimpleNamespace(current_epoch=epoch)
        assert method.warmup == warmup
        expected = dkd_loss(student, teacher_logits, LABELS, 0.5, 3.0, 2.0, 0.7, warmup, 0.2)
        out = method.training_objective((IMAGES, LABELS))
        torch.testing.assert_close(out.loss, expected.loss)
        assert set(out.logs) == {"ce", "tckd", "nckd"}
        torch.testing.assert_close(out.logs["ce"], expected.ce)
        torch.testing.assert_close(out.logs["tckd"], expected.tckd)
        torch.testing.assert_close(out.logs["nckd"], expected.nckd)
        torch.testing.assert_close(
            method.divergence(student, teacher_logits, LABELS),
            warmup * dkd_per_sample(student, teacher_logits, LABELS, 0.5, 3.0, 2.0),
        )


def test_crld_objective_takes_each_view_and_option(teacher):
    path, _ = teacher
    method = _method(
        CRLD,
        path,
        temperature=2.0,
        lambda_ce=0.6,
        lambda_wv=1.5,
        lambda_cv=0.8,
        tau_w=0.5,
        tau_s=0.4,
        label_smoothing=0.1,
    )
    views = {"weak": IMAGES, "strong": STRONG}
    out = method.training_objective((torch.zeros(6, 1, 8, 8), LABELS, views))
    expected = crld_loss(
        method(IMAGES),
        method(STRONG),
        method.teacher(IMAGES),
        method.teacher(STRONG),
        LABELS,
        2.0,
        0.6,
        1.5,
        0.8,
        0.5,
        0.4,
        0.1,
    )
    assert expected.within > 0 and expected.cross > 0
    torch.testing.assert_close(out.loss, expected.loss)
    assert set(out.logs) == {"ce", "kd_within", "kd_cross"}
    torch.testing.assert_close(out.logs["ce"], expected.ce)
    torch.testing.assert_close(out.logs["kd_within"], expected.within)
    torch.testing.assert_close(out.logs["kd_cross"], expected.cross)
    torch.testing.assert_close(out.logits, method(IMAGES))
    assert out.inputs is IMAGES
    torch.testing.assert_close(out.input_logits, method(IMAGES))
    assert method._teacher_cache[0] is IMAGES  # composed terms see the weak view
    terms = method.view_terms
    assert (terms.lambda_wv, terms.lambda_cv, terms.tau_w, terms.tau_s) == (1.5, 0.8, 0.5, 0.4)


def test_kd_with_the_consistency_plugin_adds_crlds_view_terms_around_kd(teacher):
    path, _ = teacher
    method = _method(
        KnowledgeDistillation,
        path,
        temperature=2.0,
        lambda_ce=0.4,
        lambda_kd=0.5,
        label_smoothing=0.1,
        consistency={
            "name": "crld",
            "lambda_wv": 1.5,
            "lambda_cv": 0.7,
            "tau_w": 0.5,
            "tau_s": 0.4,
        },
    )
    views = {"weak": IMAGES, "strong": STRONG}
    out = method.training_objective((torch.zeros(6, 1, 8, 8), LABELS, views))
    s_w, s_s = method(IMAGES), method(STRONG)
    t_w, t_s = method.teacher(IMAGES), method.teacher(STRONG)
    host = kd_loss(s_w, t_w, LABELS, 2.0, 0.4, 0.5, 0.1)
    extra, logs = method.consistency(
        method.divergence,
        (s_w, s_s),
        (t_w, t_s),
        LABELS,
        host_lambda_ce=0.4,
        label_smoothing=0.1,
    )
    assert logs["kd_within"] > 0 and logs["kd_cross"] > 0
    ce_strong = F.cross_entropy(s_s, LABELS, label_smoothing=0.1)
    torch.testing.assert_close(logs["ce_strong"], ce_strong)
    torch.testing.assert_close(out.loss, host.loss + extra)
    assert set(out.logs) == {"ce", "kd", "ce_strong", "kd_within", "kd_cross"}
    for name in ("kd_within", "kd_cross", "ce_strong"):
        torch.testing.assert_close(out.logs[name], logs[name])
    assert method._teacher_cache[0] is IMAGES
    torch.testing.assert_close(method._teacher_cache[1], t_w)


def test_an_adversarial_term_gets_the_teachers_logits(teacher):
    path, _ = teacher
    method = _method(KnowledgeDistillation, path, terms={"adversarial": {"target": "teacher"}})
    term = method.terms["adversarial"]
    assert isinstance(term, AdversarialTerm)
    torch.testing.assert_close(term.teacher_logits(IMAGES), method.teacher(IMAGES))


def test_the_base_has_no_divergence_or_loss_of_its_own(teacher):
    path, _ = teacher
    base = _method(Distillation, path)
    with pytest.raises(NotImplementedError):
        base.divergence(IMAGES, IMAGES, LABELS)
    with pytest.raises(NotImplementedError):
        base.distillation_loss(IMAGES, IMAGES, LABELS)


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoints_leave_the_teacher_out_and_loading_puts_it_back(teacher):
    path, model = teacher
    method = _method(KnowledgeDistillation, path)
    checkpoint = {"state_dict": dict(method.state_dict())}
    assert any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    method.on_save_checkpoint(checkpoint)
    assert not [k for k in checkpoint["state_dict"] if k.startswith("teacher.")]
    assert [k for k in checkpoint["state_dict"] if k.startswith("model.")]
    method.on_load_checkpoint(checkpoint)
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint["state_dict"]["teacher." + key], value), key
    method.load_state_dict(checkpoint["state_dict"])  # strict: every key is there
    no_state = {}
    method.on_load_checkpoint(no_state)
    assert "state_dict" not in no_state
    method.on_save_checkpoint(no_state)  # a record without weights: nothing to leave out
    assert "state_dict" not in no_state
