"""Modbus discovery: which unit ids on a gateway or serial line answer one of the shipped register maps.

For each unit id (default 1–16) every shipped profile of a UPS or sensor
(``drivers/modbus/profiles/*.yaml``; dry-contact I/O modules are left out, since only the
person who wired them knows what each input is) is read once by the ``modbus`` driver itself.
A map is accepted only when it reads *plausibly*: every one of its rows gives a value (no
exception reply, no "not available" marker, inside the row's valid range), every value is
inside its quantity's physical range, and not all measurements are zero (an empty simulator or
a gateway padding unknown units with zeros reads as a wall of zeros). Where several maps read
plausibly, the one with the most rows wins and the others are named in the comment.

Units are asked one request at a time (RS-485 is half-duplex; most gateways serialise anyway).
A unit that never answers costs one request timeout per profile; a line that cannot be opened
(no gateway, no serial port) ends that line's scan with one message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import format_duration
from roomwatch.discover.probe import ProbeContext, Shared
from roomwatch.discover.report import Found, Outcome
from roomwatch.discover.targets import ModbusTarget
from roomwatch.drivers.base import DeviceError, Reading
from roomwatch.drivers.modbus.bus import ModbusExceptionError
from roomwatch.drivers.modbus.config import ModbusConfig, ProfileFile, load_profile, profile_names
from roomwatch.drivers.modbus.driver import ModbusDriver

__all__ = ["discover_line", "plausible"]

Progress = Callable[[str], None]

#: Exception codes a gateway sends for a unit behind it that does not exist or answer (Modbus spec §7).
_GATEWAY_NOBODY = {10, 11}
#: Longest wait for one reply while scanning (a reply at 9600 baud takes tens of milliseconds).
MAX_REQUEST_TIMEOUT = 1.0


def plausible(readings: list[Reading], rows: int) -> str | None:
    """None when ``readings`` (of a map with ``rows`` rows) look like this device, else why not."""
    if len(readings) < rows:
        return f"{rows - len(readings)} of {rows} rows gave no value"
    measured = [r for r in readings if r.metric not in v.STATE_EVENTS and r.metric not in (
        v.UPS_BATTERY_REPLACE, v.CONTACT_CLOSED, v.CONTACT_ALARM)]
    for r in readings:  # the physical ranges every driver applies (roomwatch/core/vocabulary.py)
        if not v.plausible(r.metric, r.value):
            lo, hi = v.RANGES[r.metric]
            return f"{r.metric} {r.value:g} is outside {lo:g}..{hi:g}"
    if measured and all(r.value == 0 for r in measured):
        return "every measurement is 0"
    return None


def _profiles() -> list[tuple[str, ProfileFile]]:
    out = []
    for name in profile_names():
        _, prof = load_profile(name)
        if prof.kind != "io" and prof.inputs is None:
            out.append((name, prof))
    return out


def _line(target: ModbusTarget, prof: ProfileFile) -> dict[str, Any]:
    if target.transport == "rtu":
        s = prof.serial
        return {"transport": "rtu", "serial_port": target.serial_port, "baudrate": target.baudrate or s.baudrate,
                "parity": target.parity or s.parity, "stopbits": s.stopbits, "bytesize": s.bytesize}
    out: dict[str, Any] = {"transport": target.transport} if target.transport != "tcp" else {}
    out["host"] = target.host
    if target.port != 502:
        out["port"] = target.port
    return out


async def discover_line(target: ModbusTarget, units: list[int], timeout: float,
                        progress: Progress) -> Outcome:
    """The units of one Modbus line that one of the shipped maps reads plausibly."""
    request_timeout = min(timeout, MAX_REQUEST_TIMEOUT)
    profiles = _profiles()
    # Serial lines: profiles that ship different line settings are tried in groups, one setting at a time.
    groups: dict[tuple[Any, ...], list[tuple[str, ProfileFile]]] = {}
    for name, prof in profiles:
        groups.setdefault(tuple(sorted(_line(target, prof).items())), []).append((name, prof))
    progress(f"modbus: {target.describe()}: units {units[0]}–{units[-1]} ({len(units)}), "
             f"{len(profiles)} register maps, {format_duration(request_timeout)} per request")
    found: dict[int, Found] = {}
    problems: list[str] = []
    unreachable = False
    for line_key, group in groups.items():
        line = dict(line_key)
        shared = Shared()
        try:
            for unit in units:
                if unit in found:
                    continue
                result = await _unit(target, line, unit, group, request_timeout, shared)
                if isinstance(result, str):  # the line itself failed
                    problems.append(f"Modbus {target.describe()}: {result}")
                    unreachable = True
                    progress(f"modbus: {target.describe()}: {result}")
                    break
                if result is not None:
                    found[unit] = result
                    progress(f"modbus: {target.describe()} unit {unit} → {result.entry['profile']}")
        finally:
            await shared.aclose()
    progress(f"modbus: {target.describe()}: {len(found)} unit{'s' if len(found) != 1 else ''} identified")
    return Outcome([found[u] for u in sorted(found)], problems, unreachable)


async def _unit(target: ModbusTarget, line: dict[str, Any], unit: int, group: list[tuple[str, ProfileFile]],
                request_timeout: float, shared: Shared) -> Found | str | None:
    """The unit's device (best plausible map), None (nothing fits or silent), or a line failure's text."""
    accepted: list[tuple[str, ProfileFile, list[Reading]]] = []
    for name, prof in group:
        entry = {"driver": "modbus", **line, "unit": unit, "profile": name}
        cfg = ModbusConfig.model_validate({"name": "discover", **entry, "request_timeout": format_duration(request_timeout)})
        driver = ModbusDriver(cfg, ProbeContext(shared, "modbus"))
        try:
            readings = list(await asyncio.wait_for(driver.poll(), request_timeout * (len(cfg.requests) + 1) + 1))
        except ModbusExceptionError as exc:
            if exc.code in _GATEWAY_NOBODY:
                return None  # the gateway says nobody is there
            continue  # alive, but not this map (illegal address or function)
        except DeviceError as exc:
            text = str(exc)
            if text.startswith(("cannot connect", "cannot open", "serial port", "no permission")):
                return text
            continue  # no answer to this map's requests (some cheap units ignore what they lack)
        except TimeoutError:
            continue
        rows = sum(len(req.rows) for req in cfg.requests)
        if plausible(readings, rows) is None:
            accepted.append((name, prof, readings))
    if not accepted:
        return None
    accepted.sort(key=lambda a: -len(a[2]))
    name, prof, readings = accepted[0]
    entry = {"driver": "modbus", **{k: x for k, x in line.items() if k not in ("stopbits", "bytesize")}, "unit": unit,
             "profile": name}
    if target.transport == "rtu" and prof.serial.stopbits != 1:
        entry["stopbits"] = prof.serial.stopbits
    others = [a[0] for a in accepted[1:]]
    notes = [f"also plausible: {', '.join(others)} (check the device's label)"] if others else []
    where = f"{target.describe()} unit {unit}"
    return Found("modbus", where, f"{name}-{unit}", entry, f"{prof.title} (profile {name})", readings, notes,
                 sort_key=(3, target.describe(), unit))
