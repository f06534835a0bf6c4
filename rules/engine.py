"""The whole-stream driver: match, observe per brand, advance with the global watermark.

Used by ``backtest`` and ``evaluate``; the live worker makes the same calls
(Matcher.match, Detector.observe, Detector.advance) spread over two agents.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from rules.alerts import AlertEvent
from rules.detect import Detector
from rules.incidents import EVENT_TYPES
from rules.model import BrandMatch, Post, RuleSet
from rules.state import BrandState

BATCH_GC_THRESHOLD = (20_000, 20, 100)
"""Collector thresholds while ``batch_gc`` is active (CPython's default: 700, 10, 10)."""


@contextmanager
def batch_gc() -> Iterator[None]:
    """Garbage collection tuned for a long run over a stream (backtest, evaluate, benchmarks).

    The detector's state is many small containers (bucket records, author sets,
    samples) that live for minutes of event time; with CPython's default thresholds
    the collector re-scans them every few hundred allocations, about a third of the
    detector's time on a 1,000-brand load (BENCHMARKS.md).  Objects alive on entry
    (rules, matcher) are frozen out of the collector's view and young objects are
    collected less often; cycles are still collected.  Restored on exit.
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*BATCH_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


class MatcherLike(Protocol):
    def match(self, post: Post) -> list[BrandMatch]: ...


SCHEDULE_SLACK = 4
"""A schedule's heap is rebuilt from its live entries when it holds more than this many
entries per brand due, plus 16 brands' worth (``schedule``)."""


def schedule(heap: list[tuple[int, str]], due_of: dict[str, int], brand: str, due_ms: int) -> None:
    """Make ``brand`` due at ``due_ms`` unless it is due sooner: ``due_of`` holds each brand's
    live time, ``heap`` (a heap of (time, brand)) every time pushed; a popped entry that is
    not its brand's live time is skipped.

    A superseded entry stays until its own time comes, and brands scheduled ahead and then,
    hit, sooner left them faster than they came due (125-300 a second at the worker
    benchmark's load, 220,000 after 19 minutes: BENCHMARKS.md, session 20); past
    ``SCHEDULE_SLACK`` a brand the heap keeps only the live ones.
    """
    current = due_of.get(brand)
    if current is None or due_ms < current:
        due_of[brand] = due_ms
        heapq.heappush(heap, (due_ms, brand))
        if len(heap) > SCHEDULE_SLACK * (len(due_of) + 16):
            heap[:] = [e for e in heap if due_of.get(e[1]) == e[0]]
            heapq.heapify(heap)


@dataclass(slots=True)
class EngineStats:
    """Counters of one Engine run."""

    posts: int = 0
    """Posts processed."""
    matched: int = 0
    """Posts that mention at least one brand."""
    hits: int = 0
    """(post, brand) pairs counted."""
    late: int = 0
    duplicates: int = 0
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    """Events emitted, by CloudEvent type."""


class Engine:
    """Runs a RuleSet over a stream of posts in arrival order (see the module doc)."""

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        lateness_ms: int = 60_000,
        step_ms: int = 10_000,
        dedup_horizon_ms: int = 86_400_000,
        matcher: MatcherLike | None = None,
    ) -> None:
        if matcher is None:
            from rules.matcher import Matcher

            matcher = Matcher(ruleset)
        self.matcher: MatcherLike = matcher
        self.detector = Detector(
            ruleset, lateness_ms=lateness_ms, step_ms=step_ms, dedup_horizon_ms=dedup_horizon_ms
        )
        self.states: dict[str, BrandState] = {}
        """brand id -> its state (brands that have had a hit)."""
        self.stats = EngineStats()
        self.max_seen_ms: int | None = None
        """Latest event time seen."""
        self._target_ms: int | None = None
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    @property
    def watermark_ms(self) -> int | None:
        """Latest event time seen minus the allowed lateness."""
        if self.max_seen_ms is None:
            return None
        return self.max_seen_ms - self.detector.lateness_ms

    def process(self, post: Post) -> list[AlertEvent]:
        """Match one post, count it for each brand it mentions, advance the watermark."""
        stats = self.stats
        stats.posts += 1
        matches = self.matcher.match(post)
        detector = self.detector
        step = detector.step_ms
        ts = post.created_at_ms
        if matches:
            stats.matched += 1
            states = self.states
            due_of = self._due
            count = detector.count_post
            for match in matches:
                brand = match.brand
                state = states.get(brand)
                if state is None:
                    state = states[brand] = detector.new_state(brand)
                result, due = count(state, post, match)
                if result == "counted":
                    stats.hits += 1
                    if due is not None:
                        schedule(self._heap, due_of, brand, due)
                elif result == "late":
                    stats.late += 1
                elif result == "duplicate":
                    stats.duplicates += 1
        if self.max_seen_ms is None or ts > self.max_seen_ms:
            self.max_seen_ms = ts
            target = ts - detector.lateness_ms
            target -= target % step
            if self._target_ms is None or target > self._target_ms:
                self._target_ms = target
                if self._heap and self._heap[0][0] <= target:
                    return self._advance_due(target)
        return []

    def finish(self) -> list[AlertEvent]:
        """Advance every brand to the final watermark; open incidents stay open."""
        if self.max_seen_ms is None:
            return []
        watermark = self.max_seen_ms - self.detector.lateness_ms
        collected: list[tuple[int, str, int, AlertEvent]] = []
        for brand in sorted(self.states):
            self._collect(brand, watermark, collected)
        return self._ordered(collected)

    def _schedule(self, brand: str, due_ms: int) -> None:
        schedule(self._heap, self._due, brand, due_ms)

    def _advance_due(self, target_ms: int) -> list[AlertEvent]:
        collected: list[tuple[int, str, int, AlertEvent]] = []
        heap = self._heap
        due_of = self._due
        states = self.states
        detector = self.detector
        advance, next_due = detector.advance, detector.next_due_ms
        counts = self.stats.events
        pop, push = heapq.heappop, heapq.heappush
        while heap and heap[0][0] <= target_ms:
            due, brand = pop(heap)
            if due_of.get(brand) != due:
                continue  # superseded by an earlier schedule
            del due_of[brand]
            # _collect, inlined (one call per due brand adds up on a 1,000-brand load)
            state = states[brand]
            events = advance(state, target_ms)
            for event in events:
                collected.append((event.time_ms, brand, len(collected), event))
                counts[event.type] += 1
            nxt = next_due(state)
            if nxt is not None:
                due_of[brand] = nxt
                push(heap, (nxt, brand))
        return self._ordered(collected) if collected else []

    def _collect(
        self, brand: str, watermark_ms: int, out: list[tuple[int, str, int, AlertEvent]]
    ) -> None:
        state = self.states[brand]
        for event in self.detector.advance(state, watermark_ms):
            out.append((event.time_ms, brand, len(out), event))
            self.stats.events[event.type] += 1
        nxt = self.detector.next_due_ms(state)
        self._due.pop(brand, None)
        if nxt is not None:
            self._schedule(brand, nxt)

    @staticmethod
    def _ordered(collected: list[tuple[int, str, int, AlertEvent]]) -> list[AlertEvent]:
        collected.sort(key=lambda item: item[:3])
        return [item[3] for item in collected]
