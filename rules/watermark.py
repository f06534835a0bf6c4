"""Event-time watermarks across the partitions of the posts topic.

The live worker reads posts from several partitions, possibly in several
processes.  Each match stage reports, per posts partition it owns, the newest
event time it has seen and whether the partition is idle (no record for a
while).  The detector merges those reports into one watermark: the slowest
active partition minus the allowed lateness, so a partition that is behind
holds the watermark back instead of making its posts late.  When every
partition is idle, the watermark is the newest event time seen anywhere minus
the lateness, as in ``backtest``.  Wall time is a parameter (``now_ms``);
nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rules.windows import floor_to


@dataclass(frozen=True, slots=True)
class PartitionReport:
    """What one match stage knows of one posts partition."""

    max_event_ms: int | None
    """Newest event time seen on the partition (None: nothing seen yet)."""
    idle: bool
    """No record for ``idle_after_ms`` of wall time."""
    sent_ms: int
    """Wall time of the report; the newest report for a partition wins."""


class PartitionClock:
    """The match stage's view: newest event time and last activity per posts partition."""

    def __init__(self, idle_after_ms: int) -> None:
        self.idle_after_ms = idle_after_ms
        self._max_event_ms: dict[int, int] = {}
        self._last_active_ms: dict[int, int] = {}

    def assign(self, partitions: set[int], now_ms: int) -> None:
        """Partitions assigned to this stage; new ones start 'active, nothing seen'."""
        for p in list(self._last_active_ms):
            if p not in partitions:
                del self._last_active_ms[p]
                self._max_event_ms.pop(p, None)
        for p in partitions:
            self._last_active_ms.setdefault(p, now_ms)

    def observe(self, partition: int, event_ms: int, now_ms: int) -> None:
        prev = self._max_event_ms.get(partition)
        if prev is None or event_ms > prev:
            self._max_event_ms[partition] = event_ms
        self._last_active_ms[partition] = now_ms

    def report(self, now_ms: int, busy: frozenset[int] = frozenset()) -> dict[int, PartitionReport]:
        """Reports for every assigned partition; ``busy`` ones (records waiting) are never idle."""
        return {
            p: PartitionReport(
                max_event_ms=self._max_event_ms.get(p),
                idle=p not in busy and now_ms - last >= self.idle_after_ms,
                sent_ms=now_ms,
            )
            for p, last in self._last_active_ms.items()
        }


class WatermarkMerger:
    """The detector's view, for one partition of the matches topic."""

    def __init__(self, lateness_ms: int, partitions: int) -> None:
        self.lateness_ms = lateness_ms
        self.partitions = partitions
        """How many partitions the posts topic has: all must report before anything advances."""
        self._reports: dict[int, PartitionReport] = {}
        self._watermark_ms: int | None = None

    @property
    def watermark_ms(self) -> int | None:
        return self._watermark_ms

    def update(self, reports: dict[int, PartitionReport]) -> int | None:
        """Merge reports; returns the (monotonic) watermark, None until one is known."""
        for p, rep in reports.items():
            old = self._reports.get(p)
            if old is None or rep.sent_ms >= old.sent_ms:
                if old is not None and old.max_event_ms is not None:
                    newest = old.max_event_ms
                    if rep.max_event_ms is None or rep.max_event_ms < newest:
                        rep = PartitionReport(newest, rep.idle, rep.sent_ms)
                self._reports[p] = rep
        candidate = self._candidate()
        if candidate is not None and (self._watermark_ms is None or candidate > self._watermark_ms):
            self._watermark_ms = candidate
        return self._watermark_ms

    def _candidate(self) -> int | None:
        reports = self._reports.values()
        if len(self._reports) < self.partitions:
            return None  # some partition has no report yet (its owner has not started)
        seen = [r.max_event_ms for r in reports if r.max_event_ms is not None]
        if all(r.idle for r in reports):
            return max(seen) - self.lateness_ms if seen else None
        if len(seen) < len(self._reports):
            return None  # a partition has delivered nothing yet while others flow: hold
        return min(seen) - self.lateness_ms


def acted_on(
    reports: dict[int, PartitionReport], lateness_ms: int, step_ms: int
) -> tuple[Any, ...]:
    """What of one sender's reports a detector can act on; reports with an equal key
    change nothing it decides, so a sender need not send them (``streams.matchloop``).

    The detector advances to ``floor_to(watermark, step)``, and ``WatermarkMerger``
    takes the lowest newest event time of all partitions (the highest when all are
    idle), less the lateness: so the step boundaries of this sender's lowest and
    highest, and which of its partitions are idle, unseen or assigned at all.
    """
    seen = [r.max_event_ms for r in reports.values() if r.max_event_ms is not None]
    lo = hi = None
    if seen:
        lo = floor_to(min(seen) - lateness_ms, step_ms)
        hi = floor_to(max(seen) - lateness_ms, step_ms)
    return (
        lo,
        hi,
        frozenset(p for p, r in reports.items() if r.idle),
        frozenset(p for p, r in reports.items() if r.max_event_ms is None),
        frozenset(reports),
    )
