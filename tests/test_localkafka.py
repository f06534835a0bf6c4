"""The local broker manager: real start/stop, idempotence, one-line failures."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from streams.localkafka import LocalKafka, LocalKafkaError, ensure_jars, free_port
from tests.kafkautil import consume_all, create_topics, produce

pytestmark = pytest.mark.integration


async def test_shared_broker_round_trip(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.roundtrip"
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    sent = await produce(kafka_bootstrap, topic, [(b"k%d" % i, b"v%d" % i) for i in range(10)])
    got = await consume_all(kafka_bootstrap, topic, expect=10)
    assert sent == 10
    assert sorted(r.value for r in got) == sorted(b"v%d" % i for i in range(10))


def test_up_is_idempotent_and_down_stops(tmp_path) -> None:
    broker = LocalKafka(tmp_path / "k", port=free_port())
    first = broker.up()
    try:
        assert broker.up() == first  # second call reuses the running broker
        assert broker.running()
    finally:
        assert broker.down() is True
    assert not broker.running()
    assert broker.down() is False


def test_port_in_use_is_a_one_line_error(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LocalKafkaError, match=f"port {port} is in use"):
            LocalKafka(tmp_path / "k", port=port).up()


def test_cli_reports_missing_java_and_maven(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CRISISWATCH_KAFKA_LIB", str(tmp_path / "nolib"))
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn on PATH
    with pytest.raises(LocalKafkaError, match="Java is not installed"):
        ensure_jars()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "kafka",
            "up",
            "--dir",
            str(tmp_path / "k"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path), "CRISISWATCH_KAFKA_LIB": str(tmp_path / "nolib")},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "crisiswatch kafka up: Java is not installed: the local Kafka broker needs a "
        "JRE 17+ (apt-get install openjdk-17-jre-headless)"
    ]


def test_broker_that_fails_to_start_says_why(tmp_path) -> None:
    broker = LocalKafka(
        tmp_path / "k", port=free_port(), extra_properties={"log.segment.bytes": "not-a-number"}
    )
    with pytest.raises(LocalKafkaError) as info:
        broker.up(timeout_s=60)
    assert "\n" not in str(info.value)
    assert "log.segment.bytes" in str(info.value) or "exited" in str(info.value)
    assert not broker.running()


async def test_kafka_jvm_options_start_a_broker_that_serves_clients(tmp_path) -> None:
    """``kafka up --jvm kafka`` (what the benchmark runs): the broker's command line has
    Kafka's own start-script options instead of the quick ones, and it serves clients."""
    directory, port = tmp_path / "k", free_port()
    cli = [sys.executable, "-m", "streams.cli", "kafka"]
    up = subprocess.run(
        [*cli, "up", "--dir", str(directory), "--port", str(port), "--jvm", "kafka"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    broker = LocalKafka(directory, port=port)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == broker.bootstrap
        pid = int((directory / "kafka.pid").read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode().split("\0")
        assert "-XX:+UseG1GC" in args and "-XX:MaxGCPauseMillis=20" in args
        assert "-XX:TieredStopAtLevel=1" not in args and "-XX:+UseSerialGC" not in args
        assert "-Xmx512m" in args
        await create_topics(broker.bootstrap, ["jvm.check"], partitions=1)
        assert await produce(broker.bootstrap, "jvm.check", [(b"k", b"v")]) == 1
        got = await consume_all(broker.bootstrap, "jvm.check", expect=1)
        assert [r.value for r in got] == [b"v"]
    finally:
        broker.down()


def test_unknown_jvm_options_are_refused(tmp_path) -> None:
    with pytest.raises(LocalKafkaError, match="unknown JVM options 'fast': one of quick, kafka"):
        LocalKafka(tmp_path / "k", jvm="fast")
