"""The webhook connector: ``POST /ingest`` takes Posts over HTTP and produces them to Kafka.

Body: one Post JSON object or a JSON array of them (``application/json``), or
one Post per line (``application/x-ndjson``).  Responses come only after Kafka
acknowledged every valid item:

- 202 ``{"accepted": n}`` when every item was accepted;
- 207 ``[{"index": 0, "status": "accepted", "id": ...},
  {"index": 1, "status": "rejected", "reason": ..., "detail": ...}]`` when some
  were rejected (those also go to the dead-letter topic, stage
  ``connector:<name>``);
- 400 when the body is not JSON at all, 401 without the right Bearer token
  (with ``WWW-Authenticate``), 413 over the size limit, 415 for another
  Content-Type, 429 with ``Retry-After`` over the per-client rate limit.

``GET /healthz`` answers 200 ``{"status": "ok"}``.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from connectors.base import Rejected
from connectors.metrics import ConnectorMetrics
from connectors.publisher import Publisher
from connectors.settings import Secret
from rules.errors import InvalidPost
from rules.model import Post
from rules.post import post_from_dict

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """How the webhook behaves."""

    name: str = "webhook"
    """Connector name (metrics label, dead-letter stage ``connector:<name>``)."""
    token: Secret | None = None
    """Required Bearer token; None disables auth (only for local tests)."""
    max_body_bytes: int = 5_000_000
    """Larger bodies get 413."""
    rate_per_s: float = 50.0
    """Requests per second each client may make on average."""
    burst: int = 100
    """Requests a client may make at once (token bucket size)."""
    stamp_ingested_at: bool = True
    """Set ``ingested_at`` to the receive time on posts that lack it."""


class TokenBucket:
    """Per-client token buckets: ``take(client)`` -> 0 when allowed, else seconds to wait."""

    def __init__(
        self, rate_per_s: float, burst: int, monotonic_s: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._now = monotonic_s
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str) -> float:
        now = self._now()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > 10_000:  # forget idle clients, bounded memory
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return (1.0 - tokens) / self.rate_per_s


def _json_error(status: int, reason: str, detail: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": reason, "detail": detail}),
        content_type="application/json",
        headers=headers,
    )


def _split_items(body: bytes, content_type: str) -> list[tuple[Any, bytes, str | None]] | None:
    """Body -> [(decoded item or None, raw bytes, decode error)]; None when not JSON at all."""
    if content_type in NDJSON_TYPES:
        items: list[tuple[Any, bytes, str | None]] = []
        for line in body.split(b"\n"):
            raw = line.strip()
            if not raw:
                continue
            try:
                items.append((orjson.loads(raw), raw, None))
            except orjson.JSONDecodeError as exc:
                items.append((None, raw, str(exc)))
        if items and all(err is not None for _, _, err in items):
            return None
        return items
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list):
        return [(item, orjson.dumps(item), None) for item in value]
    return [(value, body, None)]


class WebhookHandler:
    """The aiohttp handlers; ``build_webhook_app`` wires them."""

    def __init__(
        self,
        publisher: Publisher,
        metrics: ConnectorMetrics,
        options: WebhookOptions,
        *,
        clock_s: Callable[[], float] = time.time,
        monotonic_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.publisher = publisher
        self.metrics = metrics
        self.options = options
        self._clock_s = clock_s
        self._limiter = TokenBucket(options.rate_per_s, options.burst, monotonic_s)
        self._expected = (
            f"Bearer {options.token.reveal()}".encode() if options.token is not None else None
        )

    def _count(self, response: web.Response) -> web.Response:
        self.metrics.webhook_requests.labels(str(response.status)).inc()
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ingest(self, request: web.Request) -> web.Response:
        return self._count(await self._ingest(request))

    def _authorised(self, request: web.Request) -> bool:
        if self._expected is None:
            return True
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        return hmac.compare_digest(given, self._expected)

    async def _ingest(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json_error(
                401,
                "unauthorized",
                "missing or wrong Bearer token in the Authorization header",
                **{"WWW-Authenticate": 'Bearer realm="crisiswatch"'},
            )
        client = request.remote or "unknown"
        wait_s = self._limiter.take(client)
        if wait_s > 0:
            return _json_error(
                429,
                "rate_limited",
                f"more than {self.options.rate_per_s:g} requests/s from {client}",
                **{"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        limit = self.options.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _json_error(
                413, "too_large", f"body is {request.content_length} bytes; the limit is {limit}"
            )
        content_type = request.content_type
        if content_type not in JSON_TYPES + NDJSON_TYPES:
            return _json_error(
                415,
                "unsupported_media_type",
                "Content-Type must be application/json or application/x-ndjson; "
                f"got {content_type}",
            )
        body = bytearray()
        async for chunk in request.content.iter_chunked(65536):
            body += chunk
            if len(body) > limit:
                return _json_error(413, "too_large", f"body exceeds the limit of {limit} bytes")
        items = _split_items(bytes(body), content_type)
        if items is None:
            return _json_error(400, "invalid_json", "the body is not JSON (nor JSON Lines)")
        return await self._accept(items)

    async def _accept(self, items: list[tuple[Any, bytes, str | None]]) -> web.Response:
        name = self.options.name
        now_ms = int(self._clock_s() * 1000)
        results: list[dict[str, Any]] = []
        posts: list[Post] = []
        rejected: list[Rejected] = []
        for index, (value, raw, decode_error) in enumerate(items):
            try:
                if decode_error is not None:
                    reason = "invalid_json"
                    raise InvalidPost(reason, f"not valid JSON: {decode_error}")
                post = post_from_dict(value)
            except InvalidPost as exc:
                rejected.append(Rejected(exc.reason, f"item {index}: {exc.detail}", raw))
                results.append(
                    {
                        "index": index,
                        "status": "rejected",
                        "reason": exc.reason,
                        "detail": exc.detail,
                    }
                )
                continue
            if self.options.stamp_ingested_at and post.ingested_at_ms is None:
                post = dataclasses.replace(post, ingested_at_ms=now_ms)
            posts.append(post)
            results.append({"index": index, "status": "accepted", "id": post.id})
        self.metrics.fetched.labels(name, "webhook").inc(len(posts))
        await self.publisher.publish_batch(posts)
        self.metrics.produced.labels(name, "webhook").inc(len(posts))
        if posts:
            self.metrics.newest_event.labels(name).set(max(p.created_at_ms for p in posts) / 1000)
            self.metrics.last_success.labels(name).set(self._clock_s())
        for item in rejected:
            await self.publisher.dead_letter(item, stage=f"connector:{name}")
            self.metrics.rejected.labels(name, ConnectorMetrics.reason_label(item.reason)).inc()
        if rejected:
            return web.Response(
                status=207, body=orjson.dumps(results), content_type="application/json"
            )
        return web.Response(
            status=202, body=orjson.dumps({"accepted": len(posts)}), content_type="application/json"
        )


def build_webhook_app(
    publisher: Publisher,
    metrics: ConnectorMetrics,
    options: WebhookOptions,
    *,
    clock_s: Callable[[], float] = time.time,
    monotonic_s: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The aiohttp application: ``POST /ingest`` and ``GET /healthz``."""
    handler = WebhookHandler(publisher, metrics, options, clock_s=clock_s, monotonic_s=monotonic_s)
    app = web.Application(client_max_size=options.max_body_bytes + 1)
    app.router.add_post("/ingest", handler.ingest)
    app.router.add_get("/healthz", handler.healthz)
    return app


async def start_webhook(
    app: web.Application, host: str = "127.0.0.1", port: int = 8088
) -> web.AppRunner:
    """Serve ``app``; returns the runner (``await runner.cleanup()`` to stop)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("webhook listening on http://%s:%d/ingest", host, port)
    return runner
