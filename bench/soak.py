"""Soak: the real worker, the real broker, 1,000 brands, a steady 70% of the measured maximum rate.

    python -m bench.soak [--duration-s 600] [--brands 1000] [--fraction 0.7] [--out FILE.json]

1. starts its own single-node broker (``streams.localkafka``) in ``--workdir``
   (or uses ``--bootstrap``) and one ``crisiswatch worker`` subprocess;
2. calibrates: produces ``--calibrate-posts`` posts as fast as possible and
   measures how fast the worker consumes them (the maximum rate);
3. soaks: produces at ``fraction`` x that rate for ``--duration-s`` seconds,
   sampling the worker's RSS, consumed count and consumer lag every
   ``--sample-s`` seconds;
4. drains, then checks: consumed == produced (nothing lost) and no dead letters,
   RSS growth, and the p50/p99 ingest-to-match latency of the soak phase (from
   the worker's ``crisiswatch_processing_latency_seconds`` histogram) against
   the operator guide's target (p99 <= 30 s).

Prints a JSON summary (also written to ``--out``); exit 0 when every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from rules.post import format_rfc3339_ms
from streams.localkafka import LocalKafka, free_port
from tests.integration.workerproc import WorkerProcess
from tests.kafkautil import consume_all, create_topics

log = logging.getLogger("soak")

CALIBRATE_EVENT_RATE = 5_000
"""Calibration posts per second of event time."""
LATENESS_MS = 60_000
"""The worker's allowed lateness (CRISISWATCH_LATENESS default); set explicitly below."""

LATENCY_TARGET_P99_S = 30.0
"""docs/operator-guide.md, CrisiswatchProcessingLatencyHigh."""
RSS_GROWTH_LIMIT = 1.25
"""Memory counts as flat when the end RSS is at most this x the RSS after warm-up (+32 MB)."""
_FILLER = (
    "the",
    "a",
    "and",
    "lunch",
    "today",
    "order",
    "store",
    "new",
    "people",
    "love",
    "hate",
    "think",
    "going",
    "day",
    "week",
    "good",
    "bad",
    "price",
    "service",
    "delivery",
    "quality",
    "app",
    "update",
    "weekend",
)


def brand_words(i: int) -> tuple[str, str]:
    """Brand i's name and its crisis word (unique per brand, so matches are attributable)."""
    rnd = random.Random(i)
    syl = "".join(rnd.choice("bdfgklmnprstvz") + rnd.choice("aeiou") for _ in range(3))
    return f"{syl}{i}", f"fault{i}x"


