"""Typed, immutable domain values shared by the whole engine.

Times are integers in milliseconds since the Unix epoch (event time), durations
are integer milliseconds; names carry their unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
"""Severity levels, lowest first; index order is escalation order."""
CRISIS_TYPES: tuple[str, ...] = (
    "product_quality",
    "service_failure",
    "inappropriate_remarks",
    "illegal_conduct",
    "other",
)
SENSITIVITIES: tuple[str, ...] = ("low", "medium", "high")

Severity = Literal["low", "medium", "high", "critical"]
CrisisType = Literal[
    "product_quality", "service_failure", "inappropriate_remarks", "illegal_conduct", "other"
]


def severity_rank(severity: str) -> int:
    """0 for low ... 3 for critical."""
    return SEVERITIES.index(severity)


# --------------------------------------------------------------------- posts


# Author and Post are not frozen: a frozen dataclass pays one object.__setattr__ per
# field on construction (~2 us for a Post, a tenth of the backtest's budget per post,
# BENCHMARKS.md). Treat them as immutable all the same: nothing assigns to their fields.
@dataclass(slots=True)
class Author:
    """Who wrote a post."""

    id: str | None = None
    """The platform's author id."""
    handle: str | None = None
    """Handle as shown on the platform, e.g. ``kim@social.example``."""
    followers: int = 0
    """Follower count at ingest time (0 when unknown)."""


@dataclass(slots=True)
class Post:
    """One social media post, as in the Post contract (contracts.md)."""

    id: str
    """Globally unique, conventionally ``<source>:<native id>``."""
    source: str
    """Platform or connector name, e.g. ``mastodon``."""
    text: str
    """The post's plain text."""
    created_at_ms: int
    """Event time: ``created_at`` in ms since the epoch."""
    created_at: str
    """``created_at`` as given (RFC 3339)."""
    lang: str | None = None
    """BCP 47 language tag."""
    url: str | None = None
    """Link to the post."""
    author: Author | None = None
    """The author, when known."""
    metrics: dict[str, int] = field(default_factory=dict)
    """Engagement: likes, reposts, replies, views."""
    reply_to: str | None = None
    """Id of the post this one answers."""
    ingested_at_ms: int | None = None
    """When a connector read it, ms since the epoch."""
    extra: dict[str, Any] | None = None
    """Source-specific data, passed through untouched."""

    @property
    def followers(self) -> int:
        """The author's follower count, 0 when unknown."""
        return self.author.followers if self.author else 0

    @property
    def author_key(self) -> str:
        """A stable key for counting distinct authors."""
        if self.author and (self.author.id or self.author.handle):
            return f"{self.source}:{self.author.id or self.author.handle}"
        return f"anon:{self.id}"


# --------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class Span:
    """Where a value stands in its rule file (for error messages)."""

    path: str
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class EscalateStep:
    """One ``escalate`` step of a rule: reached when every given figure is reached."""

    severity: str
    """Severity once reached."""
    ratio: float | None = None
    """Window count / baseline level at least this."""
    count: int | None = None
    """Window count at least this."""
    reach: int | None = None
    """Sum of author followers in the window at least this."""
    authors: int | None = None
    """Distinct authors in the window at least this."""


@dataclass(frozen=True, slots=True)
class KeywordRule:
    """Fires on posts that mention the brand and match ``query`` (frequency rule)."""

    id: str
    query: str
    """The rule's query, as written."""
    crisis_type: str
    severity: str
    min_count: int = 1
    """Matching posts within ``window_ms`` needed to open."""
    window_ms: int = 600_000
    resolve_after_ms: int = 1_800_000
    """Quiet this long -> resolved."""
    runbook: str | None = None
    escalate: tuple[EscalateStep, ...] = ()
    kind: Literal["keyword"] = "keyword"


@dataclass(frozen=True, slots=True)
class VelocityRule:
    """Fires when the count of ``of`` surges against its own baseline (spike rule)."""

    id: str
    of: str
    """``mentions`` or the id of a keyword rule of the same brand."""
    crisis_type: str
    severity: str
    window_ms: int = 600_000
    baseline_ms: int = 86_400_000
    ratio: float | None = None
    """Fixed threshold: count >= ratio x baseline level. Exclusive with ``sensitivity``."""
    sensitivity: str | None = None
    """Adaptive threshold: low | medium | high. Exclusive with ``ratio``."""
    min_count: int = 1
    min_authors: int = 0
    resolve_after_ms: int = 1_800_000
    warmup_ms: int | None = None
    """History needed before the rule may fire; None means ``baseline_ms``."""
    runbook: str | None = None
    escalate: tuple[EscalateStep, ...] = ()
    kind: Literal["velocity"] = "velocity"

    @property
    def effective_warmup_ms(self) -> int:
        return self.baseline_ms if self.warmup_ms is None else self.warmup_ms


