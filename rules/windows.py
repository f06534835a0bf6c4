"""Event-time window arithmetic and bucketed per-series counts (pure, no clock).

A *series* is one thing the detector counts for a brand: ``mentions`` (every hit)
or the id of a keyword rule (hits that matched it).  Each series keeps

- per ``step_ms`` bucket (keyed by the bucket's start): the hit count, the reach
  (sum of author followers), the distinct author keys (an exact set, capped at
  ``MAX_AUTHORS_PER_BUCKET``), the top ``SAMPLES_PER_BUCKET`` hits by
  (followers desc, post_id asc) and the latest ``ingested_at_ms``.  These cover
  the current windows only and are pruned behind the longest window.
- per ``HIST_MS`` bucket: the count, for ratio baselines (pruned behind the
  longest baseline).
- per ``TILE_MS`` tile: the count, for adaptive sensitivity (a week), only for
  series that an adaptive rule watches.

Windows are aligned to ``step_ms``: a window ``[T - window_ms, T)`` contains the
buckets whose start lies in it (window lengths are rounded up to whole steps).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rules.model import Hit, Post

HIST_MS = 60_000
"""Resolution of the baseline history (one minute)."""
TILE_MS = 600_000
"""Resolution of the adaptive-sensitivity history (ten minutes)."""
DAY_MS = 86_400_000
MAX_AUTHORS_PER_BUCKET = 10_000
"""Distinct author keys kept per step bucket; beyond it authors are undercounted."""
SAMPLES_PER_BUCKET = 5
"""Top hits kept per step bucket (an event lists the top 5 of its window)."""
SMALL_AUTHORS = 16
"""A bucket keeps its author keys in a tuple up to this many, then in a set."""

Sample = tuple[Any, ...]
"""``(followers, post_id, source, author, text, url, created_at)`` (a JSON array when
stored).  A tuple of strings, ints and None, which the cyclic garbage collector stops
tracking (see ``Series``)."""


def floor_to(ts_ms: int, unit_ms: int) -> int:
    """The start of the ``unit_ms``-aligned bucket holding ``ts_ms`` (epoch aligned)."""
    return ts_ms - ts_ms % unit_ms


def ceil_to(ts_ms: int, unit_ms: int) -> int:
    """The first ``unit_ms``-aligned time at or after ``ts_ms``."""
    return -(-ts_ms // unit_ms) * unit_ms


def ceil_steps(duration_ms: int, step_ms: int) -> int:
    """``duration_ms`` rounded up to a whole number of steps (at least one)."""
    return max(step_ms, ceil_to(duration_ms, step_ms))


def sample_key(sample: Sample) -> tuple[int, str]:
    """Order of samples: highest reach first, then post id."""
    return (-sample[0], sample[1])


def sample_of(hit: Hit) -> Sample:
    return (
        hit.followers,
        hit.post_id,
        hit.source,
        hit.author,
        hit.text,
        hit.url,
        hit.created_at,
    )


def sample_of_post(post: Post) -> Sample:
    """``sample_of(Hit.from_post(post, match))`` without building the Hit."""
    author = post.author
    return (
        author.followers if author else 0,
        post.id,
        post.source,
        author.handle if author else None,
        post.text[:280],
        post.url,
        post.created_at,
    )


def sample_of_row(row: list[Any]) -> Sample:
    """``sample_of(Hit.from_row(row))`` without building the Hit (see ``Hit.to_row``)."""
    return (row[6], row[1], row[2], row[5], row[8], row[9], row[10])


def top_samples(lists: Iterable[Sequence[Sample]], limit: int = SAMPLES_PER_BUCKET) -> list[Sample]:
    """The ``limit`` best samples of several per-bucket lists."""
    merged = [s for lst in lists for s in lst]
    merged.sort(key=sample_key)
    return merged[:limit]


class RangeCache:
    """The last sum computed over ``[lo_ms, hi_ms)`` of one bucket dict.

    Valid only while buckets inside ``[lo_ms, hi_ms)`` do not change; the
    detector guarantees that (non-late hits land at or after the last evaluated
    boundary, which is >= every cached ``hi_ms``).  Never serialised.
    """

    __slots__ = ("hi_ms", "lo_ms", "total")

    def __init__(self, lo_ms: int, hi_ms: int, total: int) -> None:
        self.lo_ms = lo_ms
        self.hi_ms = hi_ms
        self.total = total


def _plain_sum(buckets: dict[int, int], lo_ms: int, hi_ms: int, unit_ms: int) -> int:
    if hi_ms <= lo_ms:
        return 0
    if (hi_ms - lo_ms) // unit_ms > len(buckets):
        return sum(v for k, v in buckets.items() if lo_ms <= k < hi_ms)
    get = buckets.get
    return sum(get(k, 0) for k in range(lo_ms, hi_ms, unit_ms))


def range_sum(
    buckets: dict[int, int],
    lo_ms: int,
    hi_ms: int,
    unit_ms: int,
    cache: RangeCache | None,
) -> tuple[int, RangeCache]:
    """Sum of buckets with start in ``[lo_ms, hi_ms)``, moved incrementally from ``cache``."""
    if cache is not None and cache.lo_ms <= lo_ms and cache.hi_ms <= hi_ms:
        moved = (lo_ms - cache.lo_ms) + (hi_ms - cache.hi_ms)
        if moved < hi_ms - lo_ms:
            if moved == 0:
                return cache.total, cache
            total = (
                cache.total
                + _plain_sum(buckets, cache.hi_ms, hi_ms, unit_ms)
                - _plain_sum(buckets, cache.lo_ms, lo_ms, unit_ms)
            )
            cache.lo_ms, cache.hi_ms, cache.total = lo_ms, hi_ms, total
            return total, cache
    total = _plain_sum(buckets, lo_ms, hi_ms, unit_ms)
    if cache is None:
        return total, RangeCache(lo_ms, hi_ms, total)
    cache.lo_ms, cache.hi_ms, cache.total = lo_ms, hi_ms, total
    return total, cache


class AuthorsCache:
    """The distinct authors of a series' step buckets in ``[lo_ms, hi_ms)``: author key ->
    how many of those buckets name it (``Series.authors_moved``).

    Valid only while buckets inside ``[lo_ms, hi_ms)`` do not change and none of them
    is pruned: the detector guarantees the first (as for ``RangeCache``) and drops the
    cache when it prunes a bucket the cache covers.  Never serialised.
    """

    __slots__ = ("counts", "hi_ms", "lo_ms")

    def __init__(self, lo_ms: int, hi_ms: int, counts: dict[str, int]) -> None:
        self.lo_ms = lo_ms
        self.hi_ms = hi_ms
        self.counts = counts


BucketRecord = tuple[Any, ...]
"""A step bucket's record ``(reach, authors, ingested, *samples)`` (see ``Series.records``)."""


