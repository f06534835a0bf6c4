"""The Source protocol every platform connector implements.

A source fetches one batch from an explicit cursor and returns the posts and
the cursor to resume from.  It never sleeps inside a batch and keeps no resume
state of its own: the runner checkpoints ``Batch.cursor`` only after every post
before it is acknowledged by Kafka, so a source restarted from a checkpoint
neither skips nor repeats a post.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rules.errors import CrisiswatchError
from rules.model import Post

Cursor = Mapping[str, Any] | None
"""Opaque, JSON-serialisable resume state; None means 'start fresh'."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An item a source could not map to a Post: goes to the dead-letter topic."""

    reason: str
    """Short machine code, e.g. ``invalid_item`` or ``missing_field:content``."""
    detail: str
    """A human sentence."""
    payload: bytes
    """The original item's bytes."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One fetch: posts (in source order), rejected items, and where to resume."""

    posts: tuple[Post, ...]
    cursor: Cursor
    """Resume state after this batch."""
    rejected: tuple[Rejected, ...] = ()
    wait_s: float = 0.0
    """How long the runner should wait before the next fetch (0: at once)."""
    newest_event_ms: int | None = field(default=None)
    """Newest event time seen in this batch, for freshness metrics."""


@runtime_checkable
class Source(Protocol):
    """A platform connector: ``await fetch(cursor)`` -> Batch."""

    name: str
    """Unique connector name; the checkpoint key."""
    kind: str
    """Platform kind, e.g. ``mastodon``; the Post ``source``."""

    async def fetch(self, cursor: Cursor) -> Batch:
        """Fetch the next batch after ``cursor``; raise SourceError on failure."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class SourceError(CrisiswatchError):
    """A fetch failed. ``retriable`` says whether the runner should back off and retry."""

    retriable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, kind: str = "error"):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """The server's Retry-After / rate-limit reset, when it gave one."""
        self.kind = kind
        """Error kind for metrics: http_429, http_5xx, disconnect, timeout, protocol, auth."""


class FatalSourceError(SourceError):
    """A fetch failed in a way retrying cannot fix (bad credentials, 404)."""

    retriable = False
