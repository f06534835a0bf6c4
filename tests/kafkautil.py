"""Helpers for tests that talk to the real Kafka broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    config: dict[str, str] | None = None,
) -> None:
    """Create topics (already existing ones are fine)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, partitions, 1, topic_configs=config or {})]
                )
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    n = 0
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in items]
        for fut in futures:
            await fut
            n += 1
    finally:
        await producer.stop()
    return n


async def batch_codecs(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """The compression codec of each record batch at the start of ``topic``'s partitions
    (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), from a raw fetch: a consumer decompresses
    without saying how the batches were stored."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.add_topic(topic)  # waits for the topic's metadata
        by_leader: dict[int, list[int]] = {}
        for p in range(partitions):
            leader = client.cluster.leader_for_partition(TopicPartition(topic, p))
            if leader is None or leader < 0:
                raise RuntimeError(f"{topic}-{p} has no leader")
            by_leader.setdefault(leader, []).append(p)
        codecs: list[int] = []
        for node, parts_wanted in sorted(by_leader.items()):
            wanted = [(p, 0, 1024 * 1024) for p in parts_wanted]
            request = FetchRequest(100, 1, 4 * 1024 * 1024, 0, [(topic, wanted)])
            response = await client.send(node, request)
            for _topic, parts in response.topics:
                for partition, error_code, _highwater, *part_data in parts:
                    if error_code:
                        raise for_code(error_code)(f"fetch of {topic}-{partition}")
                    records = MemoryRecords(part_data[-1])  # the message set comes last
                    while records.has_next():
                        batch = records.next_batch()
                        assert batch is not None
                        codecs.append(batch.compression_type)
        return codecs
    finally:
        await client.close()


async def consume_all(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout_s: float = 20.0,
    idle_s: float = 1.0,
) -> list[ConsumerRecord]:
    """Read a topic from the beginning.

    With ``expect``, returns as soon as that many records arrived (or at the
    timeout); without it, returns once the end offsets are reached and nothing
    new came for ``idle_s``.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] | None = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
        if not partitions:
            return records
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
                last_new = time.monotonic()
            if expect is not None:
                if len(records) >= expect:
                    break
                continue
            if time.monotonic() - last_new >= idle_s:
                ends = await consumer.end_offsets(tps)
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
    finally:
        await consumer.stop()
    return records
