"""bench/soak.py: its memory verdict, and that a killed soak leaves no broker or worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.soak import (
    MIN_FLAT_SPAN_S,
    RSS_SLOPE_LIMIT_MB_PER_MIN,
    WARMUP_S,
    memory_verdict,
    rss_slope_mb_per_min,
)

ROOT = Path(__file__).resolve().parents[2]


def _samples(rss: list[float], every_s: float = 30.0) -> list[dict[str, float]]:
    return [{"t_s": i * every_s, "rss_mb": v} for i, v in enumerate(rss)]


def test_slope_is_mb_per_minute() -> None:
    assert rss_slope_mb_per_min(_samples([100, 105, 110, 115])) == pytest.approx(10.0)
    assert rss_slope_mb_per_min(_samples([100, 100])) is None


def test_warmup_covers_the_longest_window_the_prune_interval_and_the_lateness() -> None:
    assert WARMUP_S == 420.0


def test_growth_during_warmup_is_not_judged_but_after_it_is() -> None:
    # 0..420 s: windows filling (+40 MB/min); then level with +-15 MB noise
    filling = [100 + 20 * i for i in range(14)]
    level = [380, 395, 370, 388, 376, 392, 381, 374, 390, 383, 379, 386, 377, 389, 382, 385]
    verdict = memory_verdict(_samples(filling + level), end_rss=384, warmup_s=WARMUP_S)
    assert verdict["flat"] is True
    assert verdict["rss_mb_after_warmup"] == 380
    assert abs(float(verdict["slope_mb_per_min"] or 0)) < 1.0


def test_slow_steady_growth_after_warmup_fails() -> None:
    # +3 MB/min after warm-up: run D's kind of tail (end only ~8% above the warm value)
    rss = [300.0] * 14 + [300 + 1.5 * i for i in range(16)]
    verdict = memory_verdict(_samples(rss), end_rss=323, warmup_s=WARMUP_S)
    assert float(verdict["slope_mb_per_min"] or 0) > RSS_SLOPE_LIMIT_MB_PER_MIN
    assert verdict["flat"] is False


def test_a_soak_too_short_to_judge_fails() -> None:
    rss = [300.0] * (int((WARMUP_S + MIN_FLAT_SPAN_S) // 30) - 1)
    verdict = memory_verdict(_samples(rss), end_rss=300, warmup_s=WARMUP_S)
    assert float(verdict["span_s"] or 0) < MIN_FLAT_SPAN_S
    assert verdict["flat"] is False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_soak_stops_its_broker_and_worker(tmp_path: Path, sig: signal.Signals) -> None:
    argv = [sys.executable, "-m", "bench.soak", "--duration-s", "300", "--brands", "20"]
    argv += ["--calibrate-posts", "1000", "--workdir", str(tmp_path)]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    children: list[int] = []
    try:
        # the broker (java) and the worker are both children once the soak is soaking
        while time.monotonic() < deadline and len(children) < 2:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(1)
            children = _children(proc.pid)
        assert len(children) == 2, children
        broker_pid = int((tmp_path / "kafka" / "kafka.pid").read_text())
        assert broker_pid in children
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 130, out.decode()
        assert b"interrupted" in out
        for pid in children:
            assert not _alive(pid), f"child {pid} still running after {sig.name}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
