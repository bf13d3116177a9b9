"""results.json: schema, atomic writes, failures never erase an earlier good record."""

from __future__ import annotations

import json

import torch

from robustlab.results import (
    Results,
    RobustnessRecord,
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
