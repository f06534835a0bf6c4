"""Backtest throughput on a 1,000-brand load (issue 4).

Times are CPU time of this process (the machine is shared, wall-clock rates vary).
Generates 1,000 synthetic brand files in a temporary directory and a Posts
stream (JSON Lines in memory), then measures on one core, in the same run:

- baseline: decode only (``decode_post`` per line)
- backtest: decode + match + windows + incidents (``Engine.process``), as
  ``crisiswatch backtest`` does minus file I/O

Each phase runs ``--repeat`` times (default 3, alternating phases, a fresh Engine
each time); the median and the best are reported, and the target is judged on the
median: other tenants of a shared machine move a single pass by +-15%.

Usage: ``.venv/bin/python bench/bench_backtest.py [--quick] [--posts N] [--repeat N]``
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rules.engine import Engine, batch_gc
from rules.loader import load_rules
from rules.matcher import Matcher
from rules.model import RuleSet
from rules.post import decode_post, format_rfc3339_ms

BRAND_YAML = """\
brand: b{n:04d}
mentions:
  query: 'brand{n:04d} OR #brand{n:04d} OR "brand {n:04d} foods" OR 品牌{n:04d}'
  exclude: '"brand{n:04d} cartoon"'
rules:
  - id: product
    kind: keyword
    query: 'recall OR defect* OR "food poisoning" OR 召回 OR 食物中毒'
    min_count: 3
    window: 10m
    crisis_type: product_quality
    severity: high
  - id: service
    kind: keyword
    query: '(app OR delivery) NEAR/3 (down OR broken) OR refund OR 退款'
    min_count: 5
    window: 10m
    crisis_type: service_failure
    severity: medium
  - id: surge
    kind: velocity
    of: mentions
    window: 10m
    baseline: 1h
    ratio: 3.0
    min_count: 20
    min_authors: 10
    crisis_type: other
    severity: medium
    warmup: 30m
"""
WORDS = ["great", "lunch", "today", "love", "new", "ad", "store", "price", "好吃", "排队", "打折"]
CRISIS = ["recall", "food poisoning", "app down", "refund", "召回"]
T0 = 1_790_000_000_000


def make_posts(n_posts: int, n_brands: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    t = T0
    for i in range(n_posts):
        t += rng.randrange(0, 80)  # ~25 posts/s of event time
        words = rng.sample(WORDS, 4)
        if rng.random() < 0.7:
            words.insert(rng.randrange(5), f"brand{rng.randrange(n_brands):04d}")
        if rng.random() < 0.03:
            words.append(rng.choice(CRISIS))
        post = {
            "id": f"bench:{i}",
            "source": "bench",
            "text": " ".join(words),
            "created_at": format_rfc3339_ms(t),
            "author": {
                "id": str(rng.randrange(50_000)),
                "handle": "u",
                "followers": rng.randrange(10_000),
            },
        }
        lines.append(orjson.dumps(post))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (20,000 posts)")
    parser.add_argument("--posts", type=int, default=300_000)
    parser.add_argument("--brands", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="passes of each phase (3)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    n_posts = 20_000 if args.quick else args.posts
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.brands):
            (Path(tmp) / f"b{n:04d}.yaml").write_text(BRAND_YAML.format(n=n))
        started = time.process_time()
        rules = load_rules(tmp)
        load_s = time.process_time() - started
    lines = make_posts(n_posts, args.brands, seed=1)
    matcher = Matcher(rules)
    # as `crisiswatch backtest` runs (rules.engine.batch_gc), for every phase alike
    with batch_gc():
        return measure(args, rules, matcher, lines, n_posts, load_s)


def measure(
    args: argparse.Namespace,
    rules: RuleSet,
    matcher: Matcher,
    lines: list[bytes],
    n_posts: int,
    load_s: float,
) -> int:
    def decode_only() -> None:
        for line in lines:
            decode_post(line)

    def decode_match() -> None:
        for line in lines:
            matcher.match(decode_post(line))

    engines: list[Engine] = []
    counted: list[int] = []

    def full_path() -> None:
        engine = Engine(rules, matcher=matcher)
        events = 0
        for line in lines:
            events += len(engine.process(decode_post(line)))
        events += len(engine.finish())
        engines[:] = [engine]
        counted.append(events)

    times: dict[str, list[float]] = {"decode": [], "match": [], "full": []}
    for i in range(args.repeat):
        for name, phase in (("decode", decode_only), ("match", decode_match), ("full", full_path)):
            engines.clear()  # the last pass's brand states are freed outside the clock
            started = time.process_time()
            phase()
            times[name].append(time.process_time() - started)
        print(f"pass {i + 1}/{args.repeat}: full path {n_posts / times['full'][-1]:,.0f} posts/s",
              file=sys.stderr)  # fmt: skip
    if len(set(counted)) != 1:
        msg = f"passes disagree on the events: {counted}"
        raise SystemExit(msg)
    engine, events = engines[0], counted[0]
    decode_s = statistics.median(times["decode"])
    match_s = statistics.median(times["match"])
    full_s = statistics.median(times["full"])
    st = engine.stats
    span_h = (engine.max_seen_ms or T0) - T0
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} "
        f"python {platform.python_version()} (one core)"
    )
    print(f"load: {args.brands} brands, {len(rules.brands)} loaded in {load_s:.2f} s")
    print(
        f"posts: {n_posts:,} over {span_h / 3_600_000:.2f} h of event time; "
        f"matched {st.matched:,}; events {events:,} "
        f"{ {k.rsplit('.', 1)[1]: v for k, v in st.events.items()} }"
    )
    print(f"passes of each phase : {args.repeat} (median, then best)")
    for label, key in (("baseline decode only", "decode"), ("decode + match", "match"),
                       ("backtest full path", "full")):  # fmt: skip
        median, best = statistics.median(times[key]), min(times[key])
        print(f"{label:21s}: {n_posts / median:>10,.0f} posts/s  (best {n_posts / best:,.0f})")
    print(f"detector share       : {(full_s - match_s) / full_s:>10.0%} of the full path's time")
    print(f"ratio full/decode    : {decode_s / full_s:>10.2f}")
    target = 50_000
    verdict = "met" if n_posts / full_s >= target else "NOT met"
    print(f"target >= {target:,} posts/s (median pass): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
