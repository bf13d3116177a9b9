"""A non-editable install works: the wheel built from this tree holds every module and config,
and, installed in a fresh virtual environment, the apps find ``pkg://robustlab.conf``.

The fresh environment has no pip and no robustlab of its own beyond the wheel; it sees the
test environment's third-party packages through a ``.pth`` path line, which (unlike the
site-packages directory itself) does not run that directory's ``.pth`` files, so the editable
install of robustlab there stays invisible.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from robustlab.cli.evaluate import evaluate
from robustlab.cli.train import train
from robustlab.results import Results, write_results
from tests.helpers import QUICK, compose_train, results_of, run_app

REPO = Path(__file__).resolve().parents[1]
#: Packages shipped from outside robustlab/: (source folder, path inside the wheel).
SHIPPED_TREES = (("robustlab", "robustlab"), ("conf", "robustlab/conf"), ("hydra_plugins", None))
SHIPPED_SUFFIXES = (".py", ".yaml", ".json", ".typed")


def _run(*command: str | Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout[-1500:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"{[str(c) for c in command[:4]]} failed:\n{output}"
    return proc


def _source_copy(destination: Path) -> Path:
    """The working tree's files (tracked and untracked, not ignored) copied to ``destination``,
    so that building leaves no build/ or egg-info behind in the repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def expected_wheel_files(source: Path) -> set[str]:
    """Every module, config and data file of the shipped trees, as wheel paths."""
    expected = set()
    for folder, inside in SHIPPED_TREES:
        for file in (source / folder).rglob("*"):
            shipped = file.suffix in SHIPPED_SUFFIXES and "__pycache__" not in file.parts
            if file.is_file() and shipped:
                relative = file.relative_to(source / folder).as_posix()
                expected.add(f"{inside or folder}/{relative}")
    return expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel built from a copy of this tree, that copy)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout of robustlab")
    root = tmp_path_factory.mktemp("packaging")
    source = _source_copy(root / "src")
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", root / "dist", source, cwd=root,
    )  # fmt: skip
    (built,) = (root / "dist").glob("robustlab-*.whl")
    return built, source


def test_the_wheel_holds_every_module_and_config_of_the_tree(wheel):
    built, source = wheel
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
    expected = expected_wheel_files(source)
    assert "robustlab/conf/train.yaml" in expected and "robustlab/results.schema.json" in expected
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel (pyproject [tool.setuptools] packages?): {missing[:10]}"


def test_a_missing_package_in_pyproject_is_caught(wheel, tmp_path):
    """The check above fails when a package is left out of the explicit package list."""
    _, source = wheel
    broken = tmp_path / "src"
    shutil.copytree(source, broken, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pyproject = broken / "pyproject.toml"
    text = pyproject.read_text()
    assert '    "robustlab.losses",\n' in text
    pyproject.write_text(text.replace('    "robustlab.losses",\n', ""))
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", tmp_path / "dist", broken, cwd=tmp_path,
    )  # fmt: skip
    (built,) = (tmp_path / "dist").glob("robustlab-*.whl")
    with zipfile.ZipFile(built) as archive:
        missing = expected_wheel_files(broken) - set(archive.namelist())
    assert missing and all(name.startswith("robustlab/losses/") for name in missing)


COMPOSE = """
import json, sys
import robustlab, robustlab.conf
from hydra import compose, initialize_config_module
with initialize_config_module(config_module="robustlab.conf", version_base="1.3"):
    cfg = compose(config_name="train", overrides=["experiment=quickstart"])
print(json.dumps({
    "robustlab": robustlab.__file__,
    "conf": robustlab.conf.__file__,
    "editable": sorted(m for m in sys.modules if "editable" in m),
    "data": cfg.data.name, "model": cfg.model.name, "method": cfg.method.name,
    "suite": sorted(cfg.suite),
}))
"""


def test_the_installed_wheel_composes_the_quickstart_config_in_a_fresh_venv(wheel, tmp_path):
    built, _ = wheel
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = _run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
    ).stdout.strip()
    # third-party packages of this environment, as a plain path (its .pth files do not run)
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", built,
        cwd=tmp_path,
    )  # fmt: skip
    found = json.loads(_run(python, "-c", COMPOSE, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert Path(found["robustlab"]).is_relative_to(purelib), found["robustlab"]
    assert Path(found["conf"]).is_relative_to(purelib), found["conf"]
    assert found["editable"] == []
    assert (found["data"], found["model"], found["method"]) == ("digits", "small_cnn", "erm")
    assert "distortions" in found["suite"]
    # the console script of the wheel composes it too (pkg://robustlab.conf), printing the job
    printed = _run(venv / "bin" / "robustlab-train", "--cfg", "job", "experiment=quickstart",
                   cwd=tmp_path).stdout  # fmt: skip
    assert "name: digits" in printed and "perturbation_sequences" in printed


# ------------------------------------------------------------------ the results.json schema
def results_schema() -> dict:
    """The JSON Schema of results.json, as the installed package ships it."""
    return json.loads((resources.files("robustlab") / "results.schema.json").read_text())


def _validate(record: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(results_schema())
    jsonschema.Draft202012Validator(results_schema()).validate(record)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("schema_train")
    train(compose_train(*QUICK), run_dir)
    return run_dir


def test_a_training_and_an_evaluation_record_follow_the_schema(trained_run, tmp_path):
    record = results_of(trained_run)
    assert record["status"] == "ok" and record["robustness"] and record["provenance"]["suites"]
    _validate(record)
    cfg = compose_train(
        f"checkpoint={trained_run}",
        "suite=[clean,pgd_linf]",
        "suite.pgd_linf.max_images=8",
        "suite.pgd_linf.steps=[2]",
        "trainer.enable_progress_bar=false",
        config_name="eval",
    )
    evaluate(cfg, tmp_path / "eval")
    evaluated = results_of(tmp_path / "eval")
    assert {r["suite"] for r in evaluated["robustness"]} == {"clean", "pgd_linf"}
    _validate(evaluated)


def test_failed_records_with_earlier_failures_and_non_finite_numbers_follow_the_schema(
    trained_run, tmp_path
):
    for _ in range(2):  # the second failure lists the first under earlier_failures
        proc = run_app("train", "seed=abc", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
    failed = results_of(tmp_path)
    assert failed["status"] == "failed" and failed["seed"] == "abc"
    assert len(failed["earlier_failures"]) == 1
    _validate(failed)
    # an ok record replaced in place keeps the schema with NaN / inf turned into null
    record = results_of(trained_run)
    results = Results(
        **{k: record[k] for k in ("method", "data", "model", "seed", "checkpoint", "config")},
        metrics={"test/acc": float("nan"), "train/loss": float("inf")},
        provenance=record["provenance"],
    )
    write_results(results, tmp_path / "nan")
    written = results_of(tmp_path / "nan")
    assert written["metrics"] == {"test/acc": None, "train/loss": None}
    _validate(written)
    # and it is strict: an unknown status, an error on an ok record, an undocumented field
    jsonschema = pytest.importorskip("jsonschema")
    for broken in (
        {**written, "status": "done"},
        {**written, "error": "x"},
        {**failed, "extra": 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            _validate(broken)
