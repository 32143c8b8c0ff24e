"""Schema versions of roomwatch's SQLite files: forward migration, and refusal of a newer file.

Shared by the collector's store (:mod:`collector.db`, a version per component) and the agent's
spool (:mod:`agent.spool`, ``PRAGMA user_version``). Migrations are SQL scripts appended to a
list, never edited: version N means scripts 1..N were applied. A file at a version above the
list's length was written by a newer release (a downgrade); it is refused before anything is
written, so going back to the newer release finds it intact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["apply_migrations", "too_new_message"]


def too_new_message(path: str, what: str, found: int, known: int) -> str:
    """The one wording for a refused downgrade."""
    return (f"{path}: the {what} was written by a newer roomwatch (schema version {found}; this roomwatch "
            f"knows up to {known}); it was left untouched. Run the newer roomwatch again, or move the file "
            "away to start with an empty one (docs/install.md, \"Downgrade\")")


def apply_migrations(conn: sqlite3.Connection, current: int, migrations: Sequence[str], record: str,
                     params: tuple[object, ...] = ()) -> None:
    """Run ``migrations[current:]`` in order, each with ``record`` (SQL noting the new version) in one transaction.

    ``record`` gets ``params`` followed by the new version number (``?`` placeholders), or is a
    format string with ``{version}`` when it cannot take parameters (``PRAGMA user_version``).
    """
    for version in range(current, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migrations[version].split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            if "{version}" in record:
                conn.execute(record.format(version=version + 1))
            else:
                conn.execute(record, (*params, version + 1))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
