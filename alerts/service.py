"""The alerting service inside the collector: engine + store + dispatcher + outbox.

The collector's composition root (:func:`roomwatch.collector.main.build_alert_service`)
connects it to the collector:

* :meth:`AlertService.on_ingest` as an ingest listener: every accepted batch is evaluated in the ingest call;
  alerts that fire are routed and queued before the push is answered.
* a timer (``rules.evaluation_interval``) feeds ``roomwatch_agent_up`` and
  ``roomwatch_notification_channel_up``, promotes ``for`` alerts, resolves
  silent series and flushes groups whose interval is up.
* :meth:`AlertService.families` as a metrics source: ``roomwatch_alerts`` and notification metrics on /metrics.

The clock is injected, so tests drive time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from roomwatch.alerts.dispatch import Dispatcher, Outgoing
from roomwatch.alerts.engine import RuleEngine
from roomwatch.alerts.fallback import FallbackNotices, note
from roomwatch.alerts.inhibit import Inhibitor
from roomwatch.alerts.model import FIRING, Alert
from roomwatch.alerts.outbox import Outbox
from roomwatch.alerts.rules import compile_inhibit_rules, compile_rules
from roomwatch.alerts.silences import Silence, SilenceStore
from roomwatch.alerts.store import AlertStore
from roomwatch.alerts.templates import (
    AlertView,
    ack_url,
    format_alert_value,
    format_expr,
    render_annotations,
    render_notification,
)
from roomwatch.alerts.timewindow import WorkingHours
from roomwatch.channels.base import AlertItem, Channel, Notification, get_channel_type
from roomwatch.core import vocabulary as v
from roomwatch.core.configbase import parse_hostport
from roomwatch.core.exposition import Family, render_labels

__all__ = ["AckError", "AlertService", "build_channels"]

log = logging.getLogger("roomwatch.alerts")

STANDBY_RELEASE = 3600.0  # s a standby agent must be silent here before its alerts here may go stale
PURGE_EVERY = 3600.0


def build_channels(configs: list[Any]) -> dict[str, Channel]:
    """One channel instance per configured channel."""
    import roomwatch.channels.all  # noqa: F401 - registers the types

    return {c.name: get_channel_type(c.type)(c) for c in configs}


def default_external_url(cfg: Any) -> str:
    host, port = parse_hostport(cfg.listen)
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if cfg.tls else 'http'}://{host}:{port}"


def _dt(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


class AckError(Exception):
    """An acknowledgement refused: ``status`` is the HTTP status, the message the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class AlertService:
    """Everything alerting does in a running collector."""

    def __init__(self, collector: Any, clock: Callable[[], float] | None = None,
                 channels: dict[str, Channel] | None = None):
        cfg = collector.config
        self.collector = collector
        self.config = cfg
        self.clock = clock or time.time
        self.lang = cfg.alerts.language or cfg.web.language
        self.tz = ZoneInfo(cfg.rules.timezone)
        self.external_url = (cfg.alerts.external_url or default_external_url(cfg)).rstrip("/")
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
        self.started_at = self.clock()
        self._fed_agents: dict[str, float] = {}
        self._fed_channels: dict[str, float] = {}
        self._last_purge = 0.0
        self._timer_task: asyncio.Task[None] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._restore()

    # -- wiring -----------------------------------------------------------------------
    def _restore(self) -> None:
        now = self.clock()
        open_alerts = self.store.open_alerts()
        self.engine.restore(open_alerts)
        self.dispatcher.restore(self.store.groups(), self.store.latest_episode, now)
        for alert in self.engine.active.values():
            self.dispatcher.on_alert(alert, now)
        if open_alerts:
            log.info("restored %d active alerts", len(open_alerts))

    def _agent_up(self, agent_id: str) -> bool:
        a = self.collector.agents.agents.get(agent_id)
        if a is None:
            return True
        now = self.clock()
        if a.standby and a.last_push is not None and now - a.last_push > STANDBY_RELEASE:
            # gone home long ago: the alerts it raised here during its failover may resolve as "no data".
            # Not sooner: it may also have died here while its home collector is down.
            return True
        return a.up(now)

    def on_ingest(self, agent: Any, changed: Any, events: list[Any], batch: Any) -> None:
        """Collector listener: evaluate the batch now, in the ingest call."""
        skew = agent.clock_skew_ms if batch.sent is not None else 0
        if events:  # first what the agent's local fallback already sent: it may concern this very batch
            self.notices.receive(agent.id, events, list(self.engine.active.values()), self.clock())
        self.engine.observe_batch(agent.id, batch.samples, events, skew)
        if self._fed_agents.get(agent.id) == 0.0:
            self._feed_agent(agent.id, 1.0, self.clock())
        if self.engine.changes or self.engine.dropped or self.notices.dirty:
            self.process(self.clock())

    def _feed_agent(self, agent_id: str, up: float, now: float) -> None:
        labels = {"agent": agent_id, **self.engine.agent_labels.get(agent_id, {})}
        self.engine.observe(v.AGENT_UP, labels, up, int(now * 1000))
        self._fed_agents[agent_id] = up

    def tick(self, now: float | None = None) -> None:
        """Timer work: agent/channel health as series, for-durations, staleness, group flushes."""
        now = self.clock() if now is None else now
        for a in self.collector.agents.agents.values():
            if a.last_push is None and now - self.started_at < a.timeout:
                continue  # just started: give every agent its timeout to show up
            up = 1.0 if a.up(now) or a.standby else 0.0  # a standby agent is never AgentDown here
            # (fed 1 once even so: an AgentDown restored from before it was marked standby resolves)
            if self._fed_agents.get(a.id) != up:
                self._feed_agent(a.id, up, now)
        for name, status in self.outbox.status.items():
            up = 1.0 if status.up(now, self.outbox.failing_after) else 0.0
            if self._fed_channels.get(name) != up:
                self.engine.observe(v.NOTIFICATION_CHANNEL_UP, {"channel": name}, up, int(now * 1000))
                self._fed_channels[name] = up
        for a in list(self.engine.active.values()):
            # an agent or channel removed from the config (restored alert): nothing will feed it again
            gone = (a.metric == v.AGENT_UP and a.series_labels.get("agent") not in self.collector.agents.agents) or (
                a.metric == v.NOTIFICATION_CHANNEL_UP and a.series_labels.get("channel") not in self.outbox.status)
            if gone:
                self.engine.observe(a.metric, dict(a.series_labels), 1.0, int(now * 1000))
        self.engine.tick(now)
        self.process(now)
        if now - self._last_purge >= PURGE_EVERY:
            self._last_purge = now
            self.engine.gc(now)
            with self.store.transaction():
                self.store.purge(now - self.config.alerts.keep_history)
                self.silences.purge(now)
                self.notices.purge(now)

    def process(self, now: float) -> None:
        """Store transitions, route them, flush due groups and queue messages — one transaction."""
        changes, dropped = self.engine.take_changes()
        due_soon: list[float] = []
        with self.store.transaction():
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
            outgoing: list[Outgoing] = []
            for g in self.dispatcher.due(now):
                outgoing += self.dispatcher.flush(g, now)
            for o in outgoing:
                self.outbox.enqueue(o.channel, self.render(o, now), now)
            for key in self.dispatcher.dirty:
                g = self.dispatcher.groups.get(key)
                if g is not None:
                    self.store.save_group(key, g.to_json(), now)
            for key in self.dispatcher.deleted:
                self.store.delete_group(key)
            self.dispatcher.dirty.clear()
            self.dispatcher.deleted.clear()
            due_soon = [g.next_flush for g in self.dispatcher.groups.values() if g.last_flush is None]
        for name in {o.channel for o in outgoing}:
            self.outbox.wake(name)
        if due_soon:
            self._schedule_flush(min(due_soon) - now)

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

    # -- rendering -------------------------------------------------------------------
    def notifiable(self, alerts: list[Alert], now: float) -> list[Alert]:
        """Drop silenced and inhibited alerts."""
        inhibited = self.inhibitor.compute(self.engine.active.values(), self.engine.version)
        return [a for a in alerts if a.fp not in inhibited and not self.silences.silenced_by(a.labels, now)]

    def view(self, a: Alert, status: str | None = None) -> AlertView:
        rule = self.engine.rules_by_uid.get(a.rule_uid)
        when, clear, for_, templates = "", None, 0.0, {}
        if rule is not None:
            for_, templates = rule.for_, rule.annotations
            for c in rule.conds:
                if c.metric == a.metric:
                    when, clear = str(c.when_expr), (str(c.clear_expr) if c.clear_expr else None)
                    break
        return AlertView(a.id, a.name, status or ("resolved" if a.state == "resolved" else "firing"), a.severity,
                         a.labels, a.metric, a.value, when, clear, for_, a.active_since, a.resolved_at, a.ack_by,
                         templates, a.resolve_reason)

    def annotations(self, a: Alert, lang: str | None = None) -> dict[str, str]:
        return render_annotations(self.view(a), lang or self.lang, self.tz)

    def render(self, o: Outgoing, now: float) -> Notification:
        alerts = [(a, "firing") for a in o.firing] + [(a, "resolved") for a in o.resolved]
        views = [self.view(a, s) for a, s in alerts]
        items = []
        for (a, status), view in zip(alerts, views, strict=True):
            ann = render_annotations(view, self.lang, self.tz)
            # value and threshold as people read them, for SMS templates ({value}, {threshold})
            ann.setdefault("value", format_alert_value(a.metric, a.value, view.when, self.lang))
            if view.when:
                ann.setdefault("threshold", format_expr(a.metric, view.when, self.lang))
            items.append(AlertItem(a.fp, status, dict(a.labels), ann,
                                   _dt(a.fired_at or a.active_since), _dt(a.resolved_at) if status == "resolved" else None,
                                   a.value, ack_url(self.external_url, a.id)))
        status = "firing" if o.firing else "resolved"
        channel = self.channels[o.channel]
        group_labels = {k: val for k, val in o.group.labels.items() if val}
        title, text, markdown = render_notification(
            views, status=status, reason=o.reason, lang=self.lang, tz=self.tz, external_url=self.external_url, now=now,
            max_bytes=type(channel).max_bytes, group_labels=group_labels,
            escalation_after=o.group.route.after[o.level] if o.level < len(o.group.route.after) else 0.0)
        common = dict(items[0].labels) if items else {}
        common_ann = dict(items[0].annotations) if items else {}
        for item in items[1:]:
            common = {k: val for k, val in common.items() if item.labels.get(k) == val}
            common_ann = {k: val for k, val in common_ann.items() if item.annotations.get(k) == val}
        key = "{}:{" + ", ".join(f'{k}="{val}"' for k, val in sorted(group_labels.items())) + "}"
        return Notification(f"route{o.group.route.index}/{key}", status, o.channel, items, title, text, markdown,
                            group_labels, common, common_ann, self.external_url, o.reason, o.level)

    # -- API operations -------------------------------------------------------------
    def alert_json(self, a: Alert, now: float, inhibited: dict[str, str], lang: str | None = None) -> dict[str, Any]:
        """One alert for the API; annotations and notes in ``lang`` (default: the configured language)."""
        silenced = self.silences.silenced_by(a.labels, now)
        return {
            "id": a.id,
            "fingerprint": a.fp,
            "alertname": a.name,
            "state": a.state,
            "severity": a.severity,
            "labels": a.labels,
            "annotations": self.annotations(a, lang),
            "value": a.value,
            "activeSince": a.active_since,
            "firedAt": a.fired_at,
            "acknowledged": a.ack_at is not None,
            "ack": None if a.ack_at is None else {"by": a.ack_by, "at": a.ack_at, "comment": a.ack_comment},
            "silencedBy": silenced,
            "inhibitedBy": [self._id_of(inhibited[a.fp])] if a.fp in inhibited else [],
            "url": ack_url(self.external_url, a.id),
            "fallback": self.fallback_json(a, lang),
        }

    def fallback_json(self, a: Alert, lang: str | None = None) -> dict[str, Any] | None:
        """What the agent's local fallback already sent for ``a`` (None: nothing), with a note for people."""
        fb = a.fallback
        if fb is None:
            return None
        return {"channel": fb.get("channel", ""), "channelType": fb.get("channel_type", ""),
                "firingAt": fb["firing_at"], "resolvedAt": fb.get("resolved_at"), "message": fb.get("message", ""),
                "note": note(fb, lang or self.lang, self.tz)}

    def list_alerts(self, now: float | None = None, lang: str | None = None) -> list[dict[str, Any]]:
        now = self.clock() if now is None else now
        inhibited = self.inhibitor.compute(self.engine.active.values(), self.engine.version)
        order = {"critical": 0, "warning": 1, "info": 2}
        alerts = sorted(self.engine.active.values(),
                        key=lambda a: (a.state != FIRING, order.get(a.severity, 3), -a.active_since))
        return [self.alert_json(a, now, inhibited, lang) for a in alerts]

    def _id_of(self, fp: str) -> str:
        a = self.engine.active.get(fp)
        return a.id if a is not None else fp

    def ack(self, alert_id: str, user: str, comment: str = "") -> Alert:
        """Acknowledge the episode ``alert_id`` (``<fingerprint>-<episode>``): no more repeats or escalation for it.

        Raises :class:`AckError` (404: no such active alert; 409: the id names another episode,
        or is a bare fingerprint) — an id from an old message never acknowledges a later incident.
        """
        fp, _, episode = alert_id.partition("-")
        a = self.engine.active.get(fp)
        if a is None:
            raise AckError(404, "no active alert with this id (it may have resolved)")
        if a.id != alert_id:
            if not episode:
                raise AckError(409, f"an alert id names one episode: this alert's current one is {a.id} "
                                    "(a bare fingerprint, e.g. from a message sent by an older version, could "
                                    "acknowledge a later incident)")
            raise AckError(409, f"episode {episode} of this alert has resolved; it is active again as {a.id} "
                                "(a new incident: look at it before acknowledging)")
        if a.ack_at is None:
            a.ack_by, a.ack_at, a.ack_comment = user, self.clock(), comment[:1000]
            with self.store.transaction():
                self.store.save_alert(a)
            log.info("alert %s %s acknowledged by %s", a.name, a.id, user)
        return a

    def add_silence(self, body: Any, user: str) -> Silence:
        now = self.clock()
        s = self.silences.build(body, user, now)
        with self.store.transaction():
            self.silences.save(s)
        log.info("silence %s by %s until %s: %s", s.id, s.created_by, _dt(s.ends_at), " ".join(map(str, s.matchers)))
        return s

    def expire_silence(self, sid: str) -> Silence | None:
        with self.store.transaction():
            s = self.silences.expire(sid, self.clock())
        if s is not None:
            log.info("silence %s expired", sid)
        return s

    # -- metrics -------------------------------------------------------------------------
    def families(self) -> list[Family]:
        counts: Counter[tuple[str, str, str]] = Counter()
        for a in self.engine.active.values():
            counts[(a.name, a.severity, a.state)] += 1
        alerts = [(render_labels({"alertname": n, "severity": s, "state": st}), float(c))
                  for (n, s, st), c in sorted(counts.items())]
        now = self.clock()
        up, total, pending = [], [], []
        queued = self.outbox.pending()
        for name in sorted(self.outbox.status):
            st = self.outbox.status[name]
            block = render_labels({"channel": name})
            up.append((block, 1.0 if st.up(now, self.outbox.failing_after) else 0.0))
            pending.append((block, float(queued.get(name, 0))))
            for outcome, n in (("delivered", st.delivered), ("partial", st.partial), ("retry", st.retried),
                               ("give_up", st.given_up), ("expired", st.expired)):
                total.append((render_labels({"channel": name, "outcome": outcome}), float(n)))
        states = Counter(s.state(now) for s in self.silences.items.values())
        silences = [(render_labels({"state": k}), float(states.get(k, 0))) for k in ("active", "pending")]
        d = v.METRICS
        return [
            Family(v.ALERTS, d[v.ALERTS].help, "gauge", alerts),
            Family(v.NOTIFICATION_CHANNEL_UP, d[v.NOTIFICATION_CHANNEL_UP].help, "gauge", up),
            Family(v.NOTIFICATIONS, d[v.NOTIFICATIONS].help, "counter", total),
            Family(v.NOTIFICATIONS_PENDING, d[v.NOTIFICATIONS_PENDING].help, "gauge", pending),
            Family(v.SILENCES, d[v.SILENCES].help, "gauge", silences),
        ]

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

