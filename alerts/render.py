"""Alerts as people read them: views of alerts, their annotations, and notifications for a channel.

:class:`Renderer` joins an :class:`~roomwatch.alerts.model.Alert` with the rule
that raised it (the threshold, ``for``, annotation templates) into an
:class:`~roomwatch.alerts.templates.AlertView`, and turns the dispatcher's
:class:`~roomwatch.alerts.dispatch.Outgoing` into the
:class:`~roomwatch.channels.base.Notification` the outbox stores and a channel
sends. The wording itself is :mod:`roomwatch.alerts.templates`'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from roomwatch.alerts.dispatch import Outgoing
from roomwatch.alerts.engine import RuleEngine
from roomwatch.alerts.model import Alert
from roomwatch.alerts.templates import (
    AlertView,
    ack_url,
    format_alert_value,
    format_expr,
    render_annotations,
    render_notification,
)
from roomwatch.channels.base import AlertItem, Channel, Notification

__all__ = ["Renderer", "utc"]


def utc(ts: float) -> dt.datetime:
    """Unix seconds as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(ts, dt.UTC)


class Renderer:
    """Views, annotations and notifications in the configured language and time zone."""

    def __init__(self, engine: RuleEngine, channels: Mapping[str, Channel], lang: str, tz: ZoneInfo, external_url: str):
        self.engine = engine
        self.channels = channels
        self.lang = lang
        self.tz = tz
        self.external_url = external_url

    def view(self, a: Alert, status: str | None = None) -> AlertView:
        """``a`` with its rule's threshold, ``for`` and annotation templates (none if the rule is gone)."""
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
        """Summary, description … of ``a`` in ``lang`` (default: the configured language)."""
        return render_annotations(self.view(a), lang or self.lang, self.tz)

    def notification(self, o: Outgoing, now: float) -> Notification:
        """The message for one channel: items with annotations, and title/text/markdown cut to its size."""
        alerts = [(a, "firing") for a in o.firing] + [(a, "resolved") for a in o.resolved]
        views = [self.view(a, s) for a, s in alerts]
        items = [self._item(a, status, view) for (a, status), view in zip(alerts, views, strict=True)]
        status = "firing" if o.firing else "resolved"
        channel = self.channels[o.channel]
        group_labels = {k: val for k, val in o.group.labels.items() if val}
        title, text, markdown = render_notification(
            views, status=status, reason=o.reason, lang=self.lang, tz=self.tz, external_url=self.external_url, now=now,
            max_bytes=type(channel).max_bytes, group_labels=group_labels,
            escalation_after=o.group.route.after[o.level] if o.level < len(o.group.route.after) else 0.0)
        common, common_ann = _common(items)
        key = "{}:{" + ", ".join(f'{k}="{val}"' for k, val in sorted(group_labels.items())) + "}"
        return Notification(f"route{o.group.route.index}/{key}", status, o.channel, items, title, text, markdown,
                            group_labels, common, common_ann, self.external_url, o.reason, o.level)

    def _item(self, a: Alert, status: str, view: AlertView) -> AlertItem:
        ann = render_annotations(view, self.lang, self.tz)
        # value and threshold as people read them, for SMS templates ({value}, {threshold})
        ann.setdefault("value", format_alert_value(a.metric, a.value, view.when, self.lang))
        if view.when:
            ann.setdefault("threshold", format_expr(a.metric, view.when, self.lang))
        ends = utc(a.resolved_at) if status == "resolved" and a.resolved_at is not None else None
        return AlertItem(a.fp, status, dict(a.labels), ann, utc(a.fired_at or a.active_since), ends, a.value,
                         ack_url(self.external_url, a.id))


def _common(items: list[AlertItem]) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations every item shares (Alertmanager's commonLabels/commonAnnotations)."""
    common = dict(items[0].labels) if items else {}
    common_ann = dict(items[0].annotations) if items else {}
    for item in items[1:]:
        common = {k: val for k, val in common.items() if item.labels.get(k) == val}
        common_ann = {k: val for k, val in common_ann.items() if item.annotations.get(k) == val}
    return common, common_ann
