"""Session-wide fixtures: one real Kafka broker for the whole test session.

The broker is the project's own (``streams.localkafka``), started on free
ports in a temporary directory, or an existing one when
``CRISISWATCH_KAFKA_BOOTSTRAP`` is set.  Each test gets a unique topic prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.localkafka import LocalKafka, LocalKafkaError, free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("CRISISWATCH_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port())
    try:
        bootstrap = broker.up()
    except LocalKafkaError as exc:
        pytest.fail(f"could not start the test Kafka broker: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        broker.down()


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix per test, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def repo_root() -> Path:
    return REPO
