"""File replay: a Source that reads Posts from JSON Lines or CSV.

- ``-`` is stdin; a ``.gz`` file is decompressed;
- CSV columns map to Post fields with ``--csv-map id=tweet_id,text=body,created_at=ts``
  (nested fields as ``author.handle=user``, ``metrics.likes=likes``); unmapped
  columns named like a Post field are used as they are; an all-digit
  ``created_at`` is read as Unix seconds (or milliseconds when > 10^11);
- pacing: as fast as possible, ``rate_per_s`` posts per second, or ``speed``
  times real time, keeping the gaps between the posts' event times; the pacing
  is returned as ``Batch.wait_s``, the source itself never sleeps;
- cursor ``{"line": N}``: N input records consumed (lines for JSON Lines, data
  rows for CSV); a restarted replay skips exactly those;
- a bad line becomes a ``Rejected`` whose detail names the file and line.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import sys
from collections.abc import Iterator, Mapping
from typing import IO, Any, cast

import orjson

from connectors.base import Batch, Cursor, Rejected
from rules.errors import InvalidPost
from rules.model import Post
from rules.post import decode_post, format_rfc3339_ms, post_from_dict

_INT_FIELDS = (
    "author.followers",
    "metrics.likes",
    "metrics.reposts",
    "metrics.replies",
    "metrics.views",
)
_POST_FIELDS = (
    "id", "source", "text", "created_at", "lang", "url", "reply_to", "ingested_at",
    "author.id", "author.handle", *_INT_FIELDS,
)  # fmt: skip
SPEED_BATCH_SPAN_S = 0.05
"""With ``speed``, posts whose replay times fall within this span go out together."""

Item = tuple[int, Post | Rejected]
"""(1-based physical line number, what the line became)."""


def parse_csv_map(text: str) -> dict[str, str]:
    """``id=tweet_id,text=body`` -> {post field: column}; raises ValueError naming the bad part."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = part.partition("=")
        field, column = field.strip(), column.strip()
        if not sep or not field or not column:
            msg = f"--csv-map entry {part!r} must be FIELD=COLUMN (e.g. id=tweet_id)"
            raise ValueError(msg)
        if field not in _POST_FIELDS:
            expected = ", ".join(_POST_FIELDS)
            msg = f"--csv-map field {field!r} is not a Post field (expected one of {expected})"
            raise ValueError(msg)
        mapping[field] = column
    return mapping


def _csv_timestamp(value: str) -> str:
    if value.isdigit():
        n = int(value)
        return format_rfc3339_ms(n if n > 10**11 else n * 1000)
    return value


def row_to_dict(
    row: Mapping[str, str | None], mapping: Mapping[str, str], default_source: str
) -> dict[str, Any]:
    """One CSV row -> a Post JSON object (not yet validated)."""
    obj: dict[str, Any] = {}
    for field in _POST_FIELDS:
        column = mapping.get(field, field)
        value = row.get(column)
        if value is None or value == "":
            continue
        converted: Any = value
        if field in _INT_FIELDS:
            try:
                converted = int(value)
            except ValueError:
                reason = f"wrong_type:{field}"
                detail = f"column {column!r} ({field}) must be an integer; got {value!r}"
                raise InvalidPost(reason, detail) from None
        elif field in ("created_at", "ingested_at"):
            converted = _csv_timestamp(value)
        head, dot, tail = field.partition(".")
        if dot:
            obj.setdefault(head, {})[tail] = converted
        else:
            obj[field] = converted
    obj.setdefault("source", default_source)
    return obj


