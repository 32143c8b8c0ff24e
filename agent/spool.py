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
   the same alert arrives (roomwatch/core/notice.py);
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

:class:`Spool` puts two halves together: :mod:`roomwatch.agent.spool_store` (storage:
the SQLite file, the cap, the RAM hold, drop counters) and
:mod:`roomwatch.agent.spool_pacing` (the delivery order and the backlog's token
bucket). Its clock is injectable (wall time for sample ages, monotonic time for pacing).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import zlib
from typing import TYPE_CHECKING, Any

from roomwatch.agent.spool_hold import Entry
from roomwatch.agent.spool_pacing import TokenBucket, select
from roomwatch.agent.spool_store import DROP_REASONS, SpoolError, SpoolStore
from roomwatch.core import vocabulary as v
from roomwatch.core.clock import SYSTEM, Clock
from roomwatch.core.wire import Batch, SampleRecord, WireError

if TYPE_CHECKING:
    from roomwatch.agent.config import AgentConfig

__all__ = ["DROP_REASONS", "Spool", "SpoolError", "open_outbox", "spool_samples"]

log = logging.getLogger("roomwatch.agent.spool")


class Spool:
    """SQLite outbox implementing :class:`roomwatch.agent.outbox.Outbox`; ``path=":memory:"`` keeps it in RAM."""

    def __init__(self, path: str, agent_id: str = "", max_bytes: int = 100 * 2**20, backlog_rate: float = 0.0,
                 fresh_window: float = 30.0, max_samples: int | None = None, fallback_max_records: int = 100_000,
                 clock: Clock = SYSTEM):
        self.path = path
        self.agent_id = agent_id
        self.backlog_rate = backlog_rate
        self.fresh_window_ms = int(fresh_window * 1000)
        self.clock = clock
        self.bucket = TokenBucket(backlog_rate, clock.monotonic)
        self._offered_backlog: dict[int, int] = {}  # seq → samples that pay tokens when the collector has them
        self.store = SpoolStore(path, max_bytes, max_samples, fallback_max_records, clock.time, clock.monotonic,
                                agent_id=agent_id)

    @property
    def conn(self) -> sqlite3.Connection:
        """The spool's SQLite connection (the storage half's)."""
        return self.store.conn

    @property
    def max_bytes(self) -> int:
        """The size cap, in stored (compressed) bytes."""
        return self.store.max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self.store.max_bytes = value

    # -- Outbox protocol ---------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """The highest seq ever stored (persisted): a restarted pusher numbers above it."""
        return self.store.last_seq

    @property
    def dropped(self) -> dict[str, list[int]]:
        """Reason → [samples, events] that left without the collector's 200."""
        return self.store.dropped

    @property
    def dropped_samples(self) -> int:
        """Samples dropped because the spool (or its fallback in RAM) was full.

        What roomwatch_agent_push_dropped_samples_total counts.
        """
        return self.store.dropped["cap"][0] + self.store.dropped["unwritable"][0]

    @property
    def dropped_events(self) -> int:
        """Events dropped because the spool (or its fallback in RAM) was full."""
        return self.store.dropped["cap"][1] + self.store.dropped["unwritable"][1]

    def put(self, batch: Batch) -> None:
        """Commit ``batch`` (fsync'ed) before it is pushed; enforce the size cap in the same transaction.

        When SQLite cannot write, the batch is held in RAM (bounded, see :mod:`roomwatch.agent.spool_hold`) and
        every later ``put`` tries the disk again, moving what is held onto it once it works.
        """
        for seq in self.store.put(batch):
            self._offered_backlog.pop(seq, None)  # dropped by the cap: nothing to pay for

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

    def _select(self, limit: int) -> tuple[list[tuple[Entry, bool]], float]:
        cutoff = int(self.clock.time() * 1000) - self.fresh_window_ms
        return select(self.store, self.bucket, limit, cutoff)

    def _decode(self, entry: Entry) -> Batch | None:
        try:
            batch = self.store.decode(entry)
        except (zlib.error, WireError) as exc:
            log.error("spooled batch seq=%d is unreadable (%s): dropping it", entry.seq, exc)
            self.drop(entry.seq, "unreadable")
            return None
        if self.agent_id and batch.agent != self.agent_id:
            # Cannot happen with an owned spool file (SpoolStore binds it); never sent under another agent's id.
            log.error("spooled batch seq=%d was written by agent %r, not %r: dropping it", entry.seq, batch.agent,
                      self.agent_id)
            self.drop(entry.seq, "unreadable")
            return None
        return batch

    def ack(self, seq: int) -> None:
        """The collector has ``seq``: forget it (and pay the backlog pacing for it)."""
        n = self._offered_backlog.pop(seq, None)
        if n is not None:
            self.bucket.spend(n)
        self.store.remove(seq)

    def drop(self, seq: int, reason: str) -> None:
        """Forget ``seq`` undelivered, counted under ``reason`` (one of :data:`DROP_REASONS`)."""
        self._offered_backlog.pop(seq, None)
        self.store.drop(seq, reason)

    def depth(self) -> int:
        """Batches waiting (safe to call from another thread: a cached count)."""
        return self.store.depth()

    def ready_in(self) -> float:
        """Seconds until :meth:`next_batches` has something to send (0 now, ``inf`` when empty)."""
        if not self.depth():
            return float("inf")
        picked, need = self._select(1)
        if picked:
            return 0.0
        if not need:
            return float("inf")  # only batches delivered whose deletion waits for the disk
        return self.bucket.wait(need)

    # -- reporting ----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Cached figures for metrics and /healthz (safe from another thread)."""
        return self.store.stats()

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` result (``"ok"`` when sound)."""
        return self.store.integrity_check()

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"Spool({self.path!r}, {json.dumps(self.stats(), default=str)})"


def open_outbox(config: AgentConfig, clock: Clock = SYSTEM) -> Spool:
    """The agent's outbox per ``agent.spool``: on disk, or in memory for ``spool: null``.

    A *defaulted* spool path whose directory is missing (no systemd ``StateDirectory=``)
    falls back to memory with a warning; an explicit ``agent.spool`` that cannot be
    used raises :class:`SpoolError` (the agent refuses to start rather than lose data silently).
    """
    a, c = config.agent, config.collector
    assert c is not None
    opts: dict[str, Any] = {"clock": clock, "agent_id": a.id, "max_bytes": a.spool_max_bytes, "backlog_rate": c.backlog_rate,
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
