"""A door opened, end to end with real processes (issue 5): MQTT publish to mosquitto → roomwatch agent (mqtt
driver) → roomwatch collector (default rules + a test rule file) → webhook channel → a receiver that accepts only
Alertmanager's webhook JSON v4. The latency distribution over 200 doors is ``bench/e2e_door.py``."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest

from tests.door_rig import ROOM, SITE, SUMMARY, DoorPipeline
from tests.helpers import alerting_settled, http_get, metric_value, wait_for
from tests.peers.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.peer  # every test here starts a process


def test_door_opened_over_mqtt_reaches_the_webhook(tmp_path: Path, webhook_receiver: WebhookReceiver) -> None:
    rig = DoorPipeline(tmp_path, webhook_receiver, ["door1"])
    try:
        for i in range(3):
            time.sleep(1.1)  # the scenario: a person opens the door past the group's interval (1 s) after the last
            t_open = rig.flip("door1", True)
            at, body = rig.wait("door1", "firing", t_open)
            assert body["version"] == "4" and body["receiver"] == "hook" and body["status"] == "firing"
            assert body["externalURL"] == "http://roomwatch.example:9640"
            assert body["groupLabels"] == {"site": SITE, "room": ROOM, "device": "door1"}
            [alert] = body["alerts"]
            labels = alert["labels"]
            assert labels == {"alertname": "DoorOpened", "severity": "warning", "site": SITE, "room": ROOM,
                              "device": "door1", "agent": "room1"}, labels
            assert alert["annotations"]["summary"] == SUMMARY
            assert alert["annotations"]["description"] == "door1 门已打开（打开）。"
            starts = dt.datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00")).timestamp()
            assert t_open - 1 <= starts <= at  # the sample's time: when the agent got the MQTT message
            # the link names this episode: <fingerprint>-<episode>
            assert re.fullmatch(rf"http://roomwatch\.example:9640/#/alerts/{alert['fingerprint']}-\d+",
                                alert["generatorURL"]), alert["generatorURL"]
            time.sleep(1.1)
            t_close = rig.flip("door1", False)
            _, body = rig.wait("door1", "resolved", t_close)
            [alert] = body["alerts"]
            assert alert["labels"]["alertname"] == "DoorOpened" and alert["endsAt"] != "0001-01-01T00:00:00Z"
            print(f"\nround {i}: publish → firing webhook {1000 * (at - t_open):.1f} ms")
        # nothing else comes: every group flushed since the last transition and nothing queued
        wait_for(lambda: alerting_settled(rig.workdir / "collector.db", t_close), timeout=20, what="alerting idle")
        # Exactly one message per transition, nothing else on this route (DoorOpenedOutOfHours is not routed here).
        assert [(r.body["status"], r.body["alerts"][0]["labels"]["alertname"]) for r in webhook_receiver.received] == [
            ("firing", "DoorOpened"), ("resolved", "DoorOpened")] * 3
        text = rig.collector.log()
        assert "Traceback" not in text
        status, body_m = http_get(rig.collector_url + "/metrics")
        assert status == 200
        assert metric_value(body_m.decode(), "roomwatch_notifications_total", channel="hook", outcome="delivered") == 6
    finally:
        rig.stop()
