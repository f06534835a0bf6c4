"""Detector: windows, thresholds, incidents and their lifecycle, with explicit integer times."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.detect import ADVANCE_AFTER_IDS, BrandState, Detector, dump_state
from rules.incidents import ESCALATED, OPENED, RESOLVED, event_id, incident_id
from rules.model import EscalateStep, Hit
from rules.plan import RulePlan, WindowFigures
from rules.windows import HIST_MS, AuthorsCache, floor_to
from tests.rules.detect_support import MIN, hit, keyword, post, ruleset, velocity


def _types(events: list) -> list[tuple[str, int, str]]:
    return [(e.type, e.time_ms, e.severity) for e in events]


def test_keyword_rule_opens_at_the_first_boundary_with_enough_hits_and_resolves_when_quiet() -> (
    None
):
    d = Detector(ruleset(keyword(min_count=2, window_ms=10 * MIN, resolve_after_ms=10 * MIN)))
    s = d.new_state("acme")
    assert d.observe(s, hit(1, 100_000, "recall")) == "counted"
    assert d.observe(s, hit(2, 130_000, "recall")) == "counted"
    assert d.observe(s, hit(3, 131_000)) == "counted"  # a mention only: not a recall hit
    events = d.advance(s, 10 * MIN)
    # bucket 130_000 enters the window at boundary 140_000: count 2 >= min_count
    assert _types(events) == [(OPENED, 140_000, "high")]
    opened = events[0]
    assert opened.incident_id == incident_id("acme", "recall", 140_000)
    assert opened.id == event_id(opened.incident_id, OPENED, 140_000, "high")
    assert opened.data["window"]["count"] == 2
    assert opened.data["window"]["start"] == "1969-12-31T23:52:20Z"
    assert d.open_incidents(s) == [("recall", "high")]
    # bucket 100_000 leaves the window after boundary 700_000: false from 710_000,
    # resolved 10 minutes later, by the watermark alone (no more hits)
    events = d.advance(s, 2_000_000)
    assert _types(events) == [(RESOLVED, 1_310_000, "high")]
    assert events[0].incident_id == opened.incident_id
    assert events[0].data["window"]["count"] == 0
    assert events[0].data["opened_at"] == "1970-01-01T00:02:20Z"
    assert d.open_incidents(s) == []
    # a later crossing opens a new incident with a new id
    d.observe(s, hit(4, 2_000_000, "recall"))
    d.observe(s, hit(5, 2_000_500, "recall"))
    again = d.advance(s, 2_100_000)
    assert _types(again) == [(OPENED, 2_010_000, "high")]
    assert again[0].incident_id != opened.incident_id


def test_advance_is_idempotent_and_never_moves_backward() -> None:
    d = Detector(ruleset(keyword()))
    s = d.new_state("acme")
    d.observe(s, hit(1, 5_000, "recall"))
    assert len(d.advance(s, 60_000)) == 1
    assert d.advance(s, 60_000) == []
    assert d.advance(s, 20_000) == []
    assert s.last_boundary_ms == 60_000


def test_late_and_duplicate_hits_are_not_counted() -> None:
    d = Detector(ruleset(keyword(min_count=2)))
    s = d.new_state("acme")
    assert d.observe(s, hit(1, 50_000, "recall")) == "counted"
    d.advance(s, 100_000)
    assert d.observe(s, hit(2, 99_999, "recall")) == "late"
    # a copy of a post whose window is already evaluated is late, like any old post
    assert d.observe(s, hit(1, 50_000, "recall")) == "late"
    assert d.observe(s, hit(3, 100_000, "recall")) == "counted"
    # a copy of a post in the open window is a duplicate
    assert d.observe(s, hit(3, 100_000, "recall")) == "duplicate"
    assert (s.counted, s.late, s.duplicates) == (2, 2, 1)
    events = d.advance(s, 200_000)
    assert _types(events) == [(OPENED, 110_000, "high")]
    assert events[0].data["window"]["count"] == 2
    # ids of evaluated posts are forgotten: the dedup map stays small
    assert s.dedup == {}


def test_a_sweep_that_leaves_tidying_for_later_forgets_the_ids_behind_it_at_once() -> None:
    """``advance(tidy=False)``, the worker's sweep, forgets the ids of posts created before
    its boundary itself: left for the write-back, the more than ``ADVANCE_AFTER_IDS`` a
    busy brand had when swept made each of its hits due at the next step until then."""
    d = Detector(ruleset(keyword(min_count=1_000)), lateness_ms=0, step_ms=1_000)
    s = d.new_state("acme")
    for n in range(ADVANCE_AFTER_IDS + 8):
        d.observe(s, hit(n, 10_000 + n * 100, "recall"))
    assert d.hit_due_ms(s, 13_900) == 14_000  # more than ADVANCE_AFTER_IDS ids kept
    d.advance(s, 14_000, tidy=False)
    assert s.dedup == {}
    assert d.observe(s, hit("a", 14_200, "recall")) == "counted"
    assert d.hit_due_ms(s, 14_200) is None  # 41 hits, far from 1,000: nothing to do at 15 s
    for n in range(ADVANCE_AFTER_IDS):
        d.observe(s, hit(f"b{n}", 14_300, "recall"))
    assert d.hit_due_ms(s, 14_300) == 15_000  # more than ADVANCE_AFTER_IDS since 14 s
    assert d.observe(s, hit(3, 10_300, "recall")) == "late"  # a copy: behind the boundary
    assert d.observe(s, hit("a", 14_200, "recall")) == "duplicate"


def test_a_brand_advanced_every_step_keeps_only_the_open_windows_ids() -> None:
    """Ids are forgotten at every advance, not once a minute: a busy brand (advanced at
    each 1 s step, lateness 500 ms, 10 hits/s) keeps about 1.5 s of them, and a copy
    in the open window is still a duplicate."""
    d = Detector(ruleset(velocity(min_count=1)), lateness_ms=500, step_ms=1_000)
    s = d.new_state("acme")
    most = 0
    for t in range(0, 3 * MIN, 100):
        d.observe(s, hit(t, t))
        if t % 1_000 == 0:
            d.advance(s, t - 500)
            most = max(most, len(s.dedup))
    assert s.counted == 3 * MIN // 100
    assert 10 <= most <= 16
    assert d.observe(s, hit(3 * MIN - 100, 3 * MIN - 100)) == "duplicate"


def test_buckets_dropped_behind_a_quiet_brands_running_counts_are_not_subtracted() -> None:
    """Step buckets are dropped at every advance.  A brand that went quiet keeps the
    running counts of its last evaluated boundary; when buckets those counts still
    include are dropped, the counts must be rebuilt, not moved on (moving on would
    subtract a dropped bucket as 0 and overcount)."""
    d = Detector(
        ruleset(
            keyword("slow", min_count=3, window_ms=MIN),
            keyword("fast", min_count=1, window_ms=1_000, resolve_after_ms=1_000),
        ),
        lateness_ms=0,
        step_ms=1_000,
    )
    s = d.new_state("acme")
    d.observe(s, hit(1, 12_200, "slow"))
    d.observe(s, hit(2, 13_200, "slow"))
    d.observe(s, hit(3, 69_500, "fast"))
    assert [e.type for e in d.advance(s, 73_000)] == [OPENED, RESOLVED]
    assert s.incidents == {}
    # quiet from here: the boundaries up to 75 s are not evaluated, and the "slow" hits
    # at 12-13 s (in the window of the last evaluated boundary) leave the buckets
    assert d.advance(s, 75_000) == []
    for n in range(3):
        d.observe(s, hit(10 + n, 75_100 + n * 100, "slow"))
    events = d.advance(s, 76_000)
    assert _types(events) == [(OPENED, 76_000, "high")]
    assert events[0].data["window"]["count"] == 3


def test_hits_in_any_order_before_the_first_boundary_are_counted() -> None:
    d = Detector(ruleset(keyword(min_count=2)))
    s = d.new_state("acme")
    assert d.observe(s, hit(1, 100_000, "recall")) == "counted"
    assert d.advance(s, 100_000 - 60_000) == []
    assert d.observe(s, hit(2, 50_000, "recall")) == "counted"
    assert s.first_hit_ms == 50_000
    assert _types(d.advance(s, 200_000)) == [(OPENED, 110_000, "high")]


def test_baseline_is_floored_at_one_for_a_brand_without_history() -> None:
    d = Detector(ruleset(velocity(warmup_ms=0)))
    s = d.new_state("acme")
    for n in range(5):
        d.observe(s, hit(n, n * 1000))
    events = d.advance(s, 60_000)
    assert _types(events) == [(OPENED, 10_000, "medium")]
    window = events[0].data["window"]
    assert (window["count"], window["baseline"], window["ratio"]) == (5, 1.0, 5.0)
    assert window["unique_authors"] == 5


def test_velocity_rule_waits_for_warmup_and_compares_against_the_baseline() -> None:
    d = Detector(ruleset(velocity(warmup_ms=60 * MIN)))
    s = d.new_state("acme")
    d.observe(s, hit("first", 0))
    for n in range(20):  # a surge before the warm-up is over
        d.observe(s, hit(n, 30 * MIN + n * 1000))
    assert d.advance(s, 50 * MIN) == []
    for n in range(20, 40):
        d.observe(s, hit(n, 70 * MIN + (n - 20) * 1000))
    events = d.advance(s, 75 * MIN)
    # baseline: 21 hits over the 60 min before the window start -> 3.5 per 10 min
    assert _types(events) == [(OPENED, 70 * MIN + 20_000, "medium")]
    assert events[0].data["window"]["baseline"] == 3.5
    assert events[0].data["window"]["count"] == 20


def test_ratio_below_threshold_does_not_open() -> None:
    d = Detector(ruleset(velocity(warmup_ms=0, min_count=1, ratio=3.0)))
    s = d.new_state("acme")
    # steady 6 per 10 minutes for two hours: never 3x the baseline
    n = 0
    for m in range(0, 120, 10):
        for j in range(6):
            n += 1
            d.observe(s, hit(n, m * MIN + j * 90_000))
    events = d.advance(s, 130 * MIN)
    assert [e for e in events if e.type == OPENED and e.time_ms > 30 * MIN] == []
    assert any(e.type == RESOLVED for e in events)  # the start-up incident resolved


def test_min_authors_stops_one_angry_user() -> None:
    d = Detector(ruleset(velocity(warmup_ms=0, min_authors=3)))
    s = d.new_state("acme")
    for n in range(50):
        d.observe(s, hit(n, n * 500, author="angry"))
    assert d.advance(s, 5 * MIN) == []
    for n in range(50, 53):
        d.observe(s, hit(n, 5 * MIN + n, author=f"other{n}"))
    events = d.advance(s, 6 * MIN)
    assert _types(events) == [(OPENED, 5 * MIN + 10_000, "medium")]
    assert events[0].data["window"]["unique_authors"] == 4


def test_escalation_emits_only_when_severity_rises() -> None:
    steps = (
        EscalateStep(severity="high", ratio=6.0),
        EscalateStep(severity="critical", count=30, reach=1000),
    )
    d = Detector(ruleset(velocity(warmup_ms=0, escalate=steps)))
    s = d.new_state("acme")
    for n in range(5):
        d.observe(s, hit(n, n))
    d.observe(s, hit(5, 10_000))
    for n in range(6, 30):
        d.observe(s, hit(n, 20_000 + n))
    d.observe(s, hit(30, 30_000, followers=1000))
    events = d.advance(s, 60_000)
    assert _types(events) == [
        (OPENED, 10_000, "medium"),
        (ESCALATED, 20_000, "high"),
        (ESCALATED, 40_000, "critical"),
    ]
    assert len({e.incident_id for e in events}) == 1
    assert events[2].data["window"]["reach"] == 30 * 10 + 1000
    assert d.open_incidents(s) == [("surge", "critical")]


def test_event_samples_are_the_top_five_by_reach_and_cloudevent_has_the_contract_shape() -> None:
    d = Detector(ruleset(keyword(min_count=7, runbook="https://wiki.example/r")))
    s = d.new_state("acme")
    followers = [5, 500, 50, 500, 1, 5000, 20]
    for n, f in enumerate(followers):
        d.observe(s, hit(n, 1000 * n, "recall", followers=f, ingested_at_ms=2000 * n + 1))
    (event,) = d.advance(s, 20_000)
    ids = [x["post_id"] for x in event.data["samples"]]
    assert ids == ["p5", "p1", "p3", "p2", "p6"]
    assert event.trigger_ingested_at_ms == 2000 * 6 + 1
    ce = event.to_cloudevent()
    assert set(ce) == {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "data",
    }
    assert (ce["specversion"], ce["source"], ce["subject"]) == ("1.0", "crisiswatch", "acme")
    assert ce["time"] == "1970-01-01T00:00:10Z"
    assert set(ce["data"]) == {
        "incident_id", "brand", "rule_id", "rule_kind", "crisis_type", "severity",
        "window", "samples", "opened_at", "runbook",
    }  # fmt: skip
    assert set(ce["data"]["samples"][0]) == {
        "post_id",
        "source",
        "author",
        "text",
        "url",
        "created_at",
    }
    assert ce["data"]["rule_kind"] == "keyword"
    assert ce["data"]["runbook"] == "https://wiki.example/r"


def test_a_reloaded_ruleset_drops_removed_rules_and_starts_new_ones_empty() -> None:
    old = Detector(ruleset(keyword("recall"), keyword("fraud", min_count=2)))
    s = old.new_state("acme")
    old.observe(s, hit(1, 1000, "recall", "fraud"))
    assert _types(old.advance(s, 20_000)) == [(OPENED, 10_000, "high")]
    new = Detector(ruleset(keyword("fraud", min_count=2), keyword("scam")))
    assert new.advance(s, 30_000) == []
    assert new.open_incidents(s) == []
    assert set(s.series) == {"mentions", "fraud"}
    new.observe(s, hit(2, 40_000, "fraud", "scam"))
    events = new.advance(s, 60_000)
    assert [(e.rule_id, e.time_ms) for e in events] == [("fraud", 50_000), ("scam", 50_000)]


def test_a_brand_removed_from_the_ruleset_is_ignored() -> None:
    d = Detector(ruleset(keyword(), brand="other"))
    s = d.new_state("acme")
    assert d.observe(s, hit(1, 1000, "recall")) == "ignored"
    assert d.advance(s, 100_000) == []


def test_current_figures_report_the_last_window_and_baseline() -> None:
    d = Detector(ruleset(velocity(warmup_ms=0)))
    s = d.new_state("acme")
    assert d.current_figures(s, "surge") is None  # nothing evaluated yet
    for n in range(5):
        d.observe(s, hit(n, n * 1000))
    d.advance(s, 60_000)
    count, level = d.current_figures(s, "surge") or (None, None)
    assert count == 5
    assert level == 1.0  # floored: no history yet
    assert d.current_figures(s, "no-such-rule") is None


def test_a_hit_that_cannot_reach_any_minimum_needs_no_advance() -> None:
    """hit_due_ms: None while every rule's hits since (last boundary - window) stay below
    its min_count; a boundary once one could reach it; and at least once per window."""
    d = Detector(ruleset(keyword(min_count=3, window_ms=5 * MIN)))
    s = d.new_state("acme")
    assert d.observe(s, hit(1, 5_000, "recall")) == "counted"
    assert d.hit_due_ms(s, 5_000) == 10_000  # before the first evaluation: always due
    d.advance(s, 60_000)
    assert d.observe(s, hit(2, 61_000, "recall")) == "counted"
    assert d.hit_due_ms(s, 61_000) is None  # 2 recall hits in [60 s - 5 min, ...): < 3
    assert d.next_due_ms(s) is None
    assert d.observe(s, hit(3, 62_000, "recall")) == "counted"
    assert d.hit_due_ms(s, 62_000) == 70_000  # 3 hits could share a window
    assert d.next_due_ms(s) == 70_000  # and they do: [10 s, 70 s) holds all three
    assert [e.type for e in d.advance(s, 70_000)] == [OPENED]
    # a mention only (no recall hit), far ahead: no rule can open, but the brand is
    # advanced (and pruned) at least once per longest window
    q = d.new_state("acme")
    d.observe(q, hit(1, 5_000))
    d.advance(q, 60_000)
    assert d.observe(q, hit(2, 100_000)) == "counted"
    assert d.hit_due_ms(q, 100_000) is None
    assert d.observe(q, hit(3, 60_000 + 5 * MIN)) == "counted"
    assert d.hit_due_ms(q, 60_000 + 5 * MIN) == 60_000 + 5 * MIN + 10_000


def test_spread_out_hits_over_the_minimum_are_skipped_when_no_window_holds_enough() -> None:
    """next_due_ms finds the first boundary where a count reaches its minimum, or None."""
    d = Detector(ruleset(keyword(min_count=3, window_ms=MIN)))
    s = d.new_state("acme")
    d.observe(s, hit(0, 0, "recall"))
    d.advance(s, 10_000)
    for n, ts in enumerate((100_000, 200_000, 300_000, 400_000), start=1):
        d.observe(s, hit(n, ts, "recall"))  # 4 recall hits, never 3 in one minute
    assert d.next_due_ms(s) is None
    assert d.advance(s, 600_000) == []
    assert s.last_boundary_ms == 600_000
    d.observe(s, hit(5, 610_000, "recall"))
    d.observe(s, hit(6, 640_000, "recall"))
    d.observe(s, hit(7, 655_000, "recall"))
    assert d.next_due_ms(s) == 660_000
    assert [(e.type, e.time_ms) for e in d.advance(s, 700_000)] == [(OPENED, 660_000)]
    # the oldest bucket counts: three hits spanning exactly one window
    t = d.new_state("acme")
    d.observe(t, hit(0, 0))
    d.advance(t, 10_000)
    for n, ts in enumerate((700_000, 730_000, 759_000), start=1):
        d.observe(t, hit(n, ts, "recall"))
    assert d.next_due_ms(t) == 760_000
    assert [(e.type, e.time_ms) for e in d.advance(t, 900_000)] == [(OPENED, 760_000)]


def test_each_series_keeps_only_the_history_its_rules_read() -> None:
    """A keyword rule's series keeps a day of minutes (its events report a 24 h
    baseline); mentions, read only by a velocity rule with a 1 h baseline, keep ~1 h."""
    d = Detector(ruleset(keyword(), velocity(baseline_ms=60 * MIN)))
    s = d.new_state("acme")
    for minute in range(0, 5 * 60):
        d.observe(s, hit(minute, minute * MIN, "recall"))
        d.advance(s, minute * MIN)
    mentions, recall = s.series["mentions"].hist, s.series["recall"].hist
    assert len(recall) > 4 * 60  # all five hours: under the 24 h it may be asked for
    # the baseline, plus the window, a minute of slack and up to a 10-minute prune interval
    assert 60 <= len(mentions) <= 60 + 10 + 1 + 10
    assert min(mentions) >= (5 * 60 - 81) * MIN


def test_count_post_is_observe_post_then_hit_due_ms() -> None:
    """The Engine's one-call path (and the worker's, ``count_row``) gives the status and
    due of the two-call path, through late and duplicate posts, open incidents and
    advances."""
    import random

    from rules.model import BrandMatch

    rs = ruleset(keyword(min_count=3, window_ms=2 * MIN), velocity(min_count=60, warmup_ms=0))
    one, two = Detector(rs), Detector(rs)
    a, b = one.new_state("acme"), two.new_state("acme")
    rng = random.Random(7)
    ts, seen_due, seen_none = 0, 0, 0
    for n in range(3_000):
        ts += rng.randrange(0, 40_000)
        when = ts - rng.choice((0, 0, 0, 70_000))  # some late
        p = post(rng.randrange(n + 1) if rng.random() < 0.05 else n, when, "acme")
        match = BrandMatch("acme", ("recall",) if rng.random() < 0.2 else ())
        if n % 2:
            got = one.count_post(a, p, match)
        else:  # the worker's rows (``count_row``) on every other post
            got = one.count_row(a, Hit.from_post(p, match).to_row())
        status = two.observe_post(b, p, match)
        due = two.hit_due_ms(b, when) if status == "counted" else None
        assert got == (status, due)
        seen_due += due is not None
        seen_none += status == "counted" and due is None
        if rng.random() < 0.1:
            assert one.advance(a, ts - MIN) == two.advance(b, ts - MIN)
    assert seen_due > 50 and seen_none > 50  # both outcomes were compared
    assert dump_state(a) == dump_state(b)


def test_next_candidate_is_the_first_boundary_where_a_count_reaches_its_minimum() -> None:
    """Against brute force (every boundary in (lo, hi], every rule's exact window count,
    past its warm-up, and its ratio to the baseline level) on 1,500 seeded random cases:
    dense enough that windows often just reach a minimum, with and without a warm-up
    inside the range."""
    import random

    rng = random.Random(20261128)
    step, found = 10_000, 0
    for _ in range(1_500):
        window_steps, min_count = rng.randint(1, 12), rng.randint(1, 6)
        rs = ruleset(
            keyword(min_count=min_count, window_ms=window_steps * step),
            velocity(
                min_count=min_count + 2,
                window_ms=(window_steps + 3) * step,
                warmup_ms=rng.choice((0, rng.randint(0, 400) * 1_000)),
            ),
        )
        d = Detector(rs, step_ms=step)
        s = d.new_state("acme")
        for n in range(rng.randint(0, 60)):
            recall = ("recall",) if rng.random() < 0.5 else ()
            d.observe(s, hit(n, rng.randint(0, 600) * 1_000, *recall))
        plan = d._plans["acme"]
        lo = rng.randint(0, 60) * step
        hi = lo + rng.randint(0, 40) * step
        want = None
        for t in range(lo + step, hi + 1, step):
            if any(_could_hold(s, rp, t) for rp in plan.rules):
                want = t
                break
        got = d._next_candidate(s, plan, lo, hi)
        if got != want:
            # early (never late) only where the velocity rule's baseline minute, and so its
            # ratio's floor, changes: the first boundary of a minute not yet searched
            w = plan.rules[1].window_ms
            assert got is not None and (want is None or got < want), (lo, hi)
            assert floor_to(got - w, HIST_MS) != floor_to(got - step - w, HIST_MS)
        found += want is not None
    assert found > 500  # most cases have an answer to get right


def _could_hold(s: BrandState, rp: RulePlan, t: int) -> bool:
    """The window count at ``t`` reaches the rule's minimum, past its warm-up, and (a ratio
    rule) its ratio times the baseline level: ``_holds`` before distinct authors."""
    series = s.series.get(rp.series)
    if series is None or t - (s.first_hit_ms or 0) < rp.warmup_ms:
        return False
    count = series.window_count(t - rp.window_ms, t)
    if count < rp.min_count:
        return False
    return rp.ratio is None or count >= rp.ratio * WindowFigures(s, rp, series, t, count).level()


def test_next_candidate_skips_a_velocity_rules_warm_up_to_the_boundary_it_ends_on() -> None:
    """Counts reach the minimum from 10 s on, but the rule can open only once
    ``T - first hit >= warm-up``: exactly at 30 s here, not a step later."""
    rs = ruleset(velocity(min_count=2, window_ms=MIN, warmup_ms=30_000, ratio=1.0))
    d = Detector(rs, step_ms=10_000)
    s = d.new_state("acme")
    for n in range(4):
        d.observe(s, hit(n, n * 1_000))
    assert d._next_candidate(s, d._plans["acme"], 0, 100_000) == 30_000
    assert [(e.type, e.time_ms) for e in d.advance(s, 100_000)] == [(OPENED, 30_000)]


def test_an_open_keyword_incident_escalates_when_its_window_reaches_a_step() -> None:
    d = Detector(
        ruleset(
            keyword(
                min_count=1,
                severity="medium",
                window_ms=MIN,
                escalate=(EscalateStep(severity="high", count=3),),
            )
        ),
        lateness_ms=0,
        step_ms=1_000,
    )
    s = d.new_state("acme")
    d.observe(s, hit(1, 500, "recall"))
    assert _types(d.advance(s, 1_000)) == [(OPENED, 1_000, "medium")]
    d.observe(s, hit(2, 1_500, "recall"))
    assert d.advance(s, 2_000) == []  # 2 in the window: still holds, still medium
    d.observe(s, hit(3, 2_500, "recall"))
    events = d.advance(s, 3_000)
    assert _types(events) == [(ESCALATED, 3_000, "high")]
    assert events[0].data["window"]["count"] == 3


def test_a_reload_that_raises_a_keyword_rules_severity_escalates_its_open_incident() -> None:
    """The new severity applies at the next boundary where the incident still holds."""
    before = Detector(ruleset(keyword(min_count=1, severity="medium")), step_ms=1_000)
    s = before.new_state("acme")
    before.observe(s, hit(1, 500, "recall"))
    opened = before.advance(s, 1_000)
    assert _types(opened) == [(OPENED, 1_000, "medium")]
    after = Detector(ruleset(keyword(min_count=1, severity="high")), step_ms=1_000)
    events = after.advance(s, 2_000)
    assert _types(events) == [(ESCALATED, 2_000, "high")]
    assert events[0].incident_id == opened[0].incident_id


def _fresh_quiet_totals(d: Detector, s: object) -> list[int] | None:
    """The cached ``_quiet`` totals of ``s`` rebuilt from its buckets (None: no cache)."""
    quiet = s.cache.get("quiet")  # type: ignore[attr-defined]
    if quiet is None:
        return None
    base, plan, _ = quiet
    totals = []
    for rp in plan.rules:
        series = s.series.get(rp.series)  # type: ignore[attr-defined]
        totals.append(
            sum(n for k, n in series.counts.items() if k >= base - rp.window_ms) if series else 0
        )
    return totals


def _ops(kinds: int, max_size: int) -> st.SearchStrategy[list[tuple[int, int, str]]]:
    """``_lockstep``'s operations: (kind, a time offset, a rule id or none)."""
    return st.lists(
        st.tuples(st.integers(0, kinds), st.integers(0, 2_500), st.sampled_from(["a", "b", ""])),
        min_size=1,
        max_size=max_size,
    )


