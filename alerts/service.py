"""The alerting service inside the collector: wires engine, store, dispatcher and outbox, and runs them.

The collector's composition root (:func:`roomwatch.collector.main.build_alert_service`)
builds it on the collector (a :class:`~roomwatch.alerts.host.Host`: config
sections and the agent registry) and connects it:

* :meth:`AlertService.on_ingest` as an ingest listener: every accepted batch is evaluated in the ingest call;
  alerts that fire are routed and queued before the push is answered.
* a timer (``rules.evaluation_interval``) feeds ``roomwatch_agent_up`` and
  ``roomwatch_notification_channel_up``, promotes ``for`` alerts, resolves
  silent series and flushes groups whose interval is up.
* :meth:`AlertService.families` as a metrics source (:mod:`roomwatch.alerts.metrics`).

The parts it builds do one job each and are reachable as attributes: the engine
(:mod:`~roomwatch.alerts.engine`), :attr:`~AlertService.renderer` (messages),
:attr:`~AlertService.presenter` (the API's JSON), :attr:`~AlertService.commands`
(acknowledgements, silences). The clock is injected, so tests drive time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

from roomwatch.alerts.commands import AlertCommands
from roomwatch.alerts.dispatch import Dispatcher
from roomwatch.alerts.engine import RuleEngine
from roomwatch.alerts.fallback import FallbackNotices
from roomwatch.alerts.host import Host, HostAgent, HostConfig
from roomwatch.alerts.inhibit import Inhibitor
from roomwatch.alerts.metrics import alert_families
from roomwatch.alerts.model import FIRING, RESOLVED, Alert
from roomwatch.alerts.outbox import Outbox
from roomwatch.alerts.presenter import AlertPresenter
from roomwatch.alerts.render import Renderer
from roomwatch.alerts.rules import compile_inhibit_rules, compile_rules
from roomwatch.alerts.silences import SilenceStore
from roomwatch.alerts.store import AlertStore
from roomwatch.alerts.timewindow import WorkingHours
from roomwatch.channels.base import Channel, get_channel_type
from roomwatch.channels.config import ChannelBase
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import parse_hostport
from roomwatch.core.exposition import Family
from roomwatch.core.wire import Batch, EventRecord

__all__ = ["AlertService", "build_channels"]

log = logging.getLogger("roomwatch.alerts")

STANDBY_RELEASE = 3600.0  # s a standby agent must be silent here before its alerts here may go stale
PURGE_EVERY = 3600.0


def build_channels(configs: Sequence[ChannelBase]) -> dict[str, Channel]:
    """One channel instance per configured channel."""
    return {c.name: get_channel_type(c.type)(c) for c in configs}


def default_external_url(cfg: HostConfig) -> str:
    """``http(s)://<this host>:<port>`` of the collector's ``listen`` (the FQDN for a wildcard address)."""
    host, port = parse_hostport(cfg.listen)
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if cfg.tls else 'http'}://{host}:{port}"


