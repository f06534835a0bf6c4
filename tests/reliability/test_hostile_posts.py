"""Hostile post values: every one is a Post or a clear InvalidPost, bounded in time,
and the matcher stage turns every bad one into a serialisable dead letter."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from rules.errors import InvalidPost
from rules.model import Post
from rules.post import MAX_POST_BYTES, decode_post
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder
from streams.stages import MatchStage, Record
from tests.integration import scenario

GOOD = {
    "id": "x:1",
    "source": "x",
    "text": "acme recall",
    "created_at": "2026-11-27T04:00:00Z",
}

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def _stage(tmp_path: Path) -> MatchStage:
    rules = scenario.write_rules(tmp_path / "brands")
    metrics = WorkerMetrics(CollectorRegistry())
    holder = RuleHolder(rules, metrics, lateness_ms=60_000, step_ms=10_000)
    return MatchStage(holder, metrics, idle_after_ms=2000, now_ms=lambda: 1_795_766_400_000)


def _outcome(raw: bytes) -> Post | InvalidPost:
    try:
        return decode_post(raw)
    except InvalidPost as exc:
        assert exc.reason and exc.detail
        assert len(exc.detail) < 2000, "a detail is one sentence, not a dump of the input"
        return exc


HOSTILE: list[tuple[str, bytes, str | None]] = [
    ("not json", b"{{{{", "invalid_json"),
    ("not utf-8", b'{"id": "\xff\xfe"}', "invalid_utf8"),
    ("lone surrogate escape", orjson.dumps({**GOOD})[:-1] + b', "text": "a\\ud800b"}', None),
    ("raw surrogate bytes", b'{"text": "\xed\xa0\x80"}', "invalid_utf8"),
    ("nul bytes", orjson.dumps({**GOOD, "text": "ac\x00me\x00 recall"}), None),
    ("nul in id", orjson.dumps({**GOOD, "id": "x:\x00"}), None),
    (
        "huge integer",
        orjson.dumps(GOOD)[:-1] + b', "metrics": {"likes": 1' + b"0" * 400 + b"}}",
        None,
    ),
    ("huge float", orjson.dumps(GOOD)[:-1] + b', "author": {"followers": 1e999}}', None),
    ("int64 overflow", orjson.dumps({**GOOD, "author": {"followers": 2**64 - 1}}), None),
    (
        "duplicate keys",
        b'{"id": "x:1", "id": 5, "source": "x", "text": "t", "created_at": "2026-11-27T04:00:00Z"}',
        "wrong_type:id",
    ),
    ("wrong type text", orjson.dumps({**GOOD, "text": ["a"]}), "wrong_type:text"),
    ("wrong type author", orjson.dumps({**GOOD, "author": "kim"}), "wrong_type:author"),
    (
        "wrong type metrics",
        orjson.dumps({**GOOD, "metrics": {"likes": "3"}}),
        "wrong_type:metrics.likes",
    ),
    ("bool as int", orjson.dumps({**GOOD, "metrics": {"likes": True}}), "wrong_type:metrics.likes"),
    (
        "deep nesting",
        b'{"id": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "invalid_json",
    ),
    (
        "deep nesting in extra",
        orjson.dumps({**GOOD})[:-1] + b', "extra": {"a": ' + b"[" * 500 + b"]" * 500 + b"}}",
        None,
    ),
    ("timestamp junk", orjson.dumps({**GOOD, "created_at": "9" * 39}), "bad_timestamp:created_at"),
    ("timestamp year 0", orjson.dumps({**GOOD, "created_at": "0000-01-01T00:00:00Z"}), None),
    (
        "timestamp far future",
        orjson.dumps({**GOOD, "created_at": "9999-12-31T23:59:59+14:00"}),
        None,
    ),
    ("empty", b"", "invalid_json"),
    ("array", b"[]", "not_an_object"),
    ("5 MB text", orjson.dumps({**GOOD, "text": "acme recall " * 450_000}), "too_large"),
    ("just under the limit", orjson.dumps({**GOOD, "text": "a" * (MAX_POST_BYTES - 200)}), None),
]


@pytest.mark.parametrize(("what", "raw", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_each_hostile_value_is_a_post_or_a_clear_rejection(
    what: str, raw: bytes, reason: str | None
) -> None:
    started = time.perf_counter()
    result = _outcome(raw)
    assert time.perf_counter() - started < 1.0, f"{what}: decoding took too long"
    if reason is not None:
        assert isinstance(result, InvalidPost), f"{what}: expected {reason}, got a Post"
        assert result.reason == reason


def test_match_stage_dead_letters_every_hostile_value_and_keeps_going(tmp_path: Path) -> None:
    stage = _stage(tmp_path)
    records = [Record("p", 0, i, what.encode(), raw) for i, (what, raw, _) in enumerate(HOSTILE)]
    records.append(Record("p", 0, len(HOSTILE), b"tombstone", None))
    records.append(Record("p", 0, len(HOSTILE) + 1, b"good", orjson.dumps(GOOD)))
    started = time.perf_counter()
    out = stage.process(records)
    assert time.perf_counter() - started < 10.0
    # every record is either matched/processed or dead-lettered, exactly once
    dead_offsets = [d["offset"] for _, d in out.dead_letters]
    assert len(set(dead_offsets)) == len(dead_offsets)
    processed = len(out.event_times)
    assert processed + len(dead_offsets) == len(records)
    for (what, _raw, reason), rec in zip(HOSTILE, records, strict=False):
        if reason is not None:
            assert rec.offset in dead_offsets, what
    assert any(h.post_id == "x:1" for h in out.hits), "the good post after them still matches"
    big = next(d for k, d in out.dead_letters if k == b"5 MB text")
    assert big["reason"] == "too_large" and big["payload_truncated"] is True
    assert big["payload_bytes"] == len(HOSTILE[[h[0] for h in HOSTILE].index("5 MB text")][1])
    for key, dead in out.dead_letters:
        value = orjson.dumps(dead)  # the dead letter must be sendable as JSON
        assert len(value) < 1_000_000, "and fit the broker's default message limit"
        assert orjson.loads(value)["reason"] == dead["reason"]
        assert key is not None


@settings(max_examples=200, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_the_decoder(raw: bytes) -> None:
    _outcome(raw)


@settings(max_examples=200, deadline=500)
@given(JSON_VALUES)
def test_arbitrary_json_never_crashes_the_decoder(value: object) -> None:
    _outcome(json.dumps(value).encode())  # big ints, lone surrogates as \\udXXX escapes


@settings(
    max_examples=100, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(max_size=3000),
    extra=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
    lang=st.none() | st.text(max_size=12),
    followers=st.integers(min_value=-(2**70), max_value=2**70),
)
def test_arbitrary_post_fields_are_matched_or_dead_lettered(
    tmp_path_factory: pytest.TempPathFactory,
    text: str,
    extra: dict[str, object],
    lang: str | None,
    followers: int,
) -> None:
    stage = _STAGE.get("s") or _STAGE.setdefault("s", _stage(tmp_path_factory.mktemp("r")))
    obj = {**GOOD, "text": text, "extra": extra, "lang": lang, "author": {"followers": followers}}
    raw = json.dumps(obj).encode()  # stdlib: big ints and lone surrogates pass through
    out = stage.process([Record("p", 0, 0, b"k", raw)])
    assert len(out.event_times) + len(out.dead_letters) == 1
    for _, dead in out.dead_letters:
        orjson.dumps(dead)


_STAGE: dict[str, MatchStage] = {}
