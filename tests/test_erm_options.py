"""The ERM base's epoch accumulator (EpochMeans) and checkpoint hooks, value by value without a
trainer (milliseconds each): the batch-size-weighted means, their float64 sums, what a
checkpoint carries and who carries it on resume. Written for the mutation run of
robustlab.methods.erm (tests/MUTATION.md, session 7); the fits: tests/test_erm_hooks.py."""

from __future__ import annotations

import pytest
import torch

from robustlab.methods.erm import EPOCH_MEANS_KEY, ERM, EpochMeans, _sum_dtype
from tests.helpers import LinearClassifier

CPU = torch.device("cpu")


class _Processes:
    """A strategy whose ``reduce`` sums over ``n`` processes that all hold the same values."""

    def __init__(self, n: int = 1):
        self.n, self.ops = n, []

    def reduce(self, tensor, reduce_op):
        self.ops.append(reduce_op)
        return tensor * self.n


def test_means_are_weighted_by_batch_size_and_counted_totals_by_images():
    means = EpochMeans()
    assert not means
    means.add("loss", torch.tensor([2.0]), 3, CPU)  # a one-element tensor: 3 images at 2
    means.add("loss", 5.0, 1, CPU)  # a number: 1 image at 5
    means.add_total("acc", torch.tensor(2), 3)  # 2 right of 3
    means.add_total("acc", torch.tensor(1), 1)
    assert means
    assert means.sums["loss"].dtype == torch.float64
    assert means.weights == {"loss": 4, "acc": 4}
    strategy = _Processes()
    out = means.compute(strategy, CPU)
    assert strategy.ops == ["sum"]
    assert out["loss"].dtype == torch.float32
    assert out["loss"].item() == pytest.approx((3 * 2.0 + 5.0) / 4)
    assert out["acc"].item() == pytest.approx(3 / 4)
    assert not means and means.sums == {} and means.weights == {}  # computed: afresh


def test_the_added_value_is_detached_and_not_changed_in_place():
    means = EpochMeans()
    value = torch.tensor(1.5, requires_grad=True)
    means.add("x", value * 1, 2, CPU)
    assert not means.sums["x"].requires_grad
    assert value.item() == 1.5
    assert means.sums["x"].item() == 3.0


def test_sums_are_float64_except_on_mps():
    assert _sum_dtype(torch.device("cpu")) == torch.float64
    assert _sum_dtype(torch.device("mps")) == torch.float32


def test_state_is_the_sums_and_integer_weights_over_all_processes():
    means = EpochMeans()
    means.add("b", 0.25, 3, CPU)
    means.add("a", 1.0, 2, CPU)
    state = means.state(_Processes(2), CPU)  # two processes with the same sums
    assert state == {"a": (4.0, 4), "b": (1.5, 6)}
    assert all(isinstance(w, int) for _, w in state.values())
    assert means.weights == {"b": 3, "a": 2}  # state() keeps accumulating


def test_restore_gives_the_totals_to_the_owner_and_zeros_to_the_others():
    owner, other = EpochMeans(), EpochMeans()
    owner.add("stale", 9.0, 9, CPU)  # a restore forgets what was added before
    owner.restore({"loss": (6.0, 3)}, owner=True)
    other.restore({"loss": (6.0, 3)}, owner=False)
    assert "stale" not in owner.sums and owner.weights == {}
    assert owner.carried == {"loss": (6.0, 3)}
    assert other.carried == {"loss": (0.0, 0)}
    assert owner and other  # names carried: something to log
    owner.add("loss", 4.0, 1, CPU)  # one more image after the resume
    assert owner.compute(_Processes(), CPU)["loss"].item() == pytest.approx((6.0 + 4.0) / 4)
    other.add("loss", 4.0, 1, CPU)
    assert other.compute(_Processes(), CPU)["loss"].item() == pytest.approx(4.0)
    assert not owner.carried  # computed: afresh


