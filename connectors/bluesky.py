"""Bluesky through Jetstream (JSON over WebSocket, ``/subscribe``).

Only creates of ``app.bsky.feed.post`` records become Posts; every other event
(updates, deletes, identity and account events, other collections) only moves
the cursor. Cursor: ``{"time_us": <time_us of the last event read>}``; on
(re)connect Jetstream replays from ``cursor=<time_us>`` and events at or below
it are dropped, so a restart neither skips nor repeats a post.

Jetstream carries no profile data: ``author.followers`` is 0 and the handle is
unknown (the DID is the author id). The post id is ``bluesky:<at:// URI>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from connectors.base import Batch, Cursor, Rejected, Source, SourceError
from connectors.common import (
    Clock,
    Options,
    need,
    now_ms,
    opt,
    rejected,
    require_object,
    rfc3339,
    status_error,
    transport_error,
)
from rules.errors import InvalidPost
from rules.model import Author, Post

log = logging.getLogger(__name__)

KIND = "bluesky"
POST_COLLECTION = "app.bsky.feed.post"
DEFAULT_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
OPTIONS = ("url", "wanted_dids", "batch_max", "batch_wait_s", "open_timeout_s", "max_message_bytes")


# ------------------------------------------------------------------- mapping


def event_time_us(event: Any) -> int | None:
    """The ``time_us`` of a Jetstream event, None when absent or not an integer."""
    if isinstance(event, Mapping):
        value = event.get("time_us")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def event_to_post(event: Any, *, ingested_at_ms: int | None) -> Post | None:
    """A Jetstream event -> Post for a post create, None for any other event.

    Raises InvalidPost when a post-create event is malformed.
    """
    event = require_object(event, "a Jetstream event")
    if event.get("kind") != "commit":
        return None
    commit = need(event, "commit", Mapping, "")
    if commit.get("operation") != "create" or commit.get("collection") != POST_COLLECTION:
        return None
    did = need(event, "did", str, "")
    rkey = need(commit, "rkey", str, "commit.")
    record = need(commit, "record", Mapping, "commit.")
    text = need(record, "text", str, "commit.record.")
    created_at, created_ms = rfc3339(record.get("createdAt"), "commit.record.createdAt")
    langs = opt(record, "langs", list, "commit.record.")
    lang = langs[0] if langs and isinstance(langs[0], str) else None
    reply_to = None
    reply = opt(record, "reply", Mapping, "commit.record.")
    if reply is not None:
        parent = reply.get("parent")
        if isinstance(parent, Mapping) and isinstance(parent.get("uri"), str):
            reply_to = f"{KIND}:{parent['uri']}"
    uri = f"at://{did}/{POST_COLLECTION}/{rkey}"
    extra: dict[str, Any] = {"time_us": event.get("time_us")}
    if isinstance(commit.get("cid"), str):
        extra["cid"] = commit["cid"]
    if langs and len(langs) > 1:
        extra["langs"] = [x for x in langs if isinstance(x, str)]
    return Post(
        id=f"{KIND}:{uri}",
        source=KIND,
        text=text,
        created_at_ms=created_ms,
        created_at=created_at,
        lang=lang,
        url=f"https://bsky.app/profile/{did}/post/{rkey}",
        author=Author(id=did, handle=None, followers=0),
        reply_to=reply_to,
        ingested_at_ms=ingested_at_ms,
        extra=extra,
    )


# -------------------------------------------------------------------- source


class BlueskySource:
    """A Source over a Jetstream WebSocket."""

    kind = KIND

    def __init__(
        self,
        name: str,
        *,
        url: str = DEFAULT_URL,
        wanted_dids: tuple[str, ...] = (),
        batch_max: int = 500,
        batch_wait_s: float = 1.0,
        open_timeout_s: float = 10.0,
        max_message_bytes: int = 1_000_000,
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.url = url
        self.wanted_dids = wanted_dids
        self.batch_max, self.batch_wait_s = batch_max, batch_wait_s
        self.open_timeout_s = open_timeout_s
        self.max_message_bytes = max_message_bytes
        self.clock = clock
        self._ws: ClientConnection | None = None
        self._position: dict[str, Any] | None = None
        """The cursor the open connection has been read up to."""

    def _subscribe_url(self, cursor_us: int | None) -> str:
        params: list[tuple[str, str]] = [("wantedCollections", POST_COLLECTION)]
        params += [("wantedDids", did) for did in self.wanted_dids]
        if cursor_us is not None:
            params.append(("cursor", str(cursor_us)))
        return f"{self.url}?{urlencode(params)}"

    async def _connect(self, cursor_us: int | None) -> None:
        await self._drop()
        url = self._subscribe_url(cursor_us)
        where = f"{self.name}: connect {url}"
        try:
            self._ws = await connect(
                url,
                open_timeout=self.open_timeout_s,
                max_size=self.max_message_bytes,
                compression=None,
            )
        except InvalidStatus as exc:
            resp = exc.response
            headers = dict(resp.headers.raw_items())
            body = bytes(resp.body or b"")
            raise status_error(resp.status_code, where, headers, body, self.clock()) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise transport_error(where, exc) from exc

    async def _drop(self) -> None:
        ws, self._ws, self._position = self._ws, None, None
        if ws is not None:
            ws.transport.abort()

    async def fetch(self, cursor: Cursor) -> Batch:
        cursor_us = event_time_us(cursor) if cursor else None
        try:
            if self._ws is None or (dict(cursor) if cursor else None) != self._position:
                await self._connect(cursor_us)
            batch = await self._read(cursor_us)
        except BaseException:
            await self._drop()
            raise
        if self._ws is not None:
            self._position = dict(batch.cursor) if batch.cursor else None
        return batch

    async def _read(self, cursor_us: int | None) -> Batch:
        assert self._ws is not None
        posts: list[Post] = []
        bad: list[Rejected] = []
        last_us = cursor_us
        ended: SourceError | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait_s
        ingested = now_ms(self.clock)
        while len(posts) + len(bad) < self.batch_max:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(self._ws.recv(), remaining)
            except TimeoutError:
                break
            except ConnectionClosed as exc:
                msg = f"{self.name}: Jetstream connection closed ({exc})"
                ended = SourceError(msg, kind="disconnect")
                break
            try:
                event = orjson.loads(message)
            except orjson.JSONDecodeError as exc:
                err = InvalidPost("invalid_json", f"Jetstream message is not JSON: {exc}")
                bad.append(rejected(err, message))
                continue
            time_us = event_time_us(event)
            if time_us is not None:
                if last_us is not None and time_us <= last_us:
                    continue  # replayed at or below the cursor: already delivered
                last_us = time_us
            try:
                post = event_to_post(event, ingested_at_ms=ingested)
            except InvalidPost as exc:
                bad.append(rejected(exc, message))
                continue
            if post is not None:
                posts.append(post)
        if ended is not None:
            await self._drop()
            if not posts and not bad and last_us == cursor_us:
                raise ended
            log.warning("%s; returning %d posts read before it", ended, len(posts))
        newest = max((p.created_at_ms for p in posts), default=None)
        new_cursor = None if last_us is None else {"time_us": last_us}
        return Batch(tuple(posts), new_cursor, tuple(bad), 0.0, newest)

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 1.0)
            except (TimeoutError, OSError, WebSocketException):
                ws.transport.abort()


def build(name: str, options: Mapping[str, Any], env: Mapping[str, str]) -> Source:
    """A BlueskySource from config options (Jetstream needs no credentials)."""
    o = Options(name, options, OPTIONS)
    dids = o.raw("wanted_dids", [])
    if not isinstance(dids, list) or not all(isinstance(d, str) and d for d in dids):
        key = "wanted_dids"
        raise o.error(key, "a list of DIDs", dids)
    return BlueskySource(
        name,
        url=o.get_str("url", DEFAULT_URL),
        wanted_dids=tuple(dids),
        batch_max=o.get_int("batch_max", 500),
        batch_wait_s=o.get_float("batch_wait_s", 1.0, minimum=0.01),
        open_timeout_s=o.get_float("open_timeout_s", 10.0, minimum=0.01),
        max_message_bytes=o.get_int("max_message_bytes", 1_000_000, minimum=1024),
    )
