"""A simulated zigbee2mqtt bridge for the demo: a temperature/humidity sensor, a door, a leak sensor, a smoke detector.

``python -m roomwatch.demo.sims.mqtt_publisher --port N`` publishes (retained, QoS 1)
to the broker on 127.0.0.1:N what zigbee2mqtt would publish for an Aqara
WSDCGQ11LM, an MCCGQ11LM, an SJCGQ11LM and a Heiman HS1SA
(https://www.zigbee2mqtt.io/devices/WSDCGQ11LM.html, .../MCCGQ11LM.html,
.../SJCGQ11LM.html, .../HS1SA.html): the temperature and humidity drift slowly,
the door opens for ``--door-open`` seconds every ``--door-every``; the floor stays
dry and the air clear (they check in every minute). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
from typing import Any

__all__ = ["Room", "main"]


class Room:
    """The simulated room's state; :meth:`step` advances it by ``dt`` seconds."""

    def __init__(self, seed: int | None = None):
        self.rng = random.Random(seed)
        self.temperature = 24.0
        self.humidity = 45.0
        self.battery = 95.0

    def step(self, dt: float) -> None:
        # A slow random walk pulled back towards a mid-range value, so it drifts but never runs away.
        self.temperature += self.rng.gauss(0, 0.05) * dt ** 0.5 + (24.0 - self.temperature) * 0.002 * dt
        self.humidity += self.rng.gauss(0, 0.15) * dt ** 0.5 + (45.0 - self.humidity) * 0.002 * dt
        self.battery = max(5.0, self.battery - 0.001 * dt)

    def th_payload(self) -> dict[str, Any]:
        return {"battery": round(self.battery), "humidity": round(self.humidity, 1), "linkquality": self.rng.randint(90, 150),
                "pressure": 1012.4, "temperature": round(self.temperature, 2), "voltage": 3005}

    @staticmethod
    def door_open(t: float, every: float, open_for: float, offset: float) -> bool:
        """Open for ``open_for`` s out of every ``every`` s, first ``offset`` s after the start."""
        return t >= offset and (t - offset) % every < open_for


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", default="zigbee2mqtt", help="zigbee2mqtt base topic")
    p.add_argument("--sensor", default="room-th1", help="friendly name of the temperature/humidity sensor")
    p.add_argument("--door", default="door1", help="friendly name of the door sensor")
    p.add_argument("--leak", default="leak1", help="friendly name of the water leak sensor ('' = none)")
    p.add_argument("--smoke", default="smoke1", help="friendly name of the smoke detector ('' = none)")
    p.add_argument("--period", type=float, default=10.0, help="seconds between sensor reports")
    p.add_argument("--door-every", type=float, default=180.0)
    p.add_argument("--door-open", type=float, default=40.0)
    p.add_argument("--door-offset", type=float, default=30.0, help="seconds before the first opening")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"roomwatch-demo-z2m-{args.port}")
    client.reconnect_delay_set(1, 5)
    client.connect_async(args.host, args.port)
    client.loop_start()
    room = Room(args.seed)
    start = last_th = last_door_report = time.monotonic() - args.period
    door: bool | None = None
    try:
        while not stop.is_set():
            now = time.monotonic()
            t = now - start
            if now - last_th >= args.period:
                room.step(now - last_th)
                client.publish(f"{args.prefix}/{args.sensor}", json.dumps(room.th_payload()), qos=1, retain=True)
                last_th = now
            is_open = room.door_open(t - args.period, args.door_every, args.door_open, args.door_offset)
            # zigbee2mqtt publishes on every change, and the Aqara sensor checks in about hourly; here every minute.
            if is_open != door or now - last_door_report >= 60:
                door, last_door_report = is_open, now
                client.publish(f"{args.prefix}/{args.door}", json.dumps(
                    {"battery": 100, "contact": not is_open, "device_temperature": 27, "linkquality": 84, "voltage": 3025}),
                    qos=1, retain=True)
                if args.leak:
                    client.publish(f"{args.prefix}/{args.leak}", json.dumps(
                        {"battery": 91, "device_temperature": 25, "linkquality": 102, "voltage": 2995,
                         "water_leak": False}), qos=1, retain=True)
                if args.smoke:
                    client.publish(f"{args.prefix}/{args.smoke}", json.dumps(
                        {"battery": 100, "battery_low": False, "linkquality": 76, "smoke": False, "tamper": False}),
                        qos=1, retain=True)
            stop.wait(0.2)
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
