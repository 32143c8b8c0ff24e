"""The report as text (channels: WeChat, SMS, webhook …), Markdown and HTML (``/report``), zh-CN or en."""

from __future__ import annotations

import datetime as dt
import html
from zoneinfo import ZoneInfo

from roomwatch.collector.report.compute import Report, RoomReport
from roomwatch.core.plural import plural

__all__ = ["duration_text", "render_html", "render_markdown", "render_text", "title_text"]

_T = {
    "zh-CN": {
        "title": "巡检日报", "window": "统计时段", "room": "机房", "temp": "温度", "hum": "湿度", "door": "门",
        "ups": "UPS", "down": "离线", "alerts": "告警", "none": "无", "na": "暂不可用",
        "minavgmax": "最低 {min} 平均 {avg} 最高 {max}", "above": "高于 {t} 共 {d}", "outside": "超出 {lo}–{hi} 共 {d}",
        "critical": "其中高于 {t} 共 {d}",
        "door_line": "开启 {n} 次，最长 {longest}，非工作时间 {ooh} 次", "open_now": "，目前仍开着",
        "ups_line": "电池供电 {n} 次共 {d}", "lowest_charge": "最低电量 {v}", "lowest_runtime": "最短剩余 {v}",
        "battery_low": "电量低 {n} 次", "age": "电池已用 {v}", "replace": "应更换电池", "ok": "正常",
        "health": "电池健康 {v}（实测满电续航 {d}）", "test": "上次自检 {when} {result}", "passed": "通过",
        "failed": "未通过", "no_result": "无结果",
        "dev_down": "设备 {dev}（{agent}）离线 {n} 次共 {d}", "agent_down": "采集端 {agent} 离线共 {d}",
        "still": "，目前仍离线", "alerts_line": "共 {n} 条（严重 {crit} 条）：{names}",
        "ack_line": "已确认 {n} 条，确认用时中位数 {med}、最长 {max}", "unacked": "未确认 {n} 条",
        "no_history": "历史数据不可用（汇总服务未保存历史）。", "no_alerts": "告警记录不可用。",
        "no_rooms": "这段时间没有任何机房的数据。", "years": "{v:.1f} 年",
        "sep": "，", "h": "小时", "m": "分钟", "s": "秒", "generated": "生成于",
    },
    "en": {
        "title": "Daily inspection report", "window": "Period", "room": "Room", "temp": "Temperature",
        "hum": "Humidity", "door": "Door", "ups": "UPS", "down": "Down", "alerts": "Alerts", "none": "none",
        "na": "not available", "minavgmax": "min {min} avg {avg} max {max}", "above": "above {t} for {d}",
        "outside": "outside {lo}–{hi} for {d}", "critical": "of which above {t} for {d}",
        "door_line": "opened {times}, longest {longest}, {ooh} out of hours", "open_now": ", still open",
        "ups_line": "on battery {times}, {d} in all", "lowest_charge": "lowest charge {v}",
        "lowest_runtime": "shortest runtime {v}", "battery_low": "battery low {times}", "age": "battery age {v}",
        "replace": "REPLACE THE BATTERY", "ok": "ok", "health": "battery health {v} (measured full runtime {d})",
        "test": "last self-test {when} {result}", "passed": "passed", "failed": "FAILED", "no_result": "no result",
        "dev_down": "device {dev} ({agent}) down {times}, {d} in all",
        "agent_down": "agent {agent} down for {d}", "still": ", still down",
        "alerts_line": "{n} raised ({crit} critical): {names}",
        "ack_line": "{n} acknowledged, median time to acknowledge {med}, longest {max}", "unacked": "{n} not acknowledged",
        "no_history": "History not available (the collector keeps no history).", "no_alerts": "Alert history not available.",
        "no_rooms": "No data from any room in this period.", "years": "{v:.1f} years",
        "sep": ", ", "h": "h", "m": "min", "s": "s", "generated": "Generated",
    },
}


def _t(lang: str) -> dict[str, str]:
    return _T.get(lang, _T["zh-CN"])


