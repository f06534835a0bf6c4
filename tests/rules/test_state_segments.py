"""The incremental state form (``write_state``): head plus write-once segments.

A store that applies each write (segments, head, deletions, in that order) and is
read back with ``load_state`` must give the state the detector holds in memory,
through pruning, segment merges, rule reloads that drop a series, and a write cut
short after its head or before it; and a write costs what changed, not the whole
window, while the segments a brand keeps stay few.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rules.detect import Detector, dump_state, load_state
from rules.state import (
    SEGMENT_FANOUT,
    BrandState,
    StateWrite,
    history_name,
    segment_name,
    state_written,
    write_state,
)
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
        self.segments: dict[str, bytes] = {}

    def apply(self, w: StateWrite, *, head: bool = True, deletions: bool = True) -> None:
        for name, value in w.segments:
            self.segments[name] = value
        if not head:
            return  # cut short before the head
        self.head = w.head
        if deletions:
            for name in w.deleted:
                self.segments.pop(name, None)

    def load(self) -> BrandState:
        assert self.head is not None
        return load_state(self.head, self.segments.get)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.integers(0, 40), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("advance"), st.integers(0, 20), st.just(0), st.just(False)),
        # b: 0 stored whole, 1 cut short after the head, 2 cut short before it
        st.tuples(st.just("write"), st.just(0), st.integers(0, 2), st.just(False)),
        st.tuples(st.just("reload"), st.just(0), st.just(0), st.booleans()),
    ),
    max_size=80,
)


def names(state: BrandState) -> set[str]:
    """The keys (after the brand) the state's stored head reads: segments and history."""
    got = {segment_name(i, lv) for i, lv in zip(state.segments, state.levels, strict=True)}
    return got | ({history_name(state.history[0])} if state.history is not None else set())


def _run(
    steps: list[tuple[str, int, int, bool]], restart: bool, fanout: int
) -> tuple[list, list[bytes]]:
    detectors = {True: Detector(FULL), False: Detector(NO_KEYWORD)}
    full = True
    store = Store()
    s = detectors[full].new_state("acme")
    stored: bytes | None = None  # the state the stored head holds
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
            w = write_state(s, fanout)
            if b == 2:
                # a crash before the head: the stored head still loads as it was (merged
                # segments have names of their own), and the write is then made again
                store.apply(w, head=False)
                if stored is not None:
                    assert dump_state(store.load()) == stored
            # b == 1: cut short after its head (a crash before the deletions)
            store.apply(w, deletions=b != 1)
            loaded = store.load()
            stored = dump_state(loaded)
            assert stored == dump_state(s)
            if b != 1:
                state_written(s)
                assert set(store.segments) == names(s)
            if restart or b == 1:
                s = loaded  # a restart reads the store (a crash always does)
        dumps.append(dump_state(s))
    events += detectors[full].advance(s, now + 3 * 3_600_000)
    return [e.to_cloudevent() for e in events], dumps


@settings(max_examples=80, deadline=None)
@given(steps=ops, fanout=st.sampled_from([2, 3, SEGMENT_FANOUT]))
@example(  # a hit older than the first: history was pruned by the first key inserted
    steps=[("hit", 9, 0, False), ("hit", 0, 0, False), ("advance", 5, 0, False),
           ("advance", 20, 0, False), ("advance", 20, 0, False), ("advance", 20, 0, False),
           ("write", 0, 0, False), ("advance", 19, 0, False)],
    fanout=2,
)  # fmt: skip
def test_the_stored_form_is_the_state_and_changes_no_decision(
    steps: list[tuple[str, int, int, bool]], fanout: int
) -> None:
    plain_events, plain_dumps = _run(steps, restart=False, fanout=fanout)
    restarted_events, restarted_dumps = _run(steps, restart=True, fanout=fanout)
    assert restarted_events == plain_events
    assert restarted_dumps == plain_dumps


def _recall_every_10_s(
    d: Detector, until_ms: int, write_every_ms: int, fanout: int = SEGMENT_FANOUT
) -> tuple[BrandState, Store]:
    """A recall hit every 10 s up to ``until_ms``, advanced at each, written (in full) every
    ``write_every_ms``."""
    s = d.new_state("acme")
    store = Store()
    for t in range(0, until_ms, 10_000):
        d.observe(s, hit(t, t, "recall"))
        d.advance(s, t)
        if t % write_every_ms == 0:
            store.apply(write_state(s, fanout))
            state_written(s)
    return s, store


