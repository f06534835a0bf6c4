"""The published message schemas (docs/schemas/) and the AsyncAPI document."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rules.errors import InvalidPost
from rules.model import Author, Post
from rules.post import decode_post, encode_post, post_from_dict
from tests.ops.schemas import SCHEMA_DIR, SchemaViolation, errors, schema, validate

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"

POST: dict[str, Any] = {
    "id": "mastodon:113224",
    "source": "mastodon",
    "text": "Just got food poisoning from an @acme burger. Recall this now!",
    "created_at": "2026-11-27T10:00:03Z",
    "lang": "en",
    "url": "https://social.example/@kim/113224",
    "author": {"id": "109", "handle": "kim@social.example", "followers": 5120},
    "metrics": {"likes": 3, "reposts": 12, "replies": 1},
}
DEAD_LETTER: dict[str, Any] = {
    "reason": "invalid_json",
    "detail": "value is not valid UTF-8 JSON: unexpected character at line 1 column 1",
    "stage": "connector:webhook",
    "topic": "crisiswatch.posts",
    "partition": None,
    "offset": None,
    "received_at": "2026-11-27T10:00:04.120Z",
    "payload_b64": base64.b64encode(b"{not json").decode(),
}
ALERT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "acme-product-safety-1-opened",
    "source": "crisiswatch",
    "type": "crisiswatch.incident.escalated",
    "subject": "acme",
    "time": "2026-11-27T10:20:00Z",
    "datacontenttype": "application/json",
    "data": {
        "incident_id": "acme-product-safety-1",
        "brand": "acme",
        "rule_id": "mention-surge",
        "rule_kind": "velocity",
        "crisis_type": "other",
        "severity": "critical",
        "window": {
            "start": "2026-11-27T10:10:00Z",
            "end": "2026-11-27T10:20:00Z",
            "count": 240,
            "baseline": 12.5,
            "ratio": 19.2,
            "unique_authors": 190,
            "reach": 2400000,
        },
        "samples": [
            {
                "post_id": "mastodon:113224",
                "source": "mastodon",
                "author": "kim@social.example",
                "text": "Recall this now!",
                "url": None,
                "created_at": "2026-11-27T10:00:03Z",
            }
        ],
        "opened_at": "2026-11-27T10:04:00Z",
        "runbook": None,
    },
}


def _with(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of obj with the dotted path set to value (or deleted for ...)."""
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = out
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return out


# --------------------------------------------------------------------- valid


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        ("post", POST),
        ("post", {k: POST[k] for k in ("id", "source", "text", "created_at")}),
        ("post", _with(POST, "created_at", "2026-11-27T18:00:03.250+08:00")),
        ("post", _with(POST, "author.id", 109)),
        ("post", _with(POST, "lang", None)),
        ("post", {**POST, "future_field": {"anything": 1}}),
        ("post", _with(POST, "extra", {"visibility": "public", "tags": ["acme"]})),
        ("dead-letter", DEAD_LETTER),
        ("dead-letter", {**DEAD_LETTER, "stage": "matcher", "partition": 3, "offset": 4411}),
        ("alert-event", ALERT),
        ("alert-event", _with(ALERT, "data.samples", [])),
        ("alert-event", _with(ALERT, "type", "crisiswatch.incident.resolved")),
    ],
)
def test_valid_examples_pass(kind: str, obj: dict[str, Any]) -> None:
    assert errors(kind, obj) == []
    validate(kind, obj)


# ------------------------------------------------------------------- invalid


@pytest.mark.parametrize(
    ("kind", "obj", "where"),
    [
        ("post", _with(POST, "text", ...), "(root)"),
        ("post", _with(POST, "id", ""), "id"),
        ("post", _with(POST, "created_at", "27/11/2026 10:00"), "created_at"),
        ("post", _with(POST, "created_at", "2026-11-27T10:00:03"), "created_at"),
        ("post", _with(POST, "created_at", 1764237603), "created_at"),
        ("post", _with(POST, "author.followers", "5k"), "author/followers"),
        ("post", _with(POST, "author.followers", True), "author/followers"),
        ("post", _with(POST, "metrics.likes", 2**63), "metrics/likes"),
        ("post", _with(POST, "extra", ["not", "an", "object"]), "extra"),
        ("post", ["not", "an", "object"], "(root)"),
        ("dead-letter", _with(DEAD_LETTER, "payload_b64", ...), "(root)"),
        ("dead-letter", _with(DEAD_LETTER, "payload_b64", "not base64!"), "payload_b64"),
        ("dead-letter", _with(DEAD_LETTER, "partition", "3"), "partition"),
        ("dead-letter", _with(DEAD_LETTER, "reason", "Invalid JSON"), "reason"),
        ("alert-event", _with(ALERT, "specversion", "0.3"), "specversion"),
        ("alert-event", _with(ALERT, "type", "crisiswatch.incident.updated"), "type"),
        ("alert-event", _with(ALERT, "data.severity", "hihg"), "data/severity"),
        ("alert-event", _with(ALERT, "data.rule_kind", "regex"), "data/rule_kind"),
        ("alert-event", _with(ALERT, "data.window.count", -1), "data/window/count"),
        (
            "alert-event",
            _with(ALERT, "data.samples", [ALERT["data"]["samples"][0]] * 6),
            "data/samples",
        ),
        ("alert-event", _with(ALERT, "data.incident_id", ...), "data"),
        ("alert-event", _with(ALERT, "data.runbook", ...), "data"),
        ("alert-event", _with(ALERT, "time", "yesterday"), "time"),
    ],
)
def test_invalid_examples_fail_at_the_right_place(kind: str, obj: Any, where: str) -> None:
    problems = errors(kind, obj)
    assert problems, f"{kind} accepted an invalid message"
    assert any(p.startswith(f"{where}:") for p in problems), problems
    with pytest.raises(SchemaViolation) as info:
        validate(kind, obj)
    assert info.value.errors == problems


