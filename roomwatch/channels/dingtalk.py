"""DingTalk (钉钉) custom robot, signed (加签) when a secret is configured.

Doc: DingTalk "自定义机器人接入" (open.dingtalk.com/document/robots/custom-robot-access); CHANNELS.md §3.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal

from pydantic import Field, field_validator

from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import JSON_HEADERS, HttpChannel, HttpReply, fit_json, message_text
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.recipients import person_of
from roomwatch.core.configbase import Secret

__all__ = ["DingtalkChannel", "DingtalkConfig", "sign"]

#: Body limit: errcode 460101 "message too long, exceed 20000 bytes" ("body 大小不合法").
BODY_MAX = 20000

#: errcode → retry after seconds. 130101 "send too fast": the robot is throttled for 10 min
#: after 20 msgs/min; -1 system busy. 310000 (sign/timestamp/keyword/IP) and 300001 (bad token) are config errors.
RETRY_CODES: dict[int, float | None] = {130101: 600.0, -1: None}
HINTS = {
    310000: "signature, timestamp (check the clock), keyword or IP whitelist not matched",
    460101: "message too long",
    300001: "the access_token is wrong or the robot was removed",
}


def sign(secret: str, timestamp_ms: int) -> str:
    """``base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))`` (not yet URL-encoded)."""
    msg = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode()


class DingtalkConfig(ChannelBase):
    """A DingTalk group robot. ``access_token`` from its webhook address, ``secret`` (SEC…) when 加签 is on."""

    type: Literal["dingtalk"]
    access_token: Secret
    secret: Secret | None = None
    message_type: Literal["markdown", "text"] = "markdown"
    #: Mobile numbers to @-mention (also written into the text, as DingTalk requires for markdown).
    at_mobiles: list[str] = Field(default_factory=list)
    at_all: bool = False
    #: With the "custom keywords" security mode, one keyword must be in the message: it is added when missing.
    keyword: str = ""
    api_url: str = Field(default="https://oapi.dingtalk.com/robot/send", pattern=r"^https?://")

    @field_validator("access_token")
    @classmethod
    def _token(cls, v: Secret) -> Secret:
        value = v.get_secret_value().strip()
        if value.startswith(("http://", "https://")):  # the whole webhook address was pasted
            from urllib.parse import parse_qs, urlsplit

            found = parse_qs(urlsplit(value).query).get("access_token")
            if not found:
                raise ValueError("the webhook address has no access_token= parameter")
            value = found[0]
        return Secret(value)


@register_channel
class DingtalkChannel(HttpChannel):
    """Markdown (default) or text; ``timestamp``/``sign`` in the query when a secret is set."""

    type = "dingtalk"
    config_model = DingtalkConfig
    rate_limit = (20, 60.0)
    max_bytes = BODY_MAX
    person_key = "phone|dingtalk"  # a group robot @-mentions the person on duty by mobile (or DingTalk user id)
    config: DingtalkConfig

    def body(self, n: Notification) -> bytes:
        """The JSON body, its text cut so the whole body stays within 20000 bytes."""
        c = self.config
        mobiles, users, at_all = list(c.at_mobiles), [], c.at_all
        person = person_of(n)
        if person is not None:  # a rota target: the group robot @-mentions the person on duty
            mobiles = [person["phone"]] if person.get("phone") else []
            users = [person["dingtalk"]] if person.get("dingtalk") else []
            at_all = False
        mentions = " ".join(f"@{m}" for m in mobiles + users)
        at: dict[str, object] = {"atMobiles": mobiles, "isAtAll": at_all}
        if users:
            at["atUserIds"] = users
        if c.message_type == "markdown" and n.markdown:
            title = self._with_keyword(n.title or "roomwatch")
            text = self._with_keyword(n.markdown + (f"\n\n{mentions}" if mentions else ""))
            return fit_json(lambda t: {"msgtype": "markdown", "markdown": {"title": title, "text": t}, "at": at}, text,
                            BODY_MAX)
        text = self._with_keyword(message_text(n))
        return fit_json(lambda t: {"msgtype": "text", "text": {"content": t}, "at": at}, text, BODY_MAX)

    def _with_keyword(self, text: str) -> str:
        kw = self.config.keyword
        return text if not kw or kw in text else f"{kw} {text}"

    def query(self, now_ms: int | None = None) -> dict[str, str]:
        """access_token, plus timestamp and sign (signed just before sending: valid for 1 h)."""
        q = {"access_token": self.config.access_token.get_secret_value()}
        if self.config.secret is not None:
            ts = int(self.clock() * 1000) if now_ms is None else now_ms
            q.update(timestamp=str(ts), sign=sign(self.config.secret.get_secret_value(), ts))  # aiohttp URL-encodes it
        return q

    async def send(self, notification: Notification) -> SendResult:
        reply = await self.call("POST", self.config.api_url, params=self.query(), data=self.body(notification),
                                headers=JSON_HEADERS)
        if isinstance(reply, SendResult):
            return reply
        return self.judge(reply)

    def judge(self, reply: HttpReply) -> SendResult:
        data = reply.json()
        if reply.status != 200 or not isinstance(data, dict) or "errcode" not in data:
            return self.by_status(reply)
        code = data["errcode"]
        detail = f"errcode {code}: {data.get('errmsg', '')}"
        if code == 0:
            return self.result(Outcome.DELIVERED, detail)
        if code in HINTS:
            detail += f" ({HINTS[code]})"
        if code in RETRY_CODES:
            return self.result(Outcome.RETRY, detail, RETRY_CODES[code])
        return self.result(Outcome.GIVE_UP, detail)