class ReplaySource:
    """Replays a Posts file (JSON Lines or CSV) as a Source."""

    kind = "replay"

    def __init__(
        self,
        name: str,
        path: str,
        *,
        fmt: str = "auto",
        csv_map: Mapping[str, str] | None = None,
        rate_per_s: float | None = None,
        speed: float | None = None,
        batch_size: int = 500,
        default_source: str = "replay",
        stdin: IO[bytes] | None = None,
    ) -> None:
        if rate_per_s is not None and speed is not None:
            msg = "replay takes --rate or --speed, not both"
            raise ValueError(msg)
        if rate_per_s is not None and rate_per_s <= 0:
            msg = f"--rate must be > 0 posts/s; got {rate_per_s}"
            raise ValueError(msg)
        if speed is not None and speed <= 0:
            msg = f"--speed must be > 0 (x real time); got {speed}"
            raise ValueError(msg)
        if fmt == "auto":
            fmt = "csv" if path.removesuffix(".gz").endswith(".csv") else "jsonl"
        if fmt not in ("jsonl", "csv"):
            msg = f"replay format must be jsonl or csv; got {fmt!r}"
            raise ValueError(msg)
        self.name = name
        self.path = path
        self.fmt = fmt
        self.csv_map = dict(csv_map or {})
        self.rate_per_s = rate_per_s
        self.speed = speed
        self.batch_size = max(1, int(rate_per_s / 10) if rate_per_s else batch_size)
        self.batch_size = min(self.batch_size, batch_size)
        self.default_source = default_source
        self._stdin = stdin
        self._handle: IO[bytes] | None = None
        self._items: Iterator[tuple[int, Post | Rejected | None]] | None = None
        self._consumed = 0
        """Records consumed into batches already returned."""
        self._read = 0
        """Records read from the file (>= _consumed: includes the lookahead)."""
        self._lookahead: list[tuple[int, Post | Rejected | None]] = []
        self.exhausted = False

    # ------------------------------------------------------------ reading

    def _open(self) -> None:
        self.close_sync()
        if self.path == "-":
            raw: IO[bytes] = self._stdin or sys.stdin.buffer
        elif self.path.endswith(".gz"):
            raw = cast(IO[bytes], gzip.open(self.path, "rb"))  # noqa: SIM115
        else:
            raw = open(self.path, "rb")  # noqa: SIM115 - closed in close_sync
        self._handle = raw
        self._items = self._csv_items(raw) if self.fmt == "csv" else self._jsonl_items(raw)
        self._read = 0
        self._lookahead = []

    def _jsonl_items(self, raw: IO[bytes]) -> Iterator[tuple[int, Post | Rejected | None]]:
        for line_no, line in enumerate(raw, start=1):
            body = line.rstrip(b"\r\n")
            if not body.strip():
                yield line_no, None
                continue
            try:
                yield line_no, decode_post(body)
            except InvalidPost as exc:
                yield line_no, Rejected(exc.reason, f"{self.path}:{line_no}: {exc.detail}", body)

    def _csv_items(self, raw: IO[bytes]) -> Iterator[tuple[int, Post | Rejected | None]]:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        reader = csv.DictReader(text)
        for row in reader:
            line_no = reader.line_num
            payload = orjson.dumps(row)
            try:
                yield line_no, post_from_dict(row_to_dict(row, self.csv_map, self.default_source))
            except InvalidPost as exc:
                yield line_no, Rejected(exc.reason, f"{self.path}:{line_no}: {exc.detail}", payload)

    def _next(self) -> tuple[int, Post | Rejected | None] | None:
        if self._lookahead:
            return self._lookahead.pop(0)
        assert self._items is not None
        item = next(self._items, None)
        if item is not None:
            self._read += 1
        return item

    def _peek(self) -> tuple[int, Post | Rejected | None] | None:
        if not self._lookahead:
            assert self._items is not None
            item = next(self._items, None)
            if item is None:
                return None
            self._read += 1
            self._lookahead.append(item)
        return self._lookahead[0]

    def _seek(self, line: int) -> None:
        """Position so that the next record read is record ``line`` (0-based count)."""
        if self._items is None or line < self._consumed:
            if self._items is not None and self.path == "-":
                msg = f"cannot rewind stdin to record {line} (already at {self._consumed})"
                raise ValueError(msg)
            self._open()
            self._consumed = 0
        while self._consumed < line:
            if self._next() is None:
                break
            self._consumed += 1

    # ------------------------------------------------------------ Source

    def _read_batch(self, cursor: Cursor) -> Batch:
        start = int((cursor or {}).get("line", 0))
        self._seek(start)
        posts: list[Post] = []
        rejected: list[Rejected] = []
        first_ms: int | None = None
        while len(posts) + len(rejected) < self.batch_size:
            if self.speed is not None and first_ms is not None:
                nxt = self._peek()
                if nxt is not None and isinstance(nxt[1], Post):
                    span_s = (nxt[1].created_at_ms - first_ms) / 1000 / self.speed
                    if span_s > SPEED_BATCH_SPAN_S:
                        break
            item = self._next()
            if item is None:
                self.exhausted = True
                break
            self._consumed += 1
            what = item[1]
            if isinstance(what, Post):
                posts.append(what)
                if first_ms is None:
                    first_ms = what.created_at_ms
            elif isinstance(what, Rejected):
                rejected.append(what)
        if not self.exhausted and self._peek() is None:
            self.exhausted = True
        wait_s = 0.0
        if not self.exhausted:
            if self.rate_per_s is not None:
                wait_s = len(posts) / self.rate_per_s
            elif self.speed is not None and first_ms is not None:
                nxt = self._peek()
                if nxt is not None and isinstance(nxt[1], Post):
                    wait_s = max(0.0, (nxt[1].created_at_ms - first_ms) / 1000 / self.speed)
        newest = max((p.created_at_ms for p in posts), default=None)
        return Batch(
            posts=tuple(posts),
            cursor={"line": self._consumed},
            rejected=tuple(rejected),
            wait_s=wait_s,
            newest_event_ms=newest,
        )

    async def fetch(self, cursor: Cursor) -> Batch:
        if self.path == "-":
            return await asyncio.to_thread(self._read_batch, cursor)
        return self._read_batch(cursor)

    def close_sync(self) -> None:
        if self._handle is not None and self.path != "-":
            self._handle.close()
        self._handle = None
        self._items = None

    async def close(self) -> None:
        self.close_sync()
