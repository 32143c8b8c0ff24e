"""A polled UPS going on battery, end to end with real processes (issue 4 point 5):

    NUT dummy-ups → upsd → ``roomwatch agent`` (nut driver, polled every 0.5 s, push_interval 1 h)
    → ``roomwatch collector`` (default rule pack)

"A UPS going on battery is pushed to the collector at once as an event plus the new value, not at
the next push interval": the agent's first interval push is due an hour after it started, so whatever
the collector knows sooner came with the event push. The MQTT door (a listening driver) is covered
by tests/test_mqtt_e2e.py; this is the polled path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import CollectorHandle
from tests.helpers import http_get, metric_value, wait_for
from tests.peers.nut import NutServer, write_dev

PUSH_INTERVAL = 3600.0  # s: nothing reaches the collector on the interval within the waits (at most 20 s each)
ON_BATTERY = "roomwatch_ups_on_battery"

#: A small online UPS as dummy-ups serves it (NUT variable names: docs/nut.md).
ONLINE_UPS = {
    "device.type": "ups", "ups.mfr": "Test Power", "ups.model": "TP-1000", "ups.status": "OL CHRG",
    "battery.charge": "100", "battery.runtime": "1800", "input.voltage": "230.0", "output.voltage": "230.0",
    "ups.load": "25",
}


def _agent_state(agent_url: str) -> float | None:
    return metric_value(http_get(agent_url + "/metrics")[1].decode(), ON_BATTERY, device="ups1")


def _at_collector(collector: CollectorHandle) -> tuple[float | None, int]:
    """(roomwatch_ups_on_battery of ups1, events accepted from agent-a) as the collector shows them now."""
    value = metric_value(collector.metrics(), ON_BATTERY, device="ups1", agent="agent-a")
    agents = json.loads(http_get(collector.url + "/api/v1/agents")[1])["agents"]
    events = next((a["events"] for a in agents if a["id"] == "agent-a"), 0)
    return value, int(events)


def _ups_alert(collector: CollectorHandle) -> dict[str, Any] | None:
    alerts = json.loads(http_get(collector.url + "/api/v1/alerts")[1])["alerts"]
    return next((a for a in alerts if a["alertname"] == "UPSOnBattery" and a["labels"].get("device") == "ups1"), None)


def test_polled_ups_on_battery_reaches_the_collector_before_the_push_interval(
        tmp_path: Path, collector: CollectorHandle, agent_factory: Any, nut_factory: Any) -> None:
    """The UPS flips to OB: within the same push interval the collector holds the ups_on_battery event
    (its per-agent event count grows), the new value 1 and a pending UPSOnBattery alert for that UPS;
    back on mains, the ups_on_mains event brings 0 and the alert leaves, again without waiting."""
    nut: NutServer = nut_factory({"ups1": write_dev(tmp_path / "ups1.dev", ONLINE_UPS)})
    _proc, agent_url = agent_factory(collector.url, collector={"push_interval": f"{PUSH_INTERVAL:g}s"},
                                     host={"enabled": False},
                                     devices=[{"name": "ups1", "driver": "nut", "port": nut.port, "ups": "ups1",
                                               "interval": "500ms"}])
    wait_for(lambda: _agent_state(agent_url) == 0, timeout=15, what="the agent to read the UPS on mains")
    # one more poll on mains (the agent reports a new charge): the flip below is a change the agent sees,
    # not its first reading
    nut.set_var("ups1", "battery.charge", "99")
    wait_for(lambda: metric_value(http_get(agent_url + "/metrics")[1].decode(), "roomwatch_ups_battery_charge_ratio",
                                  device="ups1") == 0.99, timeout=15, what="a second reading on mains")
    _, events_before = _at_collector(collector)

    nut.set_var("ups1", "ups.status", "OB DISCHRG")  # mains fails (returns once upsd serves the new status)
    arrived = wait_for(lambda: (lambda s: s if s[0] == 1 else None)(_at_collector(collector)), timeout=20,
                       interval=0.05, what="roomwatch_ups_on_battery 1 at the collector")
    assert arrived[1] > events_before, "the value came without the on-battery event"
    alert = wait_for(lambda: _ups_alert(collector), timeout=5, what="UPSOnBattery at the collector")
    # The default rule waits 30 s before firing (transfer blips): pending now, firing later.
    assert alert["state"] == "pending" and alert["severity"] == "warning", alert
    assert alert["labels"]["agent"] == "agent-a", alert

    nut.set_var("ups1", "ups.status", "OL CHRG")  # mains is back
    back = wait_for(lambda: (lambda s: s if s[0] == 0 else None)(_at_collector(collector)), timeout=20,
                    interval=0.05, what="roomwatch_ups_on_battery 0 at the collector")
    assert back[1] > arrived[1], "the value came without the on-mains event"
    wait_for(lambda: _ups_alert(collector) is None, timeout=5, what="UPSOnBattery to leave the active alerts")
    # Both transitions arrived within their 20 s waits, long before the agent's first interval push (an hour).
