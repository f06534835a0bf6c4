"""Load for the worker benchmark: brand files, posts, the paced producer and the alert collector.

Used by ``bench_worker.py`` (see its docstring for what is measured).
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from bench_backtest import BRAND_YAML

from rules.post import format_rfc3339_ms, parse_rfc3339_ms
from rules.watermark import PartitionReport, WatermarkMerger
from streams.stages import partition_for

ALARM_RULE = """\
  - id: alarm
    kind: keyword
    query: 'alarmtest OR 警报测试'
    min_count: 1
    window: 1s
    resolve_after: 1s
    crisis_type: other
    severity: low
"""
PARTITIONS = 4
LATENESS_MS = 500
STEP_MS = 1000
ALARM_EVERY_S = 0.05
ALARM_BRANDS = 200
WARMUP_S = 3.0
SLOW_MS = 100.0
"""The latency target (p99): a boundary whose slowest alert took longer is a slow one."""
PRELOAD_EVENT_RATE = 2_000
"""Pre-loaded posts per second of event time (a busy stream being caught up)."""
PRELOAD_GAP_MS = 0
"""How long before the start the pre-loaded posts' event times end.  Every brand's first hit
is among them, so the benchmark's velocity rule (warm-up 30 min) leaves its warm-up for all
1,000 brands within the same few seconds, ~28 minutes after the start: after a full run.
Until session 23 the gap was 10 minutes, and the warm-up ended at the worker's ~18th minute:
in a run whose ramp and holds took long enough, inside the 70% phase, where 112-222 surge
incidents opened in one boundary and the worker went from ~70% to 91% of a core (in sessions
22-23 the two runs whose 70% phase it fell in had p99 1,550 and 1,435 ms).  A brand's
warm-up ends once in its life, and in production brands do not share their first hit: the
benchmark's phases do not straddle that herd (its cost past the warm-up: ``sweepprobe.py
--surge``)."""
_EN_TEXT = (
    "the a and i you it is was so this that my today just got really not very good bad food "
    "service order again never what why when they we store new time people love hate think "
    "know going day week all out about lunch price great"
)
EN_WORDS = _EN_TEXT.split()
ZH_WORDS = ["今天", "好吃", "排队", "打折", "我们", "觉得", "服务", "价格", "朋友", "周末", "新品"]
CRISIS = ["recall", "food poisoning", "app down", "refund", "召回", "退款"]


def write_brands(directory: Path, n_brands: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(n_brands):
        (directory / f"b{n:04d}.yaml").write_text(BRAND_YAML.format(n=n) + ALARM_RULE)


def post_text(rng: random.Random, n_brands: int, extra: str | None = None) -> str:
    """A post: 60% English, 40% Chinese; 20% mention one brand; 3% of those a crisis term."""
    zh = rng.random() < 0.4
    if zh:
        parts = [rng.choice(ZH_WORDS) for _ in range(rng.randint(6, 14))]
    else:
        parts = [rng.choice(EN_WORDS) for _ in range(rng.randint(8, 24))]
    if rng.random() < 0.2 or extra:
        n = rng.randrange(n_brands)
        parts.insert(rng.randrange(len(parts)), f"品牌{n:04d}" if zh else f"brand{n:04d}")
        if rng.random() < 0.03:
            parts.append(rng.choice(CRISIS))
    if extra:
        parts.append(extra)
    return ("" if zh else " ").join(parts)


def alarm_text(n: int) -> str:
    """What the ``n``-th alarm post adds: one of ``ALARM_BRANDS`` brands, in turn, and the
    alarm rule's term (opens that brand's incident at the next boundary)."""
    return f"brand{n % ALARM_BRANDS:04d} alarmtest"


def post_bytes(
    i: int, text: str, created_ms: int, ingested_ms: int | None, rng: random.Random
) -> bytes:
    post: dict[str, object] = {
        "id": f"bench:{i}",
        "source": "bench",
        "text": text,
        "created_at": format_rfc3339_ms(created_ms),
        "lang": "zh" if text and not text.isascii() else "en",
        "author": {
            "id": str(rng.randrange(50_000)),
            "handle": "u",
            "followers": rng.randrange(10_000),
        },
    }
    if ingested_ms is not None:
        post["ingested_at"] = format_rfc3339_ms(ingested_ms)
    return orjson.dumps(post)


async def preload(bootstrap: str, topic: str, n_posts: int, n_brands: int, start_ms: int) -> None:
    """N posts, ``PRELOAD_EVENT_RATE`` per second of event time, ending ``PRELOAD_GAP_MS``
    before start."""
    rng = random.Random(1)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        span_ms = n_posts * 1000 // PRELOAD_EVENT_RATE
        t0 = start_ms - span_ms - PRELOAD_GAP_MS
        futures = []
        for i in range(n_posts):
            created = t0 + i * span_ms // n_posts
            value = post_bytes(i, post_text(rng, n_brands), created, None, rng)
            futures.append(await producer.send(topic, value=value, key=b"bench:%d" % i))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class LatencyRun:
    rate: float
    sent: int = 0
    alarms: int = 0
    created_by_partition: list[list[int]] = field(
        default_factory=lambda: [[] for _ in range(PARTITIONS)]
    )
    alerts: list[tuple[int, int, str]] = field(default_factory=list)
    """(received wall ms, boundary T ms, event type)."""
    alert_hops: list[tuple[int, int, str]] = field(default_factory=list)
    """(alert record's CreateTime ms, boundary T ms, brand), in the order of ``alerts``."""
    matches: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    """matches partition -> (watermark after the record, tick sent ms, record CreateTime ms)
    in offset order: read when ``collect_alerts`` is given the matches topic."""
    send_s: float = 0.0
    """Seconds from the generator's first tick to the last post handed to its producer."""
    late_s: float = 0.0
    """How long after its schedule's end the generator handed over its last posts (the
    posts due at the end go at the first tick after it: a few ms when it kept up)."""
    ack_wait_s: float = 0.0
    """Seconds from then until the broker had acknowledged every post."""


POOL = 20_000
"""Distinct post bodies the paced producer cycles through (ids stay unique)."""
TICK_S = 0.005


def _body_pool(rng: random.Random, n_brands: int) -> list[tuple[bytes, bytes, bytes]]:
    """Post JSON after the id, cut at the two times (created_at, ingested_at), so a post is
    one byte join at send time instead of building and dumping a dict."""
    pool = []
    marker = "\x00T\x00"
    for _ in range(POOL):
        text = post_text(rng, n_brands)
        post = orjson.loads(post_bytes(0, text, 0, 0, rng))
        post.pop("id")
        post["created_at"] = marker
        post["ingested_at"] = marker
        body = orjson.dumps(post)[1:]  # without "{"
        head, mid, tail = body.split(orjson.dumps(marker))
        pool.append((head, mid, tail))
    return pool


async def produce_at_rate(
    bootstrap: str,
    topic: str,
    run: LatencyRun,
    n_brands: int,
    duration_s: float,
    on_start: Callable[[], None] | None = None,
) -> None:
    """``run.rate`` posts/s for ``duration_s``, paced by a 5 ms timer; each tick (and one
    at the end) sends the posts due so far as one batch per partition with ``created_at =
    ingested_at =`` the tick's wall time.  Post bodies, keys and partitions are prepared
    before the clock starts, so the generator costs little CPU next to the worker it
    measures.
    ``on_start()`` is called as the clock starts (after that preparation, which takes
    a second or two at high rates and is no part of the load)."""
    rng = random.Random(2)
    pool = _body_pool(rng, n_brands)
    total = int(run.rate * duration_s) + 1
    offset = run.sent
    keys = [b"bench:l%d" % (offset + i) for i in range(total)]
    parts = [(murmur2(k) & 0x7FFFFFFF) % PARTITIONS for k in keys]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_batch_size=1024**2
    )
    await producer.start()
    futures = []
    try:
        if on_start is not None:
            on_start()
        started = time.monotonic()
        next_alarm = 0.0
        brand_cycle = 0
        i = 0
        while True:
            elapsed = time.monotonic() - started
            last = elapsed >= duration_s  # this tick sends the posts due up to the end
            due = min(total, int(run.rate * min(elapsed, duration_s)))
            if i < due:
                now_ms = int(time.time() * 1000)
                stamp = b'"' + format_rfc3339_ms(now_ms).encode() + b'"'
                batches: dict[int, Any] = {}
                for j in range(i, due):
                    key = keys[j]
                    q = parts[j]
                    if elapsed >= next_alarm:
                        next_alarm += ALARM_EVERY_S
                        extra = alarm_text(brand_cycle)
                        brand_cycle += 1
                        run.alarms += 1
                        value = post_bytes(offset + j, extra, now_ms, now_ms, rng)
                    else:
                        head, mid, tail = pool[j % POOL]
                        value = b"".join((b'{"id":"', key, b'",', head, stamp, mid, stamp, tail))
                    batch = batches.get(q)
                    if batch is None:
                        batch = batches[q] = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        futures.append(await producer.send_batch(batch, topic, partition=q))
                        batch = batches[q] = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None)
                    run.created_by_partition[q].append(now_ms)
                for q, batch in batches.items():
                    futures.append(await producer.send_batch(batch, topic, partition=q))
                run.sent += due - i
                i = due
            if last:
                break
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - started - elapsed)))
        handed = time.monotonic()
        run.send_s += handed - started
        run.late_s = handed - started - duration_s
        await asyncio.gather(*futures)
        run.ack_wait_s += time.monotonic() - handed
    finally:
        await producer.stop()


