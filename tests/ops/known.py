"""The metric and setting names fixed for crisiswatch (from the operations brief).

Dashboards, alerts, compose and docs are checked against these lists, so a typo
in a metric or variable name fails a test instead of drawing an empty panel.
"""

from __future__ import annotations

import re

# metric name -> (type, label names)
WORKER_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "crisiswatch_posts_consumed_total": ("counter", frozenset({"source"})),
    "crisiswatch_dead_letters_total": ("counter", frozenset({"stage", "reason"})),
    "crisiswatch_matches_total": ("counter", frozenset({"brand", "rule"})),
    "crisiswatch_open_incidents": ("gauge", frozenset({"brand", "severity"})),
    "crisiswatch_incident_events_total": ("counter", frozenset({"brand", "type"})),
    "crisiswatch_alert_latency_seconds": ("histogram", frozenset()),
    "crisiswatch_processing_latency_seconds": ("histogram", frozenset()),
    "crisiswatch_watermark_timestamp_seconds": ("gauge", frozenset()),
    "crisiswatch_event_time_lag_seconds": ("gauge", frozenset()),
    "crisiswatch_consumer_lag_messages": ("gauge", frozenset({"topic", "partition"})),
    "crisiswatch_late_hits_total": ("counter", frozenset({"brand"})),
    "crisiswatch_duplicate_hits_total": ("counter", frozenset({"brand"})),
    "crisiswatch_log_lines_dropped_total": ("counter", frozenset()),
    "crisiswatch_rule_reloads_total": ("counter", frozenset({"result"})),
    "crisiswatch_rules_last_reload_success": ("gauge", frozenset()),
    "crisiswatch_rules_loaded": ("gauge", frozenset({"kind"})),
    "crisiswatch_window_posts": ("gauge", frozenset({"brand", "rule"})),
    "crisiswatch_baseline_level": ("gauge", frozenset({"brand", "rule"})),
}
CONNECTOR_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "crisiswatch_connector_posts_fetched_total": ("counter", frozenset({"connector", "kind"})),
    "crisiswatch_connector_posts_produced_total": ("counter", frozenset({"connector", "kind"})),
    "crisiswatch_connector_rejected_total": ("counter", frozenset({"connector", "reason"})),
    "crisiswatch_connector_errors_total": ("counter", frozenset({"connector", "error"})),
    "crisiswatch_connector_reconnects_total": ("counter", frozenset({"connector"})),
    "crisiswatch_connector_newest_event_timestamp_seconds": ("gauge", frozenset({"connector"})),
    "crisiswatch_connector_last_success_timestamp_seconds": ("gauge", frozenset({"connector"})),
    "crisiswatch_webhook_requests_total": ("counter", frozenset({"status"})),
}
METRICS = {**WORKER_METRICS, **CONNECTOR_METRICS}

SETTINGS: dict[str, str] = {
    "CRISISWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "CRISISWATCH_TOPIC_PREFIX": "crisiswatch",
    "CRISISWATCH_PARTITIONS": "4",
    "CRISISWATCH_RULES_DIR": "brands",
    "CRISISWATCH_RULES_RELOAD_S": "5",
    "CRISISWATCH_STORE": "rocksdb://",
    "CRISISWATCH_DATA_DIR": ".run/worker",
    "CRISISWATCH_WEB_HOST": "0.0.0.0",
    "CRISISWATCH_WEB_PORT": "6066",
    "CRISISWATCH_LATENESS": "60s",
    "CRISISWATCH_STEP": "10s",
    "CRISISWATCH_STATE_FLUSH_S": "5",
    "CRISISWATCH_LOG_LEVEL": "INFO",
    "CRISISWATCH_EVENT_LOOP": "uvloop",
    "CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    "CRISISWATCH_KAFKA_SASL_MECHANISM": "",
    "CRISISWATCH_KAFKA_SASL_USERNAME": "",
    "CRISISWATCH_KAFKA_SASL_PASSWORD": "",
    "CRISISWATCH_KAFKA_SSL_CAFILE": "",
    "CRISISWATCH_KAFKA_SSL_CERTFILE": "",
    "CRISISWATCH_KAFKA_SSL_KEYFILE": "",
    "CRISISWATCH_WEBHOOK_TOKEN": "",
    "MASTODON_TOKEN": "",
    "X_BEARER_TOKEN": "",
    "REDDIT_CLIENT_ID": "",
    "REDDIT_CLIENT_SECRET": "",
}

_SUFFIXES = ("_bucket", "_sum", "_count")
_NAME = re.compile(r"\bcrisiswatch_[a-z0-9_]+")


def metric_names(expr: str) -> set[str]:
    """Base metric names (histogram suffixes removed) that a PromQL expression uses."""
    names = set()
    for name in _NAME.findall(expr):
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in METRICS:
                name = name[: -len(suffix)]
        names.add(name)
    return names