def test_a_checkpoint_outside_an_epoch_or_without_a_trainer_carries_no_sums():
    method = ERM(LinearClassifier([[1.0, 0.0], [0.0, 1.0]]))
    checkpoint: dict = {}
    method.on_save_checkpoint(checkpoint)
    assert EPOCH_MEANS_KEY not in checkpoint
    method.training_means.add("train/loss", 1.0, 2, CPU)
    method.on_save_checkpoint(checkpoint)  # no trainer: nothing to reduce over
    assert EPOCH_MEANS_KEY not in checkpoint
    assert method.logs_this_step() is False  # no trainer: nothing logs
    method.on_load_checkpoint({EPOCH_MEANS_KEY: {"train/loss": (2.0, 2)}})
    assert method._restored_means == {"train/loss": (2.0, 2)}  # no trainer counts as fitting
    method.training_means.add("train/loss", 5.0, 1, CPU)
    method.on_train_start()  # rank 0 without a trainer: the owner of the carried sums
    assert method._restored_means is None
    assert method.training_means.carried == {"train/loss": (2.0, 2)}
    assert method.training_means.sums == {}


def test_a_tensor_is_summed_on_its_own_device():
    """The sum lives where the value is (no copy to the host per step), a number's on the
    given device ("meta": a device other than the CPU on any machine)."""
    means = EpochMeans()
    means.add("x", torch.tensor(1.0, device="meta"), 2, CPU)
    means.add("y", 1.0, 2, torch.device("meta"))
    assert means.sums["x"].device.type == "meta"
    assert means.sums["y"].device.type == "meta"
    assert means.sums["x"].dtype == torch.float64


def test_totals_are_reduced_in_float64():
    """A float32 reduction would round 0.1 and a count above 2**24 images."""
    means = EpochMeans()
    means.add("x", 0.1, 1, CPU)
    means.add("x", 0.0, 2**24, CPU)
    names, sums, weights = means.totals(_Processes(), CPU)
    assert names == ["x"]
    assert sums.dtype == weights.dtype == torch.float64
    assert means.state(_Processes(), CPU) == {"x": (0.1, 2**24 + 1)}


def test_a_resumed_epoch_with_no_new_step_is_the_carried_mean():
    means = EpochMeans()
    means.restore({"loss": (6.0, 4), "acc": (3.0, 4)}, owner=True)
    means.add("acc", 1.0, 1, CPU)  # a name with a new step next to one without
    out = means.compute(_Processes(), CPU)
    assert out["loss"].item() == pytest.approx(1.5)
    assert out["acc"].item() == pytest.approx(4.0 / 5)


def test_totals_stay_on_the_device():
    means = EpochMeans()
    meta = torch.device("meta")
    means.add("x", torch.tensor(1.0, device=meta), 2, meta)
    names, sums, weights = means.totals(_Processes(), meta)
    assert sums.device.type == weights.device.type == "meta"


def test_a_training_step_adds_its_values_weighted_by_labels_then_logits_then_one():
    """Without a trainer nothing is logged; the step's values go to the epoch sums: 2 of 3
    predictions right (argmax 0, 1, 2 against labels 0, 1, 0)."""
    from robustlab.methods.erm import TrainingOutput

    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    method = ERM(LinearClassifier([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    out = TrainingOutput(torch.tensor(2.0), logits, {"extra": torch.tensor(0.5)})
    method.log_training(out, torch.tensor([0, 1, 0]))
    means = method.training_means
    assert means.weights == {"train/loss": 3, "train/acc": 3, "train/extra": 3}
    sums = {k: v.item() for k, v in means.sums.items()}
    assert sums == {"train/loss": 6.0, "train/acc": 2.0, "train/extra": 1.5}
    unlabelled = ERM(LinearClassifier([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    unlabelled.log_training(TrainingOutput(torch.tensor(2.0), logits), None)
    assert unlabelled.training_means.weights == {"train/loss": 3}  # len(logits), no accuracy
    bare = ERM(LinearClassifier([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    bare.log_training(TrainingOutput(torch.tensor(2.0), None), None)
    assert bare.training_means.weights == {"train/loss": 1}
    assert bare.training_means.sums["train/loss"].item() == 2.0


def test_trainable_on_a_stage_without_classifier_is_refused_word_for_word():
    from robustlab.errors import ConfigError

    class _Stage(ERM):
        is_classifier = False

    with pytest.raises(ConfigError) as error:
        _Stage(LinearClassifier([[1.0, 0.0], [0.0, 1.0]]), trainable="classifier")
    assert str(error.value) == (
        "method.trainable selects classifier parameters; _Stage trains no classifier: "
        "set method.trainable=all"
    )
