"""``crisiswatch evaluate [--rules brands] [--seed N] [--days 8] [--runs 3]``.

Generates scenarios, runs the Engine over them and prints, per injected crisis,
whether it was detected and the event time to detect it; then the median and
the incidents raised by traps (must be 0) and other false alarms.
"""

from __future__ import annotations

import argparse
import sys

from rules.errors import RuleError
from rules.post import format_rfc3339_ms


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", default="brands", metavar="DIR", help="brand rules (brands)")
    parser.add_argument("--seed", type=int, default=1, help="first seed (1)")
    parser.add_argument("--days", type=int, default=8, help="days per scenario (8)")
    parser.add_argument("--runs", type=int, default=3, help="scenarios, seeds seed..seed+runs-1")


def run(args: argparse.Namespace) -> int:
    from rules.evaluation import run_scenario, score
    from rules.loader import load_rules
    from rules.scenario import generate

    try:
        ruleset = load_rules(args.rules)
    except RuleError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        return 2
    out = sys.stdout
    out.write("| seed | brand | crisis_type | start | detected | time to detect | first rule |\n")
    out.write("|---|---|---|---|---|---|---|\n")
    all_ttd: list[int] = []
    crises = detected = traps = false_alarms = 0
    for seed in range(args.seed, args.seed + args.runs):
        try:
            scenario = generate(ruleset, seed=seed, days=args.days)
        except ValueError as exc:
            sys.stderr.write(f"crisiswatch evaluate: {exc}\n")
            return 2
        result = score(ruleset, scenario, run_scenario(ruleset, scenario))
        for c in result.crises:
            crises += 1
            ttd = "-"
            if c.detected_ms is not None:
                detected += 1
                all_ttd.append(c.detected_ms)
                ttd = f"{c.detected_ms / 1000:.0f} s"
            out.write(
                f"| {seed} | {c.crisis.brand} | {c.crisis.crisis_type} | "
                f"{format_rfc3339_ms(c.crisis.start_ms)} | "
                f"{'yes' if c.detected_ms is not None else 'NO'} | {ttd} | {c.rule_id or '-'} |\n"
            )
        for trap, event in result.trap_incidents:
            out.write(f"trap incident: seed {seed} {trap.kind} {trap.brand}: {event.rule_id} "
                      f"at {format_rfc3339_ms(event.time_ms)}\n")  # fmt: skip
        traps += len(result.trap_incidents)
        false_alarms += len(result.false_alarms)
        for e in result.false_alarms:
            out.write(f"false alarm: seed {seed} {e.brand} {e.rule_id} at "
                      f"{format_rfc3339_ms(e.time_ms)} window {e.data['window']}\n")  # fmt: skip
    all_ttd.sort()
    median = (
        (all_ttd[len(all_ttd) // 2] + all_ttd[(len(all_ttd) - 1) // 2]) / 2000 if all_ttd else None
    )
    out.write(
        f"\ncrises detected: {detected}/{crises}; median time to detect: "
        f"{'-' if median is None else f'{median:.0f} s'}; trap incidents: {traps}; "
        f"false alarms (any unexplained opened): {false_alarms}\n"
    )
    ok = detected == crises and median is not None and median < 300 and traps == 0
    return 0 if ok else 1
