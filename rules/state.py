"""Per-brand detector state and its serialisations (orjson, canonical).

Two forms:

- the whole state (``dump_state`` / ``load_state``): one canonical document;
- the worker's incremental form (``write_state`` / ``load_state`` with a segment
  reader): a *head* with everything that can still change, and *segments*, each
  holding the step buckets sealed between two write-backs.  A bucket that starts
  before the last evaluated boundary never changes again (a hit before that
  boundary is late), so a segment is written once and deleted when every bucket
  in it has been pruned.  A write-back then costs what changed since the last
  one, not the whole window: at 1 s steps a 10-minute window of a busy brand is
  hundreds of kilobytes, rewritten in full every few seconds before this.
  Segments are merged as in a log-structured merge tree: ``SEGMENT_FANOUT``
  newest segments of one level become one segment of the next level, so a brand
  keeps a few dozen segments however long its windows (a restart reads them
  all), at the cost of writing each bucket once more per level.  The baseline
  history (a day of minutes for keyword rules) before the last ``HISTORY_EVERY_MS``
  cut is final too: it is stored apart, once per cut, in one of two slots in turn
  (``history_name``), and the head holds only the history since the cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import orjson

from rules.incidents import Incident
from rules.windows import TILE_MS, RangeCache, Series

STATE_VERSION = 2
"""2: history as ``[starts, counts]`` columns; version 1 (a map) still loads."""
HEAD_VERSION = 5
"""A head of the incremental form (``write_state``); its segments are read with it.
4: segments have levels (merged segments); a version 3 head (all level 0) still loads.
5: the history older than ``HISTORY_EVERY_MS`` is in a key of its own (``history_name``);
a version 4 or 3 head (all of it in the head) still loads."""
INCREMENTAL_VERSIONS = (3, 4, HEAD_VERSION)
READABLE_VERSIONS = (1, 2, *INCREMENTAL_VERSIONS)
HISTORY_EVERY_MS = TILE_MS
"""The history (a day of minutes for keyword rules: most of a day-old head) is stored
apart, up to the last multiple of this before the sealed boundary, once per multiple:
the head, written at every write-back, holds only the history after that."""
SEGMENT_FANOUT = 16
"""This many newest segments of one level are merged into one of the next level, while
the result spans at most 1/16 of the live buckets (see ``_merge``): a 10-minute window
written every 2 s keeps about 35 segments instead of 300; a day, about 200 instead of
43,200."""


class BrandState:
    """Everything the detector remembers about one brand (mutable; one per brand).

    ``cache`` holds derived running sums and thresholds; it is never serialised
    and is rebuilt on demand, so it never changes a decision.
    """

    __slots__ = (
        "brand",
        "cache",
        "counted",
        "dedup",
        "deleting",
        "duplicates",
        "first_hit_ms",
        "history",
        "incidents",
        "last_boundary_ms",
        "late",
        "levels",
        "sealed_ms",
        "segments",
        "series",
        "unfinished",
    )

    def __init__(self, brand: str) -> None:
        self.brand = brand
        """Brand id."""
        self.last_boundary_ms: int | None = None
        """The last evaluation boundary passed; None before the first one."""
        self.first_hit_ms: int | None = None
        """Earliest counted hit (event time): the start of the brand's history (warm-up)."""
        self.series: dict[str, Series] = {}
        """``mentions`` and keyword rule ids -> bucketed figures."""
        self.dedup: dict[str, int] = {}
        """post id -> created_at_ms of counted hits, pruned behind the dedup horizon."""
        self.incidents: dict[str, Incident] = {}
        """rule id -> its open incident (at most one per rule)."""
        self.counted = 0
        """Hits counted."""
        self.late = 0
        """Hits dropped because their bucket was already evaluated."""
        self.duplicates = 0
        """Hits dropped because their post id was already counted."""
        self.cache: dict[Any, Any] = {}
        """Derived values (running sums, thresholds); not serialised."""
        self.unfinished: tuple[int | None] | None = None
        """``(previous last boundary,)`` while an ``advance(..., finish=False)`` has left
        its bookkeeping to ``Detector.finish``; not serialised (see there)."""
        # the incremental form's bookkeeping (write_state); the detector never reads it
        self.sealed_ms: int | None = None
        """Step buckets that start before this are stored in segments."""
        self.segments: list[int] = []
        """Stored segments by id, ascending; one holds bucket starts from its id (the
        first: from any time) up to the next one's id (the last: up to ``sealed_ms``)."""
        self.levels: list[int] = []
        """Each segment's merge level (0: written as sealed; see ``segment_name``)."""
        self.deleting: list[str] = []
        """Names of segments (expired or merged) and of replaced history slots whose
        deletion may not be stored yet."""
        self.history: tuple[int, int] | None = None
        """(slot, cut) of the stored history key (``history_name(slot)``, the history
        before ``cut``); None: all of the history is in the head."""

    def range_cache(self, key: tuple[Any, ...]) -> RangeCache | None:
        value = self.cache.get(key)
        return value if isinstance(value, RangeCache) else None

    def to_obj(self) -> dict[str, Any]:
        return self.obj_with(STATE_VERSION, {name: s.to_obj() for name, s in self.series.items()})

    def obj_with(self, version: int, series: dict[str, Any]) -> dict[str, Any]:
        """``to_obj``'s form with this version and these series objects."""
        return {
            "v": version,
            "brand": self.brand,
            "last_boundary_ms": self.last_boundary_ms,
            "first_hit_ms": self.first_hit_ms,
            "series": series,
            "dedup": self.dedup,
            "incidents": {rule_id: inc.to_obj() for rule_id, inc in self.incidents.items()},
            "counted": self.counted,
            "late": self.late,
            "duplicates": self.duplicates,
        }

    @staticmethod
    def from_obj(obj: dict[str, Any]) -> BrandState:
        if obj.get("v") not in READABLE_VERSIONS:
            msg = (
                f"brand state version {obj.get('v')!r} is not supported "
                f"(expected one of {', '.join(map(str, READABLE_VERSIONS))})"
            )
            raise ValueError(msg)
        state = BrandState(obj["brand"])
        state.last_boundary_ms = obj["last_boundary_ms"]
        state.first_hit_ms = obj["first_hit_ms"]
        state.series = {name: Series.from_obj(s) for name, s in obj["series"].items()}
        if obj["v"] in INCREMENTAL_VERSIONS:
            state.sealed_ms = obj["sealed_ms"]
            state.segments = _from_gaps(obj["segments"])
            state.levels = [int(x) for x in obj.get("levels", [0] * len(state.segments))]
            if len(state.levels) != len(state.segments):
                msg = f"{len(state.levels)} levels for {len(state.segments)} segments"
                raise TypeError(msg)
            state.deleting = [str(x) for x in obj["deleting"]]
            history = obj.get("history")
            if history is not None:
                slot, cut = history
                state.history = (int(slot), int(cut))
        state.dedup = {str(k): int(v) for k, v in obj["dedup"].items()}
        state.incidents = {
            rule_id: Incident.from_obj(inc) for rule_id, inc in obj["incidents"].items()
        }
        state.counted = int(obj["counted"])
        state.late = int(obj["late"])
        state.duplicates = int(obj["duplicates"])
        return state


