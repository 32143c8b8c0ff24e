"""What discover found, as the ``devices:`` YAML a user pastes into the agent file.

Each found device becomes one entry with a comment above it: where it was found, what it was
identified as (vendor, model, profile), and the readings one real poll gave, with values. Names
come from the device (sysName, the UPS name, the MQTT topic), cleaned to the agent's name rule,
and made unique (``-2``, ``-3`` … in the order devices are listed, which is stable: by source,
then address). The text is checked by loading it as an agent file, exactly as
``roomwatch check-config`` does, before it is printed.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roomwatch.core import vocabulary as v
from roomwatch.drivers.base import Reading

__all__ = ["Found", "Outcome", "assign_names", "clean_name", "render", "summarize", "validate"]

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:-]+")
_NAME_MAX = 64
#: Names the agent file already uses for itself (the host section is on by default).
RESERVED_NAMES = frozenset({"host"})
_COMMENT_WIDTH = 110
_MAX_READING_LINES = 6


@dataclass
class Found:
    """One device to write: its entry (without ``name``), where it was found and what it is."""

    kind: str  # snmp | nut | mqtt | modbus
    where: str  # "127.0.0.17:161", "upsd 127.0.0.1:3493", "mqtt://127.0.0.1:1883 zigbee2mqtt/door1"
    name_hint: str  # from the device (sysName, UPS name, topic); cleaned by assign_names
    entry: dict[str, Any]
    identity: str  # vendor, model, profile in words
    readings: Sequence[Reading] = ()
    notes: list[str] = field(default_factory=list)
    sort_key: tuple[Any, ...] = ()
    name: str = ""
    #: used when ``name_hint`` has nothing a device name may hold (a Chinese sysName or friendly name)
    fallback_name: str = ""


@dataclass
class Outcome:
    """What one source (an SNMP sweep, a upsd, a broker, a Modbus line) gave."""

    found: list[Found] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # said in the footer and on stderr
    unreachable: bool = False  # the source named on the command line could not be reached at all


def clean_name(text: str) -> str:
    """``text`` turned into a valid device name (``^[A-Za-z0-9][A-Za-z0-9_.:-]*$``), or "" when nothing is left."""
    cleaned = _NAME_BAD.sub("-", text.strip())
    cleaned = cleaned.lstrip("-_.:")[:_NAME_MAX].rstrip("-_.:")
    return cleaned


def assign_names(found: Iterable[Found], taken: Iterable[str] = RESERVED_NAMES) -> None:
    """Give every device a valid name, unique among ``found`` and ``taken`` (a suffix -2, -3 … on clashes)."""
    used = {n.lower() for n in taken}
    for f in found:
        base = clean_name(f.name_hint)
        if not f.name_hint.isascii():
            # Characters a name cannot hold were dropped: a short hash of the original keeps two such
            # devices apart and the name stable between runs ("机房UPS" → "UPS-3f2a").
            tag = hashlib.sha1(f.name_hint.encode(), usedforsecurity=False).hexdigest()[:4]
            base = f"{base[:_NAME_MAX - 5]}-{tag}" if base else ""
        base = base or clean_name(f.fallback_name) or clean_name(
            f"{f.kind}-{hashlib.sha1(f.where.encode(), usedforsecurity=False).hexdigest()[:8]}")
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = f"{base[:_NAME_MAX - 4]}-{n}"
        used.add(name.lower())
        f.name = name


# ------------------------------------------------------------------ readings in words

_UNITS: tuple[tuple[str, str], ...] = (
    ("_ratio", "%"), ("_celsius", "°C"), ("_volts", "V"), ("_seconds", "s"), ("_dbm", "dBm"), ("_bytes", "B"),
)


def _word(metric: str) -> tuple[str, str]:
    name = metric.removeprefix("roomwatch_")
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("_", " "), unit
    return name.replace("_", " "), ""


def _num(x: float) -> str:
    """A value as people write it: at most two decimals, no exponent."""
    return f"{x:.2f}".rstrip("0").rstrip(".") if x == x else "NaN"


def _value(value: float, unit: str) -> str:
    if unit == "%":
        return f"{_num(value * 100)} %"
    if unit == "s":
        for size, word in ((86400, "d"), (3600, "h"), (60, "min")):
            if value >= 2 * size:
                return f"{_num(value / size)} {word}"
        return f"{_num(value)} s"
    return f"{_num(value)} {unit}".rstrip()


def summarize(readings: Sequence[Reading]) -> tuple[dict[str, str], list[str]]:
    """(identity labels of ``roomwatch_ups_info``, one "quantity value" text per other reading)."""
    info: dict[str, str] = {}
    flags: list[str] = []
    out: list[str] = []
    for r in readings:
        labels = dict(r.labels or {})
        if r.metric == v.UPS_INFO:
            info.update(labels)
            continue
        if r.metric == v.UPS_STATUS_FLAG:
            flags.append(labels.get("flag", "?"))
            continue
        name, unit = _word(r.metric)
        name = name.removeprefix("ups ")  # the device is a UPS: "battery charge", not "ups battery charge"
        extra = ", ".join(f"{k} {val}" for k, val in labels.items() if k != "flag")
        out.append(f"{name}{' [' + extra + ']' if extra else ''} {_value(r.value, unit)}")
    if flags:
        out.insert(0, "status " + " ".join(flags))
    return info, out


def _comment(lines: Iterable[str]) -> list[str]:
    out = []
    for line in lines:
        out += ["# " + part for part in textwrap.wrap(line, _COMMENT_WIDTH, break_long_words=False,
                                                     subsequent_indent="    ")] or ["#"]
    return out


def _reading_lines(texts: list[str]) -> list[str]:
    if not texts:
        return []
    wrapped = textwrap.wrap("readings: " + ", ".join(texts), _COMMENT_WIDTH, subsequent_indent="    ",
                            break_long_words=False)
    if len(wrapped) > _MAX_READING_LINES:
        shown = wrapped[:_MAX_READING_LINES]
        shown[-1] += f" … ({len(texts)} readings in all)"
        wrapped = shown
    return wrapped


def _escape(value: Any) -> Any:
    """``$`` is the agent file's environment-variable marker: a literal one is written ``$$``."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_escape(x) for x in value]
    return value


