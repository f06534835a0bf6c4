"""The detector: per-brand event-time windows, velocity rules and incidents.

Time is the watermark the caller passes (max event time seen - allowed
lateness); nothing here reads a clock.  Rules are evaluated at fixed boundaries
every ``step_ms`` aligned to the epoch: once the watermark reaches a boundary T,
every rule of the brand is evaluated for ``[T - window_ms, T)`` using only hits
created before T.  A hit created before the brand's last evaluated boundary is
late (counted in ``late``, never added).  So the decisions do not depend on
arrival order as long as no hit is late, and the live worker and ``backtest``
decide the same.  See docs/detection.md.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Callable
from operator import lt
from typing import Any

from rules.alerts import AlertEvent, sample_object, window_figures
from rules.incidents import (
    ESCALATED,
    OPENED,
    RESOLVED,
    Incident,
    event_id,
    higher,
    incident_id,
    reached_severity,
)
from rules.model import BrandMatch, Hit, Post, RuleSet
from rules.plan import MENTIONS, BrandPlan, RulePlan, WindowFigures, baseline_level, plan_brand
from rules.post import format_rfc3339_ms
from rules.state import BrandState, dump_state, load_state
from rules.windows import (
    DAY_MS,
    HIST_MS,
    TILE_MS,
    AuthorsCache,
    Sample,
    Series,
    ceil_to,
    floor_to,
    sample_of,
    sample_of_post,
    sample_of_row,
)

__all__ = [
    "AlertEvent",
    "BrandState",
    "Detector",
    "dump_state",
    "load_state",
]

log = logging.getLogger(__name__)

_MENTIONS_ONLY = (MENTIONS,)
_IGNORED: tuple[str, int | None] = ("ignored", None)
_LATE: tuple[str, int | None] = ("late", None)
_DUPLICATE: tuple[str, int | None] = ("duplicate", None)
_COUNTED: tuple[str, int | None] = ("counted", None)


def _window_at(
    keys: list[int], counts: dict[int, int], window_ms: int, t: int
) -> tuple[int, int, int]:
    """``(left, right, total)``: the window ``[t - window_ms, t)`` as the index range
    ``keys[left:right]`` of the bucket starts ``keys`` (ascending), and its count."""
    left = bisect_left(keys, t - window_ms)
    right = bisect_left(keys, t)
    total = 0
    for i in range(left, right):
        total += counts[keys[i]]
    return left, right, total


def _span_bound(series: Series, lo_ms: int, hi_ms: int) -> int | None:
    """An upper bound of the hits in the buckets ``[lo_ms, hi_ms)``: the history minutes
    over them (a hit of such a bucket is in one of those minutes).  None where the span
    holds no more buckets than minutes: summing the buckets then costs no more.

    A busy brand's velocity rule below its floor was looked for at every advance with a
    sum of its whole window (600 buckets at 1 s steps) that cannot reach the floor; the
    minutes of that span (11 for a 10-minute window) tell so at a twentieth of the cost.
    """
    first = lo_ms - lo_ms % HIST_MS
    keys = series.keys
    if bisect_left(keys, hi_ms) - bisect_left(keys, lo_ms) <= (hi_ms - first) // HIST_MS + 1:
        return None
    get = series.hist.get
    return sum([get(m, 0) for m in range(first, hi_ms, HIST_MS)])


def _first_reaching(
    keys: list[int], counts: dict[int, int], window_ms: int, minimum: int, lo: int, hi: int,
    step: int,
) -> int | None:  # fmt: skip
    """The first boundary T in ``(lo, hi]`` whose window ``[T - window_ms, T)`` holds at
    least ``minimum`` hits of the buckets ``keys`` (ascending starts) / ``counts``.

    A window count rises only where a bucket enters it, at ``T = bucket + step``; so the
    candidates are ``lo + step`` and those, tried in order with a running sum.
    """
    t = lo + step
    left, right, total = _window_at(keys, counts, window_ms, t)
    if total >= minimum:
        return t
    n = len(keys)
    while right < n:
        k = keys[right]
        t = k + step
        if t > hi:
            return None
        total += counts[k]
        right += 1
        start = t - window_ms
        while keys[left] < start:  # stops at keys[right - 1] (= t - step >= start)
            total -= counts[keys[left]]
            left += 1
        if total >= minimum:
            return t
    return None


def _first_dropping(
    keys: list[int], counts: dict[int, int], window_ms: int, minimum: int, lo: int, hi: int,
    step: int,
) -> int | None:  # fmt: skip
    """The first boundary T in ``(lo, hi]`` whose window ``[T - window_ms, T)`` holds fewer
    than ``minimum`` hits of the buckets ``keys`` (ascending starts) / ``counts``.

    A window count falls only where a bucket leaves it, at ``T = bucket + window + step``;
    so the candidates are ``lo + step`` and those, tried in order with a running sum.
    Hits counted later only add: the boundary found is never later than the true one.
    """
    t = lo + step
    left, right, total = _window_at(keys, counts, window_ms, t)
    if total < minimum:
        return t
    n = len(keys)
    while left < right:  # total > 0: some bucket is still in the window
        t = keys[left] + window_ms + step
        if t > hi:
            return None
        while right < n and keys[right] < t:  # entered by t
            total += counts[keys[right]]
            right += 1
        start = t - window_ms
        while left < right and keys[left] < start:  # left by t
            total -= counts[keys[left]]
            left += 1
        if total < minimum:
            return t
    return None


ADVANCE_AFTER_IDS = 32
"""A brand keeping more post ids than this is advanced at the next boundary (``_due_after``),
which lets it forget those created before it."""
_NEVER = 1 << 62
"""A boundary later than any (ms since the epoch)."""


def _steady(rp: RulePlan, inc: Incident) -> bool:
    """An open incident that changes only when its window count crosses ``min_count``: a
    keyword rule without escalation steps, at the rule's own severity (``_evaluate``'s
    fast path).  A brand whose open incidents are all steady need not be evaluated at
    every step (``_next_candidate``)."""
    rule = rp.rule
    return rule.kind == "keyword" and not rule.escalate and inc.severity == rule.severity


def _forget_ids(dedup: dict[str, int], boundary_ms: int) -> None:
    """Forget the ids of posts created before ``boundary_ms``, the boundary just evaluated.

    Such a post is late from now on, copies included (lateness is checked first), so its
    id need not be kept.  At every advance, the worker's too (``advance(tidy=False)``;
    with ``finish=False`` once the boundary's alerts are out, before the brand's next hit):
    a brand keeping more than ``ADVANCE_AFTER_IDS`` ids is due at the next boundary, and
    while the ids it had when advanced waited for its write-back (up to
    ``CRISISWATCH_STATE_FLUSH_S``), every hit made it due at every step until then: 2.5
    advances of each busy brand per write-back on the worker benchmark's load, a third of
    all hits scheduling one (BENCHMARKS.md, session 22).  A brand advanced each step keeps
    about lateness + step of ids (its state's head is mostly these).
    """
    if dedup:
        for post_id in [p for p, ts in dedup.items() if ts < boundary_ms]:
            del dedup[post_id]


def _adopted(state: BrandState, plan: BrandPlan) -> bool:
    """``state`` has been brought in line with ``plan`` (see ``Detector._adopt``)."""
    return state.cache.get("plan") is plan


class Detector:
    """Evaluates one RuleSet over per-brand states (see the module doc)."""

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        lateness_ms: int = 60_000,
        step_ms: int = 10_000,
        dedup_horizon_ms: int = 86_400_000,
    ) -> None:
        if step_ms <= 0 or HIST_MS % step_ms:
            msg = f"step_ms must be a positive divisor of {HIST_MS}; got {step_ms}"
            raise ValueError(msg)
        if lateness_ms < 0 or dedup_horizon_ms < 0:
            msg = (
                "lateness_ms and dedup_horizon_ms must be >= 0; "
                f"got {lateness_ms} and {dedup_horizon_ms}"
            )
            raise ValueError(msg)
        self.ruleset = ruleset
        self.lateness_ms = lateness_ms
        self.step_ms = step_ms
        self.dedup_horizon_ms = dedup_horizon_ms
        self._plans = {b.id: plan_brand(b, step_ms) for b in ruleset.brands}

    def new_state(self, brand: str) -> BrandState:
        return BrandState(brand)

    # ------------------------------------------------------------------ input

    def observe(self, state: BrandState, hit: Hit) -> str:
        """Count one hit: ``"counted"``, ``"late"``, ``"duplicate"`` or ``"ignored"``.

        ``"ignored"``: the brand is not in this RuleSet (removed by a reload).
        """
        return self._count(state, hit.post_id, hit.created_at_ms, hit.rule_ids, hit.followers,
                           hit.author_key, hit.ingested_at_ms, hit, sample_of,
                           False)[0]  # fmt: skip

    def observe_post(self, state: BrandState, post: Post, match: BrandMatch) -> str:
        """``observe(state, Hit.from_post(post, match))`` without building the Hit."""
        return self._count(state, post.id, post.created_at_ms, match.rule_ids, post.followers,
                           post.author_key, post.ingested_at_ms, post, sample_of_post,
                           False)[0]  # fmt: skip

    def count_post(
        self, state: BrandState, post: Post, match: BrandMatch
    ) -> tuple[str, int | None]:
        """``observe_post`` and, when the hit was counted, ``hit_due_ms`` in one call: the
        Engine's per-hit path, where two calls and their lookups added up."""
        return self._count(state, post.id, post.created_at_ms, match.rule_ids, post.followers,
                           post.author_key, post.ingested_at_ms, post, sample_of_post,
                           True)  # fmt: skip

    def count_row(self, state: BrandState, row: list[Any]) -> tuple[str, int | None]:
        """``observe(state, Hit.from_row(row))`` and, when the hit was counted,
        ``hit_due_ms``, in one call and without building the Hit: the worker's detect
        stage, which gets hits as rows from the matches topic (``count_post`` for rows)."""
        return self._count(state, row[1], row[3], row[7], row[6], row[4], row[11], row,
                           sample_of_row, True)  # fmt: skip

    def _count(
        self,
        state: BrandState,
        post_id: str,
        ts: int,
        rule_ids: tuple[str, ...],
        followers: int,
        author_key: str,
        ingested_at_ms: int | None,
        source: Any,
        make_sample: Callable[[Any], Sample],
        with_due: bool,
    ) -> tuple[str, int | None]:
        """``(status, due)``: the status ``observe`` returns and, when ``with_due`` and
        the hit was counted, what ``hit_due_ms`` would return (else None)."""
        if state.unfinished is not None:
            self.finish(state)
        plan = self._plans.get(state.brand)
        if plan is None:
            return _IGNORED
        last = state.last_boundary_ms
        if last is not None and ts < last:
            # late before duplicate: a copy of an evaluated post is late either way, so
            # ids older than the last boundary can be forgotten (see _prune)
            state.late += 1
            return _LATE
        dedup = state.dedup
        seen = dedup.get(post_id)
        if seen is not None and abs(ts - seen) < self.dedup_horizon_ms:
            state.duplicates += 1
            return _DUPLICATE
        dedup[post_id] = ts
        first = state.first_hit_ms
        if first is None or ts < first:
            state.first_hit_ms = ts
        step = self.step_ms
        adaptive = plan.adaptive_series
        all_series = state.series
        quiet = state.cache.get("quiet")
        totals = quiet[2] if quiet is not None and quiet[0] == last and quiet[1] is plan else None
        for name in (MENTIONS, *rule_ids) if rule_ids else _MENTIONS_ONLY:
            if name not in plan.series:
                continue
            series = all_series.get(name)
            if series is None:
                series = all_series[name] = Series()
            series.add(ts, step, name in adaptive, followers, author_key, post_id,
                       ingested_at_ms, source, make_sample)  # fmt: skip
            if totals is not None:  # keep _quiet's totals current
                for i in plan.rules_of.get(name, ()):
                    totals[i] += 1
        state.counted += 1
        if not with_due:
            return _COUNTED
        return "counted", self._due_after(state, plan, ts, last, totals)

    # ------------------------------------------------------------------- time

    def hit_due_ms(self, state: BrandState, ts: int) -> int | None:
        """After ``observe`` counted a hit created at ``ts``: the boundary where the brand
        must next be advanced, or None when it need not be (see ``_quiet``).
        """
        self.finish(state)
        plan = self._plans.get(state.brand)
        last = state.last_boundary_ms
        quiet = state.cache.get("quiet")
        totals = quiet[2] if quiet is not None and quiet[0] == last and quiet[1] is plan else None
        return self._due_after(state, plan, ts, last, totals)

    def _due_after(
        self, state: BrandState, plan: BrandPlan | None, ts: int, last: int | None,
        totals: list[int] | None,
    ) -> int | None:  # fmt: skip
        """``hit_due_ms``, given the brand's plan, last boundary and, when current, the
        cached quiet totals (``_count`` keeps them so).

        The boundary after the hit, unless no rule it counts for can change there: a rule
        whose total from its window at ``last`` on (``_quiet``) is below its minimum, or
        with a steady incident that holds (a hit only keeps it so), changes nothing;
        one in its warm-up nothing before the warm-up ends.  An open incident of any
        other kind (or a false one, which a hit may bring back) makes it the next
        boundary, as does a hit a longest window or more after ``last`` (so that a
        brand is advanced, and pruned, at least that often) or one that leaves more than
        ``ADVANCE_AFTER_IDS`` post ids kept (they are forgotten behind the brand's last
        boundary: a busy brand left alone for minutes would store thousands).
        """
        step = self.step_ms
        due = ts - ts % step + step
        if last is None:
            return due
        if last + step > due:
            due = last + step
        if plan is None:
            return due
        incidents = state.incidents
        if incidents:
            # the same for every hit between two advances (only an advance changes the
            # incidents, and it moves the last boundary), and a busy brand's hits are
            # many: worked out once per boundary
            steady = state.cache.get("steady")
            if steady is None or steady[0] != last or steady[1] is not plan:
                steady = state.cache["steady"] = (last, plan, self._all_steady(state, plan, True))
            if not steady[2]:
                return due
        if ts >= last + plan.max_window_ms or len(state.dedup) > ADVANCE_AFTER_IDS:
            return due
        if totals is None:
            if not _adopted(state, plan):
                return due
            totals = self._totals(state, plan, last)
        found: int | None = None
        first_hit = state.first_hit_ms
        for i, rp in enumerate(plan.rules):
            if totals[i] < rp.min_count or (incidents and rp.rule.id in incidents):
                continue
            at = due
            if rp.warmup_ms and first_hit is not None:
                # the first boundary T with T - first_hit >= warm-up (see _holds)
                at = max(due, ceil_to(first_hit + rp.warmup_ms, step))
            if rp.ratio is not None:
                # below the ratio's floor up to the end of that minute (_ratio_floor)
                known = state.cache.get((rp.rule.id, "floor"))
                if (
                    known is not None
                    and known[1] == first_hit
                    and known[0] == floor_to(at - rp.window_ms, HIST_MS)
                    and totals[i] < known[2]
                ):
                    at = known[3] + step
            if found is None or at < found:
                found = at
                if at == due:
                    break
        return found

    def _quiet(self, state: BrandState, plan: BrandPlan, base: int, bounded: bool = True) -> bool:
        """True when no boundary after ``base`` can open anything with the hits counted so far.

        No incident is open and, for every rule, the hits of its series in buckets from
        ``base - window`` on are fewer than its ``min_count``: a window ending at a later
        boundary holds at most those (buckets before ``base`` it covers are in the
        rule's window at ``base``), so no count can reach its minimum until more hits
        come.  Such a brand need not be advanced; its late cut-off stays at ``base``.
        ``bounded``: also require the newest hit within the longest window after
        ``base``, so that a brand is advanced (and pruned) at least that often.
        The totals are cached per ``base``, kept current by ``_count`` and moved on by
        ``advance`` (``_move_quiet``).
        """
        if state.incidents:
            return False
        mentions = state.series.get(MENTIONS)
        if mentions is None or not mentions.keys:
            return True
        if bounded and mentions.keys[-1] >= base + plan.max_window_ms:
            return False
        return all(map(lt, self._totals(state, plan, base), plan.min_counts))

    @staticmethod
    def _totals(state: BrandState, plan: BrandPlan, base: int) -> list[int]:
        """``_quiet``'s totals at ``base``: per rule, the hits of its series in buckets from
        ``base - window`` on; cached (see ``_quiet``)."""
        quiet = state.cache.get("quiet")
        if quiet is not None and quiet[0] == base and quiet[1] is plan:
            totals: list[int] = quiet[2]
            return totals
        totals = []
        for rp in plan.rules:
            s = state.series.get(rp.series)
            if s is None:
                totals.append(0)
                continue
            keys, got = s.keys, s.counts
            totals.append(sum([got[k] for k in keys[bisect_left(keys, base - rp.window_ms) :]]))
        state.cache["quiet"] = (base, plan, totals)
        return totals

    @staticmethod
    def _move_quiet(state: BrandState, plan: BrandPlan, prev: int | None, target: int) -> None:
        """Move ``_quiet``'s cached totals from the last boundary ``prev`` to ``target``.

        Totals at a base count the buckets from ``base - window`` on; at ``target`` those
        in ``[prev - window, target - window)`` are out, usually one bucket or none.
        Summed afresh at each new base, they were over half of a sweep once windows had
        filled (10-minute windows at 1 s steps: 600 buckets a rule, every brand, every
        boundary).  Totals not current at ``prev`` are dropped (rebuilt on demand).
        """
        quiet = state.cache.get("quiet")
        if quiet is None:
            return
        if prev is None or quiet[0] != prev or quiet[1] is not plan:
            del state.cache["quiet"]
            return
        totals = quiet[2]
        series = state.series
        for i, rp in enumerate(plan.rules):
            s = series.get(rp.series)
            if s is None:
                continue
            keys, got = s.keys, s.counts
            w = rp.window_ms
            for k in keys[bisect_left(keys, prev - w) : bisect_left(keys, target - w)]:
                totals[i] -= got[k]
        state.cache["quiet"] = (target, plan, totals)

    def next_due_ms(self, state: BrandState) -> int | None:
        """First boundary where ``advance`` would evaluate anything; None: none until a hit."""
        self.finish(state)
        plan = self._plans.get(state.brand)
        if plan is None or state.first_hit_ms is None:
            return None
        base = state.last_boundary_ms
        if base is None:
            base = floor_to(state.first_hit_ms, self.step_ms)
        if not _adopted(state, plan):
            return base + self.step_ms  # advance adopts the plan
        if state.incidents:
            if not self._all_steady(state, plan):
                return base + self.step_ms
            # a steady incident resolves by itself: its window empties and resolve_after
            # passes, at the latest one longest window and one resolve_after after the
            # newest hit (its series' buckets are a subset of the mentions')
            mentions = state.series.get(MENTIONS)
            newest = mentions.keys[-1] if mentions is not None and mentions.keys else base
            horizon = max(newest, base) + plan.max_window_ms + plan.max_resolve_ms + self.step_ms
            return self._next_candidate(state, plan, base, horizon)
        if state.last_boundary_ms is not None and self._quiet(state, plan, base):
            return None
        mentions = state.series.get(MENTIONS)
        if mentions is None or not mentions.keys:
            return None
        # after the newest bucket's last window every window is empty
        return self._next_candidate(state, plan, base, mentions.keys[-1] + plan.max_window_ms)

    @staticmethod
    def _all_steady(state: BrandState, plan: BrandPlan, holding: bool = False) -> bool:
        """Every open incident of ``state`` is steady (``_steady``); with ``holding``, and
        none is false."""
        incidents = state.incidents
        for rp in plan.rules:
            inc = incidents.get(rp.rule.id)
            if inc is not None and (
                not _steady(rp, inc) or (holding and inc.false_since_ms is not None)
            ):
                return False
        return True

    def _next_candidate(self, state: BrandState, plan: BrandPlan, lo: int, hi: int) -> int | None:
        """The first boundary in ``(lo, hi]`` where some rule could change anything;
        None when there is none.  A rule without an open incident: where its window count
        reaches its ``min_count`` past its warm-up (a ratio rule: its floor, see
        ``_ratio_floor``; answered early, at the next baseline minute, when not within
        this one).  A rule with an open incident, which must be steady (``_steady``; the
        callers see to it): where its count could fall below the minimum while it holds
        (``_first_dropping``, cached), or where it resolves or its count is back while it
        is false.  Any boundary before the answer changes nothing.

        Every window ending in ``(lo, hi]`` lies in ``[lo + step - window, hi)``: a rule
        whose span holds fewer hits than its minimum is skipped at once.  For the others
        ``_first_reaching`` sweeps the buckets once, from the first boundary past the
        warm-up (before it ``_holds`` is false), and a later rule need only look before
        the earliest boundary found so far.
        """
        step = self.step_ms
        first_hit = state.first_hit_ms
        quiet = state.cache.get("quiet")
        totals = quiet[2] if quiet is not None and quiet[0] == lo and quiet[1] is plan else None
        run = state.cache.get("run")
        running = run[1] if run is not None and run[0] == lo else None
        if running is not None and len(running) != len(plan.rules):
            running = None
        found: int | None = None
        incidents = state.incidents
        for i, rp in enumerate(plan.rules):
            s = state.series.get(rp.series)
            inc = incidents.get(rp.rule.id) if incidents else None
            if inc is not None:  # steady (the callers see to it): when can it change?
                end = hi if found is None else found - step
                if end <= lo:
                    continue
                keys = s.keys if s is not None else []
                counts = s.counts if s is not None else {}
                if inc.false_since_ms is None:  # holds until its count falls below the minimum
                    # cached: hits counted later only put it off, so until that boundary is
                    # reached it is still the earliest possible one
                    drops = state.cache.get("drop")
                    known = drops.get(rp.rule.id) if drops is not None else None
                    if known is not None and known[0] == inc.incident_id and known[1] > lo:
                        at = known[1]
                    else:
                        at = _first_dropping(keys, counts, rp.window_ms, rp.min_count, lo,
                                             _NEVER, step)  # fmt: skip
                        if drops is None:
                            drops = state.cache["drop"] = {}
                        drops[rp.rule.id] = (inc.incident_id, at)
                    got = at if at <= end else None
                else:  # false: resolves after resolve_after, unless its count is back first
                    due = inc.false_since_ms + rp.rule.resolve_after_ms
                    due = max(lo + step, ceil_to(due, step))
                    got = due if due <= end else None
                    back = _first_reaching(keys, counts, rp.window_ms, rp.min_count, lo,
                                           (got or end + step) - step, step)  # fmt: skip
                    if back is not None:
                        got = back
                if got is not None:
                    found = got
                continue
            if s is None or not s.keys:
                continue
            start = lo
            if rp.warmup_ms and first_hit is not None:
                # the first boundary T with T - first_hit >= warm-up, minus a step
                start = max(lo, ceil_to(first_hit + rp.warmup_ms, step) - step)
            end = hi if found is None else found - step
            if end <= start:
                continue
            minimum, last = rp.min_count, end
            if rp.ratio is not None:  # within one baseline minute the ratio sets a floor
                minimum, last = self._ratio_floor(state, rp, start + step)
                last = min(last, end)
            warming = start > lo
            if warming:
                # the warm-up ends within the horizon: the rule may first hold at
                # ``start + step``.  Once its count there reaches the minimum it stays
                # reached (hits only add to that window, and pruning never reaches it), so
                # that answer is kept until the warm-up's end, the minimum or the rule
                # changes, instead of a window sum and a bucket sweep at every advance
                known = state.cache.get((rp.rule.id, "warming"))
                if (
                    known is not None
                    and known[0] == start
                    and known[1] == minimum
                    and known[2] is rp
                ):
                    found = start + step
                    continue
            if (
                running is not None
                and start == lo
                and lo + step <= end
                and running[i] - s.counts.get(lo - rp.window_ms, 0) >= minimum
            ):
                # the window count at ``lo`` (advance's running counts, of buckets that
                # no longer change) less the bucket leaving the window at ``lo + step``
                # is a lower bound there: the earliest boundary of all is reached.  A
                # busy rule (a velocity rule past its warm-up, at every step) took two
                # window sums and a bucket sweep here, half of a boundary's sweep
                return lo + step
            if totals is not None:
                # _quiet's totals at ``lo`` bound the span's count from above (all the
                # buckets from ``lo + step - window`` on): a sum over the span only when
                # that bound reaches the minimum
                w = rp.window_ms
                if totals[i] - s.window_count(lo - w, lo + step - w) < rp.min_count:
                    continue
            # the span's count below the minimum skips the rule: a sum of its buckets (600
            # a 10-minute window at 1 s steps) at every advance of a busy brand, unless a
            # lower bound already reaches the minimum: at ``lo``, the running counts less the
            # bucket leaving the window; in the warm-up, what an earlier call found from
            # the same start up to a horizon no further than this one (hits only add to
            # the span, and pruning never reaches it)
            if warming:
                spanned = state.cache.get((rp.rule.id, "span"))
                reached = (
                    spanned is not None
                    and spanned[0] == start
                    and spanned[1] is rp
                    and end >= spanned[2]
                )
            else:
                reached = (
                    running is not None
                    and running[i] - s.counts.get(lo - rp.window_ms, 0) >= rp.min_count
                )
            if not reached:
                if s.window_count(start + step - rp.window_ms, end) < rp.min_count:
                    continue
                if warming:
                    state.cache[(rp.rule.id, "span")] = (start, rp, end)
            bound = _span_bound(s, start + step - rp.window_ms, last)
            if bound is not None and bound < minimum:
                got = None  # no window ending in (start, last] can hold the minimum
            else:
                got = _first_reaching(s.keys, s.counts, rp.window_ms, minimum, start, last, step)
            if warming and got == start + step:
                state.cache[(rp.rule.id, "warming")] = (start, minimum, rp)
            if got is None and last < end:
                got = last + step  # the next baseline minute: another floor
            if got is not None:
                found = got
        return found

    def _ratio_floor(self, state: BrandState, rp: RulePlan, t: int) -> tuple[int, int]:
        """``(floor, last)`` for a ratio rule at boundary ``t``: no window count below
        ``floor`` (its ``min_count``, or ``ratio`` times its baseline level, whichever is
        higher) can make it hold at ``t`` or at any boundary up to ``last``, whose windows
        start in the same minute and so share that level (``WindowFigures.level``).

        A busy brand's velocity rule past its warm-up reaches its ``min_count`` at every
        step, but seldom its ratio: with the floor it is evaluated once a minute, not at
        every step.  Cached per minute; the level only grows with hits counted later (the
        baseline's end can lie after the last boundary), so a cached floor is never above
        the true one.
        """
        step = self.step_ms
        anchor = floor_to(t - rp.window_ms, HIST_MS)
        key = (rp.rule.id, "floor")
        known = state.cache.get(key)
        if known is not None and known[0] == anchor and known[1] == state.first_hit_ms:
            return known[2], known[3]
        assert rp.ratio is not None
        # not through the state's running baseline sum: that one assumes the baseline's
        # buckets no longer change, and this window's may still get hits
        level = baseline_level(state, rp, state.series.get(rp.series), t - rp.window_ms, False)
        floor = max(rp.min_count, math.ceil(rp.ratio * level))
        last = (anchor + HIST_MS + rp.window_ms - 1) // step * step
        state.cache[key] = (anchor, state.first_hit_ms, floor, last)
        return floor, last

    def advance(
        self, state: BrandState, watermark_ms: int, *, tidy: bool = True, finish: bool = True
    ) -> list[AlertEvent]:
        """Evaluate every boundary <= ``watermark_ms`` not yet evaluated, in order.

        Idempotent for the same watermark; a watermark behind the last boundary
        does nothing.  ``tidy=False`` leaves forgetting what no window reads (expired
        buckets and samples: a third of the work) to a later ``tidy`` call, so the
        caller can send the alerts first; decisions are the same either way.  The ids
        of posts created before the last boundary are forgotten (``_forget_ids``)
        either way, and ``_quiet``'s totals moved to the new boundary; ``finish=False``
        (with ``tidy=False`` only) leaves those two to ``finish``, which every other
        call on the state runs first: the worker's sweep sends a boundary's alerts
        before this bookkeeping, for every partition.
        """
        self.finish(state)
        plan = self._plans.get(state.brand)
        if plan is None:
            state.incidents.clear()
            state.series.clear()
            return []
        self._adopt(state, plan)
        if state.first_hit_ms is None:
            return []
        step = self.step_ms
        target = floor_to(watermark_ms, step)
        last = state.last_boundary_ms
        if last is None:
            last = floor_to(state.first_hit_ms, step)
        if target <= last:
            return []
        events: list[AlertEvent] = []
        prev = state.last_boundary_ms
        # running window counts per rule, valid at boundary ``run_at`` (see _counts)
        run_at, counts = state.cache.get("run", (None, None))
        t = last + step
        while t <= target:
            if not state.incidents or self._all_steady(state, plan):
                # with no incident open only a boundary where a count reaches its minimum
                # can change anything, and a steady incident only where its count crosses
                # its minimum or it resolves: jump to the first one (or past the target)
                found = self._next_candidate(state, plan, t - step, target)
                if found is None:
                    break
                t = found
            counts = self._counts(state, plan, t, run_at, counts)
            run_at = t
            events.extend(self._evaluate(state, plan, t, counts))
            state.last_boundary_ms = t
            t += step
        state.cache["run"] = (run_at, counts)
        state.last_boundary_ms = target
        if finish or tidy:
            self._move_quiet(state, plan, prev, target)
            _forget_ids(state.dedup, target)
        else:
            state.unfinished = (prev,)
        if tidy:
            self._prune(state, plan, prev, target)
        return events

    def finish(self, state: BrandState) -> None:
        """What ``advance(..., finish=False)`` left: move ``_quiet``'s totals from the
        brand's previous boundary to its last, and forget the ids of posts created before
        the last.  A no-op otherwise.

        Every other entry point runs it first (counting a hit, advancing, tidying,
        ``hit_due_ms``, ``next_due_ms``): a hit counted before it would be missing from
        the moved totals, and pruning before it would drop buckets the move subtracts.
        So the decisions are the same whenever it runs; the worker runs it once a
        boundary's alerts are out (``streams.stages.DetectStage``).
        """
        left = state.unfinished
        if left is None:
            return
        state.unfinished = None
        target = state.last_boundary_ms
        assert target is not None  # set by the advance that left this
        plan = self._plans.get(state.brand)
        if plan is not None:
            self._move_quiet(state, plan, left[0], target)
        else:  # the brand was removed by a rule reload since: its totals are of no use
            state.cache.pop("quiet", None)
        _forget_ids(state.dedup, target)

    def tidy(self, state: BrandState, prev_ms: int | None) -> None:
        """What ``advance(..., tidy=False)`` left: forget the buckets and samples no window
        reads any more.

        ``prev_ms``: the brand's last boundary before the first of those advances.
        Never changes a decision (an unpruned bucket or sample is only never read).
        """
        self.finish(state)
        plan = self._plans.get(state.brand)
        target = state.last_boundary_ms
        if plan is not None and target is not None and target != prev_ms:
            self._prune(state, plan, prev_ms, target)

    def _counts(
        self,
        state: BrandState,
        plan: BrandPlan,
        t: int,
        run_at: int | None,
        counts: list[int] | None,
    ) -> list[int]:
        """Each rule's window count at boundary ``t``, moved from ``run_at`` when cheaper.

        Valid because buckets before the last evaluated boundary never change
        (and the running counts are dropped when buckets they may still read are pruned).
        """
        step = self.step_ms
        series = state.series
        if counts is not None and run_at is not None and len(counts) == len(plan.rules):
            gap = t - run_at
            if 0 < gap < plan.max_window_ms:
                new = []
                for rp, count in zip(plan.rules, counts, strict=True):
                    s = series.get(rp.series)
                    if s is not None:
                        if gap == step:
                            get = s.counts.get
                            count += get(run_at, 0) - get(run_at - rp.window_ms, 0)
                        elif gap < rp.window_ms:
                            # buckets entering [run_at, t) minus those leaving [run_at-w, t-w)
                            w = rp.window_ms
                            keys, got = s.keys, s.counts
                            for k in keys[bisect_left(keys, run_at) : bisect_left(keys, t)]:
                                count += got[k]
                            for k in keys[bisect_left(keys, run_at - w) : bisect_left(keys, t - w)]:
                                count -= got[k]
                        else:
                            count = s.window_count(t - rp.window_ms, t)
                    new.append(count)
                return new
        new = []
        for rp in plan.rules:
            s = series.get(rp.series)
            new.append(s.window_count(t - rp.window_ms, t) if s is not None else 0)
        return new

    def current_figures(self, state: BrandState, rule_id: str) -> tuple[int, float] | None:
        """``(window count, baseline level)`` of a rule at the last evaluated boundary.

        For gauges; None before the first boundary or for an unknown rule.
        """
        plan = self._plans.get(state.brand)
        end_ms = state.last_boundary_ms
        if plan is None or end_ms is None:
            return None
        for rp in plan.rules:
            if rp.rule.id == rule_id:
                series = state.series.get(rp.series)
                count = series.window_count(end_ms - rp.window_ms, end_ms) if series else 0
                return count, WindowFigures(state, rp, series, end_ms, count).level()
        return None

    def open_incidents(self, state: BrandState) -> list[tuple[str, str]]:
        """``(rule_id, severity)`` of each open incident, by rule id."""
        return sorted((rule_id, inc.severity) for rule_id, inc in state.incidents.items())

    # -------------------------------------------------------------- internals

    def _adopt(self, state: BrandState, plan: BrandPlan) -> None:
        """Bring a state made under another RuleSet (or just loaded) in line with ``plan``."""
        if not _adopted(state, plan):
            self._reconcile(state, plan)
            state.cache.clear()  # derived values of another plan are not valid here
            state.cache["plan"] = plan

    def _reconcile(self, state: BrandState, plan: BrandPlan) -> None:
        """Forget series and incidents of rules this RuleSet no longer has."""
        stale = [name for name in state.series if name not in plan.series]
        rule_ids = {rp.rule.id for rp in plan.rules}
        gone = [rule_id for rule_id in state.incidents if rule_id not in rule_ids]
        for name in stale:
            del state.series[name]
        for rule_id in gone:
            log.info("brand %s: rule %s was removed; its open incident %s is closed silently",
                     state.brand, rule_id, state.incidents[rule_id].incident_id)  # fmt: skip
            del state.incidents[rule_id]
        for name, series in state.series.items():
            if series.tiles and name not in plan.adaptive_series:
                series.tiles.clear()

    def _evaluate(
        self, state: BrandState, plan: BrandPlan, t: int, counts: list[int]
    ) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        incidents = state.incidents
        for rp, count in zip(plan.rules, counts, strict=True):
            rule = rp.rule
            inc = incidents.get(rule.id)
            if inc is None:
                if count < rp.min_count:
                    continue
            elif (
                count >= rp.min_count
                and rule.kind == "keyword"
                and not rule.escalate
                and inc.severity == rule.severity
            ):
                # the common case of a busy brand: an open keyword incident that still
                # holds at its own severity (what the general path below decides, without
                # the window's figures)
                inc.false_since_ms = None
                continue
            rule_id = rule.id
            series = state.series.get(rp.series)
            win = WindowFigures(state, rp, series, t, count)
            holds = self._holds(state, rp, win)
            if inc is None:
                if holds:
                    severity = self._severity(rp, rule.severity, win)
                    inc = Incident(incident_id(state.brand, rule_id, t), t, severity)
                    state.incidents[rule_id] = inc
                    events.append(self._event(state, rp, win, inc, OPENED))
                continue
            if holds:
                inc.false_since_ms = None
                severity = self._severity(rp, inc.severity, win)
                if severity != inc.severity:
                    inc.severity = severity
                    events.append(self._event(state, rp, win, inc, ESCALATED))
                continue
            if inc.false_since_ms is None:
                inc.false_since_ms = t
            if t - inc.false_since_ms >= rule.resolve_after_ms:
                del state.incidents[rule_id]
                events.append(self._event(state, rp, win, inc, RESOLVED))
        return events

    @staticmethod
    def _holds(state: BrandState, rp: RulePlan, win: WindowFigures) -> bool:
        if win.count < rp.min_count:
            return False
        if rp.rule.kind == "keyword":
            return True
        assert state.first_hit_ms is not None
        if win.end_ms - state.first_hit_ms < rp.warmup_ms:
            return False
        if rp.ratio is not None:
            if win.count < rp.ratio * win.level():
                return False
        elif not win.adaptive_ok():
            return False
        return not (rp.min_authors and win.authors() < rp.min_authors)

    @staticmethod
    def _severity(rp: RulePlan, current: str, win: WindowFigures) -> str:
        reached = reached_severity(rp.rule.severity, rp.rule.escalate, win.count, win.ratio,
                                   win.reach, win.authors)  # fmt: skip
        return higher(reached, current)

    def _event(
        self, state: BrandState, rp: RulePlan, win: WindowFigures, inc: Incident, event_type: str
    ) -> AlertEvent:
        rule = rp.rule
        s = win.series
        samples = s.window_samples(win.start_ms, win.end_ms) if s else []
        data = {
            "incident_id": inc.incident_id,
            "brand": state.brand,
            "rule_id": rule.id,
            "rule_kind": rule.kind,
            "crisis_type": rule.crisis_type,
            "severity": inc.severity,
            "window": window_figures(
                win.start_ms, win.end_ms, win.count, win.level(), win.authors(), win.reach()
            ),
            "samples": [sample_object(x) for x in samples],
            "opened_at": format_rfc3339_ms(inc.opened_ms),
            "runbook": rule.runbook,
        }
        return AlertEvent(
            id=event_id(inc.incident_id, event_type, win.end_ms, inc.severity),
            type=event_type,
            brand=state.brand,
            time_ms=win.end_ms,
            incident_id=inc.incident_id,
            rule_id=rule.id,
            severity=inc.severity,
            trigger_ingested_at_ms=s.window_ingested(win.start_ms, win.end_ms) if s else None,
            data=data,
        )

    def _prune(self, state: BrandState, plan: BrandPlan, prev_ms: int | None, now_ms: int) -> None:
        """Drop what no future window can read (pruning never changes a decision).

        Step buckets (counts, authors, samples: the per-hit data) at every advance, so
        a busy brand frees a step's worth at a time (once a minute, every brand freed a
        minute's at once: the slowest sweep of all, 0.2 s for 1,000 busy brands), and
        the samples that no later window can list (``Series.prune_samples``);
        baseline and adaptive history only when a new ten-minute tile starts (their
        scans cost more).
        """
        step_before = now_ms - plan.max_window_ms
        cache = state.cache
        run = cache.get("run")
        # running counts moved on from boundary ``now_ms`` only read buckets from
        # ``now_ms - window`` on (see _counts); from an earlier boundary they may subtract
        # a bucket about to be dropped.  Moved to ``now_ms`` first (buckets before the
        # last boundary never change): dropped, every window was summed afresh at the
        # brand's next evaluation, on the sweep's path, once 10-minute windows had filled
        # (BENCHMARKS.md, session 26)
        if (
            run is not None
            and run[0] != now_ms
            and any(s.keys and s.keys[0] < step_before for s in state.series.values())
        ):
            if run[0] is None or run[1] is None:
                del cache["run"]
            else:
                cache["run"] = (now_ms, self._counts(state, plan, now_ms, run[0], run[1]))
        pruned = False
        for series in state.series.values():
            if series.prune_steps(step_before):
                pruned = True
            series.prune_samples(now_ms, prev_ms)
        if pruned:
            # a window's authors moved on from a bucket just dropped cannot subtract it;
            # a brand whose window is not read any more thus frees them too
            for key in [k for k, v in cache.items() if type(v) is AuthorsCache]:
                if cache[key].lo_ms < step_before:
                    del cache[key]
        # history is cut at the start of the ten-minute tile of ``step_before``, and only
        # when that tile changes: the cut then depends on the last boundary alone, not on
        # which boundaries the brand was advanced (or tidied) at on the way
        tile = floor_to(step_before, TILE_MS)
        if prev_ms is not None and floor_to(prev_ms - plan.max_window_ms, TILE_MS) == tile:
            return
        tile_before = tile - 7 * DAY_MS - 2 * 3_600_000 - TILE_MS
        hist_from = tile - HIST_MS
        for name, series in state.series.items():
            # each series keeps the history its own rules' baselines read (a brand's
            # mentions need not keep the day that its keyword rules' events report)
            series.prune_history(hist_from - plan.baseline_of.get(name, 0), tile_before)
        for key in [k for k in state.cache if isinstance(k, tuple) and k[1] == "base"]:
            del state.cache[key]
