"""Text normalisation shared by rule terms and post text, and the word tokeniser.

``normalize`` folds the spellings people actually type into one form:
NFKC (full-width -> half-width, compatibility forms), case-folding, and
Traditional -> Simplified Chinese by a one-character-to-one-character table
built once from OpenCC's ``TSCharacters.txt`` (first candidate of each entry),
so the Chinese fold never changes a string's length.

A *word character* is a letter or digit of an alphabetic script (Latin, Greek,
Cyrillic, ...): runs of them form words, and Latin-script terms only match at
word boundaries.  A *CJK character* (ideographs, kana, hangul, ...) is a word
on its own; CJK terms match as substrings.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

log = logging.getLogger(__name__)

_CJK_START = "\u2e80"
"""Letters at or above this code point are treated as CJK: one character, one word."""
_TOKEN_PREFIXES = "#@"
"""Characters that start a hashtag or mention token."""


@lru_cache(maxsize=1)
def _t2s_table() -> tuple[dict[int, int], frozenset[str]]:
    """The Traditional -> Simplified table and the set of characters it changes."""
    pairs: dict[str, str] = {}
    try:
        data = resources.files("opencc").joinpath("dictionary/TSCharacters.txt").read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError, OSError) as exc:  # pragma: no cover
        log.warning("OpenCC TSCharacters.txt not found (%s); no Traditional->Simplified fold", exc)
        return {}, frozenset()
    for line in data.splitlines():
        trad, _, rest = line.partition("\t")
        candidates = rest.split()
        if len(trad) != 1 or not candidates or len(candidates[0]) != 1:
            continue
        pairs[trad] = candidates[0]
    table: dict[int, int] = {}
    for trad, simp in pairs.items():
        seen = {trad}
        while simp in pairs and simp not in seen:  # close chains a -> b -> c
            seen.add(simp)
            simp = pairs[simp]
        # keep the fold idempotent: the target must be stable under the other steps
        if simp == trad or unicodedata.normalize("NFKC", simp).casefold() != simp:
            continue
        table[ord(trad)] = ord(simp)
    return table, frozenset(chr(c) for c in table)


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class _TradFinder(NamedTuple):
    """Finds and folds Traditional characters fast (built from OpenCC data, never
    from user input)."""

    maybe: re.Pattern[str]
    """A BMP Traditional character or any astral one: a bitmap regex class plus one
    range, one pass over the text (the astral Traditional characters themselves
    would compile to a slow list)."""
    maybe_or_space: re.Pattern[str]
    """``maybe``, or whitespace that ``prepare_text`` collapses (not a single space)."""
    bmp: re.Pattern[str]
    """A BMP Traditional character."""
    astral: frozenset[str]
    """The astral Traditional characters."""
    bmp_table: list[int]
    """The BMP part of the table as a list indexed by code point: ``str.translate``
    looks a list up ~2x faster than a dict, and treats code points past its end
    (IndexError, a LookupError) as unmapped, exactly like a dict miss."""


@lru_cache(maxsize=1)
def _trad_finder() -> _TradFinder:
    table, trad = _t2s_table()
    bmp_keys = sorted(c for c in table if c < 0x10000)
    bmp = "".join(re.escape(chr(c)) for c in bmp_keys)
    bmp_table = list(range(bmp_keys[-1] + 1 if bmp_keys else 0))
    for c in bmp_keys:
        bmp_table[c] = table[c]
    spaces = re.escape("".join(sp for sp in _RARE_SPACES if len(sp) == 1))
    return _TradFinder(
        re.compile(f"[{bmp}\U00010000-\U0010ffff]"),
        re.compile(f"[{bmp}{spaces}\U00010000-\U0010ffff]"),
        re.compile(f"[{bmp}]" if bmp else "(?!)"),
        frozenset(c for c in trad if ord(c) >= 0x10000),
        bmp_table,
    )


def _fold_traditional(s: str) -> str:
    """``s.translate(_t2s_table()[0])``, skipping the work when nothing would change."""
    finder = _trad_finder()
    if finder.maybe.search(s) is None:
        return s
    if finder.astral and any(c in finder.astral for c in _ASTRAL.findall(s)):
        return s.translate(_t2s_table()[0])
    if finder.bmp.search(s) is not None:
        return s.translate(finder.bmp_table)
    return s


def normalize(text: str) -> str:
    """NFKC, case-fold, Traditional -> Simplified; idempotent.

    >>> normalize("ＡＣＭＥ 質量問題")
    'acme 质量问题'
    """
    if text.isascii():
        return text.lower()
    s = _nfkc_casefold(text)
    return s if s.isascii() else _fold_traditional(s)


def _nfkc_casefold(text: str) -> str:
    nfkc = unicodedata.normalize("NFKC", text)
    s = nfkc.casefold()
    if s != nfkc and not s.isascii():  # case-folding can leave a string that is not NFKC
        s = unicodedata.normalize("NFKC", s)
    return s


_RARE_SPACES = ("  ", "\n", "\t", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029")
"""Whitespace other than single spaces; ``str.split`` splits on a few more, but text
without any of these is used as it is (stripped)."""


def _collapse_rare_spaces(s: str) -> str:
    for sp in _RARE_SPACES:
        if sp in s:
            return collapse_spaces(s)
    return s.strip() if s[:1] == " " or s[-1:] == " " else s


def prepare_text(text: str) -> str:
    """Post text as the matcher sees it: ``normalize``, then whitespace runs collapsed.

    Same result as ``collapse_spaces(normalize(text))`` when the text has a rare
    space (newline, tab, two spaces, ...), else ``normalize(text)``, stripped if it
    begins or ends with a space; one regex pass looks for rare spaces and
    Traditional characters together.

    >>> prepare_text(" ＡＣＭＥ  質量問題 ")
    'acme 质量问题'
    """
    if text.isascii():
        return _collapse_rare_spaces(text.lower())
    s = _nfkc_casefold(text)
    if s.isascii():
        return _collapse_rare_spaces(s)
    if "  " not in s and _trad_finder().maybe_or_space.search(s) is None:
        return s.strip() if s[:1] == " " or s[-1:] == " " else s
    return _collapse_rare_spaces(_fold_traditional(s))


def is_word_char(c: str) -> bool:
    """A letter or digit of an alphabetic script (not CJK)."""
    return c < _CJK_START and c.isalnum()


WORD_CHARS = frozenset(c for c in map(chr, range(ord(_CJK_START))) if is_word_char(c))
"""Every word character, for a one-lookup ``is_word_char`` of a single character."""


def is_cjk_char(c: str) -> bool:
    """A CJK letter: a word on its own."""
    return c >= _CJK_START and c.isalnum()


def tokenize(text: str) -> list[str]:
    """Split normalised text into words for NEAR.

    Latin words are runs of word characters, optionally prefixed by ``#`` or
    ``@`` (hashtag and mention tokens); each CJK character is one word;
    everything else separates words.

    >>> tokenize("召回 #acme burger!")
    ['召', '回', '#acme', 'burger']
    """
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if is_word_char(c) or (c in _TOKEN_PREFIXES and i + 1 < n and is_word_char(text[i + 1])):
            j = i + 1
            while j < n and is_word_char(text[j]):
                j += 1
            tokens.append(text[i:j])
            i = j
        elif is_cjk_char(c):
            tokens.append(c)
            i += 1
        else:
            i += 1
    return tokens


def collapse_spaces(text: str) -> str:
    """Runs of whitespace -> one space, trimmed (phrases match across line breaks)."""
    return " ".join(text.split())
