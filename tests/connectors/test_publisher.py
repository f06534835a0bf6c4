"""Publisher through the real broker: keys, values, DLQ JSON, compression, back-pressure."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest

from connectors.base import Rejected
from connectors.publisher import Publisher, dead_letter_value
from connectors.settings import KafkaSettings
from rules.post import decode_post, encode_post
from tests.connectors.framework_helpers import kafka_settings, make_post
from tests.kafkautil import batch_codecs, consume_all

ZSTD = 4
"""The record batch attribute of zstd compression."""


def test_dead_letter_value_follows_the_contract() -> None:
    value = orjson.loads(
        dead_letter_value(
            Rejected("invalid_json", "line 3: not JSON", b"{oops"),
            stage="connector:replay",
            topic="crisiswatch.posts",
            received_at_ms=1_795_000_000_123,
        )
    )
    assert value == {
        "reason": "invalid_json",
        "detail": "line 3: not JSON",
        "stage": "connector:replay",
        "topic": "crisiswatch.posts",
        "partition": None,
        "offset": None,
        "received_at": "2026-11-18T11:06:40.123Z",
        "payload_b64": base64.b64encode(b"{oops").decode(),
    }


@pytest.mark.integration
async def test_publish_batch_keys_values_and_dead_letter(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = await kafka_settings(kafka_bootstrap, topic_prefix)
    posts = [make_post(i) for i in range(50)]
    async with Publisher(settings, max_in_flight=8) as publisher:
        await publisher.publish_batch(posts)
        await publisher.dead_letter(
            Rejected("missing_field:text", "item 1: no text", b'{"id":"x"}'), stage="connector:t"
        )
    records = await consume_all(kafka_bootstrap, settings.posts_topic, expect=50)
    assert sorted(r.key for r in records) == sorted(p.id.encode() for p in posts)
    by_key = {r.key: r.value for r in records}
    for post in posts:
        assert by_key[post.id.encode()] == encode_post(post)
        assert decode_post(by_key[post.id.encode()]) == post
    codecs = await batch_codecs(kafka_bootstrap, settings.posts_topic, settings.topic_partitions)
    assert codecs and set(codecs) == {ZSTD}  # stored as sent: zstd batches
    dlq = await consume_all(kafka_bootstrap, settings.dlq_topic, expect=1)
    letter = orjson.loads(dlq[0].value)
    assert letter["reason"] == "missing_field:text"
    assert letter["stage"] == "connector:t"
    assert letter["topic"] == settings.posts_topic
    assert base64.b64decode(letter["payload_b64"]) == b'{"id":"x"}'


class _SlowProducer:
    """Acks only when the test releases it: shows publish() blocks at max_in_flight."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.release = asyncio.Event()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sent.append(key)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def ack() -> None:
            await self.release.wait()
            fut.set_result(None)

        asyncio.get_running_loop().create_task(ack())
        return fut


async def test_publish_applies_back_pressure_at_max_in_flight() -> None:
    fake = _SlowProducer()
    publisher = Publisher(KafkaSettings(), max_in_flight=3, producer_factory=lambda: fake)  # type: ignore[arg-type,return-value]
    await publisher.start()
    tasks = [await publisher.publish(make_post(i)) for i in range(3)]
    fourth = asyncio.create_task(publisher.publish(make_post(3)))
    await asyncio.sleep(0.05)
    assert not fourth.done()  # blocked: 3 unacknowledged posts in flight
    assert len(fake.sent) == 3
    fake.release.set()
    await asyncio.gather(*tasks)
    await (await fourth)
    assert fake.sent == [b"test:0", b"test:1", b"test:2", b"test:3"]
    await publisher.stop()
