"""Connector cursors in the compacted topic ``<prefix>.connector-state``.

Key = connector name (UTF-8), value = the cursor as JSON (``null`` = start
fresh).  At start the store reads the topic to its end and keeps the latest
cursor per connector; ``save`` produces (acks=all) and returns after the ack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.base import Cursor
from connectors.publisher import Publisher
from connectors.settings import KafkaSettings
from connectors.topics import ensure_topics

log = logging.getLogger(__name__)

STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


class CheckpointStore(Protocol):
    """Where the runner keeps each connector's cursor."""

    def get(self, name: str) -> Cursor:
        """The last saved cursor of connector ``name`` (None: never saved)."""
        ...

    async def save(self, name: str, cursor: Cursor) -> None:
        """Durably store ``cursor`` for ``name``; returns once it is stored."""
        ...


class MemoryCheckpoints:
    """Cursors in a dict: for one-shot runs (file replay) and tests."""

    def __init__(self, initial: Mapping[str, Cursor] | None = None) -> None:
        self.cursors: dict[str, Cursor] = dict(initial or {})
        self.saves: list[tuple[str, Cursor]] = []
        """Every save in order (tests read this)."""

    def get(self, name: str) -> Cursor:
        return self.cursors.get(name)

    async def save(self, name: str, cursor: Cursor) -> None:
        self.cursors[name] = cursor
        self.saves.append((name, cursor))


class KafkaCheckpoints:
    """Cursors in the compacted ``<prefix>.connector-state`` topic."""

    def __init__(self, settings: KafkaSettings, publisher: Publisher) -> None:
        self.settings = settings
        self.topic = settings.state_topic
        self._publisher = publisher
        self.cursors: dict[str, Cursor] = {}

    async def start(self, *, load_timeout_s: float = 30.0) -> None:
        """Create the topic when missing, then load the latest cursor per connector."""
        await ensure_topics(self.settings, [self.topic], partitions=1, config=STATE_TOPIC_CONFIG)
        self.cursors = await self._load(load_timeout_s)
        log.info("loaded %d connector cursor(s) from %s", len(self.cursors), self.topic)

    async def _load(self, timeout_s: float) -> dict[str, Cursor]:
        consumer = AIOKafkaConsumer(
            **self.settings.client_kwargs(),
            client_id="crisiswatch-connector-state",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        cursors: dict[str, Cursor] = {}
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            deadline = time.monotonic() + timeout_s
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    msg = (
                        f"reading {self.topic} timed out after {timeout_s:.0f}s "
                        f"(at offset {await consumer.position(tp)} of {end})"
                    )
                    raise TimeoutError(msg)
                batch = await consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    if record.key is None:
                        continue
                    name = record.key.decode("utf-8", "replace")
                    if record.value is None:
                        cursors.pop(name, None)
                        continue
                    try:
                        cursors[name] = _decode_cursor(record.value)
                    except ValueError as exc:
                        log.error(
                            "ignoring unreadable cursor for %s at %s[0]@%d: %s",
                            name,
                            self.topic,
                            record.offset,
                            exc,
                        )
        finally:
            await consumer.stop()
        return cursors

    def get(self, name: str) -> Cursor:
        return self.cursors.get(name)

    async def save(self, name: str, cursor: Cursor) -> None:
        value = orjson.dumps(dict(cursor) if cursor is not None else None)
        task = await self._publisher.send(self.topic, name.encode("utf-8"), value)
        await task
        self.cursors[name] = cursor


def _decode_cursor(raw: bytes) -> Cursor:
    try:
        value: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"cursor is not JSON: {exc}"
        raise ValueError(msg) from None
    if value is not None and not isinstance(value, dict):
        msg = f"cursor must be a JSON object or null; got {type(value).__name__}"
        raise ValueError(msg)
    return value
