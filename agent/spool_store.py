"""Where the agent's spool keeps batches: SQLite on disk (WAL, fsync'ed), or RAM while the disk refuses.

:class:`SpoolStore` is the storage half of :class:`roomwatch.agent.spool.Spool`
(the other half, which batch goes when, is :mod:`roomwatch.agent.spool_pacing`):
it opens and locks the file (a damaged one is moved aside), commits batches,
enforces the size cap, keeps what SQLite refuses in a bounded :class:`Hold`,
deletes delivered batches, counts and logs every drop, and answers the queries of
the delivery order. The policies are described in :mod:`roomwatch.agent.spool`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roomwatch.agent.spool_hold import Entry, Hold, decode_body, encode_body, span
from roomwatch.core.plural import plural
from roomwatch.core.storeversion import apply_migrations, too_new_message
from roomwatch.core.wire import Batch, WireError

__all__ = ["DROP_REASONS", "SpoolError", "SpoolStore"]

log = logging.getLogger("roomwatch.agent.spool")

#: The spool's schema, one script per version (``PRAGMA user_version``); append a migration, never
#: edit one (roomwatch/core/storeversion.py). 1: the first release; 2: batch priority (fallback notices).
MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    newest_ms INTEGER NOT NULL,
    oldest_ms INTEGER NOT NULL,
    n_samples INTEGER NOT NULL,
    n_events INTEGER NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_newest ON batches (newest_ms);
CREATE INDEX IF NOT EXISTS batches_events ON batches (seq) WHERE n_events > 0""",
    "ALTER TABLE batches ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
]
#: Why a batch (or part of one) left the spool without the collector's 200; the ``reason`` label of
#: roomwatch_agent_spool_dropped_total. cap: the size cap; unwritable: SQLite could not write and the
#: fallback in RAM was full; rejected: the collector answered 400 (it would refuse the batch forever);
#: unreadable: a stored batch could not be decoded.
DROP_REASONS = ("cap", "unwritable", "rejected", "unreadable")
_DROP_LOG_EVERY = 60.0  # s between "still full" summaries: one line per minute, not one per batch


def _meta_key(kind: str, reason: str) -> str:
    # "cap" keeps the keys of the first release, so counters in existing spool files carry on.
    return f"dropped_{kind}" if reason == "cap" else f"dropped_{kind}_{reason}"


class SpoolError(Exception):
    """The spool cannot be used (locked by another agent, directory missing)."""


