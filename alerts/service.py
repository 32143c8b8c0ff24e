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
from collections import Counter
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

from roomwatch.alerts.ackcodes import AckCodes, normalize_number
from roomwatch.alerts.acklink import AckLinks, load_secret
from roomwatch.alerts.ackpage import AckPage
from roomwatch.alerts.commands import AlertCommands
from roomwatch.alerts.dispatch import Dispatcher
from roomwatch.alerts.engine import RuleEngine
from roomwatch.alerts.fallback import FallbackNotices
from roomwatch.alerts.heartbeat import Pinger, daily_due, daily_text
from roomwatch.alerts.host import Host, HostAgent, HostConfig
from roomwatch.alerts.imcallback import DingtalkCallback
from roomwatch.alerts.inhibit import Inhibitor
from roomwatch.alerts.metrics import alert_families, counter_family
from roomwatch.alerts.model import FIRING, RESOLVED, Alert, fingerprint
from roomwatch.alerts.modemwatch import MODEM_TYPES, ModemWatch, build_watches
from roomwatch.alerts.outbox import Outbox
from roomwatch.alerts.presenter import AlertPresenter
from roomwatch.alerts.render import ALERT_IDS, Renderer, utc
from roomwatch.alerts.replies import ReplyDesk
from roomwatch.alerts.rota import build_rotas, split_target
from roomwatch.alerts.rules import compile_inhibit_rules, compile_rules
from roomwatch.alerts.silences import SilenceStore
from roomwatch.alerts.store import AlertStore
from roomwatch.alerts.timeintervals import TimeIntervals
from roomwatch.alerts.timewindow import WorkingHours
from roomwatch.channels.base import AlertItem, Channel, Notification, get_channel_type
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.gsm_modem import ModemStatus
from roomwatch.channels.recipients import PERSON
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import parse_hostport
from roomwatch.core.exposition import Family, render_labels
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
        self.silences = SilenceStore(self.store.conn, max_duration=cfg.alerts.silence_max_duration)
        self.notices = FallbackNotices(self.store.conn)
        self.rules = compile_rules(cfg.rules)
        hours = WorkingHours.from_config(cfg.rules.working_hours, cfg.rules.timezone)
        self.engine = RuleEngine(self.rules, hours, self.clock, cfg.series_expire, agent_up=self._agent_up)
        self.inhibitor = Inhibitor(compile_inhibit_rules(cfg.rules.defaults, cfg.alerts.inhibit_rules))
        self.channels = build_channels(cfg.channels) if channels is None else channels
        a = cfg.alerts
        self.outbox = Outbox(self.store.conn, self.channels, self.clock, a.retry_initial, a.retry_max, a.max_age,
                             a.channel_failing_after)
        self.outbox.still_wanted = self._still_wanted
        #: channel → (since, reason) while a health check (the modem's) says it cannot deliver
        self.trouble: dict[str, tuple[float, str]] = {}
        self.intervals = TimeIntervals(cfg.time_intervals, cfg.rules.timezone, hours)
        self.rotas = build_rotas(cfg.oncall, cfg.rules.timezone, hours)
        self.dispatcher = Dispatcher(cfg.routes, self.channels, self.clock, self.engine.active.get, self.notifiable,
                                     {r.name: list(r.channels) for r in cfg.oncall.rotas}, self.intervals,
                                     self.failing_for)
        links = None
        if a.ack_links.enabled:
            secret = a.ack_links.secret.get_secret_value() if a.ack_links.secret is not None else None
            links = AckLinks(load_secret(self.store.conn, secret, self.clock()), a.ack_links.ttl, external_url)
        self.codes = AckCodes(self.store.conn, self.clock)
        replies = {c.name: "sms" for c in cfg.channels if c.type == "gsm_modem" and getattr(c, "replies", False)}
        if a.callbacks.dingtalk is not None:
            replies.update({c.name: "dingtalk" for c in cfg.channels if c.type == "dingtalk"})
        self.renderer = Renderer(self.engine, self.channels, lang, ZoneInfo(cfg.rules.timezone), external_url, links,
                                 self.codes, self.rotas, {p.name: p for p in cfg.oncall.people}, replies)
        self.renderer.channel_reason = self.channel_reason
        self.presenter = AlertPresenter(self.engine, self.store, self.silences, self.inhibitor, self.renderer, self.clock)
        self.commands = AlertCommands(self.engine, self.store, self.silences, self.clock)
        self.desk = ReplyDesk(self.codes, self.commands, self.renderer.describe, lang)
        self.ack_page = AckPage(links, self.commands, self.renderer, self.clock, external_url) if links else None
        self.dingtalk: DingtalkCallback | None = None
        if a.callbacks.dingtalk is not None:
            people = {p.dingtalk: p.name for p in cfg.oncall.people if p.dingtalk}
            self.dingtalk = DingtalkCallback(a.callbacks.dingtalk, self.desk, people)  # DingTalk's clock: real time
        self.sms_replies: Counter[str] = Counter()
        self.watches: list[ModemWatch] = build_watches(list(cfg.channels), self._modem_status, self.sms_reply)
        self.pinger = Pinger(cfg.heartbeat)
        self.heartbeats: Counter[str] = Counter()
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
        self._failover(now)  # before the flush: a channel handed over counts as told, nothing is sent twice
        self.process(now)
        self._daily_heartbeat(now)
        if now - self._last_purge >= PURGE_EVERY:
            self._last_purge = now
            self._purge(now)

    # -- channel health, failover -----------------------------------------------------------
    def failing_for(self, name: str, now: float) -> float:
        """Seconds channel ``name`` has been failing (deliveries, or a health check); 0 while it works."""
        st = self.outbox.status.get(name)
        out = now - st.failing_since if st is not None and st.failing_since is not None else 0.0
        if name in self.trouble:
            out = max(out, now - self.trouble[name][0], 1e-9)
        return out

    def channel_reason(self, name: str) -> str:
        """Why ``name`` fails: the health check's finding, else the service's last answer."""
        if name in self.trouble:
            return self.trouble[name][1]
        st = self.outbox.status.get(name)
        return st.last_error if st is not None and st.failing_since is not None else ""

    def _modem_status(self, names: list[str], status: ModemStatus) -> None:
        """A modem check's result: its channels fail (with the reason) or work again."""
        now = self.clock()
        for name in names:
            if status.ok:
                if self.trouble.pop(name, None) is not None:
                    log.info("channel %s: the modem works again", name)
            else:
                since = self.trouble.get(name, (now, ""))[0]
                self.trouble[name] = (since, status.reason)

    def _failover(self, now: float) -> None:
        """Routes with ``failover``: queued messages of a channel failing that long go to the level's next channel."""
        for route in self.dispatcher.routes:
            if route.failover is None:
                continue
            for targets in route.levels:
                for i, target in enumerate(targets):
                    name, _ = split_target(target)
                    if self.failing_for(name, now) < route.failover:
                        continue
                    nxt = next((t for t in targets[i + 1:] + targets[:i]
                                if self.failing_for(split_target(t)[0], now) < route.failover), None)
                    if nxt is None:
                        continue
                    to, rota = split_target(nxt)
                    person = self.renderer.person(rota, now) if rota else None
                    with self.store.transaction():
                        moved = self.outbox.hand_over(name, to, f"route{route.index}/", person)
                        if moved:
                            self.dispatcher.handed_over(route, target, nxt)
                            self._store_groups(now)
                    if moved:
                        log.warning("channel %s failing for %.0fs: %d queued message(s) of route %d handed to %s",
                                    name, self.failing_for(name, now), moved, route.index, to)
                        self.outbox.wake(to)

    def _still_wanted(self, channel: str, n: Notification) -> str | None:
        """Drop a queued reminder, escalation or phone call whose alerts were all acknowledged or ended meanwhile."""
        ch = self.channels.get(channel)
        calls = ch is not None and type(ch).calls
        if n.reason not in ("repeat", "escalation") and not (calls and n.status == "firing"):
            return None
        ids = n.extra.get(ALERT_IDS)
        if not isinstance(ids, list) or not ids:
            return None
        for alert_id in ids:
            a = self.engine.active.get(str(alert_id).partition("-")[0])
            if a is not None and a.id == alert_id and a.state == FIRING and a.ack_at is None:
                return None
        return "its alerts were acknowledged or resolved while it waited"

    # -- replies ------------------------------------------------------------------------
    def allowed_senders(self) -> dict[str, str]:
        """Numbers whose SMS replies count: every modem channel's numbers and the people's phones → who they are."""
        out: dict[str, str] = {}
        for c in self.config.channels:
            if c.type in MODEM_TYPES:
                for num in getattr(c, "phone_numbers", []):
                    out.setdefault(normalize_number(num), num)
        for p in self.config.oncall.people:
            if p.phone:
                out[normalize_number(p.phone)] = p.name
        return out

    def sms_reply(self, sender: str, text: str, channel: str) -> str | None:
        """An SMS the modem received: acknowledge what it names, and the answer to send back (None: ignore it)."""
        who = self.allowed_senders().get(normalize_number(sender))
        if who is None:
            self.sms_replies["ignored"] += 1
            log.warning("SMS from %s ignored: not a number alerts are sent to", sender[:20])
            return None
        result = self.desk.handle(text[:200], who, "sms", channel, sender)
        self.sms_replies["acknowledged" if result.acknowledged else "answered"] += 1
        if result.acknowledged:
            self.process(self.clock())
        return result.answer

    # -- heartbeat ----------------------------------------------------------------------
    def _daily_heartbeat(self, now: float) -> None:
        daily = self.config.heartbeat.daily
        if daily is None:
            return

        def sent(day: str) -> bool:
            return self.store.conn.execute("SELECT 1 FROM heartbeat_log WHERE day = ?", (day,)).fetchone() is not None

        day = daily_due(daily, self.config.rules.timezone, now, sent)
        if day is None:
            return
        rooms = {(lb.get("site", ""), lb.get("room", "")) for lb in self.engine.agent_labels.values() if lb.get("room")}
        agents = [ag for ag in self.host.agents.agents.values() if not ag.standby and ag.role == "agent"]
        firing = [self.renderer.describe(a) for a in self.engine.active.values() if a.state == FIRING]
        title, text = daily_text(self.renderer.lang, len(rooms), len(agents),
                                 sum(1 for ag in agents if not ag.up(now)), firing)
        labels = {"alertname": "Heartbeat", "severity": "info"}
        item = AlertItem(fingerprint(labels, day), "firing", labels, {"summary": title, "description": text}, utc(now))
        with self.store.transaction():
            for target in daily.channels:
                name, rota = split_target(target)
                n = Notification(f"heartbeat:{day}", "firing", name, [item], title, text, text, {"alertname": "Heartbeat"},
                                 dict(labels), {"summary": title}, self.renderer.external_url, "heartbeat")
                if rota:
                    person = self.renderer.person(rota, now)
                    if person is not None:
                        n.extra[PERSON] = person
                self.outbox.enqueue(name, n, now)
            self.store.conn.execute("INSERT INTO heartbeat_log (day, sent_at) VALUES (?, ?)", (day, now))
        self.heartbeats["daily"] += 1
        for target in daily.channels:
            self.outbox.wake(split_target(target)[0])

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
        agent = self.host.agents.agents.get(agent_id)
        if agent is not None and agent.role == "collector":
            labels["role"] = "collector"  # CollectorDown, not AgentDown
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
            up = 1.0 if status.up(now, self.outbox.failing_after) and name not in self.trouble else 0.0
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
        families = alert_families(self.engine, self.outbox, self.silences, self.clock(), lambda n: n in self.trouble)
        return families + self._oncall_families()

    def _oncall_families(self) -> list[Family]:
        d = v.METRICS
        out = [counter_family(v.ACKNOWLEDGEMENTS, "via", self.commands.acks),
               counter_family(v.ACK_LINKS_REFUSED, "reason", self.ack_page.refused if self.ack_page else {}),
               counter_family(v.SMS_REPLIES, "result", self.sms_replies)]
        if self.dingtalk is not None:
            out.append(counter_family(v.IM_CALLBACKS, "", {("dingtalk", k): n for k, n in self.dingtalk.results.items()},
                                      ("im", "result")))
        beats: dict[tuple[str, str], int] = {("daily", "ok"): self.heartbeats["daily"]} if self.config.heartbeat.daily else {}
        beats.update(self.pinger.results)
        out.append(counter_family(v.HEARTBEATS, "", beats, ("kind", "result")))
        signal, registered, checked = [], [], []
        for w in self.watches:
            if w.status is None:
                continue
            for name in w.names:
                block = render_labels({"channel": name, "port": w.port})
                if w.status.signal_dbm is not None:
                    signal.append((block, w.status.signal_dbm))
                if w.status.registered is not None:
                    registered.append((block, 1.0 if w.status.registered else 0.0))
                checked.append((block, float(w.checked_at or 0.0)))
        if self.watches:
            out += [Family(v.MODEM_SIGNAL, d[v.MODEM_SIGNAL].help, "gauge", signal),
                    Family(v.MODEM_REGISTERED, d[v.MODEM_REGISTERED].help, "gauge", registered),
                    Family(v.MODEM_CHECKED, d[v.MODEM_CHECKED].help, "gauge", checked)]
        return out

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self.outbox.start()
        self._timer_task = asyncio.create_task(self._timer(), name="alerts-timer")
        for w in self.watches:
            w.start()
        self.pinger.start()

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
        for w in self.watches:
            await w.stop()
        await self.pinger.stop()
        await self.outbox.stop()
        self.store.close()

