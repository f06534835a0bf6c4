"""``build_app(settings)``: the only place a faust App is made.

Two stages, both thin:
- the match loop (``streams.matchloop``, a plain aiokafka consumer run as an
  app task) reads ``<prefix>.posts`` in batches, calls the engine's matcher slice
  by slice and, when a watermark tick is due (or hits have waited 100 ms), sends
  one record per partition of ``<prefix>.matches`` (that partition's hits, by
  brand, then the tick), dead letters to ``<prefix>.posts.dlq``;
- the ``detect`` agent reads ``<prefix>.matches``, keeps each brand's state (windows,
  incidents) in the changelog-backed table ``brand_state`` and sends incident
  events to ``<prefix>.alerts`` keyed by brand.

faust's producer carries only the table's changelog (state write-backs, in large
batches); the match loop and the alerts have producers of their own, so neither
waits behind a write-back (aiokafka has one request in flight per broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.streams import _current_event
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducerDriver
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from prometheus_client import CollectorRegistry

from rules.alerts import AlertEvent
from streams.alertsender import AlertSender
from streams.matchloop import MatchLoop, own_producer
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder
from streams.settings import Settings
from streams.stages import DetectOutput, DetectStage, MatchStage
from streams.topics import changelog_topic
from streams.web import install_views

log = logging.getLogger(__name__)

STATE_BUFFER_MAX = 1_000_000
"""faust's producer-buffer limit (100) is replaced by one write-back at a time (write_back)."""
PRODUCER_BATCH_BYTES = 512 * 1024
STATE_COMPRESSION = "zstd"
"""Codec of faust's producer, whose records are the state write-backs (and the detect
stage's dead letters).  A write-back of 1,000 busy brands is ~8 MB of JSON every 5 s;
compressed, ~10x less.  Uncompressed, the changelog filled a 64 MB segment every few
minutes per partition, and the broker's log cleaner, compacting each one, took the
CPU the worker needed: on a shared 2-core machine a boundary's alerts were 100-360 ms
late right after (BENCHMARKS.md, session 17).  Restarts read that much less, too."""
STATE_LINGER_S = 0.02
"""faust's producer waits this long to fill a batch: bigger batches compress better.
Nothing waits on these records but the next write-back and the offset commit."""
SLICE_S = 0.005
"""Longest run of detect work (or of a state write-back) between turns of the event loop."""
WRITE_BACK_REST_S = 0.03
"""The pause after each write-back slice: a write-back takes at most a seventh of the
event loop (a third with 10 ms, and at 24,500 posts/s the match loop fell behind for
as long as one ran: BENCHMARKS.md, session 13)."""
FULL_GC_THRESHOLD = 1_000_000_000
"""Generation-1 collections before an automatic full one: never (``no_automatic_full_gc``)."""
TRIM_HEAP_S = 30.0
"""How often the worker returns the C heap's free pages to the system."""
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024**2,
    "max_write_buffer_number": 2,
    "target_file_size_base": 8 * 1024**2,
    "block_cache_size": 16 * 1024**2,
    "block_cache_compressed_size": 4 * 1024**2,
}
"""RocksDB memory per table partition, bounded: faust's defaults (64 MB write buffers x 3 and a
2 GB block cache per partition) let a worker's memory grow for a long time before it levels
off. Brand states are small (kilobytes) and read mostly from the in-process cache."""


class IdempotentProducer(AIOKafkaProducerDriver):
    """faust's aiokafka producer with idempotence on (faust enables it only for transactions)."""

    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Worker:
    """A built, not yet started, worker."""

    app: faust.App
    settings: Settings
    metrics: WorkerMetrics
    rules: RuleHolder
    match_stage: MatchStage
    detect_stage: DetectStage
    match_loop: MatchLoop


def _credentials(settings: Settings) -> Any:
    """faust's form of the Kafka security settings."""
    sec = settings.security
    if sec.protocol == "PLAINTEXT":
        return None
    if sec.protocol == "SSL":
        return sec.ssl_context()
    return faust.SASLCredentials(
        username=sec.sasl_username,
        password=sec.sasl_password.reveal() if sec.sasl_password else None,
        mechanism=sec.sasl_mechanism,
        ssl_context=sec.ssl_context(),
    )


