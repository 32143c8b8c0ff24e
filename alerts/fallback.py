"""What an agent's local fallback already told people: ``fallback_notified`` notices → alerts marked as notified.

While a room's link is down, its agent sends critical conditions through its own channel (an SMS
through a GSM modem, ``agent/fallback.py``) and pushes a notice for each message once a collector
answers again (format and matching rule: ``roomwatch/core/notice.py``). Here:

* a ``firing`` notice marks the matching alert episode as already notified: the level-0 channels
  of its routes count as told at the notice's time (:meth:`roomwatch.alerts.dispatch.Dispatcher.mark_told`),
  so they do not send it again; repeats, escalation and the resolution then follow from that
  time as for any alert;
* a ``resolved`` notice marks that episode's end as told too: no channel sends the resolution;
* a notice that arrives before its alert (the agent sends notices ahead of its backlog) waits in
  the ``fallback_notices`` table until the alert appears, for at most :data:`KEEP` seconds.

The alert stays visible in the API and on the status page with a note saying when and through
what the agent notified (:func:`note`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from roomwatch.alerts.model import FIRING, PENDING, RESOLVED, Alert
from roomwatch.alerts.timewindow import format_time
from roomwatch.core.notice import EPISODE_SLACK, Identity, Notice, covers, identity, parse_notice
from roomwatch.core.wire import EventRecord

__all__ = ["KEEP", "FallbackNotices", "note"]

log = logging.getLogger("roomwatch.alerts.fallback")

#: A notice whose alert has not shown up within a day is forgotten (state alerts go stale after a day too).
KEEP = 86400.0

_KIND = {  # channel type → what people call it
    "gsm_modem": ("短信", "SMS"), "aliyun_sms": ("短信", "SMS"), "tencent_sms": ("短信", "SMS"),
    "email": ("邮件", "e-mail"), "wecom_robot": ("企业微信", "WeCom"), "wecom_app": ("企业微信", "WeCom"),
    "dingtalk": ("钉钉", "DingTalk"), "feishu": ("飞书", "Feishu"), "serverchan": ("Server酱", "ServerChan"),
}


def note(fb: dict[str, Any], lang: str, tz: ZoneInfo) -> str:
    """``notified by the agent's local fallback (SMS) at 2024-12-02 10:00:05`` (and the resolution, if sent)."""
    zh, en = _KIND.get(fb.get("channel_type", ""), (fb.get("channel") or "?",) * 2)
    fired = format_time(fb["firing_at"], tz)
    resolved = fb.get("resolved_at")
    if lang == "zh-CN":
        text = f"已由机房代理本地兜底通道（{zh}）于 {fired} 通知"
        return text + (f"，恢复通知于 {format_time(resolved, tz)} 发出" if resolved else "")
    text = f"notified by the agent's local fallback ({en}) at {fired}"
    return text + (f"; resolution sent at {format_time(resolved, tz)}" if resolved else "")


@dataclass(eq=False)
class _Waiting:
    notice: Notice
    received_at: float
    row: int | None = None  # fallback_notices.id once saved


class FallbackNotices:
    """Notices waiting for their alert, and the marking of alerts; persisted in the alert store's file."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.waiting: dict[Identity, list[_Waiting]] = {}
        self.marked: list[Alert] = []  # alerts marked outside an engine transition: the service saves them
        self._gone: list[int] = []
        for row in conn.execute("SELECT id, alertname, labels, status, channel, channel_type, ts, since, message, "
                                "received_at FROM fallback_notices ORDER BY ts, id"):
            n = Notice(row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])
            self.waiting.setdefault(n.key, []).append(_Waiting(n, row[9], row[0]))

    @property
    def dirty(self) -> bool:
        return bool(self.marked or self._gone or any(w.row is None for ws in self.waiting.values() for w in ws))

    # -- matching -------------------------------------------------------------------------
    @staticmethod
    def _covers(w: _Waiting, a: Alert) -> bool:
        n = w.notice
        if n.status == "firing":
            return a.fallback is None and covers(n, a.name, a.series_labels, a.active_since, w.received_at)
        fb = a.fallback  # a resolution: of the episode its firing notice covered
        return (fb is not None and not fb.get("resolved_at") and identity(a.name, a.series_labels) == n.key
                and abs(fb["since"] - n.since) <= EPISODE_SLACK)

    @staticmethod
    def _apply(n: Notice, a: Alert) -> None:
        if n.status == "firing":
            a.fallback = {"channel": n.channel, "channel_type": n.channel_type, "firing_at": n.ts, "since": n.since,
                          "resolved_at": None, "message": n.message[:2000]}
        else:
            assert a.fallback is not None
            a.fallback["resolved_at"] = n.ts
        log.info("alert %s of %s: the agent's local fallback (%s) already sent it %s; the collector does not",
                 a.name, a.series_labels.get("device") or a.series_labels.get("agent"), n.channel, n.status)

    # -- input ----------------------------------------------------------------------------------
    def receive(self, agent_id: str, events: list[EventRecord], active: list[Alert], now: float) -> int:
        """Take the notices among ``events``: mark a matching active alert at once, keep the others waiting."""
        found = 0
        for ev in events:
            n = parse_notice(agent_id, ev)
            if n is None:
                continue
            found += 1
            log.info("agent %s: its local fallback (%s) sent %s %s for %s", agent_id, n.channel or "?", n.alertname,
                     n.status, n.labels.get("device") or agent_id)
            w = _Waiting(n, now)
            target = next((a for a in active if a.state in (PENDING, FIRING) and self._covers(w, a)), None)
            if target is not None:
                self._apply(n, target)
                self.marked.append(target)
            else:
                self.waiting.setdefault(n.key, []).append(w)
        return found

    def on_change(self, a: Alert) -> None:
        """An alert appeared, fired or resolved: apply the notices waiting for its episode."""
        key = identity(a.name, a.series_labels)
        waiting = self.waiting.get(key)
        if not waiting or a.state not in (PENDING, FIRING, RESOLVED):
            return
        for w in sorted(waiting, key=lambda x: (x.notice.status != "firing", x.notice.ts)):
            if self._covers(w, a):
                self._apply(w.notice, a)
                waiting.remove(w)
                if w.row is not None:
                    self._gone.append(w.row)
        if not waiting:
            del self.waiting[key]

    # -- persistence (inside the service's transaction) -------------------------------------------
    def save(self) -> list[Alert]:
        """Write what changed; return the alerts marked outside a transition (the caller saves them)."""
        for ws in self.waiting.values():
            for w in ws:
                if w.row is None:
                    n = w.notice
                    w.row = self.conn.execute(
                        "INSERT INTO fallback_notices (alertname, labels, status, channel, channel_type, ts, since, "
                        "message, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (n.alertname, json.dumps(n.labels, sort_keys=True, ensure_ascii=False), n.status, n.channel,
                         n.channel_type, n.ts, n.since, n.message, w.received_at)).lastrowid
        for row in self._gone:
            self.conn.execute("DELETE FROM fallback_notices WHERE id = ?", (row,))
        marked, self.marked, self._gone = self.marked, [], []
        return marked

    def purge(self, now: float) -> int:
        """Forget notices that waited longer than :data:`KEEP` (their alert never came, e.g. another threshold)."""
        n = 0
        for key in list(self.waiting):
            keep = [w for w in self.waiting[key] if w.received_at >= now - KEEP]
            n += len(self.waiting[key]) - len(keep)
            if keep:
                self.waiting[key] = keep
            else:
                del self.waiting[key]
        self.conn.execute("DELETE FROM fallback_notices WHERE received_at < ?", (now - KEEP,))
        return n
