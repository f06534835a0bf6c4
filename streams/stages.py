"""What the worker's two agents do, free of faust so it can be tested with plain calls.

``MatchStage``: raw post values -> hits per brand (or dead letters).
``DetectStage``: hits and watermark ticks from the matches topic -> alert events,
with per-brand state kept in a cache and written back to the changelog-backed
table by the agent.  All decisions are the engine's (``rules/``).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from typing import Protocol, cast

from aiokafka.partitioner import murmur2

from rules.deadletter import dead_letter
from rules.detect import AlertEvent, BrandState, dump_state, load_state
from rules.engine import schedule
from rules.errors import InvalidPost
from rules.model import Hit, VelocityRule
from rules.post import decode_post
from rules.state import SEGMENT_FANOUT, state_written, write_state
from rules.watermark import PartitionClock, WatermarkMerger
from rules.windows import floor_to
from streams.codecs import HitRow, Tick, decode_items
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder

log = logging.getLogger(__name__)
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


@lru_cache(maxsize=1 << 14)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as aiokafka/Java).

    Cached: the match loop asks it for every hit, of a few thousand brands at most, and
    aiokafka's murmur2 is plain Python (about 1% of the worker's main thread at 24,500
    posts/s).  The bound keeps other keys (post ids in tests) from growing it."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class RecordLike(Protocol):
    """One consumed message: an aiokafka ``ConsumerRecord``, a faust ``Message`` or a
    ``Record`` (the stages read these five fields and nothing else)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, made by hand (tests, tools); the worker passes the
    Kafka client's own record objects instead (copying them cost a microsecond each)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def counted_dead_letter(
    metrics: WorkerMetrics, stage: str, rec: RecordLike, reason: str, detail: str, now: int
) -> tuple[bytes | None, dict[str, object]]:
    """The dead letter (key, object) for input ``rec``, counted by stage and reason code."""
    metrics.dead_letters.labels(stage, reason.split(":")[0]).inc()
    letter = dead_letter(
        reason=reason,
        detail=detail,
        stage=stage,
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        received_at_ms=now,
        payload=rec.value or b"",
    )
    return rec.key, letter


@dataclass
class MatchOutput:
    hits: list[Hit] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, dict[str, object]]] = field(default_factory=list)
    """(original key, dead-letter object)."""
    event_times: list[tuple[int, int]] = field(default_factory=list)
    """(partition, created_at_ms) of every valid post, for the watermark clock."""

    def extend(self, other: MatchOutput) -> None:
        """Append ``other``'s results (of the posts after these)."""
        self.hits.extend(other.hits)
        self.dead_letters.extend(other.dead_letters)
        self.event_times.extend(other.event_times)


