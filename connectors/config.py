"""``connectors.yaml``: which sources to run, and how to build each one.

```yaml
sources:
  - name: mastodon-acme        # unique; the checkpoint key and metrics label
    kind: mastodon             # replay | webhook | mastodon | bluesky | reddit | x | rss
    enabled: true              # optional
    options: {...}             # passed to the kind's build(name, options, env)
```

Credentials never live in this file: options name environment variables
(``token_env: MASTODON_TOKEN``) and the source reads them from ``env`` at
build time, wrapped in ``Secret``.  An option that looks like a literal
credential (``token``, ``password``, ``client_secret`` ...) is an error.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from connectors.base import Source
from connectors.settings import ConfigError

PLATFORM_KINDS = ("mastodon", "bluesky", "reddit", "x", "rss")
"""Kinds built by ``connectors.<kind>.build(name, options, env)``."""
KINDS = ("replay", "webhook", *PLATFORM_KINDS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_SECRET_KEY = re.compile(r"(^|_)(token|password|passwd|secret|api_key|apikey|bearer)$")
_SOURCE_KEYS = ("name", "kind", "enabled", "options")


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One entry of ``sources``."""

    name: str
    """Unique connector name."""
    kind: str
    """One of KINDS."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Kind-specific options (no credentials: only names of env variables)."""
    enabled: bool = True
    """False: listed but not run."""


@dataclass(frozen=True, slots=True)
class ConnectorsConfig:
    """The whole file."""

    sources: tuple[SourceConfig, ...]
    """Every source, in file order."""


def check_options(where: str, options: Mapping[str, Any]) -> None:
    """Reject literal credentials: ``token: abc`` must be ``token_env: SOME_VAR``."""
    for key, value in options.items():
        if _SECRET_KEY.search(str(key).lower()) and value not in (None, ""):
            msg = (
                f"{where}: option {key!r} looks like a credential; credentials are never read "
                f"from the file: put it in an environment variable and name it with "
                f"'{key}_env: VARIABLE'"
            )
            raise ConfigError(msg)
        if isinstance(value, Mapping):
            check_options(f"{where}.{key}", value)


def parse_config(data: Any, path: str = "connectors.yaml") -> ConnectorsConfig:
    """Validate a decoded YAML document; raises ConfigError naming the entry and the problem."""
    if not isinstance(data, Mapping) or "sources" not in data:
        msg = f"{path}: expected a mapping with a 'sources' list; got {type(data).__name__}"
        raise ConfigError(msg)
    unknown = sorted(set(data) - {"sources"})
    if unknown:
        msg = f"{path}: unknown top-level key(s) {unknown} (expected only 'sources')"
        raise ConfigError(msg)
    raw_sources = data["sources"]
    if not isinstance(raw_sources, list):
        msg = f"{path}: 'sources' must be a list; got {type(raw_sources).__name__}"
        raise ConfigError(msg)
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_sources):
        where = f"{path}: sources[{i}]"
        if not isinstance(entry, Mapping):
            msg = (
                f"{where}: expected a mapping with name, kind, options; got {type(entry).__name__}"
            )
            raise ConfigError(msg)
        extra = sorted(set(entry) - set(_SOURCE_KEYS))
        if extra:
            msg = f"{where}: unknown key(s) {extra} (expected {', '.join(_SOURCE_KEYS)})"
            raise ConfigError(msg)
        name, kind = entry.get("name"), entry.get("kind")
        if not isinstance(name, str) or not _NAME.match(name):
            msg = f"{where}: 'name' must match [A-Za-z0-9][A-Za-z0-9_.:-]*; got {name!r}"
            raise ConfigError(msg)
        where = f"{path}: sources[{i}] ({name})"
        if name in seen:
            msg = f"{where}: name {name!r} is used twice (names key the checkpoints)"
            raise ConfigError(msg)
        seen.add(name)
        if kind not in KINDS:
            msg = f"{where}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})"
            raise ConfigError(msg)
        options = entry.get("options") or {}
        if not isinstance(options, Mapping):
            msg = f"{where}: 'options' must be a mapping; got {type(options).__name__}"
            raise ConfigError(msg)
        check_options(where, options)
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            msg = f"{where}: 'enabled' must be true or false; got {enabled!r}"
            raise ConfigError(msg)
        sources.append(SourceConfig(name, str(kind), dict(options), enabled))
    return ConnectorsConfig(tuple(sources))


def load_config(path: str | Path) -> ConnectorsConfig:
    """Read and validate ``connectors.yaml``; raises ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{path}: cannot read the connectors file: {exc.strerror}"
        raise ConfigError(msg) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        msg = f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}"
        raise ConfigError(msg) from None
    return parse_config(data, str(path))


def build_source(config: SourceConfig, env: Mapping[str, str]) -> Source:
    """Build a pull source (replay or a platform); webhooks are servers, built elsewhere."""
    if config.kind == "replay":
        from connectors.replay import ReplaySource, parse_csv_map

        opts = dict(config.options)
        path = opts.pop("path", None)
        if not isinstance(path, str) or not path:
            msg = f"connector {config.name!r}: replay needs option 'path' (a file, or - for stdin)"
            raise ConfigError(msg)
        csv_map = opts.pop("csv_map", None)
        if isinstance(csv_map, str):
            try:
                csv_map = parse_csv_map(csv_map)
            except ValueError as exc:
                msg = f"connector {config.name!r}: {exc}"
                raise ConfigError(msg) from None
        allowed = {"format", "rate", "speed", "batch_size", "default_source"}
        unknown = sorted(set(opts) - allowed)
        if unknown:
            expected = ", ".join(["path", "csv_map", *sorted(allowed)])
            msg = f"connector {config.name!r}: unknown replay options {unknown} (known: {expected})"
            raise ConfigError(msg)
        try:
            return ReplaySource(
                config.name,
                path,
                fmt=str(opts.get("format", "auto")),
                csv_map=csv_map,
                rate_per_s=_opt_float(opts.get("rate")),
                speed=_opt_float(opts.get("speed")),
                batch_size=int(opts.get("batch_size", 500)),
                default_source=str(opts.get("default_source", "replay")),
            )
        except (ValueError, TypeError) as exc:
            msg = f"connector {config.name!r}: {exc}"
            raise ConfigError(msg) from None
    if config.kind in PLATFORM_KINDS:
        module = importlib.import_module(f"connectors.{config.kind}")
        source: Source = module.build(config.name, config.options, env)
        return source
    msg = f"connector {config.name!r}: kind {config.kind!r} is not a pull source"
    raise ConfigError(msg)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