def _lockstep(
    d: Detector,
    ops: list[tuple[int, int, str]],
    cache_key: Hashable,
    hits: int,
    check: Callable[[BrandState, BrandState], None],
    authors: int = 0,
) -> tuple[BrandState, BrandState]:
    """Run ``ops`` on two states of one detector: ``s`` keeps its ``cache_key`` cache,
    ``bare`` has it dropped before every call.  An op ``(kind, dt, rule)`` is a hit
    (``kind < hits``; maybe late, then not counted), an advance by one step or a jump past
    every window (``kind < hits + 2``; tidied or not), or else ``next_due_ms``; every
    answer must be the same.  ``check(s, bare)`` runs after each op.  Each hit has an
    author of its own, or one of ``authors`` when that is given."""
    s, bare = d.new_state("acme"), d.new_state("acme")
    now = 10_000
    n = 0
    for kind, dt, rule in ops:
        bare.cache.pop(cache_key, None)
        if kind < hits:
            n += 1
            who = f"a{(n * 7 + dt) % authors}" if authors else None
            made = [hit(n, now - 500 + dt, *([rule] if rule else []), author=who) for _ in range(2)]
            assert d.observe(s, made[0]) == d.observe(bare, made[1])
        elif kind < hits + 2:
            now += 1_000 if dt < 2_200 else 9_000 + dt
            events = d.advance(s, now, tidy=dt % 2 == 0)
            assert events == d.advance(bare, now, tidy=dt % 2 == 0)
        else:  # builds the quiet totals at the last boundary (if no incident is open)
            assert d.next_due_ms(s) == d.next_due_ms(bare)
        check(s, bare)
    return s, bare


