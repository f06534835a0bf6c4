"""Evaluate parsed queries against one post, given the terms that matched.

Queries are compiled once into closures; evaluation is a few function calls
per candidate brand.  ``QueryContext`` carries the per-post inputs: the set of
term ids found by the automaton, the post (for field filters) and, computed
only when a NEAR needs them, the words of the prepared text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rules.model import Post
from rules.normalize import normalize, tokenize
from rules.normalize import prepare_text as prepare_text  # re-exported: matcher, reference
from rules.query import And, Field, Node, Not, Or, Term


class QueryContext:
    """What one evaluation needs about one post."""

    __slots__ = ("_tokens", "hits", "post", "text")

    def __init__(self, post: Post, text: str, hits: set[int]) -> None:
        self.post = post
        self.text = text
        """The prepared text (``prepare_text``)."""
        self.hits = hits
        """Ids of the terms found in the text."""
        self._tokens: list[str] | None = None

    @property
    def tokens(self) -> list[str]:
        if self._tokens is None:
            self._tokens = tokenize(self.text)
        return self._tokens

    def primary_lang(self) -> str | None:
        lang = self.post.lang
        return lang.split("-", 1)[0].lower() if lang else None


Predicate = Callable[[QueryContext], bool]


@dataclass(frozen=True, slots=True)
class _NearTerm:
    tid: int
    words: tuple[str, ...]
    prefix: bool
    plain: bool
    """Not a hashtag/mention: may also match ``#word``/``@word`` tokens."""


def _word_eq(token: str, word: str, plain: bool, prefix: bool) -> bool:
    if plain and token[0] in "#@":
        token = token[1:]
    return token.startswith(word) if prefix else token == word


def occurrences(tokens: list[str], term: _NearTerm) -> list[tuple[int, int]]:
    """(first, last) word index of every occurrence of ``term`` in ``tokens``."""
    words, k = term.words, len(term.words)
    out: list[tuple[int, int]] = []
    for i in range(len(tokens) - k + 1):
        ok = True
        for j, w in enumerate(words):
            last = j == k - 1
            if not _word_eq(tokens[i + j], w, term.plain and j == 0, term.prefix and last):
                ok = False
                break
        if ok:
            out.append((i, i + k - 1))
    return out


def near_match(
    tokens: list[str], left: tuple[_NearTerm, ...], right: tuple[_NearTerm, ...], distance: int
) -> bool:
    """Some occurrence of a left term within ``distance`` words of a right term.

    ``distance`` is the most words allowed between them, in either order
    (adjacent or overlapping occurrences have 0 between).
    """
    lpos = [p for t in left for p in occurrences(tokens, t)]
    if not lpos:
        return False
    rpos = [p for t in right for p in occurrences(tokens, t)]
    for ls, le in lpos:
        for rs, re_ in rpos:
            gap = rs - le - 1 if le < rs else ls - re_ - 1 if re_ < ls else 0
            if gap <= distance:
                return True
    return False


def _field_pred(node: Field) -> Predicate:
    value = node.value
    if node.name == "lang":
        return lambda ctx: ctx.primary_lang() == value
    if node.name == "source":
        return lambda ctx: normalize(ctx.post.source) == value
    if node.name == "author":

        def author(ctx: QueryContext) -> bool:
            a = ctx.post.author
            if a is None:
                return False
            handle = normalize(a.handle or "").lstrip("@")
            return value in (handle, handle.split("@", 1)[0], normalize(a.id or ""))

        return author
    limit = int(value)
    ops: dict[str, Callable[[int], bool]] = {
        ">=": lambda f: f >= limit,
        ">": lambda f: f > limit,
        "<=": lambda f: f <= limit,
        "<": lambda f: f < limit,
        "=": lambda f: f == limit,
    }
    cmp = ops[node.op]
    return lambda ctx: cmp(ctx.post.followers)


def compile_query(node: Node, term_id: Callable[[Term], int]) -> Predicate:
    """A predicate for ``node``; ``term_id`` gives the automaton id of each term."""
    if isinstance(node, Term):
        tid = term_id(node)
        return lambda ctx: tid in ctx.hits
    if isinstance(node, Field):
        return _field_pred(node)
    if isinstance(node, Not):
        child = compile_query(node.child, term_id)
        return lambda ctx: not child(ctx)
    if isinstance(node, And | Or):
        # plain terms become one set operation; the rest stay predicates
        ids = frozenset(term_id(c) for c in node.children if isinstance(c, Term))
        parts = tuple(compile_query(c, term_id) for c in node.children if not isinstance(c, Term))
        if isinstance(node, And):

            def all_of(ctx: QueryContext) -> bool:
                return ids <= ctx.hits and all(p(ctx) for p in parts)

            return all_of

        def any_of(ctx: QueryContext) -> bool:
            return not ids.isdisjoint(ctx.hits) or any(p(ctx) for p in parts)

        return any_of
    left = tuple(_near_term(t, term_id) for t in node.left)
    right = tuple(_near_term(t, term_id) for t in node.right)
    left_ids = frozenset(t.tid for t in left)
    right_ids = frozenset(t.tid for t in right)
    distance = node.distance

    def near(ctx: QueryContext) -> bool:
        if left_ids.isdisjoint(ctx.hits) or right_ids.isdisjoint(ctx.hits):
            return False
        return near_match(ctx.tokens, left, right, distance)

    return near


def _near_term(term: Term, term_id: Callable[[Term], int]) -> _NearTerm:
    return _NearTerm(term_id(term), term.tokens, term.prefix, term.text[0] not in "#@")
