"""The webhook through the real broker: auth, limits, per-item report, NDJSON, DLQ, load."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from connectors.metrics import ConnectorMetrics
from connectors.publisher import Publisher
from connectors.settings import KafkaSettings, Secret
from connectors.webhook import TokenBucket, WebhookOptions, build_webhook_app, start_webhook
from rules.post import decode_post
from streams.localkafka import free_port
from tests.connectors.framework_helpers import kafka_settings
from tests.kafkautil import consume_all

TOKEN = "s3cr3t-webhook-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


def _post(i: int, **extra: object) -> dict[str, object]:
    return {
        "id": f"hook:{i}",
        "source": "webhook",
        "text": f"acme post {i}",
        "created_at": "2026-11-27T10:00:03Z",
        **extra,
    }


@dataclass
class Hook:
    client: TestClient
    settings: KafkaSettings
    registry: CollectorRegistry


async def _hook(bootstrap: str, prefix: str, **options: object) -> AsyncIterator[Hook]:
    settings = await kafka_settings(bootstrap, prefix)
    registry = CollectorRegistry()
    async with Publisher(settings) as publisher:
        opts = WebhookOptions(token=Secret(TOKEN), **options)  # type: ignore[arg-type]
        app = build_webhook_app(publisher, ConnectorMetrics(registry), opts)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield Hook(client, settings, registry)


@pytest.fixture
async def hook(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Hook]:
    async for h in _hook(kafka_bootstrap, topic_prefix, max_body_bytes=20_000):
        yield h


pytestmark = pytest.mark.integration


async def test_missing_or_wrong_token_is_401(hook: Hook) -> None:
    for headers in ({"Content-Type": "application/json"}, {**JSON, "Authorization": "Bearer no"}):
        resp = await hook.client.post("/ingest", data=orjson.dumps(_post(1)), headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        hook.registry.get_sample_value("crisiswatch_webhook_requests_total", {"status": "401"}) == 2
    )


async def test_body_over_the_limit_is_413(hook: Hook) -> None:
    big = orjson.dumps([_post(i, text="x" * 1000) for i in range(30)])
    resp = await hook.client.post("/ingest", data=big, headers=JSON)
    assert resp.status == 413


async def test_not_json_is_400_and_other_media_types_415(hook: Hook) -> None:
    resp = await hook.client.post("/ingest", data=b"{nope", headers=JSON)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_json"
    resp = await hook.client.post(
        "/ingest", data=b"id=1", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert resp.status == 415


async def test_all_valid_is_202_after_kafka_ack(hook: Hook) -> None:
    resp = await hook.client.post("/ingest", data=orjson.dumps([_post(1), _post(2)]), headers=JSON)
    assert resp.status == 202
    assert await resp.json() == {"accepted": 2}
    records = await consume_all(hook.settings.bootstrap, hook.settings.posts_topic, expect=2)
    assert sorted(r.key for r in records) == [b"hook:1", b"hook:2"]
    post = decode_post(records[0].value)
    assert post.ingested_at_ms is not None  # stamped on receipt
    single = await hook.client.post("/ingest", data=orjson.dumps(_post(3)), headers=JSON)
    assert single.status == 202


async def test_some_rejected_is_207_with_per_item_results_and_dlq(hook: Hook) -> None:
    items = [_post(1), {"id": "hook:2", "source": "webhook", "text": "no time"}, _post(3), 42]
    resp = await hook.client.post("/ingest", data=orjson.dumps(items), headers=JSON)
    assert resp.status == 207
    results = await resp.json()
    assert results[0] == {"index": 0, "status": "accepted", "id": "hook:1"}
    assert results[1]["status"] == "rejected"
    assert results[1]["reason"] == "missing_field:created_at"
    assert "created_at" in results[1]["detail"]
    assert results[2] == {"index": 2, "status": "accepted", "id": "hook:3"}
    assert (results[3]["index"], results[3]["reason"]) == (3, "not_an_object")
    posts = await consume_all(hook.settings.bootstrap, hook.settings.posts_topic, expect=2)
    assert sorted(r.key for r in posts) == [b"hook:1", b"hook:3"]
    dlq = await consume_all(hook.settings.bootstrap, hook.settings.dlq_topic, expect=2)
    letters = [orjson.loads(r.value) for r in dlq]
    assert sorted(d["reason"] for d in letters) == ["missing_field:created_at", "not_an_object"]
    assert {d["stage"] for d in letters} == {"connector:webhook"}


async def test_ndjson_lines_are_items(hook: Hook) -> None:
    body = orjson.dumps(_post(1)) + b"\n" + b"{broken\n" + orjson.dumps(_post(2)) + b"\n"
    resp = await hook.client.post(
        "/ingest", data=body, headers={**AUTH, "Content-Type": "application/x-ndjson"}
    )
    assert resp.status == 207
    results = await resp.json()
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["reason"] == "invalid_json"


async def test_rate_limit_is_429_with_retry_after(kafka_bootstrap: str, topic_prefix: str) -> None:
    async for hook in _hook(kafka_bootstrap, topic_prefix, rate_per_s=0.5, burst=2):
        statuses = []
        for _ in range(3):
            resp = await hook.client.post("/ingest", data=orjson.dumps(_post(1)), headers=JSON)
            statuses.append(resp.status)
        assert statuses == [202, 202, 429]
        assert int(resp.headers["Retry-After"]) >= 1
        health = await hook.client.get("/healthz")
        assert health.status == 200


def test_token_bucket_refills_with_time() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2.0, burst=1, monotonic_s=lambda: now[0])
    assert bucket.take("a") == 0.0
    assert bucket.take("a") == pytest.approx(0.5)
    assert bucket.take("b") == 0.0  # per client
    now[0] = 0.5
    assert bucket.take("a") == 0.0


async def test_secrets_never_reach_the_logs(
    kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {
        "CRISISWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CRISISWATCH_TOPIC_PREFIX": topic_prefix,
        "CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CRISISWATCH_KAFKA_SASL_USERNAME": "svc",
        "CRISISWATCH_KAFKA_SASL_PASSWORD": "kafka-pass-do-not-log",
    }
    sasl = KafkaSettings.from_env(env)
    logging.getLogger("test").info("settings: %s / %r", sasl, sasl)
    assert sasl.client_kwargs()["sasl_plain_password"] == "kafka-pass-do-not-log"
    async for hook in _hook(kafka_bootstrap, topic_prefix):
        resp = await hook.client.post("/ingest", data=orjson.dumps(_post(1)), headers=JSON)
        assert resp.status == 202
        bad = await hook.client.post(
            "/ingest", data=b"{}", headers={**JSON, "Authorization": f"Bearer {TOKEN}x"}
        )
        assert bad.status == 401
    assert "***" in caplog.text
    assert "kafka-pass-do-not-log" not in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_load_from_a_second_process(kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = await kafka_settings(kafka_bootstrap, topic_prefix)
    registry = CollectorRegistry()
    port = free_port()
    async with Publisher(settings, max_in_flight=2000) as publisher:
        opts = WebhookOptions(token=Secret(TOKEN), rate_per_s=1000, burst=1000)
        server = await start_webhook(
            build_webhook_app(publisher, ConnectorMetrics(registry), opts), "127.0.0.1", port
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.connectors.webhook_load",
                f"http://127.0.0.1:{port}/ingest", "--token-env", "LOAD_TOKEN",
                "--posts", "2000", "--batch", "100", "--concurrency", "4", "--run", topic_prefix,
                env=dict(os.environ, LOAD_TOKEN=TOKEN),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        finally:
            await server.cleanup()
    assert proc.returncode == 0, err.decode()
    result = orjson.loads(out.decode().strip().splitlines()[-1])
    print(f"\nwebhook load: {result}")
    assert result["accepted"] == 2000
    assert result["statuses"] == {"202": 20}
    assert result["posts_per_s"] > 0
    produced = registry.get_sample_value(
        "crisiswatch_connector_posts_produced_total", {"connector": "webhook", "kind": "webhook"}
    )
    assert produced == 2000
    records = await consume_all(kafka_bootstrap, settings.posts_topic, expect=2000)
    assert len({r.key for r in records}) == 2000