async def collect_alerts(
    bootstrap: str,
    topic: str,
    run: LatencyRun,
    stop: asyncio.Event,
    matches_topic: str | None = None,
) -> None:
    """Alerts as they arrive; with ``matches_topic``, also the worker's internal matches
    records (their ticks and timestamps), to split the latency into hops.

    The matches records are read once ``stop`` is set, from where the topic ended when
    collection started: everything the hops need is in Kafka (each record's tick and
    CreateTime), and reading them live made this process (the alert consumer) and the
    broker decode every matches record while alerts were being timed.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        matches_from: dict[TopicPartition, int] = {}
        if matches_topic is not None:
            mtps = [TopicPartition(matches_topic, p) for p in range(PARTITIONS)]
            matches_from = await consumer.end_offsets(mtps)
        stop.clear()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            received = int(time.time() * 1000)
            for records in batch.values():
                for rec in records:
                    event = orjson.loads(rec.value)
                    boundary = int(decode_time(event["time"]))
                    run.alerts.append((received, boundary, event["type"].rsplit(".", 1)[-1]))
                    run.alert_hops.append((rec.timestamp, boundary, rec.key.decode()))
        if matches_from:
            await read_matches(consumer, matches_from, run)
    finally:
        await consumer.stop()


async def read_matches(
    consumer: AIOKafkaConsumer, start: dict[TopicPartition, int], run: LatencyRun
) -> None:
    """The matches records from ``start`` to the topic's end now: each tick's watermark,
    the time the match loop sent it and the record's CreateTime (``LatencyRun.matches``)."""
    end = await consumer.end_offsets(list(start))
    consumer.assign(list(start))
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    mergers = {tp.partition: WatermarkMerger(LATENESS_MS, PARTITIONS) for tp in start}
    left = {tp for tp in start if end[tp] > start[tp]}
    deadline = time.monotonic() + 120
    while left:
        if time.monotonic() > deadline:
            msg = f"matches records not read to their end: {sorted(left)}"
            raise TimeoutError(msg)
        batch = await consumer.getmany(*left, timeout_ms=1000)
        for tp, records in batch.items():
            for rec in records:
                if rec.offset >= end[tp]:
                    break
                tick = orjson.loads(rec.value).get("tick")
                if tick is not None:
                    reports = {
                        int(p): PartitionReport(v[0], bool(v[1]), int(v[2]))
                        for p, v in tick["parts"].items()
                    }
                    wm = mergers[tp.partition].update(reports)
                    sent = max(r.sent_ms for r in reports.values())
                    run.matches.setdefault(tp.partition, []).append(
                        (wm if wm is not None else -1, sent, rec.timestamp)
                    )
            if records and records[-1].offset + 1 >= end[tp]:
                left.discard(tp)


