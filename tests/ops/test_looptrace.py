"""bench/looptrace: the stall watchdog and match-loop trace a benchmark's worker can run
with, and the timeline that lines the trace up with the alerts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from bench.looptrace.timeline import lines, main

ROOT = Path(__file__).resolve().parents[2]
TRACER = ROOT / "bench" / "looptrace"


def _run(script: str, tmp_path: Path, *, trace: bool = True) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "LOOPTRACE"}
    env["PYTHONPATH"] = os.pathsep.join([str(TRACER), str(ROOT)])
    if trace:
        env["LOOPTRACE"] = str(tmp_path / "t")
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    return tmp_path / "t"


BLOCKING = """
    import asyncio, time

    def block_the_loop():
        time.sleep(0.25)

    async def main():
        await asyncio.sleep(0.1)
        block_the_loop()
        await asyncio.sleep(0.2)  # the loop runs again: the stall is over and logged

    asyncio.run(main())
"""


def test_a_blocked_event_loop_is_logged_with_where_it_was(tmp_path: Path) -> None:
    prefix = _run(BLOCKING, tmp_path)
    log = Path(f"{prefix}.stalls").read_text()
    stalls = [int(ms) for ms in re.findall(r"^STALL \S+ MainThread (\d+)ms", log, re.M)]
    assert stalls, log
    assert max(stalls) >= 200
    assert "block_the_loop" in log


def test_without_looptrace_nothing_is_traced(tmp_path: Path) -> None:
    _run(BLOCKING, tmp_path, trace=False)
    assert list(tmp_path.iterdir()) == []


def test_the_match_loops_ticks_are_traced(tmp_path: Path) -> None:
    prefix = _run(
        """
        import asyncio
        from rules.watermark import PartitionReport
        from streams.matchloop import Outbox

        async def main():
            outbox = Outbox(2, 500, 1000, 100, 1000)
            report = {0: PartitionReport(5_600, False, 1), 1: PartitionReport(7_900, False, 1)}
            outbox.take(report, with_tick=False)  # hits only: no tick
            outbox.take(report, with_tick=True)

        asyncio.run(main())
        """,
        tmp_path,
    )
    events = [orjson.loads(x) for x in Path(f"{prefix}.jsonl").read_bytes().splitlines()]
    assert [(e[0], e[2]) for e in events] == [("T", 5_000)]


def _alert(boundary_ms: int, latency_ms: float) -> dict[str, object]:
    return {"boundary_ms": boundary_ms, "latency_ms": latency_ms, "hops_ms": [1, 2, 3, 4]}


TRACE = [
    ["F", 10_510.0, {"0": [10_400, 10_505, 20], "1": [10_400, 10_490, 20]}],
    ["F", 10_530.0, {"1": [10_491, 10_520, 20]}],
    ["T", 10_540.0, 10_000],
    ["F", 11_700.0, {"0": [11_500, 11_600, 90], "1": [11_500, 11_650, 90]}],
    ["T", 11_705.0, 11_000],
]


def test_a_boundary_shows_when_its_crossing_post_was_fetched_and_its_tick_left() -> None:
    found = lines([_alert(10_000, 40), _alert(10_000, 60), _alert(11_000, 250)], TRACE, 500)
    first, second = found
    assert first.boundary_ms == 10_000 and first.latency_ms == 60  # the slowest alert
    # 10,500 is reached by partition 0's first fetch, by partition 1's second
    assert first.fetched_after_ms == {0: 10, 1: 30}
    assert first.tick_after_fetch_ms == 10
    assert second.fetched_after_ms == {0: 200, 1: 200}  # a backlog: fetched 200 ms late
    assert second.tick_after_fetch_ms == 5


def test_the_timeline_prints_the_slow_boundaries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_bytes(
        b"\n".join(orjson.dumps(a) for a in (_alert(10_000, 60), _alert(11_000, 250)))
    )
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(b"\n".join(orjson.dumps(e) for e in TRACE))
    assert main([str(alerts), str(trace)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "1 of 2 boundaries over 100 ms"
    assert len(out) == 2 and out[0].startswith("SLOW +    1 s")
