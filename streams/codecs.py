"""Records of the internal matches topic: hits and watermark ticks."""

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
            "hits": [h.to_dict() for h in hits],
            "tick": _tick_obj(tick) if tick is not None else None,
        }
    )


def decode_record(raw: bytes) -> Hit | Tick:
    """Decode one single-item matches-topic value; raises ValueError/KeyError on a bad one."""
    items = decode_items(raw)
    if len(items) != 1:
        msg = f"expected one hit or tick; got {len(items)} items"
        raise ValueError(msg)
    return items[0]


def decode_items(raw: bytes) -> list[Hit | Tick]:
    """Decode a matches-topic value (hit, tick or batch) into items, in order."""
    obj: dict[str, Any] = orjson.loads(raw)
    kind = obj.get("t")
    if kind == "w":
        return [_tick_from(obj)]
    if kind == "b":
        items: list[Hit | Tick] = [Hit.from_dict(h) for h in obj["hits"]]
        if obj.get("tick") is not None:
            items.append(_tick_from(obj["tick"]))
        return items
    return [Hit.from_dict(obj)]
