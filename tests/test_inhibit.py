"""Inhibition: the remembered-match Inhibitor decides exactly what matching every alert every time decides."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from roomwatch.alerts.config import InhibitRuleConfig
from roomwatch.alerts.inhibit import Inhibitor
from roomwatch.alerts.model import FIRING, PENDING, Alert, fingerprint
from roomwatch.alerts.rules import InhibitRule, compile_inhibit_rules

NAMES = ["AgentDown", "DeviceDown", "UPSOnBattery", "UPSInputVoltageLow", "RoomTemperatureCritical",
         "RoomTemperatureHigh", "DoorOpenedOutOfHours"]
RULES = compile_inhibit_rules(True, [InhibitRuleConfig.model_validate(
    {"source_matchers": ['alertname="DoorOpenedOutOfHours"'], "target_matchers": ['severity="info"'],
     "equal": ["room"]})])


def reference(rules: list[InhibitRule], alerts: Iterable[Alert]) -> dict[str, str]:
    """Every matcher on every alert, every time (the algorithm before the match cache)."""
    alerts = list(alerts)
    out: dict[str, str] = {}
    for rule in rules:
        sources: dict[tuple[str, ...], str] = {}
        for a in alerts:
            if a.state == FIRING and all(m.matches(a.labels) for m in rule.source):
                sources.setdefault(tuple(a.labels.get(k, "") for k in rule.equal), a.fp)
        if not sources:
            continue
        for a in alerts:
            if a.fp in out or not all(m.matches(a.labels) for m in rule.target):
                continue
            src = sources.get(tuple(a.labels.get(k, "") for k in rule.equal))
            if src is not None and src != a.fp:
                out[a.fp] = src
    return out


def _alert(name: str, agent: str, device: str, room: str, severity: str, firing: bool) -> Alert:
    labels = {"alertname": name, "severity": severity, "agent": agent, "device": device, "room": room}
    labels = {k: v for k, v in labels.items() if v}
    return Alert(fingerprint(labels), name, name, severity, labels, dict(labels), "m", FIRING if firing else PENDING, 0.0)


alert_st = st.builds(_alert, st.sampled_from(NAMES), st.sampled_from(["a1", "a2", ""]), st.sampled_from(["ups1", "th1", ""]),
                     st.sampled_from(["r1", "r2", ""]), st.sampled_from(["critical", "warning", "info"]), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(alert_st, max_size=12), min_size=1, max_size=6))
def test_same_decisions_as_matching_every_time(steps: list[list[Alert]]) -> None:
    """A sequence of active-alert sets (alerts come, fire, go) through one Inhibitor."""
    inh = Inhibitor(RULES)
    for version, alerts in enumerate(steps):
        unique = list({a.fp: a for a in alerts}.values())  # the engine holds one alert per fingerprint
        assert inh.compute(unique, version) == reference(RULES, unique)


def test_cache_follows_the_engine_version() -> None:
    src = _alert("AgentDown", "a1", "", "r1", "critical", True)
    tgt = _alert("DeviceDown", "a1", "ups1", "r1", "warning", True)
    inh = Inhibitor(RULES)
    assert inh.compute([src, tgt], 1) == {tgt.fp: src.fp}
    src.state = PENDING  # a transition bumps the engine version; same version → same (cached) answer
    assert inh.compute([src, tgt], 1) == {tgt.fp: src.fp}
    assert inh.compute([src, tgt], 2) == {}
