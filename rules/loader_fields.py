"""Field-by-field checks of one brand file, each problem pointing at its key or value."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rules.errors import Problem, QuerySyntaxError
from rules.model import (
    CRISIS_TYPES,
    SENSITIVITIES,
    SEVERITIES,
    EscalateStep,
    KeywordRule,
    Rule,
    VelocityRule,
    severity_rank,
)
from rules.query import parse
from rules.yamlnodes import BOOL, FLOAT, INT, NULL, kind_name, scalar_value, value_position

_DURATION = re.compile(r"([0-9]{1,9})([smhd])\Z")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_MAX_DURATION_MS = 366 * 86_400_000
_LANG = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*\Z")
_COMMON = ("id", "kind", "crisis_type", "severity", "runbook", "resolve_after", "escalate")
KEYWORD_KEYS = (*_COMMON, "query", "min_count", "window")
VELOCITY_KEYS = (
    *_COMMON,
    *("of", "window", "baseline", "ratio", "sensitivity", "min_count", "min_authors", "warmup"),
)
_ESCALATE_KEYS = ("ratio", "count", "reach", "authors", "severity")

Entry = tuple[ScalarNode, Node]
"""A key node and its value node."""


class FileChecker:
    """Collects the problems of one file while reading its values."""

    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.source = source
        self.problems: list[Problem] = []
        self.brand_id: str | None = None
        """The file's brand id as written (even when the file has problems)."""
        self.brand_id_node: Node | None = None

    # ---------------------------------------------------------------- basics

    def at(self, node: Node, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.path, mark.line + 1, mark.column + 1, message))

    def mapping(
        self, node: Node, what: str, known: Sequence[str], required: Sequence[str]
    ) -> dict[str, Entry] | None:
        if not isinstance(node, MappingNode):
            self.at(node, f"expected {what} (a mapping of keys to values); found {kind_name(node)}")
            return None
        out: dict[str, Entry] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                self.at(key, f"expected a plain key in {what}; found {kind_name(key)}")
                continue
            name = str(key.value)
            if name in out:
                first = out[name][0].start_mark.line + 1
                self.at(key, f"duplicate key '{name}' in {what} (first at line {first})")
                continue
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else "expected one of " + ", ".join(known)
                )
                self.at(key, f"unknown key '{name}' in {what} ({hint})")
                continue
            out[name] = (key, value)
        for name in required:
            if name not in out and not any(
                isinstance(k, ScalarNode) and k.value == name for k, _ in node.value
            ):
                self.at(node, f"missing required key '{name}' in {what}")
        return out

    def string(self, entry: Entry | None, key: str, optional: bool = False) -> str | None:
        if entry is None:
            return None
        node = entry[1]
        if isinstance(node, ScalarNode) and node.tag == NULL and optional:
            return None
        if not isinstance(node, ScalarNode) or node.tag == NULL:
            self.at(node, f"'{key}' must be a string; found {kind_name(node)}")
            return None
        return str(node.value)

    def integer(self, entry: Entry | None, key: str, default: int, minimum: int) -> int:
        if entry is None:
            return default
        node = entry[1]
        if not isinstance(node, ScalarNode) or node.tag != INT:
            self.at(node, f"'{key}' must be a whole number >= {minimum}; found {kind_name(node)}")
            return default
        value = int(scalar_value(node))
        if value < minimum:
            self.at(node, f"'{key}' must be a whole number >= {minimum}; found {value}")
            return default
        return value

    def number(self, entry: Entry | None, key: str, minimum: float) -> float | None:
        if entry is None:
            return None
        node = entry[1]
        if not isinstance(node, ScalarNode) or node.tag not in (INT, FLOAT):
            self.at(node, f"'{key}' must be a number > {minimum:g}; found {kind_name(node)}")
            return None
        value = float(scalar_value(node))
        if not value > minimum or value != value or value == float("inf"):
            self.at(node, f"'{key}' must be a number > {minimum:g}; found {node.value}")
            return None
        return value

    def duration(self, entry: Entry | None, key: str, default: int | None) -> int | None:
        if entry is None:
            return default
        node = entry[1]
        text = str(node.value) if isinstance(node, ScalarNode) and node.tag != NULL else None
        m = _DURATION.match(text) if text is not None and node.tag not in (BOOL,) else None
        if m is None:
            found = f"'{text}'" if text is not None else kind_name(node)
            self.at(
                node,
                f"bad duration {found} for '{key}' (expected a whole number and a unit s, m, h "
                "or d, e.g. 30s, 10m, 24h, 7d)",
            )
            return default
        ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
        if not 0 < ms <= _MAX_DURATION_MS:
            self.at(node, f"duration '{text}' for '{key}' must be between 1s and 366d")
            return default
        return ms

    def choice(self, entry: Entry | None, key: str, choices: Sequence[str]) -> str | None:
        if entry is None:
            return None
        node = entry[1]
        value = self.string(entry, key)
        if value is None:
            return None
        if value not in choices:
            self.at(node, f"unknown {key} '{value}' (expected one of {', '.join(choices)})")
            return None
        return value

    def query(self, entry: Entry | None, key: str, optional: bool = False) -> str | None:
        value = self.string(entry, key, optional)
        if value is None or entry is None:
            return None
        node = entry[1]
        assert isinstance(node, ScalarNode)
        try:
            parse(value)
        except QuerySyntaxError as exc:
            line, col = value_position(node, self.source, exc.col - 1)
            self.problems.append(
                Problem(self.path, line, col, f"bad query in '{key}': {exc.message}")
            )
            return None
        return value

    # ---------------------------------------------------------------- sections

    def mentions(self, entry: Entry | None) -> tuple[str | None, str | None]:
        if entry is None:
            return None, None
        fields = self.mapping(entry[1], "'mentions'", ("query", "exclude"), ("query",))
        if fields is None:
            return None, None
        return self.query(fields.get("query"), "mentions.query"), self.query(
            fields.get("exclude"), "mentions.exclude", optional=True
        )

    def languages(self, entry: Entry | None) -> tuple[str, ...]:
        if entry is None:
            return ()
        node = entry[1]
        if not isinstance(node, SequenceNode):
            self.at(node, f"'languages' must be a list like [en, zh]; found {kind_name(node)}")
            return ()
        out: list[str] = []
        for item in node.value:
            if not isinstance(item, ScalarNode) or not _LANG.match(str(item.value).lower()):
                found = f"'{item.value}'" if isinstance(item, ScalarNode) else kind_name(item)
                self.at(item, f"bad language {found} (expected a BCP 47 tag like en, zh, zh-Hant)")
                continue
            out.append(str(item.value).lower())
        return tuple(out)

    def rules(self, entry: Entry | None, id_re: re.Pattern[str]) -> tuple[Rule, ...] | None:
        if entry is None:
            return ()
        node = entry[1]
        if isinstance(node, ScalarNode) and node.tag == NULL:
            return ()
        if not isinstance(node, SequenceNode):
            self.at(node, f"'rules' must be a list of rules; found {kind_name(node)}")
            return None
        rules: list[Rule] = []
        ids: dict[str, int] = {}
        kinds: dict[str, str] = {}
        of_refs: list[tuple[Node, str, str]] = []
        ok = True
        for item in node.value:
            id_node = self._id_node(item)
            if id_node is not item and isinstance(id_node, ScalarNode):
                rid = str(id_node.value)
                if rid in ids:
                    self.at(id_node, f"duplicate rule id '{rid}' (first at line {ids[rid]})")
                    ok = False
                else:
                    ids[rid] = id_node.start_mark.line + 1
                    kinds[rid] = self._kind(item) or ""
            rule = self.rule(item, id_re, of_refs)
            if rule is None:
                ok = False
                continue
            rules.append(rule)
        for of_node, of, rule_id in of_refs:
            if of == "mentions" or kinds.get(of) == "keyword":
                continue
            target = kinds.get(of)
            keyword_ids = [r for r, k in kinds.items() if k == "keyword"]
            expected = "'mentions'" + (
                " or a keyword rule: " + ", ".join(keyword_ids) if keyword_ids else ""
            )
            what = f"a {target} rule" if target else "no keyword rule of this brand"
            self.at(of_node, f"'of: {of}' in rule '{rule_id}' names {what} (expected {expected})")
            ok = False
        return tuple(rules) if ok else None

    @staticmethod
    def _kind(item: Node) -> str | None:
        if isinstance(item, MappingNode):
            for k, v in item.value:
                if isinstance(k, ScalarNode) and k.value == "kind" and isinstance(v, ScalarNode):
                    return str(v.value)
        return None

    @staticmethod
    def _id_node(item: Node) -> Node:
        if isinstance(item, MappingNode):
            for k, v in item.value:
                if isinstance(k, ScalarNode) and k.value == "id":
                    return v
        return item

    def rule(
        self, item: Node, id_re: re.Pattern[str], of_refs: list[tuple[Node, str, str]]
    ) -> Rule | None:
        before = len(self.problems)
        kind = self._kind(item)
        rid_hint = ""
        id_node = self._id_node(item)
        if isinstance(id_node, ScalarNode) and id_node is not item:
            rid_hint = f" '{id_node.value}'"
        what = f"rule{rid_hint}"
        if kind == "keyword":
            known: Sequence[str] = KEYWORD_KEYS
            required: Sequence[str] = ("id", "kind", "query", "crisis_type", "severity")
        elif kind == "velocity":
            known = VELOCITY_KEYS
            required = ("id", "kind", "of", "crisis_type", "severity")
        else:
            known = tuple(dict.fromkeys(KEYWORD_KEYS + VELOCITY_KEYS))
            required = ("id", "kind", "crisis_type", "severity")
        f = self.mapping(item, what, known, required)
        if f is None:
            return None
        if "kind" in f and kind not in ("keyword", "velocity"):
            self.at(
                f["kind"][1],
                f"unknown kind {kind_name(f['kind'][1])} in {what} (expected keyword or velocity)",
            )
        rule_id = self.string(f.get("id"), "id")
        if rule_id is not None and (not id_re.match(rule_id) or rule_id == "mentions"):
            self.at(
                f["id"][1],
                f"bad rule id '{rule_id}' (expected lower-case letters, digits, '_' and '-', "
                "starting with a letter or digit; 'mentions' is reserved)",
            )
            rule_id = None
        crisis_type = self.choice(f.get("crisis_type"), "crisis_type", CRISIS_TYPES)
        severity = self.choice(f.get("severity"), "severity", SEVERITIES)
        runbook = self.string(f.get("runbook"), "runbook", optional=True)
        if runbook is not None and not runbook.startswith(("http://", "https://")):
            self.at(f["runbook"][1], f"'runbook' must be an http(s) URL; found '{runbook}'")
        resolve_after_ms = self.duration(f.get("resolve_after"), "resolve_after", 1_800_000)
        window_ms = self.duration(f.get("window"), "window", 600_000)
        escalate = self.escalate(f.get("escalate"), kind, severity)
        if kind == "keyword":
            query = self.query(f.get("query"), "query")
            min_count = self.integer(f.get("min_count"), "min_count", 1, 1)
            if len(self.problems) > before or None in (rule_id, crisis_type, severity, query):
                return None
            assert rule_id and crisis_type and severity and query and window_ms
            assert resolve_after_ms is not None
            return KeywordRule(
                id=rule_id,
                query=query,
                crisis_type=crisis_type,
                severity=severity,
                min_count=min_count,
                window_ms=window_ms,
                resolve_after_ms=resolve_after_ms,
                runbook=runbook,
                escalate=escalate,
            )
        if kind != "velocity":
            return None
        of = self.string(f.get("of"), "of")
        baseline_ms = self.duration(f.get("baseline"), "baseline", 86_400_000)
        warmup_ms = self.duration(f.get("warmup"), "warmup", None)
        ratio = self.number(f.get("ratio"), "ratio", 0.0)
        sensitivity = self.choice(f.get("sensitivity"), "sensitivity", SENSITIVITIES)
        if "ratio" in f and "sensitivity" in f:
            later = max(f["ratio"][0], f["sensitivity"][0], key=lambda n: n.start_mark.index)
            self.at(later, f"{what} gives both 'ratio' and 'sensitivity' (expected one of them)")
        elif "ratio" not in f and "sensitivity" not in f:
            sensitivity = "medium"
        if baseline_ms is not None and window_ms is not None and baseline_ms < window_ms:
            node = f["baseline"][1] if "baseline" in f else f["window"][1]
            self.at(
                node, f"baseline is shorter than window in {what} (expected baseline >= window)"
            )
        min_count = self.integer(f.get("min_count"), "min_count", 1, 1)
        min_authors = self.integer(f.get("min_authors"), "min_authors", 0, 0)
        if of is not None and rule_id is not None:
            of_refs.append((f["of"][1], of, rule_id))
        if len(self.problems) > before or None in (rule_id, crisis_type, severity, of):
            return None
        assert rule_id and crisis_type and severity and of and window_ms and baseline_ms
        assert resolve_after_ms is not None
        return VelocityRule(
            id=rule_id,
            of=of,
            crisis_type=crisis_type,
            severity=severity,
            window_ms=window_ms,
            baseline_ms=baseline_ms,
            ratio=ratio,
            sensitivity=sensitivity,
            min_count=min_count,
            min_authors=min_authors,
            resolve_after_ms=resolve_after_ms,
            warmup_ms=warmup_ms,
            runbook=runbook,
            escalate=escalate,
        )

    def escalate(
        self, entry: Entry | None, kind: str | None, severity: str | None
    ) -> tuple[EscalateStep, ...]:
        if entry is None:
            return ()
        node = entry[1]
        if not isinstance(node, SequenceNode):
            self.at(node, f"'escalate' must be a list of steps; found {kind_name(node)}")
            return ()
        steps: list[EscalateStep] = []
        for item in node.value:
            f = self.mapping(item, "an escalate step", _ESCALATE_KEYS, ("severity",))
            if f is None:
                continue
            step_sev = self.choice(f.get("severity"), "severity", SEVERITIES)
            figures = [k for k in ("ratio", "count", "reach", "authors") if k in f]
            if not figures:
                self.at(item, "escalate step needs at least one of ratio, count, reach, authors")
            if "ratio" in f and kind == "keyword":
                self.at(f["ratio"][0], "'ratio' in escalate is only for velocity rules")
            if step_sev and severity and severity_rank(step_sev) <= severity_rank(severity):
                self.at(
                    f["severity"][1],
                    f"escalate severity '{step_sev}' is not above the rule's severity '{severity}'",
                )
            ratio = self.number(f.get("ratio"), "ratio", 0.0)
            count = self.integer(f.get("count"), "count", 0, 1) if "count" in f else None
            reach = self.integer(f.get("reach"), "reach", 0, 1) if "reach" in f else None
            authors = self.integer(f.get("authors"), "authors", 0, 1) if "authors" in f else None
            if step_sev:
                steps.append(EscalateStep(step_sev, ratio, count, reach, authors))
        return tuple(steps)