def test_validate_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown message kind 'posts'"):
        validate("posts", POST)


def test_aliases_name_the_same_schema() -> None:
    assert schema("dlq") is schema("dead-letter") is schema("dead_letter")
    assert schema("alert") is schema("alert-event")


# ------------------------------------------- agreement with the real decoder


def test_encode_post_output_is_valid() -> None:
    post = Post(
        id="reddit:t3_abc",
        source="reddit",
        text="艾克美 召回 质量问题 #acme",
        created_at_ms=1_764_237_603_120,
        created_at="2026-11-27T10:00:03.120Z",
        lang="zh",
        url="https://reddit.example/r/x/abc",
        author=Author(id="u1", handle="someone", followers=42),
        metrics={"likes": 1, "views": 900},
        reply_to="reddit:t3_parent",
        ingested_at_ms=1_764_237_604_000,
        extra={"subreddit": "food"},
    )
    obj = json.loads(encode_post(post))
    validate("post", obj)
    # and the minimal post too
    bare = post_from_dict({k: POST[k] for k in ("id", "source", "text", "created_at")})
    validate("post", json.loads(encode_post(bare)))


AGREEMENT_CASES = [
    POST,
    {k: POST[k] for k in ("id", "source", "text", "created_at")},
    _with(POST, "text", ...),
    _with(POST, "source", 7),
    _with(POST, "id", ""),
    _with(POST, "created_at", "2026-11-27T10:00:03"),
    _with(POST, "created_at", "tomorrow"),
    _with(POST, "lang", 5),
    _with(POST, "author", "kim"),
    _with(POST, "author.followers", "many"),
    _with(POST, "author.id", 109),
    _with(POST, "metrics", [1, 2]),
    _with(POST, "metrics.views", 1.5),
    _with(POST, "extra", "x"),
    _with(POST, "url", None),
    {**POST, "unknown": [1, 2, 3]},
]


@pytest.mark.parametrize("obj", AGREEMENT_CASES)
def test_schema_agrees_with_the_worker_decoder(obj: dict[str, Any]) -> None:
    # A message the schema accepts is one the worker processes; one it rejects
    # is one the worker dead-letters.
    try:
        decode_post(json.dumps(obj).encode())
        decoded = True
    except InvalidPost:
        decoded = False
    assert (errors("post", obj) == []) is decoded, errors("post", obj)


# ------------------------------------------------------------------ AsyncAPI


def _asyncapi() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return doc


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    if ref.startswith("#/"):
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node
    return json.loads((ASYNCAPI.parent / ref).read_text(encoding="utf-8"))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_is_version_3_and_names_the_topics() -> None:
    doc = _asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {"crisiswatch.posts", "crisiswatch.posts.dlq", "crisiswatch.alerts"}
    for op in doc["operations"].values():
        assert op["action"] in {"send", "receive"}


def test_every_asyncapi_ref_resolves() -> None:
    doc = _asyncapi()
    refs = _refs(doc)
    assert len(refs) >= 15
    for ref in refs:
        try:
            assert _resolve(doc, ref) is not None
        except (KeyError, FileNotFoundError) as exc:
            pytest.fail(f"docs/asyncapi.yaml: $ref {ref!r} does not resolve ({exc!r})")


def test_asyncapi_operation_messages_belong_to_their_channel() -> None:
    doc = _asyncapi()
    for name, op in doc["operations"].items():
        channel_ref = op["channel"]["$ref"]
        for msg in op["messages"]:
            assert msg["$ref"].startswith(channel_ref + "/messages/"), (name, msg)


def test_asyncapi_message_schemas_are_the_published_files() -> None:
    doc = _asyncapi()
    kinds = {"post": "post", "deadLetter": "dead-letter", "alertEvent": "alert-event"}
    for msg_name, kind in kinds.items():
        payload = doc["components"]["messages"][msg_name]["payload"]
        assert payload["schemaFormat"].startswith("application/schema+json")
        ref = payload["schema"]["$ref"]
        assert (ASYNCAPI.parent / ref).resolve() == (SCHEMA_DIR / f"{kind}.schema.json").resolve()


def test_asyncapi_examples_are_valid_messages() -> None:
    doc = _asyncapi()
    kinds = {"post": "post", "deadLetter": "dead-letter", "alertEvent": "alert-event"}
    count = 0
    for msg_name, kind in kinds.items():
        for example in doc["components"]["messages"][msg_name]["examples"]:
            validate(kind, example["payload"])
            count += 1
        if kind == "post":
            for example in doc["components"]["messages"][msg_name]["examples"]:
                decode_post(json.dumps(example["payload"]).encode())
    assert count >= 5
    dlq = doc["components"]["messages"]["deadLetter"]["examples"][0]["payload"]
    base64.b64decode(dlq["payload_b64"], validate=True)
