"""The agent → collector push format, defined once and imported by both sides.

``POST /api/v1/push`` with ``Authorization: Bearer <token>`` and a JSON body
(optionally ``Content-Encoding: gzip``)::

    {"agent": "room1-agent", "seq": 1732848000000001, "sent": 1732848000123,
     "samples": [{"metric": "roomwatch_temperature_celsius",
                  "labels": {"device": "th1", "room": "A"}, "value": 23.5,
                  "ts": 1732848000000}],
     "events":  [{"type": "door_open", "labels": {"device": "door1"},
                  "ts": 1732848000000, "value": 1, "message": "door opened"}]}

``ts`` and ``sent`` are Unix milliseconds. ``seq`` increases per batch; the
collector drops a batch whose ``seq`` it already has. ``sent`` is the agent's
clock at send time, so the collector can see clock skew.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_EVENTS",
    "MAX_SAMPLES",
    "PUSH_PATH",
    "Batch",
    "EventRecord",
    "SampleRecord",
    "WireError",
    "decode_batch",
    "encode_batch",
]

PUSH_PATH = "/api/v1/push"
MAX_SAMPLES = 100_000
MAX_EVENTS = 10_000
MAX_LABELS = 32
MAX_LABEL_VALUE = 1024
MAX_TEXT = 4096

# \Z, not $: "$" also matches before a trailing newline, and a metric or label name ending in
# "\n" would break the /metrics exposition line it is written to.
_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}\Z")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,99}\Z")
_AGENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\Z")
_EVENT_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}\Z")
# Up to 2100-01-01 in ms. From 1970 on: a board without a battery-backed clock starts there until
# NTP answers, and its batch carries ``sent`` from the same clock, so the collector can correct
# it (collector/core.py); what is still before 2000 after that is stored at its receive time.
_TS_MIN, _TS_MAX = 0, 4_102_444_800_000
# JSON integers have no bound; beyond the float range float() raises OverflowError (a 500, not a 400).
_INT_MAX = int(sys.float_info.max)


class WireError(ValueError):
    """A push body that does not follow the format; the message is the 400 reason."""


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SAMPLE_KEYS = frozenset({"metric", "labels", "value", "ts"})
_EVENT_KEYS = frozenset({"type", "labels", "ts", "value", "message"})


def _refuse_surrogates(obj: Any, where: str) -> None:
    """Raise WireError naming the first string (key or value) in ``obj`` that is not valid Unicode text."""
    stack = [(obj, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise WireError(f"{at} contains a lone UTF-16 surrogate (not text)") from None
        elif isinstance(item, dict):
            for k, val in item.items():
                stack.append((k, f"{at} key"))
                stack.append((val, f"{at}.{str(k).encode('utf-8', 'replace').decode()[:40]}"))
        elif isinstance(item, list):
            stack.extend((x, f"{at}[{i}]") for i, x in enumerate(item))


@dataclass(slots=True)
class SampleRecord:
    metric: str
    labels: dict[str, str]
    value: float
    ts: int  # Unix ms


@dataclass(slots=True)
class EventRecord:
    type: str
    labels: dict[str, str]
    ts: int  # Unix ms
    value: float | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "labels": self.labels, "ts": self.ts}
        if self.value is not None:
            out["value"] = self.value
        if self.message:
            out["message"] = self.message
        return out


@dataclass(slots=True)
class Batch:
    agent: str
    seq: int
    samples: list[SampleRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    sent: int | None = None


def encode_batch(batch: Batch, compress: bool = True) -> bytes:
    """Serialize a batch; gzip it when ``compress`` (the caller sets Content-Encoding)."""
    body: dict[str, Any] = {
        "agent": batch.agent,
        "seq": batch.seq,
        "samples": [{"metric": s.metric, "labels": s.labels, "value": s.value, "ts": s.ts} for s in batch.samples],
        "events": [e.to_json() for e in batch.events],
    }
    if batch.sent is not None:
        body["sent"] = batch.sent
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    # Level 5: most of level 9's ratio on label-heavy JSON for a fraction of the CPU.
    return gzip.compress(raw, compresslevel=5, mtime=0) if compress else raw


#: Label and metric names already validated. Agents send the same few names in every push, so a
#: set lookup replaces the regex for them (bench/hotpath.py: validation was half of decode's cost).
#: Bounded, so a client sending ever new names costs regex checks, not memory.
_KNOWN_MAX = 4096
_known_labels: set[str] = set()
_known_metrics: set[str] = set()


def _label_name(k: str, where: str) -> None:
    if not _LABEL_RE.match(k) or k.startswith("__"):
        raise WireError(f"{where}.labels: {k!r} is not a valid label name")
    if len(_known_labels) < _KNOWN_MAX:
        _known_labels.add(k)


def _labels(obj: Any, kind: str, i: int) -> dict[str, str]:
    """Validate the labels of ``<kind>[i]`` (the position only goes into an error message)."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise WireError(f"{kind}[{i}].labels must be an object of strings")
    if len(obj) > MAX_LABELS:
        raise WireError(f"{kind}[{i}].labels has more than {MAX_LABELS} labels")
    known = _known_labels
    for k, v in obj.items():
        if k not in known:
            _label_name(k, f"{kind}[{i}]")
        if not isinstance(v, str):
            raise WireError(f"{kind}[{i}].labels.{k} must be a string")
        if len(v) > MAX_LABEL_VALUE:
            raise WireError(f"{kind}[{i}].labels.{k} is longer than {MAX_LABEL_VALUE} characters")
    return obj


