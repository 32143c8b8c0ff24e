"""Shipped Prometheus and Alertmanager files: promtool/amtool accept them, every rule is unit-tested."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, require_binary

PROM = ROOT / "config" / "prometheus"
AM = ROOT / "config" / "alertmanager"

#: CONTRACT.md "Default alert rules" — the names users route on.
CONTRACT_ALERTS = {
    "RoomTemperatureHigh", "RoomTemperatureCritical", "RoomHumidityOutOfRange", "DoorOpenTooLong",
    "DoorOpenedOutOfHours", "WaterLeak", "SmokeDetected", "UPSOnBattery", "UPSBatteryLow", "UPSRuntimeLow",
    "UPSBatteryReplace", "DeviceDown", "AgentDown",
}


def _rules() -> list[dict]:
    out = []
    for f in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(f.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def _tests() -> list[dict]:
    out = []
    for f in sorted((PROM / "tests").glob("*.yml")):
        out.extend(yaml.safe_load(f.read_text())["tests"])
    return out


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def test_promtool_checks_config_and_rules() -> None:
    promtool = require_binary("promtool")
    r = _run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(promtool, "check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml"))))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    files = sorted((PROM / "tests").glob("*.yml"))
    assert files
    r = _run(promtool, "test", "rules", *map(str, files))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(files), r.stdout


def test_the_rule_pack_matches_the_contract() -> None:
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    assert set(alerts) >= CONTRACT_ALERTS, CONTRACT_ALERTS - set(alerts)
    severities = {"RoomTemperatureCritical": "critical", "WaterLeak": "critical", "SmokeDetected": "critical",
                  "UPSBatteryLow": "critical", "UPSRuntimeLow": "critical", "AgentDown": "critical"}
    for name in CONTRACT_ALERTS:
        rule = alerts[name]
        assert rule["labels"]["severity"] == severities.get(name, "warning"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name
    # "for" as in RULES.md
    want_for = {"RoomTemperatureHigh": "5m", "RoomTemperatureCritical": "2m", "RoomHumidityOutOfRange": "15m",
                "DoorOpenTooLong": "10m", "UPSOnBattery": "30s", "UPSRuntimeLow": "1m", "UPSBatteryReplace": "10m",
                "DeviceDown": "2m"}
    for name in CONTRACT_ALERTS:
        assert alerts[name].get("for") == want_for.get(name), name


def test_every_rule_has_a_unit_test_that_sees_it_fire() -> None:
    """Each alert appears firing in some exp_alerts; each recording rule in some promql_expr_test."""
    fired: set[str] = set()
    quiet: set[str] = set()
    queried: set[str] = set()
    for t in _tests():
        for a in t.get("alert_rule_test", []):
            (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
        for e in t.get("promql_expr_test", []):
            queried.update(re.findall(r"[a-z_]+:[a-z_:]+", e["expr"]))
    for rule in _rules():
        if "alert" in rule:
            assert rule["alert"] in fired, f"{rule['alert']} never seen firing in a test"
            assert rule["alert"] in quiet, f"{rule['alert']} never seen not firing in a test"
        else:
            assert rule["record"] in queried, f"{rule['record']} untested"


def test_hysteresis_rules_reference_their_own_alert() -> None:
    for rule in _rules():
        if "ALERTS" in rule.get("expr", ""):
            assert f'alertname="{rule["alert"]}"' in rule["expr"], rule["alert"]


def test_amtool_accepts_the_alertmanager_example() -> None:
    amtool = require_binary("amtool")
    r = _run(amtool, "check-config", str(AM / "alertmanager.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 inhibit rules" in r.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=WaterLeak", "severity=critical", "room=r1"], "wechat-and-sms"),
    (["alertname=DoorOpenTooLong", "severity=warning"], "wechat-duty"),
    (["alertname=Other"], "wechat-duty"),
])
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    amtool = require_binary("amtool")
    r = _run(amtool, "config", "routes", "test", f"--config.file={AM / 'alertmanager.yml'}", *labels)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receiver
