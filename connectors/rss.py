"""RSS 2.0 and Atom feeds, polled with conditional GET.

Parsed with the standard library's ElementTree after refusing any document that
declares a DOCTYPE or ENTITY (no entity expansion, no external entities).
``If-None-Match`` / ``If-Modified-Since`` come from the cursor; 304 is an empty
batch. Cursor: ``{"etag", "last_modified", "seen": [item ids, newest last,
bounded]}``, so a restart neither skips nor repeats an item.

Post ids are ``rss:<guid>`` when the guid (or Atom id) is globally unique (a URL,
``urn:`` or ``tag:`` URI), else ``rss:<feed url>#<guid>``. An item without a date
takes the feed's date, else the time it was read.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from connectors.base import Batch, Cursor, Rejected, Source, SourceError
from connectors.common import (
    Clock,
    Options,
    RecentIds,
    cursor_ids,
    html_to_text,
    now_ms,
    rejected,
    rfc822_to_rfc3339,
    rfc3339,
)
from connectors.httpclient import HttpClient
from rules.errors import InvalidPost
from rules.model import Author, Post
from rules.post import format_rfc3339_ms

log = logging.getLogger(__name__)

KIND = "rss"
ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}encoded"
DC = "{http://purl.org/dc/elements/1.1/}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
OPTIONS = (
    "url",
    "user_agent",
    "max_seen",
    "max_bytes",
    "poll_interval_s",
    "connect_timeout_s",
    "read_timeout_s",
)


class FeedError(Exception):
    """The document is not a feed we can read (or is unsafe to parse)."""


# ------------------------------------------------------------------- parsing


def parse_feed(raw: bytes) -> tuple[str, list[ET.Element], str | None, str | None]:
    """Bytes -> (``rss``|``atom``, item elements, feed language, feed date)."""
    if _FORBIDDEN.search(raw):
        msg = "feed declares a DOCTYPE or ENTITY; refused (entity expansion is not allowed)"
        raise FeedError(msg)
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        msg = f"feed is not well-formed XML: {exc}"
        raise FeedError(msg) from None
    if root.tag == "rss":
        channel = root.find("channel")
        if channel is None:
            msg = "RSS document has no <channel>"
            raise FeedError(msg)
        date = _text(channel, "lastBuildDate") or _text(channel, "pubDate")
        return "rss", channel.findall("item"), _text(channel, "language"), date
    if root.tag == f"{ATOM}feed":
        return (
            "atom",
            root.findall(f"{ATOM}entry"),
            root.get(XML_LANG),
            _text(root, f"{ATOM}updated"),
        )
    msg = f"not an RSS 2.0 or Atom feed: root element is <{root.tag}>"
    raise FeedError(msg)


def _text(el: ET.Element, tag: str) -> str | None:
    child = el.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _atom_text(el: ET.Element | None) -> str | None:
    """An Atom text construct (type text, html or xhtml) -> plain text."""
    if el is None:
        return None
    kind = el.get("type", "text")
    if kind == "xhtml":
        div = copy.deepcopy(el)
        for node in div.iter():
            node.tag = node.tag.rsplit("}", 1)[-1]  # xhtml:p -> p, so block tags keep breaks
        return html_to_text("".join(ET.tostring(c, encoding="unicode") for c in div)) or None
    text = (el.text or "").strip()
    return (html_to_text(text) if kind == "html" else text) or None


def native_id(guid: str, feed_url: str) -> str:
    """The Post id's native part: the guid when globally unique, else scoped to the feed."""
    if "://" in guid or guid.startswith(("urn:", "tag:")):
        return guid
    return f"{feed_url}#{guid}"


def item_to_post(
    item: ET.Element,
    *,
    flavour: str,
    feed_url: str,
    feed_lang: str | None = None,
    feed_date: str | None = None,
    ingested_at_ms: int,
) -> Post:
    """An RSS ``<item>`` or Atom ``<entry>`` -> Post; raises InvalidPost when unusable."""
    if flavour == "atom":
        title = _atom_text(item.find(f"{ATOM}title"))
        body = _atom_text(item.find(f"{ATOM}content")) or _atom_text(item.find(f"{ATOM}summary"))
        link_el = item.find(f"{ATOM}link[@rel='alternate']")
        if link_el is None:
            link_el = item.find(f"{ATOM}link")
        link = link_el.get("href") if link_el is not None else None
        guid = _text(item, f"{ATOM}id") or link
        date = _text(item, f"{ATOM}published") or _text(item, f"{ATOM}updated")
        author = _text(item, f"{ATOM}author/{ATOM}name")
        lang = item.get(XML_LANG) or feed_lang
        date_field = "published"
    else:
        title = _text(item, "title")
        raw_body = _text(item, CONTENT) or _text(item, "description")
        body = html_to_text(raw_body) if raw_body else None
        link = _text(item, "link")
        guid = _text(item, "guid") or link
        date = _text(item, "pubDate") or _text(item, f"{DC}date")
        author = _text(item, "author") or _text(item, f"{DC}creator")
        lang = feed_lang
        date_field = "pubDate"
    if title:
        title = html_to_text(title)
    if title and body and body.startswith(title):
        text = body  # many feeds repeat the title in the description
    else:
        text = "\n\n".join(p for p in (title, body) if p)
    if not text:
        msg = "missing_field:text"
        raise InvalidPost(msg, "item has neither a title nor a description")
    if guid is None:
        guid = "sha1:" + _sha1(f"{title}\n{date}".encode())
    created_at, created_ms = _date(date or feed_date, date_field, ingested_at_ms)
    return Post(
        id=f"{KIND}:{native_id(guid, feed_url)}",
        source=KIND,
        text=text,
        created_at_ms=created_ms,
        created_at=created_at,
        lang=lang,
        url=link,
        author=Author(handle=author) if author else None,
        ingested_at_ms=ingested_at_ms,
        extra={"feed": feed_url, "date_missing": True} if date is None else {"feed": feed_url},
    )


