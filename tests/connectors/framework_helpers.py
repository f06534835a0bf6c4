"""Helpers shared by the connector-framework tests (publisher, runner, replay, webhook)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from connectors.base import Batch, Cursor, Rejected, SourceError
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics
from rules.model import Post
from rules.post import decode_post, format_rfc3339_ms

BASE_MS = 1_795_000_000_000


def make_post(i: int, source: str = "test") -> Post:
    return decode_post(
        orjson.dumps(
            {
                "id": f"{source}:{i}",
                "source": source,
                "text": f"post number {i} about acme",
                "created_at": format_rfc3339_ms(BASE_MS + i * 1000),
                "author": {"id": f"a{i % 7}", "followers": i},
            }
        )
    )


async def kafka_settings(bootstrap: str, prefix: str, partitions: int = 2) -> KafkaSettings:
    settings = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=partitions)
    await ensure_topics(settings, [settings.posts_topic, settings.dlq_topic])
    return settings


class ListSource:
    """A fake Source serving a fixed list of posts, ``page`` at a time; cursor = {"i": next index}.

    ``errors`` maps a fetch number (0-based) to an exception raised instead of that fetch.
    """

    kind = "fake"

    def __init__(
        self,
        name: str,
        posts: Sequence[Post],
        *,
        page: int = 3,
        finite: bool = True,
        errors: dict[int, Exception] | None = None,
        rejected_at: dict[int, Rejected] | None = None,
        wait_s: float = 0.0,
    ) -> None:
        self.name = name
        self.posts = list(posts)
        self.page = page
        self.finite = finite
        self.errors = dict(errors or {})
        self.rejected_at = dict(rejected_at or {})
        self.wait_s = wait_s
        self.fetches = 0
        self.served: list[str] = []
        self.exhausted = False
        self.closed = False

    async def fetch(self, cursor: Cursor) -> Batch:
        n = self.fetches
        self.fetches += 1
        if n in self.errors:
            raise self.errors[n]
        start = int((cursor or {}).get("i", 0))
        chunk = self.posts[start : start + self.page]
        end = start + len(chunk)
        self.served.extend(p.id for p in chunk)
        rejected = tuple(r for i, r in self.rejected_at.items() if start <= i < end)
        if self.finite and end >= len(self.posts):
            self.exhausted = True
        return Batch(posts=tuple(chunk), cursor={"i": end}, rejected=rejected, wait_s=self.wait_s)

    async def close(self) -> None:
        self.closed = True


def retriable(kind: str = "http_5xx", retry_after_s: float | None = None) -> SourceError:
    return SourceError(f"fake {kind}", retry_after_s=retry_after_s, kind=kind)


class FakePublisher:
    """Records what the runner publishes, in order, as events: ("publish", ids) /
    ("dead_letter", reason) — the checkpoint store appends ("save", cursor) to the same log."""

    def __init__(self, log: list[tuple[str, object]]) -> None:
        self.log = log

    async def publish_batch(self, posts: Sequence[Post]) -> None:
        self.log.append(("publish", [p.id for p in posts]))

    async def dead_letter(self, rejected: Rejected, *, stage: str) -> None:
        self.log.append(("dead_letter", (rejected.reason, stage)))

    async def flush(self) -> None:
        return None


class LoggingCheckpoints:
    def __init__(self, log: list[tuple[str, object]], initial: dict[str, Cursor] | None = None):
        self.log = log
        self.cursors: dict[str, Cursor] = dict(initial or {})

    def get(self, name: str) -> Cursor:
        return self.cursors.get(name)

    async def save(self, name: str, cursor: Cursor) -> None:
        self.cursors[name] = cursor
        self.log.append(("save", (name, cursor)))


class RecordingSleep:
    """An injectable sleep that returns at once and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