def _quiet_detector() -> Detector:
    """Two keyword rules and a velocity rule with a warm-up, at 1 s steps: the quiet
    totals' and the deferred bookkeeping's property tests."""
    return Detector(
        ruleset(
            keyword("a", min_count=3, window_ms=3_000),
            keyword("b", min_count=6, window_ms=7_000, resolve_after_ms=2_000),
            velocity("v", window_ms=5_000, baseline_ms=20_000, min_count=8, warmup_ms=3_000),
        ),
        lateness_ms=0,
        step_ms=1_000,
    )


@settings(max_examples=150, deadline=None)
@given(_ops(4, 80))
def test_quiet_totals_moved_by_advance_equal_totals_summed_afresh(
    ops: list[tuple[int, int, str]],
) -> None:
    """``advance`` moves ``_quiet``'s cached totals to its new boundary (the buckets that
    left each rule's window subtracted) instead of dropping them, and ``_next_candidate``
    skips rules by them; after any mix of hits, advances by one step or many, and tidies,
    they equal a sum over the buckets, and every decision equals that of a state whose
    totals are dropped before each call."""
    d = _quiet_detector()

    def check(s: BrandState, bare: BrandState) -> None:
        assert s.cache.get("quiet") is None or s.cache["quiet"][0] == s.last_boundary_ms
        assert s.cache.get("quiet", (None, None, None))[2] == _fresh_quiet_totals(d, s)

    _lockstep(d, ops, "quiet", 2, check)