class AlertService:
    """Alerting in a running collector: builds the parts, feeds the engine, routes and queues what changed."""

    def __init__(self, host: Host, clock: Callable[[], float] | None = None,
                 channels: dict[str, Channel] | None = None):
        cfg = host.config
        self.host = host
        self.config = cfg
        self.clock = clock or time.time
        lang = cfg.alerts.language or cfg.web.language
        external_url = (cfg.alerts.external_url or default_external_url(cfg)).rstrip("/")
        self.store = AlertStore(cfg.storage)
        self.silences = SilenceStore(self.store.conn)
        self.notices = FallbackNotices(self.store.conn)
        self.rules = compile_rules(cfg.rules)
        hours = WorkingHours.from_config(cfg.rules.working_hours, cfg.rules.timezone)
        self.engine = RuleEngine(self.rules, hours, self.clock, cfg.series_expire, agent_up=self._agent_up)
        self.inhibitor = Inhibitor(compile_inhibit_rules(cfg.rules.defaults, cfg.alerts.inhibit_rules))
        self.channels = build_channels(cfg.channels) if channels is None else channels
        a = cfg.alerts
        self.outbox = Outbox(self.store.conn, self.channels, self.clock, a.retry_initial, a.retry_max, a.max_age,
                             a.channel_failing_after)
        self.dispatcher = Dispatcher(cfg.routes, self.channels, self.clock, self.engine.active.get, self.notifiable)
        self.renderer = Renderer(self.engine, self.channels, lang, ZoneInfo(cfg.rules.timezone), external_url)
        self.presenter = AlertPresenter(self.engine, self.store, self.silences, self.inhibitor, self.renderer, self.clock)
        self.commands = AlertCommands(self.engine, self.store, self.silences, self.clock)
        self.started_at = self.clock()
        self._fed_agents: dict[str, float] = {}
        self._fed_channels: dict[str, float] = {}
        self._last_purge = 0.0
        self._timer_task: asyncio.Task[None] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._restore()

    def _restore(self) -> None:
        now = self.clock()
        open_alerts = self.store.open_alerts()
        self.engine.restore(open_alerts)
        self.dispatcher.restore(self.store.groups(), self.store.latest_episode, now)
        for alert in self.engine.active.values():
            self.dispatcher.on_alert(alert, now)
        if open_alerts:
            log.info("restored %d active alerts", len(open_alerts))

    # -- ingest ---------------------------------------------------------------------------
    def on_ingest(self, agent: HostAgent, changed: Sequence[object], events: list[EventRecord], batch: Batch) -> None:
        """Collector listener: evaluate the batch now, in the ingest call (``changed`` is not needed here)."""
        skew = agent.clock_skew_ms if batch.sent is not None else 0
        if events:  # first what the agent's local fallback already sent: it may concern this very batch
            self.notices.receive(agent.id, events, list(self.engine.active.values()), self.clock())
        self.engine.observe_batch(agent.id, batch.samples, events, skew)
        if self._fed_agents.get(agent.id) == 0.0:
            self._feed_agent(agent.id, 1.0, self.clock())
        if self.engine.changes or self.engine.dropped or self.notices.dirty:
            self.process(self.clock())

    # -- the timer ------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Timer work: agent/channel health as series, for-durations, staleness, group flushes."""
        now = self.clock() if now is None else now
        self._feed_agents(now)
        self._feed_channels(now)
        self._release_removed(now)
        self.engine.tick(now)
        self.process(now)
        if now - self._last_purge >= PURGE_EVERY:
            self._last_purge = now
            self._purge(now)

    def _agent_up(self, agent_id: str) -> bool:
        """The engine's question: may this agent's series go stale (it is down), or does it still count as up?"""
        a = self.host.agents.agents.get(agent_id)
        if a is None:
            return True
        now = self.clock()
        if a.standby and a.last_push is not None and now - a.last_push > STANDBY_RELEASE:
            # gone home long ago: the alerts it raised here during its failover may resolve as "no data".
            # Not sooner: it may also have died here while its home collector is down.
            return True
        return a.up(now)

    def _feed_agent(self, agent_id: str, up: float, now: float) -> None:
        labels = {"agent": agent_id, **self.engine.agent_labels.get(agent_id, {})}
        self.engine.observe(v.AGENT_UP, labels, up, int(now * 1000))
        self._fed_agents[agent_id] = up

    def _feed_agents(self, now: float) -> None:
        """``roomwatch_agent_up`` of every configured agent, when it changed."""
        for a in self.host.agents.agents.values():
            if a.last_push is None and now - self.started_at < a.timeout:
                continue  # just started: give every agent its timeout to show up
            up = 1.0 if a.up(now) or a.standby else 0.0  # a standby agent is never AgentDown here
            # (fed 1 once even so: an AgentDown restored from before it was marked standby resolves)
            if self._fed_agents.get(a.id) != up:
                self._feed_agent(a.id, up, now)

    def _feed_channels(self, now: float) -> None:
        """``roomwatch_notification_channel_up`` of every channel, when it changed."""
        for name, status in self.outbox.status.items():
            up = 1.0 if status.up(now, self.outbox.failing_after) else 0.0
            if self._fed_channels.get(name) != up:
                self.engine.observe(v.NOTIFICATION_CHANNEL_UP, {"channel": name}, up, int(now * 1000))
                self._fed_channels[name] = up

    def _release_removed(self, now: float) -> None:
        """Resolve the health alerts of agents and channels removed from the config (restored alerts):
        nothing will feed them again."""
        agents = self.host.agents.agents
        for a in list(self.engine.active.values()):
            gone = (a.metric == v.AGENT_UP and a.series_labels.get("agent") not in agents) or (
                a.metric == v.NOTIFICATION_CHANNEL_UP and a.series_labels.get("channel") not in self.outbox.status)
            if gone:
                self.engine.observe(a.metric, dict(a.series_labels), 1.0, int(now * 1000))

    def _purge(self, now: float) -> None:
        self.engine.gc(now)
        with self.store.transaction():
            self.store.purge(now - self.config.alerts.keep_history)
            self.silences.purge(now)
            self.notices.purge(now)

    # -- what changed → store, groups, outbox ------------------------------------------------
    def process(self, now: float) -> None:
        """Store transitions, route them, flush due groups and queue messages — one transaction."""
        changes, dropped = self.engine.take_changes()
        with self.store.transaction():
            self._store_changes(changes, dropped, now)
            outgoing = [o for g in self.dispatcher.due(now) for o in self.dispatcher.flush(g, now)]
            for o in outgoing:
                self.outbox.enqueue(o.channel, self.renderer.notification(o, now), now)
            self._store_groups(now)
            due_soon = [g.next_flush for g in self.dispatcher.groups.values() if g.last_flush is None]
        for name in {o.channel for o in outgoing}:
            self.outbox.wake(name)
        if due_soon:
            self._schedule_flush(min(due_soon) - now)

    def _store_changes(self, changes: list[Alert], dropped: list[Alert], now: float) -> None:
        """Save the engine's transitions, hand them to the dispatcher, and apply the fallback's notices."""
        for a in dropped:
            self.store.delete_alert(a)
        for a in changes:
            self.notices.on_change(a)  # a notice from the agent's local fallback may be waiting for it
            self.store.save_alert(a)
            self.dispatcher.on_alert(a, now)
        marked = self.notices.save()
        for a in marked:
            self.store.save_alert(a)
        for a in changes + marked:
            if a.state == FIRING and a.fallback is not None:
                self.dispatcher.mark_told(a, a.fallback["firing_at"])
            elif a.state == RESOLVED and a.fallback_resolved:
                self.dispatcher.mark_resolution_told(a)

    def _store_groups(self, now: float) -> None:
        """Persist the groups the dispatcher changed or deleted (a restart resumes them)."""
        for key in self.dispatcher.dirty:
            g = self.dispatcher.groups.get(key)
            if g is not None:
                self.store.save_group(key, g.to_json(), now)
        for key in self.dispatcher.deleted:
            self.store.delete_group(key)
        self.dispatcher.dirty.clear()
        self.dispatcher.deleted.clear()

    def _schedule_flush(self, delay: float) -> None:
        """A group_wait shorter than the timer: flush right when it ends."""
        if delay >= self.config.rules.evaluation_interval:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (unit tests drive tick() themselves)
        if self._flush_handle is not None and not self._flush_handle.cancelled():
            self._flush_handle.cancel()
        self._flush_handle = loop.call_later(max(0.0, delay), lambda: self.process(self.clock()))

    # -- what the dispatcher and /metrics ask -----------------------------------------
    def notifiable(self, alerts: list[Alert], now: float) -> list[Alert]:
        """Drop silenced and inhibited alerts."""
        inhibited = self.inhibitor.compute(self.engine.active.values(), self.engine.version)
        return [a for a in alerts if a.fp not in inhibited and not self.silences.silenced_by(a.labels, now)]

    def families(self) -> list[Family]:
        """Alerting's series for the collector's /metrics."""
        return alert_families(self.engine, self.outbox, self.silences, self.clock())

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self.outbox.start()
        self._timer_task = asyncio.create_task(self._timer(), name="alerts-timer")

    async def _timer(self) -> None:
        interval = self.config.rules.evaluation_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.tick()
            except Exception:  # a bug in one tick must not stop alerting
                log.exception("alert timer failed")

    async def stop(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            await asyncio.gather(self._timer_task, return_exceptions=True)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        await self.outbox.stop()
        self.store.close()

