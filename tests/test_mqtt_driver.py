"""MQTT driver against a real mosquitto: formats, retained state, broker restart, TLS + password, bad input."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

from roomwatch.drivers.mqtt import connection
from roomwatch.drivers.mqtt.connection import BrokerConnection
from tests.mqtt_helpers import current, make_agent, publish, subscribed, until
from tests.peers.mosquitto import PASSWORD, USER, Mosquitto, Publisher

T = "roomwatch_temperature_celsius"
H = "roomwatch_humidity_ratio"
DOOR = "roomwatch_door_open"


def dev(name: str, peer: Mosquitto, topic: str, fmt: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "driver": "mqtt", "broker": peer.url, "topic": topic, "format": fmt, **extra}


async def test_every_format_over_one_shared_connection(mosquitto: Mosquitto, publisher: Publisher) -> None:
    agent = make_agent([
        dev("v1", mosquitto, "plain/t1", "value", kind="temperature"),
        dev("j1", mosquitto, "json/room", "json", field="sensors[1].rh", kind="humidity"),
        dev("z1", mosquitto, "zigbee2mqtt/th1", "zigbee2mqtt"),
        dev("zd", mosquitto, "zigbee2mqtt/door1", "zigbee2mqtt"),
        dev("ta", mosquitto, "tele/tasmota_01/+", "tasmota"),
        dev("es", mosquitto, "esp-room/#", "esphome"),
        dev("sh", mosquitto, "shellyplusht-a8/#", "shelly"),
    ])
    await agent.start()
    try:
        await subscribed(agent)
        await publish(publisher, "plain/t1", "21.5")
        await publish(publisher, "json/room", json.dumps({"sensors": [{"rh": 10}, {"rh": 48.5}]}))
        await publish(publisher, "zigbee2mqtt/th1", json.dumps({"temperature": 24.3, "humidity": 51.2, "battery": 87,
                                                                "linkquality": 120}))
        await publish(publisher, "zigbee2mqtt/door1", json.dumps({"contact": False, "battery": 100}))
        await publish(publisher, "tele/tasmota_01/SENSOR", json.dumps({
            "Time": "2024-05-01T10:00:00", "DS18B20-1": {"Id": "01144A0CB2AA", "Temperature": 22.1},
            "DS18B20-2": {"Id": "0316A27989FF", "Temperature": 71.6}, "TempUnit": "F"}))
        await publish(publisher, "esp-room/sensor/room_temperature/state", "23.25")
        await publish(publisher, "esp-room/binary_sensor/back_door/state", "ON")
        await publish(publisher, "shellyplusht-a8/status/humidity:0", json.dumps({"id": 0, "rh": 40.1}))
        await until(lambda: current(agent, H, device="sh") is not None, what="the last message")
        assert current(agent, T, device="v1") == 21.5
        assert current(agent, H, device="j1") == pytest.approx(0.485)
        assert current(agent, T, device="z1") == 24.3
        assert current(agent, H, device="z1") == pytest.approx(0.512)
        assert current(agent, "roomwatch_sensor_battery_ratio", device="z1") == pytest.approx(0.87)
        assert current(agent, "roomwatch_sensor_link_quality", device="z1") == 120
        assert current(agent, DOOR, device="zd") == 1  # contact false = open
        assert current(agent, T, device="ta", sensor="01144A0CB2AA") == pytest.approx(-5.5)  # 22.1 °F
        assert current(agent, T, device="ta", sensor="0316A27989FF") == pytest.approx(22.0)  # 71.6 °F
        assert current(agent, T, device="es", sensor="room_temperature") == 23.25
        assert current(agent, DOOR, device="es", sensor="back_door") == 1
        assert current(agent, H, device="sh", sensor="humidity:0") == pytest.approx(0.401)
        assert current(agent, "roomwatch_device_up", device="zd") == 1
        conns = [o for o in agent._shared.values() if isinstance(o, BrokerConnection)]
        assert len(conns) == 1 and conns[0].state.connects == 1  # one connection for seven devices
        # A device reports only what it has: no humidity for the door, no made-up zero.
        assert current(agent, H, device="zd") is None
    finally:
        await agent.stop()


async def test_retained_state_is_taken_on_subscribe(mosquitto: Mosquitto, publisher: Publisher) -> None:
    publisher.publish("zigbee2mqtt/door2", json.dumps({"contact": True}), retain=True)
    publisher.publish("zigbee2mqtt/th2", json.dumps({"temperature": 19.5}), retain=True)
    agent = make_agent([dev("d2", mosquitto, "zigbee2mqtt/door2", "zigbee2mqtt"),
                        dev("t2", mosquitto, "zigbee2mqtt/th2", "zigbee2mqtt")])
    events: list[str] = []
    agent.observers.append(lambda d, s, ev: events.extend(e.type for e in ev))
    await agent.start()
    try:
        await until(lambda: current(agent, DOOR, device="d2") == 0 and current(agent, T, device="t2") == 19.5,
                    what="retained states")
        assert events == []  # a retained state is the current state, not a transition
    finally:
        await agent.stop()


async def test_broker_restart_resubscribes_without_agent_restart(mosquitto: Mosquitto) -> None:
    agent = make_agent([dev("t3", mosquitto, "sensors/+/temperature", "value", kind="temperature", qos=0)])
    await agent.start()
    pub = Publisher(mosquitto)
    try:
        await until(lambda: agent._shared and next(iter(agent._shared.values())).state.connected, what="connected")
        await publish(pub, "sensors/a/temperature", "20.5")
        await until(lambda: current(agent, T, device="t3") == 20.5, what="first value")
        pub.close()
        await asyncio.to_thread(mosquitto.restart)  # no persistence: the broker forgets every session
        conn = next(iter(agent._shared.values()))
        await until(lambda: conn.state.connects >= 2, timeout=20, what="the agent to reconnect")
        await subscribed(agent)
        pub = Publisher(mosquitto)
        await publish(pub, "sensors/a/temperature", "26.0")
        await until(lambda: current(agent, T, device="t3") == 26.0, timeout=10, what="a message after the restart")
        assert agent.devices["t3"].up is True  # a one-second outage is below the grace: no DeviceDown flap
    finally:
        pub.close()
        await agent.stop()


# paho leaves the socket of a failed TLS handshake to the garbage collector (client.py _ssl_wrap_socket).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_tls_and_password_on_second_listener(mosquitto_tls: Mosquitto,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "DOWN_GRACE", 1.0)
    assert mosquitto_tls.tls is not None
    good = {"broker": mosquitto_tls.tls_url, "username": USER, "password": PASSWORD,
            "tls": {"ca_file": str(mosquitto_tls.tls.ca_cert)}}
    agent = make_agent([
        dev("tls5", mosquitto_tls, "secure/t", "value", kind="temperature", protocol=5, **good),
        dev("tls311", mosquitto_tls, "secure/t", "value", kind="temperature", **good),
        dev("badpw", mosquitto_tls, "secure/t", "value", kind="temperature",
            **{**good, "password": "wrong", "client_id": "rw-badpw"}),
        dev("noca", mosquitto_tls, "secure/t", "value", kind="temperature",
            **{**good, "tls": {}, "client_id": "rw-noca"}),
        dev("insecure", mosquitto_tls, "secure/t", "value", kind="temperature",
            **{**good, "tls": {"insecure_skip_verify": True}, "client_id": "rw-insecure"}),
    ])
    await agent.start()
    pub = Publisher(mosquitto_tls)  # the anonymous plain listener; same broker
    try:
        await until(lambda: sum(c.state.connected for c in agent._shared.values()) == 3, what="3 TLS connections")
        await publish(pub, "secure/t", "22.5")
        await until(lambda: all(current(agent, T, device=d) == 22.5 for d in ("tls5", "tls311", "insecure")),
                    what="values over TLS")
        # Wrong password and an unknown CA never connect; after the grace the devices show down with the reason.
        await until(lambda: agent.devices["badpw"].up is False and agent.devices["noca"].up is False, timeout=10,
                    what="misconfigured devices down")
        assert "unreachable" in agent.devices["badpw"].reason
        assert "refused" in agent.devices["badpw"].reason or "not authorised" in agent.devices["badpw"].reason.lower()
        assert current(agent, T, device="badpw") is None
        assert "certificate not trusted" in agent.devices["noca"].reason, agent.devices["noca"].reason
        assert PASSWORD not in agent.devices["badpw"].reason
    finally:
        pub.close()
        await agent.stop()


async def test_bad_messages_are_counted_and_the_last_good_value_stays(mosquitto: Mosquitto,
                                                                      publisher: Publisher,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="roomwatch")
    agent = make_agent([dev("z", mosquitto, "zigbee2mqtt/th", "zigbee2mqtt")])
    await agent.start()
    try:
        await subscribed(agent)
        await publish(publisher, "zigbee2mqtt/th", json.dumps({"temperature": 23.0, "humidity": 40}))
        await until(lambda: current(agent, T, device="z") == 23.0, what="good value")
        bad = [b"not json", b"\xff\xfe\x00", b'{"temperature": NaN}', b'{"temperature": "hot"}',
               b'{"temperature": 900}', b"x" * (64 * 1024 + 1), b"[1, 2]", b'{"temperature": 1e999}',
               b'{"humidity": -5}']
        for payload in bad:
            await publish(publisher, "zigbee2mqtt/th", payload)
        await publish(publisher, "zigbee2mqtt/th", json.dumps({"humidity": 41, "temperature": 950}))  # half good
        drv = agent.devices["z"].driver
        await until(lambda: sum(drv.results.values()) == 11, what="all messages handled")
        assert current(agent, T, device="z") == 23.0  # never poisoned
        assert current(agent, H, device="z") == pytest.approx(0.41)
        assert dict(drv.invalid) == {"not_json": 1, "not_utf8": 1, "not_finite": 2, "wrong_type": 2,
                                     "out_of_range": 3, "too_large": 1}
        assert drv.results == {"ok": 2, "invalid": 9}
        await until(lambda: current(agent, "roomwatch_mqtt_messages_invalid_total", device="z", reason="out_of_range")
                    == 3, timeout=15, what="counters in the agent's metrics")
        assert agent.devices["z"].up is True
        # Logged at a rate limit: one line for the burst, not one per message.
        assert sum("dropped MQTT message" in r.getMessage() for r in caplog.records) == 1
    finally:
        await agent.stop()


async def test_max_age_marks_device_down_and_hides_values(mosquitto: Mosquitto, publisher: Publisher) -> None:
    agent = make_agent([dev("z", mosquitto, "zigbee2mqtt/th", "zigbee2mqtt", max_age="2s", interval="1s")])
    await agent.start()
    try:
        await subscribed(agent)
        await publish(publisher, "zigbee2mqtt/th", json.dumps({"temperature": 23.0}))
        await until(lambda: current(agent, T, device="z") == 23.0, what="value")
        silent_from = time.monotonic()
        await until(lambda: agent.devices["z"].up is False, timeout=6, what="device down")
        assert time.monotonic() - silent_from >= 1.5
        assert current(agent, "roomwatch_device_up", device="z") == 0
        assert current(agent, T, device="z") is None  # the last value is no longer presented as current
        await publish(publisher, "zigbee2mqtt/th", json.dumps({"temperature": 24.0}))
        await until(lambda: current(agent, T, device="z") == 24.0, what="back up")
        assert current(agent, "roomwatch_device_up", device="z") == 1
    finally:
        await agent.stop()


async def test_door_events_carry_the_transition_time(mosquitto: Mosquitto, publisher: Publisher) -> None:
    agent = make_agent([dev("d", mosquitto, "zigbee2mqtt/door", "zigbee2mqtt"),
                        dev("s", mosquitto, "shelly1/events/rpc", "shelly", kind="door")])
    events: list[Any] = []
    agent.observers.append(lambda d, s, ev: events.extend(ev))
    await agent.start()
    try:
        await subscribed(agent)
        await publish(publisher, "zigbee2mqtt/door", json.dumps({"contact": True}))
        await until(lambda: current(agent, DOOR, device="d") == 0, what="closed")
        before = time.time()
        await publish(publisher, "zigbee2mqtt/door", json.dumps({"contact": False}))
        await until(lambda: events, what="door_open event")
        after = time.time()
        assert events[0].type == "door_open" and events[0].labels["device"] == "d"
        assert before * 1000 - 1 <= events[0].ts <= after * 1000 + 1  # arrival time, no timestamp in payload
        # With a payload timestamp (zigbee2mqtt last_seen, Shelly ts) the event carries the sensor's time.
        import datetime as dt

        seen = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=60)
        await publish(publisher, "zigbee2mqtt/door", json.dumps({"contact": True, "last_seen": seen.isoformat()}))
        # A payload time far in the past (a sensor with a wrong clock) is not trusted: arrival time instead.
        before2 = time.time()
        await publish(publisher, "zigbee2mqtt/door", json.dumps({"contact": False, "last_seen": "2001-05-01T10:00:00Z"}))
        note = {"method": "NotifyStatus", "params": {"ts": time.time() - 30, "input:0": {"id": 0, "state": False}}}
        await publish(publisher, "shelly1/events/rpc", json.dumps(note))
        note["params"] = {"ts": round(time.time() - 3, 2), "input:0": {"id": 0, "state": True}}
        await publish(publisher, "shelly1/events/rpc", json.dumps(note))
        await until(lambda: len(events) == 4, what="three more events")
        assert events[1].type == "door_close" and events[1].ts == int(seen.timestamp() * 1000)
        assert events[2].type == "door_open" and events[2].ts >= before2 * 1000 - 1
        assert events[3].type == "door_open" and events[3].labels["sensor"] == "input:0"
        assert events[3].ts == int(note["params"]["ts"] * 1000)  # type: ignore[index]
        assert current(agent, DOOR, device="s", sensor="input:0") == 1
    finally:
        await agent.stop()


def test_measurements_get_a_default_max_age_in_every_format() -> None:
    """A temperature/humidity sensor always has a silence limit; door/leak/smoke only with a heartbeat."""
    agent = make_agent([
        dev("v-t", _Broker, "a", "value", kind="temperature"),
        dev("j-h", _Broker, "b", "json", field="rh", kind="humidity"),
        dev("e-auto", _Broker, "c/#", "esphome"),
        dev("s-auto", _Broker, "d/#", "shelly"),
        dev("z-auto", _Broker, "zigbee2mqtt/x", "zigbee2mqtt"),
        dev("t-auto", _Broker, "tele/x/+", "tasmota"),
        dev("v-door", _Broker, "e", "value", kind="door"),
        dev("e-leak", _Broker, "f/#", "esphome", kind="leak"),
        dev("s-door", _Broker, "g/#", "shelly", kind="door"),
        dev("z-door", _Broker, "zigbee2mqtt/y", "zigbee2mqtt", kind="door"),
        dev("t-door", _Broker, "tele/y/+", "tasmota", kind="door"),
        dev("off", _Broker, "h", "value", kind="temperature", max_age="0s"),
        dev("own", _Broker, "i", "esphome", kind="door", max_age="90s"),
    ])
    limits = {name: d.driver.max_age() for name, d in agent.devices.items()}
    assert limits == {"v-t": 900, "j-h": 900, "e-auto": 900, "s-auto": 3 * 3600, "z-auto": 25 * 3600,
                      "t-auto": 900, "v-door": None, "e-leak": None, "s-door": None, "z-door": 25 * 3600,
                      "t-door": 900, "off": None, "own": 90}


class _Broker:  # a broker URL for config-only tests (nothing connects)
    url = "mqtt://127.0.0.1:1"


async def test_sensor_that_never_spoke_goes_down_after_the_default_max_age(
        mosquitto: Mosquitto, publisher: Publisher, monkeypatch: pytest.MonkeyPatch) -> None:
    # The format default (15 min for ESPHome measurements) shortened, so the test can wait it out:
    # the device entry sets no max_age, as a user with a wrong topic would have it.
    from roomwatch.drivers.mqtt import formats

    monkeypatch.setitem(formats.FORMAT_DEFAULT_MAX_AGE, "esphome", (2.0, None))
    agent = make_agent([dev("wrong-topic", mosquitto, "esp-rom/#", "esphome", interval="1s"),
                        dev("door-only", mosquitto, "esp-door/#", "esphome", interval="1s")])
    # ESPHome retains its states: the door node's state arrives on subscribe.
    publisher.publish("esp-door/binary_sensor/front_door/state", "OFF", retain=True)
    await agent.start()
    try:
        await subscribed(agent)
        await publish(publisher, "esp-room/sensor/room_temperature/state", "23.5")  # not its topic
        await until(lambda: current(agent, DOOR, device="door-only") == 0, what="door state")
        assert current(agent, "roomwatch_device_up", device="wrong-topic") is None  # nothing known yet
        await until(lambda: current(agent, "roomwatch_device_up", device="wrong-topic") == 0, timeout=8,
                    what="device_up 0 for the device that never spoke")
        # not before max_age: the agent's own measurement, in its reason
        reason = agent.devices["wrong-topic"].reason
        m = re.fullmatch(r"no message since the agent started (\d+)s ago \(max_age 2s\)", reason)
        assert m is not None and int(m.group(1)) >= 2, reason
        # A node whose only entity is a door contact publishes on change: the measurement default
        # does not call it down while it is quiet (and its state is re-sent as current). Once its
        # message is older than that default, the agent's watch runs and leaves it up.
        door = agent.devices["door-only"]
        await until(lambda: time.monotonic() - door.last_seen > 2.5, what="the door's message older than 2 s")
        await agent.check_silence()
        assert door.up is True
        assert current(agent, DOOR, device="door-only") == 0
    finally:
        await agent.stop()


async def test_a_dead_probe_of_a_talking_board_is_not_resent_as_current(
        mosquitto: Mosquitto, publisher: Publisher) -> None:
    """One board, two probes and a door: the humidity probe dies, the board keeps talking."""
    agent = make_agent([dev("esp", mosquitto, "esp-room/#", "esphome", max_age="2s", interval="1s")])
    sent: list[Any] = []
    agent.observers.append(lambda d, samples, ev: sent.extend(samples))
    await agent.start()
    try:
        await subscribed(agent)
        await publish(publisher, "esp-room/binary_sensor/front_door/state", "OFF")
        await publish(publisher, "esp-room/sensor/room_humidity/state", "45")
        hum_at = time.time()
        for i in range(10):  # the temperature keeps coming every 0.5 s for 5 s
            await publish(publisher, "esp-room/sensor/room_temperature/state", str(23 + i / 10))
            await asyncio.sleep(0.5)
        assert agent.devices["esp"].up is True
        assert current(agent, T, device="esp", sensor="room_temperature") == pytest.approx(23.9)
        assert current(agent, H, device="esp", sensor="room_humidity") is None  # older than max_age: gone
        assert current(agent, DOOR, device="esp", sensor="front_door") == 0  # a state stays current
        late_hum = [s for s in sent if s.metric == H and s.ts > (hum_at + 2.5) * 1000]
        assert late_hum == []  # never re-sent with a fresh time once older than max_age
        late_door = [s for s in sent if s.metric == DOOR and s.ts > (hum_at + 2.5) * 1000]
        assert late_door  # the door state is re-sent every interval
        # The probe comes back: its series is current again.
        await publish(publisher, "esp-room/sensor/room_humidity/state", "47")
        await until(lambda: current(agent, H, device="esp", sensor="room_humidity") == pytest.approx(0.47),
                    what="humidity back")
    finally:
        await agent.stop()
