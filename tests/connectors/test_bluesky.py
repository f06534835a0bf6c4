from __future__ import annotations

import json

import pytest

from connectors.base import Batch, FatalSourceError, SourceError
from connectors.bluesky import BlueskySource, build, event_to_post
from connectors.common import OptionError
from rules.errors import InvalidPost
from tests.connectors.servers import Failure, FakeJetstream, jetstream_post, serve_ws

CLOCK = lambda: 1_800_000_000.0  # noqa: E731


def source(url: str, **kw: object) -> BlueskySource:
    opts: dict[str, object] = {"batch_wait_s": 0.3, "open_timeout_s": 1.0}
    opts.update(kw)
    return BlueskySource("b1", url=url, clock=CLOCK, **opts)  # type: ignore[arg-type]


def texts(batch: Batch) -> list[str]:
    return [p.text for p in batch.posts]


# ------------------------------------------------------------------- mapping


def test_post_create_maps_to_post() -> None:
    event = jetstream_post(
        1_725_911_162_329_308,
        "ACME recall now 召回",
        langs=["zh", "en"],
        reply={
            "root": {"uri": "at://did:plc:a/app.bsky.feed.post/1", "cid": "c1"},
            "parent": {"uri": "at://did:plc:b/app.bsky.feed.post/2", "cid": "c2"},
        },
    )
    post = event_to_post(event, ingested_at_ms=9)
    assert post is not None
    assert post.id == "bluesky:at://did:plc:kim/app.bsky.feed.post/3k1725911162329308"
    assert post.source == "bluesky"
    assert post.text == "ACME recall now 召回"
    assert post.created_at == "2026-11-27T10:00:03.120Z"
    assert post.created_at_ms == 1_795_773_603_120
    assert post.lang == "zh"
    assert post.url == "https://bsky.app/profile/did:plc:kim/post/3k1725911162329308"
    assert post.author is not None
    assert (post.author.id, post.author.handle, post.author.followers) == ("did:plc:kim", None, 0)
    assert post.reply_to == "bluesky:at://did:plc:b/app.bsky.feed.post/2"
    assert post.extra == {
        "time_us": 1_725_911_162_329_308,
        "cid": "bafy1725911162329308",
        "langs": ["zh", "en"],
    }
    assert post.ingested_at_ms == 9


def test_missing_optional_fields() -> None:
    event = jetstream_post(5)
    del event["commit"]["record"]["langs"]
    del event["commit"]["cid"]
    post = event_to_post(event, ingested_at_ms=None)
    assert post is not None and post.lang is None and post.reply_to is None
    assert post.extra == {"time_us": 5}


def test_non_post_events_are_skipped() -> None:
    delete = jetstream_post(6)
    delete["commit"]["operation"] = "delete"
    like = jetstream_post(7)
    like["commit"]["collection"] = "app.bsky.feed.like"
    identity = {"did": "did:plc:kim", "time_us": 8, "kind": "identity", "identity": {}}
    assert [event_to_post(e, ingested_at_ms=None) for e in (delete, like, identity)] == [None] * 3


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("commit", "record", "text"), None, "missing_field:commit.record.text"),
        (("commit", "record", "createdAt"), "soon", "bad_timestamp:commit.record.createdAt"),
        (("commit", "rkey"), 5, "wrong_type:commit.rkey"),
        (("did",), None, "missing_field:did"),
    ],
)
def test_malformed_post_raises(path: tuple[str, ...], value: object, reason: str) -> None:
    event = jetstream_post(9)
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidPost) as info:
        event_to_post(event, ingested_at_ms=None)
    assert info.value.reason == reason


def test_build() -> None:
    src = build("b", {"url": "ws://127.0.0.1:1/subscribe", "wanted_dids": ["did:plc:x"]}, {})
    assert src.kind == "bluesky"
    with pytest.raises(OptionError, match="wanted_dids"):
        build("b", {"wanted_dids": "did:plc:x"}, {})


# -------------------------------------------------------------------- stream


async def test_stream_skips_non_posts_and_rejects_malformed() -> None:
    fake = FakeJetstream()
    async with serve_ws(fake) as url:
        src = source(url)
        try:
            first = await src.fetch(None)
            assert first.posts == () and first.cursor is None
            await fake.wait_connected()
            fake.publish(jetstream_post(100, "one"))
            like = jetstream_post(101)
            like["commit"]["operation"] = "delete"
            fake.publish(like)
            fake.publish(jetstream_post(102, "bad", createdAt=17))
            fake.publish("{not json")
            fake.publish(jetstream_post(103, "two"))
            batch = await src.fetch(first.cursor)
            assert texts(batch) == ["one", "two"]
            assert [r.reason for r in batch.rejected] == [
                "wrong_type:commit.record.createdAt",
                "invalid_json",
            ]
            assert batch.rejected[1].payload == b"{not json"
            assert batch.cursor == {"time_us": 103}
            assert "wantedCollections=app.bsky.feed.post" in fake.paths[0]
        finally:
            await src.close()


async def test_drop_then_resume_from_cursor_without_loss_or_repeat() -> None:
    fake = FakeJetstream()
    async with serve_ws(fake) as url:
        src = source(url)
        try:
            cursor = (await src.fetch(None)).cursor
            await fake.wait_connected()
            fake.publish(jetstream_post(200, "a"))
            fake.publish(jetstream_post(201, "b"))
            fake.drop_streams()
            batch = await src.fetch(cursor)
            assert texts(batch) == ["a", "b"]
            fake.publish(jetstream_post(202, "c"))  # while disconnected
            again = await src.fetch(batch.cursor)
            assert "cursor=201" in fake.paths[-1]
            assert texts(again) == ["c"]  # 201 replayed by the server, dropped
        finally:
            await src.close()


async def test_drop_with_nothing_read_raises_retriable_disconnect() -> None:
    fake = FakeJetstream()
    async with serve_ws(fake) as url:
        src = source(url)
        try:
            await src.fetch(None)
            await fake.wait_connected()
            fake.drop_streams()
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.retriable and info.value.kind == "disconnect"
        finally:
            await src.close()


async def test_restart_from_checkpoint_neither_skips_nor_repeats() -> None:
    fake = FakeJetstream()
    async with serve_ws(fake) as url:
        src = source(url)
        await src.fetch(None)
        await fake.wait_connected()
        for t in (300, 301):
            fake.publish(jetstream_post(t, f"p{t}"))
        checkpoint = (await src.fetch(None)).cursor
        await src.close()
        for t in (302, 303):
            fake.publish(jetstream_post(t, f"p{t}"))
        again = source(url)
        try:
            batch = await again.fetch(checkpoint)
            assert texts(batch) == ["p302", "p303"]
            assert json.dumps(batch.cursor) == '{"time_us": 303}'
        finally:
            await again.close()


async def test_handshake_errors() -> None:
    fake = FakeJetstream()
    async with serve_ws(fake) as url:
        src = source(url)
        try:
            fake.failures.append(Failure(429, {"Retry-After": "4"}, "slow down"))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.kind == "http_429" and info.value.retry_after_s == 4.0
            fake.failures.append(Failure(502))
            with pytest.raises(SourceError) as info:
                await src.fetch(None)
            assert info.value.retriable and info.value.kind == "http_5xx"
            fake.failures.append(Failure(403))
            with pytest.raises(FatalSourceError):
                await src.fetch(None)
        finally:
            await src.close()
    dead = source("ws://127.0.0.1:9/subscribe")
    with pytest.raises(SourceError) as info:
        await dead.fetch(None)
    assert info.value.retriable and info.value.kind == "disconnect"
