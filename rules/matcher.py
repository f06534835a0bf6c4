"""One-pass multi-brand matcher.

Every term of every brand is compiled into ONE Aho-Corasick automaton over
normalised text, so the cost per post grows with the post's length, not with
the number of rules.  The automaton runs over the UTF-8 bytes of the text
(carried as a latin-1 ``str``, which pyahocorasick walks 10-30x faster on Chinese
than code points: see BENCHMARKS.md).  Word boundaries are checked only for
the hits, and only for Latin-script term ends; CJK terms are substrings.

Boolean structure is then evaluated only for brands that had a hit, plus the
brands whose ``mentions`` query can be true without any term (``NOT x``,
field-only queries).
"""

from __future__ import annotations

import string

import ahocorasick

from rules.model import BrandMatch, KeywordRule, Post, RuleSet
from rules.normalize import is_word_char
from rules.query import Term, needs_hit, parse
from rules.query_eval import Predicate, QueryContext, compile_query, prepare_text

_ASCII_WORD = frozenset(string.ascii_letters + string.digits)

# automaton value: (key length in bytes, ((term id, start boundary, end boundary), ...))
_Entry = tuple[int, tuple[tuple[int, bool, bool], ...]]


def _encode(text: str) -> str:
    """UTF-8 bytes of ``text`` as a latin-1 string (identity for ASCII)."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def _word_before(enc: str, i: int) -> bool:
    """Is the character that ends just before byte ``i`` a word character?"""
    c = enc[i - 1]
    if c < "\x80":
        return c in _ASCII_WORD
    j = i - 1
    while j > 0 and "\x80" <= enc[j] < "\xc0" and i - j < 4:
        j -= 1
    ch = enc[j:i].encode("latin-1").decode("utf-8", "replace")
    return is_word_char(ch[-1])


def _word_after(enc: str, i: int) -> bool:
    """Is the character that starts at byte ``i`` a word character?"""
    c = enc[i]
    if c < "\x80":
        return c in _ASCII_WORD
    lead = ord(c)
    width = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    ch = enc[i : i + width].encode("latin-1").decode("utf-8", "replace")
    return is_word_char(ch[0])


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
        self._term_brands: list[set[int]] = []
        self._current_brand = 0
        brands = sorted(ruleset.brands, key=lambda b: b.id)
        compiled: list[_CompiledBrand] = []
        always: list[int] = []
        for index, brand in enumerate(brands):
            self._current_brand = index
            mentions_ast = parse(brand.mentions_query)
            if not needs_hit(mentions_ast):
                always.append(index)
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
                    compile_query(mentions_ast, self._term_id),
                    exclude,
                    rules,
                )
            )
        self._brands = tuple(compiled)
        self._always = frozenset(always)
        self._term_brand_tuples = tuple(tuple(sorted(s)) for s in self._term_brands)
        self._automaton = self._build_automaton()

    def _term_id(self, term: Term) -> int:
        key = term.key
        tid = self._term_ids.get(key)
        if tid is None:
            tid = self._term_ids[key] = len(self._term_ids)
            self._term_brands.append(set())
        self._term_brands[tid].add(self._current_brand)
        return tid

    def _build_automaton(self) -> ahocorasick.Automaton | None:
        by_key: dict[str, list[tuple[int, bool, bool]]] = {}
        for (text, start_b, end_b), tid in self._term_ids.items():
            by_key.setdefault(_encode(text), []).append((tid, start_b, end_b))
        if not by_key:
            return None
        automaton = ahocorasick.Automaton()
        for key, entries in sorted(by_key.items()):
            value: _Entry = (len(key), tuple(entries))
            automaton.add_word(key, value)
        automaton.make_automaton()
        return automaton

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
        enc = _encode(text)
        last = len(enc) - 1
        word = _ASCII_WORD
        for end, (length, entries) in self._automaton.iter(enc):
            start = end - length + 1
            for tid, start_b, end_b in entries:
                if start_b and start:
                    c = enc[start - 1]
                    if c in word or (c >= "\x80" and _word_before(enc, start)):
                        continue
                if end_b and end < last:
                    c = enc[end + 1]
                    if c in word or (c >= "\x80" and _word_after(enc, end + 1)):
                        continue
                hits.add(tid)
        return hits

    def match(self, post: Post) -> list[BrandMatch]:
        """The brands ``post`` mentions, sorted by brand id, with the keyword rules it matches."""
        text = prepare_text(post.text)
        hits = self.term_hits(text)
        if not hits and not self._always:
            return []
        candidates: set[int] = set(self._always)
        term_brands = self._term_brand_tuples
        for tid in hits:
            candidates.update(term_brands[tid])
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
