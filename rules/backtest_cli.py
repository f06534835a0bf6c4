"""``crisiswatch backtest --rules DIR [--out FILE] [--lateness 60s] POSTS``.

Runs the same engine as the worker over a Posts file (JSON Lines, ``.gz``
accepted, ``-`` = stdin) in the order given and writes Alert events as JSON
Lines.  Bad lines are counted and reported, never fatal.  Exit 0, or 2 on bad
rules, bad arguments or unreadable input (a truncated or corrupt ``.gz``: the
error and the number of lines read are reported on stderr, and the events of
the lines before it are still written).  The wall clock is read here only to report progress
and throughput; it never reaches a decision.
"""

from __future__ import annotations

import argparse
import gzip
import io
import re
import sys
import time
import zlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO

import orjson

from rules.errors import InvalidPost, RuleError
from rules.incidents import ESCALATED, OPENED, RESOLVED
from rules.model import RuleSet
from rules.post import decode_post

if TYPE_CHECKING:
    from rules.engine import Engine

SHOW_BAD_LINES = 20
"""Bad lines reported one by one; beyond that only counted."""
PROGRESS_EVERY_S = 2.0
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)\Z")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``30s`` / ``10m`` / ``24h`` / ``7d`` / ``500ms`` -> milliseconds; ValueError otherwise."""
    m = _DURATION.match(text.strip())
    if m is None:
        msg = f"bad duration {text!r} (expected a number with a unit: ms, s, m, h or d, e.g. 60s)"
        raise ValueError(msg)
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", required=True, metavar="DIR", help="directory of brand rules")
    parser.add_argument("--out", metavar="FILE", help="write alert events here (default stdout)")
    parser.add_argument(
        "--lateness", default="60s", metavar="DURATION", help="allowed lateness (default 60s)"
    )
    parser.add_argument(
        "--progress", action="store_true", help="report progress on stderr even when not a TTY"
    )
    parser.add_argument("posts", metavar="POSTS", help="Posts JSON Lines file (.gz ok, - = stdin)")


def open_posts(path: str) -> BinaryIO:
    """The Posts file as bytes, gunzipped when it is gzip (by magic number)."""
    raw: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    return buffered


def read_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every non-blank line."""
    for number, line in enumerate(stream, start=1):
        stripped = line.strip()
        if stripped:
            yield number, stripped


class Reporter:
    """Bad-line reports, progress and the final summary, on stderr."""

    def __init__(self, err: IO[str], progress: bool, source: str = "-") -> None:
        self.err = err
        self.source = source
        """The POSTS argument, for error messages."""
        self.progress = progress
        self.bad = 0
        self.started = time.monotonic()
        self._last = self.started

    def bad_line(self, number: int, reason: str, detail: str) -> None:
        self.bad += 1
        if self.bad <= SHOW_BAD_LINES:
            self.err.write(f"line {number}: {reason}: {detail}\n")

    def tick(self, posts: int) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            rate = posts / max(now - self.started, 1e-9)
            self.err.write(f"backtest: {posts:,} posts, {rate:,.0f} posts/s\n")
            self.err.flush()

    def summary(self, stats: Any) -> None:
        if self.bad > SHOW_BAD_LINES:
            self.err.write(f"... and {self.bad - SHOW_BAD_LINES} more bad lines\n")
        elapsed = max(time.monotonic() - self.started, 1e-9)
        ev = stats.events
        self.err.write(
            f"backtest: {stats.posts + self.bad:,} posts read, {self.bad:,} bad lines, "
            f"{stats.matched:,} posts matched, {stats.late:,} late, "
            f"{stats.duplicates:,} duplicates; incidents: {ev[OPENED]:,} opened, "
            f"{ev[ESCALATED]:,} escalated, {ev[RESOLVED]:,} resolved; "
            f"{stats.posts / elapsed:,.0f} posts/s\n"
        )


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        lateness_ms = parse_duration_ms(args.lateness)
    except ValueError as exc:
        err.write(f"crisiswatch backtest: --lateness: {exc}\n")
        return 2
    try:
        ruleset = _load(args.rules)
    except RuleError as exc:
        for problem in exc.problems:
            err.write(f"{problem}\n")
        return 2
    try:
        stream = open_posts(args.posts)
    except OSError as exc:
        err.write(f"crisiswatch backtest: cannot read POSTS {args.posts!r}: {exc.strerror}\n")
        return 2
    try:
        out: IO[bytes] = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115
    except OSError as exc:
        err.write(f"crisiswatch backtest: cannot write --out {args.out!r}: {exc.strerror}\n")
        return 2
    try:
        return _replay(
            ruleset, lateness_ms, stream, out, Reporter(err, _wants_progress(args), args.posts)
        )
    finally:
        if args.out:
            out.close()
        if stream is not sys.stdin.buffer:
            stream.close()


def _load(directory: str) -> RuleSet:
    from rules.loader import load_rules

    return load_rules(directory)


def _wants_progress(args: argparse.Namespace) -> bool:
    return bool(args.progress) or sys.stderr.isatty()


def _replay(
    ruleset: RuleSet, lateness_ms: int, stream: BinaryIO, out: IO[bytes], report: Reporter
) -> int:
    from rules.engine import Engine, batch_gc

    engine = Engine(ruleset, lateness_ms=lateness_ms)
    with batch_gc():
        return _run(engine, stream, out, report)


def _run(engine: Engine, stream: BinaryIO, out: IO[bytes], report: Reporter) -> int:
    dumps = orjson.dumps
    write = out.write
    failed = False
    number = 0
    try:
        for number, line in read_lines(stream):
            try:
                post = decode_post(line)
            except InvalidPost as exc:
                report.bad_line(number, exc.reason, exc.detail)
                continue
            for event in engine.process(post):
                write(dumps(event.to_cloudevent()) + b"\n")
            if number % 4096 == 0:
                report.tick(engine.stats.posts)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        report.err.write(
            f"crisiswatch backtest: reading POSTS {report.source!r} failed after line {number:,} "
            f"(the input is truncated or corrupt; expected complete JSON Lines, .gz ok): "
            f"{type(exc).__name__}: {exc}\n"
        )
        failed = True
    for event in engine.finish():
        write(dumps(event.to_cloudevent()) + b"\n")
    out.flush()
    report.summary(engine.stats)
    return 2 if failed else 0
