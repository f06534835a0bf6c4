"""The worker's Prometheus metrics, registered on an injected registry.

Names follow Prometheus conventions (``crisiswatch_*``, base units, ``_total``
counters); brand is a label, post ids never are.  Dashboards and alert rules in
``deploy/`` depend on these names.
"""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BatchHistogram(Collector):
    """A label-less histogram fed a batch of values at a time (one per post).

    prometheus-client's ``Histogram.observe`` takes two locks and walks the bucket
    bounds in Python, about 1 µs a call: at tens of thousands of posts a second
    that was a few percent of the worker's CPU.  This keeps plain per-bucket
    counts, found by ``bisect``, and exposes them in the same form (``_bucket``
    with ``le``, ``_count``, ``_sum``, ``_created``).  Observed on one thread (the
    event loop); ``collect`` may run on another (the scrape, ``streams.web``): it
    copies the counts in one step, and ``_sum`` may be one batch behind them.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        """Per bucket, not cumulative; the last is above every bound (+Inf)."""
        self.sum = 0.0
        self.created = time.time()
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_all(self, values: Iterable[float]) -> None:
        counts, bounds = self.counts, self.bounds
        total = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # le: a value equal to a bound is in it
            total += value
        self.sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts, total = list(self.counts), self.sum
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total, timestamp=None)
        family.add_sample(self.name + "_created", {}, self.created)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


def _le(bound: float) -> str:
    """The ``le`` label as prometheus-client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)


class WorkerMetrics:
    """Every metric the worker exports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.posts_consumed = Counter(
            "crisiswatch_posts_consumed_total",
            "Posts read from the posts topic and decoded, by source.",
            ["source"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "crisiswatch_dead_letters_total",
            "Inputs routed to the dead-letter topic, by stage and reason.",
            ["stage", "reason"],
            registry=registry,
        )
        self.matches = Counter(
            "crisiswatch_matches_total",
            "Posts matched, by brand and rule (rule='mentions' for brand mentions).",
            ["brand", "rule"],
            registry=registry,
        )
        self.open_incidents = Gauge(
            "crisiswatch_open_incidents",
            "Incidents open now, by brand and severity.",
            ["brand", "severity"],
            registry=registry,
        )
        self.incident_events = Counter(
            "crisiswatch_incident_events_total",
            "Incident events sent to the alert topic, by brand and type.",
            ["brand", "type"],
            registry=registry,
        )
        self.alert_latency = Histogram(
            "crisiswatch_alert_latency_seconds",
            "Wall time from the ingest of the newest post in an alert's window to the alert sent.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._consumed_children: dict[str, Any] = {}
        self._match_children: dict[tuple[str, str], Any] = {}
        self._gauge_children: dict[tuple[Gauge, str, str], Any] = {}
        self.processing_latency = BatchHistogram(
            "crisiswatch_processing_latency_seconds",
            "Wall time from a post's ingest to the worker having matched it.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.watermark = Gauge(
            "crisiswatch_watermark_timestamp_seconds",
            "The detector's event-time watermark.",
            registry=registry,
        )
        self.event_time_lag = Gauge(
            "crisiswatch_event_time_lag_seconds",
            "Wall clock minus the detector's watermark.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "crisiswatch_consumer_lag_messages",
            "Messages not yet consumed, by topic and partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.late_hits = Counter(
            "crisiswatch_late_hits_total",
            "Matches that arrived after their window was closed, by brand.",
            ["brand"],
            registry=registry,
        )
        self.duplicate_hits = Counter(
            "crisiswatch_duplicate_hits_total",
            "Matches of a post id already counted, by brand.",
            ["brand"],
            registry=registry,
        )
        self.log_lines_dropped = Counter(
            "crisiswatch_log_lines_dropped_total",
            "Log lines dropped because the log's output was blocked and its queue full.",
            registry=registry,
        )
        self.rule_reloads = Counter(
            "crisiswatch_rule_reloads_total",
            "Rule reloads attempted, by result (success or failure).",
            ["result"],
            registry=registry,
        )
        self.rules_last_reload_success = Gauge(
            "crisiswatch_rules_last_reload_success",
            "1 if the last rule (re)load succeeded, 0 if it failed and old rules are kept.",
            registry=registry,
        )
        self.rules_loaded = Gauge(
            "crisiswatch_rules_loaded",
            "Rules in force, by kind (brand, keyword, velocity).",
            ["kind"],
            registry=registry,
        )
        self.window_posts = Gauge(
            "crisiswatch_window_posts",
            "Posts in the current window of a velocity rule.",
            ["brand", "rule"],
            registry=registry,
        )
        self.baseline_level = Gauge(
            "crisiswatch_baseline_level",
            "Baseline level (posts per window) of a velocity rule.",
            ["brand", "rule"],
            registry=registry,
        )

    def posts_consumed_by(self, source: str) -> Any:
        """``posts_consumed.labels(source)``, looked up once (``labels`` is slow)."""
        child = self._consumed_children.get(source)
        if child is None:
            child = self._consumed_children[source] = self.posts_consumed.labels(source)
        return child

    def matches_by(self, brand_rule: tuple[str, str]) -> Any:
        """``matches.labels(brand, rule)``, looked up once."""
        child = self._match_children.get(brand_rule)
        if child is None:
            child = self._match_children[brand_rule] = self.matches.labels(*brand_rule)
        return child

    def gauge(self, metric: Gauge, brand: str, label: str) -> Any:
        """``metric.labels(brand, label)`` of a per-brand gauge, looked up once."""
        key = (metric, brand, label)
        child = self._gauge_children.get(key)
        if child is None:
            child = self._gauge_children[key] = metric.labels(brand, label)
        return child

    def drop_brand_gauges(self) -> None:
        """Remove every per-brand gauge series set through ``gauge``: after a rebalance
        the brands' owners set theirs, and a series kept here would go on reporting the
        last value this worker saw (an incident open long after its new owner resolved
        it, under the dashboards' ``max by (brand, severity)``)."""
        children, self._gauge_children = self._gauge_children, {}
        for metric, brand, label in children:
            with contextlib.suppress(KeyError):  # removed already
                metric.remove(brand, label)
