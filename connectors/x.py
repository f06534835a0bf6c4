"""X (Twitter) API v2 filtered stream: ``GET /2/tweets/search/stream``.

Newline-delimited JSON over a chunked response with blank keep-alive lines
(about every 20 s). Before the first connect the configured rules are synced
with ``/2/tweets/search/stream/rules`` (missing ones added, extra ones deleted).

The filtered stream has no resume cursor on the basic tiers (backfill with
``backfill_minutes`` needs a higher tier): posts published while disconnected
are not recovered. The cursor ``{"last_id", "recent": [ids]}`` de-duplicates
what X re-sends after a reconnect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from connectors.base import Batch, Cursor, Rejected, Source, SourceError
from connectors.common import (
    Clock,
    OptionError,
    Options,
    RecentIds,
    Secret,
    bearer,
    count,
    cursor_ids,
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

KIND = "x"
RECENT_IDS = 500
TWEET_FIELDS = "created_at,lang,author_id,public_metrics,conversation_id,referenced_tweets"
USER_FIELDS = "username,public_metrics"
OPTIONS = (
    "base_url",
    "bearer_env",
    "rules",
    "sync_rules",
    "batch_max",
    "batch_wait_s",
    "connect_timeout_s",
    "read_timeout_s",
    "stall_timeout_s",
    "user_agent",
)


# ------------------------------------------------------------------- mapping


def tweet_to_post(message: Any, *, ingested_at_ms: int | None) -> Post:
    """One filtered-stream message ``{"data", "includes", "matching_rules"}`` -> Post."""
    message = require_object(message, "a stream message")
    data = need(message, "data", Mapping, "")
    native_id = need(data, "id", str, "data.")
    text = need(data, "text", str, "data.")
    created_at, created_ms = rfc3339(data.get("created_at"), "data.created_at")
    author_id = opt(data, "author_id", str, "data.")
    username = None
    followers = 0
    includes = message.get("includes")
    users = includes.get("users") if isinstance(includes, Mapping) else None
    for user in users if isinstance(users, list) else ():
        if isinstance(user, Mapping) and user.get("id") == author_id:
            username = user.get("username") if isinstance(user.get("username"), str) else None
            pm = user.get("public_metrics")
            followers = (count(pm, "followers_count") or 0) if isinstance(pm, Mapping) else 0
    metrics: dict[str, int] = {}
    pm = opt(data, "public_metrics", Mapping, "data.")
    if pm is not None:
        for name, key in (
            ("likes", "like_count"),
            ("reposts", "retweet_count"),
            ("replies", "reply_count"),
            ("views", "impression_count"),
        ):
            if (value := count(pm, key)) is not None:
                metrics[name] = value
    reply_to = None
    for ref in opt(data, "referenced_tweets", list, "data.") or ():
        if isinstance(ref, Mapping) and ref.get("type") == "replied_to" and ref.get("id"):
            reply_to = f"{KIND}:{ref['id']}"
    extra: dict[str, Any] = {}
    rules = message.get("matching_rules")
    if isinstance(rules, list):
        extra["matching_rules"] = [
            r.get("tag") or r.get("id") for r in rules if isinstance(r, Mapping)
        ]
    if isinstance(data.get("conversation_id"), str):
        extra["conversation_id"] = data["conversation_id"]
    url = f"https://x.com/{username or 'i/web'}/status/{native_id}"
    return Post(
        id=f"{KIND}:{native_id}",
        source=KIND,
        text=text,
        created_at_ms=created_ms,
        created_at=created_at,
        lang=opt(data, "lang", str, "data."),
        url=url,
        author=Author(id=author_id, handle=username, followers=followers),
        metrics=metrics,
        reply_to=reply_to,
        ingested_at_ms=ingested_at_ms,
        extra=extra or None,
    )


def rules_diff(
    wanted: list[dict[str, str]], current: list[Mapping[str, Any]]
) -> tuple[list[dict[str, str]], list[str]]:
    """(rules to add, rule ids to delete) so the stream's rules equal ``wanted``.

    Rules compare by value and tag.
    """
    have = {(r.get("value"), r.get("tag")): str(r.get("id")) for r in current}
    want = {(r["value"], r.get("tag")) for r in wanted}
    add = [r for r in wanted if (r["value"], r.get("tag")) not in have]
    delete = [rid for key, rid in have.items() if key not in want]
    return add, delete


# -------------------------------------------------------------------- source


class XSource:
    """A Source over the X v2 filtered stream."""

    kind = KIND

    def __init__(
        self,
        name: str,
        *,
        token: Secret,
        base_url: str = "https://api.x.com",
        rules: tuple[dict[str, str], ...] = (),
        sync_rules: bool = True,
        batch_max: int = 500,
        batch_wait_s: float = 1.0,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
        stall_timeout_s: float = 60.0,
        user_agent: str = "crisiswatch",
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.rules = list(rules)
        self.sync_rules = sync_rules
        self.batch_max, self.batch_wait_s = batch_max, batch_wait_s
        self.stall_timeout_s = stall_timeout_s
        self.clock = clock
        self._token = token
        self._http = HttpClient(
            f"x {name}",
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            user_agent=user_agent,
            clock=clock,
        )
        self._rules_synced = not sync_rules
        self._reader: LineReader | None = None

    async def sync(self) -> tuple[int, int]:
        """Make the stream's rules equal the configured ones; returns (added, deleted)."""
        url = f"{self.base_url}/2/tweets/search/stream/rules"
        _, body = await self._http.get_json(url, headers=bearer(self._token))
        current = body.get("data") if isinstance(body, Mapping) else None
        add, delete = rules_diff(self.rules, [r for r in current or [] if isinstance(r, Mapping)])
        if delete:
            payload = orjson.dumps({"delete": {"ids": delete}})
            await self._post_rules(url, payload)
        if add:
            await self._post_rules(url, orjson.dumps({"add": add}))
        if add or delete:
            log.info(
                "%s: stream rules synced: %d added, %d deleted", self.name, len(add), len(delete)
            )
        self._rules_synced = True
        return len(add), len(delete)

    async def _post_rules(self, url: str, payload: bytes) -> None:
        headers = {**bearer(self._token), "Content-Type": "application/json"}
        _, _, body = await self._http.request(
            "POST", url, data=payload, headers=headers, ok=(200, 201)
        )
        answer = orjson.loads(body) if body else {}
        errors = answer.get("errors") if isinstance(answer, Mapping) else None
        if errors:
            msg = (
                f"{self.name}: POST {url}: X rejected rule changes: {orjson.dumps(errors)[:300]!r}"
            )
            raise SourceError(msg, kind="protocol", retry_after_s=None)

    async def fetch(self, cursor: Cursor) -> Batch:
        last_id = cursor.get("last_id") if cursor else None
        recent = RecentIds(cursor_ids(cursor, "recent"), RECENT_IDS)
        try:
            if not self._rules_synced:
                await self.sync()
            if self._reader is None:
                await self._connect()
            return await self._read(last_id if isinstance(last_id, str) else None, recent)
        except BaseException:
            self._drop()
            raise

    async def _connect(self) -> None:
        params = {
            "tweet.fields": TWEET_FIELDS,
            "expansions": "author_id",
            "user.fields": USER_FIELDS,
        }
        url = f"{self.base_url}/2/tweets/search/stream"
        resp = await self._http.open_stream(
            url, params=params, headers=bearer(self._token), stall_timeout_s=self.stall_timeout_s
        )
        self._reader = LineReader(resp)

    def _drop(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None

    async def _read(self, last_id: str | None, recent: RecentIds) -> Batch:
        assert self._reader is not None
        posts: list[Post] = []
        bad: list[Rejected] = []
        ended: SourceError | None = None
        ingested = now_ms(self.clock)
        try:
            async for line in self._reader.lines(self.batch_wait_s):
                if not line.strip():
                    continue  # keep-alive
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    err = InvalidPost("invalid_json", f"stream line is not JSON: {exc}")
                    bad.append(rejected(err, line))
                    continue
                if isinstance(message, Mapping) and "data" not in message and "errors" in message:
                    detail = orjson.dumps(message["errors"])[:300].decode("utf-8", "replace")
                    ended = SourceError(
                        f"{self.name}: X closed the stream: {detail}", kind="disconnect"
                    )
                    break
                try:
                    post = tweet_to_post(message, ingested_at_ms=ingested)
                except InvalidPost as exc:
                    bad.append(rejected(exc, line))
                    continue
                if post.id in recent:
                    continue
                recent.add(post.id)
                posts.append(post)
                native = post.id.removeprefix(f"{KIND}:")
                if last_id is None or snowflake_key(native) > snowflake_key(last_id):
                    last_id = native
                if len(posts) + len(bad) >= self.batch_max:
                    break
        except (StreamEnded, aiohttp.ClientError, TimeoutError) as exc:
            why = "closed by the server" if isinstance(exc, StreamEnded) else repr(exc)
            ended = SourceError(f"{self.name}: stream dropped ({why})", kind="disconnect")
        if ended is not None:
            self._drop()
            if not posts and not bad:
                raise ended
            log.warning("%s; returning %d posts read before it", ended, len(posts))
        newest = max((p.created_at_ms for p in posts), default=None)
        cursor = {"last_id": last_id, "recent": recent.to_list()}
        return Batch(tuple(posts), cursor, tuple(bad), 0.0, newest)

    async def close(self) -> None:
        self._drop()
        await self._http.close()


def _rules_option(name: str, value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list):
        msg = f"connector {name!r}: option 'rules' must be a list of {{value, tag}}; got {value!r}"
        raise OptionError(msg)
    out = []
    for i, rule in enumerate(value):
        if isinstance(rule, str):
            rule = {"value": rule}
        if not isinstance(rule, Mapping) or not isinstance(rule.get("value"), str):
            msg = f"connector {name!r}: rules[{i}] must have a string 'value'; got {rule!r}"
            raise OptionError(msg)
        out.append({k: str(v) for k, v in rule.items() if k in ("value", "tag")})
    return tuple(out)


def build(name: str, options: Mapping[str, Any], env: Mapping[str, str]) -> Source:
    """An XSource; the bearer token comes from the env var named by ``bearer_env``."""
    o = Options(name, options, OPTIONS)
    token = option_secret(name, options, "bearer_env", env, required=True)
    assert token is not None
    return XSource(
        name,
        token=token,
        base_url=o.get_str("base_url", "https://api.x.com"),
        rules=_rules_option(name, o.raw("rules", [])),
        sync_rules=o.get_bool("sync_rules", True),
        batch_max=o.get_int("batch_max", 500),
        batch_wait_s=o.get_float("batch_wait_s", 1.0, minimum=0.01),
        connect_timeout_s=o.get_float("connect_timeout_s", 10.0, minimum=0.01),
        read_timeout_s=o.get_float("read_timeout_s", 30.0, minimum=0.01),
        stall_timeout_s=o.get_float("stall_timeout_s", 60.0, minimum=0.01),
        user_agent=o.get_str("user_agent", "crisiswatch"),
    )
