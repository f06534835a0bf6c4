"""Memory probe: is the rule engine's state bounded under steady traffic?

    .venv/bin/python bench/memprobe.py [--minutes 16] [--rate 2000] [--brands 1000]

Feeds the soak's traffic (``bench/soak.py``: 1,000 brands, 20% of posts mention
one) through ``rules.engine.Engine`` in process, event time advancing ``--rate``
posts per second, and prints after every minute of event time the Python memory
traced by ``tracemalloc`` and the sizes of the per-brand structures (dedup ids,
step buckets, baseline history).  Bounded state shows as a plateau once the
longest window has filled; the largest allocation sites are printed at the end.
No Kafka, no faust: what grows here is the engine's; what grows only in the
worker is not.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.soak import make_post, write_brands
from rules.engine import Engine
from rules.loader import load_rules
from rules.post import decode_post

START_MS = 1_795_800_000_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=16, help="minutes of event time")
    ap.add_argument("--rate", type=int, default=2000, help="posts per second of event time")
    ap.add_argument("--brands", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(load_rules(write_brands(Path(tmp) / "brands", args.brands)))
    rnd = random.Random(1)
    tracemalloc.start()
    seq = 0
    for minute in range(1, args.minutes + 1):
        for _ in range(args.rate * 60):
            ts = START_MS + (seq * 1000) // args.rate
            _, value = make_post(rnd, seq, args.brands, ts)
            engine.process(decode_post(value))
            seq += 1
        gc.collect()
        traced, _ = tracemalloc.get_traced_memory()
        states = engine.states.values()
        series = [se for s in states for se in s.series.values()]
        print(
            f"event minute {minute:2d}: traced {traced / 1e6:6.1f} MB; "
            f"dedup ids {sum(len(s.dedup) for s in states):,}; "
            f"step buckets {sum(len(se.keys) for se in series):,}; "
            f"history buckets {sum(len(se.hist) for se in series):,}",
            flush=True,
        )
    for stat in tracemalloc.take_snapshot().statistics("lineno")[:8]:
        print(stat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
