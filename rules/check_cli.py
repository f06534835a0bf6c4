"""``crisiswatch rules check DIR``: validate every rule file of a directory.

Exit 0 with one summary line on stdout, or 2 with every problem as
``path:line:col: message`` on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rules.errors import RuleError
from rules.loader import load_rules


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="directory of brand rule files (*.yaml)")


def run_check(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        print(f"crisiswatch rules check: {args.dir}: rules directory {what}", file=sys.stderr)
        return 2
    try:
        ruleset = load_rules(directory)
    except RuleError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} in {args.dir}", file=sys.stderr)
        return 2
    rules = sum(len(b.rules) for b in ruleset.brands)
    brands = len(ruleset.brands)
    print(
        f"ok: {brands} brand{'s' if brands != 1 else ''}, {rules} rule{'s' if rules != 1 else ''}"
        f" in {args.dir}"
    )
    return 0


add_arguments = add_check_arguments
run = run_check
