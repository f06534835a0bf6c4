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


def encode_tick(tick: Tick) -> bytes:
    return orjson.dumps(
        {
            "t": "w",
            "sender": tick.sender,
            "parts": {str(p): [r.max_event_ms, r.idle, r.sent_ms] for p, r in tick.reports.items()},
        }
    )


def decode_record(raw: bytes) -> Hit | Tick:
    """Decode one matches-topic value; raises ValueError/KeyError on a malformed one."""
    obj: dict[str, Any] = orjson.loads(raw)
    if obj.get("t") == "w":
        return Tick(
            sender=str(obj["sender"]),
            reports={
                int(p): PartitionReport(v[0], bool(v[1]), int(v[2]))
                for p, v in obj["parts"].items()
            },
        )
    return Hit.from_dict(obj)
