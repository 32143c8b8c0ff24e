"""SNMP vendor profiles: OID → metric tables kept as data in ``drivers/snmp/profiles/*.yaml``.

A profile is a list of *points* (one scalar OID → one metric), *tables* (an
SNMP table whose rows are sensors, each reported with a ``sensor`` label), the
``roomwatch_ups_info`` labels and, where the MIB has one, the battery
replacement date. Each point says how the raw value becomes the vocabulary's
base unit: ``scale`` (tenths of volts: 0.1, minutes: 60, TimeTicks: 0.01,
percent → ratio: 0.01), ``map`` (status enums → 0/1), ``absent`` (sentinels
such as 65535 that mean "no reading"), ``valid`` (raw range) and ``when``
(conditions on other OIDs or columns, e.g. the unit column of a sensor table,
numeric or text). A table of probes (environment monitors) also has per-row
conversions: ``scale_column``/``scale_map`` (ENTITY-SENSOR-MIB's scale),
``precision_column`` (decimal places given by the row), ``agree`` (a fine
column used only while it agrees with a coarse one); its sensors are named by
a name column, of the same table or of another one with the same index
(``sensor_entry``: ENTITY-MIB's entPhysicalName), else by ``sensor_fallback``.
``probe`` lists objects whose answer shows the device speaks the profile's MIB
(for ``profile: auto`` when the sysObjectID says nothing).

Files are read and checked once; converters are looked up at load time, so a
poll only walks prepared rows. A profile may ``include`` others: its own rows
come first, and for each metric (and sensor) the first row that yields a value
wins — which is how vendor rows fall back on the standard UPS-MIB.
See docs/snmp.md, "Adding a profile".
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers import vocabulary

__all__ = ["OID", "Condition", "InfoField", "Point", "Profile", "Table", "all_profiles", "format_oid", "get_profile",
           "match_profile", "parse_oid"]

OID = tuple[int, ...]
PROFILE_DIR = Path(__file__).with_name("profiles")
#: The profile used when ``profile: auto`` finds no match for the sysObjectID.
FALLBACK = "ups-mib"

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


@dataclass(frozen=True, slots=True)
class Condition:
    """Holds when the value at ``oid`` (a scalar) or ``column`` (same table row) is (not) one of ``values``."""

    oid: OID | None
    column: int | None
    values: frozenset[int | str]
    negate: bool = False
    pattern: re.Pattern[str] | None = None  # ``like``: a regular expression searched in the text

    def holds(self, scalars: Mapping[OID, Any], row: Mapping[int, Any] | None) -> bool:
        raw = scalars.get(self.oid) if self.oid is not None else (row or {}).get(self.column)  # type: ignore[arg-type]
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
    absent: frozenset[int] = frozenset()
    valid: tuple[float, float] | None = None
    when: tuple[Condition, ...] = ()
    sensor: str | None = None
    sensor_oid: OID | None = None
    scale_column: int | None = None
    scale_map: Mapping[int, float] | None = None
    precision_column: int | None = None
    agree: tuple[int, float, float] | None = None  # (column, its scale, largest difference)

    def row_value(self, row: Mapping[int, Any]) -> float | None:
        """The reading of a table row: the column's value with the row's own scale, precision and checks."""
        raw = row.get(self.column)  # type: ignore[arg-type]
        number = as_number(raw)
        if number is None or number in self.absent:
            return None
        if self.valid is not None and not self.valid[0] <= number <= self.valid[1]:
            return None
        factor = 1.0
        if self.scale_column is not None:
            unit = as_number(row.get(self.scale_column))
            if unit is None or self.scale_map is None or unit not in self.scale_map:
                return None  # a scale the profile does not know: absent beats a wrong power of ten
            factor = self.scale_map[unit]
        if self.precision_column is not None:
            digits = as_number(row.get(self.precision_column))
            if digits is None or digits != int(digits) or not -9 <= digits <= 9:
                return None
            factor *= 10.0 ** -int(digits)
        if self.agree is not None:
            column, scale, within = self.agree
            coarse = as_number(row.get(column))
            if coarse is None or abs(number * self.scale * factor - coarse * scale) > within:
                return None  # the fine column disagrees (or is an A/D count): the coarse row point is used
        if factor != 1.0 and self.mapping is not None:
            return None
        return self._convert(number, factor)

    def value(self, raw: Any) -> float | None:
        """The reading for a raw SNMP value, or None when the device gives no usable reading."""
        number = as_number(raw)
        if number is None or number in self.absent:
            return None
        if self.valid is not None and not self.valid[0] <= number <= self.valid[1]:
            return None
        return self._convert(number)

    def _convert(self, number: float, factor: float = 1.0) -> float | None:
        if self.mapping is not None:
            return self.mapping.get(int(number)) if number == int(number) else None
        out = number * factor * self.scale
        if self.convert is not None:
            out = self.convert(out)
        # 1191 × 0.1 is 119.10000000000001 in binary floating point: no device is that precise.
        return round(out, 9) if math.isfinite(out) else None


@dataclass(frozen=True, slots=True)
class Table:
    """An SNMP table (``entry`` OID): every row is a sensor named by ``sensor_column`` (else its index)."""

    entry: OID
    sensor_column: int | None
    points: tuple[Point, ...]
    #: Further name columns tried in turn when the first is empty (entPhysicalName, then entPhysicalDescr).
    sensor_columns: tuple[int, ...] = ()
    #: The table holding the name columns, when it is not this one (same index).
    sensor_entry: OID | None = None
    #: Name of a row without a name object or with an empty one; ``{index}`` is the row's index.
    sensor_fallback: str = "{index}"
    #: The label made of a found name (``{name}``) and the index (two inputs of one probe: "{name} input 1").
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
    scalar_oids: tuple[OID, ...] = field(default=())
    #: Objects (or subtrees) whose answer shows that a device speaks this profile's MIB.
    probe: tuple[OID, ...] = ()

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
        object.__setattr__(self, "scalar_oids", tuple(oids))


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


# ------------------------------------------------------------------ loading


class ProfileError(ValueError):
    """A profile file is wrong; the message names the file and the row."""


def _condition(spec: Any, where: str) -> Condition:
    if not isinstance(spec, dict) or ("oid" in spec) == ("column" in spec):
        raise ProfileError(f"{where}: a condition needs exactly one of oid or column")
    ops = [k for k in ("in", "not_in", "like", "not_like") if k in spec]
    if len(ops) != 1 or set(spec) - {"oid", "column", "comment", *ops}:
        raise ProfileError(f"{where}: a condition needs exactly one of in or not_in (or like / not_like for text)")
    if ops[0] in ("like", "not_like"):
        if not isinstance(spec[ops[0]], str):
            raise ProfileError(f"{where}: {ops[0]} must be a regular expression (text)")
        try:
            pattern = re.compile(spec[ops[0]], re.IGNORECASE)
        except re.error as exc:
            raise ProfileError(f"{where}: {ops[0]}: bad regular expression: {exc}") from None
        return Condition(oid=parse_oid(spec["oid"]) if "oid" in spec else None, column=spec.get("column"),
                         values=frozenset(), negate=ops[0] == "not_like", pattern=pattern)
    values = spec.get("in", spec.get("not_in"))
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, str)) and not isinstance(v, bool) for v in values):
        raise ProfileError(f"{where}: in/not_in must be a list of integers or texts")
    return Condition(oid=parse_oid(spec["oid"]) if "oid" in spec else None, column=spec.get("column"),
                     values=frozenset(v.strip().lower() if isinstance(v, str) else v for v in values),
                     negate="not_in" in spec)


_POINT_KEYS = {"metric", "oid", "column", "scale", "convert", "map", "absent", "valid", "when", "sensor", "sensor_oid",
               "comment", "scale_column", "scale_map", "precision_column", "agree"}
_ROW_KEYS = ("scale_column", "scale_map", "precision_column", "agree")


def _number_map(spec: Any, where: str, key: str) -> dict[int, float] | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or not spec or not all(
            isinstance(k, int) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in spec.items()):
        raise ProfileError(f"{where}: {key} must map integers to numbers")
    return {int(k): float(v) for k, v in spec.items()}


def _agree(spec: Any, where: str) -> tuple[int, float, float] | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"column", "scale", "within"} or not isinstance(spec.get("column"), int) \
            or not all(isinstance(spec.get(k, 1), (int, float)) for k in ("scale", "within")) or "within" not in spec:
        raise ProfileError(f"{where}: agree is {{column: N, scale: S, within: D}}")
    return int(spec["column"]), float(spec.get("scale", 1)), float(spec["within"])


def _point(spec: Any, where: str, in_table: bool) -> Point:
    if not isinstance(spec, dict):
        raise ProfileError(f"{where}: expected a mapping")
    unknown = set(spec) - _POINT_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    metric = spec.get("metric")
    if metric not in vocabulary.METRICS:
        raise ProfileError(f"{where}: metric {metric!r} is not in drivers/vocabulary.py")
    if in_table and not isinstance(spec.get("column"), int):
        raise ProfileError(f"{where}: a table point needs an integer column")
    if not in_table and any(k in spec for k in _ROW_KEYS):
        raise ProfileError(f"{where}: {', '.join(k for k in _ROW_KEYS if k in spec)} only work in a table")
    if ("scale_column" in spec) != ("scale_map" in spec):
        raise ProfileError(f"{where}: scale_column and scale_map go together")
    for key in ("scale_column", "precision_column"):
        if key in spec and not isinstance(spec[key], int):
            raise ProfileError(f"{where}: {key} must be a column number")
    if not in_table and "oid" not in spec:
        raise ProfileError(f"{where}: a point needs an oid")
    convert = None
    if "convert" in spec:
        convert = CONVERTERS.get(spec["convert"])
        if convert is None:
            raise ProfileError(f"{where}: unknown convert {spec['convert']!r}; known: {sorted(CONVERTERS)}")
    mapping = _number_map(spec.get("map"), where, "map")
    valid = spec.get("valid")
    if valid is not None and (not isinstance(valid, list) or len(valid) != 2):
        raise ProfileError(f"{where}: valid must be [min, max]")
    when = spec.get("when", [])
    when = [when] if isinstance(when, dict) else when
    scale = spec.get("scale", 1)
    if not isinstance(scale, (int, float)) or scale == 0:
        raise ProfileError(f"{where}: scale must be a non-zero number")
    return Point(
        metric=metric,
        oid=parse_oid(spec["oid"]) if "oid" in spec else None,
        column=spec.get("column"),
        scale=float(scale),
        convert=convert,
        mapping=mapping,
        absent=frozenset(spec.get("absent", [])),
        valid=(float(valid[0]), float(valid[1])) if valid else None,
        when=tuple(_condition(c, f"{where}.when[{i}]") for i, c in enumerate(when)),
        sensor=str(spec["sensor"]) if "sensor" in spec else None,
        sensor_oid=parse_oid(spec["sensor_oid"]) if "sensor_oid" in spec else None,
        scale_column=spec.get("scale_column"),
        scale_map=_number_map(spec.get("scale_map"), where, "scale_map"),
        precision_column=spec.get("precision_column"),
        agree=_agree(spec.get("agree"), where),
    )


_TABLE_KEYS = {"entry", "points", "sensor_column", "sensor_entry", "sensor_fallback", "sensor_format", "sensor_oid_names",
               "comment"}


def _oid_names(spec: Any, where: str) -> dict[OID, str]:
    if spec is None:
        return {}
    if not isinstance(spec, dict) or not all(isinstance(v, str) and v.strip() for v in spec.values()):
        raise ProfileError(f"{where}: sensor_oid_names maps OIDs to names")
    return {parse_oid(k): v.strip() for k, v in spec.items()}


def _table(spec: Any, where: str) -> Table:
    if not isinstance(spec, dict) or "entry" not in spec or not spec.get("points"):
        raise ProfileError(f"{where}: a table needs entry and points")
    unknown = set(spec) - _TABLE_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    names = spec.get("sensor_column")
    names = [names] if isinstance(names, int) else names
    if names is not None and (not isinstance(names, list) or not names or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in names)):
        raise ProfileError(f"{where}: sensor_column is a column number or a list of them (tried in turn)")
    if "sensor_entry" in spec and not names:
        raise ProfileError(f"{where}: sensor_entry needs sensor_column (the name column of that table)")
    fallback = spec.get("sensor_fallback", "{index}")
    if not isinstance(fallback, str) or not fallback.strip():
        raise ProfileError(f"{where}: sensor_fallback must be a text such as 'Probe {{index}}'")
    fmt = spec.get("sensor_format", "{name}")
    try:
        fallback.format(index="1")
        if not isinstance(fmt, str):
            raise ValueError
        fmt.format(name="n", index="1")
    except (KeyError, IndexError, ValueError):
        raise ProfileError(f"{where}: sensor_fallback may use {{index}}, sensor_format {{name}} and {{index}}") from None
    return Table(entry=parse_oid(spec["entry"]), sensor_column=names[0] if names else None,
                 sensor_columns=tuple(names[1:]) if names else (),
                 sensor_entry=parse_oid(spec["sensor_entry"]) if "sensor_entry" in spec else None,
                 sensor_fallback=fallback, sensor_format=fmt, sensor_oid_names=_oid_names(spec.get("sensor_oid_names"), where),
                 points=tuple(_point(p, f"{where}.points[{j}]", True) for j, p in enumerate(spec["points"])))


def _info(spec: Any, where: str) -> tuple[InfoField, ...]:
    if not isinstance(spec, dict):
        raise ProfileError(f"{where}: info must map labels to OIDs")
    out = []
    for label, val in spec.items():
        if label not in INFO_LABELS:
            raise ProfileError(f"{where}: info label {label!r} is not one of {INFO_LABELS}")
        if isinstance(val, dict) and set(val) == {"value"}:
            out.append(InfoField(label, literal=str(val["value"])))
        else:
            oids = val if isinstance(val, list) else [val]
            out.append(InfoField(label, oids=tuple(parse_oid(o) for o in oids)))
    return tuple(out)


def _parse_file(path: Path) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    where = path.name
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ProfileError(f"{where}: a profile file is a mapping with a name")
    unknown = set(doc) - {"name", "description", "source", "match", "include", "points", "tables", "info", "battery_date",
                          "probe"}
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        points = [_point(p, f"{where}: points[{i}]", False) for i, p in enumerate(doc.get("points") or [])]
        tables = []
        for i, t in enumerate(doc.get("tables") or []):
            tw = f"{where}: tables[{i}]"
            tables.append(_table(t, tw))
        info = _info(doc.get("info") or {}, where)
        battery_date = tuple(parse_oid(o) for o in ([doc["battery_date"]] if isinstance(doc.get("battery_date"), str)
                                                    else doc.get("battery_date") or []))
        match = tuple(parse_oid(m) for m in doc.get("match") or [])
        probe = tuple(parse_oid(m) for m in doc.get("probe") or [])
    except ValueError as exc:
        raise ProfileError(exc if isinstance(exc, ProfileError) else f"{where}: {exc}") from None
    return {"name": doc["name"], "description": str(doc.get("description", "")), "source": str(doc.get("source", "")),
            "include": list(doc.get("include") or []), "points": points, "tables": tables, "info": info,
            "battery_date": battery_date, "match": match, "probe": probe, "file": path.name}


def _resolve(name: str, raw: dict[str, dict[str, Any]], seen: tuple[str, ...]) -> dict[str, Any]:
    if name in seen:
        raise ProfileError(f"profile {name!r} includes itself ({' → '.join((*seen, name))})")
    doc = raw[name]
    points, tables, info, dates = list(doc["points"]), list(doc["tables"]), list(doc["info"]), list(doc["battery_date"])
    for inc in doc["include"]:
        if inc not in raw:
            raise ProfileError(f"{doc['file']}: includes unknown profile {inc!r}")
        sub = _resolve(inc, raw, (*seen, name))
        points += sub["points"]
        tables += sub["tables"]
        info += sub["info"]  # per label, the first field with a value wins (see readings.evaluate)
        dates += [d for d in sub["battery_date"] if d not in dates]
    return {**doc, "points": points, "tables": tables, "info": info, "battery_date": dates}


def load_profiles(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    """Read every ``*.yaml`` profile in ``directory``; raise :class:`ProfileError` on the first bad row."""
    raw: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = _parse_file(path)
        if doc["name"] in raw:
            raise ProfileError(f"{path.name}: profile name {doc['name']!r} is also used by {raw[doc['name']]['file']}")
        raw[doc["name"]] = doc
    out = {}
    for name in raw:
        d = _resolve(name, raw, ())
        out[name] = Profile(name=name, description=d["description"], source=d["source"], match=d["match"],
                            points=tuple(d["points"]), tables=tuple(d["tables"]), info=tuple(d["info"]),
                            battery_date=tuple(d["battery_date"]), file=d["file"], probe=d["probe"])
    if FALLBACK not in out:
        raise ProfileError(f"the fallback profile {FALLBACK!r} is missing from {directory}")
    return out


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