class MatchStage:
    """Decode, validate and match posts; everything invalid becomes a dead letter."""

    def __init__(
        self,
        rules: RuleHolder,
        metrics: WorkerMetrics,
        *,
        idle_after_ms: int,
        now_ms: Callable[[], int],
    ) -> None:
        self.rules = rules
        self.metrics = metrics
        self.now_ms = now_ms
        self.clock = PartitionClock(idle_after_ms)

    def process(self, records: Sequence[RecordLike]) -> MatchOutput:
        out = MatchOutput()
        matcher = self.rules.current.matcher
        now = self.now_ms()
        hits = out.hits
        event_times = out.event_times
        latencies: list[float] = []
        by_source: dict[str, int] = {}
        by_rule: dict[tuple[str, str], int] = {}
        for rec in records:
            try:
                value = rec.value
                if value is None:
                    reason = "empty_value"
                    raise InvalidPost(reason, "the message has no value (a tombstone)")
                post = decode_post(value)
                matches = matcher.match(post)
            except InvalidPost as exc:
                self._dead(out, rec, exc.reason, exc.detail, now)
                continue
            except Exception as exc:  # the one error boundary: nothing crashes the worker
                log.exception("matching failed at %s[%d]@%d", rec.topic, rec.partition, rec.offset)
                self._dead(out, rec, "processing_error", f"{type(exc).__name__}: {exc}", now)
                continue
            source = post.source
            by_source[source] = by_source.get(source, 0) + 1
            event_times.append((rec.partition, post.created_at_ms))
            if post.ingested_at_ms is not None:
                latencies.append(max(0, now - post.ingested_at_ms) / 1000)
            for m in matches:
                key = (m.brand, "mentions")
                by_rule[key] = by_rule.get(key, 0) + 1
                for rule_id in m.rule_ids:
                    key = (m.brand, rule_id)
                    by_rule[key] = by_rule.get(key, 0) + 1
                hits.append(Hit.from_post(post, m))
        # counted once per batch: a metric call per post cost more than a tenth of matching
        metrics = self.metrics
        for source, n in by_source.items():
            metrics.posts_consumed_by(source).inc(n)
        for key, n in by_rule.items():
            metrics.matches_by(key).inc(n)
        metrics.processing_latency.observe_all(latencies)
        return out

    def _dead(self, out: MatchOutput, rec: RecordLike, reason: str, detail: str, now: int) -> None:
        letter = counted_dead_letter(self.metrics, "matcher", rec, reason, detail, now)
        out.dead_letters.append(letter)

    def commit_event_times(self, event_times: list[tuple[int, int]]) -> None:
        """Call once the hits of these posts are on the matches topic."""
        now = self.now_ms()
        # the newest of each run of one partition's posts: a slice is mostly one
        # partition, and a call per post cost 1.4% of the main thread at 24,500 posts/s
        for partition, run in groupby(event_times, key=_FIRST):
            self.clock.observe(partition, max(map(_SECOND, run)), now)


@dataclass
class DetectOutput:
    events: list[AlertEvent] = field(default_factory=list)
    dirty: dict[str, int] = field(default_factory=dict)
    """brand -> index (into the input records) of a record from the brand's partition."""
    bad_records: list[RecordLike] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, dict[str, object]]] = field(default_factory=list)
    """A dead letter (key, object) for each of ``bad_records``."""


BAD_MATCHES_RECORD = "bad_matches_record"
"""Dead-letter reason of a matches record the detect stage cannot read (only a bug or
a foreign writer on the internal topic makes one)."""


