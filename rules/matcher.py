"""One-pass multi-brand matcher.

Every term of every brand goes into one multi-pattern search over normalised
text, so the cost per post grows with the post's length, not with the number
of rules: an ASCII post is searched for the ASCII terms by an ahocorasick-rs
DFA, any other post for every term over its UTF-8 bytes by a second DFA; when
the terms are many (the DFAs' memory grows with them) by an NFA and Hyperscan's
literal matcher instead (see ``_TermFinder`` and BENCHMARKS.md).  Word boundaries
are checked only for the hits, and only for Latin-script term ends; CJK terms are
substrings.

Boolean structure is then evaluated only for brands one of whose ``mentions``
terms hit, plus the brands whose ``mentions`` query can be true without any
term (``NOT x``, field-only queries).
"""

from __future__ import annotations

import threading
from typing import Any

import ahocorasick_rs
import hyperscan

from rules.model import BrandMatch, KeywordRule, Post, RuleSet
from rules.normalize import WORD_CHARS
from rules.query import Node, Term, iter_terms, needs_hit, parse
from rules.query_eval import Predicate, QueryContext, compile_query, prepare_text

# per automaton pattern: ((term id, start boundary, end boundary), ...)
_Entries = tuple[tuple[int, bool, bool], ...]

_DFA_MAX_PATTERN_BYTES = 250_000
"""Up to this many bytes of terms an automaton is an ahocorasick-rs DFA (~1.5x faster
than the NFA on English posts; ~2.5x faster than Hyperscan with its per-match Python
callback on the backtest benchmark's Chinese posts), above it the ASCII automaton is an
NFA and the UTF-8 search is Hyperscan's: a DFA takes ~250 bytes of memory per pattern
byte (28 MB for the match benchmark's 19,000 ASCII terms, 115 kB).  The ASCII and the
UTF-8 automaton are sized separately."""

_WORD_BYTES = frozenset(ord(c) for c in WORD_CHARS if c.isascii())


def _word_before(enc: bytes, i: int) -> bool:
    """Is the character that ends just before byte ``i`` of UTF-8 ``enc`` a word character?"""
    b = enc[i - 1]
    if b < 0x80:
        return b in _WORD_BYTES
    j = i - 1
    while j > 0 and 0x80 <= enc[j] < 0xC0 and i - j < 4:
        j -= 1
    return enc[j:i].decode("utf-8", "replace")[-1] in WORD_CHARS


def _word_after(enc: bytes, i: int) -> bool:
    """Is the character that starts at byte ``i`` of UTF-8 ``enc`` a word character?"""
    b = enc[i]
    if b < 0x80:
        return b in _WORD_BYTES
    width = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
    return enc[i : i + width].decode("utf-8", "replace")[0] in WORD_CHARS


def _collect(
    pattern: int,
    _start: int,
    end: int,
    _flags: int,
    context: tuple[list[tuple[int, int, int]], tuple[int, ...]],
) -> None:
    """Hyperscan match callback: appends (pattern id, start byte, end byte) to the found
    list of ``context`` (``(found, pattern lengths)``: without SOM, Hyperscan gives no start)."""
    found, lengths = context
    found.append((pattern, end - lengths[pattern], end))


class _TermFinder:
    """The automata, and the terms behind each of their patterns.

    ASCII text (most English posts) is searched for the ASCII terms by
    ahocorasick-rs, a DFA when small enough.  Other text is searched as UTF-8 for
    every term: by an ahocorasick-rs DFA when small enough (one C call returns
    every overlapping match), else by Hyperscan's literal matcher (~2x faster than
    an Aho-Corasick NFA on Chinese: see BENCHMARKS.md).  Hyperscan takes
    NUL-terminated literals, so with it the rare terms with a NUL go to a small
    ahocorasick-rs automaton.
    """

    __slots__ = ("_ascii", "_ascii_entries", "_db", "_entries", "_lengths", "_nul", "_scratch",
                 "_utf8_dfa")  # fmt: skip

    def __init__(self, by_key: dict[str, list[tuple[int, bool, bool]]]) -> None:
        keys = sorted(by_key)
        ascii_keys = [k for k in keys if k.isascii()]
        self._ascii_entries = tuple(tuple(by_key[k]) for k in ascii_keys)
        self._ascii: ahocorasick_rs.AhoCorasick | None = None
        if ascii_keys:
            size = sum(map(len, ascii_keys))
            impl = ahocorasick_rs.Implementation.DFA if size <= _DFA_MAX_PATTERN_BYTES else None
            self._ascii = ahocorasick_rs.AhoCorasick(ascii_keys, implementation=impl)
        # pattern ids of the UTF-8 search: Hyperscan's first, then the NUL automaton's
        plain = [k.encode() for k in keys if "\x00" not in k]
        nul = [k.encode() for k in keys if "\x00" in k]
        self._entries = tuple(tuple(by_key[k.decode()]) for k in plain + nul)
        self._lengths = tuple(len(k) for k in plain + nul)
        self._db: hyperscan.Database | None = None
        self._nul: tuple[int, ahocorasick_rs.BytesAhoCorasick] | None = None
        self._scratch = threading.local()
        """Hyperscan scratch space, one per thread (a scan releases the GIL)."""
        self._utf8_dfa: ahocorasick_rs.BytesAhoCorasick | None = None
        if plain + nul and sum(map(len, plain + nul)) <= _DFA_MAX_PATTERN_BYTES:
            # pattern ids as those of _entries: plain, then nul
            self._utf8_dfa = ahocorasick_rs.BytesAhoCorasick(
                plain + nul, implementation=ahocorasick_rs.Implementation.DFA
            )
            return
        if plain:
            self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            self._db.compile(
                expressions=plain, ids=list(range(len(plain))), elements=len(plain), literal=True
            )
        self._nul = (len(plain), ahocorasick_rs.BytesAhoCorasick(nul)) if nul else None

    def _utf8_matches(self, enc: bytes) -> list[tuple[int, int, int]]:
        """(pattern id, start byte, end byte) of every match in UTF-8 ``enc``."""
        if self._utf8_dfa is not None:
            return self._utf8_dfa.find_matches_as_indexes(enc, overlapping=True)
        found: list[tuple[int, int, int]] = []
        if self._db is not None:
            scratch = getattr(self._scratch, "space", None)
            if scratch is None:
                scratch = self._scratch.space = hyperscan.Scratch(self._db)
            # the stub types the context as object; _collect is only ever given this pair
            handler: Any = _collect
            self._db.scan(
                enc, match_event_handler=handler, context=(found, self._lengths), scratch=scratch
            )
        if self._nul is not None:
            offset, automaton = self._nul
            found.extend(
                (offset + pattern, start, end)
                for pattern, start, end in automaton.find_matches_as_indexes(enc, overlapping=True)
            )
        return found

    def hits(self, text: str) -> set[int]:
        """Ids of the terms found in prepared ``text``, word boundaries checked."""
        hits: set[int] = set()
        if text.isascii():
            if self._ascii is None:
                return hits
            found = self._ascii.find_matches_as_indexes(text, overlapping=True)
            entries = self._ascii_entries
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
        enc = text.encode()
        n = len(enc)
        entries = self._entries
        for pattern, start, end in self._utf8_matches(enc):
            for tid, start_b, end_b in entries[pattern]:
                if start_b and start and _word_before(enc, start):
                    continue
                if end_b and end < n and _word_after(enc, end):
                    continue
                hits.add(tid)
        return hits