Rule = KeywordRule | VelocityRule


@dataclass(frozen=True, slots=True)
class Brand:
    """One brand file."""

    id: str
    """``[a-z0-9][a-z0-9_-]*``, unique across files."""
    mentions_query: str
    """Which posts are about the brand."""
    rules: tuple[Rule, ...]
    name: str | None = None
    exclude_query: str | None = None
    languages: tuple[str, ...] = ()
    """Only posts in these languages (primary subtag compare); empty = all."""
    path: str = ""
    """The file it was loaded from."""

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """All brands, as loaded from one directory."""

    brands: tuple[Brand, ...]
    digest: str = ""
    """A hash of the rule files' content; changes whenever a rule changes."""
    by_id: dict[str, Brand] = field(init=False, repr=False, compare=False, hash=False)
    """Brand id -> brand (``brand`` was a scan over all brands: 30 µs with 1,000)."""

    def __post_init__(self) -> None:
        by_id: dict[str, Brand] = {}
        for b in self.brands:
            by_id.setdefault(b.id, b)  # the first of a repeated id, as the scan found
        object.__setattr__(self, "by_id", by_id)

    def brand(self, brand_id: str) -> Brand:
        return self.by_id[brand_id]


# ------------------------------------------------------------------- matching


@dataclass(slots=True)  # not frozen, like Post: made once per post and brand
class BrandMatch:
    """A post mentions ``brand``; ``rule_ids`` are the keyword rules it also matches."""

    brand: str
    rule_ids: tuple[str, ...]
    """Keyword rules matched, in file order (may be empty: a mention only)."""


# Not frozen, like Author and Post: one is made per post and brand mentioned, and a frozen
# dataclass's __init__ (an object.__setattr__ per field) took 1.8 us where this one takes
# 0.2 (BENCHMARKS.md, session 24). Nothing assigns to its fields.
@dataclass(slots=True)
class Hit:
    """What the matcher hands the detector for one post and one brand.

    Small and serialisable: it is the value of the internal matches topic.
    """

    brand: str
    post_id: str
    source: str
    created_at_ms: int
    author_key: str
    """Distinct-author key (see ``Post.author_key``)."""
    author: str | None
    """Handle for samples."""
    followers: int
    rule_ids: tuple[str, ...]
    """Keyword rules matched (mentions always count)."""
    text: str
    """Text for samples, truncated to 280 characters."""
    url: str | None
    created_at: str
    """RFC 3339 as given."""
    ingested_at_ms: int | None = None

    @staticmethod
    def from_post(post: Post, match: BrandMatch) -> Hit:
        author = post.author
        # positional, in field order: keyword arguments cost more, and this runs per hit
        return Hit(match.brand, post.id, post.source, post.created_at_ms, post.author_key,
                   author.handle if author else None, author.followers if author else 0,
                   match.rule_ids, post.text[:280], post.url, post.created_at,
                   post.ingested_at_ms)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "brand": self.brand,
            "post_id": self.post_id,
            "source": self.source,
            "created_at_ms": self.created_at_ms,
            "author_key": self.author_key,
            "author": self.author,
            "followers": self.followers,
            "rule_ids": list(self.rule_ids),
            "text": self.text,
            "url": self.url,
            "created_at": self.created_at,
            "ingested_at_ms": self.ingested_at_ms,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Hit:
        return Hit(
            brand=d["brand"],
            post_id=d["post_id"],
            source=d["source"],
            created_at_ms=int(d["created_at_ms"]),
            author_key=d["author_key"],
            author=d.get("author"),
            followers=int(d.get("followers") or 0),
            rule_ids=tuple(d.get("rule_ids") or ()),
            text=d.get("text") or "",
            url=d.get("url"),
            created_at=d["created_at"],
            ingested_at_ms=d.get("ingested_at_ms"),
        )

    def to_row(self) -> list[Any]:
        """The fields in declaration order (``rule_ids`` as a list): the compact form on
        the matches topic, which the detect stage counts without building a Hit."""
        return [self.brand, self.post_id, self.source, self.created_at_ms, self.author_key,
                self.author, self.followers, list(self.rule_ids), self.text, self.url,
                self.created_at, self.ingested_at_ms]  # fmt: skip

    @staticmethod
    def from_row(row: list[Any]) -> Hit:
        return Hit(row[0], row[1], row[2], row[3], row[4], row[5], row[6], tuple(row[7]),
                   row[8], row[9], row[10], row[11])  # fmt: skip
