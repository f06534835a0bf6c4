"""Window arithmetic and bucketed sums."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.windows import ceil_steps, floor_to, range_sum, top_samples


def test_floor_and_ceil_are_epoch_aligned() -> None:
    assert floor_to(0, 10_000) == 0
    assert floor_to(19_999, 10_000) == 10_000
    assert floor_to(-1, 10_000) == -10_000
    assert ceil_steps(600_000, 10_000) == 600_000
    assert ceil_steps(45_000, 10_000) == 50_000
    assert ceil_steps(1, 10_000) == 10_000


def test_top_samples_orders_by_followers_then_post_id() -> None:
    a = [[5, "b"], [5, "a"], [1, "z"]]
    b = [[9, "c"], [0, "d"]]
    assert [s[1] for s in top_samples([a, b], 3)] == ["c", "a", "b"]


@settings(max_examples=60, deadline=None)
@given(
    buckets=st.dictionaries(st.integers(0, 50), st.integers(0, 9), max_size=30),
    moves=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=12),
)
def test_incremental_range_sums_equal_plain_sums(
    buckets: dict[int, int], moves: list[tuple[int, int]]
) -> None:
    unit = 10
    data = {k * unit: v for k, v in buckets.items()}
    lo, hi, cache = 0, 0, None
    for dlo, dhi in moves:
        hi += dhi * unit
        lo = min(hi, lo + dlo * unit)
        total, cache = range_sum(data, lo, hi, unit, cache)
        assert total == sum(v for k, v in data.items() if lo <= k < hi)