_CompiledRule = tuple[str, frozenset[int] | None, Predicate]
"""``(rule id, gate, predicate)`` of a keyword rule (see ``Matcher._compile_rule``)."""


class _CompiledBrand:
    __slots__ = ("exclude", "id", "languages", "mentions", "rules", "rules_gate")

    def __init__(
        self,
        brand_id: str,
        languages: frozenset[str],
        mentions: Predicate,
        exclude: Predicate | None,
        rules: tuple[_CompiledRule, ...],
    ) -> None:
        self.id = brand_id
        self.languages = languages
        self.mentions = mentions
        self.exclude = exclude
        self.rules = rules
        gates = [gate for _, gate, _ in rules if gate is not None]
        self.rules_gate: frozenset[int] | None = (
            frozenset().union(*gates) if len(gates) == len(rules) else None
        )
        """The term ids of every keyword rule when each has a gate (``_compile_rule``):
        a post with none of them skips the rules in one set test; None: always try."""


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
                self._compile_rule(r.id, parse(r.query))
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
        self._candidates_of = tuple(tuple(sorted(b)) for b in self._mention_brands)
        self._finder = self._build_finder()

    def _compile_rule(self, rule_id: str, ast: Node) -> _CompiledRule:
        """``(rule id, gate, predicate)``: when the query is false unless one of its terms
        hit, ``gate`` holds their ids, so most posts skip the predicate with one set test.
        """
        pred = compile_query(ast, self._term_id)
        gate = frozenset(self._term_id(t) for t in iter_terms(ast)) if needs_hit(ast) else None
        return rule_id, gate, pred

    def _term_id(self, term: Term) -> int:
        key = term.key
        tid = self._term_ids.get(key)
        if tid is None:
            tid = self._term_ids[key] = len(self._term_ids)
            self._mention_brands.append([])
        return tid

    def _build_finder(self) -> _TermFinder | None:
        by_key: dict[str, list[tuple[int, bool, bool]]] = {}
        for (text, start_b, end_b), tid in self._term_ids.items():
            if text:  # an empty term never matches (and the automaton refuses it)
                by_key.setdefault(text, []).append((tid, start_b, end_b))
        return _TermFinder(by_key) if by_key else None

    @property
    def terms_count(self) -> int:
        """Distinct terms (text + boundary kind) in the automaton."""
        return len(self._term_ids)

    @property
    def brands_count(self) -> int:
        return len(self._brands)

    def term_hits(self, text: str) -> set[int]:
        """Ids of the terms found in already prepared ``text``."""
        return set() if self._finder is None else self._finder.hits(text)

    def match(self, post: Post) -> list[BrandMatch]:
        """The brands ``post`` mentions, sorted by brand id, with the keyword rules it matches."""
        text = prepare_text(post.text)
        hits = set() if self._finder is None else self._finder.hits(text)
        candidates_of = self._candidates_of
        order: list[int] | tuple[int, ...]
        if len(hits) == 1 and not self._always:
            (tid,) = hits  # the common case: one term hit, its brands already sorted
            order = candidates_of[tid]
        else:
            candidates: set[int] = set(self._always)
            for tid in hits:
                candidates.update(candidates_of[tid])
            order = sorted(candidates)
        if not order:
            return []
        ctx = QueryContext(post, text, hits)
        lang = ctx.primary_lang()
        out: list[BrandMatch] = []
        brands = self._brands
        for index in order:
            brand = brands[index]
            if lang is not None and brand.languages and lang not in brand.languages:
                continue
            if not brand.mentions(ctx):
                continue
            if brand.exclude is not None and brand.exclude(ctx):
                continue
            rule_ids: tuple[str, ...] = ()
            gates = brand.rules_gate
            if gates is None or not gates.isdisjoint(hits):
                for rid, gate, pred in brand.rules:
                    if (gate is None or not gate.isdisjoint(hits)) and pred(ctx):
                        rule_ids += (rid,)
            out.append(BrandMatch(brand.id, rule_ids))
        return out
