"""The rule engine: samples and events in, alert transitions out.

Evaluation is event-driven: :meth:`RuleEngine.observe_batch` runs inside the
collector's ingest call, so a sample or event crossing a ``for: 0s`` threshold
makes the alert fire in that same step. :meth:`RuleEngine.tick` (every
``rules.evaluation_interval``) promotes pending alerts whose ``for`` has
elapsed, re-checks time windows, and resolves alerts whose series went silent.

Rules are indexed by metric, and each incoming series is resolved once to the
(rule, condition) pairs that select it, so a sample of a metric no rule uses
costs one dict lookup.

Semantics worth knowing (docs/alerting.md explains them to users):

* **Sample time.** A sample is evaluated at its own timestamp (clock-skew
  corrected). ``for`` is measured between sample timestamps, or against the
  collector clock by the timer.
* **Late samples.** A sample older than the newest one already evaluated for
  the same series and condition is ignored here (the history store keeps it):
  an agent's spooled backlog arriving after fresh data can neither re-fire
  nor resolve a current alert.
* **Hysteresis.** While an alert fires, a condition stays true until its
  ``clear`` expression holds; a pending alert needs ``when`` throughout.
* **Rates and predictions.** A ``rate … per …`` or ``reaches … within …``
  condition keeps the series' samples of its ``window`` (:mod:`alerts.trend`)
  and tests the fitted slope or the time until the fit reaches a value; until
  the samples span half the window it says nothing (the state is kept). A
  prediction's limit may be another series with the same labels (the agent's
  ``roomwatch_ups_shutdown_sequence_seconds``), kept like a gate's value.
* **Silence of a series.** An alert whose series receives nothing for
  ``series_expire`` is resolved ("no data") only while its agent is up; while
  the agent is down it keeps its state (``AgentDown`` covers the room).
  State metrics (door, leak, smoke, UPS on battery / battery low) are reported
  on change, so their alerts go stale only after a day of silence.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from roomwatch.alerts.model import FIRING, PENDING, RESOLVED, Alert, fingerprint
from roomwatch.alerts.rules import Rule
from roomwatch.alerts.timewindow import WorkingHours
from roomwatch.alerts.trend import Trend
from roomwatch.core.interning import label_pairs, string
from roomwatch.core.interning import labels as interned_labels
from roomwatch.core.vocabulary import STATE_EVENTS
from roomwatch.core.wire import EventRecord, SampleRecord

__all__ = ["RuleEngine", "SeriesState"]

log = logging.getLogger("roomwatch.alerts")

#: event type → (metric, value): a state event counts as a sample of its metric.
_EVENT_SAMPLES: dict[str, tuple[str, float]] = {}
for _metric, (_on, _off) in STATE_EVENTS.items():
    _EVENT_SAMPLES[_on] = (_metric, 1.0)
    _EVENT_SAMPLES[_off] = (_metric, 0.0)


@dataclass(slots=True, eq=False)
class SeriesState:
    """What one rule knows about one label set."""

    rule: Rule
    labels: dict[str, str]  # series labels (agent included)
    key: tuple[tuple[str, str], ...]
    fp: str
    flags: list[bool]
    values: list[float | None]
    last_ts: list[int]  # ms, per condition
    seen_at: float = 0.0  # collector clock of the last sample (staleness)
    gate: bool = True
    alert: Alert | None = None
    event_at: float = 0.0


@dataclass(slots=True)
class _Entry:
    state: SeriesState
    cond: int
    when: Callable[[float], bool]
    trend: Trend | None = None  # windowed conditions (rate, prediction) only


@dataclass
class EngineStats:
    samples: int = 0
    evaluations: int = 0
    transitions: int = 0
    late: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class RuleEngine:
    """Holds rule states; collects alert transitions in :attr:`changes` for the service to store and route."""

    def __init__(self, rules: list[Rule], hours: WorkingHours, clock: Callable[[], float],
                 stale_after: float = 300.0, agent_up: Callable[[str], bool] | None = None):
        self.rules = rules
        self.hours = hours
        self.clock = clock
        self.stale_after = stale_after
        self.agent_up = agent_up or (lambda _agent: True)
        self.by_metric: dict[str, list[tuple[Rule, int]]] = {}
        self.gates: dict[str, list[tuple[Rule, Callable[[float], bool]]]] = {}  # gate metric → (rule, its test)
        self.by_event: dict[str, list[Rule]] = {}
        self.clear_events: dict[str, list[Rule]] = {}
        for r in rules:
            for i, c in enumerate(r.conds):
                self.by_metric.setdefault(c.metric, []).append((r, i))
            if r.gate:
                self.gates.setdefault(r.gate[0], []).append((r, r.gate[1]))
            for c in r.conds:
                if c.limit_metric:
                    # A prediction's limit series: its values are kept as a gate's are (no rule of its own).
                    self.gates.setdefault(c.limit_metric, [])
            if r.event:
                self.by_event.setdefault(r.event, []).append(r)
                if r.clear_event:
                    self.clear_events.setdefault(r.clear_event, []).append(r)
        self.rules_by_uid = {r.uid: r for r in rules}
        self.states: dict[tuple[int, tuple[tuple[str, str], ...]], SeriesState] = {}
        self._alias: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[_Entry]] = {}
        self._gate_values: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, int]] = {}
        self.active: dict[str, Alert] = {}  # fp → pending/firing alert
        self._owner: dict[str, SeriesState] = {}  # fp → state
        self._pending: set[SeriesState] = set()
        self._windowed: set[SeriesState] = set()
        self._restored: dict[str, Alert] = {}
        self.changes: list[Alert] = []
        self.dropped: list[Alert] = []  # pending alerts that never fired (deleted from the store)
        self.stats = EngineStats()
        self.agent_labels: dict[str, dict[str, str]] = {}  # agent → site/room seen on its series
        self.version = 0  # bumps on every transition (cache key for inhibition)

    # ------------------------------------------------------------ ingest
    def observe_batch(self, agent_id: str, samples: Iterable[SampleRecord], events: Iterable[EventRecord],
                      skew_ms: int = 0) -> None:
        """Evaluate one accepted batch: every sample at its own time, then the events."""
        by_metric = self.by_metric
        gates = self.gates
        alias = self._alias
        now = self.clock()
        n = 0
        for s in samples:
            n += 1
            metric = s.metric
            if metric not in by_metric and metric not in gates:
                continue
            key = (agent_id, metric, tuple(s.labels.items()))
            entries = alias.get(key)
            if entries is None:
                entries = self._resolve(agent_id, metric, s.labels, key)
            ts = s.ts + skew_ms
            value = s.value
            if metric in gates:
                self._gate(metric, self._labels(agent_id, s.labels), value, ts)
            for e in entries:
                st, ci = e.state, e.cond
                if e.trend is not None:
                    self._apply_trend(e, value, ts, now)
                    continue
                # Fast path, most samples: no alert, condition false before and now.
                if st.alert is None and not st.flags[ci] and not e.when(value) and ts >= st.last_ts[ci]:
                    st.last_ts[ci] = ts
                    st.values[ci] = value
                    st.seen_at = now
                    continue
                self._apply(st, ci, value, ts, now)
        self.stats.samples += n
        for ev in events:
            self._event(agent_id, ev, now)

    def observe(self, metric: str, labels: dict[str, str], value: float, ts_ms: int) -> None:
        """One sample from the collector itself (agent up, channel up)."""
        agent = labels.get("agent", "")
        self.observe_batch(agent, [SampleRecord(metric, labels, value, ts_ms)], [])

    @staticmethod
    def _labels(agent_id: str, labels: dict[str, str]) -> dict[str, str]:
        if agent_id and labels.get("agent") != agent_id:
            return {**labels, "agent": agent_id}
        return labels

    def _resolve(self, agent_id: str, metric: str, raw: dict[str, str],
                 key: tuple[str, str, tuple[tuple[str, str], ...]]) -> list[_Entry]:
        labels = self._labels(agent_id, raw)
        if agent_id and ("site" in labels or "room" in labels):
            info = self.agent_labels.setdefault(agent_id, {})
            for k in ("site", "room"):
                if k in labels:
                    info[k] = labels[k]
        entries = []
        for rule, ci in self.by_metric.get(metric, ()):
            cond = rule.conds[ci]
            if all(m.matches(labels) for m in cond.matchers):
                trend = Trend(cond.window) if cond.window is not None else _DIRECT if cond.limit_metric else None
                entries.append(_Entry(self._state(rule, labels), ci, cond.when, trend))
        # shared strings and pairs: this key lives as long as the series
        self._alias[(string(agent_id), string(metric), label_pairs(raw))] = entries
        return entries

    def _state(self, rule: Rule, labels: dict[str, str]) -> SeriesState:
        pairs = label_pairs(labels)
        skey = tuple(sorted(pairs))
        st = self.states.get((rule.index, skey))
        if st is None:
            n = max(1, len(rule.conds))
            alert_labels = self._alert_labels(rule, labels)
            st = SeriesState(rule, interned_labels(pairs), skey, fingerprint(alert_labels, rule.fp_salt), [False] * n,
                             [None] * n, [-(2**62)] * n)
            self.states[(rule.index, skey)] = st
            if rule.window != "always":
                self._windowed.add(st)
            restored = self._restored.pop(st.fp, None)
            if restored is not None:
                self._adopt(st, restored)
        return st

    @staticmethod
    def _alert_labels(rule: Rule, labels: dict[str, str]) -> dict[str, str]:
        return {**labels, **rule.labels, "alertname": rule.name, "severity": rule.severity}

    def _apply(self, st: SeriesState, ci: int, value: float, ts: int, now: float) -> None:
        if ts < st.last_ts[ci]:
            self.stats.late += 1
            return
        st.last_ts[ci] = ts
        st.values[ci] = value
        st.seen_at = now
        cond = st.rule.conds[ci]
        old = st.flags[ci]
        alert = st.alert
        if old and alert is not None and alert.state == FIRING and cond.clear is not None:
            new = not cond.clear(value)  # hysteresis: a firing alert holds until clear
        else:
            new = cond.when(value)
        if not new and not old and alert is None:
            return  # the common case: nothing wrong, nothing was
        self._set_flag(st, ci, new, value, ts)

    def _apply_trend(self, e: _Entry, sample: float, ts: int, now: float) -> None:
        """A sample of a windowed condition: refit, then test the slope or the predicted time."""
        st, ci, trend = e.state, e.cond, e.trend
        assert trend is not None
        if ts < st.last_ts[ci]:
            self.stats.late += 1
            return
        st.last_ts[ci] = ts
        st.seen_at = now
        cond = st.rule.conds[ci]
        if cond.derive == "value":  # a threshold that is another series: the sample itself is compared
            value: float | None = sample
        elif cond.derive == "rate":
            slope = trend.add_slope(ts / 1000.0, sample)
            value = None if slope is None else slope * cond.when_expr.per
        else:
            trend.add(ts / 1000.0, sample)
            value = trend.seconds_to(cond.when_expr.target)
        if value is None:
            return  # too few samples yet: say nothing, keep the state
        st.values[ci] = value
        old = st.flags[ci]
        alert = st.alert
        if old and alert is not None and alert.state == FIRING and cond.clear is not None:
            new = not cond.clear(value)
        elif cond.limit_metric is not None:
            limit = self._gate_values.get((cond.limit_metric, st.key))
            new = limit is not None and _LIMIT_OPS[cond.when_expr.limit_op](value, limit[0])
        else:
            new = cond.when(value)
        if not new and not old and alert is None:
            return
        self._set_flag(st, ci, new, value, ts)

    def _set_flag(self, st: SeriesState, ci: int, new: bool, value: float, ts: int) -> None:
        alert = st.alert
        st.flags[ci] = new
        if alert is not None and (new or len(st.flags) == 1) and math.isfinite(value):
            alert.value = value
        self._evaluate(st, ts / 1000.0)

    def _gate(self, metric: str, labels: dict[str, str], value: float, ts: int) -> None:
        skey = tuple(sorted(labels.items()))
        before = self._gate_values.get((metric, skey))
        if before is not None and ts < before[1]:
            return  # late: keep the newer gate value
        self._gate_values[(metric, skey)] = (value, ts)
        for rule, test in self.gates[metric]:
            st = self.states.get((rule.index, skey))
            ok = test(value)
            if st is None:
                continue
            if st.gate != ok:
                st.gate = ok
                self._evaluate(st, ts / 1000.0)

    def _gate_ok(self, st: SeriesState) -> bool:
        gate = st.rule.gate
        if gate is None:
            return True
        found = self._gate_values.get((gate[0], st.key))
        return found is not None and gate[1](found[0])

    def _event(self, agent_id: str, ev: EventRecord, now: float) -> None:
        mapped = _EVENT_SAMPLES.get(ev.type)
        if mapped is not None and (mapped[0] in self.by_metric or mapped[0] in self.gates):
            # A state event is a sample of its metric (the agent usually sends both; the later one is a no-op).
            self.observe_batch(agent_id, [SampleRecord(mapped[0], ev.labels, mapped[1], ev.ts)], [])
        for rule in self.by_event.get(ev.type, ()):
            labels = self._labels(agent_id, ev.labels)
            if all(m.matches(labels) for m in rule.extra["matchers"]):
                st = self._state(rule, labels)
                st.flags[0], st.values[0], st.seen_at, st.event_at = True, ev.value, now, ev.ts / 1000.0
                self._evaluate(st, ev.ts / 1000.0)
        for rule in self.clear_events.get(ev.type, ()):
            labels = self._labels(agent_id, ev.labels)
            cleared = self.states.get((rule.index, tuple(sorted(labels.items()))))
            if cleared is not None and cleared.flags[0]:
                cleared.flags[0] = False
                self._evaluate(cleared, ev.ts / 1000.0)

    # ------------------------------------------------------------ transitions
    def _in_window(self, rule: Rule, t: float) -> bool:
        if rule.window == "always":
            return True
        inside = self.hours.contains(t)
        return inside if rule.window == "working_hours" else not inside

    def _evaluate(self, st: SeriesState, t: float) -> None:
        self.stats.evaluations += 1
        rule = st.rule
        if rule.gate is not None:
            st.gate = self._gate_ok(st)
        active = st.gate and any(st.flags) and self._in_window(rule, t)
        alert = st.alert
        if active:
            if alert is None:
                ci = st.flags.index(True)
                metric = rule.event or rule.conds[ci].metric
                alert = Alert(st.fp, rule.name, rule.uid, rule.severity, self._alert_labels(rule, st.labels),
                              dict(st.labels), metric, PENDING, t, value=st.values[ci])
                st.alert = alert
                self.active[st.fp] = alert
                self._owner[st.fp] = st
                if rule.for_ > 0 and not rule.event:
                    self._pending.add(st)
                    self._changed(alert)
                else:
                    self._fire(st, t)
            elif alert.state == PENDING and t - alert.active_since >= rule.for_:
                self._fire(st, t)
        elif alert is not None:
            if alert.state == PENDING:
                self._drop(st)
            elif alert.state == FIRING:
                self._resolve_alert(st, t)

    def _fire(self, st: SeriesState, t: float) -> None:
        alert = st.alert
        assert alert is not None
        alert.state = FIRING
        alert.fired_at = t
        self._pending.discard(st)
        self._changed(alert)

    def _drop(self, st: SeriesState) -> None:
        alert = st.alert
        assert alert is not None
        st.alert = None
        self._pending.discard(st)
        self.active.pop(alert.fp, None)
        self._owner.pop(alert.fp, None)
        alert.state = RESOLVED
        self.dropped.append(alert)
        self.version += 1

    def _resolve_alert(self, st: SeriesState, t: float, reason: str = "") -> None:
        alert = st.alert
        assert alert is not None
        st.alert = None
        if reason:  # no data: forget the last values; a window or gate closing keeps them
            st.flags = [False] * len(st.flags)
        self.active.pop(alert.fp, None)
        self._owner.pop(alert.fp, None)
        alert.state = RESOLVED
        alert.resolved_at = max(t, alert.fired_at or t)
        alert.resolve_reason = reason
        self._changed(alert)

    def _changed(self, alert: Alert) -> None:
        self.changes.append(alert)
        self.stats.transitions += 1
        self.version += 1

    def take_changes(self) -> tuple[list[Alert], list[Alert]]:
        """(transitions since the last call, pending alerts dropped without firing)."""
        changes, dropped = self.changes, self.dropped
        self.changes, self.dropped = [], []
        return changes, dropped

    # ------------------------------------------------------------ timer
    def tick(self, now: float | None = None) -> None:
        """Promote pending alerts whose ``for`` elapsed, apply time windows, resolve silent series."""
        now = self.clock() if now is None else now
        stale = self.stale_after
        for st in list(self._pending):
            alert = st.alert
            if alert is None or alert.state != PENDING:
                self._pending.discard(st)
                continue
            # Fire on the timer only on fresh data: a value last seen long ago proves nothing now.
            limit = STATE_STALE_AFTER if alert.metric in STATE_EVENTS else stale
            if now - alert.active_since >= st.rule.for_ and now - st.seen_at <= max(limit, stale):
                self._evaluate(st, max(now, alert.active_since + st.rule.for_))
        for st in list(self._windowed):
            if st.alert is not None or any(st.flags):
                self._evaluate(st, now)
        for fp, alert in list(self.active.items()):
            owner = self._owner.get(fp)
            if owner is None:
                continue
            rule = owner.rule
            if rule.event and not rule.clear_event and now - owner.event_at >= rule.resolve_after:
                owner.flags[0] = False
                self._evaluate(owner, now)
                continue
            agent = owner.labels.get("agent")
            if alert.metric in _VIRTUAL or not agent:
                continue  # fed by the collector itself every tick
            limit = STATE_STALE_AFTER if alert.metric in STATE_EVENTS else stale
            if now - owner.seen_at > max(limit, stale) and self.agent_up(agent):
                if alert.state == PENDING:
                    self._drop(owner)
                else:
                    self._resolve_alert(owner, now, "no data")

    def gc(self, now: float | None = None) -> int:
        """Forget quiet states of series gone silent (label churn must not grow memory); return how many."""
        now = self.clock() if now is None else now
        dead = [k for k, st in self.states.items()
                if st.alert is None and not any(st.flags) and now - st.seen_at > self.stale_after]
        for k in dead:
            self._windowed.discard(self.states.pop(k))
        if dead:
            alive = set(map(id, self.states.values()))
            self._alias = {k: es for k, es in self._alias.items() if all(id(e.state) in alive for e in es)}
        return len(dead)

    # ------------------------------------------------------------ restore / ack
    def restore(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Adopt pending/firing alerts from the store after a restart; return those whose rule is gone."""
        now = self.clock()
        orphans = []
        for alert in alerts:
            rule = self.rules_by_uid.get(alert.rule_uid)
            if rule is None or rule.name != alert.name:
                orphans.append(alert)
                continue
            agent = alert.series_labels.get("agent")
            if agent:
                info = self.agent_labels.setdefault(agent, {})
                for k in ("site", "room"):
                    if k in alert.series_labels:
                        info.setdefault(k, alert.series_labels[k])
            self._restored[alert.fp] = alert
            st = self._state(rule, alert.series_labels)
            st.seen_at = now
            if st.alert is None:  # labels changed shape (rule labels edited): identity differs
                self._restored.pop(alert.fp, None)
                orphans.append(alert)
        for alert in orphans:
            alert.state = RESOLVED
            alert.resolved_at = now
            alert.resolve_reason = "rule removed"
            self._changed(alert)
        return orphans

    def _adopt(self, st: SeriesState, alert: Alert) -> None:
        st.alert = alert
        for i, c in enumerate(st.rule.conds):
            if c.metric == alert.metric:
                st.flags[i] = True
                st.values[i] = alert.value
        if st.rule.event:
            st.flags[0], st.event_at = True, alert.active_since
        if not any(st.flags):
            st.flags[0] = True
        self.active[alert.fp] = alert
        self._owner[alert.fp] = st
        if alert.state == PENDING:
            self._pending.add(st)

    def state_of(self, fp: str) -> SeriesState | None:
        return self._owner.get(fp)


#: How a condition compares with its limit series.
_LIMIT_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
#: The entry marker of a condition compared with another series: no fit, the sample itself.
_DIRECT = Trend(0.0)

_VIRTUAL = frozenset({"roomwatch_agent_up", "roomwatch_notification_channel_up"})
#: Door, leak, smoke and UPS states are reported when they change (a listening device says nothing
#: while the door stays open): their alerts go stale only after a day without any report.
STATE_STALE_AFTER = 86400.0
