"""The method base for the next families (issue 9): training objectives on whole batches,
declared data needs, named optimisers with their own schedules under manual optimisation, a
stage that trains no classifier (no test, no suites), and composed objective terms."""

from __future__ import annotations

import copy
import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import cross_entropy
from robustlab.cli.evaluate import evaluate
from robustlab.cli.train import train
from robustlab.errors import CheckpointError, ConfigError
from robustlab.losses import stability_kl
from robustlab.methods import (
    ERM,
    GeneratorStage,
    TrainingOutput,
    build_method,
    check_method_requirements,
)
from robustlab.methods.optim import build_optimizer, build_scheduler, named_optimizer_configs
from robustlab.methods.terms import StabilityTerm, build_terms
from robustlab.models import build_classifier
from robustlab.run.checkpoints import (
    CHECKPOINT_KEY,
    ExportedPart,
    frozen,
    load_checkpoint,
    load_classifier,
    load_module,
)
from tests.helpers import QUICK, InterruptAt, compose_train, results_of, run_app


def _classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_classifier(
        "small_cnn", num_classes=3, in_channels=1, mean=(0.5,), std=(0.25,), width=4
    )


X = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 2, 0, 1, 2])


# ------------------------------------------------------------------------------ toy methods
class TwoViewMethod(ERM):
    """Needs a weak and a strong view: CE on both views (a stand-in for CRLD-style methods)."""

    required_views = ("weak", "strong")

    def training_objective(self, batch):
        x, y, views = batch
        logits = self(views["weak"])
        loss = self.task_loss(logits, y) + self.task_loss(self(views["strong"]), y)
        return TrainingOutput(loss, logits)


class ToyDistillation(ERM):
    """A frozen teacher from another run on two views (a stand-in for CRLD):
    ``CE(f(weak), y) + KL(softmax t(strong) ‖ softmax f(strong))``."""

    required_views = ("weak", "strong")

    def __init__(self, model: nn.Module, teacher: str, **erm):
        super().__init__(model, **erm)
        self.teacher = frozen(load_classifier(teacher))

    def training_objective(self, batch):
        x, y, views = batch
        logits = self(views["weak"])
        with torch.no_grad():
            target = F.softmax(self.teacher(views["strong"]), dim=1)
        kd = F.kl_div(F.log_softmax(self(views["strong"]), dim=1), target, reduction="batchmean")
        return TrainingOutput(self.task_loss(logits, y) + kd, logits, {"kd": kd.detach()})


class GroupMethod(ERM):
    """Needs same-class groups (a stand-in for HydraMix's classifier stage)."""

    needs_groups = True


class ToyGAN(GeneratorStage):
    """A least-squares GAN on flattened images: G(z) = W_g z + b_g, D(v) = w_d·v + b_d.
    Each batch takes one discriminator step, then one generator step. Exports its generator
    (``torch.nn:Linear``), so a later run loads it without this class."""

    def __init__(self, model: nn.Module, image_numel: int = 64, noise_dim: int = 4, **erm):
        super().__init__(model, **erm)
        self.noise_dim, self.image_numel = noise_dim, image_numel
        generator, discriminator = nn.Linear(noise_dim, image_numel), nn.Linear(image_numel, 1)
        self.model = nn.ModuleDict({"generator": generator, "discriminator": discriminator})

    def exported_parts(self):
        size = {"in_features": self.noise_dim, "out_features": self.image_numel}
        return {"generator": ExportedPart(self.model["generator"], "torch.nn:Linear", size)}

    def optimizer_parameters(self):
        return {name: part.parameters() for name, part in self.model.items()}

    def training_objective(self, batch):
        x, _, *_ = batch
        real = x.flatten(1)
        generator, discriminator = self.model["generator"], self.model["discriminator"]
        optimizers = self.optimizers_by_name()
        fake = generator(torch.randn(len(real), self.noise_dim, device=real.device))
        d_real, d_fake = discriminator(real), discriminator(fake.detach())
        d_loss = ((d_real - 1) ** 2).mean() + (d_fake**2).mean()
        optimizers["discriminator"].zero_grad()
        self.manual_backward(d_loss)
        optimizers["discriminator"].step()
        g_loss = ((discriminator(fake) - 1) ** 2).mean()
        optimizers["generator"].zero_grad()
        self.manual_backward(g_loss)
        optimizers["generator"].step()
        # train/rank: the process's rank, so the epoch mean over processes is checkable
        rank = torch.tensor(float(self.global_rank))
        logs = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "rank": rank}
        return TrainingOutput((d_loss + g_loss).detach(), None, logs)


