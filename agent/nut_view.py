"""The agent's UPS readings as NUT variables: what the agent's NUT server (:mod:`agent.nut_server`) serves.

:class:`UpsTable` is an agent observer: after every poll it turns the UPS
series of that device into NUT variables with NUT's names and units
(``battery.charge`` in percent, ``battery.runtime`` in seconds, volts, °C,
``ups.load`` in percent, ``ups.status`` flags), whatever driver read them
(SNMP, NUT, Modbus). A value the agent does not have is not served; a device
that is down, or whose last reading is too old, is *stale* and the server
answers ``ERR DATA-STALE`` as upsd does when its driver loses the UPS.

Names: a device's UPS is served under the device name. A ``nut`` device
without ``ups:`` reports every UPS of its upsd, each labelled ``ups``: those
are served as ``<device>-<ups>``. Characters NUT names do not take are
replaced by ``_``.

Variable names and descriptions: NUT's ``data/cmdvartab`` and the developer
guide's variable list (https://networkupstools.org/docs/developer-guide.chunked/apas01.html).
Status tokens: https://networkupstools.org/docs/developer-guide.chunked/new-drivers.html#_status_data
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from roomwatch.core import vocabulary as v
from roomwatch.core.wire import EventRecord, SampleRecord

__all__ = ["DESCRIPTIONS", "ServedUps", "UpsTable", "format_number", "nut_name"]

log = logging.getLogger("roomwatch.nut_server")

#: A UPS whose device answered but whose reading is older than this (or than three poll
#: intervals, whichever is longer) is stale: upsd's MAXAGE default is 15 s.
MIN_MAX_AGE = 15.0

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def nut_name(device: str, ups: str | None = None) -> str:
    """The NUT name of a device's UPS: the device name, or ``<device>-<ups>`` for a multi-UPS device."""
    name = device if ups is None else f"{device}-{ups}"
    return _NAME_BAD.sub("_", name)


def format_number(x: float, decimals: int = 2) -> str:
    """A number as NUT drivers write it: decimal, no exponent, no trailing zeros (``237``, ``54.7``)."""
    if not math.isfinite(x):
        return ""
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True, slots=True)
class _Var:
    name: str
    scale: float = 1.0
    decimals: int = 2


#: vocabulary metric → NUT variable (scale turns ratios into NUT's percent).
VALUE_VARS: dict[str, _Var] = {
    v.UPS_BATTERY_CHARGE: _Var("battery.charge", 100.0, 1),
    v.UPS_BATTERY_RUNTIME: _Var("battery.runtime", 1.0, 0),
    v.UPS_BATTERY_VOLTAGE: _Var("battery.voltage"),
    v.UPS_BATTERY_TEMPERATURE: _Var("battery.temperature", 1.0, 1),
    v.UPS_TEMPERATURE: _Var("ups.temperature", 1.0, 1),
    v.UPS_INPUT_VOLTAGE: _Var("input.voltage", 1.0, 1),
    v.UPS_OUTPUT_VOLTAGE: _Var("output.voltage", 1.0, 1),
    v.UPS_LOAD: _Var("ups.load", 100.0, 1),
}

#: roomwatch_ups_info label → NUT variables (upsd drivers publish device.* and the older ups.* alike;
#: clients such as WinNUT and Synology read ups.mfr/ups.model).
INFO_VARS: dict[str, tuple[str, ...]] = {
    "manufacturer": ("device.mfr", "ups.mfr"),
    "model": ("device.model", "ups.model"),
    "serial": ("device.serial", "ups.serial"),
    "firmware": ("ups.firmware",),
}

#: 0/1 metrics that become ups.status tokens when 1 (OL/OB come from on_battery).
STATUS_TOKENS: tuple[tuple[str, str], ...] = (
    (v.UPS_BATTERY_LOW, "LB"),
    (v.UPS_BATTERY_REPLACE, "RB"),
)

#: NUT's cmdvartab descriptions of what we serve (GET DESC).
DESCRIPTIONS: dict[str, str] = {
    "battery.charge": "Battery charge (percent of full)",
    "battery.runtime": "Battery runtime (seconds)",
    "battery.voltage": "Battery voltage (V)",
    "battery.temperature": "Battery temperature (degrees C)",
    "battery.date": "Battery change date",
    "device.mfr": "Device manufacturer",
    "device.model": "Device model",
    "device.serial": "Device serial number",
    "device.type": "Device type (ups, pdu, scd, psu)",
    "input.voltage": "Input voltage (V)",
    "output.voltage": "Output voltage (V)",
    "ups.load": "Load on UPS (percent of full)",
    "ups.mfr": "UPS manufacturer",
    "ups.model": "UPS model",
    "ups.serial": "UPS serial number",
    "ups.firmware": "UPS firmware",
    "ups.status": "UPS status",
    "ups.temperature": "UPS temperature (degrees C)",
    "ups.test.result": "Results of last self test",
}