def test_a_sweep_can_leave_its_bookkeeping_to_the_next_call_on_the_state() -> None:
    """``advance(tidy=False, finish=False)``, the worker's sweep, returns its events with
    the quiet totals still at the previous boundary and the ids behind the new one kept;
    ``finish`` does both, and the next hit counted runs it first."""
    d = Detector(ruleset(keyword(min_count=1_000)), lateness_ms=0, step_ms=1_000)
    s, ref = d.new_state("acme"), d.new_state("acme")
    for st_ in (s, ref):
        d.observe(st_, hit(0, 10_000, "recall"))
        d.advance(st_, 11_000)
        for n in range(1, 6):
            d.observe(st_, hit(n, 11_000 + n * 100, "recall"))
        assert d.next_due_ms(st_) is None  # builds the quiet totals at 11 s: far from 1,000
    assert d.advance(s, 14_000, tidy=False, finish=False) == []
    assert d.advance(ref, 14_000, tidy=False) == []
    assert s.unfinished == (11_000,) and ref.unfinished is None
    assert len(s.dedup) == 5 and ref.dedup == {}
    assert s.cache["quiet"][0] == 11_000 and ref.cache["quiet"][0] == 14_000
    assert d.observe(s, hit("a", 14_200, "recall")) == "counted"  # finishes first
    assert d.observe(ref, hit("a", 14_200, "recall")) == "counted"
    assert s.unfinished is None
    assert s.dedup == ref.dedup and len(s.dedup) == 1
    assert s.cache["quiet"][0] == 14_000 and s.cache["quiet"][2] == ref.cache["quiet"][2]
    assert dump_state(s) == dump_state(ref)


