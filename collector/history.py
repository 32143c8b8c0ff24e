"""``GET /api/v1/history``: stored samples of the matching series, read from the embedded store.

``?metric=M&start=T&end=T[&label=value...]`` — ``T`` is Unix seconds (``1732848000.5``)
or RFC 3339 (``2024-11-29T03:00:00Z``); ``end`` defaults to now and ``start`` to
one hour before ``end``. Every other parameter is a label that must be equal.
The answer (CONTRACT.md)::

    {"series": [{"metric": M, "labels": {...}, "samples": [[ts_seconds, value], ...]}]}

with samples in time order, at the timestamps the devices were read (a backfilled
sample keeps its own time). An answer larger than ``history.max_samples`` is
refused with 400 and a hint, never silently cut.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import time
from typing import Any

from aiohttp import web

from collector.core import Collector
from collector.http import COLLECTOR_KEY, ROUTE_HOOKS

__all__ = ["HistoryQueryError", "parse_time", "query_history"]

_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,99}$")
_MAX_MATCHERS = 32


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


def query_history(conn: Any, metric: str, start: float, end: float, matchers: dict[str, str],
                  max_samples: int) -> list[dict[str, Any]]:
    """Series of ``metric`` whose labels include ``matchers``, with samples in [start, end]."""
    lo, hi = int(start * 1000), int(end * 1000)
    out: list[dict[str, Any]] = []
    budget = max_samples
    rows = conn.execute("SELECT id, labels FROM history_series WHERE metric = ? ORDER BY labels", (metric,)).fetchall()
    for sid, labels_text in rows:
        labels = json.loads(labels_text)
        if any(labels.get(k) != v for k, v in matchers.items()):
            continue
        samples = conn.execute("SELECT ts, value FROM history_samples WHERE series = ? AND ts BETWEEN ? AND ? "
                               "ORDER BY ts LIMIT ?", (sid, lo, hi, budget + 1)).fetchall()
        if not samples:
            continue
        if len(samples) > budget:
            raise HistoryQueryError(f"more than {max_samples} samples match: narrow the time range or add labels "
                                    "(history.max_samples sets the limit)")
        budget -= len(samples)
        out.append({"metric": metric, "labels": labels, "samples": [[ts / 1000, value] for ts, value in samples]})
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
        matchers: dict[str, str] = {}
        for key, value in q.items():
            if key in ("metric", "start", "end"):
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
                return query_history(conn, metric, start, end, matchers, hcfg.max_samples)
            finally:
                conn.close()

        series = await asyncio.to_thread(run)
    except HistoryQueryError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"series": series})


def _routes(app: web.Application, collector: Collector) -> None:
    app.router.add_get("/api/v1/history", handle_history)


ROUTE_HOOKS.append(_routes)
