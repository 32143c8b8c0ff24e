"""Messages for people: annotations and notification title/text/markdown, zh-CN by default, English by config.

Every message says what (summary), where (site / room / device), the value and
the threshold, since when, and how to acknowledge: a one-tap link (:class:`AckInfo`,
made by :mod:`roomwatch.alerts.acklink`; the status page's link when links are off) and,
for a channel that takes replies, the reply ("回复 1 或 ACK 4821 确认") near the top.
Channels never format text: they take ``title``, ``text`` or ``markdown`` from
the :class:`~roomwatch.channels.base.Notification`; text is rendered here to fit
the channel's ``max_bytes``, dropping whole alerts first ("… and N more").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from roomwatch.alerts.conditions import Expr, parse_expr
from roomwatch.alerts.timewindow import format_time

__all__ = ["AckInfo", "AlertView", "cut_bytes", "format_alert_value", "format_seconds", "format_value", "render_annotations",
           "render_notification"]

_STATES: dict[str, dict[str, tuple[str, str]]] = {
    # metric: {language: (word for 1, word for 0)}
    "roomwatch_door_open": {"zh-CN": ("打开", "关闭"), "en": ("open", "closed")},
    "roomwatch_water_leak_detected": {"zh-CN": ("有水", "正常"), "en": ("wet", "dry")},
    "roomwatch_smoke_detected": {"zh-CN": ("报警", "正常"), "en": ("alarm", "clear")},
    "roomwatch_ups_on_battery": {"zh-CN": ("电池供电", "市电供电"), "en": ("on battery", "on mains")},
    "roomwatch_ups_battery_low": {"zh-CN": ("电量低", "正常"), "en": ("low", "ok")},
    "roomwatch_ups_battery_replace_needed": {"zh-CN": ("需更换", "正常"), "en": ("replace", "ok")},
    "roomwatch_device_up": {"zh-CN": ("在线", "离线"), "en": ("up", "down")},
    "roomwatch_agent_up": {"zh-CN": ("在线", "失联"), "en": ("up", "down")},
    "roomwatch_notification_channel_up": {"zh-CN": ("正常", "发送失败"), "en": ("ok", "failing")},
}

_WORDS = {
    "zh-CN": {
        "firing": "告警", "resolved": "恢复", "critical": "严重", "warning": "警告", "info": "提示",
        "where": "位置", "value": "当前", "threshold": "阈值", "since": "开始", "resolved_at": "恢复",
        "lasted": "持续", "ago": "已持续", "ack": "确认", "acked": "已由 {by} 确认", "more": "……另有 {n} 条，详见 {url}",
        "alerts": "{n} 条告警", "repeat": "【重复提醒】以下告警仍未确认", "escalation": "【升级通知】以下告警 {after}内无人确认",
        "test": "【测试】这是一条 roomwatch 测试消息，收到说明通道配置正确。", "test_title": "【测试】roomwatch 测试消息",
        "sep": "：", "or": " 或 ", "and": " 且 ",
        "no data": "（无数据）", "rule removed": "（规则已删除）", "page": "状态页", "ack_link": "在状态页确认",
        "per": "每", "reaches": "{within}内达到 {target}", "sequence": "关机流程所需时间", "ack_tap": "一键确认",
    },
    "en": {
        "firing": "FIRING", "resolved": "RESOLVED", "critical": "critical", "warning": "warning", "info": "info",
        "where": "Where", "value": "Value", "threshold": "threshold", "since": "Since", "resolved_at": "Resolved",
        "lasted": "lasted", "ago": "for", "ack": "Acknowledge", "acked": "acknowledged by {by}",
        "more": "... and {n} more: {url}", "alerts": "{n} alerts", "repeat": "[Reminder] still not acknowledged",
        "escalation": "[Escalation] not acknowledged within {after}",
        "test": "[Test] roomwatch test message: this channel works.", "test_title": "[Test] roomwatch test message",
        "sep": ": ", "or": " or ", "and": " and ",
        "no data": " (no data)", "rule removed": " (rule removed)", "page": "Status page",
        "ack_link": "acknowledge on the status page", "ack_tap": "acknowledge with one tap",
        "per": "per", "reaches": "reaches {target} within {within}", "sequence": "the shutdown sequence's time",
    },
}


def words(lang: str) -> dict[str, str]:
    return _WORDS.get(lang, _WORDS["zh-CN"])


def format_seconds(seconds: float, lang: str = "zh-CN") -> str:
    """Human duration: ``6 分钟`` / ``6 min``, ``2 小时 5 分钟``, ``3.0 年``."""
    s = abs(seconds)
    zh = lang == "zh-CN"
    if s >= 365 * 86400:
        return f"{s / (365 * 86400):.1f} 年" if zh else f"{s / (365 * 86400):.1f} years"
    if s >= 2 * 86400:
        return f"{s / 86400:.0f} 天" if zh else f"{s / 86400:.0f} days"
    if s >= 3600:
        h, m = int(s // 3600), int(s % 3600 // 60)
        return (f"{h} 小时" + (f" {m} 分钟" if m else "")) if zh else (f"{h} h" + (f" {m} min" if m else ""))
    if s >= 60:
        return f"{s / 60:.0f} 分钟" if zh else f"{s / 60:.0f} min"
    return f"{s:.0f} 秒" if zh else f"{s:.0f} s"


def format_value(metric: str, value: float | None, lang: str = "zh-CN") -> str:
    """A value with its unit, as people read it (28.5 °C, 45%, 9 分钟, 打开)."""
    if value is None:
        return "-"
    states = _STATES.get(metric)
    if states is not None and value in (0.0, 1.0):
        on, off = states.get(lang, states["en"])
        return on if value == 1.0 else off
    if metric.endswith("_celsius"):
        return f"{_n(round(value, 1))} °C"
    if metric.endswith("_ratio"):
        return f"{value * 100:.0f}%"
    if metric.endswith("_seconds") and not metric.endswith("timestamp_seconds"):
        return format_seconds(value, lang)
    if metric.endswith("_volts"):
        return f"{value:.0f} V"
    return f"{value:g}"


def _limit_name(metric: str, lang: str) -> str:
    return words(lang)["sequence"] if metric == "roomwatch_ups_shutdown_sequence_seconds" else metric


def format_alert_value(metric: str, value: float | None, when: Expr | str | None, lang: str = "zh-CN") -> str:
    """An alert's value as people read it: the sample (28.5 °C), a rate (+2.4 °C / 5 分钟) or a predicted time."""
    e = parse_expr(when) if isinstance(when, str) and when else when if isinstance(when, Expr) else None
    if e is None or value is None or e.kind == "value":
        return format_value(metric, value, lang)
    if e.kind == "reaches":
        return format_seconds(value, lang)
    sign = "+" if value > 0 else "-" if value < 0 else ""
    return f"{sign}{format_value(metric, abs(value), lang)} / {format_seconds(e.per, lang)}"


