"""The report inside a running collector: the daily schedule, sending, ``/report`` and ``/api/v1/report``.

The schedule is an asyncio task started with the web app (aiohttp ``cleanup_ctx``).
Which days were sent is kept in the store (table ``report_log``), so a collector
restarted just after ``report.time`` still sends that day's report, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from roomwatch.collector.http import COLLECTOR_KEY, READS_KEY
from roomwatch.collector.report.compute import Report, compute_report, report_window
from roomwatch.collector.report.render import render_html, render_markdown, render_text, title_text
from roomwatch.collector.report.sources import SQLiteSource

__all__ = ["build_report", "channels_for_report", "send_report"]

log = logging.getLogger("roomwatch.report")

_LOG_SCHEMA = ["CREATE TABLE report_log (day TEXT PRIMARY KEY, sent_at REAL NOT NULL, channels TEXT NOT NULL)"]
#: A report whose time passed less than this long ago is still sent after a restart.
CATCH_UP = 6 * 3600.0
_RETRIES = 3


def _lang(cfg: Any, asked: str | None = None) -> str:
    return asked or cfg.report.language or cfg.web.language


def build_report(cfg: Any, day: dt.date | None = None, now: float | None = None) -> Report:
    """Compute the report of the window ending at ``report.time`` on ``day`` from the collector's store file."""
    start, end = report_window(cfg.report, day, now)
    try:
        source: Any = SQLiteSource(cfg.storage)
    except FileNotFoundError:
        source = _Empty()
    try:
        return compute_report(source, source, cfg.report, start, end, cfg.rules)
    finally:
        if isinstance(source, SQLiteSource):
            source.close()


class _Empty:
    available = False
    alerts_available = False

    def series(self, metric: str, start: float, end: float) -> list[Any]:
        return []

    def episodes(self, start: float, end: float) -> list[Any]:
        return []


def channels_for_report(cfg: Any) -> list[str]:
    """``report.channels``, or the channels of every route an alert labelled DailyReport/info would take."""
    if cfg.report.channels:
        return list(cfg.report.channels)
    labels = {"alertname": "DailyReport", "severity": "info"}
    names: list[str] = []
    for route in cfg.routes:  # as alerts are routed: the first route that matches, more with continue: true
        if not all(labels.get(k) == val for k, val in route.match.items()):
            continue
        matchers = getattr(route, "matchers", None) or []
        if matchers:
            from roomwatch.alerts.matchers import parse_matcher

            if not all(parse_matcher(m).matches(labels) for m in matchers):
                continue
        names.extend(c for c in route.channels if c not in names)
        if not getattr(route, "continue_", False):
            break
    return names


async def send_report(cfg: Any, report: Report, lang: str | None = None) -> dict[str, str]:
    """Send through each channel; return channel → outcome text (delivered / partial / retry / give_up: detail)."""
    import roomwatch.channels.all  # noqa: F401 - registers the channel types
    from roomwatch.alerts.model import fingerprint
    from roomwatch.channels.base import AlertItem, Notification, Outcome, get_channel_type, remember_progress

    lang = _lang(cfg, lang)
    by_name = {c.name: c for c in cfg.channels}
    day = dt.datetime.fromtimestamp(report.end, cfg.report.zone()).strftime("%Y-%m-%d")
    results: dict[str, str] = {}
    for name in channels_for_report(cfg):
        ch_cfg = by_name.get(name)
        if ch_cfg is None:
            results[name] = "give_up: no such channel"
            continue
        try:
            channel = get_channel_type(ch_cfg.type)(ch_cfg)
        except KeyError:
            results[name] = f"give_up: channel type {ch_cfg.type!r} is not available in this build"
            log.error("daily report: %s", results[name])
            continue
        # One alert item carrying the report: receivers written for Alertmanager's webhook (and Alertmanager's
        # own API) expect at least one alert in a message.
        labels = {"alertname": "DailyReport", "severity": "info"}
        annotations = {"summary": title_text(report, lang), "description": render_text(report, lang)}
        item = AlertItem(fingerprint(labels, day), "firing", labels, annotations,
                         dt.datetime.fromtimestamp(report.end, dt.UTC))
        note = Notification(group_key=f"report:{day}", status="firing", receiver=name, alerts=[item],
                            title=annotations["summary"], text=annotations["description"],
                            markdown=render_markdown(report, lang),
                            group_labels={"alertname": "DailyReport"}, common_labels=dict(labels),
                            common_annotations={"summary": annotations["summary"]}, reason="report")
        try:
            for attempt in range(_RETRIES):
                res = await channel.send(note)
                results[name] = res.outcome.value + (f": {res.detail}" if res.detail else "")
                if res.outcome is not Outcome.RETRY:
                    break
                remember_progress(note, res)  # the retry goes only to recipients who do not have it yet
                await asyncio.sleep(res.retry_after or 5.0 * (attempt + 1))
        finally:
            await channel.close()
        level = (logging.INFO if results[name].startswith("delivered")
                 else logging.WARNING if results[name].startswith("partial") else logging.ERROR)
        log.log(level, "daily report %s via %s: %s", day, name, results[name])
    return results


