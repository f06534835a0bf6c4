"""File replay: JSON Lines, CSV, gzip, stdin, pacing, cursors, bad lines; the CLI via Kafka."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from connectors.replay import ReplaySource, parse_csv_map
from rules.post import encode_post
from tests.connectors.framework_helpers import make_post
from tests.kafkautil import consume_all


def _jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _posts_lines(n: int) -> list[bytes]:
    return [encode_post(make_post(i)) for i in range(n)]


async def _drain(source: ReplaySource, cursor=None):  # type: ignore[no-untyped-def]
    batches = []
    while not source.exhausted:
        batch = await source.fetch(cursor)
        batches.append(batch)
        cursor = batch.cursor
    return batches


async def test_jsonl_posts_bad_lines_and_cursor(tmp_path: Path) -> None:
    lines = _posts_lines(5)
    lines.insert(2, b"{not json")
    lines.insert(4, b'{"id": "x:1", "source": "x", "created_at": "2026-01-01T00:00:00Z"}')
    lines.insert(5, b"")  # blank lines are skipped, not rejected
    path = _jsonl(tmp_path / "posts.jsonl", lines)
    source = ReplaySource("r", str(path), batch_size=3)
    batches = await _drain(source)
    assert [p.id for b in batches for p in b.posts] == [f"test:{i}" for i in range(5)]
    rejected = [r for b in batches for r in b.rejected]
    assert [r.reason for r in rejected] == ["invalid_json", "missing_field:text"]
    assert rejected[0].detail.startswith(f"{path}:3: ")
    assert rejected[1].detail.startswith(f"{path}:5: ")
    assert rejected[0].payload == b"{not json"
    assert batches[-1].cursor == {"line": 8}
    assert [b.wait_s for b in batches] == [0.0] * len(batches)


async def test_restart_from_cursor_neither_skips_nor_repeats(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "posts.jsonl", _posts_lines(10))
    first = ReplaySource("r", str(path), batch_size=4)
    batch = await first.fetch(None)
    await first.close()
    second = ReplaySource("r", str(path), batch_size=4)  # a new process, same checkpoint
    rest = await _drain(second, batch.cursor)
    ids = [p.id for p in batch.posts] + [p.id for b in rest for p in b.posts]
    assert ids == [f"test:{i}" for i in range(10)]


async def test_gzip_and_stdin(tmp_path: Path) -> None:
    data = b"\n".join(_posts_lines(4)) + b"\n"
    gz = tmp_path / "posts.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    from_gz = await _drain(ReplaySource("r", str(gz)))
    from_stdin = await _drain(ReplaySource("r", "-", stdin=io.BytesIO(data)))
    expected = [f"test:{i}" for i in range(4)]
    assert [p.id for b in from_gz for p in b.posts] == expected
    assert [p.id for b in from_stdin for p in b.posts] == expected


async def test_csv_with_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text(
        "tweet_id,body,ts,user,followers,likes\n"
        'tw:1,"acme recall, now",1795000000,kim,120,3\n'
        "tw:2,second,2026-11-18T11:06:41Z,lee,,\n"
        "tw:3,bad followers,1795000002,max,lots,1\n",
        encoding="utf-8",
    )
    mapping = parse_csv_map(
        "id=tweet_id,text=body,created_at=ts,author.handle=user,"
        "author.followers=followers,metrics.likes=likes"
    )
    source = ReplaySource("r", str(path), csv_map=mapping, default_source="csv")
    batches = await _drain(source)
    posts = [p for b in batches for p in b.posts]
    assert [p.id for p in posts] == ["tw:1", "tw:2"]
    assert posts[0].text == "acme recall, now"
    assert posts[0].created_at == "2026-11-18T11:06:40Z"
    assert posts[0].author is not None and posts[0].author.followers == 120
    assert posts[0].metrics == {"likes": 3}
    assert posts[1].source == "csv" and posts[1].author.handle == "lee"  # type: ignore[union-attr]
    (bad,) = [r for b in batches for r in b.rejected]
    assert bad.reason == "wrong_type:author.followers"
    assert f"{path}:4:" in bad.detail


def test_csv_map_errors_name_the_bad_part() -> None:
    with pytest.raises(ValueError, match="'idd' is not a Post field"):
        parse_csv_map("idd=tweet_id")
    with pytest.raises(ValueError, match="must be FIELD=COLUMN"):
        parse_csv_map("id")


async def test_rate_paces_batches(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "posts.jsonl", _posts_lines(50))
    source = ReplaySource("r", str(path), rate_per_s=100)
    batch = await source.fetch(None)
    assert len(batch.posts) == 10  # a tenth of a second's worth
    assert batch.wait_s == pytest.approx(0.1)


async def test_speed_keeps_event_time_gaps(tmp_path: Path) -> None:
    # make_post(i) is i seconds after the base time; at 10x real time, gaps shrink 10-fold
    lines = [encode_post(make_post(i)) for i in (0, 0, 10, 30)]
    path = _jsonl(tmp_path / "posts.jsonl", lines)
    source = ReplaySource("r", str(path), speed=10)
    batches = await _drain(source)
    assert [[p.id for p in b.posts] for b in batches] == [
        ["test:0", "test:0"],
        ["test:10"],
        ["test:30"],
    ]
    assert [b.wait_s for b in batches] == [pytest.approx(1.0), pytest.approx(2.0), 0.0]


@pytest.mark.integration
def test_cli_replay_produces_every_post_and_dead_letters(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    lines = _posts_lines(40)
    lines.insert(7, b'{"id": 5}')
    lines.insert(20, b"\xff\xfe not utf-8")
    path = _jsonl(tmp_path / "posts.jsonl", lines)
    env = dict(os.environ, CRISISWATCH_KAFKA_BOOTSTRAP=kafka_bootstrap)
    env["CRISISWATCH_TOPIC_PREFIX"] = topic_prefix
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "connect",
            "replay",
            str(path),
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == (
        "produced 40 posts (2 rejected to the dead-letter topic)"
    )
    import asyncio

    records = asyncio.run(consume_all(kafka_bootstrap, f"{topic_prefix}.posts", expect=40))
    assert sorted(r.key for r in records) == sorted(f"test:{i}".encode() for i in range(40))
    assert {r.key: r.value for r in records}[b"test:3"] == encode_post(make_post(3))
    dlq = asyncio.run(consume_all(kafka_bootstrap, f"{topic_prefix}.posts.dlq", expect=2))
    letters = {d["reason"]: d for d in (orjson.loads(r.value) for r in dlq)}
    assert sorted(letters) == ["invalid_utf8", "wrong_type:id"]
    assert letters["wrong_type:id"]["detail"].startswith(f"{path}:8: ")
    assert letters["invalid_utf8"]["detail"].startswith(f"{path}:21: ")
    assert {d["stage"] for d in letters.values()} == {"connector:replay"}
