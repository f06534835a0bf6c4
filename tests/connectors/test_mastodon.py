from __future__ import annotations

import pytest

from connectors.base import FatalSourceError, SourceError
from connectors.common import OptionError, Secret
from connectors.mastodon import MastodonSource, build, status_to_post
from rules.errors import InvalidPost
from tests.connectors.servers import Failure, FakeMastodon, mastodon_status, serve

CLOCK = lambda: 1_800_000_000.0  # noqa: E731


def source(base_url: str, **kw: object) -> MastodonSource:
    opts: dict[str, object] = {
        "batch_wait_s": 0.3,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.0,
        "stall_timeout_s": 1.0,
    }
    opts.update(kw)
    return MastodonSource("m1", base_url=base_url, clock=CLOCK, **opts)  # type: ignore[arg-type]


def ids(batch) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.id for p in batch.posts]


# ------------------------------------------------------------------- mapping


def test_status_maps_html_author_metrics_and_reply() -> None:
    status = mastodon_status(
        113224,
        created="2026-11-27T10:00:03.000Z",
        content='<p>Food poisoning from an <a href="https://x"><span>@acme</span></a> burger'
        "&amp; fries.<br>Recall this now!</p><p>second &lt;para&gt;</p>",
        in_reply_to_id="113200",
        tags=[{"name": "acme", "url": "https://social.example/tags/acme"}],
    )
    post = status_to_post(status, instance="social.example", ingested_at_ms=5)
    assert post.id == "mastodon:113224"
    assert post.source == "mastodon"
    assert post.text == (
        "Food poisoning from an @acme burger& fries.\nRecall this now!\n\nsecond <para>"
    )
    assert post.created_at == "2026-11-27T10:00:03.000Z"
    assert post.created_at_ms == 1_795_773_603_000
    assert post.author is not None
    assert (post.author.id, post.author.handle, post.author.followers) == (
        "109",
        "kim@social.example",
        5120,
    )
    assert post.metrics == {"likes": 3, "reposts": 12, "replies": 1}
    assert post.reply_to == "mastodon:113200"
    assert post.url == "https://social.example/@kim/113224"
    assert post.lang == "en"
    assert post.ingested_at_ms == 5
    assert post.extra is not None and post.extra["tags"] == ["acme"]


def test_status_missing_optional_fields() -> None:
    status = {
        "id": "7",
        "created_at": "2026-11-27T10:00:00Z",
        "content": "plain",
        "account": {"id": "1", "acct": "bob@other.example"},
    }
    post = status_to_post(status, instance="social.example", ingested_at_ms=None)
    assert post.lang is None and post.url is None and post.reply_to is None
    assert post.metrics == {}
    assert post.author is not None
    assert post.author.handle == "bob@other.example"
    assert post.author.followers == 0


def test_status_spoiler_and_reblog() -> None:
    inner = mastodon_status(5, "boosted text", spoiler_text="")
    status = mastodon_status(6, "", reblog=inner, spoiler_text="CW food")
    post = status_to_post(status, instance=None, ingested_at_ms=None)
    assert post.text == "boosted text"
    assert post.extra is not None and post.extra["reblog_of"] == "5"
    cw = status_to_post(
        mastodon_status(8, "body", spoiler_text="CW"), instance=None, ingested_at_ms=None
    )
    assert cw.text == "CW\n\nbody"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": None}, "missing_field:id"),
        ({"id": 5}, "wrong_type:id"),
        ({"created_at": "yesterday"}, "bad_timestamp:created_at"),
        ({"account": "kim"}, "wrong_type:account"),
        ({"content": ["x"]}, "wrong_type:content"),
    ],
)
def test_malformed_status_raises(change: dict[str, object], reason: str) -> None:
    status = mastodon_status(1)
    status.update(change)
    with pytest.raises(InvalidPost) as info:
        status_to_post(status, instance=None, ingested_at_ms=None)
    assert info.value.reason == reason


def test_build_validates_options() -> None:
    src = build("m", {"base_url": "https://social.example", "token_env": "TOK"}, {"TOK": "s3cr3t"})
    assert src.name == "m" and src.kind == "mastodon"
    assert "s3cr3t" not in repr(vars(src))
    with pytest.raises(OptionError, match="unknown option"):
        build("m", {"base_url": "https://x", "colour": 1}, {})
    with pytest.raises(OptionError, match="needs option 'tag'"):
        build("m", {"base_url": "https://x", "timeline": "hashtag"}, {})
    with pytest.raises(OptionError, match="TOK"):
        build("m", {"base_url": "https://x", "token_env": "TOK"}, {})


# -------------------------------------------------------------------- stream


async def test_stream_delivers_updates_skips_heartbeats_and_rejects_malformed() -> None:
    fake = FakeMastodon()
    async with serve(fake) as url:
        src = source(url, token=Secret("tok-1"))
        try:
            first = await src.fetch(None)
            assert first.posts == ()
            await fake.wait_connected()
            fake.push(b":thump\n\n")
            fake.publish(mastodon_status(10, "one <b>bold</b>"))
            fake.push_event("update", '{"id": "11", "created_at": "bad"}')
            fake.push_event("delete", "9")
            fake.publish(mastodon_status(12, "two"))
            batch = await src.fetch(first.cursor)
            assert ids(batch) == ["mastodon:10", "mastodon:12"]
            assert batch.posts[0].text == "one bold"
            assert [r.reason for r in batch.rejected] == ["bad_timestamp:created_at"]
            assert b'"id":"11"' in batch.rejected[0].payload.replace(b" ", b"")
            assert batch.cursor is not None and batch.cursor["last_id"] == "12"
            assert batch.newest_event_ms == batch.posts[1].created_at_ms
            stream_headers = [h for p, _, h in fake.requests if "/streaming/" in p]
            assert stream_headers[0]["Authorization"] == "Bearer tok-1"
        finally:
            await src.close()


