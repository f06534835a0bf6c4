"""Helpers shared by the platform connectors.

- ``html_to_text``: platform HTML (Mastodon content, RSS descriptions) -> plain text.
- ``option_secret``: credentials read from env vars named in options, wrapped in
  ``connectors.settings.Secret`` so they never print.
- ``retry_after_s`` / ``status_error``: HTTP status and rate-limit headers -> SourceError.
- ``Options``: typed, validated reading of a connector's options mapping.
- ``rejected`` / ``RecentIds``: Rejected items and a bounded de-duplication window.
(The aiohttp plumbing is in ``connectors.httpclient``.)
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC
from html.parser import HTMLParser
from typing import Any

import orjson

from connectors.base import FatalSourceError, Rejected, SourceError
from connectors.settings import ConfigError, Secret, secret_from_env
from rules.errors import InvalidPost
from rules.post import format_rfc3339_ms, parse_rfc3339_ms

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Returns the current time in seconds since the epoch (``time.time`` by default)."""


OptionError = ConfigError
"""Invalid connector options (raised by ``build``, at startup)."""


def option_secret(
    name: str, options: Mapping[str, Any], key: str, env: Mapping[str, str], *, required: bool
) -> Secret | None:
    """The credential in the env var whose *name* is ``options[key]`` (e.g. ``token_env``)."""
    var = options.get(key)
    if var is not None and (not isinstance(var, str) or not var):
        msg = f"connector {name!r}: option {key!r} must name an environment variable; got {var!r}"
        raise OptionError(msg)
    where = f"connector {name!r} (option {key!r})"
    return secret_from_env(env, var, where=where, required=required or var is not None)


def bearer(token: Secret | None) -> dict[str, str]:
    """``Authorization: Bearer`` headers, built per request so the token stays wrapped."""
    return {"Authorization": f"Bearer {token.reveal()}"} if token else {}


# ------------------------------------------------------------------- options


