"""Measured battery health: every outage recorded, and the runtime the battery really delivered.

A five-year-old battery still reports "100 %, 40 min" until the day mains fails.
So the agent watches each UPS it reads and records every outage (start, end, and
charge, runtime estimate and load over time) in a small SQLite file next to its
spool (``battery.db``; memory only when ``agent.spool`` is null), bounded to
:data:`KEEP_OUTAGES` outages per UPS and :data:`MAX_POINTS` points per outage.

When an outage ends (mains back, or the agent stopping: the host is shutting
down), it derives from the first and last readings:

* **measured runtime** — how long the battery would run from the charge it had at
  the start to empty at that outage's load: ``duration × c0 / (c0 − c1)``, given
  the charge fell at least :data:`MIN_DROP` over at least :data:`MIN_DURATION`;
* **health** — measured ÷ expected, where *expected* is the runtime the UPS itself
  predicted at the start of the outage (its runtime estimate). 1 means "as the UPS
  says"; an aged battery gives 0.5 or less long before the UPS admits it.

Both are exported with the UPS's readings (``roomwatch_ups_battery_health_ratio``,
``roomwatch_ups_measured_runtime_seconds``) together with the last outage's
length and end (``roomwatch_ups_last_outage_runtime_seconds``,
``roomwatch_ups_last_outage_timestamp_seconds``), restored from the file at start.
An on-battery during a self-test is not an outage: the drivers report it as mains
(see docs/power.md, "Self-tests").
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roomwatch.core import vocabulary as v
from roomwatch.core.wire import EventRecord, SampleRecord

__all__ = ["KEEP_OUTAGES", "MAX_POINTS", "BatteryHealth", "Outage", "measure"]

log = logging.getLogger("roomwatch.battery")

KEEP_OUTAGES = 100
MAX_POINTS = 360
MIN_DROP = 0.05  # charge must fall 5 points for a measurement
MIN_DURATION = 120.0
MIN_OUTAGE = 10.0  # shorter on-battery blips are not outages worth keeping

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outage (
    id INTEGER PRIMARY KEY,
    ups TEXT NOT NULL,            -- device, or device/ups for a multi-UPS nut device
    start REAL NOT NULL,
    end REAL,
    points TEXT NOT NULL,          -- JSON [[t, charge, runtime, load], ...]
    measured REAL,
    expected REAL,
    health REAL,
    load REAL
);
CREATE INDEX IF NOT EXISTS outage_ups ON outage (ups, start);
CREATE TABLE IF NOT EXISTS selftest (
    ups TEXT PRIMARY KEY,
    at REAL NOT NULL,               -- when the agent started its last test
    failed INTEGER                  -- 1 failed, 0 passed, NULL no result
);
"""


@dataclass(slots=True)
class Outage:
    """One outage of one UPS: readings (unix time, charge 0..1, runtime s, load 0..1; None = not reported)."""

    ups: str
    start: float
    points: list[tuple[float, float | None, float | None, float | None]] = field(default_factory=list)
    end: float | None = None
    id: int | None = None

    def add(self, t: float, charge: float | None, runtime: float | None, load: float | None) -> None:
        self.points.append((t, charge, runtime, load))
        if len(self.points) > MAX_POINTS:  # keep the first and last, thin the middle
            self.points = [self.points[0], *self.points[1:-1:2], self.points[-1]]


def measure(outage: Outage) -> dict[str, float | None]:
    """What an outage says about the battery: measured and expected runtime, health, mean load."""
    pts = outage.points
    out: dict[str, float | None] = {"measured": None, "expected": None, "health": None, "load": None}
    loads = [p[3] for p in pts if p[3] is not None]
    if loads:
        out["load"] = sum(loads) / len(loads)
    charged = [(t, c) for t, c, _, _ in pts if c is not None]
    runtimes = [r for _, _, r, _ in pts if r is not None]
    if runtimes:
        out["expected"] = runtimes[0]
    if len(charged) < 2:
        return out
    (t0, c0), (t1, c1) = charged[0], charged[-1]
    if t1 - t0 < MIN_DURATION or c0 - c1 < MIN_DROP or c0 <= 0:
        return out
    measured = (t1 - t0) * c0 / (c0 - c1)
    out["measured"] = measured
    expected = out["expected"]
    if expected:
        out["health"] = round(min(measured / expected, 5.0), 4)
    return out