def build_app(settings: Settings, registry: CollectorRegistry | None = None) -> Worker:
    registry = CollectorRegistry() if registry is None else registry
    metrics = WorkerMetrics(registry)
    rules = RuleHolder(
        settings.rules_dir, metrics, lateness_ms=settings.lateness_ms, step_ms=settings.step_ms
    )
    n = settings.partitions
    app = faust.App(
        settings.app_id,
        broker=";".join(f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")),
        broker_credentials=_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=n,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        topic_disable_leader=True,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        # state write-backs: one request carries up to this much per changelog partition
        # (aiokafka has one request in flight per broker; 16 kB batches made a write-back
        # of a thousand brands take seconds to leave)
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_compression_type=STATE_COMPRESSION,
        producer_linger=STATE_LINGER_S,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        consumer_metadata_max_age_ms=5_000,
        producer_metadata_max_age_ms=5_000,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_in_thread=False,
        autodiscover=False,
        table_cleanup_interval=3600.0,
        stream_wait_empty=False,
        # a matches record holds a whole match batch of one partition: buffer few of them,
        # so a detect stage that falls behind leaves the backlog in Kafka, not in memory
        stream_buffer_maxsize=64,
        logging_config=None,
        loghandlers=[],
    )
    transport = app.transport
    assert isinstance(transport, AIOKafkaTransport)
    transport.Producer = IdempotentProducer  # type: ignore[misc]

    def raw_topic(name: str, **options: Any) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=n,
            **options,
        )

    matches = raw_topic(settings.topic("matches"), internal=True)
    dead_topic = settings.topic("posts.dlq")
    raw_topic(settings.topic("alerts"))  # declared here; alert_sender sends to it
    raw_topic(dead_topic)  # declared here; the match loop and the detect agent send to it
    table = app.Table(
        "brand_state",
        options=dict(ROCKSDB_OPTIONS) if settings.store.startswith("rocksdb") else None,
        key_type=bytes,
        value_type=bytes,
        partitions=n,
        # acks=False as faust's own changelog topics: read only to restore the table, never
        # by a stream that acks; with acks the consumer's livelock check logged an ERROR
        # ("Stream has not started processing") per changelog partition every 2.5 s from
        # the worker's fifth minute
        changelog_topic=raw_topic(
            changelog_topic(settings), compacting=True, deleting=False, internal=True, acks=False
        ),
    )

    match_stage = MatchStage(
        rules, metrics, idle_after_ms=int(settings.idle_partition_s * 1000), now_ms=_now_ms
    )

    def read_table(key: str) -> bytes | None:
        value = table.get(key.encode())
        return bytes(value) if value is not None else None

    unflushed = _Unflushed()
    detect_stage = DetectStage(rules, metrics, partitions=n, load=read_table, now_ms=_now_ms)
    sender = f"{settings.app_id}:{uuid.uuid4().hex[:8]}"

    match_loop = MatchLoop(settings, match_stage, metrics, sender=sender)
    alert_sender = AlertSender(
        lambda: own_producer(settings, f"{sender}-alerts"), settings.topic("alerts")
    )

    @app.task
    async def run_alert_sender() -> None:
        await alert_sender.start()
        try:
            await asyncio.Event().wait()  # until the worker stops (the task is cancelled)
        finally:
            await alert_sender.stop()

    @app.task
    async def run_match_loop() -> None:
        await match_loop.run()

    @app.task
    async def freeze_heap() -> None:
        freeze_long_lived()
        no_automatic_full_gc()
        # faust's conductor holds every stream back while more than `max_messages`
        # records wait in the producer buffer: a state write-back (hundreds of records)
        # stalled the detect stream, and the alerts in it, until most of it had left.
        # write_back waits for the previous write-back instead (memory stays bounded)
        app.producer.buffer.max_messages = STATE_BUFFER_MAX

    @app.agent(matches, name="detect")  # type: ignore[arg-type]
    async def detect(stream: faust.Stream) -> None:
        # Brand states are written back to the table at most every `state_flush_s`, and the
        # events are acked only after the states they changed are written: the changelog
        # always covers every committed offset (a restart replays the rest; repeated
        # post ids are dropped), and a busy brand is serialised once per interval (5 s by
        # default), not once per batch.
        last_flush = time.monotonic()
        writer: asyncio.Task[None] | None = None
        last_of: dict[int, Any] = {}
        """matches partition -> its last event (a brand's changelog partition is its own)."""
        manual = stream.noack()
        try:
            # one matches record at a time: each already holds a whole match batch for its
            # partition, and batching them (faust's take) held each one up to 10 ms
            async for event in manual.events():
                epoch = unflushed.epoch
                out = DetectOutput()
                # a long record (a watermark jump advances every brand) runs in slices, and
                # the match stage and the producer get the event loop in between
                for _ in detect_stage.steps((event.message,), out, _Slice(SLICE_S)):
                    await send_alerts(out.events)
                    out.events.clear()
                    await asyncio.sleep(0)
                    if unflushed.epoch != epoch:
                        break
                if unflushed.epoch != epoch:
                    continue  # partitions revoked meanwhile: the next owner replays it
                await send_alerts(out.events)
                # the match loop holds back until this worker has swept its boundary
                match_loop.boundary.swept(detect_stage.swept_boundary_ms())
                for key, dead in out.dead_letters:
                    # faust's producer: flushed before the offsets are committed
                    await app.producer.send(dead_topic, key, orjson.dumps(dead), None, None, None)
                for brand in out.dirty:
                    unflushed.dirty[brand] = event
                unflushed.events.append(event)
                last_of[event.message.partition] = event
                if writer is not None and writer.done():
                    writer.result()  # a write-back that raised fails the agent, loudly
                    writer = None
                if writer is None and time.monotonic() - last_flush >= settings.state_flush_s:
                    # hits a sweep went ahead of are counted first: an event is acked only
                    # once all its hits are in the states written
                    for partition, brand in detect_stage.count_held():
                        unflushed.dirty[brand] = last_of[partition]
                    # the write-back runs beside the agent, which goes on detecting
                    writer = asyncio.create_task(write_back(manual, *unflushed.take()))
                    last_flush = time.monotonic()
        finally:
            if writer is not None:
                writer.cancel()

    async def send_alerts(events: list[AlertEvent]) -> None:
        now = _now_ms()
        for ev in events:
            await alert_sender.send(ev.brand.encode(), orjson.dumps(ev.to_cloudevent()))
            metrics.incident_events.labels(ev.brand, ev.type.rsplit(".", 1)[-1]).inc()
            if ev.trigger_ingested_at_ms is not None:
                metrics.alert_latency.observe(max(0, now - ev.trigger_ingested_at_ms) / 1000)
            log.info(
                "%s %s/%s severity=%s incident=%s",
                ev.type,
                ev.brand,
                ev.rule_id,
                ev.severity,
                ev.incident_id,
            )

    async def write_back(
        stream: faust.types.StreamT, dirty: dict[str, Any], events: list[Any], epoch: int
    ) -> None:
        """Write the states of ``dirty`` brands to the table, then ack ``events``.

        Runs as a task beside the detect agent, in slices: a write-back of every
        brand takes a few hundred milliseconds at full load, and the alerts in
        flight no longer wait for it.  A state written here may already include
        batches processed after ``events`` (their alerts were sent first); a
        restart replays those batches over it, and the detector drops the hits it
        has already counted (by post id) as it does after any restart.
        """
        await match_loop.boundary.give_way()
        buffer = app.producer.buffer
        while buffer.size:  # the previous write-back is still leaving
            await buffer.flush()
        pause = _Slice(SLICE_S)
        for brand, event in dirty.items():
            # a state is written only once the alerts it records are acknowledged
            # (nothing runs between the settle and the dump below)
            await alert_sender.settle()
            if unflushed.epoch != epoch:
                return  # revoked meanwhile: the new owner replays the unacked events
            if brand not in detect_stage.states:
                continue
            # the changelog partition is the current event's: use one of the brand's own
            token = _current_event.set(weakref.ref(event))
            try:
                # what changed since the brand's last write-back: a segment of the
                # buckets sealed since, the head, deletions of expired segments
                for key, value in detect_stage.write(brand):
                    if value is not None:
                        table[key.encode()] = value
                        continue
                    # the tombstone is sent either way; no lookup first: reads of segments
                    # only to delete them filled RocksDB's block caches (64 MB; soak run J)
                    with contextlib.suppress(KeyError):  # gone already (a repeat after a restart)
                        del table[key.encode()]
            finally:
                _current_event.reset(token)
            detect_stage.written(brand)
            if pause():
                # a write-back takes at most a seventh of the event loop: run in one go it
                # was a burst (hundreds of ms every few seconds) that the posts queued behind
                await asyncio.sleep(WRITE_BACK_REST_S)
                await match_loop.boundary.give_way()
                pause.restart()
        if unflushed.epoch != epoch:
            return
        for event in events:
            await stream.ack(event)
        # the states made since the last write-back are long-lived: out of the
        # collector's way, so a full collection does not scan every brand's windows
        freeze_young()

    @app.timer(settings.tick_interval_s)
    async def tick_when_quiet() -> None:
        await match_loop.send_tick()

    if settings.rules_reload_s > 0:

        @app.timer(settings.rules_reload_s)
        async def reload_rules() -> None:
            # compiling a large rule set takes a second or more: off the event loop;
            # the new set is swapped in by one reference assignment
            if await asyncio.to_thread(rules.reload_if_changed):
                # the previous rule set was frozen: collect it, freeze the new one
                gc.unfreeze()
                freeze_long_lived()

    if settings.full_gc_s > 0:

        @app.timer(settings.full_gc_s)
        async def full_gc() -> None:
            # frozen objects are freed by reference counting, but cycles among them only
            # by a full collection over everything: one pause every CRISISWATCH_FULL_GC_S
            full_collection()

    @app.timer(TRIM_HEAP_S)
    async def trim_heap() -> None:
        # the walk over the free lists takes milliseconds: not on the event loop
        await asyncio.to_thread(release_free_heap)

    state_changelog = changelog_topic(settings)

    @app.timer(5.0)
    async def consumer_lag() -> None:
        await match_loop.report_lag()
        for tp in app.consumer.assignment():
            if tp.topic == state_changelog:
                continue  # read only to restore the table: its committed offset is not lag
            try:
                lag = _lag(app, tp)
            except Exception:  # not yet fetched
                continue
            if lag is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app_: faust.App, revoked: Any, **kwargs: Any) -> None:
        # unwritten states and their unacked events are dropped: the next owner replays
        # those records from the committed offsets over the state in the changelog
        unflushed.epoch += 1
        unflushed.dirty.clear()
        unflushed.events.clear()
        detect_stage.forget()

    async def refresh_gauges() -> None:
        # at a scrape: the brands written back since the last one and those changed since
        for _ in detect_stage.refresh_gauges(unflushed.dirty, _Slice(SLICE_S)):
            await asyncio.sleep(0)

    install_views(app, metrics, rules, match_loop, before_render=refresh_gauges)
    return Worker(app, settings, metrics, rules, match_stage, detect_stage, match_loop)