# ------------------------------------------------------------------------------ objectives
def test_default_objective_ignores_extra_batch_items_and_equals_training_loss():
    method = build_method("erm", _classifier())
    views = {"weak": torch.zeros_like(X)}
    with_views = method.training_objective((X, Y, views)).loss
    assert with_views.item() == pytest.approx(method.training_loss(X, Y).loss.item(), rel=1e-6)
    assert with_views.item() == pytest.approx(F.cross_entropy(method(X), Y).item(), rel=1e-6)


def test_a_method_overriding_the_objective_gets_the_views_and_is_logged_as_usual():
    method = TwoViewMethod(_classifier())
    weak, strong = X.flip(3), 1 - X
    out = method.training_objective((X, Y, {"weak": weak, "strong": strong}))
    expected = F.cross_entropy(method(weak), Y) + F.cross_entropy(method(strong), Y)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_data_requirements_name_the_keys_to_set():
    assert ERM.data_requirements() == {}
    assert TwoViewMethod.data_requirements() == {"views": ["weak", "strong"]}
    assert GroupMethod.data_requirements() == {"group_size": "an integer >= 2"}
    TwoViewMethod.check_requirements({"views": ["strong", "weak", "extra"]})
    with pytest.raises(ConfigError, match=r"\['strong'\]: set data.views=\[weak,strong\]"):
        TwoViewMethod.check_requirements({"views": ["weak"]})
    GroupMethod.check_requirements({"group_size": 3})
    for bad in (None, 1, True):
        with pytest.raises(ConfigError, match="set data.group_size=N"):
            GroupMethod.check_requirements({"group_size": bad})
    ERM.check_requirements({}, test=True, suites={"clean": {}})


def test_a_stage_without_classifier_must_skip_test_and_suites():
    ToyGAN.check_requirements({}, test=False, suites=[])
    with pytest.raises(ConfigError, match="set test=false"):
        ToyGAN.check_requirements({}, test=True, suites=[])
    with pytest.raises(ConfigError, match=r"set suite=\[\]"):
        ToyGAN.check_requirements({}, test=False, suites={"clean": {}})
    cfg = compose_train("method.name=tests.test_platform_methods:ToyGAN", "test=false", "suite=[]")
    check_method_requirements(cfg)
    with pytest.raises(ConfigError, match="set test=false"):
        check_method_requirements(compose_train("method.name=tests.test_platform_methods:ToyGAN"))


# ------------------------------------------------------------------------------ optimisers
def test_named_optimizer_configs_keep_order_and_name_the_bad_key():
    configs = named_optimizer_configs(
        {
            "generator": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
            "discriminator": {"name": "sgd", "lr": 0.1, "scheduler": {"interval": "epoch"}},
        }
    )
    assert list(configs) == ["generator", "discriminator"]
    assert tuple(configs["generator"][0].betas) == (0.5, 0.999)
    assert configs["generator"][1].interval == "step"
    assert configs["discriminator"][1].interval == "epoch"
    with pytest.raises(ConfigError, match=r"method.optimizers.generator.lr must be > 0"):
        named_optimizer_configs({"generator": {"lr": -1.0}})
    with pytest.raises(ConfigError, match=r"method.optimizers.d.scheduler.interval='batch'"):
        named_optimizer_configs({"d": {"scheduler": {"interval": "batch"}}})
    with pytest.raises(ConfigError, match=r"method.optimizers.d has unknown key\(s\) \['lrr'\]"):
        named_optimizer_configs({"d": {"lrr": 0.1}})


