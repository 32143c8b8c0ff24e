"""``roomwatch discover`` without peers: target parsing and caps, names, the YAML it prints, MQTT sorting."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from roomwatch.core import vocabulary as v
from roomwatch.discover.mqtt import Heard, classify, read_candidate
from roomwatch.discover.probe import Shared
from roomwatch.discover.report import Found, assign_names, clean_name, render, summarize, validate
from roomwatch.discover.targets import (
    MAX_ADDRESSES,
    TargetError,
    parse_hostport_target,
    parse_modbus_target,
    parse_snmp_targets,
    parse_units,
)
from roomwatch.drivers.base import Reading
from tests.helpers import run_cli


def hosts(*texts: str) -> list[str]:
    return [t.host for t in parse_snmp_targets(list(texts))]


def test_addresses_ranges_and_blocks() -> None:
    assert hosts("192.168.1.20") == ["192.168.1.20"]
    assert hosts("192.168.1.10-13") == ["192.168.1.10", "192.168.1.11", "192.168.1.12", "192.168.1.13"]
    assert hosts("10.0.0.254-10.0.1.1") == ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]
    assert hosts("127.0.0.16/28") == [f"127.0.0.{i}" for i in range(17, 31)]  # no network/broadcast address
    assert hosts("127.0.0.20/28") == hosts("127.0.0.16/28")  # host bits set: the same block, as nmap reads it
    assert hosts("10.0.0.6/31") == ["10.0.0.6", "10.0.0.7"] and hosts("10.0.0.9/32") == ["10.0.0.9"]
    assert hosts("fd00::1-fd00::3") == ["fd00::1", "fd00::2", "fd00::3"]
    assert len(hosts("10.0.0.0/22")) == 1022  # the cap is a /22
    # duplicates and overlaps are probed once, in address order, host names last
    assert hosts("ups-1.lan", "10.0.0.3", "10.0.0.1-3") == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "ups-1.lan"]


@pytest.mark.parametrize(("text", "says"), [
    ("10.0.0.0/21", "holds 2048 addresses"),
    ("0.0.0.0/0", "at most 1024"),
    ("10.0.0.0-10.0.8.0", "holds 2049 addresses"),
    ("10.0.0.9-3", "ends before it starts"),
    ("10.0.0.1-256", "not an octet"),
    ("10.0.0.1-fd00::1", "cannot mix IPv4 and IPv6"),
    ("10.0.0.0/33", "not a CIDR block"),
    ("10.0.0", "not an address, host name"),
    ("bad_name!", "not an address, host name"),
    ("", "empty"),
    ("224.0.0.1", "multicast, broadcast"),
    ("255.255.255.255", "multicast, broadcast"),
])
def test_bad_targets_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(TargetError, match=says):
        parse_snmp_targets([text])


def test_targets_together_are_capped_too() -> None:
    with pytest.raises(TargetError, match=f"more than {MAX_ADDRESSES}"):
        parse_snmp_targets(["10.0.0.0/22", "10.0.4.0/24"])


def test_endpoints_and_units() -> None:
    assert parse_hostport_target("127.0.0.1:3494", 3493, "NUT") == ("127.0.0.1", 3494)
    assert parse_hostport_target("nut.lan", 3493, "NUT") == ("nut.lan", 3493)
    assert parse_hostport_target("[::1]:3494", 3493, "NUT") == ("::1", 3494)
    assert parse_hostport_target("::1", 3493, "NUT") == ("::1", 3493)
    for bad in ("host:0", "host:x", "[::1]x", "a b:1", ""):
        with pytest.raises(TargetError):
            parse_hostport_target(bad, 3493, "NUT")
    t = parse_modbus_target("/dev/ttyUSB0:19200:e")
    assert (t.transport, t.serial_port, t.baudrate, t.parity) == ("rtu", "/dev/ttyUSB0", 19200, "E")
    assert parse_modbus_target("rtu-over-tcp://gw.lan:4196").transport == "rtu-over-tcp"
    assert (parse_modbus_target("10.0.0.9").host, parse_modbus_target("10.0.0.9").port) == ("10.0.0.9", 502)
    for bad in ("/dev/ttyUSB0:12", "/dev/ttyUSB0:9600:X", "udp://x", "x:70000"):
        with pytest.raises(TargetError):
            parse_modbus_target(bad)
    assert parse_units("1-3,7,2") == [1, 2, 3, 7]
    for bad in ("0-3", "1-248", "5-2", "a", "1,,2"):
        with pytest.raises(TargetError):
            parse_units(bad)


@pytest.mark.peer  # runs the roomwatch command
def test_the_cli_refuses_a_too_large_sweep_before_sending_anything() -> None:
    r = run_cli("discover", "--snmp", "10.0.0.0/16")
    assert r.returncode == 2 and r.stdout == ""
    assert "10.0.0.0/16 holds 65536 addresses" in r.stderr and "/22" in r.stderr
    r = run_cli("discover")
    assert r.returncode == 2 and "give --snmp, --nut, --mqtt or --modbus" in r.stderr
    r = run_cli("discover", "--snmp", "127.0.0.1", "--v3-user", "u", "--v3-auth-key", "short")
    assert r.returncode == 2 and "at least 8 characters" in r.stderr
    r = run_cli("discover", "--mqtt", "http://broker")
    assert r.returncode == 2 and "mqtt://" in r.stderr
    r = run_cli("discover", "--nut", "127.0.0.1", "--nut-user", "monitor")
    assert r.returncode == 2 and "--nut-password" in r.stderr


def _found(hint: str, kind: str = "snmp", where: str = "10.0.0.1:161") -> Found:
    return Found(kind, where, hint, {"driver": "snmp", "host": "10.0.0.1", "community": "public"}, "test", [])


def test_names_are_valid_unique_and_stable() -> None:
    assert clean_name("  UPS 1 (rack A)  ") == "UPS-1-rack-A"
    assert clean_name("<private>") == "private" and clean_name("---") == ""
    found = [_found("ups1"), _found("UPS1"), _found("host"), _found("机房UPS"), _found("机房UPS"), _found("配电柜"),
             _found("")]
    assign_names(found)
    names = [f.name for f in found]
    assert names[:3] == ["ups1", "UPS1-2", "host-2"]  # case-insensitive clash; "host" is the agent's host section
    assert names[3].startswith("UPS-") and names[4] == names[3] + "-2"
    assert names[5].startswith("snmp-") and names[6].startswith("snmp-") and names[5] != names[6]
    again = [_found(f.name_hint) for f in found]
    assign_names(again)
    assert [f.name for f in again] == names


def test_rendered_yaml_round_trips_and_passes_check_config() -> None:
    f = _found("ups-a")
    f.entry["community"] = "pa$$w0rd${HOME}"  # a literal $ must survive the config loader's ${ENV} expansion
    f.readings = [Reading(v.UPS_BATTERY_CHARGE, 0.87), Reading(v.UPS_BATTERY_RUNTIME, 5400.0),
                  Reading(v.TEMPERATURE, 24.5, {"sensor": "机房"}), Reading(v.UPS_STATUS_FLAG, 1.0, {"flag": "OL"}),
                  Reading(v.UPS_INFO, 1.0, {"manufacturer": "APC"})]
    assign_names([f])
    text = render([f], ["header"], ["footer"])
    doc = yaml.safe_load(text)
    assert doc["devices"][0]["name"] == "ups-a"
    assert doc["devices"][0]["community"] == "pa$$$$w0rd$${HOME}"
    assert "# readings: status OL, battery charge 87 %, battery runtime 90 min, temperature [sensor 机房] 24.5 °C" in text
    assert validate(text) == []
    assert render([], ["nothing"]).endswith("devices: []\n") and validate(render([])) == []
    # validate() is check-config: an entry it would refuse is reported
    bad = _found("x")
    bad.entry["community"] = None
    assign_names([bad])
    assert any("community is required" in p for p in validate(render([bad])))
    info, texts = summarize([Reading(v.UPS_INFO, 1.0, {"model": "X"}), Reading(v.UPS_BATTERY_RUNTIME, 3 * 86400.0)])
    assert info == {"model": "X"} and texts == ["battery runtime 3 d"]


def _heard(doc: dict[str, object]) -> dict[str, Heard]:
    now = time.time()
    return {t: Heard(p if isinstance(p, bytes) else (p if isinstance(p, str) else json.dumps(p)).encode(), True, now + i)
            for i, (t, p) in enumerate(doc.items())}


def test_mqtt_layouts_are_sorted_into_one_device_per_physical_sensor() -> None:
    msgs = _heard({
        "zigbee2mqtt/bridge/state": {"state": "online"},
        "zigbee2mqtt/bridge/devices": [
            {"friendly_name": "th", "ieee_address": "0x1", "definition": {"vendor": "Aqara", "model": "WSDCGQ11LM"}},
            {"friendly_name": "quiet_door", "ieee_address": "0x2", "definition": {  # listed, silent while we listen
                "vendor": "Aqara", "model": "MCCGQ11LM", "exposes": [{"type": "binary", "property": "contact"},
                                                                     {"type": "numeric", "property": "battery"}]}},
            {"friendly_name": "plug", "ieee_address": "0x3", "definition": {  # no room reading among its exposes
                "vendor": "Xiaomi", "model": "ZNCZ02LM", "exposes": [{"type": "switch", "features": [
                    {"type": "binary", "property": "state"}]}, {"type": "numeric", "property": "power"}]}}],
        "zigbee2mqtt/bridge/logging": {"level": "info", "message": "x"},
        "zigbee2mqtt/th": {"temperature": 21.5, "humidity": 40},
        "zigbee2mqtt/th/availability": {"state": "online"},
        "zigbee2mqtt/th/set": {"state": "ON"},
        "zigbee2mqtt/attr/temperature": "22.5",  # attribute output
        "zigbee2mqtt/attr/humidity": "41",
        "tele/board1/LWT": "Online",
        "tele/board1/INFO1": {"Info1": {"Module": "Sonoff TH", "Version": "13.2.0"}},
        "stat/board1/STATUS10": {"StatusSNS": {"DS18B20": {"Id": "0316", "Temperature": 19.5}, "TempUnit": "C"}},
        "tele/dead/LWT": "Offline",
        "livingroom/sensor/room_temperature/state": "23.25",
        "livingroom/binary_sensor/back_door/state": "OFF",
        "livingroom/status": "online",
        "livingroom/switch/relay/state": "ON",
        "shellyplusht-c049ef8b3a44/status/temperature:0": {"id": 0, "tC": 20.1, "tF": 68.2},
        "shellyplusht-c049ef8b3a44/status/humidity:0": {"id": 0, "rh": 44.0},
        "shellyplusht-c049ef8b3a44/online": "true",
        "shellies/shellyht-6A8B2C/sensor/temperature": "24.75",
        "shellies/shellyht-6A8B2C/sensor/humidity": "50",
        "shellies/shellyht-6A8B2C/sensor/battery": "90",
        "shellies/shellyht-6A8B2C/online": "true",
        "shellies/announce": {"id": "shellyht-6A8B2C", "model": "SHHT-1", "mac": "x"},
        "home/garbage": b"\xff\xfe",
    })
    found = {c.entry["topic"]: c for c in classify(msgs)}
    assert sorted(found) == sorted([
        "zigbee2mqtt/th", "zigbee2mqtt/attr/+", "zigbee2mqtt/quiet_door", "tele/board1/SENSOR", "tele/dead/SENSOR",
        "livingroom/+/+/state",
        "shellyplusht-c049ef8b3a44/status/+", "shellies/shellyht-6A8B2C/sensor/temperature",
        "shellies/shellyht-6A8B2C/sensor/humidity"])
    assert found["zigbee2mqtt/th"].identity == "zigbee2mqtt device 'th': Aqara WSDCGQ11LM"
    assert "module Sonoff TH, firmware 13.2.0" in found["tele/board1/SENSOR"].identity
    assert "SHHT-1" in found["shellies/shellyht-6A8B2C/sensor/humidity"].identity
    broker = {"broker": "mqtt://127.0.0.1:1883"}
    shared = Shared()

    def read(topic: str) -> dict[tuple[str, str], float]:
        return {(r.metric, (r.labels or {}).get("sensor", "")): r.value
                for r in read_candidate(found[topic], broker, msgs, shared)}

    assert read("zigbee2mqtt/th") == {(v.TEMPERATURE, ""): 21.5, (v.HUMIDITY, ""): 0.4}
    assert read("zigbee2mqtt/attr/+") == {(v.TEMPERATURE, ""): 22.5, (v.HUMIDITY, ""): 0.41}
    assert read("tele/board1/SENSOR") == {(v.TEMPERATURE, "0316"): 19.5}  # from the answer to STATUS 10
    assert read("tele/dead/SENSOR") == {}  # offline board: nothing, so never written
    assert read("zigbee2mqtt/quiet_door") == {}  # named at the end, not written
    assert "listed by the bridge" in found["zigbee2mqtt/quiet_door"].identity
    assert read("livingroom/+/+/state") == {(v.TEMPERATURE, "room_temperature"): 23.25, (v.DOOR_OPEN, "back_door"): 0}
    assert read("shellyplusht-c049ef8b3a44/status/+") == {(v.TEMPERATURE, "temperature:0"): 20.1,
                                                         (v.HUMIDITY, "humidity:0"): 0.44}
    assert read("shellies/shellyht-6A8B2C/sensor/humidity") == {(v.HUMIDITY, ""): 0.5}
    gen1 = found["shellies/shellyht-6A8B2C/sensor/temperature"].entry
    assert gen1["availability_topic"] == "shellies/shellyht-6A8B2C/online" and gen1["kind"] == "temperature"


def test_setup_turns_a_plain_answer_into_discover_options() -> None:
    from roomwatch.commands.setup import discover_argv

    assert discover_argv("192.168.1.0/24 nut:10.0.0.5 mqtt://10.0.0.6 /dev/ttyUSB0:9600 modbus:10.0.0.7:502") == [
        "--snmp", "192.168.1.0/24", "--nut", "10.0.0.5", "--mqtt", "mqtt://10.0.0.6", "--modbus", "/dev/ttyUSB0:9600",
        "--modbus", "10.0.0.7:502"]
    assert discover_argv("--snmp 10.0.0.1 --community 'my c'") == ["--snmp", "10.0.0.1", "--community", "my c"]
    assert discover_argv("  ") == []
