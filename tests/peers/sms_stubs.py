"""Test servers for the cloud SMS APIs: Aliyun dysmsapi SendSms (V2 signature) and Tencent SendSms (TC3).

They check what the services check: the signature recomputed from the request as received,
the timestamp window, a fresh nonce, required parameters, approved signature/template and
its variables; they answer with the services' codes and HTTP statuses (CHANNELS.md §5–6).
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


class AliyunSmsStub(StubServer):
    """``GET|POST https://dysmsapi.aliyuncs.com/`` with the RPC parameters."""

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "AccessKeyId", "Action", "Format", "PhoneNumbers", "RegionId", "SignName", "SignatureMethod", "SignatureNonce",
        "SignatureVersion", "TemplateCode", "Timestamp", "Version", "Signature")

    def __init__(self, key_id: str, secret: str, sign_name: str, templates: dict[str, list[str]]):
        super().__init__()
        self.key_id, self.secret, self.sign_name, self.templates = key_id, secret, sign_name, templates
        self.nonces: set[str] = set()
        #: scripted (Code, Message) for a request that includes the number, e.g. its flow control
        self.number_codes: dict[str, tuple[str, str]] = {}
        self.requests: list[list[str]] = []  # PhoneNumbers of every request that passed the checks
        self.app.router.add_route("*", "/", self.handle)

    def _error(self, code: str, message: str, status: int = 400) -> web.Response:
        return self.reject({"RequestId": "REQ-1", "Code": code, "Message": message, "Recommend": "https://next.api.aliyun.com"},
                           status)

    async def handle(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        if request.method == "POST":
            if request.content_type != "application/x-www-form-urlencoded":
                return self._error("InvalidParameter", "form body expected")
            raw = (await request.read()).decode("ascii")
        else:
            raw = request.rel_url.raw_query_string
        params = dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=True))
        missing = [k for k in self.REQUIRED if k not in params]
        if missing:
            return self._error("MissingParameter", f"{missing[0]} is mandatory for this action.")
        if params["AccessKeyId"] != self.key_id:
            return self._error("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            return self._error("InvalidParameter", "signature method")
        if params["Signature"] != aliyun_v2(request.method, params, self.secret):
            return self._error("SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        stamp = dt.datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        if abs((stamp - dt.datetime.now(dt.UTC)).total_seconds()) > 900:
            return self._error("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        if params["SignatureNonce"] in self.nonces:
            return self._error("SignatureNonceUsed", "Specified signature nonce was used already.")
        self.nonces.add(params["SignatureNonce"])
        if (params["Action"], params["Version"]) != ("SendSms", "2017-05-25"):
            return self._error("InvalidAction.NotFound", "Specified api is not found")
        scripted = self.scripted()
        if scripted is not None:
            code, message = scripted
            return self._error(code, message, 200)
        if params["SignName"] != self.sign_name:
            return self._error("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名", 200)
        if params["TemplateCode"] not in self.templates:
            return self._error("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板", 200)
        try:
            values = json.loads(params.get("TemplateParam", "{}"))
            assert isinstance(values, dict) and all(isinstance(v, str) for v in values.values())
        except (ValueError, AssertionError):
            return self._error("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值", 200)
        if any(name not in values or not values[name] for name in self.templates[params["TemplateCode"]]):
            return self._error("isv.TEMPLATE_MISSING_PARAMETERS", "模板缺少变量", 200)
        numbers = params["PhoneNumbers"].split(",")
        if not 1 <= len(numbers) <= 1000 or not all(re.fullmatch(r"\+?\d{5,15}", n) for n in numbers):
            return self._error("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", 200)
        self.requests.append(numbers)
        for num in numbers:
            if num in self.number_codes:
                return self._error(*self.number_codes[num], 200)
        self.received.append({"numbers": numbers, "params": values, "sign": params["SignName"], "format": params["Format"]})
        return web.json_response({"RequestId": "REQ-1", "Code": "OK", "Message": "OK", "BizId": "900619746936498440^0"})


class TencentSmsStub(StubServer):
    """``POST https://sms.tencentcloudapi.com/`` with X-TC-* headers and a TC3 Authorization."""

    def __init__(self, secret_id: str, secret_key: str, app_id: str, sign_name: str, templates: dict[str, int]):
        super().__init__()
        self.secret_id, self.secret_key, self.app_id = secret_id, secret_key, app_id
        self.sign_name, self.templates = sign_name, templates
        self.number_codes: dict[str, str] = {}  # scripted per-number Code in SendStatusSet
        self.requests: list[list[str]] = []  # PhoneNumberSet of every request that got a SendStatusSet
        self.app.router.add_post("/", self.handle)

    def _error(self, code: str, message: str) -> web.Response:
        return self.reject({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "req-1"}})

    async def handle(self, request: web.Request) -> web.Response:
        await self.maybe_hang()
        h = {k.lower(): v for k, v in request.headers.items()}
        for name in ("authorization", "x-tc-action", "x-tc-version", "x-tc-timestamp", "x-tc-region", "host"):
            if name not in h:
                return self._error("MissingParameter", f"The request is missing a required parameter `{name}`.")
        if h["x-tc-action"] != "SendSms" or h["x-tc-version"] != "2021-01-11":
            return self._error("InvalidAction", "action or version")
        ts = int(h["x-tc-timestamp"])
        if abs(ts - time.time()) > 300:
            return self._error("AuthFailure.SignatureExpire", "Signature expired.")
        m = re.fullmatch(r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/sms/tc3_request, "
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
                or signature != tc3(self.secret_key, "sms", ts, "POST", "/", request.rel_url.raw_query_string, h, signed_list,
                                    body):
            return self._error("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        scripted = self.scripted()
        if scripted is not None:
            return self._error(*scripted)
        data: dict[str, Any] = json.loads(body)
        if data.get("SmsSdkAppId") != self.app_id:
            return self._error("UnauthorizedOperation.SmsSdkAppIdVerifyFail", "SmsSdkAppId verify fail.")
        if data.get("SignName") != self.sign_name:
            return self._error("FailedOperation.SignatureIncorrectOrUnapproved", "signature incorrect or unapproved")
        tid = data.get("TemplateId")
        params = data.get("TemplateParamSet", [])
        if tid not in self.templates:
            return self._error("FailedOperation.TemplateIncorrectOrUnapproved", "template incorrect or unapproved")
        if len(params) != self.templates[tid] or not all(isinstance(p, str) and p for p in params):
            return self._error("InvalidParameterValue.TemplateParameterFormatError", "template parameter mismatch")
        numbers = data.get("PhoneNumberSet", [])
        if not 1 <= len(numbers) <= 200:
            return self._error("LimitExceeded.PhoneNumberCountLimit", "too many numbers")
        self.requests.append(list(numbers))
        statuses = []
        for num in numbers:
            code = self.number_codes.get(num, "Ok")
            if not re.fullmatch(r"\+\d{6,15}", num):
                code = "InvalidParameterValue.IncorrectPhoneNumber"
            statuses.append({"SerialNo": "2028:1", "PhoneNumber": num, "Fee": 1, "SessionContext": "",
                             "Code": code, "Message": "send success" if code == "Ok" else code, "IsoCode": "CN"})
            if code == "Ok":
                self.received.append({"number": num, "params": params})
        return web.json_response({"Response": {"SendStatusSet": statuses, "RequestId": "req-1"}})
