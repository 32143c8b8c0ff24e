"""Where the report's figures come from, behind two small interfaces.

* :class:`HistorySource` — stored samples of a metric in a time window, plus the
  last sample before it (a door that opened yesterday evening is still open at 08:00).
* :class:`AlertSource` — alert episodes (raised, acknowledged, resolved) overlapping a window.

Implementations: :class:`SQLiteSource` reads the collector's store file directly
(the history tables ``history_series``/``history_samples`` and the alerting table
``alert_episodes``, each owned by its component); :class:`HTTPHistory` reads
``GET /api/v1/history`` of a running collector. A missing table means that part of
the collector is switched off or absent: the report says "not available" instead
of pretending nothing happened.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["AlertSource", "Episode", "HTTPHistory", "HistorySource", "SQLiteSource", "SeriesData"]


@dataclass(slots=True)
class SeriesData:
    """One series: labels and (unix seconds, value) samples in time order."""

    labels: dict[str, str]
    samples: list[tuple[float, float]] = field(default_factory=list)


@dataclass(slots=True)
class Episode:
    """One alert from becoming active to resolution, with its acknowledgement."""

    alertname: str
    severity: str
    labels: dict[str, str]
    active_since: float
    fired_at: float | None
    resolved_at: float | None
    ack_at: float | None = None
    ack_by: str | None = None


class HistorySource(Protocol):
    available: bool

    def series(self, metric: str, start: float, end: float) -> list[SeriesData]:
        """Samples in [start, end] of every series of ``metric``, each with its last sample before ``start``."""


class AlertSource(Protocol):
    alerts_available: bool

    def episodes(self, start: float, end: float) -> list[Episode]:
        """Episodes that fired (not only pending) and overlap [start, end)."""


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


class SQLiteSource:
    """The collector's SQLite store, opened read-only (safe beside the running collector: WAL)."""

    def __init__(self, path: str | Path):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no collector store at {p} (storage: in the collector file)")
        self.conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)
        self.conn.execute("PRAGMA busy_timeout=30000")
        tables = _tables(self.conn)
        self.available = {"history_series", "history_samples"} <= tables
        self.alerts_available = "alert_episodes" in tables

    def close(self) -> None:
        self.conn.close()

    def series(self, metric: str, start: float, end: float) -> list[SeriesData]:
        if not self.available:
            return []
        lo, hi = int(start * 1000), int(end * 1000)
        out = []
        for sid, labels_text in self.conn.execute("SELECT id, labels FROM history_series WHERE metric = ?", (metric,)):
            rows = self.conn.execute("SELECT ts, value FROM history_samples WHERE series = ? AND ts BETWEEN ? AND ? "
                                     "ORDER BY ts", (sid, lo, hi)).fetchall()
            before = self.conn.execute("SELECT ts, value FROM history_samples WHERE series = ? AND ts < ? "
                                       "ORDER BY ts DESC LIMIT 1", (sid, lo)).fetchone()
            if before is not None:
                rows.insert(0, before)
            if rows:
                out.append(SeriesData(json.loads(labels_text), [(ts / 1000, float(v)) for ts, v in rows]))
        return out

    def episodes(self, start: float, end: float) -> list[Episode]:
        if not self.alerts_available:
            return []
        rows = self.conn.execute(
            "SELECT alertname, severity, labels, active_since, fired_at, resolved_at, ack_at, ack_by "
            "FROM alert_episodes WHERE fired_at IS NOT NULL AND fired_at < ? AND (resolved_at IS NULL OR resolved_at >= ?) "
            "ORDER BY fired_at", (end, start)).fetchall()
        return [Episode(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]


class HTTPHistory:
    """``GET /api/v1/history`` and ``/api/v1/alerts/history`` of a running collector (``roomwatch report --url``)."""

    def __init__(self, base_url: str, lookback: float = 86400.0, timeout: float = 30.0):
        self.base = base_url.rstrip("/")
        self.lookback = lookback  # how far before the window to look for the state at its start
        self.timeout = timeout
        self.available = True
        self.alerts_available = True

    def _get(self, path: str, query: dict[str, str]) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=self.timeout) as resp:
            return json.loads(resp.read())

    def series(self, metric: str, start: float, end: float) -> list[SeriesData]:
        query = {"metric": metric, "start": f"{start - self.lookback:.3f}", "end": f"{end:.3f}"}
        try:
            doc = self._get("/api/v1/history", query)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                self.available = False
                return []
            raise
        out = []
        for s in doc.get("series", []):
            samples = [(float(ts), float(v)) for ts, v in s.get("samples", [])]
            before = [p for p in samples if p[0] < start]
            inside = [p for p in samples if p[0] >= start]
            out.append(SeriesData(dict(s.get("labels", {})), before[-1:] + inside))
        return [s for s in out if s.samples]

    def episodes(self, start: float, end: float) -> list[Episode]:
        try:
            doc = self._get("/api/v1/alerts/history", {"since": f"{start:.3f}", "until": f"{end:.3f}"})
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                self.alerts_available = False
                return []
            raise
        out = []
        for a in doc.get("alerts", []):
            if a.get("firedAt") is None:
                continue
            ack = a.get("ack") or {}
            out.append(Episode(a.get("alertname", ""), a.get("severity", ""), dict(a.get("labels", {})),
                               a.get("activeSince") or a["firedAt"], a["firedAt"], a.get("resolvedAt"),
                               ack.get("at"), ack.get("by")))
        return out
