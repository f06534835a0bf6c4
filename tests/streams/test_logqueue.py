"""The worker's log lines are written by a thread of their own, in order, all of them."""

from __future__ import annotations

import io
import logging
import threading
import time

from mode.utils.logging import ExtensionFormatter

from streams.logqueue import log_in_background


class _Recording(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.threads: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.threads.add(threading.get_ident())


def test_lines_are_written_off_the_calling_thread_in_order_and_all_at_stop() -> None:
    logger = logging.Logger("crisiswatch-test-root", logging.INFO)
    recording = _Recording()
    # faust's own formatter (mode's), as the worker's handlers have
    recording.setFormatter(ExtensionFormatter(fmt="%(levelname)s %(name)s: %(message)s"))
    quiet = logging.StreamHandler(io.StringIO())
    quiet.setLevel(logging.ERROR)  # handler levels still apply behind the queue
    logger.addHandler(recording)
    logger.addHandler(quiet)

    background = log_in_background(logger)
    assert background is not None
    assert log_in_background(logger) is None  # already behind a queue
    for n in range(500):
        logger.info("alert %d of %s", n, "acme")
    logger.info("a literal 100% without arguments")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    background.stop()
    background.stop()  # idempotent (it also runs at exit)

    assert recording.lines[:500] == [
        f"INFO crisiswatch-test-root: alert {n} of acme" for n in range(500)
    ]
    assert recording.lines[500] == "INFO crisiswatch-test-root: a literal 100% without arguments"
    assert recording.lines[501].startswith("ERROR crisiswatch-test-root: failed")
    assert "ValueError: boom" in recording.lines[501]  # the traceback travels with it
    assert recording.threads and threading.get_ident() not in recording.threads
    assert "alert" not in quiet.stream.getvalue() and "boom" in quiet.stream.getvalue()
    # stopped: the handlers are the logger's own again, written on the calling thread
    assert set(logger.handlers) == {recording, quiet}
    logger.info("after")
    assert recording.lines[-1].endswith("after") and threading.get_ident() in recording.threads


def test_a_logger_without_handlers_is_left_alone() -> None:
    logger = logging.Logger("crisiswatch-test-empty")
    assert log_in_background(logger) is None
    assert logger.handlers == []


class _Stuck(_Recording):
    """A handler whose output blocks (a stalled log driver) until ``unblocked`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.unblocked = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.writing.set()
        self.unblocked.wait(10)
        super().emit(record)


def test_a_blocked_output_drops_lines_beyond_the_limit_counts_them_and_says_so() -> None:
    logger = logging.Logger("crisiswatch-test-stuck", logging.INFO)
    stuck = _Stuck()
    stuck.setFormatter(ExtensionFormatter(fmt="%(levelname)s %(message)s"))
    logger.addHandler(stuck)
    dropped: list[int] = []
    background = log_in_background(logger, limit=20, on_drop=lambda: dropped.append(1))
    assert background is not None
    try:
        logger.info("line 0")
        assert stuck.writing.wait(5)  # the writer thread holds line 0, blocked
        for n in range(1, 31):  # 20 fit in the queue, 10 do not
            logger.info("line %d", n)
        assert len(dropped) == 10
        stuck.unblocked.set()
        deadline = time.monotonic() + 5
        while background.queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)
        logger.info("line 31")  # once there is room: the warning, then the line
    finally:
        stuck.unblocked.set()
        background.stop()
    assert stuck.lines == [
        *(f"INFO line {n}" for n in range(21)),
        "WARNING 10 log lines dropped: the log's output was blocked with 20 lines waiting",
        "INFO line 31",
    ]


def test_lines_dropped_at_the_end_are_reported_at_stop() -> None:
    logger = logging.Logger("crisiswatch-test-stuck-end", logging.INFO)
    stuck = _Stuck()
    logger.addHandler(stuck)
    background = log_in_background(logger, limit=3)
    assert background is not None
    logger.info("first")
    assert stuck.writing.wait(5)
    for n in range(5):
        logger.info("more %d", n)  # 3 queued, 2 dropped
    stuck.unblocked.set()
    background.stop()
    assert stuck.lines == ["first", "more 0", "more 1", "more 2", "2 log lines dropped: "
                           "the log's output was blocked with 3 lines waiting"]  # fmt: skip
