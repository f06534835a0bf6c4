"""release_free_heap: the worker gives the C heap's free pages back (glibc malloc_trim)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from streams.app import release_free_heap


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_system() -> None:
    # 100 KB buffers come from the C heap (below glibc's mmap threshold); keeping one in
    # sixteen alive pins the heap's top, so free() alone returns nothing
    blocks = [bytearray(100_000) for _ in range(3_000)]
    keep = blocks[::16]
    del blocks
    before = _rss_mb()
    assert release_free_heap() is True
    after = _rss_mb()
    assert len(keep) == 188
    assert before - after > 100, f"RSS {before:.0f} -> {after:.0f} MB"
