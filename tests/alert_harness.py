"""A collector + alert service driven by a controllable clock, for rule-engine and lifecycle tests.

Nothing is delivered here: tests read what the dispatcher queued in the outbox
(the persistent table the senders work from), which is exactly the decision
under test. Delivery itself is tested against real receivers elsewhere.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from roomwatch.alerts.outbox import notification_from_json
from roomwatch.collector.config import CollectorConfig
from roomwatch.collector.core import Collector
from roomwatch.collector.main import build_alert_service
from roomwatch.core.wire import Batch, EventRecord, SampleRecord


def at(text: str) -> float:
    """Unix time of a wall-clock time in Asia/Shanghai, e.g. ``at("2024-12-02 10:00")``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


T0 = at("2024-12-02 10:00")  # a Monday, within working hours


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Harness:
    """``push`` samples/events as agent ``a1``; ``advance`` time running the timer each second."""

    def __init__(self, tmp_path: Path, t0: float = T0, **config: Any):
        self.tmp_path = tmp_path
        self.clock = Clock(t0)
        base: dict[str, Any] = {
            "storage": str(tmp_path / "alerts.db"),
            "agents": [{"id": "a1", "token": "t" * 20}],
            "agent_timeout": "1m",
            "channels": [{"name": "duty", "type": "webhook", "url": "http://127.0.0.1:9/duty"},
                         {"name": "chief", "type": "webhook", "url": "http://127.0.0.1:9/chief"}],
            "routes": [{"channels": ["duty"]}],
        }
        base.update(config)
        self.config_data = base
        self.seq = 0
        self.seen_outbox = 0
        self.start()

    def start(self) -> None:
        cfg = CollectorConfig.model_validate(json.loads(json.dumps(self.config_data)))
        self.collector = Collector(cfg)
        self.svc = build_alert_service(self.collector, clock=self.clock)

    def restart(self) -> None:
        """A new collector and service on the same store (what a process restart does)."""
        self.svc.store.close()
        self.start()

    @property
    def now(self) -> float:
        return self.clock.t

    def push(self, samples: list[tuple[str, dict[str, str], float]] = (), events: list[tuple[str, dict[str, str]]] = (),
             agent: str = "a1", ts: float | None = None) -> None:
        """One accepted batch; every sample and event stamped ``ts`` (default now)."""
        ms = int((self.now if ts is None else ts) * 1000)
        self.seq += 1
        batch = Batch(agent, self.seq, [SampleRecord(m, dict(labels), float(v), ms) for m, labels, v in samples],
                      [EventRecord(t, dict(labels), ms, None) for t, labels in events], int(self.now * 1000))
        self.collector.ingest(self.collector.agents.agents[agent], batch, now=self.now)

    def advance(self, seconds: float, step: float = 1.0, keep_alive: tuple[str, ...] = ("a1",)) -> None:
        """Move the clock, running the timer every ``step``; agents in ``keep_alive`` count as pushing."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.clock.t = min(end, self.now + step)
            for a in keep_alive:
                self.collector.agents.agents[a].last_push = self.now
            self.svc.tick(self.now)

    def queued(self) -> list[Any]:
        """Notifications queued since the last call, oldest first."""
        rows = self.svc.store.conn.execute("SELECT id, payload FROM outbox WHERE id > ? ORDER BY id",
                                           (self.seen_outbox,)).fetchall()
        if rows:
            self.seen_outbox = rows[-1][0]
        return [notification_from_json(r[1]) for r in rows]

    def alert(self, name: str) -> dict[str, Any] | None:
        for a in self.svc.presenter.list_alerts():
            if a["alertname"] == name:
                return a
        return None

    def states(self) -> dict[str, str]:
        return {a["alertname"]: a["state"] for a in self.svc.presenter.list_alerts()}
