"""The incident state machine's pieces: deterministic ids, open incidents, escalation."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from rules.model import SEVERITIES, EscalateStep

OPENED = "crisiswatch.incident.opened"
ESCALATED = "crisiswatch.incident.escalated"
RESOLVED = "crisiswatch.incident.resolved"
EVENT_TYPES: tuple[str, ...] = (OPENED, ESCALATED, RESOLVED)


def incident_id(brand: str, rule_id: str, opened_boundary_ms: int) -> str:
    """First 16 hex chars of sha256(``brand|rule_id|opened_boundary_ms``)."""
    raw = f"{brand}|{rule_id}|{opened_boundary_ms}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def event_id(incident: str, event_type: str, boundary_ms: int, severity: str) -> str:
    """sha256 of (incident id, type, boundary, severity), 32 hex chars."""
    raw = f"{incident}|{event_type}|{boundary_ms}|{severity}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class Incident:
    """One open incident of one brand and rule (mutable, part of BrandState)."""

    __slots__ = ("false_since_ms", "incident_id", "opened_ms", "severity")

    def __init__(
        self, incident_id: str, opened_ms: int, severity: str, false_since_ms: int | None = None
    ) -> None:
        self.incident_id = incident_id
        """Stable for the life of the incident."""
        self.opened_ms = opened_ms
        """The boundary (event time) at which it opened."""
        self.severity = severity
        """Current severity; only rises while open."""
        self.false_since_ms = false_since_ms
        """First boundary of the current run where the condition was false, or None."""

    def to_obj(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "opened_ms": self.opened_ms,
            "severity": self.severity,
            "false_since_ms": self.false_since_ms,
        }

    @staticmethod
    def from_obj(obj: dict[str, Any]) -> Incident:
        return Incident(
            obj["incident_id"], int(obj["opened_ms"]), obj["severity"], obj["false_since_ms"]
        )


def higher(a: str, b: str) -> str:
    """The higher of two severities."""
    return a if SEVERITIES.index(a) >= SEVERITIES.index(b) else b


def reached_severity(
    base: str,
    steps: tuple[EscalateStep, ...],
    count: int,
    ratio: Callable[[], float],
    reach: Callable[[], int],
    authors: Callable[[], int],
) -> str:
    """The highest severity among ``base`` and every escalate step whose figures are all reached.

    Figures other than ``count`` are callables so they are computed only when a
    step names them.
    """
    severity = base
    for step in steps:
        if step.count is not None and count < step.count:
            continue
        if step.ratio is not None and ratio() < step.ratio:
            continue
        if step.reach is not None and reach() < step.reach:
            continue
        if step.authors is not None and authors() < step.authors:
            continue
        severity = higher(step.severity, severity)
    return severity
