"""robustlab-report --baseline: error reduction (err_b − err) / err_b, err = 1 − acc, computed
on group means, on results.json files written by robustlab.results' writer."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from robustlab.cli.report import main
from robustlab.reporting.table import error_reduction
from robustlab.results import Results, RobustnessRecord, write_results

ERM = "erm (digits, small_cnn)"
ICN = "introspective (digits, small_cnn)"
WINN = "winn (digits, small_cnn)"


def write_run(
    folder: Path, method: str, seed: int, acc: float, fgsm: float, mce: float, source: str = ""
) -> None:
    folder.mkdir(parents=True)
    suite = {"fgsm": {"attack": "fgsm", "source": source or None}}
    record = RobustnessRecord("fgsm", "fgsm", 0.125, "acc", fgsm)
    results = Results(
        method=method,
        data="digits",
        model="small_cnn",
        seed=seed,
        metrics={"test/acc": acc},
        robustness=[record],
        summary={"fgsm/acc@0.125": fgsm, "corruptions/mce": mce},
        config={
            "seed": seed,
            "method": {"name": method},
            "data": {"name": "digits"},
            "suite": suite,
        },
    )
    write_results(results, folder)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """erm: test/acc 0.90, 0.94 (mean 0.92, err 0.08), FGSM 0.20, 0.30 (mean 0.25, err 0.75);
    introspective: 0.95, 0.97 (err 0.04), FGSM 0.55, 0.65 (err 0.40); winn: 0.88, FGSM 1.0."""
    root = tmp_path / "runs"
    write_run(root / "erm0", "erm", 0, 0.90, 0.20, 1.0)
    write_run(root / "erm1", "erm", 1, 0.94, 0.30, 1.2)
    # FGSM crafted on the erm run of the same seed ("referee" transfer): a path per seed
    write_run(root / "icn0", "introspective", 0, 0.95, 0.55, 0.8, str(root / "erm0"))
    write_run(root / "icn1", "introspective", 1, 0.97, 0.65, 0.9, str(root / "erm1"))
    write_run(root / "winn0", "winn", 0, 0.88, 1.0, 0.7)
    return root


def cells(markdown: str, label: str) -> list[str]:
    for line in markdown.splitlines():
        row = [c.strip() for c in line.strip("|").split("|")]
        if row[0] == label:
            return row
    raise AssertionError(f"no row {label!r} in\n{markdown}")


def test_error_reduction_columns_on_group_means(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    args = [str(runs), "--metrics", "test/acc", "fgsm/acc@0.125", "corruptions/mce"]
    assert main([*args, "--baseline", ERM, "--output", str(out)]) == 0
    markdown = capsys.readouterr().out
    assert cells(markdown, "group") == [
        "group",
        "n",
        "test/acc (%)",
        "test/acc err. red. (%)",
        "fgsm/acc@0.125 (%)",
        "fgsm/acc@0.125 err. red. (%)",
        "corruptions/mce",  # not an accuracy: no error-reduction column
    ]
    # test/acc: (0.08 - 0.04) / 0.08 = 50 %; FGSM: (0.75 - 0.40) / 0.75 = 46.67 %
    assert cells(markdown, ICN)[1] == "2"  # the per-seed transfer sources split no group
    assert cells(markdown, ICN)[3] == "50.00" and cells(markdown, ICN)[5] == "46.67"
    # the baseline row: 0; winn makes more clean errors: (0.08 - 0.12) / 0.08 = -50 %;
    # FGSM: no error left, (0.75 - 0) / 0.75 = 100 %
    assert cells(markdown, ERM)[3] == "0.00" and cells(markdown, ERM)[5] == "0.00"
    assert cells(markdown, WINN)[3] == "-50.00" and cells(markdown, WINN)[5] == "100.00"
    assert f"error reduction vs the baseline group '{ERM}'" in markdown
    assert "on the group means" in markdown
    rows = {r["group"]: r for r in csv.DictReader(io.StringIO((out / "report.csv").read_text()))}
    assert float(rows[ICN]["fgsm/acc@0.125_err_red"]) == pytest.approx(100 * 0.35 / 0.75)
    assert float(rows[WINN]["test/acc_err_red"]) == pytest.approx(-50.0)
    assert "corruptions/mce_err_red" not in rows[ICN]

    # The same group picked by its config values; fractions with --no-percent.
    assert main([*args, "--baseline", "method=erm", "--no-percent", "--decimals", "4"]) == 0
    assert cells(capsys.readouterr().out, ICN)[2:6] == [
        "0.9600 ± 0.0141",
        "0.5000",
        "0.6000 ± 0.0707",
        "0.4667",
    ]


def test_reduction_formula_and_another_baseline(runs: Path, capsys) -> None:
    assert error_reduction(0.96, 0.92) == pytest.approx(0.5)
    assert error_reduction(0.92, 0.92) == 0.0
    assert error_reduction(0.5, 1.0) is None  # a baseline without errors leaves nothing to reduce
    assert main([str(runs), "--metrics", "test/acc", "fgsm/*", "--baseline", WINN]) == 0
    markdown = capsys.readouterr().out
    # baseline winn (err 0.12): erm err 0.08 -> (0.12 - 0.08) / 0.12 = 33.33 %;
    # winn's FGSM accuracy is 1.0: no baseline error, so no reduction ("—")
    assert cells(markdown, ERM)[3] == "33.33" and cells(markdown, ERM)[5] == "—"
    assert cells(markdown, WINN)[3] == "0.00" and cells(markdown, WINN)[5] == "—"


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ("sgd (digits, small_cnn)", "--baseline 'sgd (digits, small_cnn)' is not a group"),
        ("method=sgd", "--baseline 'method=sgd' is not a group"),
        ("data=digits", "--baseline 'data=digits' matches 3 groups"),
    ],
)
def test_a_baseline_that_is_not_one_group_exits_2(runs: Path, capsys, baseline, message) -> None:
    assert main([str(runs), "--baseline", baseline]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert message in line
