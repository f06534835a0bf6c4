"""bench/brokerwatch.py: segment rolls and the log cleaner's files, as they appear."""

from __future__ import annotations

import os
from pathlib import Path

from bench.brokerwatch import scan


def test_new_segments_cleaner_files_and_checkpoint_changes_are_reported_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    part = data / "bench.brand-state-changelog-2"
    part.mkdir(parents=True)
    (part / "00000000000000000000.log").write_bytes(b"")
    (part / "00000000000000000000.index").write_bytes(b"")  # not a roll by itself
    seen: set[str] = set()
    checkpoints: dict[str, float] = {}
    assert scan([str(data)], seen, checkpoints) == [
        "bench.brand-state-changelog-2/00000000000000000000.log"
    ]
    assert scan([str(data)], seen, checkpoints) == []  # nothing new
    (part / "00000000000000017402.log").write_bytes(b"")  # a roll
    (part / "00000000000000000000.log.cleaned").write_bytes(b"")  # the cleaner at work
    (data / "cleaner-offset-checkpoint").write_text("0\n")
    assert scan([str(data)], seen, checkpoints) == [
        "bench.brand-state-changelog-2/00000000000000000000.log.cleaned",
        "bench.brand-state-changelog-2/00000000000000017402.log",
        "CHECKPOINT",
    ]
    checkpoint = data / "cleaner-offset-checkpoint"
    stat = checkpoint.stat()
    os.utime(checkpoint, (stat.st_atime, stat.st_mtime + 5))  # the cleaner wrote it again
    assert scan([str(data)], seen, checkpoints) == ["CHECKPOINT"]
