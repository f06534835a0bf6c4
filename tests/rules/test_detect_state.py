"""Brand state serialisation: byte-exact round trips that change no decision."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.detect import Detector, dump_state, load_state
from rules.model import EscalateStep
from tests.rules.detect_support import MIN, hit, keyword, ruleset, velocity

RULES = ruleset(
    keyword(min_count=2, window_ms=5 * MIN, resolve_after_ms=5 * MIN),
    velocity(
        warmup_ms=10 * MIN,
        baseline_ms=30 * MIN,
        min_count=3,
        escalate=(EscalateStep(severity="high", count=8),),
    ),
    velocity("adaptive", ratio=None, sensitivity="high", warmup_ms=0, min_count=2),
)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.integers(0, 40), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("advance"), st.integers(0, 20), st.just(0), st.just(False)),
    ),
    max_size=60,
)


def _run(steps: list[tuple[str, int, int, bool]], roundtrip: bool) -> tuple[list, list[bytes]]:
    d = Detector(RULES)
    s = d.new_state("acme")
    now = 0
    events, dumps = [], []
    for n, (op, a, b, flag) in enumerate(steps):
        if op == "hit":
            ids = ("recall",) if flag else ()
            d.observe(s, hit(n % 50, now + a * 7_000, *ids, author=f"a{b}", followers=b * 10))
        else:
            now += a * 30_000
            events += d.advance(s, now)
        blob = dump_state(s)
        assert dump_state(load_state(blob)) == blob
        dumps.append(blob)
        if roundtrip:
            s = load_state(blob)
    events += d.advance(s, now + 3 * 3_600_000)
    return [e.to_cloudevent() for e in events], dumps


@settings(max_examples=40, deadline=None)
@given(steps=ops)
def test_dump_load_is_byte_exact_and_changes_no_decision(
    steps: list[tuple[str, int, int, bool]],
) -> None:
    plain_events, plain_dumps = _run(steps, roundtrip=False)
    tripped_events, tripped_dumps = _run(steps, roundtrip=True)
    assert tripped_events == plain_events
    assert tripped_dumps == plain_dumps


def test_load_state_rejects_foreign_values() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        load_state(b"{nope")
    with pytest.raises(ValueError, match="version"):
        load_state(b'{"v": 99}')
    with pytest.raises(ValueError, match="malformed"):
        load_state(b'{"v": 1, "brand": "acme"}')
    bad_history = orjson.loads(_one_state_dump())
    bad_history["series"]["mentions"]["hist"] = [[60_000, 120_000], [1]]
    with pytest.raises(ValueError, match=r"malformed.*columns differ"):
        load_state(orjson.dumps(bad_history))


def _one_state_dump() -> bytes:
    d = Detector(ruleset(keyword(), velocity()))
    s = d.new_state("acme")
    for n in range(30):
        d.observe(s, hit(n, n * 20_000, *(["recall"] if n % 3 == 0 else [])))
        d.advance(s, n * 20_000)
    return dump_state(s)


def test_a_version_1_state_loads_and_is_written_back_as_version_2() -> None:
    """Changelogs written before the history columns (version 1: {"start": count} maps)
    still restore the same state."""
    current = orjson.loads(_one_state_dump())
    assert current["v"] == 2
    v1 = orjson.loads(_one_state_dump())
    v1["v"] = 1
    for series in v1["series"].values():
        for name in ("hist", "tiles"):
            starts, counts = series[name]
            series[name] = {str(k): c for k, c in zip(starts, counts, strict=True)}
    assert series["hist"]  # the test covers a non-empty history
    assert dump_state(load_state(orjson.dumps(v1))) == _one_state_dump()
