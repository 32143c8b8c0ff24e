"""``nut`` driver: UPS units behind a Network UPS Tools ``upsd`` (TCP 3493).

Each poll reads every variable of the UPS (``LIST VAR``) over one connection
per upsd (shared by all devices that name the same upsd and user) and maps
them through :data:`POINTS`, :data:`STATUS_FLAGS` and :data:`INFO_VARS`.
With ``ups`` unset the device reports every UPS upsd lists (``LIST UPS``),
each series labelled ``ups="<name>"``; with ``ups`` set, there is no ``ups``
label, so the series look like those of an SNMP or Modbus UPS.

The wire protocol lives in :mod:`roomwatch.drivers.nut_protocol` (no well-kept asyncio
NUT client exists). Variable names: https://networkupstools.org/docs/developer-guide.chunked/apas01.html
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import Secret
from roomwatch.drivers.base import DeviceError, Driver, Reading
from roomwatch.drivers.nut_protocol import NutClient, NutError
from roomwatch.drivers.plausible import Drops
from roomwatch.drivers.registry import register
from roomwatch.drivers.ups import UpsDeviceConfig, battery_age_reading

PHASES = ("L1", "L2", "L3")

__all__ = ["INFO_VARS", "PHASED", "POINTS", "STATUS_FLAGS", "NutConfig", "NutDriver", "battery_installed_from",
           "in_self_test", "readings_from"]


class NutConfig(UpsDeviceConfig):
    """Options of the ``nut`` driver."""

    driver: Literal["nut"] = "nut"
    host: str = Field(default="127.0.0.1", min_length=1, description="upsd host name or address")
    port: int = Field(default=3493, ge=1, le=65535)
    ups: str | None = Field(default=None, min_length=1,
                            description="UPS name as upsd knows it (upsc -l); absent: every UPS on that upsd")
    username: str | None = Field(default=None, min_length=1, description="upsd.users user; checked with LOGIN")
    password: Secret | None = None
    starttls: bool = Field(default=False, description="encrypt with STARTTLS (upsd needs CERTFILE/CERTPATH)")
    ca_file: str | None = Field(default=None, description="CA that signed upsd's certificate (default: system store)")
    read_battery_date: bool = Field(default=True, description="use the UPS's battery.date when battery_installed is unset")

    @model_validator(mode="after")
    def _pairs(self) -> NutConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.ca_file and not self.starttls:
            raise ValueError("ca_file is only used with starttls: true")
        return self


# ------------------------------------------------------------------ the tables


@dataclass(frozen=True, slots=True)
class NutPoint:
    """One NUT variable → one vocabulary metric.

    ``factor`` turns NUT's unit into the metric's (percent → ratio). ``negative_unknown``: a value
    below 0 is a driver's placeholder for "unknown" (snmp-ups passes UPS-MIB's "-1 minute" on as
    ``battery.runtime: -60``). ``zero_unknown``: exactly 0 is "no probe" (liebert-esp2 and other
    serial drivers publish ``battery.temperature: 0.0`` on units without one; a UPS at exactly 0 °C
    in a server room is not credible). Both count as sentinels; anything outside the metric's
    physical range (roomwatch/core/vocabulary.py) is dropped too.
    """

    var: str
    metric: str
    factor: float = 1.0
    negative_unknown: bool = False
    zero_unknown: bool = False


#: NUT variable → roomwatch metric (docs/metrics.md; voltages and load: PHASED). NUT units: % for charge and load,
#: seconds, volts, °C (https://networkupstools.org/docs/developer-guide.chunked/apas01.html).
POINTS: tuple[NutPoint, ...] = (
    NutPoint("battery.charge", v.UPS_BATTERY_CHARGE, 0.01, negative_unknown=True),
    NutPoint("battery.runtime", v.UPS_BATTERY_RUNTIME, negative_unknown=True),
    NutPoint("battery.voltage", v.UPS_BATTERY_VOLTAGE, negative_unknown=True),
    # battery.temperature only: ups.temperature is the cabinet or inverter, not the battery, and has
    # its own metric (an APC Smart-UPS on apcsmart publishes ups.temperature without a battery probe).
    NutPoint("battery.temperature", v.UPS_BATTERY_TEMPERATURE, zero_unknown=True),
    NutPoint("ups.temperature", v.UPS_TEMPERATURE, zero_unknown=True),
)

#: Per-line quantities: the single-phase variable, then a three-phase unit's per-phase ones (NUT
#: names phases L1..L3: input.L1-N.voltage, output.L2.power.percent), and the count of phases.
PHASED: tuple[tuple[str, str, float, tuple[str, str, str], str], ...] = (
    (v.UPS_INPUT_VOLTAGE, "input.voltage", 1.0,
     ("input.L1-N.voltage", "input.L2-N.voltage", "input.L3-N.voltage"), "input.phases"),
    (v.UPS_OUTPUT_VOLTAGE, "output.voltage", 1.0,
     ("output.L1-N.voltage", "output.L2-N.voltage", "output.L3-N.voltage"), "output.phases"),
    (v.UPS_LOAD, "ups.load", 0.01,
     ("output.L1.power.percent", "output.L2.power.percent", "output.L3.power.percent"), "output.phases"),
)

#: ``ups.status`` token → 0/1 metric (1 while the token is present). Tokens:
#: https://networkupstools.org/docs/developer-guide.chunked/new-drivers.html#_status_data
STATUS_FLAGS: Mapping[str, str] = {
    "OB": v.UPS_ON_BATTERY,
    "LB": v.UPS_BATTERY_LOW,
    "RB": v.UPS_BATTERY_REPLACE,
}

#: ``roomwatch_ups_info`` label → NUT variables, first present wins. Real drivers publish ups.* and
#: device.* alike; ups.* goes first because dummy-ups fills device.* with "Dummy UPS" placeholders.
INFO_VARS: Mapping[str, tuple[str, ...]] = {
    "manufacturer": ("ups.mfr", "device.mfr"),
    "model": ("ups.model", "device.model"),
    "serial": ("ups.serial", "device.serial"),
    "firmware": ("ups.firmware",),
}

# battery.date is "battery installation or last change date" in NUT's variable list;
# battery.mfr.date is when the battery was made. Formats seen: 2001/09/25 (usbhid-ups),
# 01/10/04 (apcsmart: APC's Smart protocol sends mm/dd/yy).
_ISO_DATE = re.compile(r"^(\d{4})[/-](\d{1,2})[/-](\d{1,2})$")
_APC_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2})$")


def _parse_date(text: str | None) -> dt.date | None:
    if not text:
        return None
    text = text.strip()
    try:
        if m := _ISO_DATE.match(text):
            return dt.date(int(m[1]), int(m[2]), int(m[3]))
        if m := _APC_DATE.match(text):
            return dt.date(2000 + int(m[3]), int(m[1]), int(m[2]))
    except ValueError:
        return None
    return None


def battery_installed_from(variables: Mapping[str, str]) -> dt.date | None:
    """Install date from ``battery.date``; ``battery.mfr.date`` when that is absent or impossible.

    A battery cannot be installed before it was made: APC Back-UPS units ship with
    ``battery.date`` 2001/09/25 whatever their age, so such a date yields to the
    manufacturing date, which overstates the age a little (the safe direction).
    """
    installed = _parse_date(variables.get("battery.date"))
    made = _parse_date(variables.get("battery.mfr.date"))
    if installed is not None and (made is None or installed >= made):
        return installed
    return made


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        x = float(text.strip())
    except ValueError:
        return None
    return x if math.isfinite(x) else None


#: Status tokens of a UPS on battery on purpose: runtime calibration (CAL), a battery test (TEST, NUT 2.8.1+).
TEST_TOKENS = frozenset({"CAL", "TEST"})


def in_self_test(status: Sequence[str], variables: Mapping[str, str]) -> bool:
    """True while the UPS runs a self-test or calibration (status CAL/TEST, or ups.test.result "In progress")."""
    return bool(TEST_TOKENS.intersection(status)) or "in progress" in variables.get("ups.test.result", "").lower()


class _Reader:
    """Turns one UPS's variables into readings, counting what it leaves out."""

    def __init__(self, variables: Mapping[str, str], labels: Mapping[str, str] | None, drops: Drops | None):
        self.variables = variables
        self.labels = labels
        self.drops = drops
        self.out: list[Reading] = []

    def value(self, var: str, metric: str, factor: float = 1.0, negative_unknown: bool = False,
              zero_unknown: bool = False) -> float | None:
        text = self.variables.get(var)
        if text is None:
            return None
        x = _number(text)
        reason = None
        if x is None:
            reason = "invalid"  # "unknown", "n/a" … where NUT promises a number
        elif (negative_unknown and x < 0) or (zero_unknown and x == 0):
            reason = "sentinel"
        elif not v.plausible(metric, x * factor):
            reason = "out_of_range"
        if reason is not None:
            if self.drops is not None:
                self.drops.add(metric, reason, text, f"NUT {var}")
            return None
        return round(x * factor, 9)  # type: ignore[operator]  # 35 × 0.01 is 0.35000000000000003 in binary

    def add(self, metric: str, value: float, phase: str | None = None) -> None:
        labels = dict(self.labels or {})
        if phase is not None:
            labels["phase"] = phase
        self.out.append(Reading(metric, value, labels or None))

    def phased(self, metric: str, single: str, factor: float, per_phase: tuple[str, ...], count_var: str) -> None:
        """A unit that publishes two or more per-phase variables (and not ``*.phases: 1``) reports them as
        L1..L3; otherwise the single-phase variable (or, lacking it, line 1) without a phase label."""
        count = _number(self.variables.get(count_var))
        present = [var for var in per_phase if var in self.variables]
        # ups.load is the unit's total: per-phase loads only stand in when it is missing.
        total_first = metric == v.UPS_LOAD and single in self.variables
        if count != 1 and len(present) >= 2 and not total_first:
            for phase, var in zip(PHASES, per_phase, strict=True):
                if var in self.variables:
                    x = self.value(var, metric, factor, negative_unknown=True)
                    if x is not None:
                        self.add(metric, x, phase)
            return
        for var in (single, per_phase[0]):
            if var in self.variables:
                x = self.value(var, metric, factor, negative_unknown=True)
                if x is not None:
                    self.add(metric, x)
                return


