"""A small deterministic crisis for the integration tests: quiet chatter, a surge, quiet again."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from rules.post import format_rfc3339_ms

RULES = """\
brand: acme
name: ACME Foods
mentions:
  query: 'acme OR @acmefoods OR #acme OR 艾克美'
  exclude: '"acme corp"'
rules:
  - id: product-safety
    kind: keyword
    query: 'recall OR contaminat* OR "food poisoning" OR 召回 OR 食物中毒'
    min_count: 3
    window: 10m
    crisis_type: product_quality
    severity: high
    runbook: https://wiki.example/acme/product-safety
    resolve_after: 10m
  - id: mention-surge
    kind: velocity
    of: mentions
    window: 10m
    baseline: 1h
    warmup: 1h
    ratio: 3
    min_count: 15
    min_authors: 5
    crisis_type: other
    severity: medium
    escalate:
      - {ratio: 8, severity: high}
    resolve_after: 10m
"""

OTHER = """\
brand: zhongyuan
mentions:
  query: '中原航空 OR zhongyuan'
rules:
  - id: service
    kind: keyword
    query: '退款 OR 客服 OR refund'
    min_count: 2
    window: 10m
    crisis_type: service_failure
    severity: medium
    resolve_after: 10m
"""

START_MS = 1_795_766_400_000  # 2026-11-27T04:00:00Z


def write_rules(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "acme.yaml").write_text(RULES, encoding="utf-8")
    (directory / "zhongyuan.yaml").write_text(OTHER, encoding="utf-8")
    return directory


def posts(seed: int = 7) -> list[dict[str, object]]:
    """About 500 posts over 3 hours of event time, sorted by created_at."""
    rnd = random.Random(seed)
    out: list[dict[str, object]] = []

    def post(ts_ms: int, text: str, author: int, followers: int, source: str = "mastodon") -> None:
        n = len(out)
        out.append(
            {
                "id": f"{source}:{seed}-{n}",
                "source": source,
                "text": text,
                "created_at": format_rfc3339_ms(ts_ms),
                "lang": "zh" if any("\u4e00" <= c <= "\u9fff" for c in text) else "en",
                "url": f"https://social.example/@u{author}/{n}",
                "author": {
                    "id": str(author),
                    "handle": f"u{author}@social.example",
                    "followers": followers,
                },
                "metrics": {"likes": rnd.randint(0, 50), "reposts": rnd.randint(0, 10)},
            }
        )

    chatter = [
        "Lunch at acme again",
        "acme burgers are fine",
        "#acme new menu",
        "艾克美的薯条不错",
        "ACME delivery was quick",
        "Thinking about @acmefoods",
        "zhongyuan flight on time",
    ]
    # 2 hours of ordinary chatter, ~1 post a minute
    t = START_MS
    while t < START_MS + 2 * 3_600_000:
        post(t, rnd.choice(chatter), rnd.randint(1, 300), rnd.randint(10, 5_000))
        t += rnd.randint(40_000, 80_000)
    # the crisis: 8 minutes of recall / food-poisoning posts from many authors
    crisis = [
        "acme recall now! food poisoning",
        "Got food poisoning from an acme burger",
        "艾克美 食物中毒 召回",
        "ACME contaminated beef? recall",
        "#acme recall this",
    ]
    for _ in range(120):
        post(
            t + rnd.randint(0, 8 * 60_000),
            rnd.choice(crisis),
            rnd.randint(1000, 2000),
            rnd.randint(100, 2_000_000),
        )
    post(t + 60_000, "中原航空 客服 不理 退款", 77, 300, "weibo")
    post(t + 90_000, "zhongyuan refund please", 78, 300, "weibo")
    # quiet again, the incidents resolve
    t += 10 * 60_000
    while t < START_MS + 3 * 3_600_000:
        post(t, rnd.choice(chatter), rnd.randint(1, 300), rnd.randint(10, 5_000))
        t += rnd.randint(60_000, 120_000)
    out.sort(key=lambda p: (str(p["created_at"]), str(p["id"])))
    return out


BAD_VALUES: list[tuple[bytes, str]] = [
    (b"not json at all", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_utf8"),
    (b'{"id": "x:1", "source": "x", "created_at": "2026-11-27T04:00:00Z"}', "missing_field:text"),
    (
        b'{"id": "x:2", "source": "x", "text": 5, "created_at": "2026-11-27T04:00:00Z"}',
        "wrong_type:text",
    ),
    (
        b'{"id": "x:3", "source": "x", "text": "acme", "created_at": "yesterday"}',
        "bad_timestamp:created_at",
    ),
    (b"[1, 2, 3]", "not_an_object"),
]


def encoded(items: list[dict[str, object]]) -> list[tuple[bytes, bytes]]:
    return [(str(p["id"]).encode(), orjson.dumps(p)) for p in items]
