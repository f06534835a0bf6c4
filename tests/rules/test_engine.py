"""Engine: whole-stream determinism, arrival order, quiet brands, live == backtest."""

from __future__ import annotations

import random
import time
from pathlib import Path

from rules.detect import Detector, dump_state, load_state
from rules.engine import Engine
from rules.model import Brand, EscalateStep, RuleSet
from tests.rules.detect_support import MIN, WordMatcher, hit, keyword, post, velocity

BRANDS = Path(__file__).resolve().parents[2] / "brands"


def _stream(seed: int, n: int = 3000) -> list:
    rng = random.Random(seed)
    posts = []
    t = 0
    for i in range(n):
        t += rng.randrange(0, 4000)
        brand = rng.choice(["acme", "beta", "gamma"])
        words = [brand, "recall"] if rng.random() < 0.03 or 1_500_000 < t < 1_700_000 else [brand]
        posts.append(post(i, t, " ".join(words), author=f"a{rng.randrange(200)}"))
    return posts


RULES = RuleSet(
    brands=tuple(
        Brand(
            id=b,
            mentions_query=b,
            rules=(
                keyword(min_count=3, window_ms=5 * MIN, resolve_after_ms=10 * MIN),
                velocity(warmup_ms=20 * MIN, baseline_ms=30 * MIN, min_count=10, min_authors=5),
            ),
        )
        for b in ("acme", "beta", "gamma")
    )
)


def _run(posts: list, rules: RuleSet = RULES) -> list[dict]:
    engine = Engine(rules, matcher=WordMatcher(rules))
    events = []
    for p in posts:
        events += engine.process(p)
    events += engine.finish()
    assert engine.stats.late == 0
    return [e.to_cloudevent() for e in events]


def test_two_runs_are_identical_and_produce_events() -> None:
    posts = _stream(1)
    first = _run(posts)
    assert first == _run(posts)
    assert {e["type"] for e in first} >= {
        "crisiswatch.incident.opened",
        "crisiswatch.incident.resolved",
    }
    assert len({e["id"] for e in first}) == len(first)


def test_a_different_arrival_order_within_the_lateness_gives_the_same_events() -> None:
    posts = _stream(2)
    shuffled = list(posts)
    rng = random.Random(7)
    for _ in range(5000):  # swap neighbours less than 30 s apart (lateness is 60 s)
        i = rng.randrange(len(shuffled) - 1)
        if abs(shuffled[i].created_at_ms - shuffled[i + 1].created_at_ms) < 30_000:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    assert shuffled != posts
    assert _run(shuffled) == _run(posts)


def test_one_late_advance_decides_like_many_small_ones() -> None:
    """Caches and pruning never change a decision: advancing per hit == advancing once."""
    d = Detector(RULES)
    many, once = d.new_state("acme"), d.new_state("acme")
    events_many, hits = [], []
    for n, p in enumerate(_stream(3, 2000)):
        h = hit(n, p.created_at_ms, *(["recall"] if "recall" in p.text else []), author=p.author.id)
        hits.append(h)
        d.observe(many, h)
        events_many += d.advance(many, p.created_at_ms - 60_000)
        if n % 97 == 0:
            many = load_state(dump_state(many))
    for h in hits:
        d.observe(once, h)
    end = hits[-1].created_at_ms - 60_000
    events_many += d.advance(many, end)
    events_once = d.advance(once, end)
    assert events_many and [e.to_cloudevent() for e in events_many] == [
        e.to_cloudevent() for e in events_once
    ]


