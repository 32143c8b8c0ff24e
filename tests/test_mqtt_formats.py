"""MQTT payload formats: the corpus of real-world examples, the malformed corpus, and random input.

Every case goes through the driver's own message path (parse, range check,
labels, counting) with a recording context, without a broker: the wire is
tested in test_mqtt_driver.py.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomwatch.drivers.base import Event, Reading
from roomwatch.drivers.mqtt.driver import MqttConfig, MqttDriver
from roomwatch.drivers.mqtt.formats import FORMATS, ParseOptions, parse
from roomwatch.drivers.mqtt.payloads import REASONS, PayloadError

DATA = Path(__file__).parent / "data" / "mqtt"
GOOD_FILES = ["zigbee2mqtt", "tasmota", "esphome", "shelly", "value", "json"]


class RecordingContext:
    """What the agent offers a driver, recording what the driver emits."""

    def __init__(self) -> None:
        self.log = logging.getLogger("roomwatch.test.mqtt")
        self.emitted: list[tuple[list[Reading], list[Event]]] = []

    def emit(self, readings: Sequence[Reading], events: Sequence[Event] = ()) -> None:
        self.emitted.append((list(readings), list(events)))

    def shared(self, key: Any, factory: Any) -> Any:
        return factory()


def _driver(fmt: str, topic: str, options: dict[str, Any] | None = None) -> tuple[MqttDriver, RecordingContext]:
    opts = dict(options or {})
    if fmt in ("value", "json") and "kind" not in opts:
        opts["kind"] = "temperature"
    if fmt == "json" and "field" not in opts:
        opts["field"] = "value"
    cfg = MqttConfig(name="dev", driver="mqtt", broker="mqtt://127.0.0.1:1883", topic=topic, format=fmt, **opts)
    ctx = RecordingContext()
    return MqttDriver(cfg, ctx), ctx


def _payload(case: dict[str, Any]) -> bytes:
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"])
    if "payload_repeat" in case:
        text, n = case["payload_repeat"]
        return (text * n).encode()
    return str(case["payload"]).encode()


def _key(r: Reading) -> str:
    return f"{r.metric}{{sensor={r.labels['sensor']}}}" if r.labels else r.metric


def _run(fmt: str, case: dict[str, Any]) -> tuple[MqttDriver, RecordingContext]:
    drv, ctx = _driver(fmt, case["topic"], case.get("options"))
    payload = _payload(case)
    drv.on_message(case["topic"], payload, len(payload), False, 1_700_000_000.0)
    return drv, ctx


def _cases(name: str) -> list[Any]:
    doc = yaml.safe_load((DATA / f"{name}.yaml").read_text(encoding="utf-8"))
    return [pytest.param(doc.get("format") or c["format"], c, id=f"{name}: {c['name']}") for c in doc["cases"]]


@pytest.mark.parametrize(("fmt", "case"), [p for f in GOOD_FILES for p in _cases(f)])
def test_corpus_examples_parse_to_the_expected_values(fmt: str, case: dict[str, Any]) -> None:
    drv, ctx = _run(fmt, case)
    assert not drv.invalid, f"counted as invalid: {dict(drv.invalid)}"
    if case.get("ignored"):
        assert ctx.emitted == [] and drv.results == {"ignored": 1}
        return
    assert len(ctx.emitted) == 1 and drv.results == {"ok": 1}
    readings, _ = ctx.emitted[0]
    got = {_key(r): r.value for r in readings}
    assert got == pytest.approx(case["expect"]), got
    assert all(r.ts == 1_700_000_000.0 for r in readings)  # the arrival time: the state is current now
    if "ts" in case:  # the payload's own time is parsed (used for transition events)
        assert parse(fmt, case["topic"], _payload(case), ParseOptions(**(case.get("options") or {}))).ts == \
            pytest.approx(case["ts"])


def test_every_format_has_a_corpus_file_naming_its_source() -> None:
    assert set(GOOD_FILES) == set(FORMATS)
    for name in GOOD_FILES:
        head = (DATA / f"{name}.yaml").read_text(encoding="utf-8").split("format:")[0]
        assert "https://" in head, f"{name}.yaml must name the documentation its examples come from"


@pytest.mark.parametrize(("fmt", "case"), _cases("malformed"))
def test_malformed_messages_are_counted_and_dropped(fmt: str, case: dict[str, Any]) -> None:
    drv, ctx = _run(fmt, case)
    assert dict(drv.invalid) == case["invalid"]
    expect = case.get("expect")
    if expect:
        assert len(ctx.emitted) == 1
        assert {_key(r): r.value for r in ctx.emitted[0][0]} == pytest.approx(expect)
    else:
        assert ctx.emitted == [] and drv.results == {"invalid": 1}


def test_two_state_change_becomes_an_event_but_the_first_value_does_not() -> None:
    drv, ctx = _driver("zigbee2mqtt", "z/door")
    for contact, at in ((True, 1.0), (True, 2.0), (False, 3.0), (True, 4.0)):
        payload = json.dumps({"contact": contact}).encode()
        drv.on_message("z/door", payload, len(payload), False, 1_700_000_000.0 + at)
    events = [e for _, evs in ctx.emitted for e in evs]
    assert [(e.type, e.ts) for e in events] == [("door_open", 1_700_000_003.0), ("door_close", 1_700_000_004.0)]


# ------------------------------------------------------------------ property-based

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
_keys = st.sampled_from(["temperature", "humidity", "contact", "water_leak", "smoke", "battery", "linkquality",
                         "last_seen", "Temperature", "Humidity", "TempUnit", "Switch1", "StatusSNS", "Wifi", "Signal",
                         "AM2301", "DS18B20-1", "Id", "method", "params", "ts", "tC", "tF", "rh", "state",
                         "temperature:0", "input:0", "devicepower:0", "battery", "percent", "value", "sensor"])
# JSON shaped like the formats' payloads, so the random values reach the field converters.
_shaped = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(["NotifyStatus", "F"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=6),
    max_leaves=25,
)
_topics = st.sampled_from([
    "zigbee2mqtt/th", "zigbee2mqtt/th/temperature", "zigbee2mqtt/bridge/state", "tele/t/SENSOR", "stat/t/STATUS10",
    "tele/t/STATE", "n/sensor/room_temperature/state", "n/binary_sensor/door/state", "n/status", "s/status/temperature:0",
    "s/status/input:0", "s/events/rpc", "s/online", "x", "a/b/c/d/e/f", "",
]) | st.text(max_size=30)
_options = st.builds(ParseOptions, kind=st.sampled_from(["auto", "temperature", "humidity", "door", "leak", "smoke"]),
                     field=st.sampled_from([None, "value", "a.b[0]", "sensors[1].rh", "0"]), invert=st.booleans(),
                     unit=st.sampled_from([None, "celsius", "fahrenheit", "percent", "ratio"]))


def _check_parse(fmt: str, topic: str, payload: bytes, opts: ParseOptions) -> None:
    try:
        parsed = parse(fmt, topic, payload, opts)
    except PayloadError as exc:
        assert exc.reason in REASONS
        return
    for v in parsed.values:  # whatever gets through is a finite number of a known quantity
        assert math.isfinite(v.value)
    for p in parsed.problems:
        assert p.reason in REASONS


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(fmt=st.sampled_from(sorted(FORMATS)), topic=_topics, payload=st.binary(max_size=300), opts=_options)
def test_random_bytes_never_raise(fmt: str, topic: str, payload: bytes, opts: ParseOptions) -> None:
    _check_parse(fmt, topic, payload, opts)


@_SETTINGS
@given(fmt=st.sampled_from(sorted(FORMATS)), topic=_topics, doc=_json | _shaped, opts=_options)
def test_random_json_never_raises(fmt: str, topic: str, doc: Any, opts: ParseOptions) -> None:
    _check_parse(fmt, topic, json.dumps(doc).encode(), opts)


@_SETTINGS
@given(fmt=st.sampled_from(sorted(FORMATS)), topic=_topics, doc=_shaped)
def test_driver_path_never_raises_and_emits_only_plausible_values(fmt: str, topic: str, doc: Any) -> None:
    drv, ctx = _driver(fmt, "#", {"kind": "door"} if fmt in ("value", "json") else None)
    payload = json.dumps(doc).encode()
    drv.on_message(topic, payload, len(payload), False, 1_700_000_000.0)
    assert sum(drv.results.values()) == 1
    for readings, _ in ctx.emitted:
        for r in readings:
            assert math.isfinite(r.value)
