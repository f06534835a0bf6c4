"""bench/bench_worker.py groups the 70% phase's alerts by boundary (``boundaries``)."""

from __future__ import annotations

import math

from bench.bench_worker import EARLIER_PHASE_S, SLOW_MS, boundaries

START = 1_000_000


def _row(boundary_s: int, latency_ms: float) -> dict[str, object]:
    return {"boundary_ms": START + boundary_s * 1000, "type": "opened", "latency_ms": latency_ms}


def test_a_boundary_is_slow_when_its_slowest_alert_is_over_the_target() -> None:
    rows = [_row(5, 30), _row(5, SLOW_MS + 1), _row(6, 40), _row(6, SLOW_MS), _row(7, 20)]
    b = boundaries(rows, START)
    assert b.count == 3
    assert b.slow == 1  # boundary 6's slowest alert is at the target, not over it
    assert b.worst_ms == SLOW_MS + 1


def test_the_early_p99_reads_only_the_first_thirty_seconds() -> None:
    early_s = int(EARLIER_PHASE_S) - 1
    rows = [_row(s, 10) for s in range(3, early_s + 1)] + [_row(early_s, 70)]
    rows += [_row(int(EARLIER_PHASE_S), 900), _row(100, 900)]  # later: not in the early p99
    b = boundaries(rows, START)
    assert b.early_p99_ms == 70
    assert b.worst_ms == 900
    assert b.slow == 2


def test_one_slow_boundary_of_a_thirty_second_phase_is_its_p99() -> None:
    # forty alerts a boundary, as the benchmark's load gives: one slow boundary is 4% of them
    rows = [_row(s, 900 if s == 12 else 40) for s in range(3, 30) for _ in range(40)]
    assert boundaries(rows, START).early_p99_ms == 900


def test_no_alerts_give_no_boundaries() -> None:
    b = boundaries([], START)
    assert (b.count, b.slow) == (0, 0)
    assert math.isnan(b.worst_ms) and math.isnan(b.early_p99_ms)