#: Variables served as text (GET TYPE says STRING:n); the rest are NUMBER.
STRING_VARS = frozenset({"battery.date", "device.mfr", "device.model", "device.serial", "device.type", "ups.mfr",
                         "ups.model", "ups.serial", "ups.firmware", "ups.status", "ups.test.result"})


@dataclass(slots=True, eq=False)
class ServedUps:
    """One UPS as the NUT server serves it."""

    name: str
    device: str
    ups: str | None  # the ``ups`` label within a multi-UPS device
    desc: str
    variables: dict[str, str] = field(default_factory=dict)
    up: bool = False  # device answered its last poll and this UPS was in it
    updated: float = 0.0  # monotonic time of the last reading
    max_age: float = MIN_MAX_AGE
    fsd: bool = False  # forced shutdown latched (as upsd: until the agent restarts)
    logins: dict[int, tuple[str, str]] = field(default_factory=dict)  # connection id → (user, address)

    def stale(self, now: float | None = None) -> bool:
        """True when the server must answer DATA-STALE (device down, never read, or reading too old)."""
        now = time.monotonic() if now is None else now
        return not self.up or not self.variables or now - self.updated > self.max_age

    def status(self) -> str | None:
        """``ups.status`` as served: with ``FSD`` in front while forced shutdown is set (as upsd does)."""
        status = self.variables.get("ups.status")
        if self.fsd:
            return f"FSD {status}" if status else "FSD"
        return status

    def get(self, var: str) -> str | None:
        if var == "ups.status":
            return self.status()
        return self.variables.get(var)

    def items(self) -> list[tuple[str, str]]:
        """Every served variable, sorted by name (upsd lists its tree in order)."""
        out = dict(self.variables)
        status = self.status()
        if status is not None:
            out["ups.status"] = status
        return sorted(out.items())


def _is_ups_config(cfg: Any) -> bool:
    from roomwatch.drivers.ups import UpsDeviceConfig

    return isinstance(cfg, UpsDeviceConfig)


def variables_from(samples: Iterable[SampleRecord], base: dict[str, str], today: dt.date | None = None
                   ) -> dict[str | None, dict[str, str]]:
    """NUT variables of one poll's samples, per ``ups`` label (None for a single-UPS device).

    ``base`` is the device's own label set: a series with more labels than ``base`` plus ``ups``
    (a per-phase or per-sensor series) is not a UPS-wide value and is skipped, except
    ``roomwatch_ups_status_flag{flag}`` and ``roomwatch_ups_info``.
    """
    per: dict[str | None, dict[str, float | str | list[str]]] = {}
    for s in samples:
        metric = s.metric
        if not metric.startswith("roomwatch_ups_"):
            continue
        extra = {k: val for k, val in s.labels.items() if base.get(k) != val}
        ups = extra.pop("ups", None)
        got = per.setdefault(ups, {})
        if metric == v.UPS_STATUS_FLAG:
            flag = extra.get("flag")
            if flag and s.value >= 0.5 and len(extra) == 1:
                flags = got.setdefault("__flags__", [])
                assert isinstance(flags, list)
                if flag not in flags:
                    flags.append(flag)
            continue
        if metric == v.UPS_INFO:
            for label, names in INFO_VARS.items():
                text = extra.get(label, "").strip()
                if text:
                    for name in names:
                        got[name] = text[:128]
            continue
        if extra:
            continue
        got[metric] = s.value
    today = today or dt.datetime.now(dt.UTC).date()
    return {ups: _to_vars(got, today) for ups, got in per.items()}


def _to_vars(got: dict[str, Any], today: dt.date) -> dict[str, str]:
    out: dict[str, str] = {}
    for metric, var in VALUE_VARS.items():
        x = got.get(metric)
        if isinstance(x, float):
            text = format_number(x * var.scale, var.decimals)
            if text:
                out[var.name] = text
    for key, value in got.items():
        if isinstance(value, str):
            out[key] = value
    age = got.get(v.UPS_BATTERY_AGE)
    if isinstance(age, float) and math.isfinite(age) and 0 <= age < 100 * 365 * 86400:
        out["battery.date"] = (today - dt.timedelta(seconds=age)).strftime("%Y/%m/%d")
    flags = got.get("__flags__")
    if isinstance(flags, list) and flags:
        # A NUT-sourced UPS: its driver's own tokens (CHRG, DISCHRG, BYPASS, OVER, CAL, TRIM …), as read.
        # FSD is ours to add (a latch of this server), not to pass on from the upsd we read.
        tokens = [f for f in flags if f != "FSD"]
        ob = got.get(v.UPS_ON_BATTERY)
        if "OB" in tokens and isinstance(ob, float) and ob < 0.5:
            # On battery for a self-test (the driver said so): serve mains, so no secondary pages anyone.
            tokens = ["OL" if f == "OB" else f for f in tokens if f != "DISCHRG"]
        if tokens:
            out["ups.status"] = " ".join(tokens)
    else:
        tokens = []
        ob = got.get(v.UPS_ON_BATTERY)
        if isinstance(ob, float):
            tokens += ["OB", "DISCHRG"] if ob >= 0.5 else ["OL"]
        for metric, token in STATUS_TOKENS:
            x = got.get(metric)
            if isinstance(x, float) and x >= 0.5:
                tokens.append(token)
        if tokens:
            out["ups.status"] = " ".join(tokens)
    in_test = got.get(v.UPS_SELF_TEST_IN_PROGRESS)
    failed = got.get(v.UPS_SELF_TEST_FAILED)
    if isinstance(in_test, float) and in_test >= 0.5:
        out["ups.test.result"] = "In progress"
    elif isinstance(failed, float):
        out["ups.test.result"] = "Done and error" if failed >= 0.5 else "Done and passed"
    if out:
        out["device.type"] = "ups"
    return out


