"""Store-and-forward: the agent's on-disk outbox (SQLite, WAL).

Every sealed batch is committed here *before* the first push attempt and
deleted only after the collector answered 200, so a collector outage, a lossy
link, an agent crash or a power cut loses nothing that was sealed.

Durability: the database runs in WAL mode with ``synchronous=FULL``; a
:meth:`Spool.put` returns only after SQLite has fsync'ed the WAL, so a batch the
agent tries to push survives a power cut (given a disk that honours fsync).
An :meth:`Spool.ack` is a second commit: if it is lost, the batch is pushed
again after restart and the collector drops it by ``seq``.

Order of delivery (:meth:`Spool.next_batches`):

0. batches carrying a ``fallback_notified`` notice (``priority`` 1), oldest first: the
   collector must know what the agent already told people before the backlog that raises
   the same alert arrives (roomwatch/notice.py);
1. batches carrying events (door opened, on battery, leak), oldest first, so
   transitions reach the collector in the order they happened. The pusher seals
   events in batches of their own, with only the samples of the devices they are
   about (the new value goes with its event); an event batch whose samples are
   old (after an outage) waits for the backlog's tokens and pays for its samples,
   the events after it waiting with it;
2. *fresh* batches (newest sample younger than ``fresh_window``), newest first:
   the room's present state beats its past;
3. the *backlog*, oldest first, paced at ``backlog_rate`` samples/s (a token
   bucket) so that draining hours of backlog over a slow county link never
   starves fresh data or floods the collector.

Size cap (``max_bytes``, counted as stored bytes, compressed): when a new batch
pushes the spool past it, the oldest batches *without* events are dropped
first; when only event batches are left, their samples are stripped (events
kept); events themselves go last. The newest batch is never dropped.

A batch leaves without a 200 only for a reason in :data:`DROP_REASONS`; every
such drop is counted per reason and kind (``dropped``, persisted in ``meta``)
and logged.

Disk full or I/O error: a batch SQLite refuses is held in RAM, compressed and
bounded (:mod:`roomwatch.agent.spool_hold`; at the bound the same policy as the cap,
counted as ``unwritable``); every later :meth:`Spool.put` tries the disk again
and moves what is held onto it in one transaction. A deletion the disk refuses
is remembered (the batch is never offered again) and done with that write.

``seq`` stays increasing across restarts: the highest seq ever stored is kept
in the ``meta`` table and :class:`roomwatch.agent.push.Pusher` starts above it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roomwatch.agent.spool_hold import Entry, Hold, decode_body, encode_body, span
from roomwatch.core import vocabulary as v
from roomwatch.core.storeversion import apply_migrations, too_new_message
from roomwatch.core.wire import Batch, SampleRecord, WireError

if TYPE_CHECKING:
    from roomwatch.agent.config import AgentConfig

__all__ = ["DROP_REASONS", "Spool", "SpoolError", "open_outbox", "spool_samples"]

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


class Spool:
    """SQLite outbox implementing :class:`roomwatch.agent.outbox.Outbox`; ``path=":memory:"`` keeps it in RAM."""

    def __init__(self, path: str, agent_id: str = "", max_bytes: int = 100 * 2**20, backlog_rate: float = 0.0,
                 fresh_window: float = 30.0, max_samples: int | None = None, fallback_max_records: int = 100_000):
        self.path = path
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        self.backlog_rate = backlog_rate
        self.fresh_window_ms = int(fresh_window * 1000)
        self.dropped: dict[str, list[int]] = {r: [0, 0] for r in DROP_REASONS}  # reason → [samples, events]
        self.last_seq = 0
        self._lock_fd: int | None = None
        self._batches = 0
        self._samples = 0
        self._bytes = 0
        self._oldest_ms: int | None = None
        self._tokens = max(backlog_rate, 1.0)
        self._tokens_at = time.monotonic()
        self._offered_backlog: dict[int, int] = {}
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
        aside = f"{self.path}.corrupt-{int(time.time())}"
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
                aside += f"-{int(time.time())}"
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
            return decode_body(row[0]).agent
        except (zlib.error, WireError, ValueError):
            return None

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
        if self._batches:
            age = time.time() - self._oldest_ms / 1000
            log.info("spool %s holds %d batches (%d samples, oldest %.0fs old) from before the restart; sending them",
                     self.path, self._batches, self._samples, age)

    def _recount(self) -> None:
        row = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(n_samples), 0), COALESCE(SUM(size), 0), MIN(oldest_ms) "
                                "FROM batches").fetchone()
        self._batches, self._samples, self._bytes, self._oldest_ms = row

    # -- Outbox protocol ---------------------------------------------------------
    def put(self, batch: Batch) -> None:
        """Commit ``batch`` (fsync'ed) before it is pushed; enforce the size cap in the same transaction.

        When SQLite cannot write, the batch is held in RAM (bounded, see :mod:`roomwatch.agent.spool_hold`) and
        every later ``put`` tries the disk again, moving what is held onto it once it works.
        """
        entry = Entry.of(batch)
        self.last_seq = max(self.last_seq, batch.seq)
        if not self._write([entry]):
            dropped_s, dropped_e, first_ts = self._hold.add(entry)
            if dropped_s or dropped_e:
                self._count_drop("unwritable", dropped_s, dropped_e)
                self._log_drop("unwritable", dropped_s, dropped_e, first_ts)
            return
        if self._hold or self._undeleted:
            # The new batch alone first: while the disk is full, retrying costs one small write, not all that is held.
            moved, samples = len(self._hold), self._hold.samples
            if not self._write(list(self._hold.entries), recover=True):
                return
            self._hold.clear()
            self._undeleted.clear()
            log.warning("spool %s is writable again: moved %d batches (%d samples) from memory to disk",
                        self.path, moved, samples)
        elif self._db_failing:
            log.warning("spool %s is writable again", self.path)
        self._db_failing = False

    def _write(self, entries: list[Entry], recover: bool = False) -> bool:
        """Commit ``entries`` (with ``recover``: also the deletions the disk refused); False if SQLite fails."""
        before = self._snapshot()
        cap_drops: tuple[int, int, int | None] | None = None
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
                cap_drops = self._enforce_cap(max((e.seq for e in entries), default=self.last_seq))
            self._save_meta()
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # after an I/O error SQLite may have rolled back already
                self.conn.execute("ROLLBACK")
            self._restore(before)
            self._failing(exc)
            return False
        if cap_drops is not None:
            self._log_drop("cap", *cap_drops)
        return True

    def _snapshot(self) -> tuple[Any, ...]:
        return (self._batches, self._samples, self._bytes, self._oldest_ms,
                {r: list(n) for r, n in self.dropped.items()}, dict(self._offered_backlog))

    def _restore(self, snap: tuple[Any, ...]) -> None:
        self._batches, self._samples, self._bytes, self._oldest_ms, self.dropped, self._offered_backlog = snap

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

    def next_batches(self, limit: int) -> list[Batch]:
        """Up to ``limit`` batches to send now: events, then fresh, then paced backlog (see module doc)."""
        out: list[Batch] = []
        for entry, paced in self._select(limit)[0]:
            batch = self._decode(entry)
            if batch is None:
                continue
            if paced:
                self._offered_backlog[entry.seq] = entry.n_samples
            out.append(batch)
        return out

    def _rows(self, where: str, order: str, params: tuple[Any, ...], limit: int) -> list[Entry]:
        """Stored entries in delivery order, less those delivered whose deletion the disk refused."""
        if not self._batches:
            return []
        rows = self.conn.execute(f"SELECT seq, body, n_samples, n_events, oldest_ms, newest_ms, priority FROM batches "
                                 f"WHERE {where} ORDER BY {order} LIMIT ?", (*params, limit + len(self._undeleted)))
        return [e for e in (Entry(*row) for row in rows) if e.seq not in self._undeleted]

    def _select(self, limit: int) -> tuple[list[tuple[Entry, bool]], float]:
        """The next ``limit`` entries to send, each with "paced" (it pays backlog tokens), and the tokens
        the first entry that pacing holds back needs (0 when none is held back)."""
        picked: list[tuple[Entry, bool]] = []
        if limit <= 0:
            return picked, 0.0
        cutoff = int(time.time() * 1000) - self.fresh_window_ms
        held = self._hold.entries
        events = self._rows("n_events > 0", "priority DESC, seq", (), limit) + [e for e in held if e.n_events]
        events.sort(key=lambda e: (-e.priority, e.seq))
        budget: float | None = None
        blocked = 0.0
        for e in events[:limit]:
            if e.n_samples and e.newest_ms < cutoff and not e.priority:
                # An event batch with old samples (sealed by an agent before events got batches of their own):
                # its samples pay like backlog, or they would overtake fresher data unpaced. Events after it
                # wait with it, to keep their order (for at most a second's worth of tokens).
                need = min(e.n_samples, self._burst())
                budget = self._budget() if budget is None else budget
                if budget < need:
                    blocked = need
                    break
                budget -= e.n_samples
                picked.append((e, True))
            else:
                picked.append((e, False))
        if len(picked) < limit:
            fresh = (self._rows("n_events = 0 AND newest_ms >= ?", "seq DESC", (cutoff,), limit)
                     + [e for e in held if not e.n_events and e.newest_ms >= cutoff])
            fresh.sort(key=lambda e: -e.seq)
            picked += [(e, False) for e in fresh[:limit - len(picked)]]
        if len(picked) < limit and not blocked:
            backlog = (self._rows("n_events = 0 AND newest_ms < ?", "seq", (cutoff,), limit)
                       + [e for e in held if not e.n_events and e.newest_ms < cutoff])
            backlog.sort(key=lambda e: e.seq)
            for e in backlog[:limit - len(picked)]:
                need = min(e.n_samples, self._burst())
                budget = self._budget() if budget is None else budget
                if budget < need:
                    return picked, need
                budget -= e.n_samples
                picked.append((e, True))
        return picked, blocked

    def _decode(self, entry: Entry) -> Batch | None:
        try:
            batch = decode_body(entry.body)
        except (zlib.error, WireError) as exc:
            log.error("spooled batch seq=%d is unreadable (%s): dropping it", entry.seq, exc)
            self.drop(entry.seq, "unreadable")
            return None
        if self.agent_id and batch.agent != self.agent_id:
            # Cannot happen with an owned spool file (_bind_owner); never sent under another agent's id.
            log.error("spooled batch seq=%d was written by agent %r, not %r: dropping it", entry.seq, batch.agent,
                      self.agent_id)
            self.drop(entry.seq, "unreadable")
            return None
        return batch

    def ack(self, seq: int) -> None:
        """The collector has ``seq``: forget it (and pay the backlog pacing for it)."""
        n = self._offered_backlog.pop(seq, None)
        if n is not None and self.backlog_rate > 0:
            self._refill()
            self._tokens -= n
        if self._hold.remove(seq) is None:
            self._delete(seq)

    def drop(self, seq: int, reason: str) -> None:
        """Forget ``seq`` undelivered, counted under ``reason`` (one of :data:`DROP_REASONS`)."""
        self._offered_backlog.pop(seq, None)
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

    # -- pacing ----------------------------------------------------------------------
    def _burst(self) -> float:
        return max(self.backlog_rate, 1.0)  # at most one second's worth at once; a bigger batch waits for a full bucket

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst(), self._tokens + (now - self._tokens_at) * self.backlog_rate)
        self._tokens_at = now

    def _budget(self) -> float:
        """Backlog samples that may go now (a token bucket; the bucket may go into debt for one big batch)."""
        if self.backlog_rate <= 0:
            return float("inf")
        self._refill()
        return self._tokens

    def ready_in(self) -> float:
        """Seconds until :meth:`next_batches` has something to send (0 now, ``inf`` when empty)."""
        if not self.depth():
            return float("inf")
        picked, need = self._select(1)
        if picked:
            return 0.0
        if not need:
            return float("inf")  # only batches delivered whose deletion waits for the disk
        return max(0.0, (need - self._budget()) / self.backlog_rate)

    # -- cap ---------------------------------------------------------------------------
    def _over_cap(self) -> bool:
        return self._bytes > self.max_bytes or (self.max_samples is not None and self._samples > self.max_samples)

    def _enforce_cap(self, newest_seq: int) -> tuple[int, int, int | None]:
        """Drop per the documented policy until under ``max_bytes`` (inside the caller's transaction).

        Returns (samples, events, oldest ts) dropped, for the caller to log once the transaction commits."""
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
            self._offered_backlog.pop(seq, None)
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
        now = time.monotonic()
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
            "oldest_age_seconds": None if oldest is None else max(0.0, time.time() - oldest / 1000),
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

    def __repr__(self) -> str:
        return f"Spool({self.path!r}, {json.dumps(self.stats(), default=str)})"


def open_outbox(config: AgentConfig) -> Spool:
    """The agent's outbox per ``agent.spool``: on disk, or in memory for ``spool: null``.

    A *defaulted* spool path whose directory is missing (no systemd ``StateDirectory=``)
    falls back to memory with a warning; an explicit ``agent.spool`` that cannot be
    used raises :class:`SpoolError` (the agent refuses to start rather than lose data silently).
    """
    a, c = config.agent, config.collector
    assert c is not None
    opts: dict[str, Any] = {"agent_id": a.id, "max_bytes": a.spool_max_bytes, "backlog_rate": c.backlog_rate,
                            # while the disk refuses writes: the same RAM bound as a spool-less agent's queue
                            "fallback_max_records": c.queue_max_samples,
                            # "fresh" = newer than three pushes: the room's present state, sent before any backlog
                            "fresh_window": max(3 * c.push_interval, 5.0)}
    if a.spool is None:
        return Spool(":memory:", max_samples=c.queue_max_samples, **opts)
    try:
        return Spool(a.spool, **opts)
    except SpoolError as exc:
        if "spool" in a.model_fields_set:
            raise
        log.warning("%s: keeping unsent batches in memory only (a restart loses them). Under systemd, "
                    "StateDirectory=roomwatch provides the directory.", exc)
        return Spool(":memory:", max_samples=c.queue_max_samples, **opts)


def spool_samples(stats: dict[str, Any], labels: dict[str, str], now_ms: int) -> list[SampleRecord]:
    """The spool's depth, age and drops as agent self-metrics."""
    out = [
        SampleRecord(v.AGENT_SPOOL_BATCHES, labels, float(stats["batches"]), now_ms),
        SampleRecord(v.AGENT_SPOOL_SAMPLES, labels, float(stats["samples"]), now_ms),
        SampleRecord(v.AGENT_SPOOL_BYTES, labels, float(stats["bytes"]), now_ms),
    ]
    # Every reason and kind from the start, 0 included: rate() and increase() need the series before the first drop.
    for reason in DROP_REASONS:
        for kind in ("samples", "events"):
            out.append(SampleRecord(v.AGENT_SPOOL_DROPPED, {**labels, "kind": kind, "reason": reason},
                                    float(stats["dropped"][reason][kind]), now_ms))
    if stats["oldest_age_seconds"] is not None:
        out.append(SampleRecord(v.AGENT_SPOOL_OLDEST_AGE, labels, float(stats["oldest_age_seconds"]), now_ms))
    return out
