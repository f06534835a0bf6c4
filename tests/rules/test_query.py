"""The query parser: structure, precedence, and errors with their columns."""

from __future__ import annotations

import pytest

from rules.errors import QuerySyntaxError
from rules.query import (
    MAX_DEPTH,
    MAX_QUERY_CHARS,
    MAX_TERMS,
    And,
    Field,
    Near,
    Not,
    Or,
    Term,
    iter_terms,
    needs_hit,
    parse,
)


def t(text: str) -> str:
    node = parse(text)
    assert isinstance(node, Term)
    return node.text


def test_terms_are_normalised() -> None:
    assert t("ＡＣＭＥ") == "acme"
    assert t('"Food   Poisoning"') == "food poisoning"
    assert t("質量問題") == "质量问题"
    node = parse("contaminat*")
    assert isinstance(node, Term) and node.prefix and node.text == "contaminat"
    assert not node.end_boundary and node.start_boundary


def test_boundaries_by_script() -> None:
    apple, zh, tag, mixed = (parse(q) for q in ("apple", "召回", "#acme", "apple手机"))
    assert isinstance(apple, Term) and apple.start_boundary and apple.end_boundary
    assert isinstance(zh, Term) and not zh.start_boundary and not zh.end_boundary
    assert isinstance(tag, Term) and tag.start_boundary and tag.end_boundary
    assert isinstance(mixed, Term) and mixed.start_boundary and not mixed.end_boundary


def test_precedence_not_near_and_or() -> None:
    node = parse("a b OR c NEAR/2 d AND NOT e")
    assert isinstance(node, Or) and len(node.children) == 2
    left, right = node.children
    assert isinstance(left, And) and [c.text for c in left.children if isinstance(c, Term)] == [
        "a",
        "b",
    ]
    # NOT binds tighter than NEAR, so NOT c cannot be a NEAR operand
    with pytest.raises(QuerySyntaxError):
        parse("NOT c NEAR/2 d")
    assert isinstance(right, And)
    assert isinstance(right.children[0], Near) and isinstance(right.children[1], Not)


def test_near_with_or_group_and_distance() -> None:
    node = parse("sick NEAR/4 (ate OR burger)")
    assert isinstance(node, Near) and node.distance == 4
    assert [x.text for x in node.left] == ["sick"]
    assert [x.text for x in node.right] == ["ate", "burger"]


def test_not_and_implicit_and() -> None:
    node = parse("acme NOT roadrunner")
    assert isinstance(node, And)
    assert isinstance(node.children[1], Not)


def test_fields() -> None:
    node = parse("lang:zh-Hant source:Mastodon author:@Kim followers>=10000 author.followers<5")
    assert isinstance(node, And)
    fields = [c for c in node.children if isinstance(c, Field)]
    assert [(f.name, f.op, f.value) for f in fields] == [
        ("lang", "=", "zh"),
        ("source", "=", "mastodon"),
        ("author", "=", "kim"),
        ("followers", ">=", "10000"),
        ("followers", "<", "5"),
    ]


def test_lower_case_operators_are_terms() -> None:
    node = parse("salt and pepper")
    assert isinstance(node, And) and [c.text for c in node.children if isinstance(c, Term)] == [
        "salt",
        "and",
        "pepper",
    ]


def test_iter_terms_and_needs_hit() -> None:
    assert [x.text for x in iter_terms(parse("a (b OR NOT c) d NEAR/2 e"))] == [
        "a",
        "b",
        "c",
        "d",
        "e",
    ]
    assert needs_hit(parse("a OR b"))
    assert needs_hit(parse("a lang:en"))
    assert not needs_hit(parse("NOT a"))
    assert not needs_hit(parse("lang:en"))
    assert not needs_hit(parse("a OR followers>10"))


@pytest.mark.parametrize(
    ("query", "col", "message"),
    [
        ("recall AND", 11, "expected a term or '(' after 'AND'; found end of query"),
        ("OR recall", 1, "expected a term or '(' at start of query; found 'OR'"),
        ("a OR OR b", 6, "expected a term or '(' after 'OR'; found 'OR'"),
        ("(a OR b", 8, "expected ')' to close the '(' at col 1; found end of query"),
        ("a OR b)", 7, "unexpected ')' with no matching '('"),
        ("()", 2, "empty parentheses"),
        ('say "hello', 11, "unterminated phrase"),
        ('""', 1, "empty phrase"),
        ("", 1, "empty query"),
        ("a NEAR/x b", 3, "expected a word distance after 'NEAR/' (e.g. NEAR/5); found 'x'"),
        ("a NEAR b", 3, "found nothing"),
        ("a NEAR/0 b", 3, "NEAR distance must be between 1 and"),
        ("(a b) NEAR/3 c", 7, "the left side of 'NEAR/3' must be a term"),
        ("co*ntaminated", 3, "'*' is only allowed at the end of a word"),
        ("c*", 1, "a wildcard needs at least 2 characters"),
        ("lang:", 6, "expected a value after 'lang:'"),
        ("colour:red", 1, "unknown field 'colour:'"),
        ("followers>=lots", 12, "expected a whole number after 'followers>='; found 'lots'"),
        ("!!!", 1, "has no letters or digits"),
        ("NOT", 4, "expected a term or '(' after 'NOT'; found end of query"),
    ],
)
def test_syntax_errors(query: str, col: int, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse(query)
    assert info.value.col == col
    assert message in info.value.message


def test_nesting_depth_is_bounded() -> None:
    ok = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert isinstance(parse(ok), Term)
    with pytest.raises(QuerySyntaxError) as info:
        parse("(" * 4000 + "a" + ")" * 4000)
    assert info.value.col == MAX_DEPTH + 1 and "nested too deeply" in info.value.message
    with pytest.raises(QuerySyntaxError) as info:
        parse("NOT " * 500 + "a")
    assert "nested too deeply" in info.value.message


def test_length_and_term_count_are_bounded() -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse("a" * (MAX_QUERY_CHARS + 1))
    assert "query too long" in info.value.message
    many = " OR ".join(f"w{i}" for i in range(MAX_TERMS + 1))
    assert len(many) <= MAX_QUERY_CHARS
    with pytest.raises(QuerySyntaxError) as info:
        parse(many)
    assert "too many terms" in info.value.message
    assert info.value.col == many.index(f"w{MAX_TERMS}") + 1
