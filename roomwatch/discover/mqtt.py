"""MQTT discovery: listen to a broker for a while and turn what room sensors publish into device entries.

Everything on the broker (``#``, retained messages at once, live ones for ``timeout``) is heard
through the MQTT driver's own connection, then sorted by the layouts of the firmwares the driver
reads (:mod:`roomwatch.drivers.mqtt.formats`):

* **zigbee2mqtt**: ``<base>/<friendly_name>`` JSON states; ``<base>/bridge/…`` is zigbee2mqtt
  itself, never a device (its retained ``bridge/devices`` names vendor and model);
  ``<base>/<name>/<attribute>`` (attribute output) becomes one device on ``<base>/<name>/+``.
* **Tasmota**: ``tele/<topic>/SENSOR`` with its ``tele/<topic>/LWT``. A board heard only through
  its retained LWT (SENSOR comes every TelePeriod, 5 minutes by default) is asked once for its
  sensors with ``cmnd/<topic>/STATUS 10``, the read-only status query; it answers on
  ``stat/<topic>/STATUS10``.
* **ESPHome**: ``<node>/sensor/<id>/state`` and ``<node>/binary_sensor/<id>/state`` with
  ``<node>/status``: one device per node on ``<node>/+/+/state``.
* **Shelly** gen2: ``<prefix>/status/<component>:<id>`` or ``<prefix>/events/rpc`` with
  ``<prefix>/online``. Gen1 (``shellies/<id>/sensor/<quantity>``, plain values): the driver has
  no gen1 format, so each quantity is a ``value`` device of its own, with the board's
  ``<prefix>/online`` as availability.

One device per physical sensor (a zigbee2mqtt device, a Tasmota or ESPHome board, a Shelly),
each with the series it reports as ``sensor`` labels. A candidate is kept only when the MQTT
driver itself, fed the messages heard, produced readings (plausible ranges included).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roomwatch.discover.probe import ProbeContext, Shared
from roomwatch.discover.report import Found, Outcome
from roomwatch.drivers.base import Reading
from roomwatch.drivers.mqtt.connection import BrokerConnection, BrokerSettings, Subscription, parse_broker_url
from roomwatch.drivers.mqtt.driver import MqttConfig, MqttDriver
from roomwatch.drivers.mqtt.formats import ESPHOME_NAME_HINTS, ZIGBEE2MQTT_KEYS
from roomwatch.drivers.mqtt.payloads import QUANTITIES

__all__ = ["MAX_TOPICS", "Candidate", "Heard", "classify", "discover_broker", "read_candidate"]

Progress = Callable[[str], None]

#: Topics remembered from one broker (newest message each); a broker with more is a big site: the rest is counted.
MAX_TOPICS = 20_000
#: After asking a Tasmota board for STATUS 10, wait at most this long past the listening time for the reply.
QUERY_GRACE = 1.5
#: What a sensor says about itself rather than the room: alone, it does not make a room sensor.
_META = frozenset(q.metric for q in QUANTITIES.values() if q.meta)
#: Shelly gen1 ``sensor/<quantity>`` topics → the ``value`` format's kind (battery, lux … have no kind).
SHELLY_GEN1_KINDS = {"temperature": "temperature", "humidity": "humidity", "state": "door", "flood": "leak",
                     "smoke": "smoke"}


@dataclass(frozen=True, slots=True)
class Heard:
    payload: bytes
    retained: bool
    arrival: float


@dataclass
class Candidate:
    """A device that may be there: its entry (without name and broker) and the topics that speak for it."""

    fmt: str
    name_hint: str
    entry: dict[str, Any]
    identity: str
    topics: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fallback_name: str = ""


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None


def _z2m(messages: dict[str, Heard], claimed: set[str]) -> list[Candidate]:
    bases = {t.split("/bridge/", 1)[0] for t in messages if "/bridge/" in t}
    if any(t.startswith("zigbee2mqtt/") for t in messages):
        bases.add("zigbee2mqtt")
    out: list[Candidate] = []
    for base in sorted(bases):
        known: dict[str, str] = {}
        ieee: dict[str, str] = {}
        sensors: list[str] = []  # listed by the bridge with a room quantity among their exposes
        devices = messages.get(f"{base}/bridge/devices")
        for dev in (_json(devices.payload) if devices else None) or []:
            if isinstance(dev, dict) and isinstance(dev.get("friendly_name"), str):
                d: dict[str, Any] = dev["definition"] if isinstance(dev.get("definition"), dict) else {}
                words = [str(d.get(k)) for k in ("vendor", "model") if d.get(k)]
                if d.get("description"):
                    words.append(f"({d['description']})")
                known[dev["friendly_name"]] = " ".join(words)
                if isinstance(dev.get("ieee_address"), str):
                    ieee[dev["friendly_name"]] = dev["ieee_address"]
                if _properties(d.get("exposes")) & _Z2M_ROOM:
                    sensors.append(dev["friendly_name"])
        groups: dict[str, list[str]] = {}
        for topic in sorted(messages):
            if not topic.startswith(base + "/") or topic.startswith(base + "/bridge") or topic in claimed:
                continue
            rest = topic[len(base) + 1:]
            last = rest.rsplit("/", 1)[-1]
            if not rest or last in ("availability", "set", "get"):
                continue
            payload = messages[topic].payload
            if "/" in rest and last in ZIGBEE2MQTT_KEYS and not payload.lstrip().startswith(b"{"):
                groups.setdefault(rest.rsplit("/", 1)[0] + "/+", []).append(topic)  # attribute output
            elif isinstance(_json(payload), dict):
                groups.setdefault(rest, []).append(topic)
        for name, topics in groups.items():
            friendly = name.removesuffix("/+")
            avail = f"{base}/{friendly}/availability"
            model = known.get(friendly, "")
            out.append(Candidate("zigbee2mqtt", friendly, {"topic": f"{base}/{name}", "format": "zigbee2mqtt"},
                                 f"zigbee2mqtt device {friendly!r}" + (f": {model}" if model else ""),
                                 ([avail] if avail in messages else []) + topics,
                                 fallback_name=f"zigbee-{ieee[friendly]}" if friendly in ieee else ""))
            claimed.update(topics)
        # zigbee2mqtt retains no device state by default, and a sleepy sensor reports on change or about
        # hourly: one the bridge lists but that said nothing meanwhile is named (it gives no reading, so it
        # is listed at the end, not written).
        heard = {name.removesuffix("/+") for name in groups}
        for friendly in sensors:
            if friendly not in heard:
                out.append(Candidate("zigbee2mqtt", friendly, {"topic": f"{base}/{friendly}", "format": "zigbee2mqtt"},
                                     f"zigbee2mqtt device {friendly!r}: {known[friendly]} (listed by the bridge)", []))
    return out


#: zigbee2mqtt expose properties that are room readings (not battery, link quality, buttons …).
_Z2M_ROOM = frozenset({"temperature", "humidity", "contact", "water_leak", "smoke"})


def _properties(exposes: Any) -> set[str]:
    """Property names in a zigbee2mqtt ``exposes`` list (features nested in composite exposes included)."""
    out: set[str] = set()
    for e in exposes if isinstance(exposes, list) else []:
        if isinstance(e, dict):
            if isinstance(e.get("property"), str):
                out.add(e["property"])
            out |= _properties(e.get("features"))
    return out


def _tasmota_parts(topic: str) -> tuple[list[str], str] | None:
    """``tele/<t>/SENSOR`` (or with ``tele`` at another level) → (levels without tele and the last one, last)."""
    levels = topic.split("/")
    if len(levels) < 3 or levels.count("tele") != 1 or levels[-1] not in ("SENSOR", "LWT", "STATE", "INFO1"):
        return None
    i = levels.index("tele")
    if i == len(levels) - 1:
        return None
    return levels[:i] + levels[i + 1:-1], levels[-1]


def _tasmota_topic(device: list[str], at: int, prefix: str, last: str) -> str:
    levels = [*device]
    levels.insert(at, prefix)
    return "/".join([*levels, last])


def tasmota_boards(topics: list[str]) -> dict[tuple[str, ...], int]:
    """Tasmota boards seen in ``topics``: device levels → the position of the prefix level (``tele``)."""
    out: dict[tuple[str, ...], int] = {}
    for topic in topics:
        parts = _tasmota_parts(topic)
        if parts is not None:
            out.setdefault(tuple(parts[0]), topic.split("/").index("tele"))
    return out


def _tasmota(messages: dict[str, Heard], claimed: set[str]) -> list[Candidate]:
    out = []
    for device, at in sorted(tasmota_boards(list(messages)).items()):
        sensor = _tasmota_topic(list(device), at, "tele", "SENSOR")
        status = _tasmota_topic(list(device), at, "stat", "STATUS10")
        lwt = _tasmota_topic(list(device), at, "tele", "LWT")
        info = _json(messages[t].payload) if (t := _tasmota_topic(list(device), at, "tele", "INFO1")) in messages else None
        module = ""
        if isinstance(info, dict):
            body = info.get("Info1", info)
            if isinstance(body, dict) and body.get("Module"):
                module = f" (module {body['Module']}{', firmware ' + str(body['Version']) if body.get('Version') else ''})"
        name = "/".join(device)
        topics = [t for t in (lwt, sensor, status) if t in messages]
        claimed.update(topics)
        out.append(Candidate("tasmota", device[-1] if device else name, {"topic": sensor, "format": "tasmota"},
                             f"Tasmota board {name!r}{module}", topics))
    return out


def _esphome(messages: dict[str, Heard], claimed: set[str]) -> list[Candidate]:
    nodes: dict[str, list[str]] = {}
    for topic in sorted(messages):
        levels = topic.split("/")
        if (len(levels) >= 4 and levels[-1] == "state" and levels[-3] in ESPHOME_NAME_HINTS
                and topic not in claimed):
            nodes.setdefault("/".join(levels[:-3]), []).append(topic)
    out = []
    for node, topics in nodes.items():
        status = f"{node}/status"
        out.append(Candidate("esphome", node.rsplit("/", 1)[-1], {"topic": f"{node}/+/+/state", "format": "esphome"},
                             f"ESPHome node {node!r}", ([status] if status in messages else []) + topics))
        claimed.update(topics)
    return out


def _shelly_gen2(messages: dict[str, Heard], claimed: set[str]) -> list[Candidate]:
    prefixes: dict[str, list[str]] = {}
    for topic in sorted(messages):
        levels = topic.split("/")
        if topic in claimed or len(levels) < 3:
            continue
        if (levels[-2] == "status" and ":" in levels[-1]) or levels[-2:] == ["events", "rpc"]:
            prefixes.setdefault("/".join(levels[:-2]), []).append(topic)
    out = []
    for prefix, topics in prefixes.items():
        has_status = any(t.startswith(prefix + "/status/") for t in topics)
        topic = f"{prefix}/status/+" if has_status else f"{prefix}/events/rpc"
        online = f"{prefix}/online"
        out.append(Candidate("shelly", prefix.rsplit("/", 1)[-1], {"topic": topic, "format": "shelly"},
                             f"Shelly (gen2) {prefix!r}", ([online] if online in messages else []) + topics))
        claimed.update(topics)
    return out


def _shelly_gen1(messages: dict[str, Heard], claimed: set[str]) -> list[Candidate]:
    models: dict[str, str] = {}
    for topic in ("shellies/announce", *(t for t in messages if t.endswith("/announce"))):
        doc = _json(messages[topic].payload) if topic in messages else None
        if isinstance(doc, dict) and doc.get("id"):
            models[str(doc["id"])] = str(doc.get("model") or "")
    out = []
    for topic in sorted(messages):
        levels = topic.split("/")
        if topic in claimed or len(levels) < 3 or levels[-2] != "sensor" or levels[-1] not in SHELLY_GEN1_KINDS:
            continue
        if messages[topic].payload.lstrip().startswith((b"{", b"[")):
            continue
        prefix = "/".join(levels[:-2])
        kind = SHELLY_GEN1_KINDS[levels[-1]]
        entry: dict[str, Any] = {"topic": topic, "format": "value", "kind": kind}
        online = f"{prefix}/online"
        if online in messages:
            entry |= {"availability_topic": online, "payload_available": "true", "payload_not_available": "false"}
        device = levels[-3]
        model = models.get(device, "")
        notes = ["the MQTT driver has no Shelly gen1 format: each quantity of this board is a device of its own"]
        if kind == "temperature":
            notes.append("gen1 sends temperature in the unit set on the device; add unit: fahrenheit if that is °F")
        out.append(Candidate("value", f"{device}-{kind}", entry,
                             f"Shelly (gen1) {device!r}" + (f", model {model}" if model else "") + f": {kind}",
                             ([online] if online in messages else []) + [topic], notes))
        claimed.add(topic)
    return out


def classify(messages: dict[str, Heard]) -> list[Candidate]:
    """Candidate devices in what a broker carried (topic → newest message), in a stable order."""
    claimed: set[str] = set()
    out: list[Candidate] = []
    for finder in (_z2m, _tasmota, _esphome, _shelly_gen2, _shelly_gen1):
        out += finder(messages, claimed)
    return out


def read_candidate(candidate: Candidate, broker: dict[str, Any], messages: dict[str, Heard],
                   shared: Shared) -> list[Reading]:
    """What the MQTT driver makes of the candidate's messages: its readings, newest per series (no I/O)."""
    cfg = MqttConfig.model_validate({"name": "discover", "driver": "mqtt", **broker, **candidate.entry})
    ctx = ProbeContext(shared, "mqtt")
    driver = MqttDriver(cfg, ctx)
    avail = cfg.availability()
    order = sorted(candidate.topics, key=lambda t: (avail is None or t != avail.topic, messages[t].arrival))
    for topic in order:
        heard = messages[topic]
        driver.on_message(topic, heard.payload, len(heard.payload), heard.retained, heard.arrival)
    newest: dict[tuple[str, tuple[tuple[str, str], ...]], Reading] = {}
    for r in ctx.readings:
        newest[(r.metric, tuple(sorted((r.labels or {}).items())))] = r
    return list(newest.values())


