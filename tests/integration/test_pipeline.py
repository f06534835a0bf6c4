"""The worker through the real broker decides exactly what backtest decides."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from rules.engine import Engine
from rules.loader import load_rules
from rules.post import post_from_dict
from tests.integration import scenario
from tests.integration.workerproc import WorkerProcess
from tests.kafkautil import batch_codecs, consume_all, create_topics, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ZSTD = 4
"""Kafka's id of the zstd codec (a record batch's attributes)."""


def expected_events(rules_dir: Path, items: list[dict[str, object]]) -> dict[str, dict]:
    engine = Engine(load_rules(rules_dir))
    events = []
    for item in items:
        events.extend(engine.process(post_from_dict(item)))
    events.extend(engine.finish())
    return {e.id: e.to_cloudevent() for e in events}


async def wait_alerts(bootstrap: str, topic: str, expected: int, timeout_s: float = 120) -> list:
    deadline = time.monotonic() + timeout_s
    records: list = []
    while time.monotonic() < deadline:
        records = await consume_all(bootstrap, topic, timeout_s=5, idle_s=0.5)
        if len({r.value for r in records}) >= expected:
            # give stragglers (repeats) a moment, then stop
            await asyncio.sleep(1.0)
            return await consume_all(bootstrap, topic, timeout_s=5, idle_s=0.5)
        await asyncio.sleep(1.0)
    return records


def by_id(records: list) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        event = orjson.loads(r.value)
        assert out.get(event["id"], event) == event, "a repeated id must carry the same event"
        out[event["id"]] = event
    return out


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return scenario.write_rules(tmp_path / "brands")


async def _prepare(bootstrap: str, prefix: str) -> None:
    await create_topics(bootstrap, [f"{prefix}.posts"], partitions=4)


async def test_replay_gives_the_backtest_alerts_and_dead_letters(
    kafka_bootstrap: str, topic_prefix: str, rules_dir: Path, tmp_path: Path
) -> None:
    items = scenario.posts()
    expected = expected_events(rules_dir, items)
    assert {e["type"].rsplit(".", 1)[1] for e in expected.values()} >= {"opened", "resolved"}

    await _prepare(kafka_bootstrap, topic_prefix)
    worker = WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "w1", rules_dir)
    worker.start()
    try:
        bad = [(b"bad-%d" % i, value) for i, (value, _) in enumerate(scenario.BAD_VALUES)]
        good = scenario.encoded(items)
        mixed = good[:100] + bad + good[100:]
        assert await produce(kafka_bootstrap, f"{topic_prefix}.posts", mixed) == len(mixed)

        alerts = await wait_alerts(kafka_bootstrap, f"{topic_prefix}.alerts", len(expected))
        assert by_id(alerts) == expected
        # keyed by brand
        assert all(r.key == orjson.loads(r.value)["subject"].encode() for r in alerts)

        dlq = await consume_all(kafka_bootstrap, f"{topic_prefix}.posts.dlq", expect=len(bad))
        reasons = sorted(orjson.loads(r.value)["reason"] for r in dlq)
        assert reasons == sorted(reason for _, reason in scenario.BAD_VALUES)
        assert {r.key for r in dlq} == {k for k, _ in bad}
        # nothing lost: posts in = posts processed + dead letters
        processed = worker.metric("crisiswatch_posts_consumed_total")
        dead = worker.metric("crisiswatch_dead_letters_total")
        assert (processed, dead) == (len(good), len(bad))
        assert worker.metric("crisiswatch_incident_events_total") == len(expected)

        # a matches record the detector cannot read (only a bug or a foreign writer makes
        # one) is dead-lettered and counted too, and the worker goes on
        junk = b'{"t": "b", "hits": [["not", "a", "hit"]], "tick": null}'
        assert await produce(kafka_bootstrap, f"{topic_prefix}.matches", [(b"junk", junk)]) == 1
        dlq = await consume_all(kafka_bootstrap, f"{topic_prefix}.posts.dlq", expect=len(bad) + 1)
        [detector] = [orjson.loads(r.value) for r in dlq if r.key == b"junk"]
        assert (detector["reason"], detector["stage"]) == ("bad_matches_record", "detector")
        assert detector["topic"] == f"{topic_prefix}.matches"
        labels = {"stage": "detector", "reason": "bad_matches_record"}
        assert worker.metric("crisiswatch_dead_letters_total", labels) == 1
        assert worker.proc is not None and worker.proc.poll() is None
        assert worker.get("/readyz")[0] == 200
    finally:
        worker.stop()
    # every alert is logged (by the log writer thread, which writes what is queued at exit),
    # and so is the shutdown
    assert worker.log_path is not None
    logged = worker.log_path.read_text(errors="replace")
    for event in expected.values():
        assert f"incident={event['data']['incident_id']}" in logged, event["id"]
    # faust's last line before the process exits
    assert logged.splitlines()[-1].rstrip().endswith("Closing event loop"), worker.tail()
    assert "event loop uvloop" in logged  # the default (CRISISWATCH_EVENT_LOOP)


async def test_sigkill_mid_stream_resumes_from_the_changelog(
    kafka_bootstrap: str, topic_prefix: str, rules_dir: Path, tmp_path: Path
) -> None:
    items = scenario.posts(seed=11)
    expected = expected_events(rules_dir, items)
    await _prepare(kafka_bootstrap, topic_prefix)
    worker = WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "w1", rules_dir)
    worker.start()
    good = scenario.encoded(items)
    cut = len(good) * 2 // 3
    try:
        await produce(kafka_bootstrap, f"{topic_prefix}.posts", good[:cut])
        deadline = time.monotonic() + 60
        while worker.metric("crisiswatch_posts_consumed_total") < cut // 2:
            assert time.monotonic() < deadline, worker.tail()
            await asyncio.sleep(0.2)
        # a state write-back (every 5 s) has been stored: the restart reads brand heads
        # and the segments of sealed buckets they list, then replays what is not acked
        keys: set[bytes] = set()
        while not (any(b"/" in k for k in keys) and any(b"/" not in k for k in keys)):
            assert time.monotonic() < deadline, sorted(keys)
            changelog = await consume_all(
                kafka_bootstrap, f"{topic_prefix}.brand-state-changelog", timeout_s=2, idle_s=0.3
            )
            keys = {r.key for r in changelog if r.value is not None}
        # the write-backs are stored compressed (streams.app.STATE_COMPRESSION)
        codecs = await batch_codecs(
            kafka_bootstrap, f"{topic_prefix}.brand-state-changelog", partitions=4
        )
        assert codecs and set(codecs) == {ZSTD}, codecs
        worker.kill()
        worker.start()
        await produce(kafka_bootstrap, f"{topic_prefix}.posts", good[cut:])
        alerts = await wait_alerts(kafka_bootstrap, f"{topic_prefix}.alerts", len(expected))
        # repeats allowed only as repeated ids (by_id asserts they are identical)
        assert by_id(alerts) == expected
        # segments whose buckets left every window are deleted (tombstones), by a
        # write-back after the alerts (the idle ticks keep the detect agent going)
        deadline = time.monotonic() + 30
        while True:
            changelog = await consume_all(
                kafka_bootstrap, f"{topic_prefix}.brand-state-changelog", timeout_s=5, idle_s=0.5
            )
            if any(r.value is None and b"/" in r.key for r in changelog):
                break
            assert time.monotonic() < deadline, "no segment was deleted"
            await asyncio.sleep(1.0)
    finally:
        worker.stop()


async def test_two_workers_split_the_partitions(
    kafka_bootstrap: str, topic_prefix: str, rules_dir: Path, tmp_path: Path
) -> None:
    items = scenario.posts(seed=23)
    expected = expected_events(rules_dir, items)
    await _prepare(kafka_bootstrap, topic_prefix)
    first = WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "w1", rules_dir).start()
    # the other event loop the worker runs on: both give the backtest's alerts
    standard = {"CRISISWATCH_EVENT_LOOP": "asyncio"}
    second = WorkerProcess(
        kafka_bootstrap, topic_prefix, tmp_path / "w2", rules_dir, extra_env=standard
    )
    try:
        second.start()
        # both ready means both have partitions after the rebalance
        import json

        a = json.loads(first.get("/readyz")[1])["assigned_partitions"]
        b = json.loads(second.get("/readyz")[1])["assigned_partitions"]
        assert a > 0 and b > 0
        await produce(kafka_bootstrap, f"{topic_prefix}.posts", scenario.encoded(items))
        alerts = await wait_alerts(kafka_bootstrap, f"{topic_prefix}.alerts", len(expected))
        assert by_id(alerts) == expected
        consumed = first.metric("crisiswatch_posts_consumed_total") + second.metric(
            "crisiswatch_posts_consumed_total"
        )
        assert consumed >= len(items)
        assert first.metric("crisiswatch_posts_consumed_total") > 0
        assert second.metric("crisiswatch_posts_consumed_total") > 0
    finally:
        first.stop()
        second.stop()
    assert first.log_path is not None and second.log_path is not None
    assert "event loop uvloop" in first.log_path.read_text(errors="replace")
    assert "event loop asyncio" in second.log_path.read_text(errors="replace")