def test_epoch_interval_schedule_steps_once_per_epoch():
    param = nn.Parameter(torch.zeros(1))
    ((opt_cfg, sched_cfg),) = named_optimizer_configs(
        {
            "g": {
                "name": "sgd",
                "lr": 1.0,
                "momentum": 0.0,
                "weight_decay": 0.0,
                "scheduler": {
                    "name": "multistep",
                    "milestones": [2, 3],
                    "gamma": 0.5,
                    "interval": "epoch",
                },
            }
        }
    ).values()
    optimizer = build_optimizer([param], opt_cfg)
    # total_steps is ignored at epoch interval: epochs are the schedule's unit
    scheduler = build_scheduler(optimizer, sched_cfg, total_steps=1000, max_epochs=4)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_optimizer_and_optimizers_together_and_two_automatic_optimizers_are_errors():
    two = {"a": {"lr": 0.1}, "b": {"lr": 0.1}}
    with pytest.raises(ConfigError, match="set method.optimizer=null method.scheduler=null"):
        build_method("erm", _classifier(), optimizer={"lr": 0.1}, optimizers=two)
    with pytest.raises(ConfigError, match=r"optimises automatically, with one optimiser"):
        build_method("erm", _classifier(), optimizers=two)
    # one named optimiser on an automatic method is the single optimiser under a name
    method = build_method("erm", _classifier(), optimizers={"net": {"lr": 0.3}})
    assert list(method.optimizer_parameters()) == ["net"]


def _gan_cfg(*extra: str):
    return compose_train(*_gan_overrides(), *extra)


def _gan_overrides() -> list[str]:
    return [
        "data=synthetic",
        "data.image_size=8",
        "data.channels=1",
        "data.num_classes=2",
        "data.n_train=200",
        "data.batch_size=16",
        "method.name=tests.test_platform_methods:ToyGAN",
        "+method.image_numel=64",
        "method.optimizer=null",
        "method.scheduler=null",
        "method.optimizers={generator: {name: adam, lr: 0.01, betas: [0.5, 0.999],"
        " weight_decay: 0, scheduler: {name: multistep, milestones: [1, 2], gamma: 0.5,"
        " interval: epoch}}, discriminator: {name: sgd, lr: 0.01, momentum: 0, weight_decay: 0,"
        " scheduler: {name: cosine, min_lr_ratio: 0.1}}}",
        "test=false",
        "suite=[]",
        *QUICK,
        "trainer.max_epochs=2",
    ]


class _Watch(pl.Callback):
    """Weights at the start and end of the fit, and the optimisers' state at the end."""

    def on_fit_start(self, trainer, pl_module):
        self.before = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    def on_fit_end(self, trainer, pl_module):
        self.after = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.optimizers = {
            name: (opt.optimizer.param_groups[0]["lr"], opt.optimizer.state_dict()["state"])
            for name, opt in pl_module.optimizers_by_name().items()
        }
        self.order = [type(opt).__name__ for opt in trainer.optimizers]


def test_two_optimizer_manual_stage_trains_both_parts_logs_and_skips_test_and_suites(
    tmp_path, recwarn
):
    watch = _Watch()
    results = train(_gan_cfg(), tmp_path, extra_callbacks=(watch,))
    assert results.status == "ok" and results_of(tmp_path)["status"] == "ok"
    # both parts changed, and each optimiser stepped once per batch: 2 epochs x 3 batches
    for part in ("generator", "discriminator"):
        for name in (f"{part}.weight", f"{part}.bias"):
            assert not torch.equal(watch.before[name], watch.after[name]), name
    assert watch.order == ["Adam", "SGD"]  # optimizer_parameters() order
    g_lr, g_state = watch.optimizers["generator"]
    d_lr, _ = watch.optimizers["discriminator"]
    assert len(g_state) == 2 and all(int(s["step"]) == 6 for s in g_state.values())
    # generator: per epoch, x0.5 at epochs 1 and 2 -> 0.25·lr after two epochs;
    # discriminator: per step, cosine to min_lr_ratio over the 6 steps -> 0.1·lr
    assert g_lr == pytest.approx(0.01 * 0.25)
    assert d_lr == pytest.approx(0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi))))
    # logged through the shared helper; no accuracy, no test metrics, no suites
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    assert {"train/loss_epoch", "train/d_loss", "train/g_loss"} <= columns
    epochs = [r for r in rows if r.get("train/g_loss")]
    assert len(epochs) == 2 and all(float(r["train/d_loss"]) > 0 for r in epochs)
    # the learning-rate monitor names each schedule by its optimiser's name, logged per epoch
    g_lrs = [float(r["lr-generator"]) for r in rows if r.get("lr-generator")]
    d_lrs = [float(r["lr-discriminator"]) for r in rows if r.get("lr-discriminator")]
    assert g_lrs == pytest.approx([0.01, 0.005])
    assert d_lrs == pytest.approx([0.01, 0.01 * (0.1 + 0.9 * 0.5)])  # cosine midpoint
    assert not any(k.startswith(("test/", "train/acc")) for k in results.metrics)
    assert results.robustness == [] and results_of(tmp_path)["robustness"] == []
    # the data have a validation split, but a stage without validation ranks no checkpoints:
    # the last epoch's counts as the best, and nothing looks for val/acc
    assert Path(results.checkpoint).name == "epoch001.ckpt"
    assert not [w for w in recwarn if "monitored key" in str(w.message)]