def _date(value: str | None, field: str, fallback_ms: int) -> tuple[str, int]:
    if value is None:
        return format_rfc3339_ms(fallback_ms), fallback_ms
    if value[:1].isdigit():
        return rfc3339(value, field)
    return rfc822_to_rfc3339(value, field)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _item_key(item: ET.Element, flavour: str) -> str:
    """The item's identity for ``seen`` (guid, else link, else its bytes' hash)."""
    if flavour == "atom":
        key = _text(item, f"{ATOM}id")
    else:
        key = _text(item, "guid") or _text(item, "link")
    if key:
        return key
    return "sha1:" + _sha1(ET.tostring(item))


# -------------------------------------------------------------------- source


class RssSource:
    """A Source polling one RSS or Atom feed."""

    kind = KIND

    def __init__(
        self,
        name: str,
        *,
        url: str,
        max_seen: int = 500,
        max_bytes: int = 10_000_000,
        poll_interval_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
        user_agent: str = "crisiswatch",
        clock: Clock = time.time,
    ) -> None:
        self.name, self.url = name, url
        self.max_seen, self.max_bytes = max_seen, max_bytes
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self._http = HttpClient(
            f"rss {name}",
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            user_agent=user_agent,
            clock=clock,
        )

    async def fetch(self, cursor: Cursor) -> Batch:
        seen_ids = cursor_ids(cursor, "seen")
        headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9"}
        etag = cursor.get("etag") if cursor else None
        modified = cursor.get("last_modified") if cursor else None
        if isinstance(etag, str):
            headers["If-None-Match"] = etag
        if isinstance(modified, str):
            headers["If-Modified-Since"] = modified
        status, resp_headers, body = await self._http.request(
            "GET", self.url, headers=headers, ok=(200, 304)
        )
        if status == 304:
            return Batch((), dict(cursor) if cursor else None, (), self.poll_interval_s)
        if len(body) > self.max_bytes:
            msg = f"{self.name}: GET {self.url}: feed is {len(body)} bytes (limit {self.max_bytes})"
            raise SourceError(msg, kind="protocol")
        try:
            flavour, items, feed_lang, feed_date = parse_feed(body)
        except FeedError as exc:
            msg = f"{self.name}: GET {self.url}: {exc}"
            raise SourceError(msg, kind="protocol") from None
        # never forget an item still in the feed, or it would come back as new
        seen = RecentIds(seen_ids, max(self.max_seen, len(items)))
        posts: list[Post] = []
        bad: list[Rejected] = []
        ingested = now_ms(self.clock)
        for item in reversed(items):  # feeds list newest first
            key = _item_key(item, flavour)
            if key in seen:
                continue
            seen.add(key)
            try:
                posts.append(
                    item_to_post(
                        item,
                        flavour=flavour,
                        feed_url=self.url,
                        feed_lang=feed_lang,
                        feed_date=feed_date,
                        ingested_at_ms=ingested,
                    )
                )
            except InvalidPost as exc:
                bad.append(rejected(exc, ET.tostring(item)))
        posts.sort(key=lambda p: p.created_at_ms)
        lower = {k.lower(): v for k, v in resp_headers.items()}
        new_cursor: dict[str, Any] = {
            "etag": lower.get("etag"),
            "last_modified": lower.get("last-modified"),
            "seen": seen.to_list(),
        }
        newest = max((p.created_at_ms for p in posts), default=None)
        return Batch(tuple(posts), new_cursor, tuple(bad), self.poll_interval_s, newest)

    async def close(self) -> None:
        await self._http.close()


def build(name: str, options: Mapping[str, Any], env: Mapping[str, str]) -> Source:
    """An RssSource polling ``url``."""
    o = Options(name, options, OPTIONS)
    return RssSource(
        name,
        url=o.get_str("url"),
        user_agent=o.get_str("user_agent", "crisiswatch"),
        max_seen=o.get_int("max_seen", 500, maximum=100_000),
        max_bytes=o.get_int("max_bytes", 10_000_000),
        poll_interval_s=o.get_float("poll_interval_s", 300.0),
        connect_timeout_s=o.get_float("connect_timeout_s", 10.0, minimum=0.01),
        read_timeout_s=o.get_float("read_timeout_s", 30.0, minimum=0.01),
    )
