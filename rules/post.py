"""Decode and validate Post values against the Post contract (contracts.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from rules.errors import InvalidPost
from rules.model import Author, Post

MAX_POST_BYTES = 1_000_000
"""A post value larger than this is rejected (``too_large``)."""
_REQUIRED = ("id", "source", "text", "created_at")
_METRIC_KEYS = ("likes", "reposts", "replies", "views")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_ZERO = timedelta(0)
_MINUTES: dict[str, int] = {}
"""``YYYY-MM-DDTHH:MM`` -> ms since the epoch (UTC), for prefixes already parsed."""
_MINUTES_MAX = 4096
_LAST: list[tuple[str | None, int]] = [(None, 0), (None, 0)]
"""The last two timestamp strings parsed and their values, newer first."""


def _utc_shape(value: str, n: int) -> bool:
    """``value`` (of length ``n``) looks like ``...T10:00:03Z`` or ``...T10:00:03.120Z``."""
    return (n == 20 or (n == 24 and value[19] == ".")) and value[-1] == "Z" and value[16] == ":"


def parse_rfc3339_ms(value: str) -> int:
    """RFC 3339 timestamp -> ms since the epoch; raises ValueError when malformed.

    A busy stream repeats its timestamps (a partition's posts in a row share a
    second, or a millisecond), so the last two strings parsed are remembered
    (two: a post's ``created_at`` and ``ingested_at`` alternate).  Otherwise the
    common UTC shapes ``...T10:00:03Z`` and ``...T10:00:03.120Z`` take a fast
    path once their minute has been parsed the slow way (same result).
    """
    last = _LAST
    newer, older = last[0], last[1]  # (string, ms) pairs: each read whole, thread-safe
    if type(value) is str:
        if value == newer[0]:
            return newer[1]
        if value == older[0]:
            return older[1]
    n = len(value)
    utc_shape = _utc_shape(value, n)
    if utc_shape:
        minute = _MINUTES.get(value[:16])
        if minute is not None:
            sec = value[17:19]
            frac = value[20:23] if n == 24 else "0"
            if sec.isascii() and sec.isdigit() and frac.isascii() and frac.isdigit():
                seconds = int(sec)
                if seconds < 60:
                    ms = minute + seconds * 1000 + int(frac)
                    if type(value) is str:
                        last[1] = newer
                        last[0] = (value, ms)
                    return ms
    return _parse_slow(value, n, utc_shape)


def _parse_slow(value: str, n: int, utc_shape: bool) -> int:
    if not value or n > 40 or value[0] not in "0123456789":
        msg = f"not an RFC 3339 timestamp: {value[:40]!r}"
        raise ValueError(msg)
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        msg = f"timestamp has no UTC offset: {value!r}"
        raise ValueError(msg)
    ms = (dt - _EPOCH) // _MS
    if utc_shape and dt.utcoffset() == _ZERO:
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[value[:16]] = ms - dt.second * 1000 - dt.microsecond // 1000
    return ms


def format_rfc3339_ms(ts_ms: int) -> str:
    """ms since the epoch -> ``2026-11-27T10:00:03.120Z`` (ms only when non-zero)."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if ts_ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _opt_str(obj: dict[str, Any], key: str, where: str = "") -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        msg = f"wrong_type:{where}{key}"
        raise InvalidPost(
            msg,
            f"field '{where}{key}' must be a string; got {type(value).__name__}",
        )
    return value


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"wrong_type:{name}"
        raise InvalidPost(msg, f"field '{name}' must be an integer; got {type(value).__name__}")
    if not -(2**63) <= value < 2**63:
        msg = f"out_of_range:{name}"
        raise InvalidPost(msg, f"field '{name}' is out of range: {value}")
    return value


def _check_required(obj: dict[str, Any]) -> None:
    """Raise for the first required field that is missing or not a string."""
    for key in _REQUIRED:
        if key not in obj or obj[key] is None:
            msg = f"missing_field:{key}"
            raise InvalidPost(msg, f"required field '{key}' is missing")
        if not isinstance(obj[key], str):
            msg = f"wrong_type:{key}"
            raise InvalidPost(
                msg,
                f"field '{key}' must be a string; got {type(obj[key]).__name__}",
            )


def post_from_dict(obj: Any) -> Post:
    """Validate a decoded JSON value as a Post; raises InvalidPost."""
    if not isinstance(obj, dict):
        msg = "not_an_object"
        raise InvalidPost(msg, f"a post must be a JSON object; got {type(obj).__name__}")
    get = obj.get
    # checked just below (cast: mypy cannot narrow through the chained type tests)
    post_id, source = cast(str, get("id")), cast(str, get("source"))
    text, created_at = cast(str, get("text")), cast(str, get("created_at"))
    if not (
        type(post_id) is str and type(source) is str and type(text) is str
        and type(created_at) is str
    ):  # fmt: skip
        _check_required(obj)  # raises, unless they are subclasses of str
    if not post_id:
        msg = "empty_field:id"
        raise InvalidPost(msg, "field 'id' must not be empty")
    try:
        created_ms = parse_rfc3339_ms(created_at)
    except ValueError as exc:
        msg = "bad_timestamp:created_at"
        raise InvalidPost(msg, str(exc)) from None
    ingested_ms = None
    ingested = get("ingested_at")
    if ingested is not None:
        if type(ingested) is not str:
            _opt_str(obj, "ingested_at")  # raises unless a str subclass
        try:
            ingested_ms = parse_rfc3339_ms(ingested)
        except ValueError as exc:
            msg = "bad_timestamp:ingested_at"
            raise InvalidPost(msg, str(exc)) from None

    author = None
    raw_author = get("author")
    if raw_author is not None:
        if not isinstance(raw_author, dict):
            msg = "wrong_type:author"
            raise InvalidPost(
                msg,
                f"field 'author' must be an object; got {type(raw_author).__name__}",
            )
        author_id = raw_author.get("id")
        if type(author_id) is not str and author_id is not None:
            author_id = _author_id(author_id)
        handle = raw_author.get("handle")
        if type(handle) is not str and handle is not None:
            handle = _opt_str(raw_author, "handle", "author.")
        followers = raw_author.get("followers")
        if type(followers) is not int:
            followers = 0 if followers is None else _int(followers, "author.followers")
        elif not 0 <= followers < 2**63:
            followers = _int(followers, "author.followers")
        # positional: keyword arguments cost more, and this runs for every post
        author = Author(author_id, handle, max(0, followers))
    metrics: dict[str, int] = {}
    raw_metrics = get("metrics")
    if raw_metrics is not None:
        if not isinstance(raw_metrics, dict):
            msg = "wrong_type:metrics"
            raise InvalidPost(
                msg,
                f"field 'metrics' must be an object; got {type(raw_metrics).__name__}",
            )
        for key in _METRIC_KEYS:
            if raw_metrics.get(key) is not None:
                metrics[key] = _int(raw_metrics[key], f"metrics.{key}")
    extra = get("extra")
    if extra is not None and not isinstance(extra, dict):
        msg = "wrong_type:extra"
        raise InvalidPost(msg, f"field 'extra' must be an object; got {type(extra).__name__}")
    lang, url, reply_to = get("lang"), get("url"), get("reply_to")
    if not (
        (lang is None or type(lang) is str) and (url is None or type(url) is str)
        and (reply_to is None or type(reply_to) is str)
    ):  # fmt: skip
        # raise for the first that is not a string (str subclasses pass)
        lang, url = _opt_str(obj, "lang"), _opt_str(obj, "url")
        reply_to = _opt_str(obj, "reply_to")
    # positional, in field order (id, source, text, created_at_ms, created_at, lang, url,
    # author, metrics, reply_to, ingested_at_ms, extra): keywords cost more per post
    return Post(post_id, source, text, created_ms, created_at, lang, url, author, metrics,
                reply_to, ingested_ms, extra)  # fmt: skip


def _author_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        msg = "wrong_type:author.id"
        raise InvalidPost(
            msg,
            f"field 'author.id' must be a string; got {type(value).__name__}",
        )
    return str(value)


def decode_post(raw: bytes) -> Post:
    """Bytes of one Post value -> Post; raises InvalidPost with the contract's reason codes."""
    if len(raw) > MAX_POST_BYTES:
        msg = "too_large"
        raise InvalidPost(msg, f"post value is {len(raw)} bytes; the limit is {MAX_POST_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "invalid_utf8" if "utf-8" in str(exc).lower() else "invalid_json"
        raise InvalidPost(reason, f"value is not valid UTF-8 JSON: {exc}") from None
    return post_from_dict(obj)


def post_to_dict(post: Post) -> dict[str, Any]:
    """Post -> its contract JSON object (optional fields only when set)."""
    d: dict[str, Any] = {
        "id": post.id,
        "source": post.source,
        "text": post.text,
        "created_at": post.created_at,
    }
    if post.lang is not None:
        d["lang"] = post.lang
    if post.url is not None:
        d["url"] = post.url
    if post.author is not None:
        a: dict[str, Any] = {"followers": post.author.followers}
        if post.author.id is not None:
            a["id"] = post.author.id
        if post.author.handle is not None:
            a["handle"] = post.author.handle
        d["author"] = a
    if post.metrics:
        d["metrics"] = dict(post.metrics)
    if post.reply_to is not None:
        d["reply_to"] = post.reply_to
    if post.ingested_at_ms is not None:
        d["ingested_at"] = format_rfc3339_ms(post.ingested_at_ms)
    if post.extra is not None:
        d["extra"] = post.extra
    return d


def encode_post(post: Post) -> bytes:
    """Post -> UTF-8 JSON bytes of the contract."""
    return orjson.dumps(post_to_dict(post))
