"""Feishu / Lark custom bot (自定义机器人), signed when a secret is configured.

Doc: Feishu "自定义机器人使用指南" (open.feishu.cn/document/client-docs/bot-v3/add-custom-bot); CHANNELS.md §4.
The signature goes into the JSON body; the key is ``timestamp + "\\n" + secret`` and the
HMAC message is empty (the opposite of DingTalk).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections import deque
from typing import Any, Literal

from pydantic import Field, field_validator

from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import JSON_HEADERS, HttpChannel, HttpReply, fit_json, message_text
from roomwatch.channels.config import ChannelBase
from roomwatch.core.configbase import Secret

__all__ = ["FeishuChannel", "FeishuConfig", "sign"]

#: Request body limit (20 KB).
BODY_MAX = 20 * 1024
#: Besides 100/min (``rate_limit``), a bot takes at most 5 requests per second.
PER_SECOND = 5

RETRY_CODES: dict[int, float | None] = {11232: 1.0}  # frequency limit
HINTS = {
    9499: "bad request",
    19021: "signature or timestamp not valid (check the secret and the clock)",
    19022: "this server's IP is not in the bot's IP whitelist",
    19024: "no keyword of the bot's keyword list is in the message",
    19007: "the bot is not enabled",
}


def sign(secret: str, timestamp: int) -> str:
    """``base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b""))``."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class FeishuConfig(ChannelBase):
    """A Feishu (or Lark: set api_url to https://open.larksuite.com/open-apis/bot/v2/hook/) group bot."""

    type: Literal["feishu"]
    #: The id at the end of the webhook address (…/hook/<id>), or the whole address.
    hook: Secret
    secret: Secret | None = None
    message_type: Literal["post", "text"] = "post"
    #: With the keyword security mode, one keyword must be in the message: it is added when missing.
    keyword: str = ""
    api_url: str = Field(default="https://open.feishu.cn/open-apis/bot/v2/hook/", pattern=r"^https?://")

    @field_validator("hook")
    @classmethod
    def _hook(cls, v: Secret) -> Secret:
        value = v.get_secret_value().strip().rstrip("/")
        if value.startswith(("http://", "https://")):
            value = value.rsplit("/", 1)[-1]
        if not value:
            raise ValueError("hook is empty")
        return Secret(value)


@register_channel
class FeishuChannel(HttpChannel):
    """``post`` messages (title + lines) by default, or ``text``; timestamp and sign in the body."""

    type = "feishu"
    config_model = FeishuConfig
    rate_limit = (100, 60.0)
    max_bytes = BODY_MAX
    config: FeishuConfig

    def __init__(self, config: FeishuConfig):
        super().__init__(config)
        self._sent: deque[float] = deque(maxlen=PER_SECOND)

    def body(self, n: Notification, now: int | None = None) -> bytes:
        """The JSON body within 20 KB; signed with the current time in seconds."""
        head: dict[str, Any] = {}
        if self.config.secret is not None:
            ts = int(self.clock()) if now is None else now
            head = {"timestamp": str(ts), "sign": sign(self.config.secret.get_secret_value(), ts)}
        kw = self.config.keyword
        if self.config.message_type == "post":
            title = n.title or "roomwatch"
            if kw and kw not in title and kw not in n.text:
                title = f"{kw} {title}"
            text = n.text if n.text else n.title

            def build(t: str) -> dict[str, Any]:
                lines = [[{"tag": "text", "text": line}] for line in t.split("\n")]
                return {**head, "msg_type": "post", "content": {"post": {"zh_cn": {"title": title, "content": lines}}}}

            return fit_json(build, text, BODY_MAX)
        text = message_text(n)
        if kw and kw not in text:
            text = f"{kw} {text}"
        return fit_json(lambda t: {**head, "msg_type": "text", "content": {"text": t}}, text, BODY_MAX)

    async def _pace(self) -> None:
        """Keep to 5 requests in any second (the shared limiter only knows the per-minute limit)."""
        if len(self._sent) == PER_SECOND:
            wait = self._sent[0] + 1.0 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self._sent.append(time.monotonic())

    async def send(self, notification: Notification) -> SendResult:
        body = self.body(notification)
        await self._pace()
        reply = await self.call("POST", self.config.api_url.rstrip("/") + "/" + self.config.hook.get_secret_value(),
                                data=body, headers=JSON_HEADERS)
        if isinstance(reply, SendResult):
            return reply
        return self.judge(reply)

    def judge(self, reply: HttpReply) -> SendResult:
        data = reply.json()
        if not isinstance(data, dict) or ("code" not in data and "StatusCode" not in data):
            return self.by_status(reply)
        code = data.get("code", data.get("StatusCode"))
        detail = f"code {code}: {data.get('msg', data.get('StatusMessage', ''))}"
        if code == 0:
            return self.result(Outcome.DELIVERED, detail)
        if code in HINTS:
            detail += f" ({HINTS[code]})"
        if code in RETRY_CODES:
            return self.result(Outcome.RETRY, detail, RETRY_CODES[code])
        if reply.status == 429 or reply.status >= 500:
            return self.result(Outcome.RETRY, detail, reply.retry_after())
        return self.result(Outcome.GIVE_UP, detail)
