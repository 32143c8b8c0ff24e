"""``mqtt`` driver: room sensors that publish over MQTT (zigbee2mqtt, Tasmota, ESPHome, Shelly, plain values).

A listening driver: :meth:`MqttDriver.start` subscribes the device's topic (and
its availability topic, :mod:`roomwatch.drivers.mqtt.availability`) on the connection
shared by every device of the same broker (``context.shared``). While the
device says it is offline, :meth:`MqttDriver.problem` reports it, so the
agent's silence watch calls it down within a second, and its messages are not
taken as current until it says online again.
Each message is parsed on the event loop by the device's format
(:mod:`roomwatch.drivers.mqtt.formats`), checked against the plausible range of its
quantity (:data:`~roomwatch.drivers.mqtt.payloads.QUANTITIES`) and emitted. Bad input is
counted by reason, logged at most once a minute per device, and dropped; the
last good value stays. A change of a door/leak/smoke state becomes an event
stamped with the payload's own time when it has one, else the arrival time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Duration, Secret
from roomwatch.core.tls import ClientTLS
from roomwatch.drivers.base import DeviceConfig, DeviceError, Driver, Event, Reading
from roomwatch.drivers.mqtt.availability import Availability, read_availability, resolve, topic_matches
from roomwatch.drivers.mqtt.connection import BrokerConnection, BrokerSettings, Subscription, parse_broker_url
from roomwatch.drivers.mqtt.formats import FORMAT_DEFAULT_MAX_AGE, ParseOptions, default_max_age, parse
from roomwatch.drivers.mqtt.payloads import MAX_PAYLOAD, QUANTITIES, Parsed, PayloadError
from roomwatch.drivers.registry import register

__all__ = ["MqttConfig", "MqttDriver", "MqttTLS"]

_LOG_EVERY = 60.0  # s between log lines about bad messages of one device
_HELD_TOPICS = 64  # topics whose newest message is held while the device says offline (a wildcard device has many)
_TS_FUTURE = 5.0  # s a payload time may be ahead of ours (clock drift) and still be trusted
_TS_PAST = 7 * 86400.0  # s a payload time may be behind (a retained state from last week is still a time)
_EVENT_WORDS = {"door": ("door_open", "door_close"), "leak": ("water_leak", "water_leak_clear"),
                "smoke": ("smoke", "smoke_clear")}


def _protocol(value: Any) -> Any:
    # YAML reads `protocol: 5` as an int and `protocol: 3.1.1` as text; accept both spellings.
    return str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else value


class MqttTLS(ClientTLS):
    """TLS options of an ``mqtts://`` broker (the same keys as every other tls section)."""


