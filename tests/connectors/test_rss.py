from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from connectors.base import FatalSourceError, SourceError
from connectors.rss import FeedError, RssSource, build, item_to_post, parse_feed
from rules.errors import InvalidPost
from tests.connectors.servers import Failure, FakeFeed, rss_feed, rss_item, serve

NOW_MS = 1_800_000_000_000

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="zh">
  <title>Blog</title><updated>2026-11-27T10:00:00Z</updated>
  <entry>
    <title type="html">ACME &lt;b&gt;召回&lt;/b&gt;</title>
    <link rel="alternate" href="https://blog.example/1"/>
    <id>tag:blog.example,2026:1</id>
    <published>2026-11-27T09:30:00+08:00</published>
    <updated>2026-11-27T09:45:00+08:00</updated>
    <author><name>Li</name></author>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>质量问题</p><p>第二段</p></div></content>
  </entry>
  <entry>
    <title>No content</title>
    <id>2</id>
    <updated>2026-11-27T10:00:00Z</updated>
    <summary>short &amp; plain</summary>
  </entry>
</feed>"""


def source(url: str) -> RssSource:
    return RssSource(
        "f1",
        url=f"{url}/feed.xml",
        poll_interval_s=60.0,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        clock=lambda: NOW_MS / 1000,
    )


def ids(batch) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.id for p in batch.posts]


def test_rss_item_maps_html_description_and_rfc822_date() -> None:
    item = ET.fromstring(
        rss_item(
            3,
            "ACME recall",
            "&lt;p&gt;Burgers &amp;amp; fries&lt;br/&gt;pulled&lt;/p&gt;",
            author="desk@news.example (Desk)",
        )
    )
    post = item_to_post(item, flavour="rss", feed_url="u", feed_lang="en", ingested_at_ms=NOW_MS)
    assert post.id == "rss:https://news.example/3"
    assert post.text == "ACME recall\n\nBurgers & fries\npulled"
    assert post.created_at == "2026-11-27T10:03:00Z"
    assert post.url == "https://news.example/3" and post.lang == "en"
    assert post.author is not None and post.author.handle == "desk@news.example (Desk)"


def test_atom_entries_map_xhtml_html_and_missing_fields() -> None:
    flavour, items, lang, date = parse_feed(ATOM.encode())
    assert (flavour, len(items), lang, date) == ("atom", 2, "zh", "2026-11-27T10:00:00Z")
    first = item_to_post(
        items[0],
        flavour=flavour,
        feed_url="https://blog.example/feed",
        feed_lang=lang,
        ingested_at_ms=NOW_MS,
    )
    assert first.id == "rss:tag:blog.example,2026:1"
    assert first.text == "ACME 召回\n\n质量问题\n\n第二段"
    assert first.created_at == "2026-11-27T09:30:00+08:00"
    assert first.url == "https://blog.example/1" and first.lang == "zh"
    second = item_to_post(
        items[1], flavour=flavour, feed_url="https://blog.example/feed", ingested_at_ms=NOW_MS
    )
    assert second.id == "rss:https://blog.example/feed#2"
    assert second.text == "No content\n\nshort & plain"
    assert second.url is None and second.author is None


def test_item_without_date_takes_feed_date_or_read_time() -> None:
    item = ET.fromstring("<item><title>t</title><guid>g1</guid></item>")
    post = item_to_post(item, flavour="rss", feed_url="u", ingested_at_ms=NOW_MS)
    assert post.created_at_ms == NOW_MS and post.extra == {"feed": "u", "date_missing": True}
    post = item_to_post(
        item,
        flavour="rss",
        feed_url="u",
        feed_date="Fri, 27 Nov 2026 08:00:00 GMT",
        ingested_at_ms=NOW_MS,
    )
    assert post.created_at == "2026-11-27T08:00:00Z"


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        ("<item><title>t</title><pubDate>someday</pubDate></item>", "bad_timestamp:pubDate"),
        ("<item><guid>x</guid></item>", "missing_field:text"),
    ],
)
def test_malformed_items_raise(xml: str, reason: str) -> None:
    with pytest.raises(InvalidPost) as info:
        item_to_post(ET.fromstring(xml), flavour="rss", feed_url="u", ingested_at_ms=NOW_MS)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "doc",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><rss><channel/></rss>',
        b"<html><body>not a feed</body></html>",
        b"<rss><channel><item>",
    ],
)
def test_unsafe_or_broken_documents_are_refused(doc: bytes) -> None:
    with pytest.raises(FeedError):
        parse_feed(doc)


async def test_conditional_get_restart_and_malformed_item() -> None:
    fake = FakeFeed(rss_feed(rss_item(1, "one"), rss_item(2, "two")))
    async with serve(fake) as url:
        src = source(url)
        try:
            batch = await src.fetch(None)
            assert [p.text for p in batch.posts] == ["one", "two"]
            assert batch.wait_s == 60.0
            assert batch.cursor is not None and batch.cursor["etag"] == '"v1"'
            same = await src.fetch(batch.cursor)
            assert same.posts == () and same.cursor == batch.cursor
            assert fake.requests[-1][2]["If-None-Match"] == '"v1"'
            assert fake.requests[-1][2]["If-Modified-Since"] == fake.last_modified
            checkpoint = batch.cursor
        finally:
            await src.close()
        fake.set(
            rss_feed(
                rss_item(1, "one"),
                rss_item(2, "two"),
                "<item><title>bad</title><guid>https://news.example/b</guid>"
                "<pubDate>never</pubDate></item>",
                rss_item(4, "four"),
            ),
            '"v2"',
        )
        again = source(url)  # restart from the checkpoint
        try:
            batch = await again.fetch(checkpoint)
            assert ids(batch) == ["rss:https://news.example/4"]
            assert [r.reason for r in batch.rejected] == ["bad_timestamp:pubDate"]
            assert b"never" in batch.rejected[0].payload
            fake.etag = '"v3"'  # same items, new etag: nothing repeats, nothing re-rejected
            batch = await again.fetch(batch.cursor)
            assert batch.posts == () and batch.rejected == ()
        finally:
            await again.close()


async def test_http_errors_and_refused_feed() -> None:
    fake = FakeFeed(rss_feed(rss_item(1)))
    async with serve(fake) as url:
        src = source(url)
        try:
            fake.fail("feed", Failure(429, {"Retry-After": "Fri, 15 Jan 2027 08:01:30 GMT"}))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.kind == "http_429"
            assert info.value.retry_after_s == 90.0  # an HTTP date, 90 s after now
            fake.fail("feed", Failure(502))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.kind == "http_5xx" and info.value.retriable
            fake.fail("feed", Failure(410))
            with pytest.raises(FatalSourceError):
                await src.fetch(None)
            fake.set('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><rss/>', '"evil"')
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.kind == "protocol" and "DOCTYPE" in str(info.value)
        finally:
            await src.close()


def test_build() -> None:
    assert build("f", {"url": "https://news.example/feed.xml"}, {}).kind == "rss"
