"""Scoring an Engine run against a scenario's ground truth (used by ``evaluate``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from rules.alerts import AlertEvent
from rules.engine import Engine, batch_gc
from rules.incidents import OPENED
from rules.model import RuleSet
from rules.scenario import Injected, Scenario

DETECT_WITHIN_MS = 30 * 60_000
"""An opened event counts for a crisis from its start to 30 min after its last post."""
TRAP_TAIL_MS = 15 * 60_000
"""An opened event counts against a trap from its start to 15 min after its end."""


@dataclass(frozen=True, slots=True)
class CrisisResult:
    crisis: Injected
    detected_ms: int | None
    """Event time from crisis start to the first matching ``opened``; None: missed."""
    rule_id: str | None


@dataclass(frozen=True, slots=True)
class Score:
    crises: list[CrisisResult]
    trap_incidents: list[tuple[Injected, AlertEvent]]
    false_alarms: list[AlertEvent]
    """``opened`` events explained by no injected crisis (traps included)."""

    @property
    def detected(self) -> int:
        return sum(1 for c in self.crises if c.detected_ms is not None)

    @property
    def median_ttd_ms(self) -> float | None:
        times = [c.detected_ms for c in self.crises if c.detected_ms is not None]
        return statistics.median(times) if times else None


def run_scenario(ruleset: RuleSet, scenario: Scenario) -> list[AlertEvent]:
    engine = Engine(ruleset)
    events: list[AlertEvent] = []
    with batch_gc():
        for post in scenario.posts:
            events.extend(engine.process(post))
        events.extend(engine.finish())
    return events


def score(ruleset: RuleSet, scenario: Scenario, events: list[AlertEvent]) -> Score:
    opened = [e for e in events if e.type == OPENED]
    types = {(b.id, r.id): r.crisis_type for b in ruleset.brands for r in b.rules}
    results = []
    for c in scenario.crises:
        hits = [
            e
            for e in opened
            if e.brand == c.brand
            and types.get((e.brand, e.rule_id)) == c.crisis_type
            and c.start_ms <= e.time_ms <= c.end_ms + DETECT_WITHIN_MS
        ]
        first = min(hits, key=lambda e: e.time_ms) if hits else None
        ttd = first.time_ms - c.start_ms if first else None
        results.append(CrisisResult(c, ttd, first.rule_id if first else None))
    explained = [
        e
        for e in opened
        if any(
            c.brand == e.brand and c.start_ms <= e.time_ms <= c.end_ms + DETECT_WITHIN_MS
            for c in scenario.crises
        )
    ]
    false_alarms = [e for e in opened if e not in explained]
    traps = [
        (t, e)
        for t in scenario.traps
        for e in false_alarms
        if (t.kind == "no_brand" or e.brand == t.brand)
        and t.start_ms <= e.time_ms <= t.end_ms + TRAP_TAIL_MS
    ]
    return Score(results, traps, false_alarms)