def dump_state(state: BrandState) -> bytes:
    """Canonical JSON bytes of a brand state (sorted keys): ``dump(load(b)) == b``."""
    return orjson.dumps(state.to_obj(), option=orjson.OPT_SORT_KEYS)


SegmentReader = Callable[[str], bytes | None]
"""A stored segment of the brand being loaded, by name (``segment_name``; None: not
stored)."""


def segment_name(seg_id: int, level: int) -> str:
    """A segment's name (the part of its key after the brand): its id, and its merge
    level when above 0 (``1700000000000``, ``1700000000000.2``).  A merged segment
    has a name of its own, so no head that lists the segments it replaces reads it."""
    return str(seg_id) if level == 0 else f"{seg_id}.{level}"


def load_state(data: bytes, segment: SegmentReader | None = None) -> BrandState:
    """The brand state ``dump_state`` wrote, or the one whose head ``write_state`` wrote
    (then ``segment`` reads its segments); raises ValueError on a foreign value."""
    obj = _json_object(data, "brand state")
    try:
        state = BrandState.from_obj(obj)
        if obj["v"] in INCREMENTAL_VERSIONS:
            if segment is None:
                msg = "an incremental head: its segments are needed to load it"
                raise ValueError(msg)
            froms = {name: s.get("from") for name, s in obj["series"].items()}
            for seg_id, level in zip(state.segments, state.levels, strict=True):
                seg = segment_name(seg_id, level)
                _put_segment(state, seg, segment(seg), froms)
            if state.history is not None:
                name = history_name(state.history[0])
                _put_history(state, name, segment(name), state.history[1], obj["series"])
    except (KeyError, TypeError, AttributeError) as exc:
        msg = f"brand state for {obj.get('brand')!r} is malformed: missing or bad {exc}"
        raise ValueError(msg) from None
    if state.last_boundary_ms is not None:
        # a segment is written once, as its buckets are sealed, and the samples pruned
        # from them since (``Series.prune_samples``) come back with it: pruned again, the
        # state is the one written, and the detector's next prune may stop early again
        for series in state.series.values():
            series.prune_samples(state.last_boundary_ms, None)
    return state


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        msg = f"{what} is not valid JSON: {exc}"
        raise ValueError(msg) from None
    if not isinstance(obj, dict):
        msg = f"{what} must be a JSON object; got {type(obj).__name__}"
        raise ValueError(msg)
    return obj


