"""Hostile queries and rule files: a clear error (or a working matcher), bounded in time."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.errors import QuerySyntaxError, RuleError
from rules.loader import load_rules
from rules.matcher import Matcher
from rules.model import Brand, KeywordRule, RuleSet
from rules.post import post_from_dict
from rules.query import MAX_DEPTH, MAX_TERMS, parse

FAST_S = 2.0


def _parse_outcome(query: str) -> object:
    started = time.perf_counter()
    try:
        result: object = parse(query)
    except QuerySyntaxError as exc:
        assert exc.col >= 1 and exc.message
        result = exc
    assert time.perf_counter() - started < FAST_S, f"parse took too long: {query[:60]!r}..."
    return result


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000, 1_000_000 // 2])
def test_deep_parentheses_are_refused_not_a_recursion_error(depth: int) -> None:
    result = _parse_outcome("(" * depth + "a" + ")" * depth)
    assert isinstance(result, QuerySyntaxError)
    assert "nested too deeply" in result.message or "too long" in result.message


def test_deep_not_chain_is_refused() -> None:
    result = _parse_outcome("NOT " * 5000 + "a")
    assert isinstance(result, QuerySyntaxError)


def test_thousands_of_terms_are_refused_with_the_limit_named() -> None:
    query = " OR ".join(f"t{i}" for i in range(MAX_TERMS + 1))[:9_999]
    many = _parse_outcome(query)
    assert isinstance(many, QuerySyntaxError)
    assert str(MAX_TERMS) in many.message or "too long" in many.message
    huge = _parse_outcome(" OR ".join(f"t{i}" for i in range(5000)))
    assert isinstance(huge, QuerySyntaxError)


def test_a_query_at_the_term_limit_matches_in_bounded_time() -> None:
    terms = [f"w{i}" for i in range(MAX_TERMS)]
    query = " OR ".join(terms)
    if len(query) > 10_000:
        query = " OR ".join(terms[: 10_000 // 7])
    brand = Brand("b", "brandx", (KeywordRule("r", query, "other", "low"),))
    matcher = Matcher(RuleSet((brand,), "t"))
    post = post_from_dict(
        {
            "id": "p",
            "source": "s",
            "text": "brandx " + " ".join(terms),
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
    started = time.perf_counter()
    found = matcher.match(post)
    assert time.perf_counter() - started < FAST_S
    assert [m.brand for m in found] == ["b"] and found[0].rule_ids == ("r",)


@pytest.mark.parametrize("links", [50, 300])
def test_pathological_near_chains_match_in_bounded_time(links: int) -> None:
    query = " NEAR/1000 ".join(f"n{i % 7}" for i in range(links))
    node = _parse_outcome(query)
    if isinstance(node, QuerySyntaxError):
        return  # refused with a clear message: fine
    brand = Brand("b", "brandx", (KeywordRule("r", query, "other", "low"),))
    matcher = Matcher(RuleSet((brand,), "t"))
    text = "brandx " + " ".join(f"n{i % 7}" for i in range(20_000))
    post = post_from_dict(
        {"id": "p", "source": "s", "text": text, "created_at": "2026-01-01T00:00:00Z"}
    )
    started = time.perf_counter()
    found = matcher.match(post)
    assert time.perf_counter() - started < FAST_S * 2, f"NEAR chain of {links} took too long"
    assert found and found[0].rule_ids == ("r",)


@settings(max_examples=300, deadline=1000)
@given(st.text(alphabet='ab "()*#@:/<>=-NEARORANDT0123456789 召回', max_size=200))
def test_arbitrary_queries_parse_or_fail_cleanly(query: str) -> None:
    _parse_outcome(query)


# ------------------------------------------------------------------ rule files

VALID_HEAD = "brand: acme\nmentions:\n  query: acme\nrules: []\n"
BILLION_LAUGHS = "\n".join(
    ["a: &a [" + ",".join(["lol"] * 10) + "]"]
    + [
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]"
        for i in range(8)
    ]
    + ["brand: *i", "mentions:\n  query: acme", "rules: []"]
)


@pytest.mark.parametrize(
    ("what", "content"),
    [
        ("yaml bomb", BILLION_LAUGHS.encode()),
        ("enormous", (VALID_HEAD + "# " + "x" * 78 + "\n").encode() * 30_000),
        ("not yaml", b"brand: [unclosed\n  : : :\n\t- {"),
        ("binary", bytes(range(256)) * 64),
        ("not utf-8", b"brand: \xff\xfe acme\n"),
        ("python tag", b"brand: !!python/object/apply:os.system ['true']\nmentions: {query: a}\n"),
        ("deep nesting", b"brand: " + b"[" * 50_000 + b"]" * 50_000 + b"\n"),
        ("many documents", b"---\n" + (VALID_HEAD + "---\n").encode() * 2000),
    ],
)
def test_hostile_rule_files_give_a_clear_problem(tmp_path: Path, what: str, content: bytes) -> None:
    (tmp_path / "evil.yaml").write_bytes(content)
    started = time.perf_counter()
    with pytest.raises(RuleError) as caught:
        load_rules(tmp_path)
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0, f"{what}: {elapsed:.1f}s"
    problems = caught.value.problems
    assert problems, what
    for problem in problems:
        assert problem.path.endswith("evil.yaml") and problem.line >= 1 and problem.message
        assert len(problem.message) < 500, f"{what}: message is a dump: {problem.message[:100]}"
    if what != "deep nesting":  # bounded by the recursion limit; tracemalloc makes it crawl
        tracemalloc.start()
        try:
            with pytest.raises(RuleError):
                load_rules(tmp_path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 200 * 2**20, f"{what}: peak {peak / 2**20:.0f} MiB"
