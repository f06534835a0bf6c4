"""Memory trace of a running worker, for soak investigations (``CRISISWATCH_MEMTRACE``).

    CRISISWATCH_MEMTRACE=/tmp/trace.jsonl [CRISISWATCH_MEMTRACE_S=30] crisiswatch worker

A daemon thread appends one JSON line every ``CRISISWATCH_MEMTRACE_S`` seconds:

- ``rss_kb`` / ``anon_kb``: the process's resident memory (``/proc/self/status``);
- ``traced_kb``: Python allocations live now (``tracemalloc``, started here);
- ``malloc``: glibc's heap (``mallinfo2``): ``in_use_kb`` (malloc'd and not freed, by
  Python's large objects AND native code: RocksDB, librdkafka-free aiokafka buffers,
  Hyperscan scratch), ``free_kb`` (freed but still held by the allocator) and
  ``mmap_kb`` (large blocks mapped directly);
- ``top``: the largest Python allocation sites (file:line, KB, blocks), and ``grew``:
  the sites that grew most since the first sample taken after ``warm_s``;
- ``probe``: whatever the caller's ``probe()`` returns (sizes of the worker's own
  structures).

RSS minus traced minus native in-use is roughly allocator overhead and fragmentation
(pymalloc arenas, glibc free lists) plus code and libraries.  Tracing slows the worker
(every allocation is recorded): use it to find where memory goes, not to measure speed.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):
        return None


def malloc_info(libc: Any) -> dict[str, int] | None:
    """glibc heap figures in KB (None on another libc)."""
    if libc is None:
        return None
    mi = libc.mallinfo2()
    return {
        "in_use_kb": (mi.uordblks + mi.hblkhd) // 1024,
        "free_kb": mi.fordblks // 1024,
        "mmap_kb": mi.hblkhd // 1024,
        "arena_kb": mi.arena // 1024,
    }


def proc_status_kb(*fields: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in fields:
            out[key] = int(rest.split()[0])
    return out


def pymalloc_stats() -> dict[str, int]:
    """pymalloc's own figures (``sys._debugmallocstats``, which writes to fd 2: captured)."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    wanted = {
        "# arenas allocated current": "arenas",
        "# bytes in allocated blocks": "allocated_kb",
        "# bytes in available blocks": "available_kb",
        "Total": "total_kb",
    }
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        key = key.strip()
        if key in wanted and wanted[key] not in out:  # the first "Total": the arenas
            number = int(value.strip().replace(",", ""))
            out[wanted[key]] = number if wanted[key] == "arenas" else number // 1024
    return out


def _sites(stats: list[Any], n: int) -> list[list[Any]]:
    out = []
    for s in stats[:n]:
        frame = s.traceback[0]
        size = getattr(s, "size_diff", s.size)
        count = getattr(s, "count_diff", s.count)
        out.append([f"{frame.filename}:{frame.lineno}", size // 1024, count])
    return out


class MemTrace:
    def __init__(
        self,
        path: Path,
        interval_s: float = 30.0,
        warm_s: float = 180.0,
        probe: Callable[[], dict[str, Any]] | None = None,
        top: int = 25,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self.warm_s = warm_s
        self.probe = probe
        self.top = top
        self.libc = _libc()
        self.baseline: tracemalloc.Snapshot | None = None
        self.started = time.monotonic()

    def sample(self) -> dict[str, Any]:
        t = time.monotonic() - self.started
        status = proc_status_kb("VmRSS", "RssAnon", "RssFile")
        row: dict[str, Any] = {
            "t_s": round(t, 1),
            "rss_kb": status.get("VmRSS"),
            "anon_kb": status.get("RssAnon"),
            "malloc": malloc_info(self.libc),
            "pymalloc": pymalloc_stats(),
        }
        if tracemalloc.is_tracing():
            row["gc_objects"] = len(gc.get_objects())
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            traced, peak = tracemalloc.get_traced_memory()
            row["traced_kb"] = traced // 1024
            row["traced_peak_kb"] = peak // 1024
            row["top"] = _sites(snap.statistics("lineno"), self.top)
            if self.baseline is None and t >= self.warm_s:
                self.baseline = snap
            elif self.baseline is not None:
                row["grew"] = _sites(snap.compare_to(self.baseline, "lineno"), self.top)
        if self.probe is not None:
            try:
                row["probe"] = self.probe()
            except Exception as exc:  # a probe racing the event loop: report, keep going
                row["probe"] = {"error": repr(exc)}
        return row

    def run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                row = self.sample()
            except Exception:
                log.exception("memtrace sample failed")
                continue
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


def start(
    path: str,
    interval_s: float = 30.0,
    probe: Callable[[], dict[str, Any]] | None = None,
    *,
    trace_python: bool = True,
) -> MemTrace:
    """Start the sampling daemon thread (and tracemalloc, if ``trace_python``)."""
    if trace_python:
        tracemalloc.start(1)
    trace = MemTrace(Path(path), interval_s=interval_s, probe=probe)
    threading.Thread(target=trace.run, name="memtrace", daemon=True).start()
    log.warning("memtrace: tracing allocations, sampling every %.0f s into %s", interval_s, path)
    return trace


def state_sizes(detect_stage: Any) -> dict[str, Any]:
    """Entries of the detector's per-brand structures (``streams.stages.DetectStage``)."""
    states = list(detect_stage.states.values())
    series = [se for st in states for se in list(st.series.values())]
    return {
        "brand_states": len(states),
        "dedup_ids": sum(len(st.dedup) for st in states),
        "step_buckets": sum(len(se.counts) for se in series),
        "hist_buckets": sum(len(se.hist) for se in series),
        "state_cache_keys": sum(len(st.cache) for st in states),
    }


def worker_probe(worker: Any) -> dict[str, Any]:
    """Sizes of the worker's own structures (``streams.app.Worker``); read from the
    trace thread while the event loop runs, so figures may be off by a batch."""
    out = state_sizes(worker.detect_stage)
    app = worker.app
    consumer = app.consumer
    out["faust_acked"] = sum(len(v) for v in list(consumer._acked.values()))
    out["faust_acked_index"] = sum(len(v) for v in list(consumer._acked_index.values()))
    out["faust_gaps"] = sum(len(v) for v in list(consumer._gap.values()))
    buffer = getattr(app.producer, "buffer", None)
    if buffer is not None:
        out["faust_producer_pending"] = buffer.size
    rocks: dict[str, int] = {}
    for table in app.tables.values():
        dbs = getattr(table.data, "_dbs", {})
        for db in list(dbs.values()):
            for prop in (
                "rocksdb.cur-size-all-mem-tables",
                "rocksdb.block-cache-usage",
                "rocksdb.estimate-table-readers-mem",
            ):
                value = db.property_int_value(prop) or 0
                rocks[prop] = rocks.get(prop, 0) + value // 1024
        key_index = getattr(table.data, "_key_index", None)
        if key_index is not None:
            out["faust_key_index"] = len(key_index)
    out["rocksdb_kb"] = rocks
    return out
