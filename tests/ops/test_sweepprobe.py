"""bench/sweepprobe.py: ``Split`` times each wrapped part once per outermost call, and a
short run with ``--split`` reports every part of the sweep and of the match stage."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path

from bench.sweepprobe import DETECT_PARTS, MATCH_PARTS, Split

ROOT = Path(__file__).resolve().parents[2]
PROBE_ARGS = ["--brands", "20", "--rate", "2000", "--seconds", "4", "--every", "2", "--split"]


def test_a_recursive_call_is_timed_once_at_the_outermost() -> None:
    now = [0.0]
    split = Split(clock=lambda: now[0])

    def work(depth: int) -> int:
        now[0] += 20  # each level's own work
        return depth if depth == 0 else timed(depth - 1)

    timed = split.wrap("work", work)
    assert timed(2) == 0
    # three levels of 20 inside one outermost call: 60, not 60 + 40 + 20
    assert split.take() == {"work": 60.0}
    assert split.take() == {"work": 0.0}
    assert timed(0) == 0
    assert split.take() == {"work": 20.0}


def test_an_exception_still_counts_its_time_and_leaves_the_part_reentrant() -> None:
    now = [0.0]
    split = Split(clock=lambda: now[0])

    def fail() -> None:
        now[0] += 10
        raise ValueError("no")

    timed = split.wrap("fail", fail)
    for _ in range(2):
        with contextlib.suppress(ValueError):
            timed()
    assert split.take() == {"fail": 20.0}


def test_a_short_run_reports_every_part() -> None:
    out = subprocess.run(
        [sys.executable, "bench/sweepprobe.py", *PROBE_ARGS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    parts = [line for line in out.splitlines() if line.startswith("    a boundary record: ")]
    assert len(parts) == 2, out
    for line in parts:
        figures = dict(re.findall(r"(\w+) ([\d.]+) (?:ms|us)", line))
        assert set(figures) == set(DETECT_PARTS) | set(MATCH_PARTS), line
        # every boundary record advances brands, and every post is decoded and matched
        for name in ("advance", "_evaluate", "decode_post", "match"):
            assert float(figures[name]) > 0, line
        # a part inside another is no longer than it
        assert float(figures["_counts"]) <= float(figures["advance"]), line
