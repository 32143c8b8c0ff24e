"""One default alert policy: the agent's local fallback sends the collector's default rules (alerts/defaults.yaml).

No processes: the alerter is fed samples directly (a sample stamped in the past stands for time passed).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from roomwatch.agent.fallback import FallbackAlerter, FallbackConfig
from roomwatch.alerts.config import RulesConfig
from roomwatch.alerts.pack import local_fallback_rules
from roomwatch.alerts.rules import compile_rules
from roomwatch.core import vocabulary as v
from roomwatch.core.clock import SYSTEM
from roomwatch.core.wire import SampleRecord

CHANNELS = [{"name": "sms", "type": "webhook", "url": "http://127.0.0.1:9/sms"}]


def _alerter(**section: Any) -> FallbackAlerter:
    config = FallbackConfig.model_validate({"channels": CHANNELS, **section})
    agent = SimpleNamespace(config=SimpleNamespace(agent=SimpleNamespace(site="县机关", room="一号机房", id="a")),
                            pusher=None, clock=SYSTEM)
    return FallbackAlerter(config, agent)


def _feed(alerter: FallbackAlerter, metric: str, value: float, ago: float = 0.0, device: str = "d1") -> None:
    sample = SampleRecord(metric, {"device": device}, value, int((time.time() - ago) * 1000))
    alerter.observe(None, [sample], [])


def _state(alerter: FallbackAlerter) -> dict[str, tuple[bool, bool]]:
    """alertname → (firing, cleared)."""
    return {c.alertname: (c.firing, c.cleared) for c in alerter.conditions.values()}


def test_the_fallback_sends_the_collectors_default_rules() -> None:
    """Names, metric, thresholds, for, severity and summaries are the compiled default pack's."""
    collector = {r.name: r for r in compile_rules(RulesConfig())}
    rules = FallbackConfig.model_validate({"channels": CHANNELS}).rules()
    assert sorted(r.alert for r in rules.values()) == sorted(
        ["UPSOnBattery", "UPSBatteryLow", "WaterLeak", "SmokeDetected", "RoomTemperatureCritical"])
    for metric, r in rules.items():
        c = collector[r.alert]
        [cond] = c.conds
        assert (metric, str(r.when), str(r.clear), r.for_, r.severity) == (
            cond.metric, str(cond.when_expr), str(cond.clear_expr), c.for_, c.severity)
        assert dict(r.summary) == dict(c.annotations["summary"])
    temp = rules[v.TEMPERATURE]
    assert (str(temp.when), str(temp.clear), temp.for_) == ("> 32", "< 30", 120.0)


def test_every_local_fallback_rule_has_one_metric_and_both_languages() -> None:
    for r in local_fallback_rules():
        assert r.metric.startswith("roomwatch_") and set(r.summary) == {"zh-CN", "en"}


def test_temperature_fires_after_its_for_and_clears_below_clear() -> None:
    alerter = _alerter()
    _feed(alerter, v.TEMPERATURE, 33.0, ago=60)
    assert _state(alerter) == {"RoomTemperatureCritical": (False, False)}  # above 32 for 1 min of 2
    _feed(alerter, v.TEMPERATURE, 31.0)  # under when, not yet under clear: still the same episode
    assert _state(alerter) == {"RoomTemperatureCritical": (False, False)}
    alerter.conditions.clear()
    _feed(alerter, v.TEMPERATURE, 33.0, ago=130)
    assert _state(alerter) == {"RoomTemperatureCritical": (True, False)}
    [cond] = alerter.conditions.values()
    assert cond.words == "机房温度过高（严重）"  # the pack's summary
    cond.notified = True
    _feed(alerter, v.TEMPERATURE, 29.5)
    assert _state(alerter) == {"RoomTemperatureCritical": (True, True)}


def test_overrides_in_the_agent_file_replace_the_packs_temperature() -> None:
    alerter = _alerter(temperature_critical=35, temperature_clear=33, temperature_for="0s", language="en")
    _feed(alerter, v.TEMPERATURE, 34.0)
    assert alerter.conditions == {}
    _feed(alerter, v.TEMPERATURE, 35.5)
    assert _state(alerter) == {"RoomTemperatureCritical": (True, False)}
    assert next(iter(alerter.conditions.values())).words == "Room temperature critical"


def test_state_rules_keep_their_for() -> None:
    """A leak (for 0s) fires at once; mains failure waits UPSOnBattery's 30 s like the collector's rule."""
    alerter = _alerter()
    _feed(alerter, v.WATER_LEAK, 1.0)
    _feed(alerter, v.UPS_ON_BATTERY, 1.0, device="ups1")
    assert _state(alerter) == {"WaterLeak": (True, False), "UPSOnBattery": (False, False)}
    alerter.conditions.clear()
    _feed(alerter, v.UPS_ON_BATTERY, 1.0, ago=31, device="ups1")
    assert _state(alerter) == {"UPSOnBattery": (True, False)}


def test_bad_temperature_overrides_are_refused() -> None:
    problems = FallbackConfig.model_validate({"channels": CHANNELS, "temperature_clear": 34}).extra_checks()
    assert (("fallback", "temperature_clear"), "must not be above temperature_critical") in problems


async def test_a_notified_condition_is_not_sent_again_while_it_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline: one message per episode, however many checks and readings follow."""
    alerter = _alerter(after="1s")
    sent: list[str] = []

    async def send(cond: Any, status: str, offline: float) -> bool:
        sent.append(f"{cond.alertname} {status}")
        return True

    monkeypatch.setattr(alerter, "_send", send)
    monkeypatch.setattr(alerter, "offline_for", lambda: 600.0)
    for _ in range(5):
        _feed(alerter, v.WATER_LEAK, 1.0)
        await alerter.check()
    assert sent == ["WaterLeak firing"]
    _feed(alerter, v.WATER_LEAK, 0.0)
    await alerter.check()
    await alerter.check()
    assert sent == ["WaterLeak firing", "WaterLeak resolved"]
