"""The dead-letter record of contracts.md (value of ``crisiswatch.posts.dlq``)."""

from __future__ import annotations

import base64
from typing import Any

from rules.post import format_rfc3339_ms


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
        "payload_b64": base64.b64encode(payload).decode("ascii"),
    }
