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
    ("1.3.6.1.4.1.2011.6.174.4.1.2.4", "huawei"),
    ("1.3.6.1.4.1.935.1.1.1", "xppc"),
    ("1.3.6.1.4.1.935.10.1", "eppc"),  # the longest prefix wins: PowerWalker, not the older NetAgent
    ("1.3.6.1.4.1.850.1", "tripplite"),
    ("1.3.6.1.4.1.476.1.42.2.1", "liebert-gp"),
    ("1.3.6.1.4.1.6050.5", "gamatronic"),
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


_T = "metric: roomwatch_temperature_celsius, column: 4"


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
    ("name: x\npoints: [{metric: roomwatch_ups_load_ratio, oid: 1.3.6.1, precision_column: 3}]", "only work in a table"),
    (f"name: x\ntables: [{{entry: 1.3.6.1, points: [{{{_T}, scale_column: 2}}]}}]", "go together"),
    (f"name: x\ntables: [{{entry: 1.3.6.1, points: [{{{_T}, agree: {{column: 3}}}}]}}]", "agree is"),
    (f"name: x\ntables: [{{entry: 1.3.6.1, sensor_fallback: 'T {{n}}', points: [{{{_T}}}]}}]", "sensor_fallback may"),
    (f"name: x\ntables: [{{entry: 1.3.6.1, sensor_entry: 1.3.6.2, points: [{{{_T}}}]}}]", "needs sensor_column"),
    (f"name: x\ntables: [{{entry: 1.3.6.1, colour: 1, points: [{{{_T}}}]}}]", "unknown keys"),
    (f"name: x\ntables: [{{entry: 1.3.6.1, points: [{{{_T}, when: {{column: 3, like: '(('}}}}]}}]", "bad regular"),
    (f"name: x\ntables: [{{entry: 1.3.6.1, points: [{{{_T}, when: {{column: 3, in: [1], like: c}}}}]}}]", "exactly one"),
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
    ({"community": "x", "profile": "nonesuch"}, "unknown SNMP profile 'nonesuch'; known: auto, "),
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


