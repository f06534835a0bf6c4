"""Records of the internal matches topic: hits and watermark ticks.

A batch record carries its hits as rows (``Hit.to_row``: the fields in order, no
keys), which the detect stage counts as they are; a hit as an object (``{"t":
"h", ...}``, or in a batch written before rows) is still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from rules.model import Hit
from rules.watermark import PartitionReport


@dataclass(frozen=True, slots=True)
class Tick:
    """A match stage's watermark report, sent to every matches partition."""

    sender: str
    reports: dict[int, PartitionReport]


def encode_hit(hit: Hit) -> bytes:
    d = hit.to_dict()
    d["t"] = "h"
    return orjson.dumps(d)


def _tick_obj(tick: Tick) -> dict[str, Any]:
    return {
        "t": "w",
        "sender": tick.sender,
        "parts": {str(p): [r.max_event_ms, r.idle, r.sent_ms] for p, r in tick.reports.items()},
    }


def _tick_from(obj: dict[str, Any]) -> Tick:
    return Tick(
        sender=str(obj["sender"]),
        reports={
            int(p): PartitionReport(v[0], bool(v[1]), int(v[2])) for p, v in obj["parts"].items()
        },
    )


def encode_tick(tick: Tick) -> bytes:
    return orjson.dumps(_tick_obj(tick))


def encode_batch(hits: list[Hit], tick: Tick | None) -> bytes:
    """One record for one matches partition: the hits of a batch, then its watermark tick."""
    return orjson.dumps(
        {
            "t": "b",
            "hits": [h.to_row() for h in hits],
            "tick": _tick_obj(tick) if tick is not None else None,
        }
    )


def decode_record(raw: bytes) -> Hit | Tick:
    """Decode one single-item matches-topic value; raises ValueError/KeyError on a bad one."""
    items = decode_items(raw)
    if len(items) != 1:
        msg = f"expected one hit or tick; got {len(items)} items"
        raise ValueError(msg)
    item = items[0]
    return Hit.from_row(item) if isinstance(item, list) else item


HitRow = list[Any]
"""A hit as ``Hit.to_row`` lays it out."""
ROW_LENGTH = 12

_INT_OR_NONE = (int, type(None))


def _checked_row(row: HitRow) -> HitRow:
    """``row`` if it is a hit's row; raises ValueError if not.  The fields the detector
    hashes, compares or adds are type-checked (the others only go into samples and
    alert JSON as they are)."""
    if not (
        len(row) == ROW_LENGTH
        and type(row[0]) is str  # brand
        and type(row[1]) is str  # post id
        and type(row[3]) is int  # created_at_ms
        and type(row[4]) is str  # author key
        and type(row[6]) is int  # followers
        and type(row[7]) is list
        and all([type(r) is str for r in row[7]])  # rule ids
        and isinstance(row[11], _INT_OR_NONE)  # ingested_at_ms
    ):
        msg = f"not a hit row: {str(row)[:200]}"
        raise ValueError(msg)
    return row


def decode_items(raw: bytes) -> list[Hit | HitRow | Tick]:
    """Decode a matches-topic value (hit, tick or batch) into items, in order: hits of a
    batch as rows (``Hit.to_row``), a single hit as a ``Hit``."""
    obj: dict[str, Any] = orjson.loads(raw)
    kind = obj.get("t")
    if kind == "w":
        return [_tick_from(obj)]
    if kind == "b":
        items: list[Hit | HitRow | Tick] = [
            _checked_row(h) if type(h) is list else Hit.from_dict(h) for h in obj["hits"]
        ]
        if obj.get("tick") is not None:
            items.append(_tick_from(obj["tick"]))
        return items
    return [Hit.from_dict(obj)]
