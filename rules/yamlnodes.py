"""Safe YAML composition with positions, for the rule loader.

Rule files are composed (not constructed) with PyYAML's safe loader so every
value keeps its line and column.  Anchors and aliases are refused, which rules
out "billion laughs" bombs; files are size-limited by the caller.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that rejects anchors and aliases."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in rule files", mark
            )
        if getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors (&name) are not allowed in rule files", mark
            )
        return super().compose_node(parent, index)


def compose(text: str) -> Node | None:
    """Compose one YAML document; raises ``yaml.MarkedYAMLError`` with a mark."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def scalar_value(node: ScalarNode) -> Any:
    """The Python value of a scalar node (safe constructor)."""
    return SafeConstructor().construct_object(node)


def kind_name(node: Node) -> str:
    """How a node reads in an error message."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == NULL:
        return "nothing (null)"
    if node.tag == BOOL:
        return f"the boolean {node.value}"
    if node.tag in (INT, FLOAT):
        return f"the number {node.value}"
    return f"'{node.value}'"


def value_position(node: ScalarNode, source: str, index: int) -> tuple[int, int]:
    """1-based (line, col) in the file of character ``index`` of a scalar's value.

    Works by walking the source of the scalar alongside its value: exact for
    plain and quoted one-line scalars, close for escapes and block scalars.
    """
    value: str = node.value
    start, end = node.start_mark.index, node.end_mark.index
    raw = source[start:end]
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    pos = 0  # in raw
    style = node.style or ""
    if style in ("'", '"'):
        pos = 1
    elif style in ("|", ">"):
        nl = raw.find("\n")
        pos = len(raw) if nl < 0 else nl
    # advance (line, col) from raw[0] to raw[pos]
    line, col = _advance(raw, 0, pos, line, col)
    for i in range(min(index, len(value))):
        want = value[i]
        found = -1
        for k in range(pos, min(len(raw), pos + 12)):
            ch = raw[k]
            if ch == want or (want in " \n" and ch in " \n"):
                found = k
                break
        if found < 0:
            continue
        line, col = _advance(raw, pos, found + 1, line, col)
        pos = found + 1
    if index < len(value):
        # move onto the wanted character itself
        for k in range(pos, min(len(raw), pos + 12)):
            if raw[k] == value[index] or (value[index] in " \n" and raw[k] in " \n"):
                line, col = _advance(raw, pos, k, line, col)
                break
    return line, col


def _advance(raw: str, a: int, b: int, line: int, col: int) -> tuple[int, int]:
    for ch in raw[a:b]:
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
    return line, col
