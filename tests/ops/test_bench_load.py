"""bench/worker_load.py's paced load generator, through the real broker: it sends every post
its schedule holds, and says how late its last ones went (``bench_worker.Latency.delivered``
reads the rate asked from that: tests/ops/test_bench_ramp.py)."""

from __future__ import annotations

import orjson
import pytest

# through bench_worker, which puts bench/ on the path for worker_load's own imports
from bench.bench_worker import PARTITIONS, LatencyRun, produce_at_rate
from tests.kafkautil import consume_all, create_topics


async def test_the_generator_sends_its_whole_schedule(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.posts"
    await create_topics(kafka_bootstrap, [topic], PARTITIONS)
    rate, seconds = 2_000.0, 1.5
    run = LatencyRun(rate)
    await produce_at_rate(kafka_bootstrap, topic, run, 50, seconds)

    # the last tick's posts too (until session 24 they were left unsent: 19,998 of 20,000/s)
    assert run.sent == int(rate * seconds) == 3_000
    records = await consume_all(kafka_bootstrap, topic, expect=run.sent)
    assert len(records) == run.sent
    assert len({r.key for r in records}) == run.sent  # distinct posts, none sent twice
    assert all(orjson.loads(r.value)["created_at"].endswith("Z") for r in records)
    # the last posts go at the first tick after the schedule's end, not before it
    assert run.late_s >= 0
    assert run.send_s == pytest.approx(run.late_s + seconds)
