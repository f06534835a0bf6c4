"""Containers run as a non-root user; compose never switches them back to root."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_the_image_ends_as_a_non_root_user() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    users = [ln.split(None, 1)[1].strip() for ln in lines if re.match(r"\s*USER\s", ln)]
    assert users, "the Dockerfile must set USER"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0"), f"final USER is {users[-1]!r}"
    assert re.search(rf"useradd\b.*\b{re.escape(final)}\b", "\n".join(lines)) or final.isdigit()


def test_compose_does_not_run_our_services_as_root() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    ours = {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc or "crisiswatch" in str(svc.get("image", ""))
    }
    assert ours, "expected the worker/connector services built from the Dockerfile"
    for name, svc in ours.items():
        assert str(svc.get("user", "")).split(":")[0] not in ("root", "0"), name
        assert not svc.get("privileged", False), name
