"""bench/bench_worker.py reads one metric off the worker's /metrics, not the whole page."""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_worker import CONSUMED, counter_total, rss_gb
from streams.metrics import WorkerMetrics


@dataclass
class _Page:
    """Stands in for ``WorkerProcess``: ``get("/metrics?name[]=...")`` renders those series
    of a registry, as the worker does."""

    registry: CollectorRegistry

    def get(self, path: str) -> tuple[int, bytes]:
        page, _, query = path.partition("?")
        assert page == "/metrics"
        names = [v for k, _, v in (q.partition("=") for q in query.split("&")) if k == "name[]"]
        registry = self.registry.restricted_registry(names) if names else self.registry
        return 200, generate_latest(registry)


def _parsed_total(body: bytes, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name
    )


def test_counter_total_sums_the_counters_samples_and_nothing_else() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.posts_consumed_by("x").inc(7)
    metrics.posts_consumed_by("weibo").inc(5)
    # per-brand series fill the page around it, as in the worker
    for i in range(50):
        metrics.gauge(metrics.open_incidents, f"brand{i:04d}", "high").set(1)
    page = _Page(registry)

    got = counter_total(page, CONSUMED)  # type: ignore[arg-type]

    # the counter's `_created` samples (timestamps) and other metrics are not counted
    assert got == 12.0
    assert got == _parsed_total(page.get("/metrics")[1], CONSUMED)
    assert counter_total(page, "crisiswatch_open_incidents") == 50  # type: ignore[arg-type]


def test_counter_total_of_a_metric_not_on_the_page_is_zero() -> None:
    page = _Page(CollectorRegistry())
    assert counter_total(page, CONSUMED) == 0.0  # type: ignore[arg-type]


def test_resident_memory_is_read_off_proc_in_gigabytes() -> None:
    """The benchmark reports the worker's memory at the end of a phase: a 50 MB buffer
    held by this process shows in what it reads."""
    before = rss_gb(os.getpid())
    held = bytearray(50_000_000)
    held[::4096] = b"x" * len(held[::4096])  # touch every page
    assert 0.04 < rss_gb(os.getpid()) - before < 0.2
    del held
