"""Local fake platform servers on 127.0.0.1 that speak each platform's real protocol.

Payloads are shaped like the platforms' documented responses. Each fake keeps the
items it has "published" and serves them the way the platform does (REST pages,
SSE, newline-delimited JSON, WebSocket), with knobs to inject failures: an error
status for the next requests, and a connection dropped mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DROP = object()
"""Put on a stream queue: the server aborts the connection there (no clean end)."""


@dataclass
class Failure:
    """An error response to give instead of the real one."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"error": "injected"}'


class FakeServer:
    """Base: failure injection, live stream queues, start/stop on a free port."""

    def __init__(self) -> None:
        self.failures: dict[str, list[Failure]] = {}
        """route name -> failures to give, first first."""
        self.listeners: list[asyncio.Queue[Any]] = []
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        """(path, query, headers) of every request, in order."""
        self.connected = asyncio.Event()

    def fail(self, route: str, *failures: Failure) -> None:
        self.failures.setdefault(route, []).extend(failures)

    def _failure(self, route: str) -> web.Response | None:
        pending = self.failures.get(route)
        if pending:
            f = pending.pop(0)
            return web.Response(status=f.status, headers=f.headers, text=f.body)
        return None

    def _log(self, request: web.Request) -> None:
        self.requests.append((request.path, dict(request.query), dict(request.headers)))

    def push(self, chunk: Any) -> None:
        """Send bytes (or DROP) to every open stream."""
        for q in list(self.listeners):
            q.put_nowait(chunk)

    def drop_streams(self) -> None:
        self.push(DROP)

    async def wait_connected(self, timeout_s: float = 2.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def _stream(
        self, request: web.Request, content_type: str, first: bytes = b""
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        q: asyncio.Queue[Any] = asyncio.Queue()
        self.listeners.append(q)
        self.connected.set()
        try:
            if first:
                await resp.write(first)
            while True:
                chunk = await q.get()
                if chunk is None:
                    break
                if chunk is DROP:
                    assert request.transport is not None
                    request.transport.close()
                    break
                await resp.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.listeners.remove(q)
            if not self.listeners:
                self.connected.clear()
        return resp

    def app(self) -> web.Application:
        raise NotImplementedError


@asynccontextmanager
async def serve(server: FakeServer) -> AsyncIterator[str]:
    """Run ``server`` on 127.0.0.1:<free port>; yields its base URL."""
    runner = web.AppRunner(server.app(), shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, shutdown_timeout=0.2)
    await site.start()
    assert runner.addresses
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.push(None)
        with contextlib.suppress(Exception):
            await runner.cleanup()


# ------------------------------------------------------------------ mastodon


def mastodon_status(
    sid: int, text: str = "hello", *, created: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A Status entity as the Mastodon API documents it."""
    status: dict[str, Any] = {
        "id": str(sid),
        "created_at": created or f"2026-11-27T10:{sid % 60:02d}:03.000Z",
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "sensitive": False,
        "spoiler_text": "",
        "visibility": "public",
        "language": "en",
        "uri": f"https://social.example/users/kim/statuses/{sid}",
        "url": f"https://social.example/@kim/{sid}",
        "replies_count": 1,
        "reblogs_count": 12,
        "favourites_count": 3,
        "content": f"<p>{text}</p>",
        "reblog": None,
        "account": {
            "id": "109",
            "username": "kim",
            "acct": "kim",
            "display_name": "Kim",
            "followers_count": 5120,
            "url": "https://social.example/@kim",
        },
        "media_attachments": [],
        "mentions": [],
        "tags": [],
    }
    status.update(fields)
    return status


class FakeMastodon(FakeServer):
    """REST timelines (min_id paging, newest first, Link headers) and SSE streaming."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[dict[str, Any]] = []

    def publish(self, status: dict[str, Any]) -> None:
        """A new status: stored for REST, sent to open streams as an ``update`` event."""
        self.statuses.append(status)
        self.push_event("update", json.dumps(status))

    def push_event(self, event: str, data: str) -> None:
        self.push(f"event: {event}\ndata: {data}\n\n".encode())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/timelines/public", self.timeline)
        app.router.add_get("/api/v1/timelines/tag/{tag}", self.timeline)
        app.router.add_get("/api/v1/streaming/public", self.streaming)
        app.router.add_get("/api/v1/streaming/hashtag", self.streaming)
        return app

    async def timeline(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        if (failure := self._failure("rest")) is not None:
            return failure
        limit = int(request.query.get("limit", "20"))
        ordered = sorted(self.statuses, key=lambda s: int(s["id"]))
        if "min_id" in request.query:
            after = [s for s in ordered if int(s["id"]) > int(request.query["min_id"])]
            page = after[:limit]
        else:
            page = ordered[-limit:]
        page = list(reversed(page))
        headers = {}
        if page:
            base = f"http://{request.host}{request.path}"
            headers["Link"] = (
                f'<{base}?max_id={page[-1]["id"]}>; rel="next", '
                f'<{base}?min_id={page[0]["id"]}>; rel="prev"'
            )
        return web.json_response(page, headers=headers)

    async def streaming(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        if (failure := self._failure("stream")) is not None:
            return failure
        return await self._stream(request, "text/event-stream", b":)\n")


# ------------------------------------------------------------------- bluesky


def jetstream_post(
    time_us: int, text: str = "hello", *, did: str = "did:plc:kim", **record: Any
) -> dict[str, Any]:
    """A Jetstream commit event creating an app.bsky.feed.post record."""
    rec: dict[str, Any] = {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": "2026-11-27T10:00:03.120Z",
        "langs": ["en"],
    }
    rec.update(record)
    return {
        "did": did,
        "time_us": time_us,
        "kind": "commit",
        "commit": {
            "rev": f"rev{time_us}",
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": f"3k{time_us}",
            "record": rec,
            "cid": f"bafy{time_us}",
        },
    }


class FakeJetstream:
    """A Jetstream ``/subscribe`` WebSocket: replays stored events from ``cursor``
    (inclusive, as Jetstream does), then sends live ones."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.listeners: list[asyncio.Queue[Any]] = []
        self.paths: list[str] = []
        self.failures: list[Failure] = []
        self.connected = asyncio.Event()

    def publish(self, event: dict[str, Any] | str) -> None:
        raw = event if isinstance(event, str) else json.dumps(event)
        self.events.append(raw)
        for q in self.listeners:
            q.put_nowait(raw)

    def drop_streams(self) -> None:
        for q in self.listeners:
            q.put_nowait(DROP)

    async def wait_connected(self, timeout_s: float = 2.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    def _process_request(self, connection: Any, request: Any) -> Any:
        self.paths.append(request.path)
        if self.failures:
            f = self.failures.pop(0)
            resp = connection.respond(f.status, f.body)
            for k, v in f.headers.items():
                resp.headers[k] = v
            return resp
        return None

    async def _handler(self, ws: Any) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(ws.request.path).query)
        q: asyncio.Queue[Any] = asyncio.Queue()
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        if cursor is not None:
            for raw in self.events:
                t = json.loads(raw).get("time_us") if raw.startswith("{") else None
                if isinstance(t, int) and t >= cursor:
                    q.put_nowait(raw)
        self.listeners.append(q)
        self.connected.set()
        try:
            while True:
                item = await q.get()
                if item is None:
                    return
                if item is DROP:
                    ws.transport.abort()
                    return
                await ws.send(item)
        except Exception:
            return
        finally:
            self.listeners.remove(q)
            if not self.listeners:
                self.connected.clear()


@asynccontextmanager
async def serve_ws(fake: FakeJetstream) -> AsyncIterator[str]:
    from websockets.asyncio.server import serve as ws_serve

    async with ws_serve(
        fake._handler, "127.0.0.1", 0, process_request=fake._process_request
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        try:
            yield f"ws://127.0.0.1:{port}/subscribe"
        finally:
            for q in fake.listeners:
                q.put_nowait(None)


# ------------------------------------------------------------------------- x


def x_message(tid: int, text: str = "hello", *, user: str = "kim", **data: Any) -> dict[str, Any]:
    """A filtered-stream message with the expansions crisiswatch asks for."""
    d: dict[str, Any] = {
        "id": str(tid),
        "text": text,
        "created_at": "2026-11-27T10:00:03.000Z",
        "author_id": "2244994945",
        "lang": "en",
        "conversation_id": str(tid),
        "public_metrics": {
            "retweet_count": 12,
            "reply_count": 1,
            "like_count": 3,
            "quote_count": 0,
            "impression_count": 4000,
        },
        "edit_history_tweet_ids": [str(tid)],
    }
    d.update(data)
    return {
        "data": d,
        "includes": {
            "users": [
                {
                    "id": "2244994945",
                    "username": user,
                    "name": "Kim",
                    "public_metrics": {"followers_count": 5120, "following_count": 10},
                }
            ]
        },
        "matching_rules": [{"id": "1", "tag": "acme"}],
    }


class FakeX(FakeServer):
    """Filtered stream (chunked NDJSON, blank keep-alives) and its rules endpoint."""

    def __init__(self, rules: list[dict[str, str]] | None = None) -> None:
        super().__init__()
        self.rules = [dict(r, id=str(i + 100)) for i, r in enumerate(rules or [])]
        self.rule_posts: list[dict[str, Any]] = []

    def publish(self, message: dict[str, Any] | str) -> None:
        raw = message if isinstance(message, str) else json.dumps(message)
        self.push(raw.encode() + b"\r\n")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/2/tweets/search/stream", self.stream)
        app.router.add_get("/2/tweets/search/stream/rules", self.get_rules)
        app.router.add_post("/2/tweets/search/stream/rules", self.post_rules)
        return app

    async def get_rules(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        if (failure := self._failure("rules")) is not None:
            return failure
        body: dict[str, Any] = {"meta": {"sent": "2026-11-27T10:00:00.000Z"}}
        if self.rules:
            body["data"] = self.rules
            body["meta"]["result_count"] = len(self.rules)
        return web.json_response(body)

    async def post_rules(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        body = await request.json()
        self.rule_posts.append(body)
        if "delete" in body:
            ids = set(body["delete"]["ids"])
            self.rules = [r for r in self.rules if r["id"] not in ids]
            return web.json_response({"meta": {"summary": {"deleted": len(ids)}}})
        added = []
        for rule in body.get("add", []):
            new = dict(rule, id=str(200 + len(self.rule_posts) * 10 + len(added)))
            self.rules.append(new)
            added.append(new)
        return web.json_response({"data": added, "meta": {"summary": {"created": len(added)}}})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        if (failure := self._failure("stream")) is not None:
            return failure
        return await self._stream(request, "application/json", b"\r\n")


# -------------------------------------------------------------------- reddit


def reddit_link(n: int, title: str = "hello", *, sub: str = "acme", **data: Any) -> dict[str, Any]:
    """A t3 listing child as ``/r/<sub>/new.json`` returns it."""
    d: dict[str, Any] = {
        "id": f"p{n}",
        "name": f"t3_p{n}",
        "title": title,
        "selftext": "",
        "created_utc": 1_795_773_600.0 + n,
        "author": "kim",
        "author_fullname": "t2_kim",
        "permalink": f"/r/{sub}/comments/p{n}/slug/",
        "url": f"https://www.reddit.com/r/{sub}/comments/p{n}/slug/",
        "is_self": True,
        "score": 5,
        "num_comments": 2,
        "subreddit": sub,
        "over_18": False,
    }
    d.update(data)
    return {"kind": "t3", "data": d}


class FakeReddit(FakeServer):
    """Listings (newest first, ``limit``/``after``), search, and the OAuth token endpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.things: list[dict[str, Any]] = []
        self.tokens_issued = 0
        self.ratelimit: dict[str, str] = {}

    def publish(self, thing: dict[str, Any]) -> None:
        self.things.append(thing)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/r/{sub}/new.json", self.listing)
        app.router.add_get("/r/{sub}/search.json", self.listing)
        app.router.add_get("/search.json", self.listing)
        app.router.add_post("/api/v1/access_token", self.token)
        return app

    async def token(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        form = await request.post()
        if (
            request.headers.get("Authorization", "")[:6] != "Basic "
            or form.get("grant_type") != "client_credentials"
        ):
            return web.json_response({"error": "unauthorized"}, status=401)
        self.tokens_issued += 1
        return web.json_response(
            {
                "access_token": f"tok{self.tokens_issued}",
                "token_type": "bearer",
                "expires_in": 86400,
            }
        )

    async def listing(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        if (failure := self._failure("listing")) is not None:
            return failure
        things = list(reversed(self.things))  # newest first
        if "q" in request.query:
            q = request.query["q"].lower()
            things = [t for t in things if q in t["data"].get("title", "").lower()]
        names = [t["data"]["name"] for t in things]
        if "after" in request.query and request.query["after"] in names:
            things = things[names.index(request.query["after"]) + 1 :]
        limit = int(request.query.get("limit", "25"))
        page = things[:limit]
        after = page[-1]["data"]["name"] if len(things) > limit else None
        body = {
            "kind": "Listing",
            "data": {"after": after, "before": None, "dist": len(page), "children": page},
        }
        return web.json_response(body, headers=self.ratelimit)


# ----------------------------------------------------------------------- rss


class FakeFeed(FakeServer):
    """A feed URL with ETag / Last-Modified conditional GET."""

    def __init__(self, body: str = "", *, etag: str = '"v1"') -> None:
        super().__init__()
        self.body = body
        self.etag = etag
        self.last_modified = "Fri, 27 Nov 2026 10:00:00 GMT"

    def set(self, body: str, etag: str) -> None:
        self.body, self.etag = body, etag

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/feed.xml", self.feed)
        return app

    async def feed(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        if (failure := self._failure("feed")) is not None:
            return failure
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers={"ETag": self.etag})
        return web.Response(
            body=self.body.encode(),
            content_type="application/rss+xml",
            headers={"ETag": self.etag, "Last-Modified": self.last_modified},
        )


def rss_item(n: int, title: str = "hello", description: str = "", **extra: str) -> str:
    parts = [
        f"<title>{title}</title>",
        f"<link>https://news.example/{n}</link>",
        f'<guid isPermaLink="true">https://news.example/{n}</guid>',
        f"<pubDate>Fri, 27 Nov 2026 10:{n:02d}:00 +0000</pubDate>",
    ]
    if description:
        parts.append(f"<description>{description}</description>")
    parts += [f"<{k}>{v}</{k}>" for k, v in extra.items()]
    return "<item>" + "".join(parts) + "</item>"


def rss_feed(*items: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        "<title>News</title><link>https://news.example/</link><language>en</language>"
        + "".join(reversed(items))  # newest first, as feeds list them
        + "</channel></rss>"
    )
