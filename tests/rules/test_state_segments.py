"""The incremental state form (``write_state``): head plus write-once segments.

A store that applies each write (segments, head, deletions, in that order) and is
read back with ``load_state`` must give the state the detector holds in memory,
through pruning, rule reloads that drop a series, and a write cut short after
its head; and a write costs what changed, not the whole window.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.detect import Detector, dump_state, load_state
from rules.state import BrandState, StateWrite, state_written, write_state
from tests.rules.detect_support import MIN, hit, keyword, ruleset, velocity

FULL = ruleset(
    keyword(min_count=2, window_ms=5 * MIN, resolve_after_ms=5 * MIN),
    velocity(warmup_ms=0, baseline_ms=30 * MIN, min_count=3),
)
NO_KEYWORD = ruleset(velocity(warmup_ms=0, baseline_ms=30 * MIN, min_count=3))


class Store:
    """A brand's keys as the worker's table holds them."""

    def __init__(self) -> None:
        self.head: bytes | None = None
        self.segments: dict[int, bytes] = {}

    def apply(self, w: StateWrite, *, deletions: bool = True) -> None:
        for seg_id, value in w.segments:
            self.segments[seg_id] = value
        self.head = w.head
        if deletions:
            for seg_id in w.deleted:
                self.segments.pop(seg_id, None)

    def load(self) -> BrandState:
        assert self.head is not None
        return load_state(self.head, self.segments.get)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.integers(0, 40), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("advance"), st.integers(0, 20), st.just(0), st.just(False)),
        st.tuples(st.just("write"), st.just(0), st.just(0), st.booleans()),
        st.tuples(st.just("reload"), st.just(0), st.just(0), st.booleans()),
    ),
    max_size=80,
)


def _run(steps: list[tuple[str, int, int, bool]], restart: bool) -> tuple[list, list[bytes]]:
    detectors = {True: Detector(FULL), False: Detector(NO_KEYWORD)}
    full = True
    store = Store()
    s = detectors[full].new_state("acme")
    now = 0
    events, dumps = [], []
    for n, (op, a, b, flag) in enumerate(steps):
        d = detectors[full]
        if op == "hit":
            ids = ("recall",) if flag and full else ()
            d.observe(s, hit(n % 50, now + a * 7_000, *ids, author=f"a{b}", followers=b * 10))
        elif op == "advance":
            now += a * 30_000
            events += d.advance(s, now)
        elif op == "reload":
            full = not full  # the keyword rule (and its series) goes, or comes back
            events += detectors[full].advance(s, now)
        else:
            # flag: the write is cut short after its head (a crash before the deletions)
            store.apply(write_state(s), deletions=not flag)
            loaded = store.load()
            assert dump_state(loaded) == dump_state(s)
            if not flag:
                state_written(s)
                assert set(store.segments) == set(s.segments)
            if restart or flag:
                s = loaded  # a restart reads the store (a crash always does)
        dumps.append(dump_state(s))
    events += detectors[full].advance(s, now + 3 * 3_600_000)
    return [e.to_cloudevent() for e in events], dumps


@settings(max_examples=60, deadline=None)
@given(steps=ops)
def test_the_stored_form_is_the_state_and_changes_no_decision(
    steps: list[tuple[str, int, int, bool]],
) -> None:
    plain_events, plain_dumps = _run(steps, restart=False)
    restarted_events, restarted_dumps = _run(steps, restart=True)
    assert restarted_events == plain_events
    assert restarted_dumps == plain_dumps


def test_a_write_cut_short_is_finished_by_the_next_one() -> None:
    d = Detector(FULL)
    s = d.new_state("acme")
    store = Store()
    for t in range(0, 30 * MIN, 10_000):
        d.observe(s, hit(t, t, "recall"))
        d.advance(s, t)
        if t % MIN == 0:
            store.apply(write_state(s))
            state_written(s)
    assert len(store.segments) == len(s.segments) > 0
    # by 12 minutes on, the first segments hold only pruned buckets
    d.advance(s, 45 * MIN)
    cut = write_state(s)
    assert cut.deleted
    store.apply(cut, deletions=False)  # the worker died before the deletions
    leaked = set(store.segments) - set(s.segments)
    assert leaked == set(cut.deleted)
    again = store.load()
    assert again.deleting == list(cut.deleted)
    store.apply(write_state(again))
    state_written(again)
    assert set(store.segments) == set(again.segments)
    assert dump_state(store.load()) == dump_state(s)


def test_a_write_costs_what_changed_not_the_window() -> None:
    """30 minutes of 2 hits/s into 10-minute windows at 1 s steps, written every 2 s:
    a write stays the size of two seconds' buckets while the whole state grows
    with the window."""
    d = Detector(ruleset(velocity(warmup_ms=0, min_count=10**6)), step_ms=1_000)
    s = d.new_state("acme")
    store = Store()
    sizes = []
    for t in range(0, 30 * MIN, 500):
        d.observe(s, hit(t, t, author=f"a{t % 97}", followers=t % 1_000))
        d.advance(s, t)
        if t % 2_000 == 0:
            w = write_state(s)
            store.apply(w)
            state_written(s)
            sizes.append(len(w.head) + sum(len(v) for _, v in w.segments))
    whole = len(dump_state(s))
    assert whole > 100_000  # the test covers a full window
    assert max(sizes[len(sizes) // 2 :]) < whole / 20
    # segments are deleted as the window moves on: about a window's worth are kept
    assert 290 <= len(store.segments) <= 340
    store.apply(write_state(s))
    assert dump_state(store.load()) == dump_state(s)


def test_a_whole_state_loads_and_its_first_write_seals_it() -> None:
    d = Detector(FULL)
    s = d.new_state("acme")
    for t in range(0, 8 * MIN, 20_000):
        d.observe(s, hit(t, t, "recall"))
        d.advance(s, t)
    old = load_state(dump_state(s))  # a version 2 value, from before segments
    w = write_state(old)
    assert [seg_id for seg_id, _ in w.segments] == [min(x.keys[0] for x in s.series.values())]
    store = Store()
    store.apply(w)
    assert dump_state(store.load()) == dump_state(s)


def test_a_head_without_its_segments_is_refused() -> None:
    d = Detector(FULL)
    s = d.new_state("acme")
    for t in range(0, 3 * MIN, 20_000):
        d.observe(s, hit(t, t))
        d.advance(s, t)
    w = write_state(s)
    ((seg_id, value),) = w.segments
    with pytest.raises(ValueError, match="segments are needed"):
        load_state(w.head)
    with pytest.raises(ValueError, match=f"segment {seg_id} is missing"):
        load_state(w.head, {}.get)
    foreign = orjson.loads(value)
    foreign["brand"] = "other"
    with pytest.raises(ValueError, match="foreign"):
        load_state(w.head, {seg_id: orjson.dumps(foreign)}.get)
    assert dump_state(load_state(w.head, {seg_id: value}.get)) == dump_state(s)


def test_buckets_pruned_from_a_kept_segment_stay_pruned() -> None:
    """A segment is deleted only when all of it is pruned; the buckets of one that is
    partly pruned, and those of a series a rule reload removed, are not loaded."""
    full, no_keyword = Detector(FULL), Detector(NO_KEYWORD)
    s = full.new_state("acme")
    store = Store()
    for t in range(0, 14 * MIN, 10_000):
        full.observe(s, hit(t, t, "recall"))
        full.advance(s, t)
        if t % (7 * MIN) == 0:  # segments of 7 minutes; windows of 5 and 10
            store.apply(write_state(s))
            state_written(s)
    store.apply(write_state(s))
    state_written(s)
    first = {name: series.keys[0] for name, series in s.series.items()}
    assert all(start > 0 for start in first.values())  # pruned from the first segment
    assert min(s.segments) == 0  # which is kept
    assert dump_state(store.load()) == dump_state(s)
    no_keyword.advance(s, 14 * MIN)  # the keyword rule is removed, then comes back
    t = 14 * MIN
    full.observe(s, hit(t, t, "recall"))
    store.apply(write_state(s))
    assert list(s.series["recall"].keys) == [t]
    assert dump_state(store.load()) == dump_state(s)
