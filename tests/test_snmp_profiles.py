"""SNMP profiles, value conversion and config checks: pure functions, table-driven, no peers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from roomwatch.agent.config import load_agent_config
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import ConfigError
from roomwatch.drivers.base import Reading
from roomwatch.drivers.snmp import SnmpConfig
from roomwatch.drivers.snmp.profile import (
    Condition,
    Point,
    ProfileError,
    all_profiles,
    load_profiles,
    match_profile,
    parse_oid,
)
from roomwatch.drivers.snmp.readings import contact_readings, evaluate, parse_battery_date
from tests.helpers import ROOT, cli

UPS = (1, 3, 6, 1, 2, 1, 33, 1)


def test_shipped_profiles_load_and_use_vocabulary_metrics() -> None:
    profiles = all_profiles()
    assert {"ups-mib", "apc", "eaton-xups", "eaton-mge", "cyberpower", "socomec", "vertiv-ita2", "delta",
            "hwg-poseidon", "avtech-roomalert12e"} <= set(profiles)
    for prof in profiles.values():
        assert prof.points or prof.tables, prof.name
        for point in [*prof.points, *(p for t in prof.tables for p in t.points)]:
            assert point.metric in v.METRICS
    # Vendor rows come first, the included UPS-MIB rows after them (fallback).
    apc = profiles["apc"]
    assert apc.points[0].oid == parse_oid("1.3.6.1.4.1.318.1.1.1.2.3.1.0")
    assert apc.points[-1].oid[:8] == UPS


@pytest.mark.parametrize(("sys_object_id", "profile"), [
    ("1.3.6.1.4.1.318.1.3.27", "apc"),
    ("1.3.6.1.4.1.318.1.3.8.4", "apc"),
    ("1.3.6.1.4.1.705.1", "eaton-mge"),
    ("1.3.6.1.4.1.534.1", "eaton-xups"),
    ("1.3.6.1.4.1.3808", "cyberpower"),
    ("1.3.6.1.4.1.38080", "ups-mib"),  # a prefix matches whole components only
    ("1.3.6.1.4.1.2011.6.174.4.1.2.4", "ups-mib"),
    ("1.3.6.1.4.1.21796.3.3", "hwg-poseidon"),
    ("1.3.6.1.4.1.8072.3.2.10", "ups-mib"),  # net-snmp: unknown, falls back on UPS-MIB
])
def test_auto_profile_by_sys_object_id(sys_object_id: str, profile: str) -> None:
    assert match_profile(parse_oid(sys_object_id)).name == profile
    assert match_profile(None).name == "ups-mib"


@pytest.mark.parametrize(("point", "raw", "expected"), [
    (Point("m", scale=0.1), 1191, 119.1),  # tenths of volts
    (Point("m", scale=60), 22, 1320.0),  # minutes
    (Point("m", scale=0.01), 10976200, 109762.0),  # TimeTicks
    (Point("m", scale=0.001), 415, 0.415),  # tenths of percent → ratio
    (Point("m", scale=0.1, convert=lambda f: (f - 32) * 5 / 9), 770, 25.0),  # °F ×10
    (Point("m", mapping={2: 0.0, 3: 1.0}), 3, 1.0),
    (Point("m", mapping={2: 0.0, 3: 1.0}), 1, None),  # unknown(1): absent, not 0
    (Point("m", absent=frozenset({65535})), 65535, None),
    (Point("m", valid=(0, 65534), scale=60), 4294967295, None),
    (Point("m", valid=(0, 100)), -1, None),
    (Point("m"), "230", 230.0),  # numeric text
    (Point("m"), " 12.5 ", 12.5),
    (Point("m"), "full", None),  # wrong type: absent
    (Point("m"), (1, 3, 6), None),
    (Point("m"), None, None),  # noSuchObject
    (Point("m", mapping={1: 1.0}), "1", 1.0),
    (Point("m", mapping={1: 1.0}), 1.5, None),
    (Point("m"), "nan", None),
])
def test_point_value(point: Point, raw: Any, expected: float | None) -> None:
    assert point.value(raw) == expected


def test_evaluate_tables_conditions_fallbacks_and_duplicate_names() -> None:
    profiles = load_profiles()
    apc = profiles["apc"]
    mem = parse_oid("1.3.6.1.4.1.318.1.1.10.4.2.3.1")
    iem = parse_oid("1.3.6.1.4.1.318.1.1.10.2.3.4.1")
    scalars = {parse_oid("1.3.6.1.4.1.318.1.1.10.4.2.1.0"): 2,  # memSensorsStatusSysTempUnits fahrenheit(2)
               parse_oid("1.3.6.1.4.1.318.1.1.1.2.2.1.0"): 41,  # upsAdvBatteryCapacity (no HighPrec object)
               UPS + (2, 4, 0): 99}  # the included UPS-MIB says otherwise: the vendor object wins
    tables = {mem: {(0, 1): {3: "Rack", 5: 77, 6: 40, 7: 2}, (0, 2): {3: "Gone", 5: 70, 6: -1, 7: 3}},
              iem: {(1,): {2: "Unknown", 3: 1}, (2,): {2: "Unknown", 3: 2}, (3,): {2: "Spare", 3: 3}}}
    result = evaluate(apc, scalars, tables)
    got = {(r.metric, (r.labels or {}).get("sensor")): r.value for r in result.readings}
    assert got == {
        (v.UPS_BATTERY_CHARGE, None): 0.41,
        (v.TEMPERATURE, "Rack"): 25.0,
        (v.HUMIDITY, "Rack"): 0.4,
        (v.CONTACT_ALARM, "Unknown #1"): 0.0,
        (v.CONTACT_ALARM, "Unknown #2"): 1.0,
    }
    assert result.info == {}  # only the fixed "APC" label: not a UPS identity
    assert result.battery_date is None


def test_info_joins_oids_and_skips_blank_text() -> None:
    mge = all_profiles()["eaton-mge"]
    scalars = {parse_oid("1.3.6.1.4.1.705.1.1.1.0"): "Eaton 9PX", parse_oid("1.3.6.1.4.1.705.1.1.2.0"): "1000i  ",
               parse_oid("1.3.6.1.4.1.705.1.1.7.0"): "   ", UPS + (1, 1, 0): "EATON\x00"}
    assert evaluate(mge, scalars, {}).info == {"model": "Eaton 9PX 1000i", "manufacturer": "EATON"}


def test_condition_on_column_and_scalar() -> None:
    cond = Condition(oid=None, column=9, values=frozenset({0}))
    assert cond.holds({}, {9: 0}) and not cond.holds({}, {9: 1}) and not cond.holds({}, {})
    neg = Condition(oid=(1, 2), column=None, values=frozenset({0}), negate=True)
    assert neg.holds({(1, 2): 1}, None) and not neg.holds({(1, 2): 0}, None)


@pytest.mark.parametrize(("raw", "expected"), [
    ("03/15/2022", dt.date(2022, 3, 15)),
    ("03/15/22", dt.date(2022, 3, 15)),
    ("2021-11-02", dt.date(2021, 11, 2)),
    ("01/01/2001", None),  # the ConnectUPS factory placeholder, not a 25-year-old battery
    ("12/31/2999", None),  # in the future
    ("", None),
    ("unknown", None),
    (20220315, None),
])
def test_battery_date(raw: Any, expected: dt.date | None) -> None:
    assert parse_battery_date(raw, today=dt.date(2026, 1, 1)) == expected


def test_contact_readings() -> None:
    readings = [Reading(v.CONTACT_CLOSED, 1.0, {"sensor": "S1"}), Reading(v.CONTACT_ALARM, 1.0, {"sensor": "S2"})]
    got = contact_readings(readings, {"S1": ("door", "open"), "S2": ("leak", "alarm"), "S3": ("smoke", "closed")})
    assert [(r.metric, r.value, dict(r.labels or {})) for r in got] == [
        (v.DOOR_OPEN, 0.0, {"sensor": "S1"}), (v.WATER_LEAK, 1.0, {"sensor": "S2"})]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(("body", "message"), [
    ("name: x\npoints: [{metric: roomwatch_nope, oid: 1.3.6.1}]", "not in roomwatch/core/vocabulary.py"),
    ("name: x\npoints: [{metric: roomwatch_ups_load_ratio, oid: 1.3.x}]", "not a numeric OID"),
    ("name: x\npoints: [{metric: roomwatch_ups_load_ratio, oid: 1.3.6.1, convert: rankine}]", "unknown convert"),
    ("name: x\npoints: [{metric: roomwatch_ups_load_ratio, oid: 1.3.6.1, scale: 0}]", "non-zero"),
    ("name: x\npoints: [{metric: roomwatch_ups_load_ratio, oid: 1.3.6.1, when: {column: 3}}]", "in or not_in"),
    ("name: x\ntables: [{entry: 1.3.6.1, points: [{metric: roomwatch_ups_load_ratio, oid: 1.3.6.1}]}]",
     "integer column"),
    ("name: x\ninclude: [nowhere]\npoints: []", "unknown profile"),
    ("name: x\ninclude: [x]\npoints: []", "includes itself"),
    ("name: x\ninfo: {colour: 1.3.6.1}", "info label"),
    ("name: x\nwhatever: 1", "unknown keys"),
])
def test_bad_profile_files_are_refused_with_the_file_and_row(tmp_path: Path, body: str, message: str) -> None:
    _write(tmp_path, "ups-mib.yaml", "name: ups-mib\npoints: []\n")
    _write(tmp_path, "bad.yaml", body)
    with pytest.raises(ProfileError, match=message):
        load_profiles(tmp_path)


# ----------------------------------------------------------------- config


def _cfg(**kw: Any) -> SnmpConfig:
    return SnmpConfig.model_validate({"name": "u", "driver": "snmp", "host": "10.0.0.5", **kw})


def test_config_defaults_and_versions() -> None:
    c = _cfg(community="public")
    assert (c.port, c.version, c.profile, c.retries, c.max_repetitions) == (161, "2c", "auto", 1, 10)
    assert _cfg(version=1, community="x").version == "1"
    v3 = _cfg(version=3, user="monitor", auth_key="authpass123", priv_key="privpass123", auth_protocol="sha256")
    assert (v3.security_level, v3.auth_protocol, v3.priv_protocol) == ("authPriv", "SHA256", "AES")
    assert _cfg(version=3, user="m", auth_key="authpass123").security_level == "authNoPriv"
    assert _cfg(version=3, user="m").security_level == "noAuthNoPriv"


@pytest.mark.parametrize(("options", "message"), [
    ({}, "community is required"),
    ({"version": 3}, "user is required"),
    ({"version": 3, "user": "m", "community": "x"}, "community is for SNMP v1/v2c"),
    ({"community": "x", "user": "m"}, "user is an SNMPv3 option"),
    ({"version": 3, "user": "m", "security_level": "authPriv", "auth_key": "authpass123"}, "needs priv_key"),
    ({"version": 3, "user": "m", "auth_key": "short"}, "at least 8 characters"),
    ({"version": 3, "user": "m", "priv_key": "privpass123", "auth_key": "authpass123", "security_level": "authNoPriv"},
     "priv_key is given"),
    ({"version": "2", "community": "x"}, "'1', '2c' or '3'"),
    ({"community": "x", "profile": "nonesuch"}, "unknown SNMP profile 'nonesuch'; known: auto, apc"),
    ({"community": "x", "auth_protocol": "SHA1"}, "SHA256"),
    ({"community": "x", "timeout": 2}, "has no unit"),
    ({"community": "x", "contacts": {"Door": {"kind": "window", "active": "open"}}}, "door"),
])
def test_config_errors_say_what_is_wrong(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _cfg(**options)


def test_secrets_never_show_in_the_config_repr() -> None:
    c = _cfg(version=3, user="m", auth_key="authpass123", priv_key="privpass123")
    assert "authpass123" not in repr(c) and "privpass123" not in repr(c)


def test_agent_file_with_snmp_devices_and_key_files(tmp_path: Path) -> None:
    (tmp_path / "community").write_text("s3cret-community\n")
    path = _write(tmp_path, "agent.yaml", """
