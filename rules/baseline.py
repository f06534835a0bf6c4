"""Baselines: the normal level a velocity rule compares a window against.

- Ratio rules: the mean count per window over the ``baseline_ms`` that ends at
  the window start (measured on one-minute history buckets, so the period is
  aligned down to the minute), floored at 1.0.  While a brand has less history
  than ``baseline_ms`` the mean is taken over the history it has.
- Adaptive rules (``sensitivity``): a robust z-score threshold over per-window
  counts (ten-minute tiles, scaled to the window length): ``median + k x sigma``
  with ``sigma = max(1.4826 x MAD, sqrt(max(median, 1)))`` -- the square-root
  floor is the Poisson noise of a count, so a brand whose volume never varies
  still needs a real surge.  Once the brand has seven days of history the tiles
  are those at the same time of day (+-1 h) on each of the last seven days;
  before that, the tiles of the baseline period.
"""

from __future__ import annotations

import math

from rules.windows import DAY_MS, TILE_MS

WEEK_MS = 7 * DAY_MS
SLOT_HALF_WIDTH_MS = 3_600_000
"""Same time of day means within one hour either side."""
SENSITIVITY_K: dict[str, float] = {"low": 8.0, "medium": 6.0, "high": 4.5}
"""Robust z-score per sensitivity level (chosen with ``crisiswatch evaluate``)."""


def mean_level(total: int, span_ms: int, window_ms: int) -> float:
    """Mean count per window given ``total`` hits over ``span_ms``, floored at 1.0."""
    if span_ms <= 0:
        return 1.0
    return max(1.0, total * window_ms / span_ms)


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    if n % 2:
        return sorted_values[mid]
    return (sorted_values[mid - 1] + sorted_values[mid]) / 2


def adaptive_tiles(
    anchor_ms: int, first_tile_ms: int, baseline_ms: int, history_ms: int
) -> list[int]:
    """Starts of the tiles an adaptive threshold learns from (all before ``anchor_ms``)."""
    if history_ms >= WEEK_MS:
        slots = range(-SLOT_HALF_WIDTH_MS, SLOT_HALF_WIDTH_MS, TILE_MS)
        return [
            anchor_ms - day * DAY_MS + offset
            for day in range(1, 8)
            for offset in slots
            if anchor_ms - day * DAY_MS + offset >= first_tile_ms
        ]
    return list(range(max(anchor_ms - baseline_ms, first_tile_ms), anchor_ms, TILE_MS))


def adaptive_threshold(
    tiles: dict[int, int], starts: list[int], window_ms: int, k: float
) -> tuple[float, float] | None:
    """``(median, threshold)`` of the window counts over ``starts``; None without history."""
    if not starts:
        return None
    scale = window_ms / TILE_MS
    get = tiles.get
    values = sorted(get(s, 0) * scale for s in starts)
    median = _median(values)
    mad = _median(sorted(abs(v - median) for v in values))
    sigma = max(1.4826 * mad, math.sqrt(max(median, 1.0)))
    return median, median + k * sigma
