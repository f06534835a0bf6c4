"""The exception tree of the rule engine."""

from __future__ import annotations

from dataclasses import dataclass


class CrisiswatchError(Exception):
    """Base of every error this package raises on purpose."""

    retriable: bool = False


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a rule file, reported as ``path:line:col: message``."""

    path: str
    """The file, as given to the loader."""
    line: int
    """1-based line."""
    col: int
    """1-based column."""
    message: str
    """What is wrong: what was expected and what was found."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class RuleError(CrisiswatchError):
    """Rule files are invalid; ``problems`` lists every problem found, in order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class QuerySyntaxError(CrisiswatchError):
    """A query does not parse; ``col`` is the 1-based column inside the query."""

    def __init__(self, message: str, col: int) -> None:
        self.col = col
        self.message = message
        super().__init__(f"col {col}: {message}")


class InvalidPost(CrisiswatchError):
    """A post value breaks the Post contract; goes to the dead-letter topic."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        """Short machine code, e.g. ``invalid_json`` or ``missing_field:text``."""
        self.detail = detail
        """A human sentence."""
        super().__init__(f"{reason}: {detail}")