async def test_dropped_stream_reconnects_and_catches_up_without_loss_or_repeat() -> None:
    fake = FakeMastodon()
    async with serve(fake) as url:
        src = source(url, page_limit=2)
        try:
            cursor = (await src.fetch(None)).cursor
            await fake.wait_connected()
            fake.publish(mastodon_status(20))
            fake.publish(mastodon_status(21))
            fake.drop_streams()
            batch = await src.fetch(cursor)
            assert ids(batch) == ["mastodon:20", "mastodon:21"]
            cursor = batch.cursor
            # published while we are disconnected: must come through the REST catch-up
            for sid in (22, 23, 24):
                fake.publish(mastodon_status(sid))
            seen: list[str] = []
            modes = []
            for _ in range(4):
                batch = await src.fetch(cursor)
                seen += ids(batch)
                assert batch.cursor is not None
                modes.append(batch.cursor["mode"])
                cursor = batch.cursor
            assert seen == ["mastodon:22", "mastodon:23", "mastodon:24"]
            assert modes[:2] == ["catchup", "stream"]
            rest = [q for p, q, _ in fake.requests if p.endswith("/timelines/public")]
            assert [q.get("min_id") for q in rest] == [None, "21", "23"]
            fake.publish(mastodon_status(25))
            batch = await src.fetch(cursor)
            assert ids(batch) == ["mastodon:25"]
        finally:
            await src.close()


async def test_drop_with_nothing_read_raises_retriable_disconnect() -> None:
    fake = FakeMastodon()
    async with serve(fake) as url:
        src = source(url)
        try:
            cursor = (await src.fetch(None)).cursor
            await fake.wait_connected()
            fake.drop_streams()
            with pytest.raises(SourceError) as info:
                await src.fetch(cursor)
            assert info.value.retriable and info.value.kind == "disconnect"
            fake.publish(mastodon_status(30))  # while disconnected, before any post was seen
            batch = await src.fetch(cursor)
            assert ids(batch) == ["mastodon:30"]
        finally:
            await src.close()


async def test_stalled_stream_is_a_retriable_disconnect() -> None:
    fake = FakeMastodon()
    async with serve(fake) as url:
        src = source(url, stall_timeout_s=0.2, batch_wait_s=0.6)
        try:
            cursor = (await src.fetch(None)).cursor  # connected; the server then says nothing
            with pytest.raises(SourceError) as info:
                await src.fetch(cursor)
            assert info.value.retriable and info.value.kind == "disconnect"
            assert "Timeout" in str(info.value)
        finally:
            await src.close()


async def test_restart_from_checkpoint_neither_skips_nor_repeats() -> None:
    fake = FakeMastodon()
    async with serve(fake) as url:
        src = source(url)
        cursor = (await src.fetch(None)).cursor
        await fake.wait_connected()
        fake.publish(mastodon_status(40))
        fake.publish(mastodon_status(41))
        batch = await src.fetch(cursor)
        assert ids(batch) == ["mastodon:40", "mastodon:41"]
        checkpoint = batch.cursor
        await src.close()
        fake.publish(mastodon_status(42))  # while the connector is down
        fake.publish(mastodon_status(43))
        again = source(url)
        try:
            seen: list[str] = []
            cursor = checkpoint
            for _ in range(2):
                batch = await again.fetch(cursor)
                seen += ids(batch)
                cursor = batch.cursor
            await fake.wait_connected()
            fake.publish(mastodon_status(44))
            seen += ids(await again.fetch(cursor))
            assert seen == ["mastodon:42", "mastodon:43", "mastodon:44"]
        finally:
            await again.close()


# ------------------------------------------------------------------- errors


async def test_rate_limit_and_server_errors() -> None:
    fake = FakeMastodon()
    async with serve(fake) as url:
        src = source(url)
        try:
            fake.fail("stream", Failure(503))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.retriable and info.value.kind == "http_5xx"
            fake.fail("rest", Failure(429, {"Retry-After": "7"}))
            with pytest.raises(SourceError) as info:
                await src.fetch({"last_id": "1", "mode": "stream", "recent": []})
            assert info.value.retriable and info.value.kind == "http_429"
            assert info.value.retry_after_s == 7.0
            fake.fail("stream", Failure(401, body='{"error": "The access token is invalid"}'))
            with pytest.raises(FatalSourceError) as fatal:
                await src.fetch(None)
            assert not fatal.value.retriable and fatal.value.kind == "auth"
            assert "401" in str(fatal.value) and "access token" in str(fatal.value)
        finally:
            await src.close()


async def test_poll_mode_and_fallback_when_streaming_is_refused() -> None:
    fake = FakeMastodon()
    for sid in (50, 51, 52):
        fake.publish(mastodon_status(sid))
    async with serve(fake) as url:
        src = source(url, mode="poll", poll_interval_s=5.0, timeline="hashtag", tag="acme")
        try:
            batch = await src.fetch(None)
            assert ids(batch) == ["mastodon:50", "mastodon:51", "mastodon:52"]
            assert batch.wait_s == 5.0
            assert fake.requests[-1][0] == "/api/v1/timelines/tag/acme"
            assert (await src.fetch(batch.cursor)).posts == ()
        finally:
            await src.close()
        src = source(url, poll_interval_s=5.0)
        try:
            fake.fail("stream", Failure(404))
            fake.publish(mastodon_status(53))
            batch = await src.fetch({"last_id": "51", "mode": "stream", "recent": []})
            assert ids(batch) == ["mastodon:52", "mastodon:53"]
            assert batch.cursor is not None and batch.cursor["mode"] == "poll"
        finally:
            await src.close()
