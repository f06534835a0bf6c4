from __future__ import annotations

import pytest

from connectors.base import FatalSourceError, SourceError
from connectors.common import (
    OptionError,
    Options,
    RecentIds,
    html_to_text,
    option_secret,
    rejected,
    retry_after_s,
    rfc822_to_rfc3339,
    status_error,
)
from rules.errors import InvalidPost

NOW_S = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Hello <a href='https://x'>@<span>acme</span></a> &amp; co</p>", "Hello @acme & co"),
        ("<p>one<br>two<br/>three</p><p>para</p>", "one\ntwo\nthree\n\npara"),
        ("a &lt;b&gt; &#x4E2D;&#25991; &nbsp;end", "a <b> 中文 end"),
        ("<script>alert(1)</script><style>p{}</style>kept", "kept"),
        ("<ul><li>x</li><li>y</li></ul>", "x\n\ny"),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_retry_after_forms() -> None:
    assert retry_after_s({"Retry-After": "120"}, NOW_S) == 120.0
    assert retry_after_s({"retry-after": "Fri, 15 Jan 2027 08:00:30 GMT"}, NOW_S) == 30.0
    assert retry_after_s({"Retry-After": "Fri, 15 Jan 2027 07:00:00 GMT"}, NOW_S) == 0.0
    assert retry_after_s({"x-rate-limit-reset": str(int(NOW_S) + 45)}, NOW_S) == 45.0
    assert retry_after_s({"X-Ratelimit-Reset": "17"}, NOW_S) == 17.0
    assert retry_after_s({"Retry-After": "soon"}, NOW_S) is None
    assert retry_after_s({}, NOW_S) is None


@pytest.mark.parametrize(
    ("status", "fatal", "kind"),
    [
        (429, False, "http_429"),
        (500, False, "http_5xx"),
        (503, False, "http_5xx"),
        (408, False, "timeout"),
        (401, True, "auth"),
        (403, True, "auth"),
        (404, True, "http_404"),
    ],
)
def test_status_error_kinds(status: int, fatal: bool, kind: str) -> None:
    err = status_error(status, "mastodon m1: GET /x", {"Retry-After": "3"}, b"oops", NOW_S)
    assert isinstance(err, SourceError)
    assert isinstance(err, FatalSourceError) is fatal
    assert err.retriable is not fatal
    assert err.kind == kind
    assert f"HTTP {status}" in str(err) and "GET /x" in str(err) and "oops" in str(err)
    if status == 429:
        assert err.retry_after_s == 3.0


def test_options_validate_and_name_the_problem() -> None:
    o = Options("c", {"a": 1, "b": "x", "f": 0.5}, ["a", "b", "f", "g"])
    assert o.get_int("a", 5) == 1 and o.get_str("b") == "x" and o.get_float("f", 1.0) == 0.5
    assert o.get_bool("g", True) is True
    with pytest.raises(OptionError, match=r"option 'b' must be an integer in \[1, 10\]; got 'x'"):
        o.get_int("b", 1, maximum=10)
    with pytest.raises(OptionError, match=r"unknown option.*zzz"):
        Options("c", {"zzz": 1}, ["a"])


def test_option_secret_never_prints() -> None:
    secret = option_secret(
        "c", {"token_env": "TOK"}, "token_env", {"TOK": "hunter2"}, required=True
    )
    assert secret is not None and secret.reveal() == "hunter2"
    assert "hunter2" not in repr(secret) and "hunter2" not in f"{secret}"
    assert option_secret("c", {}, "token_env", {}, required=False) is None
    with pytest.raises(OptionError, match="TOK"):
        option_secret("c", {"token_env": "TOK"}, "token_env", {}, required=False)


def test_recent_ids_are_bounded_and_ordered() -> None:
    r = RecentIds(["a", "b"], limit=3)
    r.add("c")
    r.add("a")  # refreshed: now newest
    r.add("d")
    assert r.to_list() == ["c", "a", "d"] and "b" not in r


def test_rejected_keeps_payload_bytes() -> None:
    item = rejected(InvalidPost("missing_field:id", "required field 'id' is missing"), {"x": 1})
    assert (item.reason, item.payload) == ("missing_field:id", b'{"x":1}')


def test_rfc822_dates() -> None:
    assert rfc822_to_rfc3339("Fri, 27 Nov 2026 10:00:03 +0100", "pubDate") == (
        "2026-11-27T09:00:03Z",
        1_795_770_003_000,
    )
    with pytest.raises(InvalidPost, match="pubDate"):
        rfc822_to_rfc3339("next tuesday", "pubDate")
