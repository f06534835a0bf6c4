"""What the worker's two agents do, free of faust so it can be tested with plain calls.

``MatchStage``: raw post values -> hits per brand (or dead letters).
``DetectStage``: hits and watermark ticks from the matches topic -> alert events,
with per-brand state kept in a cache and written back to the changelog-backed
table by the agent.  All decisions are the engine's (``rules/``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2

from rules.deadletter import dead_letter
from rules.detect import AlertEvent, BrandState, dump_state, load_state
from rules.errors import InvalidPost
from rules.model import Hit, VelocityRule
from rules.post import decode_post
from rules.watermark import PartitionClock, WatermarkMerger
from streams.codecs import Tick, decode_record
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder

log = logging.getLogger(__name__)


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as aiokafka/Java)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class MatchOutput:
    hits: list[Hit] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, dict[str, object]]] = field(default_factory=list)
    """(original key, dead-letter object)."""
    event_times: list[tuple[int, int]] = field(default_factory=list)
    """(partition, created_at_ms) of every valid post, for the watermark clock."""


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

    def process(self, records: list[Record]) -> MatchOutput:
        out = MatchOutput()
        matcher = self.rules.current.matcher
        now = self.now_ms()
        for rec in records:
            try:
                if rec.value is None:
                    reason = "empty_value"
                    raise InvalidPost(reason, "the message has no value (a tombstone)")
                post = decode_post(rec.value)
                matches = matcher.match(post)
            except InvalidPost as exc:
                self._dead(out, rec, exc.reason, exc.detail, now)
                continue
            except Exception as exc:  # the one error boundary: nothing crashes the worker
                log.exception("matching failed at %s[%d]@%d", rec.topic, rec.partition, rec.offset)
                self._dead(out, rec, "processing_error", f"{type(exc).__name__}: {exc}", now)
                continue
            self.metrics.posts_consumed.labels(post.source).inc()
            out.event_times.append((rec.partition, post.created_at_ms))
            if post.ingested_at_ms is not None:
                self.metrics.processing_latency.observe(max(0, now - post.ingested_at_ms) / 1000)
            for m in matches:
                self.metrics.matches.labels(m.brand, "mentions").inc()
                for rule_id in m.rule_ids:
                    self.metrics.matches.labels(m.brand, rule_id).inc()
                out.hits.append(Hit.from_post(post, m))
        return out

    def _dead(self, out: MatchOutput, rec: Record, reason: str, detail: str, now: int) -> None:
        self.metrics.dead_letters.labels("matcher", reason.split(":")[0]).inc()
        out.dead_letters.append(
            (
                rec.key,
                dead_letter(
                    reason=reason,
                    detail=detail,
                    stage="matcher",
                    topic=rec.topic,
                    partition=rec.partition,
                    offset=rec.offset,
                    received_at_ms=now,
                    payload=rec.value or b"",
                ),
            )
        )

    def commit_event_times(self, event_times: list[tuple[int, int]]) -> None:
        """Call once the hits of these posts are on the matches topic."""
        now = self.now_ms()
        for partition, ts in event_times:
            self.clock.observe(partition, ts, now)


@dataclass
class DetectOutput:
    events: list[AlertEvent] = field(default_factory=list)
    dirty: dict[str, int] = field(default_factory=dict)
    """brand -> index (into the input records) of a record from the brand's partition."""
    bad_records: list[Record] = field(default_factory=list)


