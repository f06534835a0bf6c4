"""Grafana provisioning and dashboards: structure, variables, and every PromQL
expression evaluated by a real Prometheus (``promtool query instant``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.known import METRICS, metric_names
from tests.ops.promserver import PrometheusServer, prometheus_server, require_promtool

__all__ = ["prometheus_server"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

# Grafana's template variables, replaced the way Grafana does before the query
# reaches Prometheus ("All" of a multi-value variable becomes its allValue).
_SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$source": ".*",
    "$brand": ".*",
}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target and annotation query."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} '{panel['title']}' {target['refId']}", target["expr"]
    for ann in dashboard["annotations"]["list"]:
        if "expr" in ann:
            yield f"annotation '{ann['name']}'", ann["expr"]


def _substitute(expr: str) -> str:
    for var in sorted(_SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, _SUBSTITUTIONS[var])
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


ALL_EXPRS = [
    pytest.param(expr, id=f"{path.stem}: {where}")
    for path in DASHBOARDS
    for where, expr in _exprs(_load(path))
]


def test_both_dashboards_exist() -> None:
    assert [p.name for p in DASHBOARDS] == ["brand-watch.json", "pipeline-health.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dash = _load(path)
    assert dash["uid"].startswith("crisiswatch-")
    assert dash["title"].startswith("crisiswatch / ")
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    for panel in dash["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], f"{path.name}: panel '{panel['title']}' has no query"
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables_are_defined_and_used(path: Path) -> None:
    dash = _load(path)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    text = json.dumps([dash["panels"], dash["annotations"]])
    used = set(re.findall(r"\$(brand|source)\b", text))
    assert used == set(variables), f"{path.name}: used {used}, defined {set(variables)}"
    for name, var in variables.items():
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".*"
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"])
        assert match, var["query"]
        assert match.group(1) in METRICS and match.group(2) == name
        assert name in METRICS[match.group(1)][1]


def test_pipeline_dashboard_has_source_and_brand_and_brand_dashboard_has_brand() -> None:
    names = {p.name: {v["name"] for v in _load(p)["templating"]["list"]} for p in DASHBOARDS}
    assert names["pipeline-health.json"] == {"brand", "source"}
    assert names["brand-watch.json"] == {"brand"}


def test_pipeline_dashboard_covers_the_required_views() -> None:
    exprs = " ".join(e for _, e in _exprs(_load(GRAFANA / "dashboards" / "pipeline-health.json")))
    for metric in (
        "crisiswatch_posts_consumed_total",
        "crisiswatch_matches_total",
        "crisiswatch_dead_letters_total",
        "crisiswatch_consumer_lag_messages",
        "crisiswatch_processing_latency_seconds_bucket",
        "crisiswatch_alert_latency_seconds_bucket",
        "crisiswatch_connector_newest_event_timestamp_seconds",
    ):
        assert metric in exprs, metric
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs


def test_brand_dashboard_has_baseline_incidents_and_event_annotations() -> None:
    dash = _load(GRAFANA / "dashboards" / "brand-watch.json")
    exprs = " ".join(e for _, e in _exprs(dash))
    assert "crisiswatch_window_posts" in exprs and "crisiswatch_baseline_level" in exprs
    assert "max by (brand, severity) (crisiswatch_open_incidents" in exprs
    (ann,) = [a for a in dash["annotations"]["list"] if "expr" in a]
    assert "crisiswatch_incident_events_total" in ann["expr"]
    assert set(ann["tagKeys"].split(",")) == {"brand", "type"}


@pytest.mark.parametrize("expr", ALL_EXPRS)
def test_expression_uses_known_metrics(expr: str) -> None:
    used = metric_names(expr)
    if not expr.startswith("count(up{"):
        assert used, f"no crisiswatch metric in {expr!r}"
    assert used <= set(METRICS), f"unknown metrics {sorted(used - set(METRICS))} in {expr!r}"


@pytest.mark.parametrize("expr", ALL_EXPRS)
def test_expression_evaluates_in_prometheus(expr: str, prometheus_server: PrometheusServer) -> None:
    require_promtool()
    result = prometheus_server.promtool_query(_substitute(expr))
    assert result.returncode == 0, f"{expr!r}: {result.stderr.strip()}"


def test_a_broken_expression_is_caught(prometheus_server: PrometheusServer) -> None:
    require_promtool()
    result = prometheus_server.promtool_query("sum by (brand (crisiswatch_matches_total)")
    assert result.returncode != 0
    assert "parse error" in result.stderr


def test_provisioning_points_at_the_mounted_dashboards() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "crisiswatch.yml").read_text())
    (provider,) = prov["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
