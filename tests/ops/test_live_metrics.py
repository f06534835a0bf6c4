"""The real worker and connector metric objects against the ops artefacts.

The metric classes of ``streams.metrics`` and ``connectors.metrics`` are filled
with sample values, linted by ``promtool check metrics``, served over HTTP,
scraped by a real Prometheus (tests/ops/promserver.py) that also loads
deploy/prometheus/alerts.yml, and every dashboard expression must then return
data: a renamed metric or label would leave a panel empty and fail here.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from connectors.metrics import ConnectorMetrics
from streams.metrics import BatchHistogram, WorkerMetrics
from tests.ops.known import CONNECTOR_METRICS, WORKER_METRICS
from tests.ops.promserver import PrometheusServer, free_port, require_promtool, running_prometheus
from tests.ops.test_grafana import ALL_EXPRS

ROOT = Path(__file__).resolve().parents[2]
LABEL_VALUES = {
    "source": "mastodon",
    "brand": "acme",
    "rule": "mentions",
    "severity": "critical",
    "type": "opened",
    "stage": "matcher",
    "reason": "invalid_json",
    "topic": "crisiswatch.posts",
    "partition": "0",
    "result": "success",
    "kind": "keyword",
    "connector": "mastodon",
    "error": "timeout",
    "status": "202",
}
SCRAPE_S = 1.0
WINDOW = "15s"  # replaces $__rate_interval: several scrapes at SCRAPE_S


def _collectors(obj: object) -> list[Any]:
    return [
        _Batch(m) if isinstance(m, BatchHistogram) else m
        for m in vars(obj).values()
        if hasattr(m, "_labelnames") or isinstance(m, BatchHistogram)
    ]


class _Batch:
    """A ``BatchHistogram`` seen as the prometheus-client metrics are above."""

    _type = "histogram"
    _labelnames = ()

    def __init__(self, hist: BatchHistogram) -> None:
        self._name = hist.name
        self.observe = hist.observe


def _exposed_name(metric: Any) -> str:
    return metric._name + ("_total" if metric._type == "counter" else "")


def _tick(worker: WorkerMetrics, connectors: ConnectorMetrics, now_s: float) -> None:
    """One round of plausible activity on every metric (and a second rule for matches)."""
    for metric in _collectors(worker) + _collectors(connectors):
        child = (
            metric.labels(*(LABEL_VALUES[n] for n in metric._labelnames))
            if (metric._labelnames)
            else metric
        )
        if metric._type == "counter":
            child.inc(3)
        elif metric._type == "histogram":
            for seconds in (0.05, 0.2, 1.5):
                child.observe(seconds)
    worker.matches.labels("acme", "product-safety").inc(2)
    worker.open_incidents.labels("acme", "critical").set(1)
    worker.watermark.set(now_s - 60)
    worker.event_time_lag.set(60)
    worker.consumer_lag.labels("crisiswatch.posts", "0").set(12)
    worker.rules_last_reload_success.set(1)
    worker.rules_loaded.labels("keyword").set(3)
    worker.window_posts.labels("acme", "mention-surge").set(30)
    worker.baseline_level.labels("acme", "mention-surge").set(5)
    connectors.newest_event.labels("mastodon").set(now_s - 5)
    connectors.last_success.labels("mastodon").set(now_s - 1)


def test_metric_classes_export_exactly_the_fixed_names_and_labels() -> None:
    registry = CollectorRegistry()
    for metrics, fixed in (
        (WorkerMetrics(registry), WORKER_METRICS),
        (ConnectorMetrics(registry), CONNECTOR_METRICS),
    ):
        exported = {
            _exposed_name(m): (m._type, frozenset(m._labelnames)) for m in _collectors(metrics)
        }
        assert exported == fixed


def test_promtool_accepts_the_exposition() -> None:
    promtool = require_promtool()
    registry = CollectorRegistry()
    _tick(WorkerMetrics(registry), ConnectorMetrics(registry), time.time())
    exposition = generate_latest(registry)
    assert b'crisiswatch_posts_consumed_total{source="mastodon"} 3.0' in exposition
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    problems = (result.stdout + result.stderr).decode().strip()
    # No lint findings at all (a gauge named *_count, for one, would read like a
    # histogram's _count series: hence crisiswatch_window_posts).
    assert problems == "", problems
    assert result.returncode == 0


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A Prometheus that has scraped live worker and connector metrics for a few seconds."""
    require_promtool()
    worker_registry, connector_registry = CollectorRegistry(), CollectorRegistry()
    worker, connectors = WorkerMetrics(worker_registry), ConnectorMetrics(connector_registry)
    ports = free_port(), free_port()
    servers = [
        start_http_server(ports[0], addr="127.0.0.1", registry=worker_registry),
        start_http_server(ports[1], addr="127.0.0.1", registry=connector_registry),
    ]
    jobs = [
        {
            "job_name": "crisiswatch-worker",
            "static_configs": [{"targets": [f"127.0.0.1:{ports[0]}"]}],
        },
        {
            "job_name": "crisiswatch-connectors",
            "static_configs": [{"targets": [f"127.0.0.1:{ports[1]}"]}],
        },
    ]
    try:
        with running_prometheus(
            tmp_path_factory.mktemp("prom-live"),
            scrape_configs=jobs,
            rule_files=[ROOT / "deploy" / "prometheus" / "alerts.yml"],
            scrape_interval_s=SCRAPE_S,
        ) as prom:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # bounded: at most 30 s
                _tick(worker, connectors, time.time())
                time.sleep(0.5)
                ready = prom.query(
                    f"count(count_over_time(crisiswatch_posts_consumed_total[{WINDOW}]) >= 4)"
                )
                if ready:
                    break
            else:
                pytest.fail(f"prometheus never scraped 4 samples: {prom.log_tail()}")
            yield prom
    finally:
        for server in servers:
            if isinstance(server, tuple):
                server[0].shutdown()


def _live(expr: str) -> str:
    expr = expr.replace("$__rate_interval", WINDOW).replace("[1m]", f"[{WINDOW}]")
    return expr.replace("$source", ".*").replace("$brand", ".*")


@pytest.mark.parametrize("expr", ALL_EXPRS)
def test_dashboard_expression_shows_live_data(expr: str, scraped: PrometheusServer) -> None:
    result = scraped.query(_live(expr))
    assert result, f"no data for {expr!r}"


def test_alert_rules_evaluate_on_live_metrics(scraped: PrometheusServer) -> None:
    # The sample data has an open critical incident (fires at once: no `for`) and a
    # steady stream of dead letters (pending: the rule waits 5 minutes); workers and
    # connectors are up, fresh and fast, so nothing else may even be pending.
    deadline = time.monotonic() + 15
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not firing:  # bounded: 15 s
        firing = scraped.query('ALERTS{alertname="CrisiswatchCriticalIncidentOpen"}')
        time.sleep(0.5)
    assert [(a["metric"]["brand"], a["metric"]["alertstate"]) for a in firing] == [
        ("acme", "firing")
    ]
    others = {
        (a["metric"]["alertname"], a["metric"]["alertstate"])
        for a in scraped.query('ALERTS{alertname!="CrisiswatchCriticalIncidentOpen"}')
    }
    assert others == {("CrisiswatchDeadLettersRising", "pending")}
