"""Per-brand detector state and its canonical serialisation (orjson, byte-exact)."""

from __future__ import annotations

from typing import Any

import orjson

from rules.incidents import Incident
from rules.windows import RangeCache, Series

STATE_VERSION = 2
"""2: history as ``[starts, counts]`` columns; version 1 (a map) still loads."""
READABLE_VERSIONS = (1, 2)


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
        "duplicates",
        "first_hit_ms",
        "incidents",
        "last_boundary_ms",
        "late",
        "series",
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

    def range_cache(self, key: tuple[Any, ...]) -> RangeCache | None:
        value = self.cache.get(key)
        return value if isinstance(value, RangeCache) else None

    def to_obj(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "brand": self.brand,
            "last_boundary_ms": self.last_boundary_ms,
            "first_hit_ms": self.first_hit_ms,
            "series": {name: s.to_obj() for name, s in self.series.items()},
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


def load_state(data: bytes) -> BrandState:
    """The brand state ``dump_state`` wrote; raises ValueError on a foreign value."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        msg = f"brand state is not valid JSON: {exc}"
        raise ValueError(msg) from None
    if not isinstance(obj, dict):
        msg = f"brand state must be a JSON object; got {type(obj).__name__}"
        raise ValueError(msg)
    try:
        return BrandState.from_obj(obj)
    except (KeyError, TypeError, AttributeError) as exc:
        msg = f"brand state for {obj.get('brand')!r} is malformed: missing or bad {exc}"
        raise ValueError(msg) from None
