"""Prometheus config and alert rules, checked by promtool itself."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops.known import METRICS, metric_names
from tests.ops.promserver import require_promtool

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
OPERATOR_GUIDE = ROOT / "docs" / "operator-guide.md"


def _promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_config_accepts_prometheus_yml() -> None:
    result = _promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules_accepts_alerts_yml() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", ALERTS_TEST.name, cwd=PROM_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # Guard against a test file that passes whatever the rules say: loosen one
    # threshold so that an expected "no alert" case fires, and promtool must fail.
    text = ALERTS.read_text(encoding="utf-8")
    broken = text.replace(
        "(increase(crisiswatch_dead_letters_total[10m])) > 10",
        "(increase(crisiswatch_dead_letters_total[10m])) > 0",
    )
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text(encoding="utf-8"))
    result = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "CrisiswatchDeadLettersRising" in result.stdout + result.stderr


def test_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in _rules()}
    required = {
        "CrisiswatchWorkerDown",
        "CrisiswatchConsumerLagGrowing",
        "CrisiswatchDeadLettersRising",
        "CrisiswatchConnectorStale",
        "CrisiswatchRuleReloadFailed",
        "CrisiswatchProcessingLatencyHigh",
        "CrisiswatchCriticalIncidentOpen",
    }
    assert required <= names, f"missing alerts: {sorted(required - names)}"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    doc = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    fires: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names - fires == set(), f"alerts never shown firing: {sorted(names - fires)}"
    assert names - silent == set(), f"alerts never shown silent: {sorted(names - silent)}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_alert_uses_only_known_metrics(rule: dict) -> None:
    used = metric_names(rule["expr"])
    unknown = used - set(METRICS)
    assert not unknown, f"{rule['alert']}: unknown metric names {sorted(unknown)}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_summary_and_documented_runbook(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical", "page"}
    assert rule["annotations"]["summary"]
    runbook = rule["annotations"]["runbook_url"]
    path, _, anchor = runbook.partition("#")
    assert path == "docs/operator-guide.md"
    assert anchor == rule["alert"].lower()
    headings = re.findall(r"^#{2,4} +(\S+)", OPERATOR_GUIDE.read_text(encoding="utf-8"), re.M)
    assert rule["alert"] in headings, f"docs/operator-guide.md has no heading '{rule['alert']}'"


def test_workers_are_discovered_by_dns_so_scaled_workers_are_all_scraped() -> None:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["crisiswatch-worker"]
    assert "static_configs" not in worker
    (sd,) = worker["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    assert sd["type"] == "A"
    assert sd["port"] == 6066
    connectors = jobs["crisiswatch-connectors"]["dns_sd_configs"][0]
    assert connectors["port"] == 9464
    assert connectors["names"] == ["connectors"]
    assert config["rule_files"] == ["alerts.yml"]
