"""Watermarks merged across posts partitions (explicit wall and event times)."""

from rules.watermark import PartitionClock, PartitionReport, WatermarkMerger

LATE = 60_000


def test_slowest_partition_holds_the_watermark() -> None:
    clock = PartitionClock(idle_after_ms=2_000)
    clock.assign({0, 1}, now_ms=0)
    clock.observe(0, event_ms=1_000_000, now_ms=10)
    merger = WatermarkMerger(LATE, partitions=2)
    assert merger.update(clock.report(now_ms=20)) is None  # partition 1 has delivered nothing
    clock.observe(1, event_ms=400_000, now_ms=30)
    assert merger.update(clock.report(now_ms=40)) == 400_000 - LATE
    clock.observe(1, event_ms=900_000, now_ms=50)
    assert merger.update(clock.report(now_ms=60)) == 900_000 - LATE


def test_an_idle_partition_holds_while_others_flow_and_all_idle_uses_newest() -> None:
    clock = PartitionClock(idle_after_ms=2_000)
    clock.assign({0, 1}, now_ms=0)
    clock.observe(0, event_ms=500_000, now_ms=100)
    merger = WatermarkMerger(LATE, partitions=2)
    # partition 1 has delivered nothing and partition 0 flows: hold
    assert merger.update(clock.report(now_ms=1_000)) is None
    # both quiet: the newest event time anywhere, as backtest's final watermark
    assert merger.update(clock.report(now_ms=3_000)) == 500_000 - LATE
    clock.observe(1, event_ms=700_000, now_ms=3_500)
    # partition 0 is caught up but still counts at its newest event time
    assert merger.update(clock.report(now_ms=3_600)) == 500_000 - LATE
    assert merger.update(clock.report(now_ms=10_000)) == 700_000 - LATE


def test_nothing_advances_until_every_partition_has_reported() -> None:
    merger = WatermarkMerger(LATE, partitions=4)
    # one worker owns partitions 0 and 1; the other has not reported 2 and 3 yet
    first = {p: PartitionReport(900_000, False, sent_ms=5) for p in (0, 1)}
    assert merger.update(first) is None
    second = {p: PartitionReport(300_000, False, sent_ms=6) for p in (2, 3)}
    assert merger.update(second) == 300_000 - LATE


def test_watermark_never_moves_back_and_newest_report_wins() -> None:
    merger = WatermarkMerger(LATE, partitions=1)
    assert merger.update({0: PartitionReport(800_000, False, sent_ms=5)}) == 800_000 - LATE
    # an older report from a previous owner of the partition is ignored
    assert merger.update({0: PartitionReport(100_000, False, sent_ms=1)}) == 800_000 - LATE
    # a new owner that has seen less does not pull the watermark back
    merger.update({0: PartitionReport(None, False, sent_ms=9)})
    assert merger.watermark_ms == 800_000 - LATE


def test_revoked_partitions_are_no_longer_reported() -> None:
    clock = PartitionClock(idle_after_ms=1_000)
    clock.assign({0, 1, 2}, now_ms=0)
    clock.assign({2}, now_ms=5)
    assert set(clock.report(now_ms=6)) == {2}


def test_a_partition_with_records_waiting_is_never_idle() -> None:
    clock = PartitionClock(idle_after_ms=1_000)
    clock.assign({0, 1}, now_ms=0)
    clock.observe(0, event_ms=900_000, now_ms=10)
    clock.observe(1, event_ms=300_000, now_ms=10)
    report = clock.report(now_ms=5_000, busy=frozenset({1}))
    assert report[0].idle and not report[1].idle
    merger = WatermarkMerger(LATE, partitions=2)
    assert merger.update(report) == 300_000 - LATE
