"""streams/memtrace.py: the memory figures it samples are real and the trace file is written."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from streams.codecs import encode_hit
from streams.memtrace import MemTrace, _libc, malloc_info, pymalloc_stats, state_sizes
from streams.metrics import WorkerMetrics
from streams.rulesource import RuleHolder
from streams.stages import DetectStage, MatchStage, Record, partition_for
from tests.integration import scenario


def test_pymalloc_and_malloc_figures_move_with_allocations() -> None:
    before = pymalloc_stats()
    assert before["arenas"] > 0 and 0 < before["allocated_kb"] <= before["total_kb"]
    keep = [str(i) * 3 for i in range(200_000)]  # small objects: pymalloc
    after = pymalloc_stats()
    assert after["allocated_kb"] - before["allocated_kb"] > 5_000
    del keep
    heap = malloc_info(_libc())
    assert heap is not None  # glibc
    big = [bytearray(64 * 1024) for _ in range(100)]  # > 512 bytes: malloc
    assert malloc_info(_libc())["in_use_kb"] - heap["in_use_kb"] >= 6_000  # type: ignore[index]
    del big


def test_sample_has_rss_heap_top_sites_and_the_probe(tmp_path: Path) -> None:
    trace = MemTrace(tmp_path / "t.jsonl", warm_s=0.0, probe=lambda: {"n": 7})
    tracemalloc.start(1)
    try:
        first = trace.sample()  # the baseline for "grew"
        line = sys._getframe().f_lineno + 1
        keep = [list(range(50)) for _ in range(20_000)]  # this line grows
        second = trace.sample()
    finally:
        tracemalloc.stop()
    assert first["rss_kb"] > 0 and first["anon_kb"] > 0 and first["probe"] == {"n": 7}
    assert "grew" not in first
    site, kb, count = second["grew"][0]
    assert site.endswith(f"test_memtrace.py:{line}") and kb > 5_000 and count > 0
    assert len(keep) == 20_000
    failing = MemTrace(tmp_path / "u.jsonl", probe=lambda: {}["missing"])
    row = failing.sample()
    assert "KeyError" in row["probe"]["error"] and "top" not in row  # not tracing
    json.dumps(row)  # a JSON line


def test_state_sizes_count_the_detectors_structures(tmp_path: Path) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    holder = RuleHolder(scenario.write_rules(tmp_path / "b"), metrics, lateness_ms=60_000,
                        step_ms=10_000)  # fmt: skip
    match = MatchStage(holder, metrics, idle_after_ms=1_000, now_ms=lambda: 1_000)
    detect = DetectStage(holder, metrics, partitions=4, load=lambda _: None, now_ms=lambda: 1_000)
    posts = scenario.posts()[:200]
    out = match.process([Record("p", 0, i, None, orjson.dumps(p)) for i, p in enumerate(posts)])
    assert out.hits
    detect.process(
        [Record("m", partition_for(h.brand, 4), i, None, encode_hit(h)) for i, h in
         enumerate(out.hits)]
    )  # fmt: skip
    sizes = state_sizes(detect)
    assert sizes["brand_states"] == len({h.brand for h in out.hits})
    assert sizes["dedup_ids"] == len({(h.brand, h.post_id) for h in out.hits})
    assert sizes["step_buckets"] >= sizes["brand_states"]
    assert sizes["hist_buckets"] >= sizes["brand_states"]
