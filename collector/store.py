"""The durable half of ingest: push dedup that survives restarts, stored history, the remote-write log.

One writer thread owns the SQLite connection and commits in groups: every push
waiting at that moment goes into one transaction (one fsync), so ingest stays
fast with many agents while each 200 is still sent only after *its* batch's
dedup record and history rows are committed (``synchronous=FULL``: durable
against power loss). Readers (history API, remote write) use their own
connections; WAL lets them read while the writer writes.

Tables (component ``ingest`` in :func:`roomwatch.core.sqlite.ensure_schema`):

* ``ingest_seq_ranges(agent, lo, hi)`` — the :class:`~roomwatch.collector.seqs.SeqTracker`
  ranges of every agent, rewritten incrementally in the batch's transaction;
* ``ingest_agents(agent, batches, samples, events)`` — what was accepted, ever
  (a ledger: a batch counted twice would show here);
* ``history_series(id, metric, labels)`` + ``history_samples(series, ts, value)``
  (``WITHOUT ROWID``, primary key (series, ts): a sample stored once even if a
  batch came twice after its dedup range was forgotten);
* ``rw_log(id, series, ts, value)`` + ``rw_cursor(name, last_id)`` — samples
  waiting for remote-write endpoints, in arrival order (only when configured;
  ``AUTOINCREMENT`` so an id is never reused after the log was emptied).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roomwatch.collector.seqs import SeqTracker
from roomwatch.core.interning import label_pairs, string
from roomwatch.core.sqlite import ensure_schema, open_db
from roomwatch.core.wire import Batch

__all__ = ["IngestStore", "StoreError"]

log = logging.getLogger("roomwatch.collector.store")

MIGRATIONS = [
    """
CREATE TABLE ingest_seq_ranges (agent TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (agent, lo));
CREATE TABLE ingest_agents (agent TEXT PRIMARY KEY, batches INTEGER NOT NULL DEFAULT 0,
                            samples INTEGER NOT NULL DEFAULT 0, events INTEGER NOT NULL DEFAULT 0);
CREATE TABLE history_series (id INTEGER PRIMARY KEY, metric TEXT NOT NULL, labels TEXT NOT NULL, UNIQUE (metric, labels));
CREATE TABLE history_samples (series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
                              PRIMARY KEY (series, ts)) WITHOUT ROWID;
CREATE TABLE rw_log (id INTEGER PRIMARY KEY AUTOINCREMENT, series INTEGER NOT NULL, ts INTEGER NOT NULL,
                     value REAL NOT NULL);