def duration_text(seconds: float | None, lang: str = "zh-CN") -> str:
    """``3725`` → ``1小时2分钟`` / ``1h 2min``; under a minute in seconds."""
    t = _t(lang)
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}{'' if lang != 'en' else ' '}{t['s']}"
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    joiner = "" if lang != "en" else " "
    if h and m:
        return f"{h}{joiner}{t['h']}{joiner}{m}{joiner}{t['m']}"
    if h:
        return f"{h}{joiner}{t['h']}"
    return f"{m}{joiner}{t['m']}"


def _local(ts: float, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return dt.datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime(fmt)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.0f}%"


def _where(room: RoomReport) -> str:
    return " / ".join(x for x in (room.site, room.room) if x) or "—"


def title_text(report: Report, lang: str = "zh-CN") -> str:
    day = _local(report.end, report.timezone, "%Y-%m-%d")
    head = f"【{_t(lang)['title']}】" if lang != "en" else f"{_t(lang)['title']}:"
    return f"{head} {day}" + (f" {report.title}" if report.title else "")


def room_lines(room: RoomReport, report: Report, lang: str) -> list[tuple[str, str]]:
    """(topic, text) lines of one room, shared by text, Markdown and HTML."""
    t = _t(lang)
    th = report.thresholds

    def d(seconds: float | None) -> str:
        return duration_text(seconds, lang)

    lines: list[tuple[str, str]] = []
    for s in room.temperature:
        text = t["minavgmax"].format(min=f"{s.min:.1f}°C", avg=f"{s.avg:.1f}°C", max=f"{s.max:.1f}°C")
        text += t["sep"] + t["above"].format(t=f"{th['temperature_high']:g}°C", d=d(s.seconds_outside))
        if s.seconds_critical:
            text += t["sep"] + t["critical"].format(t=f"{th['temperature_critical']:g}°C", d=d(s.seconds_critical))
        lines.append((f"{t['temp']} {s.device}{'/' + s.sensor if s.sensor else ''}", text))
    for s in room.humidity:
        text = t["minavgmax"].format(min=_pct(s.min), avg=_pct(s.avg), max=_pct(s.max))
        text += t["sep"] + t["outside"].format(lo=_pct(th["humidity_low"]), hi=_pct(th["humidity_high"]),
                                               d=d(s.seconds_outside))
        lines.append((f"{t['hum']} {s.device}{'/' + s.sensor if s.sensor else ''}", text))
    for door in room.doors:
        text = t["door_line"].format(n=door.openings, times=plural(door.openings, "time"), longest=d(door.longest_seconds),
                                     ooh=door.out_of_hours)
        if door.out_of_hours_times:
            times = [_local(x, report.timezone, "%H:%M") for x in door.out_of_hours_times[:5]]
            text += f" ({', '.join(times)})" if lang == "en" else f"（{'、'.join(times)}）"
        if door.open_at_end:
            text += t["open_now"]
        lines.append((f"{t['door']} {door.device}", text))
    for u in room.ups:
        parts = [t["ups_line"].format(n=u.on_battery_count, times=plural(u.on_battery_count, "time"),
                                      d=d(u.on_battery_seconds))]
        if u.lowest_charge is not None:
            parts.append(t["lowest_charge"].format(v=_pct(u.lowest_charge)))
        if u.lowest_runtime_seconds is not None:
            parts.append(t["lowest_runtime"].format(v=d(u.lowest_runtime_seconds)))
        if u.battery_low_count:
            parts.append(t["battery_low"].format(n=u.battery_low_count, times=plural(u.battery_low_count, "time")))
        if u.battery_age_seconds is not None:
            parts.append(t["age"].format(v=t["years"].format(v=u.battery_age_seconds / (365 * 86400))))
        if u.health_ratio is not None:
            parts.append(t["health"].format(v=_pct(u.health_ratio), d=d(u.measured_runtime_seconds)))
        if u.last_self_test is not None:
            result = t["no_result"] if u.self_test_failed is None else t["failed"] if u.self_test_failed else t["passed"]
            parts.append(t["test"].format(when=_local(u.last_self_test, report.timezone, "%Y-%m-%d"), result=result))
        parts.append(t["replace"] if u.replace_due else t["ok"])
        lines.append((f"{t['ups']} {u.device}", t["sep"].join(parts)))
    downs = [t["dev_down"].format(dev=x.device, agent=x.agent, n=x.episodes, times=plural(x.episodes, "time"), d=d(x.seconds))
             + (t["still"] if x.down_at_end else "") for x in room.devices_down]
    downs += [t["agent_down"].format(agent=x.agent, d=d(x.seconds)) + (t["still"] if x.down_at_end else "")
              for x in room.agents_down]
    lines.append((t["down"], ("; " if lang == "en" else "；").join(downs) if downs else t["none"]))
    if report.alerts_available:
        a = room.alerts
        if a.raised:
            names = t["sep"].join(f"{k} {n}" for k, n in sorted(a.by_name.items()))
            text = t["alerts_line"].format(n=a.raised, crit=a.critical, names=names)
            if a.acknowledged:
                text += t["sep"] + t["ack_line"].format(n=a.acknowledged, med=d(a.ack_median_seconds), max=d(a.ack_max_seconds))
            if a.unacknowledged:
                text += t["sep"] + t["unacked"].format(n=a.unacknowledged)
        else:
            text = t["none"]
        lines.append((t["alerts"], text))
    return lines