def test_a_write_cut_short_is_finished_by_the_next_one() -> None:
    d = Detector(FULL)
    s, store = _recall_every_10_s(d, 30 * MIN, MIN)
    assert set(store.segments) == names(s) and s.segments and s.history
    # by 12 minutes on, the first segments hold only pruned buckets
    d.advance(s, 45 * MIN)
    cut = write_state(s)
    assert cut.deleted
    store.apply(cut, deletions=False)  # the worker died before the deletions
    leaked = set(store.segments) - names(s)
    assert leaked == set(cut.deleted)
    again = store.load()
    assert again.deleting == list(cut.deleted)
    store.apply(write_state(again))
    state_written(again)
    assert set(store.segments) == names(again)
    assert dump_state(store.load()) == dump_state(s)


def _written(fanout: int) -> tuple[BrandState, Store, list[int], int]:
    """30 minutes of 2 hits/s into 10-minute windows at 1 s steps, written every 2 s:
    the state, its store, the size of each write and the most segments stored in the
    last 10 minutes."""
    d = Detector(ruleset(velocity(warmup_ms=0, min_count=10**6)), step_ms=1_000)
    s = d.new_state("acme")
    store = Store()
    sizes, most = [], 0
    for t in range(0, 30 * MIN, 500):
        d.observe(s, hit(t, t, author=f"a{t % 97}", followers=t % 1_000))
        d.advance(s, t)
        if t % 2_000 == 0:
            w = write_state(s, fanout)
            store.apply(w)
            state_written(s)
            sizes.append(len(w.head) + sum(len(v) for _, v in w.segments))
            if t >= 20 * MIN:
                most = max(most, len(store.segments))
    return s, store, sizes, most


