"""``POST /api/v1/callbacks/dingtalk``: "@机器人 确认 4821" in a DingTalk group acknowledges.

A DingTalk enterprise-internal robot (an app with the robot capability, message receiving
in HTTP mode, 消息接收地址 pointing here) POSTs every message that @-mentions it. DingTalk
signs the request: headers ``timestamp`` (ms) and ``sign`` = base64(HMAC-SHA256(key=AppSecret,
msg=timestamp + "\\n" + AppSecret)); a request more than an hour off or with another sign is
not DingTalk's and is refused (401), and so is a body over :data:`MAX_BODY` bytes (413). The sign
covers the time only, not the body: whoever saw one request (the plain-HTTP hop from a reverse
proxy, say) could send any text with its headers for an hour. So a sign is taken with one
message only (its ``msgId``; DingTalk resending that message is answered, not applied twice):
the same sign with another message, or without one, is refused (401). The
text is read like an SMS reply (:mod:`roomwatch.alerts.replies`; "1" alone is not accepted
here, a group holds many people — the code is needed), and the answer is returned as the
reply message DingTalk posts back into the group.

DingTalk must reach the collector for this: an office intranet collector needs a published
address (a reverse proxy in the DMZ, or a tunnel) — docs/oncall.md says so plainly. The one-tap
link in every message needs no such thing when the phone can open the collector's address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from roomwatch.alerts.config import DingtalkCallbackConfig
from roomwatch.alerts.replies import ReplyDesk, parse_reply
from roomwatch.core.httplimits import route_limits

__all__ = ["MAX_BODY", "DingtalkCallback", "add_routes", "dingtalk_sign"]

log = logging.getLogger("roomwatch.alerts.imcallback")

MAX_BODY = 64 * 1024
WINDOW_MS = 3600 * 1000


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _text(content: str) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": content}}


class DingtalkCallback:
    """Verifies DingTalk's signature and turns the message into acknowledgements."""

    def __init__(self, cfg: DingtalkCallbackConfig, desk: ReplyDesk, people: dict[str, str],
                 clock: Callable[[], float] = time.time):
        self.secret = cfg.app_secret.get_secret_value()
        self.allow = cfg.allow
        self.desk = desk
        self.people = people  # DingTalk user id → person name
        self.clock = clock
        self.results: Counter[str] = Counter()
        self._seen: dict[str, float] = {}  # msgId → when (a resent callback is answered, not applied twice)
        self._signs: dict[str, tuple[str, float]] = {}  # sign → (the msgId it came with, when)

    def verify(self, timestamp: str, sign: str) -> bool:
        # ASCII digits, at most 16 (ms until the year 2286): int() takes neither "²" nor 5000 digits (a 500).
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 16 or \
                abs(int(timestamp) - self.clock() * 1000) > WINDOW_MS:
            return False
        return hmac.compare_digest(sign.encode(), dingtalk_sign(self.secret, timestamp).encode())

    @route_limits(MAX_BODY)
    async def handle(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_BODY:
            return web.json_response({"error": f"body larger than {MAX_BODY} bytes"}, status=413)
        if not self.verify(request.headers.get("timestamp", ""), request.headers.get("sign", "")):
            self.results["refused"] += 1
            return web.json_response({"error": "not signed by DingTalk with this app's secret (or too old)"}, status=401)
        raw = await request.read()  # the body guard read it already, bounded (collector/limits.py)
        if len(raw) > MAX_BODY:
            return web.json_response({"error": f"body larger than {MAX_BODY} bytes"}, status=413)
        try:
            body = json.loads(raw)
            text = str(body["text"]["content"])
        except (ValueError, KeyError, TypeError):
            self.results["ignored"] += 1
            return web.json_response(_text("只接受文字消息，例如：确认 4821"))
        msg_id = str(body.get("msgId", ""))[:100]
        now = self.clock()
        self._seen = {k: t for k, t in self._seen.items() if now - t < 3600} if len(self._seen) > 1000 else self._seen
        if len(self._signs) > 1000:
            self._signs = {k: v for k, v in self._signs.items() if now - v[1] < 2 * WINDOW_MS / 1000}
        sign = request.headers.get("sign", "")
        prior = self._signs.get(sign)
        if prior is not None and (not msg_id or prior[0] != msg_id):  # one message's headers with another body
            self.results["refused"] += 1
            return web.json_response({"error": "this signature was already used for another message"}, status=401)
        if prior is None:
            self._signs[sign] = (msg_id, now)
        staff = str(body.get("senderStaffId") or body.get("senderId") or "")[:100]
        nick = str(body.get("senderNick") or staff)[:64]
        who = self.people.get(staff)
        if who is None and self.allow == "people":
            self.results["ignored"] += 1
            log.warning("DingTalk: %s (%s) is not in oncall.people: not acknowledged", nick, staff)
            return web.json_response(_text(f"{nick} 不在值班人员名单中，未确认。"))
        if parse_reply(text)[0] == "last":  # "1" in a group: whose last message? the code is needed here
            return web.json_response(_text("请写告警码，例如：确认 4821"))
        if msg_id and msg_id in self._seen:
            return web.json_response(_text("已处理。"))
        if msg_id:
            self._seen[msg_id] = now
        result = self.desk.handle(text, who or nick, "dingtalk", "dingtalk")
        self.results["acknowledged" if result.acknowledged else "answered"] += 1
        return web.json_response(_text(result.answer))


@route_limits(MAX_BODY)
async def _not_configured(request: web.Request) -> web.Response:
    return web.json_response({"error": "no DingTalk callback configured (alerts.callbacks.dingtalk)"}, status=404)


def add_routes(app: web.Application, callback: DingtalkCallback | None) -> None:
    """``POST /api/v1/callbacks/dingtalk``: the callback, or a 404 saying it is not configured."""
    app.router.add_post("/api/v1/callbacks/dingtalk", callback.handle if callback is not None else _not_configured)