def format_expr(metric: str, expr: Expr | str | None, lang: str = "zh-CN") -> str:
    """``> 27 °C``, ``< 20% 或 > 80%``, ``≥ +2 °C / 5 分钟``, ``10 分钟内达到 0%``."""
    if not expr:
        return ""
    e = parse_expr(expr) if isinstance(expr, str) else expr
    w = words(lang)
    if e.kind == "reaches":
        within = _limit_name(e.within_metric, lang) if e.within_metric else format_seconds(e.within or 0.0, lang)
        return w["reaches"].format(within=within, target=format_value(metric, e.target, lang))
    if e.within_metric:
        return f"{e.limit_op} {_limit_name(e.within_metric, lang)}"
    if e.kind == "rate":
        return w["or"].join(w["and"].join(f"{op} {format_alert_value(metric, n, e, lang)}" for op, n in g)
                            for g in e.groups)
    return w["or"].join(w["and"].join(f"{op} {format_value(metric, n, lang) if metric not in _STATES else _n(n)}"
                                      for op, n in g) for g in e.groups)


def _n(n: float) -> str:
    return f"{n:g}"


def format_threshold(metric: str, expr: Expr | str | None, lang: str = "zh-CN") -> str:
    """The number people think of, with its unit: ``27 °C``, ``10 分钟`` (the first of the expression)."""
    if not expr:
        return ""
    e = parse_expr(expr) if isinstance(expr, str) else expr
    if e.windowed or e.within_metric:
        return format_expr(metric, e, lang)
    return format_value(metric, e.first(), lang) if metric not in _STATES else _n(e.first())


