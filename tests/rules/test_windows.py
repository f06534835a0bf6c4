"""Window arithmetic and bucketed sums."""

from __future__ import annotations

import gc
import random

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rules.windows import SMALL_AUTHORS, Series, ceil_steps, floor_to, range_sum, top_samples


def test_floor_and_ceil_are_epoch_aligned() -> None:
    assert floor_to(0, 10_000) == 0
    assert floor_to(19_999, 10_000) == 10_000
    assert floor_to(-1, 10_000) == -10_000
    assert ceil_steps(600_000, 10_000) == 600_000
    assert ceil_steps(45_000, 10_000) == 50_000
    assert ceil_steps(1, 10_000) == 10_000


def test_top_samples_orders_by_followers_then_post_id() -> None:
    a = [[5, "b"], [5, "a"], [1, "z"]]
    b = [[9, "c"], [0, "d"]]
    assert [s[1] for s in top_samples([a, b], 3)] == ["c", "a", "b"]


@settings(max_examples=60, deadline=None)
@given(
    buckets=st.dictionaries(st.integers(0, 50), st.integers(0, 9), max_size=30),
    moves=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=12),
)
def test_incremental_range_sums_equal_plain_sums(
    buckets: dict[int, int], moves: list[tuple[int, int]]
) -> None:
    unit = 10
    data = {k * unit: v for k, v in buckets.items()}
    lo, hi, cache = 0, 0, None
    for dlo, dhi in moves:
        hi += dhi * unit
        lo = min(hi, lo + dlo * unit)
        total, cache = range_sum(data, lo, hi, unit, cache)
        assert total == sum(v for k, v in data.items() if lo <= k < hi)