class SpoolStore:
    """The spool's batches on disk (``path=":memory:"``: in RAM), their counts, the cap and the drop counters."""

    def __init__(self, path: str, max_bytes: int = 100 * 2**20, max_samples: int | None = None,
                 fallback_max_records: int = 100_000, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, agent_id: str = ""):
        self.path = path
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        self.clock = clock
        self.monotonic = monotonic
        self.dropped: dict[str, list[int]] = {r: [0, 0] for r in DROP_REASONS}  # reason → [samples, events]
        self.last_seq = 0
        self._lock_fd: int | None = None
        self._batches = 0
        self._samples = 0
        self._bytes = 0
        self._oldest_ms: int | None = None
        self._hold = Hold(fallback_max_records)  # batches SQLite refused to store (disk full, I/O error)
        self._undeleted: set[int] = set()  # delivered or dropped, but the disk refused the DELETE
        self._db_failing = False
        # per reason: samples, events dropped since the last log line; time of that line
        self._drop_windows: dict[str, list[float]] = {}
        self.conn = self._open()
        self._load()

    # -- opening -------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            parent = Path(self.path).parent
            if not parent.is_dir():
                raise SpoolError(f"spool directory {parent} does not exist (create it, or set agent.spool)")
            self._lock()
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok}")
            return self._bind_owner(conn)
        except sqlite3.OperationalError as exc:
            if "unable to open" in str(exc) or "readonly" in str(exc):
                self.close()
                raise SpoolError(f"cannot open the spool {self.path}: {exc} (check the directory's owner)") from None
            problem: sqlite3.DatabaseError = exc
        except sqlite3.DatabaseError as exc:
            problem = exc
        # A spool we cannot read must not stop the agent from monitoring: keep it aside for a post-mortem.
        aside = f"{self.path}.corrupt-{int(self.clock())}"
        log.error("spool %s is damaged (%s): moved it to %s and started an empty one", self.path, problem, aside)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path + suffix, aside + suffix)
        return self._bind_owner(self._connect())

    def _bind_owner(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """Bind the spool file to this agent id; another agent's spool is moved aside, never sent as this one.

        The readings in a spool belong to the agent that wrote them: after a change of ``agent.id``
        (or a spool file copied from another host, e.g. a cloned SD card), sending them under the new
        id would put one room's past under another's name. Such a file is kept, untouched, next to
        the spool as ``<spool>.agent-<old id>`` (docs/reliability.md says how to send it), and the
        agent starts with an empty spool. An empty spool is simply taken over.
        """
        if self.path == ":memory:" or not self.agent_id:
            return conn
        conn.execute("CREATE TABLE IF NOT EXISTS owner (agent TEXT NOT NULL)")
        row = conn.execute("SELECT agent FROM owner").fetchone()
        owner = row[0] if row else self._writer_of(conn)
        batches = conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        if owner is not None and owner != self.agent_id and batches:
            safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in owner)[:64]
            aside = f"{self.path}.agent-{safe}"
            if os.path.exists(aside):
                aside += f"-{int(self.clock())}"
            conn.close()  # the last connection: SQLite checkpoints the WAL into the file and removes it
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path + suffix, aside + suffix)
            log.warning("spool %s holds %d batches written by agent %r, not by this agent %r (agent.id changed, or "
                        "the file was copied from another host): moved it to %s, unsent, and started an empty spool. "
                        "To deliver them, run an agent with agent.id %r and agent.spool %s (docs/reliability.md)",
                        self.path, batches, owner, self.agent_id, aside, owner, aside)
            conn = self._connect()
            conn.execute("CREATE TABLE IF NOT EXISTS owner (agent TEXT NOT NULL)")
            row = None
        if row is None or row[0] != self.agent_id:
            conn.execute("DELETE FROM owner")
            conn.execute("INSERT INTO owner (agent) VALUES (?)", (self.agent_id,))
        return conn

    @staticmethod
    def _writer_of(conn: sqlite3.Connection) -> str | None:
        """The agent id in the newest stored batch (a spool file of a release that did not record its owner)."""
        row = conn.execute("SELECT body FROM batches ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            agent: str = decode_body(row[0]).agent
        except (zlib.error, WireError, ValueError):
            return None
        return agent

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: put() returns after the WAL is fsync'ed, so a batch we push survives a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        # The agent's memory budget is small and the spool is read mostly front to back: 512 KiB of page
        # cache instead of SQLite's default 2 MiB.
        conn.execute("PRAGMA cache_size=-512")
        self._migrate(conn)
        if self.path != ":memory:":
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)  # readings of a government room are nobody else's business
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the file to :data:`MIGRATIONS`' version; refuse (SpoolError) one written by a newer release."""
        record = "PRAGMA user_version = {version}"
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        columns = {row[1] for row in conn.execute("PRAGMA table_info(batches)")}
        if version == 0 and columns:
            # Written before the spool had a version: script 1 only adds what such a file may lack
            # (IF NOT EXISTS); the priority column tells whether it was at version 2 already.
            apply_migrations(conn, 0, MIGRATIONS[:1], record)
            version = 2 if "priority" in columns else 1
            conn.execute(record.format(version=version))
        if version > len(MIGRATIONS):
            conn.close()
            self.close()
            raise SpoolError(too_new_message(self.path, "spool", version, len(MIGRATIONS)))
        apply_migrations(conn, version, MIGRATIONS, record)

    def _lock(self) -> None:
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"spool {self.path} is in use by another agent process (give each agent its own "
                             "agent.spool)") from None
        self._lock_fd = fd

    def _load(self) -> None:
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        self.last_seq = int(meta.get("last_seq", 0))
        for reason in DROP_REASONS:
            self.dropped[reason] = [int(meta.get(_meta_key("samples", reason), 0)),
                                    int(meta.get(_meta_key("events", reason), 0))]
        self._recount()
        top = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()[0]
        self.last_seq = max(self.last_seq, top)
        if self._batches and self._oldest_ms is not None:
            age = self.clock() - self._oldest_ms / 1000
            log.info("spool %s holds %s (%s, oldest %.0fs old) from before the restart; sending them",
                     self.path, plural(self._batches, "batch", "batches"), plural(self._samples, "sample"), age)

    def _recount(self) -> None:
        row = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(n_samples), 0), COALESCE(SUM(size), 0), MIN(oldest_ms) "
                                "FROM batches").fetchone()
        self._batches, self._samples, self._bytes, self._oldest_ms = row

    # -- writing ------------------------------------------------------------------
    def put(self, batch: Batch) -> list[int]:
        """Commit ``batch`` (fsync'ed); enforce the size cap in the same transaction. Returns the seqs the cap dropped.

        When SQLite cannot write, the batch is held in RAM (bounded, see :mod:`roomwatch.agent.spool_hold`) and
        every later ``put`` tries the disk again, moving what is held onto it once it works.
        """
        entry = Entry.of(batch)
        self.last_seq = max(self.last_seq, batch.seq)
        dropped: list[int] = []
        if not self._write([entry], dropped):
            dropped_s, dropped_e, first_ts = self._hold.add(entry)
            if dropped_s or dropped_e:
                self._count_drop("unwritable", dropped_s, dropped_e)
                self._log_drop("unwritable", dropped_s, dropped_e, first_ts)
            return []
        if self._hold or self._undeleted:
            # The new batch alone first: while the disk is full, retrying costs one small write, not all that is held.
            moved, samples = len(self._hold), self._hold.samples
            if not self._write(list(self._hold.entries), dropped, recover=True):
                return dropped
            self._hold.clear()
            self._undeleted.clear()
            log.warning("spool %s is writable again: moved %s (%s) from memory to disk",
                        self.path, plural(moved, "batch", "batches"), plural(samples, "sample"))
        elif self._db_failing:
            log.warning("spool %s is writable again", self.path)
        self._db_failing = False
        return dropped

    def _write(self, entries: list[Entry], dropped: list[int], recover: bool = False) -> bool:
        """Commit ``entries`` (with ``recover``: also the deletions the disk refused); False if SQLite fails.

        The seqs the cap drops are added to ``dropped`` once the transaction committed."""
        before = self._snapshot()
        cap_drops: tuple[int, int, int | None] | None = None
        cap_seqs: list[int] = []
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT OR REPLACE INTO batches (seq, newest_ms, oldest_ms, n_samples, n_events, size, "
                                  "body, priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  [(e.seq, e.newest_ms, e.oldest_ms, e.n_samples, e.n_events, len(e.body), e.body,
                                    e.priority) for e in entries])
            if recover:
                self.conn.executemany("DELETE FROM batches WHERE seq = ?", [(seq,) for seq in self._undeleted])
                self._recount()
            else:
                for e in entries:
                    self._batches += 1
                    self._samples += e.n_samples
                    self._bytes += len(e.body)
                    self._oldest_ms = e.oldest_ms if self._oldest_ms is None else min(self._oldest_ms, e.oldest_ms)
            if self._over_cap():
                cap_drops = self._enforce_cap(max((e.seq for e in entries), default=self.last_seq), cap_seqs)
            self._save_meta()
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # after an I/O error SQLite may have rolled back already
                self.conn.execute("ROLLBACK")
            self._restore(before)
            self._failing(exc)
            return False
        dropped.extend(cap_seqs)
        if cap_drops is not None:
            self._log_drop("cap", *cap_drops)
        return True

    def _snapshot(self) -> tuple[Any, ...]:
        return (self._batches, self._samples, self._bytes, self._oldest_ms,
                {r: list(n) for r, n in self.dropped.items()})

    def _restore(self, snap: tuple[Any, ...]) -> None:
        self._batches, self._samples, self._bytes, self._oldest_ms, self.dropped = snap

    def _failing(self, exc: sqlite3.Error) -> None:
        if not self._db_failing:
            log.error("cannot write the spool %s (%s): keeping new batches in memory, compressed, up to %d samples and "
                      "events, and trying the disk again with every new batch. Beyond that the oldest are dropped "
                      "(roomwatch_agent_spool_dropped_total{reason=\"unwritable\"}); a restart loses what is only in "
                      "memory. Free space on the spool's filesystem.", self.path, exc, self._hold.max_records)
            self._db_failing = True

    def _save_meta(self) -> None:
        rows = [("last_seq", self.last_seq)]
        for reason, (samples, events) in self.dropped.items():
            rows += [(_meta_key("samples", reason), samples), (_meta_key("events", reason), events)]
        self.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                              "excluded.value", rows)

    def _count_drop(self, reason: str, samples: int, events: int) -> None:
        self.dropped[reason][0] += samples
        self.dropped[reason][1] += events

    @property
    def dropped_samples(self) -> int:
        """Samples dropped because the spool (or its fallback in RAM) was full.

        What roomwatch_agent_push_dropped_samples_total counts.
        """
        return self.dropped["cap"][0] + self.dropped["unwritable"][0]

    @property
    def dropped_events(self) -> int:
        """Events dropped because the spool (or its fallback in RAM) was full."""
        return self.dropped["cap"][1] + self.dropped["unwritable"][1]

    # -- reading, in delivery order ------------------------------------------------------
    def _rows(self, where: str, order: str, params: tuple[Any, ...], limit: int) -> list[Entry]:
        """Stored entries in delivery order, less those delivered whose deletion the disk refused."""
        if not self._batches:
            return []
        rows = self.conn.execute(f"SELECT seq, body, n_samples, n_events, oldest_ms, newest_ms, priority FROM batches "
                                 f"WHERE {where} ORDER BY {order} LIMIT ?", (*params, limit + len(self._undeleted)))
        return [e for e in (Entry(*row) for row in rows) if e.seq not in self._undeleted]

    def event_entries(self, limit: int) -> list[Entry]:
        """Batches carrying events (stored and held): notices first, then by seq."""
        held = self._hold.entries
        events = self._rows("n_events > 0", "priority DESC, seq", (), limit) + [e for e in held if e.n_events]
        events.sort(key=lambda e: (-e.priority, e.seq))
        return events[:limit]

    def fresh_entries(self, cutoff_ms: int, limit: int) -> list[Entry]:
        """Batches without events whose newest sample is at or after ``cutoff_ms``, newest first."""
        fresh = (self._rows("n_events = 0 AND newest_ms >= ?", "seq DESC", (cutoff_ms,), limit)
                 + [e for e in self._hold.entries if not e.n_events and e.newest_ms >= cutoff_ms])
        fresh.sort(key=lambda e: -e.seq)
        return fresh[:limit]

    def backlog_entries(self, cutoff_ms: int, limit: int) -> list[Entry]:
        """Batches without events, all older than ``cutoff_ms``, oldest first."""
        backlog = (self._rows("n_events = 0 AND newest_ms < ?", "seq", (cutoff_ms,), limit)
                   + [e for e in self._hold.entries if not e.n_events and e.newest_ms < cutoff_ms])
        backlog.sort(key=lambda e: e.seq)
        return backlog[:limit]

    @staticmethod
    def decode(entry: Entry) -> Batch:
        """The batch of ``entry``; raises :class:`WireError` or ``zlib.error`` for a damaged body."""
        return decode_body(entry.body)

    # -- removing -----------------------------------------------------------------------
    def remove(self, seq: int) -> None:
        """The collector has ``seq``: delete it."""
        if self._hold.remove(seq) is None:
            self._delete(seq)

    def drop(self, seq: int, reason: str) -> None:
        """Delete ``seq`` undelivered, counted under ``reason`` (one of :data:`DROP_REASONS`)."""
        held = self._hold.remove(seq)
        if held is not None:
            self._count_drop(reason, held.n_samples, held.n_events)
            return
        self._delete(seq, reason=reason)

    def _delete(self, seq: int, reason: str | None = None) -> None:
        """Delete ``seq``; with a ``reason`` it was dropped undelivered: count it (persisted with the deletion).

        If the disk refuses the deletion, the batch is treated as gone anyway (never offered again) and
        deleted with the next write that works; a restart before that sends it again, and the collector
        drops it by ``seq``.
        """
        row = self.conn.execute("SELECT n_samples, n_events, size, oldest_ms FROM batches WHERE seq = ?", (seq,)).fetchone()
        if row is None or seq in self._undeleted:
            return
        n_samples, n_events, size, oldest = row
        if reason is not None:
            self._count_drop(reason, n_samples, n_events)
        try:
            if reason is not None:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))
                self._save_meta()
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self._undeleted.add(seq)
            self._failing(exc)
        self._forget(n_samples, size, oldest)

    def _forget(self, n_samples: int, size: int, oldest: int) -> None:
        self._batches -= 1
        self._samples -= n_samples
        self._bytes -= size
        if not self._batches:
            self._oldest_ms = None
        elif oldest == self._oldest_ms:
            self._oldest_ms = self.conn.execute("SELECT MIN(oldest_ms) FROM batches").fetchone()[0]

    def depth(self) -> int:
        """Batches waiting (safe to call from another thread: a cached count)."""
        return self._batches + len(self._hold)

    # -- cap ---------------------------------------------------------------------------
    def _over_cap(self) -> bool:
        return self._bytes > self.max_bytes or (self.max_samples is not None and self._samples > self.max_samples)

    def _enforce_cap(self, newest_seq: int, seqs: list[int]) -> tuple[int, int, int | None]:
        """Drop per the documented policy until under ``max_bytes`` (inside the caller's transaction).

        Returns (samples, events, oldest ts) dropped, for the caller to log once the transaction commits;
        the seqs of the batches deleted are added to ``seqs``."""
        dropped_s = dropped_e = 0
        first_ts: int | None = None
        while self._over_cap() and self._batches > 1:
            row = self.conn.execute("SELECT seq, n_samples, n_events, size, oldest_ms, body FROM batches "
                                    "WHERE n_events = 0 AND seq != ? ORDER BY seq LIMIT 1", (newest_seq,)).fetchone()
            if row is None:
                row = self.conn.execute("SELECT seq, n_samples, n_events, size, oldest_ms, body FROM batches "
                                        "WHERE n_samples > 0 AND seq != ? ORDER BY seq LIMIT 1", (newest_seq,)).fetchone()
                if row is not None:  # only event batches left: keep their events, shed their samples
                    seq, n_samples, _n_events, size, oldest, body = row
                    batch = decode_body(body)
                    dropped_s += n_samples
                    first_ts = oldest if first_ts is None else min(first_ts, oldest)
                    batch.samples = []
                    new_body = encode_body(batch)
                    new_oldest, _ = span(batch)
                    self.conn.execute("UPDATE batches SET n_samples = 0, size = ?, body = ?, oldest_ms = ? WHERE seq = ?",
                                      (len(new_body), new_body, new_oldest, seq))
                    self._samples -= n_samples
                    self._bytes += len(new_body) - size
                    continue
                row = self.conn.execute("SELECT seq, n_samples, n_events, size, oldest_ms, body FROM batches "
                                        "WHERE seq != ? ORDER BY seq LIMIT 1", (newest_seq,)).fetchone()
                if row is None:
                    break
            seq, n_samples, n_events, size, oldest, _body = row
            self.conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            seqs.append(seq)
            dropped_s += n_samples
            dropped_e += n_events
            first_ts = oldest if first_ts is None else min(first_ts, oldest)
            self._forget(n_samples, size, oldest)
        self._count_drop("cap", dropped_s, dropped_e)
        return dropped_s, dropped_e, first_ts

    def _log_drop(self, reason: str, samples: int, events: int, first_ts: int | None) -> None:
        """Log drops at once, then at most once a minute per reason with what was dropped meanwhile."""
        if not samples and not events:
            return
        win = self._drop_windows.setdefault(reason, [0, 0, 0.0])
        win[0] += samples
        win[1] += events
        now = self.monotonic()
        if win[2] and now - win[2] < _DROP_LOG_EVERY:
            return
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first_ts / 1000)) if first_ts else "?"
        if reason == "cap":
            log.warning("spool full (%d bytes, cap %d): dropped the oldest %d samples and %d events (data from %s on); "
                        "events are kept until only events are left", self._bytes, self.max_bytes, win[0], win[1], since)
        else:
            log.error("spool %s still not writable and its fallback in memory full (%d samples and events): dropped "
                      "the oldest %d samples and %d events (data from %s on); events are kept until only events are "
                      "left", self.path, self._hold.max_records, win[0], win[1], since)
        self._drop_windows[reason] = [0, 0, now]

    # -- reporting ----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Cached figures for metrics and /healthz (safe from another thread)."""
        oldest = self._oldest_ms
        held_oldest = self._hold.oldest_ms()
        if held_oldest is not None:
            oldest = held_oldest if oldest is None else min(oldest, held_oldest)
        return {
            "batches": self.depth(),
            "samples": self._samples + self._hold.samples,
            "bytes": self._bytes,
            "oldest_age_seconds": None if oldest is None else max(0.0, self.clock() - oldest / 1000),
            "dropped": {r: {"samples": n[0], "events": n[1]} for r, n in self.dropped.items()},
            "persistent": self.path != ":memory:",
        }

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` result (``"ok"`` when sound)."""
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        if getattr(self, "conn", None) is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
