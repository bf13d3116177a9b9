"""The evaluation-suite base (robustlab.suites.base) run for real on 7 synthetic test images
in batches of 3 (no files, under a second): one loader per condition, batches converted and
indexed with their neighbours, the cases a suite scores, its tidy records and headline means."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.data import build_datamodule
from robustlab.randomness import ImageStreams
from robustlab.results import RobustnessRecord
from robustlab.suites.base import (
    Case,
    Condition,
    EvaluationSuite,
    PerturbationSuite,
    condition_means,
    correct_count,
)
from robustlab.suites.evaluator import SuiteEvaluator
from tests.helpers import suite_trainer


class _Brightness(nn.Module):
    """Predicts class ⌊3·mean brightness⌋ (0, 1 or 2) of a one-channel image."""

    def forward(self, x):
        return nn.functional.one_hot((x.mean(dim=(1, 2, 3)) * 3).long().clamp(0, 2), 3).float()


class _Dimming(PerturbationSuite):
    """x·factor per condition; keeps every case it scores."""

    name = "dimming"
    uses_neighbours = True

    def __init__(self, base, **options):
        super().__init__(base, **options)
        self.conditions = [
            Condition("same"),
            Condition("dim", 0.5, (("factor", 0.5),)),
            Condition("dark", 0.1, (("factor", 0.1),)),
        ]
        self.cases: list[Case] = []
        self.streams: list[ImageStreams] = []

    def perturb(self, x, condition, random):
        self.streams.append(random)
        return x * condition.option("factor", 1.0)

    def measure(self, case):
        self.cases.append(case)
        return super().measure(case)


def _data():
    data = build_datamodule(
        "synthetic",
        num_classes=3,
        image_size=4,
        channels=1,
        n_train=3,
        n_test=7,
        batch_size=3,
        eval_batch_size=3,
    )
    data.setup("test")
    return data


def _score(suite) -> dict:
    evaluator = SuiteEvaluator(_Brightness(), suite)
    trainer = suite_trainer()
    trainer.test(evaluator, datamodule=suite, verbose=False)
    assert suite.base.trainer is trainer  # the base data shards by this trainer's processes
    return evaluator.values


def _accuracy(images, labels, factor: float) -> float:
    return (_Brightness()(images * factor).argmax(1) == labels).sum().item() / len(labels)


def test_a_suite_scores_every_condition_on_indexed_batches_with_their_neighbours():
    data = _data()
    test = [data.test_dataset()[i] for i in range(7)]
    images = torch.stack([image for image, _ in test])
    labels = torch.tensor([label for _, label in test])
    suite = _Dimming(data, seed=3)
    values = _score(suite)
    expected = [_accuracy(images, labels, f) for f in (1.0, 0.5, 0.1)]
    assert len(set(expected)) > 1  # the conditions differ
    assert values == pytest.approx(
        {(0, "acc"): expected[0], (1, "acc"): expected[1], (2, "acc"): expected[2]}
    )
    # the cases: 3 batches per condition, float images with their index and next image
    assert [len(case.x) for case in suite.cases] == [3, 3, 1] * 3
    for case in suite.cases:
        index = case.index
        assert torch.equal(case.x, images[index]) and torch.equal(case.y, labels[index])
        assert torch.equal(case.next_index, (index + 1) % 7)
        assert torch.equal(case.next_x, images[(index + 1) % 7])
        condition = case.condition
        assert case.key == (3, "dimming", condition.name, repr(condition.level))
        assert case.model.__class__ is _Brightness
        reference = ImageStreams.keyed(case.key, index, "cpu")
        draws = [torch.rand(2, generator=g) for g in reference._generators]
        assert all(
            torch.equal(torch.rand(2, generator=g), d)
            for g, d in zip(case.random._generators, draws, strict=True)
        )
    assert [c.condition.name for c in suite.cases[::3]] == ["same", "dim", "dark"]
    # each case is perturbed with its own images' streams
    assert all(s is c.random for s, c in zip(suite.streams, suite.cases, strict=True))
    # tidy records in condition order, and the headline means
    records = suite.records(values)
    assert records == [
        RobustnessRecord("dimming", "same", None, "acc", expected[0]),
        RobustnessRecord("dimming", "dim", 0.5, "acc", expected[1]),
        RobustnessRecord("dimming", "dark", 0.1, "acc", expected[2]),
    ]
    assert suite.summarize(records) == pytest.approx(
        {
            "dimming/mean_acc": sum(expected) / 3,
            "dimming/same/mean_acc": expected[0],
            "dimming/dim/mean_acc": expected[1],
            "dimming/dark/mean_acc": expected[2],
        }
    )


def test_a_suite_limited_to_its_first_images_under_its_config_name():
    data = _data()
    suite = _Dimming(data, seed=0, max_images=4, name="dim_four")
    assert (suite.name, suite.seed, suite.max_images) == ("dim_four", 0, 4)
    _score(suite)
    assert [case.index.tolist() for case in suite.cases[:2]] == [[0, 1, 2], [3]]
    assert suite.cases[0].key == (0, "dim_four", "same", "None")
    assert torch.equal(suite.cases[1].next_index, torch.tensor([0]))  # wraps within the four
    assert _Dimming(data).name == "dimming" and _Dimming(data).seed == 0
    bare = EvaluationSuite(data)  # a suite without conditions loads and records nothing
    assert (bare.name, bare.conditions, bare.test_dataloader(), bare.records({})) == (
        "suite",
        [],
        [],
        [],
    )


def test_condition_options_means_and_correct_counts():
    condition = Condition("blur", 2, (("sigma", 0.5), ("kernel", 3)))
    assert condition.option("sigma") == 0.5 and condition.option("kernel", 9) == 3
    assert condition.option("missing") is None and condition.option("missing", 7) == 7
    records = [
        RobustnessRecord("s", "blur", 1, "acc", 0.75),
        RobustnessRecord("s", "blur", 2, "acc", 0.25),
        RobustnessRecord("s", "blur", 2, "loss", 9.0),
        RobustnessRecord("s", "noise", 1, "acc", 0.6),
    ]
    assert condition_means(records, "acc") == pytest.approx({"blur": 0.5, "noise": 0.6})
    assert condition_means(records, "loss") == {"blur": 9.0}
    x = torch.tensor([0.1, 0.5, 0.9, 0.9]).reshape(4, 1, 1, 1)
    stats = correct_count(_Brightness(), x, torch.tensor([0, 1, 1, 2]))
    (correct, count) = stats["acc"]
    assert set(stats) == {"acc"} and (correct.item(), count.item()) == (3.0, 4.0)
    assert correct.dtype == torch.float32 and not correct.requires_grad
