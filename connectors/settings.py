"""Kafka settings for connectors, read once from ``CRISISWATCH_*`` environment variables.

Nothing here reads the environment at import time: call
``KafkaSettings.from_env(os.environ)`` at start-up and pass the frozen result
around.  Secrets are wrapped in :class:`Secret` so that logging or printing a
settings object never shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.errors import CrisiswatchError

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class ConfigError(CrisiswatchError):
    """Connector configuration is invalid; the message says where and what was expected."""


class Secret:
    """A credential: ``str()`` and ``repr()`` print ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The actual value, to hand to a client library (never to a logger)."""
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def secret_from_env(
    env: Mapping[str, str], var: str | None, *, where: str, required: bool = False
) -> Secret | None:
    """The credential in environment variable ``var`` (named by a config file), or None.

    Raises ConfigError when ``required`` and the variable is unset or empty.
    """
    if not var:
        if required:
            msg = (
                f"{where}: a credential is required; name its environment variable (e.g. token_env)"
            )
            raise ConfigError(msg)
        return None
    value = env.get(var, "")
    if not value:
        if required:
            msg = f"{where}: environment variable {var} is not set (it should hold the credential)"
            raise ConfigError(msg)
        return None
    return Secret(value)


def _positive_int(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{var} must be a positive integer; got {raw!r}"
        raise ConfigError(msg)
    return value


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where connectors produce to, and how they authenticate."""

    bootstrap: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list (``CRISISWATCH_KAFKA_BOOTSTRAP``)."""
    topic_prefix: str = "crisiswatch"
    """Prefix of every topic (``CRISISWATCH_TOPIC_PREFIX``)."""
    topic_partitions: int = 4
    """Partitions of topics connectors create (``CRISISWATCH_PARTITIONS``, as the worker)."""
    replication_factor: int = 1
    """Replication factor of topics connectors create (``CRISISWATCH_TOPIC_REPLICATION_FACTOR``)."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str | None = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: Secret | None = None
    """SASL password; never printed."""
    ssl_cafile: str | None = None
    """CA bundle to verify the broker's certificate."""
    ssl_certfile: str | None = None
    """Client certificate (mutual TLS), as the worker reads it."""
    ssl_keyfile: str | None = None
    """The client certificate's key."""

    @property
    def posts_topic(self) -> str:
        return f"{self.topic_prefix}.posts"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}.posts.dlq"

    @property
    def state_topic(self) -> str:
        return f"{self.topic_prefix}.connector-state"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSettings:
        """Read and validate the ``CRISISWATCH_KAFKA_*`` variables; raises ConfigError."""
        bootstrap = env.get("CRISISWATCH_KAFKA_BOOTSTRAP", "").strip() or "127.0.0.1:9092"
        prefix = env.get("CRISISWATCH_TOPIC_PREFIX", "").strip() or "crisiswatch"
        partitions = _positive_int(env, "CRISISWATCH_PARTITIONS", 4)
        replication = _positive_int(env, "CRISISWATCH_TOPIC_REPLICATION_FACTOR", 1)
        protocol = env.get("CRISISWATCH_KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
        if protocol not in _SECURITY_PROTOCOLS:
            msg = (
                f"CRISISWATCH_KAFKA_SECURITY_PROTOCOL must be one of "
                f"{', '.join(_SECURITY_PROTOCOLS)}; got {protocol!r}"
            )
            raise ConfigError(msg)
        mechanism = env.get("CRISISWATCH_KAFKA_SASL_MECHANISM", "").strip().upper() or None
        username = env.get("CRISISWATCH_KAFKA_SASL_USERNAME") or None
        password = secret_from_env(
            env, "CRISISWATCH_KAFKA_SASL_PASSWORD", where="CRISISWATCH_KAFKA_SASL_PASSWORD"
        )
        if protocol.startswith("SASL"):
            # the worker's default too (streams.settings): one .env serves both
            mechanism = mechanism or "SCRAM-SHA-512"
            if mechanism not in _SASL_MECHANISMS:
                msg = (
                    f"CRISISWATCH_KAFKA_SASL_MECHANISM must be one of "
                    f"{', '.join(_SASL_MECHANISMS)}; got {mechanism!r}"
                )
                raise ConfigError(msg)
            if not username or password is None:
                msg = (
                    f"security protocol {protocol} needs CRISISWATCH_KAFKA_SASL_USERNAME and "
                    "CRISISWATCH_KAFKA_SASL_PASSWORD"
                )
                raise ConfigError(msg)
        for part in bootstrap.split(","):
            if ":" not in part.strip():
                msg = f"CRISISWATCH_KAFKA_BOOTSTRAP entries must be host:port; got {part!r}"
                raise ConfigError(msg)
        return cls(
            bootstrap=bootstrap,
            topic_prefix=prefix,
            topic_partitions=partitions,
            replication_factor=replication,
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_cafile=env.get("CRISISWATCH_KAFKA_SSL_CAFILE") or None,
            ssl_certfile=env.get("CRISISWATCH_KAFKA_SSL_CERTFILE") or None,
            ssl_keyfile=env.get("CRISISWATCH_KAFKA_SSL_KEYFILE") or None,
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password.reveal() if self.sasl_password else None
        return kw