def freeze_long_lived() -> int:
    """Move every object alive now out of the cyclic garbage collector's reach.

    Run once the worker has started: the compiled rules, the matcher and faust's
    own objects live as long as the process, and each full (generation 2)
    collection scanned them all, a pause of 80-155 ms on the event loop every
    few seconds that every alert in flight waited out.  Frozen objects are still
    freed by reference counting; only cycles among them are never collected,
    so a rule reload unfreezes, collects (the old rule set, one full pause) and
    freezes again.  Returns what the collection found unreachable.
    """
    found = gc.collect()
    gc.freeze()
    return found


def full_collection() -> tuple[float, int, int]:
    """Unfreeze, collect everything and freeze again (``freeze_long_lived``), and log it:
    ``(milliseconds, objects frozen before, unreachable objects found)``.

    The worker's ``full_gc`` timer, every ``CRISISWATCH_FULL_GC_S`` (``Settings.full_gc_s``,
    an hour by default).  In the benchmark's and the soak's workers it found next to
    nothing (0-15 unreachable objects over 140,000-210,000 frozen; 0.1-0.3 s at the
    600th second, 0.53 s at the 1,200th at 31,500 posts/s; RELIABILITY.md, run T;
    BENCHMARKS.md, session 23): it is there for cycles that grow old.
    """
    frozen = gc.get_freeze_count()
    started = time.perf_counter()
    gc.unfreeze()
    found = freeze_long_lived()
    ms = (time.perf_counter() - started) * 1000
    log.info(
        "full garbage collection: %.0f ms over %d frozen objects, %d unreachable",
        ms,
        frozen,
        found,
    )
    return ms, frozen, found