class ReportScheduler:
    """Sends the report once a day at ``report.time`` in ``report.timezone``."""

    def __init__(self, collector: Any):
        self.collector = collector
        self.cfg = collector.config
        self.started_at = time.time()
        self._conn: Any = None

    def _log_conn(self) -> Any:
        if self._conn is None:
            from roomwatch.core.sqlite import ensure_schema, open_db

            self._conn = open_db(self.cfg.storage)
            ensure_schema(self._conn, "report", _LOG_SCHEMA)
        return self._conn

    def sent(self, day: str) -> bool:
        return self._log_conn().execute("SELECT 1 FROM report_log WHERE day = ?", (day,)).fetchone() is not None

    def mark(self, day: str, results: dict[str, str]) -> None:
        self._log_conn().execute("INSERT OR REPLACE INTO report_log (day, sent_at, channels) VALUES (?, ?, ?)",
                                 (day, time.time(), "; ".join(f"{k}={v}" for k, v in results.items())))

    def due(self, now: float) -> tuple[str, float] | None:
        """The day whose report is due now: its time passed, within CATCH_UP (a restart), not yet sent."""
        _, end = report_window(self.cfg.report, None, now)
        day = dt.datetime.fromtimestamp(end, self.cfg.report.zone()).strftime("%Y-%m-%d")
        if now - end > CATCH_UP or self.sent(day):
            return None
        if end < self.started_at and not self._log_conn().execute("SELECT 1 FROM report_log LIMIT 1").fetchone():
            return None  # a new installation: no report for a day it did not watch
        return day, end

    async def run_once(self, now: float | None = None) -> dict[str, str] | None:
        now = time.time() if now is None else now
        due = self.due(now)
        if due is None:
            return None
        day, _ = due
        report = await asyncio.to_thread(build_report, self.cfg, None, now)
        results = await send_report(self.cfg, report)
        self.mark(day, results)
        return results

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("daily report failed")
            # Wake at least every minute: cheap, and robust to clock changes and suspend.
            await asyncio.sleep(30.0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


#: Days a report can be asked for: its window (a day before, time zones around) stays inside datetime's range.
_FIRST_DAY, _LAST_DAY = dt.date(2000, 1, 1), dt.date(2099, 12, 31)


def _day_param(request: web.Request) -> dt.date | None:
    text = request.query.get("date")
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or not _FIRST_DAY <= day <= _LAST_DAY:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"date must be a day YYYY-MM-DD between {_FIRST_DAY} and "
                                                           f"{_LAST_DAY}, got {text[:40]!r}"}),
                                 content_type="application/json")
    return day


async def handle_report_page(request: web.Request) -> web.Response:
    """``GET /report[?date=YYYY-MM-DD][&lang=en]``: the report as a page."""
    cfg = request.app[COLLECTOR_KEY].config
    day = _day_param(request)
    asked = request.query.get("lang")
    lang = asked if asked is not None and asked in ("zh-CN", "en") else _lang(cfg)
    report = await request.app[READS_KEY].run(build_report, cfg, day)  # bounded, not the channels' threads
    end_day = dt.datetime.fromtimestamp(report.end, cfg.report.zone()).date()
    links = (f"?date={end_day - dt.timedelta(days=1)}&lang={lang}", f"?date={end_day + dt.timedelta(days=1)}&lang={lang}")
    from roomwatch.collector.web import _HEADERS

    return web.Response(text=render_html(report, lang, links), content_type="text/html", headers=_HEADERS)


async def handle_report_json(request: web.Request) -> web.Response:
    """``GET /api/v1/report[?date=YYYY-MM-DD]``: the figures as JSON."""
    cfg = request.app[COLLECTOR_KEY].config
    report = await request.app[READS_KEY].run(build_report, cfg, _day_param(request))
    return web.json_response(report.to_dict())


def add_routes(app: web.Application) -> None:
    """``GET /report``, ``GET /api/v1/report`` and, when ``report.enabled``, the daily schedule."""
    collector = app[COLLECTOR_KEY]
    app.router.add_get("/report", handle_report_page)
    app.router.add_get("/api/v1/report", handle_report_json)
    if not collector.config.report.enabled:
        return

    async def schedule(app: web.Application) -> AsyncIterator[None]:
        scheduler = ReportScheduler(collector)
        task = asyncio.create_task(scheduler.run(), name="daily-report")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        scheduler.close()

    app.cleanup_ctx.append(schedule)

