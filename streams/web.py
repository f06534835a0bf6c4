"""Health, readiness and metrics views on the worker's faust web server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import RestrictedRegistry

from streams.matchloop import MatchLoop
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder


def install_views(
    app: faust.App,
    metrics: WorkerMetrics,
    rules: RuleHolder,
    match_loop: MatchLoop,
    before_render: Callable[[], Awaitable[None]],
) -> None:
    """/metrics (``before_render`` first: it sets the gauges that are behind), /healthz
    and /readyz.

    ``/metrics?name[]=<sample name>`` (repeatable) renders only those series, as
    prometheus_client's own exposition does: a check of one counter (a script, the
    benchmark) then costs the worker neither the per-brand gauges' refresh nor their
    rendering, tens of milliseconds with 1,000 brands.
    """
    per_brand = frozenset(
        next(iter(m.describe())).name
        for m in (metrics.open_incidents, metrics.window_posts, metrics.baseline_level)
    )

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            # faust's aiohttp driver: aiohttp's query MultiDict (a key may repeat)
            query: Any = request.query
            names = frozenset(query.getall("name[]", []))
            registry: CollectorRegistry | RestrictedRegistry = metrics.registry
            if names:
                registry = metrics.registry.restricted_registry(names)
            if not names or names & per_brand:
                await before_render()
            body = await render_metrics(registry)
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            state = _readiness(app, rules, match_loop)
            return self.json(state, status=200 if state["ready"] else 503)


async def render_metrics(registry: CollectorRegistry | RestrictedRegistry) -> bytes:
    """The registry in Prometheus' text format, rendered on a thread of its own.

    With 1,000 brands the per-brand families hold tens of thousands of samples: 60-90
    ms to render.  On the event loop that stopped the worker at every scrape (every
    15 s in deploy/), and each alert in flight waited it out.  On a thread the loop
    gets the interpreter back every switch interval (5 ms) while it renders.
    """
    return await asyncio.to_thread(generate_latest, registry)


def _readiness(app: faust.App, rules: RuleHolder, match_loop: MatchLoop) -> dict[str, Any]:
    try:
        assigned = len(app.consumer.assignment())
    except Exception:
        assigned = 0
    recovery = getattr(app.tables, "recovery", None)
    recovering = bool(getattr(recovery, "in_recovery", False))
    match_partitions = len(match_loop.assigned())
    consuming = match_loop.consumer is not None
    ready = app.started and consuming and not app.rebalancing and not recovering and assigned > 0
    return {
        "ready": ready,
        "rebalancing": bool(app.rebalancing),
        "recovering": recovering,
        "assigned_partitions": assigned,
        "posts_partitions": match_partitions,
        "rules_digest": rules.current.ruleset.digest[:12],
        "brands": len(rules.current.ruleset.brands),
    }
