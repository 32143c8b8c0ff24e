"""SNMP vendor profiles: OID → metric tables kept as data in ``drivers/snmp/profiles/*.yaml``.

A profile is a list of *points* (one scalar OID → one metric), *tables* (an
SNMP table whose rows are sensors, each reported with a ``sensor`` label), the
``roomwatch_ups_info`` labels and, where the MIB has one, the battery
replacement date. Each point says how the raw value becomes the vocabulary's
base unit: ``scale`` (tenths of volts: 0.1, minutes: 60, TimeTicks: 0.01,
percent → ratio: 0.01), ``map`` (status enums → 0/1), ``absent`` (sentinels
such as 65535 that mean "no reading"), ``valid`` (raw range) and ``when``
(conditions on other OIDs or columns, e.g. the unit column of a sensor table).

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

from roomwatch.core import vocabulary

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
    values: frozenset[int]
    negate: bool = False

    def holds(self, scalars: Mapping[OID, Any], row: Mapping[int, Any] | None) -> bool:
        raw: Any = None
        if self.oid is not None:
            raw = scalars.get(self.oid)
        elif self.column is not None and row is not None:
            raw = row.get(self.column)
        number = as_number(raw)
        inside = number is not None and number in self.values
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

    def value(self, raw: Any) -> float | None:
        """The reading for a raw SNMP value, or None when the device gives no usable reading."""
        number = as_number(raw)
        if number is None or number in self.absent:
            return None
        if self.valid is not None and not self.valid[0] <= number <= self.valid[1]:
            return None
        if self.mapping is not None:
            return self.mapping.get(int(number)) if number == int(number) else None
        out = number * self.scale
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

    def columns(self) -> tuple[int, ...]:
        cols = {p.column for p in self.points if p.column is not None}
        cols.update(c.column for p in self.points for c in p.when if c.column is not None)
        if self.sensor_column is not None:
            cols.add(self.sensor_column)
        return tuple(sorted(cols))


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
    if ("in" in spec) == ("not_in" in spec):
        raise ProfileError(f"{where}: a condition needs exactly one of in or not_in")
    values = spec.get("in", spec.get("not_in"))
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise ProfileError(f"{where}: in/not_in must be a list of integers")
    return Condition(oid=parse_oid(spec["oid"]) if "oid" in spec else None, column=spec.get("column"),
                     values=frozenset(values), negate="not_in" in spec)


_POINT_KEYS = {"metric", "oid", "column", "scale", "convert", "map", "absent", "valid", "when", "sensor", "sensor_oid",
               "comment"}


def _point(spec: Any, where: str, in_table: bool) -> Point:
    if not isinstance(spec, dict):
        raise ProfileError(f"{where}: expected a mapping")
    unknown = set(spec) - _POINT_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    metric = spec.get("metric")
    if metric not in vocabulary.METRICS:
        raise ProfileError(f"{where}: metric {metric!r} is not in roomwatch/core/vocabulary.py")
    if in_table and not isinstance(spec.get("column"), int):
        raise ProfileError(f"{where}: a table point needs an integer column")
    if not in_table and "oid" not in spec:
        raise ProfileError(f"{where}: a point needs an oid")
    convert = None
    if "convert" in spec:
        convert = CONVERTERS.get(spec["convert"])
        if convert is None:
            raise ProfileError(f"{where}: unknown convert {spec['convert']!r}; known: {sorted(CONVERTERS)}")
    mapping = spec.get("map")
    if mapping is not None and (not isinstance(mapping, dict) or not all(
            isinstance(k, int) and isinstance(v, (int, float)) for k, v in mapping.items())):
        raise ProfileError(f"{where}: map must map integers to numbers")
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
        mapping={int(k): float(v) for k, v in mapping.items()} if mapping else None,
        absent=frozenset(spec.get("absent", [])),
        valid=(float(valid[0]), float(valid[1])) if valid else None,
        when=tuple(_condition(c, f"{where}.when[{i}]") for i, c in enumerate(when)),
        sensor=str(spec["sensor"]) if "sensor" in spec else None,
        sensor_oid=parse_oid(spec["sensor_oid"]) if "sensor_oid" in spec else None,
    )


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
    unknown = set(doc) - {"name", "description", "source", "match", "include", "points", "tables", "info", "battery_date"}
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        points = [_point(p, f"{where}: points[{i}]", False) for i, p in enumerate(doc.get("points") or [])]
        tables = []
        for i, t in enumerate(doc.get("tables") or []):
            tw = f"{where}: tables[{i}]"
            if not isinstance(t, dict) or "entry" not in t or not t.get("points"):
                raise ProfileError(f"{tw}: a table needs entry and points")
            tables.append(Table(entry=parse_oid(t["entry"]), sensor_column=t.get("sensor_column"),
                                points=tuple(_point(p, f"{tw}.points[{j}]", True) for j, p in enumerate(t["points"]))))
        info = _info(doc.get("info") or {}, where)
        battery_date = tuple(parse_oid(o) for o in ([doc["battery_date"]] if isinstance(doc.get("battery_date"), str)
                                                    else doc.get("battery_date") or []))
        match = tuple(parse_oid(m) for m in doc.get("match") or [])
    except ValueError as exc:
        raise ProfileError(exc if isinstance(exc, ProfileError) else f"{where}: {exc}") from None
    return {"name": doc["name"], "description": str(doc.get("description", "")), "source": str(doc.get("source", "")),
            "include": list(doc.get("include") or []), "points": points, "tables": tables, "info": info,
            "battery_date": battery_date, "match": match, "file": path.name}


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
                            battery_date=tuple(d["battery_date"]), file=d["file"])
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
