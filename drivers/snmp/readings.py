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
from roomwatch.drivers.plausible import Drops
from roomwatch.drivers.snmp.profile import OID, PHASES, AlarmTable, Point, Profile, Table, as_number, format_oid

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


def _name(table: Table, raw: Any) -> str:
    """A name column's text; an OID value (an AutonomousType saying what is measured) by the profile's map."""
    if isinstance(raw, tuple):
        return table.sensor_oid_names.get(raw, "") or ("oid " + format_oid(raw[-2:]) if raw else "")
    return text(raw)[:64]


def _sensor_names(table: Table, rows: Rows, name_rows: Rows | None = None) -> dict[OID, str]:
    """Each row's probe name: the first non-empty name column (of ``name_rows`` when the names live in
    another table with the same index), else the table's fallback built from the index."""
    names = {}
    columns = table.name_columns()
    source = rows if name_rows is None else name_rows
    for index in rows:
        # A name table may be indexed by the probe while the values are indexed by probe.channel
        # (EATON-EMP-MIB: sensorName.n, temperatureValue.n.1): the longest index prefix with a row.
        row = next((source[index[:n]] for n in range(len(index), 0, -1) if index[:n] in source), {})
        name = next((t for t in (_name(table, row.get(c)) for c in columns) if t), "")
        shown = format_oid(index)
        names[index] = table.sensor_format.format(name=name, index=shown) if name else \
            table.sensor_fallback.format(index=shown)
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    # Two probes both left at the factory name ("Unknown") must stay two series.
    return {i: (f"{n} #{format_oid(i)}" if counts[n] > 1 else n) for i, n in names.items()}


def evaluate(profile: Profile, scalars: Mapping[OID, Any], tables: Mapping[OID, Rows],
             drops: Drops | None = None) -> Evaluation:
    """Readings of one poll: ``scalars`` maps OID → raw value; ``tables`` maps a table's (or alarm
    table's) entry OID → its rows. Values left out as implausible are counted in ``drops``."""
    result = Evaluation()
    # (metric, sensor or flag, phase slot) → (value, phase); L1 and "no phase" share a slot, so a
    # vendor's single-phase object and the UPS-MIB line 1 compete for one quantity.
    found: dict[tuple[str, str | None, str | None], tuple[float, str | None]] = {}
    dropped: dict[tuple[str, str | None, str | None], tuple[str, Any]] = {}

    def take(point: Point, raw: Any, sensor: str | None, in_row: bool = False) -> None:
        key = (point.metric, point.flag or sensor, point.phase if point.phase != "L1" else None)
        if key in found:  # an earlier row (the vendor's own object) already gave this quantity
            return
        value = point.read_row(raw) if in_row else point.read(raw)
        if in_row:
            raw = raw.get(point.column)
        if isinstance(value, float):
            found[key] = (value, point.phase)
        elif value is not None:
            dropped.setdefault(key, (value, raw))

    for point in profile.points:
        if point.when and not all(c.holds(scalars, None) for c in point.when):
            continue
        sensor = point.sensor
        if point.sensor_oid is not None:
            sensor = text(scalars.get(point.sensor_oid)) or sensor
        take(point, scalars.get(point.oid), sensor)  # type: ignore[arg-type]

    for table in profile.tables:
        rows = tables.get(table.entry) or {}
        names = _sensor_names(table, rows, tables.get(table.sensor_entry) if table.sensor_entry else None)
        for index in sorted(rows):
            row = rows[index]
            for point in table.points:
                if point.when and not all(c.holds(scalars, row) for c in point.when):
                    continue
                take(point, row, names[index], in_row=True)

    for alarm in profile.alarms:
        _alarm_readings(alarm, scalars, tables.get(alarm.entry), found)

    _phases(profile, scalars, found)
    for (metric, label, _slot), (value, phase) in found.items():
        if metric == v.UPS_STATUS_FLAG:
            if value >= 0.5:  # a flag the UPS does not report has no series (as with NUT's ups.status)
                result.readings.append(Reading(metric, 1.0, {"flag": label or ""}))
            continue
        labels = {"sensor": label} if label else {}
        if phase is not None:
            labels["phase"] = phase
        result.readings.append(Reading(metric, value, labels or None))
    if drops is not None:
        for key, (reason, raw) in dropped.items():
            if key not in found:  # a later row stood in for the implausible one: nothing is missing
                drops.add(key[0], reason, raw, f"profile {profile.name}")

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


def _alarm_readings(alarm: AlarmTable, scalars: Mapping[OID, Any], rows: Rows | None,
                    found: dict[tuple[str, str | None, str | None], tuple[float, str | None]]) -> None:
    """The 0/1 metrics and flags of an alarm table (RFC 1628 upsAlarmTable): see :class:`AlarmTable`."""
    count = as_number(scalars.get(alarm.present)) if alarm.present is not None else None
    if count == 0:
        present: set[OID] = set()
    elif rows:
        present = {val for row in rows.values() if isinstance(val := row.get(alarm.column), tuple)}
    else:
        return  # the MIB does not answer, or says alarms are present without listing them: unknown
    for metric, oids in alarm.metrics.items():
        found.setdefault((metric, None, None), (1.0 if oids & present else 0.0, None))
    for oid in sorted(present):
        flag = alarm.flags.get(oid, alarm.other_flag)
        if flag is not None:
            found.setdefault((v.UPS_STATUS_FLAG, flag, None), (1.0, None))


def _phases(profile: Profile, scalars: Mapping[OID, Any],
            found: dict[tuple[str, str | None, str | None], tuple[float, str | None]]) -> None:
    """Label per-phase readings L1/L2/L3, or none at all on a single-phase unit.

    The device's line count (``lines``: UPS-MIB upsInputNumLines …) decides when it answers; when it
    does not, lines 2 and 3 reading 0 are a single-phase card padding its table (Riello NetMan 204
    answers 0 V for lines 2 and 3), not two dead phases.
    """
    groups: dict[tuple[str, str | None], list[tuple[str, str | None, str | None]]] = {}
    for key in found:
        groups.setdefault((key[0], key[1]), []).append(key)
    for (metric, _label), keys in groups.items():
        others = [k for k in keys if k[2] is not None]
        if not others:
            main = [k for k in keys if k[2] is None]
            for k in main:  # a lone line 1: no phase label
                found[k] = (found[k][0], None)
            continue
        lines_oid = profile.lines.get(metric)
        count = as_number(scalars.get(lines_oid)) if lines_oid is not None else None
        if count is not None and 1 <= count <= len(PHASES):
            gone = [k for k in others if PHASES.index(k[2]) >= count]
        elif all(found[k][0] == 0 for k in others):
            gone = others
        else:
            gone = []
        for k in gone:
            del found[k]
        multi = len(gone) < len(others)
        for k in keys:
            if k in found:
                found[k] = (found[k][0], (k[2] or "L1") if multi else None)


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
