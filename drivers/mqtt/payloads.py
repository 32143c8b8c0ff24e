"""Payload building blocks shared by the MQTT formats: quantities, plausible ranges, decoding.

Every format turns one message into :class:`Parsed` values of named
*quantities* (``temperature``, ``door`` …) already in the quantity's base
unit. This module holds the table from quantity to metric and plausible range
(:data:`QUANTITIES`), and the small decoders every format uses. A decoder
that meets bad input raises :class:`PayloadError` with one of the bounded
:data:`REASONS`, which become the ``reason`` label of
``roomwatch_mqtt_messages_invalid_total``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from roomwatch.core import vocabulary as v

__all__ = [
    "MAX_PAYLOAD",
    "QUANTITIES",
    "REASONS",
    "STATE_WORDS",
    "Parsed",
    "PayloadError",
    "Quantity",
    "Value",
    "decode_json",
    "decode_text",
    "fahrenheit_to_celsius",
    "number",
    "payload_time",
    "state",
]

#: Largest payload parsed; bigger ones are dropped unread (a sensor message is well under 2 KiB).
MAX_PAYLOAD = 64 * 1024

#: Every reason a message can be dropped for (the label values of the invalid-messages counter).
REASONS = (
    "too_large",  # payload above MAX_PAYLOAD
    "not_utf8",  # bytes that are not UTF-8 text
    "not_json",  # the format wants JSON and the payload is not
    "wrong_type",  # a field of the wrong type (text where a number belongs, null, a list …)
    "not_finite",  # NaN or ±Infinity
    "out_of_range",  # outside the plausible range of the quantity (a 900 °C room)
    "missing_field",  # the configured json field is not in the payload
    "unknown_topic",  # a topic the format cannot place (or no device subscribed to it)
    "overload",  # the agent could not keep up and dropped the message before parsing
)


class PayloadError(ValueError):
    """The message (or one field of it) cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Quantity:
    """What a quantity becomes: its metric, the plausible range of its base-unit value, its role."""

    metric: str
    low: float
    high: float
    state: bool = False  # a 0/1 state whose change is an event (door, leak, smoke)
    meta: bool = False  # about the sensor itself (battery, radio), reported whatever ``kind`` says


#: Plausible ranges are wide enough for any room sensor and narrow enough to catch garbage:
#: -50..100 °C covers an unheated store room in Heilongjiang and a room on fire, while a 900 °C
#: reading (an overflowed register, a °F value read as K …) is refused. Humidity is a ratio after
#: conversion; link quality is Zigbee's LQI (0..255); Wi-Fi signal is in dBm.
QUANTITIES: dict[str, Quantity] = {
    "temperature": Quantity(v.TEMPERATURE, -50.0, 100.0),
    "humidity": Quantity(v.HUMIDITY, 0.0, 1.0),
    "door": Quantity(v.DOOR_OPEN, 0.0, 1.0, state=True),
    "leak": Quantity(v.WATER_LEAK, 0.0, 1.0, state=True),
    "smoke": Quantity(v.SMOKE, 0.0, 1.0, state=True),
    "battery": Quantity(v.SENSOR_BATTERY, 0.0, 1.0, meta=True),
    "link_quality": Quantity(v.SENSOR_LINK_QUALITY, 0.0, 255.0, meta=True),
    "signal": Quantity(v.SENSOR_SIGNAL, -130.0, 0.0, meta=True),
}

#: Words a sensor may use for a two-state value (compared case-insensitively): active = 1.
STATE_WORDS: dict[str, float] = {
    **dict.fromkeys(("on", "open", "opened", "true", "1", "yes", "wet", "leak", "detected", "alarm", "active"), 1.0),
    **dict.fromkeys(("off", "closed", "close", "false", "0", "no", "dry", "clear", "normal", "inactive", "idle"), 0.0),
}


@dataclass(slots=True)
class Value:
    """One quantity read from a message, in base units (°C, ratio, 0/1, LQI, dBm)."""

    quantity: str
    value: float
    sensor: str = ""  # the payload's own name for the source (DS18B20-1, temperature:0, …); "" = the device


@dataclass(slots=True)
class Parsed:
    """What a format made of one message."""

    values: list[Value] = field(default_factory=list)
    ts: float | None = None  # the payload's own time of the reading (Unix s), when it carries one
    problems: list[PayloadError] = field(default_factory=list)  # fields dropped; the rest is good
    ignored: bool = False  # a known topic without sensor values (availability, LWT, bridge state)


def decode_text(payload: bytes) -> str:
    """The payload as stripped text."""
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PayloadError("not_utf8", "payload is not UTF-8 text") from None


def decode_json(payload: bytes) -> Any:
    """The payload as JSON (NaN/Infinity literals are let through and refused per field)."""
    text = decode_text(payload)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the parser's limit
        raise PayloadError("not_json", f"payload is not JSON: {text[:40]!r}") from None


def number(raw: Any, what: str) -> float:
    """A finite number from a JSON number or numeric text; booleans and null are wrong types."""
    if isinstance(raw, bool) or raw is None:
        raise PayloadError("wrong_type", f"{what}: expected a number, got {json.dumps(raw)}")
    if isinstance(raw, int):
        value = float(raw) if abs(raw) < 1e300 else math.inf
    elif isinstance(raw, float):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip().strip('"')
        try:
            value = float(text)
        except ValueError:
            raise PayloadError("wrong_type", f"{what}: expected a number, got {raw[:40]!r}") from None
    else:
        raise PayloadError("wrong_type", f"{what}: expected a number, got a {type(raw).__name__}")
    if not math.isfinite(value):
        raise PayloadError("not_finite", f"{what}: {value} is not a finite number")
    return value


def state(raw: Any, what: str) -> float:
    """1.0 or 0.0 from a boolean, 0/1, or a state word (ON/OFF, open/closed, true/false …)."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, (int, float)):
        if raw in (0, 1):
            return float(raw)
        if isinstance(raw, float) and not math.isfinite(raw):
            raise PayloadError("not_finite", f"{what}: {raw} is not a state")
        raise PayloadError("out_of_range", f"{what}: {raw} is neither 0 nor 1")
    if isinstance(raw, str):
        found = STATE_WORDS.get(raw.strip().strip('"').lower())
        if found is not None:
            return found
        raise PayloadError("wrong_type", f"{what}: {raw[:40]!r} is not a state (ON/OFF, open/closed, true/false)")
    raise PayloadError("wrong_type", f"{what}: expected a state, got {type(raw).__name__ if raw is not None else 'null'}")


def fahrenheit_to_celsius(value: float) -> float:
    return (value - 32.0) * 5.0 / 9.0


def payload_time(raw: Any) -> float | None:
    """A payload timestamp as Unix seconds: epoch s or ms, or ISO 8601 with a zone; else None.

    A time without a zone (Tasmota's local ``Time``) is not used: the agent cannot know the
    sensor's zone, and the message arrival time is then the better transition time.
    """
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, (int, float)):
        if not math.isfinite(raw) or raw <= 0:
            return None
        return float(raw) / 1000.0 if raw > 1e11 else float(raw)  # > 1e11 s is year 5138: milliseconds
    if isinstance(raw, str) and len(raw) <= 64:
        try:
            parsed = dt.datetime.fromisoformat(raw.strip())
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None
        return parsed.timestamp()
    return None
