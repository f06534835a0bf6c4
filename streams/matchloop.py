"""The match stage's consumer: posts in, batched records per matches partition out.

Posts are read with a plain aiokafka consumer (its own consumer group,
``<app id>-match``) rather than a faust stream: the stage is stateless, and
faust's per-message machinery cost more than matching itself.  Hits wait in
an ``Outbox`` until a watermark tick is due (or they have waited 100 ms); then
each matches partition gets ONE record holding its waiting hits and then the
tick, so the detector sees hits before the tick that covers them.  Offsets
are committed only after every record sent for them (matches and dead
letters) is acknowledged, in order, while the next batch is matched, and at
most every ``COMMIT_EVERY_S``: at-least-once, and the detector drops repeated
post ids.

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
from rules.watermark import PartitionReport, acted_on
from streams.codecs import Tick, encode_batch
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.stages import MatchOutput, MatchStage, partition_for

log = logging.getLogger(__name__)

BATCH_MAX = 2000
COMMIT_EVERY_S = 0.25
"""Posts offsets are committed at most this often (a commit per batch was a round trip, and
broker work, dozens of times a second); a restart re-reads at most this much more, and the
detector drops the repeated post ids."""
SLICE_POSTS = 500
"""Posts matched between turns of the event loop (about 5 ms of work)."""
HITS_FLUSH_MS = 100
"""The longest a hit waits in the outbox while no tick is due."""
HITS_MAX = 5000
"""Hits waiting in the outbox that make it send at once."""
PRODUCER_BATCH_BYTES = 256 * 1024
"""A matches record holds a whole batch's hits for one partition (tens of kilobytes)."""
BOUNDARY_WINDOW_S = 0.1
"""How long a state write-back keeps still after the match loop sends a boundary's ticks:
about the detect agent's sweeps of the 4 partitions at full load, delivery included."""
BOUNDARY_HOLD_S = 0.1
"""The longest the match loop holds back after sending a boundary's ticks while this
worker's detect agent has not swept to that boundary."""
BOUNDARY_GUARD_S = 0.15
"""How long before the next boundary's ticks are due a write-back stops: its last slice
and its changelog sends are out of the way when they come."""
BOUNDARY_LATE_S = 0.25
"""How long past its due time a write-back waits for a boundary that has not come (a
stream that slowed or stopped): then it goes on."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def own_producer(settings: Settings, client_id: str, **extra: Any) -> AIOKafkaProducer:
    """A stage's own producer: acks=all, idempotent (in order, no duplicates on retry), no
    linger.  Make it inside the running event loop (aiokafka requires it)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        metadata_max_age_ms=5_000,
        **settings.security.aiokafka_kwargs(),
        **extra,
    )


