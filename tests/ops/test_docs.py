"""The operator, rule-writing and consumer docs and the Chinese quick start:
every command they show exists, every example rule loads, every query example
behaves as the table says, and the consumer example really de-duplicates."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from rules.loader import load_rules
from rules.matcher import Matcher
from rules.post import post_from_dict
from streams.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "docs" / "operator-guide.md",
    ROOT / "docs" / "rule-writing.md",
    ROOT / "docs" / "consumer-guide.md",
    ROOT / "README.zh-CN.md",
]
RULE_DOCS = [ROOT / "docs" / "rule-writing.md", ROOT / "README.zh-CN.md"]

# Options of the commands the docs may show (the fixed CLI of the project).
OPTIONS: dict[tuple[str, ...], set[str]] = {
    ("worker",): set(),
    ("connect",): {"--config", "--metrics-port", "--port", "--rate", "--token-env"},
    ("alerts", "tail"): {"--json", "--from-beginning", "--idle-exit"},
    ("rules", "check"): set(),
    ("backtest",): {"--rules", "--out"},
    ("kafka", "up"): {"--dir", "--port"},
    ("kafka", "down"): {"--dir"},
}
TAKES_VALUE = {"--config", "--metrics-port", "--port", "--rate", "--token-env", "--idle-exit",
               "--rules", "--out", "--dir"}  # fmt: skip
COMPOSE_SERVICES = set(
    yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
)


def _blocks(path: Path, lang: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def _command_lines(path: Path) -> list[str]:
    """Shell lines from ```sh blocks and inline code spans that run crisiswatch or compose."""
    lines = []
    for block in _blocks(path, "sh"):
        lines += block.replace("\\\n", " ").splitlines()
    text = path.read_text(encoding="utf-8")
    lines += re.findall(r"`((?:\.venv/bin/)?crisiswatch [^`]+|docker compose [^`]+)`", text)
    out = []
    for line in lines:
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line.startswith(("crisiswatch ", ".venv/bin/crisiswatch ", "docker compose ")):
            out.append(line)
    return out


def _check_crisiswatch(argv: list[str], where: str) -> None:
    words = [a for a in argv if not a.startswith("-")]
    path = next(
        (p for p in sorted(OPTIONS, key=len, reverse=True) if tuple(words[: len(p)]) == p), None
    )
    assert path is not None, f"{where}: unknown command 'crisiswatch {' '.join(argv)}'"
    assert path in COMMANDS, f"{where}: 'crisiswatch {' '.join(path)}' is not in streams/cli.py"
    for arg in argv:
        if arg.startswith("-"):
            flag = arg.split("=")[0]
            assert flag in OPTIONS[path], f"{where}: 'crisiswatch {' '.join(path)}' has no {flag}"


def _check_compose(argv: list[str], where: str) -> None:
    sub, rest = argv[0], argv[1:]
    assert sub in {"up", "down", "ps", "logs", "build", "run", "exec", "restart"}, where
    services: list[str] = []
    skip_next = False
    for i, arg in enumerate(rest):
        if skip_next:
            skip_next = False
            continue
        if arg in {"--scale", "--tail"}:
            skip_next = True
            if arg == "--scale":
                services.append(rest[i + 1].split("=")[0])
            continue
        if arg.startswith("-"):
            continue
        services.append(arg)
        if sub in {"run", "exec"}:
            tail = rest[i + 1 :]
            if sub == "run" and arg == "worker":  # the image's entrypoint is crisiswatch
                _check_crisiswatch(tail, where)
            break
    for service in services:
        assert service in COMPOSE_SERVICES, f"{where}: no compose service '{service}'"


COMMAND_CASES = [
    pytest.param(line, id=f"{path.name}: {line[:60]}")
    for path in DOCS
    for line in _command_lines(path)
]


def test_docs_show_commands() -> None:
    assert len(COMMAND_CASES) >= 25


@pytest.mark.parametrize("line", COMMAND_CASES)
def test_every_command_shown_exists(line: str) -> None:
    argv = shlex.split(line)
    if argv[0].endswith("crisiswatch"):
        _check_crisiswatch(argv[1:], line)
    else:
        _check_compose(argv[2:], line)


def test_the_command_check_catches_an_invented_flag() -> None:
    with pytest.raises(AssertionError, match="has no --follow"):
        _check_crisiswatch(["alerts", "tail", "--follow"], "example")
    with pytest.raises(AssertionError, match="unknown command"):
        _check_crisiswatch(["alerts", "watch"], "example")
    with pytest.raises(AssertionError, match="no compose service 'workers'"):
        _check_compose(["logs", "workers"], "example")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith(("http://", "https://")):
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


# ----------------------------------------------------------------- rule files


RULE_FILES = [
    pytest.param(block, id=f"{path.name}#{i}")
    for path in RULE_DOCS
    for i, block in enumerate(_blocks(path, "yaml"))
    if re.search(r"^brand: ", block, re.M)
]


def test_docs_have_rule_files_in_both_languages() -> None:
    assert len(RULE_FILES) >= 3
    assert any(re.search("[\u4e00-\u9fff]", str(p.values[0])) for p in RULE_FILES)


@pytest.mark.parametrize("block", RULE_FILES)
def test_example_rule_file_loads(block: str, tmp_path: Path) -> None:
    (tmp_path / "example.yaml").write_text(block, encoding="utf-8")
    ruleset = load_rules(tmp_path)
    (brand,) = ruleset.brands
    declared = yaml.safe_load(block)
    assert brand.id == declared["brand"]
    assert [r.id for r in brand.rules] == [r["id"] for r in declared["rules"]]


# ------------------------------------------------------ query example table


def _match_table() -> list[tuple[str, str, bool]]:
    text = (ROOT / "docs" / "rule-writing.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| (yes|no) \|$", text, re.M)
    return [(query, post, answer == "yes") for query, post, answer in rows]


def _matches(query: str, post: str, tmp_path: Path) -> bool:
    (tmp_path / "b.yaml").write_text(
        f"brand: b\nmentions:\n  query: {json.dumps(query, ensure_ascii=False)}\nrules: []\n",
        encoding="utf-8",
    )
    fields: dict[str, Any] = {"id": "doc:1", "source": "doc", "created_at": "2026-11-27T10:00:00Z"}
    fields.update(json.loads(post) if post.startswith("{") else {"text": post})
    return bool(Matcher(load_rules(tmp_path)).match(post_from_dict(fields)))


def test_match_table_is_there_with_both_answers() -> None:
    rows = _match_table()
    assert len(rows) >= 20
    assert {answer for _, _, answer in rows} == {True, False}


@pytest.mark.parametrize(("query", "post", "expected"), _match_table(), ids=lambda v: str(v)[:40])
def test_query_example_behaves_as_documented(
    query: str, post: str, expected: bool, tmp_path: Path
) -> None:
    assert _matches(query, post, tmp_path) is expected


# ------------------------------------------------------------ consumer example


class _FakeConsumer:
    """Stands in for aiokafka.AIOKafkaConsumer: yields prepared records."""

    instances: ClassVar[list[_FakeConsumer]] = []
    records: ClassVar[list[bytes]] = []

    def __init__(self, *topics: str, **config: Any) -> None:
        self.topics = topics
        self.config = config
        self.commits = 0
        self.started = self.stopped = False
        _FakeConsumer.instances.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def commit(self) -> None:
        self.commits += 1

    def __aiter__(self) -> Any:
        async def gen() -> Any:
            for value in _FakeConsumer.records:
                yield types.SimpleNamespace(value=value, key=b"acme")

        return gen()


def _event(event_id: str, step: str, severity: str, brand: str = "acme") -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "crisiswatch",
            "type": f"crisiswatch.incident.{step}",
            "subject": brand,
            "time": "2026-11-27T10:04:00Z",
            "datacontenttype": "application/json",
            "data": {"incident_id": f"{brand}-1", "brand": brand, "severity": severity},
        }
    ).encode()


def test_consumer_example_deduplicates_and_commits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (code,) = _blocks(ROOT / "docs" / "consumer-guide.md", "python")
    assert 15 <= len(code.strip().splitlines()) <= 45
    fake = types.ModuleType("aiokafka")
    fake.AIOKafkaConsumer = _FakeConsumer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aiokafka", fake)
    monkeypatch.setenv("CRISISWATCH_TOPIC_PREFIX", "t1")
    _FakeConsumer.instances = []
    _FakeConsumer.records = [
        _event("e1", "opened", "high"),
        _event("e1", "opened", "high"),  # a repeat after a worker restart
        _event("e2", "escalated", "critical"),
        _event("e3", "opened", "medium", brand="zhongyuan"),
        _event("e2", "escalated", "critical"),
    ]
    namespace: dict[str, Any] = {"__name__": "consumer_example"}
    exec(compile(code, "consumer-guide.md", "exec"), namespace)
    asyncio.run(namespace["main"]())
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "2026-11-27T10:04:00Z acme opened high acme-1",
        "2026-11-27T10:04:00Z acme escalated critical acme-1",
        "2026-11-27T10:04:00Z zhongyuan opened medium zhongyuan-1",
    ]
    (consumer,) = _FakeConsumer.instances
    assert consumer.topics == ("t1.alerts",)
    assert consumer.config["enable_auto_commit"] is False
    assert consumer.config["group_id"]
    assert consumer.commits == 5 and consumer.started and consumer.stopped
