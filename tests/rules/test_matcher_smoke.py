"""Smoke test: the example brand files load and match the contract's example post."""

from __future__ import annotations

from pathlib import Path

from rules.loader import load_rules
from rules.matcher import Matcher
from rules.model import BrandMatch
from rules.post import post_from_dict

BRANDS = Path(__file__).resolve().parents[2] / "brands"


def test_example_post_matches_acme_product_safety() -> None:
    matcher = Matcher(load_rules(BRANDS))
    post = post_from_dict(
        {
            "id": "mastodon:113224",
            "source": "mastodon",
            "text": "Just got food poisoning from an @acmefoods burger. Recall this now!",
            "created_at": "2026-11-27T10:00:03Z",
            "lang": "en",
        }
    )
    assert matcher.match(post) == [BrandMatch("acme", ("product-safety",))]