def test_check_config_accepts_the_contract_snmp_device_and_the_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    (tmp_path / "agent-token").write_text("a-generated-token-0123456789abcdef\n")  # the example reads it
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    done = cli("check-config", str(path), str(ROOT / "config" / "agent.example.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


# --- tables of probes (environment monitors) ---------------------------------------------------------

ENTITY_SCALES = {8: 0.001, 9: 1.0}


@pytest.mark.parametrize(("row", "expected"), [
    ({4: 235, 2: 9, 3: 1}, 23.5),  # units, one decimal
    ({4: 27125, 2: 8, 3: 0}, 27.125),  # milli
    ({4: 3, 2: 9, 3: -1}, 30.0),  # precision -1: tens
    ({4: 20, 2: 99, 3: 0}, None),  # a scale the profile does not know: absent, not a guess
    ({4: 20, 2: 9, 3: 12}, None),  # precision out of RFC 3433's range
    ({4: 20, 3: 0}, None),  # no scale column
])
def test_row_scale_and_precision(row: dict[int, Any], expected: float | None) -> None:
    point = Point("m", column=4, scale_column=2, scale_map=ENTITY_SCALES, precision_column=3)
    got = point.read_row(row)
    assert (got if isinstance(got, float) else None) == expected
    if expected is None:
        assert got == "invalid"  # left out and counted, with the reason


@pytest.mark.parametrize(("row", "expected"), [
    ({14: 231, 3: 23}, 23.1),  # the fine column agrees with the coarse one
    ({14: 512, 3: 38}, None),  # an A/D count, not tenths: left to the coarse row point
    ({14: 231}, None),  # nothing to agree with
])
def test_agree_with_coarse_column(row: dict[int, Any], expected: float | None) -> None:
    assert Point("m", column=14, scale=0.1, agree=(3, 1.0, 1.5)).read_row(row) == expected


@pytest.mark.parametrize(("spec", "raw", "holds"), [
    ({"column": 5, "in": ["F", "°F"]}, "F", True),
    ({"column": 5, "in": ["F", "°F"]}, " °f\x00", True),
    ({"column": 5, "in": ["F"]}, "C", False),
    ({"column": 5, "not_in": ["F"]}, None, True),  # no unit column: the default unit
    ({"column": 5, "like": "%|rh"}, "%RH", True),
    ({"column": 5, "like": "f$"}, "°C", False),
    ({"column": 5, "not_like": "f$"}, None, True),
    ({"column": 5, "like": "temp"}, 21, False),  # a number is not text
])
def test_text_conditions(spec: dict[str, Any], raw: Any, holds: bool) -> None:
    from roomwatch.drivers.snmp.profile_load import _condition

    assert _condition(spec, "t").holds({}, {5: raw}) is holds


def _env_profile(tmp_path: Path, tables: str) -> Any:
    ups = (ROOT / "drivers" / "snmp" / "profiles" / "ups-mib.yaml").read_text()
    _write(tmp_path, "ups-mib.yaml", ups)
    _write(tmp_path, "env.yaml", "name: env\n" + tables)
    return load_profiles(tmp_path)["env"]


def test_names_from_another_table_by_index_prefix_and_fallbacks(tmp_path: Path) -> None:
    prof = _env_profile(tmp_path, """tables:
  - entry: 1.3.6.1.9.2.1
    sensor_entry: 1.3.6.1.9.1.1
    sensor_column: [1, 2]
    sensor_fallback: "Probe {index}"
    points: [{metric: roomwatch_temperature_celsius, column: 3, scale: 0.1}]
  - entry: 1.3.6.1.9.3.1
    sensor_column: 2
    sensor_format: "{name} alarm 1"
    points: [{metric: roomwatch_contact_alarm, column: 7, map: {3: 1, 4: 0}}]
""")
    names = {(1,): {1: "EMP rack 1"}, (2,): {1: "", 2: "Descr 2"}}
    tables = {(1, 3, 6, 1, 9, 2, 1): {(1, 1): {3: 254}, (2, 1): {3: 221}, (3, 1): {3: 200}},
              (1, 3, 6, 1, 9, 1, 1): names,
              (1, 3, 6, 1, 9, 3, 1): {(1,): {2: "Rack A", 7: 3}}}
    got = {(r.metric, (r.labels or {}).get("sensor")): r.value for r in evaluate(prof, {}, tables).readings}
    assert got == {(v.TEMPERATURE, "EMP rack 1"): 25.4, (v.TEMPERATURE, "Descr 2"): 22.1,
                   (v.TEMPERATURE, "Probe 3.1"): 20.0, (v.CONTACT_ALARM, "Rack A alarm 1"): 1.0}
    assert prof.tables[0].walked() == ((1, 3, 6, 1, 9, 2, 1, 3), (1, 3, 6, 1, 9, 1, 1, 1), (1, 3, 6, 1, 9, 1, 1, 2))


def test_oid_valued_name_column() -> None:
    liebert = all_profiles()["liebert-env"]
    entry = liebert.tables[0].entry
    tables = {entry: {(1,): {2: parse_oid("1.3.6.1.4.1.476.1.42.3.4.1.1.3"), 3: 18, 50: 181},
                      (2,): {2: parse_oid("1.3.6.1.4.1.476.1.42.3.4.1.1.77"), 3: 30}}}
    got = {(r.labels or {}).get("sensor"): r.value for r in evaluate(liebert, {}, tables).readings}
    assert got == {"Supply Air": 18.1, "oid 1.77": 30.0}


def test_auto_by_probe_prefers_vendor_then_standard_mibs() -> None:
    from roomwatch.drivers.snmp.autoselect import probe_order

    profiles = all_profiles()
    entity, ups = parse_oid("1.3.6.1.2.1.99.1.1.1.4"), all_profiles()["ups-mib"].probe[0]
    akcp = parse_oid("1.3.6.1.4.1.3854.3.5.2.1.2")

    def answers(*prefixes: tuple[int, ...]) -> dict[Any, Any]:
        return {p: (p + (1, 0), 1) for p in prefixes}

    assert [p.name for p in probe_order(profiles, answers(entity))] == ["entity-sensor"]
    assert probe_order(profiles, answers(entity, akcp))[0].name == "akcp"  # the vendor's own MIB first
    assert "ups-mib" in [p.name for p in probe_order(profiles, answers(entity, ups))]
    assert probe_order(profiles, {}) == []


def test_every_profile_cites_its_mib_and_can_be_found() -> None:
    """Issue 13: each profile says where its objects come from, and profile: auto can reach it."""
    for prof in all_profiles().values():
        assert prof.source.strip(), prof.name
        assert prof.match or prof.probe, f"{prof.name}: neither a sysObjectID prefix nor a probe object"
        for other in all_profiles().values():
            if other.name != prof.name:
                assert not set(prof.match) & set(other.match), (prof.name, other.name)


@pytest.mark.parametrize(("raw", "text"), [
    (b"\xb0C", "°C"),  # Comet's unit column in Latin-1: not one GB18030 character
    ("温度".encode("gb18030"), "温度"),
    ("°F".encode(), "°F"),
])
def test_decode_text_keeps_latin1_degree_signs(raw: bytes, text: str) -> None:
    from roomwatch.drivers.snmp.session import decode_text

    assert decode_text(raw) == text
