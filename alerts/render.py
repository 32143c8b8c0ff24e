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
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from roomwatch.alerts.ackcodes import AckCodes
from roomwatch.alerts.acklink import AckLinks
from roomwatch.alerts.dispatch import Outgoing
from roomwatch.alerts.engine import RuleEngine
from roomwatch.alerts.model import Alert
from roomwatch.alerts.rota import Person, Rota, person_ids, split_target
from roomwatch.alerts.templates import (
    AckInfo,
    AlertView,
    ack_url,
    format_alert_value,
    format_expr,
    render_annotations,
    render_notification,
    where,
)
from roomwatch.channels.base import AlertItem, Channel, Notification
from roomwatch.channels.common import ACK
from roomwatch.channels.recipients import PERSON, addressed
from roomwatch.core import vocabulary as v

__all__ = ["Renderer", "utc"]


def utc(ts: float) -> dt.datetime:
    """Unix seconds as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(ts, dt.UTC)


#: Key of ``Notification.extra`` listing the ids of the firing episodes a message is about (the outbox drops a
#: queued reminder or call once every one of them is acknowledged or over).
ALERT_IDS = "alert_ids"
_REPLY = {"zh-CN": {"sms": "回复 1 或 ACK {code} 确认", "dingtalk": "@机器人 确认 {code}"},
          "en": {"sms": "reply 1 or ACK {code} to acknowledge", "dingtalk": "@robot ACK {code} to acknowledge"}}


class Renderer:
    """Views, annotations and notifications in the configured language and time zone.

    With ``links`` the messages carry one-tap acknowledge links (else the status page's); with ``codes``
    every firing alert gets its short reply code, and channels in ``reply_channels`` (channel → "sms" or
    "dingtalk") say how to reply. ``rotas`` and ``people`` resolve ``<channel>@<rota>`` targets to the
    person on duty when the message is made.
    """

    def __init__(self, engine: RuleEngine, channels: Mapping[str, Channel], lang: str, tz: ZoneInfo, external_url: str,
                 links: AckLinks | None = None, codes: AckCodes | None = None,
                 rotas: Mapping[str, Rota] | None = None, people: Mapping[str, Person] | None = None,
                 reply_channels: Mapping[str, str] | None = None):
        self.engine = engine
        self.channels = channels
        self.lang = lang
        self.tz = tz
        self.external_url = external_url
        self.links = links
        self.codes = codes
        self.rotas = rotas or {}
        self.people = people or {}
        self.reply_channels = reply_channels or {}
        #: channel name → reason it is failing, for NotificationChannelFailing's annotations
        self.channel_reason: Callable[[str], str] = lambda _name: ""

    def person(self, rota: str, now: float) -> dict[str, str] | None:
        """The person on duty of ``rota`` at ``now`` as a notification carries it (None: no such rota)."""
        r = self.rotas.get(rota)
        if r is None:
            return None
        name = r.at(now).person
        p = self.people.get(name)
        return person_ids(p) if p is not None else {"name": name}

    def describe(self, a: Alert) -> str:
        """One line for an SMS answer: "机房漏水（县政务中心 / 1号机房）"."""
        summary = self.annotations(a).get("summary") or a.name
        place = where(a.labels)
        return f"{summary}（{place}）" if place and self.lang == "zh-CN" else f"{summary} ({place})" if place else summary

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
                         self._with_reason(a, templates), a.resolve_reason)

    def annotations(self, a: Alert, lang: str | None = None) -> dict[str, str]:
        """Summary, description … of ``a`` in ``lang`` (default: the configured language)."""
        return render_annotations(self.view(a), lang or self.lang, self.tz)

    def _with_reason(self, a: Alert, templates: Mapping[str, Any]) -> Mapping[str, Any]:
        """NotificationChannelFailing says why (the modem's check, the service's last answer)."""
        if a.metric != v.NOTIFICATION_CHANNEL_UP or a.state == "resolved":
            return templates
        reason = self.channel_reason(a.labels.get("channel", ""))
        if not reason:
            return templates
        reason = reason.replace("{{", "{ {")

        def tail(lang: str) -> str:
            return f"（原因：{reason}）" if lang == "zh-CN" else f" (reason: {reason})"

        desc = templates.get("description", "")
        if isinstance(desc, Mapping):
            desc = {lang: text + tail(lang) for lang, text in desc.items()}
        else:
            desc = str(desc) + tail(self.lang)
        return {**templates, "description": desc, "reason": reason}

    def acks(self, o: Outgoing, now: float, channel: str, person: dict[str, str] | None) -> dict[str, AckInfo]:
        """How each firing alert of ``o`` is acknowledged from this message."""
        out: dict[str, AckInfo] = {}
        reply = self.reply_channels.get(channel, "")
        for a in o.firing:
            if self.links is not None:
                info = AckInfo(self.links.url(a.id, now, channel, (person or {}).get("name", "")))
            else:
                info = AckInfo(ack_url(self.external_url, a.id), one_tap=False)
            if self.codes is not None and reply:
                code = self.codes.code_for(a.id)
                info = AckInfo(info.url, info.one_tap, _REPLY.get(self.lang, _REPLY["zh-CN"])[reply].format(code=code))
            out[a.id] = info
        return out

    def notification(self, o: Outgoing, now: float) -> Notification:
        """The message for one target: items with annotations, and title/text/markdown cut to its size."""
        name, rota = split_target(o.channel)
        person = self.person(rota, now) if rota else None
        acks = self.acks(o, now, name, person)
        alerts = [(a, "firing") for a in o.firing] + [(a, "resolved") for a in o.resolved]
        views = [self.view(a, s) for a, s in alerts]
        items = [self._item(a, status, view, acks.get(a.id) if status == "firing" else None)
                 for (a, status), view in zip(alerts, views, strict=True)]
        status = "firing" if o.firing else "resolved"
        channel = self.channels[name]
        group_labels = {k: val for k, val in o.group.labels.items() if val}
        title, text, markdown = render_notification(
            views, status=status, reason=o.reason, lang=self.lang, tz=self.tz, external_url=self.external_url, now=now,
            max_bytes=type(channel).max_bytes, group_labels=group_labels,
            escalation_after=o.group.route.after[o.level] if o.level < len(o.group.route.after) else 0.0, acks=acks)
        common, common_ann = _common(items)
        key = "{}:{" + ", ".join(f'{k}="{val}"' for k, val in sorted(group_labels.items())) + "}"
        n = Notification(f"route{o.group.route.index}/{key}", status, name, items, title, text, markdown,
                         group_labels, common, common_ann, self.external_url, o.reason, o.level)
        if person is not None:
            n.extra[PERSON] = person
        if o.firing:
            n.extra[ALERT_IDS] = [a.id for a in o.firing]
            first = acks.get(o.firing[0].id)
            if first is not None:
                code = first.reply and self.codes.code_for(o.firing[0].id) if self.codes is not None else ""
                n.extra[ACK] = {"url": first.url, "code": code or ""}
            if self.codes is not None and self.reply_channels.get(name) == "sms":
                numbers = addressed(n, "phone", getattr(channel.config, "phone_numbers", []))
                self.codes.sent(numbers, [a.id for a in o.firing], name)
        return n

    def _item(self, a: Alert, status: str, view: AlertView, ack: AckInfo | None = None) -> AlertItem:
        ann = render_annotations(view, self.lang, self.tz)
        if ack is not None and ack.one_tap:
            ann["ack_url"] = ack.url  # webhook receivers get the one-tap link too
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
