"""``crisiswatch connect``: run connectors.

    crisiswatch connect replay POSTS [--rate N | --speed X] [--format csv] [--csv-map ...]
    crisiswatch connect webhook [--host H] [--port 8088] [--token-env CRISISWATCH_WEBHOOK_TOKEN]
    crisiswatch connect --config connectors.yaml [--only NAME ...]
    crisiswatch connect KIND --name NAME [--option key=value ...]     (mastodon, bluesky, ...)

Every form takes ``--metrics-port`` (default 9464; 0 = off) and ``--metrics-host``
(default 0.0.0.0).  Kafka comes
from ``CRISISWATCH_KAFKA_*``.  ``replay`` exits when every post is
acknowledged and prints ``produced N posts (M rejected to the dead-letter
topic)`` as its last stdout line.  Exit codes: 0 ok, 1 a source failed, 2 bad
arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import yaml
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from connectors.config import KINDS, ConnectorsConfig, SourceConfig, check_options, load_config
from connectors.kafkalog import LastKafkaError
from connectors.settings import ConfigError, KafkaSettings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind", nargs="?", choices=KINDS, help="connector kind (omit with --config)"
    )
    parser.add_argument(
        "posts", nargs="?", help="replay: the Posts file (JSON Lines or CSV; - = stdin)"
    )
    parser.add_argument("--config", help="run every enabled source of this connectors.yaml")
    parser.add_argument(
        "--only", action="append", default=[], help="with --config: only this source (repeatable)"
    )
    parser.add_argument("--name", help="connector name (checkpoint key; default: the kind)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="source option (repeatable; VALUE is YAML)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=9464, help="Prometheus /metrics port (0 = off)"
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", help="/metrics listen address (default 0.0.0.0)"
    )
    replay = parser.add_argument_group("replay")
    replay.add_argument(
        "--rate", type=float, help="posts per second (default: as fast as possible)"
    )
    replay.add_argument("--speed", type=float, help="x real time, keeping event-time gaps")
    replay.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto")
    replay.add_argument(
        "--csv-map", help="CSV column mapping, e.g. id=tweet_id,text=body,created_at=ts"
    )
    replay.add_argument(
        "--resume",
        action="store_true",
        help="checkpoint the line number in Kafka and resume from it",
    )
    hook = parser.add_argument_group("webhook")
    hook.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    hook.add_argument("--port", type=int, default=8088, help="listen port (default 8088)")
    hook.add_argument(
        "--token-env", default="CRISISWATCH_WEBHOOK_TOKEN", help="env var holding the Bearer token"
    )
    hook.add_argument(
        "--no-auth",
        action="store_true",
        help="accept requests without a token (local testing only)",
    )
    hook.add_argument("--max-body-bytes", type=int, default=5_000_000)
    hook.add_argument("--rate-limit", type=float, default=50.0, help="requests/s per client")
    hook.add_argument("--burst", type=int, default=100, help="requests a client may send at once")


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            msg = f"--option {pair!r} must be KEY=VALUE"
            raise ConfigError(msg)
        try:
            options[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def config_from_args(args: argparse.Namespace) -> ConnectorsConfig:
    """The sources to run, from --config or from the command line."""
    if args.config:
        if args.kind:
            msg = "give either --config FILE or a connector kind, not both"
            raise ConfigError(msg)
        config = load_config(args.config)
        known = {s.name for s in config.sources}
        missing = sorted(set(args.only) - known)
        if missing:
            msg = f"--only {missing}: no such source in {args.config} (it has {sorted(known)})"
            raise ConfigError(msg)
        chosen = [s for s in config.sources if (s.name in args.only if args.only else s.enabled)]
        return ConnectorsConfig(tuple(chosen))
    if not args.kind:
        msg = "name a connector kind (replay, webhook, mastodon, ...) or give --config FILE"
        raise ConfigError(msg)
    options = _parse_options(args.option)
    if args.kind == "replay":
        if not args.posts:
            msg = "connect replay needs the Posts file (or - for stdin)"
            raise ConfigError(msg)
        options.setdefault("path", args.posts)
        for key, value in (("rate", args.rate), ("speed", args.speed), ("csv_map", args.csv_map)):
            if value is not None:
                options[key] = value
        if args.format != "auto":
            options["format"] = args.format
    elif args.posts:
        msg = f"unexpected argument {args.posts!r}: only replay takes a file"
        raise ConfigError(msg)
    if args.kind == "webhook":
        options.setdefault("host", args.host)
        options.setdefault("port", args.port)
        options.setdefault("token_env", None if args.no_auth else args.token_env)
        options.setdefault("max_body_bytes", args.max_body_bytes)
        options.setdefault("rate_per_s", args.rate_limit)
        options.setdefault("burst", args.burst)
    name = args.name or args.kind
    check_options(f"connector {name!r}", options)
    return ConnectorsConfig((SourceConfig(name, args.kind, options),))


def run(args: argparse.Namespace) -> int:
    env: Mapping[str, str] = os.environ
    try:
        settings = KafkaSettings.from_env(env)
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"crisiswatch connect: {exc}", file=sys.stderr)
        return 2
    from connectors.app import ConnectApp

    app = ConnectApp(
        settings,
        config,
        env,
        registry=CollectorRegistry(),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        resume=bool(args.resume) or bool(args.config),
    )
    last_error = LastKafkaError()
    logging.getLogger("aiokafka").addHandler(last_error)
    try:
        return asyncio.run(app.main())
    except ConfigError as exc:
        print(f"crisiswatch connect: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(
            f"crisiswatch connect: cannot reach Kafka at {settings.bootstrap}: "
            f"{last_error.message or exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        logging.getLogger("aiokafka").removeHandler(last_error)
