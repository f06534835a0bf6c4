"""Assemble and run what ``crisiswatch connect`` asked for: sources, webhooks, metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry

from connectors.base import Source
from connectors.checkpoint import CheckpointStore, KafkaCheckpoints, MemoryCheckpoints
from connectors.config import ConnectorsConfig, SourceConfig, build_source
from connectors.metrics import ConnectorMetrics, serve_metrics
from connectors.publisher import Publisher
from connectors.runner import Runner, SourceOutcome
from connectors.settings import ConfigError, KafkaSettings, secret_from_env
from connectors.topics import ensure_topics
from connectors.webhook import WebhookOptions, build_webhook_app, start_webhook

log = logging.getLogger(__name__)

_WEBHOOK_KEYS = {"host", "port", "token_env", "max_body_bytes", "rate_per_s", "burst"}


def webhook_options(
    config: SourceConfig, env: Mapping[str, str]
) -> tuple[str, int, WebhookOptions]:
    """(host, port, options) of a webhook source; the token comes from its ``token_env``."""
    opts = dict(config.options)
    unknown = sorted(set(opts) - _WEBHOOK_KEYS)
    if unknown:
        known = ", ".join(sorted(_WEBHOOK_KEYS))
        msg = f"connector {config.name!r}: unknown webhook options {unknown} (known: {known})"
        raise ConfigError(msg)
    token_env = opts.get("token_env")
    token = secret_from_env(
        env,
        token_env,
        where=f"connector {config.name!r} (token_env)",
        required=token_env is not None,
    )
    if token is None:
        log.warning("webhook %s accepts requests WITHOUT authentication", config.name)
    try:
        options = WebhookOptions(
            name=config.name,
            token=token,
            max_body_bytes=int(opts.get("max_body_bytes", 5_000_000)),
            rate_per_s=float(opts.get("rate_per_s", 50.0)),
            burst=int(opts.get("burst", 100)),
        )
        return str(opts.get("host", "127.0.0.1")), int(opts.get("port", 8088)), options
    except (TypeError, ValueError) as exc:
        msg = f"connector {config.name!r}: bad webhook option: {exc}"
        raise ConfigError(msg) from None


class ConnectApp:
    """One ``crisiswatch connect`` process."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: ConnectorsConfig,
        env: Mapping[str, str],
        *,
        registry: CollectorRegistry,
        metrics_port: int = 0,
        metrics_host: str = "0.0.0.0",
        resume: bool = True,
        create_topics: bool = True,
    ) -> None:
        self.settings = settings
        self.config = config
        self.env = env
        self.metrics = ConnectorMetrics(registry)
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.resume = resume
        self.create_topics = create_topics
        self.outcomes: list[SourceOutcome] = []

    async def main(self) -> int:
        """Run until pull sources finish (and, with webhooks, until SIGTERM/SIGINT)."""
        hooks = [c for c in self.config.sources if c.kind == "webhook"]
        sources: list[Source] = [
            build_source(c, self.env) for c in self.config.sources if c.kind != "webhook"
        ]
        hook_opts = [webhook_options(c, self.env) for c in hooks]
        if not sources and not hooks:
            msg = "no enabled sources to run"
            raise ConfigError(msg)
        if self.metrics_port:
            serve_metrics(self.metrics_port, self.metrics.registry, self.metrics_host)
        if self.create_topics:
            await ensure_topics(self.settings, [self.settings.posts_topic, self.settings.dlq_topic])
        publisher = Publisher(self.settings)
        await publisher.start()
        servers: list[web.AppRunner] = []
        try:
            checkpoints: CheckpointStore = MemoryCheckpoints()
            if self.resume and sources:
                store = KafkaCheckpoints(self.settings, publisher)
                await store.start()
                checkpoints = store
            runner = Runner(sources, publisher, checkpoints, self.metrics)
            runner.install_signal_handlers()
            for host, port, options in hook_opts:
                app = build_webhook_app(publisher, self.metrics, options)
                servers.append(await start_webhook(app, host, port))
            if sources:
                self.outcomes = await runner.run()
            if hooks:
                await runner.wait_for_stop()
        finally:
            for server in servers:
                await server.cleanup()
            await publisher.stop()
        self._report()
        return 1 if any(o.state == "failed" for o in self.outcomes) else 0

    def _report(self) -> None:
        if not self.outcomes:
            return
        for o in self.outcomes:
            if o.state == "failed":
                log.error("connector %s failed: %s", o.name, o.error)
        produced = sum(o.produced for o in self.outcomes)
        rejected = sum(o.rejected for o in self.outcomes)
        print(
            f"produced {produced} posts ({rejected} rejected to the dead-letter topic)", flush=True
        )
