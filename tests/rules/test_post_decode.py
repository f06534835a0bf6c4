"""Decode of optional Post fields: the fast type checks give the contract's reasons."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rules.errors import InvalidPost
from rules.post import decode_post, post_from_dict

BASE: dict[str, Any] = {
    "id": "t:1",
    "source": "t",
    "text": "hello",
    "created_at": "2026-11-27T10:00:03.120Z",
}


class Text(str):
    """A str subclass: accepted like a str (the JSON decoder never makes one)."""


def decode(**fields: Any) -> Any:
    obj = {**BASE, **fields}
    try:
        raw = orjson.dumps(obj)
    except TypeError:  # an int beyond 64 bits: JSON text, but not what orjson writes
        return post_from_dict(obj)
    return decode_post(raw)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"lang": 1}, "wrong_type:lang"),
        ({"url": ["x"]}, "wrong_type:url"),
        ({"reply_to": {"id": "x"}}, "wrong_type:reply_to"),
        ({"lang": 1, "url": 2}, "wrong_type:lang"),  # the first in contract order
        ({"url": 2, "reply_to": 3}, "wrong_type:url"),
        ({"ingested_at": 5}, "wrong_type:ingested_at"),
        ({"ingested_at": "yesterday"}, "bad_timestamp:ingested_at"),
        ({"author": {"handle": 7}}, "wrong_type:author.handle"),
        ({"author": {"id": True}}, "wrong_type:author.id"),
        ({"author": {"id": 1.5}}, "wrong_type:author.id"),
        ({"author": {"followers": True}}, "wrong_type:author.followers"),
        ({"author": {"followers": "9"}}, "wrong_type:author.followers"),
        ({"author": {"followers": 2**63}}, "out_of_range:author.followers"),
        ({"author": {"followers": -(2**63) - 1}}, "out_of_range:author.followers"),
    ],
)
def test_a_wrong_optional_field_is_rejected_with_its_reason(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidPost) as err:
        decode(**fields)
    assert err.value.reason == reason


def test_optional_fields_are_read_as_given() -> None:
    post = decode(
        lang="zh-CN",
        url="https://x.example/1",
        reply_to="t:0",
        ingested_at="2026-11-27T10:00:04Z",
        author={"id": 42, "handle": "kim", "followers": 12},
    )
    assert (post.lang, post.url, post.reply_to) == ("zh-CN", "https://x.example/1", "t:0")
    assert post.ingested_at_ms == post.created_at_ms + 880
    assert post.author is not None
    assert (post.author.id, post.author.handle, post.author.followers) == ("42", "kim", 12)
    assert post.metrics == {}
    assert post.extra is None


@pytest.mark.parametrize(("given", "kept"), [(None, 0), (0, 0), (-5, 0), (-(2**63), 0), (7, 7)])
def test_followers_below_zero_or_missing_count_as_zero(given: int | None, kept: int) -> None:
    post = decode(author={"handle": "kim", "followers": given})
    assert post.author is not None
    assert post.author.followers == kept


def test_absent_optional_fields_are_none() -> None:
    post = decode(author={})
    assert (post.lang, post.url, post.reply_to, post.ingested_at_ms) == (None, None, None, None)
    assert post.author is not None
    assert (post.author.id, post.author.handle, post.author.followers) == (None, None, 0)


def test_str_subclasses_pass_the_slow_path() -> None:
    post = post_from_dict(
        {**BASE, "lang": Text("en"), "url": Text("u"), "author": {"handle": Text("h"), "id": 3}}
    )
    assert (post.lang, post.url) == ("en", "u")
    assert post.author is not None
    assert (post.author.handle, post.author.id) == ("h", "3")


def test_remembered_timestamps_parse_as_the_full_parser_would() -> None:
    """The last-two cache of ``parse_rfc3339_ms``: repeated, alternating and new strings
    all give what ``datetime`` gives; a bad string still raises after a good one."""
    from datetime import datetime

    from rules.post import parse_rfc3339_ms

    def reference(text: str) -> int:
        return int(datetime.fromisoformat(text).timestamp() * 1000 + 0.5)

    stamps = [
        "2026-11-28T07:00:00Z",
        "2026-11-28T07:00:00.120Z",
        "2026-11-28T07:00:00.120Z",
        "2026-11-28T07:00:00Z",
        "2026-11-28T07:00:01.999Z",
        "2026-11-28T09:00:01.999+02:00",
        "2026-11-28T07:00:00.120Z",
        "2026-11-28T07:00:01.999Z",
    ]
    for _ in range(3):
        for text in stamps:
            assert parse_rfc3339_ms(text) == reference(text)
    for bad in ("2026-11-28T07:00:00", "2026-11-28T07:00:61Z", "soon"):
        parse_rfc3339_ms(stamps[0])
        with pytest.raises(ValueError):
            parse_rfc3339_ms(bad)
        with pytest.raises(ValueError):
            parse_rfc3339_ms(bad)  # not remembered as good
