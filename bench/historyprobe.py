"""History probe: how big does the 24 h baseline history get, and does it stop growing?

    .venv/bin/python bench/historyprobe.py [--brands 100] [--hours 26]

The soak's rules (``bench/soak.py``: per brand a mentions query, a keyword rule and a
velocity rule) through ``rules.detect.Detector`` alone, over ``--hours`` of event
time, sparse on purpose: one hit per brand per event minute that matches the keyword
rule too (so both counted series, ``mentions`` and the keyword rule's, get a one-minute
history bucket every minute: the worst case for the history, which is what a busy
soak produces).  Every two event hours it prints the Python memory traced by
``tracemalloc`` (all brand states), the history buckets held, the size of one
serialised brand state, and what the worker's write-back stores of it: the head
(written at every write-back) and the history key (written once per 10 minutes).
At the end, the first brand's write-backs as the worker makes them (a hit and a
write-back every 5 s): ``write_state``'s time and the bytes stored per write-back.  The history is
pruned behind the longest baseline (keyword rules report a 24 h one), so it should
level off after 24 h.  Scale the memory by 1,000 / ``--brands`` for the soak.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.soak import brand_words, write_brands
from rules.detect import Detector, dump_state
from rules.loader import load_rules
from rules.model import Hit
from rules.post import format_rfc3339_ms
from rules.state import state_written, write_state

START_MS = 1_795_800_000_000
MINUTE_MS = 60_000
WRITES = 600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brands", type=int, default=100)
    ap.add_argument("--hours", type=int, default=26)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ruleset = load_rules(write_brands(Path(tmp) / "brands", args.brands))
    detector = Detector(ruleset, lateness_ms=60_000, step_ms=10_000)
    brands = [b.id for b in ruleset.brands]
    tracemalloc.start()
    states = {b: detector.new_state(b) for b in brands}
    seq = 0
    history_bytes = 0
    for minute in range(args.hours * 60):
        ts = START_MS + minute * MINUTE_MS + 30_000
        for i, brand in enumerate(brands):
            name, word = brand_words(i)
            hit = Hit(brand, f"h:{seq}", "probe", ts, f"a{seq % 5000}", f"@a{seq % 5000}",
                      100, ("quality",), f"{name} {word} " + "x" * 80, None,
                      format_rfc3339_ms(ts))  # fmt: skip
            seq += 1
            detector.observe(states[brand], hit)
            detector.advance(states[brand], ts - 60_000)
        # the first brand written back once a minute, as the worker does (more often)
        w = write_state(states[brands[0]])
        state_written(states[brands[0]])
        history_bytes += sum(len(v) for name, v in w.segments if name.startswith("h"))
        if (minute + 1) % 120 == 0:
            traced, _ = tracemalloc.get_traced_memory()
            hist = sum(len(se.hist) for st in states.values() for se in st.series.values())
            size = len(dump_state(states[brands[0]]))
            print(
                f"event hour {(minute + 1) // 60:2d}: traced {traced / 1e6:6.1f} MB "
                f"({traced / len(brands) / 1e3:5.1f} KB per brand); history buckets {hist:,}; "
                f"one serialised state {size / 1e3:5.1f} KB; its head {len(w.head) / 1e3:4.1f} KB, "
                f"its history key {history_bytes / 1e3:5.1f} KB written in 2 h",
                flush=True,
            )
            history_bytes = 0
    # then the first brand as the worker writes it back: a hit and a write-back every 5 s
    tracemalloc.stop()  # it slows every allocation several times
    brand, st = brands[0], states[brands[0]]
    name, word = brand_words(0)
    ts = START_MS + args.hours * 60 * MINUTE_MS
    spent, stored = 0.0, 0
    for i in range(WRITES):
        hit = Hit(brand, f"w:{i}", "probe", ts + i * 5_000, "a", "@a", 100, ("quality",),
                  f"{name} {word}", None, format_rfc3339_ms(ts + i * 5_000))  # fmt: skip
        detector.observe(st, hit)
        detector.advance(st, ts + i * 5_000 - 60_000)
        started = time.perf_counter()
        w = write_state(st)
        state_written(st)
        spent += time.perf_counter() - started
        stored += len(w.head) + sum(len(v) for _, v in w.segments)
    print(
        f"then {WRITES} write-backs 5 s apart: write_state {spent / WRITES * 1e6:.0f} us and "
        f"{stored / WRITES / 1e3:.1f} KB stored per write-back"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
