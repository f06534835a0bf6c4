"""When a state write-back keeps still: around the step boundaries the match loop sends
(``streams.matchloop.write_back_pause`` and ``BoundaryGate``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.matchloop import (
    BOUNDARY_GUARD_S,
    BOUNDARY_HOLD_S,
    BOUNDARY_LATE_S,
    BOUNDARY_WINDOW_S,
    BoundaryGate,
    write_back_pause,
)

SENT = 100.0


def test_just_after_a_boundary_the_write_back_waits_out_its_window() -> None:
    pause, for_next = write_back_pause(SENT + 0.03, SENT, 1.0)
    assert pause == pytest.approx(BOUNDARY_WINDOW_S - 0.03)
    assert not for_next


def test_mid_step_it_goes_on() -> None:
    assert write_back_pause(SENT + BOUNDARY_WINDOW_S, SENT, 1.0) == (0.0, False)
    assert write_back_pause(SENT + 0.5, SENT, 1.0) == (0.0, False)
    assert write_back_pause(SENT + 1.0 - BOUNDARY_GUARD_S - 0.01, SENT, 1.0) == (0.0, False)


def test_before_the_next_boundary_it_waits_for_it_until_a_little_past_due() -> None:
    due = SENT + 1.0
    pause, for_next = write_back_pause(due - BOUNDARY_GUARD_S, SENT, 1.0)
    assert for_next
    assert pause == pytest.approx(BOUNDARY_GUARD_S + BOUNDARY_LATE_S)
    pause, for_next = write_back_pause(due + 0.1, SENT, 1.0)
    assert for_next and pause == pytest.approx(BOUNDARY_LATE_S - 0.1)
    # a boundary that is later still (a stream that slowed or stopped) is not waited for
    assert write_back_pause(due + BOUNDARY_LATE_S, SENT, 1.0) == (0.0, False)
    assert write_back_pause(due + 7.0, SENT, 1.0) == (0.0, False)


def test_longer_steps_have_their_guard_before_the_boundary_too() -> None:
    due = SENT + 10.0
    assert write_back_pause(due - 1.0, SENT, 10.0) == (0.0, False)
    assert write_back_pause(due - 0.1, SENT, 10.0)[1]


def test_a_step_too_short_for_a_guard_keeps_only_the_window() -> None:
    step = BOUNDARY_WINDOW_S + BOUNDARY_GUARD_S  # the guard would leave no time to write
    assert write_back_pause(SENT + step - 0.01, SENT, step) == (0.0, False)
    assert write_back_pause(SENT + 0.01, SENT, step)[0] > 0


def test_before_any_boundary_nothing_waits() -> None:
    assert write_back_pause(SENT, float("-inf"), 1.0) == (0.0, False)


async def test_the_gate_waits_for_the_due_boundary_and_then_its_window() -> None:
    gate = BoundaryGate(1.0)
    gate.sent_at = time.monotonic() - (1.0 - BOUNDARY_GUARD_S / 2)  # the next is due soon
    waiting = asyncio.ensure_future(gate.give_way())
    await asyncio.sleep(0.03)
    assert not waiting.done()  # the boundary has not come
    gate.sent(10_000)
    sent = time.monotonic()
    await asyncio.sleep(BOUNDARY_WINDOW_S / 4)
    assert not waiting.done()  # it has come: its window
    await asyncio.wait_for(waiting, 2.0)
    waited = time.monotonic() - sent
    # the window after the boundary, not the rest of the wait for it
    assert BOUNDARY_WINDOW_S * 0.9 <= waited < BOUNDARY_WINDOW_S + BOUNDARY_LATE_S / 2


async def test_the_gate_gives_up_on_a_boundary_that_does_not_come() -> None:
    gate = BoundaryGate(1.0)
    gate.sent_at = time.monotonic() - (1.0 - BOUNDARY_GUARD_S / 2)
    started = time.monotonic()
    await asyncio.wait_for(gate.give_way(), 2.0)
    waited = time.monotonic() - started
    assert waited >= BOUNDARY_GUARD_S / 2 + BOUNDARY_LATE_S - 0.02
    # mid-step, right after: no wait at all
    gate.sent_at = time.monotonic() - 0.5
    started = time.monotonic()
    await gate.give_way()
    assert time.monotonic() - started < BOUNDARY_WINDOW_S


async def test_matching_holds_after_a_boundary_until_the_detect_agent_swept_it() -> None:
    gate = BoundaryGate(1.0)
    gate.swept(9_000)
    gate.sent(10_000)
    holding = asyncio.ensure_future(gate.hold_matching())
    await asyncio.sleep(BOUNDARY_HOLD_S / 5)
    assert not holding.done()
    gate.swept(9_000)  # a record of another partition: not there yet
    await asyncio.sleep(0)
    assert not holding.done()
    gate.swept(10_000)
    await asyncio.wait_for(holding, BOUNDARY_HOLD_S / 2)  # at once, not at the time limit
    # caught up: no hold
    started = time.monotonic()
    await gate.hold_matching()
    assert time.monotonic() - started < BOUNDARY_HOLD_S / 2


async def test_matching_holds_at_most_the_hold_time() -> None:
    gate = BoundaryGate(1.0)
    gate.swept(9_000)
    gate.sent(10_000)
    started = time.monotonic()
    await asyncio.wait_for(gate.hold_matching(), 2.0)
    held = time.monotonic() - started
    assert BOUNDARY_HOLD_S * 0.8 <= held < 1.0
    # the hold time after the boundary was sent is over: the next slice goes at once
    started = time.monotonic()
    await gate.hold_matching()
    assert time.monotonic() - started < BOUNDARY_HOLD_S / 2


async def test_no_hold_when_no_detect_partition_is_read_here() -> None:
    gate = BoundaryGate(1.0)
    gate.sent(10_000)  # this worker's detect agent reads no partition: swept_ms is None
    assert gate.caught_up()
    started = time.monotonic()
    await gate.hold_matching()
    assert time.monotonic() - started < BOUNDARY_HOLD_S / 2