agent: {id: room1-agent, listen: 127.0.0.1:9641}
collector: {urls: [http://127.0.0.1:9640], token: s3cret-token}
devices:
  - {name: ups1, driver: snmp, host: 127.0.0.1, port: 1161, version: 2c, community: public}
  - {name: ups2, driver: snmp, host: ups2.lan, community_file: COMMUNITY, battery_installed: 2023-05-01}
  - name: ups3
    driver: snmp
    host: 10.1.1.3
    version: 3
    user: monitor
    auth_key: ${SNMP_AUTH:-authpass123}
    priv_key: privpass123
    context: ups3
""".replace("COMMUNITY", str(tmp_path / "community"))) / "agent.yaml"
    cfg = load_agent_config(str(path))
    ups2 = cfg.devices[1]
    assert ups2.community.get_secret_value() == "s3cret-community"
    assert ups2.battery_installed == dt.date(2023, 5, 1)
    assert cfg.devices[2].security_level == "authPriv"


def test_bad_snmp_device_is_reported_with_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "agent.yaml", """
devices:
  - name: ups1
    driver: snmp
    host: 127.0.0.1
    version: 3
    user: monitor
    auth_key: short
""") / "agent.yaml"
    with pytest.raises(ConfigError) as err:
        load_agent_config(str(path))
    assert "agent.yaml:3" in str(err.value) and "at least 8 characters" in str(err.value)


def test_check_config_accepts_the_contract_snmp_device_and_the_example(tmp_path: Path) -> None:
    path = _write(tmp_path, "agent.yaml", """
agent:
  id: room1-agent
  listen: 127.0.0.1:9641
collector:
  urls: [http://127.0.0.1:9640]
  token: s3cret-token
devices:
  - name: ups1
    driver: snmp
    host: 127.0.0.1
    port: 1161
    version: 2c
    community: public
""") / "agent.yaml"
    done = cli("check-config", str(path), str(ROOT / "config" / "agent.example.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
