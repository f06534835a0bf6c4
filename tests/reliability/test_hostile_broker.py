"""Hostile input through the real broker: the replay connector and the worker each turn it
into dead letters and keep running."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.integration import scenario
from tests.integration.workerproc import WorkerProcess
from tests.kafkautil import consume_all, create_topics, produce
from tests.reliability.helpers import ConnectorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GOOD = {"id": "h:1", "source": "h", "text": "acme is fine", "created_at": "2026-11-27T04:00:00Z"}


async def test_replay_connector_dead_letters_huge_and_broken_lines(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    lines = [
        orjson.dumps(GOOD),
        orjson.dumps({**GOOD, "id": "h:big", "text": "acme recall " * 450_000}),  # 5.4 MB
        b"\x00\xff not json " * 90_000,  # ~1 MB of garbage
        orjson.dumps(
            {
                **GOOD,
                "id": "h:2",
                "text": "a\x00b \ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
            }
        ),
        orjson.dumps({**GOOD, "id": "h:3"})[:-1] + b', "metrics": {"likes": 1' + b"0" * 30 + b"}}",
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    connector = ConnectorProcess(
        kafka_bootstrap,
        topic_prefix,
        ["replay", str(path), "--name", "hostile", "--metrics-port", "0"],
        tmp_path,
    ).start()
    started = time.monotonic()
    rc = connector.wait(timeout_s=120)
    out = connector.output()
    assert rc == 0, out
    assert time.monotonic() - started < 120
    assert "produced 2 posts (3 rejected" in out, out[-2000:]
    posts = await consume_all(kafka_bootstrap, f"{topic_prefix}.posts", expect=2, timeout_s=20)
    assert sorted(orjson.loads(r.value)["id"] for r in posts) == ["h:1", "h:2"]
    dlq = await consume_all(kafka_bootstrap, f"{topic_prefix}.posts.dlq", expect=3, timeout_s=20)
    reasons = sorted(orjson.loads(r.value)["reason"] for r in dlq)
    assert len(reasons) == 3, reasons
    assert "too_large" in reasons
    for record in dlq:
        assert len(record.value) < 1_048_576, "a dead letter must fit the broker's message limit"


async def test_worker_dead_letters_hostile_values_and_stays_up(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    rules_dir = scenario.write_rules(tmp_path / "brands")
    topic = f"{topic_prefix}.posts"
    await create_topics(bootstrap := kafka_bootstrap, [topic], partitions=4)
    hostile = [
        b"\xff" * 900_000,  # not UTF-8, near the broker's message limit
        b"[" * 200_000,  # deep nesting
        b'{"id": "w:1", "id": 2}',  # duplicate keys, wrong type
        orjson.dumps({**GOOD, "id": "w:nul", "text": "ac\x00me"}),  # valid: NUL is just a character
        orjson.dumps({**GOOD, "id": "w:s"}).replace(b"fine", b"\\udc00"),  # lone surrogate
        orjson.dumps(GOOD)[:-1] + b', "author": {"followers": 1' + b"0" * 40 + b"}}",
    ]
    items = [(b"hostile-%d" % i, v) for i, v in enumerate(hostile)]
    worker = WorkerProcess(bootstrap, topic_prefix, tmp_path / "w", rules_dir).start()
    try:
        assert await produce(bootstrap, topic, items) == len(items)
        assert (
            await produce(bootstrap, topic, [(b"after", orjson.dumps({**GOOD, "id": "w:after"}))])
            == 1
        )
        deadline = time.monotonic() + 60
        while True:
            consumed = worker.metric("crisiswatch_posts_consumed_total")
            dead = worker.metric("crisiswatch_dead_letters_total")
            if consumed + dead >= len(items) + 1:
                break
            assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
            assert time.monotonic() < deadline, (consumed, dead, worker.tail())
            time.sleep(0.3)
        assert consumed + dead == len(items) + 1
        dlq = await consume_all(
            bootstrap, f"{topic_prefix}.posts.dlq", expect=int(dead), timeout_s=20
        )
        assert {r.key for r in dlq} <= {k for k, _ in items}
        assert len(dlq) == dead
        assert all(len(r.value) < 1_048_576 for r in dlq)
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        status, _ = worker.get("/readyz")
        assert status == 200
    finally:
        worker.stop()
