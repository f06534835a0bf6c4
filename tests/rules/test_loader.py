"""load_rules: the brand file format, defaults, and every problem with its exact line:col."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rules.errors import RuleError
from rules.loader import MAX_FILE_BYTES, load_rules
from rules.model import EscalateStep, KeywordRule, VelocityRule

BRANDS = Path(__file__).resolve().parents[2] / "brands"

GOOD = """\
brand: acme
name: ACME Foods
mentions:
  query: 'acme OR #acme'
  exclude: roadrunner
languages: [en, zh]
rules:
  - id: safety
    kind: keyword
    query: recall OR 召回
    crisis_type: product_quality
    severity: high
  - id: surge
    kind: velocity
    of: safety
    crisis_type: other
    severity: medium
    escalate:
      - {ratio: 6, severity: high}
      - {ratio: 12, reach: 1000000, severity: critical}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def problems(tmp_path: Path) -> list[str]:
    with pytest.raises(RuleError) as info:
        load_rules(tmp_path)
    return [f"{Path(p.path).name}:{p.line}:{p.col}: {p.message}" for p in info.value.problems]


def test_good_file_and_defaults(tmp_path: Path) -> None:
    rs = load_rules(write(tmp_path, "acme.yaml", GOOD))
    (b,) = rs.brands
    assert (b.id, b.name, b.exclude_query, b.languages) == (
        "acme",
        "ACME Foods",
        "roadrunner",
        ("en", "zh"),
    )
    assert b.path == str(tmp_path / "acme.yaml")
    kw, vel = b.rules
    assert isinstance(kw, KeywordRule) and isinstance(vel, VelocityRule)
    assert (kw.min_count, kw.window_ms, kw.resolve_after_ms) == (1, 600_000, 1_800_000)
    assert (vel.window_ms, vel.baseline_ms, vel.effective_warmup_ms) == (
        600_000,
        86_400_000,
        86_400_000,
    )
    assert (vel.ratio, vel.sensitivity, vel.min_count, vel.min_authors) == (None, "medium", 1, 0)
    assert vel.escalate == (
        EscalateStep("high", ratio=6.0),
        EscalateStep("critical", ratio=12.0, reach=1_000_000),
    )
    content = (tmp_path / "acme.yaml").read_bytes()
    assert rs.digest == hashlib.sha256(b"acme.yaml\0" + content + b"\0").hexdigest()


def test_durations_and_explicit_values(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    severity: medium\n",
        "    severity: medium\n    window: 30s\n    baseline: 7d\n    warmup: 2h\n"
        "    ratio: 2.5\n    min_count: 20\n    min_authors: 10\n    resolve_after: 45m\n",
    )
    vel = load_rules(write(tmp_path, "a.yaml", text)).brands[0].rules[1]
    assert isinstance(vel, VelocityRule)
    assert (vel.window_ms, vel.baseline_ms, vel.warmup_ms, vel.resolve_after_ms) == (
        30_000,
        7 * 86_400_000,
        7_200_000,
        2_700_000,
    )
    assert (vel.ratio, vel.sensitivity, vel.min_count, vel.min_authors) == (2.5, None, 20, 10)


def test_example_brands_load() -> None:
    rs = load_rules(BRANDS)
    assert [b.id for b in rs.brands] == ["acme", "zhongyuan"]
    acme = rs.brand("acme")
    assert [r.kind for r in acme.rules].count("velocity") == 2
    assert all(r.runbook and r.runbook.startswith("https://wiki.example/") for r in acme.rules)
    assert rs.brand("zhongyuan") is rs.brands[1]
    with pytest.raises(KeyError):
        rs.brand("nobody")
    # equality and hashing ignore the index (it is derived from the brands)
    assert rs == load_rules(BRANDS)
    assert hash(rs) == hash(load_rules(BRANDS))