def write_brands(directory: Path, n: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name, word = brand_words(i)
        (directory / f"b{i:04d}.yaml").write_text(
            f"brand: b{i:04d}\n"
            f"mentions:\n  query: '{name} OR #{name} OR @{name}official'\n"
            "rules:\n"
            f"  - id: quality\n    kind: keyword\n    query: '{word} OR recall'\n"
            "    min_count: 3\n    window: 5m\n    crisis_type: product_quality\n"
            "    severity: high\n    resolve_after: 5m\n"
            "  - id: surge\n    kind: velocity\n    of: mentions\n    window: 1m\n"
            "    baseline: 5m\n    warmup: 5m\n    ratio: 4\n    min_count: 30\n"
            "    crisis_type: other\n    severity: medium\n    resolve_after: 5m\n",
            encoding="utf-8",
        )
    return directory


def make_post(rnd: random.Random, seq: int, n_brands: int, now_ms: int) -> tuple[bytes, bytes]:
    words = [rnd.choice(_FILLER) for _ in range(rnd.randint(8, 30))]
    if rnd.random() < 0.2:
        name, word = brand_words(rnd.randrange(n_brands))
        words.insert(rnd.randrange(len(words)), name)
        if rnd.random() < 0.05:
            words.append(word)
    post_id = f"soak:{seq}"
    value = orjson.dumps(
        {
            "id": post_id,
            "source": "soak",
            "text": " ".join(words),
            "created_at": format_rfc3339_ms(now_ms),
            "ingested_at": format_rfc3339_ms(now_ms),
            "author": {"id": str(rnd.randrange(100_000)), "followers": rnd.randrange(10_000)},
        }
    )
    return post_id.encode(), value


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def histogram(worker: WorkerProcess, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of a histogram on the worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = worker.get("/metrics", timeout_s=10)
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == f"{name}_bucket":
                out[float(s.labels["le"])] = out.get(float(s.labels["le"]), 0.0) + s.value
    return out


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """histogram_quantile over the difference of two cumulative bucket snapshots."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            share = (rank - prev_count) / (count - prev_count) if count > prev_count else 1.0
            return prev_bound + (bound - prev_bound) * share
        prev_bound, prev_count = bound, count
    return prev_bound


class Producer:
    def __init__(self, bootstrap: str, topic: str, n_brands: int, seed: int) -> None:
        self.bootstrap, self.topic, self.n_brands = bootstrap, topic, n_brands
        self.rnd = random.Random(seed)
        self.sent = 0
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )

    async def send(self, n: int, event_ms: int | None = None, per_event_s: int = 0) -> None:
        """Send ``n`` posts; event time is now, or from ``event_ms`` on, ``per_event_s``
        posts per second of event time."""
        now = int(time.time() * 1000)
        futures = []
        for i in range(n):
            ts = now if event_ms is None else event_ms + i * 1000 // per_event_s
            key, value = make_post(self.rnd, self.sent, self.n_brands, ts)
            futures.append(await self.producer.send(self.topic, value=value, key=key))
            self.sent += 1
        await asyncio.gather(*futures)


async def wait_consumed(worker: WorkerProcess, target: float, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    value = worker.metric("crisiswatch_posts_consumed_total")
    while value < target and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        value = worker.metric("crisiswatch_posts_consumed_total")
    return value


async def wait_detected(worker: WorkerProcess, event_ms: int, timeout_s: float) -> None:
    """Until the detector's watermark covers posts up to ``event_ms`` (minus the lateness).

    The whole pipeline, match AND detect, has then caught up: the maximum rate is
    end to end, not just how fast the match stage reads posts.
    """
    target_s = (event_ms - LATENESS_MS) / 1000 - 1.0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.metric("crisiswatch_watermark_timestamp_seconds") >= target_s:
            return
        await asyncio.sleep(0.5)


async def soak(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, object]:
    prefix = f"soak{int(time.time())}"
    rules = write_brands(workdir / "brands", args.brands)
    await create_topics(bootstrap, [f"{prefix}.posts"], partitions=4)
    worker = WorkerProcess(
        bootstrap,
        prefix,
        workdir / "worker",
        rules,
        extra_env={
            "CRISISWATCH_RULES_RELOAD_S": "0",
            "CRISISWATCH_LOG_LEVEL": "WARNING",
            "CRISISWATCH_LATENESS": f"{LATENESS_MS}ms",
        },
    )
    worker.start(ready_timeout_s=180)
    assert worker.proc is not None
    pid = worker.proc.pid
    producer = Producer(bootstrap, f"{prefix}.posts", args.brands, args.seed)
    await producer.producer.start()
    summary: dict[str, object] = {"brands": args.brands, "machine": machine()}
    try:
        # calibration: a burst, matched AND detected as fast as the worker can
        # event times spread over the recent past, CALIBRATE_EVENT_RATE posts per event
        # second, so the detector crosses evaluation boundaries as in steady traffic (a
        # burst stamped "now" would hide that cost and overstate the sustainable rate)
        t0 = time.monotonic()
        first_event_ms = int(time.time() * 1000) - args.calibrate_posts * 1000 // (
            CALIBRATE_EVENT_RATE
        )
        for chunk in range(args.calibrate_posts // 1000):
            await producer.send(
                1000,
                event_ms=first_event_ms + chunk * 1000 * 1000 // CALIBRATE_EVENT_RATE,
                per_event_s=CALIBRATE_EVENT_RATE,
            )
        last_event_ms = first_event_ms + args.calibrate_posts * 1000 // CALIBRATE_EVENT_RATE
        consumed = await wait_consumed(worker, producer.sent, 300)
        await wait_detected(worker, last_event_ms, 300)
        elapsed = time.monotonic() - t0
        max_rate = consumed / elapsed
        rate = max_rate * args.fraction
        summary.update(calibrate_posts=producer.sent, max_rate_posts_per_s=round(max_rate, 1))
        summary["soak_rate_posts_per_s"] = round(rate, 1)
        log.info("max rate %.0f posts/s; soaking at %.0f posts/s", max_rate, rate)
        await asyncio.sleep(5)
        lat_before = histogram(worker, "crisiswatch_processing_latency_seconds")
        sent_before = producer.sent
        samples: list[dict[str, float]] = []
        start = time.monotonic()
        next_sample = start
        tick_s = 0.1
        while (elapsed_s := time.monotonic() - start) < args.duration_s:
            due = int(rate * elapsed_s) - (producer.sent - sent_before)
            if due > 0:
                await producer.send(due)
            if time.monotonic() >= next_sample:
                sample = {
                    "t_s": round(elapsed_s, 1),
                    "rss_mb": round(rss_kb(pid) / 1024, 1),
                    "produced": producer.sent,
                    "consumed": worker.metric("crisiswatch_posts_consumed_total"),
                    "lag": worker.metric("crisiswatch_consumer_lag_messages"),
                    "load1": round(os.getloadavg()[0], 2),
                }
                samples.append(sample)
                log.info("%s", sample)
                next_sample += args.sample_s
            await asyncio.sleep(tick_s)
        soak_s = time.monotonic() - start
        consumed = await wait_consumed(worker, producer.sent, 300)
        lat_after = histogram(worker, "crisiswatch_processing_latency_seconds")
        dead = worker.metric("crisiswatch_dead_letters_total")
        end_rss = round(rss_kb(pid) / 1024, 1)
        dlq = await consume_all(bootstrap, f"{prefix}.posts.dlq", timeout_s=10, idle_s=1)
        alerts = await consume_all(bootstrap, f"{prefix}.alerts", timeout_s=20, idle_s=1)
        # after warm-up: the first sample a third of the way in (windows and baselines are full)
        warm = next((s["rss_mb"] for s in samples if s["t_s"] >= soak_s / 3), end_rss)
        p50 = quantile(0.5, lat_before, lat_after)
        p99 = quantile(0.99, lat_before, lat_after)
        summary.update(
            soak_s=round(soak_s, 1),
            soak_posts=producer.sent - sent_before,
            produced_total=producer.sent,
            consumed_total=consumed,
            dead_letters=dead,
            dlq_records=len(dlq),
            alert_events=len(alerts),
            rss_mb_start=samples[0]["rss_mb"] if samples else None,
            rss_mb_after_warmup=warm,
            rss_mb_end=end_rss,
            latency_p50_s=None if p50 is None else round(p50, 3),
            latency_p99_s=None if p99 is None else round(p99, 3),
            latency_target_p99_s=LATENCY_TARGET_P99_S,
            latency_top_bucket_s=max((b for b in lat_after if b != float("inf")), default=None),
            samples=samples,
        )
        checks = {
            "nothing_lost": consumed == producer.sent and dead == 0 and not dlq,
            "memory_flat": end_rss <= warm * RSS_GROWTH_LIMIT + 32,
            "latency_within_target": p99 is not None and p99 <= LATENCY_TARGET_P99_S,
            "duration_met": soak_s >= args.duration_s,
        }
        summary["checks"] = checks
        summary["ok"] = all(checks.values())
    finally:
        await producer.producer.stop()
        worker.stop()
    return summary


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--duration-s", type=float, default=600.0)
    ap.add_argument("--brands", type=int, default=1000)
    ap.add_argument("--fraction", type=float, default=0.7, help="of the measured maximum rate")
    ap.add_argument("--calibrate-posts", type=int, default=100_000)
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bootstrap", help="an existing broker (default: start one in --workdir)")
    ap.add_argument("--workdir", default=".run/soak")
    ap.add_argument("--out", help="write the JSON summary here too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s soak %(message)s")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = LocalKafka(workdir / "kafka", port=free_port())
        bootstrap = broker.up()
    try:
        summary = asyncio.run(soak(args, bootstrap, workdir))
    finally:
        if broker is not None:
            broker.down()
    text = json.dumps(summary, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