HITS = st.lists(
    st.tuples(
        st.integers(0, 60_000),  # created_at_ms
        st.integers(0, 50),  # followers
        st.sampled_from(["ann", "bob", "cy", "dee"]),  # author key
        st.one_of(st.none(), st.integers(0, 99_000)),  # ingested_at_ms
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(HITS, st.integers(0, 60_000), st.integers(1, 60_000))
def test_one_hit_buckets_read_and_dump_as_full_records(
    hits: list[tuple[int, int, str, int | None]], lo: int, width: int
) -> None:
    """A bucket of one hit keeps a compact record; every figure, the dump and a reload
    agree with a reference computed from the hits themselves."""
    step = 10_000
    series = Series()
    for i, (ts, followers, author, ingested) in enumerate(hits):
        sample = [followers, f"p{i:03d}", "t", author, "text", None, "x"]
        series.add(ts, step, False, followers, author, f"p{i:03d}", ingested, sample, tuple)
    lo_b, hi_b = floor_to(lo, step), floor_to(lo, step) + ceil_steps(width, step)
    inside = [(i, h) for i, h in enumerate(hits) if lo_b <= floor_to(h[0], step) < hi_b]
    assert series.window_count(lo_b, hi_b) == len(inside)
    assert series.window_reach(lo_b, hi_b) == sum(h[1] for _, h in inside)
    assert series.window_authors(lo_b, hi_b) == len({h[2] for _, h in inside})
    got_ingested = [h[3] for _, h in inside if h[3] is not None]
    assert series.window_ingested(lo_b, hi_b) == (max(got_ingested) if got_ingested else None)
    per_bucket: dict[int, list[tuple[int, str]]] = {}
    for i, h in inside:
        per_bucket.setdefault(floor_to(h[0], step), []).append((-h[1], f"p{i:03d}"))
    best = sorted(x for b in per_bucket.values() for x in sorted(b)[:5])[:5]
    assert [(-s[0], s[1]) for s in series.window_samples(lo_b, hi_b)] == best
    for k, n in series.counts.items():
        assert (type(series.records[k][1]) is str) == (n == 1)
    dumped = orjson.dumps(series.to_obj())
    again = Series.from_obj(orjson.loads(dumped))
    assert orjson.dumps(again.to_obj()) == dumped
    assert _held(again) == _held(series)
    assert again.window_authors(lo_b, hi_b) == series.window_authors(lo_b, hi_b)


def _held(series: Series) -> dict[int, tuple[object, ...]]:
    """The series' records with the authors as a set (a reload has them sorted)."""
    return {
        k: (r[0], r[1] if type(r[1]) is str else frozenset(r[1]), *r[2:])
        for k, r in series.records.items()
    }


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=2, max_size=60))
@example([*range(SMALL_AUTHORS), 0])  # exactly SMALL_AUTHORS: still a list
@example([*range(SMALL_AUTHORS + 1)])  # one more: a set
def test_a_bucket_keeps_a_few_authors_in_a_list_and_more_in_a_set(authors: list[int]) -> None:
    """Distinct authors are counted exactly whichever way a bucket holds them (a list up
    to SMALL_AUTHORS, a set past it), and a reload holds them the same way."""
    series = Series()
    for i, a in enumerate(authors):
        sample = [i, f"p{i:03d}", "t", None, "text", None, "x"]
        series.add(1_000 + i, 10_000, False, 1, f"a{a}", f"p{i:03d}", None, sample, tuple)
    distinct = len(set(authors))
    assert series.window_authors(0, 10_000) == distinct
    held = series.records[0][1]
    assert type(held) is (tuple if distinct <= SMALL_AUTHORS else set)
    assert len(held) == distinct
    dumped = orjson.dumps(series.to_obj())
    again = Series.from_obj(orjson.loads(dumped))
    assert type(again.records[0][1]) is type(held)
    assert again.window_authors(0, 10_000) == distinct
    assert orjson.dumps(again.to_obj()) == dumped


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 7)), max_size=120),
    st.lists(st.tuples(st.integers(0, 32), st.integers(1, 8)), min_size=1, max_size=30),
)
def test_authors_moved_from_any_earlier_window_equal_authors_counted_afresh(
    hits: list[tuple[int, int]], windows: list[tuple[int, int]]
) -> None:
    """``authors_moved`` gives ``window_authors`` for any sequence of windows read with
    one cache: moved on when the window keeps its length and goes forward with some
    overlap, counted afresh otherwise (backwards, another length, no overlap); the
    cache then holds each author's number of buckets in the window."""
    step = 1_000
    series = Series()
    for i, (bucket, author) in enumerate(hits):
        sample = [1, f"p{i:03d}", "t", None, "text", None, "x"]
        series.add(bucket * step + i % step, step, False, 1, f"a{author}", f"p{i:03d}", None,
                   sample, tuple)  # fmt: skip
    cache = None
    for start, width in windows:
        lo, hi = start * step, (start + width) * step
        before = cache and (cache.lo_ms, cache.hi_ms)
        n, got = series.authors_moved(lo, hi, cache)
        assert n == series.window_authors(lo, hi)
        per_author: dict[str, int] = {}
        for k in series.window_keys(lo, hi):
            for author in set(series._authors(k)):
                per_author[author] = per_author.get(author, 0) + 1
        assert got.counts == per_author
        assert (got.lo_ms, got.hi_ms) == (lo, hi)
        same_length = before is not None and hi - lo == before[1] - before[0]
        moved = same_length and before is not None and before[0] <= lo < before[1]
        assert (got is cache) == moved
        cache = got


def test_bucket_records_leave_the_cyclic_garbage_collector() -> None:
    """A series' bucket records (one hit, a few authors, the top samples) are two levels
    of tuples of atoms, which the two young collections a record survives before it
    grows old stop tracking, so a full collection does not scan them; only a bucket
    with more than SMALL_AUTHORS authors keeps a (tracked) set."""
    was_enabled = gc.isenabled()
    gc.disable()  # the two collections below are the first each record sees
    try:
        series = Series()
        for i in range(400):
            bucket = i % 40  # 10 hits each, 1 to 7 authors
            author = f"a{i % 7}"
            sample = (i, f"p{i:03d}", "t", author, "text", None, "x")
            series.add(bucket * 1_000, 1_000, False, i, author, f"p{i:03d}", i, sample, tuple)
        for i in range(SMALL_AUTHORS + 4):
            sample = (i, f"q{i:03d}", "t", f"b{i}", "text", None, "x")
            series.add(500, 1_000, False, i, f"b{i}", f"q{i:03d}", None, sample, tuple)
        series.add(50_000, 1_000, False, 1, "solo", "p999", None, (1, "p999"), tuple)
        assert all(gc.is_tracked(r) for r in series.records.values())
        gc.collect(0)
        gc.collect(1)
    finally:
        if was_enabled:
            gc.enable()
    held = {k: r for k, r in series.records.items() if gc.is_tracked(r)}
    assert list(held) == [0]  # bucket 0: SMALL_AUTHORS + 4 authors, in a set
    assert type(held[0][1]) is set and len(held[0][1]) == SMALL_AUTHORS + 4 + 7
    assert len(series.records) == 41
    assert not any(gc.is_tracked(s) for r in series.records.values() for s in r[3:])


