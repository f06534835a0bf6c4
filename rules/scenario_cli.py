"""``crisiswatch scenario --out posts.jsonl [--truth truth.json] [--seed N] [--days D]``."""

from __future__ import annotations

import argparse
import sys

import orjson

from rules.errors import RuleError
from rules.post import encode_post


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="Posts JSON Lines (- = stdout)"
    )
    parser.add_argument("--truth", metavar="FILE", help="write the ground truth JSON here")
    parser.add_argument("--rules", default="brands", metavar="DIR", help="brand rules (brands)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--days", type=int, default=8, help="days of event time (8, at least 3)")
    parser.add_argument(
        "--start", default="2026-11-01T00:00:00Z", help="first event time (RFC 3339)"
    )
    parser.add_argument(
        "--rate", type=float, default=1.0, help="mean mentions per minute per brand (1.0)"
    )


def run(args: argparse.Namespace) -> int:
    from rules.loader import load_rules
    from rules.scenario import generate

    try:
        ruleset = load_rules(args.rules)
    except RuleError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        return 2
    try:
        scenario = generate(
            ruleset, seed=args.seed, days=args.days, start=args.start, mentions_per_min=args.rate
        )
    except ValueError as exc:
        sys.stderr.write(f"crisiswatch scenario: {exc}\n")
        return 2
    out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
    try:
        out.write(b"".join(encode_post(p) + b"\n" for p in scenario.posts))
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    if args.truth:
        with open(args.truth, "wb") as f:
            f.write(orjson.dumps(scenario.truth(), option=orjson.OPT_INDENT_2))
    sys.stderr.write(
        f"scenario: {len(scenario.posts):,} posts, {len(scenario.crises)} crises, "
        f"{len(scenario.traps)} traps, seed {args.seed}\n"
    )
    return 0