def _put_segment(
    state: BrandState, seg: str, data: bytes | None, froms: dict[str, int | None]
) -> None:
    """Add segment ``seg``'s buckets that the head's series still hold (a bucket
    that is here already came from the head or another segment: the same values)."""
    obj = _stored_part(state, f"segment {seg}", data)
    for name, buckets in obj["series"].items():
        series = state.series.get(name)
        from_ms = froms.get(name)
        # a bucket before the series' first one was pruned (or belongs to a series of
        # that name that a rule reload removed): not part of the state any more
        if series is not None and from_ms is not None:
            series.put_buckets(buckets, from_ms)


def _stored_part(
    state: BrandState, what: str, data: bytes | None, **expected: Any
) -> dict[str, Any]:
    """The object stored as the brand's ``what`` (a segment, the history); raises
    ValueError when it is missing, or is another brand's, another version's, or has
    other ``expected`` fields (the changelog has lost data: no state is guessed)."""
    if data is None:
        msg = f"brand state for {state.brand!r}: {what} is missing from the store"
        raise ValueError(msg)
    obj = _json_object(data, f"{what} of brand {state.brand!r}")
    expected = {"brand": state.brand, **expected}
    if obj.get("v") not in INCREMENTAL_VERSIONS or any(
        obj.get(k) != v for k, v in expected.items()
    ):
        found = ", ".join(f"{k} {obj.get(k)!r}" for k in ("v", *expected))
        msg = f"{what} of brand {state.brand!r} is foreign: {found} (expected {expected})"
        raise ValueError(msg)
    return obj


def history_name(slot: int) -> str:
    """The name of a brand's history key (after the brand, as a segment's): two slots,
    written in turn, so the one the stored head reads is never overwritten."""
    return f"h{slot}"