def test_a_write_costs_what_changed_not_the_window() -> None:
    """A write is the size of two seconds' buckets plus the head, while the whole
    state grows with the window; a merge writes at most a sixteenth of the window."""
    s, store, sizes, _ = _written(SEGMENT_FANOUT)
    whole = len(dump_state(s))
    assert all(len(series.keys) >= 600 for series in s.series.values())  # a full window
    later = sizes[len(sizes) // 2 :]
    assert sum(later) / len(later) < whole / 30
    assert max(later) < whole / 10
    store.apply(write_state(s))
    assert dump_state(store.load()) == dump_state(s)


def test_merged_segments_keep_a_brand_to_a_few_dozen_keys() -> None:
    """Unmerged, a 10-minute window written every 2 s is some 300 segments, all read by a
    restart and all listed by every head; merged, a few dozen, and the writes shrink."""
    unmerged_state, unmerged, unmerged_sizes, unmerged_most = _written(10**9)
    merged_state, merged, merged_sizes, merged_most = _written(SEGMENT_FANOUT)
    assert 290 <= unmerged_most <= 340  # about a window's worth: deleted as it moves on
    assert merged_most <= 45
    assert {lv for lv in merged_state.levels} == {0, 1}  # 16 x 2 s merged; 32 x 2 s too long
    assert max(unmerged_state.levels) == 0
    assert sum(merged_sizes) < sum(unmerged_sizes)  # shorter heads outweigh the rewrites
    assert len(merged.head or b"") < len(unmerged.head or b"") * 0.7  # ids: 300 -> 35
    assert dump_state(merged.load()) == dump_state(unmerged.load())


def test_a_head_stored_before_a_merge_reads_none_of_its_segments() -> None:
    """A crash after a merge's segments are stored and before its head: the stored head
    lists only segments that are still there, unchanged, and the merged one has a name
    of its own; the next head lists it and the write's deletions remove the rest."""
    d = Detector(ruleset(velocity(warmup_ms=0, min_count=10**6)), step_ms=1_000)
    s = d.new_state("acme")
    store = Store()
    merges = 0
    for t in range(0, 30 * MIN, 1_000):
        d.observe(s, hit(t, t))
        d.advance(s, t)
        if t % 10_000:
            continue
        w = write_state(s, 4)
        merged = [name for name, _ in w.segments if "." in name]
        if merged and t > 12 * MIN:
            merges += 1
            before = store.head
            old = store.load()
            store.apply(w, head=False)
            assert store.head == before
            assert dump_state(store.load()) == dump_state(old)
            assert not set(merged) & names(old)
        store.apply(w)
        state_written(s)
        assert set(store.segments) == names(s)
        assert dump_state(store.load()) == dump_state(s)
    assert merges >= 10


def test_a_version_3_head_loads_and_its_segments_merge() -> None:
    """Heads written before segments had levels (version 3) list level-0 segments only."""
    s, store = _recall_every_10_s(Detector(FULL), 20 * MIN, 10_000, fanout=10**9)
    head = orjson.loads(store.head or b"")
    assert head["v"] == 5 and set(head["levels"]) == {0} and head["history"]
    head["v"] = 3
    del head["levels"], head["history"]
    for name, series in head["series"].items():
        series.update(s.series[name].history_obj())  # all of it in the head
    store.head = orjson.dumps(head)
    old = store.load()
    assert dump_state(old) == dump_state(s)
    store.apply(write_state(old, 4))  # 4 x 10 s fit in a quarter of the window
    state_written(old)
    assert max(old.levels) == 1
    assert set(store.segments) == names(old)
    assert dump_state(store.load()) == dump_state(s)


def test_a_whole_state_loads_and_its_first_write_seals_it() -> None:
    d = Detector(FULL)
    s = d.new_state("acme")
    for t in range(0, 8 * MIN, 20_000):
        d.observe(s, hit(t, t, "recall"))
        d.advance(s, t)
    old = load_state(dump_state(s))  # a version 2 value, from before segments
    w = write_state(old)
    assert [name for name, _ in w.segments] == [str(min(x.keys[0] for x in s.series.values()))]
    assert old.history is None  # 8 minutes of history: all of it in the head
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


def test_the_history_is_stored_apart_and_written_once_every_ten_minutes() -> None:
    """A keyword rule keeps a day of minute buckets, most of a day-old head, which every
    write-back rewrote.  Apart: the head holds the history since the last 10-minute
    cut, and the history before it goes to one of two slots in turn, written once per
    cut; a crash before the head leaves the stored head and its slot as they were, one
    before the deletions is finished by the next write."""
    d = Detector(FULL)
    s = d.new_state("acme")
    store = Store()
    slots: list[str] = []
    crashes = 0
    for t in range(0, 3 * 60 * MIN, 10_000):
        d.observe(s, hit(t, t, "recall"))
        d.advance(s, t)
        if t % MIN:
            continue
        had_history = s.history is not None
        w = write_state(s)
        written = [name for name, _ in w.segments if name.startswith("h")]
        slots += written
        if written and had_history and crashes < 2:
            crashes += 1
            before = store.load()
            store.apply(w, head=False)  # the other slot only: the stored head reads its own
            assert dump_state(store.load()) == dump_state(before)
            store.apply(w, deletions=False)  # the new head, the old slot not yet deleted
            s = store.load()  # a restart
            assert history_name(1 - s.history[0]) in s.deleting
            continue
        store.apply(w)
        state_written(s)
        assert set(store.segments) == names(s)
        assert dump_state(store.load()) == dump_state(s)
        head = orjson.loads(w.head)
        assert len(head["series"]["recall"]["hist"][0]) <= 20  # minutes since the cut
    assert 16 <= len(slots) <= 18  # a cut every 10 minutes of 3 hours (less the lateness)
    assert slots == ["h0", "h1"] * (len(slots) // 2) + ["h0"] * (len(slots) % 2)
    whole = dump_state(s)
    assert len(orjson.loads(whole)["series"]["recall"]["hist"][0]) >= 170  # kept: a day
    assert len(w.head) < len(whole) / 3


def test_a_version_4_head_loads_and_its_next_write_stores_the_history_apart() -> None:
    s, store = _recall_every_10_s(Detector(FULL), 40 * MIN, 10_000)
    head = orjson.loads(store.head or b"")
    assert head["history"] is not None
    head["v"] = 4
    del head["history"]
    for name, series in head["series"].items():
        series.update(s.series[name].history_obj())  # all of it in the head
        del series["hist_from"], series["tiles_from"]
    store.head = orjson.dumps(head)
    old = store.load()
    assert old.history is None
    assert dump_state(old) == dump_state(s)
    w = write_state(old)
    assert history_name(0) in dict(w.segments)
    store.apply(w)
    state_written(old)
    assert dump_state(store.load()) == dump_state(s)


def test_a_missing_or_foreign_history_is_refused() -> None:
    s, store = _recall_every_10_s(Detector(FULL), 40 * MIN, 10_000)
    assert s.history is not None
    name = history_name(s.history[0])
    value = store.segments.pop(name)
    with pytest.raises(ValueError, match=f"history {name} is missing"):
        store.load()
    stale = orjson.loads(value)
    stale["cut"] -= 10 * MIN  # the other slot's older history
    store.segments[name] = orjson.dumps(stale)
    with pytest.raises(ValueError, match=f"history {name} of brand 'acme' is foreign"):
        store.load()
    store.segments[name] = value
    assert dump_state(store.load()) == dump_state(s)
