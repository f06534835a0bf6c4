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

from typing import Any

from rules.model import Hit

HIST_MS = 60_000
"""Resolution of the baseline history (one minute)."""
TILE_MS = 600_000
"""Resolution of the adaptive-sensitivity history (ten minutes)."""
DAY_MS = 86_400_000
MAX_AUTHORS_PER_BUCKET = 10_000
"""Distinct author keys kept per step bucket; beyond it authors are undercounted."""
SAMPLES_PER_BUCKET = 5
"""Top hits kept per step bucket (an event lists the top 5 of its window)."""

Sample = list[Any]
"""``[followers, post_id, source, author, text, url, created_at]`` (JSON friendly)."""


def floor_to(ts_ms: int, unit_ms: int) -> int:
    """The start of the ``unit_ms``-aligned bucket holding ``ts_ms`` (epoch aligned)."""
    return ts_ms - ts_ms % unit_ms


def ceil_steps(duration_ms: int, step_ms: int) -> int:
    """``duration_ms`` rounded up to a whole number of steps (at least one)."""
    return max(step_ms, -(-duration_ms // step_ms) * step_ms)


def sample_key(sample: Sample) -> tuple[int, str]:
    """Order of samples: highest reach first, then post id."""
    return (-sample[0], sample[1])


def sample_of(hit: Hit) -> Sample:
    return [
        hit.followers,
        hit.post_id,
        hit.source,
        hit.author,
        hit.text,
        hit.url,
        hit.created_at,
    ]


def top_samples(lists: list[list[Sample]], limit: int = SAMPLES_PER_BUCKET) -> list[Sample]:
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


class Series:
    """Bucketed figures of one counted series of one brand (mutable state)."""

    __slots__ = ("authors", "counts", "hist", "ingested", "reach", "samples", "tiles")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        """step bucket start -> hits."""
        self.reach: dict[int, int] = {}
        """step bucket start -> sum of author followers."""
        self.authors: dict[int, set[str]] = {}
        """step bucket start -> distinct author keys (capped)."""
        self.samples: dict[int, list[Sample]] = {}
        """step bucket start -> top hits, best first."""
        self.ingested: dict[int, int] = {}
        """step bucket start -> latest ingested_at_ms."""
        self.hist: dict[int, int] = {}
        """HIST_MS bucket start -> hits (baseline history)."""
        self.tiles: dict[int, int] = {}
        """TILE_MS tile start -> hits (adaptive history; only when watched)."""

    def add(self, hit: Hit, step_ms: int, keep_tiles: bool) -> None:
        ts = hit.created_at_ms
        b = floor_to(ts, step_ms)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.reach[b] = self.reach.get(b, 0) + hit.followers
        authors = self.authors.get(b)
        if authors is None:
            self.authors[b] = {hit.author_key}
        elif len(authors) < MAX_AUTHORS_PER_BUCKET:
            authors.add(hit.author_key)
        samples = self.samples.get(b)
        new = sample_of(hit)
        if samples is None:
            self.samples[b] = [new]
        elif len(samples) < SAMPLES_PER_BUCKET or sample_key(new) < sample_key(samples[-1]):
            samples.append(new)
            samples.sort(key=sample_key)
            del samples[SAMPLES_PER_BUCKET:]
        if hit.ingested_at_ms is not None and hit.ingested_at_ms > self.ingested.get(b, -(2**62)):
            self.ingested[b] = hit.ingested_at_ms
        h = floor_to(ts, HIST_MS)
        self.hist[h] = self.hist.get(h, 0) + 1
        if keep_tiles:
            t = floor_to(ts, TILE_MS)
            self.tiles[t] = self.tiles.get(t, 0) + 1

    def prune(self, step_before_ms: int, hist_before_ms: int, tile_before_ms: int) -> None:
        """Drop buckets that start before the given times."""
        if self.counts and min(self.counts) < step_before_ms:
            for d in (self.counts, self.reach, self.authors, self.samples, self.ingested):
                for k in [k for k in d if k < step_before_ms]:
                    del d[k]
        if self.hist and min(self.hist) < hist_before_ms:
            for k in [k for k in self.hist if k < hist_before_ms]:
                del self.hist[k]
        if self.tiles and min(self.tiles) < tile_before_ms:
            for k in [k for k in self.tiles if k < tile_before_ms]:
                del self.tiles[k]

    def window_reach(self, lo_ms: int, hi_ms: int) -> int:
        return sum(v for k, v in self.reach.items() if lo_ms <= k < hi_ms)

    def window_authors(self, lo_ms: int, hi_ms: int) -> int:
        sets = [s for k, s in self.authors.items() if lo_ms <= k < hi_ms]
        if len(sets) == 1:
            return len(sets[0])
        return len(set().union(*sets)) if sets else 0

    def window_samples(self, lo_ms: int, hi_ms: int) -> list[Sample]:
        return top_samples([s for k, s in self.samples.items() if lo_ms <= k < hi_ms])

    def window_ingested(self, lo_ms: int, hi_ms: int) -> int | None:
        values = [v for k, v in self.ingested.items() if lo_ms <= k < hi_ms]
        return max(values) if values else None

    # ------------------------------------------------------------ serialisation

    def to_obj(self) -> dict[str, Any]:
        """A JSON-friendly canonical form (int keys as strings, sets sorted)."""
        return {
            "counts": {str(k): v for k, v in self.counts.items()},
            "reach": {str(k): v for k, v in self.reach.items()},
            "authors": {str(k): sorted(v) for k, v in self.authors.items()},
            "samples": {str(k): v for k, v in self.samples.items()},
            "ingested": {str(k): v for k, v in self.ingested.items()},
            "hist": {str(k): v for k, v in self.hist.items()},
            "tiles": {str(k): v for k, v in self.tiles.items()},
        }

    @staticmethod
    def from_obj(obj: dict[str, Any]) -> Series:
        s = Series()
        s.counts = {int(k): int(v) for k, v in obj["counts"].items()}
        s.reach = {int(k): int(v) for k, v in obj["reach"].items()}
        s.authors = {int(k): set(v) for k, v in obj["authors"].items()}
        s.samples = {int(k): [list(x) for x in v] for k, v in obj["samples"].items()}
        s.ingested = {int(k): int(v) for k, v in obj["ingested"].items()}
        s.hist = {int(k): int(v) for k, v in obj["hist"].items()}
        s.tiles = {int(k): int(v) for k, v in obj["tiles"].items()}
        return s