def test_a_thousand_quiet_brands_advance_over_a_day_quickly_and_resolve() -> None:
    brands = tuple(
        Brand(id=f"b{i}", mentions_query=f"b{i}", rules=(keyword(min_count=1),))
        for i in range(1000)
    )
    rules = RuleSet(brands=brands)
    engine = Engine(rules, matcher=WordMatcher(rules))
    started = time.perf_counter()
    events = []
    for i in range(1000):
        events += engine.process(post(i, i * 10, f"b{i} recall"))
    for minute in range(1, 24 * 60):  # a day of traffic about no brand
        events += engine.process(post(f"n{minute}", minute * MIN, "nothing here"))
    opened = sum(e.type.endswith("opened") for e in events)
    resolved = sum(e.type.endswith("resolved") for e in events)
    elapsed = time.perf_counter() - started
    assert (opened, resolved) == (1000, 1000)
    assert all(not engine.detector.open_incidents(s) for s in engine.states.values())
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_live_style_state_round_trips_decide_like_backtest() -> None:
    """The worker stores each brand's state between batches: same events as backtest."""
    from rules.loader import load_rules
    from rules.scenario import generate

    rules = load_rules(BRANDS)
    scenario = generate(rules, seed=5, days=3, mentions_per_min=0.5)
    plain = Engine(rules)
    tripped = Engine(rules)
    a, b = [], []
    for n, p in enumerate(scenario.posts):
        a += plain.process(p)
        b += tripped.process(p)
        if n % 500 == 0:
            tripped.states = {k: load_state(dump_state(s)) for k, s in tripped.states.items()}
    a += plain.finish()
    b += tripped.finish()
    assert a and [e.to_cloudevent() for e in a] == [e.to_cloudevent() for e in b]


def test_skipping_brands_that_cannot_open_decides_like_advancing_every_brand_every_post() -> None:
    """The Engine advances a brand only when a count could reach its minimum (or an
    incident is open); a driver that advances every brand after every post agrees."""
    for seed in (11, 12, 13):
        posts = _stream(seed, 4000)
        d = Detector(RULES)
        matcher = WordMatcher(RULES)
        states = {b.id: d.new_state(b.id) for b in RULES.brands}
        eager: dict[str, tuple[int, dict]] = {}  # event id -> (index of the post, event)
        for i, p in enumerate(posts):
            for m in matcher.match(p):
                assert d.observe_post(states[m.brand], p, m) == "counted"
            for brand in sorted(states):
                for e in d.advance(states[brand], p.created_at_ms - 60_000):
                    eager[e.id] = (i, e.to_cloudevent())
        engine = Engine(RULES, matcher=WordMatcher(RULES))
        lazy: dict[str, tuple[int, dict]] = {}
        for i, p in enumerate(posts):
            for e in engine.process(p):
                lazy[e.id] = (i, e.to_cloudevent())
        # the same events, each emitted by the same post (as soon as the watermark allows)
        assert len(lazy) > 4
        assert lazy == eager


STEADY_RULES = RuleSet(
    brands=tuple(
        Brand(
            id=b,
            mentions_query=b,
            rules=(
                # steady once open: evaluated only where its count crosses 3 or it resolves
                keyword(min_count=3, window_ms=2 * MIN, resolve_after_ms=3 * MIN),
                keyword("refund", min_count=2, window_ms=MIN, resolve_after_ms=0),
                # escalation steps: evaluated at every step while open
                keyword("outage", min_count=2, window_ms=3 * MIN, resolve_after_ms=MIN,
                        severity="low", escalate=(EscalateStep(severity="high", count=6),)),
                velocity(warmup_ms=10 * MIN, baseline_ms=20 * MIN, min_count=8, ratio=2.0),
            ),
        )
        for b in ("acme", "beta")
    )
)  # fmt: skip


