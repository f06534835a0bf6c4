from __future__ import annotations

import pytest

from connectors.base import FatalSourceError, SourceError
from connectors.common import OptionError, Secret
from connectors.x import XSource, build, rules_diff, tweet_to_post
from rules.errors import InvalidPost
from tests.connectors.servers import Failure, FakeX, serve, x_message

NOW_S = 1_800_000_000.0
RULES = ({"value": "acme recall", "tag": "acme"}, {"value": "艾克美", "tag": "acme-zh"})


def source(url: str, **kw: object) -> XSource:
    opts: dict[str, object] = {
        "batch_wait_s": 0.3,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        "stall_timeout_s": 1.0,
        "rules": RULES,
    }
    opts.update(kw)
    return XSource("x1", token=Secret("bt"), base_url=url, clock=lambda: NOW_S, **opts)  # type: ignore[arg-type]


def test_tweet_maps_author_metrics_reply_and_rules() -> None:
    msg = x_message(
        1_600_000_000_000_000_001,
        "ACME recall &amp; refund",
        referenced_tweets=[{"type": "replied_to", "id": "1599"}],
    )
    post = tweet_to_post(msg, ingested_at_ms=4)
    assert post.id == "x:1600000000000000001"
    assert post.text == "ACME recall &amp; refund"  # X text is plain (entities kept as sent)
    assert post.created_at_ms == 1_795_773_603_000
    assert post.author is not None
    assert (post.author.id, post.author.handle, post.author.followers) == (
        "2244994945",
        "kim",
        5120,
    )
    assert post.metrics == {"likes": 3, "reposts": 12, "replies": 1, "views": 4000}
    assert post.reply_to == "x:1599"
    assert post.url == "https://x.com/kim/status/1600000000000000001"
    assert post.extra == {"matching_rules": ["acme"], "conversation_id": "1600000000000000001"}


def test_tweet_missing_optional_fields() -> None:
    msg = {"data": {"id": "5", "text": "hi", "created_at": "2026-11-27T10:00:00Z"}}
    post = tweet_to_post(msg, ingested_at_ms=None)
    assert post.lang is None and post.metrics == {} and post.reply_to is None
    assert post.author is not None and post.author.handle is None and post.author.followers == 0
    assert post.url == "https://x.com/i/web/status/5"


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        ({"data": {"id": "1", "text": "x"}}, "missing_field:data.created_at"),
        (
            {"data": {"id": 1, "text": "x", "created_at": "2026-11-27T10:00:00Z"}},
            "wrong_type:data.id",
        ),
        ({"includes": {}}, "missing_field:data"),
        ([1, 2], "not_an_object"),
    ],
)
def test_malformed_tweet_raises(msg: object, reason: str) -> None:
    with pytest.raises(InvalidPost) as info:
        tweet_to_post(msg, ingested_at_ms=None)
    assert info.value.reason == reason


def test_rules_diff() -> None:
    current = [
        {"id": "1", "value": "acme recall", "tag": "acme"},
        {"id": "2", "value": "old rule", "tag": "old"},
    ]
    add, delete = rules_diff(list(RULES), current)
    assert add == [{"value": "艾克美", "tag": "acme-zh"}]
    assert delete == ["2"]


def test_build_needs_a_bearer_token() -> None:
    with pytest.raises(OptionError, match="X_TOKEN"):
        build("x", {"bearer_env": "X_TOKEN"}, {})
    with pytest.raises(OptionError, match="rules"):
        build("x", {"bearer_env": "X_TOKEN", "rules": [{"tag": "t"}]}, {"X_TOKEN": "abc"})
    src = build("x", {"bearer_env": "X_TOKEN", "rules": ["acme"]}, {"X_TOKEN": "abc"})
    assert src.kind == "x" and "abc" not in repr(vars(src))


async def test_syncs_rules_then_streams_ndjson_with_keepalives() -> None:
    fake = FakeX(
        rules=[{"value": "old rule", "tag": "old"}, {"value": "acme recall", "tag": "acme"}]
    )
    async with serve(fake) as url:
        src = source(url)
        try:
            first = await src.fetch(None)
            assert first.posts == ()
            assert sorted((r["value"], r["tag"]) for r in fake.rules) == sorted(
                (r["value"], r["tag"]) for r in RULES
            )
            assert [list(p) for p in fake.rule_posts] == [["delete"], ["add"]]
            stream_req = next(r for r in fake.requests if r[0] == "/2/tweets/search/stream")
            assert stream_req[1]["expansions"] == "author_id"
            assert "public_metrics" in stream_req[1]["tweet.fields"]
            assert stream_req[2]["Authorization"] == "Bearer bt"
            await fake.wait_connected()
            fake.push(b"\r\n")
            fake.publish(x_message(11, "one"))
            fake.publish('{"data": {"id": "12"')
            fake.publish(x_message(13, "two", created_at="not a time"))
            fake.push(b"\r\n")
            fake.publish(x_message(14, "three"))
            batch = await src.fetch(first.cursor)
            assert [p.text for p in batch.posts] == ["one", "three"]
            assert [r.reason for r in batch.rejected] == [
                "invalid_json",
                "bad_timestamp:data.created_at",
            ]
            assert batch.cursor is not None and batch.cursor["last_id"] == "14"
        finally:
            await src.close()


async def test_drop_reconnect_dedup_and_restart() -> None:
    fake = FakeX()
    async with serve(fake) as url:
        src = source(url, sync_rules=False)
        try:
            cursor = (await src.fetch(None)).cursor
            await fake.wait_connected()
            fake.publish(x_message(21, "a"))
            fake.drop_streams()
            batch = await src.fetch(cursor)
            assert [p.id for p in batch.posts] == ["x:21"]
            second = await src.fetch(batch.cursor)  # reconnects
            assert second.posts == () and second.cursor == batch.cursor
            assert [r[0] for r in fake.requests].count("/2/tweets/search/stream") == 2
            checkpoint = second.cursor
        finally:
            await src.close()
        again = source(url, sync_rules=False)
        try:
            first = await again.fetch(checkpoint)
            assert first.posts == ()
            await fake.wait_connected()
            fake.publish(x_message(21, "a"))  # X re-sends after the reconnect
            fake.publish(x_message(22, "b"))
            batch = await again.fetch(first.cursor)
            assert [p.id for p in batch.posts] == ["x:22"]
        finally:
            await again.close()


async def test_rate_limit_uses_x_rate_limit_reset_and_errors() -> None:
    fake = FakeX()
    async with serve(fake) as url:
        src = source(url)
        try:
            fake.fail("rules", Failure(429, {"x-rate-limit-reset": str(int(NOW_S) + 30)}))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.kind == "http_429" and info.value.retry_after_s == 30.0
            fake.fail("stream", Failure(503))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.retriable and info.value.kind == "http_5xx"
            fake.fail("stream", Failure(401, body='{"title": "Unauthorized"}'))
            with pytest.raises(FatalSourceError) as fatal:
                await src.fetch(None)
            assert fatal.value.kind == "auth" and "Unauthorized" in str(fatal.value)
            await src.fetch(None)
            await fake.wait_connected()
            fake.publish('{"errors": [{"title": "operational-disconnect"}]}')
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.kind == "disconnect" and "operational-disconnect" in str(info.value)
        finally:
            await src.close()
