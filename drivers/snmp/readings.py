"""Turn the raw values of one SNMP poll into readings, walking a profile's prepared rows.

Pure functions (no I/O), so the whole mapping is unit-tested table-driven and
the driver only fetches. A value the device lacks (noSuchObject,
noSuchInstance, a sentinel such as 65535, a wrong type) is absent, never 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import Reading
from roomwatch.drivers.snmp.profile import OID, Profile, Table, format_oid

__all__ = ["Evaluation", "contact_readings", "evaluate", "parse_battery_date", "text"]

#: Rows of one table: index (the OID suffix after entry.column) → column → raw value.
Rows = Mapping[OID, Mapping[int, Any]]

# Cards ship with a placeholder battery date (Eaton ConnectUPS: 01/01/2001) until someone sets it;
# a date before this is taken as "never set" rather than a 20-year-old battery.
EARLIEST_BATTERY_DATE = dt.date(2005, 1, 1)
_DATE_FORMATS = ("%m/%d/%Y", "%m/%d/%y", "%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y")


@dataclass
class Evaluation:
    """What one poll yields: readings, identity labels, and the battery date if the device keeps one."""

    readings: list[Reading] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    battery_date: dt.date | None = None


def text(raw: Any) -> str:
    """An SNMP string value stripped of padding and NULs; any other type (a wrong one) is empty."""
    if isinstance(raw, str):
        return raw.replace("\x00", "").strip()
    return ""


def parse_battery_date(raw: Any, today: dt.date | None = None) -> dt.date | None:
    """A battery replacement date as the card writes it (``mm/dd/yyyy``, ``mm/dd/yy``, ISO), or None if unset/odd."""
    value = text(raw)
    for fmt in _DATE_FORMATS:
        try:
            day = dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
        today = today or dt.date.today()
        return day if EARLIEST_BATTERY_DATE <= day <= today else None
    return None


def _sensor_names(table: Table, rows: Rows) -> dict[OID, str]:
    names = {}
    for index, row in rows.items():
        name = text(row.get(table.sensor_column)) if table.sensor_column is not None else ""
        names[index] = name or format_oid(index)
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    # Two probes both left at the factory name ("Unknown") must stay two series.
    return {i: (f"{n} #{format_oid(i)}" if counts[n] > 1 else n) for i, n in names.items()}


def evaluate(profile: Profile, scalars: Mapping[OID, Any], tables: Mapping[OID, Rows]) -> Evaluation:
    """Readings of one poll: ``scalars`` maps OID → raw value; ``tables`` maps a table's entry OID → its rows."""
    result = Evaluation()
    seen: set[tuple[str, str | None]] = set()

    def add(metric: str, value: float, sensor: str | None) -> None:
        key = (metric, sensor)
        if key in seen:  # an earlier row (the vendor's own object) already gave this quantity
            return
        seen.add(key)
        result.readings.append(Reading(metric, value, {"sensor": sensor} if sensor else None))

    for point in profile.points:
        if not all(c.holds(scalars, None) for c in point.when):
            continue
        value = point.value(scalars.get(point.oid) if point.oid is not None else None)
        if value is None:
            continue
        sensor = point.sensor
        if point.sensor_oid is not None:
            sensor = text(scalars.get(point.sensor_oid)) or sensor
        add(point.metric, value, sensor)

    for table in profile.tables:
        rows = tables.get(table.entry) or {}
        names = _sensor_names(table, rows)
        for index in sorted(rows):
            row = rows[index]
            for point in table.points:
                if not all(c.holds(scalars, row) for c in point.when):
                    continue
                value = point.value(row.get(point.column) if point.column is not None else None)
                if value is not None:
                    add(point.metric, value, names[index])

    measured = False
    for f in profile.info:
        if f.label in result.info:
            continue
        if f.literal is not None:
            result.info[f.label] = f.literal
            continue
        joined = " ".join(t for t in (text(scalars.get(o)) for o in f.oids) if t)[:128]
        if joined:
            result.info[f.label] = joined
            measured = True
    if not measured:  # a fixed "APC" alone does not make an environment monitor a UPS
        result.info = {}
    for oid in profile.battery_date:
        result.battery_date = parse_battery_date(scalars.get(oid))
        if result.battery_date is not None:
            break
    return result


#: kind option → (metric, ) for contacts the user has named.
CONTACT_KINDS = {"door": v.DOOR_OPEN, "leak": v.WATER_LEAK, "smoke": v.SMOKE}


def contact_readings(readings: list[Reading], contacts: Mapping[str, tuple[str, str]]) -> list[Reading]:
    """Door/leak/smoke readings for the contacts the config names: sensor → (kind, active state).

    ``active`` says which state means open door / wet / smoke: ``open``, ``closed`` or ``alarm``
    (the device's own alarm state). A contact the device did not report gives nothing.
    """
    if not contacts:
        return []
    closed = {r.labels["sensor"]: r.value for r in readings if r.metric == v.CONTACT_CLOSED and r.labels}
    alarm = {r.labels["sensor"]: r.value for r in readings if r.metric == v.CONTACT_ALARM and r.labels}
    out = []
    for sensor, (kind, active) in contacts.items():
        if active == "alarm":
            state = alarm.get(sensor)
        else:
            raw = closed.get(sensor)
            state = None if raw is None else (raw if active == "closed" else 1.0 - raw)
        if state is not None:
            out.append(Reading(CONTACT_KINDS[kind], state, {"sensor": sensor}))
    return out
