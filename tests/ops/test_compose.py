"""docker-compose.yml, Dockerfile, .dockerignore and .env.example.

There is no Docker engine on the build machines, so the compose file is checked
against the Compose Specification's JSON Schema (vendored in deploy/schemas/),
and the topic initialiser's shell script is run with a stand-in kafka-topics.sh.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.ops.known import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SPEC = ROOT / "deploy" / "schemas" / "compose-spec.json"
_INTERP = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}")


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return doc


def _interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} interpolation, with the defaults (or env)."""
    env = env or {}
    return _INTERP.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)


def test_compose_file_matches_the_compose_spec_schema() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SPEC.read_text(encoding="utf-8")))
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(_compose())
    ]
    assert problems == []


def test_the_schema_check_catches_a_bad_compose_file() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SPEC.read_text(encoding="utf-8")))
    bad = _compose()
    bad["services"]["worker"]["depends_on"] = {"kafka-init": {"condition": "when_ready"}}
    bad["services"]["worker"]["restart_policy"] = "always"
    assert len(list(validator.iter_errors(bad))) >= 2


# Mounted files that other parts of the project provide (checked all the same
# once they exist; until then the test is an expected failure, not a pass).
def _bind_mounts() -> list[tuple[str, str, str]]:
    """(service, host path, container path) for every bind mount."""
    mounts = []
    volumes = set(_compose().get("volumes", {}))
    for name, service in _compose()["services"].items():
        for spec in service.get("volumes", []):
            source, target = spec.split(":")[:2]
            if source in volumes:
                continue
            mounts.append((name, _interpolate(source), target))
    return mounts


def test_there_are_bind_mounts_to_check() -> None:
    services = {service for service, _, _ in _bind_mounts()}
    assert {"worker", "connectors", "prometheus", "grafana"} <= services


@pytest.mark.parametrize(("service", "source", "target"), _bind_mounts(), ids=lambda v: str(v))
def test_every_mounted_file_exists(service: str, source: str, target: str) -> None:
    path = (ROOT / source).resolve()
    assert path.exists(), f"docker-compose.yml: service {service} mounts {source}, which is missing"
    assert ROOT in path.parents, f"{service} mounts {source} from outside the repository"