def _header(report: Report, lang: str) -> list[str]:
    t = _t(lang)
    out = [f"{t['window']}: {_local(report.start, report.timezone)} — {_local(report.end, report.timezone)} ({report.timezone})"]
    if not report.history_available:
        out.append(t["no_history"])
    if not report.alerts_available:
        out.append(t["no_alerts"])
    if not report.rooms:
        out.append(t["no_rooms"])
    return out


def render_text(report: Report, lang: str = "zh-CN") -> str:
    """Plain text for SMS/WeChat text/webhook."""
    out = [title_text(report, lang), *_header(report, lang)]
    for room in report.rooms:
        out.append(f"■ {_where(room)}")
        colon = ": " if lang == "en" else "："
        out.extend(f"  {topic}{colon}{text}" for topic, text in room_lines(room, report, lang))
    return "\n".join(out)


def render_markdown(report: Report, lang: str = "zh-CN") -> str:
    """Markdown for WeCom/DingTalk/Feishu."""
    out = [f"## {title_text(report, lang)}", *(f"> {x}" for x in _header(report, lang))]
    for room in report.rooms:
        out.append(f"\n**{_where(room)}**")
        colon = ": " if lang == "en" else "："
        out.extend(f"- {topic}{colon}{text}" for topic, text in room_lines(room, report, lang))
    return "\n".join(out)


def render_html(report: Report, lang: str = "zh-CN", day_links: tuple[str, str] | None = None) -> str:
    """The ``/report`` page: one table per room, no script, the status page's stylesheet."""
    e = html.escape
    other = "en" if lang != "en" else "zh-CN"
    day = _local(report.end, report.timezone, "%Y-%m-%d")
    nav = ['<a href="/">' + ("状态页" if lang != "en" else "Status page") + "</a>"]
    if day_links:
        nav += [f'<a href="{e(day_links[0])}">←</a>', f'<a href="{e(day_links[1])}">→</a>']
    nav.append(f'<a href="?date={day}&amp;lang={other}">{"English" if lang != "en" else "中文"}</a>')
    parts = [
        "<!doctype html>", f'<html lang="{e(lang)}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title_text(report, lang))}</title>", '<link rel="stylesheet" href="/static/style.css"></head><body>',
        f"<header><h1>{e(title_text(report, lang))}</h1><nav>{' '.join(nav)}</nav></header><main>",
    ]
    parts.extend(f'<p class="muted">{e(x)}</p>' for x in _header(report, lang))
    for room in report.rooms:
        parts.append(f'<section class="report-room" data-room="{e(room.site)}/{e(room.room)}"><h2>{e(_where(room))}</h2>')
        parts.append("<table><tbody>")
        parts.extend(f"<tr><th>{e(topic)}</th><td>{e(text)}</td></tr>" for topic, text in room_lines(room, report, lang))
        parts.append("</tbody></table></section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)