def test_digest_changes_with_content(tmp_path: Path) -> None:
    first = load_rules(write(tmp_path, "a.yaml", GOOD)).digest
    second = load_rules(write(tmp_path, "a.yaml", GOOD.replace("high", "critical", 1))).digest
    assert first != second and len(first) == 64


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    severity: high",
            "    severity: hihg",
            "a.yaml:12:15: unknown severity 'hihg' (expected one of low, medium, high, critical)",
        ),
        (
            "    severity: high",
            "    severty: high",
            "a.yaml:12:5: unknown key 'severty' in rule 'safety' (did you mean 'severity'?)",
        ),
        (
            "crisis_type: product_quality",
            "crisis_type: quality",
            "a.yaml:11:18: unknown "
            "crisis_type 'quality' (expected one of product_quality, service_failure, "
            "inappropriate_remarks, illegal_conduct, other)",
        ),
        (
            "    query: recall OR 召回",
            "    query: recall OR",
            "a.yaml:10:21: bad query in "
            "'query': expected a term or '(' after 'OR'; found end of query",
        ),
        (
            "  query: 'acme OR #acme'",
            "  query: 'acme OR (#acme'",
            "a.yaml:4:25: bad query in "
            "'mentions.query': expected ')' to close the '(' at col 9; found end of query",
        ),
        (
            "  query: 'acme OR #acme'",
            "  query: 'it''s OR )'",
            "a.yaml:4:20: bad query in "
            "'mentions.query': expected a term or '(' after 'OR'; found ')'",
        ),
        (
            "  query: 'acme OR #acme'",
            '  query: "acme OR \\"x"',
            "a.yaml:4:22: bad query in 'mentions.query': unterminated phrase",
        ),
        ("brand: acme", "brand: Acme!", "a.yaml:1:8: bad brand id 'Acme!'"),
        (
            "    of: safety",
            "    of: nothing",
            "a.yaml:15:9: 'of: nothing' in rule 'surge' names "
            "no keyword rule of this brand (expected 'mentions' or a keyword rule: safety)",
        ),
        (
            "  - id: surge",
            "  - id: safety",
            "a.yaml:13:9: duplicate rule id 'safety' (first at line 8)",
        ),
        (
            "    of: safety",
            "    of: safety\n    ratio: 3\n    sensitivity: high",
            "a.yaml:17:5: rule 'surge' gives both 'ratio' and 'sensitivity' (expected one of them)",
        ),
        (
            "    of: safety",
            "    of: safety\n    window: 10 minutes",
            "a.yaml:16:13: bad duration "
            "'10 minutes' for 'window' (expected a whole number and a unit s, m, h or d, "
            "e.g. 30s, 10m, 24h, 7d)",
        ),
        (
            "    of: safety",
            "    of: safety\n    min_count: many",
            "a.yaml:16:16: 'min_count' must be a whole number >= 1; found 'many'",
        ),
        (
            "    of: safety",
            "    of: safety\n    sensitivity: extreme",
            "a.yaml:16:18: unknown sensitivity 'extreme' (expected one of low, medium, high)",
        ),
        (
            "    of: safety",
            "    of: safety\n    baseline: 5m",
            "a.yaml:16:15: baseline is "
            "shorter than window in rule 'surge' (expected baseline >= window)",
        ),
        (
            "      - {ratio: 6, severity: high}",
            "      - {ratio: 6, severity: low}",
            "a.yaml:19:30: escalate severity 'low' is not above the rule's severity 'medium'",
        ),
        (
            "      - {ratio: 6, severity: high}",
            "      - {ratoi: 6, severity: high}",
            "a.yaml:19:10: unknown key 'ratoi' in an escalate step (did you mean 'ratio'?)",
        ),
        (
            "    kind: keyword",
            "    kind: keywords",
            "a.yaml:9:11: unknown kind 'keywords' in rule 'safety' (expected keyword or velocity)",
        ),
        (
            "languages: [en, zh]",
            "languages: en",
            "a.yaml:6:12: 'languages' must be a list like [en, zh]; found 'en'",
        ),
        (
            "mentions:\n  query: 'acme OR #acme'\n  exclude: roadrunner\n",
            "mentions: {}\n",
            "a.yaml:3:11: missing required key 'query' in 'mentions'",
        ),
        ("    runbook", "    runbook", ""),
    ],
)
def test_problems_point_at_the_value(tmp_path: Path, old: str, new: str, expected: str) -> None:
    if not expected:
        text = GOOD.replace("severity: high", "severity: high\n    runbook: wiki/acme", 1)
        assert problems(write(tmp_path, "a.yaml", text)) == [
            "a.yaml:13:14: 'runbook' must be an http(s) URL; found 'wiki/acme'"
        ]
        return
    assert old in GOOD
    got = problems(write(tmp_path, "a.yaml", GOOD.replace(old, new, 1)))
    assert any(p.startswith(expected) for p in got), got