class BatteryHealth:
    """Agent observer + enricher: records outages of every UPS, exports the last measurements."""

    def __init__(self, agent: Any, path: str | None, clock: Any = time.time):
        self.agent = agent
        self.clock = clock  # injectable, for tests on a controlled clock
        self.path = path or ":memory:"
        self._db = self._open(self.path)
        self.open: dict[str, Outage] = {}
        self.last: dict[str, dict[str, float]] = {}
        self.tests: dict[str, tuple[float, int | None]] = {}
        self._restore()
        agent.observers.append(self.observe)
        agent.enrichers.append(self.enrich)

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # unreadable file: keep measuring in memory, say so once
            log.error("battery history %s unusable (%s): kept in memory until the agent restarts", path, exc)
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            db.executescript(_SCHEMA)
        return db

    def _restore(self) -> None:
        for ups, at, failed in self._db.execute("SELECT ups, at, failed FROM selftest").fetchall():
            self.tests[ups] = (at, failed)
        rows = self._db.execute("SELECT ups, start, end, measured, health FROM outage WHERE end IS NOT NULL "
                                "ORDER BY start").fetchall()
        for ups, start, end, measured, health in rows:
            last = self.last.setdefault(ups, {})
            last["outage"], last["end"] = end - start, end
            if measured is not None:
                last["measured"] = measured
                if health is not None:
                    last["health"] = health
                else:
                    last.pop("health", None)
        # An outage left open by a crash is closed at its last point (the host went down with it).
        for oid, ups, start, points in self._db.execute(
                "SELECT id, ups, start, points FROM outage WHERE end IS NULL").fetchall():
            outage = Outage(ups, start, [tuple(p) for p in json.loads(points)], id=oid)
            self._finish(outage, outage.points[-1][0] if outage.points else start)

    # ------------------------------------------------------------ observer
    @staticmethod
    def _key(dev: Any, ups: str | None) -> str:
        return dev.name if ups is None else f"{dev.name}/{ups}"

    def observe(self, dev: Any, samples: list[SampleRecord], events: list[EventRecord]) -> None:
        """After every poll: start, extend or end the outage of each UPS in it."""
        if not dev.up:
            return  # no news; an outage stays open while the UPS is silent
        per: dict[str | None, dict[str, float]] = {}
        for s in samples:
            if s.metric in (v.UPS_ON_BATTERY, v.UPS_BATTERY_CHARGE, v.UPS_BATTERY_RUNTIME, v.UPS_LOAD):
                extra = {k: val for k, val in s.labels.items() if dev.labels.get(k) != val}
                ups = extra.pop("ups", None)
                if not extra:
                    per.setdefault(ups, {})[s.metric] = s.value
        now = self.clock()
        for ups, got in per.items():
            ob = got.get(v.UPS_ON_BATTERY)
            if ob is None:
                continue
            key = self._key(dev, ups)
            outage = self.open.get(key)
            if ob >= 0.5:
                if outage is None:
                    outage = self.open[key] = Outage(key, now)
                    log.warning("UPS %s on battery: recording the outage", key)
                outage.add(now, got.get(v.UPS_BATTERY_CHARGE), got.get(v.UPS_BATTERY_RUNTIME), got.get(v.UPS_LOAD))
                self._save(outage)
            elif outage is not None:
                del self.open[key]
                self._finish(outage, now)

    def _save(self, outage: Outage) -> None:
        points = json.dumps(outage.points)
        try:
            if outage.id is None:
                cur = self._db.execute("INSERT INTO outage (ups, start, points) VALUES (?, ?, ?)",
                                       (outage.ups, outage.start, points))
                outage.id = cur.lastrowid
            else:
                self._db.execute("UPDATE outage SET points = ? WHERE id = ?", (points, outage.id))
        except sqlite3.Error as exc:
            log.warning("battery history: cannot save the outage of %s: %s", outage.ups, exc)

    def _finish(self, outage: Outage, end: float) -> None:
        outage.end = end
        length = end - outage.start
        if length < MIN_OUTAGE:
            if outage.id is not None:
                self._db.execute("DELETE FROM outage WHERE id = ?", (outage.id,))
            return
        found = measure(outage)
        last = self.last.setdefault(outage.ups, {})
        last["outage"], last["end"] = length, end
        if found["measured"] is not None:
            last["measured"] = found["measured"]
            if found["health"] is not None:
                last["health"] = found["health"]
            else:
                last.pop("health", None)
        log.warning("UPS %s back on mains after %.0fs on battery%s", outage.ups, length,
                    f": measured runtime {found['measured']:.0f}s at {100 * (found['load'] or 0):.0f}% load, "
                    f"the UPS predicted {found['expected']:.0f}s (health {found['health']:.2f})"
                    if found["health"] is not None else "")
        try:
            self._save(outage)
            self._db.execute("UPDATE outage SET end = ?, measured = ?, expected = ?, health = ?, load = ? WHERE id = ?",
                             (end, found["measured"], found["expected"], found["health"], found["load"], outage.id))
            self._db.execute("DELETE FROM outage WHERE ups = ? AND id NOT IN (SELECT id FROM outage WHERE ups = ? "
                             "ORDER BY start DESC LIMIT ?)", (outage.ups, outage.ups, KEEP_OUTAGES))
        except sqlite3.Error as exc:
            log.warning("battery history: cannot save the outage of %s: %s", outage.ups, exc)

    # ------------------------------------------------------------ enricher
    def enrich(self, dev: Any, samples: list[SampleRecord]) -> list[SampleRecord]:
        """The last measurements of the device's UPS, sent with its every reading."""
        out: list[SampleRecord] = []
        ms = samples[0].ts if samples else int(time.time() * 1000)
        for key, (at, failed) in self.tests.items():
            device, _, ups = key.partition("/")
            if device != dev.name:
                continue
            labels = {**dev.labels, "ups": ups} if ups else dev.labels
            out.append(SampleRecord(v.UPS_LAST_SELF_TEST, labels, at, ms))
            if failed is not None:
                out.append(SampleRecord(v.UPS_SELF_TEST_FAILED, labels, float(failed), ms))
        for key, last in self.last.items():
            device, _, ups = key.partition("/")
            if device != dev.name:
                continue
            labels = {**dev.labels, "ups": ups} if ups else dev.labels
            for metric, name in ((v.UPS_BATTERY_HEALTH, "health"), (v.UPS_MEASURED_RUNTIME, "measured"),
                                 (v.UPS_LAST_OUTAGE_RUNTIME, "outage"), (v.UPS_LAST_OUTAGE_END, "end")):
                if name in last:
                    out.append(SampleRecord(metric, labels, float(last[name]), ms))
        return out

    def record_test(self, ups: str, at: float, failed: int | None) -> None:
        """A self-test the agent ran (``ups`` as in :meth:`_key`), kept across restarts."""
        self.tests[ups] = (at, failed)
        try:
            self._db.execute("INSERT OR REPLACE INTO selftest (ups, at, failed) VALUES (?, ?, ?)", (ups, at, failed))
        except sqlite3.Error as exc:
            log.warning("battery history: cannot save the self-test of %s: %s", ups, exc)

    def last_test(self, ups: str) -> tuple[float, int | None] | None:
        """(time, failed) of the last self-test the agent ran on ``ups``."""
        return self.tests.get(ups)

    def outages(self, ups: str, limit: int = 10) -> list[dict[str, Any]]:
        """The latest outages of ``ups`` (newest first), for tests and tools."""
        rows = self._db.execute("SELECT start, end, measured, expected, health, load, points FROM outage "
                                "WHERE ups = ? ORDER BY start DESC LIMIT ?", (ups, limit)).fetchall()
        return [{"start": r[0], "end": r[1], "measured": r[2], "expected": r[3], "health": r[4], "load": r[5],
                 "points": len(json.loads(r[6]))} for r in rows]

    def close(self) -> None:
        """Agent stopping (the host may be shutting down mid-outage): close open outages, then the file."""
        now = self.clock()
        for key, outage in list(self.open.items()):
            del self.open[key]
            self._finish(outage, now)
        self._db.close()
