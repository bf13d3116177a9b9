"""Knowledge distillation (issue 11): KD, DKD and CRLD losses against hand-computed values, the
frozen teacher from another run, CRLD's view terms as a plug-in on KD/DKD, ARD as KD plus the
adversarial term, the two-step teacher → student pipeline from the shell (also under DDP),
the one-line errors for a wrong teacher, and every distillation experiment config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlab.attacks import build_attack
from robustlab.cli.train import train
from robustlab.errors import ConfigError, RobustlabError
from robustlab.losses import (
    confidence_mask,
    crld_loss,
    dkd_loss,
    dkd_parts,
    dkd_warmup,
    kd_loss,
    kd_per_sample,
)
from robustlab.methods import check_method_requirements
from robustlab.methods.consistency import AdversarialTerm, build_consistency
from robustlab.run.builders import build_data, build_run_method
from robustlab.run.checkpoints import load_checkpoint, load_classifier
from robustlab.run.validation import validate_model_and_method
from tests.helpers import QUICK, compose_train, evaluate_trained, results_of, run_app


def kl(p: list[float], q: list[float]) -> float:
    """Σ p log(p / q), by hand."""
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def logits_of(*rows: list[float], temperature: float = 1.0) -> torch.Tensor:
    """Logits whose softmax at ``temperature`` is exactly each row of probabilities."""
    return temperature * torch.log(torch.tensor(rows, dtype=torch.float64))


# ------------------------------------------------------------------------------ KD
def test_kd_per_sample_is_t_squared_kl_of_the_tempered_distributions():
    T = 2.0
    teacher = logits_of([0.5, 0.25, 0.25], [0.1, 0.7, 0.2], temperature=T)
    student = logits_of([1 / 3, 1 / 3, 1 / 3], [0.3, 0.3, 0.4], temperature=T)
    expected = [
        T**2 * kl([0.5, 0.25, 0.25], [1 / 3] * 3),
        T**2 * kl([0.1, 0.7, 0.2], [0.3, 0.3, 0.4]),
    ]
    assert kd_per_sample(student, teacher, T).tolist() == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(2 * math.log(1.125))  # 4 · ½ ln(9/8)


def test_kd_loss_weights_change_the_loss_by_exactly_their_term():
    teacher = logits_of([0.6, 0.3, 0.1], [0.2, 0.2, 0.6], temperature=4.0)
    student = logits_of([0.5, 0.25, 0.25], [0.1, 0.1, 0.8])
    y = torch.tensor([0, 2])
    base = kd_loss(student, teacher, y, 4.0, lambda_ce=0.1, lambda_kd=0.9)
    ce = -(math.log(0.5) + math.log(0.8)) / 2
    assert base.ce.item() == pytest.approx(ce, rel=1e-12)
    assert base.kd.item() == pytest.approx(kd_per_sample(student, teacher, 4.0).mean().item())
    assert base.loss.item() == pytest.approx(0.1 * ce + 0.9 * base.kd.item(), rel=1e-12)
    more_ce = kd_loss(student, teacher, y, 4.0, lambda_ce=1.1, lambda_kd=0.9)
    more_kd = kd_loss(student, teacher, y, 4.0, lambda_ce=0.1, lambda_kd=1.9)
    assert (more_ce.loss - base.loss).item() == pytest.approx(base.ce.item(), rel=1e-12)
    assert (more_kd.loss - base.loss).item() == pytest.approx(base.kd.item(), rel=1e-12)


# ------------------------------------------------------------------------------ DKD
def test_dkd_parts_split_target_and_non_target_classes_by_hand():
    T = 2.0
    teacher = logits_of([0.5, 0.25, 0.25], [0.5, 0.25, 0.25], temperature=T)
    student = logits_of([1 / 3] * 3, [1 / 3] * 3, temperature=T)
    tckd, nckd = dkd_parts(student, teacher, torch.tensor([0, 1]), T)
    # y = 0: b_t = [.5, .5], b_s = [1/3, 2/3]; non-target [.25, .25] vs [1/3, 1/3]: equal shapes
    # y = 1: b_t = [.25, .75], b_s = [1/3, 2/3];
    #        non-target {0: .5, 2: .25} -> [2/3, 1/3] vs [.5, .5]
    assert tckd.tolist() == pytest.approx(
        [T**2 * kl([0.5, 0.5], [1 / 3, 2 / 3]), T**2 * kl([0.25, 0.75], [1 / 3, 2 / 3])]
    )
    assert nckd.tolist() == pytest.approx([0.0, T**2 * kl([2 / 3, 1 / 3], [0.5, 0.5])], abs=1e-12)


def test_kd_is_tckd_plus_one_minus_teacher_target_probability_times_nckd():
    """Zhao et al. (2022), eq. 4: KD = TCKD + (1 − p_t^y) · NCKD, at any temperature."""
    generator = torch.Generator().manual_seed(0)
    student = 3 * torch.randn(16, 7, generator=generator, dtype=torch.float64)
    teacher = 3 * torch.randn(16, 7, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 7, (16,), generator=generator)
    for T in (1.0, 4.0):
        tckd, nckd = dkd_parts(student, teacher, y, T)
        p_target = F.softmax(teacher / T, dim=1).gather(1, y[:, None]).squeeze(1)
        torch.testing.assert_close(kd_per_sample(student, teacher, T), tckd + (1 - p_target) * nckd)


def test_dkd_parts_stay_finite_for_a_certain_target():
    # p_y rounds to 1: log(1 − p_y) computed from probabilities would be −inf
    student = torch.tensor([[200.0, 0.0, 0.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0]])
    tckd, nckd = dkd_parts(student, teacher, torch.tensor([0]), 1.0)
    assert torch.isfinite(tckd).all() and torch.isfinite(nckd).all() and tckd.item() > 10


def test_dkd_loss_weights_and_linear_warmup():
    teacher = logits_of([0.6, 0.3, 0.1], [0.2, 0.2, 0.6], temperature=4.0)
    student = logits_of([0.5, 0.25, 0.25], [0.1, 0.1, 0.8])
    y = torch.tensor([0, 2])
    tckd, nckd = (part.mean().item() for part in dkd_parts(student, teacher, y, 4.0))
    out = dkd_loss(student, teacher, y, alpha=1.0, beta=8.0, temperature=4.0, warmup=0.25)
    assert out.loss.item() == pytest.approx(out.ce.item() + 0.25 * (tckd + 8 * nckd), rel=1e-12)
    more_alpha = dkd_loss(student, teacher, y, 2.0, 8.0, 4.0, warmup=0.25)
    more_beta = dkd_loss(student, teacher, y, 1.0, 9.0, 4.0, warmup=0.25)
    more_ce = dkd_loss(student, teacher, y, 1.0, 8.0, 4.0, lambda_ce=2.0, warmup=0.25)
    assert (more_alpha.loss - out.loss).item() == pytest.approx(0.25 * tckd, rel=1e-9)
    assert (more_beta.loss - out.loss).item() == pytest.approx(0.25 * nckd, rel=1e-9)
    assert (more_ce.loss - out.loss).item() == pytest.approx(out.ce.item(), rel=1e-9)
    # epochs counted from 1: 1/20 in the first epoch, full weight from epoch 20 on
    assert [dkd_warmup(e, 20) for e in (1, 10, 20, 21)] == [0.05, 0.5, 1.0, 1.0]
    assert dkd_warmup(1, 0) == 1.0


# ------------------------------------------------------------------------------ CRLD
def test_confidence_mask_is_the_teacher_max_probability_at_temperature_one():
    teacher = logits_of([0.91, 0.09], [0.89, 0.11], [0.5, 0.5])
    assert confidence_mask(teacher, 0.9).tolist() == [1.0, 0.0, 0.0]
    assert confidence_mask(4 * teacher, 0.9).tolist() == [1.0, 1.0, 0.0]  # logits, not tempered
    assert confidence_mask(torch.zeros(1, 2), 0.5).tolist() == [1.0]  # >= τ: exactly 0.5 is kept


# teacher weak: sample 0 confident (0.95 >= τ_w), sample 1 not; strong: only sample 1 >= τ_s
TEACHER_WEAK = [[0.95, 0.05], [0.6, 0.4]]
TEACHER_STRONG = [[0.6, 0.4], [0.2, 0.8]]
STUDENT_WEAK = [[0.5, 0.5], [0.5, 0.5]]
STUDENT_STRONG = [[0.75, 0.25], [0.3, 0.7]]
Y2 = [0, 1]


def _crld(**weights):
    options = {"temperature": 1.0, "tau_w": 0.9, "tau_s": 0.7, **weights}
    return crld_loss(
        logits_of(*STUDENT_WEAK),
        logits_of(*STUDENT_STRONG),
        logits_of(*TEACHER_WEAK),
        logits_of(*TEACHER_STRONG),
        torch.tensor(Y2),
        **options,
    )


def test_crld_loss_by_hand_with_masks_and_the_unnormalised_batch_mean():
    out = _crld(lambda_ce=1.0, lambda_wv=2.0, lambda_cv=0.5)
    sw, ss, tw, ts = STUDENT_WEAK, STUDENT_STRONG, TEACHER_WEAK, TEACHER_STRONG
    ce = sum(-math.log(sw[i][Y2[i]]) - math.log(ss[i][Y2[i]]) for i in range(2)) / 2
    # m_w = [1, 0], m_s = [0, 1]; the means divide by the batch size 2, not by the kept count
    within = (kl(tw[0], sw[0]) + kl(ts[0], ss[0])) / 2
    cross = (kl(tw[1], ss[1]) + kl(ts[1], sw[1])) / 2
    assert out.ce.item() == pytest.approx(ce, rel=1e-12)
    assert out.within.item() == pytest.approx(within, rel=1e-12)
    assert out.cross.item() == pytest.approx(cross, rel=1e-12)
    assert out.loss.item() == pytest.approx(ce + 2 * within + 0.5 * cross, rel=1e-12)


def test_crld_weights_change_the_loss_by_exactly_their_term():
    base = _crld(lambda_ce=1.0, lambda_wv=2.0, lambda_cv=0.5)
    for key, term in (
        ("lambda_ce", base.ce),
        ("lambda_wv", base.within),
        ("lambda_cv", base.cross),
    ):
        weights = {"lambda_ce": 1.0, "lambda_wv": 2.0, "lambda_cv": 0.5}
        weights[key] += 1.0
        assert (_crld(**weights).loss - base.loss).item() == pytest.approx(term.item(), rel=1e-9)


def test_crld_with_no_confident_teacher_is_cross_entropy_on_both_views():
    out = _crld(tau_w=1.0, tau_s=1.0)
    assert out.within.item() == 0 and out.cross.item() == 0
    assert out.loss.item() == pytest.approx(out.ce.item())


def test_consistency_options_are_checked_where_they_are_set():
    with pytest.raises(ConfigError, match=r"method.consistency.tau_w must be a probability"):
        build_consistency({"name": "crld", "tau_w": 1.5})
    with pytest.raises(ConfigError, match=r"unknown method.consistency 'crdl'"):
        build_consistency("crdl")
    with pytest.raises(ConfigError, match=r"does not take \['lamda_wv'\]"):
        build_consistency({"name": "crld", "lamda_wv": 1.0})
    assert build_consistency(None) is None


# ------------------------------------------------------------------------------ a real teacher
TEACHER_RUN = [
    "data=digits",
    "model=small_cnn",
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "suite=[]",
]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A small-CNN teacher trained for a few batches on digits, from the shell."""
    folder = tmp_path_factory.mktemp("teacher")
    proc = run_app("train", *TEACHER_RUN, f"hydra.run.dir={folder}/run", cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "run"


def _student(*overrides: str):
    """A distillation method and its data, built as robustlab-train builds them."""
    cfg = compose_train("data=digits", "model=small_cnn", *QUICK, *overrides)
    datamodule = build_data(cfg)
    return build_run_method(cfg, datamodule), datamodule


def _batch(datamodule, n: int = 16):
    """The first n training images, labels and (with data.views) their views, as the data
    module makes them."""
    x, y = next(iter(datamodule.train_dataloader()))
    x, y = x[:n], y[:n]
    views = datamodule.make_views(x, epoch=0, step=0) if datamodule.view_recipes else {}
    return datamodule.on_after_batch_transfer((x, y), 0) + ((views,) if views else ())


def test_kd_plus_crld_consistency_is_crld_when_the_kd_term_is_off(teacher_dir):
    """The plug-in is CRLD's view terms around the host's divergence: KD with λ_kd=0 plus
    the plug-in equals method=crld (same weights, thresholds, T) on the same batch."""
    views = "data.views=[weak,strong]"
    crld, datamodule = _student("method=crld", views, f"method.teacher={teacher_dir}")
    kd, _ = _student(
        "method=kd",
        views,
        f"method.teacher={teacher_dir}",
        "method.lambda_kd=0",
        "method.lambda_ce=1",
        "+method/consistency=crld",
        "method.consistency.tau_s=0.15",  # some examples pass the mask, some do not
        "method.consistency.tau_w=0.16",
    )
    crld.view_terms.tau_s, crld.view_terms.tau_w = 0.15, 0.16
    kd.model.load_state_dict(crld.model.state_dict())
    batch = _batch(datamodule)
    expected = crld.training_objective(batch)
    composed = kd.training_objective(batch)
    assert expected.logs["kd_within"] > 0 and expected.logs["kd_cross"] > 0
    torch.testing.assert_close(composed.loss, expected.loss)
    for name in ("kd_within", "kd_cross"):
        torch.testing.assert_close(composed.logs[name], expected.logs[name])


def test_dkd_method_warms_up_its_kd_part_in_the_first_epoch(teacher_dir):
    method, datamodule = _student("method=dkd", f"method.teacher={teacher_dir}")
    x, y = _batch(datamodule)
    out = method.training_objective((x, y))
    tckd, nckd = (p.mean() for p in dkd_parts(method(x), method.teacher(x), y, 4.0))
    expected = F.cross_entropy(method(x), y) + (1 / 20) * (1.0 * tckd + 8.0 * nckd)
    torch.testing.assert_close(out.loss, expected)  # epoch 0 of Lightning = epoch 1 of the paper


def test_ard_term_is_t_squared_kl_of_the_student_on_pgd_examples_to_the_teacher_on_clean(
    teacher_dir,
):
    method, datamodule = _student(
        "method=kd",
        f"method.teacher={teacher_dir}",
        "+method.terms.adversarial.target=teacher",
        "+method.terms.adversarial.temperature=2.0",
        "+method.terms.adversarial.attack.random_start=false",
    )
    term = method.terms["adversarial"]
    x, y = _batch(datamodule, 8)
    attack = build_attack("pgd", eps="8/255", steps=10, step_size="2/255", random_start=False)
    method.model.eval()
    x_adv = attack(method.model, x, y)
    assert 0 < (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    p = F.softmax(method.teacher(x) / 2.0, dim=1)
    log_q = F.log_softmax(method.model(x_adv) / 2.0, dim=1)
    expected = 4.0 * (p * (p.log() - log_q)).sum(1).mean()
    torch.testing.assert_close(term(method.model, x, method.model(x), y), expected)
    label_term = AdversarialTerm(target="label", attack={"random_start": False})
    torch.testing.assert_close(
        label_term(method.model, x, None, y), F.cross_entropy(method.model(x_adv), y)
    )


def test_ard_teacher_target_without_a_teacher_is_a_config_error():
    term = AdversarialTerm(target="teacher")
    with pytest.raises(ConfigError, match="target=teacher needs a teacher: use it with method=kd"):
        term(torch.nn.Identity(), torch.zeros(1, 1, 4, 4), None, torch.zeros(1))


class TeacherWatch(pl.Callback):
    """Records the teacher's mode at every training batch and what the optimiser holds."""

    def __init__(self):
        self.modes: list[bool] = []
        self.optimised: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.modes += [m.training for m in pl_module.teacher.modules()]
        self.optimised = {
            id(p)
            for opt in trainer.optimizers
            for group in opt.param_groups
            for p in group["params"]
        }


def test_teacher_is_frozen_in_eval_mode_not_optimised_and_bit_identical_after_a_fit(
    teacher_dir, tmp_path
):
    cfg = compose_train(
        "data=digits",
        "model=small_cnn",
        *QUICK,
        "method=crld",
        "data.views=[weak,strong]",
        f"method.teacher={teacher_dir}",
        "suite=[]",
    )
    before = load_classifier(teacher_dir).state_dict()
    assert any("running_mean" in k for k in before)  # BatchNorm statistics are compared too
    watch = TeacherWatch()
    captured = {}

    class Keep(pl.Callback):
        def on_fit_end(self, trainer, pl_module):
            captured["method"] = pl_module

    train(cfg, tmp_path, extra_callbacks=(watch, Keep()))
    method = captured["method"]
    assert watch.modes and not any(watch.modes), "the teacher left eval mode during training"
    assert not watch.optimised & {id(p) for p in method.teacher.parameters()}
    assert watch.optimised == {id(p) for p in method.model.parameters()}
    after = method.teacher.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    state = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert not [k for k in state if k.startswith("teacher.")]


# ------------------------------------------------------------------------------ from the shell
STUDENT_RUN = [
    "data=digits",
    "model=small_cnn",
    "model.width=8",
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "data.views=[weak,strong]",
    "suite=[]",
]


def _two_step_pipeline(tmp_path, teacher_dir, *extra):
    student = tmp_path / "student"
    proc = run_app(
        "train",
        *STUDENT_RUN,
        "method=crld",
        f"method.teacher={teacher_dir}",
        f"hydra.run.dir={student}",
        *extra,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = results_of(student)
    assert {"train/ce", "train/kd_within", "train/kd_cross"} <= set(trained["metrics"])
    evaluate_trained(trained, tmp_path / "eval", cwd=tmp_path)
    return trained


def test_teacher_then_crld_student_from_the_shell_and_the_student_evaluates(teacher_dir, tmp_path):
    trained = _two_step_pipeline(tmp_path, teacher_dir)
    assert trained["method"] == "crld"
    assert trained["config"]["method"]["teacher"] == str(teacher_dir)


def test_teacher_then_crld_student_under_ddp(teacher_dir, tmp_path):
    trained = _two_step_pipeline(tmp_path, teacher_dir, "trainer=ddp_cpu")
    assert trained["provenance"]["world_size"] == 2


def test_student_resumed_from_a_checkpoint_without_teacher_weights_ends_where_a_full_run_does(
    teacher_dir, tmp_path
):
    """The teacher is left out of the student's checkpoints and put back on load: resuming
    continues exactly (the same final student weights as an uninterrupted run; a constant
    learning rate, since a cosine schedule depends on max_epochs)."""
    run = [
        *STUDENT_RUN,
        "method=crld",
        f"method.teacher={teacher_dir}",
        "trainer.limit_val_batches=1",
        "method.scheduler.name=constant",
    ]
    part = tmp_path / "part"
    train(compose_train(*run, "trainer.max_epochs=2"), tmp_path / "full")
    train(compose_train(*run), part)
    train(compose_train(*run, "trainer.max_epochs=2", "resume=auto"), part)
    weights = load_checkpoint(part / "checkpoints" / "last.ckpt")["state_dict"]
    reference = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    assert weights.keys() == reference.keys()
    assert not [k for k in weights if k.startswith("teacher.")]
    for name, tensor in reference.items():
        assert torch.equal(weights[name], tensor), name


@pytest.mark.parametrize(
    ("method", "logged"),
    [
        (["method=kd", "+method/consistency=crld"], {"kd", "kd_within", "ce_strong"}),
        (["method=dkd", "method.consistency=crld"], {"tckd", "nckd", "kd_cross"}),
        (["method=kd", "+method.terms.adversarial.target=teacher"], {"kd", "adv_loss"}),
    ],
    ids=["kd+crld", "dkd+crld", "ard"],
)
def test_composed_distillation_runs_from_the_shell(teacher_dir, tmp_path, method, logged):
    proc = run_app(
        "train",
        *STUDENT_RUN,
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        *method,
        f"method.teacher={teacher_dir}",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = results_of(tmp_path / "run")["metrics"]
    assert {f"train/{name}" for name in logged} <= set(metrics)
    assert all(math.isfinite(metrics[f"train/{name}"]) for name in logged)


def _one_line_error(tmp_path, *overrides) -> str:
    proc = run_app("train", *STUDENT_RUN, f"hydra.run.dir={tmp_path}/run", *overrides, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_wrong_teacher_from_the_shell_is_one_line_exit_2_before_training(teacher_dir, tmp_path):
    line = _one_line_error(tmp_path, "method=kd")  # found by validation, before data
    assert line.startswith("Error: method.teacher is required: set method.teacher=<teacher run")
    other_data = ["data=synthetic", "data.num_classes=4", "data.channels=1"]
    line = _one_line_error(tmp_path, "method=crld", f"method.teacher={teacher_dir}", *other_data)
    assert "predicts 10 classes but the data has 4" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()  # no step was taken


def _wrong_teacher_cases(teacher_dir: Path, tmp_path: Path) -> dict[str, list[str]]:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    return {
        "method.teacher=/nope: no such checkpoint file or run folder": ["method.teacher=/nope"],
        "method.teacher: checkpoint=": [f"method.teacher={foreign}"],  # foreign: not robustlab's
        "checkpoints is a folder without a results.json": [
            f"method.teacher={teacher_dir}/checkpoints"  # a folder without results.json
        ],
        "takes 1-channel images but the data has 3": [
            f"method.teacher={teacher_dir}",
            "data=synthetic",
        ],
        "needs pretrained weights": [
            "+method.teacher={model:torchvision,arch:resnet18,weights:null}",
        ],
    }


def test_wrong_teacher_is_a_user_error_before_any_step(teacher_dir, tmp_path):
    for message, overrides in _wrong_teacher_cases(teacher_dir, tmp_path).items():
        cfg = compose_train("data=digits", "model=small_cnn", *QUICK, "method=kd", *overrides)
        with pytest.raises(RobustlabError) as error:
            train(cfg, tmp_path / "run")
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
        assert not (tmp_path / "run" / "checkpoints").exists()


def test_consistency_without_the_strong_view_stops_before_any_data(teacher_dir, tmp_path):
    """The views a method needs depend on its options (the plug-in adds them): checked with the
    run config before data or the Trainer, so the error is the only output."""
    overrides = [f"method.teacher={teacher_dir}", "method.consistency=crld", "data.views=[weak]"]
    proc = run_app(
        "train",
        *STUDENT_RUN,
        "method=kd",
        *overrides,
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Error: KnowledgeDistillation needs the training view(s) ['strong']: set "
        "data.views=[weak,strong]"
    ]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_model_config_teacher_reads_its_classes_from_the_weight_metadata():
    from robustlab.methods.distillation import pretrained_num_classes

    assert pretrained_num_classes("torchvision", "resnet34", "IMAGENET1K_V1") == 1000
    with pytest.raises(ConfigError, match="only model=torchvision has pretrained weights"):
        pretrained_num_classes("resnet8", None, "x")


# ------------------------------------------------------------------------------ experiments
EXPERIMENTS = Path(__file__).parents[1] / "conf" / "experiment" / "distill"
PAIRS = {  # teacher -> student (CRLD's / mdistiller's 12 CIFAR-100 pairs), student lr
    "resnet32x4_resnet8x4": ("resnet32x4", "resnet8x4", 0.05),
    "resnet56_resnet20": ("resnet56", "resnet20", 0.05),
    "resnet110_resnet32": ("resnet110", "resnet32", 0.05),
    "wrn_40_2_wrn_16_2": ("wrn_40_2", "wrn_16_2", 0.05),
    "wrn_40_2_wrn_40_1": ("wrn_40_2", "wrn_40_1", 0.05),
    "vgg13_vgg8": ("vgg13", "vgg8", 0.05),
    "resnet32x4_shufflenetv2": ("resnet32x4", "shufflenetv2", 0.01),
    "resnet50_mobilenetv2": ("resnet50", "mobilenetv2_half", 0.01),
    "vgg13_mobilenetv2": ("vgg13", "mobilenetv2_half", 0.01),
    "wrn_40_2_mobilenetv2": ("wrn_40_2", "mobilenetv2_half", 0.01),
    "wrn_40_2_resnet8x4": ("wrn_40_2", "resnet8x4", 0.05),
    "resnet32x4_wrn_16_2": ("resnet32x4", "wrn_16_2", 0.05),
}


def _composed(name: str, *overrides: str):
    return compose_train(f"experiment=distill/{name}", *overrides)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_cifar100_pair_experiments_compose_with_the_reference_schedule(pair):
    teacher, student, lr = PAIRS[pair]
    cfg = _composed(f"cifar100/{pair}")
    assert cfg.data.name == "cifar100" and list(cfg.data.views) == ["weak", "strong"]
    assert cfg.data.batch_size == 64 and cfg.data.augment.crop_padding == 4
    assert cfg.model.name == student
    assert cfg.method.name == "crld" and cfg.method.teacher.endswith(f"teachers/{teacher}/seed0")
    assert (cfg.method.temperature, cfg.method.lambda_ce) == (4.0, 1.0)
    assert (cfg.method.lambda_wv, cfg.method.lambda_cv) == (2.0, 0.5)
    assert (cfg.method.tau_w, cfg.method.tau_s) == (0.9, 0.2)
    optimizer, scheduler = cfg.method.optimizer, cfg.method.scheduler
    assert (optimizer.name, optimizer.lr, optimizer.momentum) == ("sgd", lr, 0.9)
    assert (optimizer.weight_decay, optimizer.nesterov) == (5e-4, False)
    assert (scheduler.name, list(scheduler.milestones), scheduler.gamma) == (
        "multistep",
        [150, 180, 210],
        0.1,
    )
    assert scheduler.interval == "epoch" and cfg.trainer.max_epochs == 240
    # the same pair with KD or DKD: the method's own defaults, the pair's schedule
    kd = _composed(f"cifar100/{pair}", "method=kd")
    assert (kd.method.name, kd.method.lambda_ce, kd.method.lambda_kd) == ("kd", 0.1, 0.9)
    assert kd.method.optimizer.lr == lr and kd.method.teacher == cfg.method.teacher
    dkd = _composed(f"cifar100/{pair}", "method=dkd")
    assert (dkd.method.alpha, dkd.method.beta, dkd.method.warmup_epochs) == (1.0, 8.0, 20)


def test_every_cifar100_teacher_has_a_teacher_experiment_writing_where_students_look():
    teachers = {teacher for teacher, _, _ in PAIRS.values()}
    assert {p.stem for p in (EXPERIMENTS / "cifar100" / "teachers").glob("[!_]*.yaml")} == teachers
    for teacher in teachers:
        cfg = _composed(f"cifar100/teachers/{teacher}")
        assert cfg.method.name == "erm" and cfg.trainer.max_epochs == 240
        assert cfg.method.optimizer.lr == 0.05 and cfg.data.batch_size == 64
        assert list(cfg.method.scheduler.milestones) == [150, 180, 210]


def test_pair_experiment_files_are_exactly_the_twelve_pairs():
    assert {p.stem for p in (EXPERIMENTS / "cifar100").glob("[!_]*.yaml")} == set(PAIRS)


def test_imagenet_experiment_uses_a_torchvision_teacher_and_crld_imagenet_weights():
    cfg = _composed("imagenet/resnet34_resnet18")
    assert dict(cfg.method.teacher) == {
        "model": "torchvision",
        "arch": "resnet34",
        "weights": "IMAGENET1K_V1",
    }
    assert (cfg.model.name, cfg.model.arch, cfg.model.weights) == ("torchvision", "resnet18", None)
    assert (cfg.method.temperature, cfg.method.lambda_ce) == (1.0, 2.0)
    assert (cfg.method.optimizer.lr, cfg.method.optimizer.weight_decay) == (0.2, 1e-4)
    assert list(cfg.method.scheduler.milestones) == [30, 60, 90]
    assert cfg.trainer.max_epochs == 100 and cfg.data.batch_size == 512


def test_ard_experiment_is_kd_plus_the_adversarial_term_on_teacher_soft_labels():
    cfg = _composed("ard/cifar10")
    assert cfg.method.name == "kd" and (cfg.method.lambda_ce, cfg.method.lambda_kd) == (0.0, 0.0)
    term = cfg.method.terms.adversarial
    assert (term.target, term.weight, term.temperature) == ("teacher", 1.0, 30.0)
    assert (term.attack.eps, term.attack.steps, term.attack.step_size) == ("8/255", 10, "2/255")
    assert cfg.method.teacher.endswith("distill/ard/cifar10/teacher/seed0")
    teacher = _composed("ard/cifar10_teacher")
    assert (teacher.method.name, teacher.method.loss) == ("adversarial", "trades")


def test_tiny_imagenet_experiments_use_64_px_views_and_the_new_students():
    for student, lr in (("resnet8x4", 0.05), ("shufflenetv1", 0.01)):
        cfg = _composed(f"tiny_imagenet/resnet32x4_{student}")
        assert (cfg.data.name, cfg.data.augment.crop_padding) == ("tiny_imagenet", 8)
        assert list(cfg.data.views) == ["weak", "strong"] and cfg.method.name == "crld"
        assert (cfg.model.name, cfg.method.optimizer.lr) == (student, lr)
    assert _composed("tiny_imagenet/teacher_resnet32x4").model.name == "resnet32x4"


DISTILL_EXPERIMENTS = sorted(
    p.relative_to(EXPERIMENTS).with_suffix("").as_posix() for p in EXPERIMENTS.rglob("[!_]*.yaml")
)


@pytest.mark.parametrize("name", DISTILL_EXPERIMENTS)
def test_every_distillation_experiment_passes_config_validation(name, teacher_dir, tmp_path):
    """Every key of model and method is one the code takes, in range (no data read)."""
    cfg = _composed(name)
    if isinstance(cfg.method.get("teacher"), str):
        cfg.method.teacher = str(teacher_dir)  # the real folder exists only after step one
    validate_model_and_method(cfg.model, cfg.method)
    check_method_requirements(cfg)
