"""Alert events: the CloudEvents the detector emits (contracts.md, "Alert event")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rules.post import format_rfc3339_ms


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One opened / escalated / resolved event of one incident."""

    id: str
    """Deterministic event id (32 hex chars)."""
    type: str
    """``crisiswatch.incident.opened`` | ``.escalated`` | ``.resolved``."""
    brand: str
    """Brand id (the CloudEvent subject and the Kafka key)."""
    time_ms: int
    """The evaluation boundary (event time) at which the condition was crossed."""
    incident_id: str
    """Shared by every event of one incident."""
    rule_id: str
    severity: str
    """Severity after this event."""
    trigger_ingested_at_ms: int | None
    """Latest ``ingested_at_ms`` among hits in the window (for latency metrics)."""
    data: dict[str, Any]
    """The contract's ``data`` object."""

    def to_cloudevent(self) -> dict[str, Any]:
        """The contract's CloudEvents 1.0 structured-mode JSON object."""
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": "crisiswatch",
            "type": self.type,
            "subject": self.brand,
            "time": format_rfc3339_ms(self.time_ms),
            "datacontenttype": "application/json",
            "data": self.data,
        }

    def to_json(self) -> bytes:
        """The CloudEvent as UTF-8 JSON bytes (the value on the alert topic)."""
        return orjson.dumps(self.to_cloudevent())


def window_figures(
    start_ms: int,
    end_ms: int,
    count: int,
    baseline: float,
    unique_authors: int,
    reach: int,
) -> dict[str, Any]:
    """The contract's ``window`` object."""
    return {
        "start": format_rfc3339_ms(start_ms),
        "end": format_rfc3339_ms(end_ms),
        "count": count,
        "baseline": round(baseline, 4),
        "ratio": round(count / baseline, 4) if baseline > 0 else 0.0,
        "unique_authors": unique_authors,
        "reach": reach,
    }


def sample_object(sample: Sequence[Any]) -> dict[str, Any]:
    """A stored sample ``(followers, post_id, source, author, text, url, created_at)`` -> JSON."""
    return {
        "post_id": sample[1],
        "source": sample[2],
        "author": sample[3],
        "text": sample[4],
        "url": sample[5],
        "created_at": sample[6],
    }