def test_named_volumes_are_declared() -> None:
    doc = _compose()
    declared = set(doc.get("volumes", {}))
    for name, service in doc["services"].items():
        for spec in service.get("volumes", []):
            source = spec.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_worker_can_be_scaled() -> None:
    worker = _compose()["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "host ports would collide with --scale worker=N"
    assert worker["expose"] == ["6066"]
    assert worker["environment"]["CRISISWATCH_WEB_PORT"] == 6066
    assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    for spec in worker.get("volumes", []):
        assert spec.endswith(":ro"), f"a scaled worker must not share writable state: {spec}"


def test_no_service_has_a_fixed_container_name() -> None:
    for name, service in _compose()["services"].items():
        assert "container_name" not in service, name


def test_host_ports_are_bound_to_loopback() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_kafka_sets_every_required_key() -> None:
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = {k: _interpolate(str(v)) for k, v in kafka["environment"].items()}
    required = set(
        [
            "CLUSTER_ID",
            "KAFKA_NODE_ID",
            "KAFKA_PROCESS_ROLES",
            "KAFKA_CONTROLLER_QUORUM_VOTERS",
            "KAFKA_LISTENERS",
            "KAFKA_ADVERTISED_LISTENERS",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "KAFKA_INTER_BROKER_LISTENER_NAME",
            "KAFKA_CONTROLLER_LISTENER_NAMES",
            "KAFKA_LOG_DIRS",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS",
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
        ]
    )
    assert required <= set(env), f"missing {sorted(required - set(env))}"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(item.split(":") for item in protocol_map.split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(listeners) == set(protocols)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert advertised["INTERNAL"] == "kafka:19092"
    assert advertised["EXTERNAL"] == "localhost:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert kafka["healthcheck"]["test"][0] == "CMD-SHELL"
    # every other container talks to the internal listener
    for name, service in _compose()["services"].items():
        bootstrap = service.get("environment", {}).get("CRISISWATCH_KAFKA_BOOTSTRAP")
        if bootstrap is not None:
            assert bootstrap == "kafka:19092", name


def _init_script(compose_env: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    init = _compose()["services"]["kafka-init"]
    (script,) = init["command"]
    # compose turns $$ into $ before the shell sees it
    assert "$" not in script.replace("$$", "")
    env = {k: _interpolate(str(v), compose_env) for k, v in init["environment"].items()}
    return script.replace("$$", "$"), env


def _run_init(tmp_path: Path, overrides: dict[str, str] | None = None) -> list[list[str]]:
    script, env = _init_script(overrides)
    log = tmp_path / "calls.jsonl"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    stub.chmod(0o755)
    result = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": os.environ["PATH"], "KAFKA_TOPICS": str(stub), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "topics ready" in result.stdout
    return [json.loads(line) for line in log.read_text().splitlines()]


def _topics(calls: list[list[str]]) -> dict[str, dict[str, Any]]:
    topics = {}
    for argv in calls:
        assert argv[:4] == ["--bootstrap-server", "kafka:19092", "--create", "--if-not-exists"]
        opts: dict[str, Any] = {"config": {}}
        it = iter(argv[4:])
        for flag in it:
            value = next(it)
            if flag == "--config":
                key, _, val = value.partition("=")
                opts["config"][key] = val
            else:
                opts[flag.lstrip("-")] = value
        topics[opts["topic"]] = opts
    return topics


def test_topic_initialiser_declares_every_topic(tmp_path: Path) -> None:
    topics = _topics(_run_init(tmp_path))
    assert set(topics) == {
        "crisiswatch.posts",
        "crisiswatch.posts.dlq",
        "crisiswatch.matches",
        "crisiswatch.alerts",
        "crisiswatch.connector-state",
        "crisiswatch.brand-state-changelog",
    }
    for name, opts in topics.items():
        assert opts["replication-factor"] == "1"
        expected = "1" if name.endswith("connector-state") else "4"
        assert opts["partitions"] == expected, name
    compacted = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
    assert topics["crisiswatch.brand-state-changelog"]["config"] == compacted
    assert topics["crisiswatch.connector-state"]["config"] == compacted
    assert topics["crisiswatch.posts"]["config"] == {}


def test_topic_initialiser_follows_prefix_and_partitions(tmp_path: Path) -> None:
    topics = _topics(
        _run_init(
            tmp_path, {"CRISISWATCH_TOPIC_PREFIX": "acme-prod", "CRISISWATCH_PARTITIONS": "12"}
        )
    )
    assert topics["acme-prod.posts"]["partitions"] == "12"
    assert topics["acme-prod.alerts"]["partitions"] == "12"
    assert topics["acme-prod.brand-state-changelog"]["partitions"] == "12"
    assert topics["acme-prod.connector-state"]["partitions"] == "1"


def test_changelog_topic_name_is_written_in_one_place() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert text.count("brand-state-changelog") == 1


def test_dockerfile_is_slim_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert 'ENTRYPOINT ["crisiswatch"]' in text


def test_dockerfile_copies_only_existing_paths_not_ignored() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    sources = []
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        sources += line.split()[:-1]
    assert {"pyproject.toml", "rules", "streams", "connectors", "brands"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is missing"
        assert src not in ignored, f".dockerignore excludes {src}, which the Dockerfile copies"
    assert ".env" in ignored and ".venv" in ignored and ".git" in ignored


def test_env_example_lists_every_setting_with_its_default() -> None:
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    for key, default in SETTINGS.items():
        assert key in values, f".env.example lacks {key}"
        assert values[key] == default, f"{key}: {values[key]!r} != default {default!r}"


def test_compose_reads_only_variables_documented_in_env_example() -> None:
    documented = {
        line.partition("=")[0]
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }
    used = set(_INTERP.findall(COMPOSE.read_text(encoding="utf-8")))
    names = {name for name, _ in used}
    assert names - documented == set()
