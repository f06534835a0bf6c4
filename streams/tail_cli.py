"""``crisiswatch alerts tail``: print incident events from the alert topic."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, TextIO

import orjson

from streams.settings import Settings, SettingsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="one CloudEvent per line, as on the topic"
    )
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest event, not the newest"
    )
    parser.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="exit after this many seconds without a new event",
    )


def format_event(event: dict[str, Any]) -> str:
    """One readable line for a CloudEvent of the alert topic."""
    data = event.get("data") or {}
    window = data.get("window") or {}
    kind = str(event.get("type", "?")).rsplit(".", 1)[-1].upper()
    line = (
        f"{event.get('time', '?')}  {kind:<9} {data.get('brand', '?')}/{data.get('rule_id', '?')}"
        f"  severity={data.get('severity', '?')}  type={data.get('crisis_type', '?')}"
        f"  count={window.get('count', '?')} ratio={window.get('ratio', '?')}"
        f" authors={window.get('unique_authors', '?')} reach={window.get('reach', '?')}"
        f"  incident={data.get('incident_id', '?')}"
    )
    samples = data.get("samples") or []
    if samples:
        text = str(samples[0].get("text", "")).replace("\n", " ")
        line += f"\n    e.g. @{samples[0].get('author') or '?'}: {text[:100]}"
    if data.get("runbook"):
        line += f"\n    runbook: {data['runbook']}"
    return line


async def tail(
    settings: Settings,
    *,
    as_json: bool,
    from_beginning: bool,
    idle_exit_s: float | None,
    out: TextIO,
) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = settings.topic("alerts")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **settings.security.aiokafka_kwargs(),
    )
    await consumer.start()
    count = 0
    try:
        deadline = time.monotonic() + 30
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await asyncio.sleep(0.5)
        if not partitions:
            print(f"crisiswatch alerts tail: topic {topic} does not exist", file=sys.stderr)
            return 1
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        last = time.monotonic()
        while idle_exit_s is None or time.monotonic() - last < idle_exit_s:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    last = time.monotonic()
                    count += 1
                    if as_json:
                        out.write(rec.value.decode("utf-8", "replace") + "\n")
                    else:
                        try:
                            out.write(format_event(orjson.loads(rec.value)) + "\n")
                        except orjson.JSONDecodeError:
                            out.write(f"(not JSON at {rec.partition}@{rec.offset})\n")
            out.flush()
    finally:
        await consumer.stop()
    print(f"{count} alert events", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"crisiswatch alerts tail: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            tail(
                settings,
                as_json=args.json,
                from_beginning=args.from_beginning,
                idle_exit_s=args.idle_exit,
                out=sys.stdout,
            )
        )
    except KeyboardInterrupt:
        return 130