def readings_from(variables: Mapping[str, str], labels: Mapping[str, str] | None = None,
                  drops: Drops | None = None) -> list[Reading]:
    """Map one UPS's NUT variables to readings; a variable the UPS lacks gives no reading.

    Placeholders and values outside the physical range are left out and counted in ``drops``.
    """
    r = _Reader(variables, labels, drops)
    for point in POINTS:
        x = r.value(point.var, point.metric, point.factor, point.negative_unknown, point.zero_unknown)
        if x is not None:
            r.add(point.metric, x)
    for metric, single, factor, per_phase, count_var in PHASED:
        r.phased(metric, single, factor, per_phase, count_var)
    out = r.out
    status = variables.get("ups.status", "").split()
    if status and status != ["WAIT"]:
        # OB: on battery; OL: on line (also with BYPASS, TRIM, BOOST). Neither (OFF alone, a lone
        # CAL or BYPASS from an odd driver) says nothing about mains: no on-battery reading, not a guess.
        # On battery during a self-test or calibration: mains is fine, nobody must be paged.
        if "OB" in status or "OL" in status:
            testing = in_self_test(status, variables)
            out.append(Reading(v.UPS_ON_BATTERY, 1.0 if "OB" in status and not testing else 0.0, labels))
        for token, metric in STATUS_FLAGS.items():
            if metric != v.UPS_ON_BATTERY:
                out.append(Reading(metric, 1.0 if token in status else 0.0, labels))
        for token in dict.fromkeys(status):
            out.append(Reading(v.UPS_STATUS_FLAG, 1.0, {**(labels or {}), "flag": token}))
    info = {}
    for label, names in INFO_VARS.items():
        for name in names:
            text = variables.get(name, "").strip()
            if text:
                info[label] = text
                break
    if info:
        out.append(Reading(v.UPS_INFO, 1.0, {**(labels or {}), **info}))
    return out


