"""ServerChan (Server酱) personal WeChat push: Turbo ``SCT…`` keys and ServerChan³ ``sctp<uid>t…`` keys.

Docs: sct.ftqq.com (Turbo API), sc3.ft07.com (ServerChan³), easychen/serverchan-sdk; CHANNELS.md §8.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from roomwatch.channels.base import Notification, Outcome, SendResult, register_channel
from roomwatch.channels.common import HttpChannel, HttpReply, truncate_chars, truncate_utf8
from roomwatch.channels.config import ChannelBase
from roomwatch.core.configbase import Secret

__all__ = ["ServerchanChannel", "ServerchanConfig", "send_url"]

#: title ≤ 32 characters, desp ≤ 32 KB (Turbo API doc).
TITLE_MAX = 32
DESP_MAX = 32 * 1024
_SC3 = re.compile(r"^sctp(\d+)t")


def send_url(sendkey: str, api_url: str | None = None) -> str:
    """Where a key sends: Turbo ``https://sctapi.ftqq.com/<key>.send``, ServerChan³ ``https://<uid>.push.ft07.com/send/<key>.send``.

    ``api_url`` replaces the scheme and host (a private relay, or a test server).
    """
    m = _SC3.match(sendkey)
    if m:
        base = api_url or f"https://{m.group(1)}.push.ft07.com"
        return f"{base.rstrip('/')}/send/{sendkey}.send"
    base = api_url or "https://sctapi.ftqq.com"
    return f"{base.rstrip('/')}/{sendkey}.send"


class ServerchanConfig(ChannelBase):
    """ServerChan: the SendKey from sct.ftqq.com/sendkey (SCT…) or sc3.ft07.com (sctp…)."""

    type: Literal["serverchan"]
    sendkey: Secret
    api_url: str | None = Field(default=None, pattern=r"^https?://")


@register_channel
class ServerchanChannel(HttpChannel):
    """Title plus markdown ``desp`` as a form POST; ``code`` 0 is delivered."""

    type = "serverchan"
    config_model = ServerchanConfig
    #: The free Turbo plan allows 5 messages a day; paid plans more. Not enforced here: the service says.
    rate_limit = None
    max_bytes = DESP_MAX
    config: ServerchanConfig

    def form(self, n: Notification) -> dict[str, str]:
        title = truncate_chars(n.title or n.text.split("\n", 1)[0] or "roomwatch", TITLE_MAX)
        return {"title": title, "desp": truncate_utf8(n.markdown or n.text, DESP_MAX)}

    async def send(self, notification: Notification) -> SendResult:
        url = send_url(self.config.sendkey.get_secret_value(), self.config.api_url)
        reply = await self.call("POST", url, data=self.form(notification))
        if isinstance(reply, SendResult):
            return reply
        return self.judge(reply)

    def judge(self, reply: HttpReply) -> SendResult:
        data = reply.json()
        if not isinstance(data, dict) or "code" not in data:
            return self.by_status(reply)
        code = data["code"]
        detail = f"code {code}: {data.get('message', '')}"
        if code == 0:
            return self.result(Outcome.DELIVERED, detail)
        if reply.status == 429 or reply.status >= 500:
            return self.result(Outcome.RETRY, detail, reply.retry_after())
        # Wrong key, quota used up for the day, … — a retry within minutes would get the same answer.
        return self.result(Outcome.GIVE_UP, detail)
