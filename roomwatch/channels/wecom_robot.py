"""WeCom (企业微信) group robot: markdown or text POSTed to the robot's webhook.

Doc: WeCom "群机器人配置说明" (developer.work.weixin.qq.com/document/path/91770); facts in CHANNELS.md §1.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import HttpChannel, HttpReply, message_text, truncate_utf8
from roomwatch.channels.config import ChannelBase
from roomwatch.channels.recipients import person_of
from roomwatch.core.configbase import Secret

__all__ = ["WecomRobotChannel", "WecomRobotConfig", "robot_key"]

#: Byte limits of the content field (doc 91770).
TEXT_MAX = 2048
MARKDOWN_MAX = 4096

#: errcode → retry after seconds. 45009 "api freq out of limit" (20 messages/min per robot);
#: -1 "system busy". Everything else non-zero is a request or key problem: retrying will not help.
RETRY_CODES: dict[int, float | None] = {45009: 60.0, -1: None}


def robot_key(value: str) -> str:
    """The robot key, also when the whole webhook address was pasted (``...send?key=KEY``)."""
    value = value.strip()
    if value.startswith(("http://", "https://")):
        from urllib.parse import parse_qs, urlsplit

        keys = parse_qs(urlsplit(value).query).get("key")
        if not keys:
            raise ValueError("the webhook address has no key= parameter")
        return keys[0]
    return value


class WecomRobotConfig(ChannelBase):
    """A WeCom group robot (群机器人). The key is the ``key=`` part of its webhook address."""

    type: Literal["wecom_robot"]
    key: Secret
    message_type: Literal["markdown", "text"] = "markdown"
    #: text only: user ids or "@all" to @-mention; markdown mentions are written as <@userid> in the text.
    mentioned_list: list[str] = Field(default_factory=list)
    mentioned_mobile_list: list[str] = Field(default_factory=list)
    api_url: str = Field(default="https://qyapi.weixin.qq.com/cgi-bin/webhook/send", pattern=r"^https?://")

    @field_validator("key")
    @classmethod
    def _key(cls, v: Secret) -> Secret:
        key = robot_key(v.get_secret_value())
        if not key:
            raise ValueError("key is empty")
        return Secret(key)


@register_channel
class WecomRobotChannel(HttpChannel):
    """Sends markdown (default; mentions as ``<@userid>``) or text with mentions."""

    type = "wecom_robot"
    config_model = WecomRobotConfig
    rate_limit = (20, 60.0)
    max_bytes = MARKDOWN_MAX
    person_key = "wecom|phone"  # a group robot @-mentions the person on duty (member id, or mobile in text messages)
    config: WecomRobotConfig

    def body(self, n: Notification) -> dict[str, Any]:
        """The robot message for a notification, cut to the type's byte limit."""
        c = self.config
        users, mobiles = list(c.mentioned_list), list(c.mentioned_mobile_list)
        person = person_of(n)
        if person is not None:  # a rota target: @-mention the person on duty in the group
            users = [person["wecom"]] if person.get("wecom") else []
            mobiles = [person["phone"]] if person.get("phone") else []
        if c.message_type == "markdown" and n.markdown:
            tag = "".join(f"<@{u}>" for u in users if u != "@all")
            content = n.markdown + (f"\n{tag}" if tag else "")
            return {"msgtype": "markdown", "markdown": {"content": truncate_utf8(content, MARKDOWN_MAX)}}
        text: dict[str, Any] = {"content": truncate_utf8(message_text(n), TEXT_MAX)}
        if users:
            text["mentioned_list"] = users
        if mobiles:
            text["mentioned_mobile_list"] = mobiles
        return {"msgtype": "text", "text": text}

    async def send(self, notification: Notification) -> SendResult:
        reply = await self.call("POST", self.config.api_url, params={"key": self.config.key.get_secret_value()},
                                json_body=self.body(notification))
        if isinstance(reply, SendResult):
            return reply
        return self.judge(reply)

    def judge(self, reply: HttpReply) -> SendResult:
        """HTTP 200 only means received: the body's errcode says what happened."""
        data = reply.json()
        if reply.status != 200 or not isinstance(data, dict) or "errcode" not in data:
            return self.by_status(reply)
        code, msg = data.get("errcode"), str(data.get("errmsg", ""))
        if code == 0:
            return self.result(Outcome.DELIVERED, f"errcode 0: {msg}")
        detail = f"errcode {code}: {msg}"
        if code in RETRY_CODES:
            return self.result(Outcome.RETRY, detail, RETRY_CODES[code])
        if code == 93000:
            detail += " (the robot key is wrong or the robot was removed)"
        return self.result(Outcome.GIVE_UP, detail)
