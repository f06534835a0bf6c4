"""Matcher: one automaton, every brand; checked by example and against the reference matcher."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rules.matcher as matcher_module
from rules.match_reference import ReferenceMatcher
from rules.matcher import Matcher
from rules.model import Author, Brand, BrandMatch, KeywordRule, Post, RuleSet


def brand(
    brand_id: str,
    mentions: str,
    rules: dict[str, str] | None = None,
    exclude: str | None = None,
    languages: tuple[str, ...] = (),
) -> Brand:
    kw = tuple(KeywordRule(rid, q, "other", "medium") for rid, q in (rules or {}).items())
    return Brand(brand_id, mentions, kw, exclude_query=exclude, languages=languages)


def post(
    text: str,
    lang: str | None = None,
    source: str = "mastodon",
    handle: str | None = None,
    followers: int = 0,
) -> Post:
    author = Author(id="1", handle=handle, followers=followers) if handle or followers else None
    return Post("p:1", source, text, 0, "1970-01-01T00:00:00Z", lang=lang, author=author)


def one(mentions: str, text: str, **kw: object) -> bool:
    m = Matcher(RuleSet((brand("b", mentions),)))
    return bool(m.match(post(text, **kw)))  # type: ignore[arg-type]


ACME = brand(
    "acme",
    'acme OR @acmefoods OR #acme OR "acme burger" OR 艾克美',
    {
        "safety": 'recall OR contaminat* OR "food poisoning" OR 召回 OR 食物中毒',
        "service": "(app OR website) NEAR/3 (down OR crash*) OR 闪退",
    },
    exclude='"acme corp" OR roadrunner',
    languages=("en", "zh"),
)
ZHONGYUAN = brand("zhongyuan", "中原航空", {"delays": "延误 OR 取消"})


def test_english_mention_and_rules_in_file_order() -> None:
    m = Matcher(RuleSet((ZHONGYUAN, ACME)))
    got = m.match(post("ACME app is down, and I think there's a recall", lang="en"))
    assert got == [BrandMatch("acme", ("safety", "service"))]


def test_chinese_both_scripts() -> None:
    m = Matcher(RuleSet((ZHONGYUAN, ACME)))
    assert m.match(post("中原航空航班延误三小时")) == [BrandMatch("zhongyuan", ("delays",))]
    assert m.match(post("中原航空航班延誤三小時")) == [BrandMatch("zhongyuan", ("delays",))]
    assert m.match(post("艾克美宣布召回")) == [BrandMatch("acme", ("safety",))]


def test_mixed_script_and_full_width() -> None:
    m = Matcher(RuleSet((ZHONGYUAN, ACME)))
    assert m.match(post("ＡＣＭＥ的汉堡让我食物中毒了")) == [BrandMatch("acme", ("safety",))]
    assert m.match(post("中原航空 and ACME both: 取消 recall")) == [
        BrandMatch("acme", ("safety",)),
        BrandMatch("zhongyuan", ("delays",)),
    ]


def test_whole_words_for_latin_substrings_for_cjk() -> None:
    assert not one("apple", "I love pineapple")
    assert not one("apple", "applesauce")
    assert one("apple", "new apple手机 out")
    assert one("apple", "APPLE!")
    assert one("apple", "café apple")
    assert not one("apple", "éapple")
    assert one("召回", "宣布召回了产品")
    assert one("手机", "apple手机")


def test_hashtags_and_mentions() -> None:
    assert one("#acme", "love #ACME today")
    assert not one("#acme", "love acme today")
    assert not one("#acme", "love #acmefoods")
    assert not one("#acme", "foo#acme")
    assert one("@acmefoods", "hey @acmefoods help")
    assert one("@acmefoods", "cc @acmefoods@social.example")
    assert not one("@acmefoods", "mail info@acmefoods.com")
    assert one("acme", "#acme is trending")


def test_phrases_and_wildcards() -> None:
    assert one('"food poisoning"', "got FOOD\n  poisoning there")
    assert not one('"food poisoning"', "food for poisoning")
    assert one("contaminat*", "was contaminated")
    assert one("contaminat*", "contamination!")
    assert not one("contaminat*", "decontaminated")


def test_near_counts_cjk_characters_as_words() -> None:
    assert one("sick NEAR/2 burger", "sick from a burger")
    assert not one("sick NEAR/2 burger", "sick from the bad burger")
    assert one("sick NEAR/2 burger", "burger made me sick")
    assert one("空姐 NEAR/3 辱骂", "空姐当众辱骂乘客")
    assert not one("空姐 NEAR/1 辱骂", "空姐当众辱骂乘客")
    assert one("(app OR site) NEAR/3 crash*", "the site keeps crashing")
    assert one("acme NEAR/1 burger", "#acme burger")


def test_not_exclude_and_pure_not_queries() -> None:
    m = Matcher(RuleSet((ACME,)))
    assert m.match(post("acme corp makes anvils")) == []
    assert m.match(post("acme vs roadrunner")) == []
    pure_not = Matcher(RuleSet((brand("x", "NOT spam"),)))
    assert pure_not.match(post("anything at all")) == [BrandMatch("x", ())]
    assert pure_not.match(post("spam spam")) == []
    assert Matcher(RuleSet((brand("y", "acme NOT recall"),))).match(post("acme recall")) == []


def test_field_filters() -> None:
    assert one("acme lang:zh", "acme", lang="zh-Hant")
    assert not one("acme lang:zh", "acme", lang="en")
    assert not one("acme lang:zh", "acme")
    assert one("source:bluesky", "no terms at all", source="Bluesky")
    assert one("acme author:kim", "acme", handle="kim@social.example")
    assert one("acme author:kim@social.example", "acme", handle="@kim@social.example")
    assert not one("acme author:kim", "acme", handle="kimberly")
    assert one("acme followers>=10000", "acme", followers=10000)
    assert not one("acme followers>10000", "acme", followers=10000)
    assert one("acme followers<10", "acme")


def test_brand_languages_filter() -> None:
    m = Matcher(RuleSet((ACME,)))
    assert m.match(post("acme", lang="fr")) == []
    assert m.match(post("acme", lang="zh-Hans")) == [BrandMatch("acme", ())]
    assert m.match(post("acme")) == [BrandMatch("acme", ())]


def test_shared_terms_sorted_output_and_stats() -> None:
    brands = (brand("zeta", "acme"), brand("alpha", "acme OR thing"), brand("mid", "other"))
    m = Matcher(RuleSet(brands))
    assert [b.brand for b in m.match(post("acme"))] == ["alpha", "zeta"]
    assert m.terms_count == 3
    assert m.brands_count == 3


def test_no_terms_at_all() -> None:
    m = Matcher(RuleSet((brand("f", "followers>5"),)))
    assert m.terms_count == 0
    assert m.match(post("x", followers=6)) == [BrandMatch("f", ())]
    assert m.match(post("x", followers=1)) == []


# ------------------------------------------------------------- properties

_TRAD_PAIRS = [("質", "质"), ("問", "问"), ("題", "题"), ("誤", "误"), ("機", "机"), ("場", "场")]
_RULES = RuleSet(
    (
        brand("q", "质量问题 OR 误机", {"r": "机场 NEAR/2 问题"}),
        brand("w", "acme OR ＡＢＣ", {"r": "recall"}),
    )
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(["质量", "问题", "误", "机场", "acme", "abc", "recall", " ", "的", "x"]),
        max_size=12,
    )
)
def test_same_result_in_traditional_and_full_width(parts: list[str]) -> None:
    m = Matcher(_RULES)
    text = "".join(parts)
    trad = text
    for t, s in _TRAD_PAIRS:
        trad = trad.replace(s, t)
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    expected = m.match(post(text))
    assert m.match(post(trad)) == expected
    assert m.match(post(wide)) == expected
    assert m.match(post(text.upper())) == expected


_WORDS = ["acme", "burger", "sick", "recall", "app", "down", "召回", "中毒", "艾克美", "美食"]
_QUERY_ATOMS = [
    *_WORDS,
    "acm*",
    "#acme",
    "@acme",
    '"acme burger"',
    "lang:en",
    "followers>=5",
    "(sick NEAR/2 burger)",
    "(召回 NEAR/1 中毒)",
]


@st.composite
def queries(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 2 or draw(st.booleans()):
        return draw(st.sampled_from(_QUERY_ATOMS))
    op = draw(st.sampled_from([" OR ", " AND ", " ", " AND NOT "]))
    left = draw(queries(depth + 1))
    right = draw(queries(depth + 1))
    return f"({left}{op}{right})"


_TEXT_PIECES = [*_WORDS, "#acme", "@acme", "acmeburger", "pineacme", " ", ", ", "的", "x", "\n"]


def matcher_with(rules: RuleSet, automata: str) -> Matcher:
    """A Matcher whose UTF-8 search is the DFA (``dfa``, small rule sets) or, as for
    large ones, the ASCII NFA and Hyperscan (``nfa+hyperscan``)."""
    limit = matcher_module._DFA_MAX_PATTERN_BYTES if automata == "dfa" else 0
    with patch.object(matcher_module, "_DFA_MAX_PATTERN_BYTES", limit):
        m = Matcher(rules)
    if m._finder is not None:
        assert (m._finder._utf8_dfa is not None) == (automata == "dfa")
    return m


@pytest.mark.parametrize("automata", ["dfa", "nfa+hyperscan"])
@settings(max_examples=200, deadline=None)
@given(
    st.lists(queries(), min_size=1, max_size=4),
    st.lists(st.lists(st.sampled_from(_TEXT_PIECES), max_size=14), min_size=1, max_size=5),
    st.sampled_from([None, "en", "zh"]),
    st.integers(0, 10),
)
def test_matcher_agrees_with_reference(
    automata: str, mentions: list[str], texts: list[list[str]], lang: str | None, followers: int
) -> None:
    brands = tuple(
        brand(f"b{i}", q, {"r1": mentions[(i + 1) % len(mentions)], "r2": f"NOT ({q})"})
        for i, q in enumerate(mentions)
    )
    rules = RuleSet(brands)
    fast, slow = matcher_with(rules, automata), ReferenceMatcher(rules)
    for parts in texts:
        p = post("".join(parts), lang=lang, followers=followers, handle="kim")
        assert fast.match(p) == slow.match(p)


@pytest.mark.parametrize("automata", ["dfa", "nfa+hyperscan"])
def test_terms_with_a_nul_byte_are_matched_exactly(automata: str) -> None:
    # Hyperscan takes NUL-terminated literals: with it such terms go to a separate automaton
    def hit(query: str, text: str) -> bool:
        rules = RuleSet((brand("b", f"{query} OR 品牌"),))
        return matcher_with(rules, automata).match(post(text)) != []

    assert hit('"ab\x00cd"', "zz ab\x00cd yy 的")
    assert not hit('"ab\x00cd"', "zz abcd yy 的")
    assert hit("召回\x00x", "yy 召回\x00x")
    assert not hit("召回\x00x", "yy 召回x")


def test_many_ascii_terms_switch_to_the_nfa_and_match_the_same() -> None:
    words = [f"term{i:05d}longish" for i in range(20_000)]  # ~300 kB of ASCII terms
    assert sum(map(len, words)) > matcher_module._DFA_MAX_PATTERN_BYTES
    brands = tuple(
        brand(f"b{i:03d}", " OR ".join(words[i * 100 : (i + 1) * 100]), {"r": "recall"})
        for i in range(200)
    )
    m = Matcher(RuleSet(brands))
    reference = ReferenceMatcher(RuleSet(brands))
    for text in ("term00042longish recall", "x term19999longish", "term00042longishx", "none"):
        assert m.match(post(text)) == reference.match(post(text))
    assert m.match(post("term00042longish recall")) == [BrandMatch("b000", ("r",))]
    assert m.match(post("x term19999longish")) == [BrandMatch("b199", ())]


def test_each_keyword_rule_is_tried_when_only_its_own_terms_hit() -> None:
    """A brand's rules are skipped only when none of their terms hit: a post with just
    the second (or a gate-less NOT) rule's term still gets that rule."""
    m = Matcher(RuleSet((ACME,)))
    assert m.match(post("acme website crashed again", lang="en")) == [
        BrandMatch("acme", ("service",))
    ]
    assert m.match(post("acme 闪退")) == [BrandMatch("acme", ("service",))]
    assert m.match(post("acme is fine")) == [BrandMatch("acme", ())]
    negated = brand("neg", "neg", {"quiet": "NOT recall", "loud": "recall"})
    m2 = Matcher(RuleSet((negated,)))
    assert m2.match(post("neg news")) == [BrandMatch("neg", ("quiet",))]
    assert m2.match(post("neg recall")) == [BrandMatch("neg", ("loud",))]
