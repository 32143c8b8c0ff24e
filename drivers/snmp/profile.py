"""SNMP vendor profiles: OID → metric tables kept as data in ``drivers/snmp/profiles/*.yaml``.

A profile is a list of *points* (one scalar OID → one metric), *tables* (an
SNMP table whose rows are sensors, each reported with a ``sensor`` label),
*alarm tables* (RFC 1628 ``upsAlarmTable``: the OIDs of the alarms present
become 0/1 metrics and status flags), the ``roomwatch_ups_info`` labels and,
where the MIB has one, the battery replacement date. Each point says how the
raw value becomes the vocabulary's base unit: ``scale`` (tenths of volts: 0.1,
minutes: 60, TimeTicks: 0.01, percent → ratio: 0.01), ``map`` (status enums →
0/1), ``absent`` (sentinels such as 65535 that mean "no reading"), ``valid``
(raw range) and ``when`` (conditions on other OIDs or columns, e.g. the unit
column of a sensor table, numeric or text, or ``like`` a regular expression).
A table of probes (environment monitors) also has per-row conversions:
``scale_column``/``scale_map`` (ENTITY-SENSOR-MIB's scale), ``precision_column``
(decimal places given by the row), ``agree`` (a fine column used only while it
agrees with a coarse one); its sensors are named by name columns of the same
table or of another one with the same index (``sensor_entry``: ENTITY-MIB's
entPhysicalName), else by ``sensor_fallback``. Every converted value must also lie in its
quantity's physical range (``roomwatch/core/vocabulary.py``), or it is absent and
counted as dropped.

For ``profile: auto`` a profile names the sysObjectID prefixes it is for
(``match``) and the subtrees whose presence shows its MIB answers (``probe``;
by default the profile's own first objects): see :mod:`roomwatch.drivers.snmp.autoselect`.

Files are read and checked once (:mod:`roomwatch.drivers.snmp.profile_load`); converters
are looked up at load time, so a poll only walks prepared rows. A profile may
``include`` others: its own rows come first, and for each metric (sensor,
phase) the first row that yields a plausible value wins — which is how vendor
rows fall back on the standard UPS-MIB. See docs/snmp.md, "Adding a profile".
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roomwatch.core import vocabulary

__all__ = ["OID", "AlarmTable", "Condition", "InfoField", "Point", "Profile", "ProfileError", "ScaleRule", "Table",
           "all_profiles", "as_number", "format_oid", "get_profile", "load_profiles", "match_profile", "parse_oid"]

OID = tuple[int, ...]
PROFILE_DIR: Path = Path(__file__).with_name("profiles")
#: The profile used when ``profile: auto`` finds nothing better (sysObjectID unknown, no vendor MIB answers).
FALLBACK = "ups-mib"
#: Phase labels (three-phase units); bounded, so a card cannot invent series.
PHASES = ("L1", "L2", "L3")
#: Status flags a profile may report in roomwatch_ups_status_flag{flag}: NUT's ups.status words.
FLAGS = frozenset({"OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG", "BYPASS", "CAL", "OFF", "OVER", "TRIM",
                   "BOOST", "FSD", "ALARM", "TEST", "ECO"})
#: The enterprises arc: probes under it belong to one vendor's MIB, and are preferred over standard MIBs.
ENTERPRISES: OID = (1, 3, 6, 1, 4, 1)

_OID_RE = re.compile(r"^\.?(\d+)(\.\d+)+$")

#: Named unit conversions applied after ``scale`` (raw values times scale first).
CONVERTERS: dict[str, Callable[[float], float]] = {
    "fahrenheit": lambda f: (f - 32.0) * 5.0 / 9.0,  # °F → °C
    "kelvin": lambda k: k - 273.15,  # K → °C
}

INFO_LABELS = ("manufacturer", "model", "serial", "firmware")


def parse_oid(text: Any) -> OID:
    """``"1.3.6.1.2.1.1.2.0"`` (leading dot allowed) → tuple of ints; ValueError otherwise."""
    if not isinstance(text, str) or not _OID_RE.match(text.strip()):
        raise ValueError(f"{text!r} is not a numeric OID such as 1.3.6.1.2.1.33.1.2.4.0")
    return tuple(int(p) for p in text.strip().lstrip(".").split("."))


def format_oid(oid: OID) -> str:
    return ".".join(map(str, oid))


def as_number(raw: Any) -> float | None:
    """An SNMP value as a number: integers as they are, numeric text parsed, anything else None."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        try:
            number = float(raw.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


@dataclass(frozen=True, slots=True)
class Condition:
    """Holds when the value at ``oid`` (a scalar) or ``column`` (same table row) is (not) one of ``values``."""

    oid: OID | None
    column: int | None
    values: frozenset[int | str]
    negate: bool = False
    pattern: re.Pattern[str] | None = None  # ``like``: a regular expression searched in the text

    def holds(self, scalars: Mapping[OID, Any], row: Mapping[int, Any] | None) -> bool:
        raw: Any = None
        if self.oid is not None:
            raw = scalars.get(self.oid)
        elif self.column is not None and row is not None:
            raw = row.get(self.column)
        if self.pattern is not None:
            inside = isinstance(raw, str) and self.pattern.search(raw.replace("\x00", "").strip()) is not None
            return inside != self.negate
        number = as_number(raw)
        inside = number is not None and number in self.values
        if not inside and isinstance(raw, str):
            # A unit column written as text ("C", "F", "%"): compared without case or padding.
            inside = raw.replace("\x00", "").strip().lower() in self.values
        return inside != self.negate


@dataclass(frozen=True, slots=True)
class Point:
    """One value: a scalar ``oid`` or a table ``column``, turned into ``metric`` in its base unit."""

    metric: str
    oid: OID | None = None
    column: int | None = None
    scale: float = 1.0
    convert: Callable[[float], float] | None = None
    mapping: Mapping[int, float] | None = None
    absent: frozenset[float] = frozenset()
    valid: tuple[float, float] | None = None
    when: tuple[Condition, ...] = ()
    sensor: str | None = None
    sensor_oid: OID | None = None
    phase: str | None = None  # L1/L2/L3 of a three-phase unit
    flag: str | None = None  # roomwatch_ups_status_flag{flag}: reported only while the value is 1
    scale_column: int | None = None  # a table's column whose enum picks the row's power of ten …
    scale_map: Mapping[int, float] | None = None  # … by this map (ENTITY-SENSOR-MIB entPhySensorScale)
    precision_column: int | None = None  # decimal places given by the row (entPhySensorPrecision)
    agree: tuple[int, float, float] | None = None  # (coarse column, its scale, largest difference)
    #: The metric's physical range (from the vocabulary), looked up once.
    bounds: tuple[float, float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.bounds is None:
            object.__setattr__(self, "bounds", vocabulary.RANGES.get(self.metric))

    def read_row(self, row: Mapping[int, Any]) -> float | str | None:
        """:meth:`read` for a table row: the column's value with the row's own scale, precision and checks."""
        raw = row.get(self.column)  # type: ignore[arg-type]
        if self.scale_column is None and self.precision_column is None and self.agree is None:
            return self.read(raw)
        number = as_number(raw)
        if number is None:
            return None if raw is None else "invalid"
        factor = 1.0
        if self.scale_column is not None:
            unit = as_number(row.get(self.scale_column))
            if unit is None or self.scale_map is None or unit not in self.scale_map:
                return "invalid"  # a scale the profile does not know: absent beats a wrong power of ten
            factor = self.scale_map[int(unit)]
        if self.precision_column is not None:
            digits = as_number(row.get(self.precision_column))
            if digits is None or digits != int(digits) or not -9 <= digits <= 9:
                return "invalid"
            factor *= 10.0 ** -int(digits)
        if self.agree is not None:
            column, scale, within = self.agree
            coarse = as_number(row.get(column))
            if coarse is None or abs(number * self.scale * factor - coarse * scale) > within:
                return None  # the fine column disagrees (an A/D count): the coarse row point is used
        if factor == 1.0:
            return self.read(number)
        if self.mapping is not None or number in self.absent:
            return "invalid" if self.mapping is not None else "sentinel"
        if self.valid is not None and not self.valid[0] <= number <= self.valid[1]:
            return "out_of_range"
        return self._convert(number * factor)

    def read(self, raw: Any) -> float | str | None:
        """The reading for a raw SNMP value: a number; the reason it is left out (``sentinel``,
        ``out_of_range``, ``invalid``); or None when the device has no such value (an object it
        lacks, a status the MIB calls unknown)."""
        number = as_number(raw)
        if number is None:
            return None if raw is None else "invalid"
        if number in self.absent:
            return "sentinel"
        if self.valid is not None and not self.valid[0] <= number <= self.valid[1]:
            return "out_of_range"
        if self.mapping is not None:
            return self.mapping.get(int(number)) if number == int(number) else "invalid"
        return self._convert(number)

    def _convert(self, number: float) -> float | str:
        out = number * self.scale
        if self.convert is not None:
            out = self.convert(out)
        if not math.isfinite(out):
            return "invalid"
        bounds = self.bounds
        if bounds is not None and not bounds[0] <= out <= bounds[1]:
            return "out_of_range"
        # 1191 × 0.1 is 119.10000000000001 in binary floating point: no device is that precise.
        return round(out, 9)

    def value(self, raw: Any) -> float | None:
        """The reading for a raw SNMP value, or None when the device gives no usable reading."""
        out = self.read(raw)
        return out if isinstance(out, float) else None


@dataclass(frozen=True, slots=True)
class Table:
    """An SNMP table (``entry`` OID): every row is a sensor named by ``sensor_column`` (else its index)."""

    entry: OID
    sensor_column: int | None
    points: tuple[Point, ...]
    #: Further name columns tried in turn when the first is empty (entPhysicalName, then entPhysicalDescr).
    sensor_columns: tuple[int, ...] = ()
    #: The table holding the name columns, when it is not this one (same index, or a prefix of it).
    sensor_entry: OID | None = None
    #: Name of a row without a name object or with an empty one; ``{index}`` is the row's index.
    sensor_fallback: str = "{index}"
    #: The label made of a found name (``{name}``) and the index (two inputs of one probe: "{name} alarm 1").
    sensor_format: str = "{name}"
    #: Names for a name column holding an OID (Liebert's lgpEnvTemperatureDescrDegC: which air it measures).
    sensor_oid_names: Mapping[OID, str] = field(default_factory=dict)

    def name_columns(self) -> tuple[int, ...]:
        first = (self.sensor_column,) if self.sensor_column is not None else ()
        return first + tuple(c for c in self.sensor_columns if c != self.sensor_column)

    def columns(self) -> tuple[int, ...]:
        """The columns of this table a poll walks (value, condition, scale and name columns)."""
        cols = {p.column for p in self.points if p.column is not None}
        cols.update(c.column for p in self.points for c in p.when if c.column is not None)
        for p in self.points:
            cols.update(c for c in (p.scale_column, p.precision_column, p.agree[0] if p.agree else None)
                        if c is not None)
        if self.sensor_entry is None:
            cols.update(self.name_columns())
        return tuple(sorted(cols))

    def walked(self) -> tuple[OID, ...]:
        """Every column OID a poll walks for this table, name columns of another table included."""
        own = tuple(self.entry + (c,) for c in self.columns())
        if self.sensor_entry is None:
            return own
        return own + tuple(self.sensor_entry + (c,) for c in self.name_columns())


@dataclass(frozen=True, slots=True)
class AlarmTable:
    """A table of the alarms present now, each row naming its alarm by an OID (RFC 1628 ``upsAlarmTable``).

    ``present`` (the count of alarms) answering 0 means no alarm: every metric of ``metrics`` is 0.
    Otherwise the rows' ``column`` values say which alarms are on: a metric is 1 while one of its
    alarm OIDs is in the table, else 0; each alarm present reports its status flag (``flags``, or
    ``other_flag`` for an alarm the profile does not name). When neither answers, nothing is reported.
    """

    entry: OID
    column: int
    present: OID | None
    metrics: Mapping[str, frozenset[OID]]
    flags: Mapping[OID, str]
    other_flag: str | None = None

    @property
    def walked(self) -> OID:
        return self.entry + (self.column,)


@dataclass(frozen=True, slots=True)
class ScaleRule:
    """A known quirk: cards whose sysObjectID starts with one of ``sysobjectid`` send ``metrics`` scaled by
    ``scale`` (tenths of volts in a volts object); applies to the rows reading objects under ``under``."""

    metrics: frozenset[str]
    scale: float
    sysobjectid: tuple[OID, ...] = ()
    under: OID | None = None
    note: str = ""

    def applies(self, sys_object_id: OID | None) -> bool:
        if not self.sysobjectid:
            return True
        return sys_object_id is not None and any(sys_object_id[:len(p)] == p for p in self.sysobjectid)


@dataclass(frozen=True, slots=True)
class InfoField:
    """One ``roomwatch_ups_info`` label: a fixed text, or OIDs whose non-empty texts are joined by a space."""

    label: str
    oids: tuple[OID, ...] = ()
    literal: str | None = None


@dataclass(frozen=True)
class Profile:
    """A resolved profile (includes flattened, own rows first)."""

    name: str
    description: str
    source: str
    match: tuple[OID, ...]
    points: tuple[Point, ...]
    tables: tuple[Table, ...]
    info: tuple[InfoField, ...]
    battery_date: tuple[OID, ...]
    file: str = ""
    #: Subtrees (GETNEXT prefixes) whose presence shows the profile's MIB answers (auto-selection).
    probe: tuple[OID, ...] = ()
    #: metric → OID of the device's number of lines (phases) for it (UPS-MIB upsInputNumLines …).
    lines: Mapping[str, OID] = field(default_factory=dict)
    alarms: tuple[AlarmTable, ...] = ()
    scale_rules: tuple[ScaleRule, ...] = ()
    scalar_oids: tuple[OID, ...] = field(default=())

    def __post_init__(self) -> None:
        oids: dict[OID, None] = {}
        for p in self.points:
            for o in (p.oid, p.sensor_oid, *(c.oid for c in p.when)):
                if o is not None:
                    oids[o] = None
        for t in self.tables:
            for p in t.points:
                for c in p.when:
                    if c.oid is not None:
                        oids[c.oid] = None
        for f in self.info:
            oids.update(dict.fromkeys(f.oids))
        oids.update(dict.fromkeys(self.battery_date))
        oids.update(dict.fromkeys(self.lines.values()))
        oids.update(dict.fromkeys(a.present for a in self.alarms if a.present is not None))
        object.__setattr__(self, "scalar_oids", tuple(oids))

    @property
    def vendor_specific(self) -> bool:
        """Whether the profile's probes lie in a vendor's own (enterprise) MIB rather than a standard one."""
        return any(p[:len(ENTERPRISES)] == ENTERPRISES for p in self.probe)

    def for_device(self, sys_object_id: OID | None) -> Profile:
        """This profile with the scale rules that apply to a device of ``sys_object_id`` applied to its rows."""
        rules = [r for r in self.scale_rules if r.applies(sys_object_id)]
        if not rules:
            return self

        def fix(p: Point) -> Point:
            for r in rules:
                if p.metric in r.metrics and p.mapping is None and (
                        r.under is None or (p.oid is not None and p.oid[:len(r.under)] == r.under)):
                    return dataclasses.replace(p, scale=p.scale * r.scale)
            return p

        return dataclasses.replace(self, points=tuple(fix(p) for p in self.points), scale_rules=())


@functools.cache
def all_profiles() -> dict[str, Profile]:
    """The shipped profiles by name (loaded once per process)."""
    return load_profiles()


def get_profile(name: str) -> Profile:
    """A shipped profile; KeyError lists the known names."""
    profiles = all_profiles()
    if name not in profiles:
        raise KeyError(f"unknown SNMP profile {name!r}; known: auto, {', '.join(sorted(profiles))}")
    return profiles[name]


def match_profile(sys_object_id: OID | None, profiles: Mapping[str, Profile] | None = None) -> Profile:
    """The profile whose ``match`` is the longest prefix of ``sys_object_id``; UPS-MIB when none matches."""
    profiles = profiles if profiles is not None else all_profiles()
    best, best_len = profiles[FALLBACK], -1
    if sys_object_id:
        for prof in profiles.values():
            for prefix in prof.match:
                if len(prefix) > best_len and sys_object_id[:len(prefix)] == prefix:
                    best, best_len = prof, len(prefix)
    return best


# The loader needs the classes above; it lives in its own module (profile files, checks, includes).
from roomwatch.drivers.snmp.profile_load import ProfileError, load_profiles  # noqa: E402
