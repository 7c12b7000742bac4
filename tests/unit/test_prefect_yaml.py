"""Every deployment in prefect.yaml points at a flow that imports and accepts its parameters."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[2]


def test_every_entrypoint_imports_and_takes_its_parameters() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = spec["deployments"]
    assert deployments, "prefect.yaml declares no deployment"
    for deployment in deployments:
        path, _, attr = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attr)
        assert isinstance(flow, Flow), deployment["name"]
        accepted = set(flow.parameters.properties)
        assert set(deployment.get("parameters", {})) <= accepted, deployment["name"]


def test_batch_deployments_daily_at_nine_utc_and_from_a_csv() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    by_name = {d["name"]: d for d in spec["deployments"]}
    daily = by_name["batch"]
    assert daily["schedules"] == [{"cron": "0 9 * * *", "timezone": "UTC"}]
    assert {"character_type", "count", "group"} <= set(daily["parameters"])
    assert "seed" not in daily["parameters"]  # the run's date: a new batch each day
    csv = by_name["csv-batch"]
    assert csv["entrypoint"] == daily["entrypoint"] == "flows/batch.py:batch_flow"
    assert "csv" not in csv["parameters"]  # given per run
