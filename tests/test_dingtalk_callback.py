"""DingTalk robot callback: "@机器人 确认 4821" acknowledges; DingTalk's signature (timestamp, sign headers: HMAC-SHA256
with the AppSecret) is checked as DingTalk documents it; anything else is refused (401) and counted."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from roomwatch.alerts import imcallback
from tests.alert_harness import Harness
from tests.peers.vendor_sign import dingtalk_sign

SECRET = "dingTalkAppSecret_0123456789abcdefABCDEF"
LEAK = {"site": "县政务中心", "room": "1号机房", "device": "leak1"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Harness, ClientSession, str]]:
    h = Harness(tmp_path, channels=[{"name": "ding", "type": "dingtalk", "access_token": "tok-0123456789",
                                     "api_url": "http://127.0.0.1:9/robot/send"}],
                routes=[{"channels": ["ding"]}],
                oncall={"people": [{"name": "李娜", "dingtalk": "manager4521"}]},
                alerts={"external_url": "http://10.1.2.3:9640", "callbacks": {"dingtalk": {"app_secret": SECRET}}})
    app = web.Application()
    assert h.svc.dingtalk is not None
    imcallback.add_routes(app, h.svc.dingtalk)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with ClientSession() as session:
        yield h, session, str(server.make_url("/api/v1/callbacks/dingtalk"))
    await server.close()


def message(text: str, staff: str = "manager4521", nick: str = "李娜", msg_id: str = "msgBX7kDm+HNp2K") -> dict[str, Any]:
    """The body DingTalk POSTs for a group message that @-mentions the robot (its documented fields)."""
    return {"conversationId": "cidp6K6w5ZY0cJY7z3xJFZXAA==", "atUsers": [{"dingtalkId": "$:LWCP_v1:$robot"}],
            "chatbotUserId": "$:LWCP_v1:$robot", "msgId": msg_id, "senderNick": nick, "isAdmin": False,
            "senderStaffId": staff, "sessionWebhookExpiredTime": int(time.time() * 1000) + 5400000,
            "createAt": int(time.time() * 1000), "conversationType": "2", "senderId": "$:LWCP_v1:$sender",
            "conversationTitle": "机房值班群", "isInAtList": True, "text": {"content": f" {text}"}, "msgtype": "text"}


def signed(ts_ms: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """DingTalk's headers; each call a millisecond of its own (a sign is taken with one message only, and
    two requests of a test can fall in the same millisecond)."""
    if ts_ms is None:
        ts_ms = signed.last = max(int(time.time() * 1000), signed.last + 1)  # type: ignore[attr-defined]
    ts = str(ts_ms)
    return {"timestamp": ts, "sign": dingtalk_sign(secret, ts), "Content-Type": "application/json"}


signed.last = 0  # type: ignore[attr-defined]


async def test_group_member_acknowledges_with_the_code(served: tuple[Harness, ClientSession, str]) -> None:
    h, session, url = served
    h.push([("roomwatch_water_leak_detected", LEAK, 1.0)])
    [n] = h.queued()
    code = re.search(r"@机器人 确认 (\d{4})", n.markdown).group(1)  # type: ignore[union-attr]
    body = json.dumps(message(f"确认 {code}")).encode()
    for headers in ({"Content-Type": "application/json"}, signed(secret="another-app-secret-000000"),
                    signed(ts_ms=int((time.time() - 2 * 3600) * 1000))):  # unsigned, another app, two hours old
        async with session.post(url, data=body, headers=headers) as r:
            assert r.status == 401
    assert not h.alert("WaterLeak")["acknowledged"]  # type: ignore[index]
    async with session.post(url, data=json.dumps(message("1", msg_id="m1")).encode(), headers=signed()) as r:
        got = await r.json()
        assert "告警码" in got["text"]["content"], got  # "1" in a group is ambiguous
    async with session.post(url, data=body, headers=signed()) as r:
        reply = await r.json()
    assert r.status == 200 and reply["msgtype"] == "text" and reply["text"]["content"].startswith("已确认：机房漏水")
    ack = h.alert("WaterLeak")["ack"]  # type: ignore[index]
    assert (ack["by"], ack["via"]) == ("李娜", "dingtalk")
    async with session.post(url, data=body, headers=signed()) as r:  # DingTalk resending the same message
        assert (await r.json())["text"]["content"] == "已处理。"
    async with session.post(url, data=b"x" * (imcallback.MAX_BODY + 1), headers=signed()) as r:
        assert r.status == 413
    families = {f.name: dict(f.samples) for f in h.svc.families()}
    assert families["roomwatch_im_callbacks_total"]['{im="dingtalk",result="refused"}'] == 3.0
    assert families["roomwatch_acknowledgements_total"] == {'{via="dingtalk"}': 1.0}