class _Listener:
    """Everything one broker carries for ``duration`` (retained at once, then live)."""

    def __init__(self, settings: BrokerSettings, duration: float, query_tasmota: bool):
        self.conn = BrokerConnection(settings)
        self.duration = duration
        self.query_tasmota = query_tasmota
        self.messages: dict[str, Heard] = {}
        self.overflow = 0
        self.asked: set[tuple[str, ...]] = set()
        self.last_query = 0.0

    def _deliver(self, topic: str, payload: bytes | None, size: int, retained: bool, arrival: float) -> None:
        if payload is None:
            return  # too large for a sensor message
        if topic not in self.messages and len(self.messages) >= MAX_TOPICS:
            self.overflow += 1
            return
        self.messages[topic] = Heard(payload, retained, arrival)
        if self.query_tasmota:
            self._ask_tasmota(topic)

    def _ask_tasmota(self, topic: str) -> None:
        parts = _tasmota_parts(topic)
        if parts is None or parts[1] == "SENSOR":
            return
        device = tuple(parts[0])
        at = topic.split("/").index("tele")
        if device in self.asked or _tasmota_topic(list(device), at, "tele", "SENSOR") in self.messages:
            return
        if parts[1] == "LWT" and self.messages[topic].payload.strip().lower() != b"online":
            return  # an offline board will not answer
        self.asked.add(device)
        if self.conn.publish(_tasmota_topic(list(device), at, "cmnd", "STATUS"), b"10"):
            self.last_query = time.monotonic()

    async def run(self) -> dict[str, Heard]:
        self.conn.add(Subscription("#", 0, self._deliver))
        self.conn.start()
        try:
            start = time.monotonic()
            while not self.conn.state.connected:
                if time.monotonic() - start > self.duration:
                    raise ConnectionError(self.conn.state.last_error)
                await asyncio.sleep(0.05)
            end = time.monotonic() + self.duration
            while time.monotonic() < end or (self.last_query and time.monotonic() < min(
                    self.last_query + QUERY_GRACE, end + QUERY_GRACE)):
                await asyncio.sleep(0.05)
        finally:
            await self.conn.aclose()
        return self.messages


