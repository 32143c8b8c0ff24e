"""The demo's MQTT room: mosquitto + the simulated zigbee2mqtt bridge, read by a real agent."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from pathlib import Path

import pytest

from roomwatch.demo.run import DemoContext, _stop
from roomwatch.demo.sims.mqtt_publisher import Room
from tests.helpers import require_binary


def test_door_schedule_opens_for_a_while_every_period() -> None:
    opened = [t for t in range(390) if Room.door_open(t, every=180, open_for=40, offset=30)]
    assert opened[0] == 30 and opened[39] == 69 and len(opened) == 80 and opened[40] == 210


def test_values_drift_slowly_and_stay_plausible() -> None:
    room = Room(seed=7)
    temps = []
    for _ in range(8640):  # a day in 10 s steps
        room.step(10)
        temps.append(room.th_payload()["temperature"])
    assert min(temps) > 18 and max(temps) < 30
    assert max(abs(a - b) for a, b in itertools.pairwise(temps)) < 1.0  # drifts, does not jump


@pytest.mark.peer
@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_simulator_publishes_zigbee2mqtt_messages(tmp_path: Path, broker: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With mosquitto, or without it (amqtt from the demo extra): the four sensors publish."""
    import paho.mqtt.client as mqtt

    from roomwatch.demo.sims import mqtt_room

    if broker == "mosquitto":
        require_binary("/usr/sbin/mosquitto")
    else:
        monkeypatch.setattr(mqtt_room, "find_mosquitto", lambda: None)  # a machine without mosquitto
    ctx = DemoContext(tmp_path)
    try:
        devices = mqtt_room.start(ctx)
        assert f"({broker})" in ctx.notes[-1]
        assert {d["name"] for d in devices} == {"room-th1", "door1", "leak1", "smoke1"}
        port = int(devices[0]["broker"].rsplit(":", 1)[1])
        got: dict[str, dict[str, object]] = {}
        done = threading.Event()

        def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
            got[msg.topic] = json.loads(msg.payload)
            if len(got) == 4:
                done.set()

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_connect = lambda c, *a: c.subscribe("zigbee2mqtt/#", 1)
        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        try:
            assert done.wait(20), f"only got {got}"
        finally:
            sub.disconnect()
            sub.loop_stop()
        th = got["zigbee2mqtt/room-th1"]
        assert 18 < float(th["temperature"]) < 30 and 0 <= float(th["humidity"]) <= 100  # type: ignore[arg-type]
        assert got["zigbee2mqtt/door1"]["contact"] is True  # closed for the first 30 s
        assert got["zigbee2mqtt/leak1"]["water_leak"] is False and got["zigbee2mqtt/smoke1"]["smoke"] is False
    finally:
        _stop(ctx.processes)
        for cleanup in ctx.cleanups:
            with contextlib.suppress(Exception):
                cleanup()


def test_door_schedule_follows_door_every() -> None:
    from roomwatch.demo.sims.mqtt_room import door_schedule

    assert door_schedule(180) == (40, 30)  # the default: open 40 s every 3 min, first after 30 s
    assert door_schedule(20) == (10, 10)  # roomwatch demo --door-every 20s: half open, half closed
    opened = [t for t in range(60) if Room.door_open(t, 20, *door_schedule(20))]
    assert opened == list(range(10, 20)) + list(range(30, 40)) + list(range(50, 60))
