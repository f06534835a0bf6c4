"""The worker's log lines are written by a thread of their own, not by the event loop.

Every alert is logged (``streams.app``).  Written on the event loop, each line
was a ``write`` to stdout, and a write lets go of the GIL: faust's consumer
thread took it, and the loop waited to get it back.  At 31,500 posts/s a line
took 83 us at the median (112 us on average, 13 us on an idle machine), about
1 ms of every matches partition's sweep at a boundary, which the alerts of the
partitions swept after it waited out.  Through a queue the loop only formats
the message and enqueues it (about 10 us); the lines keep their order, and
``stop`` (also run at exit) writes what is still queued.

The queue is bounded (``MAX_QUEUED`` lines).  When the output blocks (a log
driver that stalls, a full pipe), lines beyond that are dropped and counted
(``on_drop``: the worker's ``crisiswatch_log_lines_dropped_total``), and a
warning saying how many goes into the log ahead of the next line that fits:
memory stays bounded and the event loop never waits for the log's output.
"""

from __future__ import annotations

import atexit
import logging
import queue
from collections.abc import Callable
from logging.handlers import QueueHandler, QueueListener

MAX_QUEUED = 10_000
"""Lines waiting for the writer thread beyond which new lines are dropped (and counted)."""


class _Enqueue(QueueHandler):
    """Queues each record, formatted; drops (and counts) records while ``limit`` wait."""

    def __init__(
        self, q: queue.SimpleQueue[logging.LogRecord], limit: int, on_drop: Callable[[], None]
    ) -> None:
        super().__init__(q)
        self.limit = limit
        self.on_drop = on_drop
        self.dropped = 0
        """Records dropped since the last warning about them was queued."""

    def emit(self, record: logging.LogRecord) -> None:
        # called with the handler's lock held: one thread at a time counts and queues
        q = self.queue
        if q.qsize() >= self.limit:  # type: ignore[attr-defined]
            self.dropped += 1
            self.on_drop()
            return
        if self.dropped:
            self.note_dropped()
        super().emit(record)

    def note_dropped(self) -> None:
        """Queue a warning saying how many lines were dropped (if any), the count reset."""
        n, self.dropped = self.dropped, 0
        if n:
            note = logging.LogRecord(
                __name__,
                logging.WARNING,
                __file__,
                0,
                "%d log lines dropped: the log's output was blocked with %d lines waiting",
                (n, self.limit),
                None,
            )
            self.enqueue(self.prepare(note))

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = super().prepare(record)  # the message is formatted here, args dropped
        # () rather than None: faust's formatter (mode's) turns None into (None,), and
        # "message" % (None,) fails
        record.args = ()
        return record


class BackgroundLog:
    """The root logger's handlers, moved behind a queue and a writer thread."""

    def __init__(
        self,
        root: logging.Logger,
        limit: int = MAX_QUEUED,
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.root = root
        self.handlers = list(root.handlers)
        self.queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.front = _Enqueue(self.queue, limit, on_drop)
        self.listener = QueueListener(self.queue, *self.handlers, respect_handler_level=True)
        self.running = False

    def start(self) -> None:
        for handler in self.handlers:
            self.root.removeHandler(handler)
        self.root.addHandler(self.front)
        self.listener.start()
        self.running = True
        atexit.register(self.stop)

    def stop(self) -> None:
        """Write what is queued, stop the thread and give the handlers back (idempotent)."""
        if not self.running:
            return
        self.running = False
        self.root.removeHandler(self.front)
        with self.front.lock:  # type: ignore[union-attr]
            self.front.note_dropped()
        self.listener.stop()  # the lines queued before this are written first
        for handler in self.handlers:
            self.root.addHandler(handler)
        atexit.unregister(self.stop)


def log_in_background(
    root: logging.Logger | None = None,
    *,
    limit: int = MAX_QUEUED,
    on_drop: Callable[[], None] = lambda: None,
) -> BackgroundLog | None:
    """Move ``root``'s handlers (default: the root logger's) behind a queue of at most
    ``limit`` lines (``on_drop()`` for each line dropped); None when it has none, or they
    already are."""
    root = logging.getLogger() if root is None else root
    if not root.handlers or any(isinstance(h, QueueHandler) for h in root.handlers):
        return None
    background = BackgroundLog(root, limit, on_drop)
    background.start()
    return background