class Outbox:
    """Hits waiting for the matches topic, and when to send them.

    A matches record per partition per match batch made the detect stage (and
    both Kafka clients) do per-record work dozens of times a second for a
    handful of hits each: at 2,000 posts/s that was most of the worker's CPU.
    Hits only matter to the detector once a watermark tick lets their boundary
    through, so they wait here until one of:

    - a tick is due: the watermark the reports imply crosses a step boundary
      (the only change the detector acts on) or the partitions' idle or assigned
      sets change: every partition then gets a record, its hits then the tick;
    - ``max_hits`` are waiting, or the oldest has waited ``flush_after_ms``: the
      partitions with hits get a record (hits, then the current tick).

    A record to a partition always carries every hit waiting for it, so no tick
    reaches the detector ahead of a hit it covers.  The quiet-time tick
    (``MatchLoop.send_tick``) sends everything too.
    """

    def __init__(
        self, partitions: int, lateness_ms: int, step_ms: int, flush_after_ms: int, max_hits: int
    ) -> None:
        self.partitions = partitions
        self.lateness_ms = lateness_ms
        self.step_ms = step_ms
        self.flush_after_ms = flush_after_ms
        self.max_hits = max_hits
        self.hits: dict[int, list[Hit]] = {}
        self.count = 0
        self.oldest_ms: int | None = None
        """Wall time the oldest waiting hit was added."""
        self.sent_key: tuple[Any, ...] | None = None
        """``rules.watermark.acted_on`` of the last tick sent to every partition."""

    def add(self, hits: list[Hit], now_ms: int) -> None:
        if not hits:
            return
        n = self.partitions
        for hit in hits:
            self.hits.setdefault(partition_for(hit.brand, n), []).append(hit)
        self.count += len(hits)
        if self.oldest_ms is None:
            self.oldest_ms = now_ms

    def tick_due(self, report: dict[int, PartitionReport]) -> bool:
        return acted_on(report, self.lateness_ms, self.step_ms) != self.sent_key

    def hits_due(self, now_ms: int) -> bool:
        return self.count >= self.max_hits or (
            self.oldest_ms is not None and now_ms - self.oldest_ms >= self.flush_after_ms
        )

    @property
    def sent_boundary_ms(self) -> int | None:
        """The step boundary of the lowest partition in the last tick sent everywhere:
        where the detector's watermark is (for this sender's partitions)."""
        return self.sent_key[0] if self.sent_key is not None else None

    def take(
        self, report: dict[int, PartitionReport], with_tick: bool
    ) -> list[tuple[int, list[Hit]]]:
        """The records to send now, ``(partition, hits)``, each to be followed by the
        tick of ``report``: every partition when ``with_tick``, else those with hits."""
        if with_tick:
            out = [(q, self.hits.get(q, [])) for q in range(self.partitions)]
            self.sent_key = acted_on(report, self.lateness_ms, self.step_ms)
        else:
            out = sorted(self.hits.items())
        self.hits = {}
        self.count = 0
        self.oldest_ms = None
        return out


def write_back_pause(now: float, sent_at: float, step_s: float) -> tuple[float, bool]:
    """How long a state write-back waits before its next slice, given when the match loop
    last sent a boundary's ticks (``sent_at``, monotonic seconds): ``(seconds, for_next)``.

    - Just after a boundary was sent: until ``BOUNDARY_WINDOW_S`` after it, while the detect
      agent sweeps and alerts.
    - From ``BOUNDARY_GUARD_S`` before the next boundary is due (one step after the last;
      event time follows wall time on a live stream) until ``BOUNDARY_LATE_S`` after:
      ``for_next``, the wait ends when that boundary is sent (and its window follows).
      Only when the step is long enough for this to leave half of it to write-backs.
    - Otherwise: no wait.
    """
    if now < sent_at + BOUNDARY_WINDOW_S:
        return sent_at + BOUNDARY_WINDOW_S - now, False
    due = sent_at + step_s
    if step_s >= 2 * (BOUNDARY_WINDOW_S + BOUNDARY_GUARD_S) and (
        due - BOUNDARY_GUARD_S <= now < due + BOUNDARY_LATE_S
    ):
        return due + BOUNDARY_LATE_S - now, True
    return 0.0, False


