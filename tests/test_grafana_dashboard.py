"""The Grafana dashboard (deploy/grafana/sae-router.json) queries only metrics and labels the gateway exports.

Metric and label names are read from a fresh :class:`service.core.metrics.Metrics` registry, so renaming a
metric or a label without updating the dashboard fails here instead of leaving an empty panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.core.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
METRIC = re.compile(r"\b(sae_router_[a-z_]+)")
SELECTOR = re.compile(r"(sae_router_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\bby \(([^)]*)\) \(rate\((sae_router_[a-z_]+)")


def exported() -> dict[str, set[str]]:
    """Every series name the gateway exports -> its label names (plus ``le`` for histogram buckets)."""
    metrics = Metrics.create()
    labels = {c._name: set(c._labelnames) for c in vars(metrics).values() if hasattr(c, "_labelnames")}
    out: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in SUFFIXES[family.type]:
            out[family.name + suffix] = labels[family.name] | ({"le"} if suffix == "_bucket" else set())
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "sae-router.json").read_text())
    return data


def test_every_query_names_an_exported_series_and_its_labels(dashboard: dict[str, Any]) -> None:
    series = exported()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    for expr in exprs:
        for name in METRIC.findall(expr):
            assert name in series, f"{name} in {expr!r} is not exported; exported: {sorted(series)}"
        for name, selector in SELECTOR.findall(expr):
            used = set(MATCHER.findall(selector))
            assert used and used <= series[name], (expr, used - series[name])
        for grouping, name in GROUPING.findall(expr):
            used = {g.strip() for g in grouping.split(",")}
            assert used <= series[name], (expr, used - series[name])


def test_panels_use_the_datasource_variable_and_have_unique_ids(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "sae-router"
    (var,) = dashboard["templating"]["list"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert p["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def test_provisioning_files_point_at_the_dashboard_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "sae-router.yaml").read_text())
    (p,) = provider["providers"]
    assert p["type"] == "file" and p["options"]["path"].endswith("/sae-router")
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
