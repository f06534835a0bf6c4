"""Validate messages against the published JSON Schemas in docs/schemas/.

    from tests.ops.schemas import validate
    validate("post", obj)          # raises SchemaViolation listing every problem

Kinds: ``post``, ``dead-letter`` (alias ``dead_letter``, ``dlq``) and
``alert-event`` (alias ``alert_event``, ``alert``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"
SCHEMA_FILES = {
    "post": "post.schema.json",
    "dead-letter": "dead-letter.schema.json",
    "alert-event": "alert-event.schema.json",
}
_ALIASES = {
    "dead_letter": "dead-letter",
    "dlq": "dead-letter",
    "alert_event": "alert-event",
    "alert": "alert-event",
}


class SchemaViolation(AssertionError):
    """A message does not match its schema; ``errors`` holds one line per problem."""

    def __init__(self, kind: str, errors: list[str]) -> None:
        self.kind = kind
        self.errors = errors
        super().__init__(f"{kind} message does not match its schema:\n  " + "\n  ".join(errors))


def _canonical(kind: str) -> str:
    name = _ALIASES.get(kind, kind)
    if name not in SCHEMA_FILES:
        msg = f"unknown message kind {kind!r} (expected one of {', '.join(SCHEMA_FILES)})"
        raise ValueError(msg)
    return name


def schema(kind: str) -> dict[str, Any]:
    """The parsed JSON Schema for a message kind (aliases give the same object)."""
    return _load(_canonical(kind))


@functools.cache
def _load(name: str) -> dict[str, Any]:
    path = SCHEMA_DIR / SCHEMA_FILES[name]
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    doc = schema(kind)
    cls = jsonschema.validators.validator_for(doc)
    cls.check_schema(doc)
    validator: jsonschema.protocols.Validator = cls(doc, format_checker=cls.FORMAT_CHECKER)
    return validator


def errors(kind: str, obj: Any) -> list[str]:
    """Every way ``obj`` breaks the schema of ``kind``, one ``path: message`` line each."""
    found = sorted(_validator(_canonical(kind)).iter_errors(obj), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]


def validate(kind: str, obj: dict[str, Any]) -> None:
    """Raise SchemaViolation unless ``obj`` is a valid message of ``kind``."""
    problems = errors(kind, obj)
    if problems:
        raise SchemaViolation(_canonical(kind), problems)
