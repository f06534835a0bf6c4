"""Create the connectors' topics when they are missing (broker auto-create is off)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from connectors.settings import KafkaSettings
from rules.errors import CrisiswatchError

log = logging.getLogger(__name__)


class TopicCreationError(CrisiswatchError):
    """The broker refused to create a topic."""


async def ensure_topics(
    settings: KafkaSettings,
    names: Iterable[str],
    *,
    partitions: int | None = None,
    config: Mapping[str, str] | None = None,
    replication_factor: int | None = None,
) -> list[str]:
    """Create each topic in ``names`` that does not exist; returns the ones created.

    Partitions and replication factor default to the settings'.
    """
    admin = AIOKafkaAdminClient(**settings.client_kwargs(), client_id="crisiswatch-connector")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                name,
                num_partitions=partitions or settings.topic_partitions,
                replication_factor=replication_factor or settings.replication_factor,
                topic_configs=dict(config or {}),
            )
            for name in missing
        ]
        response = await admin.create_topics(new)
        created = []
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            error = for_code(code)
            if code == 0:
                created.append(name)
            elif error is TopicAlreadyExistsError:
                log.debug("topic %s was created concurrently", name)
            else:
                detail = entry[2] if len(entry) > 2 and entry[2] else error.__name__
                msg = f"could not create topic {name} on {settings.bootstrap}: {detail}"
                raise TopicCreationError(msg)
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()
