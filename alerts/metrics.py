"""Alerting's own series on the collector's /metrics: alerts by state, channel health, notifications, silences."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from roomwatch.alerts.engine import RuleEngine
from roomwatch.alerts.outbox import Outbox
from roomwatch.alerts.silences import SilenceStore
from roomwatch.core import vocabulary as v
from roomwatch.core.exposition import Family, render_labels

__all__ = ["alert_families", "counter_family"]

_OUTCOMES = ("delivered", "partial", "retry", "give_up", "expired", "cancelled")


def counter_family(name: str, label: str, counts: Mapping[Any, int], labels: tuple[str, ...] = ()) -> Family:
    """A counter family from a mapping: key (or key tuple, named ``labels``) → count."""
    samples = []
    for key, n in sorted(counts.items()):
        names = labels or (label,)
        values = key if isinstance(key, tuple) else (key,)
        samples.append((render_labels(dict(zip(names, values, strict=True))), float(n)))
    return Family(name, v.METRICS[name].help, "counter", samples)


def alert_families(engine: RuleEngine, outbox: Outbox, silences: SilenceStore, now: float,
                   trouble: Callable[[str], bool] = lambda _name: False) -> list[Family]:
    """``roomwatch_alerts``, ``roomwatch_notification_channel_up``, ``roomwatch_notifications_total``,
    ``roomwatch_notifications_pending`` and ``roomwatch_silences`` as they are at ``now``; ``trouble``
    names channels a health check found broken (a modem without network)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for a in engine.active.values():
        counts[(a.name, a.severity, a.state)] += 1
    alerts = [(render_labels({"alertname": n, "severity": s, "state": st}), float(c))
              for (n, s, st), c in sorted(counts.items())]
    up: list[tuple[str, float]] = []
    total: list[tuple[str, float]] = []
    pending: list[tuple[str, float]] = []
    queued = outbox.pending()
    for name in sorted(outbox.status):
        st = outbox.status[name]
        block = render_labels({"channel": name})
        up.append((block, 1.0 if st.up(now, outbox.failing_after) and not trouble(name) else 0.0))
        pending.append((block, float(queued.get(name, 0))))
        for outcome, n in zip(_OUTCOMES, (st.delivered, st.partial, st.retried, st.given_up, st.expired,
                                                     st.cancelled), strict=True):
            total.append((render_labels({"channel": name, "outcome": outcome}), float(n)))
    states = Counter(s.state(now) for s in silences.items.values())
    silenced = [(render_labels({"state": k}), float(states.get(k, 0))) for k in ("active", "pending")]
    d = v.METRICS
    return [
        Family(v.ALERTS, d[v.ALERTS].help, "gauge", alerts),
        Family(v.NOTIFICATION_CHANNEL_UP, d[v.NOTIFICATION_CHANNEL_UP].help, "gauge", up),
        Family(v.NOTIFICATIONS, d[v.NOTIFICATIONS].help, "counter", total),
        Family(v.NOTIFICATIONS_PENDING, d[v.NOTIFICATIONS_PENDING].help, "gauge", pending),
        Family(v.SILENCES, d[v.SILENCES].help, "gauge", silenced),
    ]
