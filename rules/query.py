"""The query language of rule files (contracts.md), parsed into a small immutable AST.

Grammar, lowest precedence first (NOT binds tightest)::

    query   := or
    or      := and ("OR" and)*
    and     := near (["AND"] near)*          adjacent operands mean AND
    near    := not ("NEAR/n" not)*           at most n words between; operands: terms or (t OR t)
    not     := "NOT"* primary
    primary := term | field | "(" or ")"

Terms: ``word``, ``"a phrase"``, ``word*`` (trailing wildcard), ``#hashtag``,
``@handle``, CJK text.  Fields: ``lang:zh``, ``source:mastodon``,
``author:handle``, ``followers>=10000`` (``>``, ``<``, ``<=``, ``=``; also
``author.followers``).  Operators are upper case; ``and`` is a plain term.

Hostile input is bounded: length, term count and nesting depth, and the parser
never builds a regular expression from the query.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.errors import QuerySyntaxError
from rules.normalize import collapse_spaces, is_word_char, normalize, tokenize

MAX_QUERY_CHARS = 10_000
"""Longer queries are rejected."""
MAX_TERMS = 1_000
"""Terms and fields per query."""
MAX_DEPTH = 100
"""Nesting of parentheses and NOT."""
MAX_NEAR = 1_000
"""Largest NEAR distance."""
FIELDS = ("lang", "source", "author", "followers")
_COMPARATORS = (">=", "<=", ">", "<", "=")
_SPECIAL = '()"'


@dataclass(frozen=True, slots=True)
class Term:
    """One term, normalised; matched by the automaton."""

    text: str
    """Normalised text (phrase words joined by one space; no ``*``)."""
    prefix: bool
    """Trailing wildcard: the last word may continue."""
    raw: str
    """As written."""
    col: int
    """1-based column in the query."""

    @property
    def start_boundary(self) -> bool:
        """Must not be preceded by a word character (Latin start, hashtag or mention)."""
        c = self.text[0]
        return is_word_char(c) or c in "#@"

    @property
    def end_boundary(self) -> bool:
        """Must not be followed by a word character (Latin end, no wildcard)."""
        return not self.prefix and is_word_char(self.text[-1])

    @property
    def key(self) -> tuple[str, bool, bool]:
        """Identity for sharing one automaton entry between queries."""
        return (self.text, self.start_boundary, self.end_boundary)

    @property
    def tokens(self) -> tuple[str, ...]:
        """The term as NEAR words."""
        return tuple(tokenize(self.text))


@dataclass(frozen=True, slots=True)
class Field:
    """A filter on post metadata."""

    name: str
    """lang | source | author | followers."""
    op: str
    """``=`` for lang/source/author; a comparator for followers."""
    value: str
    """Normalised value (an integer string for followers)."""
    col: int


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Near:
    """Some term of ``left`` with at most ``distance`` words between it and one of ``right``."""

    left: tuple[Term, ...]
    right: tuple[Term, ...]
    distance: int
    col: int


Node = Term | Field | Not | And | Or | Near


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    """word | phrase | ( | ) | AND | OR | NOT | NEAR | end."""
    text: str
    col: int


def _lex(query: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
        elif c in "()":
            toks.append(_Tok(c, c, i + 1))
            i += 1
        elif c == '"':
            j = query.find('"', i + 1)
            if j < 0:
                msg = (
                    f"unterminated phrase: expected a closing '\"' for the '\"' at col {i + 1}; "
                    "found end of query"
                )
                raise QuerySyntaxError(msg, n + 1)
            toks.append(_Tok("phrase", query[i + 1 : j], i + 1))
            i = j + 1
        else:
            j = i
            while j < n and not query[j].isspace() and query[j] not in _SPECIAL:
                j += 1
            word = query[i:j]
            kind = word if word in ("AND", "OR", "NOT") else "word"
            if word == "NEAR" or word.startswith("NEAR/"):
                kind = "NEAR"
            toks.append(_Tok(kind, word, i + 1))
            i = j
    toks.append(_Tok("end", "", n + 1))
    return toks


def _describe(tok: _Tok) -> str:
    if tok.kind == "end":
        return "end of query"
    if tok.kind == "phrase":
        return f'"{tok.text}"'
    return f"'{tok.text}'"


class _Parser:
    def __init__(self, query: str) -> None:
        self.toks = _lex(query)
        self.pos = 0
        self.depth = 0
        self.terms = 0

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def enter(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            msg = f"query nested too deeply: more than {MAX_DEPTH} levels of parentheses or NOT"
            raise QuerySyntaxError(msg, tok.col)

    def parse(self) -> Node:
        if self.peek().kind == "end":
            msg = "empty query: expected at least one term"
            raise QuerySyntaxError(msg, 1)
        node = self.parse_or("start of query")
        tok = self.peek()
        if tok.kind == ")":
            msg = "unexpected ')' with no matching '('"
            raise QuerySyntaxError(msg, tok.col)
        if tok.kind != "end":  # pragma: no cover - every other token starts an operand
            msg = f"expected an operator or end of query; found {_describe(tok)}"
            raise QuerySyntaxError(msg, tok.col)
        return node

    def parse_or(self, after: str) -> Node:
        parts = [self.parse_and(after)]
        while self.peek().kind == "OR":
            self.take()
            parts.append(self.parse_and("'OR'"))
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self, after: str) -> Node:
        parts = [self.parse_near(after)]
        while True:
            tok = self.peek()
            if tok.kind == "AND":
                self.take()
                parts.append(self.parse_near("'AND'"))
            elif tok.kind in ("word", "phrase", "(", "NOT"):
                parts.append(self.parse_near(f"{_describe(self.toks[self.pos - 1])}"))
            else:
                break
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_near(self, after: str) -> Node:
        left = self.parse_not(after)
        while self.peek().kind == "NEAR":
            tok = self.take()
            distance = self.near_distance(tok)
            right = self.parse_not(f"'{tok.text}'")
            left = Near(
                self.near_operand(left, tok, "left"),
                self.near_operand(right, tok, "right"),
                distance,
                tok.col,
            )
        return left

    def near_distance(self, tok: _Tok) -> int:
        _, slash, number = tok.text.partition("/")
        if not slash or not number.isdigit() or not number.isascii():
            found = f"'{number}'" if slash and number else "nothing"
            msg = f"expected a word distance after 'NEAR/' (e.g. NEAR/5); found {found}"
            raise QuerySyntaxError(msg, tok.col)
        distance = int(number[:6])
        if not 1 <= distance <= MAX_NEAR:
            msg = f"NEAR distance must be between 1 and {MAX_NEAR}; found {number}"
            raise QuerySyntaxError(msg, tok.col)
        return distance

    @staticmethod
    def near_operand(node: Node, tok: _Tok, side: str) -> tuple[Term, ...]:
        if isinstance(node, Term):
            return (node,)
        if isinstance(node, Or) and all(isinstance(c, Term) for c in node.children):
            return tuple(c for c in node.children if isinstance(c, Term))
        msg = (
            f"the {side} side of '{tok.text}' must be a term, a phrase or (a OR b ...) "
            f"of terms; found {type(node).__name__.upper()} expression"
        )
        raise QuerySyntaxError(msg, tok.col)

    def parse_not(self, after: str) -> Node:
        nots: list[_Tok] = []
        while self.peek().kind == "NOT":
            tok = self.take()
            self.enter(tok)
            nots.append(tok)
        node = self.parse_primary("'NOT'" if nots else after)
        for _ in nots:
            node = Not(node)
        self.depth -= len(nots)
        return node

    def parse_primary(self, after: str) -> Node:
        tok = self.take()
        if tok.kind == "(":
            self.enter(tok)
            if self.peek().kind == ")":
                msg = "empty parentheses: expected a term or '(' after '('; found ')'"
                raise QuerySyntaxError(msg, self.peek().col)
            node = self.parse_or("'('")
            close = self.take()
            if close.kind != ")":
                msg = f"expected ')' to close the '(' at col {tok.col}; found {_describe(close)}"
                raise QuerySyntaxError(msg, close.col)
            self.depth -= 1
            return node
        if tok.kind in ("word", "phrase"):
            self.terms += 1
            if self.terms > MAX_TERMS:
                msg = f"too many terms: a query may have at most {MAX_TERMS}"
                raise QuerySyntaxError(msg, tok.col)
            return _field(tok) if tok.kind == "word" and _is_field(tok.text) else _term(tok)
        where = "at" if after == "start of query" else "after"
        msg = f"expected a term or '(' {where} {after}; found {_describe(tok)}"
        raise QuerySyntaxError(msg, tok.col)


def _is_field(word: str) -> bool:
    name, colon, _ = word.partition(":")
    if colon and name.isascii() and name.isalpha():
        return True
    return word.startswith(("followers", "author.followers")) and any(c in word for c in "<>=")


def _field(tok: _Tok) -> Field:
    word = tok.text
    for name in ("author.followers", "followers"):
        if word.startswith(name) and word[len(name) : len(name) + 1] in ("<", ">", "="):
            rest = word[len(name) :]
            op = next(c for c in _COMPARATORS if rest.startswith(c))
            number = rest[len(op) :]
            if not number.isascii() or not number.isdigit():
                found = f"'{number}'" if number else "nothing"
                msg = f"expected a whole number after '{name}{op}'; found {found}"
                raise QuerySyntaxError(msg, tok.col + len(name) + len(op))
            return Field("followers", op, str(int(number[:18])), tok.col)
    name, _, value = word.partition(":")
    if name not in FIELDS or name == "followers":
        msg = f"unknown field '{name}:' (expected one of lang:, source:, author:, or followers>=N)"
        raise QuerySyntaxError(msg, tok.col)
    if not value:
        msg = f"expected a value after '{name}:'; found nothing"
        raise QuerySyntaxError(msg, tok.col + len(name) + 1)
    value = normalize(value)
    if name == "author":
        value = value.lstrip("@")
    if name == "lang":
        value = value.split("-")[0]
    return Field(name, "=", value, tok.col)


def _term(tok: _Tok) -> Term:
    raw = tok.text
    prefix = False
    if tok.kind == "phrase":
        text = collapse_spaces(normalize(raw))
        if not text:
            msg = 'empty phrase: expected words between the quotes; found ""'
            raise QuerySyntaxError(msg, tok.col)
    else:
        star = raw.find("*")
        if 0 <= star < len(raw) - 1:
            msg = f"'*' is only allowed at the end of a word; found it inside '{raw}'"
            raise QuerySyntaxError(msg, tok.col + star)
        prefix = star == len(raw) - 1
        text = normalize(raw[:-1] if prefix else raw)
        if prefix and len(text) < 2:
            msg = f"a wildcard needs at least 2 characters before '*'; found '{raw}'"
            raise QuerySyntaxError(msg, tok.col)
    if not tokenize(text):
        msg = f"term {raw!r} has no letters or digits to match"
        raise QuerySyntaxError(msg, tok.col)
    return Term(text, prefix, raw, tok.col)


def parse(query: str) -> Node:
    """Parse ``query``; raises ``QuerySyntaxError`` with a 1-based column."""
    if len(query) > MAX_QUERY_CHARS:
        msg = f"query too long: {len(query)} characters (at most {MAX_QUERY_CHARS})"
        raise QuerySyntaxError(msg, MAX_QUERY_CHARS + 1)
    return _Parser(query).parse()


def iter_terms(node: Node) -> list[Term]:
    """Every term in ``node``, in query order (iterative: no recursion limit)."""
    out: list[Term] = []
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Term):
            out.append(n)
        elif isinstance(n, Not):
            stack.append(n.child)
        elif isinstance(n, And | Or):
            stack.extend(reversed(n.children))
        elif isinstance(n, Near):
            stack.extend(reversed(n.left + n.right))
    return out


def needs_hit(node: Node) -> bool:
    """True when ``node`` is false whenever no term of it matches (so it can be skipped)."""
    if isinstance(node, Term | Near):
        return True
    if isinstance(node, And):
        return any(needs_hit(c) for c in node.children)
    if isinstance(node, Or):
        return all(needs_hit(c) for c in node.children)
    return False  # Field, Not