def entry_yaml(f: Found) -> str:
    """The device entry as a YAML list item (``- name: …``), indented for a top-level ``devices:`` key."""
    import yaml

    body = yaml.safe_dump([_escape({"name": f.name, **f.entry})], sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=200)
    return textwrap.indent(body, "  ")


def render(found: Sequence[Found], header: Sequence[str] = (), footer: Sequence[str] = ()) -> str:
    """The whole YAML document: header comments, ``devices:`` with a commented entry per device, footer comments."""
    lines = _comment(header)
    lines.append("devices:" if found else "devices: []")
    for f in found:
        _info, texts = summarize(f.readings)
        about = [f"{f.kind.upper()} {f.where}: {f.identity}"]
        about += [f"note: {n}" for n in f.notes]
        lines.append("")
        lines += ["  " + c for c in _comment(about + _reading_lines(texts))]
        lines.append(entry_yaml(f).rstrip("\n"))
    if footer:
        lines.append("")
        lines += _comment(footer)
    return "\n".join(lines) + "\n"


def validate(text: str) -> list[str]:
    """Problems ``roomwatch check-config`` would report for ``text`` under a minimal agent file ([] = none)."""
    from roomwatch.agent.config import load_agent_config
    from roomwatch.core.configbase import ConfigError

    with tempfile.TemporaryDirectory(prefix="roomwatch-discover-") as tmp:
        path = Path(tmp) / "agent.yaml"
        path.write_text("agent:\n  id: discover-check\n  spool: null\n" + text, encoding="utf-8")
        try:
            load_agent_config(str(path))
        except ConfigError as exc:
            return [str(p) for p in exc.problems]
    return []
