"""Connector metrics, registered on an injected prometheus_client registry.

Nothing is registered at import time.  The ops dashboards and alerts use
exactly these names (see docs/connectors.md).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

log = logging.getLogger(__name__)


class ConnectorMetrics:
    """Every connector metric, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.fetched = Counter(
            "crisiswatch_connector_posts_fetched",
            "Posts a connector read from its source.",
            ["connector", "kind"],
            registry=registry,
        )
        self.produced = Counter(
            "crisiswatch_connector_posts_produced",
            "Posts acknowledged by Kafka on the posts topic.",
            ["connector", "kind"],
            registry=registry,
        )
        self.rejected = Counter(
            "crisiswatch_connector_rejected",
            "Items sent to the dead-letter topic, by reason.",
            ["connector", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "crisiswatch_connector_errors",
            "Failed fetches, by error kind.",
            ["connector", "error"],
            registry=registry,
        )
        self.reconnects = Counter(
            "crisiswatch_connector_reconnects",
            "Fetch retries after a retriable error.",
            ["connector"],
            registry=registry,
        )
        self.newest_event = Gauge(
            "crisiswatch_connector_newest_event_timestamp_seconds",
            "Event time (created_at) of the newest post produced, Unix seconds.",
            ["connector"],
            registry=registry,
        )
        self.last_success = Gauge(
            "crisiswatch_connector_last_success_timestamp_seconds",
            "Wall-clock time of the last successful fetch, Unix seconds.",
            ["connector"],
            registry=registry,
        )
        self.webhook_requests = Counter(
            "crisiswatch_webhook_requests",
            "Webhook ingest requests, by HTTP status.",
            ["status"],
            registry=registry,
        )

    @staticmethod
    def reason_label(reason: str) -> str:
        """Bound the label's cardinality: ``missing_field:text`` stays, free text is cut."""
        return reason[:64]


def serve_metrics(port: int, registry: CollectorRegistry, host: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` for ``registry`` on ``port`` in a daemon thread; returns the server."""
    result = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return result
