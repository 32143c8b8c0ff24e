"""MQTT device availability (LWT, birth/will, zigbee2mqtt availability): derivation, payloads, and the agent.

The corpus (tests/data/mqtt/availability.yaml) checks which topic each format
derives and how each payload is read, through the driver's own message path.
The rest runs a real agent against a real mosquitto: an "offline" turns the
device down within the agent's one-second watch (max_age is an hour here), its
values stop being current, and "online" plus a new value brings it back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from roomwatch.drivers.mqtt.availability import Availability, read_availability, topic_matches
from roomwatch.drivers.mqtt.connection import BrokerConnection
from roomwatch.drivers.mqtt.driver import MqttConfig, MqttDriver
from roomwatch.drivers.mqtt.payloads import REASONS, PayloadError
from tests.mqtt_helpers import current, make_agent, publish, subscribed, until
from tests.peers.mosquitto import Mosquitto, Publisher
from tests.test_mqtt_formats import RecordingContext

CORPUS = yaml.safe_load((Path(__file__).parent / "data" / "mqtt" / "availability.yaml").read_text(encoding="utf-8"))
T = "roomwatch_temperature_celsius"
UP = "roomwatch_device_up"


def _config(fmt: str, topic: str, options: dict[str, Any] | None = None) -> MqttConfig:
    return MqttConfig(name="dev", driver="mqtt", broker="mqtt://127.0.0.1:1883", topic=topic, format=fmt,
                      **(options or {}))


# ------------------------------------------------------------------ corpus (no broker)

@pytest.mark.parametrize("case", CORPUS["derive"], ids=lambda c: f"{c['format']} {c['topic']} {c.get('options', '')}")
def test_availability_topic_is_derived_from_the_device_topic(case: dict[str, Any]) -> None:
    avail = _config(case["format"], case["topic"], case.get("options")).availability()
    assert (avail.topic if avail else None) == case["availability"]
    if avail is not None:  # subscribed on its own only when the device's filter does not already cover it
        assert topic_matches(case["topic"], avail.topic) == case.get("covered", False)


@pytest.mark.parametrize("case", CORPUS["messages"], ids=lambda c: c["name"])
def test_availability_payloads_are_read_through_the_driver(case: dict[str, Any]) -> None:
    drv = MqttDriver(_config(case["format"], case["topic"], case.get("options")), RecordingContext())
    avail = drv.availability
    assert avail is not None
    payload = bytes.fromhex(case["payload_hex"]) if "payload_hex" in case else str(case["payload"]).encode()
    expect = case["expect"]
    if expect in ("online", "unknown"):  # both clear an earlier offline
        drv.on_message(avail.topic, avail.offline.encode(), len(avail.offline), True, 1.0)
        assert drv.problem() == f"reported offline on {avail.topic}"
    drv.on_message(avail.topic, payload, len(payload), True, 2.0)
    if isinstance(expect, dict):
        assert dict(drv.invalid) == expect["invalid"]
        assert drv.results == {"invalid": 1}
        assert drv.problem() is None  # garbage changes nothing
    else:
        assert not drv.invalid
        assert drv.problem() == (f"reported offline on {avail.topic}" if expect == "offline" else None)
        assert drv.results["availability"] == (1 if expect == "offline" else 2)


def test_messages_while_offline_are_held_and_used_when_it_says_online() -> None:
    """Not current while offline; the newest per topic is the device's state once it says online (the state
    and "online" travel on different topics in no set order, and a door may say nothing more for hours)."""
    ctx = RecordingContext()
    drv = MqttDriver(_config("zigbee2mqtt", "zigbee2mqtt/th"), ctx)
    for topic, payload in (("zigbee2mqtt/th/availability", b'{"state":"offline"}'),
                           ("zigbee2mqtt/th", b'{"temperature": 20.5}'), ("zigbee2mqtt/th", b'{"temperature": 21.5}')):
        drv.on_message(topic, payload, len(payload), False, 1.0)
    assert ctx.emitted == []  # nothing current while it says offline
    drv.on_message("zigbee2mqtt/th/availability", b'{"state":"online"}', 18, False, 2.0)
    assert [[r.value for r in readings] for readings, _ in ctx.emitted] == [[21.5]]  # the newest, at once
    drv.on_message("zigbee2mqtt/th", b'{"temperature": 22.5}', 21, False, 3.0)
    assert [[r.value for r in readings] for readings, _ in ctx.emitted] == [[21.5], [22.5]]
    assert drv.results == {"availability": 2, "ignored": 1, "ok": 2}  # 20.5: replaced while held


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=80) | st.sampled_from([b'{"state":null}', b'{"state":["online"]}', b"[]", b"{}"]),
       json_state=st.booleans())
def test_random_availability_payloads_never_raise_anything_but_payload_errors(payload: bytes, json_state: bool) -> None:
    try:
        read_availability(Availability("a/status", "online", "offline", json_state), payload)
    except PayloadError as exc:
        assert exc.reason in REASONS


# ------------------------------------------------------------------ a real agent and mosquitto

def dev(name: str, peer: Mosquitto, topic: str, fmt: str, **extra: Any) -> dict[str, Any]:
    # max_age an hour: whatever turns these devices down within seconds is their availability.
    return {"name": name, "driver": "mqtt", "broker": peer.url, "topic": topic, "format": fmt, "max_age": "1h",
            "interval": "1s", **extra}


#: device → (entry args, availability topic, offline payload, online payload, value topic, a value payload).
FORMATS: dict[str, tuple[tuple[str, str], dict[str, Any], str, str, str, str, str]] = {
    "ta": (("tele/rack/SENSOR", "tasmota"), {}, "tele/rack/LWT", "Offline", "Online", "tele/rack/SENSOR",
           '{"AM2301":{"Temperature":%s,"Humidity":40}}'),
    "es": (("esp-room/#", "esphome"), {}, "esp-room/status", "offline", "online",
           "esp-room/sensor/room_temperature/state", "%s"),
    "sh": (("shplus/events/rpc", "shelly"), {}, "shplus/online", "false", "true", "shplus/events/rpc",
           '{"method":"NotifyStatus","params":{"temperature:0":{"id":0,"tC":%s}}}'),
    "z2": (("zigbee2mqtt/th", "zigbee2mqtt"), {}, "zigbee2mqtt/th/availability", '{"state":"offline"}',
           '{"state":"online"}', "zigbee2mqtt/th", '{"temperature":%s}'),
    "v": (("plain/t1", "value"), {"kind": "temperature", "availability_topic": "plain/t1/avail",
                                  "payload_available": "up", "payload_not_available": "down"},
          "plain/t1/avail", "down", "up", "plain/t1", "%s"),
}


def _temp(agent: Any, name: str) -> float | None:
    """The device's temperature, whatever its sensor label."""
    from roomwatch.core.exposition import render

    for line in render(agent.latest.families()).decode().splitlines():
        if line.startswith(T + "{") and f'device="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_offline_turns_each_format_down_at_once_and_online_plus_a_value_brings_it_back(
        mosquitto: Mosquitto, publisher: Publisher) -> None:
    agent = make_agent([dev(name, mosquitto, *args, **extra) for name, (args, extra, *_) in FORMATS.items()])
    await agent.start()
    try:
        conn = next(o for o in agent._shared.values() if isinstance(o, BrokerConnection))
        await until(lambda: conn.state.connected, what="connected")
        # One shared connection; a derived topic is subscribed only where the device's filter misses it.
        filters = [t for t, _ in conn._filters()]
        assert filters.count("esp-room/status") == 0 and "esp-room/#" in filters
        assert {"tele/rack/LWT", "shplus/online", "zigbee2mqtt/th/availability", "plain/t1/avail"} <= set(filters)
        await subscribed(agent)
        for *_, value_topic, value in FORMATS.values():
            await publish(publisher, value_topic, value % "21.5")
        await until(lambda: all(_temp(agent, n) == 21.5 for n in FORMATS), what="first values")

        sent_at = time.monotonic()
        for _, _, avail_topic, offline, *_ in FORMATS.values():
            await publish(publisher, avail_topic, offline)
        await until(lambda: all(current(agent, UP, device=n) == 0 for n in FORMATS), timeout=5,
                    what="device_up 0 from the offline messages")
        assert time.monotonic() - sent_at < 60  # the hour-long max_age played no part
        for name, (_, _, avail_topic, *_) in FORMATS.items():
            assert agent.devices[name].reason == f"reported offline on {avail_topic}"
            assert _temp(agent, name) is None, name  # the last value is no longer presented as current

        # A value on its own does not overrule the device's "offline" (it could be a stale one): held.
        await publish(publisher, FORMATS["z2"][5], FORMATS["z2"][6] % "30")
        await until(lambda: len(agent.devices["z2"].driver._held) == 1, what="value while offline")
        await agent.check_silence()  # the watch the agent runs every second, now
        assert agent.devices["z2"].up is False and _temp(agent, "z2") is None

        for _, _, avail_topic, _, online, *_ in FORMATS.values():
            await publish(publisher, avail_topic, online)
        await until(lambda: all(agent.devices[n].driver.problem() is None for n in FORMATS), what="online read")
        for *_, value_topic, value in FORMATS.values():
            await publish(publisher, value_topic, value % "22.5")
        await until(lambda: all(current(agent, UP, device=n) == 1 and _temp(agent, n) == 22.5 for n in FORMATS),
                    what="devices back up with their new values")
        await agent.check_silence()  # and they stay up: nothing left over calls them down
        assert all(agent.devices[n].up for n in FORMATS)
        assert current(agent, "roomwatch_mqtt_messages_total", device="ta", result="availability") == 2
    finally:
        await agent.stop()


