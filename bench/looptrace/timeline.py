"""Line up a worker's match-loop trace with the alerts of a benchmark phase.

    .venv/bin/python bench/looptrace/timeline.py ALERTS.jsonl TRACE.jsonl [--all]

ALERTS.jsonl is what ``bench_worker.py --dump`` wrote (the 70% phase's alerts), TRACE.jsonl
what ``bench/looptrace/sitecustomize.py`` wrote for the worker (``LOOPTRACE=<prefix>``:
``<prefix>.jsonl``).  For each boundary of the phase (only the slow ones without
``--all``): its slowest alert and that alert's hops (as ``bench_worker.py`` splits them),
how long after the crossing post was created (boundary + lateness) each posts partition's
first fetch reaching it came back, and how long after the last of those fetches the tick
left.  A slow boundary whose fetches came late was behind in the match loop (a backlog of
posts, or the broker); one whose tick or sweep came late was held up after the fetch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker_load import LATENESS_MS, SLOW_MS


@dataclass(frozen=True)
class BoundaryLine:
    boundary_ms: int
    latency_ms: float
    hops_ms: Sequence[int] | None
    fetched_after_ms: dict[int, float]
    """posts partition -> its first fetch reaching boundary + lateness, minus that time."""
    tick_after_fetch_ms: float | None
    """The tick's send time minus the last of those fetches (None: not traced)."""


def lines(
    alerts: Sequence[dict[str, Any]], trace: Sequence[list[Any]], lateness_ms: int = LATENESS_MS
) -> list[BoundaryLine]:
    """One line per boundary of ``alerts``, in boundary order."""
    worst: dict[int, dict[str, Any]] = {}
    for row in alerts:
        b = int(row["boundary_ms"])
        if b not in worst or row["latency_ms"] > worst[b]["latency_ms"]:
            worst[b] = row
    fetches = [e for e in trace if e[0] == "F"]
    ticks = sorted((e[2], e[1]) for e in trace if e[0] == "T" and e[2] is not None)
    out = []
    for b in sorted(worst):
        need = b + lateness_ms
        reached: dict[int, float] = {}
        for _, at, parts in fetches:
            for p, (_, last_ts, _) in parts.items():
                if int(p) not in reached and last_ts >= need:
                    reached[int(p)] = at
        tick = next((at for boundary, at in ticks if boundary >= b), None)
        after = tick - max(reached.values()) if tick is not None and reached else None
        row = worst[b]
        out.append(
            BoundaryLine(
                b,
                float(row["latency_ms"]),
                row.get("hops_ms"),
                {p: at - need for p, at in sorted(reached.items())},
                after,
            )
        )
    return out


def render(line: BoundaryLine, first_ms: int) -> str:
    fetched = " ".join(f"p{p} {ms:.0f}" for p, ms in line.fetched_after_ms.items())
    tick = "-" if line.tick_after_fetch_ms is None else f"{line.tick_after_fetch_ms:.0f}"
    mark = "SLOW" if line.latency_ms > SLOW_MS else "    "
    return (
        f"{mark} +{(line.boundary_ms - first_ms) / 1000:5.0f} s  {line.latency_ms:5.0f} ms  "
        f"hops {line.hops_ms}  crossing post fetched after: {fetched or '-'} ms  "
        f"tick after the last fetch: {tick} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("alerts", type=Path, help="bench_worker.py --dump output")
    parser.add_argument("trace", type=Path, help="the worker's LOOPTRACE .jsonl")
    parser.add_argument("--all", action="store_true", help="every boundary, not only slow ones")
    args = parser.parse_args(argv)
    alerts = [orjson.loads(x) for x in args.alerts.read_bytes().splitlines() if x.strip()]
    trace = [orjson.loads(x) for x in args.trace.read_bytes().splitlines() if x.strip()]
    if not alerts:
        print(f"{args.alerts}: no alerts", file=sys.stderr)
        return 1
    found = lines(alerts, trace)
    first = found[0].boundary_ms
    slow = [x for x in found if x.latency_ms > SLOW_MS]
    for line in found if args.all else slow:
        print(render(line, first))
    print(f"{len(slow)} of {len(found)} boundaries over {SLOW_MS:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
