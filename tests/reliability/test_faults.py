"""Fault injection through the real broker: the worker SIGKILLed at seeded random points,
the broker restarted once, the replay connector SIGKILLed and rerun from its checkpoint.

Afterwards: the alert set equals the backtest's on the same input (repeats only as
repeated ids with identical content), every input ends processed or dead-lettered
(the worker group's committed offsets reach the end of every posts partition, and
the invalid records are exactly the worker's dead letters), and no connector post
is missing (doubles, bounded by one in-flight batch, are counted and reported).

``CRISISWATCH_FAULT_KILLS`` / ``CRISISWATCH_FAULT_SEED`` / ``CRISISWATCH_FAULT_RATE``
scale it up for ``make reliability``.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streams.localkafka import LocalKafka, free_port
from tests.integration import scenario
from tests.integration.workerproc import WorkerProcess
from tests.kafkautil import consume_all, create_topics, produce
from tests.reliability.helpers import (
    ConnectorProcess,
    by_id,
    committed_offsets,
    end_offsets,
    expected_events,
    wait_alerts,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
log = logging.getLogger(__name__)

KILLS = int(os.environ.get("CRISISWATCH_FAULT_KILLS", "5"))
SEED = int(os.environ.get("CRISISWATCH_FAULT_SEED", "8"))
RATE_PER_S = float(os.environ.get("CRISISWATCH_FAULT_RATE", "4"))
FAST_REJOIN = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1"}
"""faust reads these from the environment: a SIGKILLed member leaves the group after 6 s, not 60."""
BAD_LINES = {
    40: b"{not json",
    300: b'{"id": "file:bad", "source": "x", "created_at": "2026-11-27T04:00:00Z"}',
}


@pytest.fixture
def own_broker(tmp_path: Path):
    broker = LocalKafka(tmp_path / "kafka", port=free_port())
    broker.up()
    try:
        yield broker
    finally:
        broker.down()


def _write_posts_file(path: Path, items: list[dict[str, object]]) -> None:
    lines = [orjson.dumps(p) for p in items]
    for index in sorted(BAD_LINES):
        lines.insert(index, BAD_LINES[index])
    path.write_bytes(b"\n".join(lines) + b"\n")


async def test_worker_broker_and_connector_faults_lose_nothing(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    rnd = random.Random(SEED)
    bootstrap = own_broker.bootstrap
    prefix = f"fault{SEED}"
    rules_dir = scenario.write_rules(tmp_path / "brands")
    items = scenario.posts(seed=31)
    expected = expected_events(rules_dir, items)
    posts_file = tmp_path / "posts.jsonl"
    _write_posts_file(posts_file, items)
    topic = f"{prefix}.posts"
    await create_topics(bootstrap, [topic], partitions=4)
    direct_bad = [(b"direct-bad-%d" % i, v) for i, (v, _) in enumerate(scenario.BAD_VALUES)]
    await produce(bootstrap, topic, direct_bad)

    worker = WorkerProcess(bootstrap, prefix, tmp_path / "w", rules_dir, extra_env=FAST_REJOIN)
    connector = ConnectorProcess(
        bootstrap,
        prefix,
        ["replay", str(posts_file), "--rate", str(RATE_PER_S), "--resume", "--name", "rel",
         "--metrics-port", "0"],
        tmp_path / "c",
    )  # fmt: skip
    injected: list[str] = []
    t0 = time.monotonic()
    worker.start()
    try:
        connector.start()
        time.sleep(rnd.uniform(2.0, 4.0))
        connector.kill()
        injected.append(f"{time.monotonic() - t0:.1f}s connector SIGKILL")
        connector.start()
        for k in range(KILLS):
            time.sleep(rnd.uniform(0.2, 3.0))
            consumed = worker.metric("crisiswatch_posts_consumed_total")
            worker.kill()
            injected.append(
                f"{time.monotonic() - t0:.1f}s worker SIGKILL #{k + 1} ({consumed:.0f})"
            )
            worker.start()
            if k == 1:
                own_broker.down()
                injected.append(f"{time.monotonic() - t0:.1f}s broker stopped")
                time.sleep(rnd.uniform(1.0, 3.0))
                own_broker.up()
                injected.append(f"{time.monotonic() - t0:.1f}s broker up again")
        rc = connector.wait(timeout_s=300)
        assert rc == 0, connector.output()
        assert connector.proc is not None and worker.proc is not None
        assert worker.proc.poll() is None, f"worker died:\n{worker.tail()}"

        alerts = await wait_alerts(bootstrap, f"{prefix}.alerts", len(expected), timeout_s=180)
        assert by_id(alerts) == expected, "\n".join(injected)

        # no connector post missing; doubles are bounded by one in-flight batch
        records = await consume_all(bootstrap, topic, timeout_s=30, idle_s=1.0)
        ids = Counter(
            orjson.loads(r.value)["id"]
            for r in records
            if r.key and not r.key.startswith(b"direct-bad")
        )
        assert set(ids) == {p["id"] for p in items}
        doubled = sum(n - 1 for n in ids.values())
        assert doubled <= max(1, int(RATE_PER_S / 10)) * 2, ids.most_common(3)

        # posts in = processed + dead letters: the worker group committed every posts offset,
        # and the invalid records on the topic are exactly the worker's dead letters
        ends = await end_offsets(bootstrap, topic)
        assert sum(ends.values()) == len(records) == len(direct_bad) + sum(ids.values())
        deadline = time.monotonic() + 30
        while (committed := await committed_offsets(bootstrap, f"{prefix}-worker", topic)) != ends:
            assert time.monotonic() < deadline, (committed, ends)
            time.sleep(0.5)
        invalid = {
            (r.partition, r.offset) for r in records if r.key and r.key.startswith(b"direct-bad")
        }
        dlq = [
            orjson.loads(r.value)
            for r in await consume_all(bootstrap, f"{prefix}.posts.dlq", timeout_s=20)
        ]
        by_matcher = {(d["partition"], d["offset"]) for d in dlq if d["stage"] == "matcher"}
        assert by_matcher == invalid
        from_file = sorted(
            base64.b64decode(d["payload_b64"]) for d in dlq if d["stage"] == "connector:rel"
        )
        assert sorted(set(from_file)) == sorted(BAD_LINES.values())
        summary = (
            f"seed {SEED}: {KILLS} worker SIGKILLs, 1 broker restart, 1 connector SIGKILL; "
            f"{len(ids)} posts ({doubled} doubled on the topic), {len(direct_bad)} + "
            f"{len(BAD_LINES)} dead letters, {len(expected)} alert events = backtest "
            f"({len(alerts)} records), {time.monotonic() - t0:.0f}s"
        )
        (tmp_path.parent / "fault-timeline.txt").write_text("\n".join([*injected, summary]) + "\n")
        log.warning(
            "fault injection: %d worker kills, 1 broker restart, 1 connector kill; "
            "%d posts (+%d doubled), %d alert events (%d records); injected: %s",
            KILLS, len(ids), doubled, len(expected), len(alerts), "; ".join(injected),
        )  # fmt: skip
    finally:
        connector.kill()
        worker.stop()
