"""``crisiswatch worker``: run the streaming worker with the ``CRISISWATCH_*`` settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from connectors.kafkalog import LastKafkaError
from rules.errors import RuleError
from streams.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Configured by environment: CRISISWATCH_KAFKA_BOOTSTRAP, CRISISWATCH_RULES_DIR, "
        "CRISISWATCH_WEB_PORT, ... (see .env.example)."
    )


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The worker's event loop (``CRISISWATCH_EVENT_LOOP``).  Not the policy: faust's
    consumer thread keeps a standard loop of its own, as in the runs that measured uvloop's
    saving (two full runs with uvloop there too had ageing-row stalls; a later pair, with
    and without it, had none: BENCHMARKS.md, session 24)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"crisiswatch worker: {exc}", file=sys.stderr)
        return 2
    from streams.app import build_app
    from streams.topics import ensure_topics

    try:
        worker = build_app(settings)
    except RuleError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"crisiswatch worker: the rules in {settings.rules_dir} are invalid", file=sys.stderr)
        return 2
    last_error = LastKafkaError()
    logging.getLogger("aiokafka").addHandler(last_error)
    try:
        asyncio.run(ensure_topics(settings))
    except Exception as exc:
        print(
            f"crisiswatch worker: cannot reach Kafka at {settings.kafka_bootstrap}: "
            f"{last_error.message or exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        logging.getLogger("aiokafka").removeHandler(last_error)
    import faust

    from streams.logqueue import log_in_background

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            # faust has just set up the handlers: their writes go off the event loop
            log_in_background(logger, on_drop=worker.metrics.log_lines_dropped.inc)

    asyncio.set_event_loop(new_event_loop(settings.event_loop))
    w = Worker(
        worker.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
    )
    log.info(
        "worker %s: kafka %s, rules %s (%d brands), web port %d, event loop %s",
        settings.app_id,
        settings.kafka_bootstrap,
        settings.rules_dir,
        len(worker.rules.current.ruleset.brands),
        settings.web_port,
        type(asyncio.get_event_loop()).__module__.split(".")[0],  # the loop it runs on
    )
    trace_path = os.environ.get("CRISISWATCH_MEMTRACE")
    if trace_path:
        from streams.memtrace import start, worker_probe

        interval_s = float(os.environ.get("CRISISWATCH_MEMTRACE_S", "30"))
        start(
            trace_path,
            interval_s,
            probe=lambda: worker_probe(worker),
            trace_python=os.environ.get("CRISISWATCH_MEMTRACE_PY", "1") != "0",
        )
    w.execute_from_commandline()
    return 0