async def test_retained_offline_at_startup_counts(mosquitto: Mosquitto, publisher: Publisher) -> None:
    # zigbee2mqtt retains availability; a state retained too is what the sensor said before it went away.
    publisher.publish("zigbee2mqtt/gone", json.dumps({"temperature": 19.5}), retain=True)
    publisher.publish("zigbee2mqtt/gone/availability", json.dumps({"state": "offline"}), retain=True)
    publisher.publish("tele/old/LWT", "Offline", retain=True)
    agent = make_agent([dev("gone", mosquitto, "zigbee2mqtt/gone", "zigbee2mqtt"),
                        dev("old", mosquitto, "tele/old/+", "tasmota")])
    samples: list[Any] = []
    agent.observers.append(lambda d, s, ev: samples.extend(x for x in s if x.metric == T))
    await agent.start()
    try:
        await until(lambda: current(agent, UP, device="gone") == 0 and current(agent, UP, device="old") == 0,
                    timeout=5, what="devices down from the retained offline")
        assert agent.devices["gone"].reason == "reported offline on zigbee2mqtt/gone/availability"
        assert agent.devices["old"].reason == "reported offline on tele/old/LWT"
        assert agent.devices["gone"].driver.results == {"availability": 1}
        assert samples == []  # the retained state under a retained offline was never shown as current
        # The sensor comes back: zigbee2mqtt says online, then publishes its state.
        await publish(publisher, "zigbee2mqtt/gone/availability", json.dumps({"state": "online"}), retain=True)
        await publish(publisher, "zigbee2mqtt/gone", json.dumps({"temperature": 20.5}))
        await until(lambda: current(agent, UP, device="gone") == 1 and current(agent, T, device="gone") == 20.5,
                    what="back up")
    finally:
        await agent.stop()