@dataclass(slots=True)
class AlertView:
    """What a message needs to know about one alert."""

    id: str  # the alert episode's id (alerts.model.Alert.id), for the ack link
    name: str
    status: str  # firing | resolved
    severity: str
    labels: Mapping[str, str]
    metric: str
    value: float | None
    when: str
    clear: str | None
    for_: float
    active_since: float
    resolved_at: float | None = None
    ack_by: str | None = None
    annotation_templates: Mapping[str, Any] = field(default_factory=dict)
    resolve_reason: str = ""


_PLACEHOLDER = re.compile(r"\{\{\s*\$(\w+)(?:\.(\w+))?\s*\}\}")


def render_annotations(a: AlertView, lang: str, tz: ZoneInfo) -> dict[str, str]:
    """Fill ``{{ $value }}``, ``{{ $threshold }}`` (27 °C), ``{{ $condition }}`` (> 27 °C), ``{{ $clear }}``,
    ``{{ $for }}``, ``{{ $since }}``, ``{{ $labels.x }}`` in the rule's annotations."""
    ctx = {
        "value": format_alert_value(a.metric, a.value, a.when, lang),
        "threshold": format_threshold(a.metric, a.when, lang),
        "condition": format_expr(a.metric, a.when, lang),
        "clear": format_expr(a.metric, a.clear, lang),
        "for": format_seconds(a.for_, lang),
        "since": format_time(a.active_since, tz),
    }

    def fill(m: re.Match[str]) -> str:
        name, sub = m.group(1), m.group(2)
        if name == "labels" and sub:
            return a.labels.get(sub, "")
        return ctx.get(name, m.group(0))

    out = {}
    for key, tmpl in a.annotation_templates.items():
        if isinstance(tmpl, Mapping):  # one text per language
            tmpl = tmpl.get(lang) or tmpl.get("en") or next(iter(tmpl.values()), "")
        out[key] = _PLACEHOLDER.sub(fill, str(tmpl))
    return out


def where(labels: Mapping[str, str]) -> str:
    """``县政务中心 / 1号机房 / ups1`` from site, room, device (agent when no device), sensor."""
    parts = [labels[k] for k in ("site", "room") if labels.get(k)]
    thing = labels.get("device") or labels.get("agent") or labels.get("channel")
    if thing:
        parts.append(thing + (f" ({labels['sensor']})" if labels.get("sensor") else ""))
    return " / ".join(parts)


@dataclass(frozen=True, slots=True)
class AckInfo:
    """How one alert of a message is acknowledged: a one-tap link, and for channels that take replies, how."""

    url: str  # the signed one-tap link (alerts/acklink.py), or the status page's link
    one_tap: bool = True
    reply: str = ""  # e.g. "回复 1 或 ACK 4821 确认" (empty: the channel takes no replies)


def ack_url(external_url: str, alert_id: str) -> str:
    """The status-page link of one alert episode (``alert_id`` = ``<fingerprint>-<episode>``)."""
    return f"{external_url.rstrip('/')}/#/alerts/{alert_id}"


def _block(a: AlertView, lang: str, tz: ZoneInfo, url: str, now: float, markdown: bool,
           ack: AckInfo | None = None) -> str:
    w = words(lang)
    ann = render_annotations(a, lang, tz)
    summary = ann.get("summary") or a.name
    sep = w["sep"]
    head = f"【{w[a.severity]}】{summary}" if lang == "zh-CN" else f"[{w[a.severity]}] {summary}"
    if a.status == "resolved":
        head = f"【{w['resolved']}】{summary}" if lang == "zh-CN" else f"[{w['resolved']}] {summary}"
    lines = [f"**{head}**" if markdown else head]
    if a.status != "resolved" and not a.ack_by and ack is not None and ack.reply:
        lines.append(ack.reply)  # near the top: a long SMS is cut from the end
    place = where(a.labels)
    if place:
        lines.append(f"{w['where']}{sep}{place}")
    value = format_alert_value(a.metric, a.value, a.when, lang)
    if a.metric in _STATES or not a.when:
        lines.append(f"{w['value']}{sep}{value}")
    else:
        thr = format_expr(a.metric, a.when, lang)
        lines.append(f"{w['value']}{sep}{value}（{w['threshold']} {thr}）" if lang == "zh-CN"
                     else f"{w['value']}{sep}{value} ({w['threshold']} {thr})")
    since = format_time(a.active_since, tz)
    if a.status == "resolved" and a.resolved_at is not None:
        lasted = format_seconds(a.resolved_at - a.active_since, lang)
        extra = w.get(a.resolve_reason, "") if a.resolve_reason else ""
        lines.append(f"{w['resolved_at']}{sep}{format_time(a.resolved_at, tz)}（{w['lasted']} {lasted}）{extra}"
                     if lang == "zh-CN" else f"{w['resolved_at']}{sep}{format_time(a.resolved_at, tz)} "
                                             f"({w['lasted']} {lasted}){extra}")
    else:
        if now - a.active_since >= 60:
            ago = format_seconds(now - a.active_since, lang)
            lines.append(f"{w['since']}{sep}{since}（{w['ago']} {ago}）" if lang == "zh-CN"
                         else f"{w['since']}{sep}{since} ({w['ago']} {ago})")
        else:
            lines.append(f"{w['since']}{sep}{since}")
        if ann.get("description"):
            lines.append(ann["description"])
        if a.ack_by:
            lines.append(w["acked"].format(by=a.ack_by))
        elif ack is not None:
            label = w["ack_tap"] if ack.one_tap else w["ack_link"]
            lines.append(f"{w['ack']}{sep}[{label}]({ack.url})" if markdown else f"{w['ack']}{sep}{ack.url}")
        elif url:
            link = ack_url(url, a.id)
            lines.append(f"{w['ack']}{sep}[{w['ack_link']}]({link})" if markdown else f"{w['ack']}{sep}{link}")
    if markdown:
        return lines[0] + "\n" + "\n".join(f"> {line}" for line in lines[1:])
    return "\n".join(lines)


