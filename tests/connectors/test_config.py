"""connectors.yaml, Kafka settings from the environment, and the connect CLI's argument handling."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from connectors.app import webhook_options
from connectors.cli import add_arguments, config_from_args
from connectors.config import build_source, load_config, parse_config
from connectors.replay import ReplaySource
from connectors.settings import ConfigError, KafkaSettings, Secret

REPO = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_example_file_is_valid_and_builds_its_platform_sources() -> None:
    config = load_config(REPO / "connectors.yaml")
    kinds = {s.kind for s in config.sources}
    assert kinds >= {"replay", "webhook", "mastodon", "bluesky", "reddit", "x", "rss"}
    env = {
        "MASTODON_TOKEN": "m",
        "REDDIT_CLIENT_ID": "id",
        "REDDIT_CLIENT_SECRET": "s",
        "X_BEARER_TOKEN": "x",
        "CRISISWATCH_WEBHOOK_TOKEN": "w",
    }
    for source in config.sources:
        if source.kind == "webhook":
            _host, port, opts = webhook_options(source, env)
            assert (port, opts.token) == (8088, Secret("w"))
        elif source.kind != "replay":
            built = build_source(source, env)
            assert built.name == source.name


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"sources": [{"name": "a", "kind": "mastadon"}]}, "unknown kind 'mastadon'"),
        ({"sources": [{"name": "a", "kind": "rss"}, {"name": "a", "kind": "rss"}]}, "used twice"),
        ({"sources": [{"name": "a", "kind": "rss", "typo": 1}]}, "unknown key(s) ['typo']"),
        ({"sources": [{"name": "m", "kind": "x", "options": {"token": "abc"}}]}, "token_env"),
        ({"sources": [{"name": "r", "kind": "x", "options": {"client_secret": "z"}}]}, "credent"),
        ({"srcs": []}, "expected a mapping with a 'sources' list"),
    ],
)  # fmt: skip
def test_bad_config_names_entry_and_problem(doc: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "c.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("c.yaml")


def test_yaml_errors_give_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  - name: a\n    kind: [rss\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+:\d+: invalid YAML"):
        load_config(path)


def test_kafka_settings_from_env_defaults_and_validation() -> None:
    default = KafkaSettings.from_env({})
    assert (default.bootstrap, default.posts_topic) == ("127.0.0.1:9092", "crisiswatch.posts")
    assert default.state_topic == "crisiswatch.connector-state"
    custom = KafkaSettings.from_env(
        {"CRISISWATCH_KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "CRISISWATCH_TOPIC_PREFIX": "cw"}
    )
    assert custom.dlq_topic == "cw.posts.dlq"
    with pytest.raises(ConfigError, match="CRISISWATCH_KAFKA_SECURITY_PROTOCOL"):
        KafkaSettings.from_env({"CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="needs CRISISWATCH_KAFKA_SASL_USERNAME"):
        KafkaSettings.from_env({"CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ConfigError, match="host:port"):
        KafkaSettings.from_env({"CRISISWATCH_KAFKA_BOOTSTRAP": "localhost"})


def test_connectors_read_the_kafka_security_settings_as_the_worker_does() -> None:
    """One .env serves the worker and the connectors: same defaults, same variables."""
    from streams.settings import Settings

    env = {
        "CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CRISISWATCH_KAFKA_SASL_MECHANISM": "",  # as docker-compose passes it when unset
        "CRISISWATCH_KAFKA_SASL_USERNAME": "crisiswatch",
        "CRISISWATCH_KAFKA_SASL_PASSWORD": "change-me",
    }
    worker = Settings.from_env(env).security.aiokafka_kwargs()
    connector = KafkaSettings.from_env(env).client_kwargs()
    keys = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
    assert {k: connector[k] for k in keys} == {k: worker[k] for k in keys}
    assert connector["sasl_mechanism"] == "SCRAM-SHA-512"
    mtls = KafkaSettings.from_env(
        {
            "CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
            "CRISISWATCH_KAFKA_SSL_CERTFILE": "/etc/crisiswatch/client.pem",
            "CRISISWATCH_KAFKA_SSL_KEYFILE": "/etc/crisiswatch/client.key",
        }
    )
    assert (mtls.ssl_certfile, mtls.ssl_keyfile) == (
        "/etc/crisiswatch/client.pem",
        "/etc/crisiswatch/client.key",
    )


def test_secret_never_prints() -> None:
    secret = Secret("hunter2")
    assert str(secret) == "***" and "hunter2" not in repr(secret) and f"{secret}" == "***"
    settings = KafkaSettings(sasl_password=secret)
    assert "hunter2" not in repr(settings)
    assert secret.reveal() == "hunter2"


def test_cli_replay_and_platform_arguments(tmp_path: Path) -> None:
    replay = config_from_args(_args("replay", "posts.csv", "--rate", "50", "--csv-map", "id=tid"))
    (source,) = replay.sources
    assert (source.name, source.kind) == ("replay", "replay")
    assert source.options == {"path": "posts.csv", "rate": 50.0, "csv_map": "id=tid"}
    built = build_source(source, {})
    assert isinstance(built, ReplaySource) and built.csv_map == {"id": "tid"}
    plat = config_from_args(
        _args("rss", "--name", "news", "--option", "url=https://x.example/f",
              "--option", "poll_interval_s=60")
    )  # fmt: skip
    assert plat.sources[0].options == {"url": "https://x.example/f", "poll_interval_s": 60}
    with pytest.raises(ConfigError, match="needs the Posts file"):
        config_from_args(_args("replay"))
    with pytest.raises(ConfigError, match="looks like a credential"):
        config_from_args(_args("mastodon", "--option", "token=abc"))


def test_cli_webhook_token_comes_from_the_named_env_var() -> None:
    (source,) = config_from_args(_args("webhook", "--port", "9000", "--token-env", "HOOK")).sources
    host, port, opts = webhook_options(source, {"HOOK": "tok"})
    assert (host, port, opts.token) == ("127.0.0.1", 9000, Secret("tok"))
    with pytest.raises(ConfigError, match="HOOK is not set"):
        webhook_options(source, {})
