"""The collector's embedded SQLite store: one file, WAL mode, a schema version per component.

Components (push dedup, history, alerts, outbox, silences …) each own their
tables and call :func:`ensure_schema` with their own name and migrations; they
may share one connection or open their own (WAL allows one writer and many
readers across connections).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ensure_schema", "open_db"]


def open_db(path: str | Path, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating) the store with the settings every component relies on."""
    p = Path(path)
    if str(path) != ":memory:" and not p.parent.is_dir():
        raise OSError(f"storage directory {p.parent} does not exist (create it, or set storage: to another path)")
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=check_same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a transaction reported committed survives power loss (we acknowledge pushes after commit).
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    return conn


def ensure_schema(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> None:
    """Apply ``migrations[i]`` (SQL scripts) not yet applied for ``component``, in order, atomically."""
    row = conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
    current = row[0] if row else 0
    for version in range(current, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migrations[version].split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                         "ON CONFLICT(component) DO UPDATE SET version = excluded.version", (component, version + 1))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
