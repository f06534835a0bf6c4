"""``freeze_long_lived``: start-up objects leave the collector's reach; new cycles do not.
``no_automatic_full_gc``: full collections only when asked for; young cycles as before.
``freeze_young``: a write-back freezes what it kept, bucket records untracked first.
``full_collection``: the full_gc timer reaches frozen cycles and logs what it found; the
timer runs every ``CRISISWATCH_FULL_GC_S`` (an hour by default), never with 0."""

from __future__ import annotations

import gc
import inspect
import logging
import weakref
from pathlib import Path

import pytest

from rules.windows import Series
from streams.app import (
    FULL_GC_THRESHOLD,
    build_app,
    freeze_long_lived,
    freeze_young,
    full_collection,
    no_automatic_full_gc,
)
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_objects_alive_at_freeze_are_frozen_and_later_cycles_are_still_collected() -> None:
    before = [_Node() for _ in range(1000)]
    try:
        garbage_a, garbage_b = _Node(), _Node()
        garbage_a.other, garbage_b.other = garbage_b, garbage_a
        del garbage_a, garbage_b
        assert freeze_long_lived() >= 2  # what it found: the cycle (the full_gc timer logs it)
        assert gc.get_freeze_count() >= len(before)
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        del a, b
        gc.collect()
        assert ref() is None  # a cycle made after the freeze is collected as before
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def _full_collections_while_objects_pile_up() -> int:
    """Full collections CPython runs on its own while 300,000 objects outlive the young
    generations (as brand states between two write-backs do)."""
    before = gc.get_stats()[2]["collections"]
    kept = [[i] for i in range(300_000)]
    del kept
    return gc.get_stats()[2]["collections"] - before


def test_full_collections_wait_for_the_timer_and_young_cycles_are_still_collected() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        assert _full_collections_while_objects_pile_up() > 0  # what the worker paused for
        no_automatic_full_gc()
        assert gc.get_threshold() == (700, 10, FULL_GC_THRESHOLD)
        assert _full_collections_while_objects_pile_up() == 0
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        del a, b
        for _ in range(4):  # a few young collections' worth of allocations
            kept = [[i] for i in range(5_000)]
            del kept
        assert ref() is None  # a young cycle: collected unasked, as before
    finally:
        gc.set_threshold(*before)


def test_a_write_back_freezes_bucket_records_untracked() -> None:
    """Records made just before a write-back (no young collection since) are untracked
    before they are frozen: a full collection never scans them."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # no collection between the hits and the freeze, as at a write-back
    try:
        series = Series()
        for i in range(2_000):
            sample = (i, f"p{i}", "t", f"a{i % 5}", "text", None, "x")
            series.add(i * 10, 1_000, False, i, f"a{i % 5}", f"p{i}", i, sample, tuple)
        assert sum(gc.is_tracked(r) for r in series.records.values()) == 20
        frozen = gc.get_freeze_count()
        freeze_young()
        assert gc.get_freeze_count() > frozen  # the series' dicts and the test's frame
        assert not any(gc.is_tracked(r) for r in series.records.values())
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def test_the_full_collection_frees_frozen_cycles_logs_them_and_freezes_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    freeze_long_lived()  # the cycle is frozen with everything else alive now
    try:
        frozen = gc.get_freeze_count()
        del a, b
        gc.collect()
        assert ref() is not None  # frozen: a collection does not reach it
        with caplog.at_level(logging.INFO, logger="streams.app"):
            ms, before, found = full_collection()
        assert ref() is None  # the full collection did
        assert before == frozen
        assert found >= 2
        assert ms >= 0
        assert gc.get_freeze_count() > 0  # what is left is frozen again
        [line] = [r.getMessage() for r in caplog.records if "full garbage" in r.getMessage()]
        assert f"over {frozen} frozen objects, {found} unreachable" in line
    finally:
        gc.unfreeze()


def _timers(settings: Settings) -> dict[str, float]:
    """The worker's timers by function name, with their intervals (faust keeps each in
    the closure of its ``around_timer``, which ``app.task`` wraps once more)."""
    app = build_app(settings).app
    timers: dict[str, float] = {}
    for task in app._app_tasks:
        around = inspect.getclosurevars(task).nonlocals.get("fun", task)
        interval = inspect.getclosurevars(around).nonlocals.get("interval_s")
        if interval is not None:
            timers[task.__qualname__.rpartition(".")[2]] = interval
    return timers


@pytest.mark.parametrize(("value", "expected"), [(None, 3600.0), ("90", 90.0), ("0", None)])
def test_the_worker_collects_everything_every_full_gc_s_and_never_with_0(
    tmp_path: Path, value: str | None, expected: float | None
) -> None:
    env = {"CRISISWATCH_STORE": "memory://", "CRISISWATCH_DATA_DIR": str(tmp_path)}
    env["CRISISWATCH_RULES_DIR"] = str(ROOT / "brands")
    if value is not None:
        env["CRISISWATCH_FULL_GC_S"] = value
    timers = _timers(Settings.from_env(env))
    assert timers.get("full_gc") == expected
    assert timers["trim_heap"] == 30.0  # the others are there either way