def test_block_scalar_query_error_maps_to_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("    query: recall OR 召回", "    query: >-\n      recall OR\n      (召回")
    assert problems(write(tmp_path, "a.yaml", text)) == [
        "a.yaml:12:10: bad query in 'query': expected ')' to close the '(' at col 11; "
        "found end of query"
    ]


def test_every_problem_of_every_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD.replace("severity: high", "severity: hihg", 1))
    write(tmp_path, "b.yml", GOOD.replace("recall OR", "recall AND"))  # still valid query
    write(tmp_path, "c.yaml", "brand: [oops\n")
    write(tmp_path, "d.yaml", "brand: d\nmentions: &m {query: a}\n")
    write(tmp_path, "notes.txt", "ignored")
    got = problems(tmp_path)
    assert got == [
        "a.yaml:12:15: unknown severity 'hihg' (expected one of low, medium, high, critical)",
        f"b.yml:1:8: duplicate brand id 'acme' (already defined at {tmp_path / 'a.yaml'}:1:8)",
        "c.yaml:2:1: YAML syntax error: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence)",
        "d.yaml:2:11: YAML syntax error: anchors (&name) are not allowed in rule files",
    ]


def test_missing_required_keys_and_wrong_types(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: x\nrules:\n  - id: r\n    kind: keyword\n    min_count: 1.5\n")
    assert problems(tmp_path) == [
        "a.yaml:1:1: missing required key 'brand' in a brand file",
        "a.yaml:1:1: missing required key 'mentions' in a brand file",
        "a.yaml:3:5: missing required key 'query' in rule 'r'",
        "a.yaml:3:5: missing required key 'crisis_type' in rule 'r'",
        "a.yaml:3:5: missing required key 'severity' in rule 'r'",
        "a.yaml:5:16: 'min_count' must be a whole number >= 1; found the number 1.5",
    ]


def test_not_a_mapping_empty_and_aliases(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "- just\n- a list\n")
    write(tmp_path, "b.yaml", "# nothing\n")
    write(tmp_path, "c.yaml", "brand: c\nmentions: {query: a}\nname: *x\n")
    assert problems(tmp_path) == [
        "a.yaml:1:1: expected a brand file (a mapping of keys to values); found a list",
        "b.yaml:1:1: empty file: expected a brand mapping with 'brand' and 'mentions'",
        "c.yaml:3:7: YAML syntax error: aliases (*name) are not allowed in rule files",
    ]


def test_duplicate_keys(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "brand: a\nbrand: b\nmentions: {query: a}\n")
    assert problems(tmp_path) == [
        "a.yaml:2:1: duplicate key 'brand' in a brand file (first at line 1)"
    ]


def test_big_and_non_utf8_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    (tmp_path / "b.yaml").write_bytes(b"brand: b\nname: caf\xe9\n")
    got = problems(tmp_path)
    assert got[0].startswith("a.yaml:1:1: file is 1,048,579 bytes; rule files may be at most")
    assert got[1] == "b.yaml:2:10: not UTF-8 text: byte 0xe9 is invalid"


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="does not exist"):
        load_rules(tmp_path / "nope")
    with pytest.raises(RuleError, match="no rule files"):
        load_rules(tmp_path)
