"""Prometheus text (0.0.4) and OpenMetrics 1.0 rendering from pre-rendered series.

prometheus_client's ``generate_latest`` rebuilds every label string on each
scrape. Our series change value often but labels rarely, so each series keeps
its label block rendered once (``{device="ups1",room="A"}``) and a scrape is a
string join. ``bench/`` compares the two on the same series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "Family",
    "format_value",
    "negotiate",
    "render",
    "render_labels",
    "render_parts",
]

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render_labels(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` with keys sorted and values escaped; empty values dropped, ``""`` if none."""
    parts = [f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()) if v != ""]
    return "{" + ",".join(parts) + "}" if parts else ""


def format_value(value: float) -> str:
    """Shortest exact text for a float (or an int), with Prometheus spellings for NaN/Inf."""
    if type(value) is not float:  # an int or bool: int.is_integer exists only since Python 3.12
        if isinstance(value, int) and -(10**15) < value < 10**15:
            return str(int(value))
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            return "+Inf" if value > 0 else "-Inf"
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass(slots=True)
class Family:
    """One metric family: name, help, type and ``(label_block, value)`` samples."""

    name: str
    help: str
    type: str = "gauge"  # gauge | counter | info (info renders as gauge in 0.0.4)
    samples: list[tuple[str, float]] = field(default_factory=list)


#: Sample lines per piece of :func:`render_parts` (a few ms of work at most).
CHUNK = 4096


def _parts_text(families: Iterable[Family], chunk: int) -> Iterator[str]:
    fmt = format_value
    for fam in families:
        if not fam.samples:
            continue
        name = fam.name
        yield f"# HELP {name} {_escape_help(fam.help)}\n# TYPE {name} {'gauge' if fam.type == 'info' else fam.type}\n"
        samples = fam.samples
        for i in range(0, len(samples), chunk):
            yield "".join([f"{name}{lbl} {fmt(v)}\n" for lbl, v in samples[i:i + chunk]])


def _parts_openmetrics(families: Iterable[Family], chunk: int) -> Iterator[str]:
    fmt = format_value
    for fam in families:
        if not fam.samples:
            continue
        name = fam.name
        base = name
        if fam.type == "counter" and name.endswith("_total"):
            base = name[: -len("_total")]
        elif fam.type == "info" and name.endswith("_info"):
            base = name[: -len("_info")]
        yield f"# HELP {base} {_escape_help(fam.help)}\n# TYPE {base} {fam.type}\n"
        samples = fam.samples
        for i in range(0, len(samples), chunk):
            yield "".join([f"{name}{lbl} {fmt(v)}\n" for lbl, v in samples[i:i + chunk]])
    yield "# EOF\n"


def render_parts(families: Iterable[Family], content_type: str = CONTENT_TYPE_TEXT, chunk: int = CHUNK) -> Iterator[str]:
    """The exposition as text pieces of at most ``chunk`` sample lines, so a server can serve other
    requests between pieces of a large scrape; ``"".join`` of them is :func:`render`'s text."""
    if content_type.startswith("application/openmetrics-text"):
        return _parts_openmetrics(families, chunk)
    return _parts_text(families, chunk)


def negotiate(accept: str | None) -> str:
    """Pick the content type for an ``Accept`` header (OpenMetrics only when asked for)."""
    if accept and "application/openmetrics-text" in accept:
        return CONTENT_TYPE_OPENMETRICS
    return CONTENT_TYPE_TEXT


def render(families: Iterable[Family], content_type: str = CONTENT_TYPE_TEXT) -> bytes:
    """Render families in the format named by ``content_type``."""
    return "".join(render_parts(families, content_type, 1 << 62)).encode()
