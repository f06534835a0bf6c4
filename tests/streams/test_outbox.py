"""The match loop's ``Outbox``: which hits are sent when, and never a tick ahead of its hits."""

from __future__ import annotations

import random

from rules.model import Hit
from rules.watermark import PartitionReport, WatermarkMerger
from rules.windows import floor_to
from streams.matchloop import Outbox
from streams.stages import partition_for
from tests.rules.detect_support import hit

PARTS = 4
LATENESS = 500
STEP = 1000


def report(events: dict[int, int | None], idle: frozenset[int] = frozenset(), now: int = 0) -> dict:
    return {p: PartitionReport(ts, p in idle, now) for p, ts in events.items()}


def outbox() -> Outbox:
    return Outbox(PARTS, LATENESS, STEP, flush_after_ms=100, max_hits=10)


def test_a_tick_is_due_only_when_what_the_detector_acts_on_changes() -> None:
    box = outbox()
    first = report({p: 10_600 for p in range(PARTS)})
    assert box.tick_due(first)
    box.take(first, with_tick=True)
    # newer event times within the same step boundary: nothing for the detector
    assert not box.tick_due(report({p: 11_499 for p in range(PARTS)}))
    # the lowest partition crosses the next boundary (11_500 - 500 = 11_000)
    assert box.tick_due(report({0: 11_500, 1: 12_000, 2: 12_000, 3: 12_000}))
    # a partition turns idle; a partition is revoked; one has seen nothing
    assert box.tick_due(report({p: 10_600 for p in range(PARTS)}, idle=frozenset({2})))
    assert box.tick_due(report({p: 10_600 for p in range(PARTS - 1)}))
    assert box.tick_due(report({0: None, 1: 10_600, 2: 10_600, 3: 10_600}))


def test_the_sent_boundary_moves_only_when_the_lowest_partition_crosses_one() -> None:
    """What the state write-back and the match loop keep out of the way of
    (``streams.matchloop.BoundaryGate``)."""
    box = outbox()
    assert box.sent_boundary_ms is None
    box.take(report({p: 10_600 for p in range(PARTS)}), with_tick=True)
    assert box.sent_boundary_ms == 10_000
    box.take(report({p: 11_499 for p in range(PARTS)}), with_tick=False)  # hits only
    box.take(report({0: 11_499, 1: 13_000, 2: 13_000, 3: 13_000}), with_tick=True)
    assert box.sent_boundary_ms == 10_000  # partition 0 still short of 11_000 + 500
    box.take(report({0: 11_500, 1: 13_000, 2: 13_000, 3: 13_000}), with_tick=True)
    assert box.sent_boundary_ms == 11_000


def test_hits_wait_until_a_tick_or_their_age_or_count_sends_them() -> None:
    box = outbox()
    rep = report({p: 10_600 for p in range(PARTS)})
    box.take(rep, with_tick=True)
    box.add([hit(0, 10_100, brand="acme")], now_ms=1_000)
    assert not box.hits_due(1_050)
    assert box.hits_due(1_100)  # waited flush_after_ms
    sent = box.take(rep, with_tick=False)
    assert sent == [(partition_for("acme", PARTS), [hit(0, 10_100, brand="acme")])]
    assert box.count == 0 and not box.hits_due(10_000)
    box.add([hit(i, 10_100, brand=f"b{i}") for i in range(10)], now_ms=2_000)
    assert box.hits_due(2_000)  # max_hits waiting
    with_tick = box.take(rep, with_tick=True)
    assert [q for q, _ in with_tick] == list(range(PARTS))  # a tick goes everywhere
    assert sum(len(h) for _, h in with_tick) == 10


def test_no_tick_reaches_a_partition_ahead_of_a_hit_it_covers() -> None:
    """Random batches through the outbox, each record decoded by a detector-side merger:
    when a record's tick moves the watermark to W, every hit with created_at < W
    routed to that partition has arrived with it or before."""
    rnd = random.Random(3)
    box = outbox()
    mergers = {q: WatermarkMerger(LATENESS, PARTS) for q in range(PARTS)}
    delivered: dict[int, set[str]] = {q: set() for q in range(PARTS)}
    made: dict[int, list[Hit]] = {q: [] for q in range(PARTS)}
    newest = {p: 0 for p in range(PARTS)}
    now = 0
    sends = 0
    for i in range(3000):
        now += rnd.choice((1, 5, 20, 60))
        batch = []
        for n in range(rnd.randrange(0, 4)):
            p = rnd.randrange(PARTS)
            newest[p] += rnd.randrange(0, 400)
            h = hit(i * 10 + n, newest[p], brand=f"brand{rnd.randrange(40)}")
            batch.append(h)
            made[partition_for(h.brand, PARTS)].append(h)
        box.add(batch, now)
        rep = report(dict(newest), now=now)
        quiet = rnd.random() < 0.05  # the quiet-time tick
        with_tick = quiet or box.tick_due(rep)
        if not (with_tick or box.hits_due(now)):
            continue
        for q, hits in box.take(rep, with_tick):
            sends += 1
            delivered[q].update(h.post_id for h in hits)
            wm = mergers[q].update(rep)
            if wm is None:
                continue
            covered = [h for h in made[q] if h.created_at_ms < floor_to(wm, STEP)]
            assert all(h.post_id in delivered[q] for h in covered)
    assert sends < 3000 * PARTS / 2  # far fewer records than one per partition per batch
