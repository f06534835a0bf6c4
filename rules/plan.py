"""Rules prepared for evaluation, and the lazily computed figures of one window.

``BrandPlan`` is a brand's rules with what the detector needs precomputed (the
counted series, windows rounded to whole steps, sensitivity k); ``WindowFigures``
computes a rule's baseline level, ratio, authors, reach and adaptive threshold
at one boundary, each only when a decision needs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from rules.baseline import SENSITIVITY_K, adaptive_threshold, adaptive_tiles, mean_level
from rules.model import Brand, KeywordRule, Rule
from rules.state import BrandState
from rules.windows import (
    DAY_MS,
    HIST_MS,
    TILE_MS,
    AuthorsCache,
    Series,
    ceil_steps,
    floor_to,
    range_sum,
)

log = logging.getLogger(__name__)

KEYWORD_BASELINE_MS = DAY_MS
"""Keyword rules have no baseline of their own; events report this one (24 h)."""
MENTIONS = "mentions"


@dataclass(frozen=True, slots=True)
class RulePlan:
    """One rule, with the figures the detector needs precomputed."""

    rule: Rule
    series: str
    """The counted series: a keyword rule's own id, or a velocity rule's ``of``."""
    window_ms: int
    """Window rounded up to whole steps."""
    baseline_ms: int
    min_count: int
    """At least 1: a window without hits never opens anything."""
    min_authors: int
    ratio: float | None
    k: float | None
    """Robust z-score for ``sensitivity`` rules."""
    warmup_ms: int


@dataclass(frozen=True, slots=True)
class BrandPlan:
    """All rules of one brand, ready to evaluate."""

    brand: Brand
    rules: tuple[RulePlan, ...]
    series: frozenset[str]
    adaptive_series: frozenset[str]
    max_window_ms: int
    min_counts: tuple[int, ...]
    """``min_count`` of each rule, in ``rules`` order."""
    max_resolve_ms: int = 0
    """The longest ``resolve_after`` of any rule."""
    rules_of: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, hash=False)
    """series name -> the indexes (in ``rules``) of the rules that count it."""
    baseline_of: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    """series name -> the longest baseline any rule reads from its history (0: none)."""


def plan_brand(brand: Brand, step_ms: int) -> BrandPlan:
    keyword_ids = {r.id for r in brand.rules if isinstance(r, KeywordRule)}
    plans: list[RulePlan] = []
    for rule in brand.rules:
        window_ms = ceil_steps(rule.window_ms, step_ms)
        if isinstance(rule, KeywordRule):
            plans.append(
                RulePlan(rule, rule.id, window_ms, KEYWORD_BASELINE_MS, max(1, rule.min_count),
                         0, None, None, 0)
            )  # fmt: skip
            continue
        if rule.of != MENTIONS and rule.of not in keyword_ids:
            log.warning("brand %s rule %s: unknown series %r; rule ignored", brand.id, rule.id,
                        rule.of)  # fmt: skip
            continue
        k = None
        if rule.ratio is None:
            k = SENSITIVITY_K[rule.sensitivity or "medium"]
        plans.append(
            RulePlan(rule, rule.of, window_ms, rule.baseline_ms, max(1, rule.min_count),
                     rule.min_authors, rule.ratio, k, rule.effective_warmup_ms)
        )  # fmt: skip
    return BrandPlan(
        brand=brand,
        rules=tuple(plans),
        series=frozenset({MENTIONS} | keyword_ids),
        adaptive_series=frozenset(p.series for p in plans if p.k is not None),
        max_window_ms=max((p.window_ms for p in plans), default=step_ms),
        min_counts=tuple(p.min_count for p in plans),
        max_resolve_ms=max((p.rule.resolve_after_ms for p in plans), default=0),
        baseline_of={
            name: max((p.baseline_ms for p in plans if p.series == name), default=0)
            for name in {MENTIONS} | keyword_ids
        },
        rules_of={
            name: tuple(i for i, p in enumerate(plans) if p.series == name)
            for name in {p.series for p in plans}
        },
    )


def baseline_level(
    state: BrandState, rp: RulePlan, series: Series | None, start_ms: int, cached: bool = True
) -> float:
    """The level of ``rp``'s window starting at ``start_ms``: mean count per window over the
    baseline minutes before that window's minute, floored at 1.

    ``cached``: move the state's running sum (a ``RangeCache``) to it.  Only for windows
    whose baseline has ended by the last evaluated boundary (the cache assumes its
    buckets no longer change); a look ahead passes False.
    """
    anchor = floor_to(start_ms, HIST_MS)
    first_hit = state.first_hit_ms
    first = anchor if first_hit is None else floor_to(first_hit, HIST_MS)
    span = min(rp.baseline_ms, anchor - first)
    total = 0
    if series is not None and span > 0:
        if cached:
            key = (rp.series, "base", rp.baseline_ms)
            total, cache = range_sum(series.hist, anchor - span, anchor, HIST_MS,
                                     state.range_cache(key))  # fmt: skip
            state.cache[key] = cache
        else:
            total = range_sum(series.hist, anchor - span, anchor, HIST_MS, None)[0]
    return mean_level(total, span, rp.window_ms)


class WindowFigures:
    """Lazily computed figures of one rule's window ``[start_ms, end_ms)``."""

    __slots__ = ("_authors", "_level", "_reach", "count", "end_ms", "rp", "series", "start_ms",
                 "state")  # fmt: skip

    def __init__(self, state: BrandState, rp: RulePlan, series: Series | None, end_ms: int,
                 count: int) -> None:  # fmt: skip
        self.state = state
        self.rp = rp
        self.series = series
        self.end_ms = end_ms
        self.start_ms = end_ms - rp.window_ms
        self.count = count
        self._level: float | None = None
        self._authors: int | None = None
        self._reach: int | None = None

    def level(self) -> float:
        """Baseline: mean count per window over the baseline period, floored at 1."""
        if self._level is None:
            self._level = baseline_level(self.state, self.rp, self.series, self.start_ms)
        return self._level

    def ratio(self) -> float:
        return self.count / self.level()

    def authors(self) -> int:
        if self._authors is None:
            s = self.series
            if s is None:
                self._authors = 0
            else:
                # moved on from this rule's window at its last evaluation (see Series.authors_moved)
                key = (self.rp.series, "authors", self.rp.window_ms)
                cached = self.state.cache.get(key)
                self._authors, self.state.cache[key] = s.authors_moved(
                    self.start_ms, self.end_ms, cached if isinstance(cached, AuthorsCache) else None
                )
        return self._authors

    def reach(self) -> int:
        if self._reach is None:
            s = self.series
            self._reach = s.window_reach(self.start_ms, self.end_ms) if s else 0
        return self._reach

    def adaptive_ok(self) -> bool:
        """count >= the adaptive threshold (cached per ten-minute anchor)."""
        rp, state = self.rp, self.state
        assert rp.k is not None and state.first_hit_ms is not None
        anchor = floor_to(self.start_ms, TILE_MS)
        history_ms = self.end_ms - state.first_hit_ms
        mode = history_ms >= 7 * DAY_MS
        key = (rp.rule.id, "adaptive")
        cached = state.cache.get(key)
        if cached is None or cached[0] != (anchor, mode):
            starts = adaptive_tiles(anchor, floor_to(state.first_hit_ms, TILE_MS), rp.baseline_ms,
                                    history_ms)  # fmt: skip
            tiles = self.series.tiles if self.series else {}
            cached = ((anchor, mode), adaptive_threshold(tiles, starts, rp.window_ms, rp.k))
            state.cache[key] = cached
        result = cached[1]
        return result is not None and self.count >= result[1]
