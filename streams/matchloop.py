"""The match stage's consumer: posts in, one batched record per matches partition out.

Posts are read with a plain aiokafka consumer (its own consumer group,
``<app id>-match``) rather than a faust stream: the stage is stateless, and
faust's per-message machinery cost more than matching itself.  Each batch
becomes ONE record per matches partition, holding that partition's hits and
then the watermark tick, so the detector sees hits before the tick that
covers them.  Offsets are committed only after every record of the batch
(matches and dead letters) is acknowledged, in order, while the next batch is
matched: at-least-once, and the detector drops repeated post ids.

The stage sends with a producer of its own.  aiokafka keeps one request in
flight per broker, so on the app's producer every matches record waited behind
the state write-backs (hundreds of kilobytes of changelog every few seconds),
and the detect stage, and the alerts, waited for the matches records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from rules.model import Hit
from streams.codecs import Tick, encode_batch
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.stages import MatchStage, partition_for

log = logging.getLogger(__name__)

BATCH_MAX = 2000
PRODUCER_BATCH_BYTES = 256 * 1024
"""A matches record holds a whole batch's hits for one partition (tens of kilobytes)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class MatchLoop:
    """Consume posts, match, send batched hits + ticks, commit."""

    def __init__(
        self,
        settings: Settings,
        stage: MatchStage,
        metrics: WorkerMetrics,
        *,
        sender: str,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.metrics = metrics
        self.sender = sender
        self.topic = settings.topic("posts")
        self.matches_topic = settings.topic("matches")
        self.dead_topic = settings.topic("posts.dlq")
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.next_offset: dict[int, int] = {}
        self._pending: asyncio.Future[None] | None = None
        """The previous batch's acknowledgements and offset commit, still in flight."""

    async def run(self) -> None:
        security = self.settings.security.aiokafka_kwargs()
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.app_id}-match",
            client_id=f"{self.sender}-match",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_MAX,
            metadata_max_age_ms=5_000,
            **security,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.sender}-match",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_batch_size=PRODUCER_BATCH_BYTES,
            metadata_max_age_ms=5_000,
            **security,
        )
        async with contextlib.AsyncExitStack() as stack:
            await producer.start()
            stack.push_async_callback(producer.stop)
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            self.consumer, self.producer = consumer, producer
            log.info("match stage consuming %s", self.topic)
            try:
                while True:
                    batches = await consumer.getmany(timeout_ms=100, max_records=BATCH_MAX)
                    if batches:
                        await self._process(consumer, batches)
            finally:
                pending, self._pending = self._pending, None
                if pending is not None:
                    with contextlib.suppress(Exception):
                        await pending  # the last batch's commit
                self.consumer = self.producer = None

    async def send_matches(self, partition: int, value: bytes) -> Awaitable[Any]:
        """Send one matches record; returns its acknowledgement (awaitable)."""
        assert self.producer is not None
        return await self.producer.send(self.matches_topic, value=value, partition=partition)

    async def send_dead(self, key: bytes | None, value: bytes) -> Awaitable[Any]:
        assert self.producer is not None
        return await self.producer.send(self.dead_topic, value=value, key=key)

    async def _process(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]
    ) -> None:
        records = [r for recs in batches.values() for r in recs]
        out = self.stage.process(records)
        offsets = {tp: recs[-1].offset + 1 for tp, recs in batches.items()}
        n = self.settings.partitions
        async with self.lock:
            self.stage.commit_event_times(out.event_times)
            for tp, offset in offsets.items():
                self.next_offset[tp.partition] = offset
            tick = Tick(self.sender, self.stage.clock.report(_now_ms(), await self.busy()))
            by_partition: dict[int, list[Hit]] = {}
            for hit in out.hits:
                by_partition.setdefault(partition_for(hit.brand, n), []).append(hit)
            # one producer, so a partition's records stay in order: a tick sent now
            # follows the hits of every earlier batch, acknowledged or not
            acks = [
                await self.send_matches(q, encode_batch(by_partition.get(q, []), tick))
                for q in range(n)
            ]
            acks += [
                await self.send_dead(key, orjson.dumps(dead)) for key, dead in out.dead_letters
            ]
        # the acknowledgements and the offset commit (two round trips) overlap the next
        # batch; the commits stay in order, each after its batch's records are acknowledged
        confirm = asyncio.ensure_future(self._confirm(consumer, acks, offsets, self._pending))
        previous, self._pending = self._pending, confirm
        if previous is not None:
            await previous  # at most one batch in flight; raises if its sends failed

    async def _confirm(
        self,
        consumer: AIOKafkaConsumer,
        acks: list[Awaitable[Any]],
        offsets: dict[TopicPartition, int],
        previous: asyncio.Future[None] | None,
    ) -> None:
        """Commit ``offsets`` once every record of their batch is acknowledged (and the
        previous batch's commit is done)."""
        await asyncio.gather(*acks)
        if previous is not None:
            await previous
        # partitions revoked since the batch was read are the new owner's to commit
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError):
            # the group rebalanced meanwhile: the new owner re-reads these posts, and
            # the detector drops the repeated post ids
            log.warning("offset commit failed after a rebalance; posts will be re-read")

    def assigned(self) -> set[int]:
        consumer = self.consumer
        if consumer is None:
            return set()
        return {tp.partition for tp in consumer.assignment()}

    async def lag(self) -> dict[int, int | None]:
        """Records not yet read per assigned posts partition (None: not known yet)."""
        consumer = self.consumer
        if consumer is None:
            return {}
        out: dict[int, int | None] = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = self.next_offset.get(tp.partition)
            if position is None:
                try:
                    position = await consumer.position(tp)
                except KafkaError:
                    position = None
            if highwater is None or position is None:
                out[tp.partition] = None
            else:
                out[tp.partition] = max(0, highwater - position)
        return out

    async def busy(self) -> frozenset[int]:
        """Partitions with records waiting: never idle."""
        return frozenset(p for p, lag in (await self.lag()).items() if lag is None or lag > 0)

    async def send_tick(self) -> None:
        """A tick on its own, for when no posts flow (idle partitions, quiet brands)."""
        if self.consumer is None:
            return
        busy = await self.busy()
        async with self.lock:
            self.stage.clock.assign(self.assigned(), _now_ms())
            report = self.stage.clock.report(_now_ms(), busy)
            if not report:
                return
            value = encode_batch([], Tick(self.sender, report))
            acks = [await self.send_matches(q, value) for q in range(self.settings.partitions)]
            await asyncio.gather(*acks)

    async def report_lag(self) -> None:
        for partition, lag in (await self.lag()).items():
            if lag is not None:
                self.metrics.consumer_lag.labels(self.topic, str(partition)).set(lag)