def test_interrupted_two_optimizer_stage_resumes_to_the_uninterrupted_result(tmp_path):
    """Both optimisers' states and both schedules (per epoch and per step) come back from
    last.ckpt: weights, learning rates and optimiser moments equal an uninterrupted run's."""
    three = ("trainer.max_epochs=3",)
    full = _Watch()
    train(_gan_cfg(*three), tmp_path / "full", extra_callbacks=(full,))
    run_dir = tmp_path / "interrupted"
    with pytest.raises(SystemExit):  # Lightning ends an interrupted fit with exit code 1
        train(_gan_cfg(*three), run_dir, extra_callbacks=(InterruptAt(2, 1),))
    resumed = _Watch()
    train(_gan_cfg(*three, "resume=auto"), run_dir, extra_callbacks=(resumed,))
    for name, tensor in full.after.items():
        assert torch.equal(resumed.after[name], tensor), name
    for part, (lr, state) in full.optimizers.items():
        resumed_lr, resumed_state = resumed.optimizers[part]
        assert resumed_lr == lr, part
        assert resumed_state.keys() == state.keys()
        for index, moments in state.items():
            for key, value in moments.items():
                again = resumed_state[index][key]
                assert torch.equal(torch.as_tensor(again), torch.as_tensor(value)), (part, key)


# ------------------------------------------------------------------------------ stability
#: StabilityTraining's loss on a fixed batch (small_cnn width 4, seed 0; X, Y above; global
#: seed 7 before the step), recorded before it was rebuilt on StabilityTerm.
PINNED = [
    ({"alpha": 0.7, "sigma": 0.3}, 1.0985369682312012, 0.010844212025403976),
    (
        {"alpha": 0.7, "sigma": 0.3, "joint_forward": False},
        1.1012601852416992,
        0.006661621853709221,
    ),
    ({"alpha": 2.0, "perturbation": "mix"}, 1.153559684753418, 0.01799841783940792),
    ({"alpha": 0.5, "task": "embedding"}, 1.3900667428970337, 0.12107160687446594),
]


@pytest.mark.parametrize("kwargs, loss, stab", PINNED)
def test_stability_training_loss_is_unchanged_on_a_fixed_batch(kwargs, loss, stab):
    method = build_method("stability", _classifier(), **kwargs)
    torch.manual_seed(7)
    out = method.training_loss(X, Y)
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)
    assert out.logs["stab_loss"].item() == pytest.approx(stab, rel=1e-5)


def test_erm_with_the_stability_term_is_stability_training_with_two_forwards():
    options = {"alpha": 0.7, "sigma": 0.3}
    composed = build_method("erm", _classifier(), terms={"stability": options})
    stability = build_method("stability", _classifier(), joint_forward=False, **options)
    torch.manual_seed(7)
    a = composed.objective_with_terms((X, Y))
    torch.manual_seed(7)
    b = stability.objective_with_terms((X, Y))
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-6)
    assert a.logs["stab_loss"].item() == pytest.approx(b.logs["stab_loss"].item(), rel=1e-6)


