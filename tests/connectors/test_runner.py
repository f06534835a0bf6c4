"""Runner logic without a broker: order of publish/dead-letter/checkpoint, backoff, failures."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from connectors.base import FatalSourceError, Rejected
from connectors.metrics import ConnectorMetrics
from connectors.runner import Runner, backoff_delay_s
from tests.connectors.framework_helpers import (
    FakePublisher,
    ListSource,
    LoggingCheckpoints,
    RecordingSleep,
    make_post,
    retriable,
)


def _runner(sources, log, sleep, registry, initial=None, **kw):  # type: ignore[no-untyped-def]
    return Runner(
        sources,
        FakePublisher(log),  # type: ignore[arg-type]
        LoggingCheckpoints(log, initial),
        ConnectorMetrics(registry),
        sleep=sleep,
        rng=lambda: 1.0,
        **kw,
    )


async def test_checkpoint_comes_after_publish_and_dead_letters() -> None:
    log: list[tuple[str, object]] = []
    bad = Rejected("invalid_item", "item 4 broken", b"{}")
    source = ListSource("s1", [make_post(i) for i in range(7)], page=3, rejected_at={4: bad})
    registry = CollectorRegistry()
    outcomes = await _runner([source], log, RecordingSleep(), registry).run()
    assert log == [
        ("publish", ["test:0", "test:1", "test:2"]),
        ("save", ("s1", {"i": 3})),
        ("publish", ["test:3", "test:4", "test:5"]),
        ("dead_letter", ("invalid_item", "connector:s1")),
        ("save", ("s1", {"i": 6})),
        ("publish", ["test:6"]),
        ("save", ("s1", {"i": 7})),
    ]
    assert outcomes[0].state == "exhausted"
    assert (outcomes[0].produced, outcomes[0].rejected) == (7, 1)
    assert source.closed
    labels = {"connector": "s1", "kind": "fake"}
    assert registry.get_sample_value("crisiswatch_connector_posts_produced_total", labels) == 7
    assert registry.get_sample_value("crisiswatch_connector_posts_fetched_total", labels) == 7
    assert (
        registry.get_sample_value(
            "crisiswatch_connector_rejected_total", {"connector": "s1", "reason": "invalid_item"}
        )
        == 1
    )
    newest = registry.get_sample_value(
        "crisiswatch_connector_newest_event_timestamp_seconds", {"connector": "s1"}
    )
    assert newest == make_post(6).created_at_ms / 1000


async def test_resumes_from_the_saved_cursor() -> None:
    log: list[tuple[str, object]] = []
    source = ListSource("s1", [make_post(i) for i in range(5)], page=10)
    await _runner([source], log, RecordingSleep(), CollectorRegistry(), {"s1": {"i": 3}}).run()
    assert source.served == ["test:3", "test:4"]


async def test_retriable_errors_back_off_and_honour_retry_after() -> None:
    log: list[tuple[str, object]] = []
    errors = {0: retriable(), 1: retriable(), 2: retriable("http_429", retry_after_s=42.0)}
    source = ListSource("s1", [make_post(i) for i in range(2)], page=5, errors=errors)
    sleep = RecordingSleep()
    registry = CollectorRegistry()
    runner = _runner([source], log, sleep, registry, backoff_base_s=1.0, backoff_cap_s=60.0)
    outcomes = await runner.run()
    # rng() = 1.0: full jitter at its upper bound -> 1, 2, then max(4, Retry-After 42)
    assert sleep.calls == [1.0, 2.0, 42.0]
    assert outcomes[0].produced == 2
    assert (
        registry.get_sample_value(
            "crisiswatch_connector_errors_total", {"connector": "s1", "error": "http_5xx"}
        )
        == 2
    )
    assert (
        registry.get_sample_value("crisiswatch_connector_reconnects_total", {"connector": "s1"})
        == 3
    )


def test_backoff_is_capped_full_jitter() -> None:
    assert backoff_delay_s(10, base_s=1.0, cap_s=60.0, rng=lambda: 1.0) == 60.0
    assert backoff_delay_s(3, base_s=0.5, cap_s=60.0, rng=lambda: 0.5) == 1.0
    assert backoff_delay_s(1, base_s=1.0, cap_s=60.0, rng=lambda: 0.0) == 0.0


async def test_fatal_error_stops_only_that_source() -> None:
    log: list[tuple[str, object]] = []
    broken = ListSource(
        "bad", [make_post(i) for i in range(3)], errors={0: FatalSourceError("401")}
    )
    good = ListSource("good", [make_post(i, "ok") for i in range(4)], page=2)
    outcomes = await _runner([broken, good], log, RecordingSleep(), CollectorRegistry()).run()
    assert [(o.name, o.state) for o in outcomes] == [("bad", "failed"), ("good", "exhausted")]
    assert outcomes[0].error == "401"
    assert good.served == ["ok:0", "ok:1", "ok:2", "ok:3"]
    assert broken.served == []


async def test_stop_finishes_the_batch_in_hand_and_checkpoints_it() -> None:
    log: list[tuple[str, object]] = []
    source = ListSource("s1", [make_post(i) for i in range(100)], page=2, finite=False)
    runner = _runner([source], log, asyncio.sleep, CollectorRegistry())
    original = source.fetch

    async def fetch_then_stop(cursor):  # type: ignore[no-untyped-def]
        batch = await original(cursor)
        if source.fetches == 3:
            runner.stop()  # SIGTERM arrives while batch 3 is in hand
        return batch

    source.fetch = fetch_then_stop  # type: ignore[method-assign]
    outcomes = await runner.run()
    assert outcomes[0].state == "stopped"
    assert log[-1] == ("save", ("s1", {"i": 6}))
    assert outcomes[0].produced == 6


async def test_stop_interrupts_a_blocked_fetch_without_moving_the_cursor() -> None:
    log: list[tuple[str, object]] = []

    class Blocking(ListSource):
        async def fetch(self, cursor):  # type: ignore[no-untyped-def]
            if self.fetches >= 1:
                await asyncio.sleep(3600)  # a stream with nothing new
            return await super().fetch(cursor)

    source = Blocking("s1", [make_post(i) for i in range(10)], page=4, finite=False)
    runner = _runner([source], log, asyncio.sleep, CollectorRegistry())
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.1)
    runner.stop()
    outcomes = await asyncio.wait_for(task, 5)
    assert outcomes[0].state == "stopped"
    assert log == [
        ("publish", ["test:0", "test:1", "test:2", "test:3"]),
        ("save", ("s1", {"i": 4})),
    ]
