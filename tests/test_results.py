"""results.json: schema, atomic writes, failures never erase an earlier good record."""

from __future__ import annotations

import json

import pytest
import torch

from robustlab.results import (
    Results,
    RobustnessRecord,
    format_level,
    provenance,
    read_results,
    scalar_metrics,
    write_results,
)


def _results(**kwargs) -> Results:
    return Results(method="erm", data="digits", model="small_cnn", seed=0, **kwargs)


def test_schema_and_values(tmp_path):
    results = _results(
        metrics={"test/acc": torch.tensor(0.75)},
        robustness=[RobustnessRecord("pgd_linf", "pgd20", 8 / 255, "acc", 0.25)],
        summary={"pgd_linf/acc@8/255": 0.25},
        provenance=provenance(0.0),
    )
    path = write_results(results, tmp_path)
    record = json.loads(path.read_text())
    assert set(record) == {
        "status",
        "method",
        "data",
        "model",
        "seed",
        "metrics",
        "robustness",
        "summary",
        "checkpoint",
        "config",
        "provenance",
    }
    assert record["status"] == "ok" and record["metrics"]["test/acc"] == 0.75
    assert record["robustness"][0] == {
        "suite": "pgd_linf",
        "condition": "pgd20",
        "level": 8 / 255,
        "metric": "acc",
        "value": 0.25,
    }
    assert "torch" in record["provenance"]["versions"]
    assert not list(tmp_path.glob(".results.json.*")), "temporary file left behind"


def test_failure_keeps_previous_good_record(tmp_path):
    write_results(_results(metrics={"test/acc": 0.9}), tmp_path)
    write_results(_results(status="failed", error="ValueError: boom"), tmp_path)
    assert read_results(tmp_path)["status"] == "failed"
    assert read_results(tmp_path)["error"] == "ValueError: boom"
    previous = json.loads((tmp_path / "results.previous.json").read_text())
    assert previous["metrics"]["test/acc"] == 0.9


def test_scalar_metrics_drops_non_scalars_and_nan():
    metrics = scalar_metrics(
        {"a": torch.tensor(0.5), "b": torch.ones(3), "c": 2, "d": float("nan")}
    )
    assert metrics == {"a": 0.5, "c": 2, "d": None}


def test_non_finite_numbers_become_null_and_the_file_stays_valid_json(tmp_path):
    """NaN and ±inf anywhere (metrics, summary, robustness values, config) are written as
    null: the file is strict JSON (``allow_nan=False`` readers) and nothing else is lost."""
    nan, inf = float("nan"), float("inf")
    results = _results(
        metrics={"test/acc": 0.5, "train/loss": torch.tensor(inf), "val/loss": nan},
        robustness=[
            RobustnessRecord("clean", "none", None, "acc", 0.5),
            RobustnessRecord("pgd_linf", "pgd20", 8 / 255, "loss", -inf),
        ],
        summary={"pgd_linf/loss@8/255": nan, "clean/acc": 0.5},
        config={"method": {"alpha": inf, "betas": [0.9, nan]}},
    )
    path = write_results(results, tmp_path)
    record = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"wrote {c}"))
    assert record["metrics"] == {"test/acc": 0.5, "train/loss": None, "val/loss": None}
    assert [r["value"] for r in record["robustness"]] == [0.5, None]
    assert record["summary"] == {"pgd_linf/loss@8/255": None, "clean/acc": 0.5}
    assert record["config"] == {"method": {"alpha": None, "betas": [0.9, None]}}


def test_repeated_failures_keep_every_earlier_record(tmp_path):
    """ok, then two failures: results.json holds the latest failure and names the earlier one;
    the ok record stays in results.previous.json; every file is valid JSON."""
    write_results(_results(metrics={"test/acc": 0.9}), tmp_path)
    write_results(_results(status="failed", error="RuntimeError: first"), tmp_path)
    write_results(_results(status="failed", error="RuntimeError: second"), tmp_path)
    record = read_results(tmp_path)
    assert record["status"] == "failed" and record["error"] == "RuntimeError: second"
    assert [f["error"] for f in record["earlier_failures"]] == ["RuntimeError: first"]
    write_results(_results(status="failed", error="RuntimeError: third"), tmp_path)
    record = read_results(tmp_path)
    assert [f["error"] for f in record["earlier_failures"]] == [
        "RuntimeError: first",
        "RuntimeError: second",
    ]
    previous = json.loads((tmp_path / "results.previous.json").read_text())
    assert previous["status"] == "ok" and previous["metrics"]["test/acc"] == 0.9


