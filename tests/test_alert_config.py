"""Alerting config: the example documents the real defaults; mistakes are refused with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomwatch.alerts.rules import compile_rules
from roomwatch.collector.config import CollectorConfig, load_collector_config
from tests.helpers import ROOT, cli

BASE = "listen: 127.0.0.1:9640\nchannels:\n  - {name: hook, type: webhook, url: 'http://127.0.0.1:9999/'}\n"


def _summary(cfg: CollectorConfig) -> dict[str, tuple]:
    return {r.name: (tuple(str(c.when_expr) for c in r.conds), tuple(str(c.clear_expr) for c in r.conds), r.for_,
                     r.severity, r.window) for r in compile_rules(cfg.rules)}


def test_example_overrides_restate_the_defaults() -> None:
    """Every threshold written in the example (with its reason) is the shipped default, not a different one."""
    example = load_collector_config(str(ROOT / "config" / "collector.example.yaml"))
    assert set(example.rules.overrides) >= {
        "RoomTemperatureHigh", "RoomTemperatureCritical", "RoomHumidityOutOfRange", "DoorOpenTooLong",
        "DoorOpenedOutOfHours", "WaterLeak", "SmokeDetected", "UPSOnBattery", "UPSBatteryLow", "UPSRuntimeLow",
        "UPSBatteryReplace", "DeviceDown", "AgentDown"}
    plain = CollectorConfig.model_validate({})
    assert _summary(example) == _summary(plain)
    text = (ROOT / "config" / "collector.example.yaml").read_text()
    assert "ASHRAE" in text and "18–27 °C" in text


def test_smallest_contract_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("listen: 127.0.0.1:9640\nagents:\n  - id: room1-agent\n    token: s3cret-token\nchannels:\n"
                    "  - name: hook\n    type: webhook\n    url: http://127.0.0.1:9999/alerts\nroutes:\n  - channels: [hook]\n")
    res = cli("check-config", str(path))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(("text", "line", "key", "message"), [
    ("rules:\n  overrides:\n    RoomTemperatureHigh: {when: '> 27', clear: '< 28'}\n", 6,
     "rules.overrides.RoomTemperatureHigh", 'clear "< 28" overlaps when "> 27"'),
    ("rules:\n  overrides:\n    DoorOpenTooLong: {for: 5m}\n    RoomHumidityOutOfRange:\n      when: '< 0.3'\n"
     "      clear: '< 0.4'\n", 7, "rules.overrides.RoomHumidityOutOfRange", "overlaps"),
    ("rules:\n  overrides:\n    RoomTempHigh: {for: 1m}\n", 6, "rules.overrides.RoomTempHigh",
     "'RoomTempHigh' is not a rule of the default pack"),
    ("rules:\n  extra:\n    - {alert: X, metric: roomwatch_door_open, when: 'is open'}\n", 6, "rules.extra[0].when",
     "'is open' in 'is open' is not a comparison"),
    ("rules:\n  extra:\n    - {alert: X, metric: roomwatch_door_open}\n", 6, "rules.extra[0]", "a metric rule needs when"),
    ("rules:\n  extra:\n    - {alert: X, metric: m, when: '== 1', labels: {severity: critical}}\n", 6,
     "rules.extra[0].labels", "set severity with the rule's severity key"),
    ("rules:\n  working_hours: {start: '18:00', end: '08:00'}\n", 5, "rules.working_hours",
     "start 18:00 must be before end 08:00"),
    ("rules:\n  timezone: Beijing\n", 5, "rules.timezone", "unknown time zone 'Beijing'"),
    ("routes:\n  - channels: [hook]\n    matchers: ['room=~\"[A-\"']\n", 6, "routes[0].matchers[0]", "bad regular expression"),
    ("routes:\n  - channels: [hook]\n    matchers: ['room is A']\n", 6, "routes[0].matchers[0]", "is not a matcher"),
    ("rules:\n  extra:\n    - alert: X\n      metric: roomwatch_door_open\n      when: '== 1'\n"
     "      matchers: ['device=~(door1,door2']\n", 9, "rules.extra[0].matchers[0]",
     "bad regular expression '(door1,door2': missing )"),
    ("routes:\n  - channels: [hook]\n    levels: [{after: 15m, channels: [boss]}]\n", 6,
     "routes[0].levels[0].channels[0]", "no channel named 'boss'"),
    ("routes:\n  - channels: [hook]\n    levels: [{after: 15m, channels: [hook]}, {after: 10m, channels: [hook]}]\n",
     5, "routes[0]", "increasing 'after'"),
    ("routes:\n  - channels: [hook]\n    group_wait: 30\n", 6, "routes[0].group_wait", "has no unit"),
    ("web:\n  users: [{name: a, password_hash: secret}]\n", 5, "web.users[0].password_hash", "not a password hash"),
    ("alerts:\n  language: fr\n", 5, "alerts.language", "expected one of"),
])
def test_alerting_mistakes_are_located(tmp_path: Path, text: str, line: int, key: str, message: str) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(BASE + text)
    res = cli("check-config", str(path))
    assert res.returncode == 2, res.stdout
    assert f"{path}:{line}: {key}: " in res.stderr and message in res.stderr, res.stderr


def test_rule_file_problems_name_the_rule_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - alert: Hot\n    metric: roomwatch_temperature_celsius\n    when: '> 30'\n"
                     "    for: 5\n")
    path = tmp_path / "collector.yaml"
    path.write_text(BASE + f"rules:\n  files: [{rules}]\n")
    res = cli("check-config", str(path))
    assert res.returncode == 2
    assert f"{rules}:5: rules[0].for: 5 has no unit" in res.stderr, res.stderr
    rules.write_text(rules.read_text().replace("for: 5", "for: 5m"))
    assert cli("check-config", str(path)).returncode == 0
