"""Mastodon: the streaming API (Server-Sent Events), with REST polling for catch-up.

Reading order:

- ``mode: stream`` (default): open ``/api/v1/streaming/<timeline>`` first, then poll
  the REST timeline from the cursor's last seen id (``min_id``; on a fresh start, the
  newest page) page by page until caught up, and only then read ``update`` events from the stream. A
  status published while we catch up is buffered on the open stream, so a
  reconnect neither skips nor repeats one (stream events already returned by the
  catch-up are dropped by id). A dropped connection returns the posts read so far,
  or raises a retriable ``disconnect``; the next fetch reconnects the same way.
- ``mode: poll``: REST polling only (``min_id``, ``poll_interval_s`` between polls).
  Also used automatically when the server refuses the streaming endpoint (404...).

Cursor: ``{"last_id": newest status id seen, "mode": catchup|stream|poll,
"recent": the last ids returned (bounded), for de-duplication}``.

Status ids are only unique within one instance: post ids are ``mastodon:<id>`` as
the Post contract shows; run one connector per instance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from connectors.base import Batch, Cursor, FatalSourceError, Rejected, Source, SourceError
from connectors.common import (
    Clock,
    OptionError,
    Options,
    RecentIds,
    Secret,
    bearer,
    count,
    cursor_ids,
    html_to_text,
    need,
    now_ms,
    opt,
    option_secret,
    rejected,
    require_object,
    rfc3339,
    snowflake_key,
)
from connectors.httpclient import HttpClient, LineReader, StreamEnded
from rules.errors import InvalidPost
from rules.model import Author, Post

log = logging.getLogger(__name__)

KIND = "mastodon"
TIMELINES = ("public", "local", "hashtag", "list")
RECENT_IDS = 200
OPTIONS = (
    "base_url",
    "streaming_url",
    "timeline",
    "tag",
    "list_id",
    "token_env",
    "mode",
    "batch_max",
    "batch_wait_s",
    "poll_interval_s",
    "page_limit",
    "connect_timeout_s",
    "read_timeout_s",
    "stall_timeout_s",
    "user_agent",
)


# ------------------------------------------------------------------- mapping


def status_to_post(status: Any, *, instance: str | None, ingested_at_ms: int | None) -> Post:
    """A Mastodon Status entity -> Post; raises InvalidPost when it is malformed.

    A boost (``reblog``) takes the boosted status's text; the content warning
    (``spoiler_text``) is kept as the first paragraph.
    """
    status = require_object(status, "a status")
    native_id = need(status, "id", str, "")
    created_at, created_ms = rfc3339(status.get("created_at"), "created_at")
    source_status = status.get("reblog") if isinstance(status.get("reblog"), Mapping) else status
    assert isinstance(source_status, Mapping)
    content = opt(source_status, "content", str, "") or ""
    spoiler = opt(source_status, "spoiler_text", str, "") or ""
    text = html_to_text(content)
    if spoiler:
        text = f"{spoiler}\n\n{text}" if text else spoiler
    account = need(status, "account", Mapping, "")
    acct = opt(account, "acct", str, "account.")
    if acct and "@" not in acct and instance:
        acct = f"{acct}@{instance}"
    account_id = opt(account, "id", (str, int), "account.")
    author = Author(
        id=None if account_id is None else str(account_id),
        handle=acct,
        followers=count(account, "followers_count") or 0,
    )
    metrics = {
        name: value
        for name, key in (
            ("likes", "favourites_count"),
            ("reposts", "reblogs_count"),
            ("replies", "replies_count"),
        )
        if (value := count(status, key)) is not None
    }
    reply_id = opt(status, "in_reply_to_id", (str, int), "")
    extra: dict[str, Any] = {}
    for key in ("uri", "visibility", "sensitive"):
        if status.get(key) is not None:
            extra[key] = status[key]
    if source_status is not status:
        extra["reblog_of"] = source_status.get("id")
    tags = status.get("tags")
    if isinstance(tags, list):
        extra["tags"] = [t["name"] for t in tags if isinstance(t, Mapping) and "name" in t]
    return Post(
        id=f"{KIND}:{native_id}",
        source=KIND,
        text=text,
        created_at_ms=created_ms,
        created_at=created_at,
        lang=opt(status, "language", str, ""),
        url=opt(status, "url", str, "") or opt(status, "uri", str, ""),
        author=author,
        metrics=metrics,
        reply_to=None if reply_id is None else f"{KIND}:{reply_id}",
        ingested_at_ms=ingested_at_ms,
        extra=extra or None,
    )


# -------------------------------------------------------------------- source


class MastodonSource:
    """A Source over one Mastodon timeline (see the module doc for the reading order)."""

    kind = KIND

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        streaming_url: str | None = None,
        timeline: str = "public",
        tag: str | None = None,
        list_id: str | None = None,
        token: Secret | None = None,
        mode: str = "stream",
        batch_max: int = 200,
        batch_wait_s: float = 1.0,
        poll_interval_s: float = 30.0,
        page_limit: int = 40,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
        stall_timeout_s: float = 90.0,
        user_agent: str = "crisiswatch",
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.streaming_url = (streaming_url or base_url).rstrip("/")
        self.instance = urlsplit(self.base_url).hostname
        self.timeline, self.tag, self.list_id = timeline, tag, list_id
        self.mode = mode
        self.batch_max, self.batch_wait_s = batch_max, batch_wait_s
        self.poll_interval_s, self.page_limit = poll_interval_s, page_limit
        self.stall_timeout_s = stall_timeout_s
        self.clock = clock
        self._token = token
        self._http = HttpClient(
            f"mastodon {name}",
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            user_agent=user_agent,
            clock=clock,
        )
        self._reader: LineReader | None = None
        self._catching_up = False
        self._position: dict[str, Any] | None = None
        """The cursor the open stream has been read up to (None: no usable stream)."""

    # ------------------------------------------------------------- urls

    def _rest_url(self) -> tuple[str, dict[str, str]]:
        base = f"{self.base_url}/api/v1/timelines"
        if self.timeline == "hashtag":
            return f"{base}/tag/{quote(self.tag or '', safe='')}", {}
        if self.timeline == "list":
            return f"{base}/list/{quote(self.list_id or '', safe='')}", {}
        return f"{base}/public", ({"local": "true"} if self.timeline == "local" else {})

    def _stream_url(self) -> tuple[str, dict[str, str]]:
        base = f"{self.streaming_url}/api/v1/streaming"
        if self.timeline == "hashtag":
            return f"{base}/hashtag", {"tag": self.tag or ""}
        if self.timeline == "list":
            return f"{base}/list", {"list": self.list_id or ""}
        return f"{base}/public" + ("/local" if self.timeline == "local" else ""), {}

    # ------------------------------------------------------------- fetch

    async def fetch(self, cursor: Cursor) -> Batch:
        last_id = cursor.get("last_id") if cursor else None
        if last_id is not None and not isinstance(last_id, str):
            last_id = str(last_id)
        recent = RecentIds(cursor_ids(cursor, "recent"), RECENT_IDS)
        if self.mode == "poll":
            return await self._poll(last_id, recent, mode="poll")
        position = dict(cursor) if cursor else None
        try:
            if self._reader is None or position != self._position:
                await self._reconnect()
                if self.mode == "poll":
                    return await self._poll(last_id, recent, mode="poll")
            if self._catching_up:
                batch = await self._poll(last_id, recent, mode="catchup")
            else:
                batch = await self._read_stream(last_id, recent)
        except BaseException:
            await self._drop_stream()
            raise
        if self._reader is not None:
            self._position = dict(batch.cursor) if batch.cursor else None
        return batch

    async def _reconnect(self) -> None:
        await self._drop_stream()
        url, params = self._stream_url()
        try:
            resp = await self._http.open_stream(
                url,
                params=params,
                headers=bearer(self._token),
                stall_timeout_s=self.stall_timeout_s,
            )
        except FatalSourceError as exc:
            if exc.kind == "auth":
                raise
            log.warning("%s: streaming refused (%s); falling back to REST polling", self.name, exc)
            self.mode = "poll"
            return
        self._reader = LineReader(resp)
        self._catching_up = True

    async def _drop_stream(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None
        self._position = None

    async def _poll(self, last_id: str | None, recent: RecentIds, *, mode: str) -> Batch:
        """One REST page after ``last_id`` (the newest page on a fresh start)."""
        url, params = self._rest_url()
        params = {**params, "limit": str(self.page_limit)}
        if last_id is not None:
            params["min_id"] = last_id
        _, page = await self._http.get_json(url, params=params, headers=bearer(self._token))
        if not isinstance(page, list):
            msg = f"{self.name}: GET {url}: expected a JSON array; got {type(page).__name__}"
            raise SourceError(msg, kind="protocol")
        full = len(page) >= self.page_limit
        items = sorted(
            page, key=lambda s: snowflake_key(str(s.get("id"))) if isinstance(s, dict) else (0, "")
        )
        posts, bad, newest = self._map(items, recent)
        for item in items:
            native = item.get("id") if isinstance(item, dict) else None
            if isinstance(native, str) and (
                last_id is None or snowflake_key(native) > snowflake_key(last_id)
            ):
                last_id = native
        if mode == "catchup" and not full:
            self._catching_up = False
            mode = "stream"
        wait_s = 0.0 if full or mode == "stream" else self.poll_interval_s
        return self._batch(posts, bad, last_id, recent, mode, wait_s, newest)

    async def _read_stream(self, last_id: str | None, recent: RecentIds) -> Batch:
        assert self._reader is not None
        items: list[Any] = []
        bad: list[Rejected] = []
        event: str | None = None
        data: list[str] = []
        ended: SourceError | None = None
        try:
            async for raw in self._reader.lines(self.batch_wait_s):
                line = raw.decode("utf-8", "replace")
                if line.startswith(":"):
                    continue  # heartbeat (":thump") or comment
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line:
                    if event == "update" and data:
                        payload = "\n".join(data)
                        try:
                            items.append(orjson.loads(payload))
                        except orjson.JSONDecodeError as exc:
                            err = InvalidPost("invalid_json", f"update event data: {exc}")
                            bad.append(rejected(err, payload))
                    event, data = None, []
                    if len(items) + len(bad) >= self.batch_max:
                        break
        except (StreamEnded, aiohttp.ClientError, TimeoutError) as exc:
            why = "closed by the server" if isinstance(exc, StreamEnded) else repr(exc)
            ended = SourceError(f"{self.name}: stream dropped ({why})", kind="disconnect")
        posts, rejects, newest = self._map(items, recent)
        bad = rejects + bad
        for post in posts:
            native = post.id.removeprefix(f"{KIND}:")
            if last_id is None or snowflake_key(native) > snowflake_key(last_id):
                last_id = native
        if ended is not None:
            await self._drop_stream()
            if not posts and not bad:
                raise ended
            log.warning("%s; returning %d posts read before it", ended, len(posts))
        return self._batch(posts, bad, last_id, recent, "stream", 0.0, newest)

    def _map(
        self, items: list[Any], recent: RecentIds
    ) -> tuple[list[Post], list[Rejected], int | None]:
        posts: list[Post] = []
        bad: list[Rejected] = []
        ingested = now_ms(self.clock)
        for item in items:
            try:
                post = status_to_post(item, instance=self.instance, ingested_at_ms=ingested)
            except InvalidPost as exc:
                bad.append(rejected(exc, item))
                continue
            if post.id in recent:
                continue
            recent.add(post.id)
            posts.append(post)
        newest = max((p.created_at_ms for p in posts), default=None)
        return posts, bad, newest

    @staticmethod
    def _batch(
        posts: list[Post],
        bad: list[Rejected],
        last_id: str | None,
        recent: RecentIds,
        mode: str,
        wait_s: float,
        newest: int | None,
    ) -> Batch:
        cursor = {"last_id": last_id, "mode": mode, "recent": recent.to_list()}
        return Batch(tuple(posts), cursor, tuple(bad), wait_s, newest)

    async def close(self) -> None:
        await self._drop_stream()
        await self._http.close()


def build(name: str, options: Mapping[str, Any], env: Mapping[str, str]) -> Source:
    """A MastodonSource from config options; credentials from ``token_env``."""
    o = Options(name, options, OPTIONS)
    timeline = o.choice("timeline", "public", TIMELINES)
    if timeline == "hashtag" and not o.opt_str("tag"):
        msg = f"connector {name!r}: timeline 'hashtag' needs option 'tag'"
        raise OptionError(msg)
    if timeline == "list" and not o.opt_str("list_id"):
        msg = f"connector {name!r}: timeline 'list' needs option 'list_id'"
        raise OptionError(msg)
    return MastodonSource(
        name,
        base_url=o.get_str("base_url"),
        streaming_url=o.opt_str("streaming_url"),
        timeline=timeline,
        tag=(o.opt_str("tag") or "").lstrip("#") or None,
        list_id=o.opt_str("list_id"),
        token=option_secret(name, options, "token_env", env, required=False),
        mode=o.choice("mode", "stream", ("stream", "poll")),
        batch_max=o.get_int("batch_max", 200),
        batch_wait_s=o.get_float("batch_wait_s", 1.0, minimum=0.01),
        poll_interval_s=o.get_float("poll_interval_s", 30.0),
        page_limit=o.get_int("page_limit", 40, maximum=40),
        connect_timeout_s=o.get_float("connect_timeout_s", 10.0, minimum=0.01),
        read_timeout_s=o.get_float("read_timeout_s", 30.0, minimum=0.01),
        stall_timeout_s=o.get_float("stall_timeout_s", 90.0, minimum=0.01),
        user_agent=o.get_str("user_agent", "crisiswatch"),
    )
