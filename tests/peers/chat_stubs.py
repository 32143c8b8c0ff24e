"""Test servers for the chat services: WeCom robot and app, DingTalk, Feishu, ServerChan.

Each checks what the real service checks (path, query, key, signature and its time window,
required fields, size limits) and answers with the real codes (CHANNELS.md §1–4, §8).
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar
from urllib.parse import parse_qs

from aiohttp import web

from tests.peers.stub_http import StubServer
from tests.peers.vendor_sign import dingtalk_sign, feishu_sign


def _wecom_err(code: int, msg: str) -> dict[str, Any]:
    return {"errcode": code, "errmsg": f"{msg}, hint: [1700000000_1_x], from ip: 127.0.0.1, more info at "
                                       f"https://open.work.weixin.qq.com/devtool/query?e={code}"}


async def _json_body(request: web.Request) -> Any:
    if not request.content_type.startswith("application/json"):
        raise web.HTTPBadRequest(text="content type must be application/json")
    raw = await request.read()
    return json.loads(raw.decode("utf-8")), len(raw)


class WecomRobotStub(StubServer):
    """``POST /cgi-bin/webhook/send?key=``: key, msgtype, content size (text 2048 B, markdown 4096 B)."""

    LIMITS: ClassVar[dict[str, int]] = {"text": 2048, "markdown": 4096}

    def __init__(self, key: str):
        super().__init__()
        self.key = key
        self.app.router.add_post("/cgi-bin/webhook/send", self.send)

    async def send(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        if request.query.get("key") != self.key:
            return self.reject(_wecom_err(93000, "invalid webhook url"))
        body, _ = await _json_body(request)
        code = self.scripted()
        if code is not None:
            return self.reject(_wecom_err(code, "api freq out of limit" if code == 45009 else "error"))
        kind = body.get("msgtype")
        if kind not in self.LIMITS or not isinstance(body.get(kind, {}).get("content"), str):
            return self.reject(_wecom_err(40008, "invalid message type"))
        if len(body[kind]["content"].encode()) > self.LIMITS[kind]:
            return self.reject(_wecom_err(40058, f"{kind}.content exceed max length {self.LIMITS[kind]}"))
        self.received.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})


class WecomAppStub(StubServer):
    """gettoken + message/send: corp id, secret, token validity (40014 unknown, 42001 expired), agentid, size,
    and (with ``members``) recipients: unknown member ids come back in ``invaliduser`` with errcode 0, as
    WeCom answers a partial failure; none valid is 81013."""

    def __init__(self, corp_id: str, secret: str, agent_id: int, members: set[str] | None = None):
        super().__init__()
        self.corp_id, self.secret, self.agent_id = corp_id, secret, agent_id
        self.members = members  # None: every member id is valid
        self.delivered_to: list[list[str]] = []  # member ids each accepted message went to
        self.valid: set[str] = set()
        self.expired: set[str] = set()
        self.gettoken_calls = 0
        self.app.router.add_get("/cgi-bin/gettoken", self.gettoken)
        self.app.router.add_post("/cgi-bin/message/send", self.send)

    def expire_tokens(self) -> None:
        """WeCom ends a token early (the channel still has it cached)."""
        self.expired |= self.valid
        self.valid.clear()

    async def gettoken(self, request: web.Request) -> web.Response:
        self.gettoken_calls += 1
        if request.query.get("corpid") != self.corp_id:
            return self.reject(_wecom_err(40013, "invalid corpid"))
        if request.query.get("corpsecret") != self.secret:
            return self.reject(_wecom_err(40001, "invalid credential"))
        token = f"TOKEN{self.gettoken_calls:04d}x" * 8
        self.valid.add(token)
        return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200})

    async def send(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        token = request.query.get("access_token", "")
        if token in self.expired:
            return self.reject(_wecom_err(42001, "access_token expired"))
        if token not in self.valid:
            return self.reject(_wecom_err(40014, "invalid access_token"))
        body, _ = await _json_body(request)
        code = self.scripted()
        if code is not None:
            return self.reject(_wecom_err(code, "scripted"))
        if body.get("agentid") != self.agent_id:  # an integer per the doc
            return self.reject(_wecom_err(40056, "invalid agentid"))
        if not (body.get("touser") or body.get("toparty") or body.get("totag")):
            return self.reject(_wecom_err(40031, "invalid user list"))
        kind = body.get("msgtype")
        content = body.get(kind, {}).get("content") if kind in {"text", "markdown"} else None
        if not isinstance(content, str):
            return self.reject(_wecom_err(40008, "invalid message type"))
        if len(content.encode()) > 2048:
            return self.reject(_wecom_err(40058, f"{kind}.content exceed max length 2048"))
        users = [] if body.get("touser") == "@all" else [u for u in str(body.get("touser", "")).split("|") if u]
        invalid = [u for u in users if self.members is not None and u.lower() not in self.members]
        if invalid and len(invalid) == len(users) and not (body.get("toparty") or body.get("totag")):
            return self.reject(_wecom_err(81013, "user & party & tag all invalid"))
        self.received.append(body)
        self.delivered_to.append([u for u in users if u not in invalid])
        return web.json_response({"errcode": 0, "errmsg": "ok", "invaliduser": "|".join(invalid), "msgid": "MSGID1"})


class DingtalkStub(StubServer):
    """``POST /robot/send?access_token=&timestamp=&sign=``: token, sign in ms within 1 h, keyword, 20000-byte body."""

    def __init__(self, token: str, secret: str | None = None, keyword: str | None = None):
        super().__init__()
        self.token, self.secret, self.keyword = token, secret, keyword
        self.app.router.add_post("/robot/send", self.send)

    async def send(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        # parse_qs decodes "+" as a space, as the service does: an un-encoded base64 sign fails here.
        query = {k: v[0] for k, v in parse_qs(request.rel_url.raw_query_string).items()}
        if query.get("access_token") != self.token:
            return self.reject({"errcode": 300001, "errmsg": "token is not exist"})
        if self.secret is not None:
            ts = query.get("timestamp", "")
            if not ts.isdigit() or abs(int(ts) - time.time() * 1000) > 3600 * 1000:
                return self.reject({"errcode": 310000, "errmsg": "invalid timestamp"})
            if query.get("sign") != dingtalk_sign(self.secret, ts):
                return self.reject({"errcode": 310000, "errmsg": "sign not match"})
        body, size = await _json_body(request)
        if size > 20000:
            return self.reject({"errcode": 460101, "errmsg": "message too long, exceed 20000 bytes"})
        code = self.scripted()
        if code is not None:
            return self.reject({"errcode": code, "errmsg": "send too fast, exceed 20 times per minute"})
        kind = body.get("msgtype")
        if kind == "text":
            texts = [body["text"].get("content", "")]
        elif kind == "markdown":
            texts = [body["markdown"].get("title", ""), body["markdown"].get("text", "")]
            if not texts[0]:
                return self.reject({"errcode": 40035, "errmsg": "缺少参数 markdown.title"})
        else:
            return self.reject({"errcode": 40035, "errmsg": "缺少参数 json"})
        if self.keyword and not any(self.keyword in t for t in texts):
            return self.reject({"errcode": 310000, "errmsg": "keywords not in content"})
        self.received.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})


class FeishuStub(StubServer):
    """``POST /open-apis/bot/v2/hook/<id>``: timestamp (s, within 1 h) and sign in the body, 20 KB, keyword."""

    def __init__(self, hook: str, secret: str | None = None, keyword: str | None = None):
        super().__init__()
        self.hook, self.secret, self.keyword = hook, secret, keyword
        self.app.router.add_post("/open-apis/bot/v2/hook/{hook}", self.send)

    async def send(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        if request.match_info["hook"] != self.hook:
            return self.reject({"code": 19001, "msg": "param invalid: incoming webhook access token invalid", "data": {}})
        body, size = await _json_body(request)
        if size > 20 * 1024:
            return self.reject({"code": 9499, "msg": "Bad Request", "data": {}}, status=400)
        if self.secret is not None:
            ts, sign = body.get("timestamp"), body.get("sign")
            if not isinstance(ts, str) or not ts.isdigit() or abs(int(ts) - time.time()) > 3600 \
                    or sign != feishu_sign(self.secret, ts):
                return self.reject({"code": 19021, "msg": "sign match fail or timestamp is not within one hour "
                                                          "from current time", "data": {}})
        code = self.scripted()
        if code is not None:
            return self.reject({"code": code, "msg": "frequency limited", "data": {}})
        kind, content = body.get("msg_type"), body.get("content", {})
        if kind == "text":
            texts = [content.get("text", "")]
        elif kind == "post":
            post = content.get("post", {}).get("zh_cn", {})
            texts = [post.get("title", "")] + [el.get("text", "") for line in post.get("content", []) for el in line]
        else:
            return self.reject({"code": 9499, "msg": "Bad Request", "data": {}}, status=400)
        if self.keyword and not any(self.keyword in t for t in texts):
            return self.reject({"code": 19024, "msg": "Key Words Not Found", "data": {}})
        self.received.append(body)
        return web.json_response({"StatusCode": 0, "StatusMessage": "success", "code": 0, "msg": "success", "data": {}})


class ServerchanStub(StubServer):
    """Turbo ``/<SCT key>.send`` and ServerChan³ ``/send/<sctp key>.send``: key, title (≤ 32), desp."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key
        self.app.router.add_post("/{key}.send", self.send)
        self.app.router.add_post("/send/{key}.send", self.send)

    async def send(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        if request.match_info["key"] != self.key:
            return self.reject({"code": 40001, "message": "bad pushtoken", "data": None})
        form = await request.post()
        title = str(form.get("title", ""))
        if not title or len(title) > 32:
            return self.reject({"code": 40002, "message": "title required, at most 32 characters", "data": None})
        if len(str(form.get("desp", "")).encode()) > 32 * 1024:
            return self.reject({"code": 40003, "message": "desp too long", "data": None})
        scripted = self.scripted()
        if scripted is not None:
            return self.reject({"code": 50000, "message": "busy", "data": None}, status=int(scripted))
        self.received.append(dict(form))
        return web.json_response({"code": 0, "message": "", "data": {"pushid": "1", "readkey": "r", "error": "SUCCESS",
                                                                     "errno": 0}})