def _bucket_authors(rec: BucketRecord) -> Any:
    """The author keys of a step bucket's record (see ``Series.records``), each once."""
    authors = rec[1]
    return (authors,) if type(authors) is str else authors


def _held_authors(keys: list[str], hits: int) -> Any:
    """A bucket's distinct author keys as its record holds them (see ``Series.records``)."""
    if hits == 1 and len(keys) == 1:
        return keys[0]
    return tuple(keys) if len(keys) <= SMALL_AUTHORS else set(keys)


class Series:
    """Bucketed figures of one counted series of one brand (mutable state).

    Per step bucket one record ``(reach, authors, ingested, *samples)`` plus the
    count in ``counts`` (read by every evaluation) and the sorted bucket starts
    in ``keys`` (hits arrive nearly in order, so keeping it sorted is cheap).
    A bucket with one hit holds its author key as a str, not in a tuple: the
    objects made per hit, and freed when the bucket is pruned, were a good part
    of the detector's time.

    A record is a tuple of tuples of strings, ints and None (two levels, not
    more), replaced rather than changed by each hit, so Python's cyclic garbage
    collector stops tracking it in the two young collections it survives
    before it grows old (each untracks one level: a tuple whose items are all
    untracked).  Kept in lists, a record was four to eight tracked objects,
    2.1 million of them after 5 minutes of the worker benchmark's load, and a
    full collection took ~2 s to scan them (BENCHMARKS.md, session 18).  Only a
    bucket of more than ``SMALL_AUTHORS`` authors keeps a (tracked) set.
    """

    __slots__ = ("counts", "hist", "keys", "records", "tiles")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        """step bucket start -> hits."""
        self.keys: list[int] = []
        """The step bucket starts of ``counts``, ascending."""
        self.records: dict[int, BucketRecord] = {}
        """step bucket start -> ``(reach, authors, ingested, *samples)``: the sum of author
        followers, the distinct author keys (one: a str; a tuple of up to ``SMALL_AUTHORS``,
        then a set, capped at ``MAX_AUTHORS_PER_BUCKET``), the latest ``ingested_at_ms``
        (None: no hit carried one) and the top hits, best first (see the class doc)."""
        self.hist: dict[int, int] = {}
        """HIST_MS bucket start -> hits (baseline history)."""
        self.tiles: dict[int, int] = {}
        """TILE_MS tile start -> hits (adaptive history; only when watched)."""

    def add(
        self,
        ts_ms: int,
        step_ms: int,
        keep_tiles: bool,
        followers: int,
        author_key: str,
        post_id: str,
        ingested_at_ms: int | None,
        source: Any,
        make_sample: Callable[[Any], Sample],
    ) -> None:
        """Count one hit; ``make_sample(source)`` is called only if it enters the top samples."""
        b = ts_ms - ts_ms % step_ms
        counts = self.counts
        n = counts.get(b)
        if n is None:
            counts[b] = 1
            keys = self.keys
            if not keys or b > keys[-1]:
                keys.append(b)
            else:
                insort(keys, b)
            self.records[b] = (followers, author_key, ingested_at_ms, make_sample(source))
        else:
            counts[b] = n + 1
            records = self.records
            rec = records[b]
            reach, authors, ingested = rec[0], rec[1], rec[2]
            samples = rec[3:]
            if type(authors) is str:  # the bucket's second hit
                authors = (authors,)
            if type(authors) is tuple:
                # a few authors: a tuple (a set of 5 or more takes 730 bytes, and most
                # buckets hold a handful); a set once there are more than SMALL_AUTHORS
                if author_key not in authors:
                    if len(authors) < SMALL_AUTHORS:
                        authors = (*authors, author_key)
                    else:
                        authors = {*authors, author_key}
            elif len(authors) < MAX_AUTHORS_PER_BUCKET:
                authors.add(author_key)
            if ingested_at_ms is not None and (ingested is None or ingested_at_ms > ingested):
                ingested = ingested_at_ms
            if len(samples) < SAMPLES_PER_BUCKET or (
                followers > (last := samples[-1])[0] or (followers == last[0] and post_id < last[1])
            ):
                best = list(samples)
                insort(best, make_sample(source), key=sample_key)
                records[b] = (reach + followers, authors, ingested, *best[:SAMPLES_PER_BUCKET])
            else:
                records[b] = (reach + followers, authors, ingested, *samples)
        h = ts_ms - ts_ms % HIST_MS
        hist = self.hist
        hist[h] = hist.get(h, 0) + 1
        if keep_tiles:
            t = ts_ms - ts_ms % TILE_MS
            self.tiles[t] = self.tiles.get(t, 0) + 1

    def prune_steps(self, step_before_ms: int) -> bool:
        """Drop step buckets (per-hit data) that start before ``step_before_ms``;
        True if there were any."""
        keys = self.keys
        if keys and keys[0] < step_before_ms:
            i = bisect_left(keys, step_before_ms)
            counts, records = self.counts, self.records
            for k in keys[:i]:
                del counts[k]
                del records[k]
            del keys[:i]
            return True
        return False

    def prune_samples(self, before_ms: int, pruned_ms: int | None) -> None:
        """Drop the samples no window can list any more: those with ``SAMPLES_PER_BUCKET``
        better ones in their own or later buckets before ``before_ms``.

        ``before_ms`` is the last evaluated boundary: every window still to come ends
        after it, so one that holds a sample's bucket holds every bucket from there to
        ``before_ms`` too, and lists only its top ``SAMPLES_PER_BUCKET``.  What is left
        is the same whatever the boundaries pruned at on the way (a sample dropped at
        one is dropped at every later one, and the samples that outrank it are never
        dropped before it), so the live worker and ``backtest`` hold the same samples.

        ``pruned_ms``: the boundary of the last call (None: none, or not known).  Buckets
        are read newest first, and the walk stops once none of the best samples seen is
        from a bucket at or after ``pruned_ms``: the older buckets were pruned against
        those same samples then.  At the benchmark's load a brand's series holds about
        4 hits a second, so without this nearly every hit of the last 10 minutes stayed
        in memory as a sample with its text (BENCHMARKS.md, session 20).
        """
        keys, records = self.keys, self.records
        limit = SAMPLES_PER_BUCKET
        best: list[tuple[int, str, int]] = []
        """The top samples of the buckets read so far, best first: (-followers, post id,
        bucket), ``sample_key`` order."""
        fresh = False
        """Some of ``best`` is from a bucket at or after ``pruned_ms``."""
        full = False  # ``best`` holds ``limit`` samples, the last of them (worst_f, worst_id)
        worst_f, worst_id = 0, ""
        old_from = -(2**62) if pruned_ms is None else pruned_ms  # None: read every bucket
        for j in range(bisect_left(keys, before_ms) - 1, -1, -1):
            k = keys[j]
            if k < old_from and not fresh:
                break
            rec = records[k]
            if len(rec) == 3:
                continue
            top = rec[3]
            if full and (top[0] < worst_f or (top[0] == worst_f and top[1] > worst_id)):
                records[k] = rec[:3]  # its best is outranked five times over
                continue
            merged = sorted([*best, *((-s[0], s[1], k) for s in rec[3:])])[:limit]
            kept = sum(1 for m in merged if m[2] == k)
            if kept < len(rec) - 3:
                records[k] = rec[: 3 + kept]
            best = merged
            fresh = any(m[2] >= old_from for m in merged)
            if len(merged) == limit:
                full, worst_f, worst_id = True, -merged[-1][0], merged[-1][1]

    def prune_history(self, hist_before_ms: int, tile_before_ms: int) -> None:
        """Drop baseline and adaptive history buckets older than the given times."""
        # called once per ten-minute tile.  Not triggered by the first key inserted: a
        # late hit inserts an older bucket after newer ones, and a state loaded from
        # its stored form has them in time order, so the two pruned differently (no
        # decision changed, but the state and its stored form did)
        hist, tiles = self.hist, self.tiles
        if hist and min(hist) < hist_before_ms:
            for k in [k for k in hist if k < hist_before_ms]:
                del hist[k]
        if tiles and min(tiles) < tile_before_ms:
            for k in [k for k in tiles if k < tile_before_ms]:
                del tiles[k]

    def window_keys(self, lo_ms: int, hi_ms: int) -> list[int]:
        """Bucket starts in ``[lo_ms, hi_ms)``, ascending."""
        keys = self.keys
        return keys[bisect_left(keys, lo_ms) : bisect_left(keys, hi_ms)]

    def window_count(self, lo_ms: int, hi_ms: int) -> int:
        counts = self.counts
        return sum([counts[k] for k in self.window_keys(lo_ms, hi_ms)])

    def window_reach(self, lo_ms: int, hi_ms: int) -> int:
        records = self.records
        return sum([records[k][0] for k in self.window_keys(lo_ms, hi_ms)])

    def window_authors(self, lo_ms: int, hi_ms: int) -> int:
        records = self.records
        authors: set[str] = set()
        for k in self.window_keys(lo_ms, hi_ms):
            held = records[k][1]
            if type(held) is str:
                authors.add(held)
            else:
                authors.update(held)
        return len(authors)

    def authors_moved(
        self, lo_ms: int, hi_ms: int, cache: AuthorsCache | None
    ) -> tuple[int, AuthorsCache]:
        """``window_authors(lo_ms, hi_ms)``, moved on from ``cache`` (a window of the same
        length read at an earlier boundary) by the buckets that left and entered it.

        A velocity rule whose ratio holds reads its window's authors at every step:
        the union of up to a window's worth of bucket author sets (600 for ten minutes
        of one-second steps) cost ~350 us a step; moved, it costs the two buckets'.
        """
        records = self.records
        if (
            cache is None
            or lo_ms < cache.lo_ms
            or hi_ms < cache.hi_ms
            or lo_ms >= cache.hi_ms  # no overlap: counting afresh is no dearer
            or hi_ms - lo_ms != cache.hi_ms - cache.lo_ms
        ):
            counts: dict[str, int] = {}
            for k in self.window_keys(lo_ms, hi_ms):
                for author in _bucket_authors(records[k]):
                    counts[author] = counts.get(author, 0) + 1
            cache = AuthorsCache(lo_ms, hi_ms, counts)
            return len(counts), cache
        counts = cache.counts
        for k in self.window_keys(cache.lo_ms, lo_ms):
            for author in _bucket_authors(records[k]):
                n = counts[author]
                if n == 1:
                    del counts[author]
                else:
                    counts[author] = n - 1
        for k in self.window_keys(cache.hi_ms, hi_ms):
            for author in _bucket_authors(records[k]):
                counts[author] = counts.get(author, 0) + 1
        cache.lo_ms, cache.hi_ms = lo_ms, hi_ms
        return len(counts), cache

    def window_samples(self, lo_ms: int, hi_ms: int) -> list[Sample]:
        return top_samples([self._samples(k) for k in self.window_keys(lo_ms, hi_ms)])

    def _samples(self, k: int) -> Sequence[Sample]:
        rec = self.records[k]
        return rec[3:]

    def _authors(self, k: int) -> list[str]:
        """The bucket's author keys, sorted."""
        held = self.records[k][1]
        return [held] if type(held) is str else sorted(held)

    def window_ingested(self, lo_ms: int, hi_ms: int) -> int | None:
        records = self.records
        values = [records[k][2] for k in self.window_keys(lo_ms, hi_ms)]
        present = [v for v in values if v is not None]
        return max(present) if present else None

    # ------------------------------------------------------------ serialisation

    def to_obj(self) -> dict[str, Any]:
        """A JSON-friendly canonical form (int keys as strings, sets sorted)."""
        return {**self.buckets_obj(self.keys), **self.history_obj()}

    def history_obj(self, lo_ms: int | None = None, hi_ms: int | None = None) -> dict[str, Any]:
        """The baseline and adaptive history in ``to_obj``'s form; with bounds, only the
        buckets and tiles that start in ``[lo_ms, hi_ms)``."""
        # [starts ascending, counts]: a day of minutes per keyword series is most of a
        # busy brand's state, and int lists encode ~10x faster than str-keyed maps
        return {
            "hist": _columns(self.hist, lo_ms, hi_ms),
            "tiles": _columns(self.tiles, lo_ms, hi_ms),
        }

    def head_history(self, cut_ms: int | None) -> dict[str, Any]:
        """``history_obj(cut_ms)`` and the first bucket and tile held (``hist_from``,
        ``tiles_from``; None: none), which say what of the history stored before the cut
        is still live: a head's part of it, written at every write-back (one sort each)."""
        out: dict[str, Any] = {}
        for name, buckets in (("hist", self.hist), ("tiles", self.tiles)):
            starts = sorted(buckets)
            out[f"{name}_from"] = starts[0] if starts else None
            if cut_ms is not None:
                starts = starts[bisect_left(starts, cut_ms) :]
            out[name] = [starts, [buckets[k] for k in starts]]
        return out

    def put_history(
        self, obj: dict[str, Any], hist_from: int | None, tiles_from: int | None
    ) -> None:
        """Add ``history_obj`` form ``obj``'s buckets that start at or after ``hist_from``
        and its tiles from ``tiles_from`` (None: none) before the ones held (they are
        older: the order ``prune_history`` relies on)."""
        self.hist = {**_columns_from(obj["hist"], hist_from), **self.hist}
        self.tiles = {**_columns_from(obj["tiles"], tiles_from), **self.tiles}

    def buckets_obj(self, keys: list[int]) -> dict[str, Any]:
        """The step buckets ``keys`` (ascending, all present) in ``to_obj``'s form."""
        records = self.records
        return {
            "counts": {str(k): self.counts[k] for k in keys},
            "reach": {str(k): records[k][0] for k in keys},
            "authors": {str(k): self._authors(k) for k in keys},
            "samples": {str(k): self._samples(k) for k in keys},
            "ingested": {str(k): records[k][2] for k in keys if records[k][2] is not None},
        }

    def keys_from(self, lo_ms: int | None) -> list[int]:
        """Step bucket starts at or after ``lo_ms`` (None: all), ascending."""
        keys = self.keys
        return keys if lo_ms is None else keys[bisect_left(keys, lo_ms) :]

    @staticmethod
    def from_obj(obj: dict[str, Any]) -> Series:
        s = Series()
        s.put_buckets(obj, None)
        s.hist = _from_columns(obj["hist"])
        s.tiles = _from_columns(obj["tiles"])
        return s

    def put_buckets(self, obj: dict[str, Any], from_ms: int | None) -> None:
        """Add the step buckets of ``buckets_obj`` form ``obj`` that start at or after
        ``from_ms`` (None: all) and are not here yet."""
        counts = {int(k): int(v) for k, v in obj["counts"].items()}
        reach, authors = obj["reach"], obj["authors"]
        samples, ingested = obj["samples"], obj["ingested"]
        added = False
        for k in sorted(counts):
            if (from_ms is not None and k < from_ms) or k in self.counts:
                continue
            added = True
            n = self.counts[k] = counts[k]
            key = str(k)
            got = ingested.get(key)
            these, best = authors[key], samples[key]
            self.records[k] = (
                int(reach[key]),
                _held_authors(these, n),
                None if got is None else int(got),
                *map(tuple, best),
            )
        if added:
            self.keys = sorted(self.counts)
            self.counts = {k: self.counts[k] for k in self.keys}