def test_failure_over_an_unreadable_record_keeps_its_bytes(tmp_path):
    (tmp_path / "results.json").write_text('{"status": "ok", "metr')
    write_results(_results(status="failed", error="RuntimeError: boom"), tmp_path)
    assert read_results(tmp_path)["error"] == "RuntimeError: boom"
    assert (tmp_path / "results.unreadable.json").read_text() == '{"status": "ok", "metr'


def test_a_later_success_replaces_the_failure_record(tmp_path):
    write_results(_results(status="failed", error="RuntimeError: interrupted"), tmp_path)
    write_results(_results(metrics={"test/acc": 0.8}), tmp_path)
    record = read_results(tmp_path)
    assert record["status"] == "ok" and "error" not in record
    assert [f["error"] for f in record["earlier_failures"]] == ["RuntimeError: interrupted"]


def test_each_earlier_failure_keeps_its_error_start_and_command(tmp_path):
    started = {"started": "2026-01-01T00:00:00", "command": "robustlab-train seed=1"}
    write_results(_results(status="failed", error="E: one", provenance=started), tmp_path)
    write_results(_results(status="failed", error="E: two"), tmp_path)  # no provenance
    write_results(_results(status="failed", error="E: three"), tmp_path)
    record = read_results(tmp_path / "results.json")  # a file path works as well as the folder
    assert record["error"] == "E: three"
    assert record["earlier_failures"] == [
        {"error": "E: one", "started": "2026-01-01T00:00:00", "command": "robustlab-train seed=1"},
        {"error": "E: two", "started": None, "command": None},
    ]


def test_a_condition_without_a_level_has_an_empty_label():
    assert format_level(None) == ""
    assert format_level(8 / 255) == "8/255"  # a level is still written out
    assert format_level(200 / 255) == "200/255"  # k/255 also for large k


def test_git_commit_names_the_first_repository_and_marks_uncommitted_changes(tmp_path):
    import subprocess

    from robustlab.results import _git_commit

    repo, elsewhere = tmp_path / "repo", tmp_path / "not_a_repo"
    repo.mkdir(), elsewhere.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(head) == 40
    assert _git_commit([elsewhere, repo]) == head  # a folder outside git is skipped
    assert _git_commit([tmp_path / "missing", repo]) == head  # so is one that does not exist
    assert _git_commit([elsewhere]) is None
    (repo / "a.txt").write_text("2")
    assert _git_commit([repo]) == head + "+dirty"


def test_provenance_records_the_run_it_was_called_for():
    import os
    import platform
    import socket
    import sys
    import time

    started = time.time() - 10
    record = provenance(started, world_size=2)
    assert record["world_size"] == 2
    assert record["command"] == " ".join(sys.argv)
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["versions"]["python"] == platform.python_version()
    assert record["started_unix"] == round(started, 3)
    assert record["started"] == time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))
    assert 10 <= record["wall_time_s"] < 120
    if torch.cuda.is_available():
        assert record["device"] == torch.cuda.get_device_name(0)
    else:
        assert record["device"].startswith("cpu (")
        assert record["device"].endswith(f", {os.cpu_count()} cores)")


def test_a_success_over_a_success_keeps_no_previous_record_and_makes_missing_folders(tmp_path):
    run_dir = tmp_path / "multirun" / "3"
    write_results(_results(metrics={"test/acc": 0.5}), run_dir)
    write_results(_results(metrics={"test/acc": 0.6}), run_dir)
    assert read_results(run_dir)["metrics"] == {"test/acc": 0.6}
    assert not (run_dir / "results.previous.json").exists()


