"""bench/bench_worker.py's ramp: a step is kept up with by ``keeps_up``; the sustained rate
is the rate of the first hold (the fastest kept-up step run again for longer) the worker
keeps up with (``Ramp``)."""

from __future__ import annotations

from bench.bench_worker import GENERATOR_SLACK_S, HOLD_TRIES, Latency, Ramp, keeps_up
from bench.worker_load import WARMUP_S

HOLD = 60.0


def _lat(
    rate: float, *, first_ms: float = 40, last_ms: float = 40, unread: float = 0, late_s: float = 0
) -> Latency:
    """A phase at ``rate`` whose alerts' p50 is ``first_ms`` in their first third and
    ``last_ms`` in their last, with ``unread`` posts not consumed when sending stopped; its
    generator sent 3 posts/s short, its last posts ``late_s`` after the end."""
    samples = [first_ms] * 30 + [(first_ms + last_ms) / 2] * 30 + [last_ms] * 30
    lat = Latency(
        rate=rate,
        achieved=rate - 3,
        sent=int(rate * HOLD),
        alarms=0,
        alerts=len(samples),
        by_type={},
        samples_ms=samples,
        hops=[],
        backlog=unread,
    )
    lat.late_s = late_s
    return lat


def test_a_step_is_kept_up_with_unless_posts_pile_up_or_latency_grows() -> None:
    assert keeps_up(_lat(30_000), HOLD) is None
    assert "not yet consumed" in (keeps_up(_lat(30_000, unread=15_001), HOLD) or "")
    assert keeps_up(_lat(30_000, unread=14_000), HOLD) is None  # under half a second of input
    # 1% of the time between the thirds' middles: 2/3 of the phase after its warm-up
    limit_ms = 0.01 * 2 / 3 * (HOLD - WARMUP_S) * 1000
    assert keeps_up(_lat(30_000, last_ms=40 + 0.9 * limit_ms), HOLD) is None
    assert "latency grew" in (keeps_up(_lat(30_000, last_ms=40 + 1.1 * limit_ms), HOLD) or "")


def test_the_fastest_kept_up_step_is_held_first_then_the_next_slower() -> None:
    ramp = Ramp(steps=[(_lat(r), None) for r in (10_000, 20_000, 30_000)])
    ramp.steps.append((_lat(40_000), "posts not yet consumed"))
    assert ramp.to_hold() == [30_000, 20_000, 10_000][:HOLD_TRIES]
    assert ramp.sustained == ramp.fastest_step == 30_000  # no hold yet: the fastest step
    many = Ramp(steps=[(_lat(r * 5_000), None) for r in range(1, 10)])
    assert many.to_hold() == [45_000, 40_000, 35_000, 30_000][:HOLD_TRIES]
    assert len(many.to_hold()) == HOLD_TRIES


def test_the_sustained_rate_is_the_hold_the_worker_kept_up_with() -> None:
    steps: list[tuple[Latency, str | None]] = [(_lat(r), None) for r in (20_000, 30_000)]
    held_first = Ramp(steps=steps, holds=[(_lat(30_000), None)])
    assert held_first.sustained == 30_000
    assert held_first.base_rate(99_000) == 30_000
    held_second = Ramp(steps=steps, holds=[(_lat(30_000), "latency grew"), (_lat(20_000), None)])
    assert held_second.sustained == 20_000
    assert held_second.fastest_step == 30_000  # the 20 s step passed; its hold did not
    neither = Ramp(steps=steps, holds=[(_lat(30_000), "grew"), (_lat(20_000), "grew")])
    assert neither.sustained == 0
    assert neither.base_rate(99_000) == 20_000  # the sustained rate is lower still
    assert Ramp().base_rate(99_000) == 99_000  # no ramp: the catch-up rate


def test_a_schedule_sent_on_time_delivers_the_rate_asked() -> None:
    on_time = _lat(20_000, late_s=0.012)  # the last tick 12 ms after the end
    assert on_time.delivered == 20_000
    late = _lat(20_000, late_s=GENERATOR_SLACK_S + 0.01)
    assert late.delivered == late.achieved == 20_000 - 3
    assert Ramp(steps=[(on_time, None)]).sustained == 20_000
    assert Ramp(steps=[(on_time, None)], holds=[(late, None)]).sustained == 20_000 - 3