class UpsTable:
    """Every UPS the agent reads, kept current by the agent's observer hook."""

    def __init__(self, agent: Any, on_change: Callable[[ServedUps], None] | None = None):
        self.agent = agent
        self.on_change = on_change
        self.by_name: dict[str, ServedUps] = {}  # lower-cased NUT name → UPS (upsd matches names case-blind)
        self._by_device: dict[str, dict[str | None, ServedUps]] = {}
        self._clashes: set[str] = set()
        for dev in getattr(agent, "devices", {}).values():
            cfg = dev.cfg
            # A UPS-capable device is listed before its first poll (stale until it answers), so
            # `upsc -l` shows it at once; a nut device reporting every UPS of its upsd is listed
            # once its names are known.
            if _is_ups_config(cfg) and not (cfg.driver == "nut" and getattr(cfg, "ups", "") is None):
                self._entry(dev, None)

    # ------------------------------------------------------------ lookup
    def get(self, name: str) -> ServedUps | None:
        """The UPS named ``name`` (case-blind, as upsd), or None."""
        return self.by_name.get(name.lower())

    def all(self) -> list[ServedUps]:
        """Every served UPS in name order."""
        return sorted(self.by_name.values(), key=lambda u: u.name)

    def for_device(self, device: str, labels: dict[str, str] | None = None) -> ServedUps | None:
        """The UPS of ``device`` (``labels`` with ``ups`` picks one of a multi-UPS device)."""
        entries = self._by_device.get(device, {})
        ups = (labels or {}).get("ups")
        return entries.get(ups) or (entries.get(None) if ups is None else None)

    def _entry(self, dev: Any, ups: str | None) -> ServedUps | None:
        entries = self._by_device.setdefault(dev.name, {})
        found = entries.get(ups)
        if found is not None:
            return found
        name = nut_name(dev.name, ups)
        if name.lower() in self.by_name:
            if name not in self._clashes:
                self._clashes.add(name)
                log.error("NUT server: device %s%s would be served as %s, which another device already uses; "
                          "rename one of them", dev.name, f" UPS {ups}" if ups else "", name)
            return None
        driver = getattr(dev.cfg, "driver", "?")
        desc = f"roomwatch {driver} device {dev.name}" + (f" UPS {ups}" if ups else "")
        entry = ServedUps(name, dev.name, ups, desc,
                          max_age=max(MIN_MAX_AGE, 3 * float(getattr(dev, "interval", 5.0)) + 5.0))
        entries[ups] = entry
        self.by_name[name.lower()] = entry
        return entry

    # ------------------------------------------------------------ observer
    def observe(self, dev: Any, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        """Agent observer: refresh the UPS variables of ``dev`` from one poll."""
        if dev.name not in self._by_device and not any(s.metric.startswith("roomwatch_ups_") for s in samples):
            return
        now = time.monotonic()
        per = variables_from(samples, dev.labels) if dev.up else {}
        per = {ups: got for ups, got in per.items() if got}
        seen = set()
        for ups, variables in per.items():
            entry = self._entry(dev, ups)
            if entry is None:
                continue
            seen.add(ups)
            changed = entry.variables.get("ups.status") != variables.get("ups.status") or not entry.up
            entry.variables = variables
            entry.up = True
            entry.updated = now
            if changed and self.on_change is not None:
                self.on_change(entry)
        entries = self._by_device.get(dev.name, {})
        if dev.up and not per and None in entries and not entries[None].variables:
            # It answered and has no UPS values: an environment monitor on a UPS-capable driver.
            self._forget(dev.name, None)
            return
        for ups, entry in list(entries.items()):
            if ups not in seen and entry.up:
                entry.up = False  # the device is down, or this UPS was missing from its poll
                if self.on_change is not None:
                    self.on_change(entry)

    def _forget(self, device: str, ups: str | None) -> None:
        entry = self._by_device.get(device, {}).pop(ups, None)
        if entry is not None:
            self.by_name.pop(entry.name.lower(), None)
