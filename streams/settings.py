"""Worker settings: ``CRISISWATCH_*`` environment variables, read once into a frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rules.errors import CrisiswatchError

_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
STATE_FLUSH_DEFAULT_S = 5.0
"""Default of CRISISWATCH_STATE_FLUSH_S: each write-back rewrites every changed brand's
head, so its cost is per write-back (at 1,000 busy brands, 2 s took 5-9% of a core more
than 5 s; BENCHMARKS.md, session 9); a restart replays at most this much more of ``matches``."""
STATE_FLUSH_MAX_S = 60.0
"""Upper bound of CRISISWATCH_STATE_FLUSH_S: unwritten states are replayed after a restart."""
FULL_GC_DEFAULT_S = 3600.0
"""Default of CRISISWATCH_FULL_GC_S: how often the worker collects everything, frozen objects
included (``streams.app.full_collection``), a pause of the event loop that grows with the
brands' windows: 308 ms at the worker's 600th second and 532 ms at its 1,200th at the
worker benchmark's load, each finding 6-15 unreachable objects.  Every 600 s (until session
23) one fell into the benchmark's measured phases: the event loop stood still for 332 and
598 ms, and the slowest boundary of an ageing row (534 ms) was one (BENCHMARKS.md, session
23).  Once an hour, the pause and the catch-up after it are a small fraction of a percent
of the time."""
FULL_GC_MIN_S = 60.0
"""Shortest CRISISWATCH_FULL_GC_S other than 0 (never): the pause is hundreds of ms."""
EVENT_LOOPS = ("uvloop", "asyncio")
"""Values of CRISISWATCH_EVENT_LOOP, the default first."""
FETCH_MIN_BYTES_DEFAULT = 1
"""Default of CRISISWATCH_FETCH_MIN_BYTES (Kafka's): the broker answers the match loop's
fetch of ``posts`` as soon as it has anything.  A higher minimum makes fewer, fuller fetches:
64 KiB (with a 10 ms wait) took a young worker from 58-67% to 56-61% of a core at 24,500
posts/s (within the noise) and from 25% to 19% at 2,000, but saved nothing on a worker ten
minutes old (its sweeps already hold the match loop back long enough to fill each fetch)
and added 5-8 ms between a post's send and its match (BENCHMARKS.md, session 21)."""
FETCH_MAX_WAIT_DEFAULT_MS = 500
"""Default of CRISISWATCH_FETCH_MAX_WAIT (Kafka's): the most a fetch of ``posts`` waits for
``CRISISWATCH_FETCH_MIN_BYTES`` (what a post may wait at a low rate; an idle worker asks
the broker this often)."""


class SettingsError(CrisiswatchError):
    """An environment variable has a bad value; the message names it."""


class Secret(str):
    """A string that never prints: ``str()``/``repr()`` give ``***``; ``.reveal()`` the value."""

    __slots__ = ()

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return "***"


def parse_duration_ms(text: str, name: str = "duration") -> int:
    """``'30s'``, ``'10m'``, ``'24h'``, ``'7d'``, ``'250ms'`` -> milliseconds."""
    value = text.strip().lower()
    for unit in ("ms", "s", "m", "h", "d"):
        number = value[: -len(unit)]
        if value.endswith(unit) and number.replace(".", "", 1).isdigit():
            return int(float(number) * _DURATION_UNITS_MS[unit])
    msg = f"{name}: expected a duration such as 500ms, 30s, 10m, 24h or 7d; got {text!r}"
    raise SettingsError(msg)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How to reach a secured broker."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    """CA bundle that signed the broker's certificate."""
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def ssl_context(self) -> Any:
        """The client SSL context for SSL / SASL_SSL; None otherwise."""
        if self.protocol not in ("SSL", "SASL_SSL"):
            return None
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )

    def aiokafka_kwargs(self) -> dict[str, object]:
        """Keyword arguments for aiokafka clients."""
        kwargs: dict[str, object] = {"security_protocol": self.protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.reveal() if self.sasl_password else None
            )
        return kwargs


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker is configured with."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "crisiswatch"
    partitions: int = 4
    replication: int = 1
    rules_dir: Path = Path("brands")
    rules_reload_s: float = 5.0
    """How often rule files are checked for changes (0: never)."""
    store: str = "rocksdb://"
    data_dir: Path = Path(".run/worker")
    web_host: str = "0.0.0.0"
    web_port: int = 6066
    lateness_ms: int = 60_000
    step_ms: int = 10_000
    idle_partition_s: float = 2.0
    """A posts partition with no new record for this long no longer holds the watermark back."""
    tick_interval_s: float = 0.5
    """How often watermark ticks go to the detector when nothing else flows."""
    state_flush_s: float = STATE_FLUSH_DEFAULT_S
    """How often changed brand states are written back to the table (and their events acked)."""
    full_gc_s: float = FULL_GC_DEFAULT_S
    """How often every object, frozen ones included, is collected (0: never)."""
    fetch_min_bytes: int = FETCH_MIN_BYTES_DEFAULT
    """The match loop's fetches of ``posts`` wait for this many bytes ..."""
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_DEFAULT_MS
    """... or this long, whichever comes first."""
    event_loop: str = EVENT_LOOPS[0]
    """The worker's event loop: ``uvloop`` or the standard library's ``asyncio``."""
    log_level: str = "INFO"
    app_id: str = "crisiswatch-worker"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def topic(self, name: str) -> str:
        """``posts`` -> ``crisiswatch.posts``."""
        return f"{self.topic_prefix}.{name}"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> Settings:
        """Read ``CRISISWATCH_*`` variables; raises SettingsError naming the bad one."""
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return env.get(f"CRISISWATCH_{name}", default).strip()

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = get(name, str(default))
            try:
                value = int(raw)
            except ValueError:
                value = low - 1
            if not low <= value <= high:
                msg = f"CRISISWATCH_{name}: expected an integer from {low} to {high}; got {raw!r}"
                raise SettingsError(msg)
            return value

        def number(name: str, default: float) -> float:
            raw = get(name, str(default))
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if value < 0:
                msg = f"CRISISWATCH_{name}: expected a number >= 0; got {raw!r}"
                raise SettingsError(msg)
            return value

        def bounded(name: str, default: float, high: float) -> float:
            raw = get(name, str(default))
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not 0 <= value <= high:
                msg = f"CRISISWATCH_{name}: expected a number from 0 to {high:g}; got {raw!r}"
                raise SettingsError(msg)
            return value

        protocol = get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in SECURITY_PROTOCOLS:
            msg = (
                f"CRISISWATCH_KAFKA_SECURITY_PROTOCOL: expected one of "
                f"{', '.join(SECURITY_PROTOCOLS)}; got {protocol!r}"
            )
            raise SettingsError(msg)
        # empty (docker-compose passes the variable through unset as "") is the default
        mechanism = get("KAFKA_SASL_MECHANISM", "").upper() or "SCRAM-SHA-512"
        if protocol.startswith("SASL") and mechanism not in SASL_MECHANISMS:
            msg = (
                f"CRISISWATCH_KAFKA_SASL_MECHANISM: expected one of "
                f"{', '.join(SASL_MECHANISMS)}; got {mechanism!r}"
            )
            raise SettingsError(msg)
        password = env.get("CRISISWATCH_KAFKA_SASL_PASSWORD")
        security = KafkaSecurity(
            protocol=protocol,
            sasl_mechanism=mechanism if protocol.startswith("SASL") else None,
            sasl_username=env.get("CRISISWATCH_KAFKA_SASL_USERNAME") or None,
            sasl_password=Secret(password) if password else None,
            ssl_cafile=env.get("CRISISWATCH_KAFKA_SSL_CAFILE") or None,
            ssl_certfile=env.get("CRISISWATCH_KAFKA_SSL_CERTFILE") or None,
            ssl_keyfile=env.get("CRISISWATCH_KAFKA_SSL_KEYFILE") or None,
        )
        if protocol.startswith("SASL") and not (security.sasl_username and password):
            msg = (
                "CRISISWATCH_KAFKA_SASL_USERNAME and CRISISWATCH_KAFKA_SASL_PASSWORD are required "
                f"with CRISISWATCH_KAFKA_SECURITY_PROTOCOL={protocol}"
            )
            raise SettingsError(msg)
        prefix = get("TOPIC_PREFIX", "crisiswatch")
        if not prefix or not all(c.isalnum() or c in "._-" for c in prefix):
            msg = (
                "CRISISWATCH_TOPIC_PREFIX: expected letters, digits, '.', '_' or '-'; "
                f"got {prefix!r}"
            )
            raise SettingsError(msg)
        store = get("STORE", "rocksdb://")
        if store not in ("rocksdb://", "memory://"):
            msg = f"CRISISWATCH_STORE: expected rocksdb:// or memory://; got {store!r}"
            raise SettingsError(msg)
        log_level = get("LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            msg = (
                f"CRISISWATCH_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR; got {log_level!r}"
            )
            raise SettingsError(msg)
        event_loop = get("EVENT_LOOP", EVENT_LOOPS[0]).lower()
        if event_loop not in EVENT_LOOPS:
            msg = f"CRISISWATCH_EVENT_LOOP: expected {' or '.join(EVENT_LOOPS)}; got {event_loop!r}"
            raise SettingsError(msg)
        fetch_wait = parse_duration_ms(
            get("FETCH_MAX_WAIT", f"{FETCH_MAX_WAIT_DEFAULT_MS}ms"), "CRISISWATCH_FETCH_MAX_WAIT"
        )
        if not 1 <= fetch_wait <= 500:
            msg = f"CRISISWATCH_FETCH_MAX_WAIT: expected from 1ms to 500ms; got {fetch_wait} ms"
            raise SettingsError(msg)
        raw_gc = get("FULL_GC_S", f"{FULL_GC_DEFAULT_S:g}")
        try:
            full_gc_s = float(raw_gc)
        except ValueError:
            full_gc_s = -1.0
        if not (full_gc_s == 0 or FULL_GC_MIN_S <= full_gc_s <= 86_400):
            msg = (
                f"CRISISWATCH_FULL_GC_S: expected 0 (never) or a number from {FULL_GC_MIN_S:g} "
                f"to 86400; got {raw_gc!r}"
            )
            raise SettingsError(msg)
        return Settings(
            kafka_bootstrap=get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            topic_prefix=prefix,
            partitions=integer("PARTITIONS", 4, 1, 1024),
            replication=integer("REPLICATION", 1, 1, 16),
            rules_dir=Path(get("RULES_DIR", "brands")),
            rules_reload_s=number("RULES_RELOAD_S", 5.0),
            store=store,
            data_dir=Path(get("DATA_DIR", ".run/worker")),
            web_host=get("WEB_HOST", "0.0.0.0"),
            web_port=integer("WEB_PORT", 6066, 1, 65535),
            lateness_ms=parse_duration_ms(get("LATENESS", "60s"), "CRISISWATCH_LATENESS"),
            step_ms=max(1000, parse_duration_ms(get("STEP", "10s"), "CRISISWATCH_STEP")),
            idle_partition_s=number("IDLE_PARTITION_S", 2.0),
            tick_interval_s=max(0.05, number("TICK_INTERVAL_S", 0.5)),
            state_flush_s=bounded("STATE_FLUSH_S", STATE_FLUSH_DEFAULT_S, STATE_FLUSH_MAX_S),
            full_gc_s=full_gc_s,
            fetch_min_bytes=integer("FETCH_MIN_BYTES", FETCH_MIN_BYTES_DEFAULT, 1, 16 << 20),
            fetch_max_wait_ms=fetch_wait,
            event_loop=event_loop,
            log_level=log_level,
            app_id=get("APP_ID", f"{prefix}-worker"),
            security=security,
        )