class BoundaryGate:
    """When the match loop last sent ticks that take the watermark to a new step boundary,
    and how the state write-back (``give_way``) and the match loop (``hold_matching``)
    keep out of the detect agent's way around them.

    At a boundary the detect agent sweeps the matches partitions one after another, and
    every alert of the step waits for those sweeps.  A write-back (then a slice of 5 ms
    every 15 ms, spanning most of a 1 s step at 1,000 brands) interleaving its slices and its
    changelog sends made the sweeps ~40% slower; pausing only after a boundary was sent
    left the write-back running into the next one, whose alerts were then 100-200 ms late
    now and then (BENCHMARKS.md, session 12).
    """

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s
        self.sent_at = float("-inf")
        """``time.monotonic()`` when the last boundary's ticks were sent."""
        self.sent_ms: int | None = None
        """That boundary (event time)."""
        self.swept_ms: int | None = None
        """The boundary this worker's detect agent has swept all its partitions to (None:
        it reads none)."""
        self._next = asyncio.Event()
        """Set (and replaced) when a boundary's ticks are sent."""
        self._swept: asyncio.Event | None = None
        """Set when the detect agent reaches ``sent_ms`` while the match loop holds."""

    def sent(self, boundary_ms: int | None) -> None:
        self.sent_at = time.monotonic()
        self.sent_ms = boundary_ms
        self._next.set()
        self._next = asyncio.Event()

    def swept(self, boundary_ms: int | None) -> None:
        """The detect agent's report after each matches record it has processed
        (``DetectStage.swept_boundary_ms``)."""
        self.swept_ms = boundary_ms
        if self._swept is not None and self.caught_up():
            self._swept.set()

    def caught_up(self) -> bool:
        """Nothing to hold back for: the detect agent has swept to the boundary sent, or
        reads no partition here."""
        if self.sent_ms is None or self.swept_ms is None:
            return True
        return self.swept_ms >= self.sent_ms

    async def hold_matching(self) -> None:
        """Called by the match loop before each slice of posts: a turn of the event loop,
        and, within ``BOUNDARY_HOLD_S`` of sending a boundary's ticks, a wait until the
        detect agent has swept to it.

        The agent sweeps the partitions one after another, and a boundary's alerts were
        spread over 35-45 ms at 20,000-25,000 posts/s because a match slice (10-20 ms on a
        busy machine) ran between each of its slices.  Posts matched meanwhile only feed
        the next boundary, a step later; the match loop catches up after the sweep.  With
        several workers the agent's watermark also waits for the other workers' ticks;
        ``BOUNDARY_HOLD_S`` bounds what that costs (a tenth of a 1 s step at most).
        """
        left = self.sent_at + BOUNDARY_HOLD_S - time.monotonic()
        if left <= 0 or self.caught_up():
            await asyncio.sleep(0)
            return
        swept = self._swept = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(swept.wait(), left)
        finally:
            self._swept = None

    async def give_way(self) -> None:
        """Wait as ``write_back_pause`` says: at most ``BOUNDARY_GUARD_S`` +
        ``BOUNDARY_LATE_S`` + ``BOUNDARY_WINDOW_S``, so a write-back goes on by a slice
        between waits however the boundaries come."""
        sent_at = self.sent_at
        pause, for_next = write_back_pause(time.monotonic(), sent_at, self.step_s)
        if pause <= 0:
            return
        if not for_next:
            await asyncio.sleep(pause)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._next.wait(), pause)
        if self.sent_at != sent_at:  # the boundary came: keep still while it is swept
            left = self.sent_at + BOUNDARY_WINDOW_S - time.monotonic()
            if left > 0:
                await asyncio.sleep(left)


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
        self.outbox = Outbox(
            settings.partitions, settings.lateness_ms, settings.step_ms, HITS_FLUSH_MS, HITS_MAX
        )
        self._unsent: dict[TopicPartition, int] = {}
        """Offsets after posts whose hits are still in the outbox."""
        self._pending: asyncio.Future[None] | None = None
        """The previous send's acknowledgements and offset commit, still in flight."""
        self._acked: dict[TopicPartition, int] = {}
        """Offsets whose records are acknowledged, not yet committed."""
        self._last_commit = 0.0
        self.boundary = BoundaryGate(settings.step_ms / 1000)
        """When ticks taking the watermark to a new step boundary were last sent: the
        detect agent is about to sweep and alert (the match loop holds back meanwhile, and
        so does ``streams.app.write_back``)."""

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.app_id}-match",
            client_id=f"{self.sender}-match",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_MAX,
            fetch_min_bytes=self.settings.fetch_min_bytes,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            metadata_max_age_ms=5_000,
            **self.settings.security.aiokafka_kwargs(),
        )
        producer = own_producer(
            self.settings, f"{self.sender}-match", max_batch_size=PRODUCER_BATCH_BYTES
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
                        await pending  # the last send's acknowledgements
                        await self._commit(consumer)
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
        """Match a fetched batch slice by slice, each followed by what is due (``_after``).

        A big batch (a backlog, up to ``BATCH_MAX`` posts) runs in slices of about
        ``SLICE_POSTS``, and the detect agent and the alerts get the event loop in
        between.  Each slice takes the same share of every partition's records, so the
        slices follow each other in time, and a watermark tick is sent as soon as the
        slice that crosses a boundary is matched: when the tick waited for the whole
        batch, a boundary's alerts waited for up to four slices more (10-20 ms each on
        a busy machine).  After a boundary's ticks, the next slice waits until the detect
        agent has swept it (``BoundaryGate.hold_matching``).  A partition's records stay
        in offset order across slices.
        """
        total = sum(len(recs) for recs in batches.values())
        n = -(-total // SLICE_POSTS)
        for k in range(n):
            await self.boundary.hold_matching()
            part = {
                tp: recs[len(recs) * k // n : len(recs) * (k + 1) // n]
                for tp, recs in batches.items()
            }
            part = {tp: recs for tp, recs in part.items() if recs}
            records = [r for recs in part.values() for r in recs]
            await self._after(consumer, part, self.stage.process(records))

    async def _after(
        self,
        consumer: AIOKafkaConsumer,
        batches: dict[TopicPartition, list[Any]],
        out: MatchOutput,
    ) -> None:
        """Bookkeeping after a slice: its hits to the outbox, and what is due sent."""
        async with self.lock:
            now = _now_ms()
            self.stage.commit_event_times(out.event_times)
            for tp, recs in batches.items():
                offset = recs[-1].offset + 1
                self.next_offset[tp.partition] = offset
                self._unsent[tp] = offset
            self.outbox.add(out.hits, now)
            report = self.stage.clock.report(now, await self.busy())
            with_tick = self.outbox.tick_due(report)
            if not (with_tick or self.outbox.hits_due(now) or out.dead_letters):
                return  # the hits wait: nothing the detector would act on yet
            acks = await self._send(report, with_tick)
            acks += [
                await self.send_dead(key, orjson.dumps(dead)) for key, dead in out.dead_letters
            ]
            offsets, self._unsent = self._unsent, {}
        await self._confirm_later(consumer, acks, offsets)

    async def _send(
        self, report: dict[int, PartitionReport], with_tick: bool
    ) -> list[Awaitable[Any]]:
        """Send the outbox (see ``Outbox``); the caller holds the lock."""
        tick = Tick(self.sender, report)
        before = self.outbox.sent_boundary_ms
        records = self.outbox.take(report, with_tick)
        if self.outbox.sent_boundary_ms != before:
            self.boundary.sent(self.outbox.sent_boundary_ms)
        # one producer, so a partition's records stay in order: a tick sent now
        # follows every hit sent to that partition before it, acknowledged or not
        return [await self.send_matches(q, encode_batch(hits, tick)) for q, hits in records]

    async def _confirm_later(
        self,
        consumer: AIOKafkaConsumer,
        acks: list[Awaitable[Any]],
        offsets: dict[TopicPartition, int],
    ) -> None:
        # the acknowledgements and the offset commit (two round trips) overlap the next
        # batch; the commits stay in order, each after its records are acknowledged
        confirm = asyncio.ensure_future(self._confirm(consumer, acks, offsets, self._pending))
        previous, self._pending = self._pending, confirm
        if previous is not None:
            await previous  # at most one send in flight; raises if its sends failed

    async def _confirm(
        self,
        consumer: AIOKafkaConsumer,
        acks: list[Awaitable[Any]],
        offsets: dict[TopicPartition, int],
        previous: asyncio.Future[None] | None,
    ) -> None:
        """Commit ``offsets`` once every record sent for them is acknowledged (and the
        previous send's commit is done); at most every ``COMMIT_EVERY_S``, the offsets
        of the sends in between are committed with the next."""
        await asyncio.gather(*acks)
        if previous is not None:
            await previous
        self._acked.update(offsets)
        if time.monotonic() - self._last_commit < COMMIT_EVERY_S:
            return
        await self._commit(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the acknowledged offsets not yet committed."""
        offsets, self._acked = self._acked, {}
        self._last_commit = time.monotonic()
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
        """A tick to every partition, with the hits waiting: for when no posts flow (idle
        partitions, quiet brands), and at least every tick interval."""
        consumer = self.consumer
        if consumer is None:
            return
        busy = await self.busy()
        async with self.lock:
            self.stage.clock.assign(self.assigned(), _now_ms())
            report = self.stage.clock.report(_now_ms(), busy)
            if not report:
                return
            acks = await self._send(report, with_tick=True)
            offsets, self._unsent = self._unsent, {}
        await self._confirm_later(consumer, acks, offsets)

    async def report_lag(self) -> None:
        for partition, lag in (await self.lag()).items():
            if lag is not None:
                self.metrics.consumer_lag.labels(self.topic, str(partition)).set(lag)
