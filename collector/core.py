"""The collector's state and ingest path, independent of HTTP.

:meth:`Collector.ingest` takes a decoded batch from an authenticated agent,
drops replays by ``seq``, corrects a skewed agent clock, updates current
values and hands what changed to the listeners (the alert engine, history).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from roomwatch import __version__
from roomwatch.collector.admission import Admission
from roomwatch.collector.agents import AgentRegistry, AgentState
from roomwatch.collector.config import CollectorConfig
from roomwatch.collector.series import Series, SeriesStore
from roomwatch.core import vocabulary as v
from roomwatch.core.exposition import Family, render_labels
from roomwatch.core.wire import Batch, EventRecord, SampleRecord

__all__ = ["Collector", "IngestResult", "Listener"]

log = logging.getLogger("roomwatch.collector")

#: Called after each accepted batch with the agent, the series that changed and the events.
Listener = Callable[[AgentState, list[Series], list[EventRecord], Batch], None]



class DurableStore(Protocol):
    """What :meth:`Collector.accept` needs from the store (see :class:`roomwatch.collector.store.IngestStore`)."""

    async def commit(self, agent_id: str, batch: Batch, skew_ms: int) -> bool:
        """Commit the batch's dedup record (and history); False if ``seq`` was already committed."""


_SKEW_TOLERANCE_MS = 5_000  # network delay is milliseconds; beyond this the agent's clock is wrong
#: A sample this far ahead of the collector's clock, after skew correction, has no trustworthy time
#: (the agent's clock was stepped back between taking and sending it). Stored as it is, it would be
#: the series' current value until that time came (a new value only replaces an older one), so it is
#: set to the receive time. Well above the skew tolerance and network delay; a freeze is at most this.
_FUTURE_TOLERANCE_MS = 60_000
PLAUSIBLE_MIN_MS = 946_684_800_000  # 2000-01-01: older stamps come from a clock that was never set
_FUTURE_LOG_EVERY = 600.0  # s between log lines about one agent's future timestamps


@dataclass(slots=True)
class IngestResult:
    accepted: int
    duplicate: bool
    future: int = 0  # samples and events whose time was set to the receive time (too far ahead)
    rejected: dict[str, int] | None = None  # samples not stored, by reason (roomwatch.collector.admission)


