"""Device availability over MQTT: which topic says a device is online or offline, and reading it.

Wi-Fi boards and bridges tell the broker how to announce their death: a last
will (LWT) the broker publishes, retained, when the board stops answering. So
a board that drops off the network is known to be gone within its keepalive
(about a minute), not after ``max_age``. Per format, the availability topic
is derived from the device's ``topic`` (a table of small functions,
:data:`FORMAT_AVAILABILITY`); ``availability_topic`` in the device entry
overrides it, and ``""`` turns it off. A topic filter with a wildcard at the
device level (``tele/+/SENSOR``) names many devices: no availability then.

Sources:

* Tasmota: ``tele/<topic>/LWT``, ``Online``/``Offline`` (https://tasmota.github.io/docs/MQTT/);
  with a custom ``FullTopic`` the ``tele`` level may sit elsewhere (``home/tele/<topic>/``).
* ESPHome: birth and will messages on ``<topic_prefix>/status``, ``online``/``offline``
  (https://esphome.io/components/mqtt.html, ``birth_message``/``will_message``).
* Shelly gen2: ``<topic_prefix>/online``, ``true``/``false``
  (https://shelly-api-docs.shelly.cloud/gen2/General/RPCChannels#mqtt).
* zigbee2mqtt: ``<base>/<friendly_name>/availability``, retained, ``{"state":"online"}``, or
  ``online``/``offline`` with ``legacy_availability_payload``
  (https://www.zigbee2mqtt.io/guide/configuration/device-availability.html).
* value, json: none of their own; ``availability_topic`` with ``payload_available`` /
  ``payload_not_available`` (defaults ``online``/``offline``), as Home Assistant's MQTT entities
  (https://www.home-assistant.io/integrations/sensor.mqtt/#availability_topic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roomwatch.drivers.mqtt.formats import ZIGBEE2MQTT_KEYS
from roomwatch.drivers.mqtt.payloads import PayloadError, decode_json, decode_text

__all__ = ["FORMAT_AVAILABILITY", "Availability", "derive_topic", "read_availability", "resolve", "topic_matches"]


@dataclass(frozen=True, slots=True)
class Availability:
    """Where a device says whether it is online, and the words it uses (compared case-insensitively)."""

    topic: str
    online: str
    offline: str
    json_state: bool = False  # zigbee2mqtt: the word is in {"state": …}; a plain word is its legacy form


def _wild(levels: list[str]) -> bool:
    return any(lv in ("+", "#") for lv in levels)


def _tasmota(topic: str) -> str | None:
    """``tele/<t>/SENSOR``, ``tele/<t>/+``, ``stat/<t>/STATUS10``, ``home/tele/<t>/#`` → ``…tele/<t>/LWT``."""
    levels = topic.split("/")
    if len(levels) < 3:
        return None
    body = levels[:-1]
    at = [i for i, lv in enumerate(body) if lv in ("tele", "stat")]
    if not at and body[0] == "+":
        at = [0]  # +/<t>/SENSOR: the default FullTopic %prefix%/%topic%/ with any prefix
    if len(at) != 1:
        return None
    rest = body[:at[0]] + body[at[0] + 1:]
    if not rest or _wild(rest):
        return None
    body[at[0]] = "tele"  # Tasmota publishes its LWT under the telemetry prefix
    return "/".join([*body, "LWT"])


def _esphome(topic: str) -> str | None:
    """``<prefix>/<component>/<object_id>/state``, ``<prefix>/#`` (or ``<prefix>/sensor/#``) → ``<prefix>/status``."""
    levels = topic.split("/")
    if levels[-1] == "#":
        prefix = levels[:-1]
        if prefix and prefix[-1] in ("sensor", "binary_sensor"):
            prefix = prefix[:-1]
    elif len(levels) >= 4 and levels[-1] == "state":
        prefix = levels[:-3]
    else:
        return None
    return "/".join([*prefix, "status"]) if prefix and not _wild(prefix) else None