def freeze_young() -> None:
    """Move the objects made since the last freeze out of the cyclic garbage collector's
    reach, once two young collections have untracked what they can.

    A collection stops tracking a tuple whose items are all untracked, one level of
    tuples per collection.  The detector's bucket records are two levels of tuples
    (``rules.windows.Series``), but between two write-backs few objects are made net
    of those freed (a hit replaces its bucket's record), so the young generations are
    collected rarely: without these two collections, 417,255 objects were frozen after 5
    minutes of the benchmark's load, with them 194,850 (BENCHMARKS.md, session 18).
    They take the young generations only: at most a few thousand objects, ~2.4 ms.
    """
    gc.collect(0)
    gc.collect(1)
    gc.freeze()


def no_automatic_full_gc() -> None:
    """Leave full (generation 2) collections to the ``full_gc`` timer; the young
    generations are collected as before.

    Between two state write-backs (each freezes what the worker kept) the objects that
    outlive two young collections reach generation 2, and CPython collected it every
    few seconds: 24-84 ms pauses of the event loop at 24,500 posts/s, six or seven in
    40 s, none of which found anything to free (BENCHMARKS.md, session 13).  A cycle
    that becomes garbage only after reaching generation 2 now waits for the next full
    collection, at most ``CRISISWATCH_FULL_GC_S`` (never with 0).
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_THRESHOLD)


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``).

    State write-backs and matches records are large, short-lived buffers from the C
    heap; glibc keeps what they freed, so the resident size drifts up with the largest
    burst seen although live data is level (RELIABILITY.md, soak).  False where the C
    library has no ``malloc_trim`` (not glibc); nothing is freed that is in use.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


@dataclass
class _Unflushed:
    """Detect-stage changes not yet written to the table, and the events behind them."""

    dirty: dict[str, Any] = field(default_factory=dict)
    """brand -> an event of the brand's partition (its changelog partition)."""
    events: list[Any] = field(default_factory=list)
    """Events processed but not yet acked."""
    epoch: int = 0
    """Incremented when partitions are revoked (work in progress is then dropped)."""

    def take(self) -> tuple[dict[str, Any], list[Any], int]:
        """The changes so far, for one write-back; collection starts afresh."""
        dirty, events = self.dirty, self.events
        self.dirty, self.events = {}, []
        return dirty, events, self.epoch


class _Slice:
    """A ``pause()`` for ``DetectStage.steps``: True every ``slice_s`` (wall time)."""

    __slots__ = ("deadline", "slice_s")

    def __init__(self, slice_s: float) -> None:
        self.slice_s = slice_s
        self.deadline = time.perf_counter() + slice_s

    def __call__(self) -> bool:
        now = time.perf_counter()
        if now < self.deadline:
            return False
        self.deadline = now + self.slice_s
        return True

    def restart(self) -> None:
        """A whole slice from now (after a pause of the caller's own)."""
        self.deadline = time.perf_counter() + self.slice_s


def _lag(app: faust.App, tp: Any) -> int | None:
    """Records of ``tp`` not yet read by this worker's streams (None: not known yet).

    Uses the consumer's in-process bookkeeping (offsets read by the streams and
    committed), never a round trip to the consumer thread: it runs every tick.
    """
    consumer = app.consumer
    highwater = consumer.highwater(tp)
    if highwater is None:
        return None
    read = consumer._read_offset.get(tp)  # type: ignore[attr-defined]
    committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
    position = max(read + 1 if read is not None else 0, committed or 0)
    return max(0, highwater - position)
