"""Demo: a temperature/humidity sensor, a door, a leak sensor and a smoke detector over MQTT, as zigbee2mqtt
publishes them.

Starts mosquitto on an ephemeral 127.0.0.1 port and the simulated bridge
(:mod:`roomwatch.sims.mqtt_publisher`) as a subprocess. Without mosquitto the
simulator is skipped with a note (``apt-get install mosquitto``): an embedded
Python broker (amqtt) was considered, but it would add a dependency and a
second code path the tests never use, for a demo only.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from roomwatch.demo import SIMULATORS, DemoContext, Simulator, free_port

DOOR_EVERY, DOOR_OPEN = 180, 40  # s: the door opens for 40 s every 3 minutes


def _wait_port(port: int, proc: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with code {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.3)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def start(ctx: DemoContext) -> list[dict[str, Any]]:
    """Start mosquitto and the publisher; return the agent's MQTT device entries."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if binary is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto); no MQTT sensors in this demo")
    port = free_port()
    conf = ctx.workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
    broker = ctx.spawn([binary, "-c", str(conf)], "mosquitto")
    _wait_port(port, broker)
    root = str(Path(__file__).resolve().parents[2])  # so the child imports this roomwatch, installed or not
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    ctx.spawn([sys.executable, "-m", "roomwatch.sims.mqtt_publisher", "--port", str(port), "--door-every",
               str(DOOR_EVERY), "--door-open", str(DOOR_OPEN)], "mqtt-publisher", env=env)
    url = f"mqtt://127.0.0.1:{port}"
    ctx.notes.append(f"MQTT broker {url} (mosquitto): zigbee2mqtt/room-th1, door1, leak1 and smoke1; the door opens "
                     f"for {DOOR_OPEN}s every {DOOR_EVERY // 60} min. Watch: mosquitto_sub -p {port} -t 'zigbee2mqtt/#' -v")
    return [
        {"name": "room-th1", "driver": "mqtt", "broker": url, "topic": "zigbee2mqtt/room-th1", "format": "zigbee2mqtt",
         "max_age": "1m", "labels": {"location": "cold-aisle"}},
        {"name": "door1", "driver": "mqtt", "broker": url, "topic": "zigbee2mqtt/door1", "format": "zigbee2mqtt"},
        {"name": "leak1", "driver": "mqtt", "broker": url, "topic": "zigbee2mqtt/leak1", "format": "zigbee2mqtt"},
        {"name": "smoke1", "driver": "mqtt", "broker": url, "topic": "zigbee2mqtt/smoke1", "format": "zigbee2mqtt"},
    ]


SIMULATORS.append(Simulator("MQTT room sensors (zigbee2mqtt over mosquitto)", start))