async def test_garbage_availability_is_counted_and_changes_nothing(
        mosquitto: Mosquitto, publisher: Publisher) -> None:
    agent = make_agent([dev("z", mosquitto, "zigbee2mqtt/th", "zigbee2mqtt"),
                        dev("t", mosquitto, "tele/rack/+", "tasmota")])
    await agent.start()
    try:
        await subscribed(agent)
        await publish(publisher, "zigbee2mqtt/th", json.dumps({"temperature": 23.0}))
        await publish(publisher, "tele/rack/SENSOR", json.dumps({"AM2301": {"Temperature": 24.0}}))
        await until(lambda: current(agent, T, device="z") == 23.0 and _temp(agent, "t") == 24.0, what="values")
        for payload in (b"maybe", b'{"state":', b'{"state":1}', b"{}", b"\xff\xfe"):
            await publish(publisher, "zigbee2mqtt/th/availability", payload)
        await publish(publisher, "tele/rack/LWT", "Sleeping")
        z, t = agent.devices["z"].driver, agent.devices["t"].driver
        await until(lambda: z.results["invalid"] == 5 and t.results["invalid"] == 1, what="all counted")
        assert dict(z.invalid) == {"wrong_type": 2, "not_json": 1, "missing_field": 1, "not_utf8": 1}
        assert dict(t.invalid) == {"wrong_type": 1}
        await agent.check_silence()  # the watch the agent runs every second, now
        assert agent.devices["z"].up and agent.devices["t"].up
        assert current(agent, T, device="z") == 23.0 and _temp(agent, "t") == 24.0
        await until(lambda: current(agent, "roomwatch_mqtt_messages_invalid_total", device="z", reason="wrong_type")
                    == 2, what="counters in the agent's metrics")
    finally:
        await agent.stop()


async def test_empty_availability_topic_turns_it_off(mosquitto: Mosquitto, publisher: Publisher) -> None:
    agent = make_agent([dev("t", mosquitto, "tele/rack/SENSOR", "tasmota", availability_topic=""),
                        dev("z", mosquitto, "zigbee2mqtt/th/+", "zigbee2mqtt", availability_topic="")])
    await agent.start()
    try:
        conn = next(o for o in agent._shared.values() if isinstance(o, BrokerConnection))
        await subscribed(agent)
        assert [t for t, _ in conn._filters()] == ["tele/rack/SENSOR", "zigbee2mqtt/th/+"]  # no LWT subscription
        await publish(publisher, "tele/rack/SENSOR", json.dumps({"AM2301": {"Temperature": 24.0}}))
        await publish(publisher, "zigbee2mqtt/th/temperature", "23.0")
        await until(lambda: _temp(agent, "t") == 24.0 and current(agent, T, device="z") == 23.0, what="values")
        await publish(publisher, "tele/rack/LWT", "Offline")  # not subscribed: never arrives
        await publish(publisher, "zigbee2mqtt/th/availability", json.dumps({"state": "offline"}))  # arrives, ignored
        z = agent.devices["z"].driver
        await until(lambda: z.results["ignored"] == 1, what="the availability message read as nothing")
        await agent.check_silence()  # the watch the agent runs every second, now
        assert agent.devices["t"].up and agent.devices["z"].up
        assert z.results == {"ok": 1, "ignored": 1} and not z.invalid
    finally:
        await agent.stop()
