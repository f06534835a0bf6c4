"""Cursors in the compacted connector-state topic, through the real broker."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from connectors.checkpoint import KafkaCheckpoints, MemoryCheckpoints
from connectors.publisher import Publisher
from tests.connectors.framework_helpers import kafka_settings


async def test_memory_checkpoints_keep_the_latest() -> None:
    store = MemoryCheckpoints({"a": {"line": 1}})
    await store.save("a", {"line": 5})
    assert store.get("a") == {"line": 5}
    assert store.get("b") is None


@pytest.mark.integration
async def test_creates_compacted_topic_and_loads_latest_cursor_per_connector(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = await kafka_settings(kafka_bootstrap, topic_prefix)
    async with Publisher(settings) as publisher:
        store = KafkaCheckpoints(settings, publisher)
        await store.start()
        assert store.get("mastodon-acme") is None
        await store.save("mastodon-acme", {"since_id": "100"})
        await store.save("rss-news", {"etag": "x", "seen": ["a", "b"]})
        await store.save("mastodon-acme", {"since_id": "205"})
        await store.save("reset-me", {"line": 3})
        await store.save("reset-me", None)

        reloaded = KafkaCheckpoints(settings, publisher)  # what a restarted process sees
        await reloaded.start()
    assert reloaded.get("mastodon-acme") == {"since_id": "205"}
    assert reloaded.get("rss-news") == {"etag": "x", "seen": ["a", "b"]}
    assert reloaded.get("reset-me") is None
    assert reloaded.get("never-saved") is None

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.state_topic])
        assert len(described[0]["partitions"]) == 1
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.state_topic)]
        )
        entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()
