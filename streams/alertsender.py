"""The detect stage's alerts, on a Kafka producer of their own.

aiokafka keeps one produce request in flight per broker.  On faust's producer
the alerts shared that one request with the state write-backs (up to 512 kB
per changelog partition each), so an alert could wait behind a write-back's
request.  Here they have their own.

Two producers give no order between an alert and the changelog: a state that
records an incident as open could reach the changelog before the alert that
opened it, and a crash in between would lose that alert (the replay finds the
incident already open).  So the write-back calls ``settle`` before it writes
states: every alert sent until then is acknowledged by the broker first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class _Producer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Awaitable[Any]: ...


class AlertSender:
    """Send alerts; ``settle()`` waits until every alert sent so far is acknowledged."""

    def __init__(self, make_producer: Callable[[], _Producer], topic: str) -> None:
        self.make_producer = make_producer
        """Called by ``start``: aiokafka clients are made inside the running loop."""
        self.producer: _Producer | None = None
        self.topic = topic
        self.ready = asyncio.Event()
        self.unsettled: list[Awaitable[Any]] = []
        """Acknowledgements not yet awaited by ``settle``."""

    async def start(self) -> None:
        producer = self.make_producer()
        await producer.start()
        self.producer = producer
        self.ready.set()

    async def stop(self) -> None:
        self.ready.clear()
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()  # sends what is buffered first

    async def send(self, key: bytes, value: bytes) -> None:
        while self.producer is None:
            await self.ready.wait()
        self.unsettled.append(await self.producer.send(self.topic, value=value, key=key))

    async def settle(self) -> None:
        """Return once every alert sent before (or while) this runs is acknowledged;
        raises the send error of one that failed."""
        while self.unsettled:
            acks, self.unsettled = self.unsettled, []
            await asyncio.gather(*acks)
