"""``GET /api/v1/history``: stored samples of the matching series, read from the embedded store.

``?metric=M&start=T&end=T[&step=D][&label=value...]`` — ``T`` is Unix seconds
(``1732848000.5``) or RFC 3339 (``2024-11-29T03:00:00Z``); ``end`` defaults to now and
``start`` to one hour before ``end``. Every other parameter is a label that must be
equal (so ``metric``, ``start``, ``end`` and ``step`` cannot be used as label names here).
The answer (docs/api.md, docs/openapi.yaml)::

    {"series": [{"metric": M, "labels": {...}, "samples": [[ts_seconds, value], ...]}]}

with samples in time order, at the timestamps the devices were read (a backfilled
sample keeps its own time).

``step`` (a duration such as ``5m``, or seconds such as ``300``; at least 1 s)
downsamples on the server: time is cut into buckets of ``step`` aligned to the Unix
epoch (``[k*step, (k+1)*step)``, so a bucket does not move when the window slides),
and each series gets one point per bucket that holds samples: ``[bucket start,
average of the bucket's samples]``. Buckets without samples are left out (a gap stays
a gap). The first bucket may start before ``start``; it only averages samples inside
the window. Averages of a 0/1 state metric (a door) are the fraction of readings in
that state.

An answer — after downsampling — larger than ``history.max_samples`` is refused with
400 and a hint, never silently cut.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from typing import Any

from aiohttp import web

from roomwatch.collector.core import Collector
from roomwatch.collector.http import COLLECTOR_KEY, READS_KEY

__all__ = ["HistoryQueryError", "parse_step", "parse_time", "query_history"]

_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,99}$")
_MAX_MATCHERS = 32
_RESERVED = ("metric", "start", "end", "step")


class HistoryQueryError(ValueError):
    """A bad query; the message is the 400 reason."""


def parse_time(text: str, name: str) -> float:
    """Unix seconds or RFC 3339 → Unix seconds."""
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise HistoryQueryError(f"{name} must be Unix seconds or an RFC 3339 time such as "
                                    "2024-11-29T03:00:00Z") from None
        if parsed.tzinfo is None:
            raise HistoryQueryError(f"{name} needs a time zone (Z or +08:00)") from None
        value = parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value < 4_102_444_800:
        raise HistoryQueryError(f"{name} is out of range")
    return value


def parse_step(text: str) -> float:
    """``step=``: a duration (``5m``, ``300s``, ``1h``) or a number of seconds (``300``), at least 1 s."""
    from roomwatch.core.configbase import parse_duration

    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError:
            raise HistoryQueryError("step must be a duration such as 60s, 5m or 1h (or seconds, e.g. 300)") from None
    if not math.isfinite(value) or value < 1:
        raise HistoryQueryError("step must be at least 1s")
    if value > 366 * 86400:
        raise HistoryQueryError("step must be at most 366d")
    return value


def query_history(conn: Any, metric: str, start: float, end: float, matchers: dict[str, str],
                  max_samples: int, step: float | None = None) -> list[dict[str, Any]]:
    """Series of ``metric`` whose labels include ``matchers``, with samples in [start, end].

    With ``step`` (seconds) each series has one point per epoch-aligned bucket that
    holds samples: the bucket's start and the average of its samples. ``max_samples``
    bounds the points returned (after downsampling) over all series.
    """
    lo, hi = int(start * 1000), int(end * 1000)
    out: list[dict[str, Any]] = []
    budget = max_samples
    step_ms = round(step * 1000) if step is not None else 0
    rows = conn.execute("SELECT id, labels FROM history_series WHERE metric = ? ORDER BY labels", (metric,)).fetchall()
    for sid, labels_text in rows:
        labels = json.loads(labels_text)
        if any(labels.get(k) != v for k, v in matchers.items()):
            continue
        if step_ms:
            # ts and step_ms are integers, so ts / step_ms is SQLite's integer division: the bucket number.
            # The (series, ts) primary key delivers rows in ts order, so the grouping streams.
            buckets = conn.execute("SELECT ts / ? AS b, AVG(value) FROM history_samples WHERE series = ? AND "
                                   "ts BETWEEN ? AND ? GROUP BY b ORDER BY b LIMIT ?",
                                   (step_ms, sid, lo, hi, budget + 1)).fetchall()
            samples = [[b * step_ms / 1000, value] for b, value in buckets]
        else:
            raw = conn.execute("SELECT ts, value FROM history_samples WHERE series = ? AND ts BETWEEN ? AND ? "
                               "ORDER BY ts LIMIT ?", (sid, lo, hi, budget + 1)).fetchall()
            samples = [[ts / 1000, value] for ts, value in raw]
        if not samples:
            continue
        if len(samples) > budget:
            hint = "use a larger step, " if step_ms else "add step= (e.g. step=5m) to downsample, "
            raise HistoryQueryError(f"more than {max_samples} samples match: {hint}narrow the time range or add labels "
                                    "(history.max_samples sets the limit)")
        budget -= len(samples)
        out.append({"metric": metric, "labels": labels, "samples": samples})
    return out


async def handle_history(request: web.Request) -> web.Response:
    c: Collector = request.app[COLLECTOR_KEY]
    store = getattr(c, "store", None)
    hcfg = c.config.history
    if store is None or not hcfg.enabled:
        return web.json_response({"error": "history is disabled (history.enabled: false)"}, status=404)
    q = request.query
    try:
        metric = q.get("metric", "")
        if not _METRIC_RE.match(metric):
            raise HistoryQueryError("metric= is required and must be a metric name")
        end = parse_time(q["end"], "end") if "end" in q else time.time()
        start = parse_time(q["start"], "start") if "start" in q else end - 3600
        if start > end:
            raise HistoryQueryError("start is after end")
        step = parse_step(q["step"]) if "step" in q else None
        matchers: dict[str, str] = {}
        for key, value in q.items():
            if key in _RESERVED:
                continue
            if not _LABEL_RE.match(key):
                raise HistoryQueryError(f"{key!r} is not a label name")
            if key in matchers:
                raise HistoryQueryError(f"label {key} is given twice")
            matchers[key] = value
        if len(matchers) > _MAX_MATCHERS:
            raise HistoryQueryError(f"at most {_MAX_MATCHERS} label matchers")

        def run() -> list[dict[str, Any]]:
            conn = store.reader()
            try:
                return query_history(conn, metric, start, end, matchers, hcfg.max_samples, step)
            finally:
                conn.close()

        series = await request.app[READS_KEY].run(run)  # its own threads: not the channels' (limits.py ReadPool)
    except HistoryQueryError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"series": series})


def add_routes(app: web.Application) -> None:
    """``GET /api/v1/history``."""
    app.router.add_get("/api/v1/history", handle_history)