def _columns(
    buckets: dict[int, int], lo_ms: int | None = None, hi_ms: int | None = None
) -> list[list[int]]:
    """``{start: count}`` -> ``[[starts ascending], [counts]]`` (canonical), only the
    starts in ``[lo_ms, hi_ms)`` when given."""
    starts = sorted(buckets)
    if lo_ms is not None:
        starts = starts[bisect_left(starts, lo_ms) :]
    if hi_ms is not None:
        starts = starts[: bisect_left(starts, hi_ms)]
    return [starts, [buckets[k] for k in starts]]


def _columns_from(value: Any, from_ms: int | None) -> dict[int, int]:
    """``_from_columns``, only the starts at or after ``from_ms`` (None: none)."""
    if from_ms is None:
        return {}
    return {k: v for k, v in _from_columns(value).items() if k >= from_ms}


def _from_columns(value: Any) -> dict[int, int]:
    """The inverse of ``_columns``; state version 1's ``{"start": count}`` map too."""
    if isinstance(value, dict):
        return {int(k): int(v) for k, v in value.items()}
    starts, counts = value
    if len(starts) != len(counts):
        msg = f"history columns differ in length: {len(starts)} starts, {len(counts)} counts"
        raise TypeError(msg)
    return {int(k): int(v) for k, v in zip(starts, counts, strict=True)}