def hops_ms(run: LatencyRun, index: int) -> tuple[int, int, int, int] | None:
    """Alert ``index`` split into hops (ms): crossing post sent -> match loop's tick for it
    (matched), -> that matches record's CreateTime (sent), -> the alert's CreateTime (detect:
    matches ack, faust fetch, batching, state), -> received here.  None: not traceable."""
    received, boundary, _ = run.alerts[index]
    alert_ts, _, brand = run.alert_hops[index]
    crossed = crossing_ms(run, boundary)
    records = run.matches.get(partition_for(brand, PARTITIONS), [])
    i = bisect_left([r[0] for r in records], boundary)
    if crossed is None or i == len(records):
        return None
    _, tick_sent, created = records[i]
    return (tick_sent - crossed, created - tick_sent, alert_ts - created, received - alert_ts)


def decode_time(text: str) -> int:
    return parse_rfc3339_ms(text)


def crossing_ms(run: LatencyRun, boundary_ms: int) -> int | None:
    """Send time of the post that moved the watermark to ``boundary_ms`` (None: never sent)."""
    need = boundary_ms + LATENESS_MS
    worst = None
    for created in run.created_by_partition:
        i = bisect_left(created, need)
        if i == len(created):
            return None
        worst = created[i] if worst is None else max(worst, created[i])
    return worst


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