# ------------------------------------------------------------------ the driver


@register
class NutDriver(Driver):
    """Reads one UPS (or every UPS) of a NUT upsd."""

    name = "nut"
    config_model = NutConfig

    def __init__(self, config: NutConfig, context: Any):
        super().__init__(config, context)
        self._client: NutClient | None = None
        self._ups_errors: dict[str, str] = {}  # all-UPS mode: which UPS failed, logged once per change

    def _make_client(self) -> NutClient:
        cfg: NutConfig = self.config
        tls = None
        if cfg.starttls:
            tls = ssl.create_default_context(cafile=cfg.ca_file)
        password = cfg.password.get_secret_value() if cfg.password is not None else None
        return NutClient(cfg.host, cfg.port, cfg.username, password, tls)

    async def start(self) -> None:
        cfg: NutConfig = self.config
        # One connection per upsd and login: upsd serves all its UPS units on one socket.
        secret = cfg.password.get_secret_value() if cfg.password is not None else ""
        key = ("nut", cfg.host, cfg.port, cfg.username, hashlib.sha256(secret.encode()).hexdigest(), cfg.starttls)
        self._client = self.context.shared(key, self._make_client)

    def _age(self, variables: Mapping[str, str], labels: Mapping[str, str] | None) -> Reading | None:
        cfg: NutConfig = self.config
        installed = cfg.battery_installed
        if installed is None and cfg.read_battery_date:
            installed = battery_installed_from(variables)
        reading = battery_age_reading(installed)
        if reading is None or not labels:
            return reading
        return Reading(reading.metric, reading.value, labels)

    def _ups_readings(self, variables: Mapping[str, str], labels: Mapping[str, str] | None) -> list[Reading]:
        out = readings_from(variables, labels, self.drops)
        age = self._age(variables, labels)
        if age is not None:
            out.append(age)
        return out

    async def release(self) -> None:
        """Log out from upsd and poll no more (the agent's host is shutting down: its primary may go on)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def poll(self) -> Sequence[Reading]:
        client = self._client
        if client is None:
            raise DeviceError("driver not started")
        cfg: NutConfig = self.config
        if cfg.ups is not None:
            await client.login(cfg.ups)
            return self._ups_readings(await client.list_var(cfg.ups), None)
        names = list(await client.list_ups())
        if not names:
            raise DeviceError(f"upsd at {client.address} serves no UPS (check its ups.conf)")
        await client.login(names[0])
        out: list[Reading] = []
        failed: dict[str, str] = {}
        for ups in names:
            try:
                variables = await client.list_var(ups)
            except NutError as exc:  # one UPS with a lost driver must not hide the others
                failed[ups] = str(exc)
                continue
            out.extend(self._ups_readings(variables, {"ups": ups}))
        self._log_ups_errors(failed)
        if len(failed) == len(names):
            raise DeviceError(next(iter(failed.values())))
        return out

    def _log_ups_errors(self, failed: dict[str, str]) -> None:
        for ups, reason in failed.items():
            if self._ups_errors.get(ups) != reason:
                self.log.warning("UPS %s on %s cannot be read: %s", ups, self.config.name, reason)
        for ups in self._ups_errors.keys() - failed.keys():
            self.log.info("UPS %s on %s can be read again", ups, self.config.name)
        self._ups_errors = failed