def _metric_ok(metric: str) -> bool:
    if not _METRIC_RE.match(metric) or not metric.startswith("roomwatch_"):
        return False
    if len(_known_metrics) < _KNOWN_MAX:
        _known_metrics.add(metric)
    return True


def _finite_number(value: Any) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and -_INT_MAX <= value <= _INT_MAX


def _ts(obj: Any, where: str) -> int:
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not _TS_MIN <= obj <= _TS_MAX:
        raise WireError(f"{where} must be a Unix time in milliseconds")
    return int(obj)


def decode_batch(raw: bytes) -> Batch:
    """Parse and validate a push body; raise :class:`WireError` with a precise reason.

    The schema is at most four levels deep (body → samples → sample → labels),
    and anything deeper is rejected by the checks below; a nesting bomb stops
    in the C decoder's recursion guard before it costs memory.
    """
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WireError("JSON is nested too deeply") from None
    except ValueError as exc:  # an integer of thousands of digits (Python's int_max_str_digits)
        raise WireError(f"body is not acceptable JSON: {str(exc)[:120]}") from None
    # A lone UTF-16 surrogate ("\ud800") is valid JSON but no text: it cannot be stored, rendered or
    # logged. Only escapes make one (the body itself was valid UTF-8), so only a body with a \uD8..-\uDF..
    # escape is walked, once.
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_surrogates(doc, "body")
    if not isinstance(doc, dict):
        raise WireError("body must be a JSON object")
    agent = doc.get("agent")
    if not isinstance(agent, str) or not _AGENT_RE.match(agent):
        raise WireError("agent must be an id of letters, digits and . _ - : @ (max 128)")
    seq = doc.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise WireError("seq must be a non-negative integer")
    sent = doc.get("sent")
    if sent is not None:
        sent = _ts(sent, "sent")
    unknown = set(doc) - {"agent", "seq", "sent", "samples", "events"}
    if unknown:
        raise WireError(f"unknown field(s): {', '.join(sorted(unknown))}")
    raw_samples = doc.get("samples", [])
    raw_events = doc.get("events", [])
    if not isinstance(raw_samples, list):
        raise WireError("samples must be a list")
    if not isinstance(raw_events, list):
        raise WireError("events must be a list")
    if len(raw_samples) > MAX_SAMPLES:
        raise WireError(f"more than {MAX_SAMPLES} samples in one batch")
    if len(raw_events) > MAX_EVENTS:
        raise WireError(f"more than {MAX_EVENTS} events in one batch")

    samples: list[SampleRecord] = []
    append = samples.append
    known_metrics = _known_metrics
    isfinite = math.isfinite
    for i, s in enumerate(raw_samples):
        if not isinstance(s, dict):
            raise WireError(f"samples[{i}] must be an object")
        n = len(s)  # metric, value and ts are required (checked below), so more keys, or 4 without labels, are unknown
        if n > 4 or (n == 4 and "labels" not in s):
            raise WireError(f"samples[{i}] has unknown field(s): {', '.join(sorted(map(str, set(s) - _SAMPLE_KEYS)))}")
        metric = s.get("metric")
        if not isinstance(metric, str) or (metric not in known_metrics and not _metric_ok(metric)):
            raise WireError(f"samples[{i}].metric must be a metric name starting with roomwatch_")
        value: Any = s.get("value")
        kind = type(value)  # what json.loads makes: exactly int, float or bool (type(True) is bool)
        if kind is float:
            if not isfinite(value):
                raise WireError(f"samples[{i}].value must be a finite number")
        elif kind is not int or not -_INT_MAX <= value <= _INT_MAX:
            raise WireError(f"samples[{i}].value must be a finite number")
        ts = s.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int) or not _TS_MIN <= ts <= _TS_MAX:
            ts = _ts(ts, f"samples[{i}].ts")
        labels = s.get("labels")
        append(SampleRecord(metric, _labels(labels, "samples", i) if labels else {}, float(value), ts))

    events: list[EventRecord] = []
    for i, e in enumerate(raw_events):
        if not isinstance(e, dict):
            raise WireError(f"events[{i}] must be an object")
        if extra := set(e) - _EVENT_KEYS:
            raise WireError(f"events[{i}] has unknown field(s): {', '.join(sorted(map(str, extra)))}")
        etype = e.get("type")
        if not isinstance(etype, str) or not _EVENT_RE.match(etype):
            raise WireError(f"events[{i}].type must be a lower-case word such as door_open")
        value = e.get("value")
        if value is not None and not _finite_number(value):
            raise WireError(f"events[{i}].value must be a finite number")
        message = e.get("message", "")
        if not isinstance(message, str) or len(message) > MAX_TEXT:
            raise WireError(f"events[{i}].message must be text of at most {MAX_TEXT} characters")
        events.append(
            EventRecord(etype, _labels(e.get("labels"), "events", i), _ts(e.get("ts"), f"events[{i}].ts"),
                        None if value is None else float(value), message)
        )
    return Batch(agent, seq, samples, events, sent)