class DetectStage:
    """Per-brand windows and incidents, advanced by hits and watermark ticks.

    Like ``rules.engine.Engine``, a watermark advances only the brands that are
    due (``Detector.next_due_ms``): a brand with a hit in a window not yet
    evaluated, or an open incident.  The first watermark of a partition after
    start, rebalance or rule reload advances every brand stored for it, which
    also rebuilds the schedule from the table.

    ``load(key)`` reads the table: a brand's state is its head (key: the brand id)
    and the segments it lists (``segment_key``); ``write`` says what to store, with
    ``segment_fanout`` segments of a level merged into one (``rules.state.write_state``).
    """

    def __init__(
        self,
        rules: RuleHolder,
        metrics: WorkerMetrics,
        *,
        partitions: int,
        load: Callable[[str], bytes | None],
        now_ms: Callable[[], int],
        segment_fanout: int = SEGMENT_FANOUT,
    ) -> None:
        self.rules = rules
        self.segment_fanout = segment_fanout
        self.metrics = metrics
        self.partitions = partitions
        self.load = load
        self.now_ms = now_ms
        self.states: dict[str, BrandState] = {}
        self.mergers: dict[int, WatermarkMerger] = {}
        self._brands_by_partition: dict[int, list[str]] = {}
        self._brand_ids: frozenset[str] = frozenset()
        self._digest = ""
        self._due: dict[str, int] = {}
        """brand -> the first boundary (ms) where advancing it can change anything."""
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        """matches partition -> heap of (due boundary ms, brand); stale entries are skipped."""
        self._scanned: set[int] = set()
        """Matches partitions whose stored brands have all been advanced once."""
        self._untidy: dict[str, int | None] = {}
        """brand -> its last boundary before the advances not yet tidied (see ``tidy``)."""
        self._held: dict[int, list[Hit | HitRow]] = {}
        """matches partition -> hits that sweeps went ahead of (created at or after the
        boundary they reached), counted before the next sweep that reads them
        (``steps``, ``count_held``)."""
        self._gauges_due: dict[str, None] = {}
        """Brands whose per-brand gauges are behind their states (``refresh_gauges``)."""
        self._reading: set[int] = set()
        """Matches partitions with a tick read since the last ``forget`` (this agent's)."""
        self._unfinished: dict[int, list[str]] = {}
        """matches partition -> brands its sweeps advanced whose bookkeeping
        (``Detector.finish``) and next due time wait for the partition's next record
        (``steps``), so that the boundary's alerts, of every partition, go out first."""

    def swept_boundary_ms(self) -> int | None:
        """The step boundary that every matches partition read since the last ``forget``
        has been swept to (None: none read yet, or one without a watermark): the match
        loop holds back while the detect agent is behind the boundary it sent
        (``streams.matchloop.BoundaryGate``)."""
        lowest: int | None = None
        for partition in self._reading:
            wm = self.mergers[partition].watermark_ms
            if wm is None:
                return None
            lowest = wm if lowest is None else min(lowest, wm)
        return None if lowest is None else floor_to(lowest, self.rules.current.detector.step_ms)

    def forget(self) -> None:
        """Drop cached state (after a rebalance the table is the truth), and the per-brand
        gauges (set again for the brands still owned as they change)."""
        self._reading.clear()
        self.states.clear()
        self._gauges_due.clear()
        self.metrics.drop_brand_gauges()
        self._untidy.clear()
        self._held.clear()
        self._due.clear()
        self._heaps.clear()
        self._scanned.clear()
        self._unfinished.clear()

    def _refresh_rules(self) -> None:
        ruleset = self.rules.current.ruleset
        if ruleset.digest != self._digest:
            self._brands_by_partition = {}
            for b in ruleset.brands:
                q = partition_for(b.id, self.partitions)
                self._brands_by_partition.setdefault(q, []).append(b.id)
            self._brand_ids = frozenset(b.id for b in ruleset.brands)
            self._digest = ruleset.digest
            self._scanned.clear()  # new plans: advance every stored brand once

    def brands_of(self, partition: int) -> list[str]:
        self._refresh_rules()
        return self._brands_by_partition.get(partition, [])

    def _schedule(self, partition: int, brand: str, due_ms: int) -> None:
        schedule(self._heaps.setdefault(partition, []), self._due, brand, due_ms)

    def state(self, brand: str) -> BrandState:
        st = self.states.get(brand)
        if st is None:
            raw = self.load(brand)
            detector = self.rules.current.detector
            if raw:
                st = load_state(raw, lambda name: self.load(segment_key(brand, name)))
            else:
                st = detector.new_state(brand)
            self.states[brand] = st
        return st

    def process(self, records: Sequence[RecordLike]) -> DetectOutput:
        """``steps`` in one go, with every hit of ``records`` counted when it returns."""
        out = DetectOutput()
        for _ in self.steps(records, out, lambda: False):
            pass
        for partition, brand in self.count_held():
            out.dirty.setdefault(brand, _last_index(records, partition))
        self.update_gauges(out.dirty)
        return out

    def count_held(self) -> list[tuple[int, str]]:
        """Count the hits held back by sweeps (see ``steps``); returns (matches partition,
        brand) of each brand they changed.  The agent calls it before a state write-back,
        so a record is acknowledged only once all its hits are in a stored state."""
        changed: list[tuple[int, str]] = []
        held, self._held = self._held, {}
        for partition, hits in held.items():
            out = DetectOutput()
            for hit in hits:
                self._hit(partition, hit, 0, out)
            changed.extend((partition, brand) for brand in out.dirty)
        return changed

    def steps(
        self, records: Sequence[RecordLike], out: DetectOutput, pause: Callable[[], bool]
    ) -> Iterator[None]:
        """``process`` in slices: yields whenever ``pause()`` says so, after a record or
        after one brand is advanced, with ``out`` (events so far) consistent.

        A record that moves the watermark to a new boundary (a batch's hits, then its
        tick) is swept before its hits created at or after that boundary are counted:
        the sweep cannot read them, and its alerts need not wait for them.  Those hits
        are held, as are the held hits of earlier records that the boundary does not
        reach.  A record that reaches no new boundary holds the hits created at or
        after the next one (no sweep reads them before it) and counts the others, held
        ones included; a record that does reach one counts the held hits created
        before it first, so a sweep never goes ahead of a hit it reads (``count_held``
        counts them all).  At full load a partition's boundary record thus does its
        sweep and nothing else before its alerts go out, and the records just before
        it, whose hits are all after the boundary, count nothing: counting them was
        a third of a boundary record, and up to 15 ms of the records the agent had to
        read before the four partitions' boundary records.  Likewise a sweep leaves the
        advanced brands' bookkeeping and next due times to the partition's next record,
        which does them before anything else (``_finish``).

        A watermark that jumps far (catch-up after an outage) can advance every brand
        through many boundaries, seconds of work: the agent gives the event loop (the
        match stage, the producer) a turn between slices.  The caller resumes the
        steps before anything else touches this stage, or drops the whole batch
        (revoked partitions: ``forget``), so the result equals one ``process`` call.
        The per-brand gauges are left to the caller (``update_gauges``), which the
        agent calls once per state write-back rather than once per batch.
        """
        self._refresh_rules()
        for index, rec in enumerate(records):
            if rec.partition in self._unfinished:
                yield from self._finish(rec.partition, pause)
            try:
                items = decode_items(rec.value or b"")
            except Exception as exc:  # an internal topic: log loudly, never crash
                log.error(
                    "bad matches record at %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc
                )
                out.bad_records.append(rec)
                self._dead(out, rec, f"{type(exc).__name__}: {exc}")
                continue
            partition = rec.partition
            tick = items[-1] if items else None
            if isinstance(tick, Tick):
                hits = cast("list[Hit | HitRow]", items[:-1])
                yield from self._tick(partition, tick, index, out, pause, hits)
            else:
                for hit in self._held.pop(partition, ()):
                    self._hit(partition, hit, index, out)
                for item in items:
                    if isinstance(item, Tick):
                        yield from self._tick(partition, item, index, out, pause)
                    else:
                        self._hit(partition, item, index, out)
            if pause():
                yield

    def _dead(self, out: DetectOutput, rec: RecordLike, detail: str) -> None:
        out.dead_letters.append(
            counted_dead_letter(
                self.metrics, "detector", rec, BAD_MATCHES_RECORD, detail[:500], self.now_ms()
            )
        )

    def _merger(self, partition: int) -> WatermarkMerger:
        merger = self.mergers.get(partition)
        if merger is None:
            merger = self.mergers[partition] = WatermarkMerger(
                self.rules.current.detector.lateness_ms, self.partitions
            )
        return merger

    def _tick(
        self,
        partition: int,
        tick: Tick,
        index: int,
        out: DetectOutput,
        pause: Callable[[], bool],
        hits: Sequence[Hit | HitRow] = (),
    ) -> Iterator[None]:
        """A watermark tick, after ``hits`` (a batch record's) and the partition's held
        hits.  Those no sweep reads before the next boundary are held for later
        (``steps``), the others counted first: when the tick reaches a new boundary,
        the hits created at or after it; otherwise those created at or after the
        boundary after the current one."""
        merger = self._merger(partition)
        self._reading.add(partition)
        before = merger.watermark_ms
        wm = merger.update(tick.reports)  # counting hits never reads the merger
        held = self._held.pop(partition, None)
        if held is not None:
            hits = [*held, *hits]
        if wm is None:  # no boundary yet: nothing to hold for
            for hit in hits:
                self._hit(partition, hit, index, out)
            return
        step = self.rules.current.detector.step_ms
        target = floor_to(wm, step)
        crossing = before is None or floor_to(before, step) != target
        # a sweep at boundary T reads the hits created before T: hold those the next
        # sweep cannot read (this record's own when it crosses, else the one a step on)
        hold_from = target if crossing else target + step
        later: list[Hit | HitRow] = []
        for hit in hits:
            created_at_ms = hit[3] if isinstance(hit, list) else hit.created_at_ms
            if created_at_ms >= hold_from:
                later.append(hit)
            else:
                self._hit(partition, hit, index, out)
        if wm != before:
            yield from self._advance(partition, wm, index, out, pause)
        if later:
            self._held[partition] = later

    def _hit(self, partition: int, hit: Hit | HitRow, index: int, out: DetectOutput) -> None:
        if isinstance(hit, list):  # a batch's hits come as rows, counted as they are
            brand, created_at_ms = hit[0], hit[3]
        else:
            brand, created_at_ms = hit.brand, hit.created_at_ms
        if brand not in self._brand_ids:
            return  # brand removed by a rule reload since the hit was made
        detector = self.rules.current.detector
        st = self.state(brand)
        if isinstance(hit, list):
            # one call: a second (hit_due_ms) repeated the plan and quiet-totals lookups
            result, due = detector.count_row(st, hit)
        else:
            result = detector.observe(st, hit)
            due = detector.hit_due_ms(st, created_at_ms) if result == "counted" else None
        if result == "counted":
            if due is not None:
                self._schedule(partition, brand, due)
        elif result == "late":
            self.metrics.late_hits.labels(brand).inc()
        elif result == "duplicate":
            self.metrics.duplicate_hits.labels(brand).inc()
        out.dirty[brand] = index

    def _advance(
        self,
        partition: int,
        watermark_ms: int,
        index: int,
        out: DetectOutput,
        pause: Callable[[], bool],
    ) -> Iterator[None]:
        detector = self.rules.current.detector
        now = self.now_ms()
        self.metrics.watermark.set(watermark_ms / 1000)
        self.metrics.event_time_lag.set(max(0.0, (now - watermark_ms) / 1000))
        if partition not in self._scanned:
            self._scanned.add(partition)
            for brand in self.brands_of(partition):
                if brand in self.states or self.load(brand) is not None:
                    self._due.pop(brand, None)
                    self._schedule(partition, brand, -1)
        if partition in self._unfinished:  # a second sweep in one record (a tick between its hits)
            yield from self._finish(partition, pause)
        target = floor_to(watermark_ms, detector.step_ms)
        heap = self._heaps.get(partition, [])
        unfinished = self._unfinished.setdefault(partition, [])
        while heap and heap[0][0] <= target:
            due, brand = heapq.heappop(heap)
            if self._due.get(brand) != due:
                continue  # superseded by an earlier schedule
            del self._due[brand]
            st = self.state(brand)
            # forgetting expired buckets and samples waits for the brand's write-back
            # (``tidy``): a third of the sweep that the alerts no longer wait for; the
            # rest of the bookkeeping (moving the quiet totals, forgetting old post ids)
            # and the next due time wait for the partition's next record (``_finish``)
            self._untidy.setdefault(brand, st.last_boundary_ms)
            out.events.extend(detector.advance(st, watermark_ms, tidy=False, finish=False))
            out.dirty[brand] = index
            unfinished.append(brand)
            if pause():
                yield
        if not unfinished:
            del self._unfinished[partition]

    def _finish(self, partition: int, pause: Callable[[], bool]) -> Iterator[None]:
        """The bookkeeping the partition's sweeps left (``Detector.finish``), and each
        advanced brand's next due time: before the partition's next record counts a hit
        or sweeps (a brand not yet scheduled would be missed).  At full load that record
        comes ~100 ms after the boundary's, so the alerts of all four partitions' sweeps
        no longer wait for it (it was a third of a sweep: BENCHMARKS.md, session 26)."""
        brands = self._unfinished[partition]
        detector = self.rules.current.detector
        while brands:
            brand = brands.pop()
            st = self.states.get(brand)
            if st is not None:
                nxt = detector.next_due_ms(st)  # finishes the state first
                if nxt is not None:
                    self._schedule(partition, brand, nxt)
            if pause():
                yield
        del self._unfinished[partition]

    def refresh_gauges(self, changed: Iterable[str], pause: Callable[[], bool]) -> Iterator[None]:
        """``update_gauges`` of the brands written since the last refresh (``written``)
        and of ``changed``, yielding whenever ``pause()`` says so.

        The worker calls it at each scrape of /metrics, before rendering: set at every
        write-back instead, the gauges of 1,000 brands took 40 ms of the event loop every
        write-back, for a scrape every 15 s.
        """
        due = self._gauges_due
        due.update(dict.fromkeys(changed))  # before any pause: ``changed`` may change then
        while due:
            brand, _ = due.popitem()
            self.update_gauges((brand,))
            if pause():
                yield

    def update_gauges(self, brands: Iterable[str]) -> None:
        """Set the open-incident and window gauges of these brands from their states."""
        detector = self.rules.current.detector
        by_id = self.rules.current.ruleset.by_id
        gauge = self.metrics.gauge
        open_incidents = self.metrics.open_incidents
        window_posts, baseline_level = self.metrics.window_posts, self.metrics.baseline_level
        for brand in brands:
            st = self.states.get(brand)
            b = by_id.get(brand)
            if st is None or b is None:
                continue
            counts: dict[str, int] = {}
            for _rule_id, severity in detector.open_incidents(st):
                counts[severity] = counts.get(severity, 0) + 1
            for severity in ("low", "medium", "high", "critical"):
                gauge(open_incidents, brand, severity).set(counts.get(severity, 0))
            for rule in b.rules:
                if isinstance(rule, VelocityRule):
                    figures = detector.current_figures(st, rule.id)
                    if figures is not None:
                        gauge(window_posts, brand, rule.id).set(figures[0])
                        gauge(baseline_level, brand, rule.id).set(figures[1])

    def tidy(self, brand: str) -> None:
        """Forget what the brand's windows no longer read (``Detector.tidy``), left by
        the sweeps since its last tidy.  ``write`` and ``dump`` call it first; every
        advanced brand is dirty, so its next write-back does it."""
        if brand in self._untidy:
            prev = self._untidy.pop(brand)
            st = self.states.get(brand)
            if st is not None:
                self.rules.current.detector.tidy(st, prev)

    def dump(self, brand: str) -> bytes:
        """The brand's whole state (``dump_state``)."""
        self.tidy(brand)
        return dump_state(self.states[brand])

    def write(self, brand: str) -> list[tuple[str, bytes | None]]:
        """What to store of the brand's state since its last write, in order: (key,
        value) pairs, None a deletion (maybe of a key that is gone already).  Call
        ``written`` once they are stored."""
        self.tidy(brand)
        w = write_state(self.states[brand], self.segment_fanout)
        ops: list[tuple[str, bytes | None]] = [
            (segment_key(brand, name), value) for name, value in w.segments
        ]
        ops.append((brand, w.head))
        ops.extend((segment_key(brand, name), None) for name in w.deleted)
        return ops

    def written(self, brand: str) -> None:
        """The last ``write`` of ``brand`` is stored; its gauges are set at the next
        ``refresh_gauges``."""
        st = self.states.get(brand)
        if st is not None:
            state_written(st)
            self._gauges_due[brand] = None


def _last_index(records: Sequence[RecordLike], partition: int) -> int:
    """Index of the last of ``records`` from ``partition`` (held hits came from one)."""
    for i in range(len(records) - 1, -1, -1):
        if records[i].partition == partition:
            return i
    msg = f"no record from partition {partition}"
    raise ValueError(msg)


def segment_key(brand: str, name: str) -> str:
    """The table key of a segment of a brand's state (``rules.state.segment_name``; ``/``
    is not in brand ids, so no segment key is a brand's)."""
    return f"{brand}/{name}"
