"""The payload formats of the MQTT driver, as tables plus one short function each.

A format is a function ``(topic, payload, options) -> Parsed`` registered in
:data:`FORMATS`. The vendor keys each format understands are data
(:data:`ZIGBEE2MQTT_KEYS`, :data:`TASMOTA_FIELDS`, :data:`SHELLY_COMPONENTS`,
:data:`ESPHOME_NAME_HINTS`): a new key is a new row. Values leave here in base
units; plausible ranges are checked by the driver (:data:`~roomwatch.drivers.mqtt.payloads.QUANTITIES`).

Sources of the layouts (also named in ``tests/data/mqtt/*.yaml``):

* zigbee2mqtt: https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html and the
  device pages (e.g. https://www.zigbee2mqtt.io/devices/MCCGQ11LM.html, WSDCGQ11LM, SJCGQ11LM);
* Tasmota: https://tasmota.github.io/docs/JSON-Status-Responses/ and sensor pages
  (https://tasmota.github.io/docs/DS18x20/, /AM2301/, /BME280/);
* ESPHome: https://esphome.io/components/mqtt.html (``<prefix>/<component>/<object_id>/state``);
* Shelly gen2: https://shelly-api-docs.shelly.cloud/gen2/General/RPCChannels#mqtt and the
  component pages (Temperature, Humidity, Input, DevicePower).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roomwatch.drivers.mqtt.payloads import (
    Parsed,
    PayloadError,
    Value,
    decode_json,
    decode_text,
    fahrenheit_to_celsius,
    number,
    payload_time,
    state,
)

__all__ = ["FORMATS", "FORMAT_DEFAULT_MAX_AGE", "ParseOptions", "default_max_age", "parse"]


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """The device options a format needs."""

    kind: str = "auto"  # temperature | humidity | door | leak | smoke | auto
    field: str | None = None  # json: path of the value (a.b[0].c)
    invert: bool = False  # two-state values: report 1 where the sensor says 0 (a contact that is ON when closed)
    unit: str | None = None  # value/json: celsius | fahrenheit | percent | ratio


# ------------------------------------------------------------------ converters

def _celsius(raw: Any, what: str) -> float:
    return number(raw, what)


def _percent(raw: Any, what: str) -> float:
    return number(raw, what) / 100.0


def _active(raw: Any, what: str) -> float:
    return state(raw, what)


def _contact(raw: Any, what: str) -> float:
    # zigbee2mqtt: contact true = magnet near = door CLOSED, so door_open is the negation.
    return 1.0 - state(raw, what)


def _plain(raw: Any, what: str) -> float:
    return number(raw, what)


Converter = Callable[[Any, str], float]

_NUMERIC_KINDS = {"temperature", "humidity"}
_STATE_KINDS = {"door", "leak", "smoke"}


def _kind_value(raw: Any, opts: ParseOptions, what: str) -> Value:
    """One value of the configured kind (value and json formats, ESPHome/Tasmota/Shelly contacts)."""
    kind = opts.kind
    if kind in _STATE_KINDS:
        val = state(raw, what)
        return Value(kind, 1.0 - val if opts.invert else val)
    val = number(raw, what)
    if kind == "temperature":
        return Value(kind, fahrenheit_to_celsius(val) if opts.unit == "fahrenheit" else val)
    if kind == "humidity":
        return Value(kind, val if opts.unit == "ratio" else val / 100.0)
    raise PayloadError("unknown_topic", f"{what}: no kind to report it as")


# ------------------------------------------------------------------ value, json

def parse_value(topic: str, payload: bytes, opts: ParseOptions) -> Parsed:
    """A bare number (``23.5``) or state word (``ON``, ``open``, ``true``)."""
    return Parsed([_kind_value(decode_text(payload), opts, "payload")])


_PATH_RE = re.compile(r"[^.\[\]]+|\[(\d+)\]")


def json_path(doc: Any, path: str) -> Any:
    """``a.b[0].c`` (or ``a.b.0.c``) inside a JSON document; PayloadError when it is not there."""
    cur = doc
    for m in _PATH_RE.finditer(path):
        key = m.group(0)
        if m.group(1) is not None or (key.isdigit() and isinstance(cur, list)):
            idx = int(m.group(1) if m.group(1) is not None else key)
            if not isinstance(cur, list) or idx >= len(cur):
                raise PayloadError("missing_field", f"{path}: no item {idx}")
            cur = cur[idx]
        else:
            if not isinstance(cur, dict) or key not in cur:
                raise PayloadError("missing_field", f"{path}: no key {key!r}")
            cur = cur[key]
    return cur


def parse_json(topic: str, payload: bytes, opts: ParseOptions) -> Parsed:
    """JSON with the value at the configured ``field`` path."""
    doc = decode_json(payload)
    return Parsed([_kind_value(json_path(doc, opts.field or ""), opts, opts.field or "payload")])


# ------------------------------------------------------------------ zigbee2mqtt

#: zigbee2mqtt exposes (https://www.zigbee2mqtt.io/guide/usage/exposes.html) → (quantity, converter).
ZIGBEE2MQTT_KEYS: dict[str, tuple[str, Converter]] = {
    "temperature": ("temperature", _celsius),
    "humidity": ("humidity", _percent),
    "contact": ("door", _contact),
    "water_leak": ("leak", _active),
    "smoke": ("smoke", _active),
    "battery": ("battery", _percent),
    "linkquality": ("link_quality", _plain),
}
# Topics under the base topic that are not device state: bridge messages and availability.
_Z2M_IGNORED_SUFFIXES = ("/availability", "/set", "/get")


def parse_zigbee2mqtt(topic: str, payload: bytes, opts: ParseOptions) -> Parsed:
    """``zigbee2mqtt/<friendly_name>`` JSON state (or one attribute per topic in ``output: attribute`` mode)."""
    if "/bridge/" in topic or topic.endswith("/bridge") or topic.endswith(_Z2M_IGNORED_SUFFIXES):
        return Parsed(ignored=True)
    last = topic.rsplit("/", 1)[-1]
    if last in ZIGBEE2MQTT_KEYS and not payload.lstrip().startswith(b"{"):
        doc: Any = {last: decode_text(payload)}  # attribute output: zigbee2mqtt/<name>/temperature → 23.5
    else:
        doc = decode_json(payload)
    if not isinstance(doc, dict):
        raise PayloadError("wrong_type", "zigbee2mqtt state must be a JSON object")
    out = Parsed(ts=payload_time(doc.get("last_seen")))
    for key, (quantity, conv) in ZIGBEE2MQTT_KEYS.items():
        if key in doc:
            try:
                out.values.append(Value(quantity, conv(doc[key], key)))
            except PayloadError as exc:
                out.problems.append(exc)
    if not out.values and not out.problems:
        out.ignored = True  # a button action, an OTA update notice …: nothing for us
    return out


# ------------------------------------------------------------------ Tasmota

#: Fields inside a Tasmota sensor object (DS18B20, AM2301, DHT11, SHT3X, BME280, SI7021, HTU21 …
#: all use these names: https://tasmota.github.io/docs/JSON-Status-Responses/) → (quantity, unit kind).
TASMOTA_FIELDS: dict[str, str] = {"Temperature": "temperature", "Humidity": "humidity"}
_TASMOTA_FIELD_RE = re.compile(r"^(Temperature|Humidity)(\d*)$")  # ANALOG: Temperature1, Temperature2 …
_TASMOTA_SWITCH_RE = re.compile(r"^Switch\d{1,2}$")  # Switch1..Switch28 (SwitchTopic 0)
#: Tasmota on ESP32 boards reports the microcontroller's internal temperature sensor as an
#: "ESP32" object in SENSOR: tens of degrees above the room, it would raise temperature alerts.
_TASMOTA_CHIP_RE = re.compile(r"^ESP(32|8266)", re.IGNORECASE)


def _tasmota_sensors(doc: dict[str, Any], opts: ParseOptions, out: Parsed) -> None:
    fahrenheit = str(doc.get("TempUnit", "C")).upper() == "F"
    for name, body in doc.items():
        if _TASMOTA_CHIP_RE.match(name):
            continue  # the board's own chip ("ESP32":{"Temperature":52.2}), not the room
        if isinstance(body, dict):
            sensor = str(body["Id"]) if isinstance(body.get("Id"), (str, int)) else name
            for fname, raw in body.items():
                m = _TASMOTA_FIELD_RE.match(fname)
                if not m:
                    continue
                quantity = TASMOTA_FIELDS[m.group(1)]
                label = sensor if not m.group(2) else f"{sensor}/{fname}"
                try:
                    val = number(raw, f"{name}.{fname}")
                    if quantity == "temperature" and fahrenheit:
                        val = fahrenheit_to_celsius(val)
                    elif quantity == "humidity":
                        val /= 100.0
                    out.values.append(Value(quantity, val, label))
                except PayloadError as exc:
                    out.problems.append(exc)
        elif _TASMOTA_SWITCH_RE.match(name) and opts.kind in _STATE_KINDS:
            try:
                kv = _kind_value(body, opts, name)
                out.values.append(Value(kv.quantity, kv.value, name))
            except PayloadError as exc:
                out.problems.append(exc)


def parse_tasmota(topic: str, payload: bytes, opts: ParseOptions) -> Parsed:
    """``tele/<topic>/SENSOR``, ``stat/<topic>/STATUS10`` (StatusSNS) and ``tele/<topic>/STATE`` (Wi-Fi signal)."""
    last = topic.rsplit("/", 1)[-1]
    if last not in ("SENSOR", "STATUS10", "STATE"):
        return Parsed(ignored=True)  # LWT, RESULT, INFO1, POWER …: not sensor readings
    doc = decode_json(payload)
    if not isinstance(doc, dict):
        raise PayloadError("wrong_type", f"Tasmota {last} must be a JSON object")
    out = Parsed()  # Tasmota's "Time" is local time without a zone: the arrival time is better
    if last == "STATE":
        wifi = doc.get("Wifi")
        if isinstance(wifi, dict) and "Signal" in wifi:
            try:
                out.values.append(Value("signal", number(wifi["Signal"], "Wifi.Signal")))
            except PayloadError as exc:
                out.problems.append(exc)
    else:
        body = doc.get("StatusSNS", doc) if last == "STATUS10" else doc
        if not isinstance(body, dict):
            raise PayloadError("wrong_type", "StatusSNS must be a JSON object")
        _tasmota_sensors(body, opts, out)
    if not out.values and not out.problems:
        out.ignored = True
    return out


# ------------------------------------------------------------------ ESPHome

#: ESPHome state topics carry no device class: guess the quantity from the object id (first match
#: wins). Numeric quantities come from ``sensor``, two-state ones from ``binary_sensor``.
ESPHOME_NAME_HINTS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "sensor": [("temperature", ("temperature", "temp")), ("humidity", ("humidity", "humid")),
               ("battery", ("battery",)), ("signal", ("wifi_signal", "rssi"))],
    "binary_sensor": [("door", ("door", "contact", "window")), ("leak", ("leak", "water", "flood")),
                      ("smoke", ("smoke", "fire"))],
}
_ESPHOME_IGNORED = ("status", "debug")


def parse_esphome(topic: str, payload: bytes, opts: ParseOptions) -> Parsed:
    """``<prefix>/sensor/<object_id>/state`` (a number) and ``<prefix>/binary_sensor/<object_id>/state`` (ON/OFF)."""
    parts = topic.split("/")
    if len(parts) >= 4 and parts[-1] == "state":
        component, object_id = parts[-3], parts[-2]
    elif parts[-1] in _ESPHOME_IGNORED or parts[-1] == "command":
        return Parsed(ignored=True)  # availability (online/offline), logs, commands
    else:
        raise PayloadError("unknown_topic", f"{topic!r} is not an ESPHome state topic (<prefix>/<component>/<id>/state)")
    hints = ESPHOME_NAME_HINTS.get(component)
    if hints is None:
        return Parsed(ignored=True)  # switch, light, text_sensor …
    text = decode_text(payload)
    if opts.kind != "auto":
        if (opts.kind in _STATE_KINDS) != (component == "binary_sensor"):
            return Parsed(ignored=True)  # a door device also publishing its Wi-Fi signal sensor …
        kv = _kind_value(text, opts, object_id)
        return Parsed([Value(kv.quantity, kv.value, object_id)])
    name = object_id.lower()
    for quantity, words in hints:
        if any(w in name for w in words):
            if component == "binary_sensor":
                val = state(text, object_id)
                return Parsed([Value(quantity, 1.0 - val if opts.invert else val, object_id)])
            raw = number(text, object_id)  # ESPHome publishes "nan" for a failed read: not_finite
            if quantity in ("humidity", "battery"):
                raw /= 100.0
            return Parsed([Value(quantity, raw, object_id)])
    return Parsed(ignored=True)  # a sensor we do not map (voltage, uptime …)


# ------------------------------------------------------------------ Shelly gen2

#: Shelly gen2 component (before ``:<id>``) → (status key, quantity, converter); nested keys with dots.
SHELLY_COMPONENTS: dict[str, tuple[tuple[str, str, Converter], ...]] = {
    "temperature": (("tC", "temperature", _celsius),),
    "humidity": (("rh", "humidity", _percent),),
    "devicepower": (("battery.percent", "battery", _percent),),
    "wifi": (("rssi", "signal", _plain),),
}


def _dig(body: dict[str, Any], dotted: str) -> Any:
    cur: Any = body
    for key in dotted.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return _MISSING
        cur = cur[key]
    return cur


_MISSING = object()


def _shelly_component(key: str, body: Any, opts: ParseOptions, out: Parsed) -> None:
    comp = key.split(":", 1)[0]
    if not isinstance(body, dict):
        out.problems.append(PayloadError("wrong_type", f"{key}: expected a JSON object"))
        return
    if comp == "input":
        # A switch-type input reports "state": true/false; a button-type input has state null.
        if opts.kind in _STATE_KINDS and body.get("state") is not None:
            try:
                val = _kind_value(body["state"], opts, f"{key}.state")
                out.values.append(Value(val.quantity, val.value, key))
            except PayloadError as exc:
                out.problems.append(exc)
        return
    for status_key, quantity, conv in SHELLY_COMPONENTS.get(comp, ()):
        raw = _dig(body, status_key)
        if raw is _MISSING:
            continue
        try:
            if comp == "temperature" and raw is None and body.get("tF") is not None:
                raw = fahrenheit_to_celsius(number(body["tF"], f"{key}.tF"))
            out.values.append(Value(quantity, conv(raw, f"{key}.{status_key}"), "" if comp in ("devicepower", "wifi") else key))
        except PayloadError as exc:
            out.problems.append(exc)


def parse_shelly(topic: str, payload: bytes, opts: ParseOptions) -> Parsed:
    """``<prefix>/status/<component>:<id>`` and ``<prefix>/events/rpc`` (NotifyStatus, NotifyFullStatus)."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[-2] == "status":
        doc = decode_json(payload)
        out = Parsed()
        _shelly_component(parts[-1], doc, opts, out)
    elif len(parts) >= 3 and parts[-2:] == ["events", "rpc"]:
        doc = decode_json(payload)
        if not isinstance(doc, dict):
            raise PayloadError("wrong_type", "a Shelly RPC notification must be a JSON object")
        if doc.get("method") not in ("NotifyStatus", "NotifyFullStatus"):
            return Parsed(ignored=True)  # NotifyEvent (button pushes, scripts)
        params = doc.get("params")
        if not isinstance(params, dict):
            raise PayloadError("wrong_type", "params of a Shelly notification must be a JSON object")
        out = Parsed(ts=payload_time(params.get("ts")))
        for key, body in params.items():
            if ":" in key or key in SHELLY_COMPONENTS:
                _shelly_component(key, body, opts, out)
    elif parts[-1] in ("online", "rpc", "announce", "command") or "debug" in parts:
        return Parsed(ignored=True)
    else:
        raise PayloadError("unknown_topic", f"{topic!r} is not a Shelly gen2 status or notification topic")
    if not out.values and not out.problems:
        out.ignored = True
    return out