class MqttConfig(DeviceConfig):
    """Options of one MQTT device entry."""

    driver: Literal["mqtt"] = "mqtt"
    broker: str = Field(description="mqtt://host[:port] or mqtts://host[:port]")
    username: str | None = None
    password: Secret | None = None
    tls: MqttTLS = Field(default_factory=MqttTLS)
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(_protocol)] = "3.1.1"
    client_id: str | None = Field(default=None, max_length=128, description="default: roomwatch-<host>-<hash>")
    keepalive: Duration = Field(default=60.0, ge=5, le=3600)
    topic: str = Field(min_length=1, max_length=1024, description="topic filter; + and # wildcards allowed")
    qos: Literal[0, 1] = 1
    format: Literal["value", "json", "zigbee2mqtt", "tasmota", "esphome", "shelly"] = "value"
    field: str | None = Field(default=None, max_length=256, description="json: path of the value, e.g. sensor.temp")
    kind: Literal["temperature", "humidity", "door", "leak", "smoke", "auto"] = "auto"
    invert: bool = Field(default=False, description="two-state values: the sensor says 1/ON/true when the door is closed")
    unit: Literal["celsius", "fahrenheit", "percent", "ratio"] | None = None
    max_age: Duration | None = Field(default=None, description="down when silent this long (0s: never); "
                                     "default depends on format and kind (docs/mqtt.md)")
    availability_topic: str | None = Field(default=None, max_length=1024,
                                           description="where the device says online/offline; default: derived "
                                           "from topic by the format (docs/mqtt.md); \"\": off")
    payload_available: str | None = Field(default=None, max_length=256,
                                          description="availability word for online (default per format)")
    payload_not_available: str | None = Field(default=None, max_length=256,
                                              description="availability word for offline (default per format)")

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        parse_broker_url(value)
        return value.strip()

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        levels = value.split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise ValueError(f"{value!r}: # must be a whole last level (a/b/#)")
            if "+" in level and level != "+":
                raise ValueError(f"{value!r}: + must be a whole level (a/+/c)")
        if "\x00" in value:
            raise ValueError("a topic cannot contain a NUL character")
        return value

    @field_validator("availability_topic")
    @classmethod
    def _availability_topic(cls, value: str | None) -> str | None:
        if value and ("+" in value or "#" in value):
            raise ValueError(f"{value!r}: availability_topic is one topic, without + or # wildcards")
        if value and "\x00" in value:
            raise ValueError("a topic cannot contain a NUL character")
        return value

    @field_validator("payload_available", "payload_not_available")
    @classmethod
    def _payload_word(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (an empty message clears a retained one: it says nothing)")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _availability_checks(self) -> MqttConfig:
        given = [k for k in ("payload_available", "payload_not_available") if getattr(self, k) is not None]
        if self.availability_topic and self.availability_topic == self.topic:
            raise ValueError("availability_topic must differ from topic (the values and the online/offline words "
                             "need topics of their own)")
        if given and self.availability() is None:
            why = ('availability_topic is "" (off)' if self.availability_topic == "" else
                   f"format {self.format} has no availability topic of its own; set availability_topic"
                   if self.format in ("value", "json") else
                   f"no availability topic can be derived from topic {self.topic!r}; set availability_topic")
            raise ValueError(f"{' and '.join(given)} set but {why}")
        avail = self.availability()
        if avail is not None and avail.online.lower() == avail.offline.lower():
            raise ValueError(f"payload_available and payload_not_available are the same word ({avail.online!r})")
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> MqttConfig:
        fmt, kind = self.format, self.kind
        if fmt in ("value", "json") and kind == "auto":
            raise ValueError(f"format {fmt} needs a kind (temperature, humidity, door, leak or smoke)")
        if fmt == "json" and not self.field:
            raise ValueError("format json needs field: the path of the value in the JSON payload (e.g. sensor.temperature)")
        if self.field and fmt != "json":
            raise ValueError(f"field is only used with format json, not {fmt}")
        if self.unit is not None:
            if fmt not in ("value", "json"):
                raise ValueError(f"unit is only used with format value or json; {fmt} payloads say their unit")
            allowed = {"temperature": ("celsius", "fahrenheit"), "humidity": ("percent", "ratio")}.get(kind, ())
            if self.unit not in allowed:
                raise ValueError(f"unit {self.unit} does not fit kind {kind}" + (f" (use {' or '.join(allowed)})"
                                                                               if allowed else ""))
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.broker.startswith("mqtt://") and self.tls != MqttTLS():
            raise ValueError("tls options need an mqtts:// broker URL")
        if self.tls.key_file and not self.tls.cert_file:
            raise ValueError("tls.key_file is set but tls.cert_file is not")
        return self

    def availability(self) -> Availability | None:
        """Where and how the device says online/offline; None when it has no availability topic."""
        return resolve(self.format, self.topic, self.availability_topic, self.payload_available,
                       self.payload_not_available)

    def broker_settings(self) -> BrokerSettings:
        t = self.tls
        return BrokerSettings(
            url=self.broker, username=self.username,
            password=self.password.get_secret_value() if self.password is not None else None,
            protocol=self.protocol, client_id=self.client_id, keepalive=int(self.keepalive),
            ca_file=t.ca_file, cert_file=t.cert_file, key_file=t.key_file, insecure_skip_verify=t.insecure_skip_verify,
        )


@register
class MqttDriver(Driver):
    """One MQTT device: a topic filter on a shared broker connection, parsed by its format."""

    name = "mqtt"
    config_model = MqttConfig
    mode = "listen"
    requires = ("paho.mqtt.client",)

    def __init__(self, config: MqttConfig, context: Any):
        super().__init__(config, context)
        self.options = ParseOptions(kind=config.kind, field=config.field, invert=config.invert, unit=config.unit)
        self.results: Counter[str] = Counter()  # ok / ignored / invalid / availability
        self.invalid: Counter[str] = Counter()  # reason → count (messages or fields)
        self._states: dict[tuple[str, str], float] = {}  # (quantity, sensor) → last two-state value
        self._quantities: set[str] = set()  # every quantity reported so far
        self.availability = config.availability()
        self._offline: str | None = None  # why the device is down by its own word ("reported offline on …")
        self._held: dict[str, tuple[bytes, float]] = {}  # topic → newest (payload, arrival) while offline
        self._conn: BrokerConnection | None = None
        self._subs: list[Subscription] = []
        self._log_at = 0.0
        self._log_suppressed = 0

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe on the shared connection; never waits for the broker (it reconnects on its own)."""
        try:
            import paho.mqtt.client  # noqa: F401 - fail here with a clear reason
        except ImportError as exc:
            raise DeviceError("paho-mqtt is not installed (pip install paho-mqtt)") from exc
        settings = self.config.broker_settings()
        conn = self.context.shared(("mqtt", settings), lambda: BrokerConnection(settings))
        cfg, avail = self.config, self.availability
        self._subs = []
        if avail is not None and not topic_matches(cfg.topic, avail.topic):
            # First: the broker sends retained messages in the order of the filters, so a retained
            # "offline" is known before the retained state it makes stale.
            self._subs.append(Subscription(avail.topic, cfg.qos, self.on_message))
        self._subs.append(Subscription(cfg.topic, cfg.qos, self.on_message))
        for sub in self._subs:
            conn.add(sub)
        try:
            conn.start()
        except (OSError, ValueError) as exc:  # an unreadable CA/cert file, a bad key
            for sub in self._subs:
                conn.remove(sub)
            raise DeviceError(f"cannot set up the MQTT connection to {settings.url}: {exc}") from exc
        self._conn = conn

    async def stop(self) -> None:
        if self._conn is not None:
            for sub in self._subs:
                self._conn.remove(sub)  # the agent closes the shared connection itself (aclose)

    def problem(self) -> str | None:
        """The broker is unreachable, or the device said it is offline (the agent's silence watch asks)."""
        lost = self._conn.problem() if self._conn is not None else None
        return lost or self._offline

    def max_age(self) -> float | None:
        """The configured ``max_age``, else the default of the format for the device's kind.

        With ``kind: auto`` the measurement default applies, unless everything the device has
        reported so far is a door/leak/smoke state: such a node (an ESPHome board with only a
        reed switch) publishes on change only, and would otherwise be called down while healthy.
        """
        cfg = self.config
        if cfg.max_age is not None:
            return cfg.max_age or None
        if cfg.kind == "auto" and self._quantities and all(QUANTITIES[q].state for q in self._quantities):
            return FORMAT_DEFAULT_MAX_AGE[cfg.format][1]
        return default_max_age(cfg.format, cfg.kind)

    def health(self) -> Sequence[Reading]:
        out = [Reading(v.MQTT_MESSAGES, float(n), {"result": r}) for r, n in sorted(self.results.items())]
        invalid = Counter(self.invalid)
        dropped = sum(sub.dropped for sub in self._subs)
        if dropped:
            invalid["overload"] = dropped
        out.extend(Reading(v.MQTT_INVALID, float(n), {"reason": r}) for r, n in sorted(invalid.items()))
        return out

    # -- messages (event loop) -------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes | None, size: int, retained: bool, arrival: float) -> None:
        """Parse one message and emit what is good; never raises."""
        if payload is None or size > MAX_PAYLOAD:
            self._reject(PayloadError("too_large", f"{size} bytes (limit {MAX_PAYLOAD})"), topic)
            return
        if self.availability is not None and topic == self.availability.topic:
            self._on_availability(self.availability, topic, payload)
            return
        if self._offline is not None:
            # The device said it is offline: nothing is current until it says online again. The newest
            # message per topic is held, and used when it does: "online" and a state sent just before
            # it travel on different topics, in no guaranteed order, and an on-change sensor (a door)
            # may say nothing more for hours.
            if topic in self._held:
                self.results["ignored"] += 1  # replaced by a newer one
                del self._held[topic]
            elif len(self._held) >= _HELD_TOPICS:
                self._held.pop(next(iter(self._held)))
                self.results["ignored"] += 1
            self._held[topic] = (payload, arrival)
            return
        self._parse_and_use(topic, payload, arrival)

    def _parse_and_use(self, topic: str, payload: bytes, arrival: float) -> None:
        try:
            parsed = parse(self.config.format, topic, payload, self.options)
        except PayloadError as exc:
            self._reject(exc, topic)
            return
        except Exception as exc:  # a parser bug: count it like bad input, keep the agent running
            self.log.debug("parser %s failed on %s", self.config.format, topic, exc_info=True)
            self._reject(PayloadError("wrong_type", f"unexpected {type(exc).__name__}"), topic)
            return
        self._use(parsed, topic, arrival)

    def _on_availability(self, avail: Availability, topic: str, payload: bytes) -> None:
        try:
            online = read_availability(avail, payload)
        except PayloadError as exc:  # neither word: counted, and what we knew stays
            self._reject(exc, topic)
            return
        self.results["availability"] += 1
        if online is False:
            self._offline = f"reported offline on {topic}"  # the agent logs it with the down transition
        elif self._offline is not None:
            # Online (or unknown: the retained "offline" was cleared): what it sent meanwhile, newest per
            # topic, is its state now; the agent calls the device up with it (or with its next values).
            self._offline = None
            held, self._held = self._held, {}
            self.log.info("device reports %s on %s; up again with %s",
                          "online" if online else "no availability (cleared)", topic[:200],
                          f"{len(held)} message(s) held while it was offline" if held else "its next values")
            for held_topic, (held_payload, arrival) in held.items():
                self._parse_and_use(held_topic, held_payload, arrival)

    def _use(self, parsed: Parsed, topic: str, arrival: float) -> None:
        problems = list(parsed.problems)
        readings: list[Reading] = []
        events: list[Event] = []
        kind = self.config.kind
        for val in parsed.values:
            q = QUANTITIES[val.quantity]
            if kind != "auto" and val.quantity != kind and not q.meta:
                continue  # this device reports one kind; the payload has more
            if not q.low <= val.value <= q.high:
                problems.append(PayloadError("out_of_range", f"{val.quantity} {val.value:g} outside {q.low:g}..{q.high:g}"))
                continue
            labels = {"sensor": val.sensor} if val.sensor else None
            self._quantities.add(val.quantity)
            readings.append(Reading(q.metric, val.value, labels, arrival))
            if q.state:
                event = self._transition(val.quantity, val.sensor, val.value, parsed.ts, arrival, topic)
                if event is not None:
                    events.append(event)
        for exc in problems:
            self._reject(exc, topic, count_message=False)
        if readings:
            self.results["ok"] += 1
            self.context.emit(readings, events)
        elif problems:
            self.results["invalid"] += 1
        else:
            self.results["ignored"] += 1

    def _transition(self, quantity: str, sensor: str, value: float, payload_ts: float | None, arrival: float,
                    topic: str) -> Event | None:
        """An event when a two-state value changes (the first value seen is a state, not a change)."""
        key = (quantity, sensor)
        before = self._states.get(key)
        self._states[key] = value
        if before is None or before == value:
            return None
        ts = arrival
        if payload_ts is not None and arrival - _TS_PAST <= payload_ts <= arrival + _TS_FUTURE:
            ts = payload_ts  # the sensor's own time of the change (zigbee2mqtt last_seen, Shelly ts)
        on, off = _EVENT_WORDS[quantity]
        return Event(on if value >= 0.5 else off, value, {"sensor": sensor} if sensor else None, ts, f"mqtt {topic}")

    def _reject(self, exc: PayloadError, topic: str, count_message: bool = True) -> None:
        self.invalid[exc.reason] += 1
        if count_message:
            self.results["invalid"] += 1
        now = time.monotonic()
        if now - self._log_at >= _LOG_EVERY:
            more = f" ({self._log_suppressed} more since the last report)" if self._log_suppressed else ""
            self.log.warning("dropped MQTT message on %s: %s: %s%s", topic[:200], exc.reason, exc.detail[:200], more)
            self._log_at, self._log_suppressed = now, 0
        else:
            self._log_suppressed += 1
            if self.log.isEnabledFor(logging.DEBUG):
                self.log.debug("dropped MQTT message on %s: %s: %s", topic[:200], exc.reason, exc.detail[:200])
