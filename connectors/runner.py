"""Drive several Sources concurrently: fetch -> publish -> dead-letter -> checkpoint -> wait.

For each source the loop is:

1. ``batch = await source.fetch(cursor)``;
2. publish ``batch.posts`` and wait until Kafka acknowledged every one;
3. dead-letter ``batch.rejected`` (stage ``connector:<name>``);
4. checkpoint ``batch.cursor``, only now that everything before it is acked;
5. wait ``batch.wait_s`` (measured from the start of the fetch).

A retriable ``SourceError`` backs off exponentially with full jitter (capped),
or for ``retry_after_s`` when the server said so; a non-retriable one stops
that source and the others go on.  ``stop()`` (SIGTERM/SIGINT) lets each
source finish the batch in hand, checkpoint it, and return: restarted from its
checkpoint a source neither skips nor repeats a post.

A source with a true ``exhausted`` attribute (a file replay at end of input)
is finished: the runner stops it after its last batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from connectors.base import Batch, Cursor, Source, SourceError
from connectors.checkpoint import CheckpointStore
from connectors.metrics import ConnectorMetrics
from connectors.publisher import Publisher

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SourceOutcome:
    """How one source's loop ended."""

    name: str
    """The connector name."""
    produced: int
    """Posts acknowledged by Kafka."""
    rejected: int
    """Items sent to the dead-letter topic."""
    state: str
    """``exhausted`` (end of input), ``stopped`` (shutdown) or ``failed`` (fatal error)."""
    error: str | None = None
    """The fatal error's message when ``state == 'failed'``."""


def backoff_delay_s(
    attempt: int, *, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return rng() * min(cap_s, base_s * 2 ** max(0, attempt - 1))


class Runner:
    """Runs Sources until they are exhausted, fail fatally, or ``stop()`` is called."""

    def __init__(
        self,
        sources: Sequence[Source],
        publisher: Publisher,
        checkpoints: CheckpointStore,
        metrics: ConnectorMetrics,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock_s: Callable[[], float] = time.time,
        monotonic_s: Callable[[], float] = time.monotonic,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
    ) -> None:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            msg = f"connector names must be unique (they key the checkpoints); repeated: {dupes}"
            raise ValueError(msg)
        self.sources = list(sources)
        self.publisher = publisher
        self.checkpoints = checkpoints
        self.metrics = metrics
        self._sleep = sleep
        self._rng = rng
        self._clock_s = clock_s
        self._monotonic_s = monotonic_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask every loop to finish its current batch, checkpoint and return."""
        if not self._stopping.is_set():
            log.info("stopping connectors: finishing the batches in hand")
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_for_stop(self) -> None:
        """Return once ``stop()`` was called."""
        await self._stopping.wait()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT call ``stop()`` (graceful shutdown)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)

    async def _pause(self, seconds: float) -> None:
        """Sleep via the injected function, waking early when stop() is called."""
        if seconds <= 0 or self.stopping:
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, stopper):
                if not fut.done():
                    fut.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fut

    # ------------------------------------------------------------ loops

    async def run(self) -> list[SourceOutcome]:
        """Run every source concurrently; returns one outcome per source, in order."""
        results = await asyncio.gather(*(self.run_source(s) for s in self.sources))
        await self.publisher.flush()
        return list(results)

    async def run_source(self, source: Source) -> SourceOutcome:
        name, kind = source.name, source.kind
        stage = f"connector:{name}"
        cursor = self.checkpoints.get(name)
        produced = rejected = attempt = 0
        log.info("connector %s (%s) starting from cursor %s", name, kind, cursor)
        state, error = "stopped", None
        try:
            while not self.stopping:
                started = self._monotonic_s()
                try:
                    batch = await self._fetch_or_stop(source, cursor)
                except SourceError as exc:
                    self.metrics.errors.labels(name, exc.kind).inc()
                    if not exc.retriable:
                        log.error("connector %s stopped: %s (%s)", name, exc, exc.kind)
                        state, error = "failed", str(exc)
                        break
                    attempt += 1
                    delay = backoff_delay_s(
                        attempt, base_s=self.backoff_base_s, cap_s=self.backoff_cap_s, rng=self._rng
                    )
                    if exc.retry_after_s is not None:
                        delay = max(delay, exc.retry_after_s)
                    self.metrics.reconnects.labels(name).inc()
                    log.warning(
                        "connector %s: %s (%s); retry %d in %.1fs",
                        name,
                        exc,
                        exc.kind,
                        attempt,
                        delay,
                    )
                    await self._pause(delay)
                    continue
                if batch is None:
                    break
                attempt = 0
                await self._deliver(source, batch, stage)
                produced += len(batch.posts)
                rejected += len(batch.rejected)
                cursor = batch.cursor
                if getattr(source, "exhausted", False):
                    state = "exhausted"
                    break
                remaining = batch.wait_s - (self._monotonic_s() - started)
                await self._pause(remaining)
        finally:
            with contextlib.suppress(Exception):
                await source.close()
        log.info("connector %s %s: %d posts produced, %d rejected", name, state, produced, rejected)
        return SourceOutcome(name, produced, rejected, state, error)

    async def _fetch_or_stop(self, source: Source, cursor: Cursor) -> Batch | None:
        """The next batch, or None when stop() came first (the fetch is cancelled: the
        cursor has not moved, so nothing is lost)."""
        fetch = asyncio.ensure_future(source.fetch(cursor))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            fetch.cancel()
            raise
        finally:
            stopper.cancel()
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
            return None
        return fetch.result()

    async def _deliver(self, source: Source, batch: Batch, stage: str) -> None:
        name, kind = source.name, source.kind
        self.metrics.last_success.labels(name).set(self._clock_s())
        if batch.posts:
            self.metrics.fetched.labels(name, kind).inc(len(batch.posts))
            await self.publisher.publish_batch(batch.posts)
            self.metrics.produced.labels(name, kind).inc(len(batch.posts))
        newest_ms = batch.newest_event_ms
        if newest_ms is None and batch.posts:
            newest_ms = max(p.created_at_ms for p in batch.posts)
        if newest_ms is not None:
            self.metrics.newest_event.labels(name).set(newest_ms / 1000)
        for item in batch.rejected:
            await self.publisher.dead_letter(item, stage=stage)
            self.metrics.rejected.labels(name, ConnectorMetrics.reason_label(item.reason)).inc()
        await self.checkpoints.save(name, batch.cursor)