class DetectStage:
    """Per-brand windows and incidents, advanced by hits and watermark ticks."""

    def __init__(
        self,
        rules: RuleHolder,
        metrics: WorkerMetrics,
        *,
        partitions: int,
        load: Callable[[str], bytes | None],
        now_ms: Callable[[], int],
    ) -> None:
        self.rules = rules
        self.metrics = metrics
        self.partitions = partitions
        self.load = load
        self.now_ms = now_ms
        self.states: dict[str, BrandState] = {}
        self.mergers: dict[int, WatermarkMerger] = {}
        self._brands_by_partition: dict[int, list[str]] = {}
        self._digest = ""

    def forget(self) -> None:
        """Drop cached state (after a rebalance the table is the truth)."""
        self.states.clear()

    def brands_of(self, partition: int) -> list[str]:
        ruleset = self.rules.current.ruleset
        if ruleset.digest != self._digest:
            self._brands_by_partition = {}
            for b in ruleset.brands:
                q = partition_for(b.id, self.partitions)
                self._brands_by_partition.setdefault(q, []).append(b.id)
            self._digest = ruleset.digest
        return self._brands_by_partition.get(partition, [])

    def state(self, brand: str) -> BrandState:
        st = self.states.get(brand)
        if st is None:
            raw = self.load(brand)
            detector = self.rules.current.detector
            st = load_state(raw) if raw else detector.new_state(brand)
            self.states[brand] = st
        return st

    def process(self, records: list[Record]) -> DetectOutput:
        out = DetectOutput()
        detector = self.rules.current.detector
        for index, rec in enumerate(records):
            try:
                item = decode_record(rec.value or b"")
            except Exception as exc:  # an internal topic: log loudly, never crash
                log.error(
                    "bad matches record at %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc
                )
                out.bad_records.append(rec)
                continue
            if isinstance(item, Tick):
                merger = self.mergers.get(rec.partition)
                if merger is None:
                    merger = self.mergers[rec.partition] = WatermarkMerger(
                        detector.lateness_ms, self.partitions
                    )
                before = merger.watermark_ms
                wm = merger.update(item.reports)
                if wm is not None and wm != before:
                    self._advance(rec.partition, wm, index, out)
                continue
            hit = item
            if hit.brand not in {b.id for b in self.rules.current.ruleset.brands}:
                continue  # brand removed by a rule reload since the hit was made
            st = self.state(hit.brand)
            result = detector.observe(st, hit)
            if result == "late":
                self.metrics.late_hits.labels(hit.brand).inc()
            elif result == "duplicate":
                self.metrics.duplicate_hits.labels(hit.brand).inc()
            out.dirty[hit.brand] = index
        self._update_gauges(out)
        return out

    def _advance(self, partition: int, watermark_ms: int, index: int, out: DetectOutput) -> None:
        detector = self.rules.current.detector
        now = self.now_ms()
        self.metrics.watermark.set(watermark_ms / 1000)
        self.metrics.event_time_lag.set(max(0.0, (now - watermark_ms) / 1000))
        for brand in self.brands_of(partition):
            if brand not in self.states and self.load(brand) is None:
                continue  # never seen: nothing to evaluate or resolve
            st = self.state(brand)
            events = detector.advance(st, watermark_ms)
            out.dirty[brand] = index
            out.events.extend(events)

    def _update_gauges(self, out: DetectOutput) -> None:
        detector = self.rules.current.detector
        ruleset = self.rules.current.ruleset
        for brand in out.dirty:
            st = self.states.get(brand)
            if st is None:
                continue
            try:
                b = ruleset.brand(brand)
            except KeyError:
                continue
            counts: dict[str, int] = {}
            for _rule_id, severity in detector.open_incidents(st):
                counts[severity] = counts.get(severity, 0) + 1
            for severity in ("low", "medium", "high", "critical"):
                self.metrics.open_incidents.labels(brand, severity).set(counts.get(severity, 0))
            figures_of = getattr(detector, "current_figures", None)
            for rule in b.rules:
                if isinstance(rule, VelocityRule) and figures_of is not None:
                    figures = figures_of(st, rule.id)
                    if figures is not None:
                        self.metrics.window_posts.labels(brand, rule.id).set(figures[0])
                        self.metrics.baseline_level.labels(brand, rule.id).set(figures[1])

    def dump(self, brand: str) -> bytes:
        return dump_state(self.states[brand])
