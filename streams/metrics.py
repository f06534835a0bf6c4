"""The worker's Prometheus metrics, registered on an injected registry.

Names follow Prometheus conventions (``crisiswatch_*``, base units, ``_total``
counters); brand is a label, post ids never are.  Dashboards and alert rules in
``deploy/`` depend on these names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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
        self.processing_latency = Histogram(
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
