"""Event-loop stalls and the match loop's timeline, for a worker under a benchmark.

Python imports ``sitecustomize`` at start-up from the module path, so a worker started
with this directory on ``PYTHONPATH`` and ``LOOPTRACE=<file prefix>`` in its environment
writes two files (nothing happens without ``LOOPTRACE``)::

    .venv/bin/python bench/bench_worker.py --no-record ... \\
        --worker-env PYTHONPATH=$PWD/bench/looptrace --worker-env LOOPTRACE=/tmp/t1

- ``<prefix>.stalls``: every time an event loop (any thread's) went more than ``STALL_S``
  without running its 5 ms heartbeat, the stall's length and the stacks a watchdog
  thread sampled meanwhile (it samples only when it gets the GIL: a stall in C code
  holding the GIL shows where the loop was when it came back);
- ``<prefix>.jsonl``: the match loop's fetches of the posts topic (``["F", wall ms,
  {partition: [first record's timestamp, last's, count]}]``) and the watermark ticks it
  sends (``["T", wall ms, boundary ms]``).

``bench/looptrace/timeline.py`` lines that file up with the alerts ``bench_worker.py
--dump`` wrote: for each boundary, when the post that let it through was fetched and when
its tick left.  Session 16 found the slow boundaries with it (BENCHMARKS.md).
"""

from __future__ import annotations

import os

STALL_S = 0.03
BEAT_S = 0.005

if os.environ.get("LOOPTRACE"):
    import asyncio
    import atexit
    import collections
    import json
    import sys
    import threading
    import time
    import traceback
    from typing import Any

    _prefix = os.environ["LOOPTRACE"]
    _loops: dict[int, dict[str, Any]] = {}
    _events: list[list[Any]] = []
    _run_forever = asyncio.BaseEventLoop.run_forever

    def _beat(loop: asyncio.AbstractEventLoop, st: dict[str, Any]) -> None:
        st["last"] = time.monotonic()
        if st["live"]:
            loop.call_later(BEAT_S, _beat, loop, st)

    def _traced_run_forever(self: asyncio.BaseEventLoop) -> None:
        st: dict[str, Any] = {
            "last": time.monotonic(),
            "tid": threading.get_ident(),
            "name": threading.current_thread().name,
            "live": True,
            "start": None,
            "samples": collections.Counter(),
        }
        _loops[id(self)] = st
        self.call_soon(_beat, self, st)
        if not _started:
            _started.append(True)
            _patch_match_loop()
            threading.Thread(target=_watch, name="looptrace", daemon=True).start()
        try:
            _run_forever(self)
        finally:
            st["live"] = False
            _loops.pop(id(self), None)

    _started: list[bool] = []
    asyncio.BaseEventLoop.run_forever = _traced_run_forever  # type: ignore[method-assign]

    def _stack(frame: Any) -> str:
        return ";".join(
            f"{os.path.basename(f.filename)}:{f.name}:{f.lineno}"
            for f in traceback.extract_stack(frame)[-16:]
        )

    def _watch() -> None:
        with open(f"{_prefix}.stalls", "a", buffering=1) as log:
            while True:
                time.sleep(BEAT_S / 2)
                now = time.monotonic()
                frames = None
                for st in list(_loops.values()):
                    if now - st["last"] > STALL_S:
                        if st["start"] is None:
                            st["start"] = st["last"]
                            st["samples"].clear()
                        frames = frames or sys._current_frames()
                        frame = frames.get(st["tid"])
                        if frame is not None:
                            st["samples"][_stack(frame)] += 1
                    elif st["start"] is not None:
                        ms = (st["last"] - st["start"]) * 1000
                        samples = st["samples"]
                        log.write(
                            f"STALL {time.time():.3f} {st['name']} {ms:.0f}ms "
                            f"samples={sum(samples.values())}\n"
                        )
                        for stack, n in samples.most_common(4):
                            log.write(f"  {n} {stack}\n")
                        st["start"] = None
                if len(_events) > 5000:
                    _flush()

    _lock = threading.Lock()

    def _flush() -> None:
        with _lock:
            batch = _events[:]
            del _events[: len(batch)]
            with open(f"{_prefix}.jsonl", "a") as out:
                out.writelines(json.dumps(e) + "\n" for e in batch)

    atexit.register(_flush)

    def _patch_match_loop() -> None:
        """Wrap the consumer's ``getmany`` and the outbox's ``take`` (the worker has
        imported them by the time its event loop runs)."""
        matchloop = sys.modules.get("streams.matchloop")
        if matchloop is None:
            return
        consumer_cls = matchloop.AIOKafkaConsumer
        getmany = consumer_cls.getmany
        take = matchloop.Outbox.take

        async def traced_getmany(self: Any, *args: Any, **kwargs: Any) -> Any:
            batches = await getmany(self, *args, **kwargs)
            if batches and all(tp.topic.endswith(".posts") for tp in batches):
                _events.append(
                    [
                        "F",
                        time.time() * 1000,
                        {
                            tp.partition: [recs[0].timestamp, recs[-1].timestamp, len(recs)]
                            for tp, recs in batches.items()
                        },
                    ]
                )
            return batches

        def traced_take(self: Any, report: Any, with_tick: bool) -> Any:
            records = take(self, report, with_tick)
            if with_tick:
                _events.append(["T", time.time() * 1000, self.sent_boundary_ms])
            return records

        consumer_cls.getmany = traced_getmany
        matchloop.Outbox.take = traced_take