@settings(max_examples=200, deadline=None)
@given(_ops(5, 90))
def test_a_sweep_that_leaves_its_bookkeeping_to_finish_decides_as_one_that_does_not(
    ops: list[tuple[int, int, str]],
) -> None:
    """After any mix of hits (late ones too), advances by one step or many that leave
    their bookkeeping to ``finish`` (``finish=False``), tidies, ``next_due_ms`` and
    ``hit_due_ms``, every answer and event equals that of a state advanced with
    ``finish=True``, and whenever nothing is left to finish the two states are the same
    (their quiet totals too)."""
    d = _quiet_detector()
    s, ref = d.new_state("acme"), d.new_state("acme")
    now, n = 10_000, 0
    prev: int | None = None
    for kind, dt, rule in ops:
        if kind < 2:
            n += 1
            ts = now - 500 + dt
            made = [hit(n, ts, *([rule] if rule else [])) for _ in range(2)]
            assert d.observe(s, made[0]) == d.observe(ref, made[1])
            assert s.unfinished is None
            assert d.hit_due_ms(s, ts) == d.hit_due_ms(ref, ts)
        elif kind < 4:
            if prev is None:
                prev = s.last_boundary_ms
            now += 1_000 if dt < 2_200 else 9_000 + dt
            events = d.advance(s, now, tidy=False, finish=False)
            assert events == d.advance(ref, now, tidy=False)
        elif dt % 2:
            d.tidy(s, prev)
            d.tidy(ref, prev)
            prev = None
        else:
            assert d.next_due_ms(s) == d.next_due_ms(ref)
        if s.unfinished is None:
            assert dump_state(s) == dump_state(ref)
            assert s.cache.get("quiet") == ref.cache.get("quiet")
    d.finish(s)
    assert dump_state(s) == dump_state(ref)
    assert s.cache.get("quiet") == ref.cache.get("quiet")


