"""The worker's topics: names, partition counts, configs, and creating them.

Every topic is declared here with an explicit partition count (posts, matches,
alerts and the table changelog share one count, as faust requires) and created
before faust starts, since the broker does not auto-create topics.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact", "retention.ms": "-1"}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def worker_topics(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    return [
        TopicSpec(settings.topic("posts"), n, {}),
        TopicSpec(settings.topic("posts.dlq"), n, {}),
        TopicSpec(settings.topic("matches"), n, {}),
        TopicSpec(settings.topic("alerts"), n, {}),
        TopicSpec(changelog_topic(settings), n, dict(COMPACTED)),
    ]


def changelog_topic(settings: Settings) -> str:
    return settings.topic("brand-state-changelog")


async def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create missing topics; returns the names created."""
    specs = worker_topics(settings) if specs is None else specs
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **settings.security.aiokafka_kwargs()
    )
    await admin.start()
    created = []
    try:
        existing = set(await admin.list_topics())
        for spec in specs:
            if spec.name in existing:
                continue
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            settings.replication,
                            topic_configs=spec.config,
                        )
                    ]
                )
                created.append(spec.name)
    finally:
        await admin.close()
    if created:
        log.info("created topics: %s", ", ".join(created))
    return created
