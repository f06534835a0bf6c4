"""Load brand rule files (``brands/*.yaml``) into a frozen ``RuleSet``.

Every problem of every file is collected and raised together as one
``RuleError``, each pointing at the offending key or value with
``path:line:col`` (see contracts.md, "Brand rule files").
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml
from yaml.nodes import Node

from rules.errors import Problem, RuleError
from rules.loader_fields import FileChecker
from rules.model import Brand, RuleSet
from rules.yamlnodes import compose

MAX_FILE_BYTES = 1 << 20
"""Rule files larger than this (1 MiB) are refused."""
_ID = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
_TOP_KEYS = ("brand", "name", "mentions", "languages", "rules")


def _read(path: Path, display: str, problems: list[Problem]) -> str | None:
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        problems.append(
            Problem(
                display,
                1,
                1,
                f"file is {len(data):,} bytes; rule files may be at most "
                f"{MAX_FILE_BYTES:,} bytes (1 MiB)",
            )
        )
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        problems.append(
            Problem(display, line, col, f"not UTF-8 text: byte 0x{data[exc.start]:02x} is invalid")
        )
        return None


_Loaded = tuple[Brand | None, str | None, Node | None]


def _load_file(display: str, source: str, problems: list[Problem]) -> _Loaded:
    """Check one file and append its problems.

    Returns the brand (None when the file has problems) and its id and id node
    as written (None when unreadable), for the duplicate check across files.
    """
    try:
        root = compose(source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.append(Problem(display, line, col, f"YAML syntax error: {what}{context}"))
        return None, None, None
    except yaml.YAMLError as exc:  # pragma: no cover - reader errors carry no mark
        problems.append(Problem(display, 1, 1, f"YAML error: {exc}"))
        return None, None, None
    except RecursionError:
        problems.append(
            Problem(
                display, 1, 1, "YAML nested too deeply (expected a brand mapping a few levels deep)"
            )
        )
        return None, None, None
    if root is None:
        problems.append(
            Problem(
                display, 1, 1, "empty file: expected a brand mapping with 'brand' and 'mentions'"
            )
        )
        return None, None, None
    checker = FileChecker(display, source)
    loaded = _brand(checker, root)
    problems.extend(sorted(checker.problems, key=lambda p: (p.line, p.col)))
    brand = loaded[0] if loaded is not None and not checker.problems else None
    return brand, checker.brand_id, checker.brand_id_node


def _brand(c: FileChecker, root: Node) -> tuple[Brand, Node] | None:
    fields = c.mapping(root, "a brand file", _TOP_KEYS, ("brand", "mentions"))
    if fields is None:
        return None
    brand_id = c.string(fields.get("brand"), "brand")
    id_node = fields["brand"][1] if "brand" in fields else root
    c.brand_id, c.brand_id_node = brand_id, id_node
    if brand_id is not None and not _ID.match(brand_id):
        c.at(
            id_node,
            f"bad brand id '{brand_id}' (expected lower-case letters, digits, '_' and '-', "
            "starting with a letter or digit)",
        )
        brand_id = None
    name = c.string(fields.get("name"), "name", optional=True)
    mentions, exclude = c.mentions(fields.get("mentions"))
    languages = c.languages(fields.get("languages"))
    rules = c.rules(fields.get("rules"), _ID)
    if brand_id is None or mentions is None or rules is None or c.problems:
        return None
    brand = Brand(
        id=brand_id,
        mentions_query=mentions,
        rules=rules,
        name=name,
        exclude_query=exclude,
        languages=languages,
        path=c.path,
    )
    return brand, id_node


def load_rules(directory: str | Path) -> RuleSet:
    """Load every ``*.yaml``/``*.yml`` file of ``directory`` (sorted by name).

    Raises ``RuleError`` listing every problem of every file.
    """
    root = Path(directory)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise RuleError([Problem(str(directory), 1, 1, f"rules directory {what}")])
    files = sorted(
        (p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()),
        key=lambda p: p.name,
    )
    if not files:
        raise RuleError(
            [Problem(str(directory), 1, 1, "no rule files: expected at least one *.yaml or *.yml")]
        )
    problems: list[Problem] = []
    brands: list[Brand] = []
    seen: dict[str, str] = {}
    digest = hashlib.sha256()
    for path in files:
        display = str(path)
        source = _read(path, display, problems)
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        if source is None:
            continue
        brand, brand_id, id_node = _load_file(display, source, problems)
        if brand_id is None or id_node is None:
            continue
        line, col = id_node.start_mark.line + 1, id_node.start_mark.column + 1
        if brand_id in seen:
            problems.append(
                Problem(
                    display,
                    line,
                    col,
                    f"duplicate brand id '{brand_id}' (already defined at {seen[brand_id]})",
                )
            )
            continue
        seen[brand_id] = f"{display}:{line}:{col}"
        if brand is not None:
            brands.append(brand)
    if problems:
        raise RuleError(problems)
    return RuleSet(brands=tuple(brands), digest=digest.hexdigest())


__all__ = ["MAX_FILE_BYTES", "load_rules"]
