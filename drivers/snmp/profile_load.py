"""Reading and checking SNMP profile files (``drivers/snmp/profiles/*.yaml``): rows, includes, schema errors.

Every error names the file and the row (``apc.yaml: points[3]: ...``), so a
broken profile shows up in ``roomwatch check-config`` and at agent start, not
at the first poll. The keys are documented in docs/snmp.md, "Adding a profile".
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from roomwatch.core import vocabulary
from roomwatch.drivers.snmp.profile import (
    CONVERTERS,
    FALLBACK,
    FLAGS,
    INFO_LABELS,
    OID,
    PHASES,
    PROFILE_DIR,
    AlarmTable,
    Condition,
    InfoField,
    Point,
    Profile,
    ScaleRule,
    Table,
    parse_oid,
)

__all__ = ["ProfileError", "check_profile_file", "load_profiles"]

#: How many of a profile's own objects probe for its MIB when the file names no ``probe``.
DEFAULT_PROBES = 3


class ProfileError(ValueError):
    """A profile file is wrong; the message names the file and the row."""


def _condition(spec: Any, where: str) -> Condition:
    if not isinstance(spec, dict) or ("oid" in spec) == ("column" in spec):
        raise ProfileError(f"{where}: a condition needs exactly one of oid or column")
    ops = [k for k in ("in", "not_in", "like", "not_like") if k in spec]
    if len(ops) != 1 or set(spec) - {"oid", "column", "comment", *ops}:
        raise ProfileError(f"{where}: a condition needs exactly one of in or not_in (or like / not_like for text)")
    where_at = parse_oid(spec["oid"]) if "oid" in spec else None
    if ops[0] in ("like", "not_like"):
        if not isinstance(spec[ops[0]], str):
            raise ProfileError(f"{where}: {ops[0]} must be a regular expression (text)")
        try:
            pattern = re.compile(spec[ops[0]], re.IGNORECASE)
        except re.error as exc:
            raise ProfileError(f"{where}: {ops[0]}: bad regular expression: {exc}") from None
        return Condition(oid=where_at, column=spec.get("column"), values=frozenset(), negate=ops[0] == "not_like",
                         pattern=pattern)
    values = spec[ops[0]]
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, str)) and not isinstance(v, bool) for v in values):
        raise ProfileError(f"{where}: in/not_in must be a list of integers or texts")
    return Condition(oid=where_at, column=spec.get("column"),
                     values=frozenset(v.strip().lower() if isinstance(v, str) else v for v in values),
                     negate="not_in" in spec)


_POINT_KEYS = {"metric", "oid", "column", "scale", "convert", "map", "absent", "valid", "when", "sensor", "sensor_oid",
               "phase", "flag", "comment", "scale_column", "scale_map", "precision_column", "agree"}
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


def _number_list(value: Any, where: str, key: str) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise ProfileError(f"{where}: {key} must be a list of numbers")
    return [float(x) for x in value]


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
    if not in_table and any(k in spec for k in _ROW_KEYS):
        raise ProfileError(f"{where}: {', '.join(k for k in _ROW_KEYS if k in spec)} only work in a table")
    if ("scale_column" in spec) != ("scale_map" in spec):
        raise ProfileError(f"{where}: scale_column and scale_map go together")
    for key in ("scale_column", "precision_column"):
        if key in spec and not isinstance(spec[key], int):
            raise ProfileError(f"{where}: {key} must be a column number")
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
    phase = spec.get("phase")
    if phase is not None and phase not in PHASES:
        raise ProfileError(f"{where}: phase must be one of {', '.join(PHASES)}")
    flag = spec.get("flag")
    if isinstance(flag, bool):
        raise ProfileError(f"{where}: YAML read the flag as {flag}: write \"OFF\" or \"ON\" in quotes")
    if (flag is not None) != (metric == vocabulary.UPS_STATUS_FLAG):
        raise ProfileError(f"{where}: {vocabulary.UPS_STATUS_FLAG} needs a flag (and only it takes one)")
    if flag is not None and flag not in FLAGS:
        raise ProfileError(f"{where}: flag {flag!r} is not one of {', '.join(sorted(FLAGS))}")
    return Point(
        metric=metric,
        oid=parse_oid(spec["oid"]) if "oid" in spec else None,
        column=spec.get("column"),
        scale=float(scale),
        convert=convert,
        mapping={int(k): float(v) for k, v in mapping.items()} if mapping else None,
        absent=frozenset(_number_list(spec.get("absent", []), where, "absent")),
        valid=(float(valid[0]), float(valid[1])) if valid else None,
        when=tuple(_condition(c, f"{where}.when[{i}]") for i, c in enumerate(when)),
        sensor=str(spec["sensor"]) if "sensor" in spec else None,
        sensor_oid=parse_oid(spec["sensor_oid"]) if "sensor_oid" in spec else None,
        phase=phase,
        flag=flag,
        scale_column=spec.get("scale_column"),
        scale_map=_number_map(spec.get("scale_map"), where, "scale_map"),
        precision_column=spec.get("precision_column"),
        agree=_agree(spec.get("agree"), where),
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


_TABLE_KEYS = {"entry", "points", "sensor_column", "sensor_entry", "sensor_fallback", "sensor_format", "sensor_oid_names",
               "comment"}


def _oid_names(spec: Any, where: str) -> dict[OID, str]:
    if spec is None:
        return {}
    if not isinstance(spec, dict) or not all(isinstance(v, str) and v.strip() for v in spec.values()):
        raise ProfileError(f"{where}: sensor_oid_names maps OIDs to names")
    return {parse_oid(k): v.strip() for k, v in spec.items()}


def _table(spec: Any, where: str) -> Table:
    """A table of probes: its points, and how its rows are named (see docs/snmp.md, "Tables of probes")."""
    if not isinstance(spec, dict) or "entry" not in spec or not spec.get("points"):
        raise ProfileError(f"{where}: a table needs entry and points")
    unknown = set(spec) - _TABLE_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    names = spec.get("sensor_column")
    names = [names] if isinstance(names, int) and not isinstance(names, bool) else names
    if names is not None and (not isinstance(names, list) or not names or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in names)):
        raise ProfileError(f"{where}: sensor_column is a column number or a list of them (tried in turn)")
    if "sensor_entry" in spec and not names:
        raise ProfileError(f"{where}: sensor_entry needs sensor_column (the name column of that table)")
    fallback = spec.get("sensor_fallback", "{index}")
    fmt = spec.get("sensor_format", "{name}")
    try:
        if not isinstance(fallback, str) or not fallback.strip() or not isinstance(fmt, str):
            raise ValueError
        fallback.format(index="1")
        fmt.format(name="n", index="1")
    except (KeyError, IndexError, ValueError):
        raise ProfileError(f"{where}: sensor_fallback may use {{index}}, sensor_format {{name}} and {{index}}") from None
    return Table(entry=parse_oid(spec["entry"]), sensor_column=names[0] if names else None,
                 sensor_columns=tuple(names[1:]) if names else (),
                 sensor_entry=parse_oid(spec["sensor_entry"]) if "sensor_entry" in spec else None,
                 sensor_fallback=fallback, sensor_format=fmt, sensor_oid_names=_oid_names(spec.get("sensor_oid_names"), where),
                 points=tuple(_point(p, f"{where}.points[{j}]", True) for j, p in enumerate(spec["points"])))


_ALARM_KEYS = {"entry", "column", "present", "metrics", "flags", "other_flag", "comment"}


def _alarm_table(spec: Any, where: str) -> AlarmTable:
    if not isinstance(spec, dict) or "entry" not in spec or not isinstance(spec.get("column"), int):
        raise ProfileError(f"{where}: an alarm table needs entry and an integer column")
    unknown = set(spec) - _ALARM_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    metrics: dict[str, frozenset[OID]] = {}
    for metric, oids in (spec.get("metrics") or {}).items():
        if metric not in vocabulary.METRICS or vocabulary.RANGES.get(metric) != vocabulary.BINARY:
            raise ProfileError(f"{where}: metrics: {metric!r} is not a 0/1 metric of roomwatch/core/vocabulary.py")
        metrics[metric] = frozenset(parse_oid(o) for o in (oids if isinstance(oids, list) else [oids]))
    flags: dict[OID, str] = {}
    for oid, flag in (spec.get("flags") or {}).items():
        if isinstance(flag, bool):
            raise ProfileError(f"{where}: flags: YAML read a flag as {flag}: write \"OFF\" or \"ON\" in quotes")
        if flag not in FLAGS:
            raise ProfileError(f"{where}: flags: {flag!r} is not one of {', '.join(sorted(FLAGS))}")
        flags[parse_oid(oid)] = flag
    other = spec.get("other_flag")
    if other is not None and other not in FLAGS:
        raise ProfileError(f"{where}: other_flag {other!r} is not one of {', '.join(sorted(FLAGS))}")
    return AlarmTable(entry=parse_oid(spec["entry"]), column=spec["column"],
                      present=parse_oid(spec["present"]) if "present" in spec else None,
                      metrics=metrics, flags=flags, other_flag=other)


def _scale_rule(spec: Any, where: str) -> ScaleRule:
    if not isinstance(spec, dict) or not {"metrics", "scale"} <= set(spec):
        raise ProfileError(f"{where}: a scale rule needs metrics and scale")
    unknown = set(spec) - {"metrics", "scale", "sysobjectid", "under", "note", "comment"}
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    metrics = spec["metrics"] if isinstance(spec["metrics"], list) else [spec["metrics"]]
    for m in metrics:
        if m not in vocabulary.METRICS:
            raise ProfileError(f"{where}: metric {m!r} is not in roomwatch/core/vocabulary.py")
    scale = spec["scale"]
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        raise ProfileError(f"{where}: scale must be a positive number")
    prefixes = spec.get("sysobjectid") or []
    return ScaleRule(metrics=frozenset(metrics), scale=float(scale),
                     sysobjectid=tuple(parse_oid(p) for p in (prefixes if isinstance(prefixes, list) else [prefixes])),
                     under=parse_oid(spec["under"]) if "under" in spec else None, note=str(spec.get("note", "")))


def _oid_list(value: Any) -> list[OID]:
    return [parse_oid(o) for o in ([value] if isinstance(value, str) else value or [])]


def _default_probe(points: list[Point], tables: list[Table], info: tuple[InfoField, ...]) -> list[OID]:
    """A profile without ``probe``: the subtrees of its own first objects (an object minus its last arc)."""
    seen: dict[OID, None] = {}
    for oid in [*(p.oid for p in points), *(t.entry for t in tables), *(o for f in info for o in f.oids)]:
        if oid is not None and len(oid) > 7:
            seen.setdefault(oid[:-1], None)
        if len(seen) >= DEFAULT_PROBES:
            break
    return list(seen)


_FILE_KEYS = {"name", "description", "source", "match", "include", "include_first", "points", "tables", "info",
              "battery_date", "probe", "lines", "alarms", "scale"}


def _parse_file(path: Path) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    where = path.name
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ProfileError(f"{where}: a profile file is a mapping with a name")
    unknown = set(doc) - _FILE_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        points = [_point(p, f"{where}: points[{i}]", False) for i, p in enumerate(doc.get("points") or [])]
        tables = []
        for i, t in enumerate(doc.get("tables") or []):
            tw = f"{where}: tables[{i}]"
            tables.append(_table(t, tw))
        info = _info(doc.get("info") or {}, where)
        battery_date = tuple(_oid_list(doc.get("battery_date")))
        match = tuple(_oid_list(doc.get("match")))
        probe = _oid_list(doc["probe"]) if "probe" in doc else _default_probe(points, tables, info)
        lines = doc.get("lines") or {}
        if not isinstance(lines, dict) or not all(m in vocabulary.METRICS for m in lines):
            raise ProfileError(f"{where}: lines must map metrics of roomwatch/core/vocabulary.py to OIDs")
        alarms = [_alarm_table(a, f"{where}: alarms[{i}]") for i, a in enumerate(doc.get("alarms") or [])]
        rules = [_scale_rule(r, f"{where}: scale[{i}]") for i, r in enumerate(doc.get("scale") or [])]
    except ValueError as exc:
        raise ProfileError(exc if isinstance(exc, ProfileError) else f"{where}: {exc}") from None
    return {"name": doc["name"], "description": str(doc.get("description", "")), "source": str(doc.get("source", "")),
            "include": list(doc.get("include") or []), "include_first": list(doc.get("include_first") or []),
            "points": points, "tables": tables, "info": info,
            "battery_date": battery_date, "match": match, "file": path.name, "probe": tuple(probe),
            "lines": {m: parse_oid(o) for m, o in lines.items()}, "alarms": alarms, "scale_rules": rules}


def _resolve(name: str, raw: dict[str, dict[str, Any]], seen: tuple[str, ...]) -> dict[str, Any]:
    if name in seen:
        raise ProfileError(f"profile {name!r} includes itself ({' → '.join((*seen, name))})")
    doc = raw[name]
    # include_first: those profiles' rows before the file's own (a standard MIB preferred, the vendor's
    # objects as the fallback); include: after them.
    order = [(inc, True) for inc in doc["include_first"]] + [(None, False)] + [(inc, False) for inc in doc["include"]]
    points: list[Point] = []
    tables: list[Table] = []
    info: list[InfoField] = []
    dates: list[OID] = []
    lines: dict[str, OID] = {}
    alarms: list[AlarmTable] = []
    rules: list[ScaleRule] = []
    for inc, _first in order:
        if inc is None:
            sub = doc
        elif inc not in raw:
            raise ProfileError(f"{doc['file']}: includes unknown profile {inc!r}")
        else:
            sub = _resolve(inc, raw, (*seen, name))
        points += sub["points"]
        tables += sub["tables"]
        info += sub["info"]  # per label, the first field with a value wins (see readings.evaluate)
        dates += [d for d in sub["battery_date"] if d not in dates]
        for metric, oid in sub["lines"].items():
            lines.setdefault(metric, oid)
        alarms += [a for a in sub["alarms"] if a not in alarms]
        rules += [r for r in sub["scale_rules"] if r not in rules]
    return {**doc, "points": points, "tables": tables, "info": info, "battery_date": dates, "lines": lines,
            "alarms": alarms, "scale_rules": rules}


def _raw_profiles(directory: Path) -> dict[str, dict[str, Any]]:
    raw: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = _parse_file(path)
        if doc["name"] in raw:
            raise ProfileError(f"{path.name}: profile name {doc['name']!r} is also used by {raw[doc['name']]['file']}")
        raw[doc["name"]] = doc
    return raw


def _built(name: str, raw: dict[str, dict[str, Any]]) -> Profile:
    d = _resolve(name, raw, ())
    return Profile(name=name, description=d["description"], source=d["source"], match=d["match"],
                   points=tuple(d["points"]), tables=tuple(d["tables"]), info=tuple(d["info"]),
                   battery_date=tuple(d["battery_date"]), file=d["file"], probe=d["probe"],
                   lines=d["lines"], alarms=tuple(d["alarms"]), scale_rules=tuple(d["scale_rules"]))


@functools.cache
def _shipped_raw(directory: Path) -> dict[str, dict[str, Any]]:
    return _raw_profiles(directory)


def check_profile_file(path: Path, directory: Path = PROFILE_DIR) -> Profile:
    """One profile file (a user's new one, or a shipped one) read as the agent would, with the shipped
    profiles it includes; :class:`ProfileError` on the first problem (``roomwatch check-config``)."""
    raw = dict(_shipped_raw(directory))  # parsed once per process: check-config may be given all 40 files
    doc = _parse_file(path)
    raw[doc["name"]] = doc  # a file in the shipped folder replaces itself; a new one may include any shipped one
    return _built(doc["name"], raw)


def load_profiles(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    """Read every ``*.yaml`` profile in ``directory``; raise :class:`ProfileError` on the first bad row."""
    raw = _raw_profiles(directory)
    out = {name: _built(name, raw) for name in raw}
    if FALLBACK not in out:
        raise ProfileError(f"the fallback profile {FALLBACK!r} is missing from {directory}")
    return out
