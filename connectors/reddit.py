"""Reddit listings: ``/r/<sub>/new.json``, ``/r/<sub>/comments.json``, ``/search.json``.

Each poll reads the newest page; when every item on it is new (a gap after a
restart or a burst), it pages older with ``after=<fullname>`` until it reaches
known items (``max_pages`` at most), then returns the new items oldest first.
Paging forward with ``before=<newest fullname>`` is not used: when that anchor
item is removed by moderators Reddit answers an empty listing for ever.

Cursor: ``{"seen": [recent fullnames, bounded], "newest_utc": created_utc of the
newest item}``. An item is new when its fullname is not in ``seen`` and it is not
older than ``newest_utc - late_s`` (items approved from the mod queue show up late).

Optional OAuth (application-only, client credentials): the token comes from
``/api/v1/access_token`` and requests go to ``oauth.reddit.com`` with a Bearer
header; ``X-Ratelimit-Remaining`` / ``X-Ratelimit-Reset`` are honoured. Follower
counts are not in listings: ``author.followers`` is 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from connectors.base import Batch, Cursor, FatalSourceError, Rejected, Source, SourceError
from connectors.common import (
    Clock,
    OptionError,
    Options,
    RecentIds,
    Secret,
    count,
    cursor_ids,
    epoch_s_to_rfc3339,
    need,
    now_ms,
    opt,
    option_secret,
    rejected,
    require_object,
)
from connectors.httpclient import HttpClient
from rules.errors import InvalidPost
from rules.model import Author, Post

log = logging.getLogger(__name__)

KIND = "reddit"
SEEN_IDS = 1000
WEB = "https://www.reddit.com"
OPTIONS = (
    "subreddit",
    "query",
    "comments",
    "base_url",
    "auth_url",
    "client_id_env",
    "client_secret_env",
    "user_agent",
    "limit",
    "max_pages",
    "poll_interval_s",
    "late_s",
    "connect_timeout_s",
    "read_timeout_s",
)


# ------------------------------------------------------------------- mapping


def thing_to_post(thing: Any, *, ingested_at_ms: int | None) -> Post:
    """A listing child ``{"kind": "t3"|"t1", "data": {...}}`` -> Post."""
    thing = require_object(thing, "a listing child")
    kind = thing.get("kind")
    if kind not in ("t3", "t1"):
        msg = "unsupported_kind"
        raise InvalidPost(msg, f"listing child kind must be t3 or t1; got {kind!r}")
    data = need(thing, "data", Mapping, "")
    name = need(data, "name", str, "data.")
    created_at, created_ms = epoch_s_to_rfc3339(data.get("created_utc"), "data.created_utc")
    if kind == "t3":
        title = need(data, "title", str, "data.")
        selftext = opt(data, "selftext", str, "data.") or ""
        text = f"{title}\n\n{selftext}" if selftext else title
    else:
        text = need(data, "body", str, "data.")
    handle = opt(data, "author", str, "data.")
    author = None
    if handle and handle != "[deleted]":
        author = Author(id=opt(data, "author_fullname", str, "data."), handle=handle, followers=0)
    metrics: dict[str, int] = {}
    if (score := count(data, "score")) is not None:
        metrics["likes"] = score
    if (comments := count(data, "num_comments")) is not None:
        metrics["replies"] = comments
    permalink = opt(data, "permalink", str, "data.")
    extra: dict[str, Any] = {"kind": kind}
    for key in ("subreddit", "over_18", "link_id"):
        if data.get(key) is not None:
            extra[key] = data[key]
    if kind == "t3" and data.get("is_self") is False and isinstance(data.get("url"), str):
        extra["link_url"] = data["url"]
    parent = opt(data, "parent_id", str, "data.") if kind == "t1" else None
    return Post(
        id=f"{KIND}:{name}",
        source=KIND,
        text=text,
        created_at_ms=created_ms,
        created_at=created_at,
        url=f"{WEB}{permalink}" if permalink else None,
        author=author,
        metrics=metrics,
        reply_to=f"{KIND}:{parent}" if parent else None,
        ingested_at_ms=ingested_at_ms,
        extra=extra,
    )


def listing_children(body: Any, where: str) -> tuple[list[Any], str | None]:
    """A Listing -> (children, after); a response that is not a Listing is a protocol error."""
    data = body.get("data") if isinstance(body, Mapping) else None
    children = data.get("children") if isinstance(data, Mapping) else None
    if (
        not isinstance(data, Mapping)
        or body.get("kind") != "Listing"
        or not isinstance(children, list)
    ):
        msg = f"{where}: expected a Listing {{kind, data: {{children}}}}; got {str(body)[:120]}"
        raise SourceError(msg, kind="protocol")
    after = data.get("after")
    return children, after if isinstance(after, str) else None


# -------------------------------------------------------------------- source


class RedditSource:
    """A Source polling one Reddit listing."""

    kind = KIND

    def __init__(
        self,
        name: str,
        *,
        subreddit: str | None = None,
        query: str | None = None,
        comments: bool = False,
        base_url: str | None = None,
        auth_url: str = f"{WEB}/api/v1/access_token",
        client_id: Secret | None = None,
        client_secret: Secret | None = None,
        user_agent: str = "crisiswatch/0.1",
        limit: int = 100,
        max_pages: int = 10,
        poll_interval_s: float = 30.0,
        late_s: float = 3600.0,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.subreddit, self.query, self.comments = subreddit, query, comments
        self.oauth = client_id is not None
        default_base = "https://oauth.reddit.com" if self.oauth else WEB
        self.base_url = (base_url or default_base).rstrip("/")
        self.auth_url = auth_url
        self._client_id, self._client_secret = client_id, client_secret
        self.limit, self.max_pages = limit, max_pages
        self.poll_interval_s, self.late_s = poll_interval_s, late_s
        self.clock = clock
        self._http = HttpClient(
            f"reddit {name}",
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            user_agent=user_agent,
            clock=clock,
        )
        self._token: Secret | None = None
        self._token_expires_s = 0.0

    def listing_url(self) -> tuple[str, dict[str, str]]:
        sub = f"/r/{quote(self.subreddit, safe='+')}" if self.subreddit else ""
        if self.query is not None:
            params = {"q": self.query, "sort": "new"}
            if sub:
                params["restrict_sr"] = "1"
            return f"{self.base_url}{sub}/search.json", params
        return f"{self.base_url}{sub}/{'comments' if self.comments else 'new'}.json", {}

    async def _headers(self) -> dict[str, str]:
        if not self.oauth:
            return {}
        if self._token is None or self.clock() >= self._token_expires_s:
            await self._authenticate()
        assert self._token is not None
        return {"Authorization": f"bearer {self._token.reveal()}"}

    async def _authenticate(self) -> None:
        assert self._client_id is not None
        auth = aiohttp.BasicAuth(
            self._client_id.reveal(), self._client_secret.reveal() if self._client_secret else ""
        )
        _, body = await self._http.get_json(
            self.auth_url, auth=auth, data={"grant_type": "client_credentials"}, method="POST"
        )
        token = body.get("access_token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            msg = f"{self.name}: POST {self.auth_url}: no access_token in the answer"
            raise FatalSourceError(msg, kind="auth")
        expires = body.get("expires_in")
        lifetime_s = float(expires) if isinstance(expires, int | float) else 3600.0
        self._token = Secret(token)
        self._token_expires_s = self.clock() + max(0.0, lifetime_s - 60.0)

    async def _get_page(self, after: str | None) -> tuple[list[Any], str | None, float | None]:
        url, params = self.listing_url()
        params = {**params, "limit": str(self.limit), "raw_json": "1"}
        if after:
            params["after"] = after
        try:
            headers, body = await self._http.get_json(
                url, params=params, headers=await self._headers()
            )
        except FatalSourceError as exc:
            if exc.kind == "auth" and self.oauth and self._token is not None:
                self._token = None  # expired early: one new token, one retry
                headers, body = await self._http.get_json(
                    url, params=params, headers=await self._headers()
                )
            else:
                raise
        children, next_after = listing_children(body, f"{self.name}: GET {url}")
        return children, next_after, _ratelimit_wait_s(headers)

    async def fetch(self, cursor: Cursor) -> Batch:
        seen = RecentIds(cursor_ids(cursor, "seen"), SEEN_IDS)
        newest_utc = cursor.get("newest_utc") if cursor else None
        fresh = not cursor
        floor = (
            float(newest_utc) - self.late_s
            if isinstance(newest_utc, int | float)
            else float("-inf")
        )
        fresh_items: list[tuple[float, str, Any]] = []
        after: str | None = None
        wait_s = self.poll_interval_s
        for page_no in range(1, self.max_pages + 1):
            children, after, limit_wait = await self._get_page(after)
            if limit_wait is not None:
                wait_s = max(wait_s, limit_wait)
            reached_known = False
            for child in children:
                data = child.get("data") if isinstance(child, Mapping) else None
                name = data.get("name") if isinstance(data, Mapping) else None
                created = data.get("created_utc") if isinstance(data, Mapping) else None
                created_s = float(created) if isinstance(created, int | float) else float("inf")
                if isinstance(name, str) and (name in seen or created_s < floor):
                    reached_known = True
                    continue
                fresh_items.append((created_s, str(name), child))
            if fresh or reached_known or after is None or not children:
                break
            if page_no == self.max_pages:
                log.warning(
                    "%s: catch-up stopped after %d pages; older posts skipped", self.name, page_no
                )
        fresh_items.sort(key=lambda item: (item[0], item[1]))
        posts: list[Post] = []
        bad: list[Rejected] = []
        ingested = now_ms(self.clock)
        for created_s, name, child in fresh_items:
            if name != "None":
                seen.add(name)  # rejected items too: they must not come back on every poll
            try:
                post = thing_to_post(child, ingested_at_ms=ingested)
            except InvalidPost as exc:
                bad.append(rejected(exc, child))
                continue
            posts.append(post)
            newest_utc = (
                max(created_s, newest_utc) if isinstance(newest_utc, int | float) else created_s
            )
        newest = max((p.created_at_ms for p in posts), default=None)
        new_cursor = {"seen": seen.to_list(), "newest_utc": newest_utc}
        return Batch(tuple(posts), new_cursor, tuple(bad), wait_s, newest)

    async def close(self) -> None:
        await self._http.close()


def _ratelimit_wait_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait when the rate-limit budget is used up (Reddit's headers), else None."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        remaining = float(lower["x-ratelimit-remaining"])
        reset_s = float(lower["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    return reset_s if remaining < 1 else None


def build(name: str, options: Mapping[str, Any], env: Mapping[str, str]) -> Source:
    """A RedditSource; OAuth when ``client_id_env`` is given (with ``client_secret_env``)."""
    o = Options(name, options, OPTIONS)
    subreddit, query = o.opt_str("subreddit"), o.raw("query")
    if subreddit is None and query is None:
        msg = f"connector {name!r}: give 'subreddit' (e.g. 'acme+acmefoods') and/or 'query'"
        raise OptionError(msg)
    client_id = option_secret(name, options, "client_id_env", env, required=False)
    client_secret = option_secret(
        name, options, "client_secret_env", env, required=client_id is not None
    )
    return RedditSource(
        name,
        subreddit=subreddit,
        query=None if query is None else o.get_str("query"),
        comments=o.get_bool("comments", False),
        base_url=o.opt_str("base_url"),
        auth_url=o.get_str("auth_url", f"{WEB}/api/v1/access_token"),
        client_id=client_id,
        client_secret=client_secret,
        user_agent=o.get_str("user_agent", "crisiswatch/0.1"),
        limit=o.get_int("limit", 100, maximum=100),
        max_pages=o.get_int("max_pages", 10, maximum=100),
        poll_interval_s=o.get_float("poll_interval_s", 30.0),
        late_s=o.get_float("late_s", 3600.0),
        connect_timeout_s=o.get_float("connect_timeout_s", 10.0, minimum=0.01),
        read_timeout_s=o.get_float("read_timeout_s", 30.0, minimum=0.01),
    )
