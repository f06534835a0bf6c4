"""The dead-letter record of contracts.md (value of ``crisiswatch.posts.dlq``)."""

from __future__ import annotations

import base64
from typing import Any

from rules.post import format_rfc3339_ms

MAX_PAYLOAD_BYTES = 500_000
"""Dead letters keep at most this many bytes of the original value (base64 grows it by a
third), so that a dead letter always fits the broker's default 1 MB message limit."""


def payload_fields(payload: bytes) -> dict[str, Any]:
    """``payload_b64`` of the value, cut to MAX_PAYLOAD_BYTES; a cut one also says
    ``payload_truncated: true`` and the original ``payload_bytes``."""
    if len(payload) <= MAX_PAYLOAD_BYTES:
        return {"payload_b64": base64.b64encode(payload).decode("ascii")}
    return {
        "payload_b64": base64.b64encode(payload[:MAX_PAYLOAD_BYTES]).decode("ascii"),
        "payload_truncated": True,
        "payload_bytes": len(payload),
    }


def dead_letter(
    *,
    reason: str,
    detail: str,
    stage: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    received_at_ms: int,
    payload: bytes,
) -> dict[str, Any]:
    """Build one dead-letter object; ``received_at_ms`` is wall time, passed in."""
    return {
        "reason": reason,
        "detail": detail,
        "stage": stage,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "received_at": format_rfc3339_ms(received_at_ms),
        **payload_fields(payload),
    }