def test_term_options_are_checked_where_they_are_set():
    with pytest.raises(ConfigError, match=r"method.terms.stability.alpha must be >= 0"):
        build_terms({"stability": {"alpha": -1}})
    with pytest.raises(ConfigError, match=r"method.terms.stability does not take \['sigmaa'\]"):
        build_terms({"stability": {"sigmaa": 0.1}})
    with pytest.raises(ConfigError, match="unknown method.terms 'stabilty'"):
        build_terms({"stabilty": {}})
    with pytest.raises(ConfigError, match="already has the stability term"):
        build_method("stability", _classifier(), terms={"stability": {}})
    with pytest.raises(ConfigError, match="remove method.terms"):
        ToyGAN(
            _classifier(),
            optimizers={"generator": {}, "discriminator": {}},
            terms={"stability": {}},
        )
    assert isinstance(build_terms({"stability": None})["stability"], StabilityTerm)


def _composed(name: str, alpha: float, **kwargs):
    terms = {"stability": {"alpha": alpha, "sigma": 0.2}}
    return build_method(name, _classifier(), terms=terms, **kwargs)


ADVERSARIAL = {"attack": {"eps": 0.1, "steps": 2, "step_size": 0.05}}


def test_adversarial_plus_stability_is_madry_loss_plus_alpha_kl_on_the_pgd_examples():
    method = _composed("adversarial", 0.5, **ADVERSARIAL)
    fresh = copy.deepcopy(method)  # a step in train mode moves the BatchNorm running statistics
    torch.manual_seed(3)
    out = fresh.objective_with_terms((X, Y))
    # by hand: the same PGD draw, Madry CE on x_adv, then KL(f(x_adv) || f(x_adv + σε))
    torch.manual_seed(3)
    x_adv = method.adversarial_examples(X, Y, cross_entropy)
    logits_adv = method.model(x_adv)
    noisy = x_adv + 0.2 * torch.randn_like(x_adv)
    stab = stability_kl(logits_adv.detach(), method.model(noisy))
    expected = F.cross_entropy(logits_adv, Y) + 0.5 * stab
    assert not torch.equal(x_adv, X)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logs["stab_loss"].item() == pytest.approx(stab.item(), rel=1e-5)
    assert out.logs["stab_loss"].item() > 1e-4


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("adversarial", ADVERSARIAL),
        ("selfsup", {**ADVERSARIAL, "pretext": ["rotation"], "ssl_weight": 0.5}),
        ("selfsup", {"attack": {"eps": 0}, "pretext": ["rotation"], "ssl_weight": 0.5}),
    ],
)
def test_composed_loss_is_the_method_loss_plus_weight_times_the_term(name, kwargs):
    losses = {}
    for alpha in (0.0, 0.8):
        method = _composed(name, alpha, **kwargs)
        fresh = copy.deepcopy(method)  # BatchNorm running statistics move with every step
        torch.manual_seed(11)
        composed = fresh.objective_with_terms((X, Y))
        torch.manual_seed(11)
        base = method.training_objective((X, Y))  # the method alone, same random draws
        noisy = base.inputs + 0.2 * torch.randn_like(base.inputs)  # the term's draw, next
        stab = stability_kl(base.input_logits.detach(), method.model(noisy))
        assert composed.loss.item() == pytest.approx((base.loss + alpha * stab).item(), rel=1e-5)
        assert composed.logs["stab_loss"].item() == pytest.approx(stab.item(), rel=1e-5)
        losses[alpha] = (composed.loss.item(), stab.item())
    # the weight changes the loss by exactly weight x term
    (l0, s0), (l8, s8) = losses[0.0], losses[0.8]
    assert s0 == pytest.approx(s8, rel=1e-5) and s8 > 1e-4
    assert l8 - l0 == pytest.approx(0.8 * s8, rel=1e-4)


