"""Wires the durable parts into a collector: the ingest store, history pruning, remote write.

``roomwatch.collector.main`` calls :class:`Durable` once after building the
:class:`~roomwatch.collector.core.Collector` and before building the HTTP app
(whose ``/api/v1/history`` reads the store set up here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from roomwatch.collector.core import Collector
from roomwatch.collector.remote_write import RemoteWriter, remote_write_families, target_name
from roomwatch.collector.seqs import SeqTracker
from roomwatch.collector.store import IngestStore
from roomwatch.core import vocabulary as v
from roomwatch.core.exposition import Family
from roomwatch.core.plural import plural

__all__ = ["Durable"]

log = logging.getLogger("roomwatch.collector.store")

_PRUNE_EVERY = 600.0  # s; retention is days, so ten minutes late is nothing


class Durable:
    """Owns the :class:`IngestStore` of a collector and its background tasks."""

    def __init__(self, collector: Collector):
        cfg = collector.config
        self.collector = collector
        self.store = IngestStore(cfg.storage, history=cfg.history.enabled, exclude=cfg.history.exclude,
                                 remote_write=[target_name(t) for t in cfg.remote_write])
        seeded = 0
        for agent_id, ranges in self.store.seq_ranges().items():
            state = collector.agents.agents.get(agent_id)
            if state is not None:  # the store stays the authority; this copy only answers replays fast
                state.seqs = SeqTracker(ranges=ranges)
                seeded += 1
        collector.store = self.store
        collector.family_sources.append(self.families)
        self.writers = [RemoteWriter(t, self.store) for t in cfg.remote_write]
        self.pruned = 0
        self._tasks: list[asyncio.Task[Any]] = []
        log.info("storage %s open: push dedup state of %s restored; history %s", cfg.storage, plural(seeded, "agent"),
                 f"kept {cfg.history.retention / 86400:g} days" if cfg.history.enabled else "off")

    async def start(self) -> None:
        if self.collector.config.history.enabled:
            self._tasks.append(asyncio.create_task(self._prune_loop(), name="history-prune"))
        for w in self.writers:
            self._tasks.append(asyncio.create_task(w.run(), name=f"remote-write-{w.name}"))

    async def _prune_loop(self) -> None:
        await asyncio.sleep(5.0)
        while True:
            try:
                self.pruned += await self.store.prune_history(self.collector.config.history.retention)
            except Exception:
                log.exception("history pruning failed")
            await asyncio.sleep(_PRUNE_EVERY)

    def families(self) -> list[Family]:
        st = self.store.stats
        fams = [
            Family(v.COLLECTOR_STORE_COMMITS, v.METRICS[v.COLLECTOR_STORE_COMMITS].help, "counter", [("", float(st.commits))]),
            Family(v.COLLECTOR_STORE_FAILURES, v.METRICS[v.COLLECTOR_STORE_FAILURES].help, "counter",
                   [("", float(st.failures))]),
            Family(v.COLLECTOR_STORE_COMMIT_SECONDS, v.METRICS[v.COLLECTOR_STORE_COMMIT_SECONDS].help, "counter",
                   [("", st.commit_seconds)]),
        ]
        if self.collector.config.history.enabled:
            fams.append(Family(v.COLLECTOR_HISTORY_PRUNED, v.METRICS[v.COLLECTOR_HISTORY_PRUNED].help, "counter",
                               [("", float(self.pruned))]))
        if self.writers:
            fams.extend(remote_write_families(self.writers))
        return fams

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for w in self.writers:
            with contextlib.suppress(Exception):
                await w.close()
        await asyncio.to_thread(self.store.close)
