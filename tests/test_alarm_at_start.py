"""Alarms at start are urgent too (issue 13 point 6), end to end with real processes.

A first reading that is already an alarm state — a UPS on battery when the agent starts, a door
that is open when its sensor first speaks — is pushed to the collector at once, like a transition,
not at the next push interval. The agent's push interval here is an hour: what the collector knows
sooner came with an event push. The test waits on the event at the collector, never on time.
A quiet first state (door closed, on mains) is not an event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CollectorHandle
from tests.helpers import http_get, metric_value, wait_for
from tests.peers.mosquitto import Mosquitto, Publisher
from tests.peers.nut import NutServer, write_dev

PUSH_INTERVAL = 3600.0  # s: an interval push is an hour away, so what arrives within the waits below was pushed at once

ON_BATTERY_UPS = {
    "device.type": "ups", "ups.mfr": "Test Power", "ups.model": "TP-1000", "ups.status": "OB DISCHRG",
    "battery.charge": "80", "battery.runtime": "900", "input.voltage": "0", "output.voltage": "230.0",
    "ups.load": "25",
}


def _agent_events(collector: CollectorHandle, agent: str = "agent-a") -> int:
    agents = json.loads(http_get(collector.url + "/api/v1/agents")[1])["agents"]
    return int(next((a["events"] for a in agents if a["id"] == agent), 0))


def _alert(collector: CollectorHandle, name: str, device: str) -> dict[str, Any] | None:
    alerts = json.loads(http_get(collector.url + "/api/v1/alerts")[1])["alerts"]
    return next((a for a in alerts if a["alertname"] == name and a["labels"].get("device") == device), None)


@pytest.mark.peer("upsd")
def test_ups_already_on_battery_at_agent_start_is_pushed_at_once(
        tmp_path: Path, collector: CollectorHandle, agent_factory: Any, nut_factory: Any) -> None:
    nut: NutServer = nut_factory({"ups1": write_dev(tmp_path / "ups1.dev", ON_BATTERY_UPS)})
    agent_factory(collector.url, collector={"push_interval": f"{PUSH_INTERVAL:g}s"}, host={"enabled": False},
                  devices=[{"name": "ups1", "driver": "nut", "port": nut.port, "ups": "ups1", "interval": "1h"}])
    # The one poll at start reads OB: the ups_on_battery event and the value reach the collector with it.
    wait_for(lambda: _agent_events(collector) >= 1, timeout=30, what="the ups_on_battery event at the collector")
    assert metric_value(collector.metrics(), "roomwatch_ups_on_battery", device="ups1", agent="agent-a") == 1
    alert = wait_for(lambda: _alert(collector, "UPSOnBattery", "ups1"), timeout=10, what="UPSOnBattery")
    assert alert["state"] in ("pending", "firing"), alert


@pytest.mark.peer("mosquitto")
def test_door_open_at_first_message_is_pushed_at_once_and_a_closed_one_is_not_an_event(
        collector: CollectorHandle, agent_factory: Any, mosquitto: Mosquitto, publisher: Publisher) -> None:
    publisher.publish("zigbee2mqtt/door_closed", json.dumps({"contact": True}), retain=True)
    _proc, agent_url = agent_factory(
        collector.url, collector={"push_interval": f"{PUSH_INTERVAL:g}s"}, host={"enabled": False},
        devices=[{"name": "door_closed", "driver": "mqtt", "broker": mosquitto.url, "topic": "zigbee2mqtt/door_closed",
                  "format": "zigbee2mqtt"},
                 {"name": "door_open", "driver": "mqtt", "broker": mosquitto.url, "topic": "zigbee2mqtt/door_open",
                  "format": "zigbee2mqtt"}])
    wait_for(lambda: metric_value(http_get(agent_url + "/metrics")[1].decode(), "roomwatch_door_open",
                                  device="door_closed") == 0, timeout=15, what="the closed door at the agent")
    # The first message of this sensor says the door is open: that alone is an event, pushed at once.
    publisher.publish("zigbee2mqtt/door_open", json.dumps({"contact": False}))
    wait_for(lambda: _agent_events(collector) >= 1, timeout=30, what="the door_open event at the collector")
    text = collector.metrics()
    assert metric_value(text, "roomwatch_door_open", device="door_open", agent="agent-a") == 1
    assert _agent_events(collector) == 1  # the closed door's first state was not an event
