"""The match loop's slices: a boundary's tick leaves as soon as the slice that crosses it is
matched, and the offsets it commits never pass a post not yet matched."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from rules.post import format_rfc3339_ms
from streams.matchloop import SLICE_POSTS, MatchLoop
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder
from streams.settings import Settings
from streams.stages import MatchStage, Record
from tests.integration import scenario

PARTS = 4
T0 = 1_795_766_400_000  # a step boundary


class _Consumer:
    def __init__(self, highwater: dict[TopicPartition, int], matched: list[int]) -> None:
        self.highwater_of = highwater
        self.matched = matched
        self.commits: list[tuple[int, dict[TopicPartition, int]]] = []
        """(slices matched by then, offsets)."""

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwater_of)

    def highwater(self, tp: TopicPartition) -> int:
        return self.highwater_of[tp]

    async def position(self, tp: TopicPartition) -> int:
        return 0

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append((len(self.matched), dict(offsets)))


class _Loop(MatchLoop):
    """Sends recorded, acknowledged at once; the slices matched so far noted with each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.matched: list[int] = []
        """Posts in each slice matched, in order."""
        self.sent: list[tuple[int, int | None, int]] = []
        """(slices matched before it, the boundary sent everywhere, matches partition)."""

    async def send_matches(self, partition: int, value: bytes) -> Any:
        self.sent.append((len(self.matched), self.outbox.sent_boundary_ms, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_boundary_tick_leaves_after_the_slice_that_crosses_it(tmp_path: Path) -> None:
    rules_dir = scenario.write_rules(tmp_path / "brands")
    settings = Settings.from_env(
        {
            "CRISISWATCH_RULES_DIR": str(rules_dir),
            "CRISISWATCH_LATENESS": "500ms",
            "CRISISWATCH_STEP": "1s",
        }
    )
    metrics = WorkerMetrics(CollectorRegistry())
    holder = RuleHolder(rules_dir, metrics, lateness_ms=500, step_ms=1000)
    stage = MatchStage(holder, metrics, idle_after_ms=60_000, now_ms=lambda: T0)
    loop = _Loop(settings, stage, metrics, sender="s1")
    process = stage.process

    def counting(records: Any) -> Any:
        loop.matched.append(len(records))
        return process(records)

    stage.process = counting  # type: ignore[method-assign]

    # a backlog: 1,200 posts per partition, created 2 ms apart from T0 + 0.5 s on (the
    # partitions side by side in time), so the watermark (newest - 0.5 s, lowest
    # partition) reaches T0 + 1 s with the posts created at T0 + 1.5 s: 500 of each
    # partition's 1,200, in the fifth of ten slices
    per_part = 1200
    batches: dict[TopicPartition, list[Record]] = {}
    for q in range(PARTS):
        recs = []
        for i in range(per_part):
            at = T0 + 500 + 2 * i
            post = {
                "id": f"x:{q}-{i}",
                "source": "mastodon",
                "text": "acme lunch",
                "created_at": format_rfc3339_ms(at),
                "author": {"id": "1", "handle": "u1", "followers": 1},
            }
            recs.append(Record("p.posts", q, i, None, orjson.dumps(post)))
        batches[TopicPartition("p.posts", q)] = recs
    consumer = _Consumer({tp: per_part for tp in batches}, loop.matched)
    loop.consumer = consumer  # type: ignore[assignment]
    stage.clock.assign(set(range(PARTS)), T0)

    await loop._process(consumer, batches)  # type: ignore[arg-type]
    if loop._pending is not None:
        await loop._pending

    slices = -(-PARTS * per_part // SLICE_POSTS)
    assert loop.matched == [PARTS * per_part // slices] * slices
    crossing = 1 + next(
        k for k in range(slices) if 500 + 2 * (per_part * (k + 1) // slices - 1) >= 1500
    )
    assert crossing < slices
    boundary = [(k, q) for k, b, q in loop.sent if b == T0 + 1000]
    # every partition gets the tick right after the crossing slice, not after the batch
    assert sorted(boundary)[:PARTS] == [(crossing, q) for q in range(PARTS)]
    # offsets are committed as the slices go, never past a post not yet matched
    assert consumer.commits  # (at most every COMMIT_EVERY_S: the rest with the next batch)
    slice_ends = {per_part * k // slices for k in range(1, slices + 1)}
    for matched, offsets in consumer.commits:
        assert all(offset <= per_part * matched // slices for offset in offsets.values())
        assert set(offsets.values()) <= slice_ends
    assert loop.next_offset == {q: per_part for q in range(PARTS)}
