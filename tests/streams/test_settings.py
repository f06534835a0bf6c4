"""Settings from CRISISWATCH_* variables: defaults, validation, secrets that never print."""

from __future__ import annotations

import pytest

from streams.settings import Secret, Settings, SettingsError, parse_duration_ms


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.topic("posts") == "crisiswatch.posts"
    assert (s.partitions, s.lateness_ms, s.step_ms, s.web_port) == (4, 60_000, 10_000, 6066)
    assert s.app_id == "crisiswatch-worker"
    assert s.security.protocol == "PLAINTEXT"
    assert s.state_flush_s == 5.0
    assert (s.fetch_min_bytes, s.fetch_max_wait_ms) == (1, 500)
    assert s.full_gc_s == 3600.0
    assert s.event_loop == "uvloop"


def test_values_are_read_and_typed() -> None:
    s = Settings.from_env(
        {
            "CRISISWATCH_TOPIC_PREFIX": "acme-prod",
            "CRISISWATCH_PARTITIONS": "12",
            "CRISISWATCH_LATENESS": "90s",
            "CRISISWATCH_STEP": "5s",
            "CRISISWATCH_WEB_PORT": "7001",
            "CRISISWATCH_STORE": "memory://",
            "CRISISWATCH_STATE_FLUSH_S": "0.25",
            "CRISISWATCH_FETCH_MIN_BYTES": "65536",
            "CRISISWATCH_FETCH_MAX_WAIT": "10ms",
            "CRISISWATCH_FULL_GC_S": "600",
            "CRISISWATCH_EVENT_LOOP": "AsyncIO",
        }
    )
    assert s.topic("alerts") == "acme-prod.alerts"
    assert s.app_id == "acme-prod-worker"
    assert (s.partitions, s.lateness_ms, s.step_ms, s.web_port) == (12, 90_000, 5_000, 7001)
    assert s.store == "memory://"
    assert s.state_flush_s == 0.25
    assert (s.fetch_min_bytes, s.fetch_max_wait_ms) == (65_536, 10)
    assert s.full_gc_s == 600.0
    assert s.event_loop == "asyncio"
    assert Settings.from_env({"CRISISWATCH_FULL_GC_S": "0"}).full_gc_s == 0  # never


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "CRISISWATCH_PARTITIONS",
            "zero",
            "CRISISWATCH_PARTITIONS: expected an integer from 1 to 1024; got 'zero'",
        ),
        (
            "CRISISWATCH_WEB_PORT",
            "70000",
            "CRISISWATCH_WEB_PORT: expected an integer from 1 to 65535; got '70000'",
        ),
        ("CRISISWATCH_LATENESS", "soon", "CRISISWATCH_LATENESS: expected a duration"),
        (
            "CRISISWATCH_STORE",
            "redis://",
            "CRISISWATCH_STORE: expected rocksdb:// or memory://; got 'redis://'",
        ),
        (
            "CRISISWATCH_KAFKA_SECURITY_PROTOCOL",
            "TLS",
            "expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; got 'TLS'",
        ),
        ("CRISISWATCH_TOPIC_PREFIX", "a b", "CRISISWATCH_TOPIC_PREFIX: expected letters"),
        (
            "CRISISWATCH_STATE_FLUSH_S",
            "61",
            "CRISISWATCH_STATE_FLUSH_S: expected a number from 0 to 60; got '61'",
        ),
        (
            "CRISISWATCH_STATE_FLUSH_S",
            "often",
            "CRISISWATCH_STATE_FLUSH_S: expected a number from 0 to 60; got 'often'",
        ),
        (
            "CRISISWATCH_FETCH_MIN_BYTES",
            "0",
            "CRISISWATCH_FETCH_MIN_BYTES: expected an integer from 1 to 16777216; got '0'",
        ),
        (
            "CRISISWATCH_FETCH_MAX_WAIT",
            "1s",
            "CRISISWATCH_FETCH_MAX_WAIT: expected from 1ms to 500ms; got 1000 ms",
        ),
        ("CRISISWATCH_FETCH_MAX_WAIT", "0ms", "CRISISWATCH_FETCH_MAX_WAIT: expected from 1ms"),
        ("CRISISWATCH_FETCH_MAX_WAIT", "10", "CRISISWATCH_FETCH_MAX_WAIT: expected a duration"),
        (
            "CRISISWATCH_FULL_GC_S",
            "10",
            "CRISISWATCH_FULL_GC_S: expected 0 (never) or a number from 60 to 86400; got '10'",
        ),
        (
            "CRISISWATCH_FULL_GC_S",
            "hourly",
            "CRISISWATCH_FULL_GC_S: expected 0 (never) or a number from 60 to 86400; got 'hourly'",
        ),
        (
            "CRISISWATCH_EVENT_LOOP",
            "tokio",
            "CRISISWATCH_EVENT_LOOP: expected uvloop or asyncio; got 'tokio'",
        ),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert expected in str(info.value)


def test_sasl_needs_credentials_and_the_password_never_prints() -> None:
    with pytest.raises(SettingsError, match="CRISISWATCH_KAFKA_SASL_USERNAME"):
        Settings.from_env({"CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    s = Settings.from_env(
        {
            "CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CRISISWATCH_KAFKA_SASL_USERNAME": "worker",
            "CRISISWATCH_KAFKA_SASL_PASSWORD": "hunter2-very-secret",
        }
    )
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert "hunter2" not in f"{s.security.sasl_password}"
    kwargs = s.security.aiokafka_kwargs()
    assert kwargs["sasl_plain_password"] == "hunter2-very-secret"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


def test_secret_and_durations() -> None:
    secret = Secret("abc")
    assert (str(secret), repr(secret), secret.reveal()) == ("***", "Secret('***')", "abc")
    assert [parse_duration_ms(t) for t in ("250ms", "30s", "10m", "24h", "7d")] == [
        250,
        30_000,
        600_000,
        86_400_000,
        604_800_000,
    ]