@settings(max_examples=200, deadline=None)
@given(_ops(4, 90))
def test_window_authors_moved_by_each_step_equal_authors_counted_afresh(
    ops: list[tuple[int, int, str]],
) -> None:
    """A velocity rule whose ratio holds reads its window's distinct authors at every
    step; they are moved on from the last step's (``Series.authors_moved``).  After any
    mix of hits (from a few authors, late ones too), advances by one step or many, and
    tidies (which prune buckets), a kept cache holds exactly its window's authors, and
    every decision and event (its ``unique_authors``) equals that of a state whose
    cache is dropped before each call."""
    d = Detector(
        ruleset(
            velocity("v", window_ms=4_000, baseline_ms=8_000, ratio=1.0, min_count=2,
                     min_authors=3, warmup_ms=0, resolve_after_ms=0,
                     escalate=(EscalateStep(severity="high", authors=5),)),
            keyword("a", min_count=2, window_ms=6_000),
        ),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip
    key = ("mentions", "authors", 4_000)

    def check(s: BrandState, bare: BrandState) -> None:
        cache = s.cache.get(key)
        if cache is not None:
            assert isinstance(cache, AuthorsCache)
            series = s.series["mentions"]
            fresh: dict[str, int] = {}
            for k in series.window_keys(cache.lo_ms, cache.hi_ms):
                for author in series._authors(k):
                    fresh[author] = fresh.get(author, 0) + 1
            assert cache.counts == fresh

    s, bare = _lockstep(d, ops, key, 2, check, authors=6)
    assert {k: (i.incident_id, i.severity) for k, i in s.incidents.items()} == {
        k: (i.incident_id, i.severity) for k, i in bare.incidents.items()
    }


def test_a_surging_brands_authors_move_with_each_step_not_recounted() -> None:
    d = Detector(
        ruleset(velocity("v", window_ms=3_000, baseline_ms=6_000, ratio=1.0, min_count=1,
                         min_authors=2, warmup_ms=0)),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip
    s = d.new_state("acme")
    for n in range(6):  # authors x, y, x, y, z, z: one hit in each of 10 s .. 15 s
        d.observe(s, hit(n, 10_000 + n * 1_000, author="xyxyzz"[n]))
    d.advance(s, 15_000, tidy=False)
    cache = s.cache[("mentions", "authors", 3_000)]
    assert (cache.lo_ms, cache.hi_ms) == (12_000, 15_000)
    assert cache.counts == {"test:x": 1, "test:y": 1, "test:z": 1}
    d.advance(s, 16_000, tidy=False)
    # the same object, moved: 12 s (x) left the window, 15 s (z) entered
    assert s.cache[("mentions", "authors", 3_000)] is cache
    assert (cache.lo_ms, cache.hi_ms) == (13_000, 16_000)
    assert cache.counts == {"test:y": 1, "test:z": 2}
    # a brand whose window is not read any more frees them at the next prune
    d.advance(s, 40_000)
    assert ("mentions", "authors", 3_000) not in s.cache


def test_a_quiet_brands_totals_move_with_each_step_not_rebuilt() -> None:
    d = Detector(ruleset(keyword("a", min_count=40, window_ms=3_000)), lateness_ms=0, step_ms=1_000)
    s = d.new_state("acme")
    for n in range(5):
        d.observe(s, hit(n, 10_000 + n * 1_000, "a"))  # one hit in each of 10 s .. 14 s
    d.advance(s, 15_000)
    assert d.next_due_ms(s) is None  # quiet: 5 hits in its window, 40 needed
    assert s.cache["quiet"][0] == 15_000
    d.advance(s, 16_000)
    # moved, not dropped: the 12 s bucket left the window [13 s, ...)
    assert s.cache["quiet"][0] == 16_000
    assert s.cache["quiet"][2] == [2]


@settings(max_examples=200, deadline=None)
@given(_ops(5, 90))
def test_next_candidate_from_running_counts_equals_the_bucket_sweep(
    ops: list[tuple[int, int, str]],
) -> None:
    """``_next_candidate`` at the boundary of ``advance``'s running counts answers the
    next step at once when a rule's count there, less the bucket leaving its window,
    reaches the minimum.  After any mix of hits (late ones too), advances and tidies, its
    answer for any horizon, ``next_due_ms`` and every event equal those of a state whose
    running counts are dropped before each call (which sweeps the buckets)."""
    d = Detector(
        ruleset(
            keyword("a", min_count=2, window_ms=3_000),
            keyword("b", min_count=4, window_ms=6_000, resolve_after_ms=2_000),
            velocity("v", window_ms=4_000, baseline_ms=12_000, min_count=3, warmup_ms=3_000),
        ),
        lateness_ms=0,
        step_ms=1_000,
    )
    plan = d._plans["acme"]

    def check(s: BrandState, bare: BrandState) -> None:
        run = s.cache.get("run")
        if run is not None and run[1] is not None:  # kept (moved on at a tidy too): exact
            assert run[1] == [
                sum(
                    n
                    for k, n in s.series[rp.series].counts.items()
                    if run[0] - rp.window_ms <= k < run[0]
                )
                if rp.series in s.series
                else 0
                for rp in plan.rules
            ]
        lo = s.last_boundary_ms
        if lo is not None and s.first_hit_ms is not None:
            for hi in (lo + 1_000, lo + 3_000, lo + 20_000):
                bare.cache.pop("run", None)
                got = d._next_candidate(s, plan, lo, hi)
                assert got == d._next_candidate(bare, plan, lo, hi)

    s, bare = _lockstep(d, ops, "run", 3, check)

    def open_(st: BrandState) -> dict[str, tuple[str, str, int | None]]:
        return {k: (i.incident_id, i.severity, i.false_since_ms) for k, i in st.incidents.items()}

    assert open_(s) == open_(bare)


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Replace ``rules.detect.<name>`` with a wrapper that appends 1 per call to the list
    returned."""
    import rules.detect

    calls: list[int] = []
    real = getattr(rules.detect, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rules.detect, name, counted)
    return calls


def test_a_busy_rule_is_due_at_the_next_step_without_a_bucket_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its warm-up a velocity rule of a busy brand whose count stays above its
    floor (here a ratio of 0.5) is due at every step: ``next_due_ms`` answers from the
    running counts (a window of 600 buckets was summed twice and swept once per step and
    brand)."""

    d = Detector(
        ruleset(velocity("v", window_ms=60_000, baseline_ms=600_000, min_count=20, ratio=0.5,
                         min_authors=10_000)),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip
    s = d.new_state("acme")
    for n in range(1_500):  # one a second: a window of 60, its baseline level 60
        d.observe(s, hit(n, n * 1_000))
    d.advance(s, 1_500_000, tidy=False)  # as the worker's sweep: tidied at write-back
    assert s.incidents == {}  # too few authors
    assert s.cache["run"][0] == 1_500_000
    swept = _count_calls(monkeypatch, "_first_reaching")
    assert d.next_due_ms(s) == 1_501_000
    assert swept == []  # answered from the running counts
    s.cache.pop("run")
    assert d.next_due_ms(s) == 1_501_000
    assert swept == [1]


def test_a_busy_brand_below_its_ratio_is_due_once_a_minute_not_at_every_step() -> None:
    """A velocity rule's count reaches ``min_count`` at every step on a busy brand, but it
    cannot hold below ``ratio`` times the baseline level, which is the same for every
    window starting in the same minute: the brand is due where the next minute starts
    (or not at all), not at the next step."""
    d = Detector(
        ruleset(velocity("v", window_ms=60_000, baseline_ms=600_000, min_count=20)),
        lateness_ms=0,
        step_ms=1_000,
    )
    s = d.new_state("acme")
    for n in range(1_500):  # one a second: a window of 60, its baseline level 60
        d.observe(s, hit(n, n * 1_000))
    assert d.advance(s, 1_500_000) == []  # ratio 1, 3 needed
    # without more hits no window to come holds 180
    assert d.next_due_ms(s) is None
    d.observe(s, hit(2_000, 1_500_200))
    # windows ending 1,501 s .. 1,559 s start in minute 1,440 s (the floor cached by
    # next_due_ms: 180); 61 hits from 1,440 s on cannot reach it: due where 1,500 s starts
    assert d.hit_due_ms(s, 1_500_200) == 1_560_000
    for n in range(200):  # a surge: 200 more in that second
        d.observe(s, hit(3_000 + n, 1_500_300))
    assert d.hit_due_ms(s, 1_500_300) == 1_501_000
    assert _types(d.advance(s, 1_501_000)) == [(OPENED, 1_501_000, "medium")]


def test_a_count_that_can_just_reach_the_ratios_floor_makes_the_brand_due_at_once() -> None:
    d = Detector(
        ruleset(velocity("v", window_ms=60_000, baseline_ms=600_000, min_count=10)),
        lateness_ms=0,
        step_ms=1_000,
    )
    s = d.new_state("acme")
    for n in range(375):  # one every 4 s, none in bucket 1,440 s: a window of 15, level 15
        d.observe(s, hit(n, n * 4_000 + 1_000))
    assert d.advance(s, 1_500_000) == []
    assert d.next_due_ms(s) is None  # the floor, 45, cached
    for n in range(30):  # 15 in the window from 1,441 s on, and these: 45
        d.observe(s, hit(1_000 + n, 1_500_300))
    assert d.hit_due_ms(s, 1_500_300) == 1_501_000
    assert _types(d.advance(s, 1_501_000)) == [(OPENED, 1_501_000, "medium")]


@pytest.mark.parametrize("kept", ["warming", "span"])
@settings(max_examples=200, deadline=None)
@given(ops=_ops(4, 90))
def test_a_warm_up_end_within_the_horizon_kept_once_reached_equals_the_bucket_sweep(
    kept: str, ops: list[tuple[int, int, str]]
) -> None:
    """While a rule's warm-up ends after the last boundary but within the horizon, a
    count that reached its minimum at the first boundary past the warm-up is kept
    (``(rule, "warming")``) instead of summed and swept again at every call, and so is a
    span from the warm-up's end that holds the rule's ``min_count`` (``(rule, "span")``).
    After any mix of hits (late ones too), advances, jumps and tidies, the answer for any
    horizon (a long one before shorter ones), ``next_due_ms`` and every event equal those
    of a state whose kept answer is dropped before each call."""
    d = Detector(
        ruleset(
            keyword("a", min_count=2, window_ms=3_000),
            velocity("v", window_ms=4_000, baseline_ms=60_000, ratio=1.0, min_count=3,
                     warmup_ms=6_000),
        ),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip
    plan = d._plans["acme"]
    key = ("v", kept)

    def check(s: BrandState, bare: BrandState) -> None:
        lo = s.last_boundary_ms
        if lo is not None and s.first_hit_ms is not None:
            for hi in (lo + 30_000, lo + 1_000, lo + 5_000):
                bare.cache.pop(key, None)
                assert d._next_candidate(s, plan, lo, hi) == d._next_candidate(bare, plan, lo, hi)

    s, bare = _lockstep(d, ops, key, 2, check)
    assert {k: i.incident_id for k, i in s.incidents.items()} == {
        k: i.incident_id for k, i in bare.incidents.items()
    }


def test_a_busy_rule_whose_warm_up_ends_within_the_horizon_is_swept_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy brand's velocity rule reaches its minimum long before its warm-up ends;
    once the warm-up's end is within the horizon (a window and a resolve after the
    newest hit) every advance asked again where the rule could first hold, a sum of its
    window and a bucket sweep each time (the worker benchmark's sweeps took three times
    as long from then on).  The answer is kept until the warm-up end, the minimum (the
    ratio's floor, per baseline minute) or the rule changes."""

    d = Detector(
        ruleset(velocity("v", window_ms=10 * MIN, baseline_ms=60 * MIN, min_count=20, ratio=0.1,
                         warmup_ms=30 * MIN)),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip
    s = d.new_state("acme")
    for n in range(1_300):  # a mention a second: 600 a window, the floor 60
        d.observe(s, hit(n, n * 1_000))
    d.advance(s, 1_200_000, tidy=False)  # the warm-up ends at 1,800 s: within the horizon
    swept = _count_calls(monkeypatch, "_first_reaching")
    plan = d._plans["acme"]
    first = d._next_candidate(s, plan, 1_200_000, 2_000_000)
    assert first == 1_800_000
    assert s.cache[("v", "warming")][:2] == (1_799_000, 60)
    calls = len(swept)
    for lo in range(1_201_000, 1_210_000, 1_000):
        assert d._next_candidate(s, plan, lo, 2_000_000) == 1_800_000
    assert len(swept) == calls  # kept: no sweep of v's window
    # a reloaded rule set (new plans) does not use what the old one kept
    d2 = Detector(d.ruleset, lateness_ms=0, step_ms=1_000)
    assert d2._next_candidate(s, d2._plans["acme"], 1_200_000, 2_000_000) == 1_800_000
    assert len(swept) == calls + 1


def test_a_rule_reaching_its_minimum_only_after_its_warm_up_end_is_not_kept() -> None:
    """Only a count reached at the first boundary past the warm-up is kept: one reached
    later (hits ahead of the watermark, as a long lateness allows) is asked again, and
    moves earlier when hits fill the first window."""
    d = _warming_detector()
    plan = d._plans["acme"]
    s = d.new_state("acme")
    d.observe(s, hit(0, 10_000))  # the first hit: the warm-up ends at 16 s
    d.advance(s, 11_000)
    for n in range(1, 4):
        d.observe(s, hit(n, 17_500))  # the window ending at 18 s holds 3, at 16 s none
    assert d._next_candidate(s, plan, 11_000, 40_000) == 18_000
    assert ("v", "warming") not in s.cache
    assert d._next_candidate(s, plan, 11_000, 40_000) == 18_000
    for n in range(4, 7):
        d.observe(s, hit(n, 13_000))
    assert d._next_candidate(s, plan, 11_000, 40_000) == 16_000
    assert s.cache[("v", "warming")][:2] == (15_000, 3)
    assert d._next_candidate(s, plan, 12_000, 40_000) == 16_000


def test_a_kept_warm_up_answer_is_dropped_when_the_ratios_floor_rises() -> None:
    """The floor (ratio x baseline level) is cached per baseline minute and only ever
    rises when it is worked out again (hits counted later into its baseline); a count
    kept as reaching the old floor is then summed again against the new one."""
    d = _warming_detector(warmup_ms=70_000)
    plan = d._plans["acme"]
    rp = plan.rules[0]
    s = d.new_state("acme")
    for n in range(30):  # 30 in the baseline of the window ending at 70 s: level 2, floor 3
        d.observe(s, hit(n, n * 1_600))
    d.advance(s, 50_000)
    for n in range(5):  # 5 in the window ending at 70 s, where the warm-up ends
        d.observe(s, hit(100 + n, 67_000 + n * 100))
    assert d._next_candidate(s, plan, 50_000, 200_000) == 70_000
    assert s.cache[("v", "warming")][:2] == (69_000, 3)
    for n in range(60):  # 90 in that baseline: level 6, floor 6 once worked out again
        d.observe(s, hit(200 + n, 55_000 + n * 50))
    d._ratio_floor(s, rp, 200_000)  # the floor of another minute replaces the cached one
    assert d._ratio_floor(s, rp, 70_000)[0] == 6
    assert d._next_candidate(s, plan, 50_000, 200_000) != 70_000


def _warming_detector(min_count: int = 3, warmup_ms: int = 6_000) -> Detector:
    return Detector(
        ruleset(velocity("v", window_ms=4_000, baseline_ms=60_000, ratio=1.0,
                         min_count=min_count, warmup_ms=warmup_ms)),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip


def test_a_span_kept_as_holding_the_minimum_counts_only_for_horizons_as_long() -> None:
    """The span from the warm-up's end is kept as holding ``min_count`` up to the
    horizon it was summed to: a shorter horizon may hold fewer (hits ahead of the
    watermark, as a long lateness allows), and is summed again."""
    d = _warming_detector()
    plan = d._plans["acme"]
    s = d.new_state("acme")
    d.observe(s, hit(0, 10_000))  # the warm-up ends at 16 s
    d.advance(s, 11_000)
    for n in range(1, 4):
        d.observe(s, hit(n, 100_500))
    # the span [12 s, 200 s) holds 3; no window up to the minute's last (63 s) does: due
    # where the next minute's windows start
    assert d._next_candidate(s, plan, 11_000, 200_000) == 64_000
    assert s.cache[("v", "span")][0::2] == (15_000, 200_000)
    # the span [12 s, 70 s) holds none: the rule can hold nowhere before 70 s
    assert d._next_candidate(s, plan, 11_000, 70_000) is None


def test_kept_warm_up_answers_are_not_used_for_another_warm_up_end_or_rule() -> None:
    d = _warming_detector()
    plan = d._plans["acme"]
    s = d.new_state("acme")
    d.observe(s, hit(0, 20_500))  # the warm-up ends at 27 s
    d.advance(s, 11_000)
    for n in range(1, 4):
        d.observe(s, hit(n, 25_000))  # 3 in the window ending at 27 s
    assert d._next_candidate(s, plan, 11_000, 200_000) == 27_000
    assert s.cache[("v", "warming")][:2] == (26_000, 3)
    d.observe(s, hit(4, 12_500))  # an earlier first hit: the warm-up ends at 19 s
    # the window ending at 19 s holds 1: the first to hold 3 ends just after 25 s
    assert d._next_candidate(s, plan, 11_000, 200_000) == 26_000
    # a reloaded rule (same id) needs 10: the span kept for 3 does not hold it
    d10 = _warming_detector(min_count=10)
    assert ("v", "span") in s.cache
    assert d10._next_candidate(s, d10._plans["acme"], 11_000, 200_000) is None


def test_running_counts_stand_for_the_span_only_without_the_bucket_leaving() -> None:
    """Past the warm-up, the running counts at the last boundary less the bucket that
    leaves the window at the next step bound the span's count from below; the hits of
    that bucket do not count."""
    # too few authors: no incident opens
    d = Detector(
        ruleset(velocity("v", window_ms=4_000, baseline_ms=60_000, ratio=1.0, min_count=3,
                         warmup_ms=0, min_authors=10_000)),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip
    plan = d._plans["acme"]
    s = d.new_state("acme")
    for n in range(3):
        d.observe(s, hit(n, 16_500))  # all in the bucket leaving the window at 21 s
    d.advance(s, 20_000, tidy=False)
    assert s.cache["run"] == (20_000, [3])
    assert d._next_candidate(s, plan, 20_000, 200_000) is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 400_000), min_size=1, max_size=300),
    st.integers(0, 400_000),
    st.integers(0, 400_000),
)
def test_a_spans_history_minutes_bound_its_buckets_count(
    times: list[int], lo: int, span: int
) -> None:
    """``_span_bound``: the history minutes over a span hold at least its buckets' hits
    (or None where the buckets are no more than the minutes)."""
    from rules.detect import _span_bound

    d = Detector(ruleset(keyword("a", min_count=1)), lateness_ms=0, step_ms=1_000)
    s = d.new_state("acme")
    for n, t in enumerate(times):
        d.observe(s, hit(n, t))
    series = s.series["mentions"]
    bound = _span_bound(series, lo, lo + span)
    assert bound is None or bound >= series.window_count(lo, lo + span)
    buckets = len(series.window_keys(lo, lo + span))
    assert (bound is None) == (buckets <= (lo + span - floor_to(lo, HIST_MS)) // HIST_MS + 1)


def test_a_busy_brand_below_its_floor_is_not_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy brand's velocity rule that cannot reach its floor within the minute is
    answered from the history minutes of its span (11), not from a sum of its window's
    600 buckets, and the answer is the same."""
    import rules.detect

    d = Detector(
        ruleset(velocity("v", window_ms=10 * MIN, baseline_ms=60 * MIN, min_count=20,
                         warmup_ms=0, min_authors=10_000)),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip
    s = d.new_state("acme")
    for n in range(1_500):  # one a second: 600 a window, the floor 3 x 600
        d.observe(s, hit(n, n * 1_000))
    d.advance(s, 1_500_000, tidy=False)
    summed = _count_calls(monkeypatch, "_window_at")
    plan = d._plans["acme"]
    got = d._next_candidate(s, plan, 1_500_000, 3_000_000)
    assert summed == []
    monkeypatch.setattr(rules.detect, "_span_bound", lambda *_: None)
    assert d._next_candidate(s, plan, 1_500_000, 3_000_000) == got
    assert summed == [1]


def test_running_counts_answer_only_for_their_own_boundary_and_past_warm_up() -> None:
    """The running counts bound the next step's window only at the boundary they were
    counted at, and a rule still in its warm-up is never due before the warm-up ends."""
    d = Detector(
        ruleset(
            keyword("a", min_count=1, window_ms=1_000),
            velocity("v", window_ms=10 * MIN, min_count=3, warmup_ms=30_000),
        ),
        lateness_ms=0,
        step_ms=1_000,
    )
    plan = d._plans["acme"]
    s = d.new_state("acme")
    d.observe(s, hit(0, 10_000, "a"))
    for n in range(1, 6):
        d.observe(s, hit(n, 10_000 + n * 100))
    assert _types(d.advance(s, 11_000, tidy=False)) == [(OPENED, 11_000, "high")]
    run_at, counts = s.cache["run"]
    assert (run_at, counts) == (11_000, [1, 6])
    # rule a's open incident: its hit leaves the 1 s window at 12 s (the count falls)
    assert d._next_candidate(s, plan, 11_000, 100_000) == 12_000
    # without it: v has 6 (>= 3) but its warm-up ends at 40 s
    s.incidents.clear()
    assert d._next_candidate(s, plan, 11_000, 100_000) == 40_000
    # counts of another boundary (here as if kept from 11 s at 20 s) are not used
    s.cache["run"] = (11_000, [5, 6])
    assert d._next_candidate(s, plan, 20_000, 25_000) is None


def test_a_steady_incident_is_next_due_where_its_count_can_fall_below_the_minimum() -> None:
    """An open keyword incident that holds is not evaluated at every step: the brand is
    next due where buckets leaving its window could take the count below ``min_count``
    (hits counted later only add), and, once false, where it resolves or its count is
    back at the minimum."""
    d = Detector(
        ruleset(keyword("a", min_count=3, window_ms=10_000, resolve_after_ms=4_000)),
        lateness_ms=0,
        step_ms=1_000,
    )
    s = d.new_state("acme")
    for n, ts in enumerate((10_100, 11_100, 12_100, 13_100)):
        d.observe(s, hit(n, ts, "a"))
    assert _types(d.advance(s, 15_000)) == [(OPENED, 13_000, "high")]
    # count 4; at 21 s bucket 10 s leaves (3 left: still holds), at 22 s bucket 11 s (2)
    assert d.next_due_ms(s) == 22_000
    d.observe(s, hit(9, 15_500, "a"))  # a later hit only puts that further off
    assert d.hit_due_ms(s, 15_500) is None  # it holds: a hit only keeps it so
    assert d.advance(s, 16_000) == []
    assert d.next_due_ms(s) == 22_000  # kept: still the earliest it can fall (the hit at
    # 15.5 s put the true one off to 23 s)
    assert d.advance(s, 21_000) == []
    s.cache.pop("drop")
    assert d.next_due_ms(s) == 23_000  # afresh: at 22 s still 3 (12, 13, 15 s), 2 at 23 s
    assert d.advance(s, 23_000) == []  # 23 s: buckets 13 s and 15 s left, 2 < 3
    assert s.incidents["a"].false_since_ms == 23_000
    assert d.next_due_ms(s) == 27_000  # false since 23 s: resolves 4 s on, at 27 s
    d.observe(s, hit(10, 24_200, "a"))
    assert d.hit_due_ms(s, 24_200) == 25_000  # false: a hit may bring it back
    d.observe(s, hit(11, 24_400, "a"))  # count back at 3 in the window ending 25 s
    assert d.next_due_ms(s) == 25_000
    assert d.advance(s, 25_000) == []
    assert s.incidents["a"].false_since_ms is None
    assert d.next_due_ms(s) == 26_000  # bucket 15 s leaves at 26 s: 2 < 3
    assert d.advance(s, 29_999) == []  # false again from 26 s: not resolved at 27 s
    assert _types(d.advance(s, 30_000)) == [(RESOLVED, 30_000, "high")]


def test_an_incident_that_is_not_steady_keeps_its_brand_due_at_every_step() -> None:
    d = Detector(
        ruleset(keyword("a", min_count=1, window_ms=10_000, severity="low",
                        escalate=(EscalateStep(severity="high", count=3),))),
        lateness_ms=0,
        step_ms=1_000,
    )  # fmt: skip
    s = d.new_state("acme")
    d.observe(s, hit(0, 10_100, "a"))
    assert _types(d.advance(s, 11_000)) == [(OPENED, 11_000, "low")]
    assert d.next_due_ms(s) == 12_000


def test_a_hit_for_a_rule_in_its_warm_up_makes_its_brand_due_when_the_warm_up_ends() -> None:
    d = Detector(
        ruleset(velocity("v", window_ms=10_000, min_count=2, warmup_ms=60_000)),
        lateness_ms=0,
        step_ms=1_000,
    )
    s = d.new_state("acme")
    d.observe(s, hit(0, 10_100))
    assert d.advance(s, 11_000) == []
    d.observe(s, hit(1, 11_500))
    # 2 hits reach the minimum, but v cannot hold before 10.1 s + 60 s
    assert d.hit_due_ms(s, 11_500) == 71_000
    d.observe(s, hit(2, 80_000))  # a longest window or more after the last boundary
    assert d.hit_due_ms(s, 80_000) == 81_000
