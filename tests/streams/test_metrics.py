"""The match stage's metrics, counted once per batch, ``BatchHistogram``, and the scrape."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rules.post import format_rfc3339_ms, post_from_dict
from streams.metrics import LATENCY_BUCKETS_S, BatchHistogram, WorkerMetrics
from streams.rulesource import RuleHolder
from streams.stages import MatchStage, Record
from streams.web import render_metrics
from tests.integration import scenario

NOW_MS = 1_800_000_000_000


def _histograms() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, BatchHistogram]:
    ref_registry, batch_registry = CollectorRegistry(), CollectorRegistry()
    ref = Histogram("x_seconds", "doc", buckets=LATENCY_BUCKETS_S, registry=ref_registry)
    batch = BatchHistogram("x_seconds", "doc", buckets=LATENCY_BUCKETS_S, registry=batch_registry)
    return ref_registry, ref, batch_registry, batch


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_batch_histogram_exposes_what_prometheus_client_would() -> None:
    rnd = random.Random(5)
    # bounds themselves (le is inclusive), zero, above the last bound, and a spread
    values = [*LATENCY_BUCKETS_S, 0.0, 61.0, 1e9] + [rnd.uniform(0, 70) for _ in range(2000)]
    values += [rnd.choice(LATENCY_BUCKETS_S) for _ in range(200)]
    ref_registry, ref, batch_registry, batch = _histograms()
    for v in values:
        ref.observe(v)
    batch.observe_all(values[:1000])
    for v in values[1000:]:
        batch.observe(v)
    assert _samples(batch_registry) == pytest.approx(_samples(ref_registry))
    ref_text = generate_latest(ref_registry).decode().splitlines()
    batch_text = generate_latest(batch_registry).decode().splitlines()

    # the same exposition, line for line, but for the creation time and the float sum
    def _stable(lines: list[str]) -> list[str]:
        return [ln for ln in lines if not ln.startswith(("x_seconds_created", "x_seconds_sum"))]

    assert _stable(batch_text) == _stable(ref_text)
    assert any(ln.startswith("x_seconds_created ") for ln in batch_text)


def test_match_stage_counts_per_batch_what_it_would_count_per_post(tmp_path: Path) -> None:
    rules_dir = scenario.write_rules(tmp_path / "brands")
    metrics = WorkerMetrics(CollectorRegistry())
    holder = RuleHolder(rules_dir, metrics, lateness_ms=60_000, step_ms=10_000)
    stage = MatchStage(holder, metrics, idle_after_ms=1_000, now_ms=lambda: NOW_MS)
    items = scenario.posts()
    for i, item in enumerate(items):  # every third post without ingested_at
        if i % 3:
            item["ingested_at"] = format_rfc3339_ms(NOW_MS - 1000 * (i % 90))
        else:
            item.pop("ingested_at", None)
    records = [Record("p", 0, i, None, orjson.dumps(p)) for i, p in enumerate(items)]
    hits = []
    for start in range(0, len(records), 37):  # uneven batches
        hits.extend(stage.process(records[start : start + 37]).hits)

    value = metrics.registry.get_sample_value
    sources = Counter(str(p["source"]) for p in items)
    assert len(sources) > 1
    for source, n in sources.items():
        assert value("crisiswatch_posts_consumed_total", {"source": source}) == n
    by_rule: Counter[tuple[str, str]] = Counter()
    for hit in hits:
        by_rule[(hit.brand, "mentions")] += 1
        for rule_id in hit.rule_ids:
            by_rule[(hit.brand, rule_id)] += 1
    assert len(by_rule) > 2
    for (brand, rule), n in by_rule.items():
        assert value("crisiswatch_matches_total", {"brand": brand, "rule": rule}) == n
    latencies = [
        (NOW_MS - post.ingested_at_ms) / 1000
        for post in map(post_from_dict, items)
        if post.ingested_at_ms is not None
    ]
    assert value("crisiswatch_processing_latency_seconds_count") == len(latencies)
    assert value("crisiswatch_processing_latency_seconds_sum") == pytest.approx(sum(latencies))
    assert value("crisiswatch_processing_latency_seconds_bucket", {"le": "10.0"}) == sum(
        1 for s in latencies if s <= 10.0
    )


class _SlowCollector(Collector):
    """Renders like a 1,000-brand worker's registry: a blocking 0.3 s in ``collect``."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        time.sleep(0.3)
        yield GaugeMetricFamily("slow_gauge", "doc", value=1.0)


async def test_a_scrape_renders_off_the_event_loop() -> None:
    """The event loop keeps running while /metrics renders (it stopped the worker for
    60-90 ms a scrape at 1,000 brands), and the text is what generate_latest gives."""
    registry = CollectorRegistry()
    registry.register(_SlowCollector())
    batch = BatchHistogram("x_seconds", "doc", buckets=LATENCY_BUCKETS_S, registry=registry)
    batch.observe_all([0.003, 0.2])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        body = await render_metrics(registry)
    finally:
        task.cancel()
    assert ticks >= 10  # 0 when rendering blocks the loop for the collector's 0.3 s
    assert b"slow_gauge 1.0" in body
    assert b'x_seconds_bucket{le="0.005"} 1.0' in body
    assert b"x_seconds_count 2.0" in body