def test_json_safe_turns_scalar_tensors_and_booleans_into_numbers():
    from robustlab.results import json_safe

    safe = json_safe({"a": torch.tensor(0.5), "b": [torch.tensor(float("inf"))], "c": True})
    assert safe == {"a": 0.5, "b": [None], "c": True}
    big = torch.ones(2)
    assert json_safe({"t": big})["t"] is big  # not a scalar: left for the writer
    assert scalar_metrics({"flag": torch.tensor(True)}) == {"flag": 1}


def test_provenance_lists_every_installed_package_and_the_commit_of_package_or_cwd(tmp_path):
    import contextlib
    import os
    import platform
    import subprocess
    from importlib import metadata
    from pathlib import Path

    import robustlab.results as results_module
    from robustlab.results import PACKAGES, _git_commit

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], cwd=repo, check=True)
    repo_head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    record = provenance(0.0, cwd=repo)
    # the package's own checkout wins; a copy outside git falls back to the working folder
    package_dir = Path(results_module.__file__).resolve().parent
    assert record["git_commit"] == (_git_commit([package_dir]) or repo_head)
    installed = {}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            installed[package] = metadata.version(package)
    assert {"robustlab", "torch"} <= set(installed)
    assert record["versions"] == {"python": platform.python_version(), **installed}
    if not torch.cuda.is_available():
        cpu = platform.processor() or platform.machine()
        assert record["device"] == f"cpu ({cpu}, {os.cpu_count()} cores)"


def test_json_is_written_through_a_hidden_temporary_file_beside_the_target(tmp_path):
    import os
    from pathlib import Path

    from robustlab.results import write_json_atomic

    class FolderListing:
        """Serialised through ``default=str``: lists the folder at the moment of writing."""

        def __str__(self) -> str:
            return ",".join(sorted(os.listdir(tmp_path / "out")))

    path = tmp_path / "out" / "results.json"
    payload = {"during": FolderListing(), "path": Path("/a/b"), "x": [1, 2.5]}
    write_json_atomic(path, payload)
    text = path.read_text()
    written = json.loads(text)
    # while writing, the only file in the (created) folder is ".results.json.<random>"
    assert written["during"].startswith(".results.json.") and "," not in written["during"]
    assert written["path"] == "/a/b"  # objects JSON cannot hold are written as str()
    assert text == json.dumps(written, indent=2) + "\n"  # indented, one final newline
    assert os.listdir(path.parent) == ["results.json"]


def test_a_failed_json_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    from robustlab.results import write_json_atomic

    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "ok"})
    with pytest.raises(ValueError):  # strict JSON: NaN is refused, not written as NaN
        write_json_atomic(path, {"value": float("nan")})
    assert json.loads(path.read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # temp file removed


def test_provenance_skips_missing_packages_rounds_wall_time_and_ignores_the_process_cwd(
    tmp_path, monkeypatch
):
    import subprocess
    from pathlib import Path

    import robustlab.results as results_module
    from robustlab.results import _git_commit

    def repo(name: str) -> tuple[Path, str]:
        path = tmp_path / name
        path.mkdir()
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        subprocess.run([*git, "init", "-q"], cwd=path, check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", name], cwd=path, check=True)
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        return path, head

    (given, given_head), (process_cwd, _) = repo("given"), repo("elsewhere")
    monkeypatch.chdir(process_cwd)  # the process's folder is never asked
    package = _git_commit([Path(results_module.__file__).resolve().parent])
    assert provenance(0.0)["git_commit"] == package
    assert provenance(0.0, cwd=given)["git_commit"] == (package or given_head)
    monkeypatch.setattr(results_module, "PACKAGES", ("robustlab", "no-such-dist-xyz", "torch"))
    monkeypatch.setattr(results_module.time, "time", lambda: 1000.0 + 12.34567)
    record = provenance(1000.0)
    assert set(record["versions"]) == {"python", "robustlab", "torch"}
    assert record["wall_time_s"] == 12.346 and record["world_size"] == 1