def _sample_ids(series: Series) -> dict[int, list[str]]:
    return {k: [s[1] for s in r[3:]] for k, r in series.records.items()}


def _skyline(series: Series, before_ms: int) -> dict[int, list[str]]:
    """The samples of ``series`` that fewer than 5 better ones (in their own bucket or a
    later one before ``before_ms``) outrank: the definition, by brute force."""
    held = [(k, s) for k, r in series.records.items() for s in r[3:]]
    out: dict[int, list[str]] = {k: [] for k in series.records}
    for k, s in held:
        better = [1 for k2, s2 in held if k <= k2 < before_ms and (-s2[0], s2[1]) < (-s[0], s[1])]
        if k >= before_ms or len(better) < 5:
            out[k].append(s[1])
    return out


@settings(max_examples=150, deadline=None)
@given(
    per_step=st.lists(st.lists(st.integers(0, 30), max_size=9), min_size=1, max_size=40),
    every=st.integers(1, 6),
    widths=st.lists(st.integers(1, 45), min_size=1, max_size=4),
)
def test_pruned_samples_change_no_window_still_to_come(
    per_step: list[list[int]], every: int, widths: list[int]
) -> None:
    """Hits arrive a step at a time (the followers of each), the boundary moves on, and
    one series is pruned every ``every`` steps: every window evaluated at every boundary
    lists the same samples as in a series never pruned, and what is held is exactly the
    samples that fewer than five outrank later on (however often it was pruned)."""
    step = 1_000
    kept, whole = Series(), Series()
    pruned_at: int | None = None
    n = 0
    for i, followers_of in enumerate(per_step):
        for followers in followers_of:
            ts = i * step + n % step
            for series in (kept, whole):
                series.add(ts, step, False, followers, f"a{n}", f"p{n:04d}", None,
                           (followers, f"p{n:04d}"), tuple)  # fmt: skip
            n += 1
        boundary = (i + 1) * step
        for w in widths:
            lo = boundary - w * step
            assert kept.window_samples(lo, boundary) == whole.window_samples(lo, boundary)
        if i % every == 0:
            kept.prune_samples(boundary, pruned_at)
            pruned_at = boundary
    if pruned_at is not None:
        assert _sample_ids(kept) == _skyline(whole, pruned_at)
        whole.prune_samples(pruned_at, None)  # pruned once, at the last boundary
        assert _sample_ids(whole) == _sample_ids(kept)


def test_a_long_window_of_busy_buckets_keeps_a_few_dozen_samples() -> None:
    """Ten minutes of 1 s buckets with 4 hits each in random order of reach: 2,400
    samples unpruned; pruned, about 5 x ln(2,400) (the expected skyline of random ranks),
    and the buckets keep their counts, reach and authors."""
    rnd = random.Random(7)
    series = Series()
    for n in range(2_400):
        ts = n * 250
        followers = rnd.randrange(1_000_000)
        series.add(ts, 1_000, False, followers, f"a{n}", f"p{n:05d}", None,
                   (followers, f"p{n:05d}"), tuple)  # fmt: skip
    before = (series.window_count(0, 600_000), series.window_reach(0, 600_000),
              series.window_authors(0, 600_000))  # fmt: skip
    series.prune_samples(600_000, None)
    held = sum(len(r) - 3 for r in series.records.values())
    assert 20 <= held <= 80
    assert (series.window_count(0, 600_000), series.window_reach(0, 600_000),
            series.window_authors(0, 600_000)) == before  # fmt: skip
