"""Soak: the real worker, the real broker, 1,000 brands, a steady 70% of the measured maximum rate.

    python -m bench.soak [--duration-s 900] [--brands 1000] [--fraction 0.7] [--out FILE.json]

1. starts its own single-node broker (``streams.localkafka``) in ``--workdir``
   (or uses ``--bootstrap``) and one ``crisiswatch worker`` subprocess;
2. calibrates: produces ``--calibrate-posts`` posts as fast as possible and
   measures how fast the worker matches and detects them (the maximum rate), or
   takes ``--max-rate`` measured elsewhere;
3. soaks: produces at ``fraction`` x that rate for ``--duration-s`` seconds,
   sampling the worker's RSS, consumed count and consumer lag every
   ``--sample-s`` seconds;
4. drains, then checks: consumed == produced (nothing lost) and no dead letters,
   RSS flat after the warm-up (``WARMUP_S``: until the step buckets of the longest
   window are full; see ``memory_verdict``), and the p50/p99 ingest-to-match latency of
   the soak phase (from the worker's ``crisiswatch_processing_latency_seconds``
   histogram) against the operator guide's target (p99 <= 30 s), and that the
   detector keeps up (its event-time lag after warm-up <= lateness + 60 s).

Prints a JSON summary (also written to ``--out``); exit 0 when every check holds.
Killed (SIGTERM) or interrupted (SIGINT), it stops its worker and broker and exits 130.
``--memtrace FILE`` makes the worker write memory samples (``streams/memtrace.py``).
The worker logs at ``CRISISWATCH_LOG_LEVEL`` from this environment (default WARNING) to
``<workdir>/worker.log.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
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
DETECT_LAG_LIMIT_S = LATENESS_MS / 1000 + 60
"""The detector keeps up when its event-time lag (wall clock - watermark, which is the
newest event time - the lateness) stays within the lateness + 60 s after warm-up; a
detector slower than the offered rate shows as a lag that grows without bound."""
LONGEST_WINDOW_MS = 300_000
"""The longest window of the soak's rules (``write_brands``: the keyword rule's 5m)."""
WARMUP_S = (LONGEST_WINDOW_MS + LATENESS_MS + 60_000) / 1000
"""Until the per-hit step buckets are full: the detector keeps them for the longest window
behind its watermark (which trails event time by the lateness), so they grow for 5 + 1
minutes of event time, then stay level; one more minute of margin (7 minutes, as in the
runs before session 7, when they were pruned once a minute).  Event time is wall time in
the soak.  (The keyword rules' 24 h baseline history keeps growing, by
design, for a day: at the soak's hit rate ~2,000 one-minute counts per minute for 1,000
brands, ~0.2 MB/min; see RELIABILITY.md.)"""
RSS_SLOPE_LIMIT_MB_PER_MIN = 2.0
"""Memory is flat when the least-squares slope of RSS after warm-up is at most this ..."""
RSS_END_LIMIT = 1.10
"""... and the end RSS at most this x the RSS at the end of warm-up."""
MIN_FLAT_SPAN_S = 300.0
"""... over at least this many seconds of samples after warm-up (a shorter soak fails)."""
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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def histogram(worker: WorkerProcess, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of a histogram on the worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    # only the histogram's buckets: the whole page has 1,000 brands' gauges
    _, body = worker.get(f"/metrics?name[]={name}_bucket", timeout_s=10)
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


async def calibrate(worker: WorkerProcess, producer: Producer, posts: int) -> float:
    """Posts per second the worker matches AND detects, from a burst of ``posts``."""
    # event times spread over the recent past, CALIBRATE_EVENT_RATE posts per event
    # second, so the detector crosses evaluation boundaries as in steady traffic (a
    # burst stamped "now" would hide that cost and overstate the sustainable rate)
    t0 = time.monotonic()
    sent_before = producer.sent
    first_event_ms = int(time.time() * 1000) - posts * 1000 // CALIBRATE_EVENT_RATE
    for chunk in range(posts // 1000):
        await producer.send(
            1000,
            event_ms=first_event_ms + chunk * 1000 * 1000 // CALIBRATE_EVENT_RATE,
            per_event_s=CALIBRATE_EVENT_RATE,
        )
    last_event_ms = first_event_ms + posts * 1000 // CALIBRATE_EVENT_RATE
    consumed = await wait_consumed(worker, producer.sent, 300)
    await wait_detected(worker, last_event_ms, 300)
    return (consumed - sent_before) / (time.monotonic() - t0)


async def soak(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, object]:
    prefix = f"soak{int(time.time())}"
    rules = write_brands(workdir / "brands", args.brands)
    # a new prefix each run: an earlier run's table state (RocksDB offsets of topics that
    # are gone) would stop the worker at recovery
    shutil.rmtree(workdir / "worker", ignore_errors=True)
    await create_topics(bootstrap, [f"{prefix}.posts"], partitions=4)
    worker = WorkerProcess(
        bootstrap,
        prefix,
        workdir / "worker",
        rules,
        extra_env={
            "CRISISWATCH_RULES_RELOAD_S": "0",
            # INFO shows e.g. the worker's 10-minute full garbage collection
            "CRISISWATCH_LOG_LEVEL": os.environ.get("CRISISWATCH_LOG_LEVEL", "WARNING"),
            "CRISISWATCH_LATENESS": f"{LATENESS_MS}ms",
            **(
                {
                    # CRISISWATCH_MEMTRACE_S / _PY from this environment too
                    **{k: v for k, v in os.environ.items() if k.startswith("CRISISWATCH_MEMTRACE")},
                    "CRISISWATCH_MEMTRACE": str(Path(args.memtrace).resolve()),
                }
                if args.memtrace
                else {}
            ),
        },
    )
    producer = Producer(bootstrap, f"{prefix}.posts", args.brands, args.seed)
    summary: dict[str, object] = {"brands": args.brands, "machine": machine()}
    try:
        worker.start(ready_timeout_s=180)
        assert worker.proc is not None
        pid = worker.proc.pid
        await producer.producer.start()
        # calibration: a burst, matched AND detected as fast as the worker can
        # event times spread over the recent past, CALIBRATE_EVENT_RATE posts per event
        # second, so the detector crosses evaluation boundaries as in steady traffic (a
        # burst stamped "now" would hide that cost and overstate the sustainable rate)
        if args.max_rate:
            # measured elsewhere, e.g. the detector's sustained rate with full windows in
            # an earlier soak (a burst into an empty worker overstates it: RELIABILITY.md)
            max_rate = args.max_rate
            summary["max_rate_source"] = "--max-rate"
        else:
            max_rate = await calibrate(worker, producer, args.calibrate_posts)
            summary.update(calibrate_posts=producer.sent, max_rate_source="calibration burst")
        rate = max_rate * args.fraction
        summary["max_rate_posts_per_s"] = round(max_rate, 1)
        summary["soak_rate_posts_per_s"] = round(rate, 1)
        log.info("max rate %.0f posts/s; soaking at %.0f posts/s", max_rate, rate)
        await asyncio.sleep(5)
        lat_before = histogram(worker, "crisiswatch_processing_latency_seconds")
        sent_before = producer.sent
        samples: list[dict[str, float]] = []
        start = time.monotonic()
        next_sample = start
        last_cpu = (start, cpu_s(pid))
        tick_s = 0.1
        while (elapsed_s := time.monotonic() - start) < args.duration_s:
            due = int(rate * elapsed_s) - (producer.sent - sent_before)
            if due > 0:
                await producer.send(due)
            if time.monotonic() >= next_sample:
                now_cpu = (time.monotonic(), cpu_s(pid))
                dt = now_cpu[0] - last_cpu[0]
                busy = (now_cpu[1] - last_cpu[1]) / dt if dt >= 1 else None
                last_cpu = now_cpu
                sample = {
                    "t_s": round(elapsed_s, 1),
                    "rss_mb": round(rss_kb(pid) / 1024, 1),
                    "produced": producer.sent,
                    "consumed": worker.metric("crisiswatch_posts_consumed_total"),
                    "lag": worker.metric("crisiswatch_consumer_lag_messages"),
                    "event_time_lag_s": worker.metric("crisiswatch_event_time_lag_seconds"),
                    "load1": round(os.getloadavg()[0], 2),
                }
                if busy is not None:
                    sample["worker_cpu"] = round(busy, 2)  # cores, since the previous sample
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
        memory = memory_verdict(samples, end_rss, args.warmup_s)
        detect_lag = max(
            (s["event_time_lag_s"] for s in samples if s["t_s"] >= args.warmup_s), default=None
        )
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
            rss_mb_after_warmup=memory["rss_mb_after_warmup"],
            rss_mb_end=end_rss,
            warmup_s=args.warmup_s,
            rss_flat_span_s=memory["span_s"],
            rss_slope_mb_per_min=memory["slope_mb_per_min"],
            event_time_lag_max_after_warmup_s=detect_lag,
            event_time_lag_limit_s=DETECT_LAG_LIMIT_S,
            latency_p50_s=None if p50 is None else round(p50, 3),
            latency_p99_s=None if p99 is None else round(p99, 3),
            latency_target_p99_s=LATENCY_TARGET_P99_S,
            latency_top_bucket_s=max((b for b in lat_after if b != float("inf")), default=None),
            samples=samples,
        )
        checks = {
            "nothing_lost": consumed == producer.sent and dead == 0 and not dlq,
            "memory_flat": bool(memory["flat"]),
            "latency_within_target": p99 is not None and p99 <= LATENCY_TARGET_P99_S,
            # the match stage's latency says nothing about the detector: it must keep up too
            "detector_keeps_up": detect_lag is not None and detect_lag <= DETECT_LAG_LIMIT_S,
            "duration_met": soak_s >= args.duration_s,
        }
        summary["checks"] = checks
        summary["ok"] = all(checks.values())
    finally:
        await producer.producer.stop()
        worker.stop()
    return summary


def rss_slope_mb_per_min(samples: list[dict[str, float]]) -> float | None:
    """Least-squares slope of ``rss_mb`` over ``t_s``, in MB per minute (None: < 3 samples)."""
    if len(samples) < 3:
        return None
    ts = [s["t_s"] / 60 for s in samples]
    ys = [s["rss_mb"] for s in samples]
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else None


def memory_verdict(
    samples: list[dict[str, float]], end_rss: float, warmup_s: float
) -> dict[str, float | bool | None]:
    """Is RSS flat after warm-up?  Judged on the samples taken from ``warmup_s`` on:
    at least MIN_FLAT_SPAN_S of them, slope <= RSS_SLOPE_LIMIT_MB_PER_MIN and the end
    RSS <= RSS_END_LIMIT x the first of them."""
    after = [s for s in samples if s["t_s"] >= warmup_s]
    warm = after[0]["rss_mb"] if after else None
    slope = rss_slope_mb_per_min(after)
    span = after[-1]["t_s"] - after[0]["t_s"] if after else 0.0
    flat = (
        warm is not None
        and slope is not None
        and span >= MIN_FLAT_SPAN_S
        and slope <= RSS_SLOPE_LIMIT_MB_PER_MIN
        and end_rss <= warm * RSS_END_LIMIT
    )
    return {
        "flat": flat,
        "rss_mb_after_warmup": warm,
        "span_s": round(span, 1),
        "slope_mb_per_min": None if slope is None else round(slope, 2),
    }


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT: unwind through the ``finally`` blocks (worker and broker stopped)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


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
    ap.add_argument("--duration-s", type=float, default=900.0)
    ap.add_argument("--brands", type=int, default=1000)
    ap.add_argument("--fraction", type=float, default=0.7, help="of the measured maximum rate")
    ap.add_argument("--calibrate-posts", type=int, default=100_000)
    ap.add_argument(
        "--max-rate",
        type=float,
        help="posts/s: the maximum rate measured elsewhere (no calibration burst); "
        "the soak runs at --fraction of it",
    )
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument(
        "--warmup-s",
        type=float,
        default=WARMUP_S,
        help="memory is judged on the samples from here on (default: longest window + "
        "prune interval + lateness = %(default).0f s)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bootstrap", help="an existing broker (default: start one in --workdir)")
    ap.add_argument("--workdir", default=".run/soak")
    ap.add_argument("--out", help="write the JSON summary here too")
    ap.add_argument(
        "--memtrace",
        help="the worker traces its allocations into this JSON-lines file "
        "(streams/memtrace.py; slows the worker: not for the recorded figures)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s soak %(message)s")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # killed (SIGTERM) or interrupted: stop the worker and the broker on the way out
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    broker = None
    bootstrap = args.bootstrap
    try:
        if not bootstrap:
            # Kafka's own JVM options, as the worker benchmark's broker (streams.localkafka)
            broker = LocalKafka(workdir / "kafka", port=free_port(), jvm="kafka")
            bootstrap = broker.up()
        summary = asyncio.run(soak(args, bootstrap, workdir))
    except KeyboardInterrupt as exc:
        log.warning("interrupted (%s): worker and broker stopped, no summary", exc)
        return 130
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
