"""Acknowledging by replying: short codes in messages, and what a reply ("1", "ACK 4821", "确认 4821") means.

Each alert episode that is notified gets a 4-digit code (table ``ack_codes``), the same in
every message about it. A message that can be answered (an SMS through a ``gsm_modem``
channel with ``replies: true``; a DingTalk robot callback) says "回复 1 或 ACK 4821 确认".
For each number an alert SMS went to, the alerts it carried are kept (table
``reply_targets``), so "1" means "the alerts of the last message I got".

:class:`ReplyDesk` turns a reply into acknowledgements through the same
:class:`~roomwatch.alerts.commands.AlertCommands` as the API, and into the confirmation
text sent back. Only numbers the collector sends to (a channel's ``phone_numbers``, the
people of ``oncall``) are listed as allowed; the modem watcher drops anything else unanswered.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from roomwatch.alerts.ackcodes import AckCodes, normalize_number
from roomwatch.alerts.commands import AckError, AlertCommands
from roomwatch.alerts.model import FIRING, Alert

__all__ = ["AckCodes", "ReplyDesk", "normalize_number", "parse_reply"]

log = logging.getLogger("roomwatch.alerts.replies")

_ACK_WORDS = r"(?:ack|ok|确认|收到|qr)"
_LAST = re.compile(rf"^(?:1|{_ACK_WORDS})$", re.I)
_CODE = re.compile(rf"^(?:{_ACK_WORDS})?\s*[#:：]?\s*(\d{{4,6}})$", re.I)


def parse_reply(text: str) -> tuple[str, str | None]:
    """("last", None) for "1"/"确认"; ("code", "4821") for "ACK 4821", "确认 4821", "4821"; ("unknown", None)."""
    t = unicodedata.normalize("NFKC", text).strip().strip("。.!！").strip()
    if _LAST.match(t):
        return "last", None
    m = _CODE.match(t)
    if m:
        return "code", m.group(1)
    return "unknown", None


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """What a reply did: the alerts acknowledged now and the text to send back."""

    acknowledged: list[Alert]
    answer: str


_WORDS = {
    "zh-CN": {"done": "已确认：{what}。不再重复提醒和升级。", "already": "已确认过：{what}。", "none": "没有需要确认的告警。",
              "gone": "告警 {code} 已恢复或已结束，无需确认。", "unknown": "没有告警码 {code}。",
              "help": "回复 1 确认最近一条告警短信，或回复 ACK 加告警码（如 ACK 4821）。"},
    "en": {"done": "Acknowledged: {what}. No more reminders or escalation.", "already": "Already acknowledged: {what}.",
           "none": "No alert to acknowledge.", "gone": "Alert {code} has resolved or ended.",
           "unknown": "No alert with code {code}.", "help": "Reply 1 to acknowledge the last alert SMS, or ACK and the "
                                                           "code (e.g. ACK 4821)."},
}


class ReplyDesk:
    """Replies in, acknowledgements and answers out."""

    def __init__(self, codes: AckCodes, commands: AlertCommands, describe: Callable[[Alert], str], lang: str):
        self.codes = codes
        self.commands = commands
        self.describe = describe  # "机房漏水（县政务中心 / 1号机房）"
        self.words = _WORDS.get(lang, _WORDS["zh-CN"])

    def _live(self, alert_id: str) -> Alert | None:
        a = self.commands.engine.active.get(alert_id.partition("-")[0])
        return a if a is not None and a.id == alert_id and a.state == FIRING else None

    def handle(self, text: str, who: str, via: str, channel: str, sender: str = "") -> ReplyResult:
        """Apply the reply ``text`` from ``who`` (a person's name, or the number); ``sender`` for "1"."""
        kind, code = parse_reply(text)
        w = self.words
        if kind == "unknown":
            return ReplyResult([], w["help"])
        if kind == "code":
            alert_id = self.codes.alert_id(code or "")
            if alert_id is None:
                return ReplyResult([], w["unknown"].format(code=code))
            ids, via_channel = [alert_id], channel
        else:
            ids, via_channel = self.codes.last_sent(sender)
            via_channel = channel or via_channel
        live = [a for a in (self._live(i) for i in ids) if a is not None]
        if not live:
            return ReplyResult([], w["gone"].format(code=code) if code else w["none"])
        new = [a for a in live if a.ack_at is None]
        for a in new:
            try:
                self.commands.ack(a.id, who, via=via, channel=via_channel)
            except AckError as exc:  # resolved in between
                log.info("reply from %s: %s not acknowledged: %s", who, a.id, exc)
        what = "；".join(self.describe(a) for a in live)
        return ReplyResult(new, (w["done"] if new else w["already"]).format(what=what))
