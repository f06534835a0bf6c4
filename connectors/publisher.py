"""Publish Posts to Kafka: idempotent producer, acks=all, bounded in-flight, never drops.

``publish(post)`` waits while ``max_in_flight`` posts are unacknowledged
(back-pressure) and returns an awaitable that resolves when Kafka acknowledged
the post.  When the broker is unreachable a send keeps retrying, with backoff,
until it is acknowledged, so a source blocks instead of losing posts and
resumes when the broker returns.  aiokafka's idempotent producer retries a
batch with the same sequence numbers, so its own retries add no duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connectors.base import Rejected
from connectors.settings import KafkaSettings
from rules.deadletter import payload_fields
from rules.model import Post
from rules.post import encode_post, format_rfc3339_ms

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
ProducerFactory = Callable[[], AIOKafkaProducer]


def dead_letter_value(
    rejected: Rejected,
    *,
    stage: str,
    topic: str,
    received_at_ms: int,
    partition: int | None = None,
    offset: int | None = None,
) -> bytes:
    """The dead-letter JSON of contracts.md for one rejected item."""
    return orjson.dumps(
        {
            "reason": rejected.reason,
            "detail": rejected.detail,
            "stage": stage,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "received_at": format_rfc3339_ms(received_at_ms),
            **payload_fields(rejected.payload),
        }
    )


_PRODUCER_STATE_ERRORS = (
    "OutOfOrderSequenceNumber",
    "UnknownProducerId",
    "InvalidProducerEpoch",
    "ProducerFenced",
)
"""Idempotence state the producer cannot recover from in place: start a new producer."""


def _needs_new_producer(exc: BaseException) -> bool:
    return type(exc).__name__ in _PRODUCER_STATE_ERRORS


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or type(exc).__name__ in (
            "KafkaConnectionError",
            "KafkaTimeoutError",
            "NodeNotReadyError",
            "RequestTimedOutError",
            "NotLeaderForPartitionError",
            "LeaderNotAvailableError",
            "UnknownTopicOrPartitionError",
            "ProducerClosed",
        )
    return isinstance(exc, ConnectionError | asyncio.TimeoutError)


class Publisher:
    """Produces Posts to ``<prefix>.posts`` and dead letters to ``<prefix>.posts.dlq``.

    Batches are zstd-compressed by default: on posts like the benchmark's, zstd took
    1.95 us a post to compress against gzip's 10.3, and the worker 1.9 against 2.6 us a
    post to read them, for the same size (52 and 50 bytes a post from 244; BENCHMARKS.md,
    session 18).  Every Kafka client since 2.1 reads zstd.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        max_in_flight: int = 1000,
        compression_type: str = "zstd",
        linger_ms: int = 5,
        request_timeout_ms: int = 30_000,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        clock_s: Callable[[], float] = time.time,
        producer_factory: ProducerFactory | None = None,
    ) -> None:
        self.settings = settings
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._compression_type = compression_type
        self._linger_ms = linger_ms
        self._request_timeout_ms = request_timeout_ms
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._sleep = sleep
        self._clock_s = clock_s
        self._factory = producer_factory or self._default_producer
        self._producer: AIOKafkaProducer | None = None
        self._restart_lock = asyncio.Lock()
        self._pending: set[asyncio.Task[Any]] = set()
        self._replaced: dict[int, asyncio.Future[None]] = {}
        """Per live producer: resolved when it is replaced (its unacked sends move on)."""
        self.retries = 0
        """Sends retried after a retriable error (for tests and logs)."""

    def _default_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self.settings.client_kwargs(),
            client_id="crisiswatch-connector",
            acks="all",
            enable_idempotence=True,
            compression_type=self._compression_type,
            linger_ms=self._linger_ms,
            request_timeout_ms=self._request_timeout_ms,
            retry_backoff_ms=200,
            max_request_size=2_000_000,
        )

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, timeout_s: float | None = None) -> None:
        """Connect, retrying with backoff while the broker is unreachable.

        Raises the last KafkaError after ``timeout_s`` (None: keep trying).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        attempt = 0
        while True:
            producer = self._factory()
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                attempt += 1
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                delay = self._backoff(attempt)
                log.warning(
                    "Kafka at %s unreachable (%s); retrying in %.1fs",
                    self.settings.bootstrap,
                    exc,
                    delay,
                )
                await self._sleep(delay)
                continue
            self._producer = producer
            self._replaced[id(producer)] = asyncio.get_running_loop().create_future()
            return

    async def _replace_producer(self, broken: AIOKafkaProducer) -> None:
        """Swap in a fresh producer (new producer id); the broken one's pending sends fail
        with ProducerClosed and are retried on the new one."""
        async with self._restart_lock:
            if self._producer is not broken:
                return  # another send already replaced it
            self._producer = None
            signal = self._replaced.pop(id(broken), None)
            await self.start()
            if signal is not None and not signal.done():
                signal.set_result(None)

            old: Any = broken

            async def close_old() -> None:
                try:
                    await old.stop()
                except Exception as exc:  # it is broken; its sends are retried elsewhere
                    log.debug("closing the replaced producer: %r", exc)

            task = asyncio.create_task(close_old())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Wait until every post handed to ``publish`` is acknowledged (or failed)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def stop(self) -> None:
        """Flush, then close the producer."""
        await self.flush()
        if self._producer is not None:
            self._replaced.pop(id(self._producer), None)
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ sending

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self._backoff_cap_s, self._backoff_base_s * 2**attempt))

    async def _send_until_acked(self, topic: str, key: bytes | None, value: bytes | None) -> Any:
        attempt = 0
        while True:
            producer = self._producer
            if producer is None:
                if not self._restart_lock.locked():
                    msg = f"publisher is not started (sending to {topic})"
                    raise RuntimeError(msg)
                async with self._restart_lock:
                    continue
            replaced = self._replaced.get(id(producer))
            try:
                fut = await producer.send(topic, value=value, key=key)
                if replaced is not None and not fut.done():
                    await asyncio.wait({fut, replaced}, return_when=asyncio.FIRST_COMPLETED)
                    if not fut.done():
                        fut.cancel()
                        continue  # its producer was replaced: resend on the new one
                return fut.result()
            except Exception as exc:
                if _needs_new_producer(exc):
                    log.warning(
                        "producer state lost after an outage (%s); starting a new producer",
                        type(exc).__name__,
                    )
                    await self._replace_producer(producer)
                    continue
                if not _retriable(exc):
                    log.error("send to %s failed and cannot be retried: %r", topic, exc)
                    raise
                attempt += 1
                self.retries += 1
                delay = self._backoff(attempt)
                log.warning(
                    "send to %s failed (%s: %s); retry %d in %.2fs",
                    topic,
                    type(exc).__name__,
                    exc,
                    attempt,
                    delay,
                )
                await self._sleep(delay)

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> asyncio.Task[Any]:
        """Queue one record; waits for a free slot; the task resolves on ack."""
        await self._slots.acquire()
        task = asyncio.create_task(self._send_until_acked(topic, key, value))
        self._pending.add(task)

        def _done(t: asyncio.Task[Any]) -> None:
            self._pending.discard(t)
            self._slots.release()

        task.add_done_callback(_done)
        # let the task hand the record to the producer, keeping send order
        await asyncio.sleep(0)
        return task

    async def publish(self, post: Post) -> asyncio.Task[Any]:
        """Queue one post (key = id, value = Post JSON); resolves when Kafka acknowledged it."""
        return await self.send(
            self.settings.posts_topic, post.id.encode("utf-8"), encode_post(post)
        )

    async def publish_batch(self, posts: Iterable[Post]) -> None:
        """Publish posts in order; returns only when every one is acknowledged."""
        tasks = [await self.publish(post) for post in posts]
        if tasks:
            await asyncio.gather(*tasks)

    async def dead_letter(
        self,
        rejected: Rejected,
        *,
        stage: str,
        key: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        """Produce the dead letter for ``rejected`` to ``<prefix>.posts.dlq``; waits for the ack."""
        value = dead_letter_value(
            rejected,
            stage=stage,
            topic=topic or self.settings.posts_topic,
            received_at_ms=int(self._clock_s() * 1000),
            partition=partition,
            offset=offset,
        )
        task = await self.send(self.settings.dlq_topic, key, value)
        await task