def cut_bytes(text: str, limit: int | None, ellipsis: str = "…") -> str:
    """Cut ``text`` to ``limit`` bytes of UTF-8 without splitting a character."""
    if limit is None or len(text.encode()) <= limit:
        return text
    room = max(0, limit - len(ellipsis.encode()))
    return text.encode()[:room].decode("utf-8", "ignore") + ellipsis


def _title(alerts: Sequence[AlertView], status: str, lang: str, group_labels: Mapping[str, str], tz: ZoneInfo) -> str:
    w = words(lang)
    tag = f"【{w[status]}】" if lang == "zh-CN" else f"[{w[status]}] "
    place = " ".join(group_labels[k] for k in ("site", "room") if group_labels.get(k)) or where(alerts[0].labels)
    if len(alerts) == 1:
        summary = render_annotations(alerts[0], lang, tz).get("summary") or alerts[0].name
        return f"{tag}{summary}" + (f" - {place}" if place else "")
    return f"{tag}{place + ' ' if place else ''}{w['alerts'].format(n=len(alerts))}"


def render_notification(alerts: Sequence[AlertView], *, status: str, reason: str, lang: str, tz: ZoneInfo,
                        external_url: str, now: float, max_bytes: int | None = None,
                        group_labels: Mapping[str, str] | None = None, escalation_after: float = 0.0,
                        acks: Mapping[str, AckInfo] | None = None) -> tuple[str, str, str]:
    """(title, text, markdown) for a group of alerts, each fitting ``max_bytes``: firing first, most severe first."""
    w = words(lang)
    if reason == "test":
        return w["test_title"], w["test"], w["test"]
    order = {"critical": 0, "warning": 1, "info": 2}
    items = sorted(alerts, key=lambda a: (a.status != "firing", order.get(a.severity, 3), a.active_since))
    title = cut_bytes(_title(items, status, lang, group_labels or {}, tz), max_bytes)
    header = ""
    if reason == "repeat":
        header = w["repeat"]
    elif reason == "escalation":
        header = w["escalation"].format(after=format_seconds(escalation_after, lang))
    out = []
    for markdown in (False, True):
        blocks = [_block(a, lang, tz, external_url, now, markdown, (acks or {}).get(a.id)) for a in items]
        out.append(_fit(header, blocks, "\n\n", max_bytes, w, external_url))
    return title, out[0], out[1]


def _fit(header: str, blocks: list[str], sep: str, limit: int | None, w: Mapping[str, str], url: str) -> str:
    parts = [header] if header else []
    full = sep.join(parts + blocks)
    if limit is None or len(full.encode()) <= limit:
        return full
    for keep in range(len(blocks) - 1, 0, -1):
        more = w["more"].format(n=len(blocks) - keep, url=url or "-")
        text = sep.join(parts + blocks[:keep] + [more])
        if len(text.encode()) <= limit:
            return text
    return cut_bytes(sep.join(parts + blocks[:1]), limit)
