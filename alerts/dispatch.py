"""Routing, grouping, repeats and escalation: which channel is told what, and when.

Like Alertmanager's dispatcher, with escalation levels added:

* An alert goes to the first route whose matchers match (and on to the next
  while a route says ``continue``). Within a route, alerts with equal
  ``group_by`` labels form a *group*, and a group becomes one message.
* A new group is flushed after ``group_wait`` (0 by default: alerts that fire
  in the same processing step, e.g. one UPS poll, share one message); later
  changes of the group are batched every ``group_interval``.
* A channel is told about an alert once when it fires and once when it
  resolves (if ``send_resolved``), and again every ``repeat_interval`` while
  firing and not acknowledged. Silenced and inhibited alerts are not told.
* Escalation: level *k* channels hear of an unacknowledged firing alert once it
  was first notified ``levels[k].after`` ago (each alert on its own clock); an
  acknowledgement stops repeats and escalation. A channel that was told an alert fires is told when it resolves.
* An alert an agent's local fallback already sent (:meth:`Dispatcher.mark_told`)
  counts as told to the level-0 channels at the time the agent sent it.
* A channel entry ``oncall:ROTA`` becomes one target per channel of the rota, named
  ``<channel>@<rota>`` (the service fills in the person on duty when it renders).
* Time: while a route's ``mute_time_intervals`` hold (or none of its ``active_time_intervals``
  does) its groups send nothing and keep their state, so what was held back goes out when the
  interval ends. With ``failover``, the channels of a level are alternatives in order: the first
  one not failing for ``failover`` is told.

What each channel was told is persisted with the queued messages in one
transaction, so a restart neither repeats nor forgets a notification.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roomwatch.alerts.config import RouteConfig
from roomwatch.alerts.matchers import Matcher, parse_matchers
from roomwatch.alerts.model import FIRING, RESOLVED, Alert
from roomwatch.alerts.rota import ONCALL_PREFIX, split_target
from roomwatch.alerts.timeintervals import TimeIntervals
from roomwatch.channels.base import Channel

__all__ = ["Dispatcher", "Group", "Route"]

log = logging.getLogger("roomwatch.alerts.dispatch")

CHANNEL_FAILING = "NotificationChannelFailing"


@dataclass(slots=True)
class Route:
    index: int
    matchers: tuple[Matcher, ...]
    levels: list[list[str]]  # channels per level, level 0 first
    after: list[float]  # escalation delay per level (0 for level 0)
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    cont: bool
    mute: tuple[str, ...] = ()
    active: tuple[str, ...] = ()
    failover: float | None = None

    @classmethod
    def from_config(cls, index: int, r: RouteConfig, rotas: dict[str, list[str]] | None = None) -> Route:
        """The route of ``r``; ``rotas`` (rota name → its channels) expands ``oncall:ROTA`` entries."""
        def targets(names: list[str]) -> list[str]:
            out: list[str] = []
            for name in names:
                if name.startswith(ONCALL_PREFIX):
                    rota = name[len(ONCALL_PREFIX):]
                    out += [f"{ch}@{rota}" for ch in (rotas or {}).get(rota, [])]
                else:
                    out.append(name)
            return list(dict.fromkeys(out))

        return cls(index, parse_matchers(r.matchers, r.match), [targets(r.channels)] + [targets(lv.channels) for lv in r.levels],
                   [0.0] + [lv.after for lv in r.levels], tuple(r.group_by), r.group_wait, r.group_interval,
                   r.repeat_interval, r.continue_, tuple(r.mute_time_intervals), tuple(r.active_time_intervals),
                   r.failover)


@dataclass(slots=True)
class ChannelState:
    sent: set[str] = field(default_factory=set)  # fps this channel was told are firing
    last_sent: float | None = None


@dataclass(slots=True)
class Group:
    key: str
    route: Route
    labels: dict[str, str]
    alerts: set[str] = field(default_factory=set)
    first_notified: dict[str, float] = field(default_factory=dict)
    channels: dict[str, ChannelState] = field(default_factory=dict)
    next_flush: float = 0.0
    last_flush: float | None = None
    level: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route.index, "labels": self.labels, "first_notified": self.first_notified,
                "last_flush": self.last_flush,
                "channels": {k: {"sent": sorted(v.sent), "last_sent": v.last_sent} for k, v in self.channels.items()}}


@dataclass(slots=True)
class Outgoing:
    """A message decided by a flush: the service renders and queues it."""

    channel: str
    group: Group
    firing: list[Alert]
    resolved: list[Alert]
    reason: str  # firing | resolved | repeat | escalation | resend
    level: int


class Dispatcher:
    """Groups alerts per route and decides the messages; stateless about delivery (that is the outbox)."""

    def __init__(self, routes: list[RouteConfig], channels: dict[str, Channel], clock: Callable[[], float],
                 lookup: Callable[[str], Alert | None], notifiable: Callable[[list[Alert], float], list[Alert]],
                 rotas: dict[str, list[str]] | None = None, intervals: TimeIntervals | None = None,
                 failing_for: Callable[[str, float], float] | None = None):
        self.routes = [Route.from_config(i, r, rotas) for i, r in enumerate(routes)]
        self.channels = channels
        self.intervals = intervals or TimeIntervals([], "UTC")
        #: seconds a channel has been failing (0 while it works), for failover
        self.failing_for = failing_for or (lambda _ch, _now: 0.0)
        self.clock = clock
        self.lookup = lookup  # fp → current alert (active or resolved-but-not-yet-told)
        self.notifiable = notifiable  # filters out silenced and inhibited alerts
        self.groups: dict[str, Group] = {}
        self.resolved: dict[str, Alert] = {}  # resolved alerts some group still has to tell
        self.dirty: set[str] = set()
        self.deleted: set[str] = set()

    def channel(self, target: str) -> Channel | None:
        """The channel of a target (``duty`` or ``voice@rota``)."""
        return self.channels.get(split_target(target)[0])

    def muted(self, route: Route, now: float) -> bool:
        return bool(route.mute or route.active) and self.intervals.muted(route.mute, route.active, now)

    def _channel_levels(self, route: Route, level: int, now: float) -> dict[str, int]:
        """Channel → the lowest escalation level naming it, for the levels 0..``level`` (in the route's order);
        with failover, only the channel of each level that is working."""
        level_of: dict[str, int] = {}
        for k in range(level + 1):
            for ch in self._pick(route, route.levels[k], now):
                level_of.setdefault(ch, k)
        return level_of

    def _pick(self, route: Route, names: list[str], now: float) -> list[str]:
        """With failover, the first channel of ``names`` not failing for ``route.failover`` (or the first)."""
        if route.failover is None or len(names) < 2:
            return names
        for ch in names:
            if self.failing_for(split_target(ch)[0], now) < route.failover:
                return [ch]
        return names[:1]

    def handed_over(self, route: Route, old: str, new: str) -> None:
        """``old``'s queued messages of ``route`` went to ``new`` (failover): ``new`` counts as told what ``old`` was,
        so it is not sent the same alerts again; ``old`` still owes nothing (its messages left with them)."""
        for g in self.groups.values():
            if g.route is not route or old not in g.channels:
                continue
            src = g.channels[old]
            dst = g.channels.setdefault(new, ChannelState())
            dst.sent |= src.sent
            dst.last_sent = max(filter(None, (dst.last_sent, src.last_sent)), default=None)
            src.sent = set()
            self.dirty.add(g.key)

    # -- membership -------------------------------------------------------------------
    def routes_for(self, alert: Alert) -> list[Route]:
        out = []
        for r in self.routes:
            if all(m.matches(alert.labels) for m in r.matchers):
                out.append(r)
                if not r.cont:
                    break
        return out

    def _group_key(self, route: Route, alert: Alert) -> tuple[str, dict[str, str]]:
        if "..." in route.group_by:
            labels = dict(sorted(alert.labels.items()))
        else:
            labels = {k: alert.labels.get(k, "") for k in route.group_by}
        return f"{route.index}:{json.dumps(labels, sort_keys=True, ensure_ascii=False, separators=(',', ':'))}", labels

    def on_alert(self, alert: Alert, now: float) -> None:
        """An alert fired or resolved (or was restored firing): put it in its groups."""
        if alert.state == RESOLVED:
            self.resolved[alert.fp] = alert
        elif alert.state != FIRING:
            return
        for route in self.routes_for(alert):
            key, labels = self._group_key(route, alert)
            g = self.groups.get(key)
            if g is None:
                if alert.state == RESOLVED:
                    continue  # no group ever held it: nobody was told
                g = self.groups[key] = Group(key, route, labels, next_flush=now + route.group_wait)
                self.deleted.discard(key)
            g.alerts.add(alert.fp)

    def mark_told(self, alert: Alert, at: float) -> None:
        """People were told ``alert`` fires at ``at`` by other means (an agent's local fallback, alerts/fallback.py):
        the level-0 channels of its routes count as told then, so they do not send it again; repeats,
        escalation and the resolution follow from ``at`` as if they had sent it."""
        for route in self.routes_for(alert):
            key, _labels = self._group_key(route, alert)
            g = self.groups.get(key)
            if g is None:
                continue  # on_alert made a group for every firing alert; none means it is not firing
            for ch in route.levels[0]:
                st = g.channels.setdefault(ch, ChannelState())
                if alert.fp not in st.sent:
                    st.sent.add(alert.fp)
                    if st.last_sent is None:
                        st.last_sent = at
                    self.dirty.add(key)
            if alert.fp not in g.first_notified:
                g.first_notified[alert.fp] = at
                self.dirty.add(key)

    def mark_resolution_told(self, alert: Alert) -> None:
        """People were told ``alert`` resolved by other means (the agent's local fallback): the level-0 channels
        that count it as told firing forget it now, not at the group's next flush, so a new episode of the same
        alert (same fingerprint) beginning before that flush is news to them, not the episode they were told of."""
        for route in self.routes_for(alert):
            key, _labels = self._group_key(route, alert)
            g = self.groups.get(key)
            if g is None:
                continue
            for ch in route.levels[0]:
                st = g.channels.get(ch)
                if st is not None and alert.fp in st.sent:
                    st.sent.discard(alert.fp)
                    self.dirty.add(key)
            if g.first_notified.pop(alert.fp, None) is not None:
                self.dirty.add(key)

    def restore(self, saved: dict[str, dict[str, Any]], load_resolved: Callable[[str], Alert | None], now: float) -> None:
        """Groups as persisted: what each channel was told. Alerts told firing but resolved meanwhile get resolved."""
        for key, data in saved.items():
            idx = data.get("route")
            if not isinstance(idx, int) or idx >= len(self.routes):
                self.deleted.add(key)
                continue
            route = self.routes[idx]
            g = Group(key, route, data.get("labels", {}), next_flush=now, last_flush=data.get("last_flush"))
            g.first_notified = {k: float(v) for k, v in data.get("first_notified", {}).items()}
            for ch, st in data.get("channels", {}).items():
                g.channels[ch] = ChannelState(set(st.get("sent", [])), st.get("last_sent"))
            for st in g.channels.values():
                for fp in st.sent:
                    current = self.lookup(fp)
                    if current is None or current.state != FIRING:
                        old = load_resolved(fp)
                        if old is not None and old.state == RESOLVED:
                            self.resolved[fp] = old
                    g.alerts.add(fp)
            self.groups[key] = g

    # -- flushing ---------------------------------------------------------------------------
    def _alert(self, fp: str) -> Alert | None:
        a = self.lookup(fp)
        if a is None or a.state != FIRING:
            # resolved (and maybe pending again): the resolution still has to be told
            return self.resolved.get(fp, a)
        return a

    @staticmethod
    def _alert_level(g: Group, a: Alert, now: float) -> int:
        """The escalation level this alert has reached on its own clock (its first notification)."""
        t0 = g.first_notified.get(a.fp)
        if a.ack_at is not None or t0 is None:
            return 0
        after = g.route.after
        for k in range(len(after) - 1, 0, -1):
            if now - t0 >= after[k]:
                return k
        return 0

    def _level(self, g: Group, firing: list[Alert], now: float) -> int:
        return max((self._alert_level(g, a, now) for a in firing), default=0)

    def _escalation_due(self, g: Group, firing: list[Alert], now: float) -> bool:
        """Has an alert reached a level whose channels were not told of it yet?"""
        for a in firing:
            for k in range(1, self._alert_level(g, a, now) + 1):
                for ch in self._pick(g.route, g.route.levels[k], now):
                    st = g.channels.get(ch)
                    if (st is None or a.fp not in st.sent) and _for_channel(a, ch):
                        return True
        return False

    def due(self, now: float) -> list[Group]:
        """Groups to flush now: their timer is up, or an alert reached an escalation level."""
        out = []
        for g in self.groups.values():
            if now >= g.next_flush:
                out.append(g)
            elif len(g.route.levels) > 1 and g.first_notified and not self.muted(g.route, now):
                firing = [a for fp in g.alerts if (a := self._alert(fp)) is not None and a.state == FIRING]
                if self._escalation_due(g, self.notifiable(firing, now), now):
                    out.append(g)
        return out

    def flush(self, g: Group, now: float) -> list[Outgoing]:
        """Decide the messages of one group; update what each channel was told."""
        if self.muted(g.route, now):
            g.next_flush = now + g.route.group_interval  # held back, state kept: sent when the interval ends
            return []
        before = g.to_json()
        alerts = [a for fp in sorted(g.alerts) if (a := self._alert(fp)) is not None]
        firing = self.notifiable([a for a in alerts if a.state == FIRING], now)
        g.level = self._level(g, firing, now)
        level_of = self._channel_levels(g.route, g.level, now)
        # channels of a level no longer reached (acknowledged, resolved) still hear the resolutions they owe
        told_before = [ch for ch, st in g.channels.items() if st.sent and ch not in level_of]
        out: list[Outgoing] = []
        for ch in [*level_of, *told_before]:
            o = self._flush_channel(g, ch, level_of.get(ch), alerts, firing, now)
            if o is not None:
                out.append(o)
        self._forget_resolved(g)
        self._restart_escalation_clocks(g, {a.fp for a in firing})
        self._schedule_next(g, now, before)
        return out

    def _flush_channel(self, g: Group, ch: str, level: int | None, alerts: list[Alert], firing: list[Alert],
                       now: float) -> Outgoing | None:
        """The message for one channel of the group (None: nothing to say); ``level`` None: not an active level."""
        channel = self.channel(ch)
        st = g.channels.setdefault(ch, ChannelState())
        mine = self._alerts_for(g, ch, level, st, firing, now)
        mine_fps = {a.fp for a in mine}
        # a resolution the agent's local fallback already sent counts as told
        resolved = [a for a in alerts if a.fp in st.sent and a.state == RESOLVED and not a.fallback_resolved]
        send_resolved = bool(channel is None or getattr(channel.config, "send_resolved", True))
        new = mine_fps - st.sent
        reason = _reason(g.route, channel, st, mine, bool(new), bool(resolved) and send_resolved, level, now)
        out = None
        if reason and channel is not None:
            out = Outgoing(ch, g, mine, resolved if send_resolved else [], reason, level or 0)
            st.last_sent = now
            if level == 0:
                for fp in new:
                    g.first_notified.setdefault(fp, now)
        st.sent = mine_fps
        return out

    def _alerts_for(self, g: Group, ch: str, level: int | None, st: ChannelState, firing: list[Alert],
                    now: float) -> list[Alert]:
        """The firing alerts channel ``ch`` is to know of."""
        mine = [a for a in firing if _for_channel(a, ch)]
        if level is None:
            return [a for a in mine if a.fp in st.sent]
        if level > 0:
            # an escalation channel hears of an alert once that alert's own clock got there:
            # a new alert in an already escalated group goes to the duty level first
            return [a for a in mine if a.fp in st.sent or self._alert_level(g, a, now) >= level]
        return mine

    def _forget_resolved(self, g: Group) -> None:
        """Resolved (or vanished) alerts leave the group once it told them."""
        for fp in [fp for fp in g.alerts if (a := self._alert(fp)) is None or a.state == RESOLVED]:
            g.alerts.discard(fp)
            g.first_notified.pop(fp, None)
            if not self._held_elsewhere(fp, g):
                self.resolved.pop(fp, None)

    @staticmethod
    def _restart_escalation_clocks(g: Group, firing_fps: set[str]) -> None:
        for fp in list(g.first_notified):
            if fp not in firing_fps:
                g.first_notified.pop(fp, None)  # silenced/inhibited: its escalation clock restarts when told again

    def _schedule_next(self, g: Group, now: float, before: dict[str, Any]) -> None:
        """Next flush after ``group_interval``; an empty group is deleted, a changed one marked for saving."""
        g.last_flush = now
        g.next_flush = now + g.route.group_interval
        if not g.alerts:
            del self.groups[g.key]
            self.deleted.add(g.key)
        elif g.to_json() != before:
            self.dirty.add(g.key)

    def _held_elsewhere(self, fp: str, g: Group) -> bool:
        return any(fp in other.alerts for other in self.groups.values() if other is not g)


def _for_channel(a: Alert, ch: str) -> bool:
    """A channel is not sent the alert about its own failure (the other channels carry it)."""
    return not (a.name == CHANNEL_FAILING and a.labels.get("channel") == split_target(ch)[0])


def _reason(route: Route, channel: Channel | None, st: ChannelState, mine: list[Alert], new: bool, resolved: bool,
            level: int | None, now: float) -> str:
    """Why the channel is told now: firing, escalation, resolved, repeat, resend, or "" (not now)."""
    if new:
        return "escalation" if (level or 0) > 0 else "firing"
    if resolved:
        return "resolved"
    if level is not None and mine and st.last_sent is not None:
        if any(a.ack_at is None for a in mine) and now - st.last_sent >= route.repeat_interval:
            return "repeat"
        resend = getattr(channel, "resend_interval", None) if channel is not None else None
        if resend and now - st.last_sent >= resend:
            return "resend"
    return ""
