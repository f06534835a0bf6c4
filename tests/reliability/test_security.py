"""The worker and a connector through a broker that speaks only TLS + SASL/SCRAM-SHA-512;
wrong credentials fail with one clear line; no secret ever reaches a log or an error."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from connectors.settings import KafkaSettings
from streams.settings import Settings
from tests.integration import scenario
from tests.integration.workerproc import WorkerProcess
from tests.reliability.helpers import (
    ConnectorProcess,
    consume_secure,
    expected_events,
    scan_for_secrets,
)
from tests.reliability.tlsbroker import SecureBroker, start_secure_broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = start_secure_broker(tmp_path_factory.mktemp("secure"))
    try:
        yield broker
    finally:
        broker.kafka.down()


def _settings(broker: SecureBroker, password: str | None = None) -> Settings:
    return Settings.from_env(
        {**broker.client_env(password), "CRISISWATCH_KAFKA_BOOTSTRAP": broker.bootstrap}
    )


async def test_worker_and_connector_work_through_tls_and_scram(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    prefix = "secure1"
    rules_dir = scenario.write_rules(tmp_path / "brands")
    items = scenario.posts(seed=5)
    expected = expected_events(rules_dir, items)
    posts_file = tmp_path / "posts.jsonl"
    posts_file.write_bytes(b"\n".join(orjson.dumps(p) for p in items) + b"\n")
    env = secure_broker.client_env()
    connector = ConnectorProcess(
        secure_broker.bootstrap,
        prefix,
        ["replay", str(posts_file), "--name", "secure", "--metrics-port", "0"],
        tmp_path / "c",
        extra_env=env,
    ).start()
    assert connector.wait(timeout_s=120) == 0, connector.output()
    assert f"produced {len(items)} posts" in connector.output()
    worker = WorkerProcess(
        secure_broker.bootstrap, prefix, tmp_path / "w", rules_dir, extra_env=env
    )
    worker.start(ready_timeout_s=120)
    try:
        kwargs = _settings(secure_broker).security.aiokafka_kwargs()
        deadline = time.monotonic() + 120
        events: dict[str, dict] = {}
        while len(events) < len(expected) and time.monotonic() < deadline:
            records = await consume_secure(secure_broker.bootstrap, f"{prefix}.alerts", kwargs)
            events = {e["id"]: e for e in (orjson.loads(r.value) for r in records)}
            await asyncio.sleep(1.0)
        assert events == expected
        assert worker.metric("crisiswatch_posts_consumed_total") == len(items)
    finally:
        worker.stop()
    logs = {
        "worker log": worker.log_path.read_text(errors="replace") if worker.log_path else "",
        "connector output": connector.output(),
    }
    assert all(logs.values())
    assert scan_for_secrets(logs, secure_broker.secrets()) == []


async def test_a_client_without_credentials_gets_nothing(secure_broker: SecureBroker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=secure_broker.bootstrap, request_timeout_ms=3000)
    with pytest.raises(Exception):  # noqa: B017 - any failure is the point: no way in
        await asyncio.wait_for(producer.start(), timeout=10)
    await producer.stop()


def _run(
    args: list[str], env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.parametrize("who", ["worker", "connector"])
def test_a_wrong_password_fails_fast_with_one_clear_line(
    secure_broker: SecureBroker, tmp_path: Path, who: str
) -> None:
    wrong = "wrong-" + secure_broker.password[::-1]
    env = {
        **secure_broker.client_env(wrong),
        "CRISISWATCH_KAFKA_BOOTSTRAP": secure_broker.bootstrap,
        "CRISISWATCH_TOPIC_PREFIX": "secure2",
        "CRISISWATCH_RULES_DIR": str(scenario.write_rules(tmp_path / "brands")),
        "CRISISWATCH_DATA_DIR": str(tmp_path / "w"),
    }
    posts = tmp_path / "p.jsonl"
    posts.write_bytes(orjson.dumps(scenario.posts()[0]) + b"\n")
    args = (
        ["worker"] if who == "worker" else ["connect", "replay", str(posts), "--metrics-port", "0"]
    )
    started = time.monotonic()
    done = _run(args, env, timeout_s=90)
    assert done.returncode != 0
    assert time.monotonic() - started < 90
    last = done.stderr.strip().splitlines()[-1]
    assert "authentication" in last.lower() or "sasl" in last.lower(), done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    output = {"stdout": done.stdout, "stderr": done.stderr}
    assert scan_for_secrets(output, [wrong, *secure_broker.secrets()]) == []


def test_settings_never_print_secrets(
    secure_broker: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**secure_broker.client_env(), "CRISISWATCH_KAFKA_BOOTSTRAP": secure_broker.bootstrap}
    worker_settings = Settings.from_env(env)
    connector_settings = KafkaSettings.from_env(env)
    log = logging.getLogger("crisiswatch.test")
    with caplog.at_level(logging.DEBUG):
        log.info("worker settings %s", worker_settings)
        log.info("worker settings %r", worker_settings)
        log.info("connector settings %s / %r", connector_settings, connector_settings)
        secret = worker_settings.security.sasl_password
        log.info("password %s %r %s", secret, connector_settings.sasl_password, f"{secret}")
    rendered = {
        "caplog": caplog.text,
        "str": f"{worker_settings} {connector_settings!r} {worker_settings.security}",
    }
    assert "***" in caplog.text
    assert scan_for_secrets(rendered, secure_broker.secrets()) == []
    # the secret is still there for the client library, on purpose
    assert connector_settings.client_kwargs()["sasl_plain_password"] == secure_broker.password
