"""Test servers for the cloud voice APIs: Aliyun Dyvmsapi SingleCallByTts (RPC V2 signature) and Tencent
Cloud VMS SendTtsVoice (TC3-HMAC-SHA256).

They check what the services check: the signature recomputed from the request as received
(tests/peers/vendor_sign.py, written apart from the channels), the timestamp window, a fresh
nonce, the required parameters, the approved template and its variables (no links, the total
length), the number's format and the per-number frequency limits; and they answer with the
replies the services document (help.aliyun.com SingleCallByTts and its error-code page;
cloud.tencent.com/document/api/1128/51558 and the SDK's vms error codes).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from aiohttp import web

from tests.peers.stub_http import StubServer
from tests.peers.vendor_sign import aliyun_v2, tc3


class _Limits:
    """Per-number sliding windows, as the services count calls (successful or not)."""

    def __init__(self, windows: tuple[tuple[int, float], ...]):
        self.windows = windows
        self.calls: dict[str, list[float]] = {}

    def over(self, number: str, now: float) -> bool:
        times = self.calls.setdefault(number, [])
        hit = any(sum(1 for t in times if now - t < per) >= count for count, per in self.windows)
        times.append(now)
        return hit


class AliyunVoiceStub(StubServer):
    """``POST https://dyvmsapi.aliyuncs.com/`` with Action=SingleCallByTts."""

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "AccessKeyId", "Action", "Format", "RegionId", "SignatureMethod", "SignatureNonce", "SignatureVersion",
        "Timestamp", "Version", "Signature", "CalledNumber", "TtsCode")

    def __init__(self, key_id: str, secret: str, templates: dict[str, list[str]]):
        super().__init__()
        self.key_id, self.secret, self.templates = key_id, secret, templates
        self.nonces: set[str] = set()
        self.limits = _Limits(((1, 60.0), (5, 3600.0), (20, 86400.0)))
        self.number_codes: dict[str, tuple[str, str]] = {}  # scripted Code, Message for one called number
        self.app.router.add_route("*", "/", self.handle)

    def _error(self, code: str, message: str, status: int = 400) -> web.Response:
        return self.reject({"RequestId": "D9CB3933-9FE3-4870-BA8E-2BEE91B69D23", "Code": code, "Message": message},
                           status)

    async def handle(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        raw = (await request.read()).decode("ascii") if request.method == "POST" else request.rel_url.raw_query_string
        params = dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=True))
        missing = [k for k in self.REQUIRED if k not in params]
        if missing:
            return self._error("MissingParameter", f"{missing[0]} is mandatory for this action.")
        if params["AccessKeyId"] != self.key_id:
            return self._error("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        if params["Signature"] != aliyun_v2(request.method, params, self.secret):
            return self._error("SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        stamp = dt.datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        if abs((stamp - dt.datetime.now(dt.UTC)).total_seconds()) > 900:
            return self._error("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        if params["SignatureNonce"] in self.nonces:
            return self._error("SignatureNonceUsed", "Specified signature nonce was used already.")
        self.nonces.add(params["SignatureNonce"])
        if (params["Action"], params["Version"]) != ("SingleCallByTts", "2017-05-25"):
            return self._error("InvalidAction.NotFound", "Specified api is not found")
        scripted = self.scripted()
        if scripted is not None:
            return self._error(*scripted, status=200)
        if params["TtsCode"] not in self.templates:
            return self._error("isv.TTS_TEMPLATE_ILLEGAL", "TTS模板不合法", 200)
        try:
            values = json.loads(params.get("TtsParam", "{}"))
            assert isinstance(values, dict) and all(isinstance(v, str) for v in values.values())
        except (ValueError, AssertionError):
            return self._error("isv.INVALID_PARAMETERS", "参数异常", 200)
        if any(not values.get(name) for name in self.templates[params["TtsCode"]]):
            return self._error("isv.TEMPLATE_MISSING_PARAMETERS", "文本转语音模板参数缺失", 200)
        if any(re.search(r"https?://|www\.", v) for v in values.values()):
            return self._error("isv.PARAM_NOT_SUPPORT_URL", "变量不支持URL参数", 200)
        if sum(len(v) for v in values.values()) >= 250:
            return self._error("isv.PARAM_LENGTH_LIMIT", "参数长度受限", 200)
        if not 1 <= int(params.get("PlayTimes", "3")) <= 3 or not 0 <= int(params.get("Volume", "100")) <= 100:
            return self._error("isv.INVALID_PARAMETERS", "参数异常", 200)
        number = params["CalledNumber"]
        if not re.fullmatch(r"1\d{10}|0\d{9,11}", number):
            return self._error("isv.MOBILE_NUMBER_ILLEGAL", "号码格式非法", 200)
        if number in self.number_codes:
            return self._error(*self.number_codes[number], status=200)
        if self.limits.over(number, time.time()):
            return self._error("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1", 200)
        self.received.append({"number": number, "params": values, "show": params.get("CalledShowNumber", ""),
                              "play_times": params.get("PlayTimes")})
        return web.json_response({"RequestId": "D9CB3933-9FE3-4870-BA8E-2BEE91B69D23", "Code": "OK", "Message": "OK",
                                  "CallId": f"116012354148^{len(self.received)}"})


class TencentVoiceStub(StubServer):
    """``POST https://vms.tencentcloudapi.com/`` with X-TC-Action SendTtsVoice."""

    def __init__(self, secret_id: str, secret_key: str, app_id: str, templates: dict[str, int]):
        super().__init__()
        self.secret_id, self.secret_key, self.app_id, self.templates = secret_id, secret_key, app_id, templates
        self.limits = _Limits(((1, 30.0), (2, 600.0), (5, 86400.0)))
        self.app.router.add_post("/", self.handle)

    def _error(self, code: str, message: str) -> web.Response:
        return self.reject({"Response": {"Error": {"Code": code, "Message": message},
                                         "RequestId": "ed93f3cb-f35e-473f-b9f3-0d451b8b79c6"}})

    async def handle(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        h = {k.lower(): v for k, v in request.headers.items()}
        for name in ("authorization", "x-tc-action", "x-tc-version", "x-tc-timestamp", "x-tc-region", "host"):
            if name not in h:
                return self._error("MissingParameter", f"The request is missing a required parameter `{name}`.")
        if h["x-tc-action"] != "SendTtsVoice" or h["x-tc-version"] != "2020-09-02":
            return self._error("InvalidAction", "The action or version is not valid.")
        ts = int(h["x-tc-timestamp"])
        if abs(ts - time.time()) > 300:
            return self._error("AuthFailure.SignatureExpire", "Signature expired.")
        m = re.fullmatch(r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/vms/tc3_request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", h["authorization"])
        if not m:
            return self._error("AuthFailure.InvalidAuthorization", "Authorization header malformed.")
        secret_id, date, signed, signature = m.groups()
        if secret_id != self.secret_id:
            return self._error("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        body = await request.read()
        signed_list = signed.split(";")
        if not {"content-type", "host"} <= set(signed_list) \
                or date != dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d") \
                or signature != tc3(self.secret_key, "vms", ts, "POST", "/", request.rel_url.raw_query_string, h,
                                    signed_list, body):
            return self._error("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        scripted = self.scripted()
        if scripted is not None:
            return self._error(*scripted)
        try:
            data: dict[str, Any] = json.loads(body)
        except ValueError:
            return self._error("FailedOperation.InvalidJsonParameters", "无效 JSON")
        for field in ("TemplateId", "CalledNumber", "VoiceSdkAppid"):
            if not isinstance(data.get(field), str) or not data[field]:
                return self._error("MissingParameter", f"The request is missing a required parameter `{field}`.")
        if data["VoiceSdkAppid"] != self.app_id:
            return self._error("UnauthorizedOperation.VoiceSdkAppidVerifyFail", "VoiceSdkAppid 校验失败")
        params = data.get("TemplateParamSet", [])
        if data["TemplateId"] not in self.templates or len(params) != self.templates[data["TemplateId"]]:
            return self._error("FailedOperation.TemplateIncorrectOrUnapproved", "模版未审核或内容不匹配")
        if not all(isinstance(p, str) and p for p in params) or sum(len(p) for p in params) > 350:
            return self._error("InvalidParameterValue.ContentLengthLimit", "语音模板中单个变量长度超过限制")
        if not 1 <= int(data.get("PlayTimes", 2)) <= 3:
            return self._error("FailedOperation.InvalidParameters", "无效参数")
        number = data["CalledNumber"]
        if not re.fullmatch(r"\+861\d{10}", number):
            return self._error("InvalidParameterValue.CalledNumberVerifyFail", "被叫手机号码格式校验失败")
        if self.limits.over(number, time.time()):
            return self._error("LimitExceeded.DeliveryFrequencyLimit", "下发语音消息时命中频率限制策略")
        self.received.append({"number": number, "params": params, "play_times": data.get("PlayTimes")})
        return web.json_response({"Response": {"SendStatus": {"CallId": f"12582bce-49d6-4a57-{len(self.received):04d}",
                                                              "SessionContext": data.get("SessionContext", "")},
                                               "RequestId": "ba4cf8d3-1bfd-4e1c-8aa4-9c12aaf2b8cb"}})
