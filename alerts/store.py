"""The alerting tables in the collector's SQLite store: alert episodes, silences, group state, outbox.

Every change decided in one processing step (an ingest or a timer tick) is
written in one transaction: alert transitions, what each channel of a group
was told, and the notifications queued for delivery. So a crash either loses
the whole step (it is re-decided from restored state after the restart) or
keeps all of it — never "told the channel" without "queued the message".
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from roomwatch.alerts.model import Alert
from roomwatch.core.sqlite import ensure_schema, open_db

__all__ = ["AlertStore"]

MIGRATIONS = [
    """
CREATE TABLE alert_episodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    alertname TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    series_labels TEXT NOT NULL,
    metric TEXT NOT NULL,
    state TEXT NOT NULL,
    active_since REAL NOT NULL,
    fired_at REAL,
    resolved_at REAL,
    value REAL,
    ack_by TEXT,
    ack_at REAL,
    ack_comment TEXT,
    resolve_reason TEXT
);
CREATE INDEX alert_episodes_open ON alert_episodes (state) WHERE state != 'resolved';
CREATE INDEX alert_episodes_fp ON alert_episodes (fingerprint, id);
CREATE INDEX alert_episodes_time ON alert_episodes (active_since);
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE notify_groups (
    group_key TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    group_key TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    done_at REAL
);
CREATE INDEX outbox_pending ON outbox (channel, id) WHERE state = 'pending';
CREATE INDEX outbox_done ON outbox (done_at) WHERE state != 'pending'
""",
    # 2: what agents' local fallback already notified (alerts/fallback.py, roomwatch/core/notice.py)
    """
ALTER TABLE alert_episodes ADD COLUMN fallback TEXT;
CREATE TABLE fallback_notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alertname TEXT NOT NULL,
    labels TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    channel_type TEXT NOT NULL,
    ts REAL NOT NULL,
    since REAL NOT NULL,
    message TEXT NOT NULL,
    received_at REAL NOT NULL
)
""",
    # 3: how an alert was acknowledged (docs/oncall.md); short codes for SMS replies; who was sent what by SMS
    """
ALTER TABLE alert_episodes ADD COLUMN ack_via TEXT;
ALTER TABLE alert_episodes ADD COLUMN ack_channel TEXT;
CREATE TABLE ack_codes (
    code TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE reply_targets (
    number TEXT PRIMARY KEY,
    alert_ids TEXT NOT NULL,
    channel TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE collector_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE heartbeat_log (
    day TEXT PRIMARY KEY,
    sent_at REAL NOT NULL
)
""",
]


class AlertStore:
    """Thin SQL layer; callers group writes with :meth:`transaction`."""

    def __init__(self, path: str, conn: sqlite3.Connection | None = None):
        self.conn = conn or open_db(path)
        self.conn.row_factory = sqlite3.Row
        ensure_schema(self.conn, "alerts", MIGRATIONS)
        self._depth = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (nested calls join the outer transaction)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    # -- alerts --------------------------------------------------------------------
    def save_alert(self, a: Alert) -> None:
        row = a.to_row()
        if a.episode is None:
            cols = ", ".join(row)
            cur = self.conn.execute(f"INSERT INTO alert_episodes ({cols}) VALUES ({', '.join('?' * len(row))})",
                                    tuple(row.values()))
            a.episode = cur.lastrowid
        else:
            sets = ", ".join(f"{k} = ?" for k in row)
            self.conn.execute(f"UPDATE alert_episodes SET {sets} WHERE id = ?", (*row.values(), a.episode))

    def delete_alert(self, a: Alert) -> None:
        if a.episode is not None:
            self.conn.execute("DELETE FROM alert_episodes WHERE id = ?", (a.episode,))
            a.episode = None

    def open_alerts(self) -> list[Alert]:
        rows = self.conn.execute("SELECT * FROM alert_episodes WHERE state != 'resolved' ORDER BY id").fetchall()
        return [Alert.from_row(r) for r in rows]

    def latest_episode(self, fp: str) -> Alert | None:
        row = self.conn.execute("SELECT * FROM alert_episodes WHERE fingerprint = ? ORDER BY id DESC LIMIT 1",
                                (fp,)).fetchone()
        return Alert.from_row(row) if row else None

    def history(self, since: float, until: float, limit: int = 1000) -> list[Alert]:
        rows = self.conn.execute("SELECT * FROM alert_episodes WHERE active_since < ? AND "
                                 "(resolved_at IS NULL OR resolved_at >= ?) AND state != 'pending' "
                                 "ORDER BY active_since DESC LIMIT ?", (until, since, limit)).fetchall()
        return [Alert.from_row(r) for r in rows]

    # -- groups -------------------------------------------------------------------
    def save_group(self, key: str, data: dict[str, Any], now: float) -> None:
        self.conn.execute("INSERT INTO notify_groups (group_key, data, updated_at) VALUES (?, ?, ?) "
                          "ON CONFLICT(group_key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                          (key, json.dumps(data, ensure_ascii=False, sort_keys=True), now))

    def delete_group(self, key: str) -> None:
        self.conn.execute("DELETE FROM notify_groups WHERE group_key = ?", (key,))

    def groups(self) -> dict[str, dict[str, Any]]:
        return {r[0]: json.loads(r[1]) for r in self.conn.execute("SELECT group_key, data FROM notify_groups")}

    # -- housekeeping ---------------------------------------------------------------------
    def purge(self, before: float) -> None:
        """Drop resolved episodes and finished notifications older than ``before``."""
        self.conn.execute("DELETE FROM alert_episodes WHERE state = 'resolved' AND resolved_at < ?", (before,))
        self.conn.execute("DELETE FROM outbox WHERE state != 'pending' AND done_at < ?", (before,))
        self.conn.execute("DELETE FROM ack_codes WHERE created_at < ? AND alert_id NOT IN "
                          "(SELECT fingerprint || '-' || id FROM alert_episodes WHERE state != 'resolved')", (before,))
        self.conn.execute("DELETE FROM reply_targets WHERE at < ?", (before,))
        self.conn.execute("DELETE FROM heartbeat_log WHERE sent_at < ?", (before,))

    def close(self) -> None:
        self.conn.close()