@pytest.mark.parametrize(
    "method",
    [
        ["method=adversarial", "method.attack.steps=2"],
        ["method=selfsup", "method.attack.steps=2"],
    ],
)
def test_composed_objective_runs_from_the_shell(tmp_path, method):
    proc = run_app(
        "train",
        *method,
        "+method.terms.stability.alpha=0.5",
        "+method.terms.stability.sigma=0.1",
        *QUICK,
        "suite=[]",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = results_of(tmp_path)
    assert record["status"] == "ok"
    assert record["config"]["method"]["terms"]["stability"] == {"alpha": 0.5, "sigma": 0.1}
    assert record["metrics"]["train/stab_loss"] > 0
    assert "test/acc" in record["metrics"]


def test_bad_term_from_the_shell_is_one_line_exit_2(tmp_path):
    proc = run_app(
        "train",
        "method=adversarial",
        "+method.terms.stability.alpha=-1",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "method.terms.stability.alpha must be >= 0" in lines[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.name=tests.test_platform_methods:TwoViewMethod"], "set data.views=[weak,strong]"),
        (["method.name=tests.test_platform_methods:GroupMethod"], "set data.group_size=N"),
        (["method.name=tests.test_platform_methods:ToyGAN", "suite=[]"], "set test=false"),
        (["method.name=tests.test_platform_methods:ToyGAN", "test=false"], "set suite=[]"),
    ],
)
def test_unmet_method_requirements_stop_the_run_before_data_with_one_line(
    tmp_path, overrides, message
):
    repo = Path(__file__).resolve().parents[1]
    proc = run_app(
        "train",
        *overrides,
        "data=mnist",  # not read: the check comes first (no MNIST files under tmp_path)
        f"data.root={tmp_path}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(repo)},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_manual_stage_under_ddp_logs_means_over_all_processes(tmp_path):
    """Two processes (gloo): each logs its rank, so the epoch value results.json gets is the
    mean over both processes (0.5), not rank 0's own (0). A stage whose optimisers each see
    only their part needs DDP's unused-parameter detection."""
    repo = Path(__file__).resolve().parents[1]
    proc = run_app(
        "train",
        *_gan_overrides(),
        "trainer=ddp_cpu",
        "trainer.strategy=ddp_find_unused_parameters_true",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(repo)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results_of(tmp_path)
    assert record["status"] == "ok"
    assert record["metrics"]["train/rank"] == pytest.approx(0.5)
    assert record["metrics"]["train/d_loss"] > 0


# ------------------------------------------------------------------------------ parts of runs
class _TeacherWatch(pl.Callback):
    """The teacher's weights at the start and end of the fit, its and the student's mode at
    every training batch, and which parameters the optimiser updates."""

    def __init__(self):
        self.modes: list[tuple[bool, bool]] = []

    def on_train_start(self, trainer, pl_module):
        self.before = {k: v.clone() for k, v in pl_module.teacher.state_dict().items()}
        groups = [group for opt in trainer.optimizers for group in opt.param_groups]
        self.optimised = {id(p) for group in groups for p in group["params"]}
        self.teacher_parameters = {id(p) for p in pl_module.teacher.parameters()}
        self.student_parameters = {id(p) for p in pl_module.model.parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        teacher_training = any(m.training for m in pl_module.teacher.modules())
        self.modes.append((pl_module.model.training, teacher_training))
        self.views = sorted(batch[2])

    def on_train_end(self, trainer, pl_module):
        self.after = {k: v.clone() for k, v in pl_module.teacher.state_dict().items()}


def test_frozen_teacher_from_an_earlier_run_on_two_views(tmp_path):
    """A teacher loaded from a real earlier run's folder keeps its weights bit for bit and its
    eval mode through Lightning's .train(), is not optimised, and the student's checkpoint
    evaluates in robustlab-eval as a plain classifier."""
    teacher_dir = tmp_path / "teacher"
    train(compose_train(*QUICK, "suite=[]"), teacher_dir)
    watch = _TeacherWatch()
    student_dir = tmp_path / "student"
    student = train(
        compose_train(
            *QUICK,
            "suite=[]",
            "method.name=tests.test_platform_methods:ToyDistillation",
            f"+method.teacher={teacher_dir}",
            "data.views=[weak,strong]",
        ),
        student_dir,
        extra_callbacks=(watch,),
    )
    assert student.status == "ok" and student.metrics["train/kd"] > 0
    assert watch.views == ["strong", "weak"] and len(watch.modes) == 3
    assert all(student and not teacher for student, teacher in watch.modes)
    teacher = load_classifier(teacher_dir)
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(watch.before[name], tensor), name
        assert torch.equal(watch.after[name], tensor), name
    # the optimiser updates the student's parameters, all of them, and none of the teacher's
    assert watch.teacher_parameters and not watch.optimised & watch.teacher_parameters
    assert watch.optimised == watch.student_parameters
    # the student's checkpoint holds the teacher beside it; robustlab-eval loads the classifier
    checkpoint = load_checkpoint(student.checkpoint)
    assert any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    assert list(checkpoint[CHECKPOINT_KEY]["parts"]) == ["model"]
    cfg = compose_train(
        f"checkpoint={student.checkpoint}", "trainer.enable_progress_bar=false", config_name="eval"
    )
    evaluated = evaluate(cfg, tmp_path / "eval")
    assert evaluated.metrics["test/acc"] == pytest.approx(student.metrics["test/acc"], abs=1e-6)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> tuple[Path, dict]:
    """One epoch of the toy GAN: its run folder and the weights it ended with."""
    run_dir = tmp_path_factory.mktemp("gan")
    watch = _Watch()
    train(_gan_cfg("trainer.max_epochs=1"), run_dir, extra_callbacks=(watch,))
    return run_dir, watch.after


LOAD_GENERATOR = """
import sys, torch
from robustlab.run.checkpoints import load_module
generator = load_module(sys.argv[1], "generator")
torch.save(generator.state_dict(), sys.argv[2])
loaded = sorted(m for m in sys.modules if m.startswith(("robustlab.methods", "tests")))
print(type(generator).__name__, generator.training, loaded)
"""


def test_a_declared_generator_loads_from_the_run_folder_without_the_gan_method(gan_run, tmp_path):
    """In a fresh process that never imports the GAN's method (nor robustlab.methods): the
    generator is rebuilt by its recorded factory and carries the trained weights."""
    run_dir, trained = gan_run
    weights = tmp_path / "generator.pt"
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_GENERATOR, str(run_dir), str(weights)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["Linear", "False", "[]"]
    state = torch.load(weights, weights_only=True)
    assert state.keys() == {"weight", "bias"}
    for name, tensor in state.items():
        assert torch.equal(tensor, trained[f"generator.{name}"]), name
    in_process = load_module(run_dir, "generator")
    z = torch.randn(5, 4)
    expected = z @ trained["generator.weight"].T + trained["generator.bias"]
    assert torch.allclose(in_process(z), expected, atol=1e-6)


def test_parts_a_run_does_not_export_are_one_line_errors(gan_run):
    run_dir, _ = gan_run
    for part in ("model", "discriminator"):
        message = rf"exports no part '{part}'; its parts: generator$"
        with pytest.raises(CheckpointError, match=message):
            load_module(run_dir, part)
    with pytest.raises(CheckpointError, match="exports no part 'model'"):
        load_classifier(run_dir)  # what robustlab-eval and method.init_from call


def test_a_generator_whose_recorded_size_differs_from_its_weights_is_refused(gan_run):
    checkpoint = load_checkpoint(results_of(gan_run[0])["checkpoint"])
    checkpoint[CHECKPOINT_KEY]["parts"]["generator"]["kwargs"]["out_features"] = 32
    with pytest.raises(CheckpointError, match=r"weights do not fit part 'generator' \(.*size"):
        load_module(checkpoint, "generator")
    checkpoint[CHECKPOINT_KEY]["parts"]["generator"]["factory"] = "torch.nn:Linearr"
    with pytest.raises(CheckpointError, match=r"cannot rebuild part 'generator'.*has no"):
        load_module(checkpoint, "generator")


def test_a_checkpoint_older_than_parts_names_the_format(gan_run):
    checkpoint = load_checkpoint(results_of(gan_run[0])["checkpoint"])
    record = checkpoint[CHECKPOINT_KEY]
    del record["parts"]
    record["format"] = 2
    with pytest.raises(CheckpointError, match="checkpoint format 2, older than exported parts"):
        load_module(checkpoint, "generator")