def _crisis_stream(seed: int, n: int) -> list:
    """Two brands, crisis words in bursts: incidents open, hold for minutes, fall false,
    come back before they resolve, resolve."""
    rng = random.Random(seed)
    posts, t = [], 0
    for i in range(n):
        t += rng.randrange(0, 3000)
        brand = rng.choice(["acme", "beta"])
        burst = (t // 400_000) % 3 == 0  # one 400 s burst in every 20 minutes
        words = [brand]
        for word in ("recall", "refund", "outage"):
            if rng.random() < (0.3 if burst else 0.01):
                words.append(word)
        posts.append(post(i, t, " ".join(words), author=f"a{rng.randrange(40)}"))
    return posts


def _eager_and_lazy(
    rules: RuleSet, posts: list, lateness_ms: int = 60_000, step_ms: int = 10_000
) -> tuple[dict, dict]:
    """Events (id -> (index of the post that emitted it, event)) of a driver that advances
    every brand after every post, and of the Engine."""
    d = Detector(rules, lateness_ms=lateness_ms, step_ms=step_ms)
    matcher = WordMatcher(rules)
    states = {b.id: d.new_state(b.id) for b in rules.brands}
    eager: dict[str, tuple[int, dict]] = {}
    for i, p in enumerate(posts):
        for m in matcher.match(p):
            assert d.observe_post(states[m.brand], p, m) == "counted"
        for brand in sorted(states):
            for e in d.advance(states[brand], p.created_at_ms - lateness_ms):
                eager[e.id] = (i, e.to_cloudevent())
    engine = Engine(rules, matcher=WordMatcher(rules), lateness_ms=lateness_ms, step_ms=step_ms)
    lazy: dict[str, tuple[int, dict]] = {}
    for i, p in enumerate(posts):
        for e in engine.process(p):
            lazy[e.id] = (i, e.to_cloudevent())
    return eager, lazy


def test_steady_incidents_evaluated_only_where_they_can_change_decide_like_every_step() -> None:
    """A brand whose open incidents are all steady keyword ones (no escalation, at the
    rule's severity) is advanced only at the boundary where one's count could fall below
    its minimum, where a false one resolves or its count is back, or where another rule
    could open: the same events, each emitted by the same post, as a driver that
    advances every brand after every post (and so evaluates every step)."""
    for seed in (21, 22, 23):
        eager, lazy = _eager_and_lazy(STEADY_RULES, _crisis_stream(seed, 3000))
        kinds = {e["type"].rsplit(".", 1)[-1] for _, e in eager.values()}
        assert kinds == {"opened", "escalated", "resolved"}
        assert lazy == eager


SURGE_RULES = RuleSet(
    brands=tuple(
        Brand(
            id=b,
            mentions_query=b,
            rules=(
                velocity(window_ms=2 * MIN, baseline_ms=10 * MIN, warmup_ms=5 * MIN, ratio=2.0,
                         min_count=5, min_authors=3, resolve_after_ms=MIN),
                velocity("fast", window_ms=MIN, baseline_ms=4 * MIN, warmup_ms=0, ratio=3.5,
                         min_count=3, resolve_after_ms=0),
            ),
        )
        for b in ("acme", "beta")
    )
)  # fmt: skip


def test_ratio_rules_evaluated_once_a_minute_below_their_floor_decide_like_every_step() -> None:
    """A velocity rule below ``ratio`` times its baseline level is not evaluated until the
    next baseline minute (``Detector._ratio_floor``): on a stream whose mentions surge
    six-fold for three minutes in every fifteen, the same events, each emitted by the same
    post, as a driver that evaluates every step."""
    for seed in (31, 32):
        rng = random.Random(seed)
        posts, t = [], 0
        for i in range(4000):
            surging = (t // 60_000) % 15 in (10, 11, 12)
            t += rng.randrange(0, 600 if surging else 3600)
            brand = rng.choice(["acme", "beta"])
            posts.append(post(i, t, brand, author=f"a{rng.randrange(30)}"))
        eager, lazy = _eager_and_lazy(SURGE_RULES, posts)
        kinds = {e["type"].rsplit(".", 1)[-1] for _, e in eager.values()}
        assert kinds >= {"opened", "resolved"}
        assert len(eager) > 20
        assert lazy == eager


def test_a_ratio_rule_looked_at_ahead_of_its_warm_up_end_decides_like_every_step() -> None:
    """Busy brands (five mentions a second each) whose velocity rule leaves its warm-up
    mid-stream: the search for the next boundary computes the ratio's floor at the
    warm-up's end while that baseline still takes hits, which must not leave the running
    baseline sum behind (it once did: every brand opened a surge there, which evaluating
    every step does not)."""
    rules = RuleSet(
        brands=tuple(
            Brand(
                id=b,
                mentions_query=b,
                rules=(
                    keyword(min_count=3, window_ms=10 * MIN),
                    velocity(window_ms=MIN, baseline_ms=6 * MIN, warmup_ms=3 * MIN,
                             ratio=3.0, min_count=20, min_authors=10),
                ),
            )
            for b in ("acme", "beta", "gamma")
        )
    )  # fmt: skip
    rng = random.Random(41)
    posts, t = [], 0
    for i in range(15 * 300):  # 15 posts a second for five minutes
        t += rng.randrange(0, 134)
        words = [rng.choice(["acme", "beta", "gamma"])] + (["recall"] if i % 40 == 0 else [])
        posts.append(post(i, t, " ".join(words), author=f"a{rng.randrange(500)}"))
    eager, lazy = _eager_and_lazy(rules, posts, lateness_ms=500, step_ms=1_000)
    assert eager and lazy == eager
