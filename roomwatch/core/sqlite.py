"""The collector's embedded SQLite store: one file, WAL mode, a schema version per component.

Components (push dedup, history, alerts, outbox, silences …) each own their
tables and call :func:`ensure_schema` with their own name and migrations; they
may share one connection or open their own (WAL allows one writer and many
readers across connections).

Upgrades: a component's migrations are applied forward, in order, each in its own transaction,
so a store written by any earlier release opens (tests/test_store_upgrade.py keeps a store of the
previous release in tests/data/stores/). Downgrades: a store whose version of a component is
higher than this code knows was written by a newer release; it is refused (:class:`StoreTooNew`)
before anything is written, instead of being used with tables this code does not understand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from roomwatch.core.storeversion import apply_migrations, too_new_message

__all__ = ["StoreTooNew", "ensure_schema", "open_db"]


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


class StoreTooNew(sqlite3.DatabaseError):
    """The store was written by a newer roomwatch (a downgrade): refused, left as it is."""


def ensure_schema(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> None:
    """Apply ``migrations[i]`` (SQL scripts) not yet applied for ``component``, in order, atomically.

    Raises :class:`StoreTooNew` when the store is at a later version than ``migrations`` reach.
    """
    row = conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
    current = row[0] if row else 0
    if current > len(migrations):
        path = next((r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"), "") or ":memory:"
        raise StoreTooNew(too_new_message(path, f"{component!r} part of the store", current, len(migrations)))
    apply_migrations(conn, current, migrations, "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                     "ON CONFLICT(component) DO UPDATE SET version = excluded.version", (component,))
