"""Sweep probe: what the worker's detect stage costs per boundary, offline, over time.

    .venv/bin/python bench/sweepprobe.py [--rate 24500] [--seconds 300] [--surge 1m,6m,3m]
                                         [--preload 200000]

The worker benchmark's load (``bench/worker_load.py``: 1,000 brands, each with two
keyword rules, a velocity rule and the alarm rule) through ``MatchStage`` and
``DetectStage`` in this process, without Kafka: every 100 ms of event time a batch of
posts is matched and each matches partition gets one record (its hits and a tick), as
the match loop sends them.  Every ``--every`` seconds of event time it prints the mean
time of a boundary record (one that moves its partition's watermark to a new step
boundary: the sweep of its ~250 brands) and of the other records (counting hits), and
the time spent tidying the advanced brands every 2 s of event time (as the worker's state
write-back does first: forgetting the buckets and samples behind each one's last boundary),
and the match stage's CPU time a post (this thread's, between the detect records as in
the worker: 10.7-11.5 us where ``MatchStage.process`` alone on the same posts took 7.9-8.2,
BENCHMARKS.md, session 16).

The benchmark's velocity rule has a 30-minute warm-up, which a run of minutes never
leaves.  ``--surge WINDOW,BASELINE,WARMUP`` rewrites that rule (e.g. ``1m,6m,3m``) so a
run of minutes gets past the warm-up and fills the baseline, as every busy brand of a
production worker is (BENCHMARKS.md, session 14).

``--preload N`` first feeds N posts as the worker benchmark pre-loads them (2,000 a second
of event time, ending ``PRELOAD_GAP_MS`` before the run), so the velocity rule's warm-up ends
where it does in the benchmark (after ~28 minutes; until session 23 the ~19th), and the
garbage collector is set up as
in the worker (no automatic full collections; what lives from the start, and what each
write-back kept, frozen).  Each report also gives the resident size and the frozen count.

``--split`` also times the parts (each method's calls, inclusive of what it calls, with
``time.perf_counter`` around every call: a few percent on top): of the boundary records,
the detector's sweep (``Detector.advance``) and within it the window counts (``_counts``),
the decisions (``_evaluate``) and the search for the next boundary that can change anything
(``_next_candidate``), and the bookkeeping left for later (``Detector.finish``) and the
next due times (``next_due_ms``); of the match stage, decoding (``decode_post``), matching
(``Matcher.match``) and building the hits (``Hit.from_post``).  Reported in ms a boundary
record and us a post (BENCHMARKS.md, session 26's split was a throwaway version of this).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prometheus_client import CollectorRegistry
from worker_load import (
    ALARM_EVERY_S,
    LATENESS_MS,
    PARTITIONS,
    PRELOAD_EVENT_RATE,
    PRELOAD_GAP_MS,
    STEP_MS,
    alarm_text,
    post_bytes,
    post_text,
    write_brands,
)

import rules.detect
import rules.matcher
import rules.model
import streams.stages
from rules.watermark import PartitionReport
from rules.windows import floor_to
from streams.app import freeze_long_lived, freeze_young, no_automatic_full_gc
from streams.codecs import Tick, encode_batch
from streams.memtrace import proc_status_kb
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder
from streams.stages import DetectOutput, DetectStage, MatchStage, Record, partition_for

CHUNK_MS = 100
"""Event time per match batch (the match loop flushes hits every 100 ms)."""
FLUSH_MS = 2_000
"""Event time between tidies (the worker's state write-back, ``CRISISWATCH_STATE_FLUSH_S``)."""
START_MS = 1_795_800_000_000


DETECT_PARTS = ("advance", "_counts", "_evaluate", "_next_candidate", "finish", "next_due_ms")
"""``Detector`` methods timed by ``--split`` (ms a boundary record)."""
MATCH_PARTS = ("decode_post", "match", "from_post")
"""The match stage's parts timed by ``--split`` (us a post)."""


class Split:
    """Seconds spent in each timed part since the last ``take`` (inclusive of the calls
    it makes; a recursive call is counted once, at the outermost)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.spent: dict[str, float] = {}
        self.depth: dict[str, int] = {}

    def wrap(self, name: str, fn: Any) -> Any:
        spent, depth, clock = self.spent, self.depth, self.clock
        spent[name] = 0.0
        depth[name] = 0

        def timed(*args: Any, **kwargs: Any) -> Any:
            if depth[name]:
                return fn(*args, **kwargs)
            depth[name] = 1
            started = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += clock() - started
                depth[name] = 0

        return timed

    def install(self) -> None:
        """Patch the timed parts (for the rest of this process)."""
        detector = rules.detect.Detector
        for name in DETECT_PARTS:
            setattr(detector, name, self.wrap(name, getattr(detector, name)))
        streams.stages.decode_post = self.wrap("decode_post", streams.stages.decode_post)
        matcher = rules.matcher.Matcher
        matcher.match = self.wrap("match", matcher.match)  # type: ignore[method-assign]
        rules.model.Hit.from_post = staticmethod(  # type: ignore[method-assign]
            self.wrap("from_post", rules.model.Hit.from_post)
        )

    def take(self) -> dict[str, float]:
        taken = dict(self.spent)
        for name in self.spent:
            self.spent[name] = 0.0
        return taken


def rewrite_surge(directory: Path, spec: str) -> None:
    """Give every brand's velocity rule ``WINDOW,BASELINE,WARMUP`` (e.g. ``1m,6m,3m``)."""
    window, baseline, warmup = spec.split(",")
    for path in directory.glob("*.yaml"):
        head, surge = path.read_text().split("  - id: surge", 1)
        surge = (
            surge.replace("window: 10m", f"window: {window}")
            .replace("baseline: 1h", f"baseline: {baseline}")
            .replace("warmup: 30m", f"warmup: {warmup}")
        )
        path.write_text(f"{head}  - id: surge{surge}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=24_500, help="posts per second of event time")
    parser.add_argument("--seconds", type=int, default=300, help="event time to run")
    parser.add_argument("--every", type=int, default=60, help="report every this many seconds")
    parser.add_argument("--brands", type=int, default=1000)
    parser.add_argument("--surge", help="the velocity rule's WINDOW,BASELINE,WARMUP")
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        help="posts before the run, as the worker benchmark's pre-load (e.g. 200000)",
    )
    parser.add_argument(
        "--split", action="store_true", help="also time the sweep's and the match stage's parts"
    )
    args = parser.parse_args()
    split: Split | None = None
    if args.split:
        split = Split()
        split.install()
    brands = Path(tempfile.mkdtemp(prefix="sweepprobe-")) / "brands"
    write_brands(brands, args.brands)
    if args.surge:
        rewrite_surge(brands, args.surge)
    clock = [START_MS]
    metrics = WorkerMetrics(CollectorRegistry())
    rules = RuleHolder(brands, metrics, lateness_ms=LATENESS_MS, step_ms=STEP_MS)
    match = MatchStage(rules, metrics, idle_after_ms=5_000, now_ms=lambda: clock[0])
    detect = DetectStage(
        rules, metrics, partitions=PARTITIONS, load=lambda _key: None, now_ms=lambda: clock[0]
    )
    rng = random.Random(5)
    pool = [post_text(rng, args.brands) for _ in range(20_000)]
    per_chunk = args.rate * CHUNK_MS // 1000
    offsets = [0] * PARTITIONS
    newest: list[int | None] = [None] * PARTITIONS
    n = alarms = alerts = 0
    # per report interval: [boundary seconds, boundary records, other seconds, other records,
    # tidy seconds]
    spent = [0.0, 0, 0.0, 0, 0.0]
    matched = [0.0, 0]
    """CPU seconds in ``MatchStage.process`` (this thread's), posts."""
    in_boundaries: dict[str, float] = dict.fromkeys(DETECT_PARTS, 0.0)
    """Seconds in each of ``DETECT_PARTS`` during boundary records (``--split``)."""
    in_matching: dict[str, float] = dict.fromkeys(MATCH_PARTS, 0.0)
    """Seconds in each of ``MATCH_PARTS`` (``--split``)."""

    def feed(texts_at: list[tuple[int, str]], now: int, seq: int) -> None:
        """Match these posts and send each matches partition its record, as the worker."""
        nonlocal n, alerts
        clock[0] = now
        records = []
        for ts, text in texts_at:
            p = n % PARTITIONS
            value = post_bytes(n, text, ts, ts, rng)
            records.append(
                Record(topic="posts", partition=p, offset=offsets[p], key=None, value=value)
            )
            offsets[p] += 1
            newest[p] = ts
            n += 1
        started = time.thread_time()
        out = match.process(records)
        matched[0] += time.thread_time() - started
        matched[1] += len(records)
        if split is not None:
            taken = split.take()
            for name in MATCH_PARTS:
                in_matching[name] += taken[name]
        hits: list[list] = [[] for _ in range(PARTITIONS)]
        for h in out.hits:
            hits[partition_for(h.brand, PARTITIONS)].append(h)
        reports = {p: PartitionReport(newest[p], False, now) for p in range(PARTITIONS)}
        tick = Tick("probe", reports)
        for p in range(PARTITIONS):
            merger = detect.mergers.get(p)
            before = None if merger is None else merger.watermark_ms
            rec = Record("matches", p, seq, None, encode_batch(hits[p], tick))
            got = DetectOutput()
            started = time.perf_counter()
            for _ in detect.steps((rec,), got, lambda: False):
                pass
            took = time.perf_counter() - started
            alerts += len(got.events)
            after = detect.mergers[p].watermark_ms
            crossed = after is not None and (
                before is None or floor_to(after, STEP_MS) != floor_to(before, STEP_MS)
            )
            spent[0 if crossed else 2] += took
            spent[1 if crossed else 3] += 1
            if split is not None:
                taken = split.take()
                if crossed:
                    for name in DETECT_PARTS:
                        in_boundaries[name] += taken[name]

    print(f"{args.brands} brands, {args.rate:,} posts/s, surge rule {args.surge or 'as is'}")
    # the worker's garbage collection: no automatic full collections, what lives from the
    # start frozen, what each write-back kept frozen after it
    no_automatic_full_gc()
    freeze_long_lived()
    if args.preload:
        # as the benchmark's pre-load (worker_load.preload): PRELOAD_EVENT_RATE posts a
        # second of event time, ending PRELOAD_GAP_MS before the live posts begin
        started = time.perf_counter()
        span_ms = args.preload * 1000 // PRELOAD_EVENT_RATE
        t0 = START_MS - span_ms - PRELOAD_GAP_MS
        step = PRELOAD_EVENT_RATE * CHUNK_MS // 1000
        for seq, first in enumerate(range(0, args.preload, step)):
            batch = [
                (t0 + i * span_ms // args.preload, post_text(rng, args.brands))
                for i in range(first, min(first + step, args.preload))
            ]
            feed(batch, batch[-1][0] + CHUNK_MS, -1_000_000 + seq)
        for brand in list(detect._untidy):
            detect.tidy(brand)
        freeze_young()
        print(
            f"pre-loaded {args.preload:,} posts ({span_ms // 1000} s of event time) in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        spent = [0.0, 0, 0.0, 0, 0.0]
        matched = [0.0, 0]
        in_boundaries = dict.fromkeys(DETECT_PARTS, 0.0)
        in_matching = dict.fromkeys(MATCH_PARTS, 0.0)
    for chunk in range(args.seconds * 1000 // CHUNK_MS):
        t0 = START_MS + chunk * CHUNK_MS
        batch = []
        for j in range(per_chunk):
            ts = t0 + j * CHUNK_MS // per_chunk
            if ts - START_MS >= alarms * ALARM_EVERY_S * 1000:  # as the benchmark's alarms
                batch.append((ts, post_text(rng, args.brands, alarm_text(alarms))))
                alarms += 1
            else:
                batch.append((ts, pool[(n + j) % len(pool)]))
        feed(batch, t0 + CHUNK_MS, chunk)
        if (chunk + 1) % (FLUSH_MS // CHUNK_MS) == 0:
            # as the worker's state write-back: each advanced brand is tidied (forgets
            # the buckets and samples behind its last boundary)
            started = time.perf_counter()
            for brand in list(detect._untidy):
                detect.tidy(brand)
            freeze_young()
            spent[4] += time.perf_counter() - started
        if (chunk + 1) % (args.every * 1000 // CHUNK_MS) == 0:
            t = (chunk + 1) * CHUNK_MS // 1000
            boundary = spent[0] / max(1, spent[1]) * 1000
            other = spent[2] / max(1, spent[3]) * 1000
            print(
                f"to {t:4d} s: boundary record {boundary:6.2f} ms ({spent[1]}), "
                f"other record {other:5.2f} ms ({spent[3]}), "
                f"detect {(spent[0] + spent[2]) / args.every * 1000:6.1f} ms per second, "
                f"tidy {spent[4] / args.every * 1000:5.1f} ms per second, "
                f"match {matched[0] / max(1, matched[1]) * 1e6:5.2f} us per post, "
                f"RSS {proc_status_kb('VmRSS')['VmRSS'] / 1000:,.0f} MB, "
                f"frozen {gc.get_freeze_count():,}",
                flush=True,
            )
            if split is not None:
                boundaries, posts = max(1, spent[1]), max(1, matched[1])
                print(
                    "    a boundary record: "
                    + ", ".join(
                        f"{name} {in_boundaries[name] / boundaries * 1000:.2f} ms"
                        for name in DETECT_PARTS
                    )
                    + "; a post: "
                    + ", ".join(
                        f"{name} {in_matching[name] / posts * 1e6:.2f} us" for name in MATCH_PARTS
                    ),
                    flush=True,
                )
                in_boundaries = dict.fromkeys(DETECT_PARTS, 0.0)
                in_matching = dict.fromkeys(MATCH_PARTS, 0.0)
            spent = [0.0, 0, 0.0, 0, 0.0]
            matched = [0.0, 0]
    late = sum(
        sample.value
        for family in metrics.late_hits.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    print(f"{n:,} posts, {alerts:,} alerts, {late:,.0f} late hits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
