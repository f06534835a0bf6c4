"""The rules in force, reloaded without restart when the files change."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from rules.detect import Detector
from rules.errors import RuleError
from rules.loader import load_rules
from rules.matcher import Matcher
from rules.model import KeywordRule, RuleSet
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Compiled:
    """One consistent rule set: swapped in as a whole."""

    ruleset: RuleSet
    matcher: Matcher
    detector: Detector


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of the rule files (the ``*.yaml`` / ``*.yml`` files
    ``load_rules`` reads): cheap change detection.  One ``scandir`` and a ``stat`` per
    file, no ``Path`` objects: it runs every few seconds over a thousand files."""
    items = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return ()
    for entry in entries:
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            items.append((entry.name, st.st_size, st.st_mtime_ns))
    items.sort()
    return tuple(items)


class RuleHolder:
    """Holds the last good rules; ``reload()`` swaps in a valid new set atomically."""

    def __init__(
        self, directory: Path, metrics: WorkerMetrics, *, lateness_ms: int, step_ms: int
    ) -> None:
        self.directory = directory
        self.metrics = metrics
        self.lateness_ms = lateness_ms
        self.step_ms = step_ms
        self._fingerprint = fingerprint(directory)
        self.current = self._compile(load_rules(directory))  # bad rules at start: fail fast
        self._count(self.current.ruleset)
        metrics.rules_last_reload_success.set(1)

    def _compile(self, ruleset: RuleSet) -> Compiled:
        return Compiled(
            ruleset,
            Matcher(ruleset),
            Detector(ruleset, lateness_ms=self.lateness_ms, step_ms=self.step_ms),
        )

    def _count(self, ruleset: RuleSet) -> None:
        rules = [r for b in ruleset.brands for r in b.rules]
        keyword = sum(isinstance(r, KeywordRule) for r in rules)
        self.metrics.rules_loaded.labels("brand").set(len(ruleset.brands))
        self.metrics.rules_loaded.labels("keyword").set(keyword)
        self.metrics.rules_loaded.labels("velocity").set(len(rules) - keyword)

    def reload_if_changed(self) -> bool:
        """Reload when the files changed; True if a new set is now in force."""
        fp = fingerprint(self.directory)
        if fp == self._fingerprint:
            return False
        self._fingerprint = fp
        return self.reload()

    def reload(self) -> bool:
        try:
            ruleset = load_rules(self.directory)
        except RuleError as exc:
            for problem in exc.problems:
                log.error("rule reload failed, keeping the previous rules: %s", problem)
            self.metrics.rule_reloads.labels("failure").inc()
            self.metrics.rules_last_reload_success.set(0)
            return False
        except OSError as exc:
            log.error("rule reload failed, keeping the previous rules: %s", exc)
            self.metrics.rule_reloads.labels("failure").inc()
            self.metrics.rules_last_reload_success.set(0)
            return False
        if ruleset.digest == self.current.ruleset.digest:
            self.metrics.rules_last_reload_success.set(1)
            return False
        self.current = self._compile(ruleset)
        self._count(ruleset)
        self.metrics.rule_reloads.labels("success").inc()
        self.metrics.rules_last_reload_success.set(1)
        log.info("rules reloaded: %d brands, digest %s", len(ruleset.brands), ruleset.digest[:12])
        return True