# ------------------------------------------------------------------ registry

FORMATS: dict[str, Callable[[str, bytes, ParseOptions], Parsed]] = {
    "value": parse_value,
    "json": parse_json,
    "zigbee2mqtt": parse_zigbee2mqtt,
    "tasmota": parse_tasmota,
    "esphome": parse_esphome,
    "shelly": parse_shelly,
}

#: ``max_age`` when the device entry does not set one: (measurements, two-state kinds) per format;
#: None = no silence check. Measurements (temperature, humidity) always get a limit, so a dead
#: sensor never shows its last value as the room's state; door/leak/smoke states are sent on change
#: only, so they get one only where the format has a heartbeat.
#: zigbee2mqtt: its own availability check calls a battery device offline after 25 h
#: (https://www.zigbee2mqtt.io/guide/configuration/device-availability.html, passive timeout 1500 min);
#: every message carries the whole state, contacts included.
#: Tasmota: sends tele/…/SENSOR (switches included) every TelePeriod, 300 s by default
#: (https://tasmota.github.io/docs/Commands/#teleperiod): three missed periods.
#: ESPHome: a sensor publishes every ``update_interval``, 60 s by default
#: (https://esphome.io/components/sensor/): 15 min; binary sensors publish on change only.
#: Shelly gen2: the battery Plus H&T reports on a threshold and at least every 2 h (firmware ≥ 0.12.0,
#: https://support.shelly.cloud/en/support/solutions/articles/103000226308): one missed report + margin;
#: inputs report on change only.
#: value/json: the publisher's rate is unknown: 15 min, like ESPHome.
FORMAT_DEFAULT_MAX_AGE: dict[str, tuple[float | None, float | None]] = {
    "value": (15 * 60.0, None),
    "json": (15 * 60.0, None),
    "zigbee2mqtt": (25 * 3600.0, 25 * 3600.0),
    "tasmota": (15 * 60.0, 15 * 60.0),
    "esphome": (15 * 60.0, None),
    "shelly": (3 * 3600.0, None),
}


def default_max_age(fmt: str, kind: str) -> float | None:
    """The ``max_age`` of a device entry that does not set one (``kind`` auto counts as measurements)."""
    measurements, states = FORMAT_DEFAULT_MAX_AGE[fmt]
    return states if kind in _STATE_KINDS else measurements


def parse(fmt: str, topic: str, payload: bytes, opts: ParseOptions) -> Parsed:
    """Parse one message; raises only :class:`PayloadError` for bad input (any other error is a bug)."""
    return FORMATS[fmt](topic, payload, opts)