def _put_history(
    state: BrandState, name: str, data: bytes | None, cut: int, head: dict[str, Any]
) -> None:
    """Add the history stored under ``name`` (before ``cut``) that the head's series
    still hold: from their first live bucket and tile (``hist_from``, ``tiles_from``)."""
    obj = _stored_part(state, f"history {name}", data, cut=cut)
    for series_name, history in obj["series"].items():
        series = state.series.get(series_name)
        if series is not None:  # else removed by a rule reload
            s = head[series_name]
            series.put_history(history, s["hist_from"], s["tiles_from"])


@dataclass(frozen=True)
class StateWrite:
    """One brand's write-back, stored in this order: ``segments``, ``head``, ``deleted``.

    The head lists the segments, so it is stored after the new one and before the
    expired ones are deleted; it also lists those (``deleting``), so a deletion cut
    short by a crash is made by the next write-back of the brand.
    """

    head: bytes
    segments: tuple[tuple[str, bytes], ...]
    """(segment name, value) to store."""
    deleted: tuple[str, ...]
    """Names of segments to delete (some may be gone already)."""


def write_state(state: BrandState, fanout: int = SEGMENT_FANOUT) -> StateWrite:
    """What to store of ``state`` since its last ``write_state``: the step buckets
    sealed since (one new segment), the head, and the segments that have expired.

    First, while the ``fanout`` newest stored segments have one level, they are merged
    into one segment of the next level (``_merge``).  Updates the state's bookkeeping
    as if the write will be stored; call ``state_written`` once it is.  A new
    segment's id is the seal time it starts at (the first one's: its earliest
    bucket), and a merged one's the id of the first it replaces, so the write-back
    that a restart repeats from the same head stores the same keys.
    """
    if fanout < 2:
        msg = f"fanout must be at least 2; got {fanout}"
        raise ValueError(msg)
    first_keys = [s.keys[0] for s in state.series.values() if s.keys]
    live_from = min(first_keys) if first_keys else None  # buckets before it are pruned
    writes = _merge(state, fanout, live_from)
    sealed = state.sealed_ms
    until = state.last_boundary_ms
    if until is not None and (sealed is None or until > sealed):
        lo = -(2**63) if sealed is None else sealed
        part, first = _buckets(state, lo, until)
        if part:
            seg_id = sealed if sealed is not None else first
            assert seg_id is not None  # part holds a bucket
            writes.append((segment_name(seg_id, 0), _segment_doc(state, sealed, until, part)))
            state.segments.append(seg_id)
            state.levels.append(0)
        state.sealed_ms = sealed = until
    ids = state.segments
    expired = 0
    while expired < len(ids):
        hi = ids[expired + 1] if expired + 1 < len(ids) else sealed
        if live_from is not None and hi is not None and hi > live_from:
            break
        expired += 1  # every bucket in it is pruned
    if expired:
        state.deleting.extend(
            segment_name(i, lv) for i, lv in zip(ids[:expired], state.levels[:expired], strict=True)
        )
        del ids[:expired]
        del state.levels[:expired]
    cut = None if sealed is None else sealed - sealed % HISTORY_EVERY_MS
    stored = state.history
    if cut is not None and (stored is None or cut > stored[1]):
        # every history bucket and tile before the cut is final (a hit before the sealed
        # boundary is late): stored once per HISTORY_EVERY_MS, in the other slot
        part = {n: s.history_obj(None, cut) for n, s in state.series.items()}
        if stored is None and not any(h["hist"][0] or h["tiles"][0] for h in part.values()):
            part = {}  # none yet: no key
    else:
        part = {}
    if part:
        assert cut is not None  # part is empty without a cut
        slot = 0 if stored is None else 1 - stored[0]
        name = history_name(slot)
        doc = {"v": HEAD_VERSION, "brand": state.brand, "cut": cut, "series": part}
        writes.append((name, orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)))
        if name in state.deleting:  # its deletion by an earlier write was cut short
            state.deleting.remove(name)
        if stored is not None:
            state.deleting.append(history_name(stored[0]))
        state.history = stored = (slot, cut)
    history_cut = None if stored is None else stored[1]
    head = state.obj_with(
        HEAD_VERSION,
        {name: _head_series(s, sealed, history_cut) for name, s in state.series.items()},
    )
    head |= {
        "sealed_ms": sealed,
        # the first id, then the gaps between ids
        "segments": ids[:1] + [b - a for a, b in pairwise(ids)],
        "levels": state.levels,
        "deleting": state.deleting,
        "history": stored,
    }
    return StateWrite(
        orjson.dumps(head, option=orjson.OPT_SORT_KEYS), tuple(writes), tuple(state.deleting)
    )