CREATE TABLE rw_cursor (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL)
""",
]

_GROUP_MAX = 256  # pushes per transaction: bounds the latency one commit adds to the first push in it
#: Errors of a batch's own data (text that is not UTF-8, a number SQLite cannot hold): retrying cannot help.
_BAD_DATA = (UnicodeError, ValueError, OverflowError, sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)
_SIDS_MAX = 500_000  # series ids cached in memory (about 100 MB at most); beyond, looked up in the table again


class StoreError(Exception):
    """The store could not commit; the push gets a 503 and the agent retries.

    ``permanent``: this batch itself cannot be stored (its own rows failed inside the group), so
    retrying it cannot help: the push gets a 400 and the agent drops it, counted and logged.
    """

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(slots=True)
class _Job:
    agent: str
    batch: Batch
    skew: int
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class _Task:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop | None


@dataclass(slots=True)
class _Stats:
    commits: int = 0
    batches: int = 0
    samples: int = 0
    duplicates: int = 0
    failures: int = 0
    commit_seconds: float = 0.0
    largest_group: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def labels_key(labels: dict[str, str]) -> str:
    """The canonical text of a label set (sorted JSON), as stored in ``history_series.labels``."""
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class IngestStore:
    """Dedup + history + remote-write log in the collector's SQLite file."""

    def __init__(self, path: str, history: bool = True, exclude: list[str] | None = None,
                 remote_write: list[str] | None = None):
        self.path = path
        self.history = history
        self.exclude = list(exclude or [])
        self.remote_write = list(remote_write or [])
        self.stats = _Stats()
        self._conn = open_db(path, check_same_thread=False)
        if path != ":memory:":
            with contextlib.suppress(OSError):  # history of a government room is nobody else's business
                os.chmod(path, 0o600)
        ensure_schema(self._conn, "ingest", MIGRATIONS)
        self._setup_remote_write()
        stored: dict[str, list[tuple[int, int]]] = {}
        for agent, lo, hi in self._conn.execute("SELECT agent, lo, hi FROM ingest_seq_ranges ORDER BY agent, lo"):
            stored.setdefault(agent, []).append((lo, hi))
        self._ranges = {agent: SeqTracker(ranges=r) for agent, r in stored.items()}
        # (metric, label pairs in arrival order) → history_series.id. Agents send labels in a stable
        # order, so the common path is one dict lookup; the canonical text (sorted JSON) is built only
        # for a series not seen since start (bench/hotpath.py: it was half of the writer's time).
        self._sids: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._excluded: dict[str, bool] = {}
        self.series_pruned = 0  # history_series rows deleted because no sample of them was left
        self._queue: queue.SimpleQueue[_Job | _Task | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ingest-store", daemon=True)
        self._thread.start()

    # -- startup ------------------------------------------------------------------
    def _setup_remote_write(self) -> None:
        """One cursor per configured endpoint (a new one starts at the end); forget removed endpoints."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        for name in self.remote_write:
            conn.execute("INSERT OR IGNORE INTO rw_cursor (name, last_id) VALUES (?, (SELECT COALESCE(MAX(seq), 0) "
                         "FROM sqlite_sequence WHERE name = 'rw_log'))", (name,))
        marks = ",".join("?" * len(self.remote_write))
        conn.execute(f"DELETE FROM rw_cursor WHERE name NOT IN ({marks})", self.remote_write)
        conn.execute("DELETE FROM rw_log WHERE id <= COALESCE((SELECT MIN(last_id) FROM rw_cursor), "
                     "(SELECT MAX(id) FROM rw_log))")
        conn.execute("COMMIT")

    def seq_ranges(self) -> dict[str, list[tuple[int, int]]]:
        """Committed seq ranges per agent (to seed :class:`~roomwatch.collector.agents.AgentState` at start)."""
        return {agent: t.ranges() for agent, t in self._ranges.items()}

    def reader(self) -> sqlite3.Connection:
        """A new read connection (use from one thread)."""
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA query_only=ON")
        return conn

    # -- the async side --------------------------------------------------------------
    async def commit(self, agent_id: str, batch: Batch, skew_ms: int) -> bool:
        """Commit ``batch``; True if new, False if ``seq`` was already committed. Raises :class:`StoreError`."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._queue.put(_Job(agent_id, batch, skew_ms, fut, loop))
        return await fut

    async def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` on the writer thread inside its own transaction (maintenance, cursors)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Task(fn, fut, loop))
        return await fut

    def close(self) -> None:
        """Finish queued work and close."""
        self._queue.put(None)
        self._thread.join(30)
        self._conn.close()

    # -- the writer thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, _Task):
                self._run_task(item)
                continue
            group = [item]
            stop = False
            while len(group) < _GROUP_MAX:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt, _Task):
                    self._commit_group(group)
                    group = []
                    self._run_task(nxt)
                    continue
                group.append(nxt)
            if group:
                self._commit_group(group)
            if stop:
                return

    def _run_task(self, task: _Task) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = task.fn(self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            if task.future is not None and task.loop is not None:
                task.loop.call_soon_threadsafe(_set_exception, task.future, exc)
            else:
                log.exception("store maintenance failed")
            return
        if task.future is not None and task.loop is not None:
            task.loop.call_soon_threadsafe(_set_result, task.future, result)

    def _is_excluded(self, metric: str) -> bool:
        hit = self._excluded.get(metric)
        if hit is None:
            hit = self._excluded[metric] = any(fnmatch.fnmatchcase(metric, p) for p in self.exclude)
        return hit

    def _series_id(self, metric: str, labels: dict[str, str], added: list[Any]) -> int:
        key = (metric, tuple(labels.items()))
        sid = self._sids.get(key)
        if sid is None:
            canon = (metric, labels_key(labels))
            row = self._conn.execute("SELECT id FROM history_series WHERE metric = ? AND labels = ?", canon).fetchone()
            if row is None:
                row = (self._conn.execute("INSERT INTO history_series (metric, labels) VALUES (?, ?)", canon).lastrowid,)
            key = (string(metric), label_pairs(labels))  # shared strings: this key lives as long as the process
            if len(self._sids) >= _SIDS_MAX:  # a cache: past its bound, start again from the table
                self._sids.clear()
            sid = self._sids[key] = int(row[0] or 0)
            added.append(key)  # forgotten again if this transaction rolls back (the row may be gone)
        return sid

    def _commit_group(self, group: list[_Job]) -> None:
        """Commit every push of ``group`` in one transaction, each inside its own savepoint.

        A push whose rows fail (a value SQLite refuses, a constraint) is rolled back to its savepoint
        and answered with its own error; the others commit. Only a failure of the transaction itself
        (disk full, I/O error at COMMIT) fails them all (503, every agent retries).
        """
        started = time.perf_counter()
        results: list[bool | BaseException] = []
        touched: dict[str, list[tuple[int, int]]] = {}  # agent → ranges before this group (to persist / roll back)
        new_series: list[Any] = []
        ledger: dict[str, list[int]] = {}
        conn = self._conn
        want_rows = self.history or bool(self.remote_write)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for job in group:
                    tracker = self._ranges.setdefault(job.agent, SeqTracker())
                    if job.batch.seq in tracker:
                        results.append(False)
                        continue
                    if want_rows:
                        mark = len(new_series)
                        conn.execute("SAVEPOINT push")
                        try:
                            self._write_rows(job, new_series)
                        except Exception as exc:  # this push only: its rows go, the group goes on
                            conn.execute("ROLLBACK TO push")
                            conn.execute("RELEASE push")
                            for key in new_series[mark:]:
                                self._sids.pop(key, None)
                            del new_series[mark:]
                            # Data SQLite cannot take will never go in: refused (400). Anything else (disk
                            # full, I/O): this push is retried (503), like a failed commit.
                            permanent = isinstance(exc, _BAD_DATA)
                            log.error("store: push seq=%d of agent %s not stored: %s (%s; other pushes go on)",
                                      job.batch.seq, job.agent, exc, "refused" if permanent else "to be retried")
                            results.append(StoreError(f"this batch cannot be stored: {exc}", permanent=permanent))
                            continue
                        conn.execute("RELEASE push")
                    if job.agent not in touched:
                        touched[job.agent] = tracker.ranges()
                    tracker.add(job.batch.seq)
                    results.append(True)
                    led = ledger.setdefault(job.agent, [0, 0, 0])
                    led[0] += 1
                    led[1] += len(job.batch.samples)
                    led[2] += len(job.batch.events)
                for agent, before in touched.items():
                    self._persist_ranges(agent, before, self._ranges[agent].ranges())
                conn.executemany(
                    "INSERT INTO ingest_agents (agent, batches, samples, events) VALUES (?, ?, ?, ?) ON CONFLICT(agent) "
                    "DO UPDATE SET batches = batches + excluded.batches, samples = samples + excluded.samples, "
                    "events = events + excluded.events", [(a, *n) for a, n in ledger.items()])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            for agent, before in touched.items():  # memory must match the rolled-back database
                self._ranges[agent] = SeqTracker(ranges=before)
            for key in new_series:
                self._sids.pop(key, None)
            self.stats.failures += 1
            log.error("store commit of %d pushes failed: %s (agents will retry)", len(group), exc)
            err = StoreError(f"storage error: {exc}")
            for job in group:
                job.loop.call_soon_threadsafe(_set_exception, job.future, err)
            return
        st = self.stats
        st.commits += 1
        st.commit_seconds += time.perf_counter() - started
        st.largest_group = max(st.largest_group, len(group))
        for job, fresh in zip(group, results, strict=True):
            if isinstance(fresh, BaseException):
                st.failures += 1
                job.loop.call_soon_threadsafe(_set_exception, job.future, fresh)
                continue
            if fresh:
                st.batches += 1
                st.samples += len(job.batch.samples)
            else:
                st.duplicates += 1
            job.loop.call_soon_threadsafe(_set_result, job.future, fresh)

    def _write_rows(self, job: _Job, new_series: list[Any]) -> None:
        hist: list[tuple[int, int, float]] = []
        rw: list[tuple[int, int, float]] = []
        agent, skew = job.agent, job.skew
        history, remote = self.history, bool(self.remote_write)
        excluded, sids = self._excluded, self._sids
        for s in job.batch.samples:
            metric = s.metric
            hit = excluded.get(metric)
            keep = history and not (self._is_excluded(metric) if hit is None else hit)
            if not keep and not remote:
                continue
            labels = s.labels if s.labels.get("agent") == agent else {**s.labels, "agent": agent}
            sid = sids.get((metric, tuple(labels.items())))
            if sid is None:
                sid = self._series_id(metric, labels, new_series)
            row = (sid, s.ts + skew, s.value)
            if keep:
                hist.append(row)
            if remote:
                rw.append(row)
        if hist:
            self._conn.executemany("INSERT OR IGNORE INTO history_samples (series, ts, value) VALUES (?, ?, ?)", hist)
        if rw:
            self._conn.executemany("INSERT INTO rw_log (series, ts, value) VALUES (?, ?, ?)", rw)

    def _persist_ranges(self, agent: str, before: list[tuple[int, int]], after: list[tuple[int, int]]) -> None:
        old, new = set(before), set(after)
        gone, added = old - new, new - old
        if gone:
            self._conn.executemany("DELETE FROM ingest_seq_ranges WHERE agent = ? AND lo = ?", [(agent, lo) for lo, _ in gone])
        if added:
            self._conn.executemany("INSERT OR REPLACE INTO ingest_seq_ranges (agent, lo, hi) VALUES (?, ?, ?)",
                                   [(agent, lo, hi) for lo, hi in added])

    # -- maintenance -------------------------------------------------------------------
    async def prune_history(self, retention_seconds: float) -> int:
        """Delete history older than the retention window; returns rows deleted."""
        cutoff = int((time.time() - retention_seconds) * 1000)

        def prune(conn: sqlite3.Connection) -> int:
            gone = 0
            empty: list[int] = []
            # per series along the primary key: no full scan, no extra index to maintain
            for (sid,) in conn.execute("SELECT id FROM history_series").fetchall():
                gone += conn.execute("DELETE FROM history_samples WHERE series = ? AND ts < ?", (sid, cutoff)).rowcount
                if conn.execute("SELECT 1 FROM history_samples WHERE series = ? LIMIT 1", (sid,)).fetchone() is None:
                    empty.append(sid)
            if empty:
                # A series with no sample left (a label value that came once, a device long gone) goes too,
                # unless remote write still has samples of it queued.
                queued = {row[0] for row in conn.execute("SELECT DISTINCT series FROM rw_log")} if self.remote_write \
                    else set()
                doomed = [sid for sid in empty if sid not in queued]
                conn.executemany("DELETE FROM history_series WHERE id = ?", [(sid,) for sid in doomed])
                if doomed:
                    dead = set(doomed)
                    self._sids = {k: sid for k, sid in self._sids.items() if sid not in dead}
                    self.series_pruned += len(doomed)
            return gone

        return int(await self.run(prune))

    def ledger(self, agent: str) -> tuple[int, int, int]:
        """(batches, samples, events) ever accepted from ``agent`` (read on a fresh connection)."""
        conn = self.reader()
        try:
            row = conn.execute("SELECT batches, samples, events FROM ingest_agents WHERE agent = ?", (agent,)).fetchone()
        finally:
            conn.close()
        return (row[0], row[1], row[2]) if row else (0, 0, 0)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
