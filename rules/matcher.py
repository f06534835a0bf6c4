"""One-pass multi-brand matcher.

Every term of every brand is compiled into ONE Aho-Corasick automaton over
normalised text, so the cost per post grows with the post's length, not with
the number of rules.  The automaton is ``ahocorasick_rs`` (Rust; one call per
post returns every overlapping match as code-point offsets), 3-4x faster on
Chinese text than pyahocorasick (see BENCHMARKS.md).  Word boundaries are
checked only for the hits, and only for Latin-script term ends; CJK terms are
substrings.

Boolean structure is then evaluated only for brands that had a hit, plus the
brands whose ``mentions`` query can be true without any term (``NOT x``,
field-only queries).
"""

from __future__ import annotations

import ahocorasick_rs

from rules.model import BrandMatch, KeywordRule, Post, RuleSet
from rules.normalize import WORD_CHARS
from rules.query import Term, needs_hit, parse
from rules.query_eval import Predicate, QueryContext, compile_query, prepare_text

# per automaton pattern: ((term id, start boundary, end boundary), ...)
_Entries = tuple[tuple[int, bool, bool], ...]


class _CompiledBrand:
    __slots__ = ("exclude", "id", "languages", "mentions", "rules")

    def __init__(
        self,
        brand_id: str,
        languages: frozenset[str],
        mentions: Predicate,
        exclude: Predicate | None,
        rules: tuple[tuple[str, Predicate], ...],
    ) -> None:
        self.id = brand_id
        self.languages = languages
        self.mentions = mentions
        self.exclude = exclude
        self.rules = rules


class Matcher:
    """Matches posts against every brand of a ``RuleSet`` in one pass."""

    def __init__(self, ruleset: RuleSet) -> None:
        self._term_ids: dict[tuple[str, bool, bool], int] = {}
        self._mention_brands: list[list[int]] = []
        """Per term id: the brands whose ``mentions`` query uses the term."""
        brands = sorted(ruleset.brands, key=lambda b: b.id)
        compiled: list[_CompiledBrand] = []
        always: list[int] = []
        for index, brand in enumerate(brands):
            mentions_ast = parse(brand.mentions_query)
            if not needs_hit(mentions_ast):
                always.append(index)

            def mention_term(term: Term, index: int = index) -> int:
                tid = self._term_id(term)
                if index not in self._mention_brands[tid]:
                    self._mention_brands[tid].append(index)
                return tid

            exclude = (
                compile_query(parse(brand.exclude_query), self._term_id)
                if brand.exclude_query
                else None
            )
            rules = tuple(
                (r.id, compile_query(parse(r.query), self._term_id))
                for r in brand.rules
                if isinstance(r, KeywordRule)
            )
            compiled.append(
                _CompiledBrand(
                    brand.id,
                    frozenset(lang.split("-", 1)[0].lower() for lang in brand.languages),
                    compile_query(mentions_ast, mention_term),
                    exclude,
                    rules,
                )
            )
        self._brands = tuple(compiled)
        self._always = frozenset(always)
        # A brand is a candidate only if one of its *mentions* terms hit (or it is in
        # _always): when needs_hit(mentions) its mentions query is false otherwise.
        self._candidates_of = tuple(tuple(b) for b in self._mention_brands)
        self._automaton, self._entries = self._build_automaton()

    def _term_id(self, term: Term) -> int:
        key = term.key
        tid = self._term_ids.get(key)
        if tid is None:
            tid = self._term_ids[key] = len(self._term_ids)
            self._mention_brands.append([])
        return tid

    def _build_automaton(self) -> tuple[ahocorasick_rs.AhoCorasick | None, tuple[_Entries, ...]]:
        by_key: dict[str, list[tuple[int, bool, bool]]] = {}
        for (text, start_b, end_b), tid in self._term_ids.items():
            if text:  # an empty term never matches (and the automaton refuses it)
                by_key.setdefault(text, []).append((tid, start_b, end_b))
        if not by_key:
            return None, ()
        keys = sorted(by_key)
        automaton = ahocorasick_rs.AhoCorasick(keys, matchkind=ahocorasick_rs.MatchKind.Standard)
        return automaton, tuple(tuple(by_key[k]) for k in keys)

    @property
    def terms_count(self) -> int:
        """Distinct terms (text + boundary kind) in the automaton."""
        return len(self._term_ids)

    @property
    def brands_count(self) -> int:
        return len(self._brands)

    def term_hits(self, text: str) -> set[int]:
        """Ids of the terms found in already prepared ``text``."""
        hits: set[int] = set()
        if self._automaton is None:
            return hits
        found = self._automaton.find_matches_as_indexes(text, overlapping=True)
        if not found:
            return hits
        entries = self._entries
        word = WORD_CHARS
        n = len(text)
        for pattern, start, end in found:
            for tid, start_b, end_b in entries[pattern]:
                if start_b and start and text[start - 1] in word:
                    continue
                if end_b and end < n and text[end] in word:
                    continue
                hits.add(tid)
        return hits

    def match(self, post: Post) -> list[BrandMatch]:
        """The brands ``post`` mentions, sorted by brand id, with the keyword rules it matches."""
        text = prepare_text(post.text)
        hits = self.term_hits(text)
        candidates: set[int] = set(self._always)
        candidates_of = self._candidates_of
        for tid in hits:
            candidates.update(candidates_of[tid])
        if not candidates:
            return []
        ctx = QueryContext(post, text, hits)
        lang = ctx.primary_lang()
        out: list[BrandMatch] = []
        for index in sorted(candidates):
            brand = self._brands[index]
            if lang is not None and brand.languages and lang not in brand.languages:
                continue
            if not brand.mentions(ctx):
                continue
            if brand.exclude is not None and brand.exclude(ctx):
                continue
            out.append(BrandMatch(brand.id, tuple(rid for rid, pred in brand.rules if pred(ctx))))
        return out
