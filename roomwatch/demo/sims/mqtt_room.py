"""Demo: a temperature/humidity sensor, a door, a leak sensor and a smoke detector over MQTT, as zigbee2mqtt
publishes them.

Starts a broker on an ephemeral 127.0.0.1 port and the simulated bridge
(:mod:`roomwatch.demo.sims.mqtt_publisher`) as a subprocess. The broker is mosquitto
when it is installed (what rooms run), otherwise amqtt, a pure-Python broker from
the ``demo`` extra, so ``pip install 'roomwatch[demo]'`` alone shows the whole room.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from roomwatch.demo.context import DemoContext, Simulator, free_port

DOOR_OPEN, DOOR_OFFSET = 40.0, 30.0  # s: open for 40 s, first 30 s after the start (ctx.door_every: default 3 min)


def door_schedule(every: float) -> tuple[float, float]:
    """(open for, first opening after) in seconds for a door that opens every ``every`` seconds.

    40 s open and a first opening 30 s in, or half the period each when that is shorter
    (``roomwatch demo --door-every 20s``: open 10 s, closed 10 s, first opening after 10 s).
    """
    return min(DOOR_OPEN, every / 2), min(DOOR_OFFSET, every / 2)


def _human(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def _wait_port(port: int, proc: Any, timeout: float = 15.0, what: str = "mosquitto") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.3)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def find_mosquitto() -> str | None:
    """mosquitto's path; Debian puts it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def _start_broker(ctx: DemoContext, port: int) -> str:
    """Start mosquitto, or else amqtt, on 127.0.0.1:``port``; return the broker's name."""
    binary = find_mosquitto()
    if binary is not None:
        conf = ctx.workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
        name, argv = "mosquitto", [binary, "-c", str(conf)]
    elif importlib.util.find_spec("amqtt") is not None:
        conf = ctx.workdir / "amqtt.yaml"  # JSON is YAML: no need to import yaml here
        conf.write_text(json.dumps({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                                    "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                                {"allow_anonymous": True}}}))
        name, argv = "amqtt", [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
    else:
        raise RuntimeError("no MQTT broker: apt-get install mosquitto, or pip install 'roomwatch[demo]' (amqtt); "
                           "no MQTT sensors in this demo")
    _wait_port(port, ctx.spawn(argv, name), what=name)
    return name


def start(ctx: DemoContext) -> list[dict[str, Any]]:
    """Start a broker and the publisher; return the agent's MQTT device entries."""
    port = free_port()
    broker = _start_broker(ctx, port)
    root = str(Path(__file__).resolve().parents[2])  # so the child imports this roomwatch, installed or not
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    every = ctx.door_every
    open_for, offset = door_schedule(every)
    ctx.spawn([sys.executable, "-m", "roomwatch.demo.sims.mqtt_publisher", "--port", str(port), "--door-every",
               str(every), "--door-open", str(open_for), "--door-offset", str(offset)], "mqtt-publisher", env=env)
    url = f"mqtt://127.0.0.1:{port}"
    ctx.notes.append(f"MQTT broker {url} ({broker}): zigbee2mqtt/room-th1, door1, leak1 and smoke1; the door opens "
                     f"for {_human(open_for)} every {_human(every)}. Watch: mosquitto_sub -p {port} -t 'zigbee2mqtt/#' -v")
    return [
        {"name": "room-th1", "driver": "mqtt", "broker": url, "topic": "zigbee2mqtt/room-th1", "format": "zigbee2mqtt",
         "max_age": "1m", "labels": {"location": "cold-aisle"}},
        {"name": "door1", "driver": "mqtt", "broker": url, "topic": "zigbee2mqtt/door1", "format": "zigbee2mqtt"},
        {"name": "leak1", "driver": "mqtt", "broker": url, "topic": "zigbee2mqtt/leak1", "format": "zigbee2mqtt"},
        {"name": "smoke1", "driver": "mqtt", "broker": url, "topic": "zigbee2mqtt/smoke1", "format": "zigbee2mqtt"},
    ]


SIMULATOR = Simulator("MQTT room sensors (zigbee2mqtt over mosquitto or amqtt)", start)