def _shelly(topic: str) -> str | None:
    """``<prefix>/status/<component>``, ``<prefix>/events/rpc``, ``<prefix>/#`` → ``<prefix>/online``."""
    levels = topic.split("/")
    if levels[-1] == "#":
        prefix = levels[:-1]
        if prefix and prefix[-1] in ("status", "events"):
            prefix = prefix[:-1]
    elif len(levels) >= 3 and (levels[-2] == "status" or levels[-2:] == ["events", "rpc"]):
        prefix = levels[:-2]
    else:
        return None
    return "/".join([*prefix, "online"]) if prefix and not _wild(prefix) else None


def _zigbee2mqtt(topic: str) -> str | None:
    """``<base>/<name>``, ``<base>/<name>/+`` or ``<base>/<name>/temperature`` → ``<base>/<name>/availability``.

    A friendly name may contain ``/`` (``kitchen/th``), so the last level counts as an attribute
    only when it is a wildcard or an attribute name zigbee2mqtt publishes in attribute mode.
    """
    levels = topic.split("/")
    device = levels[:-1] if levels[-1] in ("+", "#") or levels[-1] in ZIGBEE2MQTT_KEYS else levels
    if len(device) < 2 or _wild(device) or device[1] == "bridge" or device[-1] in ("availability", "set", "get"):
        return None  # <base>/+ is every device; bridge/… is zigbee2mqtt itself
    return "/".join([*device, "availability"])


#: format → (derive the topic from the device's topic or None, online word, offline word, JSON {"state"}).
FORMAT_AVAILABILITY: dict[str, tuple[Callable[[str], str | None] | None, str, str, bool]] = {
    "tasmota": (_tasmota, "Online", "Offline", False),
    "esphome": (_esphome, "online", "offline", False),
    "shelly": (_shelly, "true", "false", False),
    "zigbee2mqtt": (_zigbee2mqtt, "online", "offline", True),
    "value": (None, "online", "offline", False),
    "json": (None, "online", "offline", False),
}


def derive_topic(fmt: str, topic: str) -> str | None:
    """The availability topic a format implies for a device topic filter; None when it has none or is ambiguous."""
    derive = FORMAT_AVAILABILITY[fmt][0]
    return derive(topic) if derive is not None else None


def resolve(fmt: str, topic: str, availability_topic: str | None, payload_available: str | None,
            payload_not_available: str | None) -> Availability | None:
    """The device's availability: explicit topic (``""`` = off), else the format's derived one."""
    _, online, offline, json_state = FORMAT_AVAILABILITY[fmt]
    where = derive_topic(fmt, topic) if availability_topic is None else availability_topic
    if not where:
        return None
    return Availability(where, payload_available or online, payload_not_available or offline, json_state)


def read_availability(spec: Availability, payload: bytes) -> bool | None:
    """True online, False offline, None unknown (an empty payload: the retained message was cleared).

    Raises :class:`PayloadError` for anything else, so it is counted like other bad input.
    """
    text = decode_text(payload)
    if not text:
        return None
    word: Any = text
    if spec.json_state and text.startswith("{"):
        doc = decode_json(payload)
        if not isinstance(doc, dict) or "state" not in doc:
            raise PayloadError("missing_field", "availability: no \"state\" key")
        word = doc["state"]
        if not isinstance(word, str):
            raise PayloadError("wrong_type", f"availability state must be text, got {type(word).__name__}")
    key = word.strip().lower()
    if key == spec.online.lower():
        return True
    if key == spec.offline.lower():
        return False
    raise PayloadError("wrong_type", f"availability {word[:40]!r} is neither {spec.online!r} nor {spec.offline!r}")


def topic_matches(filter_: str, topic: str) -> bool:
    """Whether an MQTT topic filter (``+``, ``#``) matches a topic name (MQTT 3.1.1 §4.7)."""
    want, have = filter_.split("/"), topic.split("/")
    if topic.startswith("$") and want[0] in ("+", "#"):
        return False  # wildcards at the first level never match $SYS-style topics
    for i, level in enumerate(want):
        if level == "#":
            return True  # a/# matches a, a/b, a/b/c
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)
