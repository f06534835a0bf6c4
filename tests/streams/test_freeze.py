"""``freeze_long_lived``: start-up objects leave the collector's reach; new cycles do not."""

from __future__ import annotations

import gc
import weakref

from streams.app import freeze_long_lived


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_objects_alive_at_freeze_are_frozen_and_later_cycles_are_still_collected() -> None:
    before = [_Node() for _ in range(1000)]
    try:
        freeze_long_lived()
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