class Collector:
    """Holds agents and series; HTTP handlers and the alert engine talk to this."""

    def __init__(self, config: CollectorConfig):
        self.config = config
        self.agents = AgentRegistry(config)
        self.series = SeriesStore(config.series_expire)
        self.admission = Admission(self.series, config.limits.new_series_per_push)
        self.listeners: list[Listener] = []
        #: The durable part of ingest (dedup ranges, history); set by collector.main when storage is open.
        self.store: DurableStore | None = None
        #: Extra metric families for /metrics (alerts, storage, ...): callables returning families.
        self.family_sources: list[Callable[[], list[Family]]] = []
        self.push_codes: Counter[int] = Counter()
        self.samples_total = 0
        self.events_total = 0
        self.started_at = time.time()
        self.ready = False
        self._agent_up: dict[str, bool] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- ingest ------------------------------------------------------------
    async def accept(self, agent: AgentState, batch: Batch, address: str = "", now: float | None = None) -> IngestResult:
        """Durable ingest: with a store, the batch's dedup record and history are committed before it is applied
        (and before the caller answers 200); a store failure raises, so the agent keeps the batch and retries."""
        now = time.time() if now is None else now
        if batch.seq in agent.seqs:
            return self.ingest(agent, batch, address, now)
        rejected = self.admission.admit(agent, batch) or None  # raises WireError (400) for a foreign place
        if self.store is None:
            result = self.ingest(agent, batch, address, now)
            result.rejected = rejected
            return result
        skew = self.measure_skew(agent, batch, now)
        future = self.clamp_future(agent, batch, skew, now)  # before history, series and alerts see the batch
        if not await self.store.commit(agent.id, batch, skew):
            agent.seqs.add(batch.seq)  # committed by an earlier request (or before a restart)
            agent.last_push = now
            return IngestResult(0, True)
        result = self.ingest(agent, batch, address, now, skew)
        result.future = future
        result.rejected = rejected
        return result

    def measure_skew(self, agent: AgentState, batch: Batch, now: float) -> int:
        """ms to add to the agent's timestamps (0 unless its clock is off by more than the tolerance)."""
        skew = 0
        if batch.sent is not None:
            measured = int(now * 1000) - batch.sent
            if abs(measured) > _SKEW_TOLERANCE_MS:
                skew = measured
                if abs(measured - agent.clock_skew_ms) > _SKEW_TOLERANCE_MS:
                    log.warning("agent %s clock is off by %.1fs; correcting its timestamps", agent.id, -measured / 1000)
            agent.clock_skew_ms = skew
            if batch.sent < PLAUSIBLE_MIN_MS:
                # A clock never set (1970, no RTC, no NTP yet): only the stamps it made are shifted. Spooled
                # batches from before the reboot carry stamps of a clock that was right then; kept as they are.
                stamped: tuple[SampleRecord | EventRecord, ...] = (*batch.samples, *batch.events)
                for rec in stamped:
                    if rec.ts < PLAUSIBLE_MIN_MS:
                        rec.ts += measured
                return 0
        return skew

    def clamp_future(self, agent: AgentState, batch: Batch, skew: int, now: float) -> int:
        """Set samples and events stamped more than ``_FUTURE_TOLERANCE_MS`` ahead (after ``skew``) to ``now``.

        Done once on the batch, before anything stores it, so history, current values and the alert
        engine all see the same time. Returns how many were changed.
        """
        now_ms = int(now * 1000)
        limit = now_ms + _FUTURE_TOLERANCE_MS - skew  # in the agent's clock, like the stamps
        received = now_ms - skew
        n = 0
        floor = PLAUSIBLE_MIN_MS - skew  # 2000-01-01 in the agent's clock
        past = 0
        records: tuple[SampleRecord | EventRecord, ...] = (*batch.samples, *batch.events)
        for rec in records:
            if rec.ts > limit:
                rec.ts = received
                n += 1
            elif rec.ts < floor:
                rec.ts = received
                past += 1
        if past:
            agent.past_stamps += past
            self._warn_stamps(agent, now, f"{past} samples/events stamped before 2000 even after correcting its clock "
                                          f"skew of {-skew / 1000:.1f}s (a clock that started at 1970?)",
                              v.COLLECTOR_PAST_STAMPS)
        if n:
            agent.future_stamps += n
            self._warn_stamps(agent, now, f"{n} samples/events stamped more than {_FUTURE_TOLERANCE_MS // 1000}s ahead "
                                          f"of the collector's clock (after correcting its skew of {-skew / 1000:.1f}s)",
                              v.COLLECTOR_FUTURE_STAMPS)
        return n

    @staticmethod
    def _warn_stamps(agent: AgentState, now: float, what: str, counter: str) -> None:
        """One log line per agent and kind every ``_FUTURE_LOG_EVERY`` about stamps set to the receive time."""
        attr = "past_logged" if counter == v.COLLECTOR_PAST_STAMPS else "future_logged"
        if now - getattr(agent, attr) >= _FUTURE_LOG_EVERY:
            setattr(agent, attr, now)
            log.warning("agent %s sent %s; stored at their receive time (%s counts them)", agent.id, what, counter)

    def ingest(self, agent: AgentState, batch: Batch, address: str = "", now: float | None = None,
               skew: int | None = None) -> IngestResult:
        """Apply one authenticated batch; a seq already seen changes nothing."""
        now = time.time() if now is None else now
        if batch.seq in agent.seqs:
            agent.last_push = now  # a replay still proves the agent is alive
            return IngestResult(0, True)
        future = 0
        if skew is None:
            skew = self.measure_skew(agent, batch, now)
            future = self.clamp_future(agent, batch, skew, now)
        changed = self.series.apply(agent.id, batch.samples, skew)
        events = batch.events
        if skew:
            for e in events:
                e.ts += skew
        agent.seqs.add(batch.seq)
        agent.last_push = now
        agent.last_seq = batch.seq
        agent.address = address
        agent.pushes += 1
        agent.samples += len(batch.samples)
        agent.events += len(events)
        self.samples_total += len(batch.samples)
        self.events_total += len(events)
        self._note_agent(agent, True)
        for listener in self.listeners:
            try:
                listener(agent, changed, events, batch)
            except Exception:  # a listener bug must not lose the batch the agent already sent
                log.exception("ingest listener %r failed", listener)
        return IngestResult(len(batch.samples) + len(events), False, future)

    def _note_agent(self, agent: AgentState, up: bool) -> None:
        before = self._agent_up.get(agent.id)
        if before is not up:
            if up:
                log.info("agent %s is pushing%s", agent.id, "" if before is None else " again")
            elif agent.standby:
                log.info("agent %s stopped pushing here (this collector is its standby)", agent.id)
            else:
                log.warning("agent %s is down: no push for %.0fs", agent.id, agent.timeout)
            self._agent_up[agent.id] = up

    # -- exposition ------------------------------------------------------------
    def own_families(self, now: float | None = None) -> list[Family]:
        """Collector-side series: agent up/last push, ingest counters, process health."""
        now = time.time() if now is None else now
        up, last, future, past = [], [], [], []
        for a in sorted(self.agents.agents.values(), key=lambda a: a.id):
            block = render_labels({"agent": a.id})
            if a.standby and not a.up(now):
                pass  # pushing to its home collector: that one exports its roomwatch_agent_up
            else:
                up.append((block, 1.0 if a.up(now) else 0.0))
            if a.last_push is not None:
                last.append((block, a.last_push))
            if a.future_stamps:
                future.append((block, float(a.future_stamps)))
            if a.past_stamps:
                past.append((block, float(a.past_stamps)))
        fams = [
            Family(v.AGENT_UP, v.METRICS[v.AGENT_UP].help, "gauge", up),
            Family(v.AGENT_LAST_PUSH, v.METRICS[v.AGENT_LAST_PUSH].help, "gauge", last),
            Family(v.COLLECTOR_BUILD_INFO, v.METRICS[v.COLLECTOR_BUILD_INFO].help, "gauge",
                   [(render_labels({"version": __version__}), 1.0)]),
            Family(v.COLLECTOR_PUSHES, v.METRICS[v.COLLECTOR_PUSHES].help, "counter",
                   [(render_labels({"code": str(c)}), float(n)) for c, n in sorted(self.push_codes.items())]),
            Family(v.COLLECTOR_SAMPLES, v.METRICS[v.COLLECTOR_SAMPLES].help, "counter", [("", float(self.samples_total))]),
            Family(v.COLLECTOR_EVENTS, v.METRICS[v.COLLECTOR_EVENTS].help, "counter", [("", float(self.events_total))]),
            Family(v.COLLECTOR_FUTURE_STAMPS, v.METRICS[v.COLLECTOR_FUTURE_STAMPS].help, "counter", future),
            Family(v.COLLECTOR_PAST_STAMPS, v.METRICS[v.COLLECTOR_PAST_STAMPS].help, "counter", past),
            Family(v.COLLECTOR_SERIES, v.METRICS[v.COLLECTOR_SERIES].help, "gauge", [("", float(len(self.series)))]),
            *self.admission.families(),
        ]
        try:
            import psutil

            proc = psutil.Process()
            cpu = proc.cpu_times()
            fams.append(Family(v.COLLECTOR_RESIDENT_MEMORY, v.METRICS[v.COLLECTOR_RESIDENT_MEMORY].help, "gauge",
                               [("", float(proc.memory_info().rss))]))
            fams.append(Family(v.COLLECTOR_CPU_SECONDS, v.METRICS[v.COLLECTOR_CPU_SECONDS].help, "counter",
                               [("", cpu.user + cpu.system)]))
        except (ImportError, OSError):
            pass
        return fams

    def families(self, now: float | None = None) -> list[Family]:
        """Everything ``/metrics`` shows, one family per name, sorted."""
        fams = {f.name: f for f in self.series.families(now)}
        extra = self.own_families(now)
        for source in self.family_sources:
            extra.extend(source())
        for f in extra:
            fams[f.name] = f  # collector-owned names win over anything an agent sent
        return [fams[k] for k in sorted(fams)]

    # -- housekeeping --------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Periodic work: agent up/down transitions, series expiry."""
        now = time.time() if now is None else now
        for a in self.agents.agents.values():
            if a.last_push is not None:
                self._note_agent(a, a.up(now))
        self.series.expire(now)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.tick()
            except Exception:
                log.exception("housekeeping failed")

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
