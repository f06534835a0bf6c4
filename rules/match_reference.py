"""A slow, obviously-correct matcher: every brand, every term, one by one.

It is the baseline of ``bench/bench_match.py`` and the oracle the tests hold
``Matcher`` to.  It shares only the text preparation, the field filters and
the NEAR word-distance rule with ``Matcher``; term finding (plain ``str.find``
with word-boundary checks on characters) and boolean evaluation (a direct walk
of the AST) are independent.
"""

from __future__ import annotations

from rules.model import BrandMatch, KeywordRule, Post, RuleSet
from rules.normalize import is_word_char
from rules.query import And, Field, Near, Node, Not, Or, Term, parse
from rules.query_eval import QueryContext, _field_pred, _NearTerm, near_match, prepare_text


def term_in_text(term: Term, text: str) -> bool:
    """Does ``term`` occur in prepared ``text`` with the required word boundaries?"""
    needle = term.text
    start = text.find(needle)
    while start >= 0:
        end = start + len(needle)
        ok_start = not term.start_boundary or start == 0 or not is_word_char(text[start - 1])
        ok_end = not term.end_boundary or end == len(text) or not is_word_char(text[end])
        if ok_start and ok_end:
            return True
        start = text.find(needle, start + 1)
    return False


def evaluate(node: Node, text: str, ctx: QueryContext) -> bool:
    """Evaluate ``node`` directly (recursive; depth is bounded by the parser)."""
    if isinstance(node, Term):
        return term_in_text(node, text)
    if isinstance(node, Field):
        return _field_pred(node)(ctx)
    if isinstance(node, Not):
        return not evaluate(node.child, text, ctx)
    if isinstance(node, And):
        return all(evaluate(c, text, ctx) for c in node.children)
    if isinstance(node, Or):
        return any(evaluate(c, text, ctx) for c in node.children)
    assert isinstance(node, Near)
    if not any(term_in_text(t, text) for t in node.left):
        return False
    if not any(term_in_text(t, text) for t in node.right):
        return False
    left = tuple(_NearTerm(0, t.tokens, t.prefix, t.text[0] not in "#@") for t in node.left)
    right = tuple(_NearTerm(0, t.tokens, t.prefix, t.text[0] not in "#@") for t in node.right)
    return near_match(ctx.tokens, left, right, node.distance)


class ReferenceMatcher:
    """Same answers as ``Matcher``, computed brand by brand and term by term."""

    def __init__(self, ruleset: RuleSet) -> None:
        self._brands = [
            (
                b.id,
                frozenset(lang.split("-", 1)[0].lower() for lang in b.languages),
                parse(b.mentions_query),
                parse(b.exclude_query) if b.exclude_query else None,
                [(r.id, parse(r.query)) for r in b.rules if isinstance(r, KeywordRule)],
            )
            for b in sorted(ruleset.brands, key=lambda b: b.id)
        ]

    def match(self, post: Post) -> list[BrandMatch]:
        text = prepare_text(post.text)
        ctx = QueryContext(post, text, set())
        lang = ctx.primary_lang()
        out: list[BrandMatch] = []
        for brand_id, languages, mentions, exclude, rules in self._brands:
            if lang is not None and languages and lang not in languages:
                continue
            if not evaluate(mentions, text, ctx):
                continue
            if exclude is not None and evaluate(exclude, text, ctx):
                continue
            out.append(BrandMatch(brand_id, tuple(r for r, q in rules if evaluate(q, text, ctx))))
        return out
