"""A door alert pipeline of real processes, for the end-to-end test and ``bench/e2e_door.py``:

    MQTT publish → mosquitto → ``roomwatch agent`` (mqtt driver, zigbee2mqtt door sensors)
    → ``roomwatch collector`` (default rules + a test rule file) → ``webhook`` channel → receiver

The test rule ``DoorOpened`` (``roomwatch_door_open == 1``, ``for: 0s``, clears on ``== 0``) does
not depend on the wall clock, unlike the default ``DoorOpenedOutOfHours``; the route sends only
it, with ``group_wait: 0s`` and ``send_resolved`` on. The agent pushes every 60 s, so anything
that arrives sooner came as the door event the agent pushes at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.helpers import RoomwatchProcess, free_port, http_get, metric_value, wait_for, write_yaml
from tests.peers.mosquitto import Mosquitto, Publisher
from tests.peers.webhook_receiver import WebhookReceiver

SITE, ROOM = "县政务中心", "1号机房"
TOKEN = "door-rig-token-0123456789"
SUMMARY = "机房门已打开"
GROUP_INTERVAL = 1.0  # s; a transition sooner than this after the group's last message waits for the window

RULE_FILE = {"rules": [{
    "alert": "DoorOpened", "severity": "warning", "metric": "roomwatch_door_open", "when": "== 1", "clear": "== 0",
    "for": "0s",
    "annotations": {"summary": {"zh-CN": SUMMARY, "en": "Door opened"},
                    "description": {"zh-CN": "{{ $labels.device }} 门已打开（{{ $value }}）。",
                                    "en": "{{ $labels.device }} is {{ $value }}."}}}]}


class DoorPipeline:
    """Start everything in ``workdir``; :meth:`flip` publishes a door state and returns the publish time."""

    def __init__(self, workdir: Path, receiver: WebhookReceiver, doors: list[str], log_level: str = "info"):
        self.workdir = workdir
        self.doors = doors
        self.receiver = receiver
        self.procs: list[RoomwatchProcess] = []
        self.broker = Mosquitto(workdir / "mosquitto")
        try:
            self._start(log_level)
        except BaseException:
            self.stop()
            raise

    def _start(self, log_level: str) -> None:
        w = self.workdir
        rules = write_yaml(w / "door-rules.yaml", RULE_FILE)
        cport = free_port()
        self.collector_url = f"http://127.0.0.1:{cport}"
        cconf = write_yaml(w / "collector.yaml", {
            "listen": f"127.0.0.1:{cport}", "storage": str(w / "collector.db"), "log_level": log_level,
            "agents": [{"id": "room1", "token": TOKEN}],
            "rules": {"files": [str(rules)]},
            "channels": [{"name": "hook", "type": "webhook", "url": self.receiver.url + "/door", "timeout": "5s",
                          "send_resolved": True}],
            "routes": [{"matchers": ['alertname="DoorOpened"'], "channels": ["hook"], "group_by": ["site", "room", "device"],
                        "group_wait": "0s", "group_interval": f"{GROUP_INTERVAL:g}s"}],
            "alerts": {"retry_initial": "200ms", "retry_max": "1s", "external_url": "http://roomwatch.example:9640"},
        })
        self.collector = RoomwatchProcess(["collector", "-c", str(cconf)], w / "collector.log")
        self.procs.append(self.collector)
        wait_for(lambda: http_get(self.collector_url + "/readyz", timeout=1)[0] == 200, proc=self.collector.proc,
                 what="collector /readyz")
        aport = free_port()
        self.agent_url = f"http://127.0.0.1:{aport}"
        aconf = write_yaml(w / "agent.yaml", {
            "agent": {"id": "room1", "site": SITE, "room": ROOM, "listen": f"127.0.0.1:{aport}",
                      "spool": str(w / "agent-spool.db"), "log_level": log_level},
            "collector": {"urls": [self.collector_url], "token": TOKEN, "push_interval": "60s"},
            "host": {"enabled": False},
            "devices": [{"name": d, "driver": "mqtt", "broker": self.broker.url, "topic": f"zigbee2mqtt/{d}",
                         "format": "zigbee2mqtt"} for d in self.doors],
        })
        self.agent = RoomwatchProcess(["agent", "-c", str(aconf)], w / "agent.log")
        self.procs.append(self.agent)
        wait_for(lambda: http_get(self.agent_url + "/healthz", timeout=1)[0] == 200, proc=self.agent.proc,
                 what="agent /healthz")
        self.publisher = Publisher(self.broker)
        # Closed to begin with, retained (the agent may subscribe after this); seen by the agent before we go on.
        for d in self.doors:
            self.publisher.publish(f"zigbee2mqtt/{d}", self.payload(d, False), retain=True)
        for d in self.doors:
            wait_for(lambda d=d: metric_value(http_get(self.agent_url + "/metrics")[1].decode(), "roomwatch_door_open",
                                              device=d) == 0, timeout=30, what=f"{d} closed at the agent")

    @staticmethod
    def payload(door: str, is_open: bool) -> str:
        # zigbee2mqtt contact sensors: "contact": true means closed.
        return json.dumps({"contact": not is_open, "battery": 90, "linkquality": 80, "voltage": 3000})

    def flip(self, door: str, is_open: bool) -> float:
        """Publish the new state (QoS 1, acknowledged by the broker); return the time just before publishing."""
        t0 = time.time()
        self.publisher.publish(f"zigbee2mqtt/{door}", self.payload(door, is_open), retain=True)
        return t0

    def find(self, door: str, status: str, after: float) -> tuple[float, dict[str, Any]] | None:
        """(arrival time, body) of the first webhook message about ``door`` with ``status`` that came after ``after``."""
        for r in list(self.receiver.received):
            if r.at < after:
                continue
            for a in r.body["alerts"]:
                if a["labels"].get("device") == door and a["status"] == status and r.body["status"] == status:
                    return r.at, r.body
        return None

    def wait(self, door: str, status: str, after: float, timeout: float = 20.0) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(door, status, after)
            if found is not None:
                return found
            time.sleep(0.001)
        raise AssertionError(f"no {status} message for {door} within {timeout}s\n{self.collector.log()[-3000:]}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        if getattr(self, "publisher", None) is not None:
            self.publisher.close()
            self.publisher = None  # type: ignore[assignment]
        self.broker.stop()
