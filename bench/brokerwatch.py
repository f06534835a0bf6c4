"""Watch a local broker's data directory: segment rolls and the log cleaner, with times.

    .venv/bin/python bench/brokerwatch.py OUT.jsonl [--seconds 900] [--dirs GLOB]

Run beside ``bench/bench_worker.py`` (whose broker lives in ``/tmp/bench-worker-*/kafka``):
every ``--every`` seconds it lists the broker's data directories and writes one JSON line
per new file, ``[wall s, "<topic-partition>/<file>"]``: a new ``.log`` is a segment roll,
a ``.cleaned`` or ``.swap`` file the log cleaner compacting that partition, and
``[wall s, "CHECKPOINT"]`` a change of the cleaner's offset checkpoint.  Session 17 lined
these up with the alerts of ``--dump`` and found the worst boundaries next to the
cleaner's passes over the state changelog (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

CLEANER_SUFFIXES = (".log", ".cleaned", ".swap")
CHECKPOINT = "cleaner-offset-checkpoint"


def scan(data_dirs: list[str], seen: set[str], checkpoints: dict[str, float]) -> list[str]:
    """What is new since the last scan (``seen`` and ``checkpoints`` are updated)."""
    out = []
    for data in data_dirs:
        for path in sorted(glob.glob(os.path.join(data, "*", "*"))):
            if path.endswith(CLEANER_SUFFIXES) and path not in seen:
                seen.add(path)
                out.append(os.path.relpath(path, data))
        try:
            mtime = os.stat(os.path.join(data, CHECKPOINT)).st_mtime
        except OSError:
            continue
        if checkpoints.get(data) != mtime:
            checkpoints[data] = mtime
            out.append("CHECKPOINT")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON lines to append to")
    parser.add_argument("--seconds", type=float, default=900.0, help="how long to watch")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between scans")
    parser.add_argument(
        "--dirs", default="/tmp/bench-worker-*/kafka/data", help="the broker's data directories"
    )
    args = parser.parse_args(argv)
    seen: set[str] = set()
    checkpoints: dict[str, float] = {}
    end = time.monotonic() + args.seconds
    with args.out.open("a", buffering=1) as out:
        while time.monotonic() < end:
            for name in scan(glob.glob(args.dirs), seen, checkpoints):
                out.write(json.dumps([time.time(), name]) + "\n")
            time.sleep(args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
