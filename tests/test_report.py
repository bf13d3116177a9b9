"""robustlab-report: synthetic run folders with hand-computed mean ± std (sample std, ddof = 1)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustlab.cli.report import main
from robustlab.errors import RobustlabError
from robustlab.reporting import (
    aggregate,
    format_level,
    group_runs,
    load_reference,
    load_runs,
    to_csv,
    to_markdown,
)
from tests.helpers import suite_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models

LINF = {"suite": "pgd_linf", "condition": "pgd20", "level": 0.0313725, "metric": "acc"}


def write_run(
    folder: Path,
    *,
    seed: int,
    acc: float | None = None,
    method: str = "stability",
    alpha: float = 0.1,
    overrides: list[str] | None = None,
    summary: dict | None = None,
    robustness: list[dict] | None = None,
    status: str = "ok",
    error: str | None = None,
) -> Path:
    """A run folder like robustlab-train writes (results.json + optional .hydra/overrides)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "seed": seed,
        "method": {"name": method, "alpha": alpha},
        "data": {"name": "mnist", "root": f"/data/{seed}", "batch_size": 128},
        "model": {"name": "small_cnn"},
        "trainer": {"max_epochs": 3, "default_root_dir": str(folder)},
    }
    doc = {
        "status": status,
        "method": method,
        "data": "mnist",
        "model": "small_cnn",
        "seed": seed,
        "metrics": {} if acc is None else {"test/acc": acc, "test/loss": 0.3},
        "robustness": robustness or [],
        "summary": summary or {},
        "checkpoint": str(folder / "checkpoints" / "best.ckpt"),
        "config": config,
        "provenance": {"git": None},
    }
    if error is not None:
        doc["error"] = error
    (folder / "results.json").write_text(json.dumps(doc))
    if overrides is not None:
        (folder / ".hydra").mkdir(exist_ok=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return folder


def ovr(alpha: float, seed: int) -> list[str]:
    return ["method=stability", f"method.alpha={alpha}", f"seed={seed}", f"hydra.run.dir=x/{seed}"]


@pytest.fixture
def two_configs(tmp_path: Path) -> Path:
    """alpha=0.1: seeds 0, 1 with test/acc 0.90, 0.94; alpha=0.3: one seed with 0.80."""
    root = tmp_path / "runs"
    summ = [
        {"corruptions/mean_acc": 0.70, "corruptions/mce": 1.2},
        {"corruptions/mean_acc": 0.80, "corruptions/mce": 1.0},
        {"corruptions/mean_acc": 0.60, "corruptions/mce": 1.5},
    ]
    write_run(root / "a0", seed=0, acc=0.90, overrides=ovr(0.1, 0), summary=summ[0])
    write_run(root / "a1", seed=1, acc=0.94, overrides=ovr(0.1, 1), summary=summ[1])
    write_run(root / "b0", seed=0, acc=0.80, alpha=0.3, overrides=ovr(0.3, 0), summary=summ[2])
    return root


def md_row(markdown: str, label: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{markdown}")


def test_cli_mean_std_percent_and_csv(two_configs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main([str(two_configs), "--output", str(out)]) == 0
    markdown = capsys.readouterr().out
    header = md_row(markdown, "group")
    assert header == ["group", "n", "test/acc (%)", "corruptions/mean_acc (%)", "corruptions/mce"]
    # mean 0.92, std sqrt(2 * 0.02**2 / 1) = 0.028284 -> 92.00 ± 2.83 percent
    assert md_row(markdown, "stability alpha=0.1 (mnist, small_cnn)") == [
        "stability alpha=0.1 (mnist, small_cnn)",
        "2",
        "92.00 ± 2.83",
        "75.00 ± 7.07",
        "1.10 ± 0.14",
    ]
    # n = 1: no std
    assert md_row(markdown, "stability alpha=0.3 (mnist, small_cnn)")[1:] == [
        "1",
        "80.00",
        "60.00",
        "1.50",
    ]
    assert "Failed / incomplete runs" not in markdown
    assert (out / "report.md").read_text() == markdown
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert rows[0]["group"] == "stability alpha=0.1 (mnist, small_cnn)" and rows[0]["n"] == "2"
    assert float(rows[0]["test/acc_mean"]) == pytest.approx(92.0)
    assert float(rows[0]["test/acc_std"]) == pytest.approx(2.8284271247, abs=1e-8)
    assert float(rows[0]["corruptions/mce_std"]) == pytest.approx(0.1414213562, abs=1e-8)
    assert float(rows[1]["test/acc_mean"]) == pytest.approx(80.0) and rows[1]["test/acc_std"] == ""


def test_percent_switches_and_decimals(two_configs: Path, capsys) -> None:
    assert main([str(two_configs), "--no-percent", "--decimals", "3", "--metrics", "test/acc"]) == 0
    row = md_row(capsys.readouterr().out, "stability alpha=0.1 (mnist, small_cnn)")
    assert row[2] == "0.920 ± 0.028"
    # --percent scales every column whose values are all in [0, 1]; mce (1.0-1.5) stays as is
    table = aggregate(
        group_runs(load_runs([two_configs])),
        ["test/loss", "corruptions/mce"],
        percent=True,
        decimals=1,
    )
    assert [c.percent for c in table.columns] == [True, False]
    assert md_row(to_markdown(table), "stability alpha=0.3 (mnist, small_cnn)")[2:] == [
        "30.0",
        "1.5",
    ]


def test_multirun_layout_grouping_ignores_seed_and_lists_unfinished(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "2026-11-22" / "10-00-00"
    accs = {(0.1, 0): 0.90, (0.1, 1): 0.94, (0.3, 0): 0.50, (0.3, 1): 0.70}
    for job, ((alpha, seed), acc) in enumerate(accs.items()):
        write_run(sweep / str(job), seed=seed, acc=acc, alpha=alpha, overrides=ovr(alpha, seed))
    (sweep / "4" / ".hydra").mkdir(parents=True)  # a job that never wrote results.json
    (sweep / "4" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(ovr(0.3, 2)))
    choices = {"method": "stability", "data": "mnist", "model": "small_cnn"}
    hydra = {"hydra": {"runtime": {"choices": choices}}}
    (sweep / "4" / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (sweep / "4" / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 2}))
    runs = load_runs([tmp_path / "multirun"])
    assert [r.path.name for r in runs] == ["0", "1", "2", "3", "4"]
    groups = group_runs(runs)
    assert [g.label for g in groups] == [
        "stability alpha=0.1 (mnist, small_cnn)",
        "stability alpha=0.3 (mnist, small_cnn)",
    ]
    assert [[r.seed for r in g.runs] for g in groups] == [[0, 1], [0, 1, 2]]
    table = aggregate(groups, ["test/acc"])
    assert [r.n for r in table.rows] == [2, 2]
    # 0.5, 0.7 -> 60.00 ± 14.14; the unfinished job does not count
    markdown = to_markdown(table)
    assert md_row(markdown, "stability alpha=0.3 (mnist, small_cnn)")[2] == "60.00 ± 14.14"
    assert "### Failed / incomplete runs" in markdown
    ((path, problem),) = table.problems
    assert path.endswith("10-00-00/4") and problem.startswith("incomplete: no results.json")


def test_run_control_overrides_do_not_split_groups(tmp_path: Path) -> None:
    # seed 0 started plainly, seeds 1 and 2 by a restartable script (resume=auto, no progress
    # bar): one group of three, mean (0.5 + 0.6 + 0.7) / 3
    write_run(tmp_path / "s0", seed=0, acc=0.5, overrides=ovr(0.1, 0))
    for seed, acc in ((1, 0.6), (2, 0.7)):
        controls = ["resume=auto", "trainer.enable_progress_bar=false"]
        write_run(tmp_path / f"s{seed}", seed=seed, acc=acc, overrides=ovr(0.1, seed) + controls)
    groups = group_runs(load_runs([tmp_path]))
    assert [(g.label, len(g.runs)) for g in groups] == [("stability (mnist, small_cnn)", 3)]
    (row,) = aggregate(groups, ["test/acc"]).rows
    assert (row.n, row.stats["test/acc"].mean) == (3, pytest.approx(0.6))


def test_grouping_without_overrides_diffs_configs(tmp_path: Path) -> None:
    # data.root, trainer.default_root_dir and seed differ per run but must not split groups
    write_run(tmp_path / "r0", seed=0, acc=0.5, alpha=0.1)
    write_run(tmp_path / "r1", seed=1, acc=0.6, alpha=0.1)
    write_run(tmp_path / "r2", seed=0, acc=0.7, alpha=0.5)
    write_run(tmp_path / "r3", seed=0, acc=0.8, method="erm")
    groups = group_runs(load_runs([tmp_path]))
    assert [(g.label, len(g.runs)) for g in groups] == [
        ("stability alpha=0.1 (mnist, small_cnn)", 2),
        ("stability alpha=0.5 (mnist, small_cnn)", 1),
        ("erm (mnist, small_cnn)", 1),
    ]
    # --group-by: explicit keys, here all stability runs together and erm apart
    by_method = group_runs(load_runs([tmp_path]), ["method"])
    assert [(g.label, len(g.runs)) for g in by_method] == [
        ("method=stability", 3),
        ("method=erm", 1),
    ]


def test_group_by_path_gives_one_row_per_path_argument(tmp_path: Path) -> None:
    # fine-tuned runs differ only in the (per-seed) checkpoint they start from: the folder each
    # variant was written to is what tells them apart; a run under two PATHs counts once
    for variant, accs in (("rotation", (0.5, 0.7)), ("jigsaw", (0.6, 0.9))):
        for seed, acc in enumerate(accs):
            write_run(tmp_path / variant / str(seed), seed=seed, acc=acc, overrides=ovr(0.1, seed))
    paths = [tmp_path / "rotation", tmp_path / "jigsaw", tmp_path / "jigsaw" / "0"]
    groups = group_runs(load_runs(paths), ["path"])
    assert [(g.label, [r.seed for r in g.runs]) for g in groups] == [
        (f"path={tmp_path / 'rotation'}", [0, 1]),
        (f"path={tmp_path / 'jigsaw'}", [0, 1]),
    ]
    means = [row.stats["test/acc"].mean for row in aggregate(groups, ["test/acc"]).rows]
    assert means == [pytest.approx(0.6), pytest.approx(0.75)]
    assert [len(g.runs) for g in group_runs(load_runs(paths))] == [4]  # default: one config


def test_group_by_labels_leave_out_keys_a_run_does_not_have(tmp_path: Path) -> None:
    # an ERM baseline beside stability runs grouped by method and method.alpha: ERM has no
    # alpha, so its row reads "method=erm" (not "method=erm alpha=?")
    write_run(tmp_path / "s0", seed=0, acc=0.5, alpha=0.1)
    baseline = write_run(tmp_path / "e0", seed=0, acc=0.6, method="erm")
    doc = json.loads((baseline / "results.json").read_text())
    del doc["config"]["method"]["alpha"]
    (baseline / "results.json").write_text(json.dumps(doc))
    groups = group_runs(load_runs([tmp_path]), ["method", "method.alpha"])
    assert sorted(g.label for g in groups) == ["method=erm", "method=stability alpha=0.1"]
    by_alpha = group_runs(load_runs([tmp_path]), ["method.alpha"])
    assert sorted(g.label for g in by_alpha) == ["alpha=0.1", "without method.alpha"]


def test_group_by_unknown_key_is_exit_2(two_configs: Path, capsys) -> None:
    assert main([str(two_configs), "--group-by", "method.alfa"]) == 2
    err = capsys.readouterr().err
    assert "method.alfa" in err and "method.alpha" in err and len(err.strip().splitlines()) == 1


def test_robustness_flattening_and_levels(tmp_path: Path, capsys) -> None:
    def records(v3: float, v5: float, vadv: float) -> list[dict]:
        return [
            {
                "suite": "corruptions",
                "condition": "gaussian_noise",
                "level": 3,
                "metric": "acc",
                "value": v3,
            },
            {
                "suite": "corruptions",
                "condition": "gaussian_noise",
                "level": 5,
                "metric": "acc",
                "value": v5,
            },
            {**LINF, "value": vadv},
        ]

    write_run(tmp_path / "s0", seed=0, acc=0.9, robustness=records(0.7, 0.4, 0.40))
    write_run(tmp_path / "s1", seed=1, acc=0.9, robustness=records(0.8, 0.5, 0.44))
    (run,) = load_runs([tmp_path / "s0" / "results.json"])  # a results.json file works too
    assert run.values["corruptions/gaussian_noise@3/acc"] == 0.7
    assert run.values["pgd_linf/pgd20@8/255/acc"] == 0.40
    assert main([str(tmp_path), "--metrics", "corruptions/*/acc", "pgd_linf/*"]) == 0
    row = md_row(capsys.readouterr().out, "stability (mnist, small_cnn)")
    assert row == [
        "stability (mnist, small_cnn)",
        "2",
        "75.00 ± 7.07",
        "45.00 ± 7.07",
        "42.00 ± 2.83",
    ]


@pytest.mark.parametrize(
    ("level", "text"),
    [
        (3, "3"),
        (5.0, "5"),
        (0.0313725, "8/255"),
        (8 / 255, "8/255"),
        (2 / 255, "2/255"),
        (0.5, "0.5"),
        (0.2, "0.2"),
        (0.123456, "0.1235"),
        (0, "0"),
        ("high", "high"),
    ],
)
def test_format_level(level, text: str) -> None:
    assert format_level(level) == text


def test_reference_column_and_source(two_configs: Path, tmp_path: Path, capsys) -> None:
    ref = tmp_path / "paper.yaml"
    ref.write_text(
        yaml.safe_dump(
            {
                "source": "Zheng et al., Improving the Robustness of DNNs via Stability Training",
                "notes": "Table 2, clean accuracy",
                "rows": [
                    {
                        "match": {"method": "stability", "data": "mnist", "method.alpha": 0.1},
                        "values": {"test/acc": 99.1},
                    },
                    {
                        "match": {"data": "mnist", "method": {"alpha": 0.7}},
                        "values": {"test/acc": 1},
                    },
                ],
            }
        )
    )
    out = tmp_path / "o"
    assert main([str(two_configs), "--reference", str(ref), "--output", str(out)]) == 0
    markdown = capsys.readouterr().out
    assert md_row(markdown, "group")[2:4] == ["test/acc (%)", "test/acc (paper)"]
    assert md_row(markdown, "stability alpha=0.1 (mnist, small_cnn)")[2:4] == [
        "92.00 ± 2.83",
        "99.1",
    ]
    assert md_row(markdown, "stability alpha=0.3 (mnist, small_cnn)")[2:4] == ["80.00", "—"]
    assert "Reference (paper) values: Zheng et al., Improving the Robustness" in markdown
    assert "Notes: Table 2, clean accuracy" in markdown
    assert "Reference row matching no group: data=mnist, method.alpha=0.7" in markdown
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert [r["test/acc_paper"] for r in rows] == ["99.1", ""]


def test_reference_without_source_is_a_clear_error(
    two_configs: Path, tmp_path: Path, capsys
) -> None:
    ref = tmp_path / "paper.yaml"
    ref.write_text(yaml.safe_dump({"rows": [{"match": {"method": "erm"}, "values": {"a": 1}}]}))
    with pytest.raises(RobustlabError, match="no 'source:'"):
        load_reference(ref)
    assert main([str(two_configs), "--reference", str(ref)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("robustlab-report: error: reference file")
    assert "source:" in captured.err and "Traceback" not in captured.err


def test_failed_run_and_missing_metric_are_listed(two_configs: Path, capsys) -> None:
    write_run(
        two_configs / "a2",
        seed=2,
        overrides=ovr(0.1, 2),
        status="failed",
        error="CUDA out of memory\n  at step 12",
    )
    write_run(two_configs / "a3", seed=3, acc=0.98, overrides=ovr(0.1, 3))  # no summary
    assert main([str(two_configs)]) == 0
    markdown = capsys.readouterr().out
    # n counts ok runs only: 0.90, 0.94, 0.98 -> 94.00 ± 4.00; mean_acc only from 2 runs
    row = md_row(markdown, "stability alpha=0.1 (mnist, small_cnn)")
    assert row[1:4] == ["3", "94.00 ± 4.00", "75.00 ± 7.07 (n=2)"]
    section = markdown.split("### Failed / incomplete runs")[1]
    assert "| " in section and "a2 | failed: CUDA out of memory at step 12 |" in section
    assert "a3 | missing metric(s): corruptions/mean_acc, corruptions/mce |" in section
    # a group none of whose runs has a metric (ERM has no stability loss) shows "—", no problem
    write_run(two_configs / "erm", seed=0, acc=0.5, method="erm", overrides=["method=erm"])
    assert main([str(two_configs), "--metrics", "test/acc", "corruptions/mce"]) == 0
    markdown = capsys.readouterr().out
    assert md_row(markdown, "erm alpha=0.1 (mnist, small_cnn)")[1:] == ["1", "50.00", "—"]
    assert "erm |" not in markdown.split("### Failed / incomplete runs")[1]


def test_no_results_and_bad_arguments_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"no results.json found under {tmp_path / 'empty'}" in err and "multirun" in err
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    write_run(tmp_path / "r", seed=0, acc=0.5)
    for argv in (
        ["--metrics", "nothing/*"],
        ["--decimals", "-1"],
        ["--decimals", "x"],
        ["--format", "csv"],
        ["--format", "xml"],
        ["--plots"],
        ["--wandb", "project"],
    ):
        assert main([str(tmp_path / "r"), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("robustlab-report: error:") and len(err.strip().splitlines()) == 1


def test_python_dash_m_entry_point(two_configs: Path, tmp_path: Path) -> None:
    out = tmp_path / "csvonly"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustlab.cli.report",
            str(two_configs),
            "--metrics",
            "test/acc",
            "--format",
            "csv",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| stability alpha=0.1 (mnist, small_cnn) | 2 | 92.00 ± 2.83 |" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["report.csv"]
    assert (
        to_csv(aggregate(group_runs(load_runs([two_configs])), ["test/acc"]))
        == (out / "report.csv").read_text()
    )


def _distortion_records(offset: float) -> list[dict]:
    """jpeg at q = 90, 50 and a pair suite's PR curve; values shifted by ``offset``."""
    jpeg = [
        {"suite": "distortions", "condition": "jpeg", "level": q, "metric": "acc", "value": v}
        for q, v in ((90, 0.9 + offset), (50, 0.7 + offset))
    ]
    pr = [
        {"suite": "near_duplicate", "condition": "jpeg=50", "level": r, "metric": "pr_precision"}
        | {"value": 1.0 - r / 2}
        for r in (0.5, 1.0)
    ]
    single = {"suite": "clean", "condition": "clean", "level": None, "metric": "acc", "value": 1}
    return [*jpeg, *pr, single]


@pytest.fixture
def leveled(tmp_path: Path) -> Path:
    """ERM (2 seeds, jpeg accuracy offsets 0 and +0.1) and stability (1 seed, +0.2)."""
    root = tmp_path / "leveled"
    for name, seed, method, offset in (
        ("e0", 0, "erm", 0.0),
        ("e1", 1, "erm", 0.1),
        ("s0", 0, "stability", 0.2),
    ):
        write_run(
            root / name, seed=seed, acc=0.9, method=method, robustness=_distortion_records(offset)
        )
    return root


def test_comparison_curves_average_over_seeds(leveled: Path) -> None:
    from robustlab.reporting.plots import curves, plottable

    groups = group_runs(load_runs([leveled]))
    assert plottable(groups) == ["distortions/acc", "near_duplicate/pr_precision"]
    jpeg = curves(groups, "distortions", "acc")["jpeg"]
    (erm_label,) = [k for k in jpeg if k.startswith("erm")]
    (stab_label,) = [k for k in jpeg if k.startswith("stability")]
    # ERM at q = 50: seeds 0.7 and 0.8 -> mean 0.75, sample std sqrt(2 * 0.05**2) = 0.070711
    (q50, mean, std, n), (q90, *_) = jpeg[erm_label]
    assert (q50, n, q90) == (50.0, 2, 90.0)
    assert mean == pytest.approx(0.75) and std == pytest.approx(0.0707107, abs=1e-6)
    assert jpeg[stab_label] == [
        (50.0, pytest.approx(0.9), None, 1),
        (90.0, pytest.approx(1.1), None, 1),
    ]


def test_cli_plots_and_wandb_offline(leveled: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "report"
    argv = [str(leveled), "--metrics", "test/acc", "--output", str(out), "--plots", "--wandb", "rl"]
    assert main(argv) == 0
    capsys.readouterr()
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["distortions_acc.png", "near_duplicate_pr_precision.png"]
    report = (out / "report.md").read_text()
    assert "![distortions/acc](plots/distortions_acc.png)" in report
    assert "![near_duplicate/pr_precision](plots/near_duplicate_pr_precision.png)" in report
    for name in plots:  # real PNGs of a sensible size
        data = (out / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    (run,) = (out / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    logged = sorted(str(p.relative_to(media).parent) for p in media.rglob("*.*"))
    assert logged == ["images/plots/distortions", "images/plots/near_duplicate", "table"]
    (table,) = (media / "table").iterdir()
    table = json.loads(table.read_text())
    assert table["columns"] == ["group", "n", "test/acc_mean", "test/acc_std"]
    assert sorted((row[1], row[2]) for row in table["data"]) == [(1, 90.0), (2, 90.0)]
    # a name that cannot be drawn lists what can
    fresh = tmp_path / "fresh"
    argv = [str(leveled), "--output", str(fresh), "--plots", "distortions/acc", "clean/acc"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "clean/acc" in err and "distortions/acc, near_duplicate/pr_precision" in err
    assert not fresh.exists()  # nothing half-written


# --------------------------------------------------------------------------- report defaults


def test_default_columns_leave_out_clean_acc_that_repeats_test_acc(tmp_path: Path, capsys) -> None:
    """clean/acc measured on the whole test set is test/acc under a second name (up to float32
    rounding): the default table shows it once. On a subset it is another number and stays."""
    same = tmp_path / "same"
    for seed, acc in ((0, 0.9), (1, 0.95)):
        summary = {"clean/acc": acc + 3e-8, "clean/ece": 0.05, "pgd_linf/acc@8/255": 0.4}
        write_run(same / f"s{seed}", seed=seed, acc=acc, summary=summary)
    assert main([str(same)]) == 0
    header = md_row(capsys.readouterr().out, "group")
    assert header == ["group", "n", "test/acc (%)", "clean/ece", "pgd_linf/acc@8/255 (%)"]
    subset = tmp_path / "subset"
    write_run(subset / "s0", seed=0, acc=0.9, summary={"clean/acc": 0.93})
    write_run(subset / "s1", seed=1, acc=0.95, summary={"clean/acc": 0.95})
    assert main([str(subset)]) == 0
    assert md_row(capsys.readouterr().out, "group") == [
        "group",
        "n",
        "test/acc (%)",
        "clean/acc (%)",
    ]


# --------------------------------------------------------------------------- evaluation report


@pytest.fixture(scope="module")
def digits_eval():
    """A small CNN trained for a few seconds on the bundled digits, its datamodule, and a
    one-process CPU trainer for the suites."""
    import torch
    import torch.nn.functional as F

    from robustlab.data import build_datamodule
    from robustlab.models import build_classifier

    datamodule = build_datamodule("digits", root=".", seed=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_classifier(
            "small_cnn",
            num_classes=10,
            in_channels=1,
            mean=datamodule.mean,
            std=datamodule.std,
            width=8,
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for images, labels in datamodule.train_dataloader():  # one epoch
            loss = F.cross_entropy(model(images.float() / 255), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.zero_grad(set_to_none=True)
    trainer = suite_trainer()
    return model.eval(), datamodule, trainer


def test_each_suite_is_compared_with_clean_accuracy_on_its_own_images(digits_eval, tmp_path):
    """A suite limited to the first n images is checked against the clean accuracy of those n
    images, not of the whole test set: PGD at ε = 0 is the clean accuracy of its images and at
    ε = 1e-4 fools none of them, so neither may raise "robust above clean" where the first n
    images are easier than the whole set (before the fix it did: 0.3667 vs 0.2869).
    report.md states the image count and the reference next to the numbers."""
    import torch

    from robustlab.reporting.report_card import write_report_card
    from robustlab.results import Results
    from robustlab.suites.runner import run_suites

    model, datamodule, trainer = digits_eval
    images, labels = datamodule.test_arrays()
    with torch.no_grad():
        correct = model(images.float() / 255).argmax(1).eq(labels).double()
    whole = correct.mean().item()
    prefix = correct.cumsum(0) / torch.arange(1, len(correct) + 1)
    n = next(k for k in range(30, len(correct)) if prefix[k - 1] > whole + 0.02)  # easier images
    suites = {"clean": {}, "pgd_linf": {"epsilons": [0, 1e-4], "steps": [1], "max_images": n}}
    run = run_suites(suites, model, datamodule, trainer, seed=0)
    assert run.summary["clean/acc"] == pytest.approx(whole, abs=1e-9)
    assert run.summary["pgd_linf/acc@0"] == pytest.approx(prefix[n - 1].item(), abs=1e-9)
    assert run.summary["pgd_linf/acc@0.0001"] == run.summary["pgd_linf/acc@0"]
    assert run.suites["clean"] == {"images": len(labels), "clean_acc": run.summary["clean/acc"]}
    assert run.suites["pgd_linf"] == {
        "images": n,
        "clean_acc": pytest.approx(prefix[n - 1].item(), abs=1e-9),
    }
    assert run.warnings == []
    results = Results(
        "erm",
        "digits",
        "small_cnn",
        0,
        robustness=run.records,
        summary=run.summary,
        provenance={"suites": run.suites},
    )
    report = write_report_card(results, tmp_path, warnings=run.warnings).read_text()
    clean_line = f"{n:,} test images; clean accuracy on these images {prefix[n - 1]:.4f}"
    assert f"## pgd_linf\n\n{clean_line}\n" in report
    assert f"| pgd_linf/acc@0 | {run.summary['pgd_linf/acc@0']:.4f} | {n} |" in report
    assert f"| clean/acc | {whole:.4f} | {len(labels)} |" in report


def test_report_plot_is_readable_at_19_corruptions_by_5_severities(tmp_path):
    """Small multiples: one panel per corruption holding exactly its five values, the clean
    reference as a dashed line in every panel, and the legend below every panel (no overlap)."""
    import matplotlib.pyplot as plt

    from robustlab.reporting.plots import panel_figure
    from robustlab.reporting.report_card import plot_suite, suite_panels
    from robustlab.results import RobustnessRecord

    names = [f"corruption_{i:02d}" for i in range(19)]
    records = [
        RobustnessRecord("corruptions", c, s, "acc", 0.9 - 0.01 * i - 0.1 * s)
        for s in (5, 3, 1, 4, 2)  # any order
        for i, c in enumerate(names)
    ]
    fig = panel_figure(
        suite_panels(records, "acc"),
        "corruptions",
        "acc",
        title="corruptions: acc",
        reference=0.95,
        reference_label="clean accuracy on the same images",
    )
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == names
    for i, ax in enumerate(panels):
        curve, reference = ax.get_lines()[0], ax.get_lines()[-1]
        assert list(curve.get_xdata()) == [1, 2, 3, 4, 5]
        assert list(curve.get_ydata()) == pytest.approx(
            [0.9 - 0.01 * i - 0.1 * s for s in range(1, 6)]
        )
        assert list(reference.get_ydata()) == [0.95, 0.95] and reference.get_linestyle() == "--"
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert all(box.y1 <= ax.get_tightbbox().y0 for ax in panels)  # under every panel
    assert [t.get_text() for t in legend.get_texts()] == [
        "acc",
        "clean accuracy on the same images",
    ]
    plt.close(fig)
    png = plot_suite("corruptions", records, "acc", tmp_path / "c.png", clean_acc=0.95)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_legend_of_long_group_labels_fits_in_a_one_panel_figure():
    """One condition (e.g. pgd40) and group labels longer than the panel is wide: the figure
    widens so that every legend entry lies inside it."""
    import matplotlib.pyplot as plt

    from robustlab.reporting.plots import panel_figure

    labels = [f"selfsup ssl_weight={w} attack_ssl_weight=0.0 (mnist, small_cnn)" for w in (0, 1)]
    panels = {"pgd40": {label: [(0.1, 0.9, 0.01), (0.2, 0.4, 0.02)] for label in labels}}
    fig = panel_figure(panels, "pgd_linf", "acc", title="pgd_linf: acc")
    fig.canvas.draw()
    (legend,) = fig.legends
    box, width = legend.get_window_extent(), fig.get_figwidth() * fig.dpi
    assert box.x0 >= 0 and box.x1 <= width, (box, width)
    assert [t.get_text() for t in legend.get_texts()] == labels
    plt.close(fig)


def test_autoattack_backend_and_version_are_recorded(digits_eval, tmp_path):
    """The reference AutoAttack runs as a suite on a tiny model; its accuracy is the one the
    backend gives on the same images, and results.json / report.md name backend and version."""
    pytest.importorskip("pyautoattack")
    from importlib.metadata import version

    import torch

    from robustlab.attacks import autoattack
    from robustlab.reporting.report_card import write_report_card
    from robustlab.results import Results, read_results, write_results
    from robustlab.suites.runner import run_suites

    model, datamodule, trainer = digits_eval
    options = {"attack": "autoattack", "backend": "reference", "epsilons": [0.1]}
    run = run_suites({"autoattack": {**options, "max_images": 30}}, model, datamodule, trainer)
    images, labels = datamodule.test_arrays()
    x, y = images[:30].float() / 255, labels[:30]
    adversarial = autoattack(model, x, y, eps=0.1, backend="reference", seed=0)
    with torch.no_grad():
        expected = model(adversarial).argmax(1).eq(y).double().mean().item()
        clean = model(x).argmax(1).eq(y).double().mean().item()
    assert expected < clean  # at ε = 0.1 APGD-CE alone fools all 30: seconds, not minutes
    (record,) = run.records
    assert (record.condition, record.level, record.value) == (
        "autoattack-standard",
        0.1,
        expected,
    )
    implementation = {"backend": "reference", "package": "pyautoattack"}
    implementation["package_version"] = version("pyautoattack")
    described = {"images": 30, "clean_acc": pytest.approx(clean, abs=1e-9), **implementation}
    assert run.suites == {"autoattack": described}
    results = Results(
        "erm",
        "digits",
        "small_cnn",
        0,
        robustness=run.records,
        summary=run.summary,
        provenance={"suites": run.suites},
    )
    assert read_results(write_results(results, tmp_path))["provenance"]["suites"] == run.suites
    report = write_report_card(results, tmp_path).read_text()
    assert f"implementation: reference (pyautoattack {version('pyautoattack')})" in report


def test_missing_autoattack_backend_stops_before_any_suite_runs(digits_eval, monkeypatch):
    import pytorch_lightning as pl

    from robustlab.errors import ConfigError
    from robustlab.suites.runner import run_suites

    model, datamodule, _ = digits_eval
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # not installed
    suites = {"clean": {}, "autoattack": {"attack": "autoattack", "backend": "reference"}}
    with pytest.raises(
        ConfigError,
        match=r'needs the .pyautoattack. package: pip install "robustlab\[autoattack\]"$',
    ):
        run_suites(suites, model, datamodule, trainer)
    assert trainer.state.fn is None  # the clean suite before it never started
    suites["autoattack"].pop("backend")
    with pytest.raises(ConfigError, match="suite.autoattack.backend must name the AutoAttack"):
        run_suites(suites, model, datamodule, trainer)


def test_report_card_skips_the_plot_when_no_condition_has_two_levels(tmp_path):
    """Each condition measured at one level (but at different levels across conditions) has no
    curve to draw: the report keeps its tables and writes no plot (it used to divide by zero)."""
    from robustlab.reporting.report_card import write_report_card
    from robustlab.results import Results, RobustnessRecord

    records = [
        RobustnessRecord("distortions", "jpeg", 50, "acc", 0.81),
        RobustnessRecord("distortions", "thumbnail", 0.5, "acc", 0.74),
    ]
    results = Results(method="erm", data="digits", model="small_cnn", seed=0, robustness=records)
    report = write_report_card(results, tmp_path).read_text()
    assert "| jpeg |" in report and "0.8100" in report and "0.7400" in report
    assert "![" not in report and not (tmp_path / "plots").exists()


@pytest.mark.parametrize(
    "reference",
    sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*/reference.yaml")),
    ids=lambda path: path.parent.name,
)
def test_every_shipped_reference_loads_and_matches_real_config_keys(reference: Path) -> None:
    """Each experiment's reference.yaml parses, and every row's match names config groups that
    exist and keys that the composed config of those groups has: a typo'd key would silently
    match no run, and the paper's number would never appear beside the measured rows."""
    from omegaconf import OmegaConf

    from robustlab.reporting.reference import load_reference
    from tests.helpers import compose_train

    loaded = load_reference(reference)
    assert loaded.source
    for match, values in loaded.rows:
        assert values, match
        groups = [f"{g}={match[g]}" for g in ("method", "data", "model") if g in match]
        cfg = compose_train(*groups)
        for key in set(match) - {"method", "data", "model", "seed"}:
            assert OmegaConf.select(cfg, key, default=KeyError) is not KeyError, (key, groups)


def test_table_states_the_commits_hardware_and_wall_time_of_its_runs(tmp_path: Path) -> None:
    """Under the table: the commit(s) with run counts, the hardware, the wall time per run
    (median, range, total) and the first and last start, from each results.json's provenance;
    failed runs are not counted."""
    facts = [
        ("a" * 40, 600.0, "2026-11-24T10:00:00+0000"),
        ("a" * 40, 1200.0, "2026-11-24T09:00:00+0000"),
        ("b" * 40 + "+dirty", 1500.0, "2026-11-24T11:30:00+0000"),
    ]
    for seed, (commit, wall, started) in enumerate(facts):
        run = write_run(tmp_path / str(seed), seed=seed, acc=0.9)
        doc = json.loads((run / "results.json").read_text())
        doc["provenance"] = {
            "git_commit": commit,
            "device": "cpu (x86_64, 2 cores)",
            "wall_time_s": wall,
            "started": started,
        }
        (run / "results.json").write_text(json.dumps(doc))
    write_run(tmp_path / "9", seed=9, status="failed", error="boom")
    markdown = to_markdown(aggregate(group_runs(load_runs([tmp_path])), ["test/acc"]))
    assert markdown.split("fraction × 100.\n", 1)[1].split("\n\n")[0].splitlines() == [
        "Code: commit aaaaaaa (2), bbbbbbb+dirty (1).",
        "Hardware: cpu (x86_64, 2 cores).",
        "Wall time per run: median 20.0 min (10.0–25.0), 0.92 h in all (3 runs).",
        "Started: 2026-11-24T09:00:00+0000 to 2026-11-24T11:30:00+0000.",
    ]


def test_a_runs_recorded_overrides_beat_a_rewritten_hydra_folder(tmp_path: Path) -> None:
    """Groups are labelled by the overrides each results.json records for its own job; the
    folder's .hydra/overrides.yaml (which a later, refused job may have rewritten) is only the
    fallback for records that predate them."""
    for seed, alpha in enumerate((0.1, 0.3)):
        run = write_run(
            tmp_path / str(seed), seed=seed, acc=0.9, alpha=alpha, overrides=ovr(0.9, 0)
        )
        doc = json.loads((run / "results.json").read_text())
        doc["provenance"] = {"overrides": ovr(alpha, seed)}
        (run / "results.json").write_text(json.dumps(doc))
    labels = [g.label for g in group_runs(load_runs([tmp_path]))]
    assert labels == [
        "stability alpha=0.1 (mnist, small_cnn)",
        "stability alpha=0.3 (mnist, small_cnn)",
    ]


def test_a_marked_level_is_a_dotted_vertical_line_in_every_panel_and_in_the_legend():
    """``--mark pgd_linf/acc=8/255`` (e.g. the training ε): every panel of that plot has a
    dotted vertical line at 8/255 and the legend names it; a level that is not a number is a
    one-line error."""
    import matplotlib.pyplot as plt

    from robustlab.cli.report import parse_marks
    from robustlab.reporting.plots import panel_figure

    assert parse_marks(["pgd_linf/acc=8/255"]) == {"pgd_linf/acc": 8 / 255}
    for spec in ("pgd_linf/acc", "pgd_linf/acc=eps", "pgd_linf/acc=1/0"):
        with pytest.raises(RobustlabError, match="SUITE/METRIC=LEVEL"):
            parse_marks([spec])

    panels = {
        c: {"AT": [(2 / 255, 0.6, 0.01), (8 / 255, 0.4, 0.02), (16 / 255, 0.1, 0.0)]}
        for c in ("pgd20", "pgd100")
    }
    fig = panel_figure(panels, "pgd_linf", "acc", title="t", mark=8 / 255, mark_label="ε_train")
    for ax in [ax for ax in fig.axes if ax.get_visible()]:
        line = ax.get_lines()[-1]
        assert list(line.get_xdata()) == [8 / 255, 8 / 255] and line.get_linestyle() == ":"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["AT", "ε_train"]
    plt.close(fig)


def test_report_cli_draws_a_marked_plot(leveled: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "marked"
    argv = [str(leveled), "--output", str(out), "--plots", "distortions/acc"]
    assert main([*argv, "--mark", "distortions/acc=140/2"]) == 0
    assert (out / "plots" / "distortions_acc.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*argv, "--mark", "clean/acc=0.1"]) == 2
    assert "--mark: clean/acc is not a plot of this report" in capsys.readouterr().err
    every = [str(leveled), "--output", str(tmp_path / "every"), "--plots"]  # all plottable
    assert main([*every, "--mark", "distortions/acc=70"]) == 0
    assert main([str(leveled), "--output", str(out), "--mark", "distortions/acc=70"]) == 2
    assert "--mark draws into plots; add --plots" in capsys.readouterr().err