class Options:
    """Typed access to a connector's options; unknown keys are an error."""

    def __init__(self, name: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
        self.name = name
        self._options = options
        unknown = sorted(set(options) - set(known))
        if unknown:
            msg = (
                f"connector {name!r}: unknown option(s) {', '.join(unknown)} "
                f"(expected some of {', '.join(sorted(known))})"
            )
            raise OptionError(msg)

    def error(self, key: str, expected: str, value: Any) -> OptionError:
        return OptionError(
            f"connector {self.name!r}: option {key!r} must be {expected}; got {value!r}"
        )

    def get_str(self, key: str, default: str | None = None) -> str:
        value = self._options.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, "a non-empty string", value)
        return value

    def opt_str(self, key: str) -> str | None:
        return None if self._options.get(key) is None else self.get_str(key)

    def get_float(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self._options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.error(key, f"a number >= {minimum}", value)
        return float(value)

    def get_int(self, key: str, default: int, *, minimum: int = 1, maximum: int = 10**9) -> int:
        value = self._options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.error(key, f"an integer in [{minimum}, {maximum}]", value)
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._options.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._options.get(key, default)
        if value not in choices:
            raise self.error(key, f"one of {', '.join(choices)}", value)
        return str(value)

    def raw(self, key: str, default: Any = None) -> Any:
        return self._options.get(key, default)


# ---------------------------------------------------------------------- html

_BLOCK_TAGS = frozenset(
    {"p", "div", "li", "ul", "ol", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "tr"}
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """HTML -> plain text: tags dropped, entities decoded, link text kept, line breaks kept.

    ``<br>`` becomes a newline, block elements (``<p>``, ``<li>`` ...) a blank line;
    runs of spaces collapse, and at most one blank line separates paragraphs.
    """
    if "<" not in html and "&" not in html:
        return html.strip()
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    raw = "".join(parser.parts).replace("\r\n", "\n").replace("\xa0", " ")
    lines = [" ".join(line.split()) for line in raw.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


# ------------------------------------------------------------ http -> errors


def retry_after_s(headers: Mapping[str, str], now_s: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or a rate-limit reset header.

    ``x-rate-limit-reset`` (X) is an epoch second; ``x-ratelimit-reset`` (Reddit)
    is seconds from now. Returns None when no header says anything usable.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    value = lower.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - now_s)
    reset = lower.get("x-rate-limit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - now_s)
        except ValueError:
            pass
    reset = lower.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset))
        except ValueError:
            pass
    return None


def status_error(
    status: int, where: str, headers: Mapping[str, str], body: bytes, now_s: float
) -> SourceError:
    """An HTTP error status -> the SourceError the runner acts on.

    429 -> retriable, kind ``http_429``, with ``retry_after_s``; 5xx and 408 ->
    retriable; 401/403 -> FatalSourceError kind ``auth``; other 4xx -> fatal.
    """
    snippet = body[:200].decode("utf-8", "replace").strip()
    msg = f"{where}: HTTP {status}" + (f": {snippet}" if snippet else "")
    if status == 429:
        wait = retry_after_s(headers, now_s)
        return SourceError(f"{msg} (rate limited)", retry_after_s=wait, kind="http_429")
    if status >= 500:
        return SourceError(msg, retry_after_s=retry_after_s(headers, now_s), kind="http_5xx")
    if status == 408:
        return SourceError(msg, kind="timeout")
    if status in (401, 403):
        return FatalSourceError(f"{msg} (check the credentials)", kind="auth")
    return FatalSourceError(msg, kind=f"http_{status}")


def transport_error(where: str, exc: BaseException) -> SourceError:
    """A connection failure -> a retriable SourceError (``timeout`` or ``disconnect``)."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return SourceError(f"{where}: timed out", kind="timeout")
    return SourceError(
        f"{where}: connection failed: {type(exc).__name__}: {exc}", kind="disconnect"
    )


# ---------------------------------------------------------------- rejections


def rejected(exc: InvalidPost, payload: Any) -> Rejected:
    """A mapping failure -> Rejected, keeping the item's bytes."""
    if isinstance(payload, bytes):
        raw = payload
    elif isinstance(payload, str):
        raw = payload.encode("utf-8", "replace")
    else:
        try:
            raw = orjson.dumps(payload)
        except TypeError:
            raw = repr(payload).encode("utf-8", "replace")
    return Rejected(reason=exc.reason, detail=exc.detail, payload=raw)


def require_object(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else InvalidPost ``not_an_object``."""
    if not isinstance(value, Mapping):
        reason, detail = (
            "not_an_object",
            f"{what} must be a JSON object; got {type(value).__name__}",
        )
        raise InvalidPost(reason, detail)
    return value


def need(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` checked for presence and type, else InvalidPost naming the field."""
    if key not in obj or obj[key] is None:
        msg = f"missing_field:{where}{key}"
        raise InvalidPost(msg, f"required field '{where}{key}' is missing")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        msg = f"wrong_type:{where}{key}"
        raise InvalidPost(
            msg,
            f"field '{where}{key}' must be {expected}; got {type(value).__name__}: {value!r:.60}",
        )
    return value


def opt(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """Like ``need`` but None when missing."""
    if obj.get(key) is None:
        return None
    return need(obj, key, kind, where)


def count(obj: Mapping[str, Any], key: str) -> int | None:
    """A non-negative engagement count, or None when absent or not an integer."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return max(0, value)


def rfc3339(value: Any, field: str) -> tuple[str, int]:
    """Validate an RFC 3339 timestamp field -> (as given, ms since epoch)."""
    if not isinstance(value, str):
        raise InvalidPost(
            f"missing_field:{field}" if value is None else f"wrong_type:{field}",
            f"field '{field}' must be an RFC 3339 timestamp string; got {value!r:.60}",
        )
    try:
        return value, parse_rfc3339_ms(value)
    except ValueError as exc:
        msg = f"bad_timestamp:{field}"
        raise InvalidPost(msg, f"field '{field}': {exc}") from None


def epoch_s_to_rfc3339(value: Any, field: str) -> tuple[str, int]:
    """Epoch seconds (int or float) -> (RFC 3339, ms)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**33:
        msg = f"bad_timestamp:{field}"
        raise InvalidPost(msg, f"field '{field}' must be epoch seconds; got {value!r:.60}")
    ms = round(value * 1000)
    return format_rfc3339_ms(ms), ms


def rfc822_to_rfc3339(value: str, field: str) -> tuple[str, int]:
    """An RFC 822 date (RSS pubDate) -> (RFC 3339, ms)."""
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        msg = f"bad_timestamp:{field}"
        raise InvalidPost(msg, f"field '{field}' is not an RFC 822 date: {value!r:.60}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    return format_rfc3339_ms(ms), ms


def now_ms(clock: Clock) -> int:
    return int(clock() * 1000)


class RecentIds:
    """An insertion-ordered set bounded to ``limit`` ids (oldest dropped first)."""

    def __init__(self, ids: Iterable[str] = (), limit: int = 500) -> None:
        self.limit = limit
        self._ids: dict[str, None] = {}
        for i in ids:
            self.add(i)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item: str) -> None:
        self._ids.pop(item, None)
        self._ids[item] = None
        while len(self._ids) > self.limit:
            del self._ids[next(iter(self._ids))]

    def to_list(self) -> list[str]:
        return list(self._ids)


def cursor_ids(cursor: Mapping[str, Any] | None, key: str) -> list[str]:
    """A list of string ids from a cursor field (tolerates absence)."""
    if not cursor:
        return []
    value = cursor.get(key) or []
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def snowflake_key(native_id: str) -> tuple[int, str]:
    """Sort key for numeric string ids of any length (Mastodon, X): shorter is older."""
    return (len(native_id), native_id)