async def discover_broker(url: str, username: str | None, password: str | None, duration: float,
                          progress: Progress, query_tasmota: bool = True) -> Outcome:
    """The sensors heard on one broker URL, each read by the MQTT driver; a broker that cannot be reached is unreachable."""
    parse_broker_url(url)  # ValueError with the reason for a malformed URL
    settings = BrokerSettings(url=url, username=username, password=password,
                              client_id=f"roomwatch-discover-{secrets.token_hex(4)}")
    listener = _Listener(settings, duration, query_tasmota)
    progress(f"mqtt: listening to {url} for {duration:g}s")
    try:
        messages = await listener.run()
    except ConnectionError as exc:
        progress(f"mqtt: {url}: {exc}")
        return Outcome([], [f"MQTT broker {url}: {exc}"], unreachable=True)
    problems = []
    if listener.overflow:
        problems.append(f"MQTT broker {url}: more than {MAX_TOPICS} topics; {listener.overflow} messages not looked at")
    broker: dict[str, Any] = {"broker": url}
    if username is not None:
        broker |= {"username": username, "password": password}
    shared = Shared()
    found: list[Found] = []
    candidates = classify(messages)
    for c in candidates:
        readings = read_candidate(c, broker, messages, shared)
        if not any(r.metric not in _META for r in readings):
            if readings:  # a smart plug's link quality, a board's Wi-Fi signal: not a room sensor
                continue
            problems.append(f"MQTT {url}: {c.identity} on {c.entry['topic']} gave no reading in {duration:g}s "
                            "(offline, or it has not published yet: a longer --timeout, or an entry by hand)")
            continue
        found.append(Found("mqtt", f"{url} {c.entry['topic']}", c.name_hint, {"driver": "mqtt", **broker, **c.entry},
                           c.identity, readings, c.notes, sort_key=(2, url, c.entry["topic"]),
                           fallback_name=c.fallback_name or f"{c.fmt}-{c.name_hint}"))
    await shared.aclose()
    kinds: dict[str, int] = {}
    for f in found:
        kinds[f.entry["format"]] = kinds.get(f.entry["format"], 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    progress(f"mqtt: {url}: {len(messages)} topics heard, {len(found)} sensor{'s' if len(found) != 1 else ''}"
             + (f" ({detail})" if detail else ""))
    return Outcome(found, problems)
