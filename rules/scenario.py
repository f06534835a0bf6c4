"""A seeded synthetic scenario generator (drills and detection measurement).

Ordinary traffic for every brand of a RuleSet (daily seasonality, a lunchtime
peak, hourly random swings, English and Chinese, many authors, non-brand
noise), injected crises of every crisis type the brand has rules for (a surge
of posts with crisis words and a known start time), and traps that must not
alert: the brand's normal daily peak, a homonym the brand excludes, crisis words
without the brand, and one angry user posting 50 times at night (stopped by
``min_authors``).  Same seed, same RuleSet -> same posts and truth.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from rules.model import Author, Post, RuleSet
from rules.post import format_rfc3339_ms, parse_rfc3339_ms
from rules.scenario_text import NOISE, BrandTexts, TextBuilder, is_cjk

DEFAULT_START = "2026-11-01T00:00:00Z"
MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CRISIS_MINUTES = 45
"""How long an injected crisis keeps producing posts."""
TRAP_PEAK_HOURS = (12, 13)
"""The lunchtime peak (UTC hours) every brand has each day."""
PEAK_FACTOR = 1.3
"""Lunchtime multiplier on top of the daily cycle: the peak hour runs at ~1.8x the daily mean."""


@dataclass(frozen=True, slots=True)
class Injected:
    """One injected crisis or trap (the ground truth)."""

    kind: str
    """``crisis`` or the trap kind: ``daily_peak``, ``homonym``, ``no_brand``, ``angry_user``."""
    brand: str
    crisis_type: str | None
    start_ms: int
    end_ms: int
    posts: int


@dataclass(frozen=True, slots=True)
class Scenario:
    posts: list[Post]
    """In event-time order."""
    injected: tuple[Injected, ...]
    seed: int
    start_ms: int
    days: int

    @property
    def crises(self) -> list[Injected]:
        return [i for i in self.injected if i.kind == "crisis"]

    @property
    def traps(self) -> list[Injected]:
        return [i for i in self.injected if i.kind != "crisis"]

    def truth(self) -> dict[str, Any]:
        """The ground truth as JSON (times as RFC 3339 and ms)."""
        items = []
        for i in self.injected:
            d = asdict(i)
            d["start"] = format_rfc3339_ms(i.start_ms)
            d["end"] = format_rfc3339_ms(i.end_ms)
            items.append(d)
        return {
            "seed": self.seed,
            "start": format_rfc3339_ms(self.start_ms),
            "days": self.days,
            "posts": len(self.posts),
            "crises": [d for d in items if d["kind"] == "crisis"],
            "traps": [d for d in items if d["kind"] != "crisis"],
        }


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _Builder:
    def __init__(self, rng: random.Random, start_ms: int) -> None:
        self.rng = rng
        self.start_ms = start_ms
        self.raw: list[tuple[int, str, str, str, int]] = []
        """(created_at_ms, text, lang, author, followers)."""
        self.authors = [f"user{n}" for n in range(20_000)]
        self.followers = [int(10 ** rng.uniform(0.5, 4.5)) for _ in self.authors]

    def add(self, ts_ms: int, text: str, author: int | None = None) -> None:
        a = self.rng.randrange(len(self.authors)) if author is None else author
        lang = "zh" if is_cjk(text) else "en"
        self.raw.append((ts_ms, text, lang, self.authors[a], self.followers[a]))

    def posts(self) -> list[Post]:
        self.raw.sort(key=lambda r: r[0])
        out = []
        for n, (ts, text, lang, handle, followers) in enumerate(self.raw):
            out.append(
                Post(
                    id=f"scenario:{n}",
                    source="scenario",
                    text=text,
                    created_at_ms=ts,
                    created_at=format_rfc3339_ms(ts),
                    lang=lang,
                    url=f"https://scenario.example/{n}",
                    author=Author(id=handle, handle=handle, followers=followers),
                )
            )
        return out


def _rate_factor(ts_ms: int, swings: list[float], start_ms: int) -> float:
    hour_of_day = (ts_ms % DAY_MS) / HOUR_MS
    season = 1.0 + 0.6 * math.cos(2 * math.pi * (hour_of_day - 15) / 24)
    peak = PEAK_FACTOR if TRAP_PEAK_HOURS[0] <= hour_of_day < TRAP_PEAK_HOURS[1] else 1.0
    return season * peak * swings[(ts_ms - start_ms) // HOUR_MS]


def generate(
    ruleset: RuleSet,
    *,
    seed: int = 1,
    days: int = 8,
    start: str = DEFAULT_START,
    mentions_per_min: float = 1.0,
    noise_per_min: float = 1.0,
    matcher: object | None = None,
) -> Scenario:
    """A scenario over ``days`` days of event time from ``start`` (see the module doc)."""
    if days < 3:
        msg = f"a scenario needs at least 3 days (a day of warm-up, then crises); got {days}"
        raise ValueError(msg)
    if matcher is None:
        from rules.matcher import Matcher

        matcher = Matcher(ruleset)
    rng = random.Random(seed)
    start_ms = parse_rfc3339_ms(start)
    b = _Builder(rng, start_ms)
    builder = TextBuilder(ruleset, matcher)
    injected: list[Injected] = []
    total_min = days * 1440
    for noise_min in range(total_min):
        t0 = start_ms + noise_min * MIN_MS
        for _ in range(_poisson(rng, noise_per_min)):
            b.add(t0 + rng.randrange(MIN_MS), rng.choice(NOISE))
    for index, brand in enumerate(sorted(ruleset.brands, key=lambda x: x.id)):
        texts = builder.build(brand)
        zh_share = 0.8 if brand.languages == ("zh",) or index % 2 else 0.3
        rate = mentions_per_min * (0.8 + 0.4 * rng.random())
        swings = [math.exp(rng.gauss(0, 0.2)) for _ in range(days * 24 + 1)]
        for m in range(total_min):
            t0 = start_ms + m * MIN_MS
            for _ in range(_poisson(rng, rate * _rate_factor(t0, swings, start_ms))):
                lang = "zh" if rng.random() < zh_share else "en"
                b.add(t0 + rng.randrange(MIN_MS), rng.choice(texts.ordinary[lang] or
                                                              texts.ordinary["en"]))  # fmt: skip
        for day in range(1, days):
            day_ms = start_ms + day * DAY_MS
            peak = (day_ms + TRAP_PEAK_HOURS[0] * HOUR_MS, day_ms + TRAP_PEAK_HOURS[1] * HOUR_MS)
            injected.append(Injected("daily_peak", brand.id, None, peak[0], peak[1], 0))
        injected.extend(_inject(b, rng, brand.id, texts, start_ms, days, zh_share))
    return Scenario(b.posts(), tuple(injected), seed, start_ms, days)


def _slots(rng: random.Random, start_ms: int, days: int, hours: tuple[int, ...]) -> list[int]:
    slots = [
        start_ms + day * DAY_MS + hour * HOUR_MS + rng.randrange(0, 40) * MIN_MS
        for day in range(1, days)
        for hour in hours
        if day * DAY_MS + hour * HOUR_MS >= 30 * HOUR_MS
    ]
    rng.shuffle(slots)
    return slots


def _inject(
    b: _Builder,
    rng: random.Random,
    brand: str,
    texts: BrandTexts,
    start_ms: int,
    days: int,
    zh_share: float,
) -> list[Injected]:
    out: list[Injected] = []
    day_slots = _slots(rng, start_ms, days, (9, 16, 20))
    for ctype in sorted(texts.crisis):
        if not day_slots:
            break
        pools = texts.crisis[ctype]
        lang = "zh" if rng.random() < zh_share else "en"
        pool = pools.get(lang) or pools.get("zh" if lang == "en" else "en") or []
        if not pool:
            continue
        t0 = day_slots.pop()
        peak = rng.uniform(6, 12)
        count = 0
        for minute in range(CRISIS_MINUTES):
            ramp = min(1.0, 0.4 + 0.06 * minute)
            n = _poisson(rng, peak * ramp) if minute else max(1, _poisson(rng, peak * ramp))
            for _ in range(n):
                offset = 0 if count == 0 else minute * MIN_MS + rng.randrange(MIN_MS)
                b.add(t0 + offset, rng.choice(pool))
                count += 1
        out.append(Injected("crisis", brand, ctype, t0, t0 + CRISIS_MINUTES * MIN_MS, count))
    for kind, pool, n, minutes in (
        ("homonym", texts.homonym, 40, 20),
        ("no_brand", texts.no_brand, 60, 20),
    ):
        if pool and day_slots:
            t0 = day_slots.pop()
            for i in range(n):
                b.add(t0 + (i * minutes * MIN_MS) // n + rng.randrange(1000), rng.choice(pool))
            out.append(Injected(kind, brand, None, t0, t0 + minutes * MIN_MS, n))
    night = _slots(rng, start_ms, days, (3,))
    angry = texts.angry["en"] + texts.angry["zh"]
    if night and angry:
        t0 = night[0]
        author = rng.randrange(len(b.authors))
        for i in range(50):
            b.add(t0 + i * 10_000, rng.choice(angry), author=author)
        out.append(Injected("angry_user", brand, None, t0, t0 + 50 * 10_000, 50))
    return out
