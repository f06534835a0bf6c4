"""Runner through the real broker: checkpoint + restart, and a broker outage mid-run."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from connectors.checkpoint import KafkaCheckpoints
from connectors.metrics import ConnectorMetrics
from connectors.publisher import Publisher
from connectors.runner import Runner
from streams.localkafka import LocalKafka, free_port
from tests.connectors.framework_helpers import ListSource, kafka_settings, make_post
from tests.kafkautil import consume_all

pytestmark = pytest.mark.integration


async def _run_until(source: ListSource, settings, stop_after_fetches: int | None) -> None:  # type: ignore[no-untyped-def]
    publisher = Publisher(settings, max_in_flight=16)
    await publisher.start(timeout_s=30)
    checkpoints = KafkaCheckpoints(settings, publisher)
    await checkpoints.start()
    runner = Runner([source], publisher, checkpoints, ConnectorMetrics(CollectorRegistry()))
    if stop_after_fetches is not None:
        original = source.fetch

        async def fetch_then_stop(cursor):  # type: ignore[no-untyped-def]
            batch = await original(cursor)
            if source.fetches >= stop_after_fetches:
                runner.stop()
            return batch

        source.fetch = fetch_then_stop  # type: ignore[method-assign]
    await runner.run()
    await publisher.stop()


async def test_restart_from_checkpoint_neither_skips_nor_repeats(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = await kafka_settings(kafka_bootstrap, topic_prefix)
    posts = [make_post(i) for i in range(23)]
    first = ListSource("fake-1", posts, page=4)
    await _run_until(first, settings, stop_after_fetches=3)
    assert first.served == [p.id for p in posts[:12]]
    second = ListSource("fake-1", posts, page=4)  # a new process: cursor comes from Kafka
    await _run_until(second, settings, stop_after_fetches=None)
    assert second.served == [p.id for p in posts[12:]]
    records = await consume_all(kafka_bootstrap, settings.posts_topic, expect=len(posts))
    counts = Counter(r.key.decode() for r in records)
    assert counts == Counter(p.id for p in posts)  # every post, each exactly once
    state = await consume_all(kafka_bootstrap, settings.state_topic, expect=6)
    assert [r.value for r in state] == [b'{"i":%d}' % i for i in (4, 8, 12, 16, 20, 23)]
    assert {r.key for r in state} == {b"fake-1"}


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("request_timeout_ms", [30_000, 2_000], ids=["short-outage", "long-outage"])
async def test_broker_outage_loses_and_duplicates_nothing(tmp_path, request_timeout_ms) -> None:  # type: ignore[no-untyped-def]
    """Short outage (< request_timeout_ms): aiokafka's idempotent retries deliver every post
    exactly once.  Long outage: aiokafka fails batches older than request_timeout_ms; the
    publisher resends them on a fresh producer: nothing is lost, but a batch whose first
    attempt was written before the broker went away may appear twice (at-least-once)."""
    broker = LocalKafka(tmp_path / "own-kafka", port=free_port())
    await asyncio.to_thread(broker.up)
    try:
        settings = await kafka_settings(broker.bootstrap, "outage")
        posts = [make_post(i) for i in range(60)]
        source = ListSource("outage-src", posts, page=3, wait_s=0.05)
        publisher = Publisher(
            settings, max_in_flight=8, backoff_cap_s=1.0, request_timeout_ms=request_timeout_ms
        )
        await publisher.start(timeout_s=30)
        checkpoints = KafkaCheckpoints(settings, publisher)
        await checkpoints.start()
        runner = Runner(
            [source], publisher, checkpoints, ConnectorMetrics(CollectorRegistry()),
            backoff_base_s=0.1, backoff_cap_s=1.0,
        )  # fmt: skip
        task = asyncio.create_task(runner.run())
        while len(source.served) < 15:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(broker.down)
        served_while_down = len(source.served)
        await asyncio.sleep(1.5)
        # the runner is blocked on the unacknowledged batch: the source is not drained
        assert len(source.served) <= served_while_down + 3
        assert not task.done()
        await asyncio.to_thread(broker.up)
        outcomes = await asyncio.wait_for(task, 120)
        await publisher.stop()
        assert outcomes[0].state == "exhausted"
        assert source.served == [p.id for p in posts]
        records = await consume_all(broker.bootstrap, settings.posts_topic, expect=len(posts))
        counts = Counter(r.key.decode() for r in records)
        assert set(counts) == {p.id for p in posts}  # nothing lost
        if request_timeout_ms > 10_000:
            assert counts == Counter(p.id for p in posts)  # and none twice
    finally:
        await asyncio.to_thread(broker.down)
