"""WeCom (企业微信) application message: an access token from gettoken, then message/send.

Docs: WeCom 91039 (gettoken), 90236 (message/send); Alertmanager notify/wechat/wechat.go. CHANNELS.md §2.
The token is cached per app (gettoken calls are throttled) and fetched again when it
expires or when WeCom says it is invalid/expired (40014/42001): then the message is
sent once more with the new token, and if that fails too the outcome is RETRY.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, Literal

from pydantic import Field

from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import HttpChannel, message_text, truncate_utf8
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.recipients import person_of
from roomwatch.core.configbase import Secret

__all__ = ["WecomAppChannel", "WecomAppConfig"]

#: Byte limit of text/markdown content (doc 90236: "最长不超过2048个字节").
CONTENT_MAX = 2048
#: Fetch a new token this long before WeCom's expires_in runs out.
TOKEN_MARGIN = 300.0

TOKEN_CODES = {40014, 42001}  # invalid access_token, access_token expired
#: errcode → retry after seconds: -1 system busy, 45009 frequency limit, 45033 too many concurrent calls.
RETRY_CODES: dict[int, float | None] = {-1: None, 45009: 60.0, 45033: 5.0}
#: Explanations for codes that mean the configuration is wrong.
HINTS = {
    40001: "the app secret is wrong",
    40013: "the corp_id is wrong",
    40056: "the agent_id is wrong",
    60020: "this server's public IP is not in the app's 企业可信IP list",
    81013: "no valid recipient (check to_user/to_party/to_tag)",
}
#: Reply fields naming recipients that did not get a message WeCom accepted (errcode 0), and why (doc 90236).
MISSED_FIELDS = {
    "invaliduser": "no such member, or outside the app's 可见范围",
    "invalidparty": "no such department, or outside the app's 可见范围",
    "invalidtag": "no such tag, or outside the app's 可见范围",
    "unlicenseduser": "member without an 接口许可 licence",
}


class WecomAppConfig(ChannelBase):
    """A WeCom self-built application (自建应用) sending to members, departments or tags."""

    type: Literal["wecom_app"]
    corp_id: str = Field(min_length=1)
    agent_id: int
    secret: Secret
    to_user: str = Field(default="@all", description='member ids joined by "|", or "@all"')
    to_party: str = ""
    to_tag: str = ""
    #: markdown is shown only inside the WeCom app (not in the WeChat plug-in); text is shown everywhere.
    message_type: Literal["text", "markdown"] = "text"
    api_url: str = Field(default="https://qyapi.weixin.qq.com/cgi-bin/", pattern=r"^https?://")


class _Token:
    """The cached access token of one app (api_url, corp_id, secret), shared by the channels of that app."""

    __slots__ = ("expires", "value")

    def __init__(self) -> None:
        self.value = ""
        self.expires = 0.0


_TOKENS: dict[str, _Token] = {}


@register_channel
class WecomAppChannel(HttpChannel):
    """Application message with token caching and one refresh on 40014/42001."""

    type = "wecom_app"
    config_model = WecomAppConfig
    # Per member: 30/min and 1000/h, and WeCom drops the excess silently (errcode 0), so both windows must be
    # kept here (doc 90236 "发送频率限制"; CHANNELS.md §2). Every message goes to all the channel's members,
    # so counting the channel's messages counts each member's.
    rate_limit = (30, 60.0)
    more_rate_limits = ((1000, 3600.0),)
    max_bytes = CONTENT_MAX
    person_key = "wecom"
    config: WecomAppConfig

    def __init__(self, config: WecomAppConfig):
        super().__init__(config)
        self.base = config.api_url.rstrip("/") + "/"
        ident = f"{self.base}\0{config.corp_id}\0{config.secret.get_secret_value()}"
        self.token = _TOKENS.setdefault(hashlib.sha256(ident.encode()).hexdigest(), _Token())
        self._lock = asyncio.Lock()  # one gettoken at a time from this channel

    def body(self, n: Notification) -> dict[str, Any]:
        c = self.config
        person = person_of(n)
        body: dict[str, Any] = {"touser": c.to_user, "agentid": c.agent_id}
        if person is not None:  # a rota target: the member on duty only
            body["touser"] = person.get("wecom", "")
        else:
            if c.to_party:
                body["toparty"] = c.to_party
            if c.to_tag:
                body["totag"] = c.to_tag
        if c.message_type == "markdown" and n.markdown:
            body.update(msgtype="markdown", markdown={"content": truncate_utf8(n.markdown, CONTENT_MAX)})
        else:
            body.update(msgtype="text", text={"content": truncate_utf8(message_text(n), CONTENT_MAX)})
        return body

    async def _access_token(self, stale: str = "") -> str | SendResult:
        """The cached token, or a new one when it expired or equals ``stale`` (WeCom said it is invalid)."""
        tok = self.token
        async with self._lock:
            if tok.value and tok.value != stale and time.monotonic() < tok.expires:
                return tok.value
            tok.value = ""
            reply = await self.call("GET", self.base + "gettoken",
                                    params={"corpid": self.config.corp_id, "corpsecret": self.config.secret.get_secret_value()})
            if isinstance(reply, SendResult):
                return reply
            data = reply.json()
            if reply.status != 200 or not isinstance(data, dict) or "errcode" not in data:
                return self.by_status(reply)
            if data["errcode"] != 0 or not data.get("access_token"):
                return self._failed("gettoken", data)
            tok.value = str(data["access_token"])
            self.redact.add(tok.value)
            expires_in = float(data.get("expires_in") or 7200)
            tok.expires = time.monotonic() + max(expires_in - TOKEN_MARGIN, expires_in / 2)
            return tok.value

    async def send(self, notification: Notification) -> SendResult:
        body = self.body(notification)
        if not body["touser"] and not body.get("toparty") and not body.get("totag"):
            return self.result(Outcome.GIVE_UP, "no recipient (the person on duty has no wecom id)")
        stale = ""
        for attempt in (1, 2):
            token = await self._access_token(stale)
            if isinstance(token, SendResult):
                return token
            self.redact.add(token)
            reply = await self.call("POST", self.base + "message/send", params={"access_token": token}, json_body=body)
            if isinstance(reply, SendResult):
                return reply
            data = reply.json()
            if reply.status != 200 or not isinstance(data, dict) or "errcode" not in data:
                return self.by_status(reply)
            if data["errcode"] in TOKEN_CODES and attempt == 1:
                stale = token  # WeCom may invalidate a token early: drop it, fetch another, send once more
                continue
            return self._judge(data)
        raise AssertionError("unreachable")

    def _judge(self, data: dict[str, Any]) -> SendResult:
        code = data["errcode"]
        if code != 0:
            return self._failed("message/send", data)
        detail = f"errcode 0, msgid {data.get('msgid', '')}"
        # A partial failure still returns 0 (all invalid is 81013). Those recipients stay invalid until
        # someone fixes the member list or the app's scope, so they are not retried, but the message was
        # not delivered as configured: partial, and logged here once per message.
        missed = [f"{k} {data[k]} ({why})" for k, why in MISSED_FIELDS.items() if data.get(k)]
        if not missed:
            return self.result(Outcome.DELIVERED, detail)
        self.log.warning("channel %s: recipients will not get this notification, not retried: %s", self.name,
                         "; ".join(missed))
        return self.result(Outcome.PARTIAL, f"{detail}; not delivered to " + "; ".join(missed))

    def _failed(self, call: str, data: dict[str, Any]) -> SendResult:
        code = data.get("errcode")
        detail = f"{call}: errcode {code}: {data.get('errmsg', '')}"
        if code in HINTS:
            detail += f" ({HINTS[code]})"
        if code in TOKEN_CODES:  # still invalid right after a refresh: WeCom's side, try again later
            return self.result(Outcome.RETRY, detail)
        if code in RETRY_CODES:
            return self.result(Outcome.RETRY, detail, RETRY_CODES[code])
        return self.result(Outcome.GIVE_UP, detail)
