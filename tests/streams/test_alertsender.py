"""``AlertSender.settle``: every alert sent before it returns is acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from streams.alertsender import AlertSender


class FakeProducer:
    """Records sends; each acknowledgement is a future the test resolves."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.acks: list[asyncio.Future[None]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Awaitable[Any]:
        self.sent.append((topic, key, value))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


async def test_send_waits_for_start_and_settle_waits_for_every_ack() -> None:
    producer = FakeProducer()
    sender = AlertSender(lambda: producer, "p.alerts")
    early = asyncio.create_task(sender.send(b"acme", b"1"))
    await asyncio.sleep(0)
    assert producer.sent == []  # not started yet: the send waits
    await sender.start()
    await early
    assert producer.sent == [("p.alerts", b"acme", b"1")]

    settled = asyncio.create_task(sender.settle())
    await asyncio.sleep(0)
    # an alert sent while settle waits is covered by the same settle
    await sender.send(b"zhongyuan", b"2")
    producer.acks[0].set_result(None)
    await asyncio.sleep(0)
    assert not settled.done()
    producer.acks[1].set_result(None)
    await asyncio.wait_for(settled, 1)
    assert sender.unsettled == []
    await sender.stop()
    assert producer.stopped


async def test_settle_raises_a_failed_send() -> None:
    producer = FakeProducer()
    sender = AlertSender(lambda: producer, "p.alerts")
    await sender.start()
    await sender.send(b"acme", b"1")
    producer.acks[0].set_exception(RuntimeError("broker gone"))
    with pytest.raises(RuntimeError, match="broker gone"):
        await sender.settle()
