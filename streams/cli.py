"""The ``crisiswatch`` command line.

Each command lives in its own module, which exposes ``add_arguments(parser)``
and ``run(args) -> int``; modules are imported only when their command runs,
so ``crisiswatch backtest`` never imports faust.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command path -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("backtest",): ("rules.backtest_cli", "run the rules over a Posts file, no Kafka"),
    ("evaluate",): ("rules.evaluate_cli", "measure detection on generated crisis scenarios"),
    ("scenario",): ("rules.scenario_cli", "generate a synthetic crisis scenario (drills)"),
    ("rules", "check"): ("rules.check_cli", "validate every rule file in a directory"),
    ("kafka", "up"): ("streams.localkafka", "start the local single-node KRaft broker"),
    ("kafka", "down"): ("streams.localkafka", "stop the local broker"),
    ("worker",): ("streams.worker_cli", "run the streaming worker"),
    ("alerts", "tail"): ("streams.tail_cli", "print alert events from the alert topic"),
    ("connect",): ("connectors.cli", "run connectors (replay, webhook, platforms)"),
}


def _build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, tuple[str, ...] | None]:
    parser = argparse.ArgumentParser(
        prog="crisiswatch", description="Catch brand crises on social media in their first minutes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    chosen: tuple[str, ...] | None = None
    words = [a for a in argv if not a.startswith("-")]
    for path, (module, help_text) in COMMANDS.items():
        if len(path) == 1:
            p = sub.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                g = sub.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = g.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            p = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        p.set_defaults(_path=path)
        if tuple(words[: len(path)]) == path:
            chosen = path
            mod = importlib.import_module(module)
            add = getattr(mod, "add_arguments", None)
            if add is not None:
                if len(path) > 1 and hasattr(mod, f"add_{path[1]}_arguments"):
                    add = getattr(mod, f"add_{path[1]}_arguments")
                add(p)
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, chosen = _build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    path = getattr(args, "_path", None)
    if path is None or chosen is None:
        parser.print_help(sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[path][0])
    runner = getattr(module, f"run_{path[1]}", None) if len(path) > 1 else None
    if runner is None:
        runner = module.run
    try:
        return int(runner(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
