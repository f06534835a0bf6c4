"""Builders shared by the detector tests (explicit integer times, hand-made RuleSets)."""

from __future__ import annotations

from rules.model import Brand, BrandMatch, Hit, KeywordRule, Post, RuleSet, VelocityRule

MIN = 60_000


def keyword(rule_id: str = "recall", **kw: object) -> KeywordRule:
    args: dict = {"query": rule_id, "crisis_type": "product_quality", "severity": "high"}
    args.update(kw)
    return KeywordRule(id=rule_id, **args)


def velocity(rule_id: str = "surge", **kw: object) -> VelocityRule:
    args: dict = {
        "of": "mentions",
        "crisis_type": "other",
        "severity": "medium",
        "window_ms": 10 * MIN,
        "baseline_ms": 60 * MIN,
        "ratio": 3.0,
        "min_count": 5,
    }
    args.update(kw)
    return VelocityRule(id=rule_id, **args)


def ruleset(*rules: object, brand: str = "acme") -> RuleSet:
    return RuleSet(brands=(Brand(id=brand, mentions_query=brand, rules=tuple(rules)),))  # type: ignore[arg-type]


def hit(
    n: int | str,
    ts_ms: int,
    *rule_ids: str,
    author: str | None = None,
    followers: int = 10,
    brand: str = "acme",
    ingested_at_ms: int | None = None,
) -> Hit:
    return Hit(
        brand=brand,
        post_id=f"p{n}",
        source="test",
        created_at_ms=ts_ms,
        author_key=f"test:{author or n}",
        author=author or f"user{n}",
        followers=followers,
        rule_ids=tuple(rule_ids),
        text=f"post {n}",
        url=None,
        created_at=f"t{ts_ms}",
        ingested_at_ms=ingested_at_ms,
    )


def post(n: int | str, ts_ms: int, text: str, author: str | None = None) -> Post:
    from rules.model import Author
    from rules.post import format_rfc3339_ms

    return Post(
        id=f"p{n}",
        source="test",
        text=text,
        created_at_ms=ts_ms,
        created_at=format_rfc3339_ms(ts_ms),
        author=Author(id=author or f"u{n}", handle=author or f"u{n}", followers=5),
    )


class WordMatcher:
    """A stand-in matcher: a brand is mentioned when its id is a word of the text;
    a keyword rule matches when its query (one word) is a word of the text too."""

    def __init__(self, rs: RuleSet) -> None:
        self.rs = rs

    def match(self, p: Post) -> list[BrandMatch]:
        words = set(p.text.lower().split())
        out = []
        for b in self.rs.brands:
            if b.id in words:
                ids = tuple(
                    r.id for r in b.rules if isinstance(r, KeywordRule) and r.query in words
                )
                out.append(BrandMatch(brand=b.id, rule_ids=ids))
        return out
