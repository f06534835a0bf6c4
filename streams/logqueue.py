"""The worker's log lines are written by a thread of their own, not by the event loop.

Every alert is logged (``streams.app``).  Written on the event loop, each line
was a ``write`` to stdout, and a write lets go of the GIL: faust's consumer
thread took it, and the loop waited to get it back.  At 31,500 posts/s a line
took 83 us at the median (112 us on average, 13 us on an idle machine), about
1 ms of every matches partition's sweep at a boundary, which the alerts of the
partitions swept after it waited out.  Through a queue the loop only formats
the message and enqueues it (about 10 us); the lines keep their order, and
``stop`` (also run at exit) writes what is still queued.
"""

from __future__ import annotations

import atexit
import logging
import queue
from logging.handlers import QueueHandler, QueueListener


class _Enqueue(QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = super().prepare(record)  # the message is formatted here, args dropped
        # () rather than None: faust's formatter (mode's) turns None into (None,), and
        # "message" % (None,) fails
        record.args = ()
        return record


class BackgroundLog:
    """The root logger's handlers, moved behind a queue and a writer thread."""

    def __init__(self, root: logging.Logger) -> None:
        self.root = root
        self.handlers = list(root.handlers)
        self.queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.front = _Enqueue(self.queue)
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
        self.listener.stop()  # the lines queued before this are written first
        for handler in self.handlers:
            self.root.addHandler(handler)
        atexit.unregister(self.stop)


def log_in_background(root: logging.Logger | None = None) -> BackgroundLog | None:
    """Move ``root``'s handlers (default: the root logger's) behind a queue; None when it
    has none, or they already are."""
    root = logging.getLogger() if root is None else root
    if not root.handlers or any(isinstance(h, QueueHandler) for h in root.handlers):
        return None
    background = BackgroundLog(root)
    background.start()
    return background
