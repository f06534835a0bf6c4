"""Shared helpers for the reliability tests: own brokers, subprocess connectors, offsets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.test_pipeline import by_id, expected_events, wait_alerts

__all__ = [
    "ConnectorProcess",
    "by_id",
    "committed_offsets",
    "end_offsets",
    "expected_events",
    "scan_for_secrets",
    "wait_alerts",
]


def _env(bootstrap: str, prefix: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_")}
    env.update(
        {
            "CRISISWATCH_KAFKA_BOOTSTRAP": bootstrap,
            "CRISISWATCH_TOPIC_PREFIX": prefix,
            "CRISISWATCH_PARTITIONS": "4",
            **(extra or {}),
        }
    )
    return env


class ConnectorProcess:
    """``crisiswatch connect ...`` as a child process, with its output in a log file."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        args: list[str],
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.args = args
        self.env = _env(bootstrap, prefix, extra_env)
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path: Path | None = None

    def start(self) -> ConnectorProcess:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"connector.log.{self.starts}"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "connect", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            msg = f"connector did not finish in {timeout_s}s:\n{self.output()}"
            raise AssertionError(msg) from None

    def output(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


async def end_offsets(bootstrap: str, topic: str, partitions: int = 4) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group_prefix: str, topic: str) -> dict[int, int]:
    """Offsets committed for ``topic`` by the consumer group(s) named ``<group_prefix>*``
    (the worker's posts consumer group is an implementation detail: ``<app id>`` or
    ``<app id>-match``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    out: dict[int, int] = {}
    try:
        groups = [g[0] for g in await admin.list_consumer_groups()]
        for group in groups:
            if not group.startswith(group_prefix):
                continue
            offsets = await admin.list_consumer_group_offsets(group)
            for tp, meta in offsets.items():
                if tp.topic == topic and meta.offset >= 0:
                    out[tp.partition] = max(out.get(tp.partition, 0), meta.offset)
    finally:
        await admin.close()
    return out


def scan_for_secrets(texts: dict[str, str], secrets: list[str]) -> list[str]:
    """Which (where, secret) pairs leaked: an empty list means none."""
    return [
        f"{where} contains secret #{i}"
        for where, text in texts.items()
        for i, secret in enumerate(secrets)
        if secret and secret in text
    ]


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.3) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


async def consume_secure(
    bootstrap: str, topic: str, client_kwargs: dict[str, object], timeout_s: float = 20.0
) -> list:
    """Every record of ``topic`` (all partitions) through a secured connection."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **client_kwargs,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        parts = consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list = []
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                records.extend(recs)
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
        return records
    finally:
        await consumer.stop()
