"""Evaluation suites, corruption-error metrics, the eval app and its report card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.cli.report import main as report_main
from robustlab.cli.train import train
from robustlab.data import build_datamodule
from robustlab.errors import ConfigError
from robustlab.models import build_classifier
from robustlab.perturbations.corruptions import TEST_CORRUPTIONS
from robustlab.run.checkpoints import load_checkpoint, model_state
from robustlab.suites.clean import calibration_stats
from robustlab.suites.corruption_error import baseline_from_results, corruption_errors
from robustlab.suites.runner import run_suites
from tests.helpers import compose_train, results_of, run_app, suite_trainer


def test_mce_on_hand_computed_example():
    ours = {("fog", 1): 0.2, ("fog", 2): 0.4, ("snow", 1): 0.3, ("snow", 2): 0.3}
    base = {("snow", 1): 0.5, ("snow", 2): 0.7, ("fog", 2): 0.6, ("fog", 1): 0.4}  # any order
    out = corruption_errors(ours, base, clean_error=0.1, baseline_clean_error=0.2)
    assert out["ce/fog"] == pytest.approx(0.6 / 1.0)
    assert out["ce/snow"] == pytest.approx(0.6 / 1.2)
    assert out["mce"] == pytest.approx((0.6 + 0.5) / 2)
    # relative: Σ(E − E_clean) / Σ(E_base − E_base_clean)
    assert out["relative_ce/fog"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.4))
    assert out["relative_ce/snow"] == pytest.approx((0.2 + 0.2) / (0.3 + 0.5))
    assert out["relative_mce"] == pytest.approx((0.4 / 0.6 + 0.4 / 0.8) / 2)


def test_baseline_is_read_by_name_from_results_json(tmp_path):
    record = {
        "metrics": {"test/acc": 0.9},
        "robustness": [
            {"suite": "corruptions", "condition": "fog", "level": 2, "metric": "acc", "value": 0.7},
            {
                "suite": "pgd_linf",
                "condition": "pgd20",
                "level": 0.03,
                "metric": "acc",
                "value": 0.1,
            },
        ],
    }
    (tmp_path / "results.json").write_text(json.dumps(record))
    errors, clean_error = baseline_from_results(tmp_path)
    assert errors == {("fog", 2): pytest.approx(0.3)}
    assert clean_error == pytest.approx(0.1)


def test_corruption_errors_skip_what_cannot_be_divided_and_keep_each_corruptions_severities():
    # "blur" is missing from the baseline and sorts first: it is skipped, the others still count
    ours = {("blur", 1): 0.5, ("fog", 1): 0.2, ("fog", 3): 0.4, ("snow", 2): 0.9}
    base = {("fog", 1): 0.4, ("fog", 3): 0.6, ("snow", 2): 0.0}
    out = corruption_errors(ours, base)
    assert out == {"ce/fog": pytest.approx(0.6 / 1.0), "mce": pytest.approx(0.6)}
    # only one clean error given: no relative metrics
    assert "relative_mce" not in corruption_errors(ours, base, clean_error=0.1)
    # a baseline that is no worse than its clean error gives no relative CE (no 0 division)
    out = corruption_errors({("fog", 1): 0.3}, {("fog", 1): 0.2}, 0.1, baseline_clean_error=0.2)
    assert out == {"ce/fog": pytest.approx(1.5), "mce": pytest.approx(1.5)}


def test_baseline_accepts_the_file_and_falls_back_to_the_summary_clean_accuracy(tmp_path):
    row = {"suite": "corruptions", "condition": "fog", "level": 1, "metric": "acc", "value": 0.6}
    file = tmp_path / "results.json"
    file.write_text(json.dumps({"summary": {"clean/acc": 0.75}, "robustness": [row]}))
    errors, clean_error = baseline_from_results(file)
    assert errors == {("fog", 1): pytest.approx(0.4)}
    assert clean_error == pytest.approx(0.25)
    file.write_text(json.dumps({"robustness": [row]}))
    assert baseline_from_results(tmp_path)[1] is None
    file.write_text(json.dumps({"metrics": {"test/acc": 0.9}}))
    with pytest.raises(ConfigError, match="no 'corruptions' accuracy records"):
        baseline_from_results(tmp_path)


def test_condition_means_average_one_metric_over_the_levels_of_each_condition():
    from robustlab.results import RobustnessRecord
    from robustlab.suites.base import condition_means

    records = [
        RobustnessRecord("corruptions", "fog", 1, "acc", 0.8),
        RobustnessRecord("corruptions", "fog", 2, "acc", 0.6),
        RobustnessRecord("corruptions", "fog", 1, "ece", 0.05),
        RobustnessRecord("corruptions", "snow", 1, "acc", 0.5),
    ]
    assert condition_means(records, "acc") == {"fog": pytest.approx(0.7), "snow": 0.5}
    assert condition_means(records, "ece") == {"fog": pytest.approx(0.05)}


def test_a_suite_keys_its_random_streams_by_seed_name_and_condition():
    from robustlab.suites.base import Condition, EvaluationSuite

    base = object()
    suite = EvaluationSuite(base)
    assert suite.base is base and suite.conditions == [] and suite.max_images is None
    assert suite.random_key(Condition("fog", 3)) == (0, "suite", "fog", "3")
    named = EvaluationSuite(base, seed=7, max_images=10, name="pgd_l2")
    assert named.max_images == 10
    assert named.random_key(Condition("pgd20", 0.5)) == (7, "pgd_l2", "pgd20", "0.5")
    condition = Condition("snow", 2, (("flakes", 3),))
    assert condition.option("flakes") == 3 and condition.option("wind", 0.5) == 0.5


@pytest.mark.parametrize(
    ("suite", "options", "message"),
    [
        (
            "distortions",
            {"distortions": ["jpg", "zoom"], "levels": {"blurr": [1]}},
            r"suite.distortions: unknown distortion\(s\) \['blurr', 'jpg', 'zoom'\]; valid "
            r"choices: crop, crop_pad, gaussian_noise, jpeg, thumbnail$",
        ),
        (
            "corruptions",
            {"corruptions": ["fogg", "rain"]},
            r"suite.corruptions: unknown corruption\(s\) \['fogg', 'rain'\] \(did you mean "
            r"'fog'\?\); valid choices: gaussian_noise, shot_noise, impulse_noise,",
        ),
        (
            "perturbation_sequences",
            {"kinds": ["rotate", "shear", "zom"]},
            r"suite.perturbation_sequences: unknown kind\(s\) \['shear', 'zom'\]; valid choices: "
            r"brightness, gaussian_noise, rotate",
        ),
        (
            "near_duplicate",
            {"distortions": {"jpg": [50], "crop": [2]}},
            r"suite.near_duplicate.distortions: unknown distortion\(s\) \['jpg'\] \(did you "
            r"mean 'jpeg'\?\)",
        ),
        ("near_duplicate", {"distortions": {}}, "suite.near_duplicate.distortions is empty"),
    ],
)
def test_suites_name_every_unknown_option_at_once(suite, options, message):
    from robustlab.suites import build_suite

    datamodule = build_datamodule("digits")
    with pytest.raises(ConfigError, match=message):
        build_suite(suite, datamodule, **options)


def test_calibration_stats_give_the_ece():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    y = torch.tensor([0, 1, 1, 0])
    stats = calibration_stats(probs, y, bins=10)
    ece = sum(abs(total) for total, _ in stats.values()) / 4
    # bins: 0.9 (conf .9, right), 0.6 (.6, wrong), 0.7 (.7, right), 1.0 (.95, right)
    expected = (abs(0.9 - 1) + abs(0.6 - 0) + abs(0.7 - 1) + abs(0.95 - 1)) / 4
    assert float(ece) == pytest.approx(expected)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("digits_run")
    cfg = compose_train("trainer.enable_progress_bar=false", "trainer.max_epochs=6")
    assert train(cfg, run_dir).metrics["test/acc"] > 0.9
    return run_dir


def _model_and_data(run_dir: Path, **data_overrides):
    checkpoint = load_checkpoint(results_of(run_dir)["checkpoint"])
    config = checkpoint["robustlab"]["config"]
    data = {**config["data"], **data_overrides}
    datamodule = build_datamodule(data.pop("name"), **data)
    model_cfg = dict(config["model"])
    model = build_classifier(
        model_cfg.pop("name"),
        num_classes=10,
        in_channels=1,
        mean=datamodule.mean,
        std=datamodule.std,
        **model_cfg,
    )
    model.load_state_dict(model_state(checkpoint))
    return model.eval(), datamodule


def _evaluate(run_dir: Path, suites: dict, **data_overrides):
    model, datamodule = _model_and_data(run_dir, **data_overrides)
    trainer = suite_trainer()
    return run_suites(suites, model, datamodule, trainer, seed=0)


def test_accuracy_falls_with_severity_and_epsilon(digits_run):
    """Accuracy falls by a clear margin at every step of severity, crop offset, noise σ and
    PGD ε, on conditions that really hurt this digits model (measured: contrast 0.83 → 0.13,
    fog 0.91 → 0.23 over severities 1..5; crop 0.89 → 0.29; PGD 0.93 → 0.0)."""
    run = _evaluate(
        digits_run,
        {
            "clean": {},
            "corruptions": {"corruptions": ["contrast", "fog"]},
            "distortions": {
                "distortions": ["crop", "gaussian_noise"],
                "levels": {"crop": [1, 4, 8], "gaussian_noise": [0.01, 0.3]},
            },
            "pgd_linf": {"epsilons": ["2/255", "16/255", 0.1, 0.3], "steps": [5]},
        },
    )
    acc = {(r.suite, r.condition, r.level): r.value for r in run.records if r.metric == "acc"}

    def falls(values, margin):
        return all(a > b + margin for a, b in zip(values, values[1:], strict=False))

    for c in ("contrast", "fog"):
        by_severity = [acc[("corruptions", c, s)] for s in range(1, 6)]
        assert falls(by_severity, 0.03), (c, by_severity)
    assert acc[("corruptions", "contrast", 1)] <= run.summary["clean/acc"]
    crop = [acc[("distortions", "crop", k)] for k in (1, 4, 8)]
    assert falls(crop, 0.1), crop
    noise = [acc[("distortions", "gaussian_noise", s)] for s in (0.01, 0.3)]
    assert falls(noise, 0.1), noise
    pgd = [acc[("pgd_linf", "pgd5", eps)] for eps in (2 / 255, 16 / 255, 0.1, 0.3)]
    assert falls(pgd[:3], 0.05) and pgd[3] <= pgd[2], pgd
    assert pgd[-1] <= 0.02  # an undefended model falls at ε = 0.3
    assert pgd[0] < run.summary["clean/acc"]
    assert run.summary["pgd_linf/acc@0.3"] == pgd[-1]
    assert run.warnings == []


#: Every suite whose conditions draw random numbers, each with its random conditions only
#: (all random corruptions at one severity, all random distortions), kept small.
RANDOM_CORRUPTIONS = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "glass_blur",
    "motion_blur",
    "elastic_transform",
    "snow",
    "frost",
    "fog",
    "spatter",
]
RANDOM_SUITES = {
    "corruptions": {"corruptions": RANDOM_CORRUPTIONS, "severities": [3]},
    "distortions": {"distortions": ["crop", "crop_pad", "gaussian_noise"]},
    "perturbation_sequences": {"kinds": ["gaussian_noise"], "frames": 4},
    "near_duplicate": {"distortions": {"crop": [2], "gaussian_noise": [0.04]}, "pr_points": 0},
    "similar_ranking": {"distortions": {"crop": [2], "gaussian_noise": [0.04]}},
    "pgd_linf": {"epsilons": [0.1], "steps": [2]},
    "pgd_l2": {"epsilons": [1.5], "steps": [2], "restarts": 2},
}


def test_random_suites_do_not_depend_on_the_batch_size(digits_run):
    """Every random draw is keyed on (seed, suite, condition, level, image index), so the
    records are identical whatever the evaluation batch size (issue 10, defect 1)."""
    suites = {name: {**options, "max_images": 45} for name, options in RANDOM_SUITES.items()}
    big = _evaluate(digits_run, suites, eval_batch_size=45).records
    small = _evaluate(digits_run, suites, eval_batch_size=7).records
    assert {r.suite for r in big} == set(RANDOM_SUITES)
    assert [(r.suite, r.condition, r.level, r.metric) for r in big] == [
        (r.suite, r.condition, r.level, r.metric) for r in small
    ]
    # counts (accuracy, flip and ranking rates, histogram AUC) are identical; mean feature
    # distances are float32 model outputs, rounded differently by convolutions at another
    # batch size: to 1e-6 relative
    differ = [
        (a.suite, a.condition, a.level, a.metric, a.value, b.value)
        for a, b in zip(big, small, strict=True)
        if a.value != (pytest.approx(b.value, rel=1e-6) if "distance" in a.metric else b.value)
    ]
    assert differ == []


def test_random_suites_do_not_depend_on_the_worker_count(tmp_path):
    """On the DataLoader path (image folders, images decoded in worker processes) the records
    are the same with 0 or 2 workers and another batch size: indices travel with the batches."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 7)):
        for cls in ("a", "b"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    suites = {
        "corruptions": {"corruptions": ["elastic_transform"], "severities": [5]},
        "near_duplicate": {"distortions": {"crop": [3]}, "pr_points": 0},
        "pgd_linf": {"epsilons": [0.3], "steps": [1]},
    }
    torch.manual_seed(0)
    model = build_classifier("small_cnn", num_classes=2, in_channels=3, mean=0.5, std=0.25).eval()
    runs = []
    for workers, batch in ((0, 14), (2, 3)):
        datamodule = build_datamodule(
            "imagefolder", root=tmp_path, num_workers=workers, eval_batch_size=batch
        )
        trainer = suite_trainer()
        runs.append(run_suites(suites, model, datamodule, trainer, seed=0).records)
    assert len(runs[0]) == len(runs[1]) > 0
    for a, b in zip(*runs, strict=True):
        assert (a.suite, a.condition, a.level, a.metric) == (
            b.suite,
            b.condition,
            b.level,
            b.metric,
        )
        assert a.value == (pytest.approx(b.value, rel=1e-6) if "distance" in a.metric else b.value)


def test_sanity_check_flags_robust_above_clean(digits_run):
    from robustlab.results import RobustnessRecord
    from robustlab.suites import build_suite

    _, datamodule = _model_and_data(digits_run)
    suite = build_suite("pgd_linf", datamodule, epsilons=["2/255", "8/255"], steps=[5])
    fake = [
        RobustnessRecord("pgd_linf", "pgd5", 2 / 255, "acc", 0.5),
        RobustnessRecord("pgd_linf", "pgd5", 8 / 255, "acc", 0.7),
    ]
    flags = suite.sanity_violations(fake, clean_acc=0.6)
    assert any("exceeds clean" in f for f in flags)
    assert any("increases" in f or "non-increasing" in f or "rises" in f for f in flags), flags


def test_eval_app_writes_records_report_and_plots(digits_run, tmp_path):
    checkpoint = results_of(digits_run)["checkpoint"]
    proc = run_app(
        "evaluate",
        f"checkpoint={checkpoint}",
        "suite=[corruptions,pgd_linf]",
        "suite.pgd_linf.steps=[3]",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}/e1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = results_of(tmp_path / "e1")
    corruption_records = [r for r in record["robustness"] if r["suite"] == "corruptions"]
    assert len(corruption_records) == 95
    assert {r["level"] for r in corruption_records} == {1, 2, 3, 4, 5}
    accs = [r["value"] for r in corruption_records if r["condition"] in TEST_CORRUPTIONS]
    assert len(accs) == 75  # the headline mean is over the 15 test corruptions × 5 severities
    assert record["summary"]["corruptions/mean_acc"] == pytest.approx(sum(accs) / len(accs))
    by_severity = [
        sum(r["value"] for r in corruption_records if r["level"] == s) / 19 for s in (1, 5)
    ]
    assert by_severity[0] > by_severity[1] + 0.1, by_severity
    pgd = {r["level"]: r["value"] for r in record["robustness"] if r["suite"] == "pgd_linf"}
    assert len(pgd) == 3 and record["summary"]["pgd_linf/acc@8/255"] == pgd[8 / 255]
    assert pgd[2 / 255] > pgd[8 / 255]
    assert record["metrics"]["test/acc"] == pytest.approx(
        results_of(digits_run)["metrics"]["test/acc"]
    )
    report = (tmp_path / "e1" / "report.md").read_text()
    assert "## corruptions" in report and "## pgd_linf" in report
    assert (tmp_path / "e1" / "plots" / "corruptions_acc.png").stat().st_size > 10_000
    assert (tmp_path / "e1" / "plots" / "pgd_linf_acc.png").is_file()

    assert report_main([str(tmp_path / "e1"), "--metrics", "test/acc", "corruptions/mean_acc"]) == 0


def test_resubmitted_finished_evaluation_is_left_as_it_is(digits_run, tmp_path):
    """``robustlab-eval skip_finished=true`` in a folder whose results.json records the same
    finished evaluation returns it without scoring again (the file is not rewritten: its start
    time would change); another suite list is evaluated (and rewrites the record); a value other
    than true or false is refused by name."""
    from robustlab.cli.evaluate import evaluate

    args = [f"checkpoint={digits_run}", "trainer.enable_progress_bar=false", "skip_finished=true"]
    first = evaluate(compose_train(*args, config_name="eval"), tmp_path)
    written = (tmp_path / "results.json").read_text()
    again = evaluate(compose_train(*args, config_name="eval"), tmp_path)
    assert (tmp_path / "results.json").read_text() == written
    assert again.summary == first.summary and again.metrics == first.metrics
    more = evaluate(compose_train(*args, "suite=[clean,pgd_linf]", config_name="eval"), tmp_path)
    assert "pgd_linf/acc@8/255" in more.summary and "pgd_linf/acc@8/255" not in first.summary
    later = [*args[:-1], "skip_finished=later"]
    with pytest.raises(ConfigError, match="skip_finished must be true or false, got 'later'"):
        evaluate(compose_train(*later, config_name="eval"), tmp_path / "other")


def _override(value) -> str:
    """A Python value as a Hydra command-line value."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_override(v) for v in value) + "]"
    return str(value)


def test_ddp_evaluation_equals_single_process(digits_run, tmp_path):
    """The same checkpoint gives identical records in one process and sharded over 2 DDP
    processes (with another batch size), for clean, JPEG, thumbnail and every random suite:
    statistics are summed across ranks and every random draw is keyed on the image index."""
    checkpoint = results_of(digits_run)["checkpoint"]
    suites = {
        "clean": {},
        **RANDOM_SUITES,
        "distortions": {"distortions": ["jpeg", "thumbnail", "crop", "crop_pad", "gaussian_noise"]},
    }
    common = [
        f"checkpoint={checkpoint}",
        f"suite=[{','.join(suites)}]",
        *(
            f"suite.{name}.{key}={_override(value)}"
            for name, options in suites.items()
            for key, value in {**options, "max_images": 45}.items()
        ),
        "trainer.enable_progress_bar=false",
    ]
    single = run_app("evaluate", *common, f"hydra.run.dir={tmp_path}/single", cwd=tmp_path)
    ddp = run_app(
        "evaluate",
        *common,
        "trainer=ddp_cpu",
        "data.eval_batch_size=8",
        "logger=[csv,wandb]",
        f"hydra.run.dir={tmp_path}/ddp",
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = results_of(tmp_path / "single"), results_of(tmp_path / "ddp")
    assert two["provenance"]["world_size"] == 2

    def as_table(r):
        return {
            (x["suite"], x["condition"], x["level"], x["metric"]): x["value"]
            for x in r["robustness"]
        }

    # counts (accuracies, flip and ranking rates, histogram AUC) are identical; ECE and mean
    # feature distances are float sums of float32 model outputs: to 1e-6 relative
    assert as_table(one).keys() == as_table(two).keys()
    assert {key[0] for key in as_table(one)} == set(suites)

    def same(key, a, b):
        return a == (
            pytest.approx(b, rel=1e-6, abs=1e-9) if "ece" in key or "distance" in key else b
        )

    differ = [
        (k, v, as_table(two)[k])
        for k, v in as_table(one).items()
        if not same(k[3], v, as_table(two)[k])
    ]
    assert differ == []
    assert all(same(k, v, two["summary"][k]) for k, v in one["summary"].items())
    # the plots and the robustness table also went to the (offline) wandb run
    (run,) = (tmp_path / "ddp" / "wandb").glob("offline-run-*")
    assert list((run / "files" / "media" / "images").rglob("*.png")), "plots not logged to wandb"
    assert list((run / "files" / "media" / "table").glob("robustness_*.table.json"))