def _merge(state: BrandState, fanout: int, live_from: int | None) -> list[tuple[str, bytes]]:
    """Merge the ``fanout`` newest segments while they have one level and together span
    at most 1/``fanout`` of the live buckets: one segment of the next level, named by
    the first one's id, holds their buckets that are still live (read from the state:
    a sealed bucket never changes).  The segments merged away go to ``deleting``.
    Returns the merged segments to store.

    So a brand keeps about ``fanout`` segments of the longest span plus fewer than
    ``fanout`` per level below, and each bucket is written once per level.

    A head stored earlier still finds every segment it lists, unchanged: a merged
    segment has a name of its own (``segment_name``), the new segment of this write is
    never merged in it (merges come first), and the segments merged away are deleted
    only after the new head is stored.
    """
    ids, levels = state.segments, state.levels
    hi = state.sealed_ms
    if hi is None or live_from is None:
        return []
    # no merged segment spans more than 1/fanout of the live buckets (about the longest
    # window): merging the whole window at once would be a burst of a write
    longest = (hi - live_from) // fanout
    writes: dict[str, bytes] = {}
    while len(ids) >= fanout and len(set(levels[-fanout:])) == 1:
        start = len(ids) - fanout
        lo, level = ids[start], levels[-1] + 1
        if hi - lo > longest:
            break
        part, _ = _buckets(state, lo, hi)
        name = segment_name(lo, level)
        for i, lv in zip(ids[start:], levels[start:], strict=True):
            gone = segment_name(i, lv)
            state.deleting.append(gone)  # maybe stored by a write a crash cut short
            writes.pop(gone, None)  # merged again before it was ever stored
        writes[name] = _segment_doc(state, lo, hi, part)
        del ids[start + 1 :], levels[start + 1 :]
        levels[start] = level
    return list(writes.items())


def _buckets(state: BrandState, lo_ms: int, hi_ms: int) -> tuple[dict[str, Any], int | None]:
    """Each series' step buckets starting in ``[lo_ms, hi_ms)`` (series with none are
    left out), and the earliest start among them."""
    part: dict[str, Any] = {}
    first: int | None = None
    for name, series in state.series.items():
        keys = series.window_keys(lo_ms, hi_ms)
        if keys:
            part[name] = series.buckets_obj(keys)
            first = keys[0] if first is None else min(first, keys[0])
    return part, first


def _segment_doc(state: BrandState, lo: int | None, hi: int, part: dict[str, Any]) -> bytes:
    doc = {"v": HEAD_VERSION, "brand": state.brand, "lo": lo, "hi": hi, "series": part}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def _from_gaps(value: list[int]) -> list[int]:
    ids: list[int] = []
    for gap in value:
        ids.append(int(gap) + (ids[-1] if ids else 0))
    return ids


def state_written(state: BrandState) -> None:
    """The last ``write_state`` of ``state`` is stored (its deletions included)."""
    state.deleting = []


def _head_series(series: Series, sealed_ms: int | None, history_cut: int | None) -> dict[str, Any]:
    return {
        **series.buckets_obj(series.keys_from(sealed_ms)),
        "from": series.keys[0] if series.keys else None,
        # the history since the cut, and the first bucket and tile held: the history
        # key's buckets before these were pruned since it was stored
        **series.head_history(history_cut),
    }
