from __future__ import annotations

import pytest

from connectors.base import FatalSourceError, SourceError
from connectors.common import OptionError, Secret
from connectors.reddit import RedditSource, build, thing_to_post
from rules.errors import InvalidPost
from tests.connectors.servers import Failure, FakeReddit, reddit_link, serve

NOW_S = 1_800_000_000.0


def source(url: str, **kw: object) -> RedditSource:
    opts: dict[str, object] = {
        "subreddit": "acme",
        "limit": 3,
        "poll_interval_s": 15.0,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
    }
    opts.update(kw)
    return RedditSource("r1", base_url=url, clock=lambda: NOW_S, **opts)  # type: ignore[arg-type]


def ids(batch) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.id for p in batch.posts]


def test_link_maps_title_selftext_author_metrics() -> None:
    thing = reddit_link(
        7,
        "ACME recall",
        selftext="Got sick &amp; angry",
        is_self=False,
        url="https://news.example/a",
    )
    post = thing_to_post(thing, ingested_at_ms=3)
    assert post.id == "reddit:t3_p7"
    assert post.text == "ACME recall\n\nGot sick &amp; angry"
    assert post.created_at == "2026-11-27T10:00:07Z"
    assert post.created_at_ms == 1_795_773_607_000
    assert post.url == "https://www.reddit.com/r/acme/comments/p7/slug/"
    assert post.author is not None and (post.author.id, post.author.handle) == ("t2_kim", "kim")
    assert post.metrics == {"likes": 5, "replies": 2}
    assert post.extra == {
        "kind": "t3",
        "subreddit": "acme",
        "over_18": False,
        "link_url": "https://news.example/a",
    }


def test_comment_and_missing_optional_fields() -> None:
    comment = {
        "kind": "t1",
        "data": {
            "name": "t1_c1",
            "body": "me too",
            "created_utc": 1_795_773_600,
            "author": "[deleted]",
            "parent_id": "t3_p7",
        },
    }
    post = thing_to_post(comment, ingested_at_ms=None)
    assert post.text == "me too" and post.author is None and post.url is None
    assert post.reply_to == "reddit:t3_p7" and post.metrics == {}


@pytest.mark.parametrize(
    ("thing", "reason"),
    [
        (reddit_link(1, created_utc="yesterday"), "bad_timestamp:data.created_utc"),
        (reddit_link(1, title=None), "missing_field:data.title"),
        ({"kind": "t5", "data": {}}, "unsupported_kind"),
        ({"kind": "t3"}, "missing_field:data"),
    ],
)
def test_malformed_things_raise(thing: object, reason: str) -> None:
    with pytest.raises(InvalidPost) as info:
        thing_to_post(thing, ingested_at_ms=None)
    assert info.value.reason == reason


def test_build_options() -> None:
    with pytest.raises(OptionError, match="subreddit"):
        build("r", {}, {})
    with pytest.raises(OptionError, match="SECRET"):
        build(
            "r",
            {"subreddit": "acme", "client_id_env": "ID", "client_secret_env": "SECRET"},
            {"ID": "i"},
        )
    src = build("r", {"query": "acme recall"}, {})
    assert src.kind == "reddit"


async def test_polls_new_items_oldest_first_and_rejects_malformed_once() -> None:
    fake = FakeReddit()
    for n in (1, 2):
        fake.publish(reddit_link(n))
    async with serve(fake) as url:
        src = source(url)
        try:
            batch = await src.fetch(None)
            assert ids(batch) == ["reddit:t3_p1", "reddit:t3_p2"]
            assert batch.wait_s == 15.0
            fake.publish(reddit_link(3, created_utc=None))
            fake.publish(reddit_link(4, "fine"))
            batch = await src.fetch(batch.cursor)
            assert ids(batch) == ["reddit:t3_p4"]
            assert [r.reason for r in batch.rejected] == ["bad_timestamp:data.created_utc"]
            again = await src.fetch(batch.cursor)
            assert again.posts == () and again.rejected == ()
            assert fake.requests[0][0] == "/r/acme/new.json"
        finally:
            await src.close()


async def test_restart_catches_up_across_pages_with_after() -> None:
    fake = FakeReddit()
    fake.publish(reddit_link(1))
    async with serve(fake) as url:
        src = source(url)
        checkpoint = (await src.fetch(None)).cursor
        await src.close()
        for n in range(2, 10):  # 8 new posts while down; pages hold 3
            fake.publish(reddit_link(n))
        again = source(url)
        try:
            batch = await again.fetch(checkpoint)
            assert ids(batch) == [f"reddit:t3_p{n}" for n in range(2, 10)]
            afters = [q.get("after") for _, q, _ in fake.requests[1:]]
            assert afters == [None, "t3_p7", "t3_p4"]
            assert (await again.fetch(batch.cursor)).posts == ()
        finally:
            await again.close()


async def test_oauth_search_and_rate_limit_headers() -> None:
    fake = FakeReddit()
    fake.publish(reddit_link(1, "ACME recall"))
    fake.publish(reddit_link(2, "unrelated"))
    fake.ratelimit = {
        "X-Ratelimit-Remaining": "0",
        "X-Ratelimit-Reset": "42",
        "X-Ratelimit-Used": "600",
    }
    async with serve(fake) as url:
        src = source(
            url,
            query="acme",
            client_id=Secret("id"),
            client_secret=Secret("sec"),
            auth_url=f"{url}/api/v1/access_token",
        )
        try:
            batch = await src.fetch(None)
            assert ids(batch) == ["reddit:t3_p1"]
            assert batch.wait_s == 42.0
            path, query, headers = fake.requests[-1]
            assert path == "/r/acme/search.json" and query["restrict_sr"] == "1"
            assert headers["Authorization"] == "bearer tok1"
            fake.fail("listing", Failure(401))
            await src.fetch(batch.cursor)  # one new token, one retry
            assert fake.tokens_issued == 2
        finally:
            await src.close()


async def test_http_errors() -> None:
    fake = FakeReddit()
    async with serve(fake) as url:
        src = source(url)
        try:
            fake.fail("listing", Failure(429, {"Retry-After": "12"}))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.kind == "http_429" and info.value.retry_after_s == 12.0
            fake.fail("listing", Failure(500))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.retriable and info.value.kind == "http_5xx"
            fake.fail("listing", Failure(404))
            with pytest.raises(FatalSourceError):
                await src.fetch(None)
            fake.fail("listing", Failure(200, body="<html>maintenance</html>"))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.retriable and info.value.kind == "protocol"
        finally:
            await src.close()
